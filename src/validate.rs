//! The validation pipeline. Knows nothing about HTTP.
//!
//! 1. Parse the key; a malformed key is denied without touching Redis's data.
//! 2. Round trip 1: the key's document and this minute's counters.
//! 3. Decide without hashing where possible: unknown, forbidden, disabled,
//!    expired, over the rate limit, or a flood of wrong secrets.
//! 4. Verify the secret: the verified-secret cache, else Argon2id.
//! 5. After the decision: a right secret is counted with INCR (whose result
//!    decides 429 exactly), then `apimeta` and the audit entry are written;
//!    a denial is audited. Every outcome leaves exactly one audit entry.
//!
//! Every bad key is the same `Error::InvalidKey` to the caller; only the
//! audit entry and the metric say which kind it was.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Failsafe};
use crate::error::{Error, Result};
use crate::hash::{CacheCheck, Hasher};
use crate::key::{ApiKey, KeyId, ProjectId};
use crate::store::{now, Audit, KeyDoc, Lookup, Store};
use crate::telemetry::metric;

/// What a gateway needs to route a request with a valid key.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    pub project_id: String,
    pub key_id: String,
    pub owner: String,
    pub server_name: String,
    pub metadata: serde_json::Value,
    pub expires_at: Option<f64>,
    #[serde(skip)]
    pub rate: RateInfo,
    /// Accepted without reading Redis, under `KEYWARD_FAILSAFE=open`.
    #[serde(skip)]
    pub failsafe: bool,
}

/// The key's rate-limit state after this validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset: u64,
}

/// Why a validation ended as it did; the audit `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    Malformed,
    NotFound,
    BadSecret,
    Disabled,
    Expired,
    Forbidden,
    RateLimited,
    FailsafeOpen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Malformed => "malformed",
            Reason::NotFound => "not_found",
            Reason::BadSecret => "bad_secret",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
            Reason::Forbidden => "forbidden",
            Reason::RateLimited => "rate_limited",
            Reason::FailsafeOpen => "failsafe_open",
        }
    }

    /// The audit `result`: `ok`, `denied` or `rate_limited`.
    pub fn result(self) -> &'static str {
        match self {
            Reason::Ok | Reason::FailsafeOpen => "ok",
            Reason::RateLimited => "rate_limited",
            _ => "denied",
        }
    }
}

fn count(reason: Reason) {
    tracing::debug!(
        result = reason.result(),
        reason = reason.as_str(),
        "validation"
    );
    metrics::counter!(metric::VALIDATIONS, "result" => reason.result(), "reason" => reason.as_str())
        .increment(1);
}

/// The current rate-limit window: (minute number, seconds until it ends).
pub fn window(now_secs: f64) -> (u64, u64) {
    let secs = now_secs.max(0.0) as u64;
    (secs / 60, 60 - secs % 60)
}

#[derive(Clone)]
pub struct Validator {
    store: Store,
    hasher: Arc<Hasher>,
    default_rate_limit: u64,
    bad_secret_hashes_per_minute: u64,
    failsafe: Failsafe,
}

impl Validator {
    pub fn new(store: Store, hasher: Arc<Hasher>, config: &Config) -> Self {
        Self {
            store,
            hasher,
            default_rate_limit: config.default_rate_limit,
            bad_secret_hashes_per_minute: config.bad_secret_hashes_per_minute,
            failsafe: config.failsafe,
        }
    }

    /// Validates a presented key. `Err(InvalidKey)` for every bad key,
    /// `Err(RateLimited)` over the limit, `Err(Unavailable)` when Redis
    /// cannot answer (unless the failsafe is open).
    pub async fn validate(&self, presented: &str) -> Result<Validated> {
        let (minute, reset) = window(now());
        let Ok(key) = ApiKey::parse(presented) else {
            return self.deny(Reason::Malformed, "", "", None).await;
        };
        let (project, key_id) = (&key.project_id, &key.key_id);
        let (doc, used, bad) = match self.store.lookup(project, key_id, minute).await {
            Ok(Lookup::Found { doc, used, bad }) => (doc, used, bad),
            Ok(Lookup::Missing) => {
                return self
                    .deny(Reason::NotFound, project.as_str(), key_id.as_str(), None)
                    .await
            }
            Ok(Lookup::Forbidden) => {
                return self
                    .deny(Reason::Forbidden, project.as_str(), key_id.as_str(), None)
                    .await
            }
            Err(Error::Unavailable(detail)) if self.failsafe == Failsafe::Open => {
                return Ok(self.failsafe_open(&key, &detail));
            }
            Err(e) => return Err(e),
        };
        let deny = |reason| self.deny(reason, project.as_str(), key_id.as_str(), None);
        if doc.disabled {
            return deny(Reason::Disabled).await;
        }
        if doc.expires_at.is_some_and(|at| at <= now()) {
            return deny(Reason::Expired).await;
        }
        let limit = doc.rate_limit_per_minute.unwrap_or(self.default_rate_limit);
        if used >= limit {
            // Already over the limit this minute: answer without hashing.
            return self.over_limit(&key, limit, reset).await;
        }

        if !self.secret_matches(&key, &doc, bad).await? {
            let counter = Some((project, key_id, minute));
            return self
                .deny(
                    Reason::BadSecret,
                    project.as_str(),
                    key_id.as_str(),
                    counter,
                )
                .await;
        }

        let used = self.store.count_use(project, key_id, minute).await?;
        if used > limit {
            // Lost the race for the last slot of this window.
            return self.over_limit(&key, limit, reset).await;
        }
        self.store.record_success(project, key_id).await?;
        count(Reason::Ok);
        Ok(Validated {
            rate: RateInfo {
                limit,
                remaining: limit - used,
                reset,
            },
            ..validated(*doc)
        })
    }

    /// Whether the presented secret is the key's. Cheap when cached; when
    /// the key has had too many wrong secrets this minute, a secret not in
    /// the cache is refused without hashing.
    async fn secret_matches(&self, key: &ApiKey, doc: &KeyDoc, bad: u64) -> Result<bool> {
        match self.hasher.check_cache(&key.secret, &doc.secret_hash) {
            CacheCheck::Match => Ok(true),
            CacheCheck::Unknown if bad >= self.bad_secret_hashes_per_minute => Ok(false),
            CacheCheck::Unknown => self.hasher.verify(&key.secret, &doc.secret_hash).await,
        }
    }

    /// Audits a rate-limited validation and answers 429.
    async fn over_limit(&self, key: &ApiKey, limit: u64, reset: u64) -> Result<Validated> {
        let (project, key_id) = (key.project_id.as_str(), key.key_id.as_str());
        self.audit(Reason::RateLimited, project, key_id, None)
            .await?;
        Err(Error::RateLimited {
            limit,
            retry_after: reset,
        })
    }

    /// Audits a denial and answers `InvalidKey`.
    async fn deny(
        &self,
        reason: Reason,
        project_id: &str,
        key_id: &str,
        bad_secret: Option<(&ProjectId, &KeyId, u64)>,
    ) -> Result<Validated> {
        self.audit(reason, project_id, key_id, bad_secret).await?;
        Err(Error::InvalidKey)
    }

    /// Counts and audits an outcome other than success (and a wrong secret
    /// in its per-minute counter). If the audit entry cannot be written the
    /// caller gets a 503, never an unaudited answer.
    async fn audit(
        &self,
        reason: Reason,
        project_id: &str,
        key_id: &str,
        bad_secret: Option<(&ProjectId, &KeyId, u64)>,
    ) -> Result<()> {
        count(reason);
        let audit = Audit {
            project_id,
            key_id,
            result: reason.result(),
            reason: reason.as_str(),
        };
        self.store.record_denial(audit, bad_secret).await
    }

    fn failsafe_open(&self, key: &ApiKey, detail: &str) -> Validated {
        count(Reason::FailsafeOpen);
        tracing::warn!(
            project_id = %key.project_id, key_id = %key.key_id, error = detail,
            "redis unavailable: key accepted unverified (KEYWARD_FAILSAFE=open)"
        );
        Validated {
            project_id: key.project_id.to_string(),
            key_id: key.key_id.to_string(),
            owner: String::new(),
            server_name: String::new(),
            metadata: serde_json::Value::Null,
            expires_at: None,
            rate: RateInfo::default(),
            failsafe: true,
        }
    }
}

fn validated(doc: KeyDoc) -> Validated {
    Validated {
        project_id: doc.project_id,
        key_id: doc.key_id,
        owner: doc.owner,
        server_name: doc.server_name,
        metadata: doc.metadata,
        expires_at: doc.expires_at,
        rate: RateInfo::default(),
        failsafe: false,
    }
}
