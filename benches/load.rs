//! The load benchmark: mints keys, warms them, runs the scenarios and prints
//! their figures. README's "Performance" says what each command, row and
//! column means and which `KEYWARD_BENCH_*` variables tune it.
//!
//! benches/load.sh starts Redis (redis/local.sh) and runs this binary on it
//! (started without one, the binary runs load.sh on itself); benches/measure.sh
//! runs wrk with benches/load.lua and measures CPU and memory; compare.sh
//! alternates runs of two binaries. `KEYWARD_BENCH_SCENARIO` is `all` (the
//! default), `warm` (warm C=N alone, as `make profile` and compare.sh run it)
//! or `restart` (see [`restart`]). Targets are printed, never asserted: only
//! a failed setup fails the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

/// Connections of the cold storm; clients of the restart scenario.
const COLD_CLIENTS: usize = 16;
/// Most never-validated keys minted for the cold storm.
const MAX_COLD_KEYS: usize = 3000;
/// Keyward's peak RSS target in the cold storm, MiB: this + Argon2id memory x slots.
const COLD_RSS_BASE_MIB: f64 = 40.0;
/// How long the restart scenario's clients go on after the last key.
const TAIL: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("KEYWARD_BENCH_DIR").is_none() {
        let mut load_sh = Command::new("bash");
        load_sh.arg(repo().join("benches/load.sh"));
        let status = load_sh
            .arg(std::env::current_exe().unwrap_or_default())
            .status();
        return ExitCode::from(status.ok().and_then(|s| s.code()).unwrap_or(1) as u8);
    }
    // However `run` ends (done, error, ctrl-c), its keyward is dropped, which
    // stops it; load.sh stops Redis.
    let outcome = tokio::select! {
        r = async { run(Knobs::from_env()?).await } => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if let Err(e) = &outcome {
        eprintln!("load: {e}");
    }
    ExitCode::from(u8::from(outcome.is_err()))
}

struct Knobs {
    cores: usize,
    warm_secs: u64,
    cold_secs: u64,
    keys: usize,
    concurrency: usize,
    restart_keys: usize,
    scenario: String,
    /// The keyward binary: `$KEYWARD_BENCH_BASE/keyward`, or this tree's.
    bin: PathBuf,
    /// load.sh's directory for this run's files.
    dir: PathBuf,
}

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_default()
}

fn env_num(var: &str, default: usize, max: usize) -> Res<usize> {
    let n = match env(var).trim() {
        "" => Some(default),
        v => v.parse().ok().filter(|n| (1..=max).contains(n)),
    };
    n.ok_or_else(|| format!("{var}: {:?} is not a whole number in 1..={max}", env(var)))
}

impl Knobs {
    fn from_env() -> Res<Self> {
        let secs = env_num("KEYWARD_BENCH_SECONDS", 0, 600)? as u64;
        let mut scenario = env("KEYWARD_BENCH_SCENARIO").replace("all", "");
        if env("KEYWARD_BENCH_PROFILE") == "1" && scenario.is_empty() {
            scenario = "warm".into();
        }
        if !["", "warm", "restart"].contains(&scenario.as_str()) {
            return Err(format!(
                "KEYWARD_BENCH_SCENARIO={scenario:?}: all, warm or restart"
            ));
        }
        let bin = match std::env::var_os("KEYWARD_BENCH_BASE") {
            Some(dir) => PathBuf::from(dir).join("keyward"),
            None => env!("CARGO_BIN_EXE_keyward").into(),
        };
        Ok(Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            warm_secs: if secs == 0 { 10 } else { secs },
            cold_secs: if secs == 0 { 5 } else { secs },
            keys: env_num("KEYWARD_BENCH_KEYS", 200, 100_000)?,
            concurrency: env_num("KEYWARD_BENCH_CONCURRENCY", 64, 4096)?,
            restart_keys: env_num("KEYWARD_BENCH_RESTART_KEYS", 1000, 100_000)?,
            scenario,
            bin,
            dir: env("KEYWARD_BENCH_DIR").into(),
        })
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Inherited variables that must not reach keyward: the ones the bench sets,
/// `_FILE` variants of secrets, the bench's knobs.
fn withheld(var: &str) -> bool {
    let own = [
        "LISTEN",
        "REDIS_URL",
        "ADMIN_REDIS_URL",
        "ADMIN_TOKEN",
        "LOG",
    ];
    let name = var.strip_prefix("KEYWARD_").unwrap_or(var);
    own.contains(&name) || var.ends_with("_FILE") || name.starts_with("BENCH_")
}

fn override_num(var: &str) -> Option<f64> {
    env(var).trim().parse().ok()
}

fn random_string(n: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// The last lines keyward logged (at warn or above).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(20)..].join("\n")
}

// --- keyward ---------------------------------------------------------------------

/// A `keyward serve` process, killed on drop.
struct Keyward {
    child: Child,
    addr: String,
}

impl Drop for Keyward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` with `env` on a free port, logging to `log`; returns once its
/// `/ready` answers 200.
async fn spawn(
    bin: &Path,
    env: &[(&str, String)],
    log: &Path,
    http: &reqwest::Client,
) -> Res<Keyward> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    let file = file.map_err(|e| format!("{}: {e}", log.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let addr = port.map_err(|e| format!("no free port: {e}"))?.to_string();
    let mut command = Command::new(bin);
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYWARD_") && withheld(k)) {
        command.env_remove(var);
    }
    let child = command
        .arg("serve")
        .env("KEYWARD_LISTEN", &addr)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut keyward = Keyward { child, addr };
    let ready = format!("http://{}/ready", keyward.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http.get(&ready).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return Ok(keyward);
        }
        let exited = keyward.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let why = exited.map_or("/ready not 200 after 20 s".into(), |s| {
                format!("exited ({s})")
            });
            return Err(format!("keyward {why}:\n{}", log_tail(log)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A keyward with its keys (one a line in `warm_file` too), and what it
/// takes to start another on the same Redis.
struct Stack {
    keyward: Keyward,
    /// What keyward gets besides `KEYWARD_LISTEN`: admin token, Redis URLs, ...
    env: Vec<(&'static str, String)>,
    http: reqwest::Client,
    log: PathBuf,
    project: String,
    /// Concurrent requests when minting or warming: twice the Argon2id slots.
    clients: usize,
    keys: Vec<String>,
    warm_file: PathBuf,
    mint_rate: f64,
}

impl Stack {
    /// Starts keyward, mints `keys` keys and validates each once. With
    /// `pepper`, keyward gets `KEYWARD_VERIFY_PEPPER_FILE`, a random line.
    async fn start(knobs: &Knobs, keys: usize, pepper: bool) -> Res<Self> {
        let mut env = vec![("KEYWARD_ADMIN_TOKEN", random_string(32))];
        env.push(("KEYWARD_REDIS_URL", self::env("KEYWARD_BENCH_REDIS_URL")));
        env.push((
            "KEYWARD_ADMIN_REDIS_URL",
            self::env("KEYWARD_BENCH_ADMIN_REDIS_URL"),
        ));
        env.push(("KEYWARD_LOG", "warn".into()));
        if pepper {
            let file = knobs.dir.join("pepper");
            std::fs::write(&file, random_string(43) + "\n").map_err(|e| format!("pepper: {e}"))?;
            env.push(("KEYWARD_VERIFY_PEPPER_FILE", file.display().to_string()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60));
        let http = http.build().map_err(|e| e.to_string())?;
        let log = knobs.dir.join("keyward.log");
        let slots = override_num("KEYWARD_ARGON2_CONCURRENCY").map_or(knobs.cores, |n| n as usize);
        let mut stack = Stack {
            keyward: spawn(&knobs.bin, &env, &log, &http).await?,
            env,
            http,
            log,
            project: format!("load{}", random_string(8)),
            clients: 2 * slots.max(1),
            keys: Vec::new(),
            warm_file: knobs.dir.join("warm.keys"),
            mint_rate: 0.0,
        };
        let body = json!({ "project_id": stack.project, "label": "load", "owner": "bench" });
        stack.admin_post("/v1/admin/projects", &body).await?;
        let minting = Instant::now();
        stack.keys = stack.mint(keys, &stack.warm_file).await?;
        let (mint_secs, warming) = (minting.elapsed().as_secs_f64(), Instant::now());
        let warm_up = stack.drive(stack.clients, Duration::ZERO).await?;
        let (pid, addr) = (stack.keyward.child.id(), &stack.keyward.addr);
        let (warm_secs, retried) = (
            warming.elapsed().as_secs_f64(),
            warm_up.busy.len() + warm_up.other.len(),
        );
        println!("  keyward pid {pid} on {addr}; minted {keys} keys in {mint_secs:.1} s, validated each once in {warm_secs:.1} s ({retried} non-200 retried)");
        stack.mint_rate = keys as f64 / mint_secs;
        Ok(stack)
    }

    /// Mints `n` keys (limit 10^8/min) through the admin API, each its own
    /// secret and Argon2id hash at the configured cost; writes them to `file`.
    async fn mint(&self, n: usize, file: &Path) -> Res<Vec<String>> {
        let body = json!({ "project_id": self.project, "owner": "load", "server_name": "bench",
            "rate_limit_per_minute": 100_000_000u64 });
        let mint = |_| async {
            let minted = self.admin_post("/v1/mint-key", &body).await?;
            Ok::<_, String>(minted["api_key"].as_str().ok_or("no api_key")?.to_owned())
        };
        let keys = futures::stream::iter(0..n)
            .map(mint)
            .buffer_unordered(self.clients);
        let keys: Vec<String> = keys.try_collect().await?;
        // The Lua script pastes keys into JSON bodies and headers as they are.
        let safe = |k: &String| {
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !keys.iter().all(safe) {
            return Err("a minted key has characters outside [A-Za-z0-9._-]".into());
        }
        let written = std::fs::write(file, keys.join("\n") + "\n");
        written.map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(keys)
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Res<Value> {
        let fail = |e: &dyn std::fmt::Display| format!("POST {path}: {e}");
        let req = self
            .http
            .post(format!("http://{}{path}", self.keyward.addr));
        let resp = req.bearer_auth(&self.env[0].1).json(body).send().await;
        let resp = resp.map_err(|e| fail(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(&e))?;
        if status != 201 {
            return Err(fail(&format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| fail(&e))
    }
}

// --- measuring -------------------------------------------------------------------

/// The figures load.lua's `done()` prints for one wrk run.
#[derive(serde::Deserialize)]
struct Wrk {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    p99_us: u64,
    non_2xx: u64,
    socket_errors: u64,
    exhausted: bool,
}

/// What benches/measure.sh prints last: CPU seconds of keyward, Redis (all
/// nodes), wrk and the rest of the machine; wall seconds; keyward's peak RSS.
#[derive(serde::Deserialize)]
struct Measured {
    #[serde(skip)]
    runs: Vec<Wrk>,
    /// A cluster's lines per node.
    #[serde(skip)]
    nodes: Vec<String>,
    cpu: [f64; 4],
    wall: f64,
    rss_kib: Option<f64>,
}

impl Stack {
    /// benches/measure.sh: one wrk per load (load.lua's mode, the keys file,
    /// connections, seconds), all at once.
    async fn measure(&self, loads: &[(&str, &Path, usize, u64)]) -> Res<Measured> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let shards = override_num("KEYWARD_AUDIT_SHARDS").map_or(1, |n| n as usize);
        let streams = keyward::store::names::audit_keylookup_all(shards).join(" ");
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("benches/measure.sh"))
            .env("KEYWARD_BENCH_STREAMS", streams);
        cmd.args([&self.keyward.addr, &self.keyward.child.id().to_string()]);
        for (mode, keys, clients, secs) in loads {
            cmd.arg(format!("{mode} {} {clients} {secs}", keys.display()));
        }
        let out = tokio::task::spawn_blocking(move || cmd.stderr(Stdio::inherit()).output());
        let out = out.await.map_err(|e| e.to_string())?;
        let out = out.map_err(|e| format!("measure.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let bad = || format!("measure.sh ({}): {text}", out.status);
        let (nodes, json): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with(' '));
        let (last, runs) = json
            .split_last()
            .filter(|_| out.status.success())
            .ok_or_else(bad)?;
        let mut m: Measured = serde_json::from_str(last).map_err(|_| bad())?;
        let runs: Result<_, _> = runs.iter().map(|line| serde_json::from_str(line)).collect();
        m.runs = runs.map_err(|_| bad())?;
        m.nodes = nodes.into_iter().map(str::to_owned).collect();
        Ok(m)
    }

    /// Warm load on `clients` connections; a cluster's nodes after warm C=N.
    async fn warm(&self, knobs: &Knobs, clients: usize, auth: bool) -> Res<[f64; 12]> {
        let mode = if auth { "auth" } else { "validate" };
        let m = self
            .measure(&[(mode, &self.warm_file, clients, knobs.warm_secs)])
            .await?;
        let name = format!("warm C={clients}{}", if auth { " /v1/auth" } else { "" });
        let row = row(&name, clients, &m.runs[0], m.runs[0].requests, &m);
        if clients == knobs.concurrency && !auth {
            m.nodes.iter().for_each(|line| println!("{line}"));
        }
        Ok(row)
    }
}

/// Columns, and their decimals (benches/compare.sh reads the rows too).
const COLS: [&str; 12] = [
    "req/s", "p50 ms", "p99 ms", "non-200", "kw µs/v", "rd µs/v", "kw/rd", "kw %", "rd %", "wrk %",
    "other %", "RSS MiB",
];
const DECIMALS: [usize; 12] = [0, 3, 3, 0, 1, 1, 2, 0, 0, 0, 0, 1];

/// Prints one scenario's row and returns its figures, in `COLS` order;
/// `validations`: all answered during the scenario, the divisor for CPU.
fn row(name: &str, clients: usize, w: &Wrk, validations: u64, m: &Measured) -> [f64; 12] {
    let [kw, rd, ..] = m.cpu;
    let [kw_us, rd_us] = [kw, rd].map(|secs| secs * 1e6 / validations.max(1) as f64);
    let [kw_pct, rd_pct, wrk_pct, other_pct] = m.cpu.map(|secs| secs * 100.0 / m.wall);
    let rps = w.requests as f64 * 1e6 / w.duration_us.max(1) as f64;
    let [p50, p99] = [w.p50_us, w.p99_us].map(|us| us as f64 / 1e3);
    let non_200 = (w.non_2xx + w.socket_errors) as f64;
    let (kw_rd, rss) = (kw / rd, m.rss_kib.map_or(f64::NAN, |k| k / 1024.0));
    let v = [
        rps, p50, p99, non_200, kw_us, rd_us, kw_rd, kw_pct, rd_pct, wrk_pct, other_pct, rss,
    ];
    let cells = v
        .iter()
        .zip(DECIMALS)
        .map(|(v, decimals)| match v.is_nan() {
            true => format!("{:>8}", "?"),
            false => format!("{v:>8.decimals$}"),
        });
    println!(
        "{name:<32} {clients:>3} {}",
        cells.collect::<Vec<_>>().join(" ")
    );
    if w.socket_errors > 0 {
        let errors = w.socket_errors;
        println!("  ({name}: {errors} socket errors or timeouts, counted as non-200)");
    }
    v
}

fn header() {
    let titles = COLS.map(|title| format!("{title:>8}"));
    println!("{:<32} {:>3} {}", "scenario", "C", titles.join(" "));
}

fn warn_tail(log: &Path) {
    let log = log_tail(log);
    if !log.is_empty() {
        println!("keyward logged at warn or above; last lines:\n{log}");
    }
}

// --- the scenarios ---------------------------------------------------------------

async fn run(knobs: Knobs) -> Res<()> {
    let inherited = std::env::vars().filter(|(k, _)| k.starts_with("KEYWARD_") && !withheld(k));
    let mut overrides: Vec<String> = inherited.map(|(k, v)| format!("{k}={v}")).collect();
    overrides.sort();
    match overrides.join(" ") {
        o if o.is_empty() => {
            println!("  keyward configuration: defaults (no KEYWARD_* overrides inherited)")
        }
        o => println!("  keyward configuration: NOT the defaults: {o}"),
    }
    if knobs.scenario == "restart" {
        return restart(&knobs).await;
    }
    let (n, k, warm_secs, cold_secs) = (
        knobs.concurrency,
        knobs.keys,
        knobs.warm_secs,
        knobs.cold_secs,
    );
    println!("  K={k} warm keys; every scenario {warm_secs} s (cold storm {cold_secs} s)");
    println!("  kw|rd µs/v: CPU of keyward|Redis per answered validation; kw/rd: their ratio;");
    println!("  kw|rd|wrk|other %: CPU in % of one core (other: the rest of the machine)");
    let stack = Stack::start(&knobs, k, false).await?;
    if knobs.scenario == "warm" {
        println!();
        header();
        stack.warm(&knobs, n, false).await?;
        return Ok(());
    }

    // Enough never-validated keys to keep Argon2id busy for the whole storm,
    // at about the rate minting ran (same cost), with a margin.
    let cold_n = (stack.mint_rate * cold_secs as f64 * 1.3).ceil() as usize;
    let cold_n = (cold_n + 2 * COLD_CLIENTS).min(MAX_COLD_KEYS);
    let (minting, cold_file) = (Instant::now(), knobs.dir.join("cold.keys"));
    stack.mint(cold_n, &cold_file).await?;
    println!(
        "  minted {cold_n} cold keys in {:.1} s\n",
        minting.elapsed().as_secs_f64()
    );

    header();
    let w1 = stack.warm(&knobs, 1, false).await?;
    let w = stack.warm(&knobs, n, false).await?;
    stack.warm(&knobs, n, true).await?;
    let storm = ("once", cold_file.as_path(), COLD_CLIENTS, cold_secs);
    let m = stack
        .measure(&[storm, ("validate", &stack.warm_file, 1, cold_secs)])
        .await?;
    let (storm, probe) = (&m.runs[0], &m.runs[1]);
    let all = storm.requests + probe.requests;
    let s = row("cold storm", COLD_CLIENTS, storm, all, &m);
    let p = row("warm probe (during storm)", 1, probe, all, &m);
    let verified = storm.requests - storm.non_2xx;
    println!(
        "  cold storm: {verified} Argon2id verifications ({:.1}/s), {} non-200{}; its CPU columns are storm and probe together",
        verified as f64 / cold_secs as f64,
        storm.non_2xx + storm.socket_errors,
        if storm.exhausted { "; RAN OUT of cold keys before the end" } else { "" },
    );
    let argon2_mib = override_num("KEYWARD_ARGON2_MEMORY_KIB").unwrap_or(65536.0) / 1024.0;
    let slots = override_num("KEYWARD_ARGON2_CONCURRENCY").unwrap_or(knobs.cores as f64);
    let (cold_rss, warm_rss) = (COLD_RSS_BASE_MIB + argon2_mib * slots, w1[11].max(w[11]));
    println!("targets (reported, not asserted; N = {n})");
    let cold_rss_target = format!("cold storm: peak RSS < {cold_rss:.0} MiB");
    for (what, got, ok) in [
        ("warm C=N: keyward/Redis CPU <= 1", w[6], w[6] <= 1.0),
        ("warm C=N: p99 < 10 ms", w[2], w[2] < 10.0),
        ("warm C=N: non-200 = 0", w[3], w[3] == 0.0),
        ("warm C=1: p50 < 1 ms", w1[1], w1[1] < 1.0),
        ("warm probe: p99 < 20 ms", p[2], p[2] < 20.0),
        ("warm: peak RSS < 100 MiB", warm_rss, warm_rss < 100.0),
        (&cold_rss_target, s[11], s[11] < cold_rss),
    ] {
        println!(
            "  {what:<50} {got:>10.3}  {}",
            if ok { "ok" } else { "MISS" }
        );
    }
    warn_tail(&stack.log);
    Ok(())
}

/// What the clients of [`Stack::drive`] saw, in seconds since they began.
#[derive(Default)]
struct Drive {
    /// When each 200, each `503 busy` and each other non-200 or failure came.
    oks: Vec<f64>,
    busy: Vec<f64>,
    other: Vec<f64>,
    /// When the last key got its first 200.
    all: f64,
}

/// `KEYWARD_BENCH_SCENARIO=restart`: N keys minted on keyward A and validated
/// once there, then A's warm rate from [`Stack::drive`]. A is stopped
/// (SIGTERM) and B started on the same Redis with the same settings (both
/// with `KEYWARD_VERIFY_PEPPER_FILE`); from B's first 200 on /ready, 16
/// clients validate every key on B: how long until all were answered 200,
/// the 503s meanwhile, and when 200s first came at 90% of A's warm rate.
async fn restart(knobs: &Knobs) -> Res<()> {
    let (n, tail) = (knobs.restart_keys, TAIL.as_secs());
    println!("  restart: N={n} keys (KEYWARD_BENCH_RESTART_KEYS), {COLD_CLIENTS} clients");
    let mut stack = Stack::start(knobs, n, true).await?;
    let a = stack.drive(COLD_CLIENTS, TAIL).await?;
    let warm = a.oks.len() as f64 / a.oks.last().copied().unwrap_or(1.0);
    println!("  A warm: {warm:.0} validations/s (each key once, then round-robin for {tail} s)");
    let stopping = Instant::now();
    let pid = stack.keyward.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let stopped = stack
        .keyward
        .child
        .wait()
        .map_err(|e| format!("keyward A: {e}"))?;
    let started = Instant::now();
    stack.keyward = spawn(&knobs.bin, &stack.env, &stack.log, &stack.http).await?;
    let (stop, ready) = (
        (started - stopping).as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    println!(
        "  A stopped ({stopped}) in {stop:.2} s; B answered /ready {ready:.2} s after it started"
    );
    let b = stack.drive(COLD_CLIENTS, TAIL).await?;
    let before = |v: &[f64]| v.iter().filter(|&&t| t <= b.all).count();
    let (busy, other, all) = (before(&b.busy), before(&b.other), b.all);
    println!("restart, B from its /ready:");
    println!(
        "  all {n} keys answered 200 after {all:.2} s ({:.1}/s)",
        n as f64 / all
    );
    println!("  meanwhile {busy} x 503 busy, {other} other non-200 or failed requests");
    let later = b.busy.len() + b.other.len() - busy - other;
    if later > 0 {
        println!("  then {later} non-200 in the {tail} s of warm traffic");
    }
    // The first 200 that ends a second holding 90% of A's warm rate.
    let need = ((warm * 0.9).ceil() as usize).max(1);
    match (need - 1..b.oks.len()).find(|&j| b.oks[j] - b.oks[j + 1 - need] <= 1.0) {
        Some(j) => println!(
            "  throughput back to warm (1 s at >= 90% of A's) after {:.2} s",
            b.oks[j]
        ),
        None => println!("  throughput NOT back to warm within {tail} s after the last key"),
    }
    warn_tail(&stack.log);
    Ok(())
}

impl Stack {
    /// `clients` clients take the keys in turn, each validating its key until
    /// it is answered 200 (after a non-200 it waits the Retry-After keyward
    /// sent); once all were, they go on round-robin for `tail`. Fails when a
    /// minute passes without a 200.
    async fn drive(&self, clients: usize, tail: Duration) -> Res<Drive> {
        let (url, n) = (
            &format!("http://{}/v1/validate-key", self.keyward.addr),
            self.keys.len(),
        );
        let (next, left) = (&AtomicUsize::new(0), &AtomicUsize::new(n));
        let (seen, start) = (&Mutex::new(Drive::default()), Instant::now());
        let lock = || seen.lock().map_err(|_| "a client panicked".to_owned());
        let client = move |_| async move {
            loop {
                let i = next.fetch_add(1, SeqCst);
                while i >= n && left.load(SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if i >= n && start.elapsed().as_secs_f64() > lock()?.all + tail.as_secs_f64() {
                    return Ok::<_, String>(());
                }
                loop {
                    let req = self
                        .http
                        .post(url)
                        .json(&json!({ "api_key": self.keys[i % n] }));
                    let (status, wait, body) = match req.send().await {
                        Ok(r) => {
                            let wait = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok()?.parse().ok());
                            (
                                r.status().as_u16(),
                                wait,
                                r.json::<Value>().await.unwrap_or_default(),
                            )
                        }
                        Err(_) => (0, Some(1), Value::Null),
                    };
                    let t = start.elapsed().as_secs_f64();
                    {
                        let mut seen = lock()?;
                        match status {
                            200 => seen.oks.push(t),
                            503 if body["error"]["code"] == "busy" => seen.busy.push(t),
                            _ => seen.other.push(t),
                        }
                        if status == 200 && i < n && left.fetch_sub(1, SeqCst) == 1 {
                            seen.all = t;
                        }
                        if t - seen.oks.last().copied().unwrap_or(0.0) > 60.0 {
                            return Err(format!(
                                "no 200 for a minute; keyward log:\n{}",
                                log_tail(&self.log)
                            ));
                        }
                    }
                    if status == 200 || i >= n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(wait.unwrap_or(0))).await;
                }
            }
        };
        futures::future::try_join_all((0..clients).map(client)).await?;
        let mut seen = std::mem::take(&mut *lock()?);
        seen.oks.sort_by(f64::total_cmp);
        Ok(seen)
    }
}
