//! Webhooks under faults, each real and on 127.0.0.1: Redis killed while
//! a retry is pending (and restarted from its AOF) or restarted without
//! its data, the validator or the manager user refused the events stream
//! (`ACL SETUSER` while keyward runs), and an endpoint that hangs past
//! `KEYWARD_WEBHOOK_TIMEOUT_MS`.
//! keyward runs as its own process (`Binary`), so its metrics are its own
//! and its stderr is read for panics. The receiver is the one of
//! `webhooks.rs`, which checks every signature with the Standard Webhooks
//! reference library.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::Pool;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, raw, refusals, set_user_selectors, set_validator_selectors, Binary, Clock,
    TestRedis, ADMIN_TOKEN,
};
use crate::webhooks::{body, of_type, Receiver};

/// How long any one of these tests may take, whatever happens.
const LIMIT: Duration = Duration::from_secs(60);
const LOST: &str = "keyward_webhook_events_lost_total";
/// The streams' names for the default `KEYWARD_CLIENT_NAME`.
const EVENTS: &str = "webhookevents:keyward";
const RETRIES: &str = "webhookretry:keyward";
const QUEUE: &str = "webhookqueue:keyward";

/// Runs a test's body within [`LIMIT`].
async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test took longer than its limit");
}

/// A keyward process that may post to loopback, with `env`, on a clock of
/// its own; its stderr read into a buffer (so it never fills the pipe), to
/// look for panics.
struct Keyward {
    bin: Binary,
    clock: Clock,
    stderr: Arc<Mutex<String>>,
}

impl Keyward {
    async fn start(redis: &TestRedis, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("KEYWARD_WEBHOOK_ALLOW_PRIVATE", "true")];
        all.extend_from_slice(env);
        let clock = Clock::real();
        let mut bin = Binary::start_on(&clock, redis, &all).await;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = bin.process.0.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                sink.lock().unwrap().push_str(&text);
            }
        });
        Keyward { bin, clock, stderr }
    }

    /// `/health`'s status.
    async fn health(&self) -> StatusCode {
        let r = self.bin.http.get(format!("{}/health", self.bin.base));
        r.send().await.expect("keyward answers /health").status()
    }

    /// Panics if the process exited or panicked.
    fn assert_alive(&mut self) {
        let exited = self.bin.process.0.try_wait().unwrap();
        assert!(exited.is_none(), "keyward exited: {exited:?}");
        let logs = self.stderr.lock().unwrap();
        assert!(!logs.contains("panicked"), "keyward panicked:\n{logs}");
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.bin
            .http
            .get(format!("{}{path}", self.bin.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request reaches keyward")
    }

    /// Registers an endpoint for `events` of every project: its id and secret.
    async fn register(&self, url: &str, events: &[&str]) -> (String, String) {
        let body = json!({"url": url, "events": events, "projects": ["*"]});
        let r = self
            .bin
            .post("/v1/admin/webhooks", &body, Some(ADMIN_TOKEN))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let created: Value = r.json().await.unwrap();
        let field = |name: &str| created[name].as_str().unwrap().to_owned();
        (field("webhook_id"), field("secret"))
    }

    /// Sends the endpoint a `webhook.test` message.
    async fn test_message(&self, webhook_id: &str) {
        let path = format!("/v1/admin/webhooks/{webhook_id}/test");
        let r = self.bin.post(&path, &json!({}), Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }

    /// The endpoint's recorded attempts, newest first.
    async fn deliveries(&self, webhook_id: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/v1/admin/webhooks/{webhook_id}/deliveries"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let out: Value = r.json().await.unwrap();
        out["items"].as_array().unwrap().clone()
    }

    async fn revoke(&self, project: &str, key_id: &str) -> StatusCode {
        let body = json!({"project_id": project, "key_id": key_id});
        let r = self
            .bin
            .post("/v1/revoke-key", &body, Some(ADMIN_TOKEN))
            .await;
        r.status()
    }
}

/// A raw command's integer answer.
async fn int(ops: &Pool, cmd: &'static str, args: &[&str]) -> i64 {
    let args = args.iter().map(|a| a.to_string()).collect();
    raw(ops, cmd, args).await.unwrap().as_i64().unwrap_or(0)
}

/// The `audit:keylookup` entries of `key_id`.
async fn lookups(ops: &Pool, key_id: &str) -> Vec<HashMap<String, String>> {
    let entries: Vec<(String, HashMap<String, String>)> =
        fred::prelude::StreamsInterface::xrange(ops, "audit:keylookup", "-", "+", None)
            .await
            .unwrap();
    entries
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.get("key_id").map(String::as_str) == Some(key_id))
        .collect()
}

#[tokio::test]
async fn webhook_fault_a_retry_pending_through_a_redis_outage_is_delivered_once_redis_is_back() {
    bounded(async {
        let receiver = Receiver::start().await;
        let redis = TestRedis::start();
        // The AOF (`appendfsync always`) is what brings the retry back.
        let ops = redis.ops().await;
        let config = raw(&ops, "CONFIG", vec!["GET".into(), "appendonly".into()])
            .await
            .unwrap();
        let config: Vec<String> = config.convert().unwrap();
        assert_eq!(config, ["appendonly", "yes"]);
        let mut app = Keyward::start(
            &redis,
            &[
                ("KEYWARD_WEBHOOK_RETRY_SCHEDULE", "3s,1s"),
                ("KEYWARD_WEBHOOK_TIMEOUT_MS", "2000"),
            ],
        )
        .await;
        let (id, secret) = app.register(&receiver.url("a"), &["key.created"]).await;
        receiver.script("a", &secret, &[500], &[]).await;
        let minted = app.bin.mint_creating("alpha", json!({})).await;

        // The 500 is recorded and its retry waits in Redis, its queue entry done.
        let first = receiver.wait_for("a", 10, |s| !s.is_empty()).await;
        assert_eq!(first[0]["answered"], 500);
        assert_eq!(first[0]["verified"], true, "{first:#?}");
        let due = eventually("the retry scheduled", || async {
            let d = app.deliveries(&id).await;
            let due = d.first()?["next_attempt"].as_f64()?;
            let queued = int(&ops, "XLEN", &[QUEUE]).await;
            (int(&ops, "ZCARD", &[RETRIES]).await == 1 && queued == 0).then_some(due)
        })
        .await;
        assert!(due > keyward::store::now(), "the retry is not due yet");

        // Redis dies; the retry falls due while it is down, and keyward
        // keeps answering (503) and failing its ticks.
        redis.stop();
        let errors = app.bin.metric("keyward_redis_errors_total").await;
        eventually("the retry due during the outage", || async {
            let failing = app.bin.metric("keyward_redis_errors_total").await >= errors + 2.0;
            (failing && keyward::store::now() > due + 0.5).then_some(())
        })
        .await;
        assert_eq!(app.health().await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(receiver.seen("a").await.len(), 1, "nothing sent while down");

        // Back from its AOF: the retry is delivered, the same message.
        redis.restart();
        let seen = receiver.wait_for("a", 20, |s| s.len() >= 2).await;
        assert_eq!(seen.len(), 2, "{seen:#?}");
        assert_eq!(seen[1]["id"], seen[0]["id"], "the same webhook-id");
        assert_eq!(seen[1]["verified"], true, "{seen:#?}");
        assert_eq!(seen[1]["answered"], 200);
        assert_eq!(body(&seen[1])["type"], "key.created");
        assert_eq!(body(&seen[1])["data"]["key_id"], minted.key_id.as_str());
        let attempts = eventually("the delivery recorded", || async {
            let d = app.deliveries(&id).await;
            (d.len() >= 2).then_some(d)
        })
        .await;
        assert_eq!(attempts[0]["attempt"], 2, "{attempts:#?}");
        assert_eq!(attempts[0]["delivered"], true, "{attempts:#?}");
        assert_eq!(attempts[0]["message_id"], seen[0]["id"]);
        let ops = redis.ops().await;
        eventually("the retry and the queue emptied", || async {
            let left = int(&ops, "ZCARD", &[RETRIES]).await + int(&ops, "XLEN", &[QUEUE]).await;
            (left == 0).then_some(())
        })
        .await;
        eventually("/health 200 again", || async {
            (app.health().await == StatusCode::OK).then_some(())
        })
        .await;
        app.assert_alive();
    })
    .await
}

#[tokio::test]
async fn webhook_fault_a_validator_refused_the_events_stream_still_answers_429_and_counts_the_loss()
{
    bounded(async {
        let receiver = Receiver::start().await;
        let redis = TestRedis::start();
        let ops = redis.ops().await;
        let mut app = Keyward::start(&redis, &[]).await;
        let (_, secret) = app
            .register(&receiver.url("limits"), &["key.rate_limited"])
            .await;
        receiver.script("limits", &secret, &[], &[]).await;
        let limited = app
            .bin
            .mint_creating("alpha", json!({"rate_limit_per_minute": 1}))
            .await;
        let later = app
            .bin
            .mint_creating("alpha", json!({"rate_limit_per_minute": 1}))
            .await;
        // At the start of a minute: the rate limits' windows are minutes.
        app.clock.start_of_minute(1.0);
        assert_eq!(app.bin.status(&limited.api_key).await, StatusCode::OK);

        // XADD on the events stream refused; the audit streams kept.
        set_validator_selectors(&redis, |s| Some(s.replace(" %W~webhookevents:*", ""))).await;
        let lost = app.bin.metric(LOST).await;
        for _ in 0..3 {
            let r = app
                .bin
                .post(
                    "/v1/validate-key",
                    &json!({"api_key": limited.api_key}),
                    None,
                )
                .await;
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(r.headers().get("retry-after").is_some());
        }
        let refused = refusals(&ops, "validator", EVENTS).await;
        assert!(refused >= 1, "Redis refused the event's XADD");
        assert!(app.bin.metric(LOST).await > lost, "the loss is counted");
        let text = app.bin.metrics_text().await;
        assert!(
            text.lines()
                .any(|l| l.starts_with(LOST) && l.contains("key.rate_limited")),
            "{text}"
        );
        let audited = lookups(&ops, &limited.key_id).await;
        let refusals_audited = audited
            .iter()
            .filter(|e| e["result"] == "rate_limited" && e["reason"] == "rate_limited")
            .count();
        assert_eq!(refusals_audited, 3, "each 429 audited: {audited:#?}");

        // Restored: the first 429 of a window (another key's, as this
        // key's marker lasts the minute) is told.
        set_validator_selectors(&redis, |s| Some(s.to_owned())).await;
        assert_eq!(app.bin.status(&later.api_key).await, StatusCode::OK);
        assert_eq!(
            app.bin.status(&later.api_key).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        let seen = receiver
            .wait_for("limits", 10, |s| !of_type(s, "key.rate_limited").is_empty())
            .await;
        // Events are fanned out in order: the lost one would have come first.
        let told = of_type(&seen, "key.rate_limited");
        assert_eq!(told.len(), 1, "{seen:#?}");
        assert_eq!(told[0]["verified"], true);
        let event = body(told[0]);
        assert_eq!(event["data"]["key_id"], later.key_id.as_str());
        assert_eq!(event["data"]["limit"], 1);
        assert_eq!(
            refusals(&ops, "validator", EVENTS).await,
            refused,
            "no refusal once restored"
        );
        assert_eq!(app.health().await, StatusCode::OK);
        app.assert_alive();
    })
    .await
}

#[tokio::test]
async fn webhook_fault_a_manager_refused_the_events_stream_still_revokes_and_counts_the_loss() {
    bounded(async {
        let receiver = Receiver::start().await;
        let redis = TestRedis::start();
        let ops = redis.ops().await;
        let mut app = Keyward::start(&redis, &[]).await;
        let (_, secret) = app
            .register(&receiver.url("revoked"), &["key.revoked"])
            .await;
        receiver.script("revoked", &secret, &[], &[]).await;
        let first = app.bin.mint_creating("alpha", json!({})).await;
        let second = app.bin.mint_creating("alpha", json!({})).await;
        assert_eq!(app.bin.status(&first.api_key).await, StatusCode::OK);

        // The manager may read and acknowledge the events stream (the
        // worker runs on), not append to it; the queue is as shipped.
        let split = |s: &str| match s.strip_prefix("~webhookevents:* ~webhookqueue:* ") {
            Some(commands) => vec![
                format!("~webhookevents:* {}", commands.replace("+xadd ", "")),
                format!("~webhookqueue:* {commands}"),
            ],
            None => vec![s.to_owned()],
        };
        set_user_selectors(&redis, "manager", split).await;
        let lost = app.bin.metric(LOST).await;
        assert_eq!(app.revoke("alpha", &first.key_id).await, StatusCode::OK);
        assert_eq!(
            app.bin.status(&first.api_key).await,
            StatusCode::UNAUTHORIZED
        );
        let refused = refusals(&ops, "manager", EVENTS).await;
        assert!(refused >= 1, "Redis refused the event's XADD");
        assert!(app.bin.metric(LOST).await > lost, "the loss is counted");
        let admin: Vec<(String, HashMap<String, String>)> =
            fred::prelude::StreamsInterface::xrange(&ops, "audit:admin", "-", "+", None)
                .await
                .unwrap();
        assert!(
            admin.iter().any(|(_, e)| e["action"] == "key.revoke"
                && e["key_id"] == first.key_id
                && e["outcome"] == "ok"),
            "the revoke is audited: {admin:#?}"
        );

        // Restored: the next revoke is told, and only it.
        set_user_selectors(&redis, "manager", |s| vec![s.to_owned()]).await;
        assert_eq!(app.revoke("alpha", &second.key_id).await, StatusCode::OK);
        let seen = receiver
            .wait_for("revoked", 10, |s| !of_type(s, "key.revoked").is_empty())
            .await;
        let told = of_type(&seen, "key.revoked");
        assert_eq!(told.len(), 1, "{seen:#?}");
        assert_eq!(told[0]["verified"], true);
        assert_eq!(body(told[0])["data"]["key_id"], second.key_id.as_str());
        assert_eq!(
            app.bin.status(&second.api_key).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(app.health().await, StatusCode::OK);
        app.assert_alive();
    })
    .await
}

#[tokio::test]
async fn webhook_fault_an_endpoint_that_hangs_times_out_is_retried_and_blocks_no_other() {
    bounded(async {
        let receiver = Receiver::start().await;
        let redis = TestRedis::start();
        let mut app = Keyward::start(
            &redis,
            &[
                ("KEYWARD_WEBHOOK_TIMEOUT_MS", "3000"),
                ("KEYWARD_WEBHOOK_RETRY_SCHEDULE", "1s,1s"),
            ],
        )
        .await;
        let (slow, slow_secret) = app.register(&receiver.url("slow"), &["webhook.test"]).await;
        let (fast, fast_secret) = app.register(&receiver.url("fast"), &["webhook.test"]).await;
        // The first answer comes long after the timeout; the retry's at once.
        receiver.script("slow", &slow_secret, &[], &[20_000]).await;
        receiver.script("fast", &fast_secret, &[], &[]).await;

        app.test_message(&slow).await;
        let hanging = receiver.wait_for("slow", 10, |s| !s.is_empty()).await;
        // While that attempt hangs, another endpoint's message goes out.
        app.test_message(&fast).await;
        let fast_seen = receiver.wait_for("fast", 10, |s| !s.is_empty()).await;
        assert_eq!(fast_seen[0]["verified"], true);
        assert!(
            app.deliveries(&slow).await.is_empty(),
            "the hanging attempt was still under way"
        );
        let d = eventually("the fast delivery recorded", || async {
            let d = app.deliveries(&fast).await;
            (!d.is_empty()).then_some(d)
        })
        .await;
        assert_eq!(d[0]["delivered"], true, "{d:#?}");

        // The hanging attempt: failed, "timed out", retried with the same id.
        let attempts = eventually("the timed-out attempt and its retry", || async {
            let d = app.deliveries(&slow).await;
            (d.len() >= 2).then_some(d)
        })
        .await;
        let (timed_out, retried) = (&attempts[1], &attempts[0]);
        assert_eq!(timed_out["attempt"], 1, "{attempts:#?}");
        assert_eq!(timed_out["error"], "timed out", "{attempts:#?}");
        assert!(timed_out["status_code"].is_null(), "{attempts:#?}");
        assert_eq!(timed_out["delivered"], false);
        assert_eq!(timed_out["given_up"], false);
        assert!(timed_out["next_attempt"].is_number(), "{attempts:#?}");
        assert_eq!(retried["attempt"], 2);
        assert_eq!(retried["delivered"], true, "{attempts:#?}");
        let seen = receiver.seen("slow").await;
        assert_eq!(seen.len(), 2, "{seen:#?}");
        assert_eq!(seen[1]["id"], hanging[0]["id"], "the same webhook-id");
        assert!(seen.iter().all(|r| r["verified"] == true), "{seen:#?}");
        assert_eq!(app.health().await, StatusCode::OK);
        app.assert_alive();
    })
    .await
}

#[tokio::test]
async fn webhook_fault_a_redis_back_without_its_data_has_its_groups_made_again() {
    bounded(async {
        let receiver = Receiver::start().await;
        let redis = TestRedis::start();
        let mut app = Keyward::start(&redis, &[]).await;
        let (_, secret) = app.register(&receiver.url("a"), &["key.created"]).await;
        receiver.script("a", &secret, &[], &[]).await;
        app.bin.mint_creating("alpha", json!({})).await;
        receiver.wait_for("a", 10, |s| !s.is_empty()).await;

        // Back empty, as a Redis without persistence restarts (`redis/local.sh`
        // runs one): the streams and their groups are gone; keyward is not
        // restarted.
        redis.stop();
        std::fs::remove_dir_all(redis.dir.join("appendonlydir")).unwrap();
        redis.restart();
        let ops = redis.ops().await;
        assert_eq!(int(&ops, "EXISTS", &[EVENTS, QUEUE]).await, 0);
        eventually("/health 200 again", || async {
            (app.health().await == StatusCode::OK).then_some(())
        })
        .await;

        // The next event goes through both streams, their groups made again.
        let (_, secret) = app.register(&receiver.url("b"), &["key.created"]).await;
        receiver.script("b", &secret, &[], &[]).await;
        let minted = app.bin.mint_creating("alpha", json!({})).await;
        let seen = receiver.wait_for("b", 10, |s| !s.is_empty()).await;
        assert_eq!(seen[0]["verified"], true, "{seen:#?}");
        assert_eq!(body(&seen[0])["data"]["key_id"], minted.key_id.as_str());
        assert_eq!(app.health().await, StatusCode::OK);
        app.assert_alive();
    })
    .await
}
