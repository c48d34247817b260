//! An audit stream entry, `audit:keylookup`'s or `audit:admin`'s: each
//! field's name once ([`field`]), the one way every writer builds an entry
//! ([`Entry`]: the validation entry, its failsafe and anonymous summaries,
//! the admin entry and its summaries, `keyward migrate`'s), and what both
//! readers (`store::activity`, `trail`) share: an entry's time when it has
//! no `ts` ([`id_time`]).
//!
//! | stream | fields |
//! |---|---|
//! | keylookup | `ts`, `project_id`, `key_id`, `result`, `reason`, `client`, `cost`, `window`?, `method`?, `path`? |
//! | keylookup summary | `ts`, `project_id`, `key_id`, `result`, `reason`, `client`, `summary`=1, `count`, and `second` (anonymous) or `first`, `last` (failsafe) |
//! | admin | `ts`, `actor`, `actor_name`, `claimed_operator`, `action`, `project_id`, `key_id`, `operator_id`, `outcome`, `request_id`, `caller_request_id`, `client` |
//! | admin summary | `ts`, `actor`, `claimed_operator`, `action`, `project_id`, `key_id`, `outcome`, `request_id`, `client`, `summary`=1, `second`, `count` |

use fred::bytes_utils::Str;
use fred::types::{Key, Value};

use crate::clock::now;

/// Every field name an audit entry may have.
pub mod field {
    pub const TS: &str = "ts";
    pub const PROJECT_ID: &str = "project_id";
    pub const KEY_ID: &str = "key_id";
    pub const RESULT: &str = "result";
    pub const REASON: &str = "reason";
    pub const CLIENT: &str = "client";
    pub const COST: &str = "cost";
    pub const WINDOW: &str = "window";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    pub const SUMMARY: &str = "summary";
    pub const COUNT: &str = "count";
    pub const SECOND: &str = "second";
    pub const FIRST: &str = "first";
    pub const LAST: &str = "last";
    pub const ACTOR: &str = "actor";
    pub const ACTOR_NAME: &str = "actor_name";
    pub const CLAIMED_OPERATOR: &str = "claimed_operator";
    pub const ACTION: &str = "action";
    pub const OPERATOR_ID: &str = "operator_id";
    pub const OUTCOME: &str = "outcome";
    pub const REQUEST_ID: &str = "request_id";
    pub const CALLER_REQUEST_ID: &str = "caller_request_id";
}

/// One entry's fields, in the order written; `ts` (now) always first.
/// Values are fred's `Str`: a `String` moves in, a `&'static str`
/// ([`Entry::with_static`]) is never copied, and names neither, so an
/// entry costs Redis's client no copy per field.
pub struct Entry(Vec<(&'static str, Str)>);

/// The most fields an entry has (the admin entry's).
const MOST_FIELDS: usize = 12;

impl Entry {
    /// An entry written now.
    pub fn now() -> Self {
        let mut fields = Vec::with_capacity(MOST_FIELDS);
        fields.push((field::TS, now().to_string().into()));
        Entry(fields)
    }

    /// With one more field.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.0.push((name, value.into().into()));
        self
    }

    /// With one more field whose value is a constant.
    pub fn with_static(mut self, name: &'static str, value: &'static str) -> Self {
        self.0.push((name, Str::from_static(value)));
        self
    }

    /// A summary of `count` entries not written one by one.
    pub fn summary(self, count: u64) -> Self {
        self.with_static(field::SUMMARY, "1")
            .with(field::COUNT, count.to_string())
    }

    /// The fields, for `XADD`.
    pub fn fields(self) -> Vec<(Key, Value)> {
        let fields = self.0.into_iter();
        fields
            .map(|(name, value)| (Key::from_static_str(name), Value::String(value)))
            .collect()
    }
}

/// The time of a stream id (`<ms>-<seq>`) in Unix seconds; 0 when it is
/// not one.
pub fn id_time(id: &str) -> f64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0.0, |ms| ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_starts_with_its_time_and_a_summary_says_its_count() {
        let fields = Entry::now()
            .with(field::REASON, "malformed")
            .summary(3)
            .fields();
        let text = |v: &Value| v.as_str().map(|s| s.to_string());
        let fields: Vec<_> = fields
            .iter()
            .map(|(n, v)| (n.as_str().map(str::to_owned), text(v)))
            .collect();
        assert_eq!(fields[0].0.as_deref(), Some(field::TS));
        let rest = [
            (field::REASON, "malformed"),
            (field::SUMMARY, "1"),
            (field::COUNT, "3"),
        ];
        let rest = rest.map(|(n, v)| (Some(n.to_owned()), Some(v.to_owned())));
        assert_eq!(fields[1..], rest);
        assert_eq!(id_time("1700000000123-0"), 1_700_000_000.123);
        assert_eq!(id_time("x"), 0.0);
    }
}
