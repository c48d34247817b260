//! Health, readiness, metrics and the OpenAPI document.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{Error, MethodNotAllowedResponse, Result, UnavailableResponse};

/// `/health` and `/ready`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/health`) or `ready` (`/ready`).
    status: &'static str,
}

/// 200 while Redis answers this deployment's validator user, else 503.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses(
        (status = 200, description = "Redis answers the validator user", body = Status, example = json!({"status": "ok"})),
        (status = 405, response = MethodNotAllowedResponse),
        (status = 503, response = UnavailableResponse),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Json<Status>> {
    state.store.ping().await?;
    Ok(Json(Status { status: "ok" }))
}

/// Ready to serve: Redis answers with this deployment's credentials.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses(
        (status = 200, description = "Redis answers every user this deployment is configured with", body = Status, example = json!({"status": "ready"})),
        (status = 405, response = MethodNotAllowedResponse),
        (status = 503, response = UnavailableResponse),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>> {
    state.store.ping_all().await?;
    Ok(Json(Status { status: "ready" }))
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
        (status = 405, response = MethodNotAllowedResponse),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> String {
    crate::telemetry::render(&state.metrics)
}

/// The served bytes of the document, built once.
static DOCUMENT: LazyLock<Result<String, String>> = LazyLock::new(|| {
    super::openapi()
        .and_then(|doc| serde_json::to_string(&doc))
        .map_err(|e| e.to_string())
});

/// `GET /openapi.json`: this document. No authentication: it holds no secret.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this service", content_type = "application/json", body = Object),
        (status = 405, response = MethodNotAllowedResponse),
    )
)]
pub async fn openapi() -> Response {
    match &*DOCUMENT {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        Err(e) => Error::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}
