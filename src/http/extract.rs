//! Extractors whose rejections are our `Error`: validated JSON bodies and
//! queries.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors};

use crate::error::Error;

/// A JSON body: serde first (unknown fields, wrong types), then `validator`.
pub struct ValidatedJson<T>(pub T);

/// A query string: serde first, then `validator`.
pub struct ValidatedQuery<T>(pub T);

fn invalid(errors: ValidationErrors) -> Error {
    let mut fields: Vec<String> = errors
        .field_errors()
        .into_iter()
        .map(
            |(field, errs)| match errs.first().and_then(|e| e.message.as_ref()) {
                Some(message) => format!("{field}: {message}"),
                None => format!("{field}: invalid value"),
            },
        )
        .collect();
    fields.sort();
    Error::InvalidRequest(fields.join("; "))
}

impl<T, S> FromRequest<S> for ValidatedJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) =
            Json::<T>::from_request(req, state)
                .await
                .map_err(|e: JsonRejection| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        Error::PayloadTooLarge
                    } else {
                        Error::InvalidRequest(e.body_text())
                    }
                })?;
        value.validate().map_err(invalid)?;
        Ok(Self(value))
    }
}

impl<T, S> FromRequestParts<S> for ValidatedQuery<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| Error::InvalidRequest(e.body_text()))?;
        value.validate().map_err(invalid)?;
        Ok(Self(value))
    }
}
