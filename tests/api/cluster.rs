//! keyward on a real Redis Cluster: 3 masters with one replica each, on
//! loopback, RedisJSON and the ACL template on every node, started once for
//! this whole file by `redis/local.sh cluster-start` (and stopped, with its
//! directory removed, when the test process exits).
//!
//! Tests share the cluster and isolate themselves with projects of their
//! own. The few that change the cluster itself (a failover, a slot moved,
//! `ACL LOAD`, which closes every connection in Redis 7.0) take the
//! exclusive side of [`EXCLUSIVE`]; the others take the shared side.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config as FredConfig, Pool};
use fred::types::Value as RedisValue;
use keyward::acl::{rule, Role};
use keyward::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::helpers::{
    assert_error, free_port, random_id, raw, render_acl, repo, test_config, Binary, Clock, Minted,
    TestApp, MANAGER_PASSWORD, MIGRATOR_PASSWORD, OPS_PASSWORD, VALIDATOR_PASSWORD,
};

/// Exclusive: the test changes the cluster for everyone (kills a node,
/// moves a slot, reloads ACLs). Shared: the test only uses it.
pub(crate) static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

fn local_sh(args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo().join("redis/local.sh"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The file's cluster, started on first use.
pub(crate) struct Cluster {
    dir: PathBuf,
    /// Masters first (as created), then replicas.
    ports: Vec<u16>,
    /// `host:port?node=host:port...`: the seed nodes of a `redis-cluster://` URL.
    seeds: String,
    admin_password: String,
}

pub(crate) fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(random_id("keyward-test-cluster-"));
        std::fs::create_dir_all(&dir).unwrap();
        // The shipped template, with the migrator and ops users switched on.
        let acl = render_acl(&[("migrator", MIGRATOR_PASSWORD), ("ops", OPS_PASSWORD)]);
        std::fs::write(dir.join("template.acl"), acl).unwrap();
        let started = Instant::now();
        let mut last_error = String::new();
        for _ in 0..5 {
            // Six ports and their cluster bus ports (+10000) must be free:
            // 10000..32005, below Linux's ephemeral ports (32768 and up).
            let base = free_port() % 12_000 + 10_000;
            let env = [
                ("KEYWARD_CLUSTER_OWNER", std::process::id().to_string()),
                ("KEYWARD_CLUSTER_NODE_TIMEOUT", "1000".into()),
            ];
            let template = dir.join("template.acl");
            let args = [
                "cluster-start",
                &base.to_string(),
                dir.to_str().unwrap(),
                template.to_str().unwrap(),
            ];
            match local_sh(&args, &env) {
                Ok(seeds) => {
                    eprintln!(
                        "cluster: started on ports {base}..{} in {:.1} s",
                        base + 5,
                        started.elapsed().as_secs_f64()
                    );
                    return Cluster {
                        admin_password: std::fs::read_to_string(dir.join("admin.pw"))
                            .unwrap()
                            .trim()
                            .to_owned(),
                        dir,
                        ports: (base..base + 6).collect(),
                        seeds,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start the test cluster: {last_error}");
    })
}

impl Cluster {
    pub(crate) fn url(&self, user: &str, password: &str) -> String {
        format!("redis-cluster://{user}:{password}@{}", self.seeds)
    }

    /// keyward on the cluster as the template's validator and manager
    /// users, named `cluster-gateway`; `tweak` changes the rest.
    /// keyward as a process of its own on the cluster, on `clock`.
    pub(crate) async fn binary_on(&self, clock: &Clock) -> Binary {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.envs(clock.env());
        let env = [
            (
                "KEYWARD_REDIS_URL",
                self.url("validator", VALIDATOR_PASSWORD),
            ),
            (
                "KEYWARD_ADMIN_REDIS_URL",
                self.url("manager", MANAGER_PASSWORD),
            ),
            ("KEYWARD_CLIENT_NAME", "cluster-gateway".to_owned()),
        ];
        Binary::launch(cmd.envs(env), &[]).await
    }

    async fn app(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(
            self.url("validator", VALIDATOR_PASSWORD),
            self.url("manager", MANAGER_PASSWORD),
        );
        config.client_name = "cluster-gateway".into();
        tweak(&mut config);
        TestApp::serve(config, None).await
    }

    /// A cluster client as `user`, for inspection and ACL checks.
    async fn client(&self, user: &str, password: &str) -> Pool {
        connect(&self.url(user, password)).await
    }

    pub(crate) async fn admin(&self) -> Pool {
        self.client("cluster-admin", &self.admin_password).await
    }

    /// A plain connection to one node as `user`.
    async fn node_as(&self, port: u16, user: &str, password: &str) -> Pool {
        connect(&format!("redis://{user}:{password}@127.0.0.1:{port}")).await
    }

    pub(crate) async fn node(&self, port: u16) -> Pool {
        self.node_as(port, "cluster-admin", &self.admin_password)
            .await
    }

    fn pid(&self, port: u16) -> Option<u32> {
        let pid = std::fs::read_to_string(self.dir.join(format!("{port}/redis.pid"))).ok()?;
        let pid: u32 = pid.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Kills the node on `port` (SIGKILL), as a crash would.
    pub(crate) fn kill(&self, port: u16) {
        let pid = self.pid(port).expect("the node runs");
        let kill = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(kill.unwrap().success());
    }

    /// The replica of `master`.
    pub(crate) async fn replica_of(&self, master: &Node) -> Node {
        self.nodes()
            .await
            .into_iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .expect("the master has a replica")
    }

    /// Waits until `replica` is a master: after its master is killed, it
    /// takes over after cluster-node-timeout (1 s) and an election.
    pub(crate) async fn wait_promoted(&self, replica: &Node) {
        let conn = self.node(replica.port).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let role = raw(&conn, "ROLE", vec![]).await;
            if matches!(role.ok().map(|r| r.into_array()), Some(r) if r.first().and_then(|v| v.as_string()).as_deref() == Some("master"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "the replica was not promoted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a killed node again from its own configuration: it rejoins
    /// the cluster as a replica of the master that took its slots.
    pub(crate) fn start_again(&self, port: u16) {
        let conf = self.dir.join(format!("{port}/redis.conf"));
        let started = Command::new("redis-server").arg(conf).status().unwrap();
        assert!(started.success());
    }

    /// The nodes as `CLUSTER NODES` on a live node describes them.
    pub(crate) async fn nodes(&self) -> Vec<Node> {
        for &port in &self.ports {
            if self.pid(port).is_none() {
                continue;
            }
            let node = self.node(port).await;
            if let Ok(RedisValue::String(text)) = raw(&node, "CLUSTER", args(&["NODES"])).await {
                return text.lines().filter_map(Node::parse).collect();
            }
        }
        panic!("no cluster node answers CLUSTER NODES");
    }

    /// The master serving `key`'s slot, as the cluster sees it now.
    pub(crate) async fn master_of(&self, key: &str) -> Node {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        self.nodes()
            .await
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }
}

/// A connected client. A node just restarted (or a loaded machine) may
/// refuse the first tries, so this retries for up to 10 s.
async fn connect(url: &str) -> Pool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = FredConfig::from_url(url).unwrap();
        let pool = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
            .set_policy(fred::prelude::ReconnectPolicy::new_constant(0, 50))
            .build_pool(1)
            .unwrap();
        match pool.init().await {
            Ok(_) => return pool,
            Err(e) if Instant::now() >= deadline => panic!("connect to the test cluster: {e}"),
            Err(_) => {
                let _ = pool.quit().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) port: u16,
    pub(crate) master: bool,
    /// The master's id, for a replica.
    pub(crate) master_id: Option<String>,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl Node {
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
        let flags = f.get(2)?;
        let slots = f
            .iter()
            .skip(8)
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(Node {
            id: f[0].to_owned(),
            port,
            master: flags.contains("master"),
            master_id: f.get(3).filter(|m| **m != "-").map(|m| m.to_string()),
            failed: flags.contains("fail"),
            slots,
        })
    }
}

/// Every entry of `project` in the validation audit stream(s), as field maps.
pub(crate) async fn audit_of(
    admin: &Pool,
    project: &str,
    shards: usize,
) -> Vec<HashMap<String, String>> {
    let mut entries = Vec::new();
    for stream in
        keyward::store::AuditStreams::new(keyward::config::AuditLayout::Shared, "keyward", shards)
            .keylookup_all()
    {
        let page: Vec<(String, HashMap<String, String>)> =
            fred::prelude::StreamsInterface::xrange(admin, &stream, "-", "+", None)
                .await
                .unwrap_or_else(|e| panic!("XRANGE {stream}: {e}"));
        entries.extend(
            page.into_iter()
                .map(|(_, fields)| fields)
                .filter(|f| f.get("project_id").map(String::as_str) == Some(project)),
        );
    }
    entries
}

/// The answers recorded in `phase`.
fn in_phase(answers: &[(usize, u16)], phase: usize) -> usize {
    answers.iter().filter(|a| a.0 == phase).count()
}

/// Waits until `answers` (each with its phase, as they came) show `done`;
/// the deadline is only for a keyward that stopped answering.
async fn seen(
    answers: &Mutex<Vec<(usize, u16)>>,
    what: &str,
    done: impl Fn(&[(usize, u16)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, n) = {
            let answers = answers.lock().unwrap();
            (done(&answers), answers.len())
        };
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what} ({n} answers)");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many `WAIT` commands `node` has run (`INFO commandstats`).
async fn wait_calls(node: &Pool) -> u64 {
    let info = raw(node, "INFO", args(&["commandstats"])).await.unwrap();
    let info = info.as_string().unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// How many `ok` entries each key has in the audit.
fn ok_entries(entries: &[HashMap<String, String>]) -> HashMap<String, usize> {
    let mut ok = HashMap::new();
    for e in entries.iter().filter(|e| e["result"] == "ok") {
        *ok.entry(e["key_id"].clone()).or_default() += 1;
    }
    ok
}

#[tokio::test]
async fn a_key_is_minted_validated_and_revoked_across_the_shards() {
    let _shared = EXCLUSIVE.read().await;
    let c = cluster();
    let app = c.app(|_| {}).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "scopes": ["chat:*"] })).await;

    let r = app.validate_response(&key.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "99");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["project_id"].as_str(), body["key_id"].as_str()),
        (Some(project.as_str()), Some(key.key_id.as_str()))
    );
    // Warm (verified-secret cache): two pipelines over several masters.
    assert_eq!(app.status(&key.api_key).await, StatusCode::OK);

    // Where the names of one validation live (usually on several masters).
    let minute = keyward::store::now() as u64 / 60;
    let mut masters = std::collections::BTreeSet::new();
    for name in [
        format!("apikey:{project}:{}", key.key_id),
        format!("ratelimit:key:{project}:{}:{minute}", key.key_id),
        format!("apimeta:{project}:{}", key.key_id),
        "audit:keylookup".to_owned(),
    ] {
        masters.insert(c.master_of(&name).await.port);
    }
    eprintln!("one validation's keys live on masters {masters:?}");

    app.revoke(&project, &key.key_id).await;
    app.validate_fails(&key.api_key, StatusCode::UNAUTHORIZED, "invalid_key")
        .await;
    let admin = c.admin().await;
    let audit = audit_of(&admin, &project, 1).await;
    let reasons: Vec<&str> = audit.iter().map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["ok", "ok", "disabled"]);
    assert!(audit.iter().all(|e| e["client"] == "cluster-gateway"));
    let got = app.usage_is(&project, &key.key_id, 2).await;
    assert_eq!(got["disabled"], json!(true));
}

#[tokio::test]
async fn list_keys_pages_through_keys_on_every_shard_exactly_once() {
    let _shared = EXCLUSIVE.read().await;
    let app = Arc::new(cluster().app(|_| {}).await);
    let project = app.project().await;
    let minted = futures::future::join_all((0..37).map(|i| {
        let (app, project) = (app.clone(), project.clone());
        tokio::spawn(async move {
            app.mint(&project, json!({ "owner": format!("o{i}") }))
                .await
        })
    }))
    .await;
    let mut expected: Vec<String> = minted.into_iter().map(|m| m.unwrap().key_id).collect();
    expected.sort();
    let c = cluster();
    let mut shards = std::collections::BTreeSet::new();
    for id in &expected {
        shards.insert(c.master_of(&format!("apikey:{project}:{id}")).await.port);
    }
    assert_eq!(
        shards.len(),
        3,
        "37 keys' documents are spread over the 3 masters"
    );

    let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut path = format!("/v1/list-keys?project_id={project}&limit=10");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.admin_get(&path).await.json().await.unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item.get("secret_hash").is_none());
            assert_eq!(item["unreadable"], Value::Null, "{item}");
            listed.push(item["key_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, expected, "every key once, in key-id order");
    assert_eq!(pages, 4);
}

#[tokio::test]
async fn client_acls_loaded_on_every_node_isolate_deployments() {
    let _exclusive = EXCLUSIVE.write().await;
    let c = cluster();
    let (alpha, beta) = (random_id("alpha"), random_id("beta"));
    let (gw_a, adm_a, gw_b, adm_b) = (
        random_id("gw-a-"),
        random_id("adm-a-"),
        random_id("gw-b-"),
        random_id("adm-b-"),
    );
    // gw-a's rule comes from the `keyward acl` binary itself.
    let pw_file = c.dir.join(format!("{gw_a}.pw"));
    std::fs::write(&pw_file, "gw-a-secret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["acl", &gw_a, "--projects", &alpha, "--role", "validator"])
        .arg("--password-file")
        .arg(&pw_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = [
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        rule(
            &adm_a,
            Role::Manager,
            &[&alpha],
            &["adm-a-secret".into()],
            "test-gateway",
        )
        .unwrap(),
        rule(
            &gw_b,
            Role::Validator,
            &[&beta],
            &["gw-b-secret".into()],
            "test-gateway",
        )
        .unwrap(),
        rule(
            &adm_b,
            Role::Manager,
            &[&beta],
            &["adm-b-secret".into()],
            "test-gateway",
        )
        .unwrap(),
    ];
    // The operator's roll-out: the same file on every node, then ACL LOAD
    // on each (replicas too).
    let acl_file = c.dir.join("users.acl");
    let mut acl = std::fs::read_to_string(&acl_file).unwrap();
    acl.push_str(&(lines.join("\n") + "\n"));
    std::fs::write(&acl_file, acl).unwrap();
    local_sh(&["cluster-acl-load", c.dir.to_str().unwrap()], &[]).unwrap();

    let deployment = |user: &str, pw: &str, admin: &str, admin_pw: &str| {
        let (url, admin_url) = (c.url(user, pw), c.url(admin, admin_pw));
        let name = user.to_owned();
        c.app(move |config| {
            config.redis_url = url.into();
            config.admin_redis_url = Some(admin_url.into());
            config.client_name = name;
        })
    };
    let a = deployment(&gw_a, "gw-a-secret", &adm_a, "adm-a-secret").await;
    let b = deployment(&gw_b, "gw-b-secret", &adm_b, "adm-b-secret").await;
    assert_eq!(a.create_project(&alpha).await.status(), StatusCode::CREATED);
    assert_eq!(b.create_project(&beta).await.status(), StatusCode::CREATED);
    let key_a = a.mint(&alpha, json!({})).await;
    let key_b = b.mint(&beta, json!({})).await;
    assert_eq!(a.status(&key_a.api_key).await, StatusCode::OK);
    assert_eq!(b.status(&key_b.api_key).await, StatusCode::OK);
    assert_eq!(a.status(&key_b.api_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(b.status(&key_a.api_key).await, StatusCode::UNAUTHORIZED);
    let audit = audit_of(&c.admin().await, &beta, 1).await;
    let forbidden = audit
        .iter()
        .find(|e| e["key_id"] == key_b.key_id && e["client"] == gw_a);
    assert_eq!(forbidden.map(|e| e["reason"].as_str()), Some("forbidden"));
    for path in [
        format!("/v1/admin/projects/{beta}"),
        format!("/v1/list-keys?project_id={beta}"),
    ] {
        assert_error(
            a.admin_get(&path).await,
            StatusCode::NOT_FOUND,
            "project_not_found",
        )
        .await;
    }
    let mint = json!({ "project_id": beta, "owner": "o", "server_name": "s" });
    assert_error(
        a.admin_post("/v1/mint-key", &mint).await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;

    // Every node, replicas included, refuses what the rules do not grant
    // (Redis checks ACLs before it redirects to a slot's owner).
    let outside = [
        (
            gw_a.as_str(),
            "gw-a-secret",
            "JSON.GET",
            vec![format!("apikey:{beta}:k_abcdefg")],
        ),
        (
            gw_a.as_str(),
            "gw-a-secret",
            "GET",
            vec![format!("ratelimit:key:{beta}:k_abcdefg:1")],
        ),
        (
            gw_a.as_str(),
            "gw-a-secret",
            "XRANGE",
            args(&["audit:keylookup", "-", "+"]),
        ),
        (
            gw_a.as_str(),
            "gw-a-secret",
            "EVAL",
            args(&["return 1", "0"]),
        ),
        (
            adm_a.as_str(),
            "adm-a-secret",
            "JSON.GET",
            vec![format!("project:{beta}")],
        ),
        (
            adm_a.as_str(),
            "adm-a-secret",
            "DEL",
            vec![format!("project:{alpha}")],
        ),
    ];
    for &port in &c.ports {
        if c.pid(port).is_none() {
            continue;
        }
        for (user, pw, cmd, cmd_args) in &outside {
            let node = c.node_as(port, user, pw).await;
            let err = raw(&node, cmd, cmd_args.clone()).await.expect_err(cmd);
            assert!(err.starts_with("NOPERM"), "{port} {user} {cmd}: {err}");
        }
        // Granted: answered, or redirected to the slot's owner.
        let node = c.node_as(port, &gw_a, "gw-a-secret").await;
        let own = vec![format!("apikey:{alpha}:{}", key_a.key_id)];
        if let Err(e) = raw(&node, "JSON.GET", own).await {
            assert!(e.starts_with("MOVED"), "{port}: {e}");
        }
    }
}

#[tokio::test]
async fn a_slot_moving_between_masters_costs_a_few_503s_and_no_stale_read() {
    let _exclusive = EXCLUSIVE.write().await;
    let c = cluster();
    /// Clients in each of keyward's pools, each with its own slot map.
    const POOL: usize = 4;
    let app = Arc::new(c.app(|config| config.redis_pool_size = POOL).await);
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": 1_000_000 }))
        .await;
    assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    let doc = format!("apikey:{project}:{}", key.key_id);
    let slot = fred::util::redis_keyslot(doc.as_bytes());
    let from = c.master_of(&doc).await;
    let nodes = c.nodes().await;
    let to = nodes
        .iter()
        .find(|n| n.master && !n.failed && n.id != from.id)
        .unwrap()
        .clone();
    let (source, target) = (c.node(from.port).await, c.node(to.port).await);
    let redirections = |pool: Pool| async move {
        let info = raw(&pool, "INFO", args(&["errorstats"])).await.unwrap();
        let info = info.as_string().unwrap_or_default();
        let count = |code: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("errorstat_{code}:count=")))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        (count("ASK"), count("MOVED"))
    };
    let before = redirections(source.clone()).await;

    // Validations one after another, every answer recorded as it comes
    // with its phase: 0 before the move, 1 while the slot migrates (its
    // keys moved, the slot not yet handed over), 2 from the handover until
    // every pool client has met the move, 3 after that; a request that
    // straddles two phases counts as 9. Each phase ends on what Redis or
    // the answers show, never after a set time.
    let phase = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::<(usize, u16)>::new()));
    let worker = {
        let (app, key, phase, answers) = (
            app.clone(),
            key.api_key.clone(),
            phase.clone(),
            answers.clone(),
        );
        tokio::spawn(async move {
            loop {
                let now = phase.load(Ordering::SeqCst);
                if now == 4 {
                    break;
                }
                let status = app.status(&key).await.as_u16();
                let then = match phase.load(Ordering::SeqCst) {
                    end if end == now => now,
                    _ => 9,
                };
                answers.lock().unwrap().push((then, status));
            }
        })
    };
    let setslot = |pool: &Pool, how: &[&str]| {
        let pool = pool.clone();
        let mut a = vec!["SETSLOT".to_owned(), slot.to_string()];
        a.extend(args(how));
        async move { raw(&pool, "CLUSTER", a).await.unwrap() }
    };
    seen(&answers, "answers before the move", |a| in_phase(a, 0) >= 4).await;
    // The resharding steps for one slot: importing, migrating, the keys
    // moved with MIGRATE (the source now answers ASK for them), then the
    // slot handed over (MOVED from the source from then on).
    setslot(&target, &["IMPORTING", &from.id]).await;
    setslot(&source, &["MIGRATING", &to.id]).await;
    let keys = raw(
        &source,
        "CLUSTER",
        vec!["GETKEYSINSLOT".into(), slot.to_string(), "1000".into()],
    )
    .await
    .unwrap();
    let keys: Vec<String> = keys.convert().unwrap();
    assert!(keys.contains(&doc));
    let mut migrate = vec![
        "127.0.0.1".to_owned(),
        to.port.to_string(),
        String::new(),
        "0".into(),
        "5000".into(),
        "AUTH2".into(),
        "cluster-admin".into(),
        c.admin_password.clone(),
        "KEYS".into(),
    ];
    migrate.extend(keys);
    raw(&source, "MIGRATE", migrate).await.unwrap();
    phase.store(1, Ordering::SeqCst);
    seen(&answers, "an answer while the slot migrates", |a| {
        in_phase(a, 1) >= 1
    })
    .await;
    setslot(&target, &["NODE", &to.id]).await;
    setslot(&source, &["NODE", &to.id]).await;
    for n in nodes
        .iter()
        .filter(|n| n.master && n.id != from.id && n.id != to.id)
    {
        setslot(&c.node(n.port).await, &["NODE", &to.id]).await;
    }
    phase.store(2, Ordering::SeqCst);
    // With one validation in flight at a time, each pool client meets the
    // move with exactly one MOVED, refreshes its slot map and from then on
    // reads from the new owner: the source's MOVED count says how many have.
    // (A validation takes two clients in turn, so reads fall on every other
    // client until a background write, e.g. the usage flush, shifts them.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while redirections(source.clone()).await.1 - before.1 < POOL as u64 {
        let n = answers.lock().unwrap().len();
        assert!(
            Instant::now() < deadline,
            "not every pool client met the move ({n} answers)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    phase.store(3, Ordering::SeqCst);
    seen(&answers, "answers after the recovery", |a| {
        in_phase(a, 3) >= 8
    })
    .await;
    phase.store(4, Ordering::SeqCst);
    worker.await.unwrap();
    let after = redirections(source).await;
    let answers = answers.lock().unwrap().iter().fold(
        BTreeMap::<(usize, u16), usize>::new(),
        |mut tally, answer| {
            *tally.entry(*answer).or_default() += 1;
            tally
        },
    );
    eprintln!(
        "slot {slot} moved {} -> {}: answers by (phase, status) {answers:?}; \
         the source answered ASK {} and MOVED {} times",
        from.port,
        to.port,
        after.0 - before.0,
        after.1 - before.1
    );
    let count = |phase: usize, status: u16| answers.get(&(phase, status)).copied().unwrap_or(0);
    assert!(
        answers.keys().all(|(_, s)| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert_eq!(count(0, 503), 0, "nothing fails before the move");
    assert!(
        after.0 > before.0,
        "the source answered ASK during the migration"
    );
    assert!(
        count(1, 503) > 0 && count(1, 200) == 0,
        "a moved key is never read from the source: {answers:?}"
    );
    assert!(after.1 > before.1, "the source answered MOVED after it");
    // A MOVED fails only what is in flight on the pool client that meets it.
    assert!(
        count(2, 503) <= 8,
        "not a 503 storm after the handover: {answers:?}"
    );
    assert!(
        count(3, 200) >= 8 && count(3, 503) == 0,
        "recovered: {answers:?}"
    );
    assert_eq!(c.master_of(&doc).await.id, to.id);

    // Every pool client still works (none lost its router), and the next
    // validation after a revoke reads the document where it is now. The
    // manager's pool meets the move only now: each of its clients (taken in
    // turn) has its own slot map, refreshed by its first MOVED, which that
    // call answers 503 (Retry-After: 1).
    for _ in 0..8 {
        assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    }
    let revoke = json!({ "project_id": project, "key_id": key.key_id });
    let mut refused = 0;
    loop {
        match app.admin_post("/v1/revoke-key", &revoke).await.status() {
            StatusCode::OK => break,
            StatusCode::SERVICE_UNAVAILABLE if refused < POOL => refused += 1,
            other => panic!("revoke answered {other} after {refused} 503s"),
        }
    }
    eprintln!("the first revoke after the move succeeded after {refused} 503s");
    assert_eq!(app.status(&key.api_key).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_master_killed_under_load_costs_seconds_of_503_and_no_wrong_answer() {
    let _exclusive = EXCLUSIVE.write().await;
    let c = cluster();
    let app = Arc::new(c.app(|c| c.admin_wait_replicas = 1).await);
    let admin = c.admin().await;
    let project = app.project().await;
    let doc = |key_id: &str| format!("apikey:{project}:{key_id}");

    // The victim: the master holding the revoked key's document. Good keys
    // on every master, at least two on the victim.
    let revoked = app.mint(&project, json!({})).await;
    assert_eq!(app.status(&revoked.api_key).await, StatusCode::OK);
    let victim = c.master_of(&doc(&revoked.key_id)).await;
    let mut good: Vec<Minted> = Vec::new();
    let mut victims_keys = std::collections::HashSet::new();
    while good.len() < 6 || victims_keys.len() < 2 {
        assert!(good.len() < 40, "no key document lands on the victim");
        let key = app
            .mint(&project, json!({ "rate_limit_per_minute": 1_000_000 }))
            .await;
        assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
        if c.master_of(&doc(&key.key_id)).await.id == victim.id {
            victims_keys.insert(key.key_id.clone());
        }
        good.push(key);
    }
    // Replication is asynchronous: a revoke acknowledged by a master that
    // dies before its replica has it would be lost with it. With
    // KEYWARD_ADMIN_WAIT_REPLICAS=1 (this app's) the revoke is answered
    // only once the replica has it, so the master may die right after.
    let victim_conn = c.node(victim.port).await;
    let waits_before = wait_calls(&victim_conn).await;
    app.revoke(&project, &revoked.key_id).await;
    assert!(
        wait_calls(&victim_conn).await > waits_before,
        "the revoke sent WAIT to the key's master"
    );
    assert_eq!(app.status(&revoked.api_key).await, StatusCode::UNAUTHORIZED);
    // The replica confirmed every write in time (no other test waits for
    // replicas, so this process-wide counter is this test's).
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        !metrics.contains("keyward_admin_writes_unconfirmed_total"),
        "a write went unconfirmed"
    );
    let replica = c.replica_of(&victim).await;

    // Continuous validations: each worker alternates good keys and the
    // revoked one. Every answer is recorded with the phase it ended in.
    let started = Instant::now();
    let killed_at = Arc::new(Mutex::new(None::<Duration>));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<(Duration, String, u16)>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (app, stop, log) = (app.clone(), stop.clone(), log.clone());
            let (good, revoked) = (good.clone(), revoked.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let key = &good[i % good.len()];
                    i += 1;
                    let status = app.status(&key.api_key).await;
                    assert!(
                        status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                        "a good key answered {status}"
                    );
                    log.lock().unwrap().push((
                        started.elapsed(),
                        key.key_id.clone(),
                        status.as_u16(),
                    ));
                    let status = app.status(&revoked.api_key).await;
                    assert!(
                        status == StatusCode::UNAUTHORIZED
                            || status == StatusCode::SERVICE_UNAVAILABLE,
                        "the revoked key answered {status}"
                    );
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    c.kill(victim.port);
    let kill_time = started.elapsed();
    *killed_at.lock().unwrap() = Some(kill_time);
    c.wait_promoted(&replica).await;
    let promoted = started.elapsed();
    // Recovered: keyward itself answers 200 for every good key again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        let mut all = true;
        for key in &good {
            all &= app.status(&key.api_key).await == StatusCode::OK;
        }
        if all {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "keyward did not recover within 20 s of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a worker saw a wrong answer");
    }

    let log = log.lock().unwrap().clone();
    let count = |from: Duration, to: Duration, status: u16| {
        log.iter()
            .filter(|(t, _, s)| *t >= from && *t < to && *s == status)
            .count()
    };
    let unavailable: Vec<Duration> = log
        .iter()
        .filter(|(_, _, s)| *s == 503)
        .map(|(t, _, _)| *t)
        .collect();
    let (first, last) = (unavailable.first().copied(), unavailable.last().copied());
    let end = started.elapsed();
    let elsewhere = log
        .iter()
        .filter(|(t, k, s)| *t >= kill_time && *s == 503 && !victims_keys.contains(k))
        .count();
    eprintln!(
        "failover of {}: killed at {:.2} s, replica promoted at {:.2} s, all keys 200 again at {:.2} s; \
         good-key answers before the kill {} x 200 / {} x 503, after it {} x 200 / {} x 503; \
         503s from {:.2} s to {:.2} s ({elsewhere} of them for keys on the other masters)",
        victim.port,
        kill_time.as_secs_f64(),
        promoted.as_secs_f64(),
        recovered.as_secs_f64(),
        count(Duration::ZERO, kill_time, 200),
        count(Duration::ZERO, kill_time, 503),
        count(kill_time, end, 200),
        count(kill_time, end, 503),
        first.map_or(0.0, |t| t.as_secs_f64()),
        last.map_or(0.0, |t| t.as_secs_f64()),
    );
    assert!(
        count(kill_time, end, 503) > 0,
        "the outage was not observed"
    );
    assert!(
        recovered - kill_time < Duration::from_secs(15),
        "recovery took {:?}",
        recovered - kill_time
    );
    assert!(count(recovered, end, 200) > 0);

    // Every 200 has its audit entry (a request answered 503 may have one
    // too: its last pipeline can land after its deadline).
    let answered = log.iter().filter(|(_, _, s)| *s == 200).fold(
        HashMap::<String, usize>::new(),
        |mut m, (_, k, _)| {
            *m.entry(k.clone()).or_default() += 1;
            m
        },
    );
    let audited = ok_entries(&audit_of(&admin, &project, 1).await);
    for (key_id, n) in &answered {
        let got = audited.get(key_id).copied().unwrap_or(0);
        // More than answered: the warm-up validation before the traffic.
        assert!(got > *n, "{key_id}: {n} answered 200, {got} audited ok");
    }
    assert_eq!(audited.get(&revoked.key_id), Some(&1), "only the warm-up");

    // Back to 3 + 3: the killed node restarts and rejoins as a replica.
    c.start_again(victim.port);
    let old = c.node(victim.port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = raw(&old, "INFO", args(&["replication"])).await;
        let info = info.ok().and_then(|v| v.as_string()).unwrap_or_default();
        if info.contains("role:slave") && info.contains("master_link_status:up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old master did not rejoin as a replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_sharded_audit_spreads_over_streams_and_activity_reads_them_all() {
    let _shared = EXCLUSIVE.read().await;
    let c = cluster();
    let app = c
        .app(|config| {
            config.audit_shards = 4;
            config.monitor_redis_url = Some(c.url("ops", OPS_PASSWORD).into());
        })
        .await;
    let project = app.project().await;
    let mut keys = Vec::new();
    for _ in 0..8 {
        keys.push(app.mint(&project, json!({})).await);
    }
    for _ in 0..3 {
        for key in &keys {
            assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
        }
    }
    assert_eq!(
        app.status(&keys[0].api_key[..20]).await,
        StatusCode::UNAUTHORIZED
    );

    let admin = c.admin().await;
    let mut streams_used = std::collections::BTreeSet::new();
    let mut masters = std::collections::BTreeSet::new();
    for stream in
        keyward::store::AuditStreams::new(keyward::config::AuditLayout::Shared, "keyward", 4)
            .keylookup_all()
    {
        masters.insert(c.master_of(&stream).await.port);
        let entries: Vec<(String, HashMap<String, String>)> =
            fred::prelude::StreamsInterface::xrange(&admin, &stream, "-", "+", None)
                .await
                .unwrap();
        for key in &keys {
            let n = entries
                .iter()
                .filter(|(_, f)| f["key_id"] == key.key_id)
                .count();
            if n > 0 {
                assert_eq!(n, 3, "all of a key's entries are in one stream");
                streams_used.insert(stream.clone());
            }
        }
    }
    eprintln!(
        "8 keys' audit entries in {streams_used:?}; the 4 streams live on masters {masters:?}"
    );
    assert!(streams_used.len() >= 2, "{streams_used:?}");
    assert_eq!(
        ok_entries(&audit_of(&admin, &project, 4).await)
            .values()
            .sum::<usize>(),
        24
    );

    let activity: Value = app
        .admin_get(&format!("/v1/activity?project_id={project}&limit=30"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(activity["totals"]["ok"], 24, "{activity}");
    assert_eq!(activity["complete"], true);
    let recent = activity["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 24);
    let times: Vec<f64> = recent.iter().map(|e| e["ts"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first across streams"
    );
}

#[tokio::test]
async fn keyward_migrate_finds_projects_on_every_master_and_converts_in_one_slot() {
    let _shared = EXCLUSIVE.read().await;
    let c = cluster();
    let admin = c.admin().await;
    let cmd = |command: &'static str, a: Vec<String>| {
        let admin = admin.clone();
        async move { raw(&admin, command, a).await.unwrap() }
    };
    let legacy_doc = |project: &str, key_id: &str| {
        json!({
            "key_id": key_id, "project_id": project, "owner": "legacy",
            "metadata": "{}", "secret_hash": "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA",
            "disabled": false, "created_at": 1_700_000_000.0, "expires_at": null,
        })
        .to_string()
    };
    // Six projects of the original service (plain-set indexes), on
    // whichever masters their names hash to, and one whose conversion was
    // interrupted between RENAME I B and RENAMENX Z I.
    let projects: Vec<String> = (0..6).map(|_| random_id("m")).collect();
    let ids = ["k_aaaaaaa", "k_bbbbbbb", "k_ccccccc"];
    for p in &projects {
        let doc = json!({ "project_id": p, "label": "L", "owner": "o" }).to_string();
        cmd("JSON.SET", vec![format!("project:{p}"), "$".into(), doc]).await;
        for id in ids {
            cmd(
                "JSON.SET",
                vec![format!("apikey:{p}:{id}"), "$".into(), legacy_doc(p, id)],
            )
            .await;
            cmd("SADD", vec![format!("apiprojectkeys:{p}"), id.into()]).await;
        }
    }
    let interrupted = random_id("m");
    let doc = json!({ "project_id": interrupted, "label": "L", "owner": "o" }).to_string();
    cmd(
        "JSON.SET",
        vec![format!("project:{interrupted}"), "$".into(), doc],
    )
    .await;
    for id in ids {
        cmd(
            "JSON.SET",
            vec![
                format!("apikey:{interrupted}:{id}"),
                "$".into(),
                legacy_doc(&interrupted, id),
            ],
        )
        .await;
    }
    let backup = format!("migrate:{{apiprojectkeys:{interrupted}}}:set");
    let building = format!("migrate:{{apiprojectkeys:{interrupted}}}:zset");
    cmd(
        "SADD",
        vec![backup.clone(), ids[0].into(), ids[1].into(), ids[2].into()],
    )
    .await;
    cmd(
        "ZADD",
        vec![
            building.clone(),
            "0".into(),
            ids[0].into(),
            "0".into(),
            ids[1].into(),
        ],
    )
    .await;
    let mut masters = std::collections::BTreeSet::new();
    for p in &projects {
        masters.insert(c.master_of(&format!("project:{p}")).await.port);
    }

    let migrate = |apply: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command.arg("migrate").env(
            "KEYWARD_MIGRATE_REDIS_URL",
            c.url("migrator", MIGRATOR_PASSWORD),
        );
        if apply {
            command.arg("--apply");
        }
        command.output().unwrap()
    };
    let out = migrate(true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in projects.iter().chain([&interrupted]) {
        let index = format!("apiprojectkeys:{p}");
        assert_eq!(
            cmd("TYPE", vec![index.clone()])
                .await
                .as_string()
                .as_deref(),
            Some("zset"),
            "{p}\n{stdout}"
        );
        let members: Vec<String> = cmd("ZRANGE", vec![index, "0".into(), "-1".into()])
            .await
            .convert()
            .unwrap();
        assert_eq!(members, ids, "{p}");
        let doc = cmd(
            "JSON.GET",
            vec![format!("apikey:{p}:{}", ids[0]), "$.server_name".into()],
        )
        .await;
        assert_eq!(doc.as_string().as_deref(), Some("[\"\"]"), "{p}");
    }
    for key in [backup, building] {
        assert_eq!(cmd("EXISTS", vec![key]).await.as_u64(), Some(0));
    }
    eprintln!("migrate converted projects on masters {masters:?}");
    let again = String::from_utf8_lossy(&migrate(false).stdout).into_owned();
    assert!(again.contains("nothing to change"), "{again}");
}

/// Waits until the cluster is whole: `cluster_state:ok` and every replica's
/// link to its master up (a replica that never synced cannot be promoted).
pub(crate) async fn wait_until_whole(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = c.nodes().await;
        let mut whole = nodes.len() == 6 && nodes.iter().all(|n| !n.failed);
        for n in nodes.iter().filter(|n| !n.master) {
            let info = raw(&c.node(n.port).await, "INFO", args(&["replication"])).await;
            let info = info.ok().and_then(|v| v.as_string()).unwrap_or_default();
            whole &= info.contains("master_link_status:up");
        }
        if whole {
            let any = c.node(nodes[0].port).await;
            let info = raw(&any, "CLUSTER", args(&["INFO"])).await;
            let info = info.ok().and_then(|v| v.as_string()).unwrap_or_default();
            if info.contains("cluster_state:ok") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not become whole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fault matrix's failover row: each master in turn is killed while
/// keys of every kind are validated on both failsafe modes. A key a read
/// refused is never 200, a plain 200 always has its audit entry, nothing is
/// a 500, and every instance recovers by itself.
#[tokio::test]
async fn each_master_failing_over_in_turn_never_passes_a_refused_key() {
    use crate::fault_matrix::{classify, mint_every_kind, Expect, Kind};
    let _exclusive = EXCLUSIVE.write().await;
    let c = cluster();
    wait_until_whole(c).await;
    let apps = [
        c.app(|_| {}).await,
        c.app(|c| c.failsafe = keyward::config::Failsafe::Open)
            .await,
    ];
    let project = apps[0].project().await;
    let admin = c.admin().await;
    let probes = mint_every_kind(&[&apps[0].client, &apps[1].client], &project, &admin).await;
    let passes = Mutex::new(HashMap::<String, usize>::new());
    let check = |during: bool| {
        let (apps, probes, passes) = (&apps, &probes, &passes);
        async move {
            let mut all_exact = true;
            for (i, app) in apps.iter().enumerate() {
                let open = i == 1;
                for probe in probes {
                    let r = app
                        .http
                        .post(app.url("/v1/validate-key"))
                        .json(&probe.body)
                        .send()
                        .await
                        .unwrap();
                    let (got, text) = classify(r).await;
                    let allowed = match during {
                        true => probe.during_outage(open),
                        false => vec![probe.refusal()],
                    };
                    let what =
                        format!("{}, {:?}", if open { "open" } else { "closed" }, probe.kind);
                    assert!(
                        allowed.contains(&got),
                        "{what}: {got:?} not in {allowed:?}: {text}"
                    );
                    all_exact &= got == probe.refusal();
                    if got == Expect::Pass {
                        *passes
                            .lock()
                            .unwrap()
                            .entry(probe.key_id.clone())
                            .or_default() += 1;
                    }
                }
            }
            all_exact
        }
    };
    assert!(check(false).await, "before any failover");

    let mut killed = std::collections::HashSet::new();
    for round in 0..3 {
        wait_until_whole(c).await;
        let victim = c
            .nodes()
            .await
            .into_iter()
            .filter(|n| n.master && !killed.contains(&n.id))
            .min_by_key(|n| n.port)
            .expect("a master not killed yet");
        killed.insert(victim.id.clone());
        c.kill(victim.port);
        let started = Instant::now();
        // Probe until every answer is exactly the fault-free one again.
        let deadline = started + Duration::from_secs(30);
        let mut outage_seen = false;
        while !check(true).await {
            outage_seen = true;
            assert!(
                Instant::now() < deadline,
                "round {round}: no recovery in 30 s"
            );
        }
        assert!(outage_seen, "round {round}: the failover was not observed");
        eprintln!(
            "fault matrix: failover of master {} (round {round}): every answer exact again {} ms after the kill",
            victim.port,
            started.elapsed().as_millis()
        );
        // The killed node comes back as a replica of its successor.
        c.start_again(victim.port);
    }
    wait_until_whole(c).await;
    assert!(check(false).await, "after every failover");

    let audited = ok_entries(&audit_of(&admin, &project, 1).await);
    for (key_id, n) in passes.into_inner().unwrap() {
        let got = audited.get(&key_id).copied().unwrap_or(0);
        assert!(got >= n, "{key_id}: {n} plain 200s, {got} audited ok");
    }
    assert!(
        probes.iter().any(|p| p.kind == Kind::ValidWarm),
        "the matrix has a valid key"
    );
}

#[tokio::test]
async fn operators_work_across_the_shards_and_a_revoke_holds_on_every_instance() {
    let _shared = EXCLUSIVE.read().await;
    let c = cluster();
    let a = c.app(|_| {}).await;
    let b = c.app(|_| {}).await;
    let project = a.project().await;
    let r = a
        .admin_post(
            "/v1/admin/operators",
            &json!({ "name": "n", "role": "key_manager", "projects": [&project] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let op: Value = r.json().await.unwrap();
    let token = op["token"].as_str().unwrap();
    let mint = json!({ "project_id": &project, "owner": "o", "server_name": "s" });
    let r = b.post("/v1/mint-key", &mint, Some(token)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let projects: Value = b
        .get("/v1/admin/projects", Some(token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(projects["items"][0]["project_id"], project.as_str());
    let listed: Value = a
        .admin_get("/v1/admin/operators?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["operator_id"] == op["operator_id"]));

    let revoke = format!(
        "/v1/admin/operators/{}/revoke",
        op["operator_id"].as_str().unwrap()
    );
    assert_eq!(
        a.admin_post(&revoke, &Value::Null).await.status(),
        StatusCode::OK
    );
    let r = b.post("/v1/mint-key", &mint, Some(token)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Issue #36 on a cluster: a deployment with its own audit streams, sharded
/// over the masters, and its three users from `keyward acl` loaded on every
/// node: it validates, audits into `audit:<deployment>:keylookup:{i}`, shows
/// its activity and trail through its monitor user, and that user is
/// refused every other stream on every node.
#[tokio::test]
async fn a_deployments_own_audit_streams_work_sharded_on_a_cluster() {
    use keyward::acl::Deployment;
    use keyward::config::AuditLayout;
    let _exclusive = EXCLUSIVE.write().await;
    let c = cluster();
    let project = random_id("own");
    let name = random_id("gw-own-");
    let own = Deployment {
        name: &name,
        audit: AuditLayout::Deployment,
    };
    let users = [
        (format!("{name}-v"), Role::Validator),
        (format!("{name}-m"), Role::Manager),
        (format!("{name}-r"), Role::Monitor),
    ];
    let lines: Vec<String> = users
        .iter()
        .map(|(user, role)| rule(user, *role, &[&project], &["own-secret".into()], own).unwrap())
        .collect();
    let acl_file = c.dir.join("users.acl");
    let mut acl = std::fs::read_to_string(&acl_file).unwrap();
    acl.push_str(&(lines.join("\n") + "\n"));
    std::fs::write(&acl_file, acl).unwrap();
    local_sh(&["cluster-acl-load", c.dir.to_str().unwrap()], &[]).unwrap();
    let urls: Vec<String> = users.iter().map(|(u, _)| c.url(u, "own-secret")).collect();
    let app = {
        let (urls, name) = (urls.clone(), name.clone());
        c.app(move |config| {
            config.redis_url = urls[0].clone().into();
            config.admin_redis_url = Some(urls[1].clone().into());
            config.monitor_redis_url = Some(urls[2].clone().into());
            config.client_name = name;
            config.audit_layout = AuditLayout::Deployment;
            config.audit_shards = 3;
        })
        .await
    };
    assert_eq!(
        app.create_project(&project).await.status(),
        StatusCode::CREATED
    );
    let key = app.mint(&project, json!({})).await;
    assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    let activity: Value = crate::helpers::eventually("activity", || async {
        let r = app
            .admin_get(&format!("/v1/activity?project_id={project}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        (!body["recent"].as_array().unwrap().is_empty()).then_some(body)
    })
    .await;
    assert_eq!(activity["recent"][0]["key_id"], key.key_id);
    let trail = app.admin_get("/v1/admin/audit").await;
    assert_eq!(trail.status(), StatusCode::OK);
    assert!(trail.text().await.unwrap().contains(&key.key_id));
    let streams = keyward::store::AuditStreams::new(AuditLayout::Deployment, &name, 3);
    let shard = streams.keylookup(&project, &key.key_id);
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for &port in &c.ports {
        if c.pid(port).is_none() {
            continue;
        }
        let node = c.node_as(port, &users[2].0, "own-secret").await;
        for other in ["audit:keylookup", "audit:admin", "audit:other:admin"] {
            let err = raw(&node, "XLEN", args(&[other])).await.expect_err(other);
            assert!(err.starts_with("NOPERM"), "{port} {other}: {err}");
        }
        if let Err(e) = raw(&node, "XLEN", args(&[&shard])).await {
            assert!(e.starts_with("MOVED"), "{port}: {e}");
        }
    }
}
