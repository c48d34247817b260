//! The one error type, and the one place it becomes an HTTP response.
//!
//! Client errors carry a stable machine `code` and a message that is safe to
//! show. Server-side failures (`Unavailable`, `Internal`) carry detail for
//! operators only: the response gets a fixed message, and the detail rides in
//! a response extension that the logging middleware in `http` writes out, so
//! converting an error has no side effects.
//!
//! The OpenAPI document describes these answers here too: [`ErrorBody`], and
//! one reusable response per kind of error answer (`InvalidKey`,
//! `RateLimited`, ...) with the headers `into_response` sets.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToResponse, ToSchema};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body or query is not what the endpoint takes.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is over the size limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// Any bad API key: malformed, unknown, wrong secret, disabled, expired or
    /// forbidden. Deliberately one variant: the client is not told which.
    #[error("the API key is not valid")]
    InvalidKey,
    /// A valid key that lacks a scope the request requires.
    #[error("the API key lacks a required scope: {required}")]
    InsufficientScope {
        /// The scopes the request required, space-separated.
        required: String,
    },
    /// The request's cost would take the key over a window's limit: its
    /// per-minute limit or one of its plan's `limits` (`limit` is that
    /// window's).
    #[error("rate limit exceeded, retry in {retry_after} s")]
    RateLimited { limit: u64, retry_after: u64 },
    /// Not enough credits left for the request's cost; `retry_after`: the
    /// seconds until they refill, if they do.
    #[error("not enough credits left")]
    CreditsExhausted { retry_after: Option<u64> },
    /// Missing or wrong admin token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// The caller's role does not allow this action in its projects.
    #[error("your role does not allow this action")]
    InsufficientPermission,
    #[error("project not found")]
    ProjectNotFound,
    #[error("key not found")]
    KeyNotFound,
    #[error("operator not found")]
    OperatorNotFound,
    #[error("webhook not found")]
    WebhookNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed for this route")]
    MethodNotAllowed,
    #[error("project already exists")]
    ProjectExists,
    /// The activity read needs a monitor Redis user that may read
    /// `audit:keylookup`; the message says how to configure one.
    #[error("{0}")]
    ActivityUnavailable(&'static str),
    /// The usage read needs a monitor Redis user that may read the
    /// project's usage record; the message says how to configure one.
    #[error("{0}")]
    UsageUnavailable(&'static str),
    /// The operation needs an enabled key.
    #[error("the key is disabled")]
    KeyDisabled,
    /// add-credits cannot apply to the key as it is: unlimited credits, or
    /// a balance the change would take below 0 or past the largest.
    #[error("{0}")]
    CreditsConflict(String),
    /// What keyward found in Redis is not what it can read (the log names
    /// the Redis key).
    #[error("stored data for this request cannot be read; see the service log")]
    Unreadable,
    /// Redis could not answer (down, slow, out of memory): fail closed.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A caller reached one of the admin API's limits (`setting`, at
    /// `limit`): its writes per minute, or its audit reads at once.
    #[error("{setting} ({limit}) reached, retry in {retry_after} s")]
    AdminLimited {
        setting: &'static str,
        limit: u64,
        retry_after: u64,
    },
    /// A quota (`setting`, at `limit`) is full: nothing more of its kind
    /// can be made until one is deleted.
    #[error("{setting} ({limit}) reached{what}: delete one first")]
    QuotaReached {
        setting: &'static str,
        limit: u64,
        /// What the quota is of, e.g. ` for project alpha`, or empty.
        what: String,
    },
    /// Too many first-time verifications are queued; try again shortly.
    #[error("too many verifications in progress")]
    Busy,
    /// A bug or an impossible state; detail is for operators only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The body of every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_key", "message": "the API key is not valid"}}))]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What went wrong: a stable machine `code` and a message safe to show.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// The stable machine code; each response documents which it can carry.
    #[schema(value_type = String, example = "invalid_key")]
    #[schema(
        pattern = "^(invalid_request|payload_too_large|invalid_key|insufficient_scope|rate_limited|credits_exhausted|unauthorized|insufficient_permission|project_not_found|key_not_found|operator_not_found|webhook_not_found|not_found|method_not_allowed|project_exists|activity_unavailable|usage_unavailable|key_disabled|credits_conflict|unreadable_data|admin_rate_limited|quota_reached|unavailable|busy|internal)$"
    )]
    pub code: &'static str,
    /// Human-readable; never carries a key, a secret or server-side detail.
    pub message: String,
}

/// The operator-only detail of an error, attached to the response for the
/// logging middleware. Never sent to the client.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidKey | Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::InsufficientScope { .. } | Error::InsufficientPermission => {
                StatusCode::FORBIDDEN
            }
            Error::RateLimited { .. }
            | Error::CreditsExhausted { .. }
            | Error::AdminLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ProjectNotFound
            | Error::KeyNotFound
            | Error::OperatorNotFound
            | Error::WebhookNotFound
            | Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::ProjectExists
            | Error::KeyDisabled
            | Error::CreditsConflict(_)
            | Error::Unreadable
            | Error::ActivityUnavailable(_)
            | Error::UsageUnavailable(_)
            | Error::QuotaReached { .. } => StatusCode::CONFLICT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) | Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::PayloadTooLarge => "payload_too_large",
            Error::InvalidKey => "invalid_key",
            Error::InsufficientScope { .. } => "insufficient_scope",
            Error::RateLimited { .. } => "rate_limited",
            Error::CreditsExhausted { .. } => "credits_exhausted",
            Error::Unauthorized => "unauthorized",
            Error::InsufficientPermission => "insufficient_permission",
            Error::ProjectNotFound => "project_not_found",
            Error::KeyNotFound => "key_not_found",
            Error::OperatorNotFound => "operator_not_found",
            Error::WebhookNotFound => "webhook_not_found",
            Error::RouteNotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::ProjectExists => "project_exists",
            Error::ActivityUnavailable(_) => "activity_unavailable",
            Error::UsageUnavailable(_) => "usage_unavailable",
            Error::KeyDisabled => "key_disabled",
            Error::CreditsConflict(_) => "credits_conflict",
            Error::Unreadable => "unreadable_data",
            Error::AdminLimited { .. } => "admin_rate_limited",
            Error::QuotaReached { .. } => "quota_reached",
            Error::Unavailable(_) => "unavailable",
            Error::Busy => "busy",
            Error::Internal(_) => "internal",
        }
    }

    /// What the client may read. Server-side detail never leaves the process.
    fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => "the key store is unavailable, try again".into(),
            Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message: self.public_message(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::RateLimited { limit, retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                headers.insert("x-ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
                headers.insert("x-ratelimit-reset", HeaderValue::from(*retry_after));
            }
            Error::CreditsExhausted {
                retry_after: Some(retry_after),
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::Busy | Error::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            Error::AdminLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::InvalidKey => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="keyward""#),
                );
            }
            Error::InsufficientScope { required } => {
                // Scopes are validated to `[A-Za-z0-9_.:/*-]`: always a valid value.
                let value = format!(r#"Bearer error="insufficient_scope", scope="{required}""#);
                if let Ok(value) = HeaderValue::try_from(value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        if let Error::Unavailable(detail) | Error::Internal(detail) = self {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

// The reusable error responses of the OpenAPI document (operations name
// them with `response = ...`): each is an `ErrorBody` with the headers
// `into_response` sets for it; the description says which codes it carries.

/// A reusable response: its name, and the response.
type Documented = (&'static str, RefOr<utoipa::openapi::Response>);

/// An `ErrorBody` answer with these headers (name, schema, description).
fn error_response<const N: usize>(
    name: &'static str,
    description: &str,
    headers: [(&str, RefOr<Schema>, &str); N],
) -> Documented {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", body);
    for (header, schema, description) in headers {
        let header_object = HeaderBuilder::new()
            .schema(schema)
            .description(Some(description))
            .build();
        response = response.header(header, header_object);
    }
    (name, response.build().into())
}

/// `422 invalid_request`.
pub struct InvalidRequestResponse;

impl ToResponse<'static> for InvalidRequestResponse {
    fn response() -> Documented {
        let description =
            "`invalid_request`: the body, query or a header is not what the endpoint\n\
            takes (unknown fields, wrong types, values out of range, a body that is\n\
            not JSON).";
        error_response("InvalidRequest", description, [])
    }
}

/// `413 payload_too_large`.
pub struct PayloadTooLargeResponse;

impl ToResponse<'static> for PayloadTooLargeResponse {
    fn response() -> Documented {
        let description = "`payload_too_large`: the body is over 64 KiB.";
        error_response("PayloadTooLarge", description, [])
    }
}

/// `401 invalid_key`.
pub struct InvalidKeyResponse;

impl ToResponse<'static> for InvalidKeyResponse {
    fn response() -> Documented {
        let description = "`invalid_key`: malformed, unknown, wrong secret, disabled, expired,\n\
            outside the key's networks, unreadable, or of a project this deployment\n\
            may not read. The answer never says which; the audit entry does.";
        let www_authenticate = "`Bearer realm=\"keyward\"`";
        error_response(
            "InvalidKey",
            description,
            [("WWW-Authenticate", String::schema(), www_authenticate)],
        )
    }
}

/// `403 insufficient_scope`.
pub struct InsufficientScopeResponse;

impl ToResponse<'static> for InsufficientScopeResponse {
    fn response() -> Documented {
        let description = "`insufficient_scope`: the key is valid but lacks a scope the request\n\
            requires (does not count against the rate limit).";
        let www_authenticate = "`Bearer error=\"insufficient_scope\", scope=\"<required scopes>\"`";
        error_response(
            "InsufficientScope",
            description,
            [("WWW-Authenticate", String::schema(), www_authenticate)],
        )
    }
}

/// `429 rate_limited`.
pub struct RateLimitedResponse;

impl ToResponse<'static> for RateLimitedResponse {
    fn response() -> Documented {
        let description = "`rate_limited`: the request's cost would take the key over its\n\
            per-minute limit or one of its `limits` (the headers are that window's);\n\
            `credits_exhausted`: the key has fewer credits left than the cost (only\n\
            `Retry-After`, to the next refill, and only when the credits refill).";
        error_response(
            "RateLimited",
            description,
            [
                (
                    "Retry-After",
                    u64::schema(),
                    "Seconds until the window resets, or until the credits refill",
                ),
                (
                    "X-RateLimit-Limit",
                    u64::schema(),
                    "The limit of the window that refused the request",
                ),
                ("X-RateLimit-Remaining", u64::schema(), "Always 0 here"),
                (
                    "X-RateLimit-Reset",
                    u64::schema(),
                    "Seconds until the window resets",
                ),
            ],
        )
    }
}

/// `401 unauthorized`.
pub struct UnauthorizedResponse;

/// `403 insufficient_permission`.
pub struct InsufficientPermissionResponse;

impl ToResponse<'static> for InsufficientPermissionResponse {
    fn response() -> Documented {
        let description = "`insufficient_permission`: the caller's role does not allow this\n\
            action within its projects (a project outside them answers as one\n\
            that does not exist, `404`).";
        error_response("Forbidden", description, [])
    }
}

impl ToResponse<'static> for UnauthorizedResponse {
    fn response() -> Documented {
        let description = "`unauthorized`: the bearer token is missing, wrong, or an operator\n\
            token that is unknown, revoked or expired.";
        error_response(
            "Unauthorized",
            description,
            [("WWW-Authenticate", String::schema(), "`Bearer`")],
        )
    }
}

/// `405 method_not_allowed`.
pub struct MethodNotAllowedResponse;

impl ToResponse<'static> for MethodNotAllowedResponse {
    fn response() -> Documented {
        let description = "`method_not_allowed`: this path answers other methods only.";
        error_response(
            "MethodNotAllowed",
            description,
            [("Allow", String::schema(), "The methods this path answers")],
        )
    }
}

/// `429 admin_rate_limited`.
pub struct AdminLimitedResponse;

impl ToResponse<'static> for AdminLimitedResponse {
    fn response() -> Documented {
        let description = "`admin_rate_limited`: the caller reached one of the admin API's\n\
            limits, named in the message: an operator's writes per minute\n\
            (`KEYWARD_ADMIN_WRITES_PER_MINUTE`), or its audit and activity reads at\n\
            once (`KEYWARD_ADMIN_READS_AT_ONCE`).";
        error_response(
            "AdminLimited",
            description,
            [(
                "Retry-After",
                u64::schema(),
                "Seconds to wait before retrying",
            )],
        )
    }
}

/// `503 unavailable` or `busy`.
pub struct UnavailableResponse;

impl ToResponse<'static> for UnavailableResponse {
    fn response() -> Documented {
        let description = "`unavailable`: Redis cannot answer (the service fails closed), or the\n\
            request took longer than its deadline; `busy`: too many first-time\n\
            Argon2id verifications are queued.";
        error_response(
            "Unavailable",
            description,
            [(
                "Retry-After",
                u64::schema(),
                "Seconds to wait before retrying (1)",
            )],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;

    /// The OpenAPI document's `code` pattern lists every code there is.
    #[test]
    fn the_documented_code_pattern_lists_every_code() {
        let RefOr::T(Schema::Object(object)) = <ErrorObject as utoipa::PartialSchema>::schema()
        else {
            panic!("ErrorObject is an object schema");
        };
        let Some(RefOr::T(Schema::Object(code))) = object.properties.get("code") else {
            panic!("ErrorObject has a code");
        };
        let pattern = code.pattern.clone().unwrap();
        let listed: Vec<&str> = pattern
            .strip_prefix("^(")
            .and_then(|p| p.strip_suffix(")$"))
            .unwrap()
            .split('|')
            .collect();
        let every = [
            Error::InvalidRequest(String::new()),
            Error::PayloadTooLarge,
            Error::InvalidKey,
            Error::InsufficientScope {
                required: String::new(),
            },
            Error::RateLimited {
                limit: 1,
                retry_after: 1,
            },
            Error::CreditsExhausted { retry_after: None },
            Error::Unauthorized,
            Error::InsufficientPermission,
            Error::ProjectNotFound,
            Error::KeyNotFound,
            Error::OperatorNotFound,
            Error::WebhookNotFound,
            Error::RouteNotFound,
            Error::MethodNotAllowed,
            Error::ProjectExists,
            Error::ActivityUnavailable(""),
            Error::UsageUnavailable(""),
            Error::KeyDisabled,
            Error::CreditsConflict(String::new()),
            Error::Unreadable,
            Error::AdminLimited {
                setting: "",
                limit: 1,
                retry_after: 1,
            },
            Error::QuotaReached {
                setting: "",
                limit: 1,
                what: String::new(),
            },
            Error::Unavailable(String::new()),
            Error::Busy,
            Error::Internal(String::new()),
        ];
        // No wildcard: a new variant fails to compile here until it is listed above.
        for e in &every {
            match e {
                Error::InvalidRequest(_)
                | Error::PayloadTooLarge
                | Error::InvalidKey
                | Error::InsufficientScope { .. }
                | Error::RateLimited { .. }
                | Error::CreditsExhausted { .. }
                | Error::Unauthorized
                | Error::InsufficientPermission
                | Error::ProjectNotFound
                | Error::KeyNotFound
                | Error::OperatorNotFound
                | Error::WebhookNotFound
                | Error::RouteNotFound
                | Error::MethodNotAllowed
                | Error::ProjectExists
                | Error::ActivityUnavailable(_)
                | Error::UsageUnavailable(_)
                | Error::KeyDisabled
                | Error::CreditsConflict(_)
                | Error::Unreadable
                | Error::AdminLimited { .. }
                | Error::QuotaReached { .. }
                | Error::Unavailable(_)
                | Error::Busy
                | Error::Internal(_) => {}
            }
        }
        let codes: Vec<&str> = every.iter().map(Error::code).collect();
        assert_eq!(listed, codes);
    }
}
