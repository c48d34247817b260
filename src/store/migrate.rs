//! `keyward migrate`'s commands, with the `migrator` user: the manager's
//! permissions plus `SCAN`, `TYPE`, `SSCAN`/`SCARD`/`SMOVE`, `ZCARD`,
//! `RENAME`/`RENAMENX` on the index keys, and `DEL` on its own working keys
//! only (see `redis/users.acl`).
//!
//! Each method is one step that is safe to repeat; the order of the steps,
//! which is what makes the conversion safe, is in `crate::migrate`.
//!
//! On a Redis Cluster (a `redis-cluster://` URL) projects are found with
//! `SCAN` on every master, and the working keys carry the index's name as a
//! hash tag (`names::migrate_backup`), so `RENAME` and `SMOVE` between them
//! and the index stay in one slot.

use std::collections::BTreeSet;

use fred::prelude::{
    ClientLike, Error as FredError, KeysInterface, Pool, RedisJsonInterface, SetsInterface,
    SortedSetsInterface, StreamsInterface, Value,
};
use fred::types::{ClusterHash, CustomCommand, Key, SetOptions};
use futures::TryStreamExt;
use secrecy::ExposeSecret;

use super::entry::{field, Entry};
use super::{get_doc, is_wrongtype, names, send, zrange_after, KeyDoc, ProjectDoc};
use crate::config::MigrateConfig;
use crate::error::{Error, Result};
use crate::key::ProjectId;

/// Ids moved per command when copying an index.
const CHUNK: usize = 1_000;

fn failed(what: &str, key: &str, e: FredError) -> Error {
    Error::Unavailable(format!("{what} {key}: {e}"))
}

/// What a Redis key holds, as far as migration cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Sorted,
    Set,
    Missing,
    /// Any other type, named as `TYPE` names it.
    Other(String),
}

impl Kind {
    fn from_type(t: &str) -> Self {
        match t {
            "zset" => Kind::Sorted,
            "set" => Kind::Set,
            "none" => Kind::Missing,
            other => Kind::Other(other.to_owned()),
        }
    }
}

/// A project's index and the conversion's working keys, with their sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexState {
    pub index: Kind,
    pub index_len: u64,
    /// The old set moved aside, if a conversion is under way.
    pub backup: Kind,
    pub backup_len: u64,
    /// The sorted set being built, if a conversion is under way.
    pub building: Kind,
    pub building_len: u64,
}

/// A key document, as migration finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    /// No document (the index names a key that was deleted).
    Missing,
    /// Cannot be read as a key document: left as it is.
    Unreadable(String),
    /// Readable; these top-level fields are absent and get their defaults.
    Readable(Vec<(String, serde_json::Value)>),
}

/// Every field of keyward's key document with the value a document that
/// lacks it reads as: what `migrate` writes into such a document.
pub fn key_doc_defaults() -> Vec<(String, serde_json::Value)> {
    match serde_json::to_value(KeyDoc::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The `migrator` user's connection.
pub struct Migrator {
    pool: Pool,
    client_name: String,
    /// Connected to a Redis Cluster.
    cluster: bool,
}

impl Migrator {
    pub async fn connect(config: &MigrateConfig) -> Result<Self> {
        let pool = super::connect_url(
            config.redis_url.expose_secret(),
            &config.redis_tls,
            config.redis_timeout,
            1,
            "migrator",
        )
        .await?;
        Ok(Self {
            cluster: pool.is_clustered(),
            pool,
            client_name: "keyward-migrate".to_owned(),
        })
    }

    /// The project's index conversion's backup key (see `names`).
    pub fn backup_key(&self, project: &ProjectId) -> String {
        names::migrate_backup(project, self.cluster)
    }

    /// The project's index conversion's sorted set under construction.
    pub fn building_key(&self, project: &ProjectId) -> String {
        names::migrate_building(project, self.cluster)
    }

    /// Every project id named by a `project:*` key, found with `SCAN` (never
    /// `KEYS`, which blocks Redis for the whole keyspace). On a cluster, SCAN
    /// walks one node's keys only, so fred runs it on every master; a
    /// resharding meanwhile may hide a project that moves between masters:
    /// run migrate again after one.
    pub async fn project_ids(&self) -> Result<BTreeSet<String>> {
        let client = self.pool.next();
        let pattern = format!("{}*", names::PROJECT);
        let keys: Vec<Key> = match self.cluster {
            true => {
                client
                    .scan_cluster_buffered(&pattern, Some(1_000), None)
                    .try_collect()
                    .await
            }
            false => {
                client
                    .scan_buffered(&pattern, Some(1_000), None)
                    .try_collect()
                    .await
            }
        }
        .map_err(|e| failed("SCAN", &pattern, e))?;
        Ok(keys
            .iter()
            .filter_map(|k| k.as_str()?.strip_prefix(names::PROJECT))
            .map(str::to_owned)
            .collect())
    }

    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    /// Whether the project's document reads as one; `Err` text says why not.
    pub async fn check_project(&self, project: &ProjectId) -> Result<Option<String>> {
        let key = names::project(project);
        match get_doc::<_, Option<String>>(&self.pool, &key).await {
            Ok(Some(raw)) => Ok(serde_json::from_str::<ProjectDoc>(&raw)
                .err()
                .map(|e| super::parse_problem("a project document", &e))),
            Ok(None) => Ok(None),
            Err(e) if is_wrongtype(&e) => Ok(Some("not a JSON document".into())),
            Err(e) => Err(failed("JSON.GET", &key, e)),
        }
    }

    async fn kind(&self, key: &str) -> Result<(Kind, u64)> {
        let t: String = self
            .pool
            .r#type(key)
            .await
            .map_err(|e| failed("TYPE", key, e))?;
        let kind = Kind::from_type(&t);
        let len = match kind {
            Kind::Sorted => self.pool.zcard(key).await,
            Kind::Set => self.pool.scard(key).await,
            _ => Ok(0),
        }
        .map_err(|e| failed("counting", key, e))?;
        Ok((kind, len))
    }

    pub async fn index_state(&self, project: &ProjectId) -> Result<IndexState> {
        let (index, index_len) = self.kind(&names::keyset(project)).await?;
        let (backup, backup_len) = self.kind(&self.backup_key(project)).await?;
        let (building, building_len) = self.kind(&self.building_key(project)).await?;
        Ok(IndexState {
            index,
            index_len,
            backup,
            backup_len,
            building,
            building_len,
        })
    }

    /// One `SSCAN` step over a set: the next cursor (`"0"` when done) and members.
    pub async fn set_page(&self, key: &str, cursor: &str) -> Result<(String, Vec<String>)> {
        let reply: Value = self
            .pool
            .next()
            .custom(
                CustomCommand::new_static("SSCAN", ClusterHash::FirstKey, false),
                vec![
                    key.to_owned(),
                    cursor.to_owned(),
                    "COUNT".into(),
                    CHUNK.to_string(),
                ],
            )
            .await
            .map_err(|e| failed("SSCAN", key, e))?;
        reply
            .convert()
            .map_err(|e| failed("SSCAN reply of", key, e))
    }

    /// Up to `CHUNK` members of a sorted set after `after`, in byte order.
    pub async fn sorted_page(&self, key: &str, after: Option<&str>) -> Result<Vec<String>> {
        zrange_after(&self.pool, key, after, CHUNK as u64)
            .await
            .map_err(|e| failed("ZRANGE", key, e))
    }

    /// Every member of `key`, a set or a sorted set (nothing if missing).
    pub async fn members(&self, key: &str, kind: &Kind) -> Result<Vec<String>> {
        let mut all = Vec::new();
        match kind {
            Kind::Set => {
                let mut cursor = "0".to_owned();
                loop {
                    let (next, page) = self.set_page(key, &cursor).await?;
                    all.extend(page);
                    if next == "0" {
                        break;
                    }
                    cursor = next;
                }
            }
            Kind::Sorted => loop {
                let page = self
                    .sorted_page(key, all.last().map(String::as_str))
                    .await?;
                let done = page.len() < CHUNK;
                all.extend(page);
                if done {
                    break;
                }
            },
            _ => {}
        }
        Ok(all)
    }

    /// `ZADD key 0 id...`: how many were new, or `None` if `key` is not a
    /// sorted set (it turned into a plain set meanwhile).
    pub async fn add_sorted(&self, key: &str, ids: &[String]) -> Result<Option<u64>> {
        if ids.is_empty() {
            return Ok(Some(0));
        }
        let values: Vec<(f64, &str)> = ids.iter().map(|id| (0.0, id.as_str())).collect();
        match self.pool.zadd(key, None, None, false, false, values).await {
            Ok(added) => Ok(Some(added)),
            Err(e) if is_wrongtype(&e) => Ok(None),
            Err(e) => Err(failed("ZADD", key, e)),
        }
    }

    /// `RENAME from to`, replacing `to` (callers make sure nothing is there).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.pool
            .rename::<(), _, _>(from, to)
            .await
            .map_err(|e| failed("RENAME", from, e))
    }

    /// `RENAMENX from to`: `false` if `to` exists.
    pub async fn rename_nx(&self, from: &str, to: &str) -> Result<bool> {
        self.pool
            .renamenx(from, to)
            .await
            .map_err(|e| failed("RENAMENX", from, e))
    }

    /// Moves every member of the set `from` into the set `to` with `SMOVE`,
    /// one atomic move each, so no member is ever in neither; Redis deletes
    /// `from` when it is empty.
    pub async fn move_members(&self, from: &str, to: &str) -> Result<u64> {
        let mut moved = 0;
        for id in self.members(from, &Kind::Set).await? {
            let ok: bool = self
                .pool
                .smove(from, to, id.as_str())
                .await
                .map_err(|e| failed("SMOVE", from, e))?;
            moved += u64::from(ok);
        }
        Ok(moved)
    }

    /// Deletes one of migration's own working keys (the only `DEL` the
    /// migrator user may run).
    pub async fn delete_working_key(&self, key: &str) -> Result<()> {
        self.pool
            .del::<u64, _>(key)
            .await
            .map(|_| ())
            .map_err(|e| failed("DEL", key, e))
    }

    /// The documents of `ids` in `project`, read in one pipeline.
    pub async fn docs(&self, project: &ProjectId, ids: &[String]) -> Result<Vec<Doc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.pool.next().pipeline();
        for id in ids {
            let () = get_doc(&pipe, &names::apikey(project.as_str(), id))
                .await
                .map_err(|e| failed("JSON.GET", id, e))?;
        }
        let defaults = key_doc_defaults();
        let results = send(pipe, ids.len()).await?;
        let mut docs = Vec::with_capacity(ids.len());
        for (id, result) in ids.iter().zip(results) {
            docs.push(match result {
                Ok(Value::Null) => Doc::Missing,
                Ok(value) => match value.as_str() {
                    Some(raw) => classify(&raw, &defaults),
                    None => Doc::Unreadable("JSON.GET did not answer with text".into()),
                },
                Err(e) if is_wrongtype(&e) => Doc::Unreadable("not a JSON document".into()),
                Err(e) => {
                    let key = names::apikey(project.as_str(), id);
                    return Err(failed("JSON.GET", &key, e));
                }
            });
        }
        Ok(docs)
    }

    /// Adds each absent field with `JSON.SET <path> <value> NX`: a field
    /// written meanwhile (by keyward's update-key, say) is never overwritten.
    /// Returns how many fields were added.
    pub async fn add_fields(
        &self,
        project: &ProjectId,
        id: &str,
        fields: &[(String, serde_json::Value)],
    ) -> Result<u64> {
        let key = names::apikey(project.as_str(), id);
        let pipe = self.pool.next().pipeline();
        for (name, value) in fields {
            let _: () = pipe
                .json_set(
                    &key,
                    format!("$.{name}"),
                    value.to_string(),
                    Some(SetOptions::NX),
                )
                .await
                .map_err(|e| failed("JSON.SET", &key, e))?;
        }
        let mut added = 0;
        for result in send(pipe, fields.len()).await? {
            match result {
                Ok(Value::Null) => {} // there already
                Ok(_) => added += 1,
                // Deleted meanwhile: JSON.SET creates nothing below the root.
                Err(e) if e.details().contains("at the root") => {}
                Err(e) => return Err(failed("JSON.SET", &key, e)),
            }
        }
        Ok(added)
    }

    /// One `audit:admin` entry for what migration changed in a project.
    pub async fn audit(&self, project: &ProjectId, action: &str) -> Result<()> {
        let fields = Entry::now()
            .with(field::ACTION, action)
            .with(field::PROJECT_ID, project.to_string())
            .with(field::KEY_ID, "")
            .with(field::CLIENT, self.client_name.as_str())
            .fields();
        self.pool
            .xadd::<(), _, _, _, _>(names::AUDIT_ADMIN, false, None, "*", fields)
            .await
            .map_err(|e| failed("XADD", names::AUDIT_ADMIN, e))
    }
}

/// Sorts a document read as text into readable (with its absent fields) or not.
fn classify(raw: &str, defaults: &[(String, serde_json::Value)]) -> Doc {
    if let Err(e) = serde_json::from_str::<KeyDoc>(raw) {
        return Doc::Unreadable(super::parse_problem("a key document", &e));
    }
    let Ok(serde_json::Value::Object(present)) = serde_json::from_str(raw) else {
        return Doc::Unreadable("not a JSON object".into());
    };
    Doc::Readable(
        defaults
            .iter()
            .filter(|(name, _)| !present.contains_key(name))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_of_the_original_service_lacks_exactly_the_newer_fields() {
        let legacy = json!({
            "key_id": "k_abc1234", "project_id": "p", "owner": "o",
            "metadata": "{\"server\":\"s1\"}", "secret_hash": "$argon2id$...",
            "disabled": false, "created_at": 1.7e9, "expires_at": null
        });
        let Doc::Readable(missing) = classify(&legacy.to_string(), &key_doc_defaults()) else {
            panic!("readable");
        };
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"server_name") && names.contains(&"rate_limit_per_minute"));
        assert!(!names.contains(&"metadata") && !names.contains(&"secret_hash"));
        let server_name = missing.iter().find(|(n, _)| n == "server_name").unwrap();
        assert_eq!(server_name.1, json!(""));
        assert!(!names.contains(&"unreadable"), "not a stored field");
    }

    #[test]
    fn a_full_document_lacks_nothing_and_a_broken_one_is_left_alone() {
        let full = serde_json::to_string(&KeyDoc::default()).unwrap();
        assert_eq!(classify(&full, &key_doc_defaults()), Doc::Readable(vec![]));
        for broken in ["not json", "\"a string\"", r#"{"key_id":"k_abc1234"}"#] {
            assert!(matches!(
                classify(broken, &key_doc_defaults()),
                Doc::Unreadable(_)
            ));
        }
        let typed =
            r#"{"key_id":"k_abc1234","project_id":"p","secret_hash":"h","disabled":"SECRET"}"#;
        let Doc::Unreadable(why) = classify(typed, &key_doc_defaults()) else {
            panic!("unreadable");
        };
        assert!(!why.contains("SECRET"), "the content never shows: {why}");
        assert!(why.contains("wrong type"), "{why}");
    }
}
