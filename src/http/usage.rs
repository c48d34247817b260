//! `GET /v1/admin/usage`: a project's or a key's usage record, by hour, day
//! or month. A viewer's action, like every read.

use axum::extract::State;
use axum::Json;

use super::access::{Admin, Query};
use super::AppState;
use crate::access::act;
use crate::error::{ErrorBody, InvalidRequestResponse, Result};
use crate::usage::{self, UsageOut, UsageQuery};

/// A project's (or one key's) validations by result and the cost spent,
/// per hour, day or month, from the usage record.
#[utoipa::path(
    get,
    path = "/v1/admin/usage",
    tag = "admin",
    params(UsageQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The buckets with validations in them, oldest first", body = UsageOut),
        (status = 404, description = "`project_not_found` (also for a project outside the caller's, or this deployment's manager user may not read); `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`usage_unavailable`: no monitor Redis user (or one that may not read the project's `apiusage:` record), the message says how to enable it; or `unreadable_data`", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    call: Admin<act::UsageRead, Query<UsageQuery>>,
) -> Result<Json<UsageOut>> {
    let _reading = state.limits.read(&call.caller.actor)?;
    Ok(Json(usage::usage(&state.store, call.input).await?))
}
