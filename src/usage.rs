//! `GET /v1/admin/usage`: a project's (or one of its keys') usage record by
//! hour, day or month, for billing: each bucket's validations by result and
//! the cost its passes spent. The project is read with the manager user
//! first (one it may not read is not found), the record with the monitor
//! user (`store::record`, which also says how the record is written).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};
use crate::store::record::{Sums, EXTRA_COST, FIELDS, OK};
use crate::store::{Granularity, Store};

/// Buckets one read may cover at most (hours: about 41 days).
pub const MAX_BUCKETS: i64 = 1_000;
/// The latest `to` (9999-12-31T23:59:59Z).
const MAX_TIME: i64 = 253_402_300_799;

/// A bucket's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GranularityIn {
    Hour,
    Day,
    Month,
}

impl From<GranularityIn> for Granularity {
    fn from(g: GranularityIn) -> Self {
        match g {
            GranularityIn::Hour => Granularity::Hour,
            GranularityIn::Day => Granularity::Day,
            GranularityIn::Month => Granularity::Month,
        }
    }
}

/// `GET /v1/admin/usage`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    #[validate(custom(function = "crate::admin::project_id"))]
    #[param(inline, value_type = crate::admin::ProjectIdDoc)]
    pub project_id: String,
    /// One key's record (a deleted key's too); without it, the project's.
    #[validate(custom(function = "crate::admin::key_id"))]
    #[param(inline, value_type = Option<crate::admin::KeyIdDoc>)]
    pub key_id: Option<String>,
    /// The range's start, Unix seconds (UTC): buckets that end after it.
    #[validate(range(max = 253_402_300_799u64))]
    pub from: u64,
    /// The range's end, Unix seconds, after `from`: buckets that start
    /// before it. At most 1,000 buckets from `from`.
    #[validate(range(max = 253_402_300_799u64))]
    pub to: u64,
    pub granularity: GranularityIn,
}

impl crate::access::Target for UsageQuery {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
    fn key(&self) -> Option<&str> {
        self.key_id.as_deref()
    }
}

/// A bucket's validations by result: every 200 is `ok`, each refusal of
/// the key under its reason (the audit's).
#[derive(Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct UsageCounts {
    pub ok: u64,
    pub rate_limited: u64,
    pub credits_exhausted: u64,
    pub bad_secret: u64,
    pub disabled: u64,
    pub expired: u64,
    pub ip_not_allowed: u64,
    pub insufficient_scope: u64,
    pub unreadable: u64,
}

/// One bucket with validations in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBucket {
    /// The bucket's start, Unix seconds (UTC): an hour, a day or a
    /// calendar month.
    pub start: i64,
    /// The cost the bucket's passes spent (each pass its request's cost).
    pub cost: u64,
    pub counts: UsageCounts,
}

/// `200` from `GET /v1/admin/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageOut {
    pub project_id: String,
    /// `null`: the whole project's.
    pub key_id: Option<String>,
    pub granularity: GranularityIn,
    /// Oldest first; buckets without validations are left out.
    pub buckets: Vec<UsageBucket>,
}

/// Buckets of `granularity` from the one holding `from` to the one holding
/// `to - 1`.
fn buckets_between(granularity: Granularity, from: i64, to: i64) -> i64 {
    let month = |t: i64| {
        let (y, m, _) = crate::clock::civil_from_days(t.div_euclid(86_400));
        y * 12 + i64::from(m)
    };
    match granularity {
        Granularity::Hour => (to - 1) / 3_600 - from / 3_600 + 1,
        Granularity::Day => (to - 1) / 86_400 - from / 86_400 + 1,
        Granularity::Month => month(to - 1) - month(from) + 1,
    }
}

pub async fn usage(store: &Store, query: UsageQuery) -> Result<UsageOut> {
    let (from, to) = (query.from as i64, query.to as i64);
    if to <= from {
        return Err(Error::InvalidRequest("to: must be after from".into()));
    }
    let granularity = Granularity::from(query.granularity);
    if buckets_between(granularity, from, to.min(MAX_TIME)) > MAX_BUCKETS {
        return Err(Error::InvalidRequest(format!(
            "to: at most {MAX_BUCKETS} buckets per request (of the granularity, from `from`)"
        )));
    }
    let project = ProjectId::parse(&query.project_id).map_err(|_| Error::ProjectNotFound)?;
    let key_id = match &query.key_id {
        Some(k) => Some(KeyId::parse(k).map_err(|_| Error::KeyNotFound)?),
        None => None,
    };
    store
        .get_project(&project)
        .await?
        .ok_or(Error::ProjectNotFound)?;
    let key = key_id.as_ref().map(|k| k.as_str());
    let record = store
        .read_record(project.as_str(), key, granularity, from, to)
        .await?;
    Ok(UsageOut {
        project_id: project.to_string(),
        key_id: key.map(str::to_owned),
        granularity: query.granularity,
        buckets: record.into_iter().map(bucket).collect(),
    })
}

fn bucket((start, sums): (i64, Sums)) -> UsageBucket {
    let n = |name: &str| {
        let i = FIELDS.iter().position(|f| *f == name).unwrap_or(OK);
        sums[i].max(0) as u64
    };
    UsageBucket {
        start,
        cost: sums[OK].saturating_add(sums[EXTRA_COST]).max(0) as u64,
        counts: UsageCounts {
            ok: n("ok"),
            rate_limited: n("rate_limited"),
            credits_exhausted: n("credits_exhausted"),
            bad_secret: n("bad_secret"),
            disabled: n("disabled"),
            expired: n("expired"),
            ip_not_allowed: n("ip_not_allowed"),
            insufficient_scope: n("insufficient_scope"),
            unreadable: n("unreadable"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_count_covers_partial_buckets_at_both_ends() {
        let day = 86_400;
        assert_eq!(buckets_between(Granularity::Hour, 0, 3_600), 1);
        assert_eq!(buckets_between(Granularity::Hour, 1_800, 3_601), 2);
        assert_eq!(buckets_between(Granularity::Day, 0, 30 * day), 30);
        // 2026-01-31 .. 2026-03-01: January and February.
        let jan31 = crate::clock::days_from_civil(2026, 1, 31) * day;
        let mar1 = crate::clock::days_from_civil(2026, 3, 1) * day;
        assert_eq!(buckets_between(Granularity::Month, jan31, mar1), 2);
    }

    #[test]
    fn every_field_of_the_record_is_an_answer_field() {
        let mut sums = Sums::default();
        for (i, n) in sums.iter_mut().enumerate() {
            *n = i as i64 + 1;
        }
        let b = bucket((0, sums));
        assert_eq!(b.cost, 1 + 2);
        let counts = serde_json::to_value(&b.counts).unwrap();
        for (i, name) in FIELDS.iter().enumerate().filter(|(i, _)| *i != EXTRA_COST) {
            assert_eq!(counts[name], i as u64 + 1, "{name}");
        }
    }
}
