//! "Last known good": what this instance answered 200 for, per exact
//! secret, kept only under `KEYWARD_FAILSAFE=open` so that a Redis that
//! cannot answer lets through what this instance itself verified lately,
//! and nothing else (`rules::failsafe_admits` decides).
//!
//! One bounded map, by key: an entry exists only for a key this instance
//! answered 200, and holds the document of each of its secrets' last 200
//! and when (a rotation has two), and when this instance last refused the
//! key itself (its document said missing, unreadable, disabled or expired),
//! whatever the secret. A refusal of a key with no entry records nothing,
//! so callers without a valid key can neither add entries nor push a
//! refusal out. A refusal of one exact secret for any other reason (a
//! wrong secret after a re-key, a missing scope, a network, a limit)
//! forgets that secret's pass. An entry unused for
//! `KEYWARD_FAILSAFE_MAX_AGE` is forgotten. Times are this process's
//! monotonic seconds: no clock can skew them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::rules::{self, Reason};
use crate::hash::CacheKey;
use crate::key::ApiKey;
use crate::store::KeyDoc;

/// Secrets remembered per key: a rotation has two, and a re-key may leave
/// one more until it is refused.
const SECRETS_PER_KEY: usize = 3;

/// One secret's last 200: its document, and when.
struct Pass {
    cache_key: CacheKey,
    doc: KeyDoc,
    at: f64,
}

/// What this instance knows of one key.
#[derive(Default)]
struct Known {
    passes: Vec<Pass>,
    /// When this instance last refused the key itself.
    refused_at: Option<f64>,
}

pub struct LastKnownGood {
    /// `<project>\0<key_id>` -> what this instance knows of the key.
    keys: moka::sync::Cache<String, Arc<Mutex<Known>>>,
    max_age: f64,
    started: Instant,
}

fn key_name(key: &ApiKey) -> String {
    format!("{}\0{}", key.project_id.as_str(), key.key_id.as_str())
}

fn lock(known: &Mutex<Known>) -> MutexGuard<'_, Known> {
    // Plain values, consistent after every statement.
    known.lock().unwrap_or_else(|e| e.into_inner())
}

impl LastKnownGood {
    /// At most `entries` keys (the verified-secret cache's size), each
    /// standing in for `max_age` seconds.
    pub fn new(entries: u64, max_age: u64) -> Self {
        Self {
            keys: moka::sync::Cache::builder()
                .max_capacity(entries.max(1))
                .time_to_idle(Duration::from_secs(max_age))
                .build(),
            max_age: max_age as f64,
            started: Instant::now(),
        }
    }

    fn mono(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A 200 answered for `key` presented with `cache_key`'s secret, on `doc`.
    pub fn passed(&self, key: &ApiKey, cache_key: &CacheKey, doc: &KeyDoc) {
        let at = self.mono();
        let known = self.keys.get_with(key_name(key), Arc::default);
        let mut known = lock(&known);
        match known.passes.iter_mut().find(|p| p.cache_key == *cache_key) {
            Some(pass) => {
                if pass.doc != *doc {
                    pass.doc = doc.clone();
                }
                pass.at = at;
            }
            None => {
                if known.passes.len() == SECRETS_PER_KEY {
                    known.passes.remove(0);
                }
                known.passes.push(Pass {
                    cache_key: *cache_key,
                    doc: doc.clone(),
                    at,
                });
            }
        }
    }

    /// A refusal answered for `key` presented with `cache_key`'s secret.
    pub fn refused(&self, key: &ApiKey, cache_key: &CacheKey, reason: Reason) {
        let Some(known) = self.keys.get(&key_name(key)) else {
            return;
        };
        let mut known = lock(&known);
        match reason.refuses_the_key() {
            true => known.refused_at = Some(self.mono()),
            false => known.passes.retain(|p| p.cache_key != *cache_key),
        }
    }

    /// The document that may stand in for `key` presented with
    /// `cache_key`'s secret, if `rules::failsafe_admits` says so.
    pub fn admits(
        &self,
        key: &ApiKey,
        cache_key: &CacheKey,
        now: f64,
        required_scopes: &[String],
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<KeyDoc> {
        let known = self.keys.get(&key_name(key))?;
        let known = lock(&known);
        let pass = known.passes.iter().find(|p| p.cache_key == *cache_key)?;
        let last = rules::Known {
            doc: &pass.doc,
            answered_at: pass.at,
        };
        rules::failsafe_admits(
            Some(&last),
            known.refused_at,
            self.mono(),
            self.max_age,
            now,
            required_scopes,
            client_ip,
        )
        .then(|| pass.doc.clone())
    }
}
