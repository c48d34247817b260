//! The admin path's commands, with the `manager` user. Every write is
//! followed by its `audit:admin` entry.

use fred::prelude::{
    HashesInterface, KeysInterface, Pool, RedisJsonInterface, SortedSetsInterface, StreamsInterface,
};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind, ZSort};
use fred::types::SetOptions;

use super::{is_noperm, key_doc, names, now, send, send_all, unavailable, Store, NO_FMT, ROOT};
use super::{KeyDoc, KeyMeta, KeyPage, ProjectDoc};
use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};

/// A NOPERM on a project this deployment may not touch reads as "not found".
fn or_not_found(not_found: Error) -> impl FnOnce(fred::prelude::Error) -> Error {
    move |e| {
        if is_noperm(&e) {
            not_found
        } else {
            unavailable(e)
        }
    }
}

fn meta_from(fields: Vec<Option<String>>) -> KeyMeta {
    let field = |i: usize| fields.get(i).cloned().flatten();
    KeyMeta {
        usage_count: field(0).and_then(|v| v.parse().ok()).unwrap_or(0),
        last_used: field(1).and_then(|v| v.parse().ok()),
    }
}

impl Store {
    fn admin(&self) -> Result<&Pool> {
        self.admin
            .as_ref()
            .ok_or_else(|| Error::Internal("admin Redis pool is not configured".into()))
    }

    fn admin_audit_fields(
        &self,
        action: &str,
        project: &ProjectId,
        key_id: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("ts", now().to_string()),
            ("action", action.to_owned()),
            ("project_id", project.to_string()),
            ("key_id", key_id.to_owned()),
            ("client", self.client_name.clone()),
        ]
    }

    async fn admin_audit(&self, action: &str, project: &ProjectId, key_id: &str) -> Result<()> {
        self.admin()?
            .xadd::<(), _, _, _, _>(
                names::AUDIT_ADMIN,
                false,
                self.audit_cap(),
                "*",
                self.admin_audit_fields(action, project, key_id),
            )
            .await
            .map_err(unavailable)
    }

    /// Creates the project document; `false` if it already exists.
    pub async fn create_project(&self, doc: &ProjectDoc) -> Result<bool> {
        let project =
            ProjectId::parse(&doc.project_id).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let json = serde_json::to_string(doc).map_err(|e| Error::Internal(e.to_string()))?;
        let created: Option<String> = self
            .admin()?
            .json_set(names::project(&project), "$", json, Some(SetOptions::NX))
            .await
            .map_err(or_not_found(Error::ProjectNotFound))?;
        if created.is_none() {
            return Ok(false);
        }
        self.admin_audit("create_project", &project, "").await?;
        Ok(true)
    }

    /// The project's document; `None` if it does not exist or this
    /// deployment may not read it.
    pub async fn get_project(&self, project: &ProjectId) -> Result<Option<ProjectDoc>> {
        let raw: Option<String> = match self
            .admin()?
            .json_get(names::project(project), NO_FMT, NO_FMT, NO_FMT, ROOT)
            .await
        {
            Ok(raw) => raw,
            Err(e) if is_noperm(&e) => None,
            Err(e) => return Err(unavailable(e)),
        };
        raw.map(|s| {
            serde_json::from_str(&s).map_err(|e| Error::Internal(format!("project:{project}: {e}")))
        })
        .transpose()
    }

    /// Stores a new key; `false` if the key id is taken (never overwrites).
    pub async fn insert_key(&self, project: &ProjectId, doc: &KeyDoc) -> Result<bool> {
        let admin = self.admin()?;
        let json = serde_json::to_string(doc).map_err(|e| Error::Internal(e.to_string()))?;
        let created: Option<String> = admin
            .json_set(
                names::apikey(project.as_str(), &doc.key_id),
                "$",
                json,
                Some(SetOptions::NX),
            )
            .await
            .map_err(unavailable)?;
        if created.is_none() {
            return Ok(false);
        }
        let pipe = admin.next().pipeline();
        let _: () = pipe
            .zadd(
                names::keyset(project),
                None,
                None,
                false,
                false,
                (0.0, doc.key_id.as_str()),
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .xadd(
                names::AUDIT_ADMIN,
                false,
                self.audit_cap(),
                "*",
                self.admin_audit_fields("mint", project, &doc.key_id),
            )
            .await
            .map_err(unavailable)?;
        send_all(pipe, 2).await?;
        Ok(true)
    }

    /// The key's document and usage; `None` if there is no such key (or this
    /// deployment may not read it).
    pub async fn get_key(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
    ) -> Result<Option<(KeyDoc, KeyMeta)>> {
        let admin = self.admin()?;
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let pipe = admin.next().pipeline();
        let _: () = pipe
            .json_get(&doc_key, NO_FMT, NO_FMT, NO_FMT, ROOT)
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .hmget(
                names::meta(project.as_str(), key_id.as_str()),
                vec!["usage_count", "last_used"],
            )
            .await
            .map_err(unavailable)?;
        let [doc, meta]: [_; 2] = send(pipe, 2)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("get-key pipeline result count".into()))?;
        let raw: Option<String> = match doc {
            Err(e) if is_noperm(&e) => None,
            Err(e) => return Err(unavailable(e)),
            Ok(v) => v.convert().map_err(|_| Error::Unreadable)?,
        };
        let Some(raw) = raw else { return Ok(None) };
        let doc = key_doc(&doc_key, &raw).ok_or(Error::Unreadable)?;
        let meta = meta.map_err(unavailable)?.convert().unwrap_or_default();
        Ok(Some((doc, meta_from(meta))))
    }

    /// Sets `fields` (name, JSON value) of an existing key document in one
    /// atomic `JSON.MSET`, then audits `action`. `false` if there is no such
    /// key. Fields not named are left as they are, unknown ones included.
    pub async fn set_key_fields(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        fields: &[(&str, serde_json::Value)],
        action: &str,
    ) -> Result<bool> {
        let admin = self.admin()?;
        let key = names::apikey(project.as_str(), key_id.as_str());
        let exists: u64 = admin
            .exists(&key)
            .await
            .map_err(or_not_found(Error::KeyNotFound))?;
        if exists == 0 {
            return Ok(false);
        }
        if !fields.is_empty() {
            let values = fields
                .iter()
                .map(|(name, value)| (key.as_str(), format!("$.{name}"), value.to_string()))
                .collect();
            let _: () = admin.json_mset(values).await.map_err(unavailable)?;
        }
        self.admin_audit(action, project, key_id.as_str()).await?;
        Ok(true)
    }

    /// One page of the project's keys in key-id order, after `cursor`.
    ///
    /// Paging walks the sorted set lexicographically from the last id seen,
    /// so every key that exists for the whole walk is returned exactly once,
    /// whatever is minted meanwhile.
    pub async fn list_keys(
        &self,
        project: &ProjectId,
        cursor: Option<&KeyId>,
        limit: u64,
    ) -> Result<KeyPage> {
        let admin = self.admin()?;
        let min = match cursor {
            Some(c) => ZRange {
                kind: ZRangeKind::Exclusive,
                range: ZRangeBound::Lex(c.to_string()),
            },
            None => ZRange {
                kind: ZRangeKind::Inclusive,
                range: ZRangeBound::NegInfinityLex,
            },
        };
        let max = ZRange {
            kind: ZRangeKind::Inclusive,
            range: ZRangeBound::InfiniteLex,
        };
        let ids: Vec<String> = admin
            .zrange(
                names::keyset(project),
                min,
                max,
                Some(ZSort::ByLex),
                false,
                Some((0, limit as i64)),
                false,
            )
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(KeyPage {
                keys: Vec::new(),
                next: None,
            });
        }
        let pipe = admin.next().pipeline();
        for id in &ids {
            let _: () = pipe
                .json_get(
                    names::apikey(project.as_str(), id),
                    NO_FMT,
                    NO_FMT,
                    NO_FMT,
                    ROOT,
                )
                .await
                .map_err(unavailable)?;
            let _: () = pipe
                .hmget(
                    names::meta(project.as_str(), id),
                    vec!["usage_count", "last_used"],
                )
                .await
                .map_err(unavailable)?;
        }
        let results = send(pipe, 2 * ids.len()).await?;
        let mut keys = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(results.chunks(2)) {
            let [doc, meta] = pair else { break };
            let doc = doc.clone().map_err(unavailable)?;
            let Some(raw) = doc.as_str() else { continue }; // deleted meanwhile
            let Some(doc) = key_doc(&names::apikey(project.as_str(), id), &raw) else {
                continue; // logged and counted by key_doc
            };
            let meta = meta
                .clone()
                .map_err(unavailable)?
                .convert()
                .unwrap_or_default();
            keys.push((doc, meta_from(meta)));
        }
        let next = (ids.len() as u64 == limit)
            .then(|| ids.last().cloned())
            .flatten();
        Ok(KeyPage { keys, next })
    }
}
