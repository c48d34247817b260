//! Usage plans, pure: a key's windows (`limits`) and prepaid `credits`,
//! the fixed UTC windows they count in, and their validation rules and
//! OpenAPI schemas. No I/O: the store spends them, `validate` decides.
//!
//! A window is fixed on UTC boundaries: a second, a minute, an hour, a day
//! (from midnight), a calendar month (from the 1st). Each window of a key is
//! a counter named after the window's index, so a new window starts from
//! zero by itself and an old one expires. Credits that refill do the same:
//! each refill interval has its own counter, created with the refill amount
//! by the first request of the interval (`SET NX`), so the refill happens
//! exactly once however many instances race for it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::ValidationError;

use crate::clock::{civil_from_days, days_from_civil};

/// Most windows one key may have.
pub const MAX_LIMITS: usize = 8;
/// The largest cost one request may have.
pub const MAX_COST: u64 = 1_000_000;
/// How long a counter outlives the window it counts in: a use in a
/// window's last moment, or on a clock a little behind, still finds it.
/// The minute's use counters live this long from their first use; every
/// other window's counter and each credit balance, its length plus this.
pub const COUNTER_MARGIN_SECS: u64 = 120;

/// A cost as a header states it, the OpenAPI pattern: up to one digit
/// fewer than [`MAX_COST`] has, or [`MAX_COST`] itself.
pub fn cost_pattern() -> String {
    let digits = MAX_COST.to_string().len();
    format!("^(?:[0-9]{{1,{}}}|{MAX_COST})$", digits - 1)
}

/// A cost as a header states it, in words: what [`cost_pattern`] accepts.
pub fn parse_cost(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let short = text.len() < MAX_COST.to_string().len();
    let cost = text.parse::<u64>().ok()?;
    (digits && (short || text == MAX_COST.to_string())).then_some(cost)
}

/// The OpenAPI schema of a body's `cost`: 0 to [`MAX_COST`], default 1.
pub fn cost_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(MAX_COST))
        .default(Some(1.into()))
        .description(Some(
            "What the request weighs: each of the key's windows and its credits\n\
             are spent by it (default 1; 0 checks everything and spends nothing).",
        ))
        .into()
}
/// The largest limit, credit amount or balance: Redis counts in i64.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// A window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

/// One window of a key: at most `limit` (spent by each request's cost) per
/// `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per: Per,
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub limit: u64,
}

/// How often credits refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Month,
}

impl Interval {
    pub fn per(self) -> Per {
        match self {
            Interval::Day => Per::Day,
            Interval::Month => Per::Month,
        }
    }
}

/// A refill: `remaining` is set to `amount` once at the start of each
/// interval (UTC midnight, the 1st of the month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    pub interval: Interval,
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub amount: u64,
}

/// A key's credits as mint and update take them, and get/list show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credits {
    /// Credits left now (in this refill interval).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub remaining: u64,
    /// `null`: no refill.
    pub refill: Option<Refill>,
    /// A spend that takes the balance below this sends `key.credits_low`
    /// (once per refill interval; once without a refill). Below the refill
    /// `amount`, or without a refill below `remaining`. Absent: no warning.
    #[serde(
        default,
        deserialize_with = "whole_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(required = false, minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub low_at: Option<u64>,
}

/// What the key document keeps of its credits: the refill and the warning
/// threshold. The balance is a counter of its own (see
/// `store::names::credits`), spent with `INCRBY -cost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CreditsDoc {
    #[serde(default)]
    pub refill: Option<Refill>,
    /// See [`Credits::low_at`]. Read leniently: a value another tool wrote
    /// that is no count (a string, a negative) warns of nothing rather than
    /// making the whole key unreadable.
    #[serde(
        default,
        deserialize_with = "count_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub low_at: Option<u64>,
}

impl From<Credits> for CreditsDoc {
    fn from(credits: Credits) -> Self {
        Self {
            refill: credits.refill,
            low_at: credits.low_at,
        }
    }
}

impl CreditsDoc {
    /// The balance's period now: the refill interval's window (its name,
    /// and the seconds until the next refill), or `once` with no refill.
    pub fn period(&self, now: f64) -> (String, Option<u64>) {
        match self.refill {
            Some(refill) => {
                let w = refill.interval.per().window(now);
                (w.name, Some(w.ends_in))
            }
            None => ("once".to_owned(), None),
        }
    }

    /// A spend of `cost` that left `after`: whether it took the balance
    /// from `low_at` or more to below it (it was `after + cost` before).
    /// `false` for credits without `low_at`, so such a key's validation
    /// never asks more of Redis.
    pub fn crossed_low(&self, after: i64, cost: u64) -> bool {
        let Some(low_at) = self.low_at else {
            return false;
        };
        let (after, low_at) = (i128::from(after), i128::from(low_at));
        let before = after + i128::from(cost);
        before >= low_at && after < low_at
    }
}

/// A window in time: its name (part of its counter's name) and the seconds
/// until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub ends_in: u64,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
            Per::Month => "month",
        }
    }

    /// How long a window's counter is kept: the window and two minutes.
    pub fn ttl(self) -> i64 {
        let longest = match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3_600,
            Per::Day => 86_400,
            Per::Month => 31 * 86_400,
        };
        longest + COUNTER_MARGIN_SECS as i64
    }

    /// The window of this length that `now` (Unix seconds) is in.
    pub fn window(self, now: f64) -> Window {
        let secs = now.max(0.0) as u64;
        let fixed = |len: u64, tag: &str| Window {
            name: format!("{tag}{}", secs / len),
            ends_in: len - secs % len,
        };
        match self {
            Per::Second => fixed(1, "s"),
            Per::Minute => fixed(60, "m"),
            Per::Hour => fixed(3_600, "h"),
            Per::Day => fixed(86_400, "d"),
            Per::Month => {
                let (year, month, _) = civil_from_days((secs / 86_400) as i64);
                let (next_year, next_month) = match month {
                    12 => (year + 1, 1),
                    m => (year, m + 1),
                };
                let end = days_from_civil(next_year, next_month, 1) as u64 * 86_400;
                Window {
                    name: format!("mo{year:04}{month:02}"),
                    ends_in: end - secs,
                }
            }
        }
    }
}

/// A JSON number as a count: an integer of 0 or more, also when written
/// with a zero fraction (`5.0`: JSON Schema's integers include it).
pub fn count(n: &serde_json::Number) -> Option<u64> {
    match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        // Below 2^64, so the conversion is exact.
        (None, Some(f)) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    }
}

pub fn not_a_count<E: serde::de::Error>(n: &serde_json::Number) -> E {
    E::invalid_value(
        serde::de::Unexpected::Other(&n.to_string()),
        &"a whole number, 0 or more",
    )
}

/// Deserializes a required count (see [`count`]).
pub fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    count(&n).ok_or_else(|| not_a_count(&n))
}

/// Deserializes a signed whole number, also when written with a zero
/// fraction (`-5.0`).
pub fn whole_signed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let exact = |f: f64| {
        f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
    };
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Ok(i),
        // Within i64, so the conversion is exact.
        (None, Some(f)) if exact(f) => Ok(f as i64),
        _ => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Other(&n.to_string()),
            &"a whole number",
        )),
    }
}

/// Deserializes anything, keeping a count (see [`count`]) and nothing else.
fn count_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => count(&n),
        _ => None,
    })
}

/// Deserializes an optional count (see [`count`]): absent or `null` is
/// `None`.
pub fn whole_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| count(&n).ok_or_else(|| not_a_count(&n)))
        .transpose()
}

pub fn valid_limits(limits: &[Limit]) -> Result<(), ValidationError> {
    let fail = |m: &'static str| Err(ValidationError::new("limits").with_message(m.into()));
    if limits.len() > MAX_LIMITS {
        return fail("at most 8 windows");
    }
    if limits.iter().any(|l| l.limit == 0 || l.limit > MAX_AMOUNT) {
        return fail("each limit must be 1 to 9223372036854775807");
    }
    Ok(())
}

pub fn valid_credits(credits: &Credits) -> Result<(), ValidationError> {
    let too_big =
        credits.remaining > MAX_AMOUNT || credits.refill.is_some_and(|r| r.amount > MAX_AMOUNT);
    let fail = |m: String| Err(ValidationError::new("credits").with_message(m.into()));
    if too_big {
        return fail("remaining and amount must be at most 9223372036854775807".into());
    }
    let Some(low_at) = credits.low_at else {
        return Ok(());
    };
    // A threshold the balance starts at or under would never be crossed.
    match credits.refill {
        _ if low_at == 0 => fail("low_at must be 1 or more".into()),
        Some(refill) if low_at >= refill.amount => fail(format!(
            "low_at must be below the refill amount ({})",
            refill.amount
        )),
        None if low_at >= credits.remaining => fail(format!(
            "low_at must be below remaining ({}) for credits that never refill",
            credits.remaining
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_at_is_crossed_by_the_spend_that_goes_below_it() {
        let doc = |low_at| CreditsDoc {
            refill: None,
            low_at,
        };
        let warned = doc(Some(10));
        // (balance after, cost, crossed)
        let cases = [
            (9, 1, true),   // 10 -> 9
            (10, 1, false), // 11 -> 10: not below yet
            (0, 10, true),  // 10 -> 0
            (5, 20, true),  // 25 -> 5
            (8, 1, false),  // 9 -> 8: below already
            (9, 0, false),  // a check spends nothing
            (i64::MAX, MAX_COST, false),
        ];
        for (after, cost, crossed) in cases {
            assert_eq!(warned.crossed_low(after, cost), crossed, "{after} {cost}");
        }
        assert!(!doc(None).crossed_low(0, 100), "no low_at, no warning");
    }

    #[test]
    fn fixed_windows_start_on_utc_boundaries() {
        // 2026-12-01T22:59:59Z
        let t = 1_796_165_999.5;
        assert_eq!(Per::Second.window(t).ends_in, 1);
        assert_eq!(Per::Minute.window(t).ends_in, 1);
        assert_eq!(Per::Hour.window(t).ends_in, 1);
        assert_eq!(Per::Day.window(t).ends_in, 3_601);
        assert_eq!(Per::Minute.window(t).name, "m29936099");
        assert_ne!(Per::Minute.window(t).name, Per::Minute.window(t + 1.0).name);
    }

    #[test]
    fn a_month_is_the_calendar_month() {
        let dec_1 = days_from_civil(2026, 12, 1) as f64 * 86_400.0;
        let w = Per::Month.window(dec_1);
        assert_eq!(w.name, "mo202612");
        assert_eq!(w.ends_in, 31 * 86_400);
        assert_eq!(Per::Month.window(dec_1 - 1.0).name, "mo202611");
        let feb_2028 = days_from_civil(2028, 2, 1) as f64 * 86_400.0;
        assert_eq!(
            Per::Month.window(feb_2028).ends_in,
            29 * 86_400,
            "leap year"
        );
        for days in [0, 59, 365, 10_957, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(days_from_civil(y, m, 1) <= days && days < days_from_civil(y, m, 1) + 31);
        }
    }
}
