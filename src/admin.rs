//! Admin operations: create, read and list projects; mint, inspect,
//! update, rotate, revoke and list keys, and add to (or take from) a key's
//! credits.
//!
//! Plain async functions over the store and the hasher, and the wire types
//! they take and return (validated by `validator` at the HTTP edge). This is
//! the only place new secrets are generated.

use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{KnownFormat, SchemaFormat, SchemaType};
use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError};

use crate::access::{Caller, Target};
use crate::clock::{now, stamp};
use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::key::{ApiKey, KeyId, ProjectId, Secret};
use crate::net::{cidr, valid_cidrs, NetworkDoc};
use crate::plan::{valid_credits, valid_limits, Credits, CreditsDoc, Limit, MAX_AMOUNT};
use crate::scope::{valid_scopes, ScopeDoc};
use crate::store::{KeyDoc, KeyMeta, ProjectDoc, Store};

/// Random characters in a minted key id, after `k_`.
const KEY_ID_CHARS: usize = 12;
/// Characters in a minted secret: 43 x 6 bits = 258 bits of entropy.
const SECRET_CHARS: usize = 43;
/// The secret alphabet; its first 62 characters are the key id alphabet.
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Key id collisions are astronomically rare; a few retries are plenty.
const MINT_ATTEMPTS: usize = 5;

pub(crate) fn project_id(id: &str) -> Result<(), ValidationError> {
    ProjectId::parse(id)
        .map(|_| ())
        .map_err(|e| ValidationError::new("project_id").with_message(e.to_string().into()))
}

crate::openapi::pattern_doc!(
    /// A project id in the OpenAPI document: `key::PROJECT_ID_PATTERN`.
    ProjectIdDoc = "ProjectId", crate::key::PROJECT_ID_PATTERN, "alpha"
);

crate::openapi::pattern_doc!(
    /// A key id in the OpenAPI document: `key::KEY_ID_PATTERN`.
    KeyIdDoc = "KeyId", crate::key::KEY_ID_PATTERN, "k_3xAmPlE0key1"
);

pub(crate) fn key_id(id: &str) -> Result<(), ValidationError> {
    KeyId::parse(id)
        .map(|_| ())
        .map_err(|e| ValidationError::new("key_id").with_message(e.to_string().into()))
}

pub(crate) fn in_future(at: f64) -> Result<(), ValidationError> {
    if at.is_finite() && at > now() {
        Ok(())
    } else {
        Err(ValidationError::new("expires_at")
            .with_message("must be a Unix time in the future".into()))
    }
}

/// `expires_at`'s schema: Unix seconds after the moment the document was
/// generated, or `null`. `in_future` takes only times after now, which a
/// schema cannot say; it can state the bound that holds from then on.
pub(crate) fn expires_at_schema(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .exclusive_minimum(Some(now().floor()))
        .description(Some(description))
        .into()
}

fn mint_expires_at() -> Schema {
    expires_at_schema("Unix seconds, in the future; `null` or absent: never expires.")
}

fn update_expires_at() -> Schema {
    expires_at_schema("Unix seconds in the future; `null`: never expires.")
}

/// The largest rate limit, the document's `int64` maximum: Redis counts
/// with signed 64-bit integers, so no larger limit could ever be reached.
const MAX_RATE_LIMIT: u64 = i64::MAX as u64;

/// A refill interval's balance counter outlives its interval by this much,
/// then expires.
use crate::plan::COUNTER_MARGIN_SECS as CREDITS_MARGIN_SECS;

/// add-credits' `amount`: a non-zero integer of at most
/// 9223372036854775807 either way.
fn amount_schema() -> Schema {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(-(MAX_AMOUNT as i64), -1))
        .item(range(1, MAX_AMOUNT as i64))
        .description(Some(
            "Credits to add (negative: to take away); not 0, at most 9223372036854775807 either way.",
        ))
        .into()
}

fn non_zero(amount: i64) -> Result<(), ValidationError> {
    match amount {
        0 => Err(ValidationError::new("amount").with_message("must not be 0".into())),
        i64::MIN => Err(ValidationError::new("amount")
            .with_message("must be at least -9223372036854775807".into())),
        _ => Ok(()),
    }
}

/// The longest grace period a rotation may give the previous secret: a week.
pub const MAX_GRACE_SECONDS: u64 = 604_800;
const DEFAULT_GRACE_SECONDS: u64 = 86_400;

fn canonical(list: Option<Vec<String>>) -> Option<Vec<String>> {
    list.map(|l| l.iter().filter_map(|c| cidr(c)).collect())
}

/// An update's field as JSON, if the request names it.
fn to_json<T: Serialize>(value: Option<T>) -> Option<serde_json::Value> {
    value.map(|v| serde_json::to_value(v).unwrap_or_default())
}

/// For fields that may be absent but not `null`.
fn non_null<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For fields that may be absent or `null` (which clears them): absent is
/// `None`, `null` is `Some(None)`.
fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For counts that may be absent or `null`: JSON Schema's integers include
/// `5.0`, so a whole number written with a fraction is the integer it is.
fn whole<'de, D>(d: D) -> std::result::Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| crate::plan::count(&n).ok_or_else(|| crate::plan::not_a_count(&n)))
        .transpose()
}

/// [`whole`] for a field where absent is `None` and `null` is `Some(None)`.
fn nullable_whole<'de, D>(d: D) -> std::result::Result<Option<Option<u64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    whole(d).map(Some)
}

fn parse<T>(r: std::result::Result<T, crate::key::KeyError>) -> Result<T> {
    r.map_err(|e| Error::InvalidRequest(e.to_string()))
}

/// `POST /v1/admin/projects`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectIn {
    /// 1 to 64 of `[A-Za-z0-9_-]`.
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    pub project_id: String,
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub label: String,
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub owner: String,
}

/// `POST /v1/mint-key`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintIn {
    /// An existing project.
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    pub project_id: String,
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub owner: String,
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub server_name: String,
    /// Any JSON of at most 16 KiB, returned as it is on validation
    /// (default `null`).
    #[serde(default)]
    #[validate(custom(function = "crate::text::metadata"))]
    pub metadata: serde_json::Value,
    /// Unix seconds, in the future; `null` or absent: never expires.
    #[validate(custom(function = "in_future"))]
    #[schema(schema_with = mint_expires_at)]
    pub expires_at: Option<f64>,
    /// Validations per minute; `null` or absent: the deployment's default.
    #[serde(default, deserialize_with = "whole")]
    #[validate(range(min = 1, max = MAX_RATE_LIMIT))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub rate_limit_per_minute: Option<u64>,
    /// Scopes the key grants (default none).
    #[serde(default)]
    #[validate(custom(function = "valid_scopes"))]
    #[schema(max_items = 64, value_type = Vec<ScopeDoc>)]
    pub scopes: Vec<String>,
    /// 1 to 64 IPv4/IPv6 networks (or bare addresses) the key may be used
    /// from; `null` or absent: anywhere.
    #[validate(custom(function = "valid_cidrs"))]
    #[schema(value_type = Option<Vec<NetworkDoc>>, min_items = 1, max_items = 64, example = json!(["10.0.0.0/8"]))]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Windows, each counted apart from `rate_limit_per_minute`'s; at most 8
    /// (default none).
    #[serde(default)]
    #[validate(custom(function = "valid_limits"))]
    #[schema(max_items = 8, example = json!([{"per": "second", "limit": 10}, {"per": "day", "limit": 50000}]))]
    pub limits: Vec<Limit>,
    /// Prepaid credits; `null` or absent: unlimited.
    #[validate(custom(function = "valid_credits"))]
    pub credits: Option<Credits>,
}

/// `201` from `POST /v1/mint-key`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MintOut {
    /// The full key. Shown once, here, and stored nowhere.
    #[schema(example = "sk-proj.alpha.k_3xAmPlE0key1.<secret>")]
    pub api_key: String,
    pub project_id: String,
    pub key_id: String,
    pub expires_at: Option<f64>,
}

/// `POST /v1/revoke-key`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Always `true`.
    pub revoked: bool,
}

/// Names one key: revoke-key's body and get-key's query.
#[derive(Debug, Deserialize, Validate, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyRef {
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    #[param(inline, value_type = crate::admin::ProjectIdDoc)]
    pub project_id: String,
    #[validate(custom(function = "key_id"))]
    #[schema(schema_with = KeyIdDoc::schema)]
    #[param(inline, value_type = crate::admin::KeyIdDoc)]
    pub key_id: String,
}

/// `update-key`: an absent field stays as it is; `null` clears the
/// nullable ones (`null` for `owner`, `server_name` or `scopes` is a 422).
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIn {
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    pub project_id: String,
    #[validate(custom(function = "key_id"))]
    #[schema(schema_with = KeyIdDoc::schema)]
    pub key_id: String,
    #[serde(default, deserialize_with = "non_null")]
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[validate(custom(function = "crate::text::name"))]
    #[schema(schema_with = crate::text::name_schema)]
    pub server_name: Option<String>,
    /// Any JSON of at most 16 KiB; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[validate(custom(function = "crate::text::metadata"))]
    #[schema(value_type = serde_json::Value)]
    pub metadata: Option<Option<serde_json::Value>>,
    /// Unix seconds in the future; `null`: never expires.
    #[serde(default, deserialize_with = "nullable")]
    #[validate(custom(function = "in_future"))]
    #[schema(schema_with = update_expires_at)]
    pub expires_at: Option<Option<f64>>,
    /// `null`: back to the deployment's default.
    #[serde(default, deserialize_with = "nullable_whole")]
    #[validate(range(min = 1, max = MAX_RATE_LIMIT))]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub rate_limit_per_minute: Option<Option<u64>>,
    /// Replaces the key's scopes (`[]` removes them all).
    #[serde(default, deserialize_with = "non_null")]
    #[validate(custom(function = "valid_scopes"))]
    #[schema(value_type = Vec<ScopeDoc>, max_items = 64)]
    pub scopes: Option<Vec<String>>,
    /// 1 to 64 networks; `null` removes the restriction.
    #[serde(default, deserialize_with = "nullable")]
    #[validate(custom(function = "valid_cidrs"))]
    #[schema(value_type = Option<Vec<NetworkDoc>>, min_items = 1, max_items = 64)]
    pub allowed_cidrs: Option<Option<Vec<String>>>,
    /// Replaces the key's windows (at most 8; each counted apart from
    /// `rate_limit_per_minute`'s); `[]` or `null` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[validate(custom(function = "valid_limits"))]
    #[schema(value_type = Option<Vec<Limit>>, max_items = 8)]
    pub limits: Option<Option<Vec<Limit>>>,
    /// Sets the key's credits outright: `remaining` becomes the balance of
    /// the current refill interval (or for good, without a refill); `null`:
    /// unlimited.
    #[serde(default, deserialize_with = "nullable")]
    #[validate(custom(function = "valid_credits"))]
    #[schema(value_type = Option<Credits>)]
    pub credits: Option<Option<Credits>>,
}

/// `POST /v1/add-credits`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCreditsIn {
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    pub project_id: String,
    #[validate(custom(function = "key_id"))]
    #[schema(schema_with = KeyIdDoc::schema)]
    pub key_id: String,
    #[validate(custom(function = "non_zero"))]
    #[serde(deserialize_with = "crate::plan::whole_signed")]
    #[schema(schema_with = amount_schema)]
    pub amount: i64,
}

/// `200` from `POST /v1/add-credits`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddCreditsOut {
    /// The balance of the current refill interval (or for good, without a
    /// refill) after the change.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub remaining: u64,
}

/// `POST /v1/rotate-key`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    #[validate(custom(function = "project_id"))]
    #[schema(schema_with = ProjectIdDoc::schema)]
    pub project_id: String,
    #[validate(custom(function = "key_id"))]
    #[schema(schema_with = KeyIdDoc::schema)]
    pub key_id: String,
    /// How long the previous secret keeps working, in seconds (default a
    /// day, at most a week; `0` ends it now).
    #[serde(default, deserialize_with = "whole")]
    #[validate(range(max = 604_800))]
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_seconds: Option<u64>,
}

/// `201` from `POST /v1/rotate-key`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotateOut {
    /// The new full key. Shown once, here, and stored nowhere.
    pub api_key: String,
    pub project_id: String,
    pub key_id: String,
    /// Until when the previous secret still validates.
    pub previous_expires_at: f64,
}

/// `GET /v1/list-keys`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[validate(custom(function = "project_id"))]
    #[param(inline, value_type = crate::admin::ProjectIdDoc)]
    pub project_id: String,
    /// Keys per page (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_LIMIT))]
    #[param(inline, value_type = Option<crate::page::LimitDoc>)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[validate(custom(function = "key_id"))]
    #[param(inline, value_type = Option<crate::admin::KeyIdDoc>)]
    pub cursor: Option<String>,
    /// Only keys not used since this time (Unix seconds): `last_used`
    /// before it, or never used; to find keys to retire. Filtered within
    /// each page of `limit` keys, so a page may hold fewer than `limit`
    /// items (even none) while `next` still leads on.
    #[validate(custom(function = "unix_time"))]
    #[param(minimum = 0)]
    pub unused_since: Option<f64>,
}

fn unix_time(at: f64) -> Result<(), ValidationError> {
    match at.is_finite() && at >= 0.0 {
        true => Ok(()),
        false => Err(ValidationError::new("unused_since")
            .with_message("must be Unix seconds, 0 or more".into())),
    }
}

/// A key as listed and inspected: everything but the hashes and tags.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    pub key_id: String,
    pub owner: String,
    pub server_name: String,
    pub metadata: serde_json::Value,
    pub created_at: f64,
    pub disabled: bool,
    pub expires_at: Option<f64>,
    pub usage_count: u64,
    pub last_used: Option<f64>,
    /// `null`: the deployment's default limit.
    pub rate_limit_per_minute: Option<u64>,
    pub scopes: Vec<String>,
    pub allowed_cidrs: Option<Vec<String>>,
    /// Windows, each counted apart from `rate_limit_per_minute`'s.
    #[schema(max_items = 8)]
    pub limits: Vec<Limit>,
    /// `null`: unlimited. `remaining` is the balance now, in the current
    /// refill interval (its full `amount` until the interval's first use).
    pub credits: Option<Credits>,
    /// While a rotation's grace period lasts, when the previous secret stops
    /// working; otherwise `null`.
    pub previous_expires_at: Option<f64>,
    pub updated_at: Option<f64>,
    /// Listed only: `true` when the key's document cannot be read (it cannot
    /// validate; only `key_id` and the usage are real, and it shows as
    /// disabled). Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub unreadable: bool,
}

/// `200` from `GET /v1/list-keys`: one page.
pub type ListOut = crate::page::Page<KeyOut>;

impl Target for ProjectIn {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
}

impl Target for ListQuery {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
}

impl Target for MintIn {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
}

/// The key routes' inputs: a project and a key.
macro_rules! key_target {
    ($($ty:ty),*) => {$(
        impl Target for $ty {
            fn project(&self) -> Option<&str> {
                Some(&self.project_id)
            }
            fn key(&self) -> Option<&str> {
                Some(&self.key_id)
            }
        }
    )*};
}

key_target!(KeyRef, UpdateIn, RotateIn, AddCreditsIn);

/// `GET /v1/admin/projects/{project_id}`'s path.
#[derive(Debug, Deserialize)]
pub struct ProjectPath {
    pub project_id: String,
}

impl Target for ProjectPath {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
}

/// `GET /v1/admin/projects`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectsQuery {
    /// Projects per page (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_LIMIT))]
    #[param(inline, value_type = Option<crate::page::LimitDoc>)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[validate(custom(function = "project_id"))]
    #[param(inline, value_type = Option<crate::admin::ProjectIdDoc>)]
    pub cursor: Option<String>,
}

impl Target for ProjectsQuery {}

/// `200` from `GET /v1/admin/projects`: one page, in id order.
pub type ProjectsOut = crate::page::Page<ProjectDoc>;

/// The projects `caller` may see, a page at a time, in id order: from the
/// deployment's projects index for a caller of every project, from its own
/// list otherwise; either way only those that exist and this deployment's
/// manager user may read.
pub async fn list_projects(
    store: &Store,
    caller: &Caller,
    query: ProjectsQuery,
) -> Result<ProjectsOut> {
    let limit = crate::page::limit(query.limit);
    let after = query.cursor.as_deref();
    let (ids, more) = if caller.covers_all() {
        store.project_ids(after, limit).await?
    } else {
        let mut ids: Vec<String> = caller
            .projects
            .iter()
            .filter(|p| after.map_or(true, |a| p.as_str() > a))
            .cloned()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let more = ids.len() as u64 > limit;
        ids.truncate(limit as usize);
        (ids, more)
    };
    let next = more.then(|| ids.last().cloned()).flatten();
    Ok(ProjectsOut {
        items: store.get_projects(&ids).await?,
        next,
    })
}

pub async fn create_project(store: &Store, input: ProjectIn) -> Result<ProjectDoc> {
    let doc = ProjectDoc {
        project_id: input.project_id,
        label: input.label,
        owner: input.owner,
        created_at: stamp(),
    };
    if !store.create_project(&doc).await? {
        return Err(Error::ProjectExists);
    }
    Ok(doc)
}

pub async fn get_project(store: &Store, project_id: &str) -> Result<ProjectDoc> {
    let project = ProjectId::parse(project_id).map_err(|_| Error::ProjectNotFound)?;
    store
        .get_project(&project)
        .await?
        .ok_or(Error::ProjectNotFound)
}

pub async fn mint(store: &Store, hasher: &Hasher, input: MintIn) -> Result<MintOut> {
    let project = parse(ProjectId::parse(&input.project_id))?;
    store
        .get_project(&project)
        .await?
        .ok_or(Error::ProjectNotFound)?;
    let allowed_cidrs = canonical(input.allowed_cidrs);
    for _ in 0..MINT_ATTEMPTS {
        let key = ApiKey {
            project_id: project.clone(),
            key_id: parse(KeyId::parse(&random_id("k_")?))?,
            secret: parse(Secret::parse(&random_secret()?))?,
        };
        let secret_hash = hasher.hash(&key.secret).await?;
        let doc = KeyDoc {
            key_id: key.key_id.to_string(),
            project_id: project.to_string(),
            owner: input.owner.clone(),
            server_name: input.server_name.clone(),
            metadata: input.metadata.clone(),
            secret_tag: Some(Hasher::tag(&key.secret, &secret_hash)),
            secret_hash,
            disabled: false,
            created_at: stamp(),
            expires_at: input.expires_at,
            rate_limit_per_minute: input.rate_limit_per_minute,
            scopes: input.scopes.clone(),
            allowed_cidrs: allowed_cidrs.clone(),
            limits: input.limits.clone(),
            credits: input.credits.map(CreditsDoc::from),
            ..KeyDoc::default()
        };
        if store.insert_key(&project, &doc).await? {
            // After the document: a key id that turned out to be taken
            // never has its balance overwritten. Until it is written the
            // key is known to no one (its secret is not shown yet).
            if let Some(credits) = &input.credits {
                set_balance(store, &project, &key.key_id, credits).await?;
            }
            tracing::info!(project_id = %project, key_id = %key.key_id, "key minted");
            return Ok(MintOut {
                api_key: key.expose(),
                project_id: doc.project_id,
                key_id: doc.key_id,
                expires_at: doc.expires_at,
            });
        }
    }
    Err(Error::Internal("could not find a free key id".into()))
}

fn key_ref(project_id: &str, key_id: &str) -> Result<(ProjectId, KeyId)> {
    Ok((
        parse(ProjectId::parse(project_id))?,
        parse(KeyId::parse(key_id))?,
    ))
}

/// Disables the key, both its secrets included, from the next validation on.
pub async fn revoke(store: &Store, input: KeyRef) -> Result<()> {
    let (project, key_id) = key_ref(&input.project_id, &input.key_id)?;
    let fields = [("disabled", json!(true)), ("updated_at", json!(stamp()))];
    if !store.set_key_fields(&project, &key_id, &fields).await? {
        return Err(Error::KeyNotFound);
    }
    tracing::info!(project_id = %project, key_id = %key_id, "key revoked");
    Ok(())
}

async fn load(store: &Store, project: &ProjectId, key_id: &KeyId) -> Result<(KeyDoc, KeyMeta)> {
    store
        .get_key(project, key_id)
        .await?
        .ok_or(Error::KeyNotFound)
}

pub async fn get_key(store: &Store, input: KeyRef) -> Result<KeyOut> {
    let (project, key_id) = key_ref(&input.project_id, &input.key_id)?;
    Ok(key_out(load(store, &project, &key_id).await?))
}

/// Writes `credits.remaining` as the balance of the current period (`SET`):
/// for credits that refill, the current interval's counter, expiring a
/// little after the interval ends; without a refill, `once`, for good.
async fn set_balance(
    store: &Store,
    project: &ProjectId,
    key_id: &KeyId,
    credits: &Credits,
) -> Result<()> {
    let (period, ends_in) = CreditsDoc::from(*credits).period(now());
    let ttl = ends_in.map(|s| s + CREDITS_MARGIN_SECS);
    store
        .set_credits(project, key_id, &period, credits.remaining, ttl)
        .await
}

/// Changes the named properties of a key; never its secret, `created_at`,
/// usage or `disabled`. Every field of the document is set in one atomic
/// write; new credits' balance is written just before it (once the key is
/// known to exist), so no validation in between finds the new period's
/// counter missing.
pub async fn update(store: &Store, input: UpdateIn) -> Result<KeyOut> {
    let (project, key_id) = key_ref(&input.project_id, &input.key_id)?;
    if let Some(Some(credits)) = &input.credits {
        load(store, &project, &key_id).await?;
        set_balance(store, &project, &key_id, credits).await?;
    }
    let limits = input.limits.map(Option::unwrap_or_default);
    let credits = input.credits.map(|c| c.map(CreditsDoc::from));
    let fields: Vec<(&str, serde_json::Value)> = [
        ("owner", to_json(input.owner.map(Some))),
        ("server_name", to_json(input.server_name.map(Some))),
        ("metadata", to_json(input.metadata)),
        ("expires_at", to_json(input.expires_at)),
        (
            "rate_limit_per_minute",
            to_json(input.rate_limit_per_minute),
        ),
        ("scopes", to_json(input.scopes.map(Some))),
        ("allowed_cidrs", to_json(input.allowed_cidrs.map(canonical))),
        ("limits", to_json(limits)),
        ("credits", to_json(credits)),
        ("updated_at", Some(json!(stamp()))),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    if !store.set_key_fields(&project, &key_id, &fields).await? {
        return Err(Error::KeyNotFound);
    }
    tracing::info!(project_id = %project, key_id = %key_id, "key updated");
    Ok(key_out(load(store, &project, &key_id).await?))
}

/// Gives the key a new secret; the current one keeps working for the grace
/// period, and one before it (if still in grace) stops at once.
pub async fn rotate(store: &Store, hasher: &Hasher, input: RotateIn) -> Result<RotateOut> {
    let (project, key_id) = key_ref(&input.project_id, &input.key_id)?;
    let (doc, _) = load(store, &project, &key_id).await?;
    if doc.disabled {
        return Err(Error::KeyDisabled);
    }
    let secret = parse(Secret::parse(&random_secret()?))?;
    let secret_hash = hasher.hash(&secret).await?;
    let at = now();
    let grace = input
        .grace_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .min(MAX_GRACE_SECONDS);
    let previous_expires_at = at + grace as f64;
    // A tag left by a tool that replaced the hash alone is not carried over.
    let previous_tag = doc
        .secret_tag
        .filter(|tag| Hasher::tag_is_for(tag, &doc.secret_hash));
    let fields = [
        ("previous_secret_hash", json!(doc.secret_hash)),
        ("previous_secret_tag", json!(previous_tag)),
        ("previous_expires_at", json!(previous_expires_at)),
        ("secret_tag", json!(Hasher::tag(&secret, &secret_hash))),
        ("secret_hash", json!(secret_hash)),
        ("updated_at", json!(at)),
    ];
    if !store.set_key_fields(&project, &key_id, &fields).await? {
        return Err(Error::KeyNotFound);
    }
    tracing::info!(project_id = %project, key_id = %key_id, grace, "key rotated");
    let key = ApiKey {
        project_id: project,
        key_id,
        secret,
    };
    Ok(RotateOut {
        api_key: key.expose(),
        project_id: key.project_id.to_string(),
        key_id: key.key_id.to_string(),
        previous_expires_at,
    })
}

/// Adds `amount` to the key's balance (a negative amount takes credits
/// away), for credits that refill in the current interval (started with
/// the refill amount if no validation started it yet, exactly as the first
/// validation would). A balance never goes below 0 through here: a change
/// that would take it there is taken back (`409 credits_conflict`); a validation meanwhile
/// may see the lowered balance and be refused.
pub async fn add_credits(store: &Store, input: AddCreditsIn) -> Result<AddCreditsOut> {
    let (project, key_id) = key_ref(&input.project_id, &input.key_id)?;
    let (doc, _) = load(store, &project, &key_id).await?;
    let Some(credits) = doc.credits else {
        return Err(Error::CreditsConflict(
            "the key has no credits (unlimited); set credits with update-key".into(),
        ));
    };
    let (period, ends_in) = credits.period(now());
    let start = credits
        .refill
        .zip(ends_in)
        .map(|(refill, ends_in)| (refill.amount, ends_in + CREDITS_MARGIN_SECS));
    let amount = input.amount;
    let balance = store
        .add_credits(&project, &key_id, &period, start, amount)
        .await?;
    if balance < 0 {
        store
            .add_credits(&project, &key_id, &period, None, -amount)
            .await?;
        return Err(Error::CreditsConflict(format!(
            "would leave fewer than 0 credits ({} left)",
            balance.saturating_sub(amount).max(0)
        )));
    }
    tracing::info!(project_id = %project, key_id = %key_id, amount, "credits added");
    Ok(AddCreditsOut {
        remaining: balance as u64,
    })
}

pub async fn list(store: &Store, query: ListQuery) -> Result<ListOut> {
    let project = parse(ProjectId::parse(&query.project_id))?;
    let cursor = query.cursor.as_deref().map(KeyId::parse).transpose();
    let cursor = parse(cursor)?;
    store
        .get_project(&project)
        .await?
        .ok_or(Error::ProjectNotFound)?;
    let page = store
        .list_keys(
            &project,
            cursor.as_ref(),
            crate::page::limit(query.limit),
            query.unused_since,
        )
        .await?;
    Ok(ListOut {
        items: page.keys.into_iter().map(key_out).collect(),
        next: page.next,
    })
}

fn key_out((doc, meta): (KeyDoc, KeyMeta)) -> KeyOut {
    let previous_expires_at = doc.previous_hash(now()).and(doc.previous_expires_at);
    // A refill interval no validation has started yet holds its full
    // amount; credits without refill have no balance until one is written.
    let credits = doc.credits.map(|c| Credits {
        remaining: match meta.credits {
            Some(balance) => balance.max(0) as u64,
            None => c.refill.map_or(0, |r| r.amount),
        },
        refill: c.refill,
        low_at: c.low_at,
    });
    KeyOut {
        limits: doc.limits,
        credits,
        rate_limit_per_minute: doc.rate_limit_per_minute,
        scopes: doc.scopes,
        allowed_cidrs: doc.allowed_cidrs,
        previous_expires_at,
        updated_at: doc.updated_at,
        key_id: doc.key_id,
        owner: doc.owner,
        server_name: doc.server_name,
        metadata: doc.metadata,
        created_at: doc.created_at,
        disabled: doc.disabled,
        expires_at: doc.expires_at,
        usage_count: meta.usage_count,
        last_used: meta.last_used,
        unreadable: doc.unreadable,
    }
}

/// `N` bytes from the OS CSPRNG: ids, secrets, webhook secrets.
pub(crate) fn os_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Internal(format!("OS random source: {e}")))?;
    Ok(bytes)
}

/// `prefix` and 12 of `[A-Za-z0-9]` from the OS CSPRNG: a key id (`k_`) or
/// an operator id (`op_`). Bytes of 248 and over are dropped so that `% 62`
/// has no bias (248 = 4 x 62).
pub(crate) fn random_id(prefix: &str) -> Result<String> {
    let bytes: [u8; 64] = os_bytes()?;
    let id: String = bytes
        .iter()
        .filter(|b| **b < 248)
        .take(KEY_ID_CHARS)
        .map(|b| SECRET_ALPHABET[(b % 62) as usize] as char)
        .collect();
    if id.len() < KEY_ID_CHARS {
        return Err(Error::Internal(
            "OS random source gave too many high bytes".into(),
        ));
    }
    Ok(format!("{prefix}{id}"))
}

/// 43 characters of `[A-Za-z0-9_-]` from the OS CSPRNG. Each byte picks one
/// of 64 characters (256 is a multiple of 64, so there is no bias).
pub(crate) fn random_secret() -> Result<String> {
    let bytes: [u8; SECRET_CHARS] = os_bytes()?;
    Ok(bytes
        .iter()
        .map(|b| SECRET_ALPHABET[(b & 63) as usize] as char)
        .collect())
}
