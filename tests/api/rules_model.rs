//! The validation's rules (`keyward::validate::rules`) held to a reference
//! model written here, independently: a plain predicate over a generated
//! world (the document, the secret, scopes, networks, counters, costs, a
//! plan, and which commands fail). `rules::judge` is driven exactly as the
//! pipeline drives it: asked again after each answer it asks for.
//!
//! Two properties, on every generated case: the model and the rules agree
//! on the outcome (a pass, which refusal, or incomplete), and no world with
//! a refusing fact that was answered ever passes.

use std::net::IpAddr;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use keyward::hash::{Matched, Screen};
use keyward::plan::{CreditsDoc, Limit, Per};
use keyward::store::{KeyDoc, Lookup};
use keyward::validate::rules::{self, Facts, Failed, Next, Outcome, PlanAnswers, WindowAnswer};

const NOW: f64 = 1_800_000_030.0;
const PROJECT: &str = "alpha";
const KEY_ID: &str = "k_model";
const GRANTABLE: [&str; 4] = ["read", "write", "chat:*", "*"];
const REQUIRABLE: [&str; 4] = ["read", "write", "chat:read", "admin:keys"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocIs {
    Missing,
    Forbidden,
    Unreadable,
    Found,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretIs {
    Current,
    Previous,
    Wrong,
}

/// What the free checks knew of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Free {
    /// Cache or remembered digest (only for a right secret).
    Known,
    /// The tags said wrong (only for a wrong secret).
    TagsWrong,
    Tagged,
    Untagged,
}

#[derive(Debug, Clone)]
struct World {
    doc_fails: bool,
    doc: DocIs,
    ids_match: bool,
    hashes_ok: bool,
    disabled: bool,
    /// `expires_at` relative to now, in seconds.
    expires_in: Option<i8>,
    /// `allowed_cidrs`: whether the client is inside them.
    networks: Option<bool>,
    client_known: bool,
    granted: Vec<usize>,
    required: Vec<usize>,
    own_limit: Option<u64>,
    default_limit: u64,
    cost: u64,
    secret: SecretIs,
    free: Free,
    /// The cache held an entry (so a cost is counted in round trip 1).
    cached: bool,
    corrupt: bool,
    used_before: u64,
    used_fails: bool,
    bad: u64,
    bad_fails: bool,
    flood: u64,
    verify_fails: bool,
    count_fails: bool,
    recount_fails: bool,
    /// Plan windows: (per, limit, count before, its spend fails); `per` 1
    /// is the minute's own counter.
    windows: Vec<(u8, u64, u64, bool)>,
    /// Credits: (balance before, its spend fails).
    credits: Option<(i64, bool)>,
}

fn world() -> impl Strategy<Value = World> {
    let doc = (
        any::<u8>().prop_map(|n| n % 10 == 0),
        prop_oneof![
            1 => Just(DocIs::Missing),
            1 => Just(DocIs::Forbidden),
            1 => Just(DocIs::Unreadable),
            12 => Just(DocIs::Found)
        ],
        any::<u8>().prop_map(|n| n % 12 != 0),
        any::<u8>().prop_map(|n| n % 12 != 0),
        any::<u8>().prop_map(|n| n % 10 == 0),
        proptest::option::weighted(0.2, -3i8..3),
        proptest::option::weighted(0.2, any::<bool>()),
        any::<u8>().prop_map(|n| n % 6 != 0),
    );
    let scopes = (
        proptest::collection::vec(0..GRANTABLE.len(), 0..3),
        proptest::collection::vec(0..REQUIRABLE.len(), 0..3),
    );
    let limits = (
        proptest::option::of(0u64..5),
        0u64..5,
        0u64..3,
        0u64..7,
        any::<u8>().prop_map(|n| n % 10 == 0),
    );
    let secret = (
        prop_oneof![
            Just(SecretIs::Current),
            Just(SecretIs::Previous),
            Just(SecretIs::Wrong)
        ],
        0u8..4,
        any::<bool>(),
        any::<u8>().prop_map(|n| n % 15 == 0),
    );
    let failures = (
        0u64..4,
        any::<u8>().prop_map(|n| n % 10 == 0),
        1u64..3,
        any::<u8>().prop_map(|n| n % 12 == 0),
        any::<u8>().prop_map(|n| n % 6 == 0),
        any::<u8>().prop_map(|n| n % 3 == 0),
    );
    let plan = (
        proptest::collection::vec(
            (
                0u8..4,
                0u64..5,
                0u64..6,
                any::<u8>().prop_map(|n| n % 6 == 0),
            ),
            0..3,
        ),
        proptest::option::weighted(0.4, (-2i64..4, any::<u8>().prop_map(|n| n % 6 == 0))),
    );
    (doc, scopes, limits, secret, failures, plan).prop_map(
        |(
            (doc_fails, doc, ids_match, hashes_ok, disabled, expires_in, networks, client_known),
            (granted, required),
            (own_limit, default_limit, cost, used_before, used_fails),
            (secret, free, cached, corrupt),
            (bad, bad_fails, flood, verify_fails, count_fails, recount_fails),
            (windows, credits),
        )| {
            // The free checks can only say what is true of the secret.
            let free = match (secret, free) {
                (SecretIs::Wrong, 0) => Free::TagsWrong,
                (SecretIs::Wrong, 1) => Free::Tagged,
                (_, 2) => Free::Tagged,
                (SecretIs::Current | SecretIs::Previous, 0 | 1) => Free::Known,
                _ => Free::Untagged,
            };
            World {
                doc_fails,
                doc,
                ids_match,
                hashes_ok,
                disabled,
                expires_in,
                networks,
                client_known,
                granted,
                required,
                own_limit,
                default_limit,
                cost,
                secret,
                free,
                cached,
                corrupt: corrupt && free != Free::Known,
                used_before,
                used_fails,
                bad,
                bad_fails,
                flood,
                verify_fails,
                count_fails,
                recount_fails,
                windows,
                credits,
            }
        },
    )
}

// ---- The reference model ---------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Pass,
    Refuse(&'static str),
    Incomplete,
}

/// A granted scope grants a required one: `*` everything, `x:*` any `x:y`
/// whose `y` has no `:`, else only itself.
fn grants(granted: &str, required: &str) -> bool {
    if granted == "*" {
        return true;
    }
    match granted.strip_suffix('*') {
        Some(prefix) => required
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.contains(':')),
        None => granted == required,
    }
}

/// Whether a counter reaching `count` with a request of `cost` is over `limit`.
fn over(count: i64, cost: u64, limit: u64) -> bool {
    match cost {
        0 => count >= limit as i64,
        _ => count > limit as i64,
    }
}

/// The counted value of the minute after this request, or `None` when it
/// could not be had.
fn model(w: &World) -> Expected {
    use Expected::*;
    if w.doc_fails {
        return Incomplete;
    }
    match w.doc {
        DocIs::Missing => return Refuse("not_found"),
        DocIs::Forbidden => return Refuse("forbidden"),
        DocIs::Unreadable => return Refuse("unreadable"),
        DocIs::Found => {}
    }
    if !w.ids_match {
        return Refuse("unreadable");
    }
    if w.disabled {
        return Refuse("disabled");
    }
    if w.expires_in.is_some_and(|d| d <= 0) {
        return Refuse("expired");
    }
    if w.networks.is_some_and(|inside| !(inside && w.client_known)) {
        return Refuse("ip_not_allowed");
    }
    let limit = w.own_limit.unwrap_or(w.default_limit);
    let cost = w.cost;
    let before = w.used_before as i64;
    if w.free != Free::Known {
        if !w.hashes_ok {
            return Refuse("unreadable");
        }
        if !w.used_fails && over(before + cost as i64, cost, limit) {
            return Refuse("rate_limited");
        }
        if w.free == Free::TagsWrong {
            return Refuse("bad_secret");
        }
        if w.free == Free::Untagged && !w.bad_fails && w.bad >= w.flood {
            return Refuse("bad_secret");
        }
        if w.verify_fails {
            return Incomplete;
        }
        if w.corrupt {
            return Refuse("unreadable");
        }
        if w.secret == SecretIs::Wrong {
            return Refuse("bad_secret");
        }
    }
    let missing = w.required.iter().any(|&r| {
        !w.granted
            .iter()
            .any(|&g| grants(GRANTABLE[g], REQUIRABLE[r]))
    });
    if missing {
        return Refuse("insufficient_scope");
    }
    let counted_in_read = w.cached && cost > 0;
    let from_read = counted_in_read || cost == 0;
    let fails = if from_read {
        w.used_fails
    } else {
        w.count_fails
    };
    if fails {
        if w.recount_fails {
            return Incomplete;
        }
        return match over(before + cost as i64, cost, limit) {
            true => Refuse("rate_limited"),
            false => Incomplete,
        };
    }
    let used = before + cost as i64;
    if over(used, cost, limit) {
        return Refuse("rate_limited");
    }
    if w.windows.is_empty() && w.credits.is_none() {
        return Pass;
    }
    let mut failed = false;
    for &(per, wlimit, wbefore, wfails) in &w.windows {
        let count = match (per, wfails) {
            (1, _) => used,
            (_, true) => {
                failed = true;
                continue;
            }
            (_, false) => wbefore as i64 + cost as i64,
        };
        if over(count, cost, wlimit) {
            return Refuse("rate_limited");
        }
    }
    if let Some((balance, fails)) = w.credits {
        match fails {
            true => failed = true,
            false => {
                let after = balance - cost as i64;
                let short = if cost > 0 { after < 0 } else { after <= 0 };
                if short {
                    return Refuse("credits_exhausted");
                }
            }
        }
    }
    if failed {
        Incomplete
    } else {
        Pass
    }
}

/// Whether the world holds a refusing fact Redis (or the hasher) answered.
fn refusing_fact(w: &World) -> bool {
    let doc = !w.doc_fails
        && (w.doc != DocIs::Found
            || !w.ids_match
            || (!w.hashes_ok && w.free != Free::Known)
            || w.disabled
            || w.expires_in.is_some_and(|d| d <= 0)
            || w.networks.is_some_and(|inside| !(inside && w.client_known)));
    let secret = w.secret == SecretIs::Wrong || w.corrupt;
    let scopes = w.required.iter().any(|&r| {
        !w.granted
            .iter()
            .any(|&g| grants(GRANTABLE[g], REQUIRABLE[r]))
    });
    let limit = w.own_limit.unwrap_or(w.default_limit);
    let counted = !w.used_fails && !w.count_fails;
    let minute = counted && over(w.used_before as i64 + w.cost as i64, w.cost, limit);
    let windows = w
        .windows
        .iter()
        .any(|&(per, l, b, fails)| per != 1 && !fails && over(b as i64 + w.cost as i64, w.cost, l));
    let credits = w.credits.is_some_and(|(balance, fails)| {
        let after = balance - w.cost as i64;
        !fails && if w.cost > 0 { after < 0 } else { after <= 0 }
    });
    doc || secret || scopes || minute || windows || credits
}

// ---- Driving the rules as the pipeline does --------------------------------

const PERS: [&str; 4] = ["second", "minute", "hour", "day"];

fn key_doc(w: &World) -> KeyDoc {
    KeyDoc {
        project_id: if w.ids_match { PROJECT } else { "beta" }.to_owned(),
        key_id: KEY_ID.to_owned(),
        disabled: w.disabled,
        expires_at: w.expires_in.map(|d| NOW + f64::from(d)),
        allowed_cidrs: w.networks.map(|_| vec!["10.0.0.0/8".to_owned()]),
        scopes: w.granted.iter().map(|&g| GRANTABLE[g].to_owned()).collect(),
        rate_limit_per_minute: w.own_limit,
        limits: w
            .windows
            .iter()
            .map(|&(per, limit, _, _)| Limit {
                per: [Per::Second, Per::Minute, Per::Hour, Per::Day][usize::from(per)],
                limit,
            })
            .collect(),
        credits: w.credits.map(|_| CreditsDoc::default()),
        ..KeyDoc::default()
    }
}

fn judged(w: &World) -> Outcome {
    let lookup = match w.doc {
        DocIs::Missing => Lookup::Missing,
        DocIs::Forbidden => Lookup::NoPermission,
        DocIs::Unreadable => Lookup::Unreadable,
        DocIs::Found => Lookup::Found(Box::new(key_doc(w))),
    };
    let client_ip: Option<IpAddr> = w.client_known.then(|| {
        let inside = w.networks.unwrap_or(true);
        if inside { "10.1.2.3" } else { "192.0.2.1" }
            .parse()
            .unwrap()
    });
    let required: Vec<String> = w
        .required
        .iter()
        .map(|&r| REQUIRABLE[r].to_owned())
        .collect();
    let matched = match w.secret {
        SecretIs::Current => Matched::Current,
        SecretIs::Previous => Matched::Previous,
        SecretIs::Wrong => Matched::Neither,
    };
    let counting = w.cached && w.cost > 0;
    let answer = |fails: bool, value: u64| if fails { Err(Failed) } else { Ok(value) };
    let mut facts = Facts {
        project_id: PROJECT,
        key_id: KEY_ID,
        required_scopes: &required,
        client_ip,
        cost: w.cost,
        now: NOW,
        default_limit: w.default_limit,
        flood_limit: w.flood,
        doc: if w.doc_fails {
            Err(Failed)
        } else {
            Ok(&lookup)
        },
        hashes_acceptable: w.hashes_ok,
        screen: match w.free {
            Free::Known => Screen::Known(matched),
            Free::TagsWrong => Screen::Wrong,
            Free::Tagged => Screen::Tagged,
            Free::Untagged => Screen::Untagged,
        },
        used: answer(
            w.used_fails,
            w.used_before + if counting { w.cost } else { 0 },
        ),
        counted: counting,
        bad: answer(w.bad_fails, w.bad),
        verified: None,
        count: None,
        recount: None,
        plan: None,
    };
    let mut asked = Vec::new();
    loop {
        let next = rules::judge(&facts);
        assert!(!asked.contains(&next), "{next:?} asked twice: {w:?}");
        asked.push(next);
        match next {
            Next::Done(outcome) => return outcome,
            Next::Verify => {
                facts.verified = Some(match (w.verify_fails, w.corrupt) {
                    (true, _) => Err(Failed),
                    (false, true) => Ok(Matched::Corrupt),
                    (false, false) => Ok(matched),
                })
            }
            Next::Count => facts.count = Some(answer(w.count_fails, w.used_before + w.cost)),
            Next::Recount => facts.recount = Some(answer(w.recount_fails, w.used_before)),
            Next::Spend => {
                let windows = w
                    .windows
                    .iter()
                    .map(|&(per, limit, before, fails)| WindowAnswer {
                        per: PERS[usize::from(per)],
                        limit,
                        ends_in: 30,
                        count: (per != 1).then(|| {
                            if fails {
                                Err(Failed)
                            } else {
                                Ok(before as i64 + w.cost as i64)
                            }
                        }),
                    })
                    .collect();
                let credits = w.credits.map(|(balance, fails)| {
                    let after = if fails {
                        Err(Failed)
                    } else {
                        Ok(balance - w.cost as i64)
                    };
                    (after, None)
                });
                facts.plan = Some(PlanAnswers { windows, credits });
            }
        }
    }
}

fn class(outcome: Outcome) -> Expected {
    match outcome {
        Outcome::Pass { .. } => Expected::Pass,
        Outcome::Refuse { reason, .. } => Expected::Refuse(reason.as_str()),
        Outcome::Incomplete { .. } => Expected::Incomplete,
    }
}

#[test]
fn the_rules_agree_with_the_reference_model_and_never_pass_a_refused_key() {
    let mut runner = TestRunner::new(Config {
        cases: 20_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&world(), |w| {
            let got = class(judged(&w));
            prop_assert_eq!(got, model(&w), "{:?}", w);
            if refusing_fact(&w) {
                prop_assert_ne!(got, Expected::Pass, "a refused key passed: {:?}", w);
            }
            Ok(())
        })
        .unwrap();
}

/// The failsafe's stand-in, against its own model: a pass this instance
/// answered within the bound, not refused since, for a document that
/// still allows the request.
#[test]
fn the_failsafe_admits_only_a_recent_unrefused_pass_whose_document_allows_the_request() {
    let mut runner = TestRunner::new(Config {
        cases: 5_000,
        failure_persistence: None,
        ..Config::default()
    });
    let case = (
        any::<bool>(),
        0u32..20,
        proptest::option::of(0u32..20),
        any::<bool>(),
        proptest::option::of(-5i8..5),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(0..GRANTABLE.len(), 0..3),
        proptest::collection::vec(0..REQUIRABLE.len(), 0..3),
    );
    runner
        .run(
            &case,
            |(known, answered, refused, disabled, expires_in, inside, granted, required)| {
                let w = World {
                    networks: inside,
                    ..world_for_failsafe(disabled, expires_in, &granted)
                };
                let doc = key_doc(&w);
                let required: Vec<String> =
                    required.iter().map(|&r| REQUIRABLE[r].to_owned()).collect();
                let ip: Option<IpAddr> = Some(
                    if inside.unwrap_or(true) {
                        "10.9.9.9"
                    } else {
                        "198.51.100.1"
                    }
                    .parse()
                    .unwrap(),
                );
                let (mono, max_age) = (20.0, 10.0);
                let entry = rules::Known {
                    doc: &doc,
                    answered_at: f64::from(answered),
                };
                let got = rules::failsafe_admits(
                    known.then_some(&entry),
                    refused.map(f64::from),
                    mono,
                    max_age,
                    NOW,
                    &required,
                    ip,
                );
                let scopes_ok = required
                    .iter()
                    .all(|r| granted.iter().any(|&g| grants(GRANTABLE[g], r)));
                let expected = known
                    && mono - f64::from(answered) <= max_age
                    && !matches!(refused, Some(r) if r >= answered)
                    && !disabled
                    && !expires_in.is_some_and(|d| d <= 0)
                    && inside != Some(false)
                    && scopes_ok;
                prop_assert_eq!(got, expected);
                Ok(())
            },
        )
        .unwrap();
}

fn world_for_failsafe(disabled: bool, expires_in: Option<i8>, granted: &[usize]) -> World {
    World {
        doc_fails: false,
        doc: DocIs::Found,
        ids_match: true,
        hashes_ok: true,
        disabled,
        expires_in,
        networks: None,
        client_known: true,
        granted: granted.to_vec(),
        required: Vec::new(),
        own_limit: None,
        default_limit: 1,
        cost: 1,
        secret: SecretIs::Current,
        free: Free::Known,
        cached: true,
        corrupt: false,
        used_before: 0,
        used_fails: false,
        bad: 0,
        bad_fails: false,
        flood: 1,
        verify_fails: false,
        count_fails: false,
        recount_fails: false,
        windows: Vec::new(),
        credits: None,
    }
}
