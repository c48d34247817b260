//! Load benchmark: a real Redis Stack, the real `keyward serve` binary with
//! the default Argon2id cost (64 MiB, t=3, p=1), and HTTP load over
//! 127.0.0.1 keep-alive connections.
//!
//! `cargo bench --bench load` (or `make load`). Scenarios:
//!
//! - `warm C=1`: one client, round-robin over K keys already verified once.
//! - `warm C=N`: N concurrent keep-alive clients, the same warm keys.
//! - `warm C=N /v1/auth`: the same through the forward-auth endpoint
//!   (`GET /v1/auth` with the key as bearer token), which must cost no more.
//! - `cold storm + warm probe`: 16 clients each validating never-seen keys
//!   once (one Argon2id verification each) while one client keeps
//!   validating warm keys; the probe's latency is reported separately.
//!
//! Knobs (environment): `KEYWARD_BENCH_SECONDS` (every scenario's duration;
//! default 10 s warm, 5 s cold), `KEYWARD_BENCH_KEYS` (K, default 200),
//! `KEYWARD_BENCH_CONCURRENCY` (N, default 64). Other `KEYWARD_*` variables
//! reach keyward (e.g. `KEYWARD_REDIS_POOL_SIZE=2`, to experiment); the
//! header then says the figures are not for the defaults.
//!
//! Targets are printed next to the figures, never asserted: the process
//! exits non-zero only when setup fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

type Res<T> = Result<T, String>;

const ADMIN_TOKEN_LEN: usize = 32;
/// Clients driving the cold storm.
const COLD_CLIENTS: usize = 16;
/// Deadline for any single request; keeps every scenario bounded.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most never-validated keys minted for the cold storm.
const MAX_COLD_KEYS: usize = 3000;
/// The default Argon2id memory cost, in MiB.
const ARGON2_MIB: f64 = 64.0;

// Targets: reported next to the figures, never asserted.
const T_WARM_RPS: f64 = 15_000.0;
const T_WARM_P99_MS: f64 = 10.0;
const T_WARM1_P50_MS: f64 = 1.0;
const T_PROBE_P99_MS: f64 = 20.0;
const T_WARM_RSS_MIB: f64 = 100.0;
const T_COLD_RSS_BASE_MIB: f64 = 40.0;

fn main() -> ExitCode {
    let knobs = match Knobs::from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every guard (Redis, keyward) lives inside `bench`: whether it ends,
    // fails, panics or is interrupted, they are dropped and clean up.
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = bench(knobs) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: setup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

// --- knobs -----------------------------------------------------------------

struct Knobs {
    cores: usize,
    warm_secs: f64,
    cold_secs: f64,
    keys: usize,
    concurrency: usize,
}

fn env_num<T: std::str::FromStr>(var: &str, default: T) -> Res<T> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{var}: cannot parse {v:?}")),
        _ => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> Res<Self> {
        let seconds: Option<f64> = match env_num("KEYWARD_BENCH_SECONDS", -1.0)? {
            s if s < 0.0 => None,
            s if s > 0.0 && s <= 600.0 => Some(s),
            _ => return Err("KEYWARD_BENCH_SECONDS must be in (0, 600]".into()),
        };
        let keys = env_num("KEYWARD_BENCH_KEYS", 200usize)?;
        let concurrency = env_num("KEYWARD_BENCH_CONCURRENCY", 64usize)?;
        if !(1..=100_000).contains(&keys) {
            return Err("KEYWARD_BENCH_KEYS must be 1 to 100000".into());
        }
        if !(1..=4096).contains(&concurrency) {
            return Err("KEYWARD_BENCH_CONCURRENCY must be 1 to 4096".into());
        }
        Ok(Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            warm_secs: seconds.unwrap_or(10.0),
            cold_secs: seconds.unwrap_or(5.0),
            keys,
            concurrency,
        })
    }
}

// --- processes ---------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn random_string(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn local_sh(args: &[&str]) -> Res<String> {
    let out = Command::new("bash")
        .arg(repo().join("redis/local.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis/local.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis/local.sh {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A Redis Stack in a temp dir of its own, stopped (and the dir removed) on drop.
struct Redis {
    dir: PathBuf,
    port: u16,
    pid: Option<u32>,
}

impl Redis {
    fn start(validator_pw: &str, manager_pw: &str) -> Res<Self> {
        let dir = std::env::temp_dir().join(format!(
            "keyward-load-{}-{}",
            std::process::id(),
            random_string(8)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // From here on, drop cleans up whatever was started.
        let mut redis = Redis {
            dir,
            port: free_port()?,
            pid: None,
        };
        let dir = redis.dir.to_string_lossy().into_owned();
        let acl = format!("{dir}/users.acl");
        local_sh(&["acl", validator_pw, manager_pw, &acl])?;
        let pid = local_sh(&["start", &redis.port.to_string(), &dir, &acl])?;
        redis.pid = pid.parse().ok();
        Ok(redis)
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        if let Err(e) = local_sh(&["stop", &dir]) {
            eprintln!("load: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Variables the bench sets for keyward itself.
const OWN_VARS: [&str; 5] = [
    "KEYWARD_LISTEN",
    "KEYWARD_REDIS_URL",
    "KEYWARD_ADMIN_REDIS_URL",
    "KEYWARD_ADMIN_TOKEN",
    "KEYWARD_LOG",
];

/// Whether an inherited variable must not reach keyward: one the bench sets,
/// a `_FILE` variant of a secret, or one of the bench's knobs.
fn withheld(var: &str) -> bool {
    OWN_VARS.contains(&var) || var.ends_with("_FILE") || var.starts_with("KEYWARD_BENCH_")
}

/// Other `KEYWARD_*` variables in the bench's environment: keyward inherits
/// them (to experiment, e.g. `KEYWARD_REDIS_POOL_SIZE=8`), and the header
/// lists them, since the figures are then not for the defaults.
fn overrides() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KEYWARD_") && !withheld(k))
        .collect();
    vars.sort();
    vars
}

/// The keyward child process, killed on drop.
struct Keyward {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Keyward {
    fn start(redis: &Redis, validator_pw: &str, manager_pw: &str, token: &str) -> Res<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = redis.dir.join("keyward.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        for (var, _) in std::env::vars() {
            if var.starts_with("KEYWARD_") && withheld(&var) {
                command.env_remove(var);
            }
        }
        let child = command
            .arg("serve")
            .env("KEYWARD_LISTEN", addr.to_string())
            .env("KEYWARD_REDIS_URL", redis.url("validator", validator_pw))
            .env("KEYWARD_ADMIN_REDIS_URL", redis.url("manager", manager_pw))
            .env("KEYWARD_ADMIN_TOKEN", token)
            .env("KEYWARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(|e| format!("cannot start keyward: {e}"))?;
        Ok(Keyward { child, addr, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_healthy(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = Conn::new(self.addr);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "keyward exited during start-up ({status}):\n{}",
                    self.log_tail(20)
                ));
            }
            if let Ok((StatusCode::OK, _)) = conn.send(Method::GET, "/health", None, None).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "keyward /health not 200 after 20 s:\n{}",
                    self.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- /proc ---------------------------------------------------------------------

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User plus system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples keyward's VmRSS every 50 ms on a thread of its own.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut max = 0;
                loop {
                    max = max.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                    if stop.load(Ordering::Relaxed) {
                        return max;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Self { stop, thread }
    }

    /// The largest VmRSS seen, in KiB.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// CPU used by keyward, Redis and this load generator over a scenario.
struct CpuMeter {
    pids: [Option<u32>; 3],
    start: [Option<u64>; 3],
    at: Instant,
}

impl CpuMeter {
    fn start(keyward: u32, redis: Option<u32>) -> Self {
        let pids = [Some(keyward), redis, Some(std::process::id())];
        Self {
            pids,
            start: pids.map(|p| p.and_then(cpu_ticks)),
            at: Instant::now(),
        }
    }

    /// Percent of one core for keyward, Redis and the bench.
    fn finish(&self, ticks_per_sec: f64) -> [Option<f64>; 3] {
        let secs = self.at.elapsed().as_secs_f64();
        let mut out = [None; 3];
        for (i, pid) in self.pids.iter().enumerate() {
            if let (Some(pid), Some(start)) = (pid, self.start[i]) {
                out[i] = cpu_ticks(*pid)
                    .map(|end| (end.saturating_sub(start)) as f64 / ticks_per_sec / secs * 100.0);
            }
        }
        out
    }
}

// --- HTTP client ---------------------------------------------------------------

type Sender = http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection, re-opened after an error.
struct Conn {
    addr: SocketAddr,
    sender: Option<Sender>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    async fn connect(&mut self) -> Res<&mut Sender> {
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just connected"))
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Res<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let sender = self.connect().await?;
            sender.ready().await.map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".into())
            }
        }
    }

    async fn admin_post(
        &mut self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> Res<serde_json::Value> {
        let (status, bytes) = self
            .send(
                Method::POST,
                path,
                Some(token),
                Some(Bytes::from(body.to_string())),
            )
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        if status != StatusCode::CREATED {
            return Err(format!(
                "POST {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("POST {path}: {e}"))
    }
}

/// One validation, as either endpoint takes it.
enum Call {
    /// `POST /v1/validate-key` with this body.
    Validate(Bytes),
    /// `GET /v1/auth` with this key as the bearer token (forward auth).
    Auth(String),
}

/// A validation request for `key` at `POST /v1/validate-key`.
fn validate_body(key: &str) -> Call {
    Call::Validate(Bytes::from(
        serde_json::json!({ "api_key": key }).to_string(),
    ))
}

// --- tallies -------------------------------------------------------------------

/// What one or more clients saw: latencies of every answer, and the non-200s.
struct Tally {
    /// Latency of every answered request, in microseconds.
    hist: Histogram<u64>,
    ok: u64,
    /// `"503 busy"`, `"401 invalid_key"`, `"error: ..."` -> count.
    other: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            ok: 0,
            other: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        for (k, v) in other.other {
            *self.other.entry(k).or_default() += v;
        }
    }

    fn non_200(&self) -> u64 {
        self.other.values().sum()
    }

    fn count(&self, label: &str) -> u64 {
        self.other.get(label).copied().unwrap_or(0)
    }

    fn requests(&self) -> u64 {
        self.ok + self.non_200()
    }

    /// Sends one validation and records how it went.
    async fn validate(&mut self, conn: &mut Conn, call: &Call) -> Option<StatusCode> {
        let started = Instant::now();
        let result = match call {
            Call::Validate(body) => {
                conn.send(Method::POST, "/v1/validate-key", None, Some(body.clone()))
                    .await
            }
            Call::Auth(key) => conn.send(Method::GET, "/v1/auth", Some(key), None).await,
        };
        let micros = started.elapsed().as_micros().max(1) as u64;
        match result {
            Ok((status, bytes)) => {
                self.hist.saturating_record(micros);
                if status == StatusCode::OK {
                    self.ok += 1;
                } else {
                    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "?".into());
                    *self
                        .other
                        .entry(format!("{} {code}", status.as_u16()))
                        .or_default() += 1;
                }
                Some(status)
            }
            Err(e) => {
                *self.other.entry(format!("error: {e}")).or_default() += 1;
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
                None
            }
        }
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }

    fn breakdown(&self) -> String {
        if self.other.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .other
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(" ({})", parts.join(", "))
    }
}

// --- workers -------------------------------------------------------------------

/// Validates `keys` round-robin from `offset` until `stop` (or, with
/// `while_active`, until it drops to 0). Returns when it finished, too.
async fn round_robin(
    mut conn: Conn,
    keys: Arc<Vec<Call>>,
    offset: usize,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    while_active: Option<Arc<AtomicUsize>>,
) -> (Tally, Instant) {
    let mut tally = Tally::new();
    // Open the connection before the clock starts.
    let _ = conn.connect().await;
    start.wait().await;
    let mut i = offset;
    while !stop.load(Ordering::Relaxed)
        && while_active
            .as_ref()
            .map_or(true, |n| n.load(Ordering::Relaxed) > 0)
    {
        tally.validate(&mut conn, &keys[i % keys.len()]).await;
        i += 1;
    }
    (tally, Instant::now())
}

/// Validates each key of `keys` once, taking the next one from `next`,
/// until they run out or `stop`. Returns when it finished, too.
async fn each_once(
    mut conn: Conn,
    keys: Arc<Vec<Call>>,
    next: Arc<AtomicUsize>,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
) -> (Tally, Instant) {
    let mut tally = Tally::new();
    let _ = conn.connect().await;
    start.wait().await;
    while !stop.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(key) = keys.get(i) else { break };
        tally.validate(&mut conn, key).await;
    }
    active.fetch_sub(1, Ordering::Relaxed);
    (tally, Instant::now())
}

/// Mints `n` keys with `clients` concurrent admin requests.
async fn mint_keys(
    addr: SocketAddr,
    token: &str,
    project: &str,
    n: usize,
    clients: usize,
) -> Res<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(n) {
        let (next, token, project) = (next.clone(), token.to_owned(), project.to_owned());
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut keys = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let body = serde_json::json!({
                    "project_id": project,
                    "owner": "load",
                    "server_name": "bench",
                    "rate_limit_per_minute": 100_000_000u64,
                });
                let minted = conn.admin_post("/v1/mint-key", &token, body).await?;
                let key = minted["api_key"]
                    .as_str()
                    .ok_or("mint answer without api_key")?;
                keys.push(key.to_owned());
            }
            Ok::<_, String>(keys)
        });
    }
    let mut keys = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        keys.extend(joined.map_err(|e| format!("mint task: {e}"))??);
    }
    Ok(keys)
}

// --- scenarios -------------------------------------------------------------------

/// One reported line.
struct Row {
    name: String,
    clients: usize,
    elapsed: Duration,
    tally: Tally,
    /// Largest sampled VmRSS during the scenario, and VmHWM after it (KiB).
    rss_kib: u64,
    hwm_kib: u64,
    cpu: [Option<f64>; 3],
    unit: &'static str,
}

impl Row {
    fn throughput(&self) -> f64 {
        self.tally.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        let t = &self.tally;
        let cpu = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}%"));
        println!(
            "{:<28} C={:<3} {:>6.2} s  {:>7} req  {:>8.0} {}  p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3} ms  non-200 {}{}  RSS max {:.1} MiB (VmHWM {:.1} MiB)  cpu keyward {} redis {} bench {}",
            self.name,
            self.clients,
            self.elapsed.as_secs_f64(),
            t.requests(),
            self.throughput(),
            self.unit,
            t.ms(0.50),
            t.ms(0.95),
            t.ms(0.99),
            t.max_ms(),
            t.non_200(),
            t.breakdown(),
            mib(self.rss_kib),
            mib(self.hwm_kib),
            cpu(self.cpu[0]),
            cpu(self.cpu[1]),
            cpu(self.cpu[2]),
        );
    }
}

struct Env {
    addr: SocketAddr,
    keyward_pid: u32,
    redis_pid: Option<u32>,
    ticks: f64,
}

impl Env {
    fn measure(&self) -> (RssSampler, CpuMeter) {
        (
            RssSampler::start(self.keyward_pid),
            CpuMeter::start(self.keyward_pid, self.redis_pid),
        )
    }

    fn hwm(&self) -> u64 {
        proc_status_kib(self.keyward_pid, "VmHWM").unwrap_or(0)
    }
}

async fn warm_scenario(
    env: &Env,
    keys: &Arc<Vec<Call>>,
    clients: usize,
    secs: f64,
    label: &str,
) -> Row {
    let start = Arc::new(Barrier::new(clients + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(round_robin(
            Conn::new(env.addr),
            keys.clone(),
            c * keys.len() / clients,
            start.clone(),
            stop.clone(),
            None,
        ));
    }
    start.wait().await;
    let (rss, cpu) = env.measure();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((t, _)) = joined {
            tally.merge(t);
        }
    }
    let elapsed = began.elapsed();
    Row {
        name: format!("warm C={clients}{label}"),
        clients,
        elapsed,
        tally,
        cpu: cpu.finish(env.ticks),
        rss_kib: rss.finish(),
        hwm_kib: env.hwm(),
        unit: "req/s",
    }
}

/// The cold storm and the warm probe running beside it.
async fn cold_scenario(
    env: &Env,
    warm: &Arc<Vec<Call>>,
    cold: &Arc<Vec<Call>>,
    secs: f64,
) -> (Row, Row, bool) {
    let start = Arc::new(Barrier::new(COLD_CLIENTS + 2));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let active = Arc::new(AtomicUsize::new(COLD_CLIENTS));
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..COLD_CLIENTS {
        storm.spawn(each_once(
            Conn::new(env.addr),
            cold.clone(),
            next.clone(),
            start.clone(),
            stop.clone(),
            active.clone(),
        ));
    }
    // The probe runs until the last storm client is done (the storm's queue
    // drains after `stop`): it measures warm latency under the storm only.
    let probe = tokio::spawn(round_robin(
        Conn::new(env.addr),
        warm.clone(),
        0,
        start.clone(),
        Arc::new(AtomicBool::new(false)),
        Some(active.clone()),
    ));
    start.wait().await;
    let (rss, cpu) = env.measure();
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && active.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exhausted = active.load(Ordering::Relaxed) == 0;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new();
    let mut last = began;
    while let Some(joined) = storm.join_next().await {
        if let Ok((t, finished)) = joined {
            tally.merge(t);
            last = last.max(finished);
        }
    }
    let (probe_tally, probe_end) = probe
        .await
        .unwrap_or_else(|_| (Tally::new(), Instant::now()));
    let probe_elapsed = probe_end - began;
    let cpu = cpu.finish(env.ticks);
    let (rss_kib, hwm_kib) = (rss.finish(), env.hwm());
    let storm_row = Row {
        name: "cold storm (argon2 verify)".into(),
        clients: COLD_CLIENTS,
        elapsed: last - began,
        tally,
        rss_kib,
        hwm_kib,
        cpu,
        unit: "vrf/s",
    };
    let probe_row = Row {
        name: "warm probe (during storm)".into(),
        clients: 1,
        elapsed: probe_elapsed,
        tally: probe_tally,
        rss_kib,
        hwm_kib,
        cpu,
        unit: "req/s",
    };
    (storm_row, probe_row, exhausted)
}

// --- the run -------------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

async fn bench(knobs: Knobs) -> Res<()> {
    let validator_pw = random_string(24);
    let manager_pw = random_string(24);
    let token = random_string(ADMIN_TOKEN_LEN);
    let overrides = overrides();
    let argon2_concurrency = overrides
        .iter()
        .find(|(k, _)| k == "KEYWARD_ARGON2_CONCURRENCY")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(knobs.cores);

    let redis = Redis::start(&validator_pw, &manager_pw)?;
    let mut keyward = Keyward::start(&redis, &validator_pw, &manager_pw, &token)?;
    keyward.wait_healthy().await?;
    let env = Env {
        addr: keyward.addr,
        keyward_pid: keyward.pid(),
        redis_pid: redis.pid,
        ticks: clock_ticks_per_sec(),
    };

    println!("keyward load benchmark");
    println!(
        "  machine: {} cores; keyward pid {} on {}; redis pid {} on 127.0.0.1:{} (dir {})",
        knobs.cores,
        env.keyward_pid,
        env.addr,
        env.redis_pid.map_or("?".into(), |p| p.to_string()),
        redis.port,
        redis.dir.display()
    );
    let cost = if overrides
        .iter()
        .any(|(k, _)| k.starts_with("KEYWARD_ARGON2_"))
    {
        "see the overrides below"
    } else {
        "m=64 MiB, t=3, p=1 (keyward's defaults)"
    };
    println!("  argon2id: {cost}; {argon2_concurrency} at once; verified-secret cache on");
    println!(
        "  K={} warm keys; warm C={} for {:.1} s; cold storm {} clients + 1 warm probe for <= {:.1} s",
        knobs.keys, knobs.concurrency, knobs.warm_secs, COLD_CLIENTS, knobs.cold_secs
    );
    if overrides.is_empty() {
        println!("  keyward configuration: defaults (no KEYWARD_* overrides inherited)");
    } else {
        let list: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  keyward configuration: NOT the defaults, inherited {}",
            list.join(" ")
        );
    }
    println!("  latencies include the bench's own client, on the same cores; 1 MiB = 2^20 bytes");

    // Setup: a project, K warm keys, a warm-up pass, then the cold keys.
    let project = format!("load{}", random_string(8));
    Conn::new(env.addr)
        .admin_post(
            "/v1/admin/projects",
            &token,
            serde_json::json!({ "project_id": project, "label": "load", "owner": "bench" }),
        )
        .await?;
    let minting = Instant::now();
    let mint_clients = 2 * argon2_concurrency;
    let warm_keys = mint_keys(env.addr, &token, &project, knobs.keys, mint_clients).await?;
    let mint_rate = warm_keys.len() as f64 / minting.elapsed().as_secs_f64();
    println!(
        "  setup: minted {} keys in {:.1} s ({mint_rate:.1} Argon2id hashes/s via the admin API)",
        warm_keys.len(),
        minting.elapsed().as_secs_f64()
    );
    let warm: Arc<Vec<Call>> = Arc::new(warm_keys.iter().map(|k| validate_body(k)).collect());
    let warm_auth: Arc<Vec<Call>> = Arc::new(warm_keys.iter().cloned().map(Call::Auth).collect());

    let warming = Instant::now();
    let warmup = {
        let start = Arc::new(Barrier::new(mint_clients));
        let (next, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let active = Arc::new(AtomicUsize::new(mint_clients));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..mint_clients {
            tasks.spawn(each_once(
                Conn::new(env.addr),
                warm.clone(),
                next.clone(),
                start.clone(),
                stop.clone(),
                active.clone(),
            ));
        }
        let mut tally = Tally::new();
        while let Some(joined) = tasks.join_next().await {
            tally.merge(joined.map_err(|e| format!("warm-up task: {e}"))?.0);
        }
        tally
    };
    if warmup.ok != warm.len() as u64 {
        return Err(format!(
            "warm-up: {} of {} keys validated{}; keyward log:\n{}",
            warmup.ok,
            warm.len(),
            warmup.breakdown(),
            keyward.log_tail(20)
        ));
    }
    println!(
        "  setup: warm-up pass validated all {} keys in {:.1} s",
        warm.len(),
        warming.elapsed().as_secs_f64()
    );

    // Enough never-validated keys to keep Argon2id busy for the whole storm,
    // at about the rate minting ran (same cost), with a margin.
    let cold_n = ((mint_rate * knobs.cold_secs * 1.3).ceil() as usize + 2 * COLD_CLIENTS)
        .clamp(COLD_CLIENTS, MAX_COLD_KEYS);
    let minting = Instant::now();
    let cold_keys = mint_keys(env.addr, &token, &project, cold_n, mint_clients).await?;
    println!(
        "  setup: minted {} cold keys in {:.1} s",
        cold_keys.len(),
        minting.elapsed().as_secs_f64()
    );
    let cold: Arc<Vec<Call>> = Arc::new(cold_keys.iter().map(|k| validate_body(k)).collect());
    println!();

    // Scenarios.
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    settle().await;
    let warm1 = warm_scenario(&env, &warm, 1, knobs.warm_secs, "").await;
    warm1.print();
    settle().await;
    let warm_n = warm_scenario(&env, &warm, knobs.concurrency, knobs.warm_secs, "").await;
    warm_n.print();
    settle().await;
    let auth_n = warm_scenario(
        &env,
        &warm_auth,
        knobs.concurrency,
        knobs.warm_secs,
        " /v1/auth",
    )
    .await;
    auth_n.print();
    settle().await;
    let (storm, probe, exhausted) = cold_scenario(&env, &warm, &cold, knobs.cold_secs).await;
    storm.print();
    probe.print();
    println!(
        "  cold storm: {} Argon2id verifications, {} answered 503 busy{}",
        storm.tally.ok,
        storm.tally.count("503 busy"),
        if exhausted {
            format!(
                "; ran out of cold keys after {:.2} s",
                storm.elapsed.as_secs_f64()
            )
        } else {
            String::new()
        }
    );

    // Summary.
    let cold_rss_target = T_COLD_RSS_BASE_MIB + ARGON2_MIB * argon2_concurrency as f64;
    let rows = [&warm1, &warm_n, &auth_n, &storm, &probe];
    println!();
    println!("summary ({} cores)", knobs.cores);
    println!(
        "{:<28} {:>4} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "scenario",
        "C",
        "rate",
        "unit",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "non-200",
        "RSS MiB"
    );
    for row in rows {
        println!(
            "{:<28} {:>4} {:>9.0} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>9.1}",
            row.name,
            row.clients,
            row.throughput(),
            row.unit,
            row.tally.ms(0.50),
            row.tally.ms(0.95),
            row.tally.ms(0.99),
            row.tally.max_ms(),
            row.tally.non_200(),
            mib(row.rss_kib),
        );
    }
    println!(
        "keyward VmHWM (lifetime peak, includes minting): {:.1} MiB",
        mib(env.hwm())
    );

    let mut targets = String::new();
    let mut target = |what: String, got: String, ok: bool| {
        let _ = writeln!(targets, "  {:<44} {:>14}  {}", what, got, verdict(ok));
    };
    let n = knobs.concurrency;
    target(
        format!("warm C={n} throughput >= {T_WARM_RPS:.0} req/s"),
        format!("{:.0}", warm_n.throughput()),
        warm_n.throughput() >= T_WARM_RPS,
    );
    target(
        format!("warm C={n} p99 < {T_WARM_P99_MS} ms"),
        format!("{:.3} ms", warm_n.tally.ms(0.99)),
        warm_n.tally.ms(0.99) < T_WARM_P99_MS,
    );
    target(
        format!("warm C={n} non-200 = 0"),
        warm_n.tally.non_200().to_string(),
        warm_n.tally.non_200() == 0,
    );
    target(
        format!("warm C=1 p50 < {T_WARM1_P50_MS} ms"),
        format!("{:.3} ms", warm1.tally.ms(0.50)),
        warm1.tally.ms(0.50) < T_WARM1_P50_MS,
    );
    target(
        format!("cold: warm probe p99 < {T_PROBE_P99_MS} ms"),
        format!("{:.3} ms", probe.tally.ms(0.99)),
        probe.tally.ms(0.99) < T_PROBE_P99_MS,
    );
    let warm_rss = mib(warm1.rss_kib.max(warm_n.rss_kib));
    target(
        format!("warm RSS (sampled max) < {T_WARM_RSS_MIB:.0} MiB"),
        format!("{warm_rss:.1} MiB"),
        warm_rss < T_WARM_RSS_MIB,
    );
    target(
        format!("cold RSS (sampled max) < {cold_rss_target:.0} MiB"),
        format!("{:.1} MiB", mib(storm.rss_kib)),
        mib(storm.rss_kib) < cold_rss_target,
    );
    println!("targets (reported, not asserted)");
    print!("{targets}");

    let log = std::fs::read_to_string(&keyward.log).unwrap_or_default();
    let lines = log.lines().count();
    if lines > 0 {
        println!(
            "keyward logged {lines} line(s) at warn or above; last ones:\n{}",
            keyward.log_tail(5)
        );
    }
    drop(keyward);
    drop(redis);
    Ok(())
}
