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
//! the store's flusher) and the answer. For a success with a client address
//! the round trip also carries `webhook::signal`'s network probe; a
//! refusal webhooks hear about (a 429, a wrong-secret flood, credits
//! short) and a new network write their event after it, before the answer.
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
use crate::plan::Per;
use crate::scope;
use crate::store::{names, now, Audit, Effects, KeyDoc, Lookup, Origin, Owed, Spend, Store};
use crate::telemetry::metric;
use crate::webhook::signal::{Refusal, Signals};

/// One validation request, from either endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The presented key, as received (may be anything).
    pub api_key: &'a str,
    /// Scopes the request requires; every one must be granted.
    pub required_scopes: &'a [String],
    /// The caller's address, for keys bound to networks.
    pub client_ip: Option<IpAddr>,
    /// The gateway's original request, written to the audit entry.
    pub origin: Option<Origin<'a>>,
    /// What the request weighs: each window and the credits are spent by
    /// it (0 checks everything and spends nothing; see `plan`).
    pub cost: u64,
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
    /// Credits left after this request; `null`: unlimited.
    pub credits_remaining: Option<i64>,
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
    /// Not enough credits left for the request's cost.
    CreditsExhausted,
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
            Reason::CreditsExhausted => "credits_exhausted",
            Reason::FailsafeOpen => "failsafe_open",
        }
    }

    /// The audit `result`: `ok`, `denied` or `rate_limited`.
    pub fn result(self) -> &'static str {
        match self {
            Reason::Ok | Reason::PreviousSecret | Reason::FailsafeOpen => "ok",
            Reason::RateLimited | Reason::CreditsExhausted => "rate_limited",
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
    /// What the plan's counters spent, if the key has a plan.
    plan: Planned,
    /// The key's wrong secrets this minute before this request, as read
    /// (for `key.secret_attack`).
    bad_before: Option<u64>,
}

/// What spending a key's plan (its `limits` besides the minute's, and its
/// credits) did: what each counter is owed if the request passes (a new
/// window's expiry) and if it does not (the spend taken back).
#[derive(Debug, Default)]
struct Planned {
    keep: Vec<(String, Owed)>,
    undo: Vec<(String, Owed)>,
    /// The credits left after this request; `None`: unlimited.
    credits: Option<i64>,
    /// The plan window that refused the request.
    window: Option<&'static str>,
    /// Credits short: seconds until they refill, if they do.
    refill_in: Option<u64>,
}

/// The largest counter a window may reach with this request and pass:
/// with a cost, `limit` (the count includes it); with none, under `limit`
/// (a full window refuses even a request that spends nothing).
fn within(count: i64, cost: u64, limit: u64) -> bool {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match cost {
        0 => count < limit,
        _ => count <= limit,
    }
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
            plan: Planned::default(),
            bad_before: None,
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
    /// The plan's counters spent on the way.
    plan: Box<Planned>,
}

#[derive(Clone)]
pub struct Validator {
    store: Store,
    hasher: Arc<Hasher>,
    default_rate_limit: u64,
    bad_secret_hashes_per_minute: u64,
    failsafe: Failsafe,
    /// What webhooks hear of validations.
    signals: Arc<Signals>,
}

impl Validator {
    pub fn new(store: Store, hasher: Arc<Hasher>, config: &Config) -> Self {
        Self {
            store,
            hasher,
            default_rate_limit: config.default_rate_limit,
            bad_secret_hashes_per_minute: config.bad_secret_hashes_per_minute,
            failsafe: config.failsafe,
            signals: Arc::new(Signals::new(config)),
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
            Err(incomplete) => self.failsafe(&key, minute, req.cost, incomplete),
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
        let cost = req.cost;
        let cache_key = self.hasher.cache_key(key);
        let cached = self.hasher.cached(&cache_key);
        // A use is counted in round trip 1 for a secret the cache knows, and
        // only with a cost: spending nothing counts nothing.
        let counting = cached.is_some() && cost > 0;
        let read = match counting {
            true => {
                let read = self.store.read_counting(project, key_id, minute, cost);
                read.await
            }
            false => self.store.read(project, key_id, minute).await,
        };
        let count = match counting {
            true => read.used.as_ref().ok().copied(),
            false => None,
        };
        let bad_before = read.bad.as_ref().ok().copied();
        let refuse = move |reason| Ok(Decision::refuse(reason, count));
        let incomplete = move |error, doc| Incomplete {
            error,
            doc,
            counted: count.is_some(),
            plan: Box::default(),
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
                        Some(count) => Ok(count.saturating_sub(cost)),
                        None => read.used.as_ref().copied(),
                    };
                    let fits = |used: u64| within((used + cost) as i64, cost, limit);
                    if before.is_ok_and(|used| !fits(used)) {
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
            Matched::Neither => {
                return Ok(Decision {
                    bad_before,
                    ..Decision::refuse(Reason::BadSecret, count)
                })
            }
            Matched::Corrupt => {
                self.store.report_corrupt_hash(project, key_id);
                return refuse(Reason::Unreadable);
            }
        };
        if let Some(missing) = scope::first_missing(&doc.scopes, req.required_scopes) {
            tracing::debug!(missing, "required scope not granted");
            return done(Decision::refuse(Reason::InsufficientScope, count));
        }
        let used = match (cost, cached) {
            (0, _) | (_, Some(_)) => read.used,
            (_, None) => self.store.count_use(project, key_id, minute, cost).await,
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
        let count = (cost > 0).then_some(used);
        if !within(used as i64, cost, limit) {
            // Lost the race for the last use of this window.
            return done(Decision::rate_limited(limit, reset, count));
        }
        let mut rate = RateInfo {
            limit,
            remaining: limit.saturating_sub(used),
            reset,
        };
        let plan = match self.spend_plan(key, &doc, cost, used, &mut rate).await {
            Ok(plan) => plan,
            Err((error, plan)) => {
                return Err(Incomplete {
                    plan: Box::new(plan),
                    ..incomplete(error, Some(doc))
                })
            }
        };
        let refused = match (plan.window, plan.refill_in, plan.credits) {
            (Some(_), _, _) => Some(Reason::RateLimited),
            (None, _, Some(credits)) if !within(-credits, cost, 0) => {
                Some(Reason::CreditsExhausted)
            }
            _ => None,
        };
        if let Some(reason) = refused {
            let refusal = Decision {
                rate,
                plan,
                ..Decision::refuse(reason, count)
            };
            return done(refusal);
        }
        let verdict = Verdict::Pass { doc, reason };
        done(Decision {
            verdict,
            rate,
            count,
            remember: None,
            plan,
            bad_before: None,
        })
    }

    /// Spends the key's plan, if it has one, in one round trip: each of its
    /// windows but the minute's (`INCRBY cost`) and its credits (`DECRBY
    /// cost`, after creating a refill interval's balance with `SET NX`).
    /// The minute's windows are checked against `used`, the minute counter
    /// already spent. `rate` becomes the window nearest to exhaustion, or
    /// the one that refused. A refusal is `window` or credits short; either
    /// way every counter spent is owed its spend back (`undo`).
    async fn spend_plan(
        &self,
        key: &ApiKey,
        doc: &KeyDoc,
        cost: u64,
        used: u64,
        rate: &mut RateInfo,
    ) -> Result<Planned, (Error, Planned)> {
        let mut planned = Planned::default();
        if doc.limits.is_empty() && doc.credits.is_none() {
            return Ok(planned);
        }
        let (project, key_id) = (key.project_id.as_str(), key.key_id.as_str());
        let now = now();
        let mut windows = Vec::new();
        let mut spends = Vec::new();
        // Each spend's counter's lifetime, which whatever it is owed keeps
        // (an `EXPIRE NX`): a retried take-back never leaves one without.
        let mut ttls: Vec<Option<i64>> = Vec::new();
        for limit in &doc.limits {
            let window = limit.per.window(now);
            if limit.per == Per::Minute {
                // The minute's counter, spent already.
                windows.push((*limit, window, None));
                continue;
            }
            // Two limits on one length share its counter, spent once.
            let counter = names::window(project, key_id, &window.name);
            let i = match spends.iter().position(|s: &Spend| s.counter == counter) {
                Some(i) => i,
                None => {
                    spends.push(Spend {
                        counter,
                        delta: cost as i64,
                        init: None,
                    });
                    ttls.push(Some(limit.per.ttl()));
                    spends.len() - 1
                }
            };
            windows.push((*limit, window, Some(i)));
        }
        let credits = doc.credits.map(|credits| {
            let (period, refill_in) = credits.period(now);
            let init = credits.refill.map(|r| {
                let amount = i64::try_from(r.amount).unwrap_or(i64::MAX);
                (amount, refill_in.unwrap_or(0) as i64 + 120)
            });
            spends.push(Spend {
                counter: names::credits(project, key_id, &period),
                delta: -(cost as i64),
                init,
            });
            ttls.push(init.map(|(_, ttl)| ttl));
            (spends.len() - 1, refill_in)
        });
        let answers = self.store.spend(&spends).await;
        // What each counter is owed either way.
        let mut error = None;
        for ((spend, answer), ttl) in spends.iter().zip(&answers).zip(&ttls) {
            match answer {
                Ok(_) if spend.delta == 0 => {}
                Ok(_) => planned.undo.push((
                    spend.counter.clone(),
                    Owed {
                        add: -spend.delta,
                        expire: *ttl,
                    },
                )),
                Err(e) => {
                    // Its answer lost, the spend may have run: whatever
                    // happens, the counter expires.
                    let expire_only = (
                        spend.counter.clone(),
                        Owed {
                            add: 0,
                            expire: *ttl,
                        },
                    );
                    planned.keep.push(expire_only.clone());
                    planned.undo.push(expire_only);
                    error.get_or_insert_with(|| match e {
                        Error::Unavailable(detail) => Error::Unavailable(detail.clone()),
                        other => Error::Unavailable(other.to_string()),
                    });
                }
            }
        }
        let mut nearest: Option<RateInfo> = None;
        for (limit, window, spent) in windows {
            let count = match spent {
                None => used as i64,
                Some(i) => match &answers[i] {
                    Ok(count) => *count,
                    Err(_) => continue,
                },
            };
            let opened = |i: &usize| {
                let counter = &spends[*i].counter;
                cost > 0 && count == cost as i64 && !planned.keep.iter().any(|(c, _)| c == counter)
            };
            if let Some(i) = spent.filter(opened) {
                // A new window: it expires after its end (its take-back,
                // in `undo`, carries the same expiry).
                let expire = ttls[i];
                planned
                    .keep
                    .push((spends[i].counter.clone(), Owed { add: 0, expire }));
            }
            let info = RateInfo {
                limit: limit.limit,
                remaining: limit.limit.saturating_sub(count.max(0) as u64),
                reset: window.ends_in,
            };
            if planned.window.is_none() && !within(count, cost, limit.limit) {
                planned.window = Some(limit.per.as_str());
                *rate = RateInfo {
                    remaining: 0,
                    ..info
                };
            }
            if nearest.map_or(true, |n| info.remaining < n.remaining) {
                nearest = Some(info);
            }
        }
        if let Some((i, refill_in)) = credits {
            if let Ok(balance) = answers[i] {
                planned.credits = Some(balance);
                planned.refill_in = refill_in;
            }
        }
        if let Some(error) = error {
            return Err((error, planned));
        }
        match nearest {
            Some(n) if planned.window.is_none() && n.remaining < rate.remaining => *rate = n,
            _ => {}
        }
        Ok(planned)
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
            plan,
            bad_before,
        } = decision;
        let (reason, pass) = match &verdict {
            Verdict::Pass { reason, .. } => (*reason, true),
            Verdict::Refuse(reason) => (*reason, false),
        };
        let (project_id, key_id) =
            key.map_or(("", ""), |k| (k.project_id.as_str(), k.key_id.as_str()));
        let probe = match (pass, key) {
            (true, Some(key)) => self.signals.network_probe(key, req.client_ip),
            _ => None,
        };
        let effects = Effects {
            audit: Audit {
                project_id,
                key_id,
                result: reason.result(),
                reason: reason.as_str(),
                origin: req.origin,
                cost: req.cost,
                window: plan.window,
            },
            minute,
            new_window: count.is_some() && count == Some(req.cost),
            bad_secret: reason == Reason::BadSecret,
            undo_use: match pass {
                false => count.map_or(0, |_| req.cost),
                true => 0,
            },
            remember: remember.as_ref().map(|(f, v)| (f.as_str(), v.as_str())),
            plan: if pass { &plan.keep } else { &plan.undo },
            network: probe.as_ref().map(|(name, ttl)| (name.as_str(), *ttl)),
        };
        let written = self.store.finish(effects).await;
        match (verdict, written) {
            (Verdict::Pass { doc, .. }, Ok(finished)) => {
                tally(reason);
                if let Some((name, _)) = probe {
                    self.signals.probed(name);
                }
                if let Some(key) = key {
                    self.store.count_usage(&key.project_id, &key.key_id);
                    if finished.new_network {
                        // Boxed, as every Redis command here is: its futures
                        // are large, and held inline they would grow the whole
                        // validation's future, copied at each `.await`.
                        let signal = self.signals.new_network(&self.store, key, req.client_ip);
                        Box::pin(signal).await;
                    }
                }
                Ok(Validated {
                    rate,
                    credits_remaining: plan.credits,
                    ..validated(*doc)
                })
            }
            (Verdict::Pass { doc, .. }, Err(error)) => {
                let incomplete = Incomplete {
                    error,
                    doc: Some(doc),
                    counted: count.is_some(),
                    plan: Box::new(plan),
                };
                match key {
                    Some(key) => self.failsafe(key, minute, req.cost, incomplete),
                    None => Err(incomplete.error),
                }
            }
            (Verdict::Refuse(_), written) => {
                tally(reason);
                let refusal = match reason {
                    Reason::RateLimited => Some(Refusal::RateLimited {
                        window: plan.window.unwrap_or("minute"),
                        limit: rate.limit,
                        reset: rate.reset,
                    }),
                    Reason::BadSecret => Some(Refusal::BadSecret {
                        before: bad_before,
                        reset: window(now()).1,
                    }),
                    Reason::CreditsExhausted => Some(Refusal::CreditsExhausted {
                        refill_in: plan.refill_in,
                    }),
                    _ => None,
                };
                if let (Some(refusal), Some(key)) = (refusal, key) {
                    Box::pin(self.signals.refused(&self.store, key, refusal)).await;
                }
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
                    Reason::CreditsExhausted => Error::CreditsExhausted {
                        retry_after: plan.refill_in,
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
    fn failsafe(
        &self,
        key: &ApiKey,
        minute: u64,
        cost: u64,
        incomplete: Incomplete,
    ) -> Result<Validated> {
        let Incomplete {
            error,
            doc,
            counted,
            plan,
        } = incomplete;
        let open = self.failsafe == Failsafe::Open && matches!(error, Error::Unavailable(_));
        if counted {
            let (project, key_id) = (&key.project_id, &key.key_id);
            let undo = if open { 0 } else { cost };
            self.store
                .settle_in_background(project, key_id, minute, undo);
        }
        let owed = if open { plan.keep } else { plan.undo };
        self.store.settle_plan_in_background(owed);
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
        credits_remaining: None,
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
