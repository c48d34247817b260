//! Webhooks end to end: a real receiver (`tests/webhooks/receiver.py`)
//! checks every signature with the Standard Webhooks reference library
//! from PyPI, not our code, and answers what each test scripts (`Receiver`,
//! shared with `webhook_faults`).

use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use keyward::config::Schedule;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// The reference library's venv python, installed on first use.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/webhooks/install.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/webhooks/install.sh");
        assert!(out.status.success(), "tests/webhooks/install.sh failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// The receiver, on a loopback port, killed on drop.
pub(crate) struct Receiver {
    base: String,
    http: reqwest::Client,
    _process: KillOnDrop,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        Self::launch(&[]).await
    }

    /// As `start`, on `clock`: signatures are checked against the time a
    /// keyward on that clock signs with (the library allows 5 minutes).
    pub(crate) async fn start_on(clock: &Clock) -> Self {
        Self::launch(&clock.env()).await
    }

    async fn launch(env: &[(String, String)]) -> Self {
        let dir = std::env::temp_dir().join(random_id("keyward-receiver-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        let process = Command::new(python())
            .arg(repo().join("tests/webhooks/receiver.py"))
            .arg(&port_file)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start the receiver");
        let process = KillOnDrop(process);
        let port = eventually("the receiver's port", || {
            let port = std::fs::read_to_string(&port_file).ok();
            async move { port }
        })
        .await;
        Receiver {
            base: format!("http://127.0.0.1:{}", port.trim()),
            http: reqwest::Client::new(),
            _process: process,
            _dir: tempdir::Dir(dir),
        }
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    /// Scripts `name`: its secret, the statuses to answer in turn (then
    /// 200), and how long each answer waits.
    pub(crate) async fn script(
        &self,
        name: &str,
        secret: &str,
        statuses: &[u16],
        delays_ms: &[u64],
    ) {
        let body = json!({"secret": secret, "script": statuses, "delays_ms": delays_ms});
        let r = self
            .http
            .put(format!("{}/control/{name}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    /// What `name` received, in order.
    pub(crate) async fn seen(&self, name: &str) -> Vec<Value> {
        let url = format!("{}/control/{name}", self.base);
        let r = self.http.get(url).send().await.unwrap();
        r.json::<Vec<Value>>().await.unwrap()
    }

    /// Waits up to `secs` until `name` received something `ok` accepts.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        secs: u64,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let seen = self.seen(name).await;
            if ok(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "{name} received only {seen:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The event bodies `seen` holds of `kind`.
pub(crate) fn of_type<'a>(seen: &'a [Value], kind: &str) -> Vec<&'a Value> {
    seen.iter().filter(|r| body(r)["type"] == kind).collect()
}

pub(crate) fn body(record: &Value) -> Value {
    serde_json::from_str(record["body"].as_str().unwrap()).unwrap()
}

/// keyward that may post to loopback, retrying after 1 s twice.
async fn app_on(redis: Arc<TestRedis>, tweak: impl FnOnce(&mut keyward::Config)) -> TestApp {
    TestApp::spawn_with(redis, |c| {
        c.webhook_allow_private = true;
        c.webhook_retry_schedule = Schedule(vec![Duration::from_secs(1); 2]);
        c.webhook_timeout = Duration::from_secs(2);
        tweak(c);
    })
    .await
}

/// Registers an endpoint; answers its id and secret.
async fn register(app: &Client, url: &str, events: &[&str], projects: &[&str]) -> (String, String) {
    let body = json!({"url": url, "events": events, "projects": projects, "description": "test"});
    let r = app.admin_post("/v1/admin/webhooks", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    (created["webhook_id"].as_str().unwrap().to_owned(), secret)
}

async fn deliveries(app: &TestApp, webhook_id: &str) -> Vec<Value> {
    let r = app
        .admin_get(&format!("/v1/admin/webhooks/{webhook_id}/deliveries"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let out: Value = r.json().await.unwrap();
    out["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn key_changes_arrive_signed_and_a_failing_endpoint_gets_the_same_message_until_it_answers_200(
) {
    let receiver = Receiver::start().await;
    let app = app_on(Arc::new(TestRedis::start()), |_| {}).await;
    let project = app.project().await;
    let (id, secret) = register(&app, &receiver.url("a"), &["*"], &[&project]).await;
    // Two failures, then 200.
    receiver.script("a", &secret, &[500, 500], &[]).await;

    // Listing never shows the secret.
    let listed = app
        .admin_get("/v1/admin/webhooks")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );

    let minted = app.mint(&project, json!({})).await;
    let seen = receiver.wait_for("a", 20, |s| s.len() >= 3).await;
    let created = of_type(&seen, "key.created");
    assert_eq!(created.len(), 3, "{seen:#?}");
    let message_id = created[0]["id"].as_str().unwrap();
    for (record, answered) in created.iter().zip([500, 500, 200]) {
        assert_eq!(record["verified"], true, "{record}");
        assert_eq!(record["id"], message_id, "one webhook-id across retries");
        assert_eq!(record["answered"], answered);
    }
    let event = body(created[0]);
    assert_eq!(event["data"]["project_id"], project.as_str());
    assert_eq!(event["data"]["key_id"], minted.key_id.as_str());
    assert_eq!(event["data"]["actor"], "root");
    assert!(
        event["timestamp"].as_str().unwrap().ends_with('Z'),
        "{event}"
    );
    let text = created[0]["body"].as_str().unwrap();
    assert!(
        !text.contains("sk-proj") && !text.contains("argon2"),
        "{text}"
    );

    // The attempts as the API shows them.
    let attempts = eventually("three recorded attempts", || async {
        let d = deliveries(&app, &id).await;
        (d.len() >= 3).then_some(d)
    })
    .await;
    let newest = &attempts[0];
    assert_eq!(newest["message_id"], message_id);
    assert_eq!(newest["attempt"], 3);
    assert_eq!(newest["delivered"], true);
    assert_eq!(newest["status_code"], 200);
    assert_eq!(attempts[2]["attempt"], 1);
    assert_eq!(attempts[2]["status_code"], 500);
    assert!(attempts[2]["next_attempt"].is_number(), "{attempts:#?}");
    assert_eq!(attempts[2]["given_up"], false);

    // Update, rotate, revoke: one event each.
    let key = json!({"project_id": project, "key_id": minted.key_id});
    let update = json!({"project_id": project, "key_id": minted.key_id, "owner": "bob"});
    assert_eq!(
        app.admin_post("/v1/update-key", &update).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.admin_post("/v1/rotate-key", &key).await.status(),
        StatusCode::CREATED
    );
    app.revoke(&project, &minted.key_id).await;
    let seen = receiver
        .wait_for("a", 10, |s| {
            !of_type(s, "key.revoked").is_empty()
                && !of_type(s, "key.rotated").is_empty()
                && !of_type(s, "key.updated").is_empty()
        })
        .await;
    for kind in ["key.updated", "key.rotated", "key.revoked"] {
        let got = of_type(&seen, kind);
        assert_eq!(got.len(), 1, "{kind}: {seen:#?}");
        assert_eq!(got[0]["verified"], true);
        assert_eq!(body(got[0])["data"]["key_id"], minted.key_id.as_str());
    }
}

#[tokio::test]
async fn gone_disables_an_endpoint_and_the_last_failure_gives_up() {
    let receiver = Receiver::start().await;
    let app = app_on(Arc::new(TestRedis::start()), |_| {}).await;
    let (gone, gone_secret) =
        register(&app, &receiver.url("gone"), &["webhook.test"], &["*"]).await;
    let (failing, failing_secret) =
        register(&app, &receiver.url("failing"), &["webhook.test"], &["*"]).await;
    receiver.script("gone", &gone_secret, &[410], &[]).await;
    receiver
        .script("failing", &failing_secret, &[500, 503, 502, 500], &[])
        .await;
    for id in [&gone, &failing] {
        let r = app
            .admin_post(&format!("/v1/admin/webhooks/{id}/test"), &json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }

    let given_up = |d: &[Value]| d.first().is_some_and(|a| a["given_up"] == true);
    let attempts = eventually("410 given up", || async {
        let d = deliveries(&app, &gone).await;
        given_up(&d).then_some(d)
    })
    .await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status_code"], 410);
    let listed: Value = app
        .admin_get("/v1/admin/webhooks")
        .await
        .json()
        .await
        .unwrap();
    let endpoint = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["webhook_id"] == gone.as_str())
        .unwrap()
        .clone();
    assert_eq!(endpoint["disabled"], true, "{endpoint}");
    // Disabled: a new test message is not sent.
    app.admin_post(&format!("/v1/admin/webhooks/{gone}/test"), &json!({}))
        .await;

    // Three attempts on the schedule (now, +1 s, +1 s), then given up.
    let attempts = eventually("the schedule given up", || async {
        let d = deliveries(&app, &failing).await;
        given_up(&d).then_some(d)
    })
    .await;
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert_eq!(attempts[0]["attempt"], 3);
    assert!(attempts[0]["next_attempt"].is_null());
    let seen = receiver.seen("failing").await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(seen
        .iter()
        .all(|r| r["verified"] == true && r["id"] == seen[0]["id"]));

    let gone_seen = receiver.wait_for("gone", 5, |_| true).await;
    let d = eventually("the disabled endpoint's second message dropped", || async {
        let d = deliveries(&app, &gone).await;
        (d.len() >= 2).then_some(d)
    })
    .await;
    assert_eq!(d[0]["error"], "the endpoint is disabled", "{d:#?}");
    assert_eq!(gone_seen.len(), 1, "nothing posted once disabled");
}

#[tokio::test]
async fn a_message_whose_instance_dies_mid_attempt_is_delivered_by_another() {
    let receiver = Receiver::start().await;
    let redis = Arc::new(TestRedis::start());
    // The first instance, a process of its own, to kill.
    let first = Binary::start(
        &redis,
        &[
            ("KEYWARD_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("KEYWARD_WEBHOOK_TIMEOUT_MS", "1000"),
            ("KEYWARD_CLIENT_NAME", "test-gateway"),
        ],
    )
    .await;
    let body = json!({"url": receiver.url("slow"), "events": ["webhook.test"], "projects": ["*"]});
    let r = first
        .post("/v1/admin/webhooks", &body, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let (id, secret) = (
        created["webhook_id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    // The first attempt hangs for 30 s: its instance is killed meanwhile.
    receiver.script("slow", &secret, &[], &[30_000]).await;
    let path = format!("/v1/admin/webhooks/{id}/test");
    let r = first.post(&path, &json!({}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let seen = receiver.wait_for("slow", 10, |s| !s.is_empty()).await;
    let mut first = first;
    first.process.0.kill().unwrap();
    let _ = first.process.0.wait();

    // Another instance takes the message over once it is stale (its
    // timeout and 5 s) and delivers it with the same webhook-id.
    let second = app_on(redis, |c| c.webhook_timeout = Duration::from_secs(1)).await;
    let again = receiver.wait_for("slow", 30, |s| s.len() >= 2).await;
    assert_eq!(again[1]["id"], seen[0]["id"], "{again:#?}");
    assert_eq!(again[1]["verified"], true);
    let d = deliveries(&second, &id).await;
    assert!(d.iter().any(|a| a["delivered"] == true), "{d:#?}");
}

#[tokio::test]
async fn anomalies_are_told_once_per_key_and_window() {
    let receiver = Receiver::start().await;
    let redis = Arc::new(TestRedis::start());
    // A process of its own, on a clock the test sets.
    let clock = Clock::real();
    let env = [
        ("KEYWARD_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("KEYWARD_BAD_SECRET_HASHES_PER_MINUTE", "3"),
    ];
    let app = Binary::start_on(&clock, &redis, &env).await;
    let project = app.project().await;
    let events = [
        "key.secret_attack",
        "key.rate_limited",
        "key.new_network",
        "key.credits_exhausted",
        "key.expiring",
    ];
    let (_, secret) = register(&app, &receiver.url("anomalies"), &events, &[&project]).await;
    receiver.script("anomalies", &secret, &[], &[]).await;
    // At the start of a minute: the floods stay in one.
    clock.start_of_minute(1.0);

    let attacked = app.mint(&project, json!({})).await;
    let wrong = wrong_secret(&attacked.api_key);
    for _ in 0..12 {
        assert_eq!(app.status(&wrong).await, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .mint(&project, json!({"rate_limit_per_minute": 2}))
        .await;
    for _ in 0..8 {
        app.status(&limited.api_key).await;
    }
    let short = app
        .mint(
            &project,
            json!({"credits": {"remaining": 1, "refill": null}}),
        )
        .await;
    for _ in 0..4 {
        app.status(&short.api_key).await;
    }
    let roaming = app.mint(&project, json!({})).await;
    for ip in [
        "203.0.113.7",
        "203.0.113.99",
        "198.51.100.9",
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
    ] {
        let body = json!({"api_key": roaming.api_key, "client_ip": ip});
        let r = app.post("/v1/validate-key", &body, None).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // key.expiring comes from the sweep, which an instance runs as it starts.
    let expiring = app
        .mint(
            &project,
            json!({"expires_at": keyward::store::now() + 2.0 * 86_400.0}),
        )
        .await;
    let _sweeper = Binary::start_on(&clock, &redis, &env).await;

    receiver
        .wait_for("anomalies", 15, |s| {
            events.iter().all(|kind| !of_type(s, kind).is_empty())
                && of_type(s, "key.new_network").len() >= 3
        })
        .await;
    // Late events would show up here.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen("anomalies").await;
    assert!(seen.iter().all(|r| r["verified"] == true));
    let key_of = |r: &&Value| body(r)["data"]["key_id"].as_str().unwrap().to_owned();
    let attack = of_type(&seen, "key.secret_attack");
    assert_eq!(attack.len(), 1, "one per key and minute: {attack:#?}");
    assert_eq!(key_of(&attack[0]), attacked.key_id);
    let limited_events = of_type(&seen, "key.rate_limited");
    assert_eq!(limited_events.len(), 1, "{limited_events:#?}");
    assert_eq!(key_of(&limited_events[0]), limited.key_id);
    assert_eq!(body(limited_events[0])["data"]["limit"], 2);
    let credits = of_type(&seen, "key.credits_exhausted");
    assert_eq!(credits.len(), 1, "{credits:#?}");
    assert_eq!(key_of(&credits[0]), short.key_id);
    let mut networks: Vec<String> = of_type(&seen, "key.new_network")
        .iter()
        .map(|r| body(r)["data"]["network"].as_str().unwrap().to_owned())
        .collect();
    networks.sort();
    assert_eq!(
        networks,
        ["198.51.100.0/24", "2001:db8:1:2::/64", "203.0.113.0/24"],
        "one per /24 or /64"
    );
    let notice = of_type(&seen, "key.expiring");
    assert_eq!(notice.len(), 1, "{notice:#?}");
    assert_eq!(key_of(&notice[0]), expiring.key_id);
    for record in &seen {
        let text = record["body"].as_str().unwrap();
        assert!(
            !text.contains("sk-proj") && !text.contains("argon2"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn internal_urls_are_refused_without_the_setting_and_unknown_endpoints_are_not_found() {
    let app = TestApp::spawn().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:0:127.0.0.1]/",
        "http://[::ffff:0:93.184.215.14]/",
        "ftp://93.184.215.14/",
        "not a url",
    ] {
        let body = json!({"url": url, "events": ["*"], "projects": ["*"]});
        let r = app.admin_post("/v1/admin/webhooks", &body).await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    let body =
        json!({"url": "http://93.184.215.14/hook", "events": ["key.nope"], "projects": ["*"]});
    let r = app.admin_post("/v1/admin/webhooks", &body).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    // A public address is accepted.
    let (id, _) = register(&app, "http://93.184.215.14/hook", &["key.revoked"], &["*"]).await;
    for missing in ["wh_AAAAAAAAAAAA", "nope"] {
        let r = app
            .http
            .delete(app.url(&format!("/v1/admin/webhooks/{missing}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::NOT_FOUND, "webhook_not_found").await;
        let r = app
            .admin_get(&format!("/v1/admin/webhooks/{missing}/deliveries"))
            .await;
        assert_error(r, StatusCode::NOT_FOUND, "webhook_not_found").await;
    }
    let r = app
        .http
        .delete(app.url(&format!("/v1/admin/webhooks/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Value = app
        .admin_get("/v1/admin/webhooks")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn credits_low_is_told_once_per_refill_interval_across_instances() {
    // Two processes on one clock the test sets, racing for the balance,
    // and a receiver on it too (a day ahead, as they sign).
    let clock = Clock::real();
    let receiver = Receiver::start_on(&clock).await;
    let redis = Arc::new(TestRedis::start());
    let env = [("KEYWARD_WEBHOOK_ALLOW_PRIVATE", "true")];
    let a = Binary::start_on(&clock, &redis, &env).await;
    let b = Binary::start_on(&clock, &redis, &env).await;
    let project = a.project().await;
    let events = ["key.credits_low", "key.credits_exhausted"];
    let (_, secret) = register(&a, &receiver.url("low"), &events, &[&project]).await;
    receiver.script("low", &secret, &[], &[]).await;
    // An hour into a UTC day: the day's interval has the rest of it.
    let day = (clock.now() / 86_400.0).floor() + 1.0;
    clock.set(day * 86_400.0 + 3_600.0);

    let daily = json!({"remaining": 20, "refill": {"interval": "day", "amount": 20}});
    let mut warned_credits = daily.clone();
    warned_credits["low_at"] = json!(10);
    let warned = a.mint(&project, json!({ "credits": warned_credits })).await;
    let silent = a.mint(&project, json!({ "credits": daily })).await;
    // 15 of each, at once, half through each instance: 20 -> 5, crossing
    // 10 in exactly one of them.
    let spends = (0..30).map(|i| {
        let instance = if i % 2 == 0 { &a } else { &b };
        let key = if i < 15 { &warned } else { &silent };
        instance.status(&key.api_key)
    });
    let statuses = futures::future::join_all(spends).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let first = receiver
        .wait_for("low", 15, |s| !of_type(s, "key.credits_low").is_empty())
        .await;

    // Back above low_at and below it again, once through each instance:
    // the same interval, so no second event (the marker in Redis, not only
    // the memo of the instance that told it, decides).
    for instance in [&a, &b] {
        let top_up = json!({"project_id": project, "key_id": warned.key_id, "amount": 6});
        let r = instance.admin_post("/v1/add-credits", &top_up).await;
        assert_eq!(expect(r, StatusCode::OK).await["remaining"], 11);
        for _ in 0..6 {
            assert_eq!(instance.status(&warned.api_key).await, StatusCode::OK);
        }
    }

    // The next day refills to 20: crossing 10 tells it again, once.
    clock.set((day + 1.0) * 86_400.0 + 60.0);
    for i in 0..11 {
        let instance = if i % 2 == 0 { &a } else { &b };
        assert_eq!(instance.status(&warned.api_key).await, StatusCode::OK);
    }
    receiver
        .wait_for("low", 15, |s| of_type(s, "key.credits_low").len() >= 2)
        .await;
    // Late or repeated events would show up here.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen("low").await;
    assert!(seen.iter().all(|r| r["verified"] == true), "{seen:#?}");
    let low = of_type(&seen, "key.credits_low");
    assert_eq!(low.len(), 2, "once per key and refill interval: {low:#?}");
    for (record, remaining) in low.iter().zip([9, 9]) {
        let data = &body(record)["data"];
        assert_eq!(
            data,
            &json!({
                "project_id": project,
                "key_id": warned.key_id,
                "credits_remaining": remaining,
                "low_at": 10,
            })
        );
    }
    assert_eq!(of_type(&first, "key.credits_low").len(), 1);
    assert!(
        of_type(&seen, "key.credits_exhausted").is_empty(),
        "no key ran out: {seen:#?}"
    );
}
