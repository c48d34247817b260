//! The admin API's limits per caller, in memory, per instance: each
//! operator's writes per minute, and each caller's audit and activity
//! reads at once. (The webhook quotas are counted in Redis: see `webhook`.)
//!
//! Both are plain counters under a `Mutex`: no Redis round trip, at the
//! price of N instances allowing N times as much.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;
use crate::error::{Error, Result};

/// Callers whose counts are kept before the old minutes' go.
const TRACKED: usize = 10_000;

/// One instance's admin limits.
pub struct Limits {
    /// `KEYWARD_WEBHOOKS_MAX`.
    pub webhooks_max: u64,
    /// `KEYWARD_WEBHOOKS_PER_PROJECT`.
    pub webhooks_per_project: u64,
    writes_per_minute: u64,
    reads_at_once: u64,
    /// Operator id -> (its minute, its writes in it).
    writes: Mutex<HashMap<String, (u64, u64)>>,
    /// Caller -> its reads running.
    reads: Arc<Mutex<HashMap<String, u64>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters, whole after every statement.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self {
            webhooks_max: config.webhooks_max,
            webhooks_per_project: config.webhooks_per_project,
            writes_per_minute: config.admin_writes_per_minute,
            reads_at_once: config.admin_reads_at_once,
            writes: Mutex::default(),
            reads: Arc::default(),
        }
    }

    /// Counts one write of `actor` at Unix second `now`; `429` past
    /// `KEYWARD_ADMIN_WRITES_PER_MINUTE` in its minute, with the seconds
    /// until the next.
    pub fn write(&self, actor: &str, now: u64) -> Result<()> {
        let minute = now / 60;
        let mut writes = locked(&self.writes);
        if writes.len() >= TRACKED && !writes.contains_key(actor) {
            writes.retain(|_, (m, _)| *m == minute);
        }
        let (m, n) = writes.entry(actor.to_owned()).or_default();
        if *m != minute {
            (*m, *n) = (minute, 0);
        }
        if *n >= self.writes_per_minute {
            return Err(Error::AdminLimited {
                setting: "KEYWARD_ADMIN_WRITES_PER_MINUTE",
                limit: self.writes_per_minute,
                retry_after: 60 - now % 60,
            });
        }
        *n += 1;
        Ok(())
    }

    /// Whether one more endpoint naming `projects` fits beside the
    /// deployment's `existing` ones (each listed by its projects): `409
    /// quota_reached` naming the full quota when not.
    pub fn webhook_fits(&self, existing: &[&[String]], projects: &[String]) -> Result<()> {
        if existing.len() as u64 >= self.webhooks_max {
            return Err(Error::QuotaReached {
                setting: "KEYWARD_WEBHOOKS_MAX",
                limit: self.webhooks_max,
                what: String::new(),
            });
        }
        for project in projects {
            let naming = existing.iter().filter(|p| p.contains(project)).count();
            if naming as u64 >= self.webhooks_per_project {
                return Err(Error::QuotaReached {
                    setting: "KEYWARD_WEBHOOKS_PER_PROJECT",
                    limit: self.webhooks_per_project,
                    what: format!(" for project {project}"),
                });
            }
        }
        Ok(())
    }

    /// One more read of `caller` running, until the [`Reading`] is
    /// dropped; `429` past `KEYWARD_ADMIN_READS_AT_ONCE`.
    pub fn read(&self, caller: &str) -> Result<Reading> {
        let mut reads = locked(&self.reads);
        let running = reads.entry(caller.to_owned()).or_default();
        if *running >= self.reads_at_once {
            return Err(Error::AdminLimited {
                setting: "KEYWARD_ADMIN_READS_AT_ONCE",
                limit: self.reads_at_once,
                retry_after: 1,
            });
        }
        *running += 1;
        Ok(Reading {
            reads: self.reads.clone(),
            caller: caller.to_owned(),
        })
    }
}

/// A read running; it ends when this is dropped.
pub struct Reading {
    reads: Arc<Mutex<HashMap<String, u64>>>,
    caller: String,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut reads = locked(&self.reads);
        if let Some(running) = reads.get_mut(&self.caller) {
            *running -= 1;
            if *running == 0 {
                reads.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(writes_per_minute: u64, reads_at_once: u64) -> Limits {
        Limits {
            webhooks_max: 1,
            webhooks_per_project: 1,
            writes_per_minute,
            reads_at_once,
            writes: Mutex::default(),
            reads: Arc::default(),
        }
    }

    #[test]
    fn writes_past_the_minutes_limit_are_refused_until_the_next_minute() {
        let l = limits(2, 1);
        assert!(l.write("op_a", 120).is_ok());
        assert!(l.write("op_a", 130).is_ok());
        match l.write("op_a", 170) {
            Err(Error::AdminLimited { retry_after, .. }) => assert_eq!(retry_after, 10),
            other => panic!("{other:?}"),
        }
        assert!(l.write("op_b", 170).is_ok(), "per operator");
        assert!(l.write("op_a", 180).is_ok(), "a new minute");
    }

    #[test]
    fn an_endpoint_fits_under_both_quotas_or_names_the_full_one() {
        let l = Limits {
            webhooks_max: 3,
            webhooks_per_project: 2,
            ..limits(1, 1)
        };
        let (a, b, all) = (vec!["a".into()], vec!["b".into()], vec!["*".into()]);
        let existing: Vec<&[String]> = vec![&a, &a];
        assert!(l.webhook_fits(&existing, &b).is_ok());
        assert!(l.webhook_fits(&existing, &all).is_ok(), "`*` is its own");
        match l.webhook_fits(&existing, &a) {
            Err(Error::QuotaReached { setting, what, .. }) => {
                assert_eq!(setting, "KEYWARD_WEBHOOKS_PER_PROJECT");
                assert_eq!(what, " for project a");
            }
            other => panic!("{other:?}"),
        }
        let full: Vec<&[String]> = vec![&a, &b, &all];
        match l.webhook_fits(&full, &b) {
            Err(Error::QuotaReached { setting, .. }) => assert_eq!(setting, "KEYWARD_WEBHOOKS_MAX"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_at_once_are_counted_until_dropped() {
        let l = limits(1, 2);
        let first = l.read("op_a").unwrap();
        let _second = l.read("op_a").unwrap();
        assert!(l.read("op_a").is_err());
        assert!(l.read("op_b").is_ok(), "per caller");
        drop(first);
        assert!(l.read("op_a").is_ok());
    }
}
