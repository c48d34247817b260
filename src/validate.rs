//! The validation pipeline: "decide, then finish". Knows nothing about HTTP:
//! `POST /v1/validate-key` and the forward-auth endpoint `/v1/auth` both call
//! [`Validator::validate`], so the two can never disagree.
//!
//! [`Validator::decide`] only reads and verifies, and returns one
//! [`Decision`], the same for a cached secret and a first-time one:
//!
//! 1. Parse the key; a malformed key is refused before Redis.
//! 2. Round trip 1 reads the key's document. With a secret this process has
//!    verified before (the cache knows the hash it matched) the use is
//!    counted at once (`INCR`, whose answer decides 429 exactly); otherwise
//!    this minute's use and wrong-secret counters are only read (and, with
//!    a pepper, what `apiverify` remembers of secrets verified before).
//! 3. The document decides what it can: unknown, forbidden, unreadable,
//!    disabled, expired, outside the key's networks.
//! 4. The secret: the cache, while the document still carries the hash it
//!    matched; else (already over the limit: 429 without hashing) a digest
//!    another instance remembered, or (a flood of wrong secrets: refused
//!    without hashing) Argon2id against the one hash the rotation tags
//!    allow (see `hash`).
//! 5. Scopes (a 403 never counts against the limit), then the count: the
//!    `INCR` of step 2, or a second round trip for a first-time secret.
//!
//! [`Validator::finish`] alone writes: one round trip with the audit entry,
//! the counter change (the new window's `EXPIRE`, the wrong-secret count,
//! or taking back the use of any refusal) and a new secret's digest; then
//! the metric, the usage count of a 200 (written about a second later by
//! the store's flusher) and the answer.
//!
//! When Redis fails: a read Redis did not answer, with no read refusing the
//! key, is incomplete: 503 under `KEYWARD_FAILSAFE=closed`, a 200 marked
//! failsafe under `open`. Once Redis has answered a read that refuses the
//! key, the refusal stands whatever fails after it: a refusal whose writes
//! fail is still answered as that refusal (logged, and counted in
//! `keyward_validations_unaudited_total`), never as a 200 nor a 503. A
//! success whose audit entry cannot be written is a 503 (closed) or a
//! failsafe 200 (open). `503 busy` (Argon2id's queue is full) is shed load,
//! not a decision, and leaves no entry; an anonymous denial past its
//! per-second budget is counted into a summary entry (see `audit`).
//!
//! Every bad key is the same `Error::InvalidKey` to the caller; only the
//! audit entry and the metric say which kind it was.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Failsafe};
use crate::error::{Error, Result};
use crate::hash::{Hasher, Hashes, Matched};
use crate::key::ApiKey;
use crate::scope;
use crate::store::{now, Audit, Effects, KeyDoc, Lookup, Origin, Store};
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
    /// Accepted under `KEYWARD_FAILSAFE=open` without a complete check.
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

/// What [`Validator::decide`] concluded from Redis's answers.
#[derive(Debug)]
struct Decision {
    verdict: Verdict,
    /// The window: with this use counted for a pass; `limit` and `reset`
    /// for a 429.
    rate: RateInfo,
    /// The `INCR`'s answer, when this use was counted (1: it opened the
    /// window). A refusal takes the use back.
    count: Option<u64>,
    /// A secret verified just now: the digest to remember it by in Redis
    /// (`apiverify` field and value), with a pepper configured.
    remember: Option<(String, String)>,
}

#[derive(Debug)]
enum Verdict {
    /// The key passes; `reason` says which of its secrets matched.
    Pass {
        doc: Box<KeyDoc>,
        reason: Reason,
    },
    Refuse(Reason),
}

impl Decision {
    fn refuse(reason: Reason, count: Option<u64>) -> Self {
        Decision {
            verdict: Verdict::Refuse(reason),
            rate: RateInfo::default(),
            count,
            remember: None,
        }
    }

    fn rate_limited(limit: u64, reset: u64, count: Option<u64>) -> Self {
        Decision {
            rate: RateInfo {
                limit,
                remaining: 0,
                reset,
            },
            ..Decision::refuse(Reason::RateLimited, count)
        }
    }
}

/// No read refused the key, but Redis did not answer one that a pass needs
/// (`error`); `doc`: the document, when it was read and allows the key;
/// `counted`: whether this use was counted all the same.
#[derive(Debug)]
struct Incomplete {
    error: Error,
    doc: Option<Box<KeyDoc>>,
    counted: bool,
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

    /// Validates a request: `Ok` to let it pass, else the error to answer
    /// (`InvalidKey`, `InsufficientScope`, `RateLimited`, `Unavailable`,
    /// `Busy`).
    pub async fn validate(&self, req: &Request<'_>) -> Result<Validated> {
        let (minute, reset) = window(now());
        let Ok(key) = ApiKey::parse(req.api_key) else {
            let malformed = Decision::refuse(Reason::Malformed, None);
            return self.finish(req, None, minute, malformed).await;
        };
        match self.decide(req, &key, minute, reset).await {
            Ok(decision) => self.finish(req, Some(&key), minute, decision).await,
            Err(incomplete) => self.failsafe(&key, minute, incomplete),
        }
    }

    /// Reads and verifies. Writes nothing but the `INCR` that counts a use:
    /// in round trip 1 for a secret the cache knows, else once it is verified.
    async fn decide(
        &self,
        req: &Request<'_>,
        key: &ApiKey,
        minute: u64,
        reset: u64,
    ) -> Result<Decision, Incomplete> {
        let (project, key_id) = (&key.project_id, &key.key_id);
        let cache_key = self.hasher.cache_key(key);
        let cached = self.hasher.cached(&cache_key);
        let read = match cached {
            Some(_) => self.store.read_counting(project, key_id, minute).await,
            None => self.store.read(project, key_id, minute).await,
        };
        let count = match cached {
            Some(_) => read.used.as_ref().ok().copied(),
            None => None,
        };
        let refuse = move |reason| Ok(Decision::refuse(reason, count));
        let incomplete = move |error, doc| Incomplete {
            error,
            doc,
            counted: count.is_some(),
        };
        let doc = match read.doc.map_err(|e| incomplete(e, None))? {
            Lookup::Found(doc) => doc,
            Lookup::Missing => return refuse(Reason::NotFound),
            Lookup::Forbidden => return refuse(Reason::Forbidden),
            Lookup::Unreadable => return refuse(Reason::Unreadable),
        };
        let now = now();
        if let Some(reason) = policy(&doc, req, now) {
            return refuse(reason);
        }
        let limit = doc.rate_limit_per_minute.unwrap_or(self.default_rate_limit);
        let hashes = Hashes {
            current: (&doc.secret_hash, doc.secret_tag.as_deref()),
            previous: doc
                .previous_hash(now)
                .map(|phc| (phc, doc.previous_secret_tag.as_deref())),
        };
        let (matched, mut remember) =
            match self
                .hasher
                .cached_match(&cache_key, cached.as_deref(), hashes)
            {
                Some(matched) => (matched, None),
                None => {
                    let before = match count {
                        Some(count) => Ok(count.saturating_sub(1)),
                        None => read.used.as_ref().copied(),
                    };
                    if before.is_ok_and(|used| used >= limit) {
                        // Already over the limit this minute: no hashing.
                        return Ok(Decision::rate_limited(limit, reset, count));
                    }
                    let flooded = read
                        .bad
                        .is_ok_and(|bad| bad >= self.bad_secret_hashes_per_minute);
                    let remembered = &read.remembered;
                    let verified = self
                        .hasher
                        .verify_first(key, &cache_key, hashes, remembered, flooded);
                    verified.await.map_err(|e| incomplete(e, None))?
                }
            };
        let mut done = move |decision: Decision| {
            let remember = remember.take();
            Ok(Decision {
                remember,
                ..decision
            })
        };
        let reason = match matched {
            Matched::Current => Reason::Ok,
            Matched::Previous => Reason::PreviousSecret,
            Matched::Neither => return refuse(Reason::BadSecret),
            Matched::Corrupt => {
                self.store.report_corrupt_hash(project, key_id);
                return refuse(Reason::Unreadable);
            }
        };
        if let Some(missing) = scope::first_missing(&doc.scopes, req.required_scopes) {
            tracing::debug!(missing, "required scope not granted");
            return done(Decision::refuse(Reason::InsufficientScope, count));
        }
        let used = match cached {
            Some(_) => read.used,
            None => self.store.count_use(project, key_id, minute).await,
        };
        let used = match used {
            Ok(used) => used,
            // Not counted; if the count can still be read, a key already
            // over its limit is refused all the same.
            Err(error) => match self.store.used(project, key_id, minute).await {
                Ok(used) if used >= limit => {
                    return done(Decision::rate_limited(limit, reset, None))
                }
                _ => return Err(incomplete(error, Some(doc))),
            },
        };
        let count = Some(used);
        if used > limit {
            // Lost the race for the last use of this window.
            return done(Decision::rate_limited(limit, reset, count));
        }
        let rate = RateInfo {
            limit,
            remaining: limit - used,
            reset,
        };
        let verdict = Verdict::Pass { doc, reason };
        done(Decision {
            verdict,
            rate,
            count,
            remember: None,
        })
    }

    /// The only writes of a validation, in one round trip: the audit entry
    /// (unless the anonymous budget summarizes it), the counter change and a
    /// new secret's digest. Then the metric, a 200's usage and the answer.
    async fn finish(
        &self,
        req: &Request<'_>,
        key: Option<&ApiKey>,
        minute: u64,
        decision: Decision,
    ) -> Result<Validated> {
        let Decision {
            verdict,
            rate,
            count,
            remember,
        } = decision;
        let (reason, pass) = match &verdict {
            Verdict::Pass { reason, .. } => (*reason, true),
            Verdict::Refuse(reason) => (*reason, false),
        };
        let (project_id, key_id) =
            key.map_or(("", ""), |k| (k.project_id.as_str(), k.key_id.as_str()));
        let effects = Effects {
            audit: Audit {
                project_id,
                key_id,
                result: reason.result(),
                reason: reason.as_str(),
                origin: req.origin,
            },
            minute,
            new_window: count == Some(1),
            bad_secret: reason == Reason::BadSecret,
            undo_use: count.is_some() && !pass,
            remember: remember.as_ref().map(|(f, v)| (f.as_str(), v.as_str())),
        };
        let written = self.store.finish(effects).await;
        match (verdict, written) {
            (Verdict::Pass { doc, .. }, Ok(())) => {
                tally(reason);
                if let Some(key) = key {
                    self.store.count_usage(&key.project_id, &key.key_id);
                }
                Ok(Validated {
                    rate,
                    ..validated(*doc)
                })
            }
            (Verdict::Pass { doc, .. }, Err(error)) => {
                let incomplete = Incomplete {
                    error,
                    doc: Some(doc),
                    counted: true,
                };
                match key {
                    Some(key) => self.failsafe(key, minute, incomplete),
                    None => Err(incomplete.error),
                }
            }
            (Verdict::Refuse(_), written) => {
                tally(reason);
                if let Err(e) = written {
                    unaudited(reason);
                    tracing::warn!(
                        project_id, key_id, reason = reason.as_str(), error = %e,
                        "refusal answered without its audit entry: Redis did not take it"
                    );
                }
                Err(match reason {
                    Reason::RateLimited => Error::RateLimited {
                        limit: rate.limit,
                        retry_after: rate.reset,
                    },
                    Reason::InsufficientScope => Error::InsufficientScope {
                        required: req.required_scopes.join(" "),
                    },
                    _ => Error::InvalidKey,
                })
            }
        }
    }

    /// 503, or under `KEYWARD_FAILSAFE=open` and when Redis is what failed,
    /// a 200 marked failsafe (with the document's data if it was read):
    /// counted, logged, not audited. A use counted on the way is taken back
    /// unless the answer is a 200, and its window made to expire.
    fn failsafe(&self, key: &ApiKey, minute: u64, incomplete: Incomplete) -> Result<Validated> {
        let Incomplete {
            error,
            doc,
            counted,
        } = incomplete;
        let open = self.failsafe == Failsafe::Open && matches!(error, Error::Unavailable(_));
        if counted {
            let (project, key_id) = (&key.project_id, &key.key_id);
            self.store
                .settle_in_background(project, key_id, minute, !open);
        }
        if !open {
            return Err(error);
        }
        tally(Reason::FailsafeOpen);
        unaudited(Reason::FailsafeOpen);
        tracing::warn!(
            project_id = %key.project_id, key_id = %key.key_id, error = %error,
            doc_read = doc.is_some(),
            "redis did not answer: key accepted unchecked (KEYWARD_FAILSAFE=open)"
        );
        let doc = match doc {
            Some(doc) => {
                self.store.count_usage(&key.project_id, &key.key_id);
                *doc
            }
            None => KeyDoc {
                project_id: key.project_id.to_string(),
                key_id: key.key_id.to_string(),
                ..KeyDoc::default()
            },
        };
        Ok(Validated {
            failsafe: true,
            ..validated(doc)
        })
    }
}

fn tally(reason: Reason) {
    tracing::debug!(
        result = reason.result(),
        reason = reason.as_str(),
        "validation"
    );
    metrics::counter!(metric::VALIDATIONS, "result" => reason.result(), "reason" => reason.as_str())
        .increment(1);
}

fn unaudited(reason: Reason) {
    metrics::counter!(metric::VALIDATIONS_UNAUDITED, "reason" => reason.as_str()).increment(1);
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
