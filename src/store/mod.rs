//! The Redis store: the only module that uses fred.
//!
//! Every Redis key name ([`names`]), every command and every pipeline lives
//! here, and only our own types ([`model`]) leave it. The validation path's
//! commands are in `validation.rs`, the admin path's in `admin.rs`.
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
//! JSON documents are read at the root path, so `JSON.GET` returns the
//! document itself rather than the one-element array a `$` path returns.
//!
//! Pools: the validation path uses the least-privileged `validator` user;
//! admin calls use the `manager` user; an optional read-only monitor user
//! samples the audit streams. A command the user may not run comes back from
//! Redis as `NOPERM`; for reads we map it to "forbidden" or "not found" as the
//! caller needs, never to a 5xx.

mod admin;
pub mod model;
pub mod names;
mod validation;

use fred::clients::{Client, Pipeline};
use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Error as FredError, KeysInterface, Pool,
    ReconnectPolicy, StreamsInterface, Value,
};
use fred::types::ExpireOptions;
use secrecy::ExposeSecret;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::telemetry::metric;

pub use model::{Audit, Counter, KeyDoc, KeyMeta, KeyPage, Lookup, Origin, ProjectDoc};
pub use names::{AUDIT_ADMIN, AUDIT_KEYLOOKUP};

/// Rate-limit counters outlive their minute a little, then expire.
const COUNTER_TTL_SECS: i64 = 120;

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

/// Parses a key document read from `redis_key`. A document keyward cannot
/// read is logged with its Redis key (never its content) and counted.
fn key_doc(redis_key: &str, raw: &str) -> Option<KeyDoc> {
    match serde_json::from_str::<KeyDoc>(raw) {
        Ok(doc) => Some(doc),
        Err(e) => {
            metrics::counter!(metric::UNREADABLE_DOCUMENTS).increment(1);
            // serde's message names the field and position, not the value.
            tracing::error!(redis_key, error = %e, "unreadable key document");
            None
        }
    }
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

/// Sends a pipeline whose every command must succeed.
async fn send_all(pipe: Pipeline<Client>, expected: usize) -> Result<()> {
    for result in send(pipe, expected).await? {
        result.map_err(unavailable)?;
    }
    Ok(())
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
    /// Connects every configured pool, failing with a clear error when Redis
    /// cannot be reached or refuses the credentials.
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
        for pool in [Some(&self.pool), self.admin.as_ref(), self.monitor.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = pool.quit().await;
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

    fn audit_cap(&self) -> (&'static str, &'static str, i64) {
        ("MAXLEN", "~", self.audit_maxlen as i64)
    }

    /// Queues `INCR` and `EXPIRE ... NX` of a per-minute counter on `pipe`
    /// (`NX`: only the first use of a window sets its TTL).
    async fn queue_count(pipe: &Pipeline<Client>, counter: &str) -> Result<()> {
        let _: () = pipe.incr(counter).await.map_err(unavailable)?;
        pipe.expire(counter, COUNTER_TTL_SECS, Some(ExpireOptions::NX))
            .await
            .map_err(unavailable)
    }
}
