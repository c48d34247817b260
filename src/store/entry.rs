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
pub struct Entry(Vec<(&'static str, String)>);

impl Entry {
    /// An entry written now.
    pub fn now() -> Self {
        Entry(vec![(field::TS, now().to_string())])
    }

    /// With one more field.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.0.push((name, value.into()));
        self
    }

    /// A summary of `count` entries not written one by one.
    pub fn summary(self, count: u64) -> Self {
        self.with(field::SUMMARY, "1")
            .with(field::COUNT, count.to_string())
    }

    /// The fields, for `XADD`.
    pub fn fields(self) -> Vec<(&'static str, String)> {
        self.0
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
        assert_eq!(fields[0].0, field::TS);
        assert_eq!(
            fields[1..],
            [
                (field::REASON, "malformed".to_owned()),
                (field::SUMMARY, "1".to_owned()),
                (field::COUNT, "3".to_owned())
            ]
        );
        assert_eq!(id_time("1700000000123-0"), 1_700_000_000.123);
        assert_eq!(id_time("x"), 0.0);
    }
}
