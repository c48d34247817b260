//! The fault matrix: each fault Redis can present, every kind of key, both
//! failsafe modes, with the answer class asserted.
//!
//! The rules: a key that a Redis read refused is never 200, in either mode;
//! a 200 without `X-Keyward-Failsafe` (the only kind fail-closed gives) has
//! its audit entry; under `KEYWARD_FAILSAFE=open` a 200 marked failsafe,
//! counted, goes only to a valid key whose document was read and secret
//! matched just now (writes failing), or, with reads failing, to the one
//! key this instance answered 200 lately and has not refused since (the
//! warm valid key: the revoked, expired, over-limit and scoped ones were
//! refused before the fault); everything else is a 503; nothing is ever a
//! 500; and keyward recovers by itself when the fault ends (the time it
//! took is printed).
//!
//! One test per fault, each with its own Redis and two keywards on it, one
//! per mode. A master failover on a cluster is in `cluster.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use fred::prelude::Pool;

use crate::helpers::{
    free_port, random_id, raw, set_validator_selectors, signal, wrong_secret, Binary, Client,
    TestApp, TestRedis, ADMIN_TOKEN,
};
use crate::proxy::Proxy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Redis is down: connections are refused.
    Refused,
    /// Redis is stopped (SIGSTOP): connections hang past the deadline.
    Hung,
    /// Every connection is cut after its request, before the reply.
    Cut,
    /// `maxmemory 1`, `noeviction`: every write answers `OOM`.
    OutOfMemory,
    /// Made a replica (`REPLICAOF` a master that is not there): writes
    /// answer `READONLY`.
    ReadOnly,
    /// The validator user loses `XADD` while keyward runs.
    NoXadd,
    /// The validator user loses `INCR` while keyward runs.
    NoIncr,
    /// The valid keys' use counters (and the wrong-secret counter) are hashes.
    CounterWrongType,
    /// `audit:keylookup` is a string.
    StreamWrongType,
}

impl Fault {
    /// Whether Redis still answers the validation path's reads.
    fn reads_work(self) -> bool {
        !matches!(self, Fault::Refused | Fault::Hung | Fault::Cut)
    }

    /// Whether Redis still takes audit entries.
    fn audit_works(self) -> bool {
        matches!(self, Fault::NoIncr | Fault::CounterWrongType)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Verified before by each instance (its secret is cached).
    ValidWarm,
    /// Never validated before the fault.
    ValidCold,
    /// Validated, then revoked: the cache still knows its secret.
    Revoked,
    /// `disabled: true` written by another tool.
    Disabled,
    /// Validated, then its `expires_at` moved into the past.
    Expired,
    WrongSecret,
    /// Over its limit, its secret cached by each instance.
    OverLimit,
    /// Over its limit, never validated: refused before any hashing.
    OverLimitCold,
    LacksScope,
    OutsideNetworks,
    Unknown,
    Malformed,
}

/// The answer class the matrix expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// 200, no failsafe header; an audit entry is written.
    Pass,
    /// 200 with `X-Keyward-Failsafe: open`; `doc_read`: with the key's own
    /// routing data (a document read now, or the one of its last 200).
    Failsafe { doc_read: bool },
    /// The key's own refusal.
    Refused(StatusCode, &'static str),
    /// 503 `unavailable`.
    Unavailable,
}

pub struct Probe {
    pub kind: Kind,
    pub key_id: String,
    pub body: Value,
}

impl Probe {
    pub fn refusal(&self) -> Expect {
        match self.kind {
            Kind::ValidWarm | Kind::ValidCold => Expect::Pass,
            Kind::OverLimit | Kind::OverLimitCold => {
                Expect::Refused(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Kind::LacksScope => Expect::Refused(StatusCode::FORBIDDEN, "insufficient_scope"),
            _ => Expect::Refused(StatusCode::UNAUTHORIZED, "invalid_key"),
        }
    }

    /// What this key gets from an instance in `open` or closed mode under
    /// `fault` (`None`: no fault).
    fn expect(&self, fault: Option<Fault>, open: bool) -> Expect {
        let refusal = self.refusal();
        let Some(fault) = fault else {
            return refusal;
        };
        if self.kind == Kind::Malformed {
            return refusal; // Decided before Redis.
        }
        if fault.reads_work() && refusal != Expect::Pass {
            return refusal; // A read refused it: that stands.
        }
        // Reads failing: only the last known good stands in.
        match open && (fault.reads_work() || self.kind == Kind::ValidWarm) {
            true => Expect::Failsafe { doc_read: true },
            false => Expect::Unavailable,
        }
    }
}

/// One Redis, a keyward in each failsafe mode, and a key of every kind.
struct Fixture {
    redis: Arc<TestRedis>,
    proxy: Option<Proxy>,
    /// Fail-closed, in this process.
    closed: TestApp,
    /// Fail-open, a process of its own, so its metrics are its own.
    open: Binary,
    project: String,
    probes: Vec<Probe>,
    /// Redis's process id, for `Hung` (`INFO` cannot answer once it is stopped).
    pid: String,
}

const MINUTE: u64 = 60;

fn minute_now() -> u64 {
    keyward::store::now() as u64 / MINUTE
}

/// Mints a key of every kind in `project` (through `apps[0]`), warms each
/// app's cache with those that had a valid past, then gives them their
/// state with `ops` (any client that may write every key).
pub async fn mint_every_kind(apps: &[&Client], project: &str, ops: &Pool) -> Vec<Probe> {
    let admin = apps[0];
    let p = project.to_owned();
    let mut probes = Vec::new();
    let mut add = |kind, key_id: &str, body: Value| {
        probes.push(Probe {
            kind,
            key_id: key_id.to_owned(),
            body,
        })
    };
    let warm = admin.mint(&p, json!({})).await;
    add(
        Kind::ValidWarm,
        &warm.key_id,
        json!({ "api_key": warm.api_key }),
    );
    add(
        Kind::WrongSecret,
        &warm.key_id,
        json!({ "api_key": wrong_secret(&warm.api_key) }),
    );
    let unknown_id = random_id("k_");
    let mut parts: Vec<&str> = warm.api_key.split('.').collect();
    parts[2] = &unknown_id;
    add(
        Kind::Unknown,
        &unknown_id,
        json!({ "api_key": parts.join(".") }),
    );
    add(Kind::Malformed, "", json!({ "api_key": "garbage" }));
    let cold = admin.mint(&p, json!({})).await;
    add(
        Kind::ValidCold,
        &cold.key_id,
        json!({ "api_key": cold.api_key }),
    );
    let revoked = admin.mint(&p, json!({})).await;
    add(
        Kind::Revoked,
        &revoked.key_id,
        json!({ "api_key": revoked.api_key }),
    );
    let disabled = admin.mint(&p, json!({})).await;
    add(
        Kind::Disabled,
        &disabled.key_id,
        json!({ "api_key": disabled.api_key }),
    );
    let expired = admin.mint(&p, json!({})).await;
    add(
        Kind::Expired,
        &expired.key_id,
        json!({ "api_key": expired.api_key }),
    );
    let over = admin.mint(&p, json!({ "rate_limit_per_minute": 2 })).await;
    add(
        Kind::OverLimit,
        &over.key_id,
        json!({ "api_key": over.api_key }),
    );
    let over_cold = admin.mint(&p, json!({ "rate_limit_per_minute": 2 })).await;
    add(
        Kind::OverLimitCold,
        &over_cold.key_id,
        json!({ "api_key": over_cold.api_key }),
    );
    let scoped = admin.mint(&p, json!({ "scopes": ["read"] })).await;
    add(
        Kind::LacksScope,
        &scoped.key_id,
        json!({ "api_key": scoped.api_key, "scopes": ["write"] }),
    );
    let bound = admin
        .mint(&p, json!({ "allowed_cidrs": ["10.0.0.0/8"] }))
        .await;
    add(
        Kind::OutsideNetworks,
        &bound.key_id,
        json!({ "api_key": bound.api_key, "client_ip": "192.0.2.1" }),
    );

    // Warm every instance's cache with each key that had a valid past.
    for &app in apps {
        for body in [
            json!({ "api_key": warm.api_key }),
            json!({ "api_key": revoked.api_key }),
            json!({ "api_key": expired.api_key }),
            json!({ "api_key": over.api_key }),
            json!({ "api_key": scoped.api_key }),
            json!({ "api_key": bound.api_key, "client_ip": "10.1.2.3" }),
        ] {
            let r = app.post("/v1/validate-key", &body, None).await;
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "warming: {}",
                r.text().await.unwrap()
            );
        }
    }
    let revoke = json!({ "project_id": p, "key_id": revoked.key_id });
    let r = admin
        .post("/v1/revoke-key", &revoke, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc = |key_id: &str| format!("apikey:{p}:{key_id}");
    let past = (keyward::store::now() - 10.0).to_string();
    let set = |key: String, path: &str, value: String| {
        raw(ops, "JSON.SET", vec![key, path.into(), value])
    };
    set(doc(&disabled.key_id), "$.disabled", "true".into())
        .await
        .unwrap();
    set(doc(&expired.key_id), "$.expires_at", past)
        .await
        .unwrap();
    // Far over their limit of 2, this minute and the next ten (longer than
    // any test here runs).
    let m = minute_now();
    for minute in m..m + 11 {
        for key_id in [&over.key_id, &over_cold.key_id] {
            let counter = format!("ratelimit:key:{p}:{key_id}:{minute}");
            let set = vec![counter, "1000".into(), "EX".into(), "900".into()];
            raw(ops, "SET", set).await.unwrap();
        }
    }
    probes
}

impl Fixture {
    async fn start(through_proxy: bool) -> Self {
        let redis = Arc::new(TestRedis::start());
        let proxy = match through_proxy {
            true => Some(Proxy::start(redis.port).await),
            false => None,
        };
        let proxied = proxy.as_ref().map(|p| {
            let direct = format!("127.0.0.1:{}", redis.port);
            redis
                .url("validator", crate::helpers::VALIDATOR_PASSWORD)
                .replace(&direct, &format!("127.0.0.1:{}", p.port))
        });
        let url = proxied.clone();
        let closed = TestApp::spawn_with(redis.clone(), move |c| {
            if let Some(url) = url {
                c.redis_url = url.into();
            }
        })
        .await;
        // With a pepper, so the matrix covers remembered verifications
        // too: their read in round trip 1 and their write in the finish.
        let pepper = redis.dir.join("pepper");
        std::fs::write(&pepper, "fault-matrix-pepper-0123456789abcdef\n").unwrap();
        let pepper = pepper.to_str().unwrap().to_owned();
        let mut env = vec![
            ("KEYWARD_FAILSAFE", "open"),
            ("KEYWARD_REDIS_TIMEOUT_MS", "500"),
            ("KEYWARD_VERIFY_PEPPER_FILE", &pepper),
        ];
        if let Some(url) = &proxied {
            env.push(("KEYWARD_REDIS_URL", url));
        }
        let open = Binary::start(&redis, &env).await;
        let project = closed.project().await;
        let mut fixture = Fixture {
            redis,
            proxy,
            closed,
            open,
            project,
            probes: Vec::new(),
            pid: String::new(),
        };
        fixture.pid = fixture.redis.pid().await;
        fixture.mint_every_kind().await;
        fixture
    }

    async fn mint_every_kind(&mut self) {
        let ops = self.redis.ops().await;
        self.probes = mint_every_kind(&self.gateways(), &self.project, &ops).await;
    }

    /// `[closed, open]`.
    fn gateways(&self) -> [&Client; 2] {
        [&self.closed.client, &self.open.client]
    }

    /// Sends every probe to both instances at once; checks each answer
    /// against the matrix. Returns the number of failsafe 200s.
    async fn check(&self, fault: Option<Fault>, skip_cold: bool) -> usize {
        let mut checks = Vec::new();
        for (i, app) in self.gateways().into_iter().enumerate() {
            let open = i == 1;
            for probe in &self.probes {
                if skip_cold && probe.kind == Kind::ValidCold {
                    continue;
                }
                let expect = probe.expect(fault, open);
                checks.push(async move {
                    let r = app.post("/v1/validate-key", &probe.body, None).await;
                    let what = format!(
                        "{fault:?}, {}, {:?}",
                        if open { "open" } else { "closed" },
                        probe.kind
                    );
                    assert_answer(r, expect, &what).await
                });
            }
        }
        futures::future::join_all(checks)
            .await
            .into_iter()
            .filter(|failsafe| *failsafe)
            .count()
    }

    /// How many `ok` audit entries the valid keys have.
    async fn audited_ok(&self) -> usize {
        let valid: Vec<&str> = self
            .probes
            .iter()
            .filter(|p| matches!(p.kind, Kind::ValidWarm | Kind::ValidCold))
            .map(|p| p.key_id.as_str())
            .collect();
        self.closed
            .audit("audit:keylookup")
            .await
            .iter()
            .filter(|e| e["result"] == "ok" && valid.contains(&e["key_id"].as_str()))
            .filter(|e| !e.contains_key("summary"))
            .count()
    }

    /// How many failsafe answers the summaries in the audit stream count.
    async fn audited_failsafe(&self) -> u64 {
        self.closed
            .audit("audit:keylookup")
            .await
            .iter()
            .filter(|e| e["reason"] == "failsafe_open" && e.contains_key("summary"))
            .map(|e| e["count"].parse::<u64>().unwrap())
            .sum()
    }

    fn key_id(&self, kind: Kind) -> &str {
        &self.probes.iter().find(|p| p.kind == kind).unwrap().key_id
    }

    fn counter_keys(&self) -> Vec<String> {
        let p = &self.project;
        let m = minute_now();
        let mut keys = Vec::new();
        for minute in m..m + 11 {
            for kind in [Kind::ValidWarm, Kind::ValidCold] {
                keys.push(format!("ratelimit:key:{p}:{}:{minute}", self.key_id(kind)));
            }
            let warm = self.key_id(Kind::ValidWarm);
            keys.push(format!("ratelimit:key:{p}:{warm}:bad:{minute}"));
        }
        keys
    }

    async fn apply(&self, fault: Fault) {
        let ops = self.redis.ops().await;
        let run = |cmd: &'static str, args: &[&str]| {
            raw(&ops, cmd, args.iter().map(|a| a.to_string()).collect())
        };
        match fault {
            Fault::Refused => self.redis.stop(),
            Fault::Hung => signal(&self.pid, "-STOP"),
            Fault::Cut => self.proxy.as_ref().unwrap().cut(true),
            Fault::OutOfMemory => {
                run("CONFIG", &["SET", "maxmemory-policy", "noeviction"])
                    .await
                    .unwrap();
                run("CONFIG", &["SET", "maxmemory", "1"]).await.unwrap();
            }
            Fault::ReadOnly => {
                let nowhere = free_port().to_string();
                run("REPLICAOF", &["127.0.0.1", &nowhere]).await.unwrap();
            }
            Fault::NoXadd => {
                set_validator_selectors(&self.redis, |s| {
                    (!s.contains("+xadd")).then(|| s.to_owned())
                })
                .await
            }
            Fault::NoIncr => {
                set_validator_selectors(&self.redis, |s| Some(s.replace(" +incr +incrby", "")))
                    .await
            }
            Fault::CounterWrongType => {
                for key in self.counter_keys() {
                    run("DEL", &[&key]).await.unwrap();
                    run("HSET", &[&key, "not", "a counter"]).await.unwrap();
                }
            }
            Fault::StreamWrongType => {
                run("RENAME", &["audit:keylookup", "saved-audit"])
                    .await
                    .unwrap();
                run("SET", &["audit:keylookup", "not a stream"])
                    .await
                    .unwrap();
            }
        }
    }

    async fn clear(&self, fault: Fault) {
        if fault == Fault::Refused {
            self.redis.restart();
            return;
        }
        if fault == Fault::Hung {
            signal(&self.pid, "-CONT");
            return;
        }
        let ops = self.redis.ops().await;
        let run = |cmd: &'static str, args: &[&str]| {
            raw(&ops, cmd, args.iter().map(|a| a.to_string()).collect())
        };
        match fault {
            Fault::Refused | Fault::Hung => unreachable!(),
            Fault::Cut => self.proxy.as_ref().unwrap().cut(false),
            Fault::OutOfMemory => {
                run("CONFIG", &["SET", "maxmemory", "0"]).await.unwrap();
            }
            Fault::ReadOnly => {
                run("REPLICAOF", &["NO", "ONE"]).await.unwrap();
            }
            Fault::NoXadd | Fault::NoIncr => {
                set_validator_selectors(&self.redis, |s| Some(s.to_owned())).await
            }
            Fault::CounterWrongType => {
                for key in self.counter_keys() {
                    run("DEL", &[&key]).await.unwrap();
                }
            }
            Fault::StreamWrongType => {
                run("DEL", &["audit:keylookup"]).await.unwrap();
                run("RENAME", &["saved-audit", "audit:keylookup"])
                    .await
                    .unwrap();
            }
        }
    }

    /// Polls each instance with the warm valid key until it passes again
    /// on every pooled connection (each request takes the pool's next one,
    /// so a run of passes twice the pool's size long covers them all); the
    /// time each took from `since`.
    async fn recovered(&self, since: Instant) -> [Duration; 2] {
        const IN_A_ROW: usize = 12;
        let body = &self.probes[0].body;
        assert_eq!(self.probes[0].kind, Kind::ValidWarm);
        let mut took = [Duration::ZERO; 2];
        for (i, app) in self.gateways().into_iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut in_a_row = 0;
            while in_a_row < IN_A_ROW {
                let r = app.post("/v1/validate-key", body, None).await;
                assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
                let pass =
                    r.status() == StatusCode::OK && r.headers().get("x-keyward-failsafe").is_none();
                in_a_row = if pass { in_a_row + 1 } else { 0 };
                assert!(Instant::now() < deadline, "instance {i} did not recover");
                if !pass {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            took[i] = since.elapsed();
        }
        took
    }
}

/// Asserts one answer; returns whether it was a failsafe 200.
async fn assert_answer(r: reqwest::Response, expect: Expect, what: &str) -> bool {
    let (got, text) = classify(r).await;
    assert_eq!(got, expect, "{what}: {text}");
    matches!(got, Expect::Failsafe { .. })
}

/// The class of an answer, and its body; panics on a 500 or on anything
/// outside the classes.
pub async fn classify(r: reqwest::Response) -> (Expect, String) {
    let status = r.status();
    let failsafe = r.headers().get("x-keyward-failsafe").cloned();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let got = match (status, code) {
        (StatusCode::OK, _) if failsafe.as_ref().is_some_and(|v| v == "open") => Expect::Failsafe {
            doc_read: body["owner"] == "alice",
        },
        (StatusCode::OK, _) if failsafe.is_none() && body["owner"] == "alice" => Expect::Pass,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable") => Expect::Unavailable,
        (StatusCode::UNAUTHORIZED, "invalid_key") => Expect::Refused(status, "invalid_key"),
        (StatusCode::FORBIDDEN, "insufficient_scope") => {
            Expect::Refused(status, "insufficient_scope")
        }
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited") => Expect::Refused(status, "rate_limited"),
        _ => panic!("an answer outside the matrix: {status} {failsafe:?} {text}"),
    };
    (got, text)
}

impl Probe {
    /// What this key may get while a Redis node is away (some reads and
    /// writes fail, others work): its own answer, or what a fault gives.
    pub fn during_outage(&self, open: bool) -> Vec<Expect> {
        let mut allowed = vec![self.refusal(), Expect::Unavailable];
        // Read and allowed, with the count or the audit entry missing (the
        // over-limit key's counter may be on the node that is away), or not
        // read and standing in as the last known good (the warm key).
        if open
            && matches!(
                self.kind,
                Kind::ValidWarm | Kind::ValidCold | Kind::OverLimit
            )
        {
            allowed.push(Expect::Failsafe { doc_read: true });
        }
        allowed
    }
}

/// `keyward_validations_unaudited_total` in `app`'s process: (failsafe
/// answers, refusals).
async fn unaudited(app: &Binary) -> (f64, f64) {
    let text = app.metrics_text().await;
    let mut counts = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("keyward_validations_unaudited_total{") else {
            continue;
        };
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        match rest.contains(r#"reason="failsafe_open""#) {
            true => counts.0 += value,
            false => counts.1 += value,
        }
    }
    counts
}

/// The whole matrix row of one fault: before, during, and after it.
async fn matrix(fault: Fault) {
    let f = Fixture::start(fault == Fault::Cut).await;
    f.check(None, true).await;
    // The 429s took their counts back: still exactly as set.
    let over = f.key_id(Kind::OverLimit);
    let counter = format!("ratelimit:key:{}:{over}:{}", f.project, minute_now());
    let ops = f.redis.ops().await;
    let count = raw(&ops, "GET", vec![counter]).await.unwrap();
    assert_eq!(
        count.as_string().as_deref(),
        Some("1000"),
        "a 429 kept its count"
    );

    let before = unaudited(&f.open).await;
    f.apply(fault).await;
    let failsafe_answers = f.check(Some(fault), false).await;
    let after = unaudited(&f.open).await;
    let started = Instant::now();
    f.clear(fault).await;
    let took = f.recovered(started).await;
    eprintln!(
        "fault matrix: {fault:?}: recovered in {} ms (closed), {} ms (open)",
        took[0].as_millis(),
        took[1].as_millis()
    );
    let expected = |class: fn(&Expect) -> bool| {
        f.probes
            .iter()
            .filter(|p| class(&p.expect(Some(fault), true)))
            .count()
    };
    let failsafe = expected(|e| matches!(e, Expect::Failsafe { .. }));
    assert_eq!(failsafe_answers, failsafe, "{fault:?}: failsafe 200s");
    // The open instance counted each failsafe answer, and each refusal
    // whose audit entry Redis did not take.
    let refusals = match fault.audit_works() {
        true => 0,
        false => expected(|e| matches!(e, Expect::Refused(..))),
    };
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (failsafe as f64, refusals as f64),
        "{fault:?}: unaudited answers counted (failsafe, refusals)"
    );

    // Every failsafe answer reaches the audit stream once Redis takes it.
    crate::helpers::eventually("the failsafe answers' summaries", || async {
        (f.audited_failsafe().await == failsafe as u64).then_some(())
    })
    .await;

    // After the fault: every key as before, every pass audited.
    let ok_before = f.audited_ok().await;
    f.check(None, false).await;
    let passes = 2 * 2; // Two valid keys on two instances.
    assert_eq!(
        f.audited_ok().await,
        ok_before + passes,
        "{fault:?}: a pass without its audit entry"
    );
}

#[tokio::test]
async fn fault_connection_refused() {
    matrix(Fault::Refused).await;
}

#[tokio::test]
async fn fault_redis_hung_past_the_deadline() {
    matrix(Fault::Hung).await;
}

#[tokio::test]
async fn fault_connection_cut_between_request_and_reply() {
    matrix(Fault::Cut).await;
}

#[tokio::test]
async fn fault_writes_refused_out_of_memory() {
    matrix(Fault::OutOfMemory).await;
}

#[tokio::test]
async fn fault_writes_refused_readonly_replica() {
    matrix(Fault::ReadOnly).await;
}

#[tokio::test]
async fn fault_validator_loses_xadd() {
    matrix(Fault::NoXadd).await;
}

#[tokio::test]
async fn fault_validator_loses_incr() {
    matrix(Fault::NoIncr).await;
}

#[tokio::test]
async fn fault_a_counter_of_the_wrong_type() {
    matrix(Fault::CounterWrongType).await;
}

#[tokio::test]
async fn fault_the_audit_stream_of_the_wrong_type() {
    matrix(Fault::StreamWrongType).await;
}
