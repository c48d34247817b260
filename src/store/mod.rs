//! The Redis store: the only module that uses fred.
//!
//! Every Redis key name ([`names`]), every command and every pipeline lives
//! here, and only our own types ([`model`]) leave it. One file per concern:
//! `validation.rs` (the validation path's commands), `usage.rs` (the usage
//! counts' flush), `admin.rs` (the admin path's), `operators.rs` (operators,
//! the projects index, the admin trail), `activity.rs` (the monitor user's
//! reads of the audit streams), `webhooks.rs` (endpoints, events and their
//! delivery), `migrate.rs` (`keyward migrate`'s). The store imports nothing
//! above it: the types it stores come from pure modules (`role`, `event`,
//! `audit`, `plan`, `key`, `clock`) or from [`model`].
//!
//! | key | type |
//! |---|---|
//! | `project:<project_id>` | JSON [`ProjectDoc`] |
//! | `apikey:<project_id>:<key_id>` | JSON [`KeyDoc`] |
//! | `apiprojectkeys:<project_id>` | sorted set of key ids, all score 0 (lexicographic paging); a plain set where the original service wrote it |
//! | `apimeta:<project_id>:<key_id>` | hash: `usage_count`, `last_used` |
//! | `apiverify:<project_id>:<key_id>` | hash: a verified digest per hash fingerprint (with `KEYWARD_VERIFY_PEPPER_FILE`) |
//! | `operator:<deployment>:<operator_id>` | JSON [`OperatorDoc`] |
//! | `operators:<deployment>`, `projects:<deployment>` | sorted sets of operator and project ids, all score 0 |
//! | `audit:keylookup`, `audit:admin` (or `audit:<deployment>:keylookup`, `audit:<deployment>:admin`: `names::AuditStreams`); with `KEYWARD_AUDIT_SHARDS` over 1, `<keylookup>:{<i>}` | streams, capped with `MAXLEN ~` |
//! | `ratelimit:key:<project_id>:<key_id>:<minute>` | the cost of right-secret validations this minute |
//! | `ratelimit:key:<project_id>:<key_id>:bad:<minute>` | wrong-secret attempts this minute |
//! | `ratelimit:key:<project_id>:<key_id>:<window>` | a plan window's spend (`s<n>`, `h<n>`, `d<n>`, `mo<yyyymm>`) |
//! | `apicredits:<project_id>:<key_id>:<period>` | a key's credit balance: per refill interval (`d<n>`, `mo<yyyymm>`), or `once` |
//! | `apievent:<project_id>:<key_id>:<kind>` | that a key's event was sent for this window (`SET NX EX`) |
//! | `apinet:<project_id>:<key_id>:<network>` | that a key was used from a network lately (`key.new_network`) |
//! | `webhook:<deployment>:<webhook_id>` | JSON [`WebhookDoc`] (holds its signing secret) |
//! | `webhooks:<deployment>` | sorted set of webhook ids, all score 0 |
//! | `webhookevents:<deployment>`, `webhookqueue:<deployment>` | streams with the consumer group `keyward`: events to fan out, messages due |
//! | `webhookretry:<deployment>` | sorted set of messages by when they are due (Unix ms) |
//! | `webhookdeliveries:<deployment>:<webhook_id>` | stream of an endpoint's recent attempts, capped |
//! | `migrate:apiprojectkeys:<project_id>:set`, `:zset` (`migrate:{apiprojectkeys:<project_id>}:...` in a cluster) | `keyward migrate`'s working keys |
//!
//! JSON documents are read at the root path, so `JSON.GET` returns the
//! document itself rather than the one-element array a `$` path returns.
//!
//! Pools: the validation path uses the least-privileged `validator` user;
//! admin calls use the `manager` user; an optional read-only monitor user
//! samples the audit streams. A command the user may not run comes back from
//! Redis as `NOPERM`; for reads we map it to "forbidden" or "not found" as the
//! caller needs, never to a 5xx.
//!
//! Data keyward did not write (the original service's, or anyone's) is read
//! as it is where it can be: a plain set as a project's index, documents
//! without newer fields. What cannot be read at all (a key of another type,
//! a document that does not parse) is logged with its Redis key, never its
//! content, counted in `keyward_unreadable_documents_total`, and answered as
//! unreadable: a 401 for a validation, a 409 for an admin call.
//!
//! `migrate.rs`'s commands run as the `migrator` user.
//!
//! Redis Cluster: a `redis-cluster://` URL makes each pool a cluster client.
//! fred hashes every command's key to its slot and writes it to that slot's
//! master, so the commands of one step (a pipeline, or the validation path's
//! commands sent together) go out as one batch per master, all written
//! before any answer is awaited: one round trip per shard, in parallel.
//! Nothing keyward sends needs two keys in one slot (see `names`), and
//! nothing reads from replicas. How a redirection or a failover can end,
//! and why never in a 200 that was not decided on a fresh document read,
//! is in [`connect_url`] and ARCHITECTURE.md.

pub mod activity;
mod admin;
pub mod entry;
pub mod migrate;
pub mod model;
pub mod names;
mod operators;
pub mod record;
mod usage;
mod validation;
mod webhooks;

use fred::clients::{Client, Pipeline};
use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Error as FredError, ErrorKind, Pool,
    ReconnectPolicy, RedisJsonInterface, SortedSetsInterface, StreamsInterface, Value,
};
use fred::types::config::{ClusterDiscoveryPolicy, ServerConfig, TlsConnector};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind, ZSort};
use fred::types::{ClusterHash, CustomCommand, FromValue};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::audit;
use crate::config::{Config, RedisTls};
use crate::error::{Error, Result};
use crate::telemetry::metric;

pub use model::{
    AdminAudit, Audit, Delivery, Effects, Finished, KeyDoc, KeyMeta, KeyPage, Lookup, Message,
    OperatorDoc, Origin, ProjectDoc, Read, WebhookDoc,
};
pub use names::{AuditStreams, AUDIT_ADMIN, AUDIT_KEYLOOKUP};
pub use operators::AdminEntry;
pub use record::Granularity;
pub use validation::{Owed, Spend};

/// Rate-limit counters outlive their minute a little, then expire.
const COUNTER_TTL_SECS: i64 = crate::plan::COUNTER_MARGIN_SECS as i64;

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

/// Whether Redis answered a command with an error (`NOPERM`, `OOM`,
/// `READONLY`, ...), so it did not run; not a failure whose outcome is
/// unknown (a timeout, a connection lost), after which it may have.
fn is_refused(e: &FredError) -> bool {
    let code = e.details().split(' ').next().unwrap_or_default();
    !matches!(
        e.kind(),
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled
    ) && !code.is_empty()
        && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether a command met a key of another type than it works on. Redis says
/// `WRONGTYPE`; RedisJSON's commands say "Existing key has wrong Redis type".
fn is_wrongtype(e: &FredError) -> bool {
    let details = e.details();
    details.starts_with("WRONGTYPE") || details.contains("wrong Redis type")
}

/// Logs and counts data keyward cannot read, naming its Redis key and what
/// is wrong with it (never its content).
fn report_unreadable(redis_key: &str, problem: &str) {
    metrics::counter!(metric::UNREADABLE_DOCUMENTS).increment(1);
    tracing::error!(redis_key, problem, "unreadable data in Redis");
}

/// A failed command on `redis_key`: a key of the wrong type is unreadable
/// data (409 for admin calls), anything else a 503.
fn data_error(redis_key: &str, e: FredError) -> Error {
    if is_wrongtype(&e) {
        report_unreadable(redis_key, "the key has another type than keyward expects");
        return Error::Unreadable;
    }
    unavailable(e)
}

/// Why a document did not parse, without its content: serde's messages
/// quote the offending value ("invalid type: string \"...\""), so only a
/// missing field (a name of ours) is named; otherwise the kind and position.
fn parse_problem(what: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    if message.starts_with("missing field") {
        return format!("not {what}: {message}");
    }
    let kind = match e.classify() {
        serde_json::error::Category::Data => "a field of the wrong type or value",
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
        serde_json::error::Category::Io => "unreadable",
    };
    format!(
        "not {what}: {kind} at line {} column {}",
        e.line(),
        e.column()
    )
}

/// Parses a key document read from `redis_key`. A document keyward cannot
/// read is logged with its Redis key (never its content) and counted.
fn key_doc(redis_key: &str, raw: &str) -> Option<KeyDoc> {
    match serde_json::from_str::<KeyDoc>(raw) {
        Ok(doc) => Some(doc),
        Err(e) => {
            report_unreadable(redis_key, &parse_problem("a key document", &e));
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

/// `JSON.GET key .`: a whole document, as text, read from a client or
/// queued on a pipeline (`R = ()`). Every document read (validation, admin,
/// migrate) goes through here; callers map the error as their path requires.
fn get_doc<'a, C, R>(
    client: &'a C,
    key: &'a str,
) -> impl std::future::Future<Output = std::result::Result<R, FredError>> + 'a
where
    C: RedisJsonInterface,
    R: FromValue + 'a,
{
    client.json_get(key, NO_FMT, NO_FMT, NO_FMT, ROOT)
}

/// Stores `doc` at `key` unless the key exists (`false`), then adds `id`
/// to the sorted set `index` (score 0): a deployment's operators and
/// webhooks.
async fn insert_indexed<T: serde::Serialize>(
    admin: &Pool,
    key: &str,
    doc: &T,
    index: &str,
    id: &str,
) -> Result<bool> {
    let json = serde_json::to_string(doc).map_err(|e| Error::Internal(e.to_string()))?;
    let created: Option<String> = admin
        .json_set(key, "$", json, Some(fred::types::SetOptions::NX))
        .await
        .map_err(|e| data_error(key, e))?;
    if created.is_none() {
        return Ok(false);
    }
    admin
        .zadd::<(), _, _>(index, None, None, false, false, (0.0, id))
        .await
        .map_err(unavailable)?;
    Ok(true)
}

/// The document at `key`, read with `parse`; `None` if there is none (or
/// this deployment may not read it), `Error::Unreadable` if `parse` cannot.
async fn read_owned<T>(
    admin: &Pool,
    key: &str,
    parse: fn(&str, &str) -> Option<T>,
) -> Result<Option<T>> {
    let raw: Option<String> = match get_doc(admin, key).await {
        Ok(raw) => raw,
        Err(e) if is_noperm(&e) => None,
        Err(e) => return Err(data_error(key, e)),
    };
    raw.map(|raw| parse(key, &raw).ok_or(Error::Unreadable))
        .transpose()
}

/// A pipelined `JSON.GET` of each of `keys`: the text of each, `None` for
/// one that is missing, may not be read, or is not a JSON document (logged).
async fn read_docs(admin: &Pool, keys: &[String]) -> Result<Vec<Option<String>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let pipe = admin.next().pipeline();
    for key in keys {
        let () = get_doc(&pipe, key).await.map_err(unavailable)?;
    }
    let results = send(pipe, keys.len()).await?;
    let mut docs = Vec::with_capacity(keys.len());
    for (key, result) in keys.iter().zip(results) {
        docs.push(match result {
            Ok(Value::Null) => None,
            Ok(value) => value.as_str().map(|s| s.into_owned()),
            Err(e) if is_noperm(&e) => None,
            Err(e) => match data_error(key, e) {
                Error::Unreadable => None,
                other => return Err(other),
            },
        });
    }
    Ok(docs)
}

/// One page of an index of documents: up to `limit` ids of `index` after
/// `cursor`, their documents (named by `key_of`, parsed by `parse`, which
/// logs and leaves out those it cannot read), and the cursor of the next
/// page.
async fn index_page<T>(
    admin: &Pool,
    index: &str,
    key_of: impl Fn(&str) -> String,
    parse: fn(&str, &str) -> Option<T>,
    cursor: Option<&str>,
    limit: u64,
) -> Result<(Vec<T>, Option<String>)> {
    let ids = zrange_after(admin, index, cursor, limit)
        .await
        .map_err(|e| data_error(index, e))?;
    let next = (ids.len() as u64 >= limit)
        .then(|| ids.last().cloned())
        .flatten();
    let keys: Vec<String> = ids.iter().map(|id| key_of(id)).collect();
    let docs = read_docs(admin, &keys).await?;
    let docs = keys
        .iter()
        .zip(docs)
        .filter_map(|(key, raw)| parse(key, &raw?))
        .collect();
    Ok((docs, next))
}

/// `ZRANGE key (after +inf BYLEX LIMIT 0 limit`: up to `limit` members of a
/// sorted set whose scores are all 0, in id order, after `after` (from the
/// start when `None`). Index paging, in admin and migrate alike.
async fn zrange_after(
    client: &impl SortedSetsInterface,
    key: &str,
    after: Option<&str>,
    limit: u64,
) -> std::result::Result<Vec<String>, FredError> {
    let min = match after {
        Some(a) => ZRange {
            kind: ZRangeKind::Exclusive,
            range: ZRangeBound::Lex(a.to_owned()),
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
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    client
        .zrange(
            key,
            min,
            max,
            Some(ZSort::ByLex),
            false,
            Some((0, limit)),
            false,
        )
        .await
}

/// keyward's one clock ([`crate::clock`]), re-exported where callers and
/// tests have always found it.
pub use crate::clock::now;

/// How far this machine's clock is from Redis's, as last measured.
#[derive(Default)]
struct Skew {
    /// Microseconds this clock is ahead of Redis's (negative: behind).
    micros: AtomicI64,
    /// Whether a measurement has worked yet (`TIME` may be refused by an
    /// older ACL: the skew is then unknown, and logged once).
    measured: AtomicBool,
}

#[derive(Clone)]
pub struct Store {
    /// The `validator` user's pool: the validation path.
    validator: Pool,
    /// The `manager` user's pool: admin calls, when admin is configured.
    admin: Option<Pool>,
    /// A read-only monitoring user's pool, to sample the audit streams.
    monitor: Option<Pool>,
    client_name: String,
    audit_maxlen: u64,
    /// This deployment's audit streams (`KEYWARD_AUDIT_LAYOUT`,
    /// `KEYWARD_AUDIT_SHARDS`).
    streams: names::AuditStreams,
    /// Replicas a key write waits for (`KEYWARD_ADMIN_WAIT_REPLICAS`).
    admin_wait_replicas: u64,
    /// How long that wait may take: half the Redis command deadline.
    admin_wait_timeout: Duration,
    /// Anonymous denials' audit budget and the summaries it owes.
    audit_budget: Arc<audit::Budget>,
    /// The admin trail's budget of refused calls (`audit::ADMIN_REFUSED`)
    /// and the summaries it owes.
    admin_budget: Arc<audit::Budget>,
    /// Answers counted in memory, written to `apimeta` and the usage record
    /// about once a second.
    usage: Arc<usage::Usage>,
    /// The usage record's flush: what it owes Redis, its retention.
    record: Arc<record::Record>,
    /// How long the final flush may retry (`KEYWARD_SHUTDOWN_GRACE_MS`).
    shutdown_grace: Duration,
    /// What the use counters are owed, sent again by the flusher.
    unsettled: Arc<validation::Unsettled>,
    /// This machine's clock against Redis's (`KEYWARD_MAX_CLOCK_SKEW_MS`).
    skew: Arc<Skew>,
    max_skew: Duration,
    /// Failsafe 200s not audited yet, by (project, key id): (count, first,
    /// last), written as summaries by the flusher.
    failsafes: Arc<validation::Failsafes>,
    /// Whether first-time validations read `apiverify` (a pepper is set).
    shares_digests: bool,
    /// Writes the summaries, the usage and what the counters are owed every
    /// second; stopped when the last handle
    /// to the store (other than the flusher's own) is dropped, or by `quit`.
    flusher: Arc<Flusher>,
}

/// The flusher task: stopped between two flushes by `quit` (which then
/// awaits it), or aborted when dropped.
#[derive(Default)]
struct Flusher {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(|t| t.as_ref()) {
            task.abort();
        }
    }
}

async fn connect(url: &str, config: &Config, what: &str) -> Result<Pool> {
    let size = config.redis_pool_size;
    connect_url(url, &config.redis_tls, config.redis_timeout, size, what).await
}

/// Builds and connects a pool for `url`: one Redis (`redis://`) or a
/// cluster (`redis-cluster://host:port?node=host:port...`, the seed nodes).
///
/// Every command has the deadline `timeout` (fred's command timeout) and one
/// attempt: a command that fails is answered 503 now rather than sent again
/// past the request's deadline (or twice: `INCRBY` and `XADD` are not
/// idempotent). On a cluster, fred follows no redirection either
/// (`max_redirections = 0`), and that is what keeps fred 10.1 safe there:
///
/// - `MOVED` (a slot has a new owner): fred refreshes its slot map with
///   `CLUSTER SLOTS`, then fails the command. Later commands go to the new
///   owner, so a slot move costs the commands in flight to it (503), not a
///   storm; nothing is answered from a node that no longer owns the key.
/// - `ASK` (a slot half-way through a migration, for a key already moved):
///   fred 10.1 sends `ASKING` to the importing master but then the command
///   again to the slot's owner in its map, which answers `ASK` again; and a
///   command whose attempts are spent by then makes its `ASKING` step end
///   the client's router task for good (every later command of that pool
///   client would time out: a permanent 503 for its share of the requests,
///   as a test showed). With no redirection
///   allowed, fred fails the command (503) before any `ASKING`; requests on
///   a key in a slot being migrated answer 503 until the slot is handed
///   over, then `MOVED` as above.
/// - A connection lost (a master killed): the commands written to it fail
///   (503). fred reconnects with back-off; while the dead master is still in
///   the slot map, until its replica is promoted, every command of that
///   client waits behind the reconnection and fails at its deadline (503).
///   An admin pipeline queued meanwhile may still be sent once the cluster
///   is back, after its caller had its 503 (fred marks only single commands
///   as timed out, and the validation path sends single commands).
///
/// An admin pipeline answers as one: if any of its commands fails for
/// good, the request is a 503 (see [`send`]), though its other commands may
/// have run. The validation path keeps each command's answer apart
/// (`validation.rs`, and `validate` decides what each failure means): a
/// counter may count a use that was refused, an audit entry may record a
/// success that was answered 503; never the reverse. So every fail-closed
/// 200 comes from a step whose `JSON.GET` was answered, just then, by the
/// master that owns the key; replicas are never read.
///
/// `TCP_NODELAY`: a step is one write, sent at once rather than held back
/// by Nagle's algorithm for the answer to the previous one.
///
/// TLS (`rediss://`, `rediss-cluster://`): rustls, configured by `tls`
/// (`tls::redis_client`) for every node. A cluster's nodes are reached by
/// the addresses `CLUSTER SLOTS` gives, so their certificates must name
/// those (IP addresses, unless the cluster announces hostnames).
pub(crate) async fn connect_url(
    url: &str,
    tls: &RedisTls,
    timeout: Duration,
    size: usize,
    what: &str,
) -> Result<Pool> {
    let mut fred_config = FredConfig::from_url(url)
        .map_err(|e| Error::Internal(format!("{what} Redis URL is invalid: {}", e.details())))?;
    if fred_config.tls.is_some() {
        let client = crate::tls::redis_client(tls).map_err(|e| Error::Internal(e.to_string()))?;
        fred_config.tls = Some(TlsConnector::from(client).into());
    }
    let hint = tls_hint(&fred_config, tls);
    let cluster = fred_config.server.is_clustered();
    if let ServerConfig::Clustered { policy, .. } = &mut fred_config.server {
        // Rediscover the cluster from the nodes last seen, not only from
        // the seed nodes of the URL (which may be the ones that failed).
        *policy = ClusterDiscoveryPolicy::UseCache;
    }
    let pool = Builder::from_config(fred_config)
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
            c.tcp.nodelay = Some(true);
            if cluster {
                c.max_redirections = 0;
            }
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build_pool(size)
        .map_err(|e| Error::Internal(format!("{what} Redis pool: {e}")))?;
    pool.init().await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot connect to Redis as the {what} user: {e}{hint}"
        ))
    })?;
    // Fail at start-up, not on the first request, when the credentials are
    // wrong or the user may not even PING.
    let _: () = pool
        .ping(None)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis refused the {what} user: {e}")))?;
    Ok(pool)
}

/// What a failed TLS connection may be for want of, naming the variables:
/// added to the start-up error, since Redis only closes the connection.
fn tls_hint(config: &FredConfig, tls: &RedisTls) -> String {
    if !config.uses_tls() {
        return String::new();
    }
    let trust = match &tls.ca_file {
        Some(path) => format!("KEYWARD_REDIS_CA_FILE ({})", path.display()),
        None => "the system's CA certificates (KEYWARD_REDIS_CA_FILE is unset)".to_owned(),
    };
    let client = match &tls.cert_file {
        Some(path) => format!("the client certificate KEYWARD_REDIS_CERT_FILE ({})", path.display()),
        None => "no client certificate (KEYWARD_REDIS_CERT_FILE and KEYWARD_REDIS_KEY_FILE are unset; Redis's `tls-auth-clients yes` requires one)".to_owned(),
    };
    format!(" (TLS: the server's certificate checked against {trust}; {client})")
}

impl Store {
    /// Connects every configured pool, failing with a clear error when Redis
    /// cannot be reached or refuses the credentials.
    pub async fn connect(config: &Config) -> Result<Self> {
        let validator = connect(config.redis_url.expose_secret(), config, "validator").await?;
        let admin = match (&config.admin_token, &config.admin_redis_url) {
            (Some(_), Some(url)) => Some(connect(url.expose_secret(), config, "manager").await?),
            _ => None,
        };
        let monitor = match &config.monitor_redis_url {
            Some(url) => Some(connect(url.expose_secret(), config, "monitor").await?),
            None => None,
        };
        let mut store = Self {
            validator,
            monitor,
            admin,
            client_name: config.client_name.clone(),
            audit_maxlen: config.audit_maxlen,
            streams: names::AuditStreams::new(
                config.audit_layout,
                &config.client_name,
                config.audit_shards,
            ),
            admin_wait_replicas: config.admin_wait_replicas,
            admin_wait_timeout: config.redis_timeout / 2,
            audit_budget: Arc::new(audit::Budget::new(config.audit_anonymous_per_second)),
            admin_budget: Arc::new(audit::Budget::admin(config.audit_anonymous_per_second)),
            usage: Arc::default(),
            record: Arc::new(record::Record::new(record::Retention {
                hours_days: config.usage_hours_kept_days,
                days_days: config.usage_days_kept_days,
                months: config.usage_months_kept,
            })),
            shutdown_grace: config.shutdown_grace,
            unsettled: Arc::default(),
            failsafes: Arc::default(),
            skew: Arc::default(),
            max_skew: config.max_clock_skew,
            shares_digests: !config.verify_peppers.is_empty(),
            flusher: Arc::default(),
        };
        if let Err(e) = store.measure_clock().await {
            tracing::warn!(error = %e, "Redis's clock not read (TIME refused?): this clock's skew is unknown");
        }
        // The task's own handle carries no abort guard, so the store's
        // handles going away (or `quit`) stops it.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(store.clone().flush_every_second(stopped));
        store.flusher = Arc::new(Flusher {
            stop: Some(stop),
            task: std::sync::Mutex::new(Some(task)),
        });
        Ok(store)
    }

    /// The audit budget for anonymous denials (see `audit`).
    pub fn audit_budget(&self) -> &audit::Budget {
        &self.audit_budget
    }

    /// Closes the connections after a last flush of anything queued,
    /// audit summaries and usage included. The flusher is stopped between
    /// two flushes and awaited (one aborted mid-flush would lose what it had
    /// taken); the usage is then flushed until Redis has taken all of it or
    /// `KEYWARD_SHUTDOWN_GRACE_MS` has passed.
    pub async fn quit(&self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        if let Some(stop) = &self.flusher.stop {
            let _ = stop.send(true);
        }
        let task = self
            .flusher
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::error!("the flusher did not stop within the shutdown grace: aborted");
            }
        }
        if let Err(e) = self.flush_summaries(true).await {
            tracing::error!(error = %e, "audit summaries lost at shutdown");
        }
        if let Err(e) = self.flush_admin_summaries(true).await {
            tracing::error!(error = %e, "admin audit summaries lost at shutdown");
        }
        loop {
            let flushed = self.flush_usage().await;
            if self.usage_settled() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let e = flushed.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::error!(error = %e, "usage counts lost at shutdown: Redis did not take them within KEYWARD_SHUTDOWN_GRACE_MS");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = self.settle_owed().await {
            tracing::error!(error = %e, "counted uses left unsettled at shutdown");
        }
        if let Err(e) = self.flush_failsafes().await {
            tracing::error!(error = %e, "failsafe answers' audit summaries lost at shutdown");
        }
        for pool in [
            Some(&self.validator),
            self.admin.as_ref(),
            self.monitor.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = pool.quit().await;
        }
    }

    /// Measures this machine's clock against Redis's `TIME` (read halfway
    /// through its round trip); the flusher does so every second.
    pub async fn measure_clock(&self) -> Result<()> {
        let time = CustomCommand::new_static("TIME", ClusterHash::Random, false);
        let before = now();
        let answer: (String, String) = self
            .validator
            .custom(time, Vec::<String>::new())
            .await
            .map_err(unavailable)?;
        let after = now();
        let parse = |s: &str| {
            s.parse::<i64>()
                .map_err(|e| Error::Unavailable(format!("TIME: {e}")))
        };
        let redis = parse(&answer.0)? as f64 + parse(&answer.1)? as f64 / 1e6;
        let ahead = (before + after) / 2.0 - redis;
        let was = self.clock_skew().is_ok();
        self.skew
            .micros
            .store((ahead * 1e6) as i64, Ordering::Relaxed);
        self.skew.measured.store(true, Ordering::Relaxed);
        match (was, self.clock_skew()) {
            (true, Err(e)) => tracing::error!(error = %e, "not ready: every validation is 503"),
            (false, Ok(())) => tracing::info!(
                ahead,
                "this instance's clock is back within KEYWARD_MAX_CLOCK_SKEW_MS of Redis's"
            ),
            _ => {}
        }
        Ok(())
    }

    /// `Err` (503, saying by how much) when this machine's clock is further
    /// from Redis's than `KEYWARD_MAX_CLOCK_SKEW_MS`, as last measured.
    pub fn clock_skew(&self) -> Result<()> {
        let ahead = self.skew.micros.load(Ordering::Relaxed) as f64 / 1e6;
        match ahead.abs() <= self.max_skew.as_secs_f64() {
            true => Ok(()),
            false => Err(Error::Unavailable(format!(
                "this instance's clock is {ahead:+.3} s off Redis's, past KEYWARD_MAX_CLOCK_SKEW_MS"
            ))),
        }
    }

    /// Whether Redis answers this deployment's validator user.
    pub async fn ping(&self) -> Result<()> {
        self.validator.ping::<()>(None).await.map_err(unavailable)
    }

    /// Whether Redis answers every user this deployment is configured with.
    pub async fn ping_all(&self) -> Result<()> {
        self.ping().await?;
        self.clock_skew()?;
        for pool in [&self.admin, &self.monitor].into_iter().flatten() {
            pool.ping::<()>(None).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Samples `XLEN` of every audit stream into a gauge, with the monitor
    /// user. Does nothing without one.
    pub async fn sample_audit_lengths(&self) -> Result<()> {
        let Some(monitor) = &self.monitor else {
            return Ok(());
        };
        let mut streams = self.streams.keylookup_all();
        streams.push(self.streams.admin().to_owned());
        for stream in streams {
            let len: u64 = monitor.xlen(&stream).await.map_err(unavailable)?;
            metrics::gauge!(metric::AUDIT_STREAM_LENGTH, "stream" => stream).set(len as f64);
        }
        Ok(())
    }

    fn audit_cap(&self) -> (&'static str, &'static str, i64) {
        ("MAXLEN", "~", self.audit_maxlen as i64)
    }

    /// The cap of each validation audit stream: `KEYWARD_AUDIT_MAXLEN` is
    /// their total, so sharding keeps as much history, in as much memory.
    fn keylookup_cap(&self) -> (&'static str, &'static str, i64) {
        let each = self.audit_maxlen.div_ceil(self.streams.shards() as u64);
        ("MAXLEN", "~", each as i64)
    }
}
