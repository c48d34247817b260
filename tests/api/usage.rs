//! The usage record (issue #34): `GET /v1/admin/usage` against the statuses
//! the clients received, exactly, across instances and a graceful restart;
//! its buckets at hour, day and month boundaries on a test clock; its
//! retention; and its faults (bad ranges, scope, no monitor user, Redis
//! down, a Redis outage during traffic, a Redis stalled past a flush's
//! deadline, a cluster master killed and failed over after one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::Pool;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, eventually, expect, raw, template_user, wrong_secret, Binary, Client, Clock,
    Minted, TestApp, TestRedis, ADMIN_TOKEN, MANAGER_PASSWORD, OPS_PASSWORD, VALIDATOR_PASSWORD,
};

const MONITOR: &str = "usage-ops";
const MONITOR_PASSWORD: &str = "usage-ops-password";

/// A Redis whose extra user `usage-ops` is the template's `ops` (it reads
/// every usage record), and the environment that makes it keyward's
/// monitor.
fn redis_with_monitor() -> (Arc<TestRedis>, String) {
    let redis = Arc::new(TestRedis::start_with_acl(&template_user(
        "ops",
        MONITOR,
        MONITOR_PASSWORD,
    )));
    let url = redis.url(MONITOR, MONITOR_PASSWORD);
    (redis, url)
}

/// `GET /v1/admin/usage` as root, expecting 200.
async fn usage(client: &Client, query: &str) -> Value {
    let r = client.admin_get(&format!("/v1/admin/usage?{query}")).await;
    expect(r, StatusCode::OK).await
}

/// As [`usage`], or `None` while it is not answered 200 (Redis away).
async fn usage_answered(client: &Client, query: &str) -> Option<Value> {
    let r = client.admin_get(&format!("/v1/admin/usage?{query}")).await;
    if r.status() != StatusCode::OK {
        return None;
    }
    r.json().await.ok()
}

/// `from=…&to=…`: the two hours either side of now.
fn hours_around_now() -> String {
    let now = keyward::store::now() as u64;
    format!("from={}&to={}", now - 7_200, now + 7_200)
}

/// What the clients saw, by key: answers by status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    ok: u64,
    too_many: u64,
    invalid: u64,
}

/// A record's buckets summed: (ok, rate_limited + credits_exhausted, the
/// 401 reasons, cost).
fn totals(answer: &Value) -> Seen {
    let mut seen = Seen::default();
    for bucket in answer["buckets"].as_array().unwrap() {
        let counts = bucket["counts"].as_object().unwrap();
        let n = |name: &str| counts[name].as_u64().unwrap();
        seen.ok += n("ok");
        seen.too_many += n("rate_limited") + n("credits_exhausted");
        seen.invalid +=
            n("bad_secret") + n("disabled") + n("expired") + n("ip_not_allowed") + n("unreadable");
        assert_eq!(bucket["cost"], n("ok"), "every request cost 1: {bucket}");
    }
    seen
}

/// Validates `key` (or, every fourth time, a wrong secret of it) `rounds`
/// times on `client`; the answers by status (a request that got no answer,
/// as one cut by a shutdown, is not an answer).
async fn traffic(client: Client, key: Minted, rounds: usize) -> Seen {
    let mut seen = Seen::default();
    let wrong = wrong_secret(&key.api_key);
    for i in 0..rounds {
        let presented = if i % 4 == 3 { &wrong } else { &key.api_key };
        let Ok(r) = client
            .http
            .post(client.url("/v1/validate-key"))
            .json(&json!({ "api_key": presented }))
            .send()
            .await
        else {
            continue;
        };
        match r.status() {
            StatusCode::OK => seen.ok += 1,
            StatusCode::TOO_MANY_REQUESTS => seen.too_many += 1,
            StatusCode::UNAUTHORIZED => seen.invalid += 1,
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    seen
}

fn add(into: &mut Seen, more: &Seen) {
    into.ok += more.ok;
    into.too_many += more.too_many;
    into.invalid += more.invalid;
}

/// Sends SIGTERM to `bin` and waits for it to exit 0.
async fn terminate(bin: &mut Binary) {
    let pid = bin.process.0.id().to_string();
    crate::helpers::signal(&pid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = bin.process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keyward did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

/// The record of every key, and of the project, over the hours around now,
/// equals what the clients saw (polled: each instance flushes about once a
/// second); the day and month levels hold the same totals.
async fn record_matches(reader: &Client, project: &str, keys: &[Minted], seen: &[Seen]) {
    let mut all = Seen::default();
    seen.iter().for_each(|s| add(&mut all, s));
    let mut wanted: Vec<(Option<&str>, Seen)> = keys
        .iter()
        .zip(seen)
        .map(|(k, s)| (Some(k.key_id.as_str()), s.clone()))
        .collect();
    wanted.push((None, all));
    for (key_id, want) in &wanted {
        let [hours, days, months] = every_level(project, *key_id);
        eventually(&format!("the hours of {hours} to be {want:?}"), || async {
            (totals(&usage(reader, &hours).await) == *want).then_some(())
        })
        .await;
        for wide in [days, months] {
            assert_eq!(totals(&usage(reader, &wide).await), *want, "{wide}");
        }
    }
}

/// The usage queries of every level of `project`'s record (or its
/// `key_id`'s): the hours around now, the days and the months of 32 days
/// either side.
fn every_level(project: &str, key_id: Option<&str>) -> [String; 3] {
    let now = keyward::store::now() as u64;
    let key = key_id.map(|k| format!("&key_id={k}")).unwrap_or_default();
    let wide = format!("from={}&to={}", now - 86_400 * 32, now + 86_400 * 32);
    [
        format!(
            "project_id={project}{key}&{}&granularity=hour",
            hours_around_now()
        ),
        format!("project_id={project}{key}&{wide}&granularity=day"),
        format!("project_id={project}{key}&{wide}&granularity=month"),
    ]
}

/// Two keyward processes (started by `start`) validate three keys at once
/// (passes, 429s past a key's rate limit, 401s for wrong secrets); one of
/// them is stopped with SIGTERM in the middle of its traffic and started
/// again. The record then equals the clients' own tally, per key and per
/// project.
async fn exact_across_instances_and_a_restart<F, Fut>(start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Binary>,
{
    let mut first = start().await;
    let second = start().await;
    let project = crate::helpers::random_id("usage-");
    let mut keys = Vec::new();
    for _ in 0..3 {
        // 40 a minute over 300 validations: 429s for each key.
        keys.push(
            first
                .mint_creating(&project, json!({ "rate_limit_per_minute": 40 }))
                .await,
        );
    }
    let rounds = 50;
    let mut before = Vec::new();
    for key in &keys {
        for client in [&first.client, &second.client] {
            before.push(tokio::spawn(traffic(client.clone(), key.clone(), rounds)));
        }
    }
    // SIGTERM while the first instance is answering.
    tokio::time::sleep(Duration::from_millis(150)).await;
    terminate(&mut first).await;
    let mut seen = vec![Seen::default(); keys.len()];
    for (i, task) in before.into_iter().enumerate() {
        add(&mut seen[i / 2], &task.await.unwrap());
    }
    let restarted = start().await;
    let mut after = Vec::new();
    for key in &keys {
        for client in [&restarted.client, &second.client] {
            after.push(tokio::spawn(traffic(client.clone(), key.clone(), rounds)));
        }
    }
    for (i, task) in after.into_iter().enumerate() {
        add(&mut seen[i / 2], &task.await.unwrap());
    }
    for s in &seen {
        assert!(s.ok > 0 && s.too_many > 0 && s.invalid > 0, "a mix: {s:?}");
    }
    record_matches(&second, &project, &keys, &seen).await;
    record_matches(&restarted, &project, &keys, &seen).await;
}

#[tokio::test]
async fn the_record_equals_the_answers_across_instances_and_a_graceful_restart() {
    let (redis, monitor) = redis_with_monitor();
    let env = [("KEYWARD_MONITOR_REDIS_URL", monitor.as_str())];
    exact_across_instances_and_a_restart(|| Binary::start(&redis, &env)).await;
}

/// The same on the Redis Cluster (`cluster.rs`'s, shared): each hash is a
/// key of its own, on its own slot's master.
#[tokio::test]
async fn the_record_equals_the_answers_on_a_redis_cluster() {
    let _shared = crate::cluster::EXCLUSIVE.read().await;
    let c = crate::cluster::cluster();
    exact_across_instances_and_a_restart(|| on_the_cluster(c)).await;
}

/// keyward as a process of its own on the cluster, as the template's
/// validator and manager, with its `ops` user as the monitor.
async fn on_the_cluster(c: &crate::cluster::Cluster) -> Binary {
    let env = [
        ("KEYWARD_REDIS_URL", c.url("validator", VALIDATOR_PASSWORD)),
        (
            "KEYWARD_ADMIN_REDIS_URL",
            c.url("manager", MANAGER_PASSWORD),
        ),
        ("KEYWARD_MONITOR_REDIS_URL", c.url("ops", OPS_PASSWORD)),
        ("KEYWARD_CLIENT_NAME", "cluster-gateway".to_owned()),
    ];
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.envs(env);
    Binary::launch(&mut cmd, &[]).await
}

/// What the flusher logs when Redis did not take a flush.
const RETRIED: &str = "usage counts not written yet; retrying";

/// A master holding one of a key's record hashes is killed (SIGKILL) while
/// the key is validated. Its replica is told not to take over by itself,
/// and takes over (`CLUSTER FAILOVER TAKEOVER`) once a flush has failed: a
/// failover slower than a flush's 10 s deadline. What the failed flushes
/// held is kept and sent again to the new master, so the record ends with
/// every 200 the clients saw, at every level of the key's record and of
/// its project's, over by at most `keyward_usage_resent_total`. Meanwhile
/// each validation is a 200 or a 503. The key's document, minute counters
/// and audit stream are on other masters: its validations need the victim
/// only for the record.
///
/// The master is killed under traffic, so a flush may be in flight. What it
/// acknowledged it had also sent to its replica: Redis writes a reply and
/// the replication stream in the same turn of its event loop. A master
/// that dies with writes it answered but never sent on (a slow or broken
/// link to its replica) loses them, as docs/usage-plans.md says; this test
/// does not make that happen.
#[tokio::test]
async fn a_master_failing_over_loses_none_of_the_record() {
    use crate::cluster::{wait_until_whole, EXCLUSIVE};
    use keyward::config::AuditLayout;
    use keyward::store::{names, record::Span, AuditStreams, Granularity};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let _exclusive = EXCLUSIVE.write().await;
    let c = crate::cluster::cluster();
    wait_until_whole(c).await;
    let mut bin = on_the_cluster(c).await;
    let logs = bin.collect_logs();
    let project = crate::helpers::random_id("failover-");
    let streams = AuditStreams::new(AuditLayout::Shared, "keyward", 1);

    // A key whose record has a hash on a master that holds none of what
    // its validations read and write; each key tried is validated once.
    let mut validated = 0u64;
    let (key, victim) = loop {
        assert!(validated < 30, "no key's record has a master of its own");
        let key = bin
            .mint_creating(&project, json!({ "rate_limit_per_minute": 1_000_000 }))
            .await;
        bin.validate(&key.api_key, StatusCode::OK).await;
        validated += 1;
        let (p, k) = (project.as_str(), key.key_id.as_str());
        let now = keyward::store::now() as i64;
        let minute = now as u64 / 60;
        let mut busy = Vec::new();
        for name in [
            names::apikey(p, k),
            names::used(p, k, minute),
            names::used(p, k, minute + 1),
            streams.keylookup(p, k),
        ] {
            busy.push(c.master_of(&name).await.id);
        }
        let mut own = None;
        for level in [Granularity::Hour, Granularity::Day, Granularity::Month] {
            for key_id in [Some(k), None] {
                let hash = names::usage(p, key_id, &Span::at(level, now).name);
                let master = c.master_of(&hash).await;
                if !busy.contains(&master.id) {
                    own = Some(master);
                }
            }
        }
        if let Some(master) = own {
            break (key, master);
        }
    };
    let replica = c.replica_of(&victim).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (passed, unavailable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, key) = (bin.client.clone(), key.api_key.clone());
            let (stop, passed, unavailable) = (stop.clone(), passed.clone(), unavailable.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .post("/v1/validate-key", &json!({ "api_key": key }), None)
                        .await;
                    match r.status() {
                        StatusCode::OK => passed.fetch_add(1, Ordering::Relaxed),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            unavailable.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("the key answered {other}: {}", r.text().await.unwrap()),
                    };
                }
            })
        })
        .collect();
    // The replica is told not to take over by itself, so the outage
    // outlasts a flush's 10 s deadline; a few flushes reach the victim
    // first, then it dies mid-traffic.
    let replica_conn = c.node(replica.port).await;
    let no_failover = |on: &str| {
        let args = vec![
            "SET".into(),
            "cluster-replica-no-failover".into(),
            on.into(),
        ];
        raw(&replica_conn, "CONFIG", args)
    };
    no_failover("yes").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let logged_before = logs.lock().unwrap().len();
    c.kill(victim.port);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while !String::from_utf8_lossy(&logs.lock().unwrap()[logged_before..]).contains(RETRIED) {
        assert!(Instant::now() < deadline, "no flush failed in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = killed.elapsed();
    let takeover = vec!["FAILOVER".into(), "TAKEOVER".into()];
    raw(&replica_conn, "CLUSTER", takeover).await.unwrap();
    no_failover("no").await.unwrap();
    c.wait_promoted(&replica).await;
    let promoted = killed.elapsed();
    let before = passed.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while passed.load(Ordering::Relaxed) < before + 500 {
        assert!(Instant::now() < deadline, "keyward did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a validation answered neither 200 nor 503");
    }
    // Back to 3 + 3 before anything can fail: the old master rejoins as a
    // replica.
    c.start_again(victim.port);

    // Every level of the key's record and of its project's: the victim
    // holds one of these six hashes.
    let answered = passed.load(Ordering::Relaxed) + 1;
    let wanted = [
        (Some(key.key_id.as_str()), answered),
        (None, answered + validated - 1),
    ];
    for (key_id, answered) in wanted {
        for query in every_level(&project, key_id) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let recorded = loop {
                let recorded = usage_answered(&bin, &query).await.map(|a| totals(&a).ok);
                if recorded >= Some(answered) {
                    break recorded.unwrap();
                }
                assert!(
                    Instant::now() < deadline,
                    "{query}: {recorded:?} recorded, {answered} answered 200"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let resent = bin.metric("keyward_usage_resent_total").await as u64;
            eprintln!(
                "{query}: master {} killed, a flush failed after {failed:?}, \
                 its replica promoted after {promoted:?}; \
             {answered} answered 200 ({} 503s), {recorded} recorded, {resent} resent",
                victim.port,
                unavailable.load(Ordering::Relaxed)
            );
            assert!(
                recorded <= answered + resent,
                "{query}: {recorded} recorded, {answered} answered 200, {resent} resent"
            );
        }
    }
    wait_until_whole(c).await;
}

/// 2026-12-31T23:59:50Z: ten seconds before an hour, a day, a month and a
/// year end (in the future, so the record's expiries are too).
const EVE: i64 = 1_798_761_590;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// `(start, ok, bad_secret, cost)` of each bucket.
fn buckets(answer: &Value) -> Vec<(i64, u64, u64, u64)> {
    answer["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_i64().unwrap(),
                b["counts"]["ok"].as_u64().unwrap(),
                b["counts"]["bad_secret"].as_u64().unwrap(),
                b["cost"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Validations ten seconds before midnight on 31 December and five seconds
/// after land in the hour, day and month each happened in, for the key and
/// for its project; each hash expires its retention setting after its span.
#[tokio::test]
async fn buckets_split_at_the_hour_the_day_and_the_month_and_expire_as_set() {
    let (redis, monitor) = redis_with_monitor();
    let clock = Clock::real();
    clock.set((EVE - HOUR) as f64);
    let env = [
        ("KEYWARD_MONITOR_REDIS_URL", monitor.as_str()),
        ("KEYWARD_USAGE_HOURS_KEPT_DAYS", "2"),
        ("KEYWARD_USAGE_DAYS_KEPT_DAYS", "30"),
        ("KEYWARD_USAGE_MONTHS_KEPT", "14"),
    ];
    let app = Binary::start_on(&clock, &redis, &env).await;
    let project = crate::helpers::random_id("eve-");
    let key = app.mint_creating(&project, json!({})).await;
    clock.set(EVE as f64);
    for _ in 0..3 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    // A request of cost 5: 5 in `cost`, 1 in `ok`.
    let body = json!({ "api_key": key.api_key, "cost": 5 });
    expect(
        app.post("/v1/validate-key", &body, None).await,
        StatusCode::OK,
    )
    .await;
    clock.set((EVE + 15) as f64);
    app.validate(&key.api_key, StatusCode::OK).await;
    app.validate(&wrong_secret(&key.api_key), StatusCode::UNAUTHORIZED)
        .await;

    let new_year = EVE + 10;
    let december = new_year - 31 * DAY;
    let wanted = [
        ("hour", new_year - HOUR, new_year + HOUR, new_year - HOUR),
        ("day", new_year - DAY, new_year + DAY, new_year - DAY),
        ("month", december, new_year + 31 * DAY, december),
    ];
    for key_id in [format!("&key_id={}", key.key_id), String::new()] {
        for (granularity, from, to, before) in wanted {
            let query = format!(
                "project_id={project}{key_id}&from={from}&to={to}&granularity={granularity}"
            );
            let answer = eventually(&format!("{query}: two buckets"), || async {
                let answer = usage(&app, &query).await;
                (buckets(&answer).iter().map(|b| b.1).sum::<u64>() == 5).then_some(answer)
            })
            .await;
            assert_eq!(
                buckets(&answer),
                [(before, 4, 0, 8), (new_year, 1, 1, 1)],
                "{query}: {answer}"
            );
            assert_eq!(answer["granularity"], granularity);
            let expected_key = match key_id.is_empty() {
                true => Value::Null,
                false => json!(key.key_id),
            };
            assert_eq!(answer["key_id"], expected_key);
            // A range that starts after the first bucket leaves it out.
            let later = format!(
                "project_id={project}{key_id}&from={new_year}&to={to}&granularity={granularity}"
            );
            assert_eq!(buckets(&usage(&app, &later).await), [(new_year, 1, 1, 1)]);
        }
    }

    // Retention: each span's end plus its setting, for the key's hashes and
    // the project's.
    let ops = redis.ops().await;
    let y2029 = 1_861_920_000; // 2029-01-01T00:00:00Z
    let expiries = [
        ("hours:2026123112", new_year + 2 * DAY),
        ("hours:2027010100", new_year + DAY / 2 + 2 * DAY),
        ("days:20261221", new_year + 30 * DAY),
        ("days:20270101", new_year + 10 * DAY + 30 * DAY),
        // The end of 2026 plus 14 months: 2028-03-01.
        ("months:2026", 1_835_481_600),
        // The end of 2027 plus 14 months: 2029-03-01.
        ("months:2027", y2029 + 59 * DAY),
    ];
    for (span, at) in expiries {
        for name in [
            format!("apiusage:{project}:{}:{span}", key.key_id),
            format!("apiusage:{project}:{span}"),
        ] {
            let got = expire_time(&ops, &name).await;
            assert_eq!(got, at, "{name}");
        }
    }
}

/// Polls `probe` until it gives `Some`, for up to `secs` seconds: a flush
/// Redis did not answer waits for its own deadline (10 s) before the next.
async fn within<T, F, Fut>(secs: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `EXPIRETIME key` (Unix seconds; -2 for a missing key, -1 for none).
async fn expire_time(ops: &Pool, key: &str) -> i64 {
    let answer = raw(ops, "EXPIRETIME", vec![key.to_owned()]).await.unwrap();
    answer.as_i64().unwrap()
}

/// The answers a bad request gets: a range reversed or too long (422,
/// naming the limit), a project outside the caller's (404, as one that does
/// not exist), no monitor user (409, saying what to set), Redis down (503).
#[tokio::test]
async fn bad_ranges_other_projects_no_monitor_and_redis_down_are_refused() {
    let (redis, monitor) = redis_with_monitor();
    let app = TestApp::spawn_with(redis.clone(), move |c| {
        c.monitor_redis_url = Some(monitor.into())
    })
    .await;
    let project = app.project().await;
    let other = app.project().await;
    let get = |query: String| {
        let app = &app;
        async move { app.admin_get(&format!("/v1/admin/usage?{query}")).await }
    };
    let base = format!("project_id={project}");
    let message = |body: Value| body["error"]["message"].as_str().unwrap().to_owned();

    let reversed = get(format!("{base}&from=200&to=100&granularity=hour")).await;
    let body = assert_error(
        reversed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(message(body).contains("after from"));
    let empty = get(format!("{base}&from=100&to=100&granularity=day")).await;
    assert_error(empty, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    // 1,000 hours is the most; 1,001 is refused, naming the limit.
    let most = get(format!(
        "{base}&from=0&to={}&granularity=hour",
        1_000 * HOUR
    ))
    .await;
    assert_eq!(expect(most, StatusCode::OK).await["buckets"], json!([]));
    let too_many = get(format!(
        "{base}&from=0&to={}&granularity=hour",
        1_001 * HOUR
    ))
    .await;
    let body = assert_error(
        too_many,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(message(body).contains("1000 buckets"));
    for bad in [
        format!("{base}&from=0&to=10&granularity=week"),
        format!("{base}&from=-1&to=10&granularity=day"),
        format!("{base}&key_id=not%20a%20key&from=0&to=10&granularity=day"),
        format!("{base}&from=0&granularity=day"),
    ] {
        let r = get(bad.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    // A viewer of `project` reads it; `other` is not found for it, as a
    // project that does not exist is for anyone.
    let created = app
        .admin_post(
            "/v1/admin/operators",
            &json!({ "name": "billing", "role": "viewer", "projects": [project] }),
        )
        .await;
    let token = expect(created, StatusCode::CREATED).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let range = "from=0&to=86400&granularity=day";
    let own = app
        .get(
            &format!("/v1/admin/usage?project_id={project}&{range}"),
            Some(&token),
        )
        .await;
    assert_eq!(
        expect(own, StatusCode::OK).await["project_id"],
        json!(project)
    );
    for (project_id, who) in [
        (&other, Some(token.as_str())),
        (&"nosuch".to_owned(), Some(ADMIN_TOKEN)),
    ] {
        let r = app
            .get(
                &format!("/v1/admin/usage?project_id={project_id}&{range}"),
                who,
            )
            .await;
        assert_error(r, StatusCode::NOT_FOUND, "project_not_found").await;
    }

    // Redis down: 503, never an empty series.
    redis.stop();
    let down = get(format!("{base}&{range}")).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    redis.restart();

    // Without a monitor user: 409, saying what to set.
    let plain = TestApp::spawn().await;
    let project = plain.project().await;
    let r = plain
        .admin_get(&format!("/v1/admin/usage?project_id={project}&{range}"))
        .await;
    let body = assert_error(r, StatusCode::CONFLICT, "usage_unavailable").await;
    assert!(message(body).contains("KEYWARD_MONITOR_REDIS_URL"));
}

/// Under `KEYWARD_FAILSAFE=open`, with Redis away, known keys still pass:
/// those 200s are counted in memory (`keyward_usage_pending` shows them)
/// and reach the record once Redis is back; nothing is lost.
#[tokio::test]
async fn a_redis_outage_during_traffic_loses_no_counts() {
    let (redis, monitor) = redis_with_monitor();
    let env = [
        ("KEYWARD_MONITOR_REDIS_URL", monitor.as_str()),
        ("KEYWARD_FAILSAFE", "open"),
    ];
    let app = Binary::start(&redis, &env).await;
    let project = crate::helpers::random_id("outage-");
    let key = app.mint_creating(&project, json!({})).await;
    for _ in 0..5 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    redis.stop();
    let mut during = 0;
    for _ in 0..5 {
        if app.status(&key.api_key).await == StatusCode::OK {
            during += 1;
        }
    }
    assert!(during > 0, "the failsafe answered some 200s");
    within(
        30,
        "keyward_usage_pending to show the owed counts",
        || async { (app.metric("keyward_usage_pending").await >= during as f64).then_some(()) },
    )
    .await;
    redis.restart();
    let query = format!(
        "project_id={project}&key_id={}&{}&granularity=hour",
        key.key_id,
        hours_around_now()
    );
    let want = Seen {
        ok: 5 + during,
        ..Seen::default()
    };
    let reads = within(30, "the record to hold every 200", || async {
        let answer = usage_answered(&app, &query).await?;
        (totals(&answer) == want).then_some(answer)
    })
    .await;
    assert_eq!(totals(&reads), want);
    assert_eq!(app.metric("keyward_usage_pending").await, 0.0);
}

/// A flush of more than one batch (256 commands) meets a Redis stalled
/// (SIGSTOP) past the record's command deadline (10 s): 100 keys' use
/// after the stall began is 303 `HINCRBY`s. Once Redis runs again the
/// record holds every 200 the clients got. A write whose answer was lost
/// (Redis ran it after the stall) is sent again and may count twice: the
/// project's series, and the keys' together, over-count by at most
/// `keyward_usage_resent_total`; Redis stays stopped until a flush has lost
/// its answers (resent > 0).
#[tokio::test]
async fn a_flush_stalled_past_its_deadline_loses_nothing_and_over_counts_at_most_what_it_resent() {
    const KEYS: u64 = 100;
    let (redis, monitor) = redis_with_monitor();
    let env = [
        ("KEYWARD_MONITOR_REDIS_URL", monitor.as_str()),
        ("KEYWARD_FAILSAFE", "open"),
        ("KEYWARD_REDIS_TIMEOUT_MS", "300"),
    ];
    let app = Binary::start(&redis, &env).await;
    let project = crate::helpers::random_id("stall-");
    let mut keys = vec![app.mint_creating(&project, json!({})).await];
    for _ in 1..KEYS {
        keys.push(app.mint(&project, json!({})).await);
    }
    for key in &keys {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    let range = format!("{}&granularity=hour", hours_around_now());
    // The 200s in the record of the project, or of one of its keys.
    let recorded = |key_id: Option<&str>| {
        let query = match key_id {
            Some(k) => format!("project_id={project}&key_id={k}&{range}"),
            None => format!("project_id={project}&{range}"),
        };
        let app = &app;
        async move { Some(totals(&usage_answered(app, &query).await?).ok) }
    };
    within(30, "the first use of every key in the record", || async {
        (recorded(None).await? == KEYS).then_some(())
    })
    .await;

    let pid = redis.pid().await;
    crate::helpers::signal(&pid, "-STOP");
    let answers = futures::future::join_all(keys.iter().map(|k| app.status(&k.api_key))).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::OK),
        "the failsafe passed each known key: {answers:?}"
    );
    // Stopped until a flush that took those counts has waited out the
    // record's 10 s deadline (its answers lost: Redis runs its writes once
    // it resumes). A fixed stall was not enough on a loaded machine: a
    // flush that began late was answered after the stall, resending nothing.
    within(40, "a flush to lose its answers to the stall", || async {
        (app.metric("keyward_usage_resent_total").await > 0.0).then_some(())
    })
    .await;
    crate::helpers::signal(&pid, "-CONT");

    let answered = 2 * KEYS;
    let by_project = within(40, "every 200 in the record", || async {
        let settled = app.metric("keyward_usage_pending").await == 0.0;
        let total = recorded(None).await?;
        (settled && total >= answered).then_some(total)
    })
    .await;
    let resent = app.metric("keyward_usage_resent_total").await as u64;
    let mut by_keys = 0;
    for key in &keys {
        let got = recorded(Some(&key.key_id)).await.expect("a key's record");
        assert!(got >= 2, "{} has {got} of its 2 200s", key.key_id);
        by_keys += got;
    }
    assert!(
        by_project - answered <= resent,
        "the project's record holds {by_project} for {answered} answered: over by more than the {resent} resent"
    );
    assert!(
        by_keys - answered <= resent,
        "the keys' records hold {by_keys} for {answered} answered: over by more than the {resent} resent"
    );
}

/// A validator whose ACL lacks the usage record (an ACL not regenerated
/// after an upgrade): the record's writes are dropped and counted, the
/// validations and `apimeta` go on as before.
#[tokio::test]
async fn a_validator_without_the_record_in_its_acl_drops_and_counts_its_writes() {
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[]).await;
    let key = app.mint_creating("alpha", json!({})).await;
    crate::helpers::set_validator_selectors(&redis, |s| {
        (!s.starts_with("~apiusage:")).then(|| s.to_owned())
    })
    .await;
    for _ in 0..3 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    app.usage_is("alpha", &key.key_id, 3).await;
    // Each of the 6 sums (hour, day, month; the key's, the project's).
    eventually("keyward_usage_dropped_total to count them", || async {
        (app.metric("keyward_usage_dropped_total").await >= 6.0).then_some(())
    })
    .await;
    assert!(app
        .metrics_text()
        .await
        .contains("keyward_usage_dropped_total{reason=\"noperm\"}"));
    // Dropped, not owed: nothing is pending.
    eventually("nothing pending", || async {
        (app.metric("keyward_usage_pending").await == 0.0).then_some(())
    })
    .await;
}

/// What Redis or another tool may do to the record and the plan: a hash
/// Redis lost (evicted, a restart from an older snapshot) and a later write
/// made again gets its expiry back within the hour; a field that is not a
/// count is dropped and counted, not sent again every second; a key whose
/// credits' `low_at` is no count still validates.
#[tokio::test]
async fn a_lost_hash_gets_its_expiry_again_and_odd_values_are_dropped_not_retried() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    // A minute into a half-day span: the hour hash stays the same one.
    let half_day = 1_798_761_600; // 2027-01-01T00:00:00Z
    clock.set(half_day as f64 + 60.0);
    let app = Binary::start_on(&clock, &redis, &[]).await;
    let key = app
        .mint_creating(
            "alpha",
            json!({ "credits": { "remaining": 10, "refill": null } }),
        )
        .await;
    let ops = redis.ops().await;
    let hours = format!("apiusage:alpha:{}:hours:2027010100", key.key_id);
    let ttl = |name: String| {
        let ops = ops.clone();
        async move {
            raw(&ops, "TTL", vec![name])
                .await
                .unwrap()
                .as_i64()
                .unwrap()
        }
    };
    app.validate(&key.api_key, StatusCode::OK).await;
    within(10, "the hour hash and its expiry", || async {
        (ttl(hours.clone()).await > 0).then_some(())
    })
    .await;

    // Lost, then written again: no expiry until this instance's memo of it
    // runs out (an hour), then the next write sets it again.
    raw(&ops, "DEL", vec![hours.clone()]).await.unwrap();
    app.validate(&key.api_key, StatusCode::OK).await;
    within(10, "the hash written again", || async {
        (ttl(hours.clone()).await == -1).then_some(())
    })
    .await;
    clock.set(half_day as f64 + 3_720.0);
    app.validate(&key.api_key, StatusCode::OK).await;
    within(10, "its expiry set again", || async {
        (ttl(hours.clone()).await > 0).then_some(())
    })
    .await;

    // A field another tool made no count: dropped and counted, not owed.
    raw(
        &ops,
        "HSET",
        vec![hours.clone(), "01:ok".into(), "x".into()],
    )
    .await
    .unwrap();
    app.validate(&key.api_key, StatusCode::OK).await;
    within(10, "the write dropped as not_a_count", || async {
        let text = app.metrics_text().await;
        text.contains("keyward_usage_dropped_total{reason=\"not_a_count\"}")
            .then_some(())
    })
    .await;
    within(10, "nothing pending", || async {
        (app.metric("keyward_usage_pending").await == 0.0).then_some(())
    })
    .await;

    // `low_at` another tool wrote as a string: the key still validates.
    let doc = format!("apikey:alpha:{}", key.key_id);
    let path = "$.credits.low_at".to_string();
    raw(&ops, "JSON.SET", vec![doc, path, "\"fifty\"".into()])
        .await
        .unwrap();
    app.validate(&key.api_key, StatusCode::OK).await;
}
