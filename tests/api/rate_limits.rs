//! Rate limits: a key's per-minute limit (exact, on one instance and under
//! concurrency on the cluster) and an operator's admin writes per minute.
//! Each runs keyward on a [`Clock`] set at a minute's start, so the window
//! never turns under a test. A key's plan windows and credits are in
//! `plan_spend.rs`; the wrong-secret and audit budgets in `hot_path.rs` and
//! `audit.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::admin_hostile::{redis, MONITOR_PASSWORD};
use crate::cluster::{audit_of, cluster, EXCLUSIVE};
use crate::fault_background::counters;
use crate::helpers::{assert_error, retry_after, wrong_secret, Binary, Clock, TestRedis};

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_and_wrong_secrets_do_not_count() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    let app = Binary::start_on(&clock, &redis, &[]).await;
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": 3 }))
        .await;
    // The whole run inside one rate-limit window: a minute just begun.
    clock.start_of_minute(1.0);
    let wrong = wrong_secret(&key.api_key);
    for _ in 0..5 {
        app.validate(&wrong, StatusCode::UNAUTHORIZED).await;
    }

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = app.validate_response(&key.api_key).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "wrong secrets must not use up the limit"
        );
        let left = r.headers()["x-ratelimit-remaining"].to_str().unwrap();
        remaining.push(left.parse::<u64>().unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let r = app.validate_response(&key.api_key).await;
    let retry_after = retry_after(r.headers());
    // The rest of the minute, which began a second before.
    assert!((50..=60).contains(&retry_after), "{retry_after}");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let audit = redis.last_audit(&key.key_id).await;
    assert_eq!(
        (audit["result"].as_str(), audit["reason"].as_str()),
        ("rate_limited", "rate_limited")
    );
}

/// A refusal whose count opened its minute's window takes the use back and
/// still makes the window expire: a key refused once a minute (a scope it
/// lacks, or revoked while its secret is cached) left a counter without a
/// TTL every minute, found by the ARCHITECTURE.md review.
#[tokio::test]
async fn a_refusal_that_opened_its_minute_leaves_a_counter_that_expires() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    let app = Binary::start_on(&clock, &redis, &[]).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "scopes": ["read"] })).await;
    clock.start_of_minute(1.0);
    // Verified once, so the next validation counts in its first round trip.
    app.validate(&key.api_key, StatusCode::OK).await;
    clock.start_of_minute(1.0);
    let body = json!({ "api_key": key.api_key, "scopes": ["write"] });
    let r = app.post("/v1/validate-key", &body, None).await;
    assert_error(r, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let found = counters(&redis.ops().await, &project, &key.key_id).await;
    let mut values: Vec<i64> = found.iter().map(|&(n, _)| n).collect();
    values.sort();
    assert_eq!(
        values,
        [0, 1],
        "the refused minute's use was taken back: {found:?}"
    );
    assert!(
        found.iter().all(|&(_, ttl)| ttl > 0),
        "every minute's counter expires: {found:?}"
    );
}

/// Finding 3: mint and rotate had no per-caller rate. Now an operator's
/// writes past `KEYWARD_ADMIN_WRITES_PER_MINUTE` are `429` with
/// `Retry-After`, and audited `limited`; root is never held back.
#[tokio::test]
async fn an_operators_writes_past_its_minute_limit_are_429_with_retry_after() {
    let redis = redis();
    let clock = Clock::real();
    let monitor = redis.url("edges-ops", MONITOR_PASSWORD);
    let env = [
        ("KEYWARD_ADMIN_WRITES_PER_MINUTE", "5"),
        ("KEYWARD_MONITOR_REDIS_URL", monitor.as_str()),
    ];
    let app = Binary::start_on(&clock, &redis, &env).await;
    let project = app.project().await;
    let body = json!({ "name": "km", "role": "key_manager", "projects": [&project] });
    let r = app.admin_post("/v1/admin/operators", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let operator: Value = r.json().await.unwrap();
    let (id, token) = (
        operator["operator_id"].as_str().unwrap(),
        operator["token"].as_str().unwrap(),
    );
    // Six writes in one minute: at its start.
    clock.start_of_minute(1.0);
    let mint = json!({ "project_id": &project, "owner": "o", "server_name": "s" });
    for _ in 0..5 {
        let r = app.post("/v1/mint-key", &mint, Some(token)).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app.post("/v1/mint-key", &mint, Some(token)).await;
    let retry_after = retry_after(r.headers());
    // The rest of the minute, which began a second before the writes.
    assert!((50..=60).contains(&retry_after), "{retry_after}");
    let refused = assert_error(r, StatusCode::TOO_MANY_REQUESTS, "admin_rate_limited").await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("KEYWARD_ADMIN_WRITES_PER_MINUTE (5)"),
        "{message}"
    );
    let r = app.get("/v1/admin/whoami", Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "reads are not writes");
    let r = app.admin_post("/v1/mint-key", &mint).await;
    assert_eq!(r.status(), StatusCode::CREATED, "root is exempt");
    let trail = app.trail(&format!("actor={id}")).await;
    let limited = &trail[1];
    assert_eq!(limited["outcome"], "limited", "{trail:?}");
    assert_eq!(limited["action"], "key.mint");
    assert_eq!(limited["project_id"], project.as_str());
}

#[tokio::test]
async fn the_rate_limit_is_exact_under_concurrent_requests() {
    let _shared = EXCLUSIVE.read().await;
    let clock = Clock::real();
    let app = Arc::new(cluster().binary_on(&clock).await);
    let project = app.project().await;
    let limit = 25;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": limit }))
        .await;
    // At the start of a minute (the counter is per minute), verified once
    // (cold), then warm: every request below is two pipelines.
    clock.start_of_minute(1.0);
    app.validate(&key.api_key, StatusCode::OK).await;
    let warm_ups = 1;
    let requests = futures::future::join_all((0..3 * limit).map(|_| {
        let (app, api_key) = (app.clone(), key.api_key.clone());
        tokio::spawn(async move { app.status(&api_key).await })
    }))
    .await;
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for status in requests {
        *counts.entry(status.unwrap().as_u16()).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([(200, limit - 1), (429, 2 * limit + 1)]),
        "exactly the limit answered 200 (one before the burst)"
    );
    let audit = audit_of(&cluster().admin().await, &project, 1).await;
    let results = |r: &str| audit.iter().filter(|e| e["result"] == r).count();
    assert_eq!(
        (results("ok"), results("rate_limited")),
        (limit - 1 + warm_ups, 2 * limit + 1)
    );
}
