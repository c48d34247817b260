//! The Redis store: the only module that uses fred.
//!
//! Every Redis key name, every command and every pipeline lives here, and
//! only our own types leave it. The names are a contract with operators and
//! other tools (see the README's data table):
//!
//! | key | type |
//! |---|---|
//! | `project:<project_id>` | JSON [`ProjectDoc`] |
//! | `apikey:<project_id>:<key_id>` | JSON [`KeyDoc`] |
//! | `apiprojectkeys:<project_id>` | sorted set of key ids, all score 0 (lexicographic paging) |
//! | `apimeta:<project_id>:<key_id>` | hash: `usage_count`, `last_used` |
//! | `audit:keylookup`, `audit:admin` | streams, capped with `MAXLEN ~` |
//! | `ratelimit:key:<project_id>:<key_id>:<minute>` | right-secret validations this minute |
//! | `ratelimit:key:<project_id>:<key_id>:bad:<minute>` | wrong-secret attempts this minute |
//!
//! JSON documents are read and written at the root path, so `JSON.GET` returns
//! the document itself rather than the one-element array a `$` path returns.
//!
//! Two pools: the validation path uses the least-privileged `validator` user;
//! admin calls use the `manager` user. A command the user may not run comes
//! back from Redis as `NOPERM`; for reads we map it to "forbidden" or "not
//! found" as the caller needs, never to a 5xx.

use fred::clients::{Client, Pipeline};
use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Error as FredError, HashesInterface, KeysInterface,
    Pool, ReconnectPolicy, RedisJsonInterface, SortedSetsInterface, StreamsInterface, Value,
};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind, ZSort};
use fred::types::SetOptions;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};
use crate::telemetry::metric;

/// The `project:<project_id>` document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProjectDoc {
    pub project_id: String,
    pub label: String,
    pub owner: String,
    pub created_at: f64,
}

/// The `apikey:<project_id>:<key_id>` document. Holds the Argon2id hash, so it
/// never leaves the service: responses are built from its other fields.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyDoc {
    pub key_id: String,
    pub project_id: String,
    pub owner: String,
    pub server_name: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub secret_hash: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: f64,
    #[serde(default)]
    pub expires_at: Option<f64>,
    #[serde(default)]
    pub rate_limit_per_minute: Option<u64>,
}

impl std::fmt::Debug for KeyDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDoc")
            .field("key_id", &self.key_id)
            .field("project_id", &self.project_id)
            .field("disabled", &self.disabled)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The `apimeta:<project_id>:<key_id>` hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyMeta {
    pub usage_count: u64,
    pub last_used: Option<f64>,
}

/// What the first round trip of a validation found.
#[derive(Debug)]
pub enum Lookup {
    Found {
        doc: Box<KeyDoc>,
        /// Right-secret validations counted this minute.
        used: u64,
        /// Wrong-secret attempts counted this minute.
        bad: u64,
    },
    Missing,
    /// This deployment's Redis user may not read the key (ACL `NOPERM`).
    Forbidden,
}

/// One `audit:keylookup` entry. Never holds the secret, key or hash.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub project_id: &'a str,
    pub key_id: &'a str,
    pub result: &'a str,
    pub reason: &'a str,
}

/// A page of a project's keys.
#[derive(Debug)]
pub struct KeyPage {
    pub keys: Vec<(KeyDoc, KeyMeta)>,
    /// The last key id of this page when more may follow.
    pub next: Option<String>,
}

pub const AUDIT_KEYLOOKUP: &str = "audit:keylookup";
pub const AUDIT_ADMIN: &str = "audit:admin";
/// Rate-limit counters outlive their minute a little, then expire.
const COUNTER_TTL_SECS: i64 = 120;

fn project_key(project: &ProjectId) -> String {
    format!("project:{project}")
}
fn apikey_key(project: &str, key_id: &str) -> String {
    format!("apikey:{project}:{key_id}")
}
fn keyset_key(project: &ProjectId) -> String {
    format!("apiprojectkeys:{project}")
}
fn meta_key(project: &str, key_id: &str) -> String {
    format!("apimeta:{project}:{key_id}")
}
fn used_key(project: &ProjectId, key_id: &KeyId, minute: u64) -> String {
    format!("ratelimit:key:{project}:{key_id}:{minute}")
}
fn bad_key(project: &ProjectId, key_id: &KeyId, minute: u64) -> String {
    format!("ratelimit:key:{project}:{key_id}:bad:{minute}")
}

/// JSON documents are read at the legacy root path `.`, which returns the
/// document itself (a `$` path would wrap it in a one-element array).
const ROOT: &str = ".";
/// No indent/newline/space formatting for `JSON.GET`.
const NO_FMT: Option<&str> = None;

/// Maps a Redis or connection failure to a 503: the service fails closed.
fn unavailable(e: FredError) -> Error {
    metrics::counter!(metric::REDIS_ERRORS).increment(1);
    Error::Unavailable(e.to_string())
}

/// Whether Redis refused a command under this user's ACL.
fn is_noperm(e: &FredError) -> bool {
    e.details().starts_with("NOPERM")
}

/// Sends a pipeline; one result per queued command. A pipeline that fails as
/// a whole (connection lost, timeout) comes back from fred as one error,
/// which becomes a 503 rather than a short list.
async fn send(pipe: Pipeline<Client>, expected: usize) -> Result<Vec<Result<Value, FredError>>> {
    let started = std::time::Instant::now();
    let results = pipe.try_all::<Value>().await;
    metrics::histogram!(metric::REDIS_ROUNDTRIP).record(started.elapsed().as_secs_f64());
    if results.len() == expected {
        return Ok(results);
    }
    Err(match results.into_iter().find_map(|r| r.err()) {
        Some(e) => unavailable(e),
        None => Error::Unavailable(format!("pipeline of {expected} returned too few results")),
    })
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Clone)]
pub struct Store {
    /// The `validator` user's pool: the validation path.
    pool: Pool,
    /// The `manager` user's pool: admin calls, when admin is configured.
    admin: Option<Pool>,
    /// A read-only monitoring user's pool, to sample the audit streams.
    monitor: Option<Pool>,
    client_name: String,
    audit_maxlen: u64,
}

async fn connect(url: &str, config: &Config, what: &str) -> Result<Pool> {
    let fred_config = FredConfig::from_url(url)
        .map_err(|e| Error::Internal(format!("{what} Redis URL is invalid: {}", e.details())))?;
    let timeout = config.redis_timeout;
    let pool = Builder::from_config(fred_config)
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            // One attempt: a command that fails is answered 503 now rather
            // than retried past the request's deadline.
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build_pool(config.redis_pool_size)
        .map_err(|e| Error::Internal(format!("{what} Redis pool: {e}")))?;
    pool.init().await.map_err(|e| {
        Error::Unavailable(format!("cannot connect to Redis as the {what} user: {e}"))
    })?;
    // Fail at start-up, not on the first request, when the credentials are
    // wrong or the user may not even PING.
    let _: () = pool
        .ping(None)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis refused the {what} user: {e}")))?;
    Ok(pool)
}

impl Store {
    /// Connects both pools, failing with a clear error when Redis cannot be
    /// reached or refuses the credentials.
    pub async fn connect(config: &Config) -> Result<Self> {
        let pool = connect(config.redis_url.expose_secret(), config, "validator").await?;
        let admin = match (&config.admin_token, &config.admin_redis_url) {
            (Some(_), Some(url)) => Some(connect(url.expose_secret(), config, "manager").await?),
            _ => None,
        };
        let monitor = match &config.monitor_redis_url {
            Some(url) => Some(connect(url.expose_secret(), config, "monitor").await?),
            None => None,
        };
        Ok(Self {
            pool,
            monitor,
            admin,
            client_name: config.client_name.clone(),
            audit_maxlen: config.audit_maxlen,
        })
    }

    /// Closes the connections after a last flush of anything queued.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
        if let Some(admin) = &self.admin {
            let _ = admin.quit().await;
        }
    }

    /// Whether Redis answers this deployment's validator user.
    pub async fn ping(&self) -> Result<()> {
        self.pool.ping::<()>(None).await.map_err(unavailable)
    }

    /// Whether Redis answers every user this deployment is configured with.
    pub async fn ping_all(&self) -> Result<()> {
        self.ping().await?;
        for pool in [&self.admin, &self.monitor].into_iter().flatten() {
            pool.ping::<()>(None).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Samples `XLEN` of both audit streams into a gauge, with the monitor
    /// user. Does nothing without one.
    pub async fn sample_audit_lengths(&self) -> Result<()> {
        let Some(monitor) = &self.monitor else {
            return Ok(());
        };
        for stream in [AUDIT_KEYLOOKUP, AUDIT_ADMIN] {
            let len: u64 = monitor.xlen(stream).await.map_err(unavailable)?;
            metrics::gauge!(metric::AUDIT_STREAM_LENGTH, "stream" => stream).set(len as f64);
        }
        Ok(())
    }

    fn admin(&self) -> Result<&Pool> {
        self.admin
            .as_ref()
            .ok_or_else(|| Error::Internal("admin Redis pool is not configured".into()))
    }

    fn audit_cap(&self) -> (&'static str, &'static str, i64) {
        ("MAXLEN", "~", self.audit_maxlen as i64)
    }

    // --- validation path -------------------------------------------------

    /// Round trip 1: the key's document and this minute's counters, pipelined.
    pub async fn lookup(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<Lookup> {
        let pipe = self.pool.next().pipeline();
        let _: () = pipe
            .json_get(
                apikey_key(project.as_str(), key_id.as_str()),
                NO_FMT,
                NO_FMT,
                NO_FMT,
                ROOT,
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .get(used_key(project, key_id, minute))
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .get(bad_key(project, key_id, minute))
            .await
            .map_err(unavailable)?;
        let [doc, used, bad]: [_; 3] = send(pipe, 3)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("lookup pipeline result count".into()))?;
        let doc = match doc {
            Err(e) if is_noperm(&e) => return Ok(Lookup::Forbidden),
            Err(e) => return Err(unavailable(e)),
            Ok(Value::Null) => return Ok(Lookup::Missing),
            Ok(value) => value,
        };
        let count = |r: Result<Value, FredError>| -> Result<u64> {
            match r {
                Ok(v) => Ok(v.convert::<Option<u64>>().ok().flatten().unwrap_or(0)),
                Err(e) => Err(unavailable(e)),
            }
        };
        let doc: KeyDoc = doc
            .as_str()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                Error::Internal(format!(
                    "apikey:{project}:{key_id} is not a valid key document"
                ))
            })?;
        Ok(Lookup::Found {
            doc: Box::new(doc),
            used: count(used)?,
            bad: count(bad)?,
        })
    }

    /// Counts a right-secret validation against this minute's window and
    /// returns the count including it. The INCR's own result decides the
    /// 429, so the decision is exact under any concurrency.
    pub async fn count_use(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<u64> {
        let pipe = self.pool.next().pipeline();
        let counter = used_key(project, key_id, minute);
        let _: () = pipe.incr(&counter).await.map_err(unavailable)?;
        let _: () = pipe
            .expire(&counter, COUNTER_TTL_SECS, None)
            .await
            .map_err(unavailable)?;
        let [used, expire]: [_; 2] = send(pipe, 2)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("count pipeline result count".into()))?;
        expire.map_err(unavailable)?;
        used.map_err(unavailable)?
            .convert()
            .map_err(|e| Error::Internal(format!("INCR answer: {e}")))
    }

    /// After a validation within its limit: bumps `apimeta` and writes the
    /// `ok` audit entry, pipelined.
    pub async fn record_success(&self, project: &ProjectId, key_id: &KeyId) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        let meta = meta_key(project.as_str(), key_id.as_str());
        let _: () = pipe
            .hincrby(&meta, "usage_count", 1)
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .hset(&meta, ("last_used", now().to_string()))
            .await
            .map_err(unavailable)?;
        let audit = Audit {
            project_id: project.as_str(),
            key_id: key_id.as_str(),
            result: "ok",
            reason: "ok",
        };
        self.queue_audit(&pipe, audit).await?;
        for result in send(pipe, 3).await? {
            result.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn queue_audit(&self, pipe: &Pipeline<Client>, audit: Audit<'_>) -> Result<()> {
        pipe.xadd::<(), _, _, _, _>(
            AUDIT_KEYLOOKUP,
            false,
            self.audit_cap(),
            "*",
            vec![
                ("ts", now().to_string()),
                ("project_id", audit.project_id.to_owned()),
                ("key_id", audit.key_id.to_owned()),
                ("result", audit.result.to_owned()),
                ("reason", audit.reason.to_owned()),
                ("client", self.client_name.clone()),
            ],
        )
        .await
        .map_err(unavailable)
    }

    /// Round trip 2 for every other outcome: the audit entry, plus the
    /// wrong-secret counter when `count_bad_secret_minute` is given.
    pub async fn record_denial(
        &self,
        audit: Audit<'_>,
        count_bad_secret: Option<(&ProjectId, &KeyId, u64)>,
    ) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        if let Some((project, key_id, minute)) = count_bad_secret {
            let counter = bad_key(project, key_id, minute);
            let _: () = pipe.incr(&counter).await.map_err(unavailable)?;
            let _: () = pipe
                .expire(&counter, COUNTER_TTL_SECS, None)
                .await
                .map_err(unavailable)?;
        }
        self.queue_audit(&pipe, audit).await?;
        for result in send(pipe, 1 + 2 * usize::from(count_bad_secret.is_some())).await? {
            result.map_err(unavailable)?;
        }
        Ok(())
    }

    // --- admin path ------------------------------------------------------

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
                AUDIT_ADMIN,
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
            .json_set(project_key(&project), "$", json, Some(SetOptions::NX))
            .await
            .map_err(|e| {
                if is_noperm(&e) {
                    Error::ProjectNotFound
                } else {
                    unavailable(e)
                }
            })?;
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
            .json_get(project_key(project), NO_FMT, NO_FMT, NO_FMT, ROOT)
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
                apikey_key(project.as_str(), &doc.key_id),
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
                keyset_key(project),
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
                AUDIT_ADMIN,
                false,
                self.audit_cap(),
                "*",
                self.admin_audit_fields("mint", project, &doc.key_id),
            )
            .await
            .map_err(unavailable)?;
        for result in send(pipe, 2).await? {
            result.map_err(unavailable)?;
        }
        Ok(true)
    }

    /// Sets `disabled: true` on the key; `false` if there is no such key.
    pub async fn disable_key(&self, project: &ProjectId, key_id: &KeyId) -> Result<bool> {
        let admin = self.admin()?;
        let key = apikey_key(project.as_str(), key_id.as_str());
        let exists: u64 = admin.exists(&key).await.map_err(|e| {
            if is_noperm(&e) {
                Error::KeyNotFound
            } else {
                unavailable(e)
            }
        })?;
        if exists == 0 {
            return Ok(false);
        }
        let _: Option<String> = admin
            .json_set(&key, "$.disabled", "true", None)
            .await
            .map_err(unavailable)?;
        self.admin_audit("revoke", project, key_id.as_str()).await?;
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
                keyset_key(project),
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
                    apikey_key(project.as_str(), id),
                    NO_FMT,
                    NO_FMT,
                    NO_FMT,
                    ROOT,
                )
                .await
                .map_err(unavailable)?;
            let _: () = pipe
                .hmget(
                    meta_key(project.as_str(), id),
                    vec!["usage_count", "last_used"],
                )
                .await
                .map_err(unavailable)?;
        }
        let results = send(pipe, 2 * ids.len()).await?;
        let mut keys = Vec::with_capacity(ids.len());
        for pair in results.chunks(2) {
            let [doc, meta] = pair else { break };
            let doc = doc.clone().map_err(unavailable)?;
            let Some(raw) = doc.as_str() else { continue }; // deleted meanwhile
            let doc: KeyDoc = serde_json::from_str(&raw)
                .map_err(|e| Error::Internal(format!("apikey document in {project}: {e}")))?;
            let meta: Vec<Option<String>> = meta
                .clone()
                .map_err(unavailable)?
                .convert()
                .unwrap_or_default();
            let field = |i: usize| meta.get(i).cloned().flatten();
            keys.push((
                doc,
                KeyMeta {
                    usage_count: field(0).and_then(|v| v.parse().ok()).unwrap_or(0),
                    last_used: field(1).and_then(|v| v.parse().ok()),
                },
            ));
        }
        let next = (ids.len() as u64 == limit)
            .then(|| ids.last().cloned())
            .flatten();
        Ok(KeyPage { keys, next })
    }
}
