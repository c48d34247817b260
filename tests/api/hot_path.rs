//! The hot path's cost guarantees: no Argon2id for cheap rejections, bounded
//! Argon2id under wrong-secret floods, a cache that re-keying invalidates, a
//! bounded verification queue, and a burst at OWASP's minimum answered in
//! full (its memory is measured by `make load`, benches/load.rs).
//!
//! Argon2id runs are counted with `keyward_argon2_runs_total` from a keyward
//! process of its own (the metrics recorder is per process).

use std::sync::Arc;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, expect, raw, Binary, Clock, TestApp, TestRedis, ADMIN_TOKEN};

const RUNS: &str = "keyward_argon2_runs_total";

fn wrong(api_key: &str, n: usize) -> String {
    let cut = api_key.len() - 4;
    format!("{}{n:04}", &api_key[..cut])
}

#[tokio::test]
async fn malformed_unknown_disabled_expired_and_rate_limited_keys_cost_no_argon2() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    let app = Binary::start_on(&clock, &redis, &[]).await;
    let good = app.mint_creating("alpha", json!({})).await;
    let limited = app
        .mint_creating("alpha", json!({ "rate_limit_per_minute": 1 }))
        .await;
    let revoked = app.mint_creating("alpha", json!({})).await;
    let expiring = app
        .mint_creating("alpha", json!({ "expires_at": 4_000_000_000.0 }))
        .await;
    app.post(
        "/v1/revoke-key",
        &json!({ "project_id": "alpha", "key_id": revoked.key_id }),
        Some(ADMIN_TOKEN),
    )
    .await;
    raw(
        &redis.ops().await,
        "JSON.SET",
        vec![
            format!("apikey:alpha:{}", expiring.key_id),
            "$.expires_at".into(),
            "1".into(),
        ],
    )
    .await
    .unwrap();
    // Use up the limited key's minute, at its start: the rounds below all
    // fall in it.
    clock.start_of_minute(1.0);
    app.validate(&limited.api_key, StatusCode::OK).await;
    let unknown = good.api_key.replace(&good.key_id, "k_nosuchkey");
    let before = app.metric(RUNS).await;

    for _ in 0..10 {
        app.validate("sk-proj.alpha.bad", StatusCode::UNAUTHORIZED)
            .await;
        app.validate(&unknown, StatusCode::UNAUTHORIZED).await;
        app.validate(&revoked.api_key, StatusCode::UNAUTHORIZED)
            .await;
        app.validate(&expiring.api_key, StatusCode::UNAUTHORIZED)
            .await;
        app.validate_fails(
            &limited.api_key,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
    }

    assert_eq!(
        app.metric(RUNS).await - before,
        0.0,
        "a cheap rejection ran Argon2id"
    );
}

#[tokio::test]
async fn a_wrong_secret_flood_costs_bounded_argon2_and_the_holder_keeps_getting_200() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    let budget = [("KEYWARD_BAD_SECRET_HASHES_PER_MINUTE", "3")];
    let app = Binary::start_on(&clock, &redis, &budget).await;
    let key = app
        .mint_creating("alpha", json!({ "rate_limit_per_minute": 1000 }))
        .await;
    app.validate(&key.api_key, StatusCode::OK).await;
    let before = app.metric(RUNS).await;
    let cache_hits = app.metric("keyward_verify_cache_hits_total").await;

    for n in 0..40 {
        app.validate(&wrong(&key.api_key, n), StatusCode::UNAUTHORIZED)
            .await;
        assert_eq!(
            app.status(&key.api_key).await,
            StatusCode::OK,
            "the holder was locked out"
        );
    }

    // A key keyward minted has a tag: its wrong secrets are refused free.
    let runs = app.metric(RUNS).await - before;
    assert_eq!(runs, 0.0, "{runs} Argon2id runs for 40 wrong secrets");

    // Without its tag (a key another tool wrote), the wrong-secret budget
    // bounds them: 3 per key per minute, all in the one minute the clock
    // starts below.
    let key = app
        .mint_creating("alpha", json!({ "rate_limit_per_minute": 1000 }))
        .await;
    let doc = format!("apikey:alpha:{}", key.key_id);
    let ops = redis.ops().await;
    raw(&ops, "JSON.DEL", vec![doc, "$.secret_tag".into()])
        .await
        .unwrap();
    app.validate(&key.api_key, StatusCode::OK).await;
    clock.start_of_minute(1.0);
    let before = app.metric(RUNS).await;
    for n in 0..40 {
        app.validate(&wrong(&key.api_key, n), StatusCode::UNAUTHORIZED)
            .await;
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    let runs = app.metric(RUNS).await - before;
    assert_eq!(
        runs, 3.0,
        "{runs} Argon2id runs for 40 wrong secrets of an untagged key"
    );
    // Every one of the holder's 80 validations, its first of the second key
    // aside, was a cache hit.
    assert_eq!(
        app.metric("keyward_verify_cache_hits_total").await - cache_hits,
        80.0
    );
}

#[tokio::test]
async fn re_keying_a_document_invalidates_its_cached_secret_at_once() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let other = app.mint(&project, json!({})).await;
    app.validate(&key.api_key, StatusCode::OK).await;

    // Give `key` the hash of `other`'s secret, as a re-key would.
    let ops = app.redis().ops().await;
    let doc = |id: &str| format!("apikey:{project}:{id}");
    let other_doc = raw(&ops, "JSON.GET", vec![doc(&other.key_id)])
        .await
        .unwrap()
        .as_string()
        .unwrap();
    let other_hash = serde_json::from_str::<Value>(&other_doc).unwrap()["secret_hash"].clone();
    raw(
        &ops,
        "JSON.SET",
        vec![
            doc(&key.key_id),
            "$.secret_hash".into(),
            other_hash.to_string(),
        ],
    )
    .await
    .unwrap();

    app.assert_denied(&key.api_key, &key.key_id, "bad_secret")
        .await;
    let other_secret = other.api_key.rsplit('.').next().unwrap();
    let rekeyed = format!("sk-proj.{project}.{}.{other_secret}", key.key_id);
    app.validate(&rekeyed, StatusCode::OK).await;
}

#[tokio::test]
async fn a_full_argon2_queue_answers_503_busy_at_once() {
    let app = TestApp::spawn_with(Arc::new(TestRedis::start()), |c| {
        c.argon2_concurrency = 1;
        c.argon2_queue = 0;
        // Mint at the default cost so that verifications take real time.
        c.argon2 = keyward::config::Argon2Params {
            memory_kib: 65536,
            iterations: 3,
            parallelism: 1,
        };
    })
    .await;
    let project = app.project().await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.mint(&project, json!({})).await);
    }

    let answers =
        futures::future::join_all(keys.iter().map(|k| app.validate_response(&k.api_key))).await;

    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    for r in answers.into_iter().filter(|r| r.status() != StatusCode::OK) {
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    }
}

/// `INFO commandstats` as (command, calls), lower case.
async fn command_calls(ops: &fred::prelude::Pool) -> std::collections::HashMap<String, u64> {
    let info = raw(ops, "INFO", vec!["commandstats".into()]).await.unwrap();
    let info = info.as_string().unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_warm_success_is_three_commands_and_its_window_still_expires() {
    let redis = TestRedis::start();
    let clock = Clock::real();
    let app = Binary::start_on(&clock, &redis, &[]).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    clock.start_of_minute(1.0);
    app.validate(&key.api_key, StatusCode::OK).await;
    let ops = redis.ops().await;
    // Usage written by the flusher meanwhile is not this test's concern.
    raw(&ops, "CONFIG", vec!["RESETSTAT".into()]).await.unwrap();
    let n = 20;
    for i in 0..n {
        // Half in the minute the first validation opened, half in the next.
        if i == n / 2 {
            clock.advance(60.0);
        }
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    let calls = command_calls(&ops).await;
    let of = |c: &str| calls.get(c).copied().unwrap_or(0);
    assert_eq!(of("json.get"), n, "{calls:?}");
    assert_eq!(of("incrby"), n, "{calls:?}");
    assert_eq!(of("xadd"), n, "{calls:?}");
    // EXPIRE only when an INCRBY opened a window: once, for the next minute.
    assert_eq!(of("expire"), 1, "{calls:?}");
    // apimeta is written by the per-instance flusher, about once a second.
    assert!(of("hincrby") < n / 2, "{calls:?}");

    // Every use counter has its expiry, and usage still adds up.
    let pattern = format!("ratelimit:key:{project}:{}:*", key.key_id);
    let counters = raw(&ops, "KEYS", vec![pattern]).await.unwrap();
    let counters: Vec<String> = counters.convert().unwrap();
    assert!(!counters.is_empty());
    for counter in counters {
        let ttl = raw(&ops, "TTL", vec![counter.clone()]).await.unwrap();
        let ttl = ttl.as_i64().unwrap();
        assert!(ttl > 0 && ttl <= 120, "{counter}: TTL {ttl}");
    }
    app.usage_is(&project, &key.key_id, n + 1).await;
}

#[tokio::test]
async fn credits_low_at_costs_a_command_only_to_the_spend_that_crosses_it() {
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[]).await;
    let project = app.project().await;
    let credits = json!({"remaining": 31, "refill": null, "low_at": 10});
    let key = app.mint(&project, json!({ "credits": credits })).await;
    // Cold: its secret verified and cached.
    app.validate(&key.api_key, StatusCode::OK).await;
    let ops = redis.ops().await;
    // (validations, SETs and XADDs they may send): 30 -> 15 crosses nothing,
    // 15 -> 5 crosses 10 once (its marker and its event), 5 -> 2 nothing.
    for (n, sets, xadds) in [(15, 0, 15), (10, 1, 11), (3, 0, 3)] {
        raw(&ops, "CONFIG", vec!["RESETSTAT".into()]).await.unwrap();
        for _ in 0..n {
            app.validate(&key.api_key, StatusCode::OK).await;
        }
        let calls = command_calls(&ops).await;
        let of = |c: &str| calls.get(c).copied().unwrap_or(0);
        // The minute's use and the balance: one INCRBY each (the balance's
        // by minus the cost).
        assert_eq!(of("incrby"), 2 * n, "{calls:?}");
        assert_eq!(of("json.get"), n, "{calls:?}");
        assert_eq!(of("set"), sets, "{calls:?}");
        assert_eq!(of("xadd"), xadds, "audit entries and the event: {calls:?}");
    }
    // The marker of credits that never refill never expires: told once.
    let marker = format!("apievent:{project}:{}:credits_low:once", key.key_id);
    let ttl = raw(&ops, "TTL", vec![marker.clone()]).await.unwrap();
    assert_eq!(ttl.as_i64(), Some(-1), "{marker}");
}

/// A burst of mints and cold validations at OWASP's minimum Argon2id
/// parameters, 8 at once on 2 slots: every one answered, each an Argon2id
/// run, and keyward still running. The memory it holds afterwards (its
/// blocks are reused, not left in the arenas of tokio's blocking threads)
/// is a figure of `make load`'s cold storm, not a bound asserted here.
#[tokio::test]
async fn a_burst_of_mints_and_cold_validations_at_owasp_minimum_is_all_answered() {
    const KEYS: usize = 50;
    const AT_ONCE: usize = 8;
    let redis = TestRedis::start();
    let app = Binary::start(
        &redis,
        &[
            ("KEYWARD_ARGON2_MEMORY_KIB", "19456"),
            ("KEYWARD_ARGON2_ITERATIONS", "2"),
            // Set, not the host's core count: 8 at once queue for 2 slots.
            ("KEYWARD_ARGON2_CONCURRENCY", "2"),
        ],
    )
    .await;
    let project = json!({ "project_id": "mem", "label": "p", "owner": "o" });
    let r = app
        .post("/v1/admin/projects", &project, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let mint = json!({ "project_id": "mem", "owner": "alice", "server_name": "api-1" });
    let keys: Vec<String> = futures::stream::iter(0..KEYS)
        .map(|_| async {
            let r = app.post("/v1/mint-key", &mint, Some(ADMIN_TOKEN)).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: serde_json::Value = r.json().await.unwrap();
            v["api_key"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let answers: Vec<StatusCode> = futures::stream::iter(&keys)
        .map(|key| app.status(key))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    // Every mint and every (cold) validation was an Argon2id run.
    assert_eq!(
        app.metric("keyward_argon2_runs_total").await,
        (2 * KEYS) as f64
    );

    expect(app.get("/health", None).await, StatusCode::OK).await;
}
