//! The test harness: a real Redis Stack per test (Debian's redis-server with
//! the RedisJSON module and our ACL file) and a real keyward on a real socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing_appender::non_blocking::WorkerGuard;

use fred::prelude::{Builder, ClientLike, Config as FredConfig, Pool};
use fred::types::CustomCommand;
use keyward::config::{Argon2Params, Config};
use rand::distr::{Alphanumeric, SampleString};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

pub const VALIDATOR_PASSWORD: &str = "validator-test-password";
pub const MANAGER_PASSWORD: &str = "manager-test-password";
/// A test-only superuser for inspecting Redis; not in the shipped template.
pub const OPS_PASSWORD: &str = "ops-test-password";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The template's `migrator` user's password, where a test switches it on.
pub const MIGRATOR_PASSWORD: &str = "migrator-test-password";

/// Cheap Argon2id for tests; verification follows each stored hash's own
/// parameters, so this only changes minting cost.
pub const TEST_ARGON2: Argon2Params = Argon2Params {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The RedisJSON module, installed by `redis/local.sh` if missing.
fn rejson() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("redis/local.sh"))
            .arg("module-path")
            .stderr(Stdio::inherit())
            .output()
            .expect("run redis/local.sh module-path");
        assert!(out.status.success(), "redis/local.sh module-path failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// The shipped ACL template (`redis/users.acl`) as Redis loads it:
/// comments and blank lines dropped (Redis rejects comments, so
/// `redis/local.sh acl` drops them too), the validator and manager given
/// the test passwords, and each `(user, password)` of `enable` (users the
/// template ships `off`) switched on.
pub fn render_acl(enable: &[(&str, &str)]) -> String {
    let template = std::fs::read_to_string(repo().join("redis/users.acl")).unwrap();
    let mut acl = String::new();
    for line in template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
    {
        let line = line
            .replace("__VALIDATOR_PASSWORD__", VALIDATOR_PASSWORD)
            .replace("__MANAGER_PASSWORD__", MANAGER_PASSWORD);
        let on = enable
            .iter()
            .find_map(|(user, password)| switch_on(&line, user, user, password));
        acl.push_str(&on.unwrap_or(line));
        acl.push('\n');
    }
    for (user, _) in enable {
        assert!(
            acl.contains(&format!("\nuser {user} on ")),
            "no `{user}` user shipped off in redis/users.acl"
        );
    }
    acl
}

/// The template's line for `user`, switched on with `password` and renamed
/// to `name`, so tests use exactly the shipped rules.
pub fn template_user(user: &str, name: &str, password: &str) -> String {
    render_acl(&[])
        .lines()
        .find_map(|line| switch_on(line, user, name, password))
        .unwrap_or_else(|| panic!("no `{user}` user shipped off in redis/users.acl"))
}

/// `line` switched on with `password` and renamed to `name`, if it is the
/// rule of `user` as the template ships it (`off`, without a password).
fn switch_on(line: &str, user: &str, name: &str, password: &str) -> Option<String> {
    let rules = line.strip_prefix(&format!("user {user} off resetpass"))?;
    Some(format!("user {name} on >{password}{rules}"))
}

/// The `CLIENT LIST` lines of the connections keyward's validator and
/// manager users hold to `redis` (at least one: the panic says otherwise).
pub async fn keyward_clients(redis: &TestRedis) -> Vec<String> {
    let clients = raw(&redis.ops().await, "CLIENT", vec!["LIST".into()])
        .await
        .unwrap();
    let clients = clients.as_str().unwrap().into_owned();
    let keyward: Vec<String> = clients
        .lines()
        .filter(|l| l.contains(" user=validator ") || l.contains(" user=manager "))
        .map(str::to_owned)
        .collect();
    assert!(!keyward.is_empty(), "{clients}");
    keyward
}

/// libfaketime, which `redis/local.sh install` installs.
pub fn libfaketime() -> String {
    let found = Command::new("sh")
        .args(["-c", "ls /usr/lib/*/faketime/libfaketime.so.1 | head -n1"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "libfaketime not installed: run redis/local.sh install"
    );
    path
}

/// Resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `api_key` with its last character changed: the same key id, a wrong
/// secret (always: the replacement differs from the original).
pub fn wrong_secret(api_key: &str) -> String {
    let (head, last) = api_key.split_at(api_key.len() - 1);
    format!("{head}{}", if last == "X" { "Y" } else { "X" })
}

pub fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 10)
    )
}

/// A Redis Stack of the test's own, killed on drop.
pub struct TestRedis {
    pub port: u16,
    pub dir: PathBuf,
    /// A Unix socket Redis listens on too, if asked for.
    socket: Option<PathBuf>,
    /// Arguments of a TLS port Redis listens on too, if asked for (`tls.rs`).
    tls_args: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl TestRedis {
    /// Starts a Redis with the shipped ACL template plus test-only `extra_acl` lines.
    pub fn start_with_acl(extra_acl: &str) -> Self {
        Self::create(extra_acl, false, Vec::new())
    }

    /// As `start`, listening for TLS too, as `tls_args` (`--tls-port` ...) say.
    pub fn start_with_tls(tls_args: Vec<String>) -> Self {
        Self::create("", false, tls_args)
    }

    /// As `start`, listening on a Unix socket in its directory too (see
    /// [`TestRedis::unix_url`]).
    pub fn start_with_unix_socket() -> Self {
        Self::create("", true, Vec::new())
    }

    fn create(extra_acl: &str, unix_socket: bool, tls_args: Vec<String>) -> Self {
        // In memory where there is a tmpfs: the test Redis fsyncs every
        // write (below), and on a busy host's disk one fsync could outlast
        // the tests' 500 ms Redis deadline (a stray 503). A tmpfs keeps the
        // AOF across a killed and restarted Redis just the same.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(random_id("keyward-test-redis-"));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = render_acl(&[])
            + &format!("\nuser test-inspector on >{OPS_PASSWORD} ~* &* +@all\n{extra_acl}\n");
        std::fs::write(dir.join("users.acl"), acl).unwrap();
        let redis = TestRedis {
            port: free_port(),
            socket: unix_socket.then(|| dir.join("redis.sock")),
            tls_args,
            dir,
            child: Mutex::new(None),
        };
        redis.spawn();
        redis
    }

    pub fn start() -> Self {
        Self::start_with_acl("")
    }

    pub fn acl_file(&self) -> PathBuf {
        self.dir.join("users.acl")
    }

    fn spawn(&self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--loadmodule", rejson()])
            .arg("--aclfile")
            .arg(self.dir.join("users.acl"))
            .arg("--dir")
            .arg(&self.dir)
            // AOF so a restart keeps the data, as in production; DEBUG for
            // the slow-Redis test.
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--enable-debug-command", "yes", "--daemonize", "no"])
            .args(self.socket.iter().flat_map(|socket| {
                [
                    "--unixsocket".as_ref(),
                    socket.as_os_str(),
                    "--unixsocketperm".as_ref(),
                    "700".as_ref(),
                ]
            }))
            .args(&self.tls_args)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (run `redis/local.sh install`)");
        let mut slot = self.child.lock().unwrap();
        *slot = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .socket
                    .as_ref()
                    .map_or(true, |s| std::os::unix::net::UnixStream::connect(s).is_ok())
        };
        while !listening() {
            let exited = slot.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server did not start on port {}:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The URL of the Unix socket, for a Redis from `start_with_unix_socket`
    /// (fred's syntax: the host is required with credentials, and ignored).
    pub fn unix_url(&self, user: &str, password: &str) -> String {
        let socket = self.socket.as_ref().expect("started with a Unix socket");
        format!(
            "redis+unix://{user}:{password}@localhost{}",
            socket.display()
        )
    }

    /// Kills Redis, as a crash or an outage would.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port, with the same ACL file and its
    /// data: it reads back its AOF, which has every write acknowledged
    /// before the stop (`appendfsync always`).
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    /// A raw connection as `user`, for inspection and ACL checks.
    pub async fn client(&self, user: &str, password: &str) -> Pool {
        let config = FredConfig::from_url(&self.url(user, password)).unwrap();
        // Reconnect (ACL LOAD drops connections) and never hang a test.
        let pool = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
            .set_policy(fred::prelude::ReconnectPolicy::new_constant(0, 50))
            .build_pool(1)
            .unwrap();
        pool.init().await.expect("connect to test redis");
        pool
    }

    pub async fn ops(&self) -> Pool {
        self.client("test-inspector", OPS_PASSWORD).await
    }

    /// Every entry of `stream` in this Redis, oldest first, as field maps.
    pub async fn audit(&self, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
        let ops = self.ops().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let result: Result<Vec<(String, std::collections::HashMap<String, String>)>, _> =
                fred::prelude::StreamsInterface::xrange(&ops, stream, "-", "+", None).await;
            match result {
                Ok(entries) => return entries.into_iter().map(|(_, fields)| fields).collect(),
                // A Redis that just restarted answers LOADING until its AOF is read.
                Err(e) if e.details().starts_with("LOADING") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("XRANGE {stream}: {e}"),
            }
        }
    }

    /// The last audit entry for `key_id`.
    pub async fn last_audit(&self, key_id: &str) -> std::collections::HashMap<String, String> {
        self.audit("audit:keylookup")
            .await
            .into_iter()
            .rev()
            .find(|e| e.get("key_id").map(String::as_str) == Some(key_id))
            .unwrap_or_else(|| panic!("no audit entry for {key_id}"))
    }

    /// Redis's process id, as it says (to stall it with [`signal`]).
    pub async fn pid(&self) -> String {
        let info = raw(&self.ops().await, "INFO", vec!["server".into()])
            .await
            .unwrap();
        let info = info.as_str().unwrap().to_string();
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a raw command, returning Redis's reply as JSON-ish `Value` or its error text.
pub async fn raw(
    pool: &Pool,
    cmd: &'static str,
    args: Vec<String>,
) -> Result<fred::types::Value, String> {
    pool.next()
        .custom::<fred::types::Value, _>(
            CustomCommand::new_static(cmd, fred::types::ClusterHash::FirstKey, false),
            args,
        )
        .await
        .map_err(|e| e.details().to_owned())
}

/// How often Redis refused `user` on `object`: a command, or the key it was
/// refused on when another selector allows the command (`ACL LOG` groups
/// repeated refusals into one entry with a count).
pub async fn refusals(ops: &Pool, user: &str, object: &str) -> i64 {
    let log = raw(ops, "ACL", vec!["LOG".into()]).await.unwrap();
    let entries: Vec<std::collections::HashMap<String, fred::types::Value>> =
        log.convert().unwrap();
    let is =
        |e: &std::collections::HashMap<String, fred::types::Value>, field: &str, want: &str| {
            e.get(field).and_then(|v| v.as_string()).as_deref() == Some(want)
        };
    entries
        .iter()
        .filter(|e| is(e, "username", user) && is(e, "object", object))
        .filter_map(|e| e.get("count")?.as_i64())
        .sum()
}

/// Gives the validator user the selectors of its rule in `redis`'s ACL file
/// (the shipped template), each passed through `edit` (`None` drops it), as
/// a fault made while keyward runs; `|s| Some(s.to_owned())` restores them.
pub async fn set_validator_selectors(redis: &TestRedis, edit: impl Fn(&str) -> Option<String>) {
    set_user_selectors(redis, "validator", |s| edit(s).into_iter().collect()).await
}

/// As [`set_validator_selectors`], for any `user` of the ACL file, and
/// `edit` may turn one selector into several (or none).
pub async fn set_user_selectors(redis: &TestRedis, user: &str, edit: impl Fn(&str) -> Vec<String>) {
    let template = std::fs::read_to_string(redis.acl_file()).unwrap();
    let line = template
        .lines()
        .find(|l| l.starts_with(&format!("user {user} ")))
        .unwrap_or_else(|| panic!("no `{user}` user in the ACL file"));
    let mut args = vec![
        "SETUSER".to_owned(),
        user.to_owned(),
        "clearselectors".to_owned(),
    ];
    for selector in line.split('(').skip(1) {
        let selector = selector.split(')').next().unwrap();
        args.extend(edit(selector).into_iter().map(|s| format!("({s})")));
    }
    raw(&redis.ops().await, "ACL", args).await.unwrap();
}

/// A test's configuration: keyward on `redis_url` (as the validator) and
/// `admin_redis_url` (as the manager), cheap Argon2id, admin on, a 500 ms
/// Redis deadline.
pub fn test_config(redis_url: String, admin_redis_url: String) -> Config {
    let mut config = Config::from_lookup(|name| match name {
        "KEYWARD_REDIS_URL" => Some(redis_url.clone()),
        "KEYWARD_ADMIN_REDIS_URL" => Some(admin_redis_url.clone()),
        "KEYWARD_ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "KEYWARD_CLIENT_NAME" => Some("test-gateway".into()),
        "KEYWARD_LISTEN" => Some("127.0.0.1:0".into()),
        _ => None,
    })
    .expect("test config is valid");
    config.argon2 = TEST_ARGON2;
    config.redis_timeout = Duration::from_millis(500);
    config
}

/// A keyward served in-process on 127.0.0.1:0, on a Redis of its own or on
/// the shared cluster (`cluster.rs`), stopped on drop.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Its typed client (the app derefs to it).
    pub client: Client,
    /// The Redis of its own it runs on; `None` on the cluster.
    redis: Option<Arc<TestRedis>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<keyward::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Arc::new(TestRedis::start()), |_| {}).await
    }

    /// keyward on `redis` as the test users; `tweak` changes the rest.
    pub async fn spawn_with(redis: Arc<TestRedis>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(
            redis.url("validator", VALIDATOR_PASSWORD),
            redis.url("manager", MANAGER_PASSWORD),
        );
        tweak(&mut config);
        Self::serve(config, Some(redis)).await
    }

    /// keyward serving `config` in this process on a loopback port, once
    /// `/health` answers 200; `redis` is the Redis of its own that `config`
    /// names, if any.
    pub async fn serve(config: Config, redis: Option<Arc<TestRedis>>) -> Self {
        let app = Self::start(config, redis).await;
        app.wait_until(|status| status == StatusCode::OK).await;
        app
    }

    /// As [`TestApp::serve`], without waiting for `/health` (a listener
    /// over TLS answers no plain HTTP). Logs are quiet unless `TEST_LOG` is
    /// set (the subscriber is per process).
    pub async fn start(config: Config, redis: Option<Arc<TestRedis>>) -> Self {
        static TRACING: OnceLock<Option<WorkerGuard>> = OnceLock::new();
        TRACING.get_or_init(|| {
            let filter = std::env::var("TEST_LOG").ok()?;
            Some(keyward::telemetry::init_tracing(
                keyward::config::LogFormat::Text,
                &filter,
            ))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = keyward::Listeners {
            main: listener,
            metrics: None,
        };
        let task = tokio::spawn(keyward::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            redis,
            client: Client::new(format!("http://{addr}")),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The Redis of its own this app runs on.
    pub fn redis(&self) -> &Arc<TestRedis> {
        self.redis
            .as_ref()
            .expect("an app on the cluster has no Redis of its own")
    }

    /// Polls `/health` until `ok(status)`, with a deadline.
    pub async fn wait_until(&self, ok: impl Fn(StatusCode) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = self.http.get(self.url("/health")).send().await {
                if ok(r.status()) {
                    return;
                }
            }
            if let Some(task) = &self.task {
                assert!(!task.is_finished(), "keyward exited during start-up");
            }
            assert!(
                Instant::now() < deadline,
                "keyward /health did not reach the expected state"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops keyward and waits for `run` to return.
    pub async fn shutdown(&mut self) -> keyward::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("keyward task panicked"),
            None => Ok(()),
        }
    }

    /// Every entry of `stream` in this app's Redis (see [`TestRedis::audit`]).
    pub async fn audit(&self, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
        self.redis().audit(stream).await
    }

    /// Asserts a 401 `invalid_key` whose audit entry gives `reason`.
    pub async fn assert_denied(&self, api_key: &str, key_id: &str, reason: &str) {
        self.validate_fails(api_key, StatusCode::UNAUTHORIZED, "invalid_key")
            .await;
        assert_eq!(
            self.last_audit(key_id).await["reason"],
            reason,
            "audit reason"
        );
    }

    /// The last audit entry for `key_id` (see [`TestRedis::last_audit`]).
    pub async fn last_audit(&self, key_id: &str) -> std::collections::HashMap<String, String> {
        self.redis().last_audit(key_id).await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Minted {
    pub api_key: String,
    pub key_id: String,
}

/// Sends `signal` (`-STOP`, `-CONT`) to the process `pid`.
pub fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Polls `probe` until it gives `Some`, for up to 10 s; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the status and the error body's `code`, with the body in the message.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["code"], code, "body: {text}");
    assert!(body["error"]["message"].is_string(), "body: {text}");
    body
}

/// A child process killed on drop, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `keyward serve` binary on a free port, for tests that need a
/// process of its own: its metrics, its signals, its logs.
pub struct Binary {
    /// Its typed client (the binary derefs to it).
    pub client: Client,
    pub process: KillOnDrop,
}

impl Binary {
    /// Starts keyward against `redis` with the test users, cheap Argon2id
    /// and the admin API, plus `env`; waits for `/health`.
    pub async fn start(redis: &TestRedis, env: &[(&str, &str)]) -> Self {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_keyward")), redis, env).await
    }

    /// As `start`, on `clock` (see [`Clock`]).
    pub async fn start_on(clock: &Clock, redis: &TestRedis, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.envs(clock.env());
        Self::start_with(cmd, redis, env).await
    }

    /// As `start`, with `cmd` as the program (e.g. a wrapper that drops privileges).
    pub async fn start_with(mut cmd: Command, redis: &TestRedis, env: &[(&str, &str)]) -> Self {
        let urls = [
            (
                "KEYWARD_REDIS_URL",
                redis.url("validator", VALIDATOR_PASSWORD),
            ),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                redis.url("manager", MANAGER_PASSWORD),
            ),
        ];
        Self::launch(cmd.envs(urls), env).await
    }

    /// `cmd serve` on a free port with the test token and cheap Argon2id,
    /// plus `env`, which names Redis (`KEYWARD_REDIS_URL`, ...); waits for
    /// `/health`.
    pub async fn launch(cmd: &mut Command, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        cmd.arg("serve")
            .env("KEYWARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYWARD_ARGON2_MEMORY_KIB", "1024")
            .env("KEYWARD_ARGON2_ITERATIONS", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let process = KillOnDrop(cmd.spawn().expect("start keyward"));
        let bin = Binary {
            client: Client::new(format!("http://127.0.0.1:{port}")),
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while bin
            .http
            .get(format!("{}/health", bin.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "keyward binary did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bin
    }
}

impl Binary {
    /// Everything it writes to stderr from now on, collected by a thread of
    /// its own (a pipe no one reads would make keyward drop log lines).
    pub fn collect_logs(&mut self) -> Arc<Mutex<Vec<u8>>> {
        use std::io::Read as _;
        let mut stderr = self.process.0.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        logs
    }

    /// Stops the process as an orchestrator would (SIGTERM, so it writes
    /// the log lines it has queued; SIGKILL after 10 s) and returns what it
    /// logged (its stderr).
    pub fn stop_and_read_logs(&mut self) -> String {
        use std::io::Read as _;
        signal(&self.process.0.id().to_string(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.process.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.0.kill();
        let mut logs = String::new();
        let mut stderr = self.process.0.stderr.take().expect("stderr is piped");
        stderr.read_to_string(&mut logs).unwrap();
        logs
    }
}

impl std::ops::Deref for Binary {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The typed client of one keyward, in-process ([`TestApp`]) or a process
/// of its own ([`Binary`]): both deref to it, so each call means the same
/// on both. A call given the status it expects fails with the answer's
/// body when the status differs.
#[derive(Clone)]
pub struct Client {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: String) -> Self {
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request reaches keyward")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request reaches keyward")
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Response {
        self.post(path, body, Some(ADMIN_TOKEN)).await
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.get(path, Some(ADMIN_TOKEN)).await
    }

    /// The answer to `POST /v1/validate-key` for `api_key`, whatever it is
    /// (for its headers, or where a test tallies statuses).
    pub async fn validate_response(&self, api_key: &str) -> Response {
        self.post("/v1/validate-key", &json!({ "api_key": api_key }), None)
            .await
    }

    /// Validates `api_key`, expecting `status`; the answer's body.
    pub async fn validate(&self, api_key: &str, status: StatusCode) -> Value {
        expect(self.validate_response(api_key).await, status).await
    }

    /// Validates `api_key`, expecting `status` and the error `code`; the body.
    pub async fn validate_fails(&self, api_key: &str, status: StatusCode, code: &str) -> Value {
        assert_error(self.validate_response(api_key).await, status, code).await
    }

    /// The status of a validation of `api_key`.
    pub async fn status(&self, api_key: &str) -> StatusCode {
        self.validate_response(api_key).await.status()
    }

    /// `POST /v1/admin/projects` for `id`.
    pub async fn create_project(&self, id: &str) -> Response {
        let body = json!({ "project_id": id, "label": "Test", "owner": "team-a" });
        self.admin_post("/v1/admin/projects", &body).await
    }

    /// Creates a project with a random id and returns the id.
    pub async fn project(&self) -> String {
        let id = random_id("p");
        expect(self.create_project(&id).await, StatusCode::CREATED).await;
        id
    }

    /// Mints a key in `project`, which exists; `extra` fields are merged
    /// into the request.
    pub async fn mint(&self, project: &str, extra: Value) -> Minted {
        let mut body = json!({ "project_id": project, "owner": "alice", "server_name": "api-1" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let v = expect(
            self.admin_post("/v1/mint-key", &body).await,
            StatusCode::CREATED,
        )
        .await;
        Minted {
            api_key: v["api_key"].as_str().unwrap().to_owned(),
            key_id: v["key_id"].as_str().unwrap().to_owned(),
        }
    }

    /// As [`Client::mint`], creating `project` first unless it exists.
    pub async fn mint_creating(&self, project: &str, extra: Value) -> Minted {
        let created = self.create_project(project).await.status();
        assert!(
            created == StatusCode::CREATED || created == StatusCode::CONFLICT,
            "create project {project}: {created}"
        );
        self.mint(project, extra).await
    }

    /// Revokes a key.
    pub async fn revoke(&self, project: &str, key_id: &str) {
        let body = json!({ "project_id": project, "key_id": key_id });
        expect(
            self.admin_post("/v1/revoke-key", &body).await,
            StatusCode::OK,
        )
        .await;
    }

    /// The key as get-key shows it once its `usage_count` is `want`. Usage
    /// reaches Redis about a second after the validations (each instance
    /// aggregates it), so this polls, for up to 10 s.
    pub async fn usage_is(&self, project: &str, key_id: &str, want: u64) -> Value {
        let path = format!("/v1/get-key?project_id={project}&key_id={key_id}");
        eventually(&format!("usage_count {want}"), || async {
            let got: Value = self.admin_get(&path).await.json().await.ok()?;
            (got["usage_count"] == want).then_some(got)
        })
        .await
    }

    /// A page of the admin trail (`GET /v1/admin/audit?{query}`) as root.
    pub async fn trail_page(&self, query: &str) -> Value {
        let r = self.admin_get(&format!("/v1/admin/audit?{query}")).await;
        expect(r, StatusCode::OK).await
    }

    /// The entries of that page.
    pub async fn trail(&self, query: &str) -> Vec<Value> {
        let page = self.trail_page(query).await;
        page["items"].as_array().unwrap().clone()
    }

    /// The `/metrics` text (of a process of its own: the recorder is per
    /// process, so an in-process app's figures are the whole test binary's).
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics", None).await.text().await.unwrap()
    }

    /// The sum of a metric's samples (all label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The seconds of a `Retry-After` header.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    let value = headers["retry-after"].to_str().unwrap();
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After: {value}"))
}

/// `r`'s body as JSON (`Null` if empty or not JSON), asserting its status
/// is `status`; the body's text is in the message if not.
pub async fn expect(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// keyward's wall clock, set by the test: a keyward process started with
/// [`Clock::env`] reads its wall clock (expiry, rate windows,
/// plan periods) through libfaketime from a file this rewrites, so a test
/// moves it at once instead of waiting for a real minute to turn. Timers
/// are left alone (`FAKETIME_DONT_FAKE_MONOTONIC`), and the clock runs on
/// from wherever it is set. Only keyward runs under it: Redis (jemalloc)
/// cannot, so keyward is allowed any skew from Redis's `TIME`.
pub struct Clock {
    file: PathBuf,
    /// keyward's time minus the real time, in seconds.
    offset: Mutex<f64>,
}

impl Clock {
    /// A clock at the real time.
    pub fn real() -> Self {
        let file = std::env::temp_dir().join(random_id("keyward-test-clock-"));
        let clock = Clock {
            file,
            offset: Mutex::new(0.0),
        };
        clock.write(0.0);
        clock
    }

    /// The environment that puts a keyward process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        let file = self.file.to_str().unwrap();
        [
            ("LD_PRELOAD", libfaketime().as_str()),
            ("FAKETIME_TIMESTAMP_FILE", file),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
            // Ten years: any time a test sets is allowed.
            ("KEYWARD_MAX_CLOCK_SKEW_MS", "315360000000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    /// keyward's time now, in Unix seconds.
    pub fn now(&self) -> f64 {
        real_now() + *self.offset.lock().unwrap()
    }

    /// Sets keyward's time to `at` (Unix seconds); it runs on from there.
    pub fn set(&self, at: f64) {
        self.write(at - real_now());
    }

    /// Moves keyward's time `seconds` on (or back, if negative).
    pub fn advance(&self, seconds: f64) {
        let offset = *self.offset.lock().unwrap() + seconds;
        self.write(offset);
    }

    /// Sets keyward's time to `second` seconds into its next minute, so a
    /// test that counts in one minute's window has the rest of it.
    pub fn start_of_minute(&self, second: f64) {
        let minute = (self.now() / 60.0).floor() + 1.0;
        self.set(minute * 60.0 + second);
    }

    fn write(&self, offset: f64) {
        // Written whole and renamed over: keyward rereads the file at every
        // reading of the time and must never see half of it.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset:+.6}\n")).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
        *self.offset.lock().unwrap() = offset;
    }
}

/// The real time (this process is not under libfaketime), in Unix seconds.
fn real_now() -> f64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_secs_f64()
}

impl Drop for Clock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
