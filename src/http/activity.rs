//! `GET /v1/activity`: a project's recent validations and per-minute counts,
//! for the admin console. Behind the admin token like every admin endpoint.

use axum::extract::State;
use axum::Json;

use super::extract::{Admin, ValidatedQuery};
use super::AppState;
use crate::activity::{self, ActivityOut, ActivityQuery};
use crate::error::Result;

pub async fn activity(
    _: Admin,
    State(state): State<AppState>,
    ValidatedQuery(query): ValidatedQuery<ActivityQuery>,
) -> Result<Json<ActivityOut>> {
    Ok(Json(activity::activity(&state.store, query).await?))
}
