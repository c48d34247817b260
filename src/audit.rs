//! The audit trails' vocabulary and budgets, pure: the validation reasons
//! ([`Reason`]) and the admin outcomes ([`outcome`]), each once; the cap on
//! an admin entry's field ([`FIELD_MAX`]); and the budget for anonymous
//! traffic, so that a flood cannot flush `audit:keylookup` (the admin
//! trail's refused calls have one of their own).
//!
//! The stream is capped (`XADD MAXLEN ~`), so every entry written pushes the
//! oldest out. Validations that concern an existing key (a success, a wrong
//! secret, a disabled, expired or unreadable key, a rate limit, a missing
//! scope, a refused address) always write one entry each: they are what the
//! trail is for, and each names a key someone holds. *Anonymous* denials are
//! different: anyone can send any number of them without knowing any key.
//! They are:
//!
//! - `malformed`: not a key at all;
//! - `not_found`: a well-formed key whose document does not exist;
//! - `forbidden`: a key of a project this deployment's Redis user may not
//!   read. Redis answers `NOPERM` before saying whether the key exists, so
//!   its key id is as unverifiable as an unknown one, and every deployment
//!   shares the one stream: a flood through any gateway would flush everyone's
//!   trail if these were exempt.
//!
//! The rule: each keyward instance writes at most `per_second` anonymous
//! denials per wall-clock second as entries of their own (all three reasons
//! together). Past that, each is only counted, and every second that had any
//! gets one summary entry per reason: `summary=1`, `second=<Unix second>`,
//! `count=<denials not written individually>`, written by the store's
//! flusher about a second later (and at shutdown). So anonymous traffic adds
//! at most `per_second + 3` entries per second per instance, and the entries
//! of a second plus its summaries' counts account for every request.
//!
//! A summarized denial is answered without waiting for Redis; its count waits
//! in memory until written (kept and retried while Redis is down, lost only if
//! the process dies first).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::clock::now;

/// The actor of an admin call whose token named no valid caller.
pub const UNKNOWN: &str = "unknown";

/// The most bytes of any one text field an `audit:admin` entry (or a log
/// line's path) keeps: the validators bound what is stored, this bounds
/// what a refused call's input (a path parameter, a legacy document's
/// name) can make keyward write.
pub const FIELD_MAX: usize = 256;

/// `text`, cut to at most `max` bytes at a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
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
    /// Redis refused the key's document to this deployment's user (`NOPERM`):
    /// a project it may not read. The audit reason `forbidden`.
    NoPermission,
    IpNotAllowed,
    InsufficientScope,
    /// The key's document in Redis cannot be read (or is not to be trusted).
    Unreadable,
    RateLimited,
    /// Not enough credits left for the request's cost.
    CreditsExhausted,
    FailsafeOpen,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::PreviousSecret => "previous_secret",
            Reason::Malformed => "malformed",
            Reason::NotFound => "not_found",
            Reason::BadSecret => "bad_secret",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
            Reason::NoPermission => "forbidden",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::Unreadable => "unreadable",
            Reason::RateLimited => "rate_limited",
            Reason::CreditsExhausted => "credits_exhausted",
            Reason::FailsafeOpen => "failsafe_open",
        }
    }

    /// The audit `result`: [`RESULT_OK`], [`RESULT_DENIED`] or
    /// [`RESULT_RATE_LIMITED`].
    pub fn result(self) -> &'static str {
        match self {
            Reason::Ok | Reason::PreviousSecret | Reason::FailsafeOpen => RESULT_OK,
            Reason::RateLimited | Reason::CreditsExhausted => RESULT_RATE_LIMITED,
            _ => RESULT_DENIED,
        }
    }

    /// Whether the refusal is about the key itself, whatever secret was
    /// presented (its document refuses it), rather than about one request.
    pub fn refuses_the_key(self) -> bool {
        matches!(
            self,
            Reason::NotFound
                | Reason::NoPermission
                | Reason::Unreadable
                | Reason::Disabled
                | Reason::Expired
        )
    }
}

/// A validation entry's `result`, each once.
pub const RESULT_OK: &str = "ok";
pub const RESULT_DENIED: &str = "denied";
pub const RESULT_RATE_LIMITED: &str = "rate_limited";

/// The reasons that anyone can produce at will, without knowing a key.
pub const ANONYMOUS_REASONS: [&str; 3] = [
    Reason::Malformed.as_str(),
    Reason::NotFound.as_str(),
    Reason::NoPermission.as_str(),
];

/// Whether a denial with this audit reason is anonymous traffic.
pub fn is_anonymous(reason: &str) -> bool {
    ANONYMOUS_REASONS.contains(&reason)
}

/// Anonymous denials of one reason in one second that got no entry of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The Unix second they happened in.
    pub second: u64,
    pub reason: &'static str,
    pub count: u64,
}

/// Refused admin calls past the budget that name someone, in one second:
/// an authenticated caller's (`actor`), or a refused token's existing
/// operator (`claimed_operator`, with `actor` `unknown`; see
/// `access::Refused`). Summarized per outcome and per who, so the summary
/// still says who was refused; there are only as many as there are
/// operators (and `root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub second: u64,
    pub reason: &'static str,
    pub who: Who,
    pub count: u64,
}

/// Whom a budgeted admin refusal names.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Who {
    /// The authenticated caller, or `unknown`.
    pub actor: String,
    /// The operator a refused token named, or `""`.
    pub claimed_operator: String,
}

/// The admin API's refused outcomes: anyone can send calls with no token
/// (`unauthorized`), and any caller, whatever its role, can send calls
/// that are refused (a project it does not see, an action its role does
/// not allow, an invalid body, a wrong method, a limit reached), so
/// `audit:admin` budgets all of them the same way (a budget of its own,
/// summaries in `audit:admin`). A call its deadline stopped (`deadline`)
/// or that failed (`error`) is not a refusal: it may have changed
/// something, so it always gets its own entry.
pub const ADMIN_REFUSED: [&str; 6] = [
    outcome::UNAUTHORIZED,
    outcome::FORBIDDEN,
    outcome::NOT_FOUND,
    outcome::CONFLICT,
    outcome::INVALID,
    outcome::LIMITED,
];

/// An `audit:admin` entry's `outcome`, each once.
pub mod outcome {
    pub const OK: &str = "ok";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const LIMITED: &str = "limited";
    pub const INVALID: &str = "invalid";
    /// The call failed (a 5xx, a panic): it may have changed something.
    pub const ERROR: &str = "error";
    /// The call's deadline stopped it: it may have changed something.
    pub const DEADLINE: &str = "deadline";

    /// The outcome of an answer with this status.
    pub fn of(status: u16) -> &'static str {
        match status {
            200..=299 => OK,
            401 => UNAUTHORIZED,
            403 => FORBIDDEN,
            404 => NOT_FOUND,
            409 => CONFLICT,
            429 => LIMITED,
            400..=499 => INVALID,
            _ => ERROR,
        }
    }
}

/// One instance's budget of individual anonymous audit entries, and the
/// counts of those over it, waiting to be written as summaries.
pub struct Budget {
    per_second: u64,
    /// The reasons (outcomes) that count against it.
    anonymous: &'static [&'static str],
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The second `written` counts in.
    second: u64,
    /// Individual anonymous entries admitted in `second`.
    written: u64,
    /// (second, reason) -> denials summarized, not yet handed to the flusher.
    pending: BTreeMap<(u64, &'static str), u64>,
    /// (second, (reason, who)) -> the same, for [`Claimed`].
    claimed: BTreeMap<(u64, (&'static str, Who)), u64>,
}

impl State {
    /// Takes one of `second`'s `per_second` places; the second counted in
    /// when there is none left.
    fn take(&mut self, second: u64, per_second: u64) -> Result<(), u64> {
        // A thread that read the clock just before another one's new second
        // counts in that new second: a window never reopens.
        let second = second.max(self.second);
        if self.second != second {
            self.second = second;
            self.written = 0;
        }
        if self.written < per_second {
            self.written += 1;
            return Ok(());
        }
        Err(second)
    }
}

/// The entries of `pending` of seconds before `now` (all of them when
/// `all`), taken out.
fn due<K: Ord + Default>(
    pending: &mut BTreeMap<(u64, K), u64>,
    now: u64,
    all: bool,
) -> BTreeMap<(u64, K), u64> {
    let keep = match all {
        true => BTreeMap::new(),
        false => pending.split_off(&(now, K::default())),
    };
    std::mem::replace(pending, keep)
}

impl Budget {
    /// A budget for the validation trail's [`ANONYMOUS_REASONS`].
    pub fn new(per_second: u64) -> Self {
        Self::of(per_second, &ANONYMOUS_REASONS)
    }

    /// A budget for the admin trail's [`ADMIN_REFUSED`].
    pub fn admin(per_second: u64) -> Self {
        Self::of(per_second, &ADMIN_REFUSED)
    }

    fn of(per_second: u64, anonymous: &'static [&'static str]) -> Self {
        Self {
            per_second,
            anonymous,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters, consistent after every statement: a
        // panic elsewhere while holding the lock cannot leave it half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a denial with `reason` gets an audit entry of its own now.
    /// Always for non-anonymous reasons; for anonymous ones while this
    /// second's budget lasts, after which the denial is counted for its
    /// second's summary instead.
    pub fn admit(&self, reason: &'static str) -> bool {
        self.admit_at(reason, now() as u64)
    }

    pub fn admit_at(&self, reason: &'static str, second: u64) -> bool {
        self.admit_into(reason, second, |state, second| {
            *state.pending.entry((second, reason)).or_default() += 1;
        })
    }

    /// Whether a denial gets an entry of its own; if not, `count` counts it
    /// in the second it fell in.
    fn admit_into(
        &self,
        reason: &'static str,
        second: u64,
        count: impl FnOnce(&mut State, u64),
    ) -> bool {
        if !self.anonymous.contains(&reason) {
            return true;
        }
        let mut state = self.state();
        let Err(second) = state.take(second, self.per_second) else {
            return true;
        };
        count(&mut state, second);
        false
    }

    /// [`Budget::admit`] for a refusal that names `who`: past the budget
    /// it is counted for that one's [`Claimed`] summary.
    pub fn admit_claimed(&self, reason: &'static str, who: &Who) -> bool {
        self.admit_claimed_at(reason, who, now() as u64)
    }

    pub fn admit_claimed_at(&self, reason: &'static str, who: &Who, second: u64) -> bool {
        self.admit_into(reason, second, |state, second| {
            *state
                .claimed
                .entry((second, (reason, who.clone())))
                .or_default() += 1;
        })
    }

    /// [`Budget::take_due`] for the [`Claimed`] summaries.
    pub fn take_claimed_due(&self, all: bool) -> Vec<Claimed> {
        self.take_claimed_due_at(now() as u64, all)
    }

    pub fn take_claimed_due_at(&self, now: u64, all: bool) -> Vec<Claimed> {
        due(&mut self.state().claimed, now, all)
            .into_iter()
            .map(|((second, (reason, who)), count)| Claimed {
                second,
                reason,
                who,
                count,
            })
            .collect()
    }

    /// Hands back [`Claimed`] summaries that could not be written.
    pub fn put_back_claimed(&self, summaries: &[Claimed]) {
        let mut state = self.state();
        for s in summaries {
            *state
                .claimed
                .entry((s.second, (s.reason, s.who.clone())))
                .or_default() += s.count;
        }
    }

    /// Takes the summaries of seconds that are over (before `now`), or of
    /// every second when `all` (at shutdown), oldest first.
    pub fn take_due(&self, all: bool) -> Vec<Summary> {
        self.take_due_at(now() as u64, all)
    }

    pub fn take_due_at(&self, now: u64, all: bool) -> Vec<Summary> {
        due(&mut self.state().pending, now, all)
            .into_iter()
            .map(|((second, reason), count)| Summary {
                second,
                reason,
                count,
            })
            .collect()
    }

    /// Hands back summaries that could not be written, to be retried.
    pub fn put_back(&self, summaries: &[Summary]) {
        let mut state = self.state();
        for s in summaries {
            *state.pending.entry((s.second, s.reason)).or_default() += s.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn keyed_outcomes_are_always_admitted() {
        let budget = Budget::new(0);
        for reason in ["ok", "bad_secret", "disabled", "expired", "unreadable"] {
            assert!(budget.admit_at(reason, 10), "{reason}");
        }
        assert!(budget.take_due_at(11, true).is_empty());
    }

    #[test]
    fn anonymous_denials_past_the_budget_are_counted_per_reason_and_second() {
        let budget = Budget::new(3);
        let admitted = (0..10)
            .filter(|i| budget.admit_at(ANONYMOUS_REASONS[i % 2], 100))
            .count();
        assert_eq!(admitted, 3, "the budget is shared by the reasons");
        assert!(
            budget.admit_at("not_found", 101),
            "a new second, a new budget"
        );
        assert!(
            budget.admit_at("forbidden", 100),
            "a late caller counts in the newer second's budget"
        );

        // Second 101 is not over yet at 101: only 100's summaries are due.
        let due = budget.take_due_at(101, false);
        assert_eq!(
            due,
            vec![
                Summary {
                    second: 100,
                    reason: "malformed",
                    count: 3
                },
                Summary {
                    second: 100,
                    reason: "not_found",
                    count: 4
                },
            ]
        );
        assert!(budget.take_due_at(101, false).is_empty(), "taken once");
    }

    #[test]
    fn summaries_that_could_not_be_written_are_retried_with_later_counts() {
        let budget = Budget::new(0);
        assert!(!budget.admit_at("malformed", 5));
        let due = budget.take_due_at(6, false);
        assert!(!budget.admit_at("malformed", 5));
        budget.put_back(&due);
        assert!(!budget.admit_at("not_found", 7));
        assert_eq!(
            budget.take_due_at(7, true),
            vec![
                Summary {
                    second: 5,
                    reason: "malformed",
                    count: 2
                },
                Summary {
                    second: 7,
                    reason: "not_found",
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn refusals_naming_someone_share_the_budget_and_are_summarized_per_outcome_and_who() {
        let budget = Budget::admin(2);
        let claimed = |operator: &str| Who {
            actor: "unknown".into(),
            claimed_operator: operator.into(),
        };
        let actor = |actor: &str| Who {
            actor: actor.into(),
            claimed_operator: String::new(),
        };
        assert!(budget.admit_claimed_at("unauthorized", &claimed("op_a"), 50));
        assert!(budget.admit_at("unauthorized", 50));
        for operator in ["op_a", "op_a", "op_b"] {
            assert!(!budget.admit_claimed_at("unauthorized", &claimed(operator), 50));
        }
        assert!(!budget.admit_claimed_at("forbidden", &actor("op_v"), 50));
        assert!(!budget.admit_claimed_at("not_found", &actor("op_v"), 50));
        assert!(!budget.admit_at("unauthorized", 50));
        assert!(
            budget.admit_claimed_at("ok", &actor("op_a"), 50),
            "only refusals count"
        );
        let due = budget.take_claimed_due_at(51, false);
        let summary = |reason, who: Who, count| Claimed {
            second: 50,
            reason,
            who,
            count,
        };
        assert_eq!(
            due,
            vec![
                summary("forbidden", actor("op_v"), 1),
                summary("not_found", actor("op_v"), 1),
                summary("unauthorized", claimed("op_a"), 2),
                summary("unauthorized", claimed("op_b"), 1),
            ]
        );
        budget.put_back_claimed(&due[3..]);
        assert_eq!(
            budget.take_claimed_due_at(51, true),
            vec![summary("unauthorized", claimed("op_b"), 1)]
        );
        assert_eq!(budget.take_due_at(51, true).len(), 1, "the anonymous one");
    }

    #[test]
    fn every_request_is_either_admitted_or_in_a_summary() {
        let budget = Budget::new(7);
        let mut admitted = 0u64;
        for i in 0..10_000u64 {
            let reason = ANONYMOUS_REASONS[(i % 3) as usize];
            admitted += u64::from(budget.admit_at(reason, 1_000 + i / 1_500));
        }
        let summarized: u64 = budget
            .take_due_at(u64::MAX, true)
            .iter()
            .map(|s| s.count)
            .sum();
        assert_eq!(admitted, 7 * 7, "7 seconds, 7 each");
        assert_eq!(admitted + summarized, 10_000);
    }
}
