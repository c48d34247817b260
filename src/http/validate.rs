//! `POST /v1/validate-key`.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use validator::Validate;

use super::extract::ValidatedJson;
use super::AppState;
use crate::error::Result;

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    pub api_key: String,
}

pub async fn validate_key(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<ValidateIn>,
) -> Result<Response> {
    let validated = state.validator.validate(&body.api_key).await?;
    let rate = validated.rate;
    let failsafe = validated.failsafe;
    let mut response = Json(validated).into_response();
    let headers = response.headers_mut();
    if failsafe {
        headers.insert("x-keyward-failsafe", HeaderValue::from_static("open"));
    } else {
        headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
    }
    Ok(response)
}
