//! Load benchmark: a real Redis Stack (redis/local.sh: Debian's redis-server,
//! RedisJSON, the ACL template), the release `keyward serve` with its default
//! configuration, keys minted through the admin API, and HTTP load from `wrk`
//! (script: benches/load.lua) over 127.0.0.1 keep-alive connections.
//!
//! `make load` (= `cargo bench --locked --bench load`) runs, each for
//! `KEYWARD_BENCH_SECONDS` (default 10 s, the cold storm 5 s):
//!
//! - `warm C=1`, `warm C=N`: `POST /v1/validate-key`, round-robin over K keys
//!   that were each validated once beforehand (no Argon2id any more).
//! - `warm C=N /v1/auth`: the same keys through forward auth (`GET /v1/auth`,
//!   bearer token).
//! - `cold storm`: 16 connections validating never-seen keys, each once (one
//!   Argon2id verification each), while `warm probe`, one connection, keeps
//!   validating warm keys.
//!
//! Each row: requests/s, p50/p99 (wrk `--latency`), non-200 answers (wrk's
//! "Non-2xx or 3xx responses" plus socket errors), and the CPU (user + system,
//! from /proc/<pid>/stat before and after) that keyward and Redis spent per
//! answered validation, their ratio, CPU use in % of one core (of keyward,
//! Redis, wrk, and everything else on the machine), and keyward's peak RSS.
//!
//! `make load-compare BASE=<rev>` (benches/compare.sh) sets
//! `KEYWARD_BENCH_BASE` to a directory holding `<rev>`'s `keyward` and a
//! `redis/` with its ACL template. Then only `warm C=N` runs, against both
//! binaries, each on a Redis of its own set up the same way, alternating
//! (base first in odd rounds, new first in even ones) for
//! `KEYWARD_BENCH_ROUNDS` rounds (default 3); medians and ratios new/base
//! follow. `KEYWARD_BENCH_PROFILE=1` (`make profile`) runs only `warm C=N`,
//! under `perf record -g`, and prints the top of `perf report`.
//!
//! `KEYWARD_BENCH_CLUSTER=1` runs the same scenarios against a Redis Cluster
//! (`redis/local.sh cluster-start`: 3 masters, 1 replica each) instead of one
//! Redis: the Redis columns then add up all six nodes, and after `warm C=N`
//! one line per node gives its role, which audit stream(s) it holds, its
//! CPU and the commands it ran per validation, then the validation rate at
//! which the busiest master would reach a whole core.
//!
//! Knobs: `KEYWARD_BENCH_SECONDS` (whole seconds), `KEYWARD_BENCH_KEYS` (K,
//! default 200), `KEYWARD_BENCH_CONCURRENCY` (N, default 64). Other
//! `KEYWARD_*` variables reach keyward, and the header lists them (e.g.
//! `KEYWARD_ARGON2_MEMORY_KIB=1024` for smoke runs: warm validations never run
//! Argon2id; minting, the warm-up and the cold storm do). Targets are printed
//! next to the figures, never asserted: the exit code is non-zero only when
//! setup fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;

type Res<T> = Result<T, String>;

/// Connections driving the cold storm.
const COLD_CLIENTS: usize = 16;
/// Most never-validated keys minted for the cold storm.
const MAX_COLD_KEYS: usize = 3000;

/// Keyward's peak RSS target in the cold storm, MiB: this + Argon2id memory x slots.
const COLD_RSS_BASE_MIB: f64 = 40.0;

fn main() -> ExitCode {
    let outcome = Knobs::from_env().and_then(|knobs| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?;
        // However `run` ends (done, error, ctrl-c), its stacks are dropped,
        // which stops their keyward and Redis.
        let r = rt.block_on(async {
            tokio::select! {
                r = run(knobs) => r,
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
            }
        });
        rt.shutdown_timeout(Duration::from_secs(2));
        r
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

// --- knobs -----------------------------------------------------------------------

struct Knobs {
    cores: usize,
    warm_secs: u64,
    cold_secs: u64,
    keys: usize,
    concurrency: usize,
    rounds: usize,
    profile: bool,
    /// `KEYWARD_BENCH_CLUSTER=1`: a Redis Cluster instead of one Redis.
    cluster: bool,
    /// `KEYWARD_BENCH_BASE`: compare mode.
    base: Option<PathBuf>,
}

fn env_num<T: std::str::FromStr>(var: &str, default: T, ok: impl Fn(&T) -> bool) -> Res<T> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse() {
            Ok(n) if ok(&n) => Ok(n),
            _ => Err(format!("{var}: {v:?} is not a whole number in range")),
        },
        _ => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> Res<Self> {
        let secs = env_num("KEYWARD_BENCH_SECONDS", 0u64, |s| (1..=600).contains(s))?;
        Ok(Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            warm_secs: if secs == 0 { 10 } else { secs },
            cold_secs: if secs == 0 { 5 } else { secs },
            keys: env_num("KEYWARD_BENCH_KEYS", 200, |k| (1..=100_000).contains(k))?,
            concurrency: env_num("KEYWARD_BENCH_CONCURRENCY", 64, |c| (1..=4096).contains(c))?,
            rounds: env_num("KEYWARD_BENCH_ROUNDS", 3, |r| (1..=100).contains(r))?,
            profile: std::env::var("KEYWARD_BENCH_PROFILE").is_ok_and(|v| v == "1"),
            cluster: std::env::var("KEYWARD_BENCH_CLUSTER").is_ok_and(|v| v == "1"),
            base: std::env::var_os("KEYWARD_BENCH_BASE").map(PathBuf::from),
        })
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Inherited variables that must not reach keyward: the ones the bench sets,
/// `_FILE` variants of secrets, the bench's knobs.
fn withheld(var: &str) -> bool {
    const OWN: [&str; 5] = [
        "KEYWARD_LISTEN",
        "KEYWARD_REDIS_URL",
        "KEYWARD_ADMIN_REDIS_URL",
        "KEYWARD_ADMIN_TOKEN",
        "KEYWARD_LOG",
    ];
    OWN.contains(&var) || var.ends_with("_FILE") || var.starts_with("KEYWARD_BENCH_")
}

/// The other `KEYWARD_*` variables: keyward inherits them.
fn overrides() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KEYWARD_") && !withheld(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars
}

fn override_num(var: &str) -> Option<f64> {
    std::env::var(var).ok()?.trim().parse().ok()
}

// --- processes -------------------------------------------------------------------

fn random_string(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn local_sh(script: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output();
    let out = out.map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} {}: {}", script.display(), args[0], err.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A Redis Stack in a temp dir of its own, stopped (and the dir removed) on
/// drop: one Redis, or a cluster of 3 masters and 3 replicas.
struct Redis {
    /// The local.sh that rendered the ACL file from the `users.acl` beside it.
    script: PathBuf,
    dir: PathBuf,
    /// Every node: (port, pid).
    nodes: Vec<(u16, u32)>,
    /// `host:port` of one Redis, or a cluster's seed nodes for `redis-cluster://`.
    addr: String,
    cluster: bool,
}

impl Redis {
    fn start(script: &Path, validator_pw: &str, manager_pw: &str, cluster: bool) -> Res<Self> {
        let dir = std::env::temp_dir().join(format!("keyward-load-{}", random_string(10)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut redis = Redis {
            script: script.into(),
            dir,
            nodes: Vec::new(),
            addr: String::new(),
            cluster,
        };
        let dir = redis.dir.to_string_lossy().into_owned();
        let acl = format!("{dir}/users.acl");
        local_sh(script, &["acl", validator_pw, manager_pw, &acl])?;
        if !cluster {
            let port = free_port()?;
            let pid = local_sh(script, &["start", &port.to_string(), &dir, &acl])?;
            let pid = pid.parse().map_err(|_| format!("redis pid {pid:?}"))?;
            redis.nodes.push((port, pid));
            redis.addr = format!("127.0.0.1:{port}");
            return Ok(redis);
        }
        // Six ports and their cluster bus ports (+10000) must be free:
        // 10000..32005, below Linux's ephemeral ports (32768 and up).
        let nodes = format!("{dir}/cluster");
        let mut base = 0;
        for attempt in 1..=3 {
            base = free_port()? % 12_000 + 10_000;
            match local_sh(script, &["cluster-start", &base.to_string(), &nodes, &acl]) {
                Ok(seeds) => {
                    redis.addr = seeds;
                    break;
                }
                Err(e) if attempt == 3 => return Err(e),
                Err(_) => {}
            }
        }
        for port in base..base + 6 {
            let pid = std::fs::read_to_string(format!("{nodes}/{port}/redis.pid"));
            let pid = pid.map_err(|e| format!("node {port}: {e}"))?;
            let pid = pid
                .trim()
                .parse()
                .map_err(|_| format!("redis pid {pid:?}"))?;
            redis.nodes.push((port, pid));
        }
        Ok(redis)
    }

    fn url(&self, user: &str, password: &str) -> String {
        match self.cluster {
            true => format!("redis-cluster://{user}:{password}@{}", self.addr),
            false => format!("redis://{user}:{password}@{}", self.addr),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|&(_, pid)| pid).collect()
    }

    /// `redis-cli` as the cluster's admin user on one node.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let password = std::fs::read_to_string(self.dir.join("cluster/admin.pw"));
        let out = Command::new("redis-cli")
            .args(["--no-auth-warning", "--user", "cluster-admin", "-p"])
            .arg(port.to_string())
            .args(args)
            .env("REDISCLI_AUTH", password.unwrap_or_default().trim())
            .stdin(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// A cluster's nodes: port, "master" or "replica", and which audit
    /// streams (of `audit_shards`) a master holds.
    fn roles(&self, audit_shards: usize) -> Vec<(u16, &'static str, String)> {
        let Some(&(first, _)) = self.nodes.first() else {
            return Vec::new();
        };
        let text = self.cli(first, &["cluster", "nodes"]);
        let slots: Vec<(String, u16)> = keyward::store::names::audit_keylookup_all(audit_shards)
            .into_iter()
            .filter_map(|stream| {
                let slot = self.cli(first, &["cluster", "keyslot", &stream]);
                Some((stream, slot.trim().parse().ok()?))
            })
            .collect();
        let mut roles = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f
                .get(1)
                .and_then(|a| a.split([':', '@']).nth(1)?.parse().ok());
            let (Some(port), Some(flags)) = (port, f.get(2)) else {
                continue;
            };
            let owns = |slot: u16| {
                f.iter().skip(8).any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse().is_ok_and(|a: u16| a <= slot)
                            && b.parse().is_ok_and(|b: u16| slot <= b)
                    }
                    None => r.parse() == Ok(slot),
                })
            };
            let held: Vec<&str> = slots
                .iter()
                .filter(|(_, slot)| owns(*slot))
                .map(|(s, _)| s.as_str())
                .collect();
            let role = if flags.contains("master") {
                "master"
            } else {
                "replica"
            };
            roles.push((port, role, held.join(" ")));
        }
        roles.sort();
        roles
    }

    /// `total_commands_processed` of every node, in `nodes` order.
    fn commands(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|&(port, _)| {
                let info = self.cli(port, &["info", "stats"]);
                info.lines()
                    .find_map(|l| l.strip_prefix("total_commands_processed:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let stopped = match self.cluster {
            true => local_sh(&self.script, &["cluster-stop", &format!("{dir}/cluster")]),
            false => local_sh(&self.script, &["stop", &dir]),
        };
        if let Err(e) = stopped {
            eprintln!("load: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One keyward binary (killed on drop) on a Redis of its own (stopped after
/// it), with K warm keys, one a line, in `warm_file`.
struct Stack {
    name: String,
    keyward: Child,
    addr: String,
    redis: Redis,
    http: reqwest::Client,
    token: String,
    project: String,
    /// Concurrent admin requests when minting: twice the Argon2id slots.
    clients: usize,
    warm_file: PathBuf,
    mint_rate: f64,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.keyward.kill();
        let _ = self.keyward.wait();
    }
}

impl Stack {
    /// Starts Redis (ACL from the `users.acl` beside `local_sh`) and `bin`,
    /// mints K keys and validates each once.
    async fn start(name: &str, bin: &Path, local_sh: &Path, knobs: &Knobs) -> Res<Self> {
        let (vpw, mpw, token) = (random_string(24), random_string(24), random_string(32));
        let redis = Redis::start(local_sh, &vpw, &mpw, knobs.cluster)?;
        let url = |user: &str, pw: &str| redis.url(user, pw);
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log =
            std::fs::File::create(redis.dir.join("keyward.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(bin);
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYWARD_")) {
            if withheld(&var) {
                command.env_remove(var);
            }
        }
        let keyward = command
            .arg("serve")
            .env("KEYWARD_LISTEN", &addr)
            .env("KEYWARD_REDIS_URL", url("validator", &vpw))
            .env("KEYWARD_ADMIN_REDIS_URL", url("manager", &mpw))
            .env("KEYWARD_ADMIN_TOKEN", &token)
            .env("KEYWARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let slots = override_num("KEYWARD_ARGON2_CONCURRENCY").map_or(knobs.cores, |n| n as usize);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build();
        let mut stack = Stack {
            name: name.into(),
            keyward,
            addr,
            warm_file: redis.dir.join("warm.keys"),
            redis,
            http: http.map_err(|e| e.to_string())?,
            token,
            project: format!("load{}", random_string(8)),
            clients: 2 * slots.max(1),
            mint_rate: 0.0,
        };
        stack.wait_healthy().await?;
        let body = json!({ "project_id": stack.project, "label": "load", "owner": "bench" });
        stack.admin_post("/v1/admin/projects", body).await?;
        let minting = Instant::now();
        let keys = stack.mint(knobs.keys).await?;
        let mint_secs = minting.elapsed().as_secs_f64();
        stack.mint_rate = keys.len() as f64 / mint_secs;
        let warming = Instant::now();
        stack.validate_each(&keys).await?;
        write_keys(&stack.warm_file, &keys)?;
        println!(
            "  {}: keyward pid {} on {}, redis pids {:?} on {}; minted {} keys in {mint_secs:.1} s, validated each once in {:.1} s",
            stack.name,
            stack.keyward.id(),
            stack.addr,
            stack.redis.pids(),
            stack.redis.addr,
            keys.len(),
            warming.elapsed().as_secs_f64(),
        );
        Ok(stack)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.redis.dir.join("keyward.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_healthy(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.keyward.try_wait() {
                let tail = self.log_tail(20);
                return Err(format!(
                    "keyward exited during start-up ({status}):\n{tail}"
                ));
            }
            let health = self
                .http
                .get(format!("http://{}/health", self.addr))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
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

    async fn admin_post(&self, path: &str, body: serde_json::Value) -> Res<serde_json::Value> {
        let fail = |e: &dyn std::fmt::Display| format!("POST {path}: {e}");
        let req = self.http.post(format!("http://{}{path}", self.addr));
        let resp = req.bearer_auth(&self.token).json(&body).send().await;
        let resp = resp.map_err(|e| fail(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(&e))?;
        if status != reqwest::StatusCode::CREATED {
            return Err(fail(&format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| fail(&e))
    }

    /// Mints `n` keys (limit 10^8/min), `clients` at a time.
    async fn mint(&self, n: usize) -> Res<Vec<String>> {
        futures::stream::iter(0..n)
            .map(|_| async {
                let body = json!({
                    "project_id": self.project,
                    "owner": "load",
                    "server_name": "bench",
                    "rate_limit_per_minute": 100_000_000u64,
                });
                let minted = self.admin_post("/v1/mint-key", body).await?;
                let key = minted["api_key"]
                    .as_str()
                    .ok_or("mint answer without api_key")?;
                Ok::<_, String>(key.to_owned())
            })
            .buffer_unordered(self.clients)
            .try_collect()
            .await
    }

    /// Validates each key once (its one Argon2id run); all must answer 200.
    async fn validate_each(&self, keys: &[String]) -> Res<()> {
        let url = format!("http://{}/v1/validate-key", self.addr);
        let statuses: Vec<u16> = futures::stream::iter(keys)
            .map(|key| {
                let req = self.http.post(&url).json(&json!({ "api_key": key }));
                async move { req.send().await.map(|r| r.status().as_u16()) }
            })
            .buffer_unordered(self.clients)
            .try_collect()
            .await
            .map_err(|e| format!("warm-up: {e}"))?;
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        if ok != keys.len() {
            let (n, tail) = (keys.len(), self.log_tail(20));
            return Err(format!(
                "warm-up: {ok} of {n} keys validated; keyward log:\n{tail}"
            ));
        }
        Ok(())
    }

    /// Runs one wrk per load, all at once, and measures CPU and peak RSS.
    async fn measure(&self, loads: &[(&str, &Path, usize, u64)], cores: usize) -> Res<Measured> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (kw, redis) = (self.keyward.id(), self.redis.pids());
        let node_ticks = |pids: &[u32]| -> Vec<u64> {
            pids.iter()
                .map(|pid| stat_ticks(&pid.to_string(), [14, 15]))
                .collect()
        };
        let commands_before = self.redis.cluster.then(|| self.redis.commands());
        let nodes_before = node_ticks(&redis);
        // Resets VmHWM, so that it is this scenario's peak (Linux >= 4.0).
        let hwm_reset = std::fs::write(format!("/proc/{kw}/clear_refs"), "5").is_ok();
        let cmds: Vec<Command> = loads
            .iter()
            .map(|&(mode, keys, c, secs)| wrk(&self.addr, mode, keys, c, secs, cores))
            .collect();
        let before = Ticks::now(kw, &redis);
        let outputs = tokio::task::spawn_blocking(move || {
            let children: Vec<_> = cmds.into_iter().map(|mut c| c.spawn()).collect();
            let outputs = children.into_iter().map(|c| c?.wait_with_output());
            outputs.collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("wrk: {e}"))?;
        let cpu = Ticks::now(kw, &redis).since(&before);
        let hz = clock_ticks_per_sec();
        let commands = commands_before.map(|before| {
            let after = self.redis.commands();
            after
                .iter()
                .zip(before)
                .map(|(a, b)| a.saturating_sub(b))
                .collect()
        });
        let nodes = node_ticks(&redis)
            .iter()
            .zip(&nodes_before)
            .map(|(a, b)| a.saturating_sub(*b) as f64 / hz)
            .collect();
        let mut runs = Vec::new();
        for out in outputs {
            let out = out.map_err(|e| format!("cannot run wrk: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!("wrk failed ({}): {text}{err}", out.status));
            }
            runs.push(Wrk::parse(&text)?);
        }
        let rss_mib = proc_status_kib(kw, "VmHWM").filter(|_| hwm_reset);
        let rss_mib = rss_mib.map_or(f64::NAN, |k| k as f64 / 1024.0);
        Ok(Measured {
            runs,
            cpu,
            rss_mib,
            nodes,
            commands,
        })
    }

    /// A cluster's work per node during `m` (`validations` answered): role,
    /// audit streams held, CPU, commands per validation; then the rate at
    /// which the busiest master would use a whole core.
    fn node_notes(&self, m: &Measured, validations: u64) -> Vec<String> {
        let Some(commands) = &m.commands else {
            return Vec::new();
        };
        let shards = override_num("KEYWARD_AUDIT_SHARDS").map_or(1, |n| n as usize);
        let roles = self.redis.roles(shards);
        let (wall, per) = (m.cpu.1, validations.max(1) as f64);
        let mut notes = Vec::new();
        let mut busiest: Option<(f64, u16)> = None;
        for (i, &(port, _)) in self.redis.nodes.iter().enumerate() {
            let (role, held) = roles
                .iter()
                .find(|(p, _, _)| *p == port)
                .map_or(("?", ""), |(_, r, h)| (*r, h.as_str()));
            let share = m.nodes[i] / wall;
            if role == "master" && busiest.map_or(true, |(b, _)| share > b) {
                busiest = Some((share, port));
            }
            notes.push(format!(
                "    node {port} {role:<7} {:>4.0}% CPU, {:>5.1} µs and {:.2} commands per validation{}",
                share * 100.0,
                m.nodes[i] * 1e6 / per,
                commands[i] as f64 / per,
                if held.is_empty() { String::new() } else { format!("; holds {held}") },
            ));
        }
        if let Some((share, port)) = busiest.filter(|(s, _)| *s > 0.0) {
            let rate = validations as f64 / wall;
            notes.push(format!(
                "    busiest master {port}: {:.0}% of a core at {rate:.0} validations/s, so a core at ~{:.0}/s",
                share * 100.0,
                rate / share,
            ));
        }
        notes
    }

    async fn warm(&self, knobs: &Knobs, clients: usize, auth: bool) -> Res<Row> {
        let mode = if auth { "auth" } else { "validate" };
        let load = (mode, self.warm_file.as_path(), clients, knobs.warm_secs);
        let m = self.measure(&[load], knobs.cores).await?;
        let name = format!("warm C={clients}{}", if auth { " /v1/auth" } else { "" });
        let mut row = Row::new(name, clients, &m.runs[0], m.runs[0].requests, &m);
        if clients == knobs.concurrency && !auth {
            row.notes = self.node_notes(&m, m.runs[0].requests);
        }
        Ok(row)
    }
}

fn write_keys(path: &Path, keys: &[String]) -> Res<()> {
    // The Lua script pastes keys into JSON bodies and headers as they are.
    let safe = |k: &String| {
        k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !keys.iter().all(safe) {
        return Err("a minted key has characters outside [A-Za-z0-9._-]".into());
    }
    std::fs::write(path, keys.join("\n") + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

// --- wrk -------------------------------------------------------------------------

fn wrk(addr: &str, mode: &str, keys: &Path, clients: usize, secs: u64, cores: usize) -> Command {
    let threads = cores.min(clients).max(1).to_string();
    let mut cmd = Command::new("wrk");
    cmd.args(["--latency", "--timeout", "30s", "-t", &threads])
        .args(["-c", &clients.to_string(), "-d", &format!("{secs}s"), "-s"])
        .arg(repo().join("benches/load.lua"))
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(keys)
        .args([mode, &threads])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What one wrk run printed.
#[derive(Default)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: u64,
    exhausted: bool,
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.00m` in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let at = v.find(|c: char| c.is_ascii_alphabetic())?;
    let unit = match &v[at..] {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(v[..at].parse::<f64>().ok()? * unit)
}

impl Wrk {
    fn parse(text: &str) -> Res<Self> {
        let bad = |what: &str| format!("cannot read wrk's {what} from:\n{text}");
        let mut w = Wrk::default();
        let (mut saw_requests, mut saw_rate) = (false, false);
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("50%") {
                w.p50_ms = wrk_ms(v).ok_or_else(|| bad("p50"))?;
            } else if let Some(v) = line.strip_prefix("99%") {
                w.p99_ms = wrk_ms(v).ok_or_else(|| bad("p99"))?;
            } else if line.contains(" requests in ") {
                let n = line.split_whitespace().next().and_then(|n| n.parse().ok());
                (w.requests, saw_requests) = (n.ok_or_else(|| bad("request count"))?, true);
            } else if let Some(v) = line.strip_prefix("Requests/sec:") {
                (w.rps, saw_rate) = (v.trim().parse().map_err(|_| bad("Requests/sec"))?, true);
            } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                w.non_2xx = v.trim().parse().map_err(|_| bad("Non-2xx count"))?;
            } else if let Some(v) = line.strip_prefix("Socket errors:") {
                // "connect 0, read 0, write 0, timeout 0"
                let n = v
                    .split(',')
                    .map(|f| f.split_whitespace().last()?.parse::<u64>().ok());
                w.socket_errors = n.sum::<Option<u64>>().ok_or_else(|| bad("socket errors"))?;
            } else if line.starts_with("keys exhausted") {
                w.exhausted = true;
            }
        }
        if !(saw_requests && saw_rate) {
            return Err(bad("summary"));
        }
        Ok(w)
    }
}

// --- /proc -----------------------------------------------------------------------

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of two fields (numbered as in proc(5)) of `/proc/<pid>/stat`.
fn stat_ticks(pid: &str, fields: [usize; 2]) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 follows the command name, which is in parentheses and may hold spaces.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .filter_map(|&n| f.get(n - 3)?.parse::<u64>().ok())
        .sum()
}

/// Non-idle ticks of all CPUs, from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .flat_map(str::parse)
        .collect();
    f.iter().sum::<u64>() - f.get(3).unwrap_or(&0) - f.get(4).unwrap_or(&0)
}

fn clock_ticks_per_sec() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    let hz = out
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    hz.unwrap_or(100.0)
}

/// CPU ticks so far of keyward, Redis (all its nodes), this process's
/// waited-for children (the wrk runs), and the whole machine.
struct Ticks([u64; 4], Instant);

impl Ticks {
    fn now(keyward: u32, redis: &[u32]) -> Self {
        let kw = keyward.to_string();
        let rd = redis
            .iter()
            .map(|pid| stat_ticks(&pid.to_string(), [14, 15]));
        let now = [
            stat_ticks(&kw, [14, 15]), // utime, stime
            rd.sum(),
            stat_ticks("self", [16, 17]), // cutime, cstime
            machine_busy_ticks(),
        ];
        Ticks(now, Instant::now())
    }

    /// CPU seconds since `before`: keyward, Redis, wrk, the rest of the machine; wall seconds.
    fn since(&self, before: &Ticks) -> ([f64; 4], f64) {
        let hz = clock_ticks_per_sec();
        let mut s = [0, 1, 2, 3].map(|i| self.0[i].saturating_sub(before.0[i]) as f64 / hz);
        s[3] = (s[3] - s[0] - s[1] - s[2]).max(0.0);
        (s, (self.1 - before.1).as_secs_f64())
    }
}

struct Measured {
    runs: Vec<Wrk>,
    cpu: ([f64; 4], f64),
    rss_mib: f64,
    /// CPU seconds of each Redis node.
    nodes: Vec<f64>,
    /// Commands each cluster node ran (`INFO stats`); `None` for one Redis.
    commands: Option<Vec<u64>>,
}

// --- rows ------------------------------------------------------------------------

/// Columns: title, decimals, whether compare mode prints a ratio new/base.
const COLS: [(&str, usize, bool); 12] = [
    ("req/s", 0, true),
    ("p50 ms", 3, true),
    ("p99 ms", 3, true),
    ("non-200", 0, false),
    ("kw µs/v", 1, true),
    ("rd µs/v", 1, true),
    ("kw/rd", 2, true),
    ("kw %", 0, false),
    ("rd %", 0, false),
    ("wrk %", 0, false),
    ("other %", 0, false),
    ("RSS MiB", 1, false),
];
const RPS: usize = 0;
const P50: usize = 1;
const P99: usize = 2;
const NON200: usize = 3;
const RD_US: usize = 5;
const KW_RD: usize = 6;
const RSS: usize = 11;

/// One printed line, in `COLS` order.
struct Row {
    name: String,
    clients: String,
    v: [f64; 12],
    /// Lines printed under the row (a cluster's work per node).
    notes: Vec<String>,
}

impl Row {
    /// `validations`: all answered during the scenario, the divisor for CPU.
    fn new(name: String, clients: usize, w: &Wrk, validations: u64, m: &Measured) -> Self {
        let ([kw, rd, wrk, other], wall) = m.cpu;
        let per = |secs: f64| secs * 1e6 / validations.max(1) as f64;
        let pct = |secs: f64| secs * 100.0 / wall;
        let v = [
            w.rps,
            w.p50_ms,
            w.p99_ms,
            (w.non_2xx + w.socket_errors) as f64,
            per(kw),
            per(rd),
            kw / rd,
            pct(kw),
            pct(rd),
            pct(wrk),
            pct(other),
            m.rss_mib,
        ];
        if w.socket_errors > 0 {
            println!(
                "  ({name}: {} socket errors or timeouts, counted as non-200)",
                w.socket_errors
            );
        }
        Row {
            name,
            clients: clients.to_string(),
            v,
            notes: Vec::new(),
        }
    }

    fn line(name: &str, clients: &str, cell: impl Fn(usize) -> String) {
        let mut s = format!("{name:<32} {clients:>3}");
        for i in 0..COLS.len() {
            let _ = write!(s, " {:>8}", cell(i));
        }
        println!("{}", s.trim_end());
    }

    fn header() {
        Row::line("scenario", "C", |i| COLS[i].0.to_owned());
    }

    fn print(&self) {
        Row::line(&self.name, &self.clients, |i| match self.v[i] {
            v if v.is_nan() => "?".to_owned(),
            v => format!("{v:.*}", COLS[i].1),
        });
        for note in &self.notes {
            println!("{note}");
        }
    }

    fn ratio(name: &str, base: &Row, new: &Row) {
        Row::line(name, "", |i| match COLS[i].2 {
            true => format!("{:.2}x", new.v[i] / base.v[i]),
            false => String::new(),
        });
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

fn target(what: &str, got: f64, ok: bool) {
    println!(
        "  {what:<50} {got:>10.3}  {}",
        if ok { "ok" } else { "MISS" }
    );
}

// --- the runs --------------------------------------------------------------------

/// Installs a Debian package when `tool` is not on the PATH (as
/// `redis/local.sh install` does for Redis).
fn ensure_tool(tool: &str, package: &str) -> Res<()> {
    if Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("load: {tool} not found, installing the Debian package {package}");
    let script =
        format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {package}");
    let status = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!(
            "{tool} is missing and `apt-get install {package}` failed"
        )),
    }
}

fn header(knobs: &Knobs) {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let wrk = Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let wrk = String::from_utf8_lossy(&wrk);
    println!(
        "keyward load benchmark ({}, benches/load.lua)",
        wrk.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );
    println!(
        "  machine: {} cores, load average {} at start",
        knobs.cores,
        loadavg.join(" ")
    );
    println!(
        "  Redis: {}",
        match knobs.cluster {
            true => "a cluster of 3 masters with 1 replica each (redis/local.sh cluster-start)",
            false => "one node (redis/local.sh start)",
        }
    );
    let overrides = overrides();
    if overrides.is_empty() {
        println!("  keyward configuration: defaults (no KEYWARD_* overrides inherited)");
    } else {
        println!(
            "  keyward configuration: NOT the defaults: {}",
            overrides.join(" ")
        );
    }
    println!(
        "  K={} warm keys; every scenario {} s (cold storm {} s); wrk threads: min(cores, C)",
        knobs.keys, knobs.warm_secs, knobs.cold_secs
    );
    println!("  kw|rd µs/v: CPU of keyward|Redis per answered validation; kw/rd: their ratio;");
    println!("  kw|rd|wrk|other %: CPU in % of one core (other: the rest of the machine)");
}

async fn run(knobs: Knobs) -> Res<()> {
    ensure_tool("wrk", "wrk")?;
    if knobs.profile {
        ensure_tool("perf", "linux-perf")?;
    }
    header(&knobs);
    let (bin, local_sh) = (
        Path::new(env!("CARGO_BIN_EXE_keyward")),
        repo().join("redis/local.sh"),
    );
    if knobs.base.is_some() && knobs.cluster {
        return Err("compare mode runs on one Redis: unset KEYWARD_BENCH_CLUSTER".into());
    }
    if let Some(dir) = &knobs.base {
        let label = std::env::var("KEYWARD_BENCH_BASE_REV").unwrap_or_else(|_| "?".into());
        let (name, base_bin) = (format!("base {label}"), dir.join("keyward"));
        let base_sh = dir.join("redis/local.sh");
        let base = Stack::start(&name, &base_bin, &base_sh, &knobs).await?;
        let new = Stack::start("new", bin, &local_sh, &knobs).await?;
        return compare(&knobs, [base, new]).await;
    }
    let stack = Stack::start("keyward", bin, &local_sh, &knobs).await?;
    if knobs.profile {
        return profile(&knobs, &stack).await;
    }
    let n = knobs.concurrency;

    // Enough never-validated keys to keep Argon2id busy for the whole storm,
    // at about the rate minting ran (same cost), with a margin.
    let cold_n = (stack.mint_rate * knobs.cold_secs as f64 * 1.3).ceil() as usize;
    let cold_n = (cold_n + 2 * COLD_CLIENTS).min(MAX_COLD_KEYS);
    let minting = Instant::now();
    let cold_file = stack.redis.dir.join("cold.keys");
    write_keys(&cold_file, &stack.mint(cold_n).await?)?;
    println!(
        "  minted {cold_n} cold keys in {:.1} s\n",
        minting.elapsed().as_secs_f64()
    );

    Row::header();
    let warm1 = stack.warm(&knobs, 1, false).await?;
    warm1.print();
    let warm_n = stack.warm(&knobs, n, false).await?;
    warm_n.print();
    stack.warm(&knobs, n, true).await?.print();
    let loads = [
        ("once", cold_file.as_path(), COLD_CLIENTS, knobs.cold_secs),
        ("validate", stack.warm_file.as_path(), 1, knobs.cold_secs),
    ];
    let m = stack.measure(&loads, knobs.cores).await?;
    let (storm, probe) = (&m.runs[0], &m.runs[1]);
    let all = storm.requests + probe.requests;
    Row::new("cold storm".into(), COLD_CLIENTS, storm, all, &m).print();
    let probe = Row::new("warm probe (during storm)".into(), 1, probe, all, &m);
    probe.print();
    let verified = storm.requests - storm.non_2xx;
    println!(
        "  cold storm: {verified} Argon2id verifications ({:.1}/s), {} non-200{}; its CPU columns are storm and probe together",
        verified as f64 / knobs.cold_secs as f64,
        storm.non_2xx + storm.socket_errors,
        if storm.exhausted { "; RAN OUT of cold keys before the end" } else { "" },
    );

    let argon2_mib = override_num("KEYWARD_ARGON2_MEMORY_KIB").unwrap_or(65536.0) / 1024.0;
    let slots = override_num("KEYWARD_ARGON2_CONCURRENCY").unwrap_or(knobs.cores as f64);
    let cold_rss = COLD_RSS_BASE_MIB + argon2_mib * slots;
    let warm_rss = warm1.v[RSS].max(warm_n.v[RSS]);
    let (w, w1, p, s) = (&warm_n.v, &warm1.v, &probe.v, m.rss_mib);
    println!("targets (reported, not asserted; N = {n})");
    target(
        "warm C=N: keyward/Redis CPU <= 1",
        w[KW_RD],
        w[KW_RD] <= 1.0,
    );
    target("warm C=N: p99 < 10 ms", w[P99], w[P99] < 10.0);
    target("warm C=N: non-200 = 0", w[NON200], w[NON200] == 0.0);
    target("warm C=1: p50 < 1 ms", w1[P50], w1[P50] < 1.0);
    target("warm probe: p99 < 20 ms", p[P99], p[P99] < 20.0);
    target("warm: peak RSS < 100 MiB", warm_rss, warm_rss < 100.0);
    let cold_target = format!("cold storm: peak RSS < {cold_rss:.0} MiB");
    target(&cold_target, s, s < cold_rss);
    let log = stack.log_tail(5);
    if !log.is_empty() {
        println!("keyward logged at warn or above; last lines:\n{log}");
    }
    Ok(())
}

/// Warm C=N against both stacks, alternating; then medians and ratios.
async fn compare(knobs: &Knobs, stacks: [Stack; 2]) -> Res<()> {
    let (n, rounds) = (knobs.concurrency, knobs.rounds);
    println!("\nwarm C={n} POST /v1/validate-key, {rounds} round(s), alternating\n");
    Row::header();
    let mut rows: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for side in if round % 2 == 1 { [0, 1] } else { [1, 0] } {
            let mut row = stacks[side].warm(knobs, n, false).await?;
            row.name = format!("{round}: {}", stacks[side].name);
            row.print();
            rows[side].push(row);
        }
        Row::ratio(
            &format!("{round}: new/base"),
            &rows[0][round - 1],
            &rows[1][round - 1],
        );
    }
    println!("medians of {rounds} round(s) (non-200: the sum)");
    let [base, new] = [0, 1].map(|side| {
        let v = std::array::from_fn(|i| {
            let vals = rows[side].iter().map(|r| r.v[i]);
            if i == NON200 {
                vals.sum()
            } else {
                median(vals.collect())
            }
        });
        let row = Row {
            name: format!("median {}", stacks[side].name),
            clients: n.to_string(),
            v,
            notes: Vec::new(),
        };
        row.print();
        row
    });
    Row::ratio("median new/base", &base, &new);
    let (b, v) = (&base.v, &new.v);
    println!("targets (reported, not asserted; medians)");
    let (speedup, redis) = (v[RPS] / b[RPS], v[RD_US] / b[RD_US]);
    target("throughput new/base >= 2", speedup, speedup >= 2.0);
    target("new: p99 < 10 ms", v[P99], v[P99] < 10.0);
    target("new: non-200 = 0", v[NON200], v[NON200] == 0.0);
    target("Redis CPU/validation new/base <= 1", redis, redis <= 1.0);
    target("new: keyward/Redis CPU <= 1", v[KW_RD], v[KW_RD] <= 1.0);
    Ok(())
}

/// Warm C=N under `perf record -g` (keyward only), then the top of `perf report`.
async fn profile(knobs: &Knobs, stack: &Stack) -> Res<()> {
    let data = repo().join("target/load-profile.perf.data");
    let (pid, secs) = (
        stack.keyward.id().to_string(),
        (knobs.warm_secs + 2).to_string(),
    );
    let perf = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-g", "-o"])
        .arg(&data)
        .args(["-p", &pid, "--", "sleep", &secs])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run perf: {e}"))?;
    let row = stack.warm(knobs, knobs.concurrency, false).await?;
    let out = tokio::task::spawn_blocking(|| perf.wait_with_output()).await;
    let out = out
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("perf record: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "perf record: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!();
    Row::header();
    row.print();
    println!(
        "\nkeyward under perf record -e cpu-clock -g, warm C={}:",
        knobs.concurrency
    );
    perf_report(&data, &["--no-children", "--percent-limit", "1"])?;
    perf_report(
        &data,
        &["--no-children", "--sort", "dso", "--percent-limit", "1"],
    )?;
    // With call graphs (a frame-pointer build, as `make profile` makes):
    // where the time goes, callees included.
    perf_report(&data, &["--children", "--percent-limit", "5"])?;
    println!("(call graphs: perf report -i {})", data.display());
    Ok(())
}

/// Prints `perf report` of `data` without call graphs or comment lines.
fn perf_report(data: &Path, args: &[&str]) -> Res<()> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "-g", "none"])
        .args(args)
        .arg("-i")
        .arg(data)
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    println!("perf report {}", args.join(" "));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        println!("{line}");
    }
    Ok(())
}
