//! Admin operations: create and read projects, mint, revoke and list keys.
//!
//! Plain async functions over the store and the hasher, and the wire types
//! they take and return (validated by `validator` at the HTTP edge). This is
//! the only place new secrets are generated.

use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::key::{ApiKey, KeyId, ProjectId, Secret};
use crate::store::{now, KeyDoc, KeyMeta, ProjectDoc, Store};

/// Random characters in a minted key id, after `k_`.
const KEY_ID_CHARS: usize = 12;
/// Characters in a minted secret: 43 x 6 bits = 258 bits of entropy.
const SECRET_CHARS: usize = 43;
/// The secret alphabet; its first 62 characters are the key id alphabet.
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Key id collisions are astronomically rare; a few retries are plenty.
const MINT_ATTEMPTS: usize = 5;

fn project_id(id: &str) -> Result<(), ValidationError> {
    ProjectId::parse(id)
        .map(|_| ())
        .map_err(|e| ValidationError::new("project_id").with_message(e.to_string().into()))
}

fn key_id(id: &str) -> Result<(), ValidationError> {
    KeyId::parse(id)
        .map(|_| ())
        .map_err(|e| ValidationError::new("key_id").with_message(e.to_string().into()))
}

fn in_future(at: f64) -> Result<(), ValidationError> {
    if at.is_finite() && at > now() {
        Ok(())
    } else {
        Err(ValidationError::new("expires_at")
            .with_message("must be a Unix time in the future".into()))
    }
}

fn parse<T>(r: std::result::Result<T, crate::key::KeyError>) -> Result<T> {
    r.map_err(|e| Error::InvalidRequest(e.to_string()))
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ProjectIn {
    #[validate(custom(function = "project_id"))]
    pub project_id: String,
    #[validate(length(min = 1, max = 200))]
    pub label: String,
    #[validate(length(min = 1, max = 200))]
    pub owner: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct MintIn {
    #[validate(custom(function = "project_id"))]
    pub project_id: String,
    #[validate(length(min = 1, max = 200))]
    pub owner: String,
    #[validate(length(min = 1, max = 200))]
    pub server_name: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[validate(custom(function = "in_future"))]
    pub expires_at: Option<f64>,
    #[validate(range(min = 1))]
    pub rate_limit_per_minute: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MintOut {
    /// The full key. Shown once, here, and stored nowhere.
    pub api_key: String,
    pub project_id: String,
    pub key_id: String,
    pub expires_at: Option<f64>,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RevokeIn {
    #[validate(custom(function = "project_id"))]
    pub project_id: String,
    #[validate(custom(function = "key_id"))]
    pub key_id: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(custom(function = "project_id"))]
    pub project_id: String,
    #[validate(range(min = 1, max = 100))]
    pub limit: Option<u64>,
    #[validate(custom(function = "key_id"))]
    pub cursor: Option<String>,
}

/// A key as listed: everything but the hash.
#[derive(Debug, Serialize)]
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
}

#[derive(Debug, Serialize)]
pub struct ListOut {
    pub items: Vec<KeyOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next: Option<String>,
}

pub async fn create_project(store: &Store, input: ProjectIn) -> Result<ProjectDoc> {
    let doc = ProjectDoc {
        project_id: input.project_id,
        label: input.label,
        owner: input.owner,
        created_at: now(),
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
    for _ in 0..MINT_ATTEMPTS {
        let key = ApiKey {
            project_id: project.clone(),
            key_id: parse(KeyId::parse(&random_key_id()?))?,
            secret: parse(Secret::parse(&random_secret()?))?,
        };
        let doc = KeyDoc {
            key_id: key.key_id.to_string(),
            project_id: project.to_string(),
            owner: input.owner.clone(),
            server_name: input.server_name.clone(),
            metadata: input.metadata.clone(),
            secret_hash: hasher.hash(&key.secret).await?,
            disabled: false,
            created_at: now(),
            expires_at: input.expires_at,
            rate_limit_per_minute: input.rate_limit_per_minute,
        };
        if store.insert_key(&project, &doc).await? {
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

pub async fn revoke(store: &Store, input: RevokeIn) -> Result<()> {
    let project = parse(ProjectId::parse(&input.project_id))?;
    let key_id = parse(KeyId::parse(&input.key_id))?;
    if !store.disable_key(&project, &key_id).await? {
        return Err(Error::KeyNotFound);
    }
    tracing::info!(project_id = %project, key_id = %key_id, "key revoked");
    Ok(())
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
        .list_keys(&project, cursor.as_ref(), query.limit.unwrap_or(50))
        .await?;
    Ok(ListOut {
        items: page.keys.into_iter().map(key_out).collect(),
        next: page.next,
    })
}

fn key_out((doc, meta): (KeyDoc, KeyMeta)) -> KeyOut {
    KeyOut {
        key_id: doc.key_id,
        owner: doc.owner,
        server_name: doc.server_name,
        metadata: doc.metadata,
        created_at: doc.created_at,
        disabled: doc.disabled,
        expires_at: doc.expires_at,
        usage_count: meta.usage_count,
        last_used: meta.last_used,
    }
}

fn os_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Internal(format!("OS random source: {e}")))?;
    Ok(bytes)
}

/// `k_` and 12 of `[A-Za-z0-9]` from the OS CSPRNG. Bytes of 248 and over
/// are dropped so that `% 62` has no bias (248 = 4 x 62).
fn random_key_id() -> Result<String> {
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
    Ok(format!("k_{id}"))
}

/// 43 characters of `[A-Za-z0-9_-]` from the OS CSPRNG. Each byte picks one
/// of 64 characters (256 is a multiple of 64, so there is no bias).
fn random_secret() -> Result<String> {
    let bytes: [u8; SECRET_CHARS] = os_bytes()?;
    Ok(bytes
        .iter()
        .map(|b| SECRET_ALPHABET[(b & 63) as usize] as char)
        .collect())
}
