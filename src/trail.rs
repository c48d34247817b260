//! `GET /v1/admin/audit`: the admin trail (`audit:admin`), newest first,
//! only of this deployment and of the projects the caller may see.
//!
//! The stream is shared by every deployment on a Redis (and by `keyward
//! migrate`), so entries are kept only when their `client` is this
//! deployment's `KEYWARD_CLIENT_NAME`, and then when the caller sees their
//! project; entries of no project (operators, `whoami`, bad tokens) only
//! for callers who cover every project. It is read with the monitor user,
//! like `activity`, at most [`SCAN_MAX`] entries per request, [`BATCH`] at a
//! time: `next` then says where to go on. Each field is cut to
//! `audit::FIELD_MAX` bytes (entries written before the cap), and a caller
//! has at most `KEYWARD_ADMIN_READS_AT_ONCE` such reads running
//! (`limits`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError};

use crate::access::{Caller, Target};
use crate::admin::project_id as valid_project_id;
use crate::audit::{clip, FIELD_MAX};
use crate::error::{Error, Result};
use crate::key::ProjectId;
use crate::store::entry::{field, id_time};
use crate::store::{AdminEntry, Store};

/// Stream entries read per round trip: with entries of at most a dozen
/// fields of `audit::FIELD_MAX` bytes, about 400 KiB held at a time.
const BATCH: u64 = 100;
/// Stream entries read at most per request.
pub const SCAN_MAX: usize = 5_000;

/// A cursor is an entry's stream id as Redis writes it (no leading zeros,
/// each part under 10^19, so within 64 bits), and never `0-0`, the first id
/// there is: Redis refuses the range "older than `0-0`". The query's
/// `#[param(pattern)]` spells the same literal (a test checks).
const CURSOR_PATTERN: &str = "^(?:[1-9][0-9]{0,18}-(?:0|[1-9][0-9]{0,18})|0-[1-9][0-9]{0,18})$";

fn stream_id(id: &str) -> Result<(), ValidationError> {
    static CURSOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(CURSOR_PATTERN).expect("the cursor pattern compiles")
    });
    match CURSOR.is_match(id) {
        true => Ok(()),
        false => Err(ValidationError::new("cursor")
            .with_message("must be a stream id after 0-0, such as 1700000000000-0".into())),
    }
}

/// `GET /v1/admin/audit`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this project's entries.
    #[validate(custom(function = "valid_project_id"))]
    #[param(inline, value_type = Option<crate::admin::ProjectIdDoc>)]
    pub project_id: Option<String>,
    /// Only this actor's entries: an operator id, `root` or `unknown`.
    #[validate(length(min = 1, max = 64))]
    #[param(min_length = 1, max_length = 64, example = "root")]
    pub actor: Option<String>,
    /// Entries per page (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_RECENT))]
    #[param(inline, value_type = Option<crate::page::RecentDoc>)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[validate(custom(function = "stream_id"))]
    #[param(pattern = "^(?:[1-9][0-9]{0,18}-(?:0|[1-9][0-9]{0,18})|0-[1-9][0-9]{0,18})$")]
    pub cursor: Option<String>,
}

impl Target for AuditQuery {
    fn project(&self) -> Option<&str> {
        self.project_id.as_deref()
    }
}

/// One admin call (or a summary standing for `count` refused ones).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditItem {
    /// The stream entry's id.
    #[schema(example = "1700000000000-0")]
    pub id: String,
    pub ts: f64,
    /// The operator id, `root`, or `unknown` (a token that names no one);
    /// `null` for entries of older versions.
    pub actor: Option<String>,
    /// The actor's name when it had one (an operator's, `root`).
    pub actor_name: Option<String>,
    /// `project.create`, `key.mint`, `key.update`, `key.rotate`,
    /// `key.revoke`, `operator.create`, `operator.revoke`, ...
    pub action: String,
    pub project_id: Option<String>,
    pub key_id: Option<String>,
    /// The operator an `operator.create` or `operator.revoke` is about.
    pub operator_id: Option<String>,
    /// The existing operator a refused token named (a wrong secret, or a
    /// revoked or expired operator's token): claimed, not proven, so the
    /// entry's `actor` is `unknown`.
    pub claimed_operator: Option<String>,
    /// `ok`, `unauthorized`, `forbidden`, `not_found`, `invalid`,
    /// `conflict`, `limited` (a `429`), `deadline` (the call outlived the
    /// request deadline; what it had done by then stands) or `error`;
    /// `null` for entries of older versions.
    pub outcome: Option<String>,
    /// keyward's own id of the request (the caller's, for entries of older
    /// versions).
    pub request_id: Option<String>,
    /// The caller's `X-Request-Id`, when it sent a plain one (1 to 64 of
    /// `[A-Za-z0-9._:-]`; any other is kept nowhere).
    pub caller_request_id: Option<String>,
    /// How many calls the entry stands for: 1, or a summary's count of
    /// refused calls over the second's budget.
    pub count: u64,
}

/// `200` from `GET /v1/admin/audit`.
pub type AuditOut = crate::page::Page<AuditItem>;

fn item(id: String, mut fields: HashMap<String, String>) -> AuditItem {
    // Entries written before fields were capped are cut on the way out.
    let mut take = |name: &str| {
        fields
            .remove(name)
            .filter(|v| !v.is_empty())
            .map(|v| clip(&v, FIELD_MAX).to_owned())
    };
    let ts = take(field::TS).and_then(|v| v.parse().ok());
    let count = match take(field::SUMMARY).as_deref() {
        Some("1") => take(field::COUNT).and_then(|c| c.parse().ok()).unwrap_or(1),
        _ => 1,
    };
    AuditItem {
        ts: ts.unwrap_or_else(|| id_time(&id)),
        actor: take(field::ACTOR),
        actor_name: take(field::ACTOR_NAME),
        action: take(field::ACTION).unwrap_or_else(|| "unknown".into()),
        project_id: take(field::PROJECT_ID),
        key_id: take(field::KEY_ID),
        operator_id: take(field::OPERATOR_ID),
        claimed_operator: take(field::CLAIMED_OPERATOR),
        outcome: take(field::OUTCOME),
        request_id: take(field::REQUEST_ID),
        caller_request_id: take(field::CALLER_REQUEST_ID),
        count,
        id,
    }
}

/// Whether `caller` may see an entry, and the query keeps it.
fn shown(
    caller: &Caller,
    query: &AuditQuery,
    deployment: &str,
    fields: &HashMap<String, String>,
) -> bool {
    let value = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let visible = match value(field::PROJECT_ID) {
        Some(project) => caller.sees(project),
        None => caller.covers_all(),
    };
    visible
        && value(field::CLIENT) == Some(deployment)
        && query
            .project_id
            .as_deref()
            .map_or(true, |p| value(field::PROJECT_ID) == Some(p))
        && query
            .actor
            .as_deref()
            .map_or(true, |a| value(field::ACTOR) == Some(a))
}

pub async fn audit(store: &Store, caller: &Caller, query: AuditQuery) -> Result<AuditOut> {
    // A project that does not exist is not found, as one outside the
    // caller's list is (see `access`): the two must read the same.
    if let Some(project) = &query.project_id {
        let project = ProjectId::parse(project).map_err(|_| Error::ProjectNotFound)?;
        store
            .get_project(&project)
            .await?
            .ok_or(Error::ProjectNotFound)?;
    }
    let limit = crate::page::limit(query.limit) as usize;
    let mut items = Vec::new();
    let mut cursor = query.cursor.clone();
    let mut scanned = 0;
    loop {
        let page: Vec<AdminEntry> = store.admin_audit_before(cursor.as_deref(), BATCH).await?;
        let exhausted = (page.len() as u64) < BATCH;
        for (id, fields) in page {
            scanned += 1;
            cursor = Some(id.clone());
            if shown(caller, &query, store.client_name(), &fields) {
                items.push(item(id, fields));
                if items.len() == limit {
                    return Ok(AuditOut {
                        items,
                        next: cursor,
                    });
                }
            }
        }
        if exhausted {
            return Ok(AuditOut { items, next: None });
        }
        if scanned >= SCAN_MAX {
            return Ok(AuditOut {
                items,
                next: cursor,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_a_stream_id_redis_can_read_back_from() {
        for good in ["1700000000000-0", "0-1", "9999999999999999999-7"] {
            assert!(stream_id(good).is_ok(), "{good}");
        }
        for bad in [
            "0-0",
            "00-000",
            "01-1",
            "18446744073709551616-0",
            "10000000000000000000-0",
            "1-+1",
            "1700000000000",
            "-1",
            "1-",
            "a-1",
        ] {
            assert!(stream_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documents_cursor_pattern_is_the_validators() {
        let doc = crate::http::openapi().unwrap();
        let param = doc["paths"]["/v1/admin/audit"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cursor")
            .unwrap()
            .clone();
        assert_eq!(param["schema"]["pattern"], CURSOR_PATTERN);
    }
}
