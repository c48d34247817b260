//! The one typed `Config`, read once from `KEYWARD_*` environment variables
//! and validated at start-up. No other module reads the environment.
//!
//! Every secret (`KEYWARD_REDIS_URL`, `KEYWARD_ADMIN_REDIS_URL`,
//! `KEYWARD_ADMIN_TOKEN`, `KEYWARD_MONITOR_REDIS_URL`, and `keyward migrate`'s
//! `KEYWARD_MIGRATE_REDIS_URL` in [`MigrateConfig`]) can also come from a
//! file named by `<NAME>_FILE`, for mounted secrets, by the one rule in
//! [`secret`], which the CLI follows for its admin token too. An error names
//! the variable at fault, so a bad deployment stops with one clear line.
//!
//! The defaults below are the documented defaults: the README's table lists
//! the same names and values.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

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

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What happens to validations while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failsafe {
    /// Answer 503: no key is accepted without reading its document (default).
    Closed,
    /// Accept well-formed keys, audited as `failsafe_open` where possible.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Argon2id cost for newly minted keys. Verification always follows the
/// parameters stored in each hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the public listener (`KEYWARD_LISTEN`).
    pub listen: SocketAddr,
    /// When set, `/metrics` is served only on this separate listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Redis URL of the least-privileged `validator` user.
    pub redis_url: SecretString,
    /// Redis URL of the `manager` user, used only by admin endpoints.
    pub admin_redis_url: Option<SecretString>,
    /// Bearer token for the admin endpoints; without one they are not served.
    pub admin_token: Option<SecretString>,
    /// Redis URL of a read-only monitoring user (e.g. `ops`), used only to
    /// sample the audit streams' lengths; the other users may not read them.
    pub monitor_redis_url: Option<SecretString>,
    /// How often the audit streams' lengths are sampled (with a monitor URL).
    pub audit_sample_interval: Duration,
    /// This deployment's name, written as `client` in audit entries.
    pub client_name: String,
    /// Forward auth: the (lower-case) header whose right-most address is
    /// the client's, for keys bound to networks.
    pub client_ip_header: String,
    /// Forward auth: a query parameter the key may come in; off by default
    /// (keys in URLs end up in access logs).
    pub auth_query_param: Option<String>,
    /// Validations per minute for keys without their own limit.
    pub default_rate_limit: u64,
    /// Approximate cap (XADD MAXLEN ~) of each audit stream.
    pub audit_maxlen: u64,
    /// Streams the validation audit is spread over: 1 writes
    /// `audit:keylookup` (the default); N > 1 writes
    /// `audit:keylookup:{0}`..`{N-1}`, on different cluster slots.
    pub audit_shards: usize,
    /// Anonymous denials (`malformed`, `not_found`, `forbidden`) audited one
    /// entry each per second, per instance; past it they are summarized
    /// (see `audit`).
    pub audit_anonymous_per_second: u64,
    /// Deadline for each Redis command; past it the request fails closed.
    pub redis_timeout: Duration,
    /// Connections in each Redis pool.
    pub redis_pool_size: usize,
    /// Replicas that must confirm an admin write (`WAIT`) before it is
    /// answered; 0: no wait.
    pub admin_wait_replicas: u64,
    /// Threads running requests (tokio workers; Argon2id runs on its own
    /// blocking pool).
    pub worker_threads: usize,
    /// Deadline for a whole HTTP request.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    pub argon2: Argon2Params,
    /// Argon2id verifications running at once.
    pub argon2_concurrency: usize,
    /// Verifications allowed to wait for a slot; past it, 503 `busy`.
    pub argon2_queue: usize,
    /// Entries in the verified-secret cache (0 disables it).
    pub verify_cache_entries: u64,
    /// Argon2id runs allowed per key per minute for wrong secrets.
    pub bad_secret_hashes_per_minute: u64,
    pub failsafe: Failsafe,
    pub log_format: LogFormat,
    /// A tracing `EnvFilter` directive, e.g. `info` or `keyward=debug`.
    pub log_filter: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Only the listen address, for `keyward healthcheck`, which must work
    /// without the rest of the configuration (or its secrets).
    pub fn listen_from_env() -> Result<SocketAddr, ConfigError> {
        Env(&|name| std::env::var(name).ok()).parse("KEYWARD_LISTEN", DEFAULT_LISTEN)
    }

    /// Reads the configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let cores = cores();
        let config = Config {
            listen: env.parse("KEYWARD_LISTEN", DEFAULT_LISTEN)?,
            metrics_listen: env.parse_opt("KEYWARD_METRICS_LISTEN")?,
            redis_url: secret(&lookup, "KEYWARD_REDIS_URL")?
                .ok_or_else(|| bad("KEYWARD_REDIS_URL", "is required"))?,
            admin_redis_url: secret(&lookup, "KEYWARD_ADMIN_REDIS_URL")?,
            admin_token: secret(&lookup, "KEYWARD_ADMIN_TOKEN")?,
            monitor_redis_url: secret(&lookup, "KEYWARD_MONITOR_REDIS_URL")?,
            audit_sample_interval: env.millis("KEYWARD_AUDIT_SAMPLE_MS", "15000")?,
            client_name: env.string("KEYWARD_CLIENT_NAME", "keyward"),
            client_ip_header: env
                .string("KEYWARD_CLIENT_IP_HEADER", "x-forwarded-for")
                .to_ascii_lowercase(),
            auth_query_param: env.get("KEYWARD_AUTH_QUERY_PARAM"),
            default_rate_limit: env.parse("KEYWARD_DEFAULT_RATE_LIMIT", "100")?,
            audit_maxlen: env.parse("KEYWARD_AUDIT_MAXLEN", "1000000")?,
            audit_shards: env.parse("KEYWARD_AUDIT_SHARDS", "1")?,
            audit_anonymous_per_second: env.parse("KEYWARD_AUDIT_ANONYMOUS_PER_SECOND", "20")?,
            redis_timeout: env.millis("KEYWARD_REDIS_TIMEOUT_MS", "1000")?,
            redis_pool_size: env.parse("KEYWARD_REDIS_POOL_SIZE", "4")?,
            worker_threads: env.parse("KEYWARD_WORKER_THREADS", &cores.to_string())?,
            admin_wait_replicas: env.parse("KEYWARD_ADMIN_WAIT_REPLICAS", "0")?,
            request_timeout: env.millis("KEYWARD_REQUEST_TIMEOUT_MS", "5000")?,
            shutdown_grace: env.millis("KEYWARD_SHUTDOWN_GRACE_MS", "10000")?,
            argon2: Argon2Params {
                memory_kib: env.parse("KEYWARD_ARGON2_MEMORY_KIB", "65536")?,
                iterations: env.parse("KEYWARD_ARGON2_ITERATIONS", "3")?,
                parallelism: env.parse("KEYWARD_ARGON2_PARALLELISM", "1")?,
            },
            argon2_concurrency: env.parse("KEYWARD_ARGON2_CONCURRENCY", &cores.to_string())?,
            argon2_queue: env.parse("KEYWARD_ARGON2_QUEUE", "64")?,
            verify_cache_entries: env.parse("KEYWARD_VERIFY_CACHE_ENTRIES", "100000")?,
            bad_secret_hashes_per_minute: env
                .parse("KEYWARD_BAD_SECRET_HASHES_PER_MINUTE", "10")?,
            failsafe: match env.string("KEYWARD_FAILSAFE", "closed").as_str() {
                "closed" => Failsafe::Closed,
                "open" => Failsafe::Open,
                _ => return Err(bad("KEYWARD_FAILSAFE", "must be `closed` or `open`")),
            },
            log_format: match env.string("KEYWARD_LOG_FORMAT", "text").as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(bad("KEYWARD_LOG_FORMAT", "must be `text` or `json`")),
            },
            log_filter: env.string("KEYWARD_LOG", "info"),
        };
        config.validate()?;
        Ok(config)
    }

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
        if !(1..=MAX_WORKER_THREADS).contains(&self.worker_threads) {
            return Err(bad(
                "KEYWARD_WORKER_THREADS",
                format!("must be 1 to {MAX_WORKER_THREADS}"),
            ));
        }
        if self.admin_wait_replicas > MAX_WAIT_REPLICAS {
            return Err(bad(
                "KEYWARD_ADMIN_WAIT_REPLICAS",
                format!("must be 0 to {MAX_WAIT_REPLICAS}"),
            ));
        }
        if !(1..=MAX_AUDIT_SHARDS).contains(&self.audit_shards) {
            return Err(bad(
                "KEYWARD_AUDIT_SHARDS",
                format!("must be 1 to {MAX_AUDIT_SHARDS}"),
            ));
        }
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
        let positive: [(&'static str, u64); 8] = [
            (
                "KEYWARD_AUDIT_SAMPLE_MS",
                self.audit_sample_interval.as_millis() as u64,
            ),
            ("KEYWARD_DEFAULT_RATE_LIMIT", self.default_rate_limit),
            ("KEYWARD_AUDIT_MAXLEN", self.audit_maxlen),
            (
                "KEYWARD_REDIS_TIMEOUT_MS",
                self.redis_timeout.as_millis() as u64,
            ),
            ("KEYWARD_REDIS_POOL_SIZE", self.redis_pool_size as u64),
            (
                "KEYWARD_REQUEST_TIMEOUT_MS",
                self.request_timeout.as_millis() as u64,
            ),
            ("KEYWARD_ARGON2_CONCURRENCY", self.argon2_concurrency as u64),
            ("KEYWARD_ARGON2_ITERATIONS", self.argon2.iterations as u64),
        ];
        for (var, value) in positive {
            if value == 0 {
                return Err(bad(var, "must be greater than 0"));
            }
        }
        if self.argon2.memory_kib < 8 * self.argon2.parallelism.max(1) {
            return Err(bad(
                "KEYWARD_ARGON2_MEMORY_KIB",
                "must be at least 8 x parallelism",
            ));
        }
        if self.argon2.parallelism == 0 {
            return Err(bad("KEYWARD_ARGON2_PARALLELISM", "must be greater than 0"));
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b))
        };
        if !token(&self.client_ip_header) {
            return Err(bad(
                "KEYWARD_CLIENT_IP_HEADER",
                "must be an HTTP header name",
            ));
        }
        if self.auth_query_param.as_deref().is_some_and(|p| !token(p)) {
            return Err(bad(
                "KEYWARD_AUTH_QUERY_PARAM",
                "must be a plain parameter name",
            ));
        }
        if self.client_name.is_empty() || self.client_name.len() > 64 {
            return Err(bad("KEYWARD_CLIENT_NAME", "must be 1 to 64 characters"));
        }
        Ok(())
    }
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
            None => secret(lookup, VAR)?,
        }
        .ok_or_else(|| {
            bad(
                VAR,
                "is required (or KEYWARD_MIGRATE_REDIS_URL_FILE, or --redis-url-file): \
                 redis://migrator:<password>@host:port",
            )
        })?;
        check_redis_url(VAR, &redis_url)?;
        Ok(Self {
            redis_url,
            redis_timeout: Duration::from_secs(10),
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
    if !scheme(&["redis://", "rediss://", "redis+unix://", "unix://"]) {
        // The URL may hold a password: name the variable, not the value.
        return Err(bad(
            var,
            "must be a redis://, rediss:// or redis-cluster:// URL",
        ));
    }
    Ok(false)
}

/// Typed access to the variables, naming the variable in every error.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.is_empty())
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: &str,
    ) -> Result<T, ConfigError> {
        let raw = self.string(var, default);
        raw.trim()
            .parse()
            .map_err(|_| bad(var, format!("cannot parse {raw:?}")))
    }

    fn parse_opt<T: std::str::FromStr>(&self, var: &'static str) -> Result<Option<T>, ConfigError> {
        self.get(var).map(|_| self.parse(var, "")).transpose()
    }

    fn millis(&self, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
        self.parse(var, default).map(Duration::from_millis)
    }
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
        assert_eq!(c.audit_anonymous_per_second, 20);
        assert_eq!(c.audit_shards, 1);
        assert_eq!(c.worker_threads, cores());
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
