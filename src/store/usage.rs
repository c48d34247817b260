//! `apimeta:<project>:<key_id>` (`usage_count`, `last_used`), aggregated per
//! instance: a pass adds to a map in memory, and the store's flusher writes
//! each used key's total about once a second (`HINCRBY`, `HSET`), and
//! everything at graceful shutdown. So a busy key costs two commands a
//! second per instance instead of two per validation. A crash loses at most
//! the last second's counts; a flush Redis refuses is kept and retried.

use std::collections::HashMap;
use std::sync::Mutex;

use fred::prelude::HashesInterface;

use super::{names, send, Store};
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
    /// and `HSET last_used` per key, in one pipeline. What Redis does not
    /// take is kept for the next flush (a key's `HINCRBY` and `HSET` are
    /// retried together, so a count is never written twice).
    pub async fn flush_usage(&self) -> Result<()> {
        let due = self.usage.take();
        if due.is_empty() {
            return Ok(());
        }
        let pipe = self.pool.next().pipeline();
        let mut queued = Ok(());
        for (meta, (count, at)) in &due {
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            let incr = pipe.hincrby::<(), _, _>(meta, "usage_count", count).await;
            let time = pipe
                .hset::<(), _, _>(meta, ("last_used", at.to_string()))
                .await;
            queued = queued.and(incr).and(time);
        }
        let sent = match queued {
            Ok(()) => send(pipe, 2 * due.len()).await,
            Err(e) => Err(super::unavailable(e)),
        };
        let results = match sent {
            Ok(results) => results,
            Err(e) => {
                for (meta, (count, at)) in due {
                    self.usage.merge(meta, count, at);
                }
                return Err(e);
            }
        };
        let mut failed = 0;
        for ((meta, (count, at)), replies) in due.into_iter().zip(results.chunks(2)) {
            match replies {
                [Ok(_), Ok(_)] => {}
                // The count went in but not the time: keep the time only.
                [Ok(_), Err(_)] => self.usage.merge(meta, 0, at),
                _ => {
                    failed += 1;
                    self.usage.merge(meta, count, at);
                }
            }
        }
        if failed > 0 {
            return Err(crate::Error::Unavailable(format!(
                "usage of {failed} keys not written"
            )));
        }
        Ok(())
    }
}
