//! "Last known good": what this instance answered 200 for, per exact
//! secret, kept only under `KEYWARD_FAILSAFE=open` so that a Redis that
//! cannot answer lets through what this instance itself verified lately,
//! and nothing else (`rules::failsafe_admits` decides).
//!
//! Two bounded maps, both in memory and both forgotten after
//! `KEYWARD_FAILSAFE_MAX_AGE` unused:
//! - per verified-secret cache key (an HMAC of project, key id and secret,
//!   see `hash`): the document of its last 200 and when;
//! - per key: when this instance last refused the key itself (its document
//!   said missing, unreadable, disabled or expired), whatever the secret.
//!
//! A refusal of one exact secret for any other reason (a wrong secret after
//! a re-key, a missing scope, a network, a limit) forgets that secret's
//! entry. Times are this process's monotonic seconds: no clock can skew them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rules::{self, Reason};
use crate::hash::CacheKey;
use crate::key::ApiKey;
use crate::store::KeyDoc;

/// One secret's last 200: its document, and when (monotonic seconds, as
/// `f64` bits, refreshed by every later 200 with the same document).
struct Pass {
    doc: KeyDoc,
    at: AtomicU64,
}

pub struct LastKnownGood {
    passes: moka::sync::Cache<CacheKey, Arc<Pass>>,
    /// `<project>\0<key_id>` -> when the key itself was last refused.
    refused: moka::sync::Cache<String, f64>,
    max_age: f64,
    started: Instant,
}

fn key_name(key: &ApiKey) -> String {
    format!("{}\0{}", key.project_id.as_str(), key.key_id.as_str())
}

impl LastKnownGood {
    /// At most `entries` secrets (the verified-secret cache's size), each
    /// standing in for `max_age` seconds.
    pub fn new(entries: u64, max_age: u64) -> Self {
        let idle = Duration::from_secs(max_age);
        Self {
            passes: moka::sync::Cache::builder()
                .max_capacity(entries.max(1))
                .time_to_idle(idle)
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(entries.max(1))
                .time_to_live(idle)
                .build(),
            max_age: max_age as f64,
            started: Instant::now(),
        }
    }

    fn mono(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A 200 answered for `cache_key`'s secret with `doc`.
    pub fn passed(&self, cache_key: &CacheKey, doc: &KeyDoc) {
        let now = self.mono();
        if let Some(pass) = self.passes.get(cache_key) {
            if pass.doc == *doc {
                pass.at.store(now.to_bits(), Ordering::Relaxed);
                return;
            }
        }
        let pass = Pass {
            doc: doc.clone(),
            at: AtomicU64::new(now.to_bits()),
        };
        self.passes.insert(*cache_key, Arc::new(pass));
    }

    /// A refusal answered for `key` presented with `cache_key`'s secret.
    pub fn refused(&self, key: &ApiKey, cache_key: &CacheKey, reason: Reason) {
        match reason.refuses_the_key() {
            true => self.refused.insert(key_name(key), self.mono()),
            false => self.passes.invalidate(cache_key),
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
        let pass = self.passes.get(cache_key)?;
        let known = rules::Known {
            doc: &pass.doc,
            answered_at: f64::from_bits(pass.at.load(Ordering::Relaxed)),
        };
        let refused_at = self.refused.get(&key_name(key));
        rules::failsafe_admits(
            Some(&known),
            refused_at,
            self.mono(),
            self.max_age,
            now,
            required_scopes,
            client_ip,
        )
        .then(|| pass.doc.clone())
    }
}
