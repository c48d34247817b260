//! Health, readiness and metrics.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::Result;

/// 200 while Redis answers this deployment's validator user, else 503.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses(
        (status = 200, description = "Redis answers the validator user", body = crate::openapi::Status, example = json!({"status": "ok"})),
        (status = 405, response = crate::openapi::MethodNotAllowed),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Json<Value>> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Ready to serve: Redis answers with this deployment's credentials.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses(
        (status = 200, description = "Redis answers every user this deployment is configured with", body = crate::openapi::Status, example = json!({"status": "ready"})),
        (status = 405, response = crate::openapi::MethodNotAllowed),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>> {
    state.store.ping_all().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus text format. On the main listener unless
/// `KEYWARD_METRICS_LISTEN` moves it to a private one (then it is `404` here).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`: served on `KEYWARD_METRICS_LISTEN` instead", body = crate::error::ErrorBody),
        (status = 405, response = crate::openapi::MethodNotAllowed),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
