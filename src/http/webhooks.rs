//! Webhook endpoints: register, list, delete, test, and read their recent
//! deliveries. A caller sees and manages only endpoints whose projects it
//! covers (see `webhook`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::access::{Admin, Body, Params, Query};
use super::AppState;
use super::ShownOnce;
use crate::access::act;
use crate::error::{ErrorBody, InvalidRequestResponse, PayloadTooLargeResponse, Result};
use crate::page::Page;
use crate::webhook::WebhookOut;
use crate::webhook::{
    self, DeliveriesOut, DeliveriesQuery, TestQueued, WebhookCreated, WebhookDeleted, WebhookIn,
    WebhookPath, WebhooksOut, WebhooksQuery,
};

/// Register an endpoint: events of the given types and projects are posted
/// to it, signed (Standard Webhooks).
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks",
    tag = "webhooks",
    request_body = WebhookIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The endpoint: `secret` is shown once, here", body = WebhookCreated, headers(("Cache-Control" = String, description = "`no-store`: the secret in the body is shown once, and no cache may keep it"))),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`quota_reached`: the deployment has `KEYWARD_WEBHOOKS_MAX` endpoints, or one of the projects is named by `KEYWARD_WEBHOOKS_PER_PROJECT` (the message names which)", body = ErrorBody),
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    call: Admin<act::WebhookCreate, Body<WebhookIn>>,
) -> Result<ShownOnce<WebhookCreated>> {
    let created = webhook::create(
        &state.store,
        &call.caller,
        call.input,
        state.webhook_allow_private,
        &state.limits,
    )
    .await?;
    Ok(ShownOnce(created))
}

/// List the endpoints of the caller's projects (never a secret).
#[utoipa::path(
    get,
    path = "/v1/admin/webhooks",
    tag = "webhooks",
    params(WebhooksQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of the endpoints whose projects the caller covers, in id order", body = Page<WebhookOut>),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    call: Admin<act::WebhookList, Query<WebhooksQuery>>,
) -> Result<Json<WebhooksOut>> {
    let out = webhook::list(&state.store, &call.caller, call.input).await?;
    Ok(Json(out))
}

/// Delete an endpoint: nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/v1/admin/webhooks/{webhook_id}",
    tag = "webhooks",
    params(("webhook_id" = inline(crate::webhook::WebhookIdDoc), Path, description = "The endpoint's id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Deleted", body = WebhookDeleted),
        (status = 404, description = "`webhook_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    call: Admin<act::WebhookDelete, Params<WebhookPath>>,
) -> Result<Json<WebhookDeleted>> {
    let deleted = webhook::delete(&state.store, &call.caller, &call.input.webhook_id).await?;
    Ok(Json(deleted))
}

/// Send a `webhook.test` event to the endpoint (no body).
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/{webhook_id}/test",
    tag = "webhooks",
    params(("webhook_id" = inline(crate::webhook::WebhookIdDoc), Path, description = "The endpoint's id")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Queued: delivered like any other message (see its deliveries)", body = TestQueued),
        (status = 404, description = "`webhook_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
    )
)]
pub async fn test_webhook(
    State(state): State<AppState>,
    call: Admin<act::WebhookTest, Params<WebhookPath>>,
) -> Result<(StatusCode, Json<TestQueued>)> {
    let queued = webhook::test(&state.store, &call.caller, &call.input.webhook_id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// The endpoint's recent delivery attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/webhooks/{webhook_id}/deliveries",
    tag = "webhooks",
    params(
        ("webhook_id" = inline(crate::webhook::WebhookIdDoc), Path, description = "The endpoint's id"),
        DeliveriesQuery,
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Up to `limit` attempts (the last 500 are kept)", body = DeliveriesOut),
        (status = 404, description = "`webhook_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    call: Admin<act::WebhookDeliveries, Query<DeliveriesQuery>>,
) -> Result<Json<DeliveriesOut>> {
    let out = webhook::deliveries(&state.store, &call.caller, &webhook_id, call.input).await?;
    Ok(Json(out))
}
