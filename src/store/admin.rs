//! The admin path's commands, with the `manager` user. Each admin call's
//! `audit:admin` entry is written by `http::access`, once per call.
//!
//! A project's index is normally a sorted set (ids at score 0, paged by
//! `ZRANGE BYLEX`); in a deployment adopted from the original service it may
//! be a plain set, which is read and written as a set (`SMEMBERS`, `SADD`)
//! and never converted here: the old service may still be writing it. Only
//! `keyward migrate` converts it. Any other type is unreadable data (409).

use fred::clients::{Client, Pipeline};
use fred::interfaces::{ClientInterface, ServerInterface};
use fred::prelude::{ClientLike, Error as FredError, Options, Server};
use fred::prelude::{
    HashesInterface, KeysInterface, Pool, RedisJsonInterface, SetsInterface, SortedSetsInterface,
    Value,
};
use fred::types::{ClusterHash, Expiration, SetOptions};
use fred::util::redis_keyslot;
use std::collections::HashMap;

use super::{data_error, is_noperm, is_wrongtype, key_doc, names, report_unreadable};
use super::{get_doc, now, send, unavailable, zrange_after, Store};
use super::{KeyDoc, KeyMeta, KeyPage, ProjectDoc};
use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};
use crate::telemetry::metric;

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

/// How many times an index operation is retried when the index changes
/// type under it (`keyward migrate` converting it meanwhile).
const INDEX_ATTEMPTS: usize = 3;

/// What a project's index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Sorted,
    Set,
    /// No index yet: the project has no keys.
    Missing,
}

fn unreadable_index(redis_key: &str, kind: &str) -> Error {
    report_unreadable(
        redis_key,
        &format!("a project's index must be a sorted set or a set, not a {kind}"),
    );
    Error::Unreadable
}

fn meta_from(fields: Vec<Option<String>>) -> KeyMeta {
    let field = |i: usize| fields.get(i).cloned().flatten();
    KeyMeta {
        usage_count: field(0).and_then(|v| v.parse().ok()).unwrap_or(0),
        last_used: field(1).and_then(|v| v.parse().ok()),
        credits: None,
    }
}

/// What a credit counter holds when it is not an integer, for the log.
const NOT_A_BALANCE: &str = "a credit balance is not an integer";

/// Queues a key's document and its usage (`apimeta`) on `pipe`: what
/// `get-key` and every `list-keys` item show.
async fn queue_doc_and_meta(
    pipe: &Pipeline<Client>,
    project: &ProjectId,
    key_id: &str,
) -> Result<()> {
    let () = get_doc(pipe, &names::apikey(project.as_str(), key_id))
        .await
        .map_err(unavailable)?;
    pipe.hmget(
        names::meta(project.as_str(), key_id),
        vec!["usage_count", "last_used"],
    )
    .await
    .map_err(unavailable)
}

impl Store {
    pub(super) fn admin(&self) -> Result<&Pool> {
        self.admin
            .as_ref()
            .ok_or_else(|| Error::Internal("admin Redis pool is not configured".into()))
    }

    /// With `KEYWARD_ADMIN_WAIT_REPLICAS=N` (N > 0), waits until N replicas
    /// of the master holding `key` have every write `client` sent it so far
    /// (`WAIT`, on that same connection), for at most half the Redis command
    /// deadline: a revoke answered once its replica has it survives that
    /// master's failover. `connections` are `client`'s connection ids from
    /// before the write: a `WAIT` on a connection that was replaced since
    /// proves nothing.
    ///
    /// Never an error: the write is done on the master, and refusing now
    /// would lose a rotated secret the caller never saw. Fewer replicas in
    /// time, a changed connection, or a `WAIT` that fails (no `WAIT` in the
    /// manager's ACL, a timeout, a lost connection) are logged and counted
    /// (`keyward_admin_writes_unconfirmed_total`).
    async fn wait_for_replicas(
        &self,
        client: &Client,
        connections: HashMap<Server, i64>,
        key: &str,
    ) {
        let wanted = i64::try_from(self.admin_wait_replicas).unwrap_or(i64::MAX);
        if wanted == 0 {
            return;
        }
        let options = Options {
            cluster_hash: Some(ClusterHash::Custom(redis_keyslot(key.as_bytes()))),
            // Room for the server-side wait itself, with its own deadline.
            timeout: Some(self.admin_wait_timeout * 2),
            ..Default::default()
        };
        let timeout = i64::try_from(self.admin_wait_timeout.as_millis()).unwrap_or(i64::MAX);
        let answer: std::result::Result<i64, FredError> = client
            .with_options(&options)
            .wait(wanted, timeout.max(1))
            .await;
        let problem = match answer {
            Ok(_) if client.connection_ids() != connections => {
                "the connection was replaced after the write".to_owned()
            }
            Ok(confirmed) if confirmed >= wanted => return,
            Ok(confirmed) => format!("{confirmed} of {wanted} replicas confirmed it in time"),
            Err(e) => format!("WAIT failed: {e}"),
        };
        tracing::warn!(
            redis_key = key,
            problem,
            "an admin write is done but not confirmed by its replicas"
        );
        metrics::counter!(metric::ADMIN_WRITES_UNCONFIRMED).increment(1);
    }

    /// Creates the project document; `false` if it already exists.
    pub async fn create_project(&self, doc: &ProjectDoc) -> Result<bool> {
        let project =
            ProjectId::parse(&doc.project_id).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let json = serde_json::to_string(doc).map_err(|e| Error::Internal(e.to_string()))?;
        let key = names::project(&project);
        let created: Option<String> = match self
            .admin()?
            .json_set(&key, "$", json, Some(SetOptions::NX))
            .await
        {
            Ok(created) => created,
            Err(e) if is_noperm(&e) => return Err(Error::ProjectNotFound),
            Err(e) => return Err(data_error(&key, e)),
        };
        if created.is_none() {
            return Ok(false);
        }
        if let Err(e) = self.index_project(self.admin()?, &project).await {
            // Listed from its next read instead (see `get_project`).
            tracing::warn!(error = %e, project_id = %project, "project created, not indexed yet");
        }
        Ok(true)
    }

    /// The project's document; `None` if it does not exist or this
    /// deployment may not read it. A document that cannot be read is
    /// `Error::Unreadable` (logged). A project found is added to the
    /// deployment's projects index.
    pub async fn get_project(&self, project: &ProjectId) -> Result<Option<ProjectDoc>> {
        let key = names::project(project);
        let raw: Option<String> = match get_doc(self.admin()?, &key).await {
            Ok(raw) => raw,
            Err(e) if is_noperm(&e) => None,
            Err(e) => return Err(data_error(&key, e)),
        };
        let Some(raw) = raw else { return Ok(None) };
        let doc = serde_json::from_str(&raw).map_err(|e| {
            report_unreadable(&key, &super::parse_problem("a project document", &e));
            Error::Unreadable
        })?;
        // A project created before the index existed (or by the original
        // service) is listed from the first admin call that reads it. Best
        // effort: the read stands whether or not the index takes it.
        if let Err(e) = self.index_project(self.admin()?, project).await {
            tracing::debug!(error = %e, project_id = %project, "project not indexed yet");
        }
        Ok(Some(doc))
    }

    /// The type of the project's index; another type than a set or a
    /// sorted set is `Error::Unreadable` (logged).
    async fn index(&self, admin: &Pool, project: &ProjectId) -> Result<Index> {
        let key = names::keyset(project);
        let kind: String = admin
            .r#type(&key)
            .await
            .map_err(or_not_found(Error::ProjectNotFound))?;
        match kind.as_str() {
            "zset" => Ok(Index::Sorted),
            "set" => Ok(Index::Set),
            "none" => Ok(Index::Missing),
            other => Err(unreadable_index(&key, other)),
        }
    }

    /// Adds `key_id` to the project's index as the index is (`kind`, as
    /// last seen): `SADD` to a plain set, `ZADD` (score 0) to a sorted set or
    /// a missing index.
    async fn index_add(
        &self,
        admin: &Pool,
        project: &ProjectId,
        mut kind: Index,
        key_id: &str,
    ) -> Result<()> {
        let key = names::keyset(project);
        for _ in 0..INDEX_ATTEMPTS {
            let added: Result<(), _> = match kind {
                Index::Set => admin.sadd(&key, key_id).await,
                Index::Sorted | Index::Missing => {
                    admin
                        .zadd(&key, None, None, false, false, (0.0, key_id))
                        .await
                }
            };
            match added {
                Ok(()) => return Ok(()),
                // Converted between TYPE and the write: look again.
                Err(e) if is_wrongtype(&e) => kind = self.index(admin, project).await?,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Error::Unavailable(format!("{key} keeps changing type")))
    }

    /// Stores a new key and adds it to the project's index (a set or a
    /// sorted set, as it is); `false` if the key id is taken (never
    /// overwrites). An index of another type fails before anything is written.
    pub async fn insert_key(&self, project: &ProjectId, doc: &KeyDoc) -> Result<bool> {
        let admin = self.admin()?;
        let kind = self.index(admin, project).await?;
        let json = serde_json::to_string(doc).map_err(|e| Error::Internal(e.to_string()))?;
        let key = names::apikey(project.as_str(), &doc.key_id);
        let client = admin.next();
        let connections = client.connection_ids();
        let created: Option<String> = client
            .json_set(&key, "$", json, Some(SetOptions::NX))
            .await
            .map_err(|e| data_error(&key, e))?;
        if created.is_none() {
            return Ok(false);
        }
        self.index_add(admin, project, kind, &doc.key_id).await?;
        self.wait_for_replicas(client, connections, &key).await;
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
        queue_doc_and_meta(&pipe, project, key_id.as_str()).await?;
        let [doc, meta]: [_; 2] = send(pipe, 2)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("get-key pipeline result count".into()))?;
        let raw: Option<String> = match doc {
            Err(e) if is_noperm(&e) => None,
            Err(e) => return Err(data_error(&doc_key, e)),
            Ok(v) => v.convert().map_err(|_| {
                report_unreadable(&doc_key, "JSON.GET did not answer with text");
                Error::Unreadable
            })?,
        };
        let Some(raw) = raw else { return Ok(None) };
        let doc = key_doc(&doc_key, &raw).ok_or(Error::Unreadable)?;
        let meta = meta.map_err(unavailable)?.convert().unwrap_or_default();
        let mut key = [(doc, meta_from(meta))];
        self.read_credits(admin, project, &[key_id.as_str()], &mut key)
            .await?;
        let [key] = key;
        Ok(Some(key))
    }

    /// Reads the current period's credit balance of those of `keys` (whose
    /// ids are `ids`) that have credits into their `KeyMeta`, in one round
    /// trip; none when no key has credits (the period is the document's, so
    /// this cannot ride with the document's read). A balance that is not a
    /// number is logged and read as 0.
    async fn read_credits(
        &self,
        admin: &Pool,
        project: &ProjectId,
        ids: &[&str],
        keys: &mut [(KeyDoc, KeyMeta)],
    ) -> Result<()> {
        let at = now();
        let wanted: Vec<(usize, String)> = keys
            .iter()
            .zip(ids)
            .enumerate()
            .filter_map(|(i, ((doc, _), id))| {
                let (period, _) = doc.credits?.period(at);
                Some((i, names::credits(project.as_str(), id, &period)))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let pipe = admin.next().pipeline();
        for (_, key) in &wanted {
            let () = pipe.get(key).await.map_err(unavailable)?;
        }
        let results = send(pipe, wanted.len()).await?;
        for ((i, key), result) in wanted.iter().zip(results) {
            let balance = match result {
                Ok(Value::Null) => continue, // no counter (yet)
                Ok(value) => value.convert::<i64>().ok(),
                Err(e) if is_wrongtype(&e) => None,
                Err(e) => return Err(unavailable(e)),
            };
            keys[*i].1.credits = Some(balance.unwrap_or_else(|| {
                report_unreadable(key, NOT_A_BALANCE);
                0
            }));
        }
        Ok(())
    }

    /// Sets a key's credit balance for `period` (`SET`), expiring in `ttl`
    /// seconds, or never (any expiry it had is cleared).
    pub async fn set_credits(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        period: &str,
        balance: u64,
        ttl: Option<u64>,
    ) -> Result<()> {
        let admin = self.admin()?;
        let key = names::credits(project.as_str(), key_id.as_str(), period);
        let balance = i64::try_from(balance)
            .map_err(|_| Error::InvalidRequest("credits above 9223372036854775807".into()))?;
        let expire = ttl.map(|s| Expiration::EX(i64::try_from(s).unwrap_or(i64::MAX)));
        let client = admin.next();
        let connections = client.connection_ids();
        let () = client
            .set(&key, balance, expire, None, false)
            .await
            .map_err(unavailable)?;
        self.wait_for_replicas(client, connections, &key).await;
        Ok(())
    }

    /// Adds `amount` to a key's balance for `period` (`INCRBY`) and answers
    /// the new balance. With `start` (a refill's amount and the counter's
    /// expiry), first creates the period's counter with it when it is not
    /// there yet (`SET NX`), in the same round trip.
    pub async fn add_credits(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        period: &str,
        start: Option<(u64, u64)>,
        amount: i64,
    ) -> Result<i64> {
        let admin = self.admin()?;
        let key = names::credits(project.as_str(), key_id.as_str(), period);
        let client = admin.next();
        let connections = client.connection_ids();
        let pipe = client.pipeline();
        if let Some((balance, ttl)) = start {
            let balance = i64::try_from(balance).unwrap_or(i64::MAX);
            let expire = Expiration::EX(i64::try_from(ttl).unwrap_or(i64::MAX));
            let () = pipe
                .set(&key, balance, Some(expire), Some(SetOptions::NX), false)
                .await
                .map_err(unavailable)?;
        }
        let () = pipe.incr_by(&key, amount).await.map_err(unavailable)?;
        let expected = 1 + usize::from(start.is_some());
        let mut results = send(pipe, expected).await?;
        let added = results.pop().unwrap_or(Ok(Value::Null));
        if let Some(Err(e)) = results.pop() {
            return Err(unavailable(e));
        }
        let balance = match added {
            Ok(value) => value.convert::<i64>().map_err(|_| {
                report_unreadable(&key, NOT_A_BALANCE);
                Error::Unreadable
            })?,
            Err(e) if e.details().contains("overflow") => {
                return Err(Error::CreditsConflict(
                    "would leave more than 9223372036854775807 credits".into(),
                ))
            }
            Err(e) if e.details().contains("not an integer") || is_wrongtype(&e) => {
                report_unreadable(&key, NOT_A_BALANCE);
                return Err(Error::Unreadable);
            }
            Err(e) => return Err(unavailable(e)),
        };
        self.wait_for_replicas(client, connections, &key).await;
        Ok(balance)
    }

    /// Sets `fields` (name, JSON value) of an existing key document in one
    /// atomic `JSON.MSET`. `false` if there is no such
    /// key; `Error::Unreadable` if its document cannot be read (nothing is
    /// written to it then). Fields not named are left as they are, unknown
    /// ones included.
    pub async fn set_key_fields(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        fields: &[(&str, serde_json::Value)],
    ) -> Result<bool> {
        let admin = self.admin()?;
        let key = names::apikey(project.as_str(), key_id.as_str());
        let raw: Option<Value> = match get_doc(admin, &key).await {
            Ok(raw) => raw,
            Err(e) if is_noperm(&e) => return Err(Error::KeyNotFound),
            Err(e) => return Err(data_error(&key, e)),
        };
        let Some(raw) = raw else { return Ok(false) };
        let readable = match raw.as_str() {
            Some(raw) => key_doc(&key, &raw).is_some(), // logged when not
            None => {
                report_unreadable(&key, "JSON.GET did not answer with text");
                false
            }
        };
        if !readable {
            return Err(Error::Unreadable);
        }
        // The write, if any, and the connection it went on (for `WAIT`).
        let written = if fields.is_empty() {
            None
        } else {
            let values = fields
                .iter()
                .map(|(name, value)| (key.as_str(), format!("$.{name}"), value.to_string()))
                .collect();
            let client = admin.next();
            let connections = client.connection_ids();
            let _: () = client
                .json_mset(values)
                .await
                .map_err(|e| data_error(&key, e))?;
            Some((client, connections))
        };
        if let Some((client, connections)) = written {
            self.wait_for_replicas(client, connections, &key).await;
        }
        Ok(true)
    }

    /// One page of the project's keys in key-id order, after `cursor`;
    /// with `unused_since`, only those of its `limit` keys whose
    /// `last_used` is before it or missing (so a page may be short, even
    /// empty, while `next` leads on).
    ///
    /// Paging walks the index in byte order from the last id seen, so every
    /// key that exists for the whole walk is returned exactly once, whatever
    /// is minted meanwhile. A key whose document cannot be read is listed as
    /// a placeholder marked `unreadable`, never dropped.
    pub async fn list_keys(
        &self,
        project: &ProjectId,
        cursor: Option<&KeyId>,
        limit: u64,
        unused_since: Option<f64>,
    ) -> Result<KeyPage> {
        let admin = self.admin()?;
        let (ids, next) = self.index_page(admin, project, cursor, limit).await?;
        if ids.is_empty() {
            return Ok(KeyPage {
                keys: Vec::new(),
                next,
            });
        }
        let pipe = admin.next().pipeline();
        for id in &ids {
            queue_doc_and_meta(&pipe, project, id).await?;
        }
        let results = send(pipe, 2 * ids.len()).await?;
        let mut keys = Vec::with_capacity(ids.len());
        let mut listed = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(results.chunks(2)) {
            let [doc, meta] = pair else { break };
            let doc_key = names::apikey(project.as_str(), id);
            let doc = match doc {
                Ok(Value::Null) => continue, // deleted meanwhile: not a key
                Ok(raw) => match raw.as_str() {
                    // Logged and counted by key_doc when unreadable.
                    Some(raw) => key_doc(&doc_key, &raw),
                    None => {
                        report_unreadable(&doc_key, "JSON.GET did not answer with text");
                        None
                    }
                },
                Err(e) if is_wrongtype(e) => {
                    report_unreadable(&doc_key, "the key is not a JSON document");
                    None
                }
                Err(e) => return Err(unavailable(e.clone())),
            };
            let doc = doc.unwrap_or_else(|| KeyDoc::unreadable(project.as_str(), id));
            let meta = meta
                .clone()
                .map_err(unavailable)?
                .convert()
                .unwrap_or_default();
            let meta = meta_from(meta);
            let used_since = |since| meta.last_used.is_some_and(|at| at >= since);
            if unused_since.is_some_and(used_since) {
                continue;
            }
            keys.push((doc, meta));
            listed.push(id.as_str());
        }
        self.read_credits(admin, project, &listed, &mut keys)
            .await?;
        Ok(KeyPage { keys, next })
    }

    /// Up to `limit` ids of the project's index after `cursor`, in byte
    /// order, and the cursor of the next page (`None` on the last). Members
    /// that are not key ids are logged and skipped: no key can have them.
    async fn index_page(
        &self,
        admin: &Pool,
        project: &ProjectId,
        cursor: Option<&KeyId>,
        limit: u64,
    ) -> Result<(Vec<String>, Option<String>)> {
        let key = names::keyset(project);
        let raw = self.index_range(admin, &key, cursor, limit).await?;
        let full = raw.len() as u64 >= limit;
        let (ids, junk): (Vec<String>, Vec<String>) =
            raw.into_iter().partition(|id| KeyId::parse(id).is_ok());
        if !junk.is_empty() {
            report_unreadable(
                &key,
                &format!("{} members are not key ids; skipped", junk.len()),
            );
        }
        let next = match (full, ids.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(last.clone()),
            // A whole page of junk: no cursor can be given past it.
            (true, None) => return Err(Error::Unreadable),
        };
        Ok((ids, next))
    }

    /// Up to `limit` members after `cursor`, in byte order, from a sorted
    /// set (`ZRANGE BYLEX`) or a plain set (`SMEMBERS`, sorted here: O(n)
    /// per page, until `keyward migrate` converts it).
    async fn index_range(
        &self,
        admin: &Pool,
        key: &str,
        cursor: Option<&KeyId>,
        limit: u64,
    ) -> Result<Vec<String>> {
        let not_found = |e| or_not_found(Error::ProjectNotFound)(e);
        for _ in 0..INDEX_ATTEMPTS {
            // The sorted set is the common case: one round trip.
            match zrange_after(admin, key, cursor.map(KeyId::as_str), limit).await {
                Ok(ids) => return Ok(ids),
                Err(e) if is_wrongtype(&e) => {}
                Err(e) => return Err(not_found(e)),
            }
            match admin.smembers::<Vec<String>, _>(key).await {
                Ok(mut ids) => {
                    ids.sort_unstable();
                    let after = cursor.map_or("", |c| c.as_str());
                    return Ok(ids
                        .into_iter()
                        .filter(|id| id.as_str() > after)
                        .take(limit as usize)
                        .collect());
                }
                Err(e) if is_wrongtype(&e) => {}
                Err(e) => return Err(not_found(e)),
            }
            // Neither: of another type, or converted between the two reads.
            let kind: String = admin.r#type(key).await.map_err(not_found)?;
            if kind != "zset" && kind != "set" {
                return Err(unreadable_index(key, &kind));
            }
        }
        Err(Error::Unavailable(format!("{key} keeps changing type")))
    }
}
