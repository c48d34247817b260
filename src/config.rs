//! The one typed `Config`, read once at start-up and validated. No other
//! module of the service reads the environment.
//!
//! Each setting is a clap argument: a flag of `keyward serve` and a
//! `KEYWARD_*` environment variable, with its type, default, range and help
//! in one declaration, so `keyward serve --help` is the table of settings.
//! An empty variable counts as unset. A bad value names the variable (or the
//! flag) at fault, so a bad deployment stops with one clear line.
//!
//! Secrets (`KEYWARD_REDIS_URL`, `KEYWARD_ADMIN_REDIS_URL`,
//! `KEYWARD_ADMIN_TOKEN`, `KEYWARD_MONITOR_REDIS_URL`, and `keyward migrate`'s
//! `KEYWARD_MIGRATE_REDIS_URL` in [`MigrateConfig`]) are never flags: they
//! come from the environment, or from a file named by `<NAME>_FILE`, by the
//! one rule in [`secret`], which the CLI follows for its admin token too.
//!
//! Tests read a `Config` through [`Config::from_lookup`], never the process
//! environment.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, Args, FromArgMatches, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

fn bad(var: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.into(),
        problem: problem.into(),
    }
}

/// A setting clap could not parse: the variable and the problem its
/// `Setting` parser left in the error.
impl From<clap::Error> for ConfigError {
    fn from(e: clap::Error) -> Self {
        match (e.get(ContextKind::InvalidArg), e.get(ContextKind::Custom)) {
            (Some(ContextValue::String(var)), Some(ContextValue::String(problem))) => {
                bad(var.clone(), problem.clone())
            }
            // Not a setting's value (no such error is expected): clap's line.
            _ => {
                let text = e.to_string();
                let line = text.lines().next().unwrap_or_default();
                bad("keyward serve", line.trim_start_matches("error: "))
            }
        }
    }
}

/// The header forward auth reads the client's address from, by default
/// (also the default of `keyward check --client-ip-header`).
pub const CLIENT_IP_HEADER: &str = "X-Forwarded-For";

/// Which audit streams a deployment writes and reads (see `store::names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditLayout {
    /// `audit:keylookup` and `audit:admin`: the original service's layout.
    Shared,
    /// `audit:<deployment>:keylookup` and `audit:<deployment>:admin`.
    Deployment,
}

/// Deployment names that the `deployment` audit layout cannot take: their
/// streams would fall under the shared layout's own names
/// (`audit:keylookup:*`).
pub const RESERVED_DEPLOYMENT_NAMES: [&str; 2] = ["keylookup", "admin"];

/// What a validation answers when Redis did not answer a read a pass needs,
/// or did not take its audit entry, and no read refused the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Failsafe {
    /// 503: every 200 was decided on a document just read, and is audited.
    Closed,
    /// "Last known good": 200 marked `X-Keyward-Failsafe: open` only for a
    /// key whose exact secret this instance answered 200 within
    /// `KEYWARD_FAILSAFE_MAX_AGE` and has not refused since (with the
    /// document it read then), or whose document was just read and secret
    /// just verified; counted, logged, and audited once Redis is back as a
    /// summary per key. Everything else 503; a refusal Redis answered still
    /// stands.
    Open,
}

/// Forward auth: which headers name the original request (its method and
/// path, for the audit entry). Only those are read, so a client's copies of
/// the others mean nothing; the gateway must set or remove the trusted ones
/// on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OriginalHeaders {
    /// `X-Forwarded-Method` and `X-Forwarded-Uri` (Caddy, Traefik, Kong).
    XForwarded,
    /// `X-Original-Method` and `X-Original-URI` (nginx `auth_request`).
    XOriginal,
    /// Neither: the check request's own method and path after `/v1/auth`
    /// (Envoy `ext_authz` with `path_prefix`).
    Envoy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Argon2id cost for newly minted keys. Verification always follows the
/// parameters stored in each hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Argon2Params {
    /// Argon2id memory (`m`) for newly minted keys, in KiB; at least 8 times
    /// the parallelism.
    #[arg(
        long = "argon2-memory-kib",
        env = "KEYWARD_ARGON2_MEMORY_KIB",
        value_name = "KIB",
        default_value_t = 65536,
        value_parser = number::<u32>(..)
    )]
    pub memory_kib: u32,
    /// Argon2id passes (`t`) for newly minted keys (at least 1).
    #[arg(
        long = "argon2-iterations",
        env = "KEYWARD_ARGON2_ITERATIONS",
        value_name = "T",
        default_value_t = 3,
        value_parser = number::<u32>(1..)
    )]
    pub iterations: u32,
    /// Argon2id lanes (`p`) for newly minted keys (at least 1).
    #[arg(
        long = "argon2-parallelism",
        env = "KEYWARD_ARGON2_PARALLELISM",
        value_name = "P",
        default_value_t = 1,
        value_parser = number::<u32>(1..)
    )]
    pub parallelism: u32,
}

/// TLS to Redis, for every `rediss://` and `rediss-cluster://` URL keyward
/// takes (the validator's, the manager's, the monitor's, the cluster's
/// nodes, and `keyward migrate`'s). Without a CA file the server's
/// certificate is checked against the system's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct RedisTls {
    /// rediss://: a PEM bundle of the CA certificates Redis's certificate
    /// must chain to, instead of the system's.
    #[arg(
        id = "redis_ca_file",
        long = "redis-ca-file",
        env = "KEYWARD_REDIS_CA_FILE",
        value_name = "PATH"
    )]
    pub ca_file: Option<PathBuf>,
    /// rediss://: a PEM client certificate (chain) for Redis's
    /// `tls-auth-clients`, with KEYWARD_REDIS_KEY_FILE.
    #[arg(
        id = "redis_cert_file",
        long = "redis-cert-file",
        env = "KEYWARD_REDIS_CERT_FILE",
        value_name = "PATH"
    )]
    pub cert_file: Option<PathBuf>,
    /// rediss://: the PEM private key of KEYWARD_REDIS_CERT_FILE.
    #[arg(
        id = "redis_key_file",
        long = "redis-key-file",
        env = "KEYWARD_REDIS_KEY_FILE",
        value_name = "PATH"
    )]
    pub key_file: Option<PathBuf>,
}

impl RedisTls {
    /// Checks the files load, naming the variable at fault, when `urls`
    /// has a TLS URL; a file set for no TLS URL is a mistake too.
    fn check<'a>(
        &self,
        mut urls: impl Iterator<Item = &'a SecretString>,
    ) -> Result<(), ConfigError> {
        let tls = urls.any(|url| url.expose_secret().starts_with("rediss"));
        let set = [
            ("KEYWARD_REDIS_CA_FILE", &self.ca_file),
            ("KEYWARD_REDIS_CERT_FILE", &self.cert_file),
            ("KEYWARD_REDIS_KEY_FILE", &self.key_file),
        ]
        .into_iter()
        .find_map(|(var, file)| file.as_ref().map(|_| var));
        match (tls, set) {
            (true, _) => crate::tls::redis_client(self).map(drop),
            (false, Some(var)) => Err(bad(var, "is for rediss:// URLs, and no Redis URL is one")),
            (false, None) => Ok(()),
        }
    }
}

/// The public listener over TLS (the metrics listener stays plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListenerTls {
    /// A PEM certificate (chain) that makes the public listener HTTPS only
    /// (HTTP/1.1 and HTTP/2 by ALPN), with KEYWARD_TLS_KEY_FILE.
    #[arg(
        id = "tls_cert_file",
        long = "tls-cert-file",
        env = "KEYWARD_TLS_CERT_FILE",
        value_name = "PATH"
    )]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of KEYWARD_TLS_CERT_FILE.
    #[arg(
        id = "tls_key_file",
        long = "tls-key-file",
        env = "KEYWARD_TLS_KEY_FILE",
        value_name = "PATH"
    )]
    pub key_file: Option<PathBuf>,
    /// A PEM bundle of CA certificates that makes the listener mTLS: a
    /// client without a certificate from one of them gets no answer.
    #[arg(
        id = "tls_client_ca_file",
        long = "tls-client-ca-file",
        env = "KEYWARD_TLS_CLIENT_CA_FILE",
        value_name = "PATH"
    )]
    pub client_ca_file: Option<PathBuf>,
    /// How often the three files are read again, in milliseconds (1 to
    /// 60000): a renewed certificate is served to new connections; one that
    /// does not load keeps the previous one, and the log says why.
    #[arg(
        long = "tls-reload-ms",
        env = "KEYWARD_TLS_RELOAD_MS",
        value_name = "MS",
        default_value = "10000",
        value_parser = millis(1..=60_000)
    )]
    pub reload: Duration,
}

impl ListenerTls {
    /// Whether the public listener is HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    fn check(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => crate::tls::check_listener(self),
            (Some(_), None) => Err(bad(
                "KEYWARD_TLS_KEY_FILE",
                "is required with KEYWARD_TLS_CERT_FILE",
            )),
            (None, Some(_)) => Err(bad(
                "KEYWARD_TLS_CERT_FILE",
                "is required with KEYWARD_TLS_KEY_FILE",
            )),
            (None, None) if self.client_ca_file.is_some() => Err(bad(
                "KEYWARD_TLS_CLIENT_CA_FILE",
                "needs KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE (mTLS is TLS first)",
            )),
            (None, None) => Ok(()),
        }
    }
}

/// `keyward serve`'s configuration. As clap parses it, it has no secrets
/// yet: [`Config::with_secrets`] adds them and validates the whole.
#[derive(Debug, Clone, Args)]
#[command(after_help = SECRETS_HELP, mut_args = empty_is_unset)]
pub struct Config {
    /// The public listener's address.
    #[arg(
        long,
        env = "KEYWARD_LISTEN",
        value_name = "ADDR",
        default_value_t = SocketAddr::from(([127, 0, 0, 1], 8080)),
        value_parser = address()
    )]
    pub listen: SocketAddr,
    /// When set, `/metrics` is served only on this separate listener, not
    /// on the public one; it stays plain HTTP, even with
    /// KEYWARD_TLS_CERT_FILE (keep it on a private address).
    #[arg(
        long,
        env = "KEYWARD_METRICS_LISTEN",
        value_name = "ADDR",
        value_parser = address()
    )]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: ListenerTls,
    #[command(flatten)]
    pub redis_tls: RedisTls,
    /// Redis URL of the least-privileged `validator` user.
    #[arg(skip = SecretString::from(String::new()))]
    pub redis_url: SecretString,
    /// Redis URL of the `manager` user, used only by admin endpoints.
    #[arg(skip)]
    pub admin_redis_url: Option<SecretString>,
    /// Bearer token for the admin endpoints; without one they are not served.
    #[arg(skip)]
    pub admin_token: Option<SecretString>,
    /// Redis URL of a read-only monitoring user (e.g. `ops`), used only to
    /// sample the audit streams' lengths; the other users may not read them.
    #[arg(skip)]
    pub monitor_redis_url: Option<SecretString>,
    /// How often the audit streams' lengths are sampled (with
    /// KEYWARD_MONITOR_REDIS_URL), in milliseconds (at least 1).
    #[arg(
        long = "audit-sample-ms",
        env = "KEYWARD_AUDIT_SAMPLE_MS",
        value_name = "MS",
        default_value = "15000",
        value_parser = millis(1..)
    )]
    pub audit_sample_interval: Duration,
    /// This deployment's name, written as `client` in audit entries; its
    /// operators, its projects index and (with `KEYWARD_AUDIT_LAYOUT=
    /// deployment`) its audit streams are named after it (give each client
    /// deployment its own, and `keyward acl --deployment` the same); 1 to 64
    /// of `[A-Za-z0-9_-]`.
    #[arg(
        long,
        env = "KEYWARD_CLIENT_NAME",
        value_name = "NAME",
        default_value = DEFAULT_CLIENT_NAME,
        value_parser = client_name()
    )]
    pub client_name: String,
    /// Forward auth: the header whose right-most address is the client's,
    /// for keys bound to networks (`allowed_cidrs`). Kept in lower case.
    #[arg(
        long,
        env = "KEYWARD_CLIENT_IP_HEADER",
        value_name = "HEADER",
        default_value = CLIENT_IP_HEADER,
        value_parser = header_name()
    )]
    pub client_ip_header: String,
    /// Forward auth: a query parameter the key may come in; off by default
    /// (keys in URLs end up in access logs).
    #[arg(
        long,
        env = "KEYWARD_AUTH_QUERY_PARAM",
        value_name = "NAME",
        value_parser = query_param()
    )]
    pub auth_query_param: Option<String>,
    /// Forward auth: the headers that name the original request for the
    /// audit entry: `x-forwarded` (`X-Forwarded-Method`/`-Uri`: Caddy,
    /// Traefik, Kong), `x-original` (`X-Original-Method`/`-URI`: nginx), or
    /// `envoy` (the check request's own method and path). The others are
    /// ignored; the gateway must overwrite or remove the trusted ones.
    #[arg(
        long,
        env = "KEYWARD_AUTH_ORIGINAL_HEADERS",
        value_enum,
        default_value_t = OriginalHeaders::XForwarded,
        value_parser = choice::<OriginalHeaders>()
    )]
    pub auth_original_headers: OriginalHeaders,
    /// Forward auth: take a request's cost from `X-Keyward-Cost` (`true`).
    /// Off by default: behind a gateway that passes its clients' headers
    /// through, clients would choose their own cost (0 spends nothing).
    /// Turn it on only where the gateway sets or removes the header on every
    /// request. Off, a well-formed header is ignored (cost 1).
    #[arg(
        long,
        env = "KEYWARD_AUTH_COST_HEADER",
        value_name = "BOOL",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auth_cost_header: bool,
    /// Validations per minute for keys without their own limit (at least 1).
    #[arg(
        long,
        env = "KEYWARD_DEFAULT_RATE_LIMIT",
        value_name = "N",
        default_value_t = 100,
        value_parser = number::<u64>(1..)
    )]
    pub default_rate_limit: u64,
    /// Approximate cap (`XADD MAXLEN ~`) of each audit stream (at least 1).
    ///
    /// With KEYWARD_AUDIT_SHARDS=N, of the N validation streams together
    /// (each keeps about 1/N).
    #[arg(
        long,
        env = "KEYWARD_AUDIT_MAXLEN",
        value_name = "N",
        default_value_t = 1_000_000,
        value_parser = number::<u64>(1..)
    )]
    pub audit_maxlen: u64,
    /// Days the usage record keeps its hours (1 to 3660).
    ///
    /// Counted from the end of the half-day each record hash holds
    /// (`GET /v1/admin/usage?granularity=hour`).
    #[arg(
        long,
        env = "KEYWARD_USAGE_HOURS_KEPT_DAYS",
        value_name = "DAYS",
        default_value_t = 35,
        value_parser = number::<u32>(1..=3_660)
    )]
    pub usage_hours_kept_days: u32,
    /// Days the usage record keeps its days (1 to 36600).
    ///
    /// Counted from the end of the third of a month each record hash holds.
    #[arg(
        long,
        env = "KEYWARD_USAGE_DAYS_KEPT_DAYS",
        value_name = "DAYS",
        default_value_t = 400,
        value_parser = number::<u32>(1..=36_600)
    )]
    pub usage_days_kept_days: u32,
    /// Months the usage record keeps its months (1 to 1200).
    ///
    /// Counted from the end of the year each record hash holds.
    #[arg(
        long,
        env = "KEYWARD_USAGE_MONTHS_KEPT",
        value_name = "MONTHS",
        default_value_t = 60,
        value_parser = number::<u32>(1..=1_200)
    )]
    pub usage_months_kept: u32,
    /// Streams the validation audit is spread over (1 to 256).
    ///
    /// 1 writes `audit:keylookup`; N > 1 writes `audit:keylookup:{0}` ..
    /// `{N-1}`, on different cluster slots, for a Redis Cluster whose audit
    /// master saturates. Entries written before a change of N stay where
    /// they were, and `GET /v1/activity` and the length gauge read only the
    /// current streams.
    #[arg(
        long,
        env = "KEYWARD_AUDIT_SHARDS",
        value_name = "N",
        default_value_t = 1,
        value_parser = number::<usize>(1..=MAX_AUDIT_SHARDS)
    )]
    pub audit_shards: usize,
    /// Where the audit entries go. `shared`: `audit:keylookup` and
    /// `audit:admin`, the original service's layout, one for every
    /// deployment on the Redis (a monitor user reads them all). `deployment`:
    /// `audit:<KEYWARD_CLIENT_NAME>:keylookup` and `...:admin`, so
    /// `keyward acl --role monitor` can grant one client's and no other's.
    #[arg(
        long,
        env = "KEYWARD_AUDIT_LAYOUT",
        value_enum,
        default_value_t = AuditLayout::Shared,
        value_parser = choice::<AuditLayout>()
    )]
    pub audit_layout: AuditLayout,
    /// Anonymous denials (`malformed`, `not_found`, `forbidden`) audited one
    /// entry each per second, per instance; past it they are summarized.
    #[arg(
        long,
        env = "KEYWARD_AUDIT_ANONYMOUS_PER_SECOND",
        value_name = "N",
        default_value_t = 20,
        value_parser = number::<u64>(..)
    )]
    pub audit_anonymous_per_second: u64,
    /// Deadline of each Redis command, in milliseconds; past it the request
    /// fails closed (503) (at least 1).
    #[arg(
        long = "redis-timeout-ms",
        env = "KEYWARD_REDIS_TIMEOUT_MS",
        value_name = "MS",
        default_value = "1000",
        value_parser = millis(1..)
    )]
    pub redis_timeout: Duration,
    /// Connections in each Redis user's pool, by default one per two cores
    /// (at least 1).
    ///
    /// Each connection has one fred router task that writes every command
    /// queued since its last write at once, so fewer connections carry
    /// larger batches: cheaper for Redis and for keyward per validation (the
    /// README's Performance section has the measurement). A router task runs
    /// on one thread at a time, hence one per two cores.
    #[arg(
        long,
        env = "KEYWARD_REDIS_POOL_SIZE",
        value_name = "N",
        default_value_t = cores().div_ceil(2),
        value_parser = number::<usize>(1..)
    )]
    pub redis_pool_size: usize,
    /// Replicas that must have a key's mint, update, rotation or revoke
    /// before it is answered; 0: no wait (0 to 64).
    ///
    /// A `WAIT` on the key's master, for at most half
    /// KEYWARD_REDIS_TIMEOUT_MS, so the write survives a failover. Short of
    /// them in time (or when `WAIT` fails, e.g. a manager without `WAIT` in
    /// its ACL), the write is answered anyway, logged and counted in
    /// `keyward_admin_writes_unconfirmed_total`.
    #[arg(
        long,
        env = "KEYWARD_ADMIN_WAIT_REPLICAS",
        value_name = "N",
        default_value_t = 0,
        value_parser = number::<u64>(..=MAX_WAIT_REPLICAS)
    )]
    pub admin_wait_replicas: u64,
    /// Threads serving requests (tokio workers; Argon2id runs on its own
    /// blocking pool), by default one per core (1 to 1024).
    ///
    /// 1 with KEYWARD_REDIS_POOL_SIZE=1 is the cheapest per validation where
    /// keyward shares cores with Redis (see the README's Performance
    /// section); scale out with instances.
    #[arg(
        long,
        env = "KEYWARD_WORKER_THREADS",
        value_name = "N",
        default_value_t = cores(),
        value_parser = number::<usize>(1..=MAX_WORKER_THREADS)
    )]
    pub worker_threads: usize,
    /// Deadline of a whole HTTP request, in milliseconds (at least 1).
    #[arg(
        long = "request-timeout-ms",
        env = "KEYWARD_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        default_value = "5000",
        value_parser = millis(1..)
    )]
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(
        long = "shutdown-grace-ms",
        env = "KEYWARD_SHUTDOWN_GRACE_MS",
        value_name = "MS",
        default_value = "10000",
        value_parser = millis(..)
    )]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub argon2: Argon2Params,
    /// Argon2id verifications running at once, on the blocking pool, by
    /// default one per core (at least 1).
    #[arg(
        long,
        env = "KEYWARD_ARGON2_CONCURRENCY",
        value_name = "N",
        default_value_t = cores(),
        value_parser = number::<usize>(1..)
    )]
    pub argon2_concurrency: usize,
    /// Verifications allowed to wait for a slot; past it, 503 `busy`.
    #[arg(
        long,
        env = "KEYWARD_ARGON2_QUEUE",
        value_name = "N",
        default_value_t = 64,
        value_parser = number::<usize>(..)
    )]
    pub argon2_queue: usize,
    /// Entries in the verified-secret cache; 0 disables it.
    #[arg(
        long,
        env = "KEYWARD_VERIFY_CACHE_ENTRIES",
        value_name = "N",
        default_value_t = 100_000,
        value_parser = number::<u64>(..)
    )]
    pub verify_cache_entries: u64,
    /// A file of peppers, one per line (at least 32 characters each), that
    /// every instance of the deployment has and Redis does not. With it, a
    /// secret verified once by any instance is shared in Redis as a
    /// keyed digest (never the secret), so a new or restarted instance
    /// validates it without Argon2id. The first line makes new digests;
    /// every line is accepted (rotation: put the new pepper first). Unset:
    /// each instance verifies each key once with Argon2id.
    #[arg(long, env = "KEYWARD_VERIFY_PEPPER_FILE", value_name = "PATH")]
    pub verify_pepper_file: Option<std::path::PathBuf>,
    /// The peppers read from `verify_pepper_file`.
    #[arg(skip)]
    pub verify_peppers: Vec<SecretString>,
    /// Wrong secrets per key per minute that may cost an Argon2id run; past
    /// it, 401 without hashing. Zero would refuse every secret not yet
    /// verified, so it is refused (at least 1).
    #[arg(
        long,
        env = "KEYWARD_BAD_SECRET_HASHES_PER_MINUTE",
        value_name = "N",
        default_value_t = 10,
        value_parser = number::<u64>(1..)
    )]
    pub bad_secret_hashes_per_minute: u64,
    /// What a validation answers when Redis did not answer a read a pass
    /// needs, or did not take its audit entry, and no read refused the key
    /// (see ARCHITECTURE.md, "Failure behaviour").
    #[arg(
        long,
        env = "KEYWARD_FAILSAFE",
        value_enum,
        default_value_t = Failsafe::Closed,
        value_parser = choice::<Failsafe>()
    )]
    pub failsafe: Failsafe,
    /// Under `KEYWARD_FAILSAFE=open`: how long, in seconds, a 200 this
    /// instance answered may stand in for a key while Redis cannot be read
    /// (1 to 86400): a key revoked through another instance can pass here
    /// for at most this long, and only while Redis cannot be read.
    #[arg(
        long = "failsafe-max-age",
        env = "KEYWARD_FAILSAFE_MAX_AGE",
        value_name = "SECONDS",
        default_value_t = 300,
        value_parser = number::<u64>(1..=86_400)
    )]
    pub failsafe_max_age: u64,
    /// How far, in milliseconds, this instance's clock may be from Redis's
    /// (`TIME`, measured every second): past it the instance is not ready
    /// and answers every validation 503, so expiry and a rotation's grace
    /// are never decided on a clock that is off (1 to 315360000000).
    #[arg(
        long = "max-clock-skew-ms",
        env = "KEYWARD_MAX_CLOCK_SKEW_MS",
        value_name = "MS",
        default_value = "2000",
        value_parser = millis(1..=315_360_000_000)
    )]
    pub max_clock_skew: Duration,
    /// Webhooks: days before a key's expiry that `key.expiring` is sent,
    /// once per key and expiry (1 to 3650).
    #[arg(
        long,
        env = "KEYWARD_EXPIRY_NOTICE_DAYS",
        value_name = "DAYS",
        default_value_t = 7,
        value_parser = number::<u64>(1..=3650)
    )]
    pub expiry_notice_days: u64,
    /// Webhooks: a key's network (its client address's /24, or /64 for
    /// IPv6) unseen for this many days is `key.new_network` (1 to 3650).
    #[arg(
        long,
        env = "KEYWARD_NEW_NETWORK_DAYS",
        value_name = "DAYS",
        default_value_t = 30,
        value_parser = number::<u64>(1..=3650)
    )]
    pub new_network_days: u64,
    /// Webhooks: how long one delivery attempt may take, in milliseconds
    /// (1 to 300000).
    #[arg(
        long = "webhook-timeout-ms",
        env = "KEYWARD_WEBHOOK_TIMEOUT_MS",
        value_name = "MS",
        default_value = "15000",
        value_parser = millis(1..=300_000)
    )]
    pub webhook_timeout: Duration,
    /// Webhooks: the waits before each retry of a failed delivery, e.g.
    /// `5s,5m,30m,2h,5h,10h,10h` (units `ms`, `s`, `m`, `h`; 1 to 50 of
    /// them); after the last retry fails the message is given up.
    #[arg(
        long,
        env = "KEYWARD_WEBHOOK_RETRY_SCHEDULE",
        value_name = "LIST",
        default_value = "5s,5m,30m,2h,5h,10h,10h",
        value_parser = setting(parse_schedule)
    )]
    pub webhook_retry_schedule: Schedule,
    /// Webhooks: allow endpoints on loopback, private, link-local and other
    /// internal addresses (for tests and internal receivers). Off, such a
    /// URL is refused when registered and again at each delivery.
    #[arg(
        long,
        env = "KEYWARD_WEBHOOK_ALLOW_PRIVATE",
        value_name = "BOOL",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: bool,
    /// Webhooks: endpoints this deployment may have at most; past it a
    /// registration is `409 quota_reached` (1 to 10000).
    #[arg(
        long,
        env = "KEYWARD_WEBHOOKS_MAX",
        value_name = "N",
        default_value_t = 100,
        value_parser = number::<u64>(1..=10_000)
    )]
    pub webhooks_max: u64,
    /// Webhooks: endpoints that may name one project (`*` counts as a
    /// project of its own); past it `409 quota_reached` (1 to 10000).
    #[arg(
        long,
        env = "KEYWARD_WEBHOOKS_PER_PROJECT",
        value_name = "N",
        default_value_t = 10,
        value_parser = number::<u64>(1..=10_000)
    )]
    pub webhooks_per_project: u64,
    /// Admin writes (projects, keys, credits, operators, webhooks) one
    /// operator may make per minute, per instance; past it `429
    /// admin_rate_limited` with `Retry-After`. The root token is exempt
    /// (at least 1).
    #[arg(
        long,
        env = "KEYWARD_ADMIN_WRITES_PER_MINUTE",
        value_name = "N",
        default_value_t = 120,
        value_parser = number::<u64>(1..)
    )]
    pub admin_writes_per_minute: u64,
    /// Audit and activity reads (`GET /v1/admin/audit`, `GET /v1/activity`)
    /// one caller may have running at once, per instance; past it `429
    /// admin_rate_limited` (1 to 64).
    #[arg(
        long,
        env = "KEYWARD_ADMIN_READS_AT_ONCE",
        value_name = "N",
        default_value_t = 2,
        value_parser = number::<u64>(1..=64)
    )]
    pub admin_reads_at_once: u64,
    /// How logs are written (to stderr).
    #[arg(
        long,
        env = "KEYWARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_parser = choice::<LogFormat>()
    )]
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `keyward=debug`.
    #[arg(
        long = "log",
        env = "KEYWARD_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_filter: String,
}

/// The secrets, in `keyward serve --help`; [`Config::with_secrets`] reads them.
const SECRETS_HELP: &str = "\
Secrets come from the environment, never from flags. Each NAME may instead be
read from the file named by NAME_FILE (surrounding whitespace trimmed); setting
both is an error.
  KEYWARD_REDIS_URL          Required: the `validator` user's URL,
                             redis://validator:<password>@host:port, or for a
                             Redis Cluster redis-cluster://validator:<password>@
                             host:port?node=host:port&node=... (then the other
                             URLs must be redis-cluster:// URLs too)
  KEYWARD_ADMIN_REDIS_URL    The `manager` user's URL; required with an admin
                             token
  KEYWARD_ADMIN_TOKEN        The admin API's bearer token (at least 16
                             characters); without it, no admin API
  KEYWARD_MONITOR_REDIS_URL  The monitor user (`keyward acl --role monitor`),
                             which reads this deployment's audit streams: the
                             console's Activity, GET /v1/activity,
                             GET /v1/admin/audit, the stream length gauge";

impl Config {
    /// The settings as clap parses them for `keyward serve`.
    fn command() -> clap::Command {
        Self::augment_args(clap::Command::new("serve"))
    }

    /// Reads the whole configuration through `lookup`, variable by
    /// variable, instead of the process environment and the command line,
    /// so tests need neither.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        args_from_lookup::<Self>(&lookup)?.with_secrets(lookup)
    }

    /// The settings clap parsed (`keyward serve`'s flags and variables),
    /// with the secrets from the process environment, validated.
    pub fn with_secrets_from_env(self) -> Result<Self, ConfigError> {
        self.with_secrets(|name| std::env::var(name).ok())
    }

    /// The settings clap parsed, with the secrets read through `lookup`,
    /// validated.
    pub fn with_secrets(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        self.redis_url = secret(&lookup, "KEYWARD_REDIS_URL")?
            .ok_or_else(|| bad("KEYWARD_REDIS_URL", "is required"))?;
        self.admin_redis_url = secret(&lookup, "KEYWARD_ADMIN_REDIS_URL")?;
        self.admin_token = secret(&lookup, "KEYWARD_ADMIN_TOKEN")?;
        self.monitor_redis_url = secret(&lookup, "KEYWARD_MONITOR_REDIS_URL")?;
        if let Some(path) = &self.verify_pepper_file {
            self.verify_peppers =
                peppers(path).map_err(|problem| bad("KEYWARD_VERIFY_PEPPER_FILE", problem))?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Only the listen address, from `KEYWARD_LISTEN` as `keyward serve`
    /// reads it, and whether it is HTTPS (`KEYWARD_TLS_CERT_FILE` is set),
    /// for `keyward healthcheck`, which must work without the rest of the
    /// configuration (or its secrets).
    pub fn listen_from_env() -> Result<(SocketAddr, bool), ConfigError> {
        let args = Self::command()
            .get_arguments()
            .filter(|arg| ["listen", "tls_cert_file"].contains(&arg.get_id().as_str()))
            .cloned()
            .collect::<Vec<_>>();
        let matches = clap::Command::new("healthcheck")
            .args(args)
            .try_get_matches_from(["healthcheck"])?;
        let listen = *matches
            .get_one("listen")
            .expect("KEYWARD_LISTEN has a default");
        Ok((listen, matches.contains_id("tls_cert_file")))
    }

    /// The checks that involve more than one setting, or a secret.
    fn validate(&self) -> Result<(), ConfigError> {
        let cluster = check_redis_url("KEYWARD_REDIS_URL", &self.redis_url)?;
        let others = [
            ("KEYWARD_ADMIN_REDIS_URL", &self.admin_redis_url),
            ("KEYWARD_MONITOR_REDIS_URL", &self.monitor_redis_url),
        ];
        for (var, url) in others {
            let Some(url) = url else { continue };
            // Every user reads the same data: one cluster, or one Redis.
            if check_redis_url(var, url)? != cluster {
                return Err(bad(
                    var,
                    "must be a redis-cluster:// URL exactly when KEYWARD_REDIS_URL is one",
                ));
            }
        }
        let reserved = RESERVED_DEPLOYMENT_NAMES.contains(&self.client_name.as_str());
        if self.audit_layout == AuditLayout::Deployment && reserved {
            return Err(bad(
                "KEYWARD_CLIENT_NAME",
                "cannot be `keylookup` or `admin` with KEYWARD_AUDIT_LAYOUT=deployment \
                 (its streams would be the shared layout's)",
            ));
        }
        let urls = [&self.admin_redis_url, &self.monitor_redis_url];
        let urls = std::iter::once(&self.redis_url).chain(urls.into_iter().flatten());
        self.redis_tls.check(urls)?;
        self.tls.check()?;
        if self.admin_token.is_some() && self.admin_redis_url.is_none() {
            return Err(bad(
                "KEYWARD_ADMIN_REDIS_URL",
                "is required when KEYWARD_ADMIN_TOKEN is set (admin uses the `manager` Redis user)",
            ));
        }
        if let Some(token) = &self.admin_token {
            if token.expose_secret().len() < 16 {
                return Err(bad("KEYWARD_ADMIN_TOKEN", "must be at least 16 characters"));
            }
        }
        if u64::from(self.argon2.memory_kib) < 8 * u64::from(self.argon2.parallelism) {
            return Err(bad(
                "KEYWARD_ARGON2_MEMORY_KIB",
                "must be at least 8 x parallelism",
            ));
        }
        Ok(())
    }
}

/// The settings of `T` read through `lookup`, variable by variable, instead
/// of the process environment and the command line.
fn args_from_lookup<T: Args + FromArgMatches>(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    // Each setting `lookup` knows becomes its flag; the others must not
    // fall back to the process environment.
    let mut args = vec!["keyward".to_owned()];
    let command = T::augment_args(clap::Command::new("keyward")).mut_args(|arg| {
        let value = arg
            .get_env()
            .and_then(|var| lookup(var.to_str()?))
            .filter(|v| !v.is_empty());
        match (value, arg.get_long()) {
            (Some(value), Some(long)) => {
                args.push(format!("--{long}={value}"));
                arg
            }
            _ => arg.env(None),
        }
    });
    let matches = command.try_get_matches_from(args)?;
    Ok(T::from_arg_matches(&matches)?)
}

/// What `keyward migrate` needs: the `migrator` user's Redis URL, never
/// from the command line (it holds a password).
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    /// From `--redis-url-file`, else `KEYWARD_MIGRATE_REDIS_URL` or
    /// `KEYWARD_MIGRATE_REDIS_URL_FILE`.
    pub redis_url: SecretString,
    /// Deadline of each Redis command; migration commands move chunks of
    /// ids, so it is longer than the service's.
    pub redis_timeout: Duration,
    /// For a `rediss://` URL: the same variables as `keyward serve`'s.
    pub redis_tls: RedisTls,
}

impl MigrateConfig {
    pub fn from_env(url_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), url_file)
    }

    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        url_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        const VAR: &str = "KEYWARD_MIGRATE_REDIS_URL";
        let redis_url = match url_file {
            Some(path) => secret_file(path)
                .map(Some)
                .map_err(|problem| bad(format!("{VAR}_FILE"), problem))?,
            None => secret(&lookup, VAR)?,
        }
        .ok_or_else(|| {
            bad(
                VAR,
                "is required (or KEYWARD_MIGRATE_REDIS_URL_FILE, or --redis-url-file): \
                 redis://migrator:<password>@host:port",
            )
        })?;
        check_redis_url(VAR, &redis_url)?;
        let redis_tls: RedisTls = args_from_lookup(&lookup)?;
        redis_tls.check(std::iter::once(&redis_url))?;
        Ok(Self {
            redis_url,
            redis_timeout: Duration::from_secs(10),
            redis_tls,
        })
    }
}

/// A secret from the variable `var`, or else from the file named by
/// `<var>_FILE`, surrounding whitespace trimmed; empty is unset, and both
/// set is an error. The service, `keyward migrate` and the CLI read every
/// secret this way.
pub fn secret(
    lookup: impl Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<SecretString>, ConfigError> {
    let file_var = format!("{var}_FILE");
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    match (set(var), set(&file_var)) {
        (Some(_), Some(_)) => Err(bad(
            var,
            format!("set either {var} or {file_var}, not both"),
        )),
        (Some(value), None) => Ok(Some(value.trim().to_owned().into())),
        (None, Some(path)) => secret_file(Path::new(&path))
            .map(Some)
            .map_err(|problem| bad(file_var, problem)),
        (None, None) => Ok(None),
    }
}

/// The secret in the file at `path`, surrounding whitespace trimmed; an
/// empty file is an error.
pub fn secret_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match text.trim() {
        "" => Err(format!("{} is empty", path.display())),
        text => Ok(text.to_owned().into()),
    }
}

/// The peppers in the file at `path`: one per non-empty line, surrounding
/// whitespace trimmed, each at least 32 characters.
fn peppers(path: &Path) -> Result<Vec<SecretString>, String> {
    // Read as every secret file is (an empty one is an error), then split.
    let text = secret_file(path)?;
    let lines: Vec<&str> = text
        .expose_secret()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().position(|l| l.len() < 32) {
        return Err(format!("pepper {} is shorter than 32 characters", i + 1));
    }
    Ok(lines.into_iter().map(|l| l.to_owned().into()).collect())
}

/// The CPUs this process may use (its cgroup quota included), or 2 when
/// that cannot be read.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Most worker threads `KEYWARD_WORKER_THREADS` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Most replicas `KEYWARD_ADMIN_WAIT_REPLICAS` may wait for.
pub const MAX_WAIT_REPLICAS: u64 = 64;

/// Most audit streams `KEYWARD_AUDIT_SHARDS` may spread over.
pub const MAX_AUDIT_SHARDS: usize = 256;

/// Checks a Redis URL's scheme; `true` for a Redis Cluster
/// (`redis-cluster://user:pw@host:port?node=host:port&node=...`, fred's syntax).
fn check_redis_url(var: &'static str, url: &SecretString) -> Result<bool, ConfigError> {
    let url = url.expose_secret();
    let scheme = |schemes: &[&str]| schemes.iter().any(|s| url.starts_with(s));
    if scheme(&["redis-cluster://", "rediss-cluster://"]) {
        return Ok(true);
    }
    if !scheme(&["redis://", "rediss://", "redis+unix://"]) {
        // The URL may hold a password: name the variable, not the value.
        return Err(bad(
            var,
            "must be a redis://, rediss://, redis+unix:// or redis-cluster:// URL",
        ));
    }
    Ok(false)
}

/// An empty variable counts as unset: clap would parse it as a value.
fn empty_is_unset(arg: Arg) -> Arg {
    let empty = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|value| value.is_empty());
    if empty {
        arg.env(None)
    } else {
        arg
    }
}

/// A setting's value parser: `parse` turns the text into the value or says
/// what is wrong with it. Its error names the variable the text came from
/// (or the flag, from the command line), and carries the variable and the
/// problem for [`ConfigError`]. `choices` are an enum's values, for `--help`.
#[derive(Clone)]
struct Setting<F> {
    parse: F,
    choices: Vec<PossibleValue>,
}

fn setting<T, F>(parse: F) -> Setting<F>
where
    F: Fn(&str) -> Result<T, String>,
{
    Setting {
        parse,
        choices: Vec::new(),
    }
}

impl<T, F> TypedValueParser for Setting<F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.parse)(&text).map_err(|problem| {
            let var = arg.and_then(Arg::get_env).map(|v| v.to_string_lossy());
            let message = match (&var, source) {
                (Some(var), ValueSource::EnvVariable) => {
                    format!("configuration error: {var}: {problem}")
                }
                _ => {
                    let flag = arg.map(ToString::to_string).unwrap_or_default();
                    format!("invalid value {text:?} for '{flag}': {problem}")
                }
            };
            let mut e = clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd);
            if let Some(var) = var {
                e.insert(ContextKind::InvalidArg, ContextValue::String(var.into()));
            }
            e.insert(ContextKind::Custom, ContextValue::String(problem));
            e
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        if self.choices.is_empty() {
            return None;
        }
        Some(Box::new(self.choices.iter().cloned()))
    }
}

/// `KEYWARD_WEBHOOK_RETRY_SCHEDULE`: the waits before each retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

/// `5s,5m,30m,2h`: 1 to 50 durations, each a whole number and a unit
/// (`ms`, `s`, `m`, `h`), at most a day.
fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let waits = text
        .split(',')
        .map(|item| {
            let item = item.trim();
            let split = item
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(item.len());
            let (n, unit) = item.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{item:?} is not a number and a unit"))?;
            let ms = match unit {
                "ms" => Some(n),
                "s" => n.checked_mul(1_000),
                "m" => n.checked_mul(60_000),
                "h" => n.checked_mul(3_600_000),
                _ => return Err(format!("{item:?}: the unit must be ms, s, m or h")),
            };
            match ms {
                Some(ms) if ms <= 86_400_000 => Ok(Duration::from_millis(ms)),
                _ => Err(format!("{item:?} is longer than a day")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if waits.len() > 50 {
        return Err("at most 50 retries".into());
    }
    Ok(Schedule(waits))
}

/// An integer in `range` (surrounding whitespace ignored).
fn number<T>(
    range: impl RangeBounds<T> + Clone + Send + Sync + 'static,
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Clone + Send + Sync + 'static,
{
    setting(move |text| parse_number(text, &range))
}

/// A duration in whole milliseconds, in `range`.
fn millis(
    range: impl RangeBounds<u64> + Clone + Send + Sync + 'static,
) -> impl TypedValueParser<Value = Duration> {
    setting(move |text| parse_number(text, &range).map(Duration::from_millis))
}

fn parse_number<T>(text: &str, range: &impl RangeBounds<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let n: T = text
        .trim()
        .parse()
        .map_err(|_| format!("cannot parse {text:?}"))?;
    if range.contains(&n) {
        return Ok(n);
    }
    Err(match (range.start_bound(), range.end_bound()) {
        (Bound::Included(min), Bound::Included(max)) => format!("must be {min} to {max}"),
        (Bound::Included(min), _) => format!("must be at least {min}"),
        (_, Bound::Included(max)) => format!("must be at most {max}"),
        _ => "is out of range".to_owned(),
    })
}

/// A socket address, `host:port` (surrounding whitespace ignored).
fn address() -> impl TypedValueParser<Value = SocketAddr> {
    setting(|text| {
        text.trim()
            .parse()
            .map_err(|_| format!("cannot parse {text:?}"))
    })
}

/// One of an enum's values, exactly as `--help` lists them.
fn choice<E: ValueEnum + Clone + Send + Sync + 'static>() -> impl TypedValueParser<Value = E> {
    let choices: Vec<PossibleValue> = E::value_variants()
        .iter()
        .filter_map(E::to_possible_value)
        .collect();
    let names: Vec<String> = choices
        .iter()
        .map(|c| format!("`{}`", c.get_name()))
        .collect();
    let problem = format!("must be {}", names.join(" or "));
    Setting {
        parse: move |text: &str| E::from_str(text, false).map_err(|_| problem.clone()),
        choices,
    }
}

/// `KEYWARD_CLIENT_NAME`'s default (`keyward acl --deployment`'s too).
pub const DEFAULT_CLIENT_NAME: &str = "keyward";

/// Whether `name` can name a deployment or a Redis user: a project id's
/// grammar (`key::PROJECT_ID_GRAMMAR`), so the ACL lines, Redis key names and ACL patterns made
/// from it (`operator:<name>:*`, `audit:<name>:*`) hold nothing a pattern or
/// another name could match.
pub fn is_plain_name(name: &str) -> bool {
    crate::key::is_plain_id(name)
}

fn client_name() -> impl TypedValueParser<Value = String> {
    setting(|text| match is_plain_name(text) {
        true => Ok(text.to_owned()),
        false => Err(format!("must be {}", crate::key::PROJECT_ID_GRAMMAR)),
    })
}

/// An HTTP header name, in lower case.
fn header_name() -> impl TypedValueParser<Value = String> {
    setting(|text| match is_token(text) {
        true => Ok(text.to_ascii_lowercase()),
        false => Err("must be an HTTP header name".to_owned()),
    })
}

fn query_param() -> impl TypedValueParser<Value = String> {
    setting(|text| match is_token(text) {
        true => Ok(text.to_owned()),
        false => Err("must be a plain parameter name".to_owned()),
    })
}

/// An RFC 9110 token: what a header name may be, and all a query
/// parameter's name needs.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const URL: (&str, &str) = ("KEYWARD_REDIS_URL", "redis://validator:pw@127.0.0.1:6390");

    #[test]
    fn defaults_apply_when_only_the_redis_url_is_set() {
        let c = load(&[URL]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.default_rate_limit, 100);
        assert_eq!(c.audit_maxlen, 1_000_000);
        assert_eq!(
            (
                c.usage_hours_kept_days,
                c.usage_days_kept_days,
                c.usage_months_kept
            ),
            (35, 400, 60)
        );
        assert_eq!(c.audit_anonymous_per_second, 20);
        assert_eq!(c.audit_shards, 1);
        assert_eq!(c.worker_threads, cores());
        assert_eq!(c.redis_pool_size, cores().div_ceil(2));
        assert_eq!(c.admin_wait_replicas, 0);
        assert_eq!(c.redis_timeout, Duration::from_secs(1));
        assert_eq!(
            c.argon2,
            Argon2Params {
                memory_kib: 65536,
                iterations: 3,
                parallelism: 1
            }
        );
        assert_eq!(c.failsafe, Failsafe::Closed);
        assert_eq!(c.client_name, "keyward");
        assert!(c.admin_token.is_none());
        assert!(c.metrics_listen.is_none());
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "KEYWARD_REDIS_URL"),
            (&[("KEYWARD_REDIS_URL", "http://x")], "KEYWARD_REDIS_URL"),
            (&[URL, ("KEYWARD_LISTEN", "nonsense")], "KEYWARD_LISTEN"),
            (
                &[URL, ("KEYWARD_DEFAULT_RATE_LIMIT", "-1")],
                "KEYWARD_DEFAULT_RATE_LIMIT",
            ),
            (
                &[URL, ("KEYWARD_DEFAULT_RATE_LIMIT", "0")],
                "KEYWARD_DEFAULT_RATE_LIMIT",
            ),
            (&[URL, ("KEYWARD_FAILSAFE", "maybe")], "KEYWARD_FAILSAFE"),
            (&[URL, ("KEYWARD_LOG_FORMAT", "xml")], "KEYWARD_LOG_FORMAT"),
            (
                &[URL, ("KEYWARD_ADMIN_TOKEN", "0123456789abcdef")],
                "KEYWARD_ADMIN_REDIS_URL",
            ),
            (
                &[URL, ("KEYWARD_ADMIN_TOKEN_FILE", "/nonexistent/token")],
                "KEYWARD_ADMIN_TOKEN_FILE",
            ),
            (
                &[URL, ("KEYWARD_REDIS_URL_FILE", "/x")],
                "KEYWARD_REDIS_URL",
            ),
            (
                &[URL, ("KEYWARD_METRICS_LISTEN", "x:y")],
                "KEYWARD_METRICS_LISTEN",
            ),
            (
                &[URL, ("KEYWARD_WORKER_THREADS", "0")],
                "KEYWARD_WORKER_THREADS",
            ),
            (
                &[URL, ("KEYWARD_WORKER_THREADS", "100000")],
                "KEYWARD_WORKER_THREADS",
            ),
            (
                &[URL, ("KEYWARD_ADMIN_WAIT_REPLICAS", "65")],
                "KEYWARD_ADMIN_WAIT_REPLICAS",
            ),
            (
                &[URL, ("KEYWARD_AUDIT_SHARDS", "0")],
                "KEYWARD_AUDIT_SHARDS",
            ),
            (
                &[URL, ("KEYWARD_AUDIT_SHARDS", "100000")],
                "KEYWARD_AUDIT_SHARDS",
            ),
            (
                &[
                    URL,
                    ("KEYWARD_MONITOR_REDIS_URL", "redis-cluster://ops:pw@h:1"),
                ],
                "KEYWARD_MONITOR_REDIS_URL",
            ),
            (
                &[URL, ("KEYWARD_REDIS_TIMEOUT_MS", "0")],
                "KEYWARD_REDIS_TIMEOUT_MS",
            ),
            (
                &[URL, ("KEYWARD_CLIENT_IP_HEADER", "x forwarded")],
                "KEYWARD_CLIENT_IP_HEADER",
            ),
            (
                &[URL, ("KEYWARD_AUTH_QUERY_PARAM", "a=b")],
                "KEYWARD_AUTH_QUERY_PARAM",
            ),
            (
                &[
                    URL,
                    ("KEYWARD_ARGON2_MEMORY_KIB", "8"),
                    ("KEYWARD_ARGON2_PARALLELISM", "2"),
                ],
                "KEYWARD_ARGON2_MEMORY_KIB",
            ),
        ];
        for (vars, var) in cases {
            let err = load(vars).unwrap_err();
            assert_eq!(err.var, *var, "vars: {vars:?}");
        }
    }

    #[test]
    fn a_redis_cluster_url_selects_cluster_mode_for_every_user() {
        let cluster = "redis-cluster://validator:pw@127.0.0.1:7000?node=127.0.0.1:7001";
        let c = load(&[
            ("KEYWARD_REDIS_URL", cluster),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                "redis-cluster://manager:pw@127.0.0.1:7000",
            ),
            ("KEYWARD_ADMIN_TOKEN", "0123456789abcdef"),
            ("KEYWARD_AUDIT_SHARDS", "8"),
        ])
        .unwrap();
        assert_eq!(c.redis_url.expose_secret(), cluster);
        assert_eq!(c.audit_shards, 8);
        let mixed = load(&[
            ("KEYWARD_REDIS_URL", cluster),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                "redis://manager:pw@127.0.0.1:7000",
            ),
            ("KEYWARD_ADMIN_TOKEN", "0123456789abcdef"),
        ]);
        assert_eq!(mixed.unwrap_err().var, "KEYWARD_ADMIN_REDIS_URL");
    }

    #[test]
    fn the_migrator_url_comes_from_a_file_or_the_environment_never_the_command_line() {
        let err = MigrateConfig::from_lookup(|_| None, None).unwrap_err();
        assert_eq!(err.var, "KEYWARD_MIGRATE_REDIS_URL");
        let env = |name: &str| {
            (name == "KEYWARD_MIGRATE_REDIS_URL").then(|| "redis://migrator:pw@127.0.0.1:1".into())
        };
        let c = MigrateConfig::from_lookup(env, None).unwrap();
        assert_eq!(
            c.redis_url.expose_secret(),
            "redis://migrator:pw@127.0.0.1:1"
        );

        let file = std::env::temp_dir().join(format!("keyward-migrate-{}", std::process::id()));
        std::fs::write(&file, "redis://migrator:pw2@127.0.0.1:2\n").unwrap();
        let c = MigrateConfig::from_lookup(|_| None, Some(&file)).unwrap();
        assert_eq!(
            c.redis_url.expose_secret(),
            "redis://migrator:pw2@127.0.0.1:2"
        );
        std::fs::write(&file, "http://migrator:hunter2@x").unwrap();
        let err = MigrateConfig::from_lookup(|_| None, Some(&file)).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_bad_url_error_does_not_print_the_password() {
        let err = load(&[("KEYWARD_REDIS_URL", "http://user:hunter2@x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn secrets_are_read_from_files_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "0123456789abcdef-token\n").unwrap();
        let c = load(&[
            URL,
            ("KEYWARD_ADMIN_TOKEN_FILE", token.to_str().unwrap()),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                "redis://manager:pw@127.0.0.1:6390",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.admin_token.unwrap().expose_secret(),
            "0123456789abcdef-token"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = load(&[
            URL,
            ("KEYWARD_ADMIN_TOKEN", "super-secret-admin-token"),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                "redis://manager:pw2@127.0.0.1:6390",
            ),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("super-secret-admin-token"));
        assert!(!debug.contains("validator:pw"));
    }

    #[test]
    fn empty_values_are_unset_and_numbers_may_carry_spaces() {
        let c = load(&[
            URL,
            ("KEYWARD_METRICS_LISTEN", ""),
            ("KEYWARD_CLIENT_NAME", ""),
            ("KEYWARD_ADMIN_TOKEN", ""),
            ("KEYWARD_DEFAULT_RATE_LIMIT", " 7\n"),
            ("KEYWARD_CLIENT_IP_HEADER", "X-Real-IP"),
            ("KEYWARD_FAILSAFE", "open"),
        ])
        .unwrap();
        assert!(c.metrics_listen.is_none());
        assert_eq!(c.client_name, "keyward");
        assert!(c.admin_token.is_none());
        assert_eq!(c.default_rate_limit, 7);
        assert_eq!(c.client_ip_header, "x-real-ip");
        assert_eq!(c.failsafe, Failsafe::Open);
    }

    /// Every setting's flag is its variable's name, so either finds the other.
    #[test]
    fn each_flag_is_its_variable_in_lower_case() {
        for arg in Config::command().get_arguments() {
            let Some(var) = arg.get_env() else { continue };
            let flag = var.to_str().unwrap().strip_prefix("KEYWARD_").unwrap();
            let flag = flag.to_ascii_lowercase().replace('_', "-");
            assert_eq!(arg.get_long(), Some(flag.as_str()), "{var:?}");
        }
    }

    /// `--help` states each integer setting's range as "(at least N)" or
    /// "(N to M)", and its parser holds to it.
    #[test]
    fn the_help_states_the_range_each_parser_holds_to() {
        for arg in Config::command().get_arguments() {
            let (Some(var), Some(help)) = (arg.get_env(), arg.get_help()) else {
                continue;
            };
            let (var, help) = (var.to_str().unwrap(), help.to_string());
            let accepts = |n: &str| load(&[URL, (var, n)]).is_ok();
            let integer = accepts("5") && !accepts("x");
            let number = |s: &str| s.parse::<u64>().unwrap();
            let stated = help
                .rsplit_once('(')
                .and_then(|(_, rest)| rest.split_once(')'));
            let range = match stated.map(|(range, _)| range.split_once(' ')) {
                Some(Some(("at", least))) => {
                    least.strip_prefix("least ").map(|n| (number(n), None))
                }
                Some(Some((min, max))) => max
                    .strip_prefix("to ")
                    .map(|m| (number(min), Some(number(m)))),
                _ => None,
            };
            let Some((min, max)) = range else {
                // Unbounded: say nothing, or why not (Argon2id's memory).
                assert!(
                    !integer || accepts("0") || help.contains("at least"),
                    "{var}: {help}"
                );
                continue;
            };
            assert!(integer, "{var}");
            assert!(accepts(&min.to_string()), "{var}: {min}");
            assert!(min == 0 || !accepts(&(min - 1).to_string()), "{var}: {min}");
            if let Some(max) = max {
                assert!(accepts(&max.to_string()), "{var}: {max}");
                assert!(!accepts(&(max + 1).to_string()), "{var}: {max}");
            }
        }
    }

    #[test]
    fn flags_override_variables_and_secrets_are_never_flags() {
        let parse = |args: &[&str]| Config::command().try_get_matches_from(args);
        let matches = parse(&["serve", "--default-rate-limit", "5", "--failsafe", "open"]).unwrap();
        let c = Config::from_arg_matches(&matches).unwrap();
        assert_eq!((c.default_rate_limit, c.failsafe), (5, Failsafe::Open));
        let err = parse(&["serve", "--default-rate-limit", "0"]).unwrap_err();
        assert_eq!(ConfigError::from(err).var, "KEYWARD_DEFAULT_RATE_LIMIT");
        for flag in ["--redis-url", "--admin-token", "--admin-redis-url"] {
            assert!(parse(&["serve", flag, "x"]).is_err(), "{flag}");
        }
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_its_file_not_both() {
        let dir = std::env::temp_dir().join(format!("keyward-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (full, empty) = (dir.join("full"), dir.join("empty"));
        std::fs::write(&full, "  s3cret\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let read = |vars: &[(&str, &str)]| {
            secret(
                |name| {
                    vars.iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.to_string())
                },
                "KEYWARD_X",
            )
            .map(|s| s.map(|s| s.expose_secret().to_owned()))
        };
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("KEYWARD_X", " v \n")]).unwrap().unwrap(), "v");
        let full = full.to_str().unwrap();
        assert_eq!(
            read(&[("KEYWARD_X_FILE", full)]).unwrap().unwrap(),
            "s3cret"
        );
        let both = read(&[("KEYWARD_X", "v"), ("KEYWARD_X_FILE", full)]);
        assert_eq!(both.unwrap_err().var, "KEYWARD_X");
        let err = read(&[("KEYWARD_X_FILE", empty.to_str().unwrap())]).unwrap_err();
        assert_eq!(
            (err.var.as_str(), err.problem.ends_with("is empty")),
            ("KEYWARD_X_FILE", true)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
