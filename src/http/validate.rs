//! `POST /v1/validate-key`.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use validator::Validate;

use super::extract::ValidatedJson;
use super::AppState;
use crate::error::Result;
use crate::validate::{Request, Validated};

/// `POST /v1/validate-key`'s body.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    /// The presented key, `sk-proj.<project_id>.<key_id>.<secret>` (anything
    /// else is simply not valid: 401).
    #[schema(example = "sk-proj.alpha.k_3xAmPlE0key1.<secret>")]
    pub api_key: String,
    /// Scopes this request requires; every one must be granted.
    #[serde(default)]
    #[validate(custom(function = "crate::scope::valid_scopes"))]
    #[schema(value_type = Vec<crate::scope::ScopeDoc>, max_items = 64)]
    pub scopes: Vec<String>,
    /// The caller's address, for keys bound to networks.
    #[schema(inline, value_type = Option<crate::net::IpDoc>)]
    pub client_ip: Option<IpAddr>,
    // What the request weighs (described, with its range, by
    // `plan::cost_schema`).
    #[serde(default = "one", deserialize_with = "crate::plan::whole")]
    #[validate(range(max = crate::plan::MAX_COST))]
    #[schema(schema_with = crate::plan::cost_schema)]
    pub cost: u64,
}

fn one() -> u64 {
    1
}

/// Validate a key.
///
/// The same pipeline as `/v1/auth` (audit entry, rate limit, cache, failure
/// behaviour): whether the key is valid, for which project and key, and
/// with which scopes.
#[utoipa::path(
    post,
    path = "/v1/validate-key",
    tag = "validation",
    request_body = ValidateIn,
    responses(
        (status = 200, description = "The key is valid (and grants every required scope)", body = Validated, headers(
            ("X-RateLimit-Limit" = u64, description = "The limit of the key's window nearest to exhaustion (its minute's, or one of its `limits`)"),
            ("X-RateLimit-Remaining" = u64, description = "What is left in that window"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until that window resets"),
            ("X-Keyward-Failsafe" = String, description = "`open`: accepted under `KEYWARD_FAILSAFE=open` without a complete check, because Redis did not answer a read a pass needs or did not take its audit entry (no read refused the key); not audited, and no `X-RateLimit-*` headers"),
        )),
        (status = 401, response = crate::error::InvalidKeyResponse),
        (status = 403, response = crate::error::InsufficientScopeResponse),
        (status = 405, response = crate::error::MethodNotAllowedResponse),
        (status = 413, response = crate::error::PayloadTooLargeResponse),
        (status = 422, response = crate::error::InvalidRequestResponse),
        (status = 429, response = crate::error::RateLimitedResponse),
        (status = 503, response = crate::error::UnavailableResponse),
    )
)]
pub async fn validate_key(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<ValidateIn>,
) -> Result<Response> {
    let request = Request {
        api_key: &body.api_key,
        required_scopes: &body.scopes,
        client_ip: body.client_ip,
        origin: None,
        cost: body.cost,
    };
    let validated = state.validator.validate(&request).await?;
    let mut response = Json(&validated).into_response();
    rate_headers(response.headers_mut(), &validated);
    Ok(response)
}

/// `X-RateLimit-*` after a success, or `X-Keyward-Failsafe` when the key was
/// accepted under the failsafe without a complete check.
/// (Names made once: a `&str` name is copied into each response.)
pub(super) fn rate_headers(headers: &mut HeaderMap, v: &Validated) {
    const FAILSAFE: HeaderName = HeaderName::from_static("x-keyward-failsafe");
    const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    if v.failsafe {
        headers.insert(FAILSAFE, HeaderValue::from_static("open"));
    } else {
        headers.insert(LIMIT, HeaderValue::from(v.rate.limit));
        headers.insert(REMAINING, HeaderValue::from(v.rate.remaining));
        headers.insert(RESET, HeaderValue::from(v.rate.reset));
    }
}
