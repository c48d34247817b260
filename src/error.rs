//! The one error type, and the one place it becomes an HTTP response.
//!
//! Client errors carry a stable machine `code` and a message that is safe to
//! show. Server-side failures (`Unavailable`, `Internal`) carry detail for
//! operators only: the response gets a fixed message, and the detail rides in
//! a response extension that the logging middleware in `http` writes out, so
//! converting an error has no side effects.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

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
    /// The key is over its per-minute limit.
    #[error("rate limit exceeded, retry in {retry_after} s")]
    RateLimited { limit: u64, retry_after: u64 },
    /// Missing or wrong admin token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    #[error("project not found")]
    ProjectNotFound,
    #[error("key not found")]
    KeyNotFound,
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
    /// The operation needs an enabled key.
    #[error("the key is disabled")]
    KeyDisabled,
    /// What keyward found in Redis is not what it can read (the log names
    /// the Redis key).
    #[error("stored data for this request cannot be read; see the service log")]
    Unreadable,
    /// Redis could not answer (down, slow, out of memory): fail closed.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
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
        pattern = "^(invalid_request|payload_too_large|invalid_key|insufficient_scope|rate_limited|unauthorized|project_not_found|key_not_found|not_found|method_not_allowed|project_exists|activity_unavailable|key_disabled|unreadable_data|unavailable|busy|internal)$"
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
            Error::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ProjectNotFound | Error::KeyNotFound | Error::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            Error::ProjectExists
            | Error::KeyDisabled
            | Error::Unreadable
            | Error::ActivityUnavailable(_) => StatusCode::CONFLICT,
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
            Error::Unauthorized => "unauthorized",
            Error::ProjectNotFound => "project_not_found",
            Error::KeyNotFound => "key_not_found",
            Error::RouteNotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::ProjectExists => "project_exists",
            Error::ActivityUnavailable(_) => "activity_unavailable",
            Error::KeyDisabled => "key_disabled",
            Error::Unreadable => "unreadable_data",
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
            Error::Busy | Error::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
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
            Error::Unauthorized,
            Error::ProjectNotFound,
            Error::KeyNotFound,
            Error::RouteNotFound,
            Error::MethodNotAllowed,
            Error::ProjectExists,
            Error::ActivityUnavailable(""),
            Error::KeyDisabled,
            Error::Unreadable,
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
                | Error::Unauthorized
                | Error::ProjectNotFound
                | Error::KeyNotFound
                | Error::RouteNotFound
                | Error::MethodNotAllowed
                | Error::ProjectExists
                | Error::ActivityUnavailable(_)
                | Error::KeyDisabled
                | Error::Unreadable
                | Error::Unavailable(_)
                | Error::Busy
                | Error::Internal(_) => {}
            }
        }
        let codes: Vec<&str> = every.iter().map(Error::code).collect();
        assert_eq!(listed, codes);
    }
}
