//! The validation pipeline: the I/O around the rules. Knows nothing about
//! HTTP: `POST /v1/validate-key` and the forward-auth endpoint `/v1/auth`
//! both call [`Validator::validate`], so the two can never disagree.
//!
//! [`rules`] holds every rule that can refuse a key, as pure functions of
//! what Redis answered; this file only asks Redis and the hasher what
//! [`rules::judge`] says it needs next, then applies the outcome:
//!
//! 1. Parse the key; a malformed key is refused before Redis.
//! 2. Round trip 1 reads the key's document. With a secret this process has
//!    verified before (the cache knows the hash it matched) the use is
//!    counted at once (`INCRBY cost`, whose answer decides 429 exactly);
//!    otherwise this minute's use and wrong-secret counters are only read
//!    (and, with a pepper, the verified digests `apiverify` holds of secrets
//!    verified before). The secret's free checks (cache, verified digest, tags)
//!    and the stored hashes' parameters are looked at, without Argon2id.
//! 3. Then, as `judge` asks: Argon2id against the one hash the tags allow
//!    (`hash`), the minute's `INCRBY cost` for a secret verified just now
//!    (a `GET` of it when that failed), and the plan's counters in one
//!    round trip (`spend_plan`).
//!
//! [`Validator::finish`] applies the outcome in one round trip: the audit
//! entry, the counter changes (the new window's `EXPIRE`, the wrong-secret
//! count, taking back the spends of a refusal) and a new secret's digest;
//! then the metric, the usage count of a 200 (written about a second later
//! by the store's flusher) and the answer. For a success with a client
//! address the round trip also carries `webhook::signal`'s network probe; a
//! refusal webhooks hear about (a 429, a wrong-secret flood, credits short),
//! a new network and a spend that took the credits below their `low_at`
//! write their event after it, before the answer.
//!
//! When Redis fails (`rules::Outcome::Incomplete`, no answer refusing the
//! key), [`Validator::failsafe`] answers: 503 under `KEYWARD_FAILSAFE=closed`;
//! under `open`, a 200 marked failsafe only with a document this instance
//! can vouch for (`known`: the last known good), else 503. Once Redis has
//! answered a read that refuses the key, the refusal stands whatever fails
//! after it: a refusal whose writes fail is still answered as that refusal
//! (logged, and counted in `keyward_validations_unaudited_total`). A
//! success whose audit entry cannot be written is a 503 (closed) or a
//! failsafe 200 (open). `503 busy` (Argon2id's queue is full) is shed load,
//! not a decision, and leaves no entry; an anonymous denial past its
//! per-second budget is counted into a summary entry (see `audit`).
//!
//! Every bad key is the same `Error::InvalidKey` to the caller; only the
//! audit entry and the metric say which kind it was.

mod known;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::now;
use crate::config::{Config, Failsafe};
use crate::error::{Error, Result};
use crate::hash::{CacheKey, Hasher, Hashes, Matched, Screen};
use crate::key::ApiKey;
use crate::plan::Per;
use crate::store::{names, Audit, Effects, KeyDoc, Lookup, Origin, Owed, Spend, Store};
use crate::telemetry::{metric, Handles};
use crate::webhook::signal::{Refusal, Signals};
use metrics::Counter;

use known::LastKnownGood;
pub use rules::{window, RateInfo, Reason};
use rules::{Answer, Facts, Failed, Next, Outcome, PlanAnswers, WindowAnswer};

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

/// What a validation learnt and decided, for `finish` or `failsafe`.
#[derive(Debug)]
struct Run {
    outcome: Outcome,
    /// The key's document, when it was read.
    doc: Option<Box<KeyDoc>>,
    /// The minute's counter with this use in it, when it was counted.
    counted: Option<u64>,
    /// An `INCRBY` of the minute was sent but not answered: it may have
    /// run, so its window must expire all the same.
    count_unknown: bool,
    /// What the plan's counters are owed on a pass and on a refusal.
    plan: Planned,
    /// A secret verified just now: its verified digest, to share in Redis
    /// (`apiverify` field and value), with a pepper configured.
    digest_to_share: Option<(String, String)>,
    /// The key's wrong secrets this minute before this request, as read
    /// (for `key.secret_attack`).
    bad_before: Option<u64>,
    /// The first failure met, behind an incomplete outcome.
    error: Option<Error>,
}

impl Run {
    fn refused(reason: Reason) -> Self {
        Run {
            outcome: Outcome::Refuse {
                reason,
                rate: RateInfo::default(),
                window: None,
                refill_in: None,
            },
            doc: None,
            counted: None,
            count_unknown: false,
            plan: Planned::default(),
            digest_to_share: None,
            bad_before: None,
            error: None,
        }
    }
}

/// What each plan counter spent is owed if the request passes (a new
/// window's expiry) and if it does not (the spend taken back).
#[derive(Debug, Default)]
struct Planned {
    keep: Vec<(String, Owed)>,
    undo: Vec<(String, Owed)>,
}

/// An answer for `rules`, keeping the first failure for the caller.
fn answer<T>(result: Result<T>, first: &mut Option<Error>) -> Answer<T> {
    result.map_err(|e| {
        first.get_or_insert(e);
        Failed
    })
}

#[derive(Clone)]
pub struct Validator {
    store: Store,
    hasher: Arc<Hasher>,
    default_rate_limit: u64,
    bad_secret_hashes_per_minute: u64,
    failsafe: Failsafe,
    /// Under `KEYWARD_FAILSAFE=open`, what this instance last answered 200.
    known: Option<Arc<LastKnownGood>>,
    /// What webhooks hear of validations.
    signals: Arc<Signals>,
}

impl Validator {
    pub fn new(store: Store, hasher: Arc<Hasher>, config: &Config) -> Self {
        let known = (config.failsafe == Failsafe::Open).then(|| {
            let entries = config.verify_cache_entries.max(1_000);
            Arc::new(LastKnownGood::new(entries, config.failsafe_max_age))
        });
        Self {
            store,
            hasher,
            default_rate_limit: config.default_rate_limit,
            bad_secret_hashes_per_minute: config.bad_secret_hashes_per_minute,
            failsafe: config.failsafe,
            known,
            signals: Arc::new(Signals::new(config)),
        }
    }

    /// Validates a request: `Ok` to let it pass, else the error to answer
    /// (`InvalidKey`, `InsufficientScope`, `RateLimited`, `CreditsExhausted`,
    /// `Unavailable`, `Busy`).
    pub async fn validate(&self, req: &Request<'_>) -> Result<Validated> {
        let now = now();
        let minute = window(now).0;
        let Ok(key) = ApiKey::parse(req.api_key) else {
            let malformed = Run::refused(Reason::Malformed);
            return self.finish(req, None, minute, malformed).await;
        };
        // A clock off Redis's would decide expiry and grace on its own.
        self.store.clock_skew()?;
        let cache_key = self.hasher.cache_key(&key);
        let run = self.decide(req, &key, &cache_key, now, minute).await;
        let presented = Some((&key, &cache_key));
        match run.outcome {
            Outcome::Incomplete { .. } => self.failsafe(req, &key, &cache_key, minute, run),
            _ => self.finish(req, presented, minute, run).await,
        }
    }

    /// Asks Redis and the hasher what `rules::judge` needs, until it decides.
    /// Writes nothing but the counters' spends (`INCRBY`) it asks for.
    async fn decide(
        &self,
        req: &Request<'_>,
        key: &ApiKey,
        cache_key: &CacheKey,
        now: f64,
        minute: u64,
    ) -> Run {
        let (project, key_id) = (&key.project_id, &key.key_id);
        let cost = req.cost;
        let cached = self.hasher.cached(cache_key);
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
        let mut error = None;
        let lookup = answer(read.doc, &mut error);
        let used = answer(read.used, &mut error);
        let bad = read.bad.ok();
        let mut run = Run {
            counted: used.ok().filter(|_| counting),
            count_unknown: counting && used.is_err(),
            bad_before: bad,
            ..Run::refused(Reason::Malformed)
        };
        let doc = match &lookup {
            Ok(Lookup::Found(doc)) => Some(&**doc),
            _ => None,
        };
        let hashes = doc.map(|doc| Hashes {
            current: (&doc.secret_hash, doc.secret_tag.as_deref()),
            previous: doc
                .previous_hash(now)
                .map(|phc| (phc, doc.previous_secret_tag.as_deref())),
        });
        let (screen, acceptable) = match hashes {
            Some(hashes) => {
                let verified_digests = &read.verified_digests;
                let (screen, digest_to_share) =
                    self.hasher
                        .screen(key, cache_key, cached.as_deref(), hashes, verified_digests);
                run.digest_to_share = digest_to_share;
                // Asked only of hashes that may be run (not on the warm path).
                let acceptable = matches!(screen, Screen::Known(_))
                    || (self.hasher.acceptable(hashes.current.0)
                        && hashes
                            .previous
                            .map_or(true, |(phc, _)| self.hasher.acceptable(phc)));
                (screen, acceptable)
            }
            None => (Screen::Untagged, true),
        };
        let mut facts = Facts {
            project_id: project.as_str(),
            key_id: key_id.as_str(),
            required_scopes: req.required_scopes,
            client_ip: req.client_ip,
            cost,
            now,
            default_limit: self.default_rate_limit,
            flood_limit: self.bad_secret_hashes_per_minute,
            doc: lookup.as_ref().map_err(|_| Failed),
            hashes_acceptable: acceptable,
            screen,
            used,
            counted: counting,
            bad: bad.ok_or(Failed),
            verified: None,
            count: None,
            recount: None,
            plan: None,
        };
        let outcome = loop {
            match rules::judge(&facts) {
                Next::Done(outcome) => break outcome,
                Next::Verify => {
                    // Every `Next::Verify` follows a document read.
                    let (Some(hashes), Some(_)) = (hashes, doc) else {
                        break Outcome::Incomplete { vouched: false };
                    };
                    let verified = self.hasher.verify_key(key, cache_key, hashes).await;
                    let verified = verified.map(|(matched, digest_to_share)| {
                        run.digest_to_share = digest_to_share;
                        matched
                    });
                    facts.verified = Some(answer(verified, &mut error));
                }
                Next::Count => {
                    let count = self.store.spend_minute(project, key_id, minute, cost).await;
                    run.count_unknown = count.is_err();
                    run.counted = count.as_ref().ok().copied();
                    facts.count = Some(answer(count, &mut error));
                }
                Next::Recount => {
                    let used = self.store.used(project, key_id, minute).await;
                    facts.recount = Some(answer(used, &mut error));
                }
                Next::Spend => {
                    let Some(doc) = doc else {
                        break Outcome::Incomplete { vouched: false };
                    };
                    let (answers, planned) = self.spend_plan(key, doc, cost, now).await;
                    if let Some(e) = planned.1 {
                        error.get_or_insert(e);
                    }
                    run.plan = planned.0;
                    facts.plan = Some(answers);
                }
            }
        };
        if let (Outcome::Refuse { reason, .. }, Some(doc)) = (outcome, doc) {
            self.report(project.as_str(), key_id.as_str(), doc, reason, acceptable);
        }
        if let Outcome::Pass { .. } | Outcome::Incomplete { vouched: true } = outcome {
            run.doc = match lookup {
                Ok(Lookup::Found(doc)) => Some(doc),
                _ => None,
            };
        }
        if !matches!(outcome, Outcome::Pass { .. }) {
            run.digest_to_share = None;
        }
        Run {
            outcome,
            error,
            ..run
        }
    }

    /// Logs and counts a document refused as unreadable for what it holds:
    /// ids that are not its key name's, a hash this deployment will not
    /// run, or one argon2 cannot read.
    fn report(&self, project: &str, key_id: &str, doc: &KeyDoc, reason: Reason, acceptable: bool) {
        if reason != Reason::Unreadable {
            return;
        }
        let problem = match (rules::is_its_own(doc, project, key_id), acceptable) {
            (false, _) => "its project_id or key_id is not its key name's",
            (true, false) => "a stored hash is not an Argon2 PHC string, or asks for parameters past this deployment's bounds",
            (true, true) => "secret_hash is not an Argon2 PHC string",
        };
        self.store.report_unreadable_key(project, key_id, problem);
    }

    /// Spends the key's plan in one round trip: each of its windows but the
    /// minute's (`INCRBY cost`) and its credits (`DECRBY cost`, after
    /// creating a refill interval's balance with `SET NX`). Returns each
    /// counter's answer for `rules`, what every counter spent is owed either
    /// way, and the first failure.
    async fn spend_plan(
        &self,
        key: &ApiKey,
        doc: &KeyDoc,
        cost: u64,
        now: f64,
    ) -> (PlanAnswers, (Planned, Option<Error>)) {
        let (project, key_id) = (key.project_id.as_str(), key.key_id.as_str());
        let mut windows = Vec::new();
        let mut spends: Vec<Spend> = Vec::new();
        // Each spend's counter's lifetime, which whatever it is owed keeps
        // (an `EXPIRE NX`): a retried take-back never leaves one without.
        let mut ttls: Vec<Option<i64>> = Vec::new();
        for limit in &doc.limits {
            let window = limit.per.window(now);
            let spent = match limit.per {
                // The minute's counter, spent already.
                Per::Minute => None,
                per => {
                    // Two limits on one length share its counter, spent once.
                    let counter = names::window(project, key_id, &window.name);
                    Some(match spends.iter().position(|s| s.counter == counter) {
                        Some(i) => i,
                        None => {
                            let delta = i64::try_from(cost).unwrap_or(i64::MAX);
                            spends.push(Spend {
                                counter,
                                delta,
                                init: None,
                            });
                            ttls.push(Some(per.ttl()));
                            spends.len() - 1
                        }
                    })
                }
            };
            windows.push((limit, window.ends_in, spent));
        }
        let credits = doc.credits.map(|credits| {
            let (period, refill_in) = credits.period(now);
            let init = credits.refill.map(|r| {
                let amount = i64::try_from(r.amount).unwrap_or(i64::MAX);
                (
                    amount,
                    (refill_in.unwrap_or(0) + crate::plan::COUNTER_MARGIN_SECS) as i64,
                )
            });
            spends.push(Spend {
                counter: names::credits(project, key_id, &period),
                delta: -i64::try_from(cost).unwrap_or(i64::MAX),
                init,
            });
            ttls.push(init.map(|(_, ttl)| ttl));
            (spends.len() - 1, refill_in)
        });
        let replies = self.store.spend(&spends).await;
        let mut error = None;
        let answers: Vec<Answer<i64>> = replies
            .into_iter()
            .map(|reply| answer(reply, &mut error))
            .collect();
        let mut planned = Planned::default();
        for ((spend, answer), ttl) in spends.iter().zip(&answers).zip(&ttls) {
            let owed = |add| (spend.counter.clone(), Owed { add, expire: *ttl });
            match answer {
                Ok(_) if spend.delta == 0 => {}
                Ok(count) => {
                    planned.undo.push(owed(-spend.delta));
                    // A window this spend opened expires after its end.
                    let window = spend.init.is_none() && spend.delta > 0;
                    if window && *count == spend.delta {
                        planned.keep.push(owed(0));
                    }
                }
                Err(Failed) => {
                    // Its answer lost, the spend may have run: whatever
                    // happens, the counter expires.
                    planned.keep.push(owed(0));
                    planned.undo.push(owed(0));
                }
            }
        }
        let plan = PlanAnswers {
            windows: windows
                .into_iter()
                .map(|(limit, ends_in, spent)| WindowAnswer {
                    per: limit.per.as_str(),
                    limit: limit.limit,
                    ends_in,
                    count: spent.map(|i| answers[i]),
                })
                .collect(),
            credits: credits.map(|(i, refill_in)| (answers[i], refill_in)),
        };
        (plan, (planned, error))
    }

    /// Ends a validation that `decide` brought to an outcome: one round trip
    /// (`Store::write_effects`) with the audit entry (unless the anonymous
    /// budget summarizes it), the counter changes (a new window's expiry,
    /// the wrong-secret count, taking back a refusal's spends) and a new
    /// secret's digest; then the metric, a 200's usage and the answer. The
    /// spends `decide` made (`INCRBY`) are its only other writes.
    async fn finish(
        &self,
        req: &Request<'_>,
        presented: Option<(&ApiKey, &CacheKey)>,
        minute: u64,
        mut run: Run,
    ) -> Result<Validated> {
        let key = presented.map(|(key, _)| key);
        let (reason, pass) = match run.outcome {
            Outcome::Pass { matched, .. } => match matched {
                Matched::Previous => (Reason::PreviousSecret, true),
                _ => (Reason::Ok, true),
            },
            Outcome::Refuse { reason, .. } => (reason, false),
            // `validate` sends these to `failsafe`.
            Outcome::Incomplete { .. } => (Reason::FailsafeOpen, false),
        };
        let window = match run.outcome {
            Outcome::Refuse { window, .. } => window,
            _ => None,
        };
        let (project_id, key_id) =
            key.map_or(("", ""), |k| (k.project_id.as_str(), k.key_id.as_str()));
        let probe = match (pass, key) {
            (true, Some(key)) => self.signals.network_probe(key, req.client_ip),
            _ => None,
        };
        let cost = req.cost;
        if run.count_unknown {
            // Its answer lost, the count may have run: its window expires.
            if let Some(key) = key {
                let (project, key_id) = (&key.project_id, &key.key_id);
                self.store.settle_in_background(project, key_id, minute, 0);
            }
        }
        let effects = Effects {
            audit: Audit {
                project_id,
                key_id,
                result: reason.result(),
                reason: reason.as_str(),
                origin: req.origin,
                cost,
                window,
            },
            minute,
            // A count that opened its window (its answer is the cost) gives
            // the window its expiry, whether the use stands or is taken back.
            new_window: cost > 0 && run.counted == Some(cost),
            bad_secret: reason == Reason::BadSecret,
            undo_use: match pass {
                false => run.counted.map_or(0, |_| cost),
                true => 0,
            },
            digest_to_share: run
                .digest_to_share
                .as_ref()
                .map(|(f, v)| (f.as_str(), v.as_str())),
            plan: if pass { &run.plan.keep } else { &run.plan.undo },
            network: probe.as_ref().map(|(name, ttl)| (name.as_str(), *ttl)),
        };
        let written = self.store.write_effects(effects).await;
        if let (Some((key, cache_key)), Some(known)) = (presented, &self.known) {
            match (&run.doc, pass, &written) {
                (Some(doc), true, Ok(_)) => known.passed(key, cache_key, doc),
                (_, false, _) => known.refused(key, cache_key, reason),
                _ => {}
            }
        }
        match (run.outcome, written) {
            (Outcome::Pass { rate, credits, .. }, Ok(finished)) => {
                let Some(doc) = run.doc.take() else {
                    return Err(Error::Internal("a pass without its document".into()));
                };
                tally(reason);
                if let Some((name, _)) = probe {
                    self.signals.probed(name);
                }
                if let Some(key) = key {
                    if finished.new_network {
                        // Boxed, as every Redis command here is: its futures
                        // are large, and held inline they would grow the whole
                        // validation's future, copied at each `.await`.
                        let signal = self.signals.new_network(&self.store, key, req.client_ip);
                        Box::pin(signal).await;
                    }
                    // Only the spend that went below `low_at` asks Redis.
                    if let (Some(after), Some(plan)) = (credits, &doc.credits) {
                        if plan.crossed_low(after, cost) {
                            let signal = self.signals.credits_low(&self.store, key, plan, after);
                            Box::pin(signal).await;
                        }
                    }
                    // Recorded last, once nothing awaited can stop the
                    // answer (a signal past the request's deadline).
                    self.store
                        .count_usage(&key.project_id, &key.key_id, reason, cost);
                }
                Ok(Validated {
                    rate,
                    credits_remaining: credits,
                    ..validated(*doc)
                })
            }
            (Outcome::Pass { .. }, Err(error)) => match presented {
                Some((key, cache_key)) => {
                    run.outcome = Outcome::Incomplete { vouched: true };
                    run.error = Some(error);
                    self.failsafe(req, key, cache_key, minute, run)
                }
                None => Err(error),
            },
            (_, written) => {
                tally(reason);
                // Answered: in the usage record (a key that was found), once
                // the signal below is sent.
                let recorded = matches!(run.outcome, Outcome::Refuse { .. });
                let (rate, refill_in) = match run.outcome {
                    Outcome::Refuse {
                        rate, refill_in, ..
                    } => (rate, refill_in),
                    _ => (RateInfo::default(), None),
                };
                let refusal = match reason {
                    Reason::RateLimited => Some(Refusal::RateLimited {
                        window: window.unwrap_or("minute"),
                        limit: rate.limit,
                        reset: rate.reset,
                    }),
                    Reason::BadSecret => Some(Refusal::BadSecret {
                        before: run.bad_before,
                        reset: rules::window(now()).1,
                    }),
                    Reason::CreditsExhausted => Some(Refusal::CreditsExhausted { refill_in }),
                    _ => None,
                };
                if let (Some(refusal), Some(key)) = (refusal, key) {
                    Box::pin(self.signals.refused(&self.store, key, refusal)).await;
                }
                if let (Some(key), true) = (key, recorded) {
                    self.store
                        .count_usage(&key.project_id, &key.key_id, reason, cost);
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
                        retry_after: refill_in,
                    },
                    Reason::InsufficientScope => Error::InsufficientScope {
                        required: req.required_scopes.join(" "),
                    },
                    _ => Error::InvalidKey,
                })
            }
        }
    }

    /// No answer refused the key but one a pass needs is missing: 503, or
    /// under `KEYWARD_FAILSAFE=open`, when Redis is what failed, a 200
    /// marked failsafe with a document this instance vouches for: the one
    /// just read, when every rule passed on it with the secret matched just
    /// now (`vouched`), else the last known good (`known`). Each such 200
    /// is counted, logged, and audited by the flusher once Redis takes it
    /// (a summary per key). A use counted on the way is taken back unless
    /// the answer is a 200, and its window made to expire.
    fn failsafe(
        &self,
        req: &Request<'_>,
        key: &ApiKey,
        cache_key: &CacheKey,
        minute: u64,
        run: Run,
    ) -> Result<Validated> {
        let error = run
            .error
            .unwrap_or_else(|| Error::Unavailable("Redis did not answer".into()));
        let open = self.failsafe == Failsafe::Open && matches!(error, Error::Unavailable(_));
        let vouched = matches!(run.outcome, Outcome::Incomplete { vouched: true });
        let stand_in = match (open, vouched, run.doc, &self.known) {
            (false, ..) => None,
            (true, true, Some(doc), _) => Some(*doc),
            (true, _, _, Some(known)) => {
                known.admits(key, cache_key, now(), req.required_scopes, req.client_ip)
            }
            _ => None,
        };
        let admitted = stand_in.is_some();
        let (project, key_id) = (&key.project_id, &key.key_id);
        if run.counted.is_some() || run.count_unknown {
            let undo = match (admitted, run.counted) {
                (false, Some(_)) => req.cost,
                _ => 0,
            };
            self.store
                .settle_in_background(project, key_id, minute, undo);
        }
        let owed = if admitted {
            run.plan.keep
        } else {
            run.plan.undo
        };
        self.store.settle_plan_in_background(owed);
        let Some(doc) = stand_in else {
            if open {
                tracing::warn!(
                    project_id = %project, key_id = %key_id, error = %error,
                    "redis did not answer and no recent pass of this secret stands in: 503"
                );
            }
            return Err(error);
        };
        tally(Reason::FailsafeOpen);
        unaudited(Reason::FailsafeOpen);
        tracing::warn!(
            project_id = %project, key_id = %key_id, error = %error, vouched,
            "redis did not answer: key accepted on what this instance verified (KEYWARD_FAILSAFE=open)"
        );
        self.store
            .count_usage(project, key_id, Reason::FailsafeOpen, req.cost);
        self.store.failsafe_admitted(project, key_id);
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
    VALIDATIONS.with([reason.result(), reason.as_str()], |c| c.increment(1));
}

static VALIDATIONS: Handles<Counter, 2> = Handles::new(metric::VALIDATIONS, ["result", "reason"]);

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
