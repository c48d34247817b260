//! Health, readiness and metrics.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::Result;

/// 200 while Redis answers this deployment's validator user, else 503.
pub async fn health(State(state): State<AppState>) -> Result<Json<Value>> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Ready to serve: Redis answers with this deployment's credentials.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>> {
    state.store.ping_all().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
