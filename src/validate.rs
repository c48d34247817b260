//! The validation pipeline. Knows nothing about HTTP: `POST /v1/validate-key`
//! and the forward-auth endpoint `/v1/auth` both call [`Validator::validate`],
//! so the two can never disagree.
//!
//! 1. Parse the key; a malformed key is denied without touching Redis's data.
//! 2. The verified-secret cache: has this exact key been verified before,
//!    and against which stored hash?
//! 3. Warm (it has): round trip 1 reads the document and counts the use
//!    (`INCR`, whose result decides 429 exactly); the document must still
//!    carry that hash, be enabled, unexpired, in the key's networks, and grant
//!    the required scopes, or the count is undone in the denial's own
//!    pipeline. Round trip 2 writes `apimeta` and the audit entry.
//! 4. Cold (it has not, or the document moved on): round trip 1 reads the
//!    document and this minute's counters; decide without hashing where
//!    possible (unknown, forbidden, unreadable, disabled, expired, outside
//!    the key's networks, over the rate limit, a flood of wrong secrets);
//!    verify with Argon2id (during a rotation's grace period, against the
//!    one hash the tags allow); check scopes (a 403 never counts against the
//!    limit); count with `INCR`; write `apimeta` and the audit entry.
//!
//! Every outcome leaves exactly one audit entry, written before the answer,
//! except that an anonymous denial past its per-second budget is counted
//! into a summary entry instead (see `audit`).
//!
//! Every bad key is the same `Error::InvalidKey` to the caller; only the
//! audit entry and the metric say which kind it was.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Failsafe};
use crate::error::{Error, Result};
use crate::hash::{CacheKey, Hasher, Verdict};
use crate::key::{ApiKey, KeyId, ProjectId};
use crate::scope;
use crate::store::{now, Audit, Counter, KeyDoc, Lookup, Origin, Store};
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The parsed key's identity and this validation's rate-limit window.
struct Who<'a> {
    project: &'a ProjectId,
    key_id: &'a KeyId,
    origin: Option<Origin<'a>>,
    minute: u64,
    /// Seconds until the window resets.
    reset: u64,
}

/// Why the document alone refuses the request, if it does: disabled,
/// expired, or a client address outside the key's networks.
fn policy(doc: &KeyDoc, req: &Request<'_>, now: f64) -> Option<Reason> {
    if doc.disabled {
        return Some(Reason::Disabled);
    }
    if doc.expires_at.is_some_and(|at| at <= now) {
        return Some(Reason::Expired);
    }
    match &doc.allowed_cidrs {
        Some(cidrs) if !ip_allowed(cidrs, req.client_ip) => Some(Reason::IpNotAllowed),
        _ => None,
    }
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
            minute,
            reset,
        };
        let cache_key = self.hasher.cache_key(&key);
        if let Some(phc) = self.hasher.cached(&cache_key) {
            match self.validate_warm(req, &who, &phc).await {
                Err(Error::Unavailable(detail)) if self.failsafe == Failsafe::Open => {
                    return Ok(self.failsafe_open(&key, &detail));
                }
                Ok(None) => {} // The document moved on: verify afresh.
                Ok(Some(validated)) => return Ok(validated),
                Err(e) => return Err(e),
            }
        }
        match self.validate_cold(req, &key, &who, &cache_key).await {
            Err(Error::Unavailable(detail)) if self.failsafe == Failsafe::Open => {
                Ok(self.failsafe_open(&key, &detail))
            }
            outcome => outcome,
        }
    }

    /// A key whose secret was verified against `phc` before: two round
    /// trips, no hashing. `None` when the document no longer carries `phc`.
    async fn validate_warm(
        &self,
        req: &Request<'_>,
        who: &Who<'_>,
        phc: &str,
    ) -> Result<Option<Validated>> {
        let (lookup, used) = self
            .store
            .lookup_counting(who.project, who.key_id, who.minute)
            .await?;
        let doc = match lookup {
            Lookup::Found { doc, .. } => doc,
            Lookup::Missing => return self.deny_key(Reason::NotFound, who).await.map(Some),
            Lookup::Forbidden => return self.deny_key(Reason::Forbidden, who).await.map(Some),
            Lookup::Unreadable => return self.deny_key(Reason::Unreadable, who).await.map(Some),
        };
        let now = now();
        let undo = Some(Counter::UndoUse(who.project, who.key_id, who.minute));
        let reason = if *doc.secret_hash == *phc {
            Reason::Ok
        } else if doc.previous_hash(now) == Some(phc) {
            Reason::PreviousSecret
        } else {
            // Re-keyed, rotated past its grace period: not this secret's hash.
            self.store.record_denial(None, undo).await?;
            return Ok(None);
        };
        metrics::counter!(metric::VERIFY_CACHE_HITS).increment(1);
        if let Some(denied) = policy(&doc, req, now) {
            return self.deny_key_with(denied, who, undo).await.map(Some);
        }
        self.check_scopes(&doc, req, who, undo).await?;
        let limit = doc.rate_limit_per_minute.unwrap_or(self.default_rate_limit);
        self.succeed(who, doc, reason, used, limit).await.map(Some)
    }

    /// A key not verified before (or whose document moved on).
    async fn validate_cold(
        &self,
        req: &Request<'_>,
        key: &ApiKey,
        who: &Who<'_>,
        cache_key: &CacheKey,
    ) -> Result<Validated> {
        let (doc, used, bad) = match self
            .store
            .lookup(who.project, who.key_id, who.minute)
            .await?
        {
            Lookup::Found { doc, used, bad } => (doc, used, bad),
            Lookup::Missing => return self.deny_key(Reason::NotFound, who).await,
            Lookup::Forbidden => return self.deny_key(Reason::Forbidden, who).await,
            Lookup::Unreadable => return self.deny_key(Reason::Unreadable, who).await,
        };
        let now = now();
        if let Some(denied) = policy(&doc, req, now) {
            return self.deny_key(denied, who).await;
        }
        let limit = doc.rate_limit_per_minute.unwrap_or(self.default_rate_limit);
        if used >= limit {
            // Already over the limit this minute: answer without hashing.
            return self.over_limit(who, limit).await;
        }

        let reason = match self.secret_matches(key, cache_key, &doc, bad, now).await? {
            Matched::Current => Reason::Ok,
            Matched::Previous => Reason::PreviousSecret,
            Matched::Corrupt => {
                self.store.report_corrupt_hash(who.project, who.key_id);
                return self.deny_key(Reason::Unreadable, who).await;
            }
            Matched::No => {
                let audit = audit(
                    who.project.as_str(),
                    who.key_id.as_str(),
                    Reason::BadSecret,
                    who.origin,
                );
                let counter = Some(Counter::BadSecret(who.project, who.key_id, who.minute));
                return self.deny(Reason::BadSecret, audit, counter).await;
            }
        };
        self.check_scopes(&doc, req, who, None).await?;
        let used = self
            .store
            .count_use(who.project, who.key_id, who.minute)
            .await?;
        self.succeed(who, doc, reason, used, limit).await
    }

    /// 403 unless every required scope is granted; audited, and `undo`
    /// takes back a use already counted.
    async fn check_scopes(
        &self,
        doc: &KeyDoc,
        req: &Request<'_>,
        who: &Who<'_>,
        undo: Option<Counter<'_>>,
    ) -> Result<()> {
        let Some(missing) = scope::first_missing(&doc.scopes, req.required_scopes) else {
            return Ok(());
        };
        tracing::debug!(missing, "required scope not granted");
        count(Reason::InsufficientScope);
        let entry = audit(
            who.project.as_str(),
            who.key_id.as_str(),
            Reason::InsufficientScope,
            who.origin,
        );
        self.store.record_denial(Some(entry), undo).await?;
        Err(Error::InsufficientScope {
            required: req.required_scopes.join(" "),
        })
    }

    /// With the use counted (`used` includes it): 429 past the limit, else
    /// the success is recorded and answered.
    async fn succeed(
        &self,
        who: &Who<'_>,
        doc: Box<KeyDoc>,
        reason: Reason,
        used: u64,
        limit: u64,
    ) -> Result<Validated> {
        if used > limit {
            // Lost the race for the last slot of this window.
            return self.over_limit(who, limit).await;
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
                reset: who.reset,
            },
            ..validated(*doc)
        })
    }

    /// Which of the key's secrets the presented one is. When the key has had
    /// too many wrong secrets this minute, it is refused without hashing.
    /// During a rotation the tags pick the one hash worth an Argon2id run.
    async fn secret_matches(
        &self,
        key: &ApiKey,
        cache_key: &CacheKey,
        doc: &KeyDoc,
        bad: u64,
        now: f64,
    ) -> Result<Matched> {
        if bad >= self.bad_secret_hashes_per_minute {
            return Ok(Matched::No);
        }
        let secret = &key.secret;
        let current = doc.secret_hash.as_str();
        let candidates: &[(&str, Matched)] = &match doc.previous_hash(now) {
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
            match self.hasher.verify(secret, phc, Some(cache_key)).await? {
                Verdict::Match => return Ok(matched),
                Verdict::Mismatch => {}
                Verdict::Corrupt => return Ok(Matched::Corrupt),
            }
        }
        Ok(Matched::No)
    }

    /// Audits a rate-limited validation and answers 429.
    async fn over_limit(&self, who: &Who<'_>, limit: u64) -> Result<Validated> {
        self.audit(Reason::RateLimited, who, None).await?;
        Err(Error::RateLimited {
            limit,
            retry_after: who.reset,
        })
    }

    async fn deny_key(&self, reason: Reason, who: &Who<'_>) -> Result<Validated> {
        self.deny_key_with(reason, who, None).await
    }

    async fn deny_key_with(
        &self,
        reason: Reason,
        who: &Who<'_>,
        counter: Option<Counter<'_>>,
    ) -> Result<Validated> {
        self.audit(reason, who, counter).await?;
        Err(Error::InvalidKey)
    }

    async fn audit(
        &self,
        reason: Reason,
        who: &Who<'_>,
        counter: Option<Counter<'_>>,
    ) -> Result<()> {
        let entry = audit(
            who.project.as_str(),
            who.key_id.as_str(),
            reason,
            who.origin,
        );
        count(reason);
        self.record(reason, entry, counter).await
    }

    /// Writes a denial's audit entry (unless it is anonymous and past this
    /// second's budget: then it is only counted into a summary, see `audit`)
    /// and its counter adjustment. If the entry cannot be written the caller
    /// gets a 503, never an unaudited answer.
    async fn record(
        &self,
        reason: Reason,
        entry: Audit<'_>,
        counter: Option<Counter<'_>>,
    ) -> Result<()> {
        let entry = self
            .store
            .audit_budget()
            .admit(reason.as_str())
            .then_some(entry);
        if entry.is_none() && counter.is_none() {
            return Ok(());
        }
        self.store.record_denial(entry, counter).await
    }

    /// Counts and audits a denial (and adjusts `counter`), then answers
    /// `InvalidKey`.
    async fn deny(
        &self,
        reason: Reason,
        entry: Audit<'_>,
        counter: Option<Counter<'_>>,
    ) -> Result<Validated> {
        count(reason);
        self.record(reason, entry, counter).await?;
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
