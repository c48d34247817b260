//! Admin endpoints: projects and keys. Each takes `access::Admin` for its
//! action, so none runs for a caller that may not do it. Each carries its
//! OpenAPI operation.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToResponse;

use super::access::{Admin, Body, Params, Query};
use super::AppState;
use super::ShownOnce;
use crate::access::act;
use crate::admin::{
    self, AddCreditsIn, AddCreditsOut, KeyOut, KeyRef, ListOut, ListQuery, MintIn, MintOut,
    ProjectIn, ProjectPath, ProjectsOut, ProjectsQuery, Revoked, RotateIn, RotateOut, UpdateIn,
};
use crate::error::{
    AdminLimitedResponse, ErrorBody, InsufficientPermissionResponse, InvalidRequestResponse,
    MethodNotAllowedResponse, PayloadTooLargeResponse, Result, UnauthorizedResponse,
    UnavailableResponse,
};
use crate::page::Page;
use crate::store::ProjectDoc;

/// Documents what every admin operation may answer besides its own
/// statuses: 401 and 403 from `Admin`, the shared 405, 429 from the
/// admin limits (`limits`), and 503 when Redis
/// cannot answer (or the call's audit entry cannot be written).
pub(super) fn common_responses(op: &mut Operation) {
    for (status, name) in [
        ("401", UnauthorizedResponse::response().0),
        ("403", InsufficientPermissionResponse::response().0),
        ("405", MethodNotAllowedResponse::response().0),
        ("429", AdminLimitedResponse::response().0),
        ("503", UnavailableResponse::response().0),
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
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn create_project(
    State(state): State<AppState>,
    call: Admin<act::ProjectCreate, Body<ProjectIn>>,
) -> Result<(StatusCode, Json<ProjectDoc>)> {
    let doc = admin::create_project(&state.store, call.input).await?;
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
    State(state): State<AppState>,
    call: Admin<act::ProjectRead, Params<ProjectPath>>,
) -> Result<Json<ProjectDoc>> {
    let project_id = &call.input.project_id;
    Ok(Json(admin::get_project(&state.store, project_id).await?))
}

/// Mint a key in a project.
#[utoipa::path(
    post,
    path = "/v1/mint-key",
    tag = "admin",
    request_body = MintIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new key: `api_key` is shown once, here, and stored nowhere", body = MintOut, headers(("Cache-Control" = String, description = "`no-store`: the secret in the body is shown once, and no cache may keep it")), links(
            ("ValidateKey" = (operation_id = "validate_key", request_body = json!({"api_key": "$response.body#/api_key"}))),
            ("ForwardAuth" = (operation_id = "forward_auth", parameters(("header.Authorization" = "Bearer {$response.body#/api_key}")))),
            ("GetKey" = (operation_id = "get_key", parameters(("project_id" = "$response.body#/project_id"), ("key_id" = "$response.body#/key_id")))),
            ("UpdateKey" = (operation_id = "update_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("RotateKey" = (operation_id = "rotate_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("RevokeKey" = (operation_id = "revoke_key", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("AddCredits" = (operation_id = "add_credits", request_body = json!({"project_id": "$response.body#/project_id", "key_id": "$response.body#/key_id"}))),
            ("ListKeys" = (operation_id = "list_keys", parameters(("project_id" = "$response.body#/project_id")))),
        )),
        (status = 404, description = "`project_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn mint_key(
    State(state): State<AppState>,
    call: Admin<act::KeyMint, Body<MintIn>>,
) -> Result<ShownOnce<MintOut>> {
    let note = call.note();
    let minted = admin::mint(&state.store, &state.hasher, call.input).await?;
    note.made_key(&minted.key_id);
    Ok(ShownOnce(minted))
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
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    call: Admin<act::KeyRevoke, Body<KeyRef>>,
) -> Result<Json<Revoked>> {
    admin::revoke(&state.store, call.input).await?;
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
        (status = 200, description = "One page of the project's keys, in key-id order", body = Page<KeyOut>),
        (status = 404, description = "`project_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    call: Admin<act::KeyList, Query<ListQuery>>,
) -> Result<Json<ListOut>> {
    Ok(Json(admin::list(&state.store, call.input).await?))
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
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn get_key(
    State(state): State<AppState>,
    call: Admin<act::KeyRead, Query<KeyRef>>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::get_key(&state.store, call.input).await?))
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
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn update_key(
    State(state): State<AppState>,
    call: Admin<act::KeyUpdate, Body<UpdateIn>>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::update(&state.store, call.input).await?))
}

/// Give a key a new secret, keeping its id.
#[utoipa::path(
    post,
    path = "/v1/rotate-key",
    tag = "admin",
    request_body = RotateIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new key, shown once; the previous secret validates until `previous_expires_at`", body = RotateOut, headers(("Cache-Control" = String, description = "`no-store`: the secret in the body is shown once, and no cache may keep it")), links(
            ("ValidateKey" = (operation_id = "validate_key", request_body = json!({"api_key": "$response.body#/api_key"}))),
            ("GetKey" = (operation_id = "get_key", parameters(("project_id" = "$response.body#/project_id"), ("key_id" = "$response.body#/key_id")))),
        )),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`key_disabled`: a revoked key cannot be rotated; or `unreadable_data`", body = ErrorBody),
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    call: Admin<act::KeyRotate, Body<RotateIn>>,
) -> Result<ShownOnce<RotateOut>> {
    let rotated = admin::rotate(&state.store, &state.hasher, call.input).await?;
    Ok(ShownOnce(rotated))
}

/// Add credits to a key's balance, or take some away.
#[utoipa::path(
    post,
    path = "/v1/add-credits",
    tag = "admin",
    request_body = AddCreditsIn,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The balance after the change (of the current refill interval, for credits that refill)", body = AddCreditsOut),
        (status = 404, description = "`key_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`credits_conflict`: the key has no credits (unlimited: set them with update-key), or the change would leave fewer than 0 credits or more than 9223372036854775807 (nothing changes); `unreadable_data`: what Redis holds for it cannot be read (the log names the Redis key)", body = ErrorBody),
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn add_credits(
    State(state): State<AppState>,
    call: Admin<act::KeyAddCredits, Body<AddCreditsIn>>,
) -> Result<Json<AddCreditsOut>> {
    Ok(Json(admin::add_credits(&state.store, call.input).await?))
}

/// List the projects the caller may see, a page at a time (pass `next` as
/// `cursor`).
#[utoipa::path(
    get,
    path = "/v1/admin/projects",
    tag = "admin",
    params(ProjectsQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of the caller's projects, in id order: for a caller of every project (`[\"*\"]`, or an owner), every project created through this deployment's admin API or read by it since; otherwise those of its list that exist", body = Page<ProjectDoc>),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn list_projects(
    State(state): State<AppState>,
    call: Admin<act::ProjectList, Query<ProjectsQuery>>,
) -> Result<Json<ProjectsOut>> {
    let page = admin::list_projects(&state.store, &call.caller, call.input).await?;
    Ok(Json(page))
}
