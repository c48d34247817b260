//! `POST /v1/validate-key`.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use validator::Validate;

use super::extract::ValidatedJson;
use super::AppState;
use crate::error::Result;
use crate::validate::{Request, Validated};

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    pub api_key: String,
    /// Scopes this request requires; every one must be granted.
    #[serde(default)]
    #[validate(custom(function = "crate::admin::valid_scopes"))]
    pub scopes: Vec<String>,
    /// The caller's address, for keys bound to networks.
    pub client_ip: Option<IpAddr>,
}

pub async fn validate_key(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<ValidateIn>,
) -> Result<Response> {
    let request = Request {
        api_key: &body.api_key,
        required_scopes: &body.scopes,
        client_ip: body.client_ip,
        origin: None,
    };
    let validated = state.validator.validate(&request).await?;
    let mut response = Json(&validated).into_response();
    rate_headers(response.headers_mut(), &validated);
    Ok(response)
}

/// `X-RateLimit-*` after a success, or `X-Keyward-Failsafe` when the key was
/// accepted unverified.
pub(super) fn rate_headers(headers: &mut HeaderMap, v: &Validated) {
    if v.failsafe {
        headers.insert("x-keyward-failsafe", HeaderValue::from_static("open"));
    } else {
        headers.insert("x-ratelimit-limit", HeaderValue::from(v.rate.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(v.rate.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(v.rate.reset));
    }
}
