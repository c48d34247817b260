//! Admin endpoints. Each takes the `Admin` proof, so none runs without the
//! bearer token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{Admin, ValidatedJson, ValidatedQuery};
use super::AppState;
use crate::admin::{
    self, KeyOut, KeyRef, ListOut, ListQuery, MintIn, MintOut, ProjectIn, RotateIn, RotateOut,
    UpdateIn,
};
use crate::error::Result;
use crate::store::ProjectDoc;

pub async fn create_project(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<ProjectIn>,
) -> Result<(StatusCode, Json<ProjectDoc>)> {
    let doc = admin::create_project(&state.store, input).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

pub async fn get_project(
    _: Admin,
    State(state): State<AppState>,
    Path(project_id): Path<String>,
) -> Result<Json<ProjectDoc>> {
    Ok(Json(admin::get_project(&state.store, &project_id).await?))
}

pub async fn mint_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<MintIn>,
) -> Result<(StatusCode, Json<MintOut>)> {
    let minted = admin::mint(&state.store, &state.hasher, input).await?;
    Ok((StatusCode::CREATED, Json(minted)))
}

pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<KeyRef>,
) -> Result<Json<Value>> {
    admin::revoke(&state.store, input).await?;
    Ok(Json(json!({ "revoked": true })))
}

pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    ValidatedQuery(query): ValidatedQuery<ListQuery>,
) -> Result<Json<ListOut>> {
    Ok(Json(admin::list(&state.store, query).await?))
}

pub async fn get_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedQuery(query): ValidatedQuery<KeyRef>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::get_key(&state.store, query).await?))
}

pub async fn update_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<UpdateIn>,
) -> Result<Json<KeyOut>> {
    Ok(Json(admin::update(&state.store, input).await?))
}

pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    ValidatedJson(input): ValidatedJson<RotateIn>,
) -> Result<(StatusCode, Json<RotateOut>)> {
    let rotated = admin::rotate(&state.store, &state.hasher, input).await?;
    Ok((StatusCode::CREATED, Json(rotated)))
}
