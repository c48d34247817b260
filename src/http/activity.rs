//! `GET /v1/activity`: a project's recent validations and per-minute counts,
//! for the admin console. A viewer's action, like every read.

use axum::extract::State;
use axum::Json;

use super::access::{Admin, Query};
use super::AppState;
use crate::access::act;
use crate::activity::{self, ActivityOut, ActivityQuery};
use crate::error::{ErrorBody, InvalidRequestResponse, Result};

/// A project's validations over the last hour: the most recent ones, and
/// per-minute counts by result (for the admin console).
#[utoipa::path(
    get,
    path = "/v1/activity",
    tag = "admin",
    params(ActivityQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The project's activity", body = ActivityOut),
        (status = 404, description = "`project_not_found` (also for a project this deployment's manager user may not read); `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`activity_unavailable`: no monitor Redis user (or one that may not read `audit:keylookup`), the message says how to enable it; or `unreadable_data`", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn activity(
    State(state): State<AppState>,
    call: Admin<act::ActivityRead, Query<ActivityQuery>>,
) -> Result<Json<ActivityOut>> {
    let _reading = state.limits.read(&call.caller.actor)?;
    Ok(Json(activity::activity(&state.store, call.input).await?))
}
