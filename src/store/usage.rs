//! What validations are counted in memory and written about once a second:
//! `apimeta:<project>:<key_id>` (`usage_count`, `last_used`) for passes,
//! and the usage record (`record.rs`) for every answer to a found key.
//! A validation adds to a map in memory, and the store's flusher writes
//! each used key's sums about once a second (`HINCRBY`, `HSET`), and
//! everything at graceful shutdown. So a busy key costs a few commands a
//! second per instance instead of some per validation. A crash loses at
//! most the last second's counts (and what Redis had not taken:
//! `keyward_usage_pending`); what a flush could not write is kept and
//! retried (see [`Store::flush_usage`]).

use std::collections::HashMap;
use std::sync::Mutex;

use fred::prelude::{HashesInterface, Value};

use super::record::{Batches, KeyHours};
use super::validation::together;
use super::{names, unavailable, Store};
use crate::error::Result;

/// Counted, not yet written.
#[derive(Default)]
struct Pending {
    /// Passes by `apimeta` key: (count, last use).
    meta: HashMap<String, (u64, f64)>,
    /// The record's sums by `apimeta` key (one name per key, made once).
    record: HashMap<String, KeyHours>,
}

/// Uses not yet written.
#[derive(Default)]
pub struct Usage(Mutex<Pending>);

impl Usage {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain counters, consistent after every statement.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One answer to `project`/`key_id` at `at` (Unix seconds), recorded
    /// under the record's `field` with `extra_cost`; a pass (`pass`) also
    /// counts in `apimeta`.
    pub fn add(
        &self,
        project: &str,
        key_id: &str,
        at: f64,
        field: usize,
        extra_cost: i64,
        pass: bool,
    ) {
        let meta = names::meta(project, key_id);
        let hour = (at / 3_600.0).floor() as i64;
        let mut pending = self.pending();
        if let Some(key) = pending.record.get_mut(&meta) {
            key.add(hour, field, extra_cost);
        } else {
            let mut key = KeyHours {
                project: project.to_owned(),
                key_id: key_id.to_owned(),
                hours: Vec::with_capacity(1),
            };
            key.add(hour, field, extra_cost);
            pending.record.insert(meta.clone(), key);
        }
        if pass {
            merge(&mut pending.meta, meta, 1, at);
        }
    }

    fn merge(&self, meta: String, count: u64, at: f64) {
        merge(&mut self.pending().meta, meta, count, at);
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }
}

fn merge(pending: &mut HashMap<String, (u64, f64)>, meta: String, count: u64, at: f64) {
    let entry = pending.entry(meta).or_insert((0, at));
    entry.0 += count;
    entry.1 = entry.1.max(at);
}

impl Store {
    /// Writes the uses counted since the last flush: `HINCRBY usage_count`
    /// and `HSET last_used` per key, sent together as single commands a batch
    /// at a time (`record::Batches`: a flush of many keys once built every
    /// key's command futures at once, 40 MiB for 3,000 keys; see
    /// `validation.rs`), not as a fred `Pipeline`: fred drops a single
    /// command that timed out before it was written, but writes a pipeline
    /// that timed out in its queue once Redis is back, after this flush had
    /// put its counts back for the next one (a test saw a few seconds' outage
    /// count each use five times). What Redis does not take is kept for the
    /// next flush, a key's `HINCRBY` apart from its `HSET`, so a count Redis
    /// took is not sent again. One whose answer was lost after Redis ran it
    /// (a Redis hung past the deadline, a connection cut before the reply)
    /// is sent again: those uses are counted twice rather than lost. Then
    /// the usage record's sums (`Store::flush_record`), the same way.
    pub async fn flush_usage(&self) -> Result<()> {
        let Pending { meta, record } = self.usage.take();
        let record = self.flush_record(record.into_values().collect());
        // In one order for the writes and their replies.
        let due: Vec<_> = meta.into_iter().collect();
        if due.is_empty() {
            return record.await;
        }
        let client = self.validator.next();
        let mut batches = Batches::default();
        let writes = batches.send(&due, |(meta, (count, at))| {
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            futures::future::join(
                client.hincrby::<Value, _, _>(meta, "usage_count", count),
                client.hset::<Value, _, _>(meta, ("last_used", at.to_string())),
            )
        });
        let (replies, recorded) = futures::join!(together(writes), record);
        let mut error = recorded.err();
        for ((meta, (count, at)), replies) in due.into_iter().zip(replies) {
            match replies {
                (Ok(_), Ok(_)) => {}
                // The count went in but not the time: keep the time only.
                (Ok(_), Err(e)) => {
                    error.get_or_insert_with(|| unavailable(e));
                    self.usage.merge(meta, 0, at);
                }
                (Err(e), _) => {
                    error.get_or_insert_with(|| unavailable(e));
                    self.usage.merge(meta, count, at);
                }
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// Whether everything counted has been written (the final flush's
    /// retries stop there).
    pub(super) fn usage_settled(&self) -> bool {
        let pending = self.usage.pending();
        pending.meta.is_empty() && pending.record.is_empty() && self.record.is_settled()
    }
}
