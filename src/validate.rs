//! The validation pipeline. Knows nothing about HTTP: `POST /v1/validate-key`
//! and the forward-auth endpoint `/v1/auth` both call [`Validator::validate`],
//! so the two can never disagree.
//!
//! 1. Parse the key; a malformed key is denied without touching Redis's data.
//! 2. Round trip 1: the key's document and this minute's counters.
//! 3. Decide without hashing where possible: unknown, forbidden, unreadable,
//!    disabled, expired, outside the key's networks, over the rate limit, or
//!    a flood of wrong secrets.
//! 4. Verify the secret: the verified-secret cache, else Argon2id; during a
//!    rotation's grace period the previous secret too.
//! 5. Check the required scopes (a 403 never counts against the limit).
//! 6. After the decision: a right secret is counted with INCR (whose result
//!    decides 429 exactly), then `apimeta` and the audit entry are written;
//!    a denial is audited. Every outcome leaves exactly one audit entry, but
//!    an anonymous denial past its per-second budget is counted into a
//!    summary entry instead (see `audit`).
//!
//! Every bad key is the same `Error::InvalidKey` to the caller; only the
//! audit entry and the metric say which kind it was.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Failsafe};
use crate::error::{Error, Result};
use crate::hash::{CacheCheck, Hasher, Verdict};
use crate::key::{ApiKey, KeyId, ProjectId, Secret};
use crate::scope;
use crate::store::{now, Audit, KeyDoc, Lookup, Origin, Store};
use crate::telemetry::metric;

/// One validation request, from either endpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// The presented key, as received (may be anything).
    pub api_key: &'a str,
    /// Scopes the request requires; every one must be granted.
    pub required_scopes: &'a [String],
    /// The caller's address, for keys bound to networks.
    pub client_ip: Option<IpAddr>,
    /// The gateway's original request, written to the audit entry.
    pub origin: Option<Origin<'a>>,
}

/// What a gateway needs to route a request with a valid key.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    pub project_id: String,
    pub key_id: String,
    pub owner: String,
    pub server_name: String,
    pub metadata: serde_json::Value,
    pub expires_at: Option<f64>,
    pub scopes: Vec<String>,
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
    /// Accepted with the secret the key had before its last rotation.
    PreviousSecret,
    Malformed,
    NotFound,
    BadSecret,
    Disabled,
    Expired,
    Forbidden,
    IpNotAllowed,
    InsufficientScope,
    /// The key's document in Redis cannot be read.
    Unreadable,
    RateLimited,
    FailsafeOpen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::PreviousSecret => "previous_secret",
            Reason::Malformed => "malformed",
            Reason::NotFound => "not_found",
            Reason::BadSecret => "bad_secret",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
            Reason::Forbidden => "forbidden",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::Unreadable => "unreadable",
            Reason::RateLimited => "rate_limited",
            Reason::FailsafeOpen => "failsafe_open",
        }
    }

    /// The audit `result`: `ok`, `denied` or `rate_limited`.
    pub fn result(self) -> &'static str {
        match self {
            Reason::Ok | Reason::PreviousSecret | Reason::FailsafeOpen => "ok",
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

/// Whether `ip` is inside one of `cidrs`. An unknown address, or an entry
/// that does not parse, never matches: the check fails closed.
pub fn ip_allowed(cidrs: &[String], ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
        return false;
    };
    cidrs.iter().any(|c| {
        c.parse::<ipnet::IpNet>()
            .map(|net| net.contains(&ip))
            .or_else(|_| c.parse::<IpAddr>().map(|a| a.to_canonical() == ip))
            .unwrap_or(false)
    })
}

/// Which secret a validation matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matched {
    Current,
    Previous,
    No,
    /// A stored hash is not a PHC string.
    Corrupt,
}

#[derive(Clone)]
pub struct Validator {
    store: Store,
    hasher: Arc<Hasher>,
    default_rate_limit: u64,
    bad_secret_hashes_per_minute: u64,
    failsafe: Failsafe,
}

/// The parsed key's identity, for audit entries.
struct Who<'a> {
    project: &'a ProjectId,
    key_id: &'a KeyId,
    origin: Option<Origin<'a>>,
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

    /// Validates a request. `Err(InvalidKey)` for every bad key,
    /// `Err(InsufficientScope)` for a valid key without a required scope,
    /// `Err(RateLimited)` over the limit, `Err(Unavailable)` when Redis
    /// cannot answer (unless the failsafe is open).
    pub async fn validate(&self, req: &Request<'_>) -> Result<Validated> {
        let (minute, reset) = window(now());
        let Ok(key) = ApiKey::parse(req.api_key) else {
            let audit = audit("", "", Reason::Malformed, req.origin);
            return self.deny(Reason::Malformed, audit, None).await;
        };
        let who = Who {
            project: &key.project_id,
            key_id: &key.key_id,
            origin: req.origin,
        };
        let (doc, used, bad) = match self.store.lookup(who.project, who.key_id, minute).await {
            Ok(Lookup::Found { doc, used, bad }) => (doc, used, bad),
            Ok(Lookup::Missing) => return self.deny_key(Reason::NotFound, &who).await,
            Ok(Lookup::Forbidden) => return self.deny_key(Reason::Forbidden, &who).await,
            Ok(Lookup::Unreadable) => return self.deny_key(Reason::Unreadable, &who).await,
            Err(Error::Unavailable(detail)) if self.failsafe == Failsafe::Open => {
                return Ok(self.failsafe_open(&key, &detail));
            }
            Err(e) => return Err(e),
        };
        let now = now();
        if doc.disabled {
            return self.deny_key(Reason::Disabled, &who).await;
        }
        if doc.expires_at.is_some_and(|at| at <= now) {
            return self.deny_key(Reason::Expired, &who).await;
        }
        if let Some(cidrs) = &doc.allowed_cidrs {
            if !ip_allowed(cidrs, req.client_ip) {
                return self.deny_key(Reason::IpNotAllowed, &who).await;
            }
        }
        let limit = doc.rate_limit_per_minute.unwrap_or(self.default_rate_limit);
        if used >= limit {
            // Already over the limit this minute: answer without hashing.
            return self.over_limit(&who, limit, reset).await;
        }

        let reason = match self.secret_matches(&key.secret, &doc, bad, now).await? {
            Matched::Current => Reason::Ok,
            Matched::Previous => Reason::PreviousSecret,
            Matched::Corrupt => {
                self.store.report_corrupt_hash(who.project, who.key_id);
                return self.deny_key(Reason::Unreadable, &who).await;
            }
            Matched::No => {
                let audit = audit(
                    who.project.as_str(),
                    who.key_id.as_str(),
                    Reason::BadSecret,
                    who.origin,
                );
                let counter = Some((who.project, who.key_id, minute));
                return self.deny(Reason::BadSecret, audit, counter).await;
            }
        };

        if let Some(missing) = scope::first_missing(&doc.scopes, req.required_scopes) {
            tracing::debug!(missing, "required scope not granted");
            self.audit(Reason::InsufficientScope, &who).await?;
            return Err(Error::InsufficientScope {
                required: req.required_scopes.join(" "),
            });
        }

        let used = self
            .store
            .count_use(who.project, who.key_id, minute)
            .await?;
        if used > limit {
            // Lost the race for the last slot of this window.
            return self.over_limit(&who, limit, reset).await;
        }
        let entry = audit(
            who.project.as_str(),
            who.key_id.as_str(),
            reason,
            who.origin,
        );
        self.store.record_success(entry).await?;
        count(reason);
        Ok(Validated {
            rate: RateInfo {
                limit,
                remaining: limit - used,
                reset,
            },
            ..validated(*doc)
        })
    }

    /// Which of the key's secrets the presented one is. Cheap when cached;
    /// when the key has had too many wrong secrets this minute, a secret not
    /// in the cache is refused without hashing. During a rotation the tags
    /// pick the one hash worth an Argon2id run.
    async fn secret_matches(
        &self,
        secret: &Secret,
        doc: &KeyDoc,
        bad: u64,
        now: f64,
    ) -> Result<Matched> {
        let current = doc.secret_hash.as_str();
        let previous = doc.previous_hash(now);
        if self.hasher.check_cache(secret, current) == CacheCheck::Match {
            return Ok(Matched::Current);
        }
        if let Some(previous) = previous {
            if self.hasher.check_cache(secret, previous) == CacheCheck::Match {
                return Ok(Matched::Previous);
            }
        }
        if bad >= self.bad_secret_hashes_per_minute {
            return Ok(Matched::No);
        }
        let candidates: &[(&str, Matched)] = &match previous {
            None => vec![(current, Matched::Current)],
            Some(previous) => {
                let cur = Hasher::tag_matches(doc.secret_tag.as_deref(), secret, current);
                let prev =
                    Hasher::tag_matches(doc.previous_secret_tag.as_deref(), secret, previous);
                let mut c = Vec::with_capacity(2);
                if cur != Some(false) && prev != Some(true) {
                    c.push((current, Matched::Current));
                }
                if prev != Some(false) && cur != Some(true) {
                    c.push((previous, Matched::Previous));
                }
                c
            }
        };
        for &(phc, matched) in candidates {
            match self.hasher.verify(secret, phc).await? {
                Verdict::Match => return Ok(matched),
                Verdict::Mismatch => {}
                Verdict::Corrupt => return Ok(Matched::Corrupt),
            }
        }
        Ok(Matched::No)
    }

    /// Audits a rate-limited validation and answers 429.
    async fn over_limit(&self, who: &Who<'_>, limit: u64, reset: u64) -> Result<Validated> {
        self.audit(Reason::RateLimited, who).await?;
        Err(Error::RateLimited {
            limit,
            retry_after: reset,
        })
    }

    async fn deny_key(&self, reason: Reason, who: &Who<'_>) -> Result<Validated> {
        self.audit(reason, who).await?;
        Err(Error::InvalidKey)
    }

    async fn audit(&self, reason: Reason, who: &Who<'_>) -> Result<()> {
        let entry = audit(
            who.project.as_str(),
            who.key_id.as_str(),
            reason,
            who.origin,
        );
        count(reason);
        // Anonymous denials past this second's budget are only summarized.
        if !self.store.audit_budget().admit(reason.as_str()) {
            return Ok(());
        }
        self.store.record_denial(entry, None).await
    }

    /// Counts and audits a denial (and a wrong secret in its per-minute
    /// counter), then answers `InvalidKey`. If the audit entry cannot be
    /// written the caller gets a 503, never an unaudited answer; an
    /// anonymous denial past the budget is counted into its second's summary
    /// instead (see `audit`).
    async fn deny(
        &self,
        reason: Reason,
        entry: Audit<'_>,
        bad_secret: Option<(&ProjectId, &KeyId, u64)>,
    ) -> Result<Validated> {
        count(reason);
        // Anonymous denials past this second's budget are only summarized.
        if self.store.audit_budget().admit(reason.as_str()) {
            self.store.record_denial(entry, bad_secret).await?;
        }
        Err(Error::InvalidKey)
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
            scopes: Vec::new(),
            rate: RateInfo::default(),
            failsafe: true,
        }
    }
}

fn audit<'a>(
    project_id: &'a str,
    key_id: &'a str,
    reason: Reason,
    origin: Option<Origin<'a>>,
) -> Audit<'a> {
    Audit {
        project_id,
        key_id,
        result: reason.result(),
        reason: reason.as_str(),
        origin,
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
        scopes: doc.scopes,
        rate: RateInfo::default(),
        failsafe: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_matched_against_v4_and_v6_networks_and_fail_closed() {
        let cidrs = vec![
            "10.0.0.0/8".to_owned(),
            "2001:db8::/32".to_owned(),
            "192.0.2.7".to_owned(),
        ];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(ip_allowed(&cidrs, ip("10.1.2.3")));
        assert!(ip_allowed(&cidrs, ip("::ffff:10.1.2.3")));
        assert!(ip_allowed(&cidrs, ip("2001:db8::1")));
        assert!(ip_allowed(&cidrs, ip("192.0.2.7")));
        assert!(!ip_allowed(&cidrs, ip("192.0.2.8")));
        assert!(!ip_allowed(&cidrs, ip("11.0.0.1")));
        assert!(!ip_allowed(&cidrs, ip("2001:db9::1")));
        assert!(!ip_allowed(&cidrs, None));
        assert!(!ip_allowed(&["garbage".to_owned()], ip("10.0.0.1")));
    }
}
