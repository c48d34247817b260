//! The load benchmark: mints keys, warms them, runs the scenarios and prints
//! their figures. README's "Performance" says what each command, row and
//! column means and which `KEYWARD_BENCH_*` variables tune it.
//!
//! benches/load.sh starts Redis and sets keyward's environment for this binary (which, started
//! without it, runs load.sh on itself); measure.sh runs wrk and reads CPU and memory. Targets
//! are printed, never asserted: only a failed setup fails the run.

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use keyward::Config;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
type Res<T> = Result<T, String>;

/// Connections of the cold storm; clients of the restart scenario.
const COLD_CLIENTS: usize = 16;
/// Most never-validated keys minted for the cold storm.
const MAX_COLD_KEYS: usize = 3000;
/// Keyward's peak RSS target in the cold storm, MiB: this + Argon2id memory x slots.
const COLD_RSS_BASE_MIB: f64 = 40.0;
/// How long after the cold storm keyward's resident memory is read.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the restart scenario's clients go on after the last key.
const TAIL: Duration = Duration::from_secs(3);
/// The keys' project: load.sh's Redis is fresh, so no other has its name.
const PROJECT: &str = "load";

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("KEYWARD_BENCH_DIR").is_none() {
        let load_sh = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load.sh");
        let me = std::env::current_exe().unwrap_or_default();
        let status = Command::new("bash").arg(load_sh).arg(me).status().await;
        return ExitCode::from(status.ok().and_then(|s| s.code()).unwrap_or(1) as u8);
    }
    // However `run` ends (done, error, ctrl-c), its keyward is dropped, which
    // stops it; load.sh stops Redis.
    let outcome = tokio::select! {
        r = async {
            let knobs = Knobs::try_parse_from(["load"]).map_err(|e| e.to_string())?;
            // keyward's settings as load.sh passes them on: its defaults, once.
            let config = Config::from_lookup(|var| std::env::var(var).ok());
            run(knobs, config.map_err(|e| e.to_string())?).await
        } => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if let Err(e) = &outcome {
        eprintln!("load: {e}");
    }
    ExitCode::from(u8::from(outcome.is_err()))
}

/// The `KEYWARD_BENCH_*` variables (README's "Performance": `_SECONDS` defaults to 10, 5 for
/// the cold storm), and load.sh's directory for this run's files. No arguments.
#[derive(clap::Parser)]
struct Knobs {
    #[arg(long, env = "KEYWARD_BENCH_SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: Option<u64>,
    #[arg(long, env = "KEYWARD_BENCH_KEYS", default_value_t = 200, value_parser = upto(100_000))]
    keys: usize,
    #[arg(long, env = "KEYWARD_BENCH_CONCURRENCY", default_value_t = 64, value_parser = upto(4096))]
    concurrency: usize,
    #[arg(long, env = "KEYWARD_BENCH_RESTART_KEYS", default_value_t = 1000, value_parser = upto(100_000))]
    restart_keys: usize,
    #[arg(long, env = "KEYWARD_BENCH_SCENARIO", default_value = "all", value_parser = ["all", "warm", "restart"])]
    scenario: String,
    #[arg(long, env = "KEYWARD_BENCH_BASE")]
    base: Option<PathBuf>,
    /// The warm load through Envoy, asking keyward over HTTP (`/v1/auth`,
    /// examples/gateways/envoy.yaml) or gRPC (envoy-grpc.yaml).
    #[arg(long, env = "KEYWARD_BENCH_ENVOY", value_parser = ["http", "grpc"])]
    envoy: Option<String>,
    #[arg(long, env = "KEYWARD_BENCH_DIR")]
    dir: PathBuf,
}

fn upto(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=max)
}

impl Knobs {
    /// The keyward binary: `$KEYWARD_BENCH_BASE/keyward`, or this tree's.
    fn bin(&self) -> PathBuf {
        let base = self.base.as_ref().map(|dir| dir.join("keyward"));
        base.unwrap_or_else(|| env!("CARGO_BIN_EXE_keyward").into())
    }
}

/// A `keyward serve` process, killed on drop.
struct Keyward {
    child: Child,
    addr: String,
    pid: String,
}

/// Starts `bin` on a free port with this process's environment (load.sh's),
/// appending to `dir`/keyward.log; returns once its `/ready` answers 200.
async fn spawn(bin: &Path, dir: &Path, http: &reqwest::Client) -> Res<Keyward> {
    let log = dir.join("keyward.log");
    let mut file = std::fs::File::options();
    let file = file.create(true).append(true).open(&log);
    let file = file.map_err(|e| format!("{}: {e}", log.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let addr = port.map_err(|e| format!("no free port: {e}"))?.to_string();
    let child = Command::new(bin)
        .arg("serve")
        .env("KEYWARD_LISTEN", &addr)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id().unwrap_or_default().to_string();
    let mut keyward = Keyward { child, addr, pid };
    let ready = format!("http://{}/ready", keyward.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let answer = http.get(&ready).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return Ok(keyward);
        }
        if let Some(status) = keyward.child.try_wait().ok().flatten() {
            return Err(format!("keyward exited ({status})"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("keyward: /ready not 200 after 20 s".into())
}

/// A keyward and its keys (one a line in `warm_file` too).
struct Stack {
    keyward: Keyward,
    /// Where the load goes: keyward, or the Envoy in front of it.
    target: String,
    /// `KEYWARD_BENCH_ENVOY`'s Envoy and the app behind it, while they run.
    envoy: Option<(Child, tokio::task::JoinHandle<()>)>,
    http: reqwest::Client,
    admin_token: String,
    /// The audit streams, for measure.sh.
    streams: String,
    /// Concurrent requests when minting or warming: twice the Argon2id slots.
    clients: usize,
    keys: Vec<String>,
    warm_file: PathBuf,
    mint_rate: f64,
}

impl Stack {
    /// Starts keyward, mints `keys` keys and validates each once.
    async fn start(knobs: &Knobs, config: &Config, keys: usize) -> Res<Self> {
        let http = reqwest::Client::builder().no_proxy();
        let http = http.timeout(Duration::from_secs(60)).build();
        let http = http.map_err(|e| e.to_string())?;
        let token = config.admin_token.as_ref().map(ExposeSecret::expose_secret);
        let keyward = spawn(&knobs.bin(), &knobs.dir, &http).await?;
        let mut stack = Stack {
            target: keyward.addr.clone(),
            envoy: None,
            keyward,
            http,
            admin_token: token.unwrap_or_default().into(),
            streams: keyward::store::AuditStreams::new(
                config.audit_layout,
                &config.client_name,
                config.audit_shards,
            )
            .keylookup_all()
            .join(" "),
            clients: 2 * config.argon2_concurrency,
            keys: Vec::new(),
            warm_file: knobs.dir.join("warm.keys"),
            mint_rate: 0.0,
        };
        let body = json!({ "project_id": PROJECT, "label": "load", "owner": "bench" });
        stack.admin_post("/v1/admin/projects", &body).await?;
        let minting = Instant::now();
        stack.keys = stack.mint(keys, &stack.warm_file).await?;
        let (mint_secs, warming) = (minting.elapsed().as_secs_f64(), Instant::now());
        let warm_up = stack.drive(stack.clients, Duration::ZERO).await?;
        let (pid, addr) = (&stack.keyward.pid, &stack.keyward.addr);
        let warm_secs = warming.elapsed().as_secs_f64();
        let retried = warm_up.busy.len() + warm_up.other.len();
        println!("  keyward pid {pid} on {addr}; minted {keys} keys in {mint_secs:.1} s, validated each once in {warm_secs:.1} s ({retried} non-200 retried)");
        stack.mint_rate = keys as f64 / mint_secs;
        Ok(stack)
    }

    /// Mints `n` keys (10^8/min, plus `KEYWARD_BENCH_PLAN`'s fields: a usage plan); writes them to `file`.
    async fn mint(&self, n: usize, file: &Path) -> Res<Vec<String>> {
        let mut body = json!({ "project_id": PROJECT, "owner": "load", "server_name": "bench",
            "rate_limit_per_minute": 100_000_000u64 });
        let plan = std::env::var("KEYWARD_BENCH_PLAN").unwrap_or_else(|_| "{}".into());
        let plan: Value =
            serde_json::from_str(&plan).map_err(|e| format!("KEYWARD_BENCH_PLAN: {e}"))?;
        if let (Some(b), Some(p)) = (body.as_object_mut(), plan.as_object()) {
            b.extend(p.clone());
        }
        let mint = |_| async {
            let minted = self.admin_post("/v1/mint-key", &body).await?;
            Ok::<_, String>(minted["api_key"].as_str().ok_or("no api_key")?.to_owned())
        };
        let keys = futures::stream::iter(0..n).map(mint);
        let keys: Vec<String> = keys.buffer_unordered(self.clients).try_collect().await?;
        let written = std::fs::write(file, keys.join("\n") + "\n");
        written.map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(keys)
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Res<Value> {
        let fail = |e: &dyn std::fmt::Display| format!("POST {path}: {e}");
        let url = format!("http://{}{path}", self.keyward.addr);
        let req = self.http.post(url).bearer_auth(&self.admin_token);
        let resp = req.json(body).send().await.map_err(|e| fail(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(&e))?;
        if status != 201 {
            return Err(fail(&format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| fail(&e))
    }
}

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

/// What benches/measure.sh prints last: each run's figures; CPU seconds of
/// keyward, Redis (all nodes), wrk and the rest of the machine; wall seconds;
/// keyward's peak RSS.
#[derive(serde::Deserialize)]
struct Measured {
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
        let mut cmd = Command::new("bash");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/measure.sh"));
        cmd.env("KEYWARD_BENCH_STREAMS", &self.streams);
        cmd.args([&self.target, &self.keyward.pid]);
        for (mode, keys, clients, secs) in loads {
            cmd.arg(format!("{mode} {} {clients} {secs}", keys.display()));
        }
        let out = cmd.stderr(Stdio::inherit()).output().await;
        let out = out.map_err(|e| format!("measure.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (nodes, json): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with(' '));
        let m = json.last().filter(|_| out.status.success());
        let m = m.and_then(|last| serde_json::from_str::<Measured>(last).ok());
        let mut m = m.ok_or_else(|| format!("measure.sh ({}): {text}", out.status))?;
        m.nodes = nodes.into_iter().map(str::to_owned).collect();
        Ok(m)
    }

    /// Warm load on `clients` connections; a cluster's nodes after warm C=N.
    async fn warm(&self, knobs: &Knobs, clients: usize, auth: bool) -> Res<[f64; 12]> {
        let mode = if auth { "auth" } else { "validate" };
        let secs = knobs.seconds.unwrap_or(10);
        let load = (mode, self.warm_file.as_path(), clients, secs);
        let m = self.measure(&[load]).await?;
        let name = match &knobs.envoy {
            Some(via) => format!("warm C={clients} Envoy ext_authz {via}"),
            None => format!("warm C={clients}{}", if auth { " /v1/auth" } else { "" }),
        };
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
    let cell = |(v, decimals): (&f64, usize)| match v.is_nan() {
        true => format!("{:>8}", "?"),
        false => format!("{v:>8.decimals$}"),
    };
    let cells: Vec<String> = v.iter().zip(DECIMALS).map(cell).collect();
    println!("{name:<32} {clients:>3} {}", cells.join(" "));
    if w.socket_errors > 0 {
        let errors = w.socket_errors;
        println!("  ({name}: {errors} socket errors or timeouts, counted as non-200)");
    }
    v
}

/// Resident memory of process `pid` in MiB, from `/proc/<pid>/status`.
fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: f64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn header() {
    let titles = COLS.map(|title| format!("{title:>8}"));
    println!("{:<32} {:>3} {}", "scenario", "C", titles.join(" "));
}

async fn run(knobs: Knobs, config: Config) -> Res<()> {
    if knobs.scenario == "restart" {
        return restart(&knobs, &config).await;
    }
    let (n, k) = (knobs.concurrency, knobs.keys);
    let (warm_secs, cold_secs) = (knobs.seconds.unwrap_or(10), knobs.seconds.unwrap_or(5));
    println!("  K={k} warm keys; every scenario {warm_secs} s (cold storm {cold_secs} s)");
    println!("  kw|rd µs/v: CPU of keyward|Redis per answered validation; kw/rd: their ratio;");
    println!("  kw|rd|wrk|other %: CPU in % of one core (other: the rest of the machine)");
    let mut stack = Stack::start(&knobs, &config, k).await?;
    if let Some(via) = &knobs.envoy {
        stack.behind_envoy(&knobs.dir, via).await?;
    }
    if knobs.scenario == "warm" {
        println!();
        header();
        return stack.warm(&knobs, n, stack.envoy.is_some()).await.map(drop);
    }

    // Enough never-validated keys to keep Argon2id busy for the whole storm,
    // at about the rate minting ran (same cost), with a margin.
    let cold_n = (stack.mint_rate * cold_secs as f64 * 1.3).ceil() as usize;
    let cold_n = (cold_n + 2 * COLD_CLIENTS).min(MAX_COLD_KEYS);
    let (minting, cold_file) = (Instant::now(), knobs.dir.join("cold.keys"));
    stack.mint(cold_n, &cold_file).await?;
    let minting = minting.elapsed().as_secs_f64();
    println!("  minted {cold_n} cold keys in {minting:.1} s\n");

    header();
    let w1 = stack.warm(&knobs, 1, false).await?;
    let w = stack.warm(&knobs, n, false).await?;
    stack.warm(&knobs, n, true).await?;
    let storm = ("once", cold_file.as_path(), COLD_CLIENTS, cold_secs);
    let probe = ("validate", stack.warm_file.as_path(), 1, cold_secs);
    let m = stack.measure(&[storm, probe]).await?;
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
    // What keyward still holds once the storm is over: Argon2id's blocks are
    // unmapped after each run (hash.rs), not left in an allocator's arenas
    // (hundreds of MiB that were never returned, before).
    tokio::time::sleep(SETTLE).await;
    let settled = rss_mib(&stack.keyward.pid).unwrap_or(f64::NAN);
    println!("  {SETTLE:?} after the cold storm: keyward RSS {settled:.1} MiB");
    let argon2_mib = config.argon2.memory_kib as f64 / 1024.0;
    let cold_rss = COLD_RSS_BASE_MIB + argon2_mib * config.argon2_concurrency as f64;
    let warm_rss = w1[11].max(w[11]);
    println!("targets (reported, not asserted; N = {n})");
    let cold_rss_target = format!("cold storm: peak RSS < {cold_rss:.0} MiB");
    let settled_target = format!("after the storm: RSS < {cold_rss:.0} MiB");
    for (what, got, ok) in [
        ("warm C=N: keyward/Redis CPU <= 1", w[6], w[6] <= 1.0),
        ("warm C=N: p99 < 10 ms", w[2], w[2] < 10.0),
        ("warm C=N: non-200 = 0", w[3], w[3] == 0.0),
        ("warm C=1: p50 < 1 ms", w1[1], w1[1] < 1.0),
        ("warm probe: p99 < 20 ms", p[2], p[2] < 20.0),
        ("warm: peak RSS < 100 MiB", warm_rss, warm_rss < 100.0),
        (&cold_rss_target, s[11], s[11] < cold_rss),
        (&settled_target, settled, settled < cold_rss),
    ] {
        let verdict = if ok { "ok" } else { "MISS" };
        println!("  {what:<50} {got:>10.3}  {verdict}");
    }
    Ok(())
}

/// `KEYWARD_BENCH_SCENARIO=restart`: N keys minted on keyward A and validated
/// once there, then A's warm rate from [`Stack::drive`]. A is stopped
/// (SIGTERM) and B started on the same Redis with the same settings (both
/// with the `KEYWARD_VERIFY_PEPPER_FILE` load.sh sets for this scenario);
/// from B's first 200 on /ready, 16 clients validate every key on B: how long
/// until all were answered 200, the 503s meanwhile, and when 200s first came
/// at 90% of A's warm rate.
async fn restart(knobs: &Knobs, config: &Config) -> Res<()> {
    let (n, tail) = (knobs.restart_keys, TAIL.as_secs());
    println!("  restart: N={n} keys (KEYWARD_BENCH_RESTART_KEYS), {COLD_CLIENTS} clients");
    let mut stack = Stack::start(knobs, config, n).await?;
    let a = stack.drive(COLD_CLIENTS, TAIL).await?;
    let warm = a.oks.len() as f64 / a.oks.last().copied().unwrap_or(1.0);
    println!("  A warm: {warm:.0} validations/s (each key once, then round-robin for {tail} s)");
    let stopping = Instant::now();
    let pid = &stack.keyward.pid;
    let _ = Command::new("kill").args(["-TERM", pid]).status().await;
    let stopped = stack.keyward.child.wait().await;
    let stopped = stopped.map_err(|e| format!("keyward A: {e}"))?;
    let started = Instant::now();
    stack.keyward = spawn(&knobs.bin(), &knobs.dir, &stack.http).await?;
    let (stop, ready) = (started - stopping, started.elapsed());
    let (stop, ready) = (stop.as_secs_f64(), ready.as_secs_f64());
    println!(
        "  A stopped ({stopped}) in {stop:.2} s; B answered /ready {ready:.2} s after it started"
    );
    let b = stack.drive(COLD_CLIENTS, TAIL).await?;
    let before = |v: &[f64]| v.iter().filter(|&&t| t <= b.all).count();
    let (busy, other, all) = (before(&b.busy), before(&b.other), b.all);
    println!("restart, B from its /ready:");
    let rate = n as f64 / all;
    println!("  all {n} keys answered 200 after {all:.2} s ({rate:.1}/s)");
    println!("  meanwhile {busy} x 503 busy, {other} other non-200 or failed requests");
    let later = b.busy.len() + b.other.len() - busy - other;
    if later > 0 {
        println!("  then {later} non-200 in the {tail} s of warm traffic");
    }
    // The first 200 that ends a second holding 90% of A's warm rate.
    let need = ((warm * 0.9).ceil() as usize).max(1);
    let back = (need - 1..b.oks.len()).find(|&j| b.oks[j] - b.oks[j + 1 - need] <= 1.0);
    match back.map(|j| b.oks[j]) {
        Some(t) => println!("  throughput back to warm (1 s at >= 90% of A's) after {t:.2} s"),
        None => println!("  throughput NOT back to warm within {tail} s after the last key"),
    }
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

impl Stack {
    /// `clients` clients take the keys in turn, each validating its key until
    /// it is answered 200 (after a non-200 it waits the Retry-After keyward
    /// sent); once all were, they go on round-robin for `tail`. Fails when a
    /// minute passes without a 200.
    async fn drive(&self, clients: usize, tail: Duration) -> Res<Drive> {
        let n = self.keys.len();
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
                // One of the keys until it is answered 200; past them, once.
                loop {
                    let (status, wait, busy) = self.validate(&self.keys[i % n]).await;
                    let t = start.elapsed().as_secs_f64();
                    {
                        let mut seen = lock()?;
                        let times = match (status, busy) {
                            (200, _) => &mut seen.oks,
                            (_, true) => &mut seen.busy,
                            _ => &mut seen.other,
                        };
                        times.push(t);
                        if status == 200 && i < n && left.fetch_sub(1, SeqCst) == 1 {
                            seen.all = t;
                        }
                        if t - seen.oks.last().copied().unwrap_or(0.0) > 60.0 {
                            return Err("no 200 for a minute".to_owned());
                        }
                    }
                    if status == 200 || i >= n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        };
        futures::future::try_join_all((0..clients).map(client)).await?;
        let mut seen = std::mem::take(&mut *lock()?);
        seen.oks.sort_by(f64::total_cmp);
        Ok(seen)
    }

    /// One `POST /v1/validate-key`: its status (0 for no answer), the seconds
    /// its Retry-After asks for, and whether it was `503 busy`.
    async fn validate(&self, key: &str) -> (u16, u64, bool) {
        let url = format!("http://{}/v1/validate-key", self.keyward.addr);
        let request = self.http.post(url).json(&json!({ "api_key": key }));
        let Ok(answer) = request.send().await else {
            return (0, 1, false);
        };
        let wait = answer.headers().get("retry-after");
        let wait = wait.and_then(|v| v.to_str().ok()?.parse().ok());
        let status = answer.status().as_u16();
        let body = answer.json::<Value>().await.unwrap_or_default();
        (status, wait.unwrap_or(0), body["error"]["code"] == "busy")
    }
}

impl Stack {
    /// `KEYWARD_BENCH_ENVOY`: Envoy from the example for `via`, its ports
    /// changed (and its access log left out: the HTTP example has none), in
    /// front of a bare app; the load then goes to Envoy (load.lua's `auth`
    /// mode: a GET with the key as bearer token, which reaches the app).
    async fn behind_envoy(&mut self, dir: &Path, via: &str) -> Res<()> {
        let name = if via == "grpc" {
            "envoy-grpc.yaml"
        } else {
            "envoy.yaml"
        };
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/gateways")
            .join(name);
        let text = std::fs::read_to_string(&example).map_err(|e| format!("{name}: {e}"))?;
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let app = app.map_err(|e| format!("app: {e}"))?;
        let app_port = app.local_addr().map_err(|e| e.to_string())?.port();
        let router = axum::Router::new().fallback(|| async { "ok" });
        let app = tokio::spawn(async move { drop(axum::serve(app, router).await) });
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let port = free.map_err(|e| format!("no free port: {e}"))?.port();
        let keyward_port = self.keyward.addr.rsplit(':').next().unwrap_or_default();
        let mut text = without_access_log(&text);
        for (from, to) in [
            ("8000", port.to_string()),
            ("8080", keyward_port.into()),
            ("9000", app_port.to_string()),
        ] {
            text = text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
            text = text.replace(&format!("port_value: {from}"), &format!("port_value: {to}"));
        }
        let config = dir.join(name);
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let install = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateways/install.sh");
        let out = Command::new("bash")
            .args([install, "envoy-path"])
            .output()
            .await;
        let out = out.map_err(|e| format!("install.sh: {e}"))?;
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(|e| e.to_string())?;
        let envoy = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start envoy ({bin}): {e}"))?;
        self.envoy = Some((envoy, app));
        self.target = format!("127.0.0.1:{port}");
        // Up when a valid key reaches the app through it.
        let url = format!("http://{}/", self.target);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let r = self.http.get(&url).bearer_auth(&self.keys[0]).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                println!("  Envoy (ext_authz over {via}, {name}) on {}", self.target);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "Envoy from {name}: no 200 after 30 s (see envoy.log)"
        ))
    }
}

/// The example without its `access_log` block (the lines under it, up to
/// the next key of the same indentation).
fn without_access_log(text: &str) -> String {
    let mut skipping: Option<usize> = None;
    let mut out = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            let trimmed = line.trim_start();
            if indent > at || trimmed.starts_with('-') && indent == at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == "access_log:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
