//! `apimeta:<project>:<key_id>` (`usage_count`, `last_used`), aggregated per
//! instance: a pass adds to a map in memory, and the store's flusher writes
//! each used key's total about once a second (`HINCRBY`, `HSET`), and
//! everything at graceful shutdown. So a busy key costs two commands a
//! second per instance instead of two per validation. A crash loses at most
//! the last second's counts; what a flush could not write is kept and
//! retried (see [`Store::flush_usage`]).

use std::collections::HashMap;
use std::sync::Mutex;

use fred::prelude::{HashesInterface, Value};

use super::validation::together;
use super::{names, unavailable, Store};
use crate::error::Result;

/// Uses not yet written, by `apimeta` key: (count, last use).
#[derive(Default)]
pub struct Usage(Mutex<HashMap<String, (u64, f64)>>);

impl Usage {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, f64)>> {
        // Plain counters, consistent after every statement.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass of `project`/`key_id` at `at` (Unix seconds).
    pub fn add(&self, project: &str, key_id: &str, at: f64) {
        self.merge(names::meta(project, key_id), 1, at);
    }

    fn merge(&self, meta: String, count: u64, at: f64) {
        let mut pending = self.pending();
        let entry = pending.entry(meta).or_insert((0, at));
        entry.0 += count;
        entry.1 = entry.1.max(at);
    }

    fn take(&self) -> HashMap<String, (u64, f64)> {
        std::mem::take(&mut *self.pending())
    }
}

impl Store {
    /// Writes the uses counted since the last flush: `HINCRBY usage_count`
    /// and `HSET last_used` per key, sent together as single commands (see
    /// `validation.rs`), not as a fred `Pipeline`: fred drops a single
    /// command that timed out before it was written, but writes a pipeline
    /// that timed out in its queue once Redis is back, after this flush had
    /// put its counts back for the next one (a test saw a few seconds' outage
    /// count each use five times). What Redis does not take is kept for the
    /// next flush, a key's `HINCRBY` apart from its `HSET`, so a count Redis
    /// took is not sent again. One whose answer was lost after Redis ran it
    /// (a Redis hung past the deadline, a connection cut before the reply)
    /// is sent again: those uses are counted twice rather than lost.
    pub async fn flush_usage(&self) -> Result<()> {
        // In one order for the writes and their replies.
        let due: Vec<_> = self.usage.take().into_iter().collect();
        if due.is_empty() {
            return Ok(());
        }
        let client = self.validator.next();
        let writes = due.iter().map(|(meta, (count, at))| {
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            futures::future::join(
                client.hincrby::<Value, _, _>(meta, "usage_count", count),
                client.hset::<Value, _, _>(meta, ("last_used", at.to_string())),
            )
        });
        let replies = together(futures::future::join_all(writes)).await;
        let mut error = None;
        for ((meta, (count, at)), replies) in due.into_iter().zip(replies) {
            match replies {
                (Ok(_), Ok(_)) => {}
                // The count went in but not the time: keep the time only.
                (Ok(_), Err(e)) => {
                    error.get_or_insert(e);
                    self.usage.merge(meta, 0, at);
                }
                (Err(e), _) => {
                    error.get_or_insert(e);
                    self.usage.merge(meta, count, at);
                }
            }
        }
        error.map_or(Ok(()), |e| Err(unavailable(e)))
    }
}
