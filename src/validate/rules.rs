//! Every rule that can refuse a key, as pure functions of the request and
//! of what Redis and the hasher answered: no I/O, no clock (the time is a
//! fact like any other). `mod.rs` does the I/O around them.
//!
//! [`judge`] reads [`Facts`] top to bottom and answers either what it still
//! needs ([`Next::Verify`], [`Next::Count`], [`Next::Recount`],
//! [`Next::Spend`]) or the [`Outcome`]. The pipeline asks it again after each
//! answer, so the order below is the whole validation:
//!
//! 1. The document: not read (Redis did not answer) is incomplete; missing,
//!    forbidden or unreadable refuses; so do ids that disagree with the key
//!    name it was read from.
//! 2. The document's policy: disabled, expired, outside the key's networks.
//! 3. A secret not known to match: stored hashes this deployment will not
//!    run are unreadable; already over the minute's limit is 429 before any
//!    hashing; the tags saying "wrong", or (untagged) the key's wrong
//!    secrets at their budget, is 401 without hashing; else Argon2id.
//! 4. Which hash matched: neither is 401, a corrupt one unreadable.
//! 5. Scopes: a missing one is 403 (never counted).
//! 6. The minute's count, with this use: over the limit is 429; not counted
//!    (Redis did not answer) is read again, and a key over its limit all the
//!    same is 429.
//! 7. The plan's windows and credits: any answered counter over its limit
//!    refuses (429), whatever other counters failed; credits short is 429.
//!
//! A refusal any answer supports stands: a failure is [`Outcome::Incomplete`]
//! only when no answer refuses.

use std::net::IpAddr;

use crate::hash::{Matched, Screen};
use crate::store::{KeyDoc, Lookup};

/// Redis did not answer a command (a timeout, a connection lost, an error
/// reply), or the hasher could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// An answer, or the failure to get one.
pub type Answer<T> = Result<T, Failed>;

pub use crate::audit::Reason;

/// The key's rate-limit state after this validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset: u64,
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

/// Why the document alone refuses the request at `now`, if it does:
/// disabled, expired, or a client address outside the key's networks.
pub fn policy(doc: &KeyDoc, client_ip: Option<IpAddr>, now: f64) -> Option<Reason> {
    if doc.disabled {
        return Some(Reason::Disabled);
    }
    if doc.expires_at.is_some_and(|at| at <= now) {
        return Some(Reason::Expired);
    }
    match &doc.allowed_cidrs {
        Some(cidrs) if !ip_allowed(cidrs, client_ip) => Some(Reason::IpNotAllowed),
        _ => None,
    }
}

/// Whether a document read from `apikey:<project>:<key_id>` says it is that
/// key: the identity answered comes from the key name, and a document that
/// claims another is not to be trusted.
pub fn is_its_own(doc: &KeyDoc, project_id: &str, key_id: &str) -> bool {
    doc.project_id == project_id && doc.key_id == key_id
}

/// Whether a window's counter, `count` with this request's `cost` in it,
/// lets the request pass: with a cost, up to `limit`; with none, under it
/// (a full window refuses even a request that spends nothing). Wide
/// arithmetic: no count, cost or limit overflows.
pub fn within(count: i128, cost: u64, limit: u64) -> bool {
    match cost {
        0 => count < i128::from(limit),
        _ => count <= i128::from(limit),
    }
}

/// One of a plan's windows, with its counter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAnswer {
    /// `second`, `minute`, `hour`, `day` or `month`.
    pub per: &'static str,
    pub limit: u64,
    /// Seconds until the window ends.
    pub ends_in: u64,
    /// Its counter after this spend; `None`: the minute's own counter.
    pub count: Option<Answer<i64>>,
}

/// What spending a key's plan answered: each window besides the minute's
/// limit, and the credits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanAnswers {
    pub windows: Vec<WindowAnswer>,
    /// The balance after this spend, and the seconds until it refills.
    pub credits: Option<(Answer<i64>, Option<u64>)>,
}

/// Everything a validation learnt so far. `None` in an `Option<Answer>`:
/// not asked yet.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The key name's project and key id: the identity to answer.
    pub project_id: &'a str,
    pub key_id: &'a str,
    pub required_scopes: &'a [String],
    pub client_ip: Option<IpAddr>,
    pub cost: u64,
    /// Unix seconds on the deployment's clock (see `store::clock`).
    pub now: f64,
    /// `KEYWARD_DEFAULT_RATE_LIMIT`, for a key without its own.
    pub default_limit: u64,
    /// `KEYWARD_BAD_SECRET_HASHES_PER_MINUTE`.
    pub flood_limit: u64,
    /// Round trip 1: the key's document.
    pub doc: Answer<&'a Lookup>,
    /// Whether every stored hash is one this deployment runs (see
    /// `Hasher::acceptable`); asked only of a secret not known to match
    /// (one that would be hashed).
    pub hashes_acceptable: bool,
    /// What the secret's free checks say (see `Hasher::screen`).
    pub screen: Screen,
    /// Round trip 1: the minute's counter, with this use in it when
    /// `counted` (a known secret's `INCRBY cost`), else as it stood.
    pub used: Answer<u64>,
    pub counted: bool,
    /// Round trip 1: the key's wrong secrets this minute.
    pub bad: Answer<u64>,
    /// Argon2id's answer (a failure: it could not run now).
    pub verified: Option<Answer<Matched>>,
    /// The minute's `INCRBY cost` for a secret verified just now.
    pub count: Option<Answer<u64>>,
    /// The minute's counter read again (`GET`) after counting failed.
    pub recount: Option<Answer<u64>>,
    /// The plan's counters after their spend.
    pub plan: Option<PlanAnswers>,
}

/// What [`judge`] needs next, or its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run Argon2id on the secret (`Facts::verified`).
    Verify,
    /// Count this use against the minute (`Facts::count`).
    Count,
    /// Read the minute's counter again (`Facts::recount`).
    Recount,
    /// Spend the key's plan (`Facts::plan`).
    Spend,
    Done(Outcome),
}

/// How a validation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The key passes; `matched` says which of its secrets.
    Pass {
        matched: Matched,
        rate: RateInfo,
        /// Credits left after this request; `None`: unlimited.
        credits: Option<i64>,
    },
    Refuse {
        reason: Reason,
        /// For a 429: the window that refused.
        rate: RateInfo,
        /// For a 429 by one of the plan's windows: which.
        window: Option<&'static str>,
        /// For credits short: seconds until they refill, if they do.
        refill_in: Option<u64>,
    },
    /// No answer refused the key, but one a pass needs is missing.
    /// `vouched`: every rule up to the count passed on a document read and
    /// a secret matched just now (only counters are missing).
    Incomplete { vouched: bool },
}

fn refuse(reason: Reason) -> Next {
    Next::Done(Outcome::Refuse {
        reason,
        rate: RateInfo::default(),
        window: None,
        refill_in: None,
    })
}

fn rate_limited(rate: RateInfo, window: Option<&'static str>) -> Next {
    Next::Done(Outcome::Refuse {
        reason: Reason::RateLimited,
        rate: RateInfo {
            remaining: 0,
            ..rate
        },
        window,
        refill_in: None,
    })
}

const INCOMPLETE: Next = Next::Done(Outcome::Incomplete { vouched: false });

/// The validation's rules, in order (see the module's documentation).
pub fn judge(f: &Facts<'_>) -> Next {
    // 1. The document.
    let doc = match f.doc {
        Err(Failed) => return INCOMPLETE,
        Ok(Lookup::Missing) => return refuse(Reason::NotFound),
        Ok(Lookup::NoPermission) => return refuse(Reason::NoPermission),
        Ok(Lookup::Unreadable) => return refuse(Reason::Unreadable),
        Ok(Lookup::Found(doc)) => doc,
    };
    if !is_its_own(doc, f.project_id, f.key_id) {
        return refuse(Reason::Unreadable);
    }
    // 2. Its policy.
    if let Some(reason) = policy(doc, f.client_ip, f.now) {
        return refuse(reason);
    }
    let cost = f.cost;
    let limit = doc.rate_limit_per_minute.unwrap_or(f.default_limit);
    let minute = RateInfo {
        limit,
        remaining: 0,
        reset: window(f.now).1,
    };
    // 3. A secret not known to match.
    let matched = match f.screen {
        Screen::Known(matched) => matched,
        // A hash this deployment will not run (never hashed).
        _ if !f.hashes_acceptable => return refuse(Reason::Unreadable),
        screen => {
            let before = f
                .used
                .map(|used| i128::from(used) - if f.counted { i128::from(cost) } else { 0 });
            if before.is_ok_and(|before| !within(before + i128::from(cost), cost, limit)) {
                return rate_limited(minute, None);
            }
            let flooded = f.bad.is_ok_and(|bad| bad >= f.flood_limit);
            match (screen, flooded) {
                (Screen::Wrong, _) | (Screen::Untagged, true) => return refuse(Reason::BadSecret),
                _ => {}
            }
            match f.verified {
                None => return Next::Verify,
                Some(Err(Failed)) => return INCOMPLETE,
                Some(Ok(matched)) => matched,
            }
        }
    };
    // 4. Which hash.
    match matched {
        Matched::Neither => return refuse(Reason::BadSecret),
        Matched::Corrupt => return refuse(Reason::Unreadable),
        Matched::Current | Matched::Previous => {}
    }
    // 5. Scopes.
    if crate::scope::first_missing(&doc.scopes, f.required_scopes).is_some() {
        return refuse(Reason::InsufficientScope);
    }
    // 6. The minute's count.
    let used = match (f.counted || cost == 0, f.count) {
        (true, _) => f.used,
        (false, None) => return Next::Count,
        (false, Some(count)) => count,
    };
    let vouched = Next::Done(Outcome::Incomplete { vouched: true });
    let Ok(used) = used else {
        return match f.recount {
            None => Next::Recount,
            Some(Ok(now)) if !within(i128::from(now) + i128::from(cost), cost, limit) => {
                rate_limited(minute, None)
            }
            Some(_) => vouched,
        };
    };
    if !within(i128::from(used), cost, limit) {
        // Lost the race for the last use of this window.
        return rate_limited(minute, None);
    }
    let rate = RateInfo {
        remaining: limit.saturating_sub(used),
        ..minute
    };
    // 7. The plan.
    if doc.limits.is_empty() && doc.credits.is_none() {
        return Next::Done(Outcome::Pass {
            matched,
            rate,
            credits: None,
        });
    }
    let Some(plan) = &f.plan else {
        return Next::Spend;
    };
    match spent(plan, used, cost, rate) {
        Spent::Refused(next) => next,
        Spent::Incomplete => vouched,
        Spent::Passed { rate, credits } => Next::Done(Outcome::Pass {
            matched,
            rate,
            credits,
        }),
    }
}

enum Spent {
    Refused(Next),
    Incomplete,
    Passed {
        rate: RateInfo,
        credits: Option<i64>,
    },
}

/// The plan's answers: the first window (in the document's order) whose
/// answered counter is over its limit refuses; then credits short; only
/// then does a counter Redis did not answer make the outcome incomplete.
/// A pass reports the window nearest to exhaustion (the minute's `rate`
/// unless another has fewer left).
fn spent(plan: &PlanAnswers, used: u64, cost: u64, rate: RateInfo) -> Spent {
    let mut failed = false;
    let mut nearest = rate;
    for w in &plan.windows {
        let count = match w.count {
            None => i128::from(used),
            Some(Ok(count)) => i128::from(count),
            Some(Err(Failed)) => {
                failed = true;
                continue;
            }
        };
        let info = RateInfo {
            limit: w.limit,
            remaining: u64::try_from((i128::from(w.limit) - count).max(0)).unwrap_or(u64::MAX),
            reset: w.ends_in,
        };
        if !within(count, cost, w.limit) {
            return Spent::Refused(rate_limited(info, Some(w.per)));
        }
        if info.remaining < nearest.remaining {
            nearest = info;
        }
    }
    let credits = match plan.credits {
        None => None,
        Some((Err(Failed), _)) => {
            failed = true;
            None
        }
        Some((Ok(balance), refill_in)) => {
            // Credits pass with a balance of 0 or more after a cost, of 1 or
            // more when the request spends nothing.
            if !within(-i128::from(balance), cost, 0) {
                return Spent::Refused(Next::Done(Outcome::Refuse {
                    reason: Reason::CreditsExhausted,
                    rate,
                    window: None,
                    refill_in,
                }));
            }
            Some(balance)
        }
    };
    match failed {
        true => Spent::Incomplete,
        false => Spent::Passed {
            rate: nearest,
            credits,
        },
    }
}

/// What this instance last answered 200 for one exact secret: the document
/// it read then, and when (monotonic seconds of this process).
#[derive(Debug, Clone)]
pub struct Known<'a> {
    pub doc: &'a KeyDoc,
    pub answered_at: f64,
}

/// Under `KEYWARD_FAILSAFE=open`, with Redis unable to answer: whether the
/// last known good answer for this exact secret may stand in, at `mono`
/// (monotonic seconds) and `now` (the deployment's clock): answered within
/// `max_age` seconds, not refused since (`refused_at`: the last time this
/// instance refused the key itself, whatever the secret), every required
/// scope granted, the client inside the key's networks, and the document
/// neither disabled nor expired.
pub fn failsafe_admits(
    known: Option<&Known<'_>>,
    refused_at: Option<f64>,
    mono: f64,
    max_age: f64,
    now: f64,
    required_scopes: &[String],
    client_ip: Option<IpAddr>,
) -> bool {
    let Some(known) = known else {
        return false;
    };
    mono - known.answered_at <= max_age
        && !matches!(refused_at, Some(at) if at >= known.answered_at)
        && policy(known.doc, client_ip, now).is_none()
        && crate::scope::first_missing(&known.doc.scopes, required_scopes).is_none()
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

    #[test]
    fn counts_costs_and_balances_at_their_extremes_do_not_overflow() {
        assert!(!within(-i128::from(i64::MIN), 1, 0), "i64::MIN credits");
        assert!(within(-i128::from(i64::MAX), 1, 0));
        assert!(!within(
            i128::from(u64::MAX) + i128::from(u64::MAX),
            u64::MAX,
            u64::MAX
        ));
        assert!(within(i128::from(u64::MAX), u64::MAX, u64::MAX));
        assert!(!within(5, 0, 5) && within(5, 1, 5));
    }
}
