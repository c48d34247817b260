//! Operators, `whoami`, the catalog and the admin audit trail: owners
//! manage operators; any caller may ask who it is, what this keyward offers
//! (roles, event types), and read the trail of its projects.

use axum::extract::State;
use axum::Json;

use super::access::{Admin, Body, Nothing, Params, Query};
use super::AppState;
use super::ShownOnce;
use crate::access::act;
use crate::error::{ErrorBody, InvalidRequestResponse, PayloadTooLargeResponse, Result};
use crate::operators::OperatorOut;
use crate::operators::{
    self, Catalog, OperatorCreated, OperatorIn, OperatorPath, OperatorRevoked, OperatorsOut,
    OperatorsQuery, Whoami,
};
use crate::page::Page;
use crate::trail::AuditItem;
use crate::trail::{self, AuditOut, AuditQuery};

/// Create an operator (owners only).
#[utoipa::path(
    post,
    path = "/v1/admin/operators",
    tag = "operators",
    request_body = OperatorIn,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new operator: `token` is shown once, here, and stored nowhere (only its SHA-256 digest)", body = OperatorCreated, headers(("Cache-Control" = String, description = "`no-store`: the secret in the body is shown once, and no cache may keep it"))),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 413, response = PayloadTooLargeResponse),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn create_operator(
    State(state): State<AppState>,
    call: Admin<act::OperatorCreate, Body<OperatorIn>>,
) -> Result<ShownOnce<OperatorCreated>> {
    let note = call.note();
    let created = operators::create(&state.store, &call.caller, call.input).await?;
    note.made_operator(&created.operator_id);
    Ok(ShownOnce(created))
}

/// List operators, a page at a time (owners only; never a token or hash).
#[utoipa::path(
    get,
    path = "/v1/admin/operators",
    tag = "operators",
    params(OperatorsQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of this deployment's operators, in id order, revoked ones included", body = Page<OperatorOut>),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn list_operators(
    State(state): State<AppState>,
    call: Admin<act::OperatorList, Query<OperatorsQuery>>,
) -> Result<Json<OperatorsOut>> {
    Ok(Json(operators::list(&state.store, call.input).await?))
}

/// Revoke an operator (owners only; no body): its token is refused from its
/// next call on, on every instance.
#[utoipa::path(
    post,
    path = "/v1/admin/operators/{operator_id}/revoke",
    tag = "operators",
    params(("operator_id" = inline(crate::access::OperatorIdDoc), Path, description = "The operator's id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Revoked", body = OperatorRevoked),
        (status = 404, description = "`operator_not_found`; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
    )
)]
pub async fn revoke_operator(
    State(state): State<AppState>,
    call: Admin<act::OperatorRevoke, Params<OperatorPath>>,
) -> Result<Json<OperatorRevoked>> {
    let revoked = operators::revoke(&state.store, &call.input.operator_id).await?;
    Ok(Json(revoked))
}

/// Who the bearer token is: an operator, or `root` for `KEYWARD_ADMIN_TOKEN`.
#[utoipa::path(
    get,
    path = "/v1/admin/whoami",
    tag = "operators",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The caller", body = Whoami),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
    )
)]
pub async fn whoami(call: Admin<act::Whoami, Nothing>) -> Json<Whoami> {
    Json(operators::whoami(call.caller))
}

/// What this keyward offers: its roles and its webhook event types.
#[utoipa::path(
    get,
    path = "/v1/admin/catalog",
    tag = "operators",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The roles, least first, and the event types", body = Catalog),
        (status = 404, description = "`not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
    )
)]
pub async fn catalog(_call: Admin<act::Catalog, Nothing>) -> Json<Catalog> {
    Json(operators::catalog())
}

/// The admin audit trail, newest first: every admin call, allowed or
/// refused, of the projects the caller may see.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "operators",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of entries, newest first. Entries of no project (operators, `whoami`, bad tokens) only for a caller of every project", body = Page<AuditItem>),
        (status = 404, description = "`project_not_found` for a `project_id` that does not exist or is outside the caller's projects; `not_found` when no admin token is configured (the admin API is off)", body = ErrorBody),
        (status = 409, description = "`activity_unavailable`: no monitor Redis user (or one that may not read `audit:admin`); the message says how to enable it", body = ErrorBody),
        (status = 422, response = InvalidRequestResponse),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    call: Admin<act::AuditRead, Query<AuditQuery>>,
) -> Result<Json<AuditOut>> {
    let _reading = state.limits.read(&call.caller.actor)?;
    Ok(Json(
        trail::audit(&state.store, &call.caller, call.input).await?,
    ))
}
