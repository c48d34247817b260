//! Admin endpoints. Each takes the `Admin` proof, so none runs without the
//! bearer token. Each carries its OpenAPI operation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToResponse;

use super::extract::{Admin, ValidatedJson, ValidatedQuery};
use super::AppState;
use crate::admin::{
    self, KeyOut, KeyRef, ListOut, ListQuery, MintIn, MintOut, ProjectIn, Revoked, RotateIn,
    RotateOut, UpdateIn,
};
use crate::error::{
    ErrorBody, InvalidRequest, MethodNotAllowed, PayloadTooLarge, Result, Unauthorized, Unavailable,
};
use crate::store::ProjectDoc;

/// Documents what every admin operation (`/v1/activity`'s too) may answer
/// besides its own statuses: 401 from `Admin`, the shared 405, and 503 when
/// Redis cannot answer.
pub(super) fn common_responses(op: &mut Operation) {
    for (status, name) in [
        ("401", Unauthorized::response().0),
        ("405", MethodNotAllowed::response().0),
        ("503", Unavailable::response().0),
    ] {
        op.responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

/// Create a project.
#[utoipa::path(
    post,
    path = "/v1/admin/projects",
    tag = "admin",
    request_body = ProjectIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The project, created", body = ProjectDoc, links(
            ("GetProject" = (operation_id = "get_project", parameters(("project_id" = "$response.body#/project_id")))),
            ("MintKey" = (operation_id = "mint_key", request_body = json!({"project_id": "$response.body#/project_id"}))),
            ("ListKeys" = (operation_id = "list_keys", parameters(("project_id" = "$response.body#/project_id")))),
            ("Activity" = (operation_id = "activity", parameters(("project_id" = "$response.body#/project_id")))),
        )),
        (status = 404, description = "`not_found`: the admin API is off (no admin token configured)", body = ErrorBody),
        (status = 409, description = "`project_exists`; or `unreadable_data`", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn create_project(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<ProjectIn>,
) -> Result<(StatusCode, Json<ProjectDoc>)> {
    let doc = admin::create_project(&state.store, input).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

/// Read a project.
#[utoipa::path(
    get,
    path = "/v1/admin/projects/{project_id}",
    tag = "admin",
    params(("project_id" = String, Path, description = "The project's id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The project", body = ProjectDoc),
        (status = 404, description = "`project_not_found` (also for a project this deployment may not read); `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
    )
)]
pub async fn get_project(
    _: Admin,
    State(state): State<AppState>,
    Path(project_id): Path<String>,
) -> Result<Json<ProjectDoc>> {
    Ok(Json(admin::get_project(&state.store, &project_id).await?))
}

/// Mint a key in a project.
#[utoipa::path(
    post,
    path = "/v1/mint-key",
    tag = "admin",
    request_body = MintIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new key: `api_key` is shown once, here, and stored nowhere", body = MintOut, links(
            ("ValidateKey" = (operation_id = "validate_key", request_body = json!({"api_key": "$response.body#/api_key"}))),
            ("ForwardAuth" = (operation_id = "forward_auth", parameters(("header.Authorization" = "Bearer {$response.body#/api_key}")))),
            ("GetKey" = (operation_id = "get_key", parameters(("project_id" = "$response.body#/project_id"), ("key_id" = "$response.body#/key_id")))),
            ("UpdateKey" = (operation_id = "update_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("RotateKey" = (operation_id = "rotate_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("RevokeKey" = (operation_id = "revoke_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("ListKeys" = (operation_id = "list_keys", parameters(("project_id" = "$response.body#/project_id")))),
        )),
        (status = 404, description = "`project_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn mint_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<MintIn>,
) -> Result<(StatusCode, Json<MintOut>)> {
    let minted = admin::mint(&state.store, &state.hasher, input).await?;
    Ok((StatusCode::CREATED, Json(minted)))
}

/// Revoke a key (sets `disabled: true`).
#[utoipa::path(
    post,
    path = "/v1/revoke-key",
    tag = "admin",
    request_body = KeyRef,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Revoked: from the next validation on, both secrets of the key are refused", body = Revoked),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<KeyRef>,
) -> Result<Json<Revoked>> {
    admin::revoke(&state.store, input).await?;
    Ok(Json(Revoked { revoked: true }))
}

/// List a project's keys, a page at a time (pass `next` as `cursor`).
#[utoipa::path(
    get,
    path = "/v1/list-keys",
    tag = "admin",
    params(ListQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of the project's keys, in key-id order", body = ListOut),
        (status = 404, description = "`project_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    ValidatedQuery(query): ValidatedQuery<ListQuery>,
) -> Result<Json<ListOut>> {
    Ok(Json(admin::list(&state.store, query).await?))
}

/// Read a key.
#[utoipa::path(
    get,
    path = "/v1/get-key",
    tag = "admin",
    params(KeyRef),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key (never a hash)", body = KeyOut),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn get_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedQuery(query): ValidatedQuery<KeyRef>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::get_key(&state.store, query).await?))
}

/// Change a key's properties (never its secret, usage or `disabled`).
#[utoipa::path(
    post,
    path = "/v1/update-key",
    tag = "admin",
    request_body = UpdateIn,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key as `get-key` shows it, after the update", body = KeyOut),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn update_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<UpdateIn>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::update(&state.store, input).await?))
}

/// Give a key a new secret, keeping its id.
#[utoipa::path(
    post,
    path = "/v1/rotate-key",
    tag = "admin",
    request_body = RotateIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new key, shown once; the previous secret validates until `previous_expires_at`", body = RotateOut, links(
            ("ValidateKey" = (operation_id = "validate_key", request_body = json!({"api_key": "$response.body#/api_key"}))),
            ("GetKey" = (operation_id = "get_key", parameters(("project_id" = "$response.body#/project_id"), ("key_id" = "$response.body#/key_id")))),
        )),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`key_disabled`: a revoked key cannot be rotated; or `unreadable_data`", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidRequest),
    )
)]
pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<RotateIn>,
) -> Result<(StatusCode, Json<RotateOut>)> {
    let rotated = admin::rotate(&state.store, &state.hasher, input).await?;
    Ok((StatusCode::CREATED, Json(rotated)))
}
