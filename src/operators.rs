//! Operators: create, list and revoke them (owners only, see `access`);
//! `whoami` and the catalog (any caller). Plain async functions over the
//! store, and the wire types they take and return.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError};

use crate::access::{token_digest, Caller, Role, Target, Token, ALL_PROJECTS, OPERATOR_ID_PREFIX};
use crate::admin::{expires_at_schema, in_future, random_id, random_secret};
use crate::clock::stamp;
use crate::error::{Error, Result};
use crate::key::{ProjectId, Secret};
use crate::store::{OperatorDoc, Store};

/// Most projects one operator may cover.
const MAX_PROJECTS: usize = 64;
/// Operator id collisions are astronomically rare; a few retries are plenty.
const CREATE_ATTEMPTS: usize = 5;

pub(crate) fn valid_projects(projects: &[String]) -> Result<(), ValidationError> {
    let fail = |m: &'static str| Err(ValidationError::new("projects").with_message(m.into()));
    if projects.is_empty() || projects.len() > MAX_PROJECTS {
        return fail("must hold 1 to 64 project ids, or [\"*\"]");
    }
    if projects.iter().any(|p| p == ALL_PROJECTS) {
        return match projects.len() {
            1 => Ok(()),
            _ => fail("\"*\" stands alone: every project"),
        };
    }
    if !projects.iter().all(|p| ProjectId::parse(p).is_ok()) {
        let message = format!(
            "each entry must be a project id ({}) or \"*\"",
            crate::key::PROJECT_ID_GRAMMAR
        );
        return Err(ValidationError::new("projects").with_message(message.into()));
    }
    Ok(())
}

/// `valid_projects` as a schema: `["*"]`, or 1 to 64 project ids.
pub(crate) fn projects_schema() -> Schema {
    let ids = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(crate::key::PROJECT_ID_PATTERN)),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_PROJECTS));
    OneOfBuilder::new()
        .item(ids)
        .item(every_project())
        .description(Some("1 to 64 project ids, or `[\"*\"]`: every project"))
        .examples([serde_json::json!(["alpha"])])
        .into()
}

/// `["*"]`: every project.
fn every_project() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([ALL_PROJECTS])),
        )
        .min_items(Some(1))
        .max_items(Some(1))
}

fn operator_expires_at() -> Schema {
    expires_at_schema("Unix seconds, in the future; `null` or absent: never expires.")
}

/// `POST /v1/admin/operators`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct OperatorIn {
    /// Who the credential is for.
    #[validate(custom(function = "crate::text::name"))]
    pub name: String,
    pub role: Role,
    /// The projects it covers: 1 to 64 project ids, or `["*"]` (every one).
    /// An `owner` covers every project: its list must be `["*"]` (else 422,
    /// in `create`).
    #[validate(custom(function = "valid_projects"))]
    pub projects: Vec<String>,
    #[validate(custom(function = "in_future"))]
    pub expires_at: Option<f64>,
}

/// `OperatorIn` as a schema: one object for the roles of a project list and
/// one for `owner`, whose list is `["*"]` and nothing else.
impl utoipa::PartialSchema for OperatorIn {
    fn schema() -> RefOr<Schema> {
        let body = |roles: &[Role], projects: Schema| {
            let roles = roles.iter().filter_map(|r| serde_json::to_value(r).ok());
            ObjectBuilder::new()
                .property("name", crate::text::name_schema())
                .required("name")
                .property(
                    "role",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(roles)),
                )
                .required("role")
                .property("projects", projects)
                .required("projects")
                .property("expires_at", operator_expires_at())
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let scoped = [Role::Viewer, Role::KeyManager, Role::ProjectAdmin];
        OneOfBuilder::new()
            .item(body(&scoped, projects_schema()))
            .item(body(&[Role::Owner], every_project().into()))
            .description(Some(
                "A new operator: a role and the projects it covers; an `owner` covers every \
                 project, so its `projects` is `[\"*\"]`.",
            ))
            .into()
    }
}

impl ToSchema for OperatorIn {
    fn name() -> std::borrow::Cow<'static, str> {
        "OperatorIn".into()
    }
}

/// An operator as listed: never its token or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorOut {
    #[schema(example = "op_3xAmPlE0op1x")]
    pub operator_id: String,
    pub name: String,
    pub role: Role,
    pub projects: Vec<String>,
    pub created_at: f64,
    pub expires_at: Option<f64>,
    /// The actor that created it (`root` or an operator id).
    pub created_by: String,
    pub revoked: bool,
    pub revoked_at: Option<f64>,
}

/// `201` from `POST /v1/admin/operators`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorCreated {
    pub operator_id: String,
    /// The bearer token. Shown once, here, and stored nowhere.
    #[schema(example = "kwop.op_3xAmPlE0op1x.<secret>")]
    pub token: String,
    pub name: String,
    pub role: Role,
    pub projects: Vec<String>,
    pub created_at: f64,
    pub expires_at: Option<f64>,
}

/// `GET /v1/admin/operators`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperatorsQuery {
    /// Operators per page (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_LIMIT))]
    #[param(inline, value_type = Option<crate::page::LimitDoc>)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[param(inline, value_type = Option<crate::access::OperatorIdDoc>)]
    #[validate(custom(function = "operator_id"))]
    pub cursor: Option<String>,
}

fn operator_id(id: &str) -> Result<(), ValidationError> {
    match crate::access::is_operator_id(id) {
        true => Ok(()),
        false => Err(ValidationError::new("operator_id")
            .with_message("must be `op_` and 12 of [A-Za-z0-9]".into())),
    }
}

/// `200` from `GET /v1/admin/operators`: one page, in id order.
pub type OperatorsOut = crate::page::Page<OperatorOut>;

/// `POST /v1/admin/operators/{operator_id}/revoke`'s path.
#[derive(Debug, Deserialize)]
pub struct OperatorPath {
    pub operator_id: String,
}

// Operators belong to no project: only owners, who cover all of them.
impl Target for OperatorIn {}
impl Target for OperatorsQuery {}
impl Target for OperatorPath {
    fn operator(&self) -> Option<&str> {
        Some(&self.operator_id)
    }
}

/// `200` from `POST /v1/admin/operators/{operator_id}/revoke`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorRevoked {
    pub operator_id: String,
    /// Always `true`: from the next call on, on every instance, its token
    /// is refused.
    pub revoked: bool,
}

/// `200` from `GET /v1/admin/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The operator id; `root` for `KEYWARD_ADMIN_TOKEN`.
    pub operator_id: String,
    pub name: String,
    pub role: Role,
    /// Project ids, or `["*"]`.
    pub projects: Vec<String>,
}

/// `200` from `GET /v1/admin/catalog`: what this keyward offers, so that
/// a client (the console) lists it rather than keeping a copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct Catalog {
    /// Every role, least first; each includes the ones before it.
    pub roles: Vec<Role>,
    /// Every webhook event type.
    #[schema(example = json!(["key.created", "key.revoked"]))]
    pub event_types: Vec<&'static str>,
}

pub fn catalog() -> Catalog {
    Catalog {
        roles: Role::ALL.to_vec(),
        event_types: crate::event::EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect(),
    }
}

fn out(doc: OperatorDoc) -> OperatorOut {
    OperatorOut {
        operator_id: doc.operator_id,
        name: doc.name,
        role: doc.role,
        projects: crate::access::covered(doc.role, doc.projects),
        created_at: doc.created_at,
        expires_at: doc.expires_at,
        created_by: doc.created_by,
        revoked: doc.revoked,
        revoked_at: doc.revoked_at,
    }
}

pub async fn create(store: &Store, by: &Caller, input: OperatorIn) -> Result<OperatorCreated> {
    if input.role == Role::Owner && input.projects != [ALL_PROJECTS] {
        return Err(Error::InvalidRequest(
            "projects: an owner covers every project: must be [\"*\"]".into(),
        ));
    }
    for _ in 0..CREATE_ATTEMPTS {
        let operator_id = random_id(OPERATOR_ID_PREFIX)?;
        let secret = random_secret()?;
        let parsed = Secret::parse(&secret).map_err(|e| Error::Internal(e.to_string()))?;
        let doc = OperatorDoc {
            operator_id: operator_id.clone(),
            name: input.name.clone(),
            role: input.role,
            projects: input.projects.clone(),
            created_at: stamp(),
            expires_at: input.expires_at,
            created_by: by.actor.clone(),
            revoked: false,
            revoked_at: None,
            secret_hash: token_digest(&parsed),
        };
        if store.insert_operator(&doc).await? {
            tracing::info!(operator_id = %operator_id, role = ?doc.role, "operator created");
            return Ok(OperatorCreated {
                token: Token::expose(&operator_id, &secret),
                operator_id,
                name: doc.name,
                role: doc.role,
                projects: doc.projects,
                created_at: doc.created_at,
                expires_at: doc.expires_at,
            });
        }
    }
    Err(Error::Internal("could not find a free operator id".into()))
}

pub async fn list(store: &Store, query: OperatorsQuery) -> Result<OperatorsOut> {
    let (docs, next) = store
        .list_operators(query.cursor.as_deref(), crate::page::limit(query.limit))
        .await?;
    Ok(OperatorsOut {
        items: docs.into_iter().map(out).collect(),
        next,
    })
}

/// Revokes the operator: its token is refused from its next call on.
pub async fn revoke(store: &Store, operator_id: &str) -> Result<OperatorRevoked> {
    if !crate::access::is_operator_id(operator_id) || !store.revoke_operator(operator_id).await? {
        return Err(Error::OperatorNotFound);
    }
    tracing::info!(operator_id, "operator revoked");
    Ok(OperatorRevoked {
        operator_id: operator_id.to_owned(),
        revoked: true,
    })
}

pub fn whoami(caller: Caller) -> Whoami {
    Whoami {
        operator_id: caller.actor,
        name: caller.name,
        role: caller.role,
        projects: caller.projects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_list_is_ids_or_a_lone_star() {
        let list =
            |l: &[&str]| valid_projects(&l.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
        assert!(list(&["alpha", "beta"]).is_ok());
        assert!(list(&["*"]).is_ok());
        assert!(list(&[]).is_err());
        assert!(list(&["*", "alpha"]).is_err());
        assert!(list(&["al pha"]).is_err());
    }
}
