//! The writes a validation leaves behind, under faults: the usage the
//! store's flusher writes to `apimeta`, a counted use settled after a 503,
//! and a verified secret's digest in `apiverify`. Each fault is real: the
//! validator user's ACL cut down while keyward runs (`ACL SETUSER`), or
//! Redis killed. Each test waits for the event that shows the write was
//! tried and refused (`ACL LOG`, or keyward's error count) before it ends
//! the fault, then polls for the state Redis must be left in.

use std::collections::HashMap;

use fred::prelude::Pool;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    eventually, raw, refusals, set_validator_selectors, Binary, TestApp, TestRedis,
};

/// Waits until Redis has refused the validator `object` `times` times.
async fn refused(ops: &Pool, object: &str, times: i64) {
    eventually(&format!("{object} refused {times} times"), || async {
        (refusals(ops, "validator", object).await >= times).then_some(())
    })
    .await
}

/// Validates `api_key` `n` times on `app`, each a 200.
async fn pass(app: &Binary, api_key: &str, n: usize) {
    for _ in 0..n {
        app.validate(api_key, StatusCode::OK).await;
    }
}

/// The validator's selectors without the one on `apimeta`.
fn without_apimeta(selector: &str) -> Option<String> {
    (!selector.starts_with("~apimeta:")).then(|| selector.to_owned())
}

fn restored(selector: &str) -> Option<String> {
    Some(selector.to_owned())
}

#[tokio::test]
async fn fault_usage_that_redis_refuses_is_kept_and_written_once_when_taken() {
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[]).await;
    let key = app.mint_creating("alpha", json!({})).await;
    let ops = redis.ops().await;
    pass(&app, &key.api_key, 1).await;
    app.usage_is("alpha", &key.key_id, 1).await;

    // HINCRBY and HSET refused: nothing written, and tried again. (Redis
    // logs the key, not the command: the validator may HINCRBY the usage
    // record.)
    let meta = format!("apimeta:alpha:{}", key.key_id);
    set_validator_selectors(&redis, without_apimeta).await;
    let before = keyward::store::now();
    pass(&app, &key.api_key, 5).await;
    refused(&ops, &meta, 2).await;
    let held = app.usage_is("alpha", &key.key_id, 1).await;
    assert!(held["last_used"].as_f64().unwrap() < before, "{held}");
    set_validator_selectors(&redis, restored).await;
    let got = app.usage_is("alpha", &key.key_id, 6).await;
    assert!(got["last_used"].as_f64().unwrap() >= before, "{got}");

    // HSET alone refused: the count goes in once, the time is tried again.
    let refused_before = refusals(&ops, "validator", &meta).await;
    set_validator_selectors(&redis, |s| match s.starts_with("~apimeta:") {
        true => Some(s.replace(" +hset", "")),
        false => Some(s.to_owned()),
    })
    .await;
    let before = keyward::store::now();
    pass(&app, &key.api_key, 3).await;
    refused(&ops, &meta, refused_before + 2).await;
    let held = app.usage_is("alpha", &key.key_id, 9).await;
    assert!(held["last_used"].as_f64().unwrap() < before, "{held}");
    set_validator_selectors(&redis, restored).await;
    eventually("last_used written", || async {
        let got = app.usage_is("alpha", &key.key_id, 9).await;
        (got["last_used"].as_f64().unwrap() >= before).then_some(())
    })
    .await;
    pass(&app, &key.api_key, 1).await;
    app.usage_is("alpha", &key.key_id, 10).await;
}

#[tokio::test]
async fn fault_usage_pending_through_a_redis_outage_is_written_exactly_once() {
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[]).await;
    let key = app.mint_creating("alpha", json!({})).await;
    let ops = redis.ops().await;
    // Held back (refused) first, so that uses are pending when Redis dies.
    set_validator_selectors(&redis, without_apimeta).await;
    pass(&app, &key.api_key, 4).await;
    refused(&ops, &format!("apimeta:alpha:{}", key.key_id), 1).await;

    redis.stop();
    let errors = app.metric("keyward_redis_errors_total").await;
    eventually("flushes failing while Redis is down", || async {
        let now = app.metric("keyward_redis_errors_total").await;
        (now >= errors + 3.0).then_some(())
    })
    .await;
    // Back from its AOF, with the ACL file's rules: apimeta may be written.
    redis.restart();
    app.usage_is("alpha", &key.key_id, 4).await;
    pass(&app, &key.api_key, 1).await;
    app.usage_is("alpha", &key.key_id, 5).await;
}

/// Every use counter of `key_id` (not the wrong-secret ones): its value and TTL.
async fn counters(ops: &Pool, project: &str, key_id: &str) -> Vec<(i64, i64)> {
    let pattern = format!("ratelimit:key:{project}:{key_id}:*");
    let names: Vec<String> = raw(ops, "KEYS", vec![pattern])
        .await
        .unwrap()
        .convert()
        .unwrap();
    let mut found = Vec::new();
    for name in names.into_iter().filter(|n| !n.contains(":bad:")) {
        let value = raw(ops, "GET", vec![name.clone()]).await.unwrap();
        let ttl = raw(ops, "TTL", vec![name]).await.unwrap();
        found.push((value.convert().unwrap(), ttl.as_i64().unwrap()));
    }
    found
}

/// The sum of `key_id`'s use counters, if every one of them expires.
async fn settled_count(ops: &Pool, project: &str, key_id: &str) -> Option<i64> {
    let found = counters(ops, project, key_id).await;
    found
        .iter()
        .all(|&(_, ttl)| ttl > 0)
        .then(|| found.iter().map(|&(n, _)| n).sum())
}

#[tokio::test]
async fn fault_a_use_counted_before_a_503_is_settled_once_redis_takes_it() {
    let redis = std::sync::Arc::new(TestRedis::start());
    let closed = TestApp::spawn_with(redis.clone(), |_| {}).await;
    let open = Binary::start(&redis, &[("KEYWARD_FAILSAFE", "open")]).await;
    let project = closed.project().await;
    let a = closed.mint(&project, json!({})).await;
    let b = closed.mint(&project, json!({})).await;
    assert_eq!(closed.status(&a.api_key).await, StatusCode::OK);
    open.validate(&b.api_key, StatusCode::OK).await;
    // The counters start again, so the next use opens a window.
    let ops = redis.ops().await;
    for key in [&a, &b] {
        let pattern = format!("ratelimit:key:{project}:{}:*", key.key_id);
        let names: Vec<String> = raw(&ops, "KEYS", vec![pattern])
            .await
            .unwrap()
            .convert()
            .unwrap();
        for name in names {
            raw(&ops, "DEL", vec![name]).await.unwrap();
        }
    }

    // INCRBY still works; the audit entry, DECRBY and EXPIRE are refused: each
    // pass is counted, then answered 503 (closed) or failsafe 200 (open),
    // and neither can take the use back or give its window an expiry.
    set_validator_selectors(&redis, |s| match s {
        s if s.contains("+xadd") => None,
        s if s.starts_with("~ratelimit:") => Some(s.replace(" +decr +decrby +expire", "")),
        // DECRBY refused everywhere, so `ACL LOG` names the command.
        s if s.starts_with("~apicredits:") => Some(s.replace(" +decrby", "")),
        s => Some(s.to_owned()),
    })
    .await;
    for _ in 0..3 {
        let r = closed.validate_response(&a.api_key).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = json!({ "api_key": b.api_key });
        let r = open.post("/v1/validate-key", &body, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-keyward-failsafe"], "open");
    }
    refused(&ops, "decrby", 3).await;
    refused(&ops, "expire", 6).await;
    for (key, counted) in [(&a, "503s"), (&b, "failsafe 200s")] {
        let found = counters(&ops, &project, &key.key_id).await;
        let sum: i64 = found.iter().map(|&(n, _)| n).sum();
        assert_eq!(sum, 3, "{counted} counted: {found:?}");
        assert!(found.iter().all(|&(_, ttl)| ttl == -1), "{found:?}");
    }

    // Once Redis takes them: the 503s' uses taken back, the failsafe 200s'
    // kept, and every window expires.
    set_validator_selectors(&redis, restored).await;
    for (key, want) in [(&a, 0), (&b, 3)] {
        eventually(&format!("{} settled at {want}", key.key_id), || async {
            (settled_count(&ops, &project, &key.key_id).await == Some(want)).then_some(())
        })
        .await;
    }
    let r = closed.validate_response(&a.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    let limit: u64 = r.headers()["x-ratelimit-limit"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let remaining = r.headers()["x-ratelimit-remaining"].to_str().unwrap();
    assert_eq!(remaining, (limit - 1).to_string(), "the 503s used none");
}

#[tokio::test]
async fn fault_a_verified_digest_redis_refuses_leaves_the_answer_as_it_was() {
    let redis = TestRedis::start();
    let pepper = redis.dir.join("pepper");
    std::fs::write(&pepper, "fault-background-pepper-0123456789abcdef\n").unwrap();
    let pepper = [("KEYWARD_VERIFY_PEPPER_FILE", pepper.to_str().unwrap())];
    let first = Binary::start(&redis, &pepper).await;
    let key = first.mint_creating("alpha", json!({})).await;
    let ops = redis.ops().await;

    set_validator_selectors(&redis, |s| match s.starts_with("~apiverify:") {
        true => Some(s.replace(" +hset", "")),
        false => Some(s.to_owned()),
    })
    .await;
    let r = first
        .post("/v1/validate-key", &json!({ "api_key": key.api_key }), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-keyward-failsafe").is_none());
    refused(&ops, &format!("apiverify:alpha:{}", key.key_id), 1).await;
    let audit: Vec<(String, HashMap<String, String>)> =
        fred::prelude::StreamsInterface::xrange(&ops, "audit:keylookup", "-", "+", None)
            .await
            .unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, e)| e["key_id"] == key.key_id && e["result"] == "ok"),
        "the pass has its audit entry"
    );
    // This instance's cache has the secret all the same.
    pass(&first, &key.api_key, 1).await;
    assert_eq!(first.metric("keyward_argon2_runs_total").await, 2.0);

    // Nothing was remembered: a new instance verifies with Argon2id, and
    // remembers it now that Redis takes it.
    set_validator_selectors(&redis, restored).await;
    let second = Binary::start(&redis, &pepper).await;
    pass(&second, &key.api_key, 1).await;
    assert_eq!(second.metric("keyward_argon2_runs_total").await, 1.0);
    let third = Binary::start(&redis, &pepper).await;
    pass(&third, &key.api_key, 1).await;
    assert_eq!(third.metric("keyward_argon2_runs_total").await, 0.0);
}
