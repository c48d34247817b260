//! Issue #30's findings on the validation path, each reproduced as it was
//! found (each of these failed on 240fbde): refusals that must stand,
//! strangers who must not lock a holder out, stored data that must not be
//! trusted further than it deserves, and a clock no instance can skew.
//! Finding 1 (fail-open) is `faults::failsafe_open_admits_only_what_…`.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, libfaketime, raw, set_validator_selectors, wrong_secret, Binary, Clock, TestApp,
    TestRedis,
};
use keyward::plan::Per;
use keyward::store::names;

fn body(api_key: &str, cost: u64) -> Value {
    json!({ "api_key": api_key, "cost": cost })
}

/// Finding 2: a window full refuses (429), though the credits' counter
/// failed in the same round trip; the fallback read of a minute counter
/// weighs the request's cost; a balance of `i64::MIN` is short, not an
/// overflow.
#[tokio::test]
async fn a_refusal_a_counter_answered_stands_whatever_else_failed() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let ops = app.redis().ops().await;
    let set = |key: String, path: &str, value: Value| {
        raw(&ops, "JSON.SET", vec![key, path.into(), value.to_string()])
    };

    // A full hour window beside a credits counter of the wrong type.
    let key = app.mint(&project, json!({})).await;
    let doc = format!("apikey:{project}:{}", key.key_id);
    set(
        doc.clone(),
        "$.limits",
        json!([{ "per": "hour", "limit": 1 }]),
    )
    .await
    .unwrap();
    set(doc, "$.credits", json!({})).await.unwrap();
    let now = keyward::store::now();
    let hour = names::window(&project, &key.key_id, &Per::Hour.window(now).name);
    raw(
        &ops,
        "SET",
        vec![hour, "5".into(), "EX".into(), "7200".into()],
    )
    .await
    .unwrap();
    let credits = names::credits(&project, &key.key_id, "once");
    raw(
        &ops,
        "HSET",
        vec![credits, "not".into(), "a counter".into()],
    )
    .await
    .unwrap();
    let r = app
        .post("/v1/validate-key", &body(&key.api_key, 1), None)
        .await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // The minute's count refused (no INCRBY), its counter at 4 of 5: a
    // request of cost 5 is over, so 429, not "incomplete".
    let warm = app
        .mint(&project, json!({ "rate_limit_per_minute": 5 }))
        .await;
    let r = app
        .post("/v1/validate-key", &body(&warm.api_key, 0), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let minute = names::used(&project, &warm.key_id, keyward::validate::window(now).0);
    let minute_later = names::used(&project, &warm.key_id, keyward::validate::window(now).0 + 1);
    for counter in [minute, minute_later] {
        raw(
            &ops,
            "SET",
            vec![counter, "4".into(), "EX".into(), "300".into()],
        )
        .await
        .unwrap();
    }
    set_validator_selectors(app.redis(), |s| Some(s.replace(" +incr +incrby", ""))).await;
    let r = app
        .post("/v1/validate-key", &body(&warm.api_key, 5), None)
        .await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    set_validator_selectors(app.redis(), |s| Some(s.to_owned())).await;

    // Credits at i64::MIN: short for a request that spends nothing.
    let poor = app.mint(&project, json!({})).await;
    let doc = format!("apikey:{project}:{}", poor.key_id);
    set(doc, "$.credits", json!({})).await.unwrap();
    let balance = names::credits(&project, &poor.key_id, "once");
    raw(&ops, "SET", vec![balance, i64::MIN.to_string()])
        .await
        .unwrap();
    let r = app
        .post("/v1/validate-key", &body(&poor.api_key, 0), None)
        .await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "credits_exhausted").await;
}

/// Finding 3: wrong secrets for a key id (key ids are not secret) do not
/// lock its holder out of an instance that has not verified the real
/// secret yet: a minted key's tags refuse them without Argon2id and let the
/// holder's through whatever the wrong-secret budget says. A key written
/// without tags (adopted data) stays bounded by the budget: the holder of
/// such a key is refused for the rest of that minute, as documented.
#[tokio::test]
async fn strangers_sending_wrong_secrets_cannot_lock_out_the_holder_of_a_minted_key() {
    let redis = TestRedis::start();
    let budget = [("KEYWARD_BAD_SECRET_HASHES_PER_MINUTE", "3")];
    // Both instances on one clock, at the start of a minute: the budget
    // spent below is this minute's until the end of the test.
    let clock = Clock::real();
    let first = Binary::start_on(&clock, &redis, &budget).await;
    let minted = first.mint_creating("alpha", json!({})).await;
    let adopted = first.mint_creating("alpha", json!({})).await;
    let ops = redis.ops().await;
    let doc = format!("apikey:alpha:{}", adopted.key_id);
    raw(&ops, "JSON.DEL", vec![doc, "$.secret_tag".into()])
        .await
        .unwrap();
    clock.start_of_minute(1.0);
    for key in [&minted, &adopted] {
        for _ in 0..12 {
            let wrong = wrong_secret(&key.api_key);
            first.validate(&wrong, StatusCode::UNAUTHORIZED).await;
        }
    }
    // A new instance, which has verified neither secret.
    let second = Binary::start_on(&clock, &redis, &budget).await;
    let runs = second.metric("keyward_argon2_runs_total").await;
    assert_eq!(
        second.status(&minted.api_key).await,
        StatusCode::OK,
        "the holder was locked out"
    );
    assert_eq!(
        second.metric("keyward_argon2_runs_total").await - runs,
        1.0,
        "one run: the holder's"
    );
    let wrong = wrong_secret(&minted.api_key);
    second.validate(&wrong, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        second.metric("keyward_argon2_runs_total").await - runs,
        1.0,
        "a wrong secret of a minted key costs no Argon2id"
    );
    // The documented bound for a key without tags: its holder is refused
    // for the rest of the minute the budget was spent in.
    second
        .validate(&adopted.api_key, StatusCode::UNAUTHORIZED)
        .await;
}

/// Replaces a key's stored hash's `m`/`t` (and drops its tag, which would
/// no longer be for it).
async fn set_hash_params(ops: &fred::prelude::Pool, key_id: &str, from: &str, to: &str) {
    let doc = format!("apikey:alpha:{key_id}");
    let hash = raw(ops, "JSON.GET", vec![doc.clone(), "$.secret_hash".into()])
        .await
        .unwrap();
    let hashes: Vec<String> = serde_json::from_str(hash.as_str().unwrap().as_ref()).unwrap();
    let changed = hashes[0].replace(from, to);
    assert_ne!(changed, hashes[0]);
    let value = serde_json::to_string(&changed).unwrap();
    raw(
        ops,
        "JSON.SET",
        vec![doc.clone(), "$.secret_hash".into(), value],
    )
    .await
    .unwrap();
    raw(ops, "JSON.DEL", vec![doc, "$.secret_tag".into()])
        .await
        .unwrap();
}

/// Finding 4: a stored hash asking for 4 TiB of memory, or for 4 billion
/// passes, is unreadable (401, counted), never run: the process lives, and
/// Argon2id's capacity stays free for every other key.
#[tokio::test]
async fn stored_hash_parameters_past_the_bounds_are_unreadable_and_never_run() {
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[("KEYWARD_ARGON2_CONCURRENCY", "1")]).await;
    let ops = redis.ops().await;
    let huge_m = app.mint_creating("alpha", json!({})).await;
    set_hash_params(&ops, &huge_m.key_id, "m=1024", "m=4294967295").await;
    let mut huge_t = Vec::new();
    for _ in 0..4 {
        let key = app.mint_creating("alpha", json!({})).await;
        set_hash_params(&ops, &key.key_id, "t=1", "t=4294967295").await;
        huge_t.push(key);
    }
    let unreadable = app.metric("keyward_unreadable_documents_total").await;
    let runs = app.metric("keyward_argon2_runs_total").await;
    app.validate(&huge_m.api_key, StatusCode::UNAUTHORIZED)
        .await;
    for key in &huge_t {
        app.validate(&key.api_key, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(
        app.metric("keyward_argon2_runs_total").await,
        runs,
        "none run"
    );
    assert_eq!(
        app.metric("keyward_unreadable_documents_total").await - unreadable,
        5.0
    );
    // Alive, and a first-time key still gets its Argon2id run.
    let fresh = app.mint_creating("alpha", json!({})).await;
    app.validate(&fresh.api_key, StatusCode::OK).await;
}

/// Finding 6: the identity answered is the key name's. A document at
/// `apikey:<p>:<k>` that says it is another project's (or key's) is
/// unreadable, never validated as that other project.
#[tokio::test]
async fn a_document_whose_ids_are_not_its_key_names_is_unreadable() {
    let app = TestApp::spawn_with(Arc::new(TestRedis::start()), |_| {}).await;
    let project = app.project().await;
    let ops = app.redis().ops().await;
    for (path, claim) in [("$.project_id", "beta"), ("$.key_id", "k_someoneelse")] {
        let key = app.mint(&project, json!({})).await;
        let doc = format!("apikey:{project}:{}", key.key_id);
        let value = serde_json::to_string(claim).unwrap();
        raw(&ops, "JSON.SET", vec![doc, path.into(), value])
            .await
            .unwrap();
        app.assert_denied(&key.api_key, &key.key_id, "unreadable")
            .await;
    }
}

/// Finding 9: no instance decides expiry on a clock of its own. One whose
/// clock is ten minutes behind Redis's is not ready, says why, and answers
/// every validation 503: a key that expired five minutes ago never passes
/// there.
#[tokio::test]
async fn an_instance_whose_clock_is_behind_redis_is_not_ready_and_passes_nothing() {
    let redis = TestRedis::start();
    let minter = Binary::start(&redis, &[]).await;
    let mut behind = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    behind
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "-600")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let app = Binary::start_with(behind, &redis, &[]).await;
    let ops = redis.ops().await;
    let now = keyward::store::now();
    for offset in [-300.0, 300.0] {
        let key = minter.mint_creating("alpha", json!({})).await;
        let doc = format!("apikey:alpha:{}", key.key_id);
        let at = (now + offset).to_string();
        raw(&ops, "JSON.SET", vec![doc, "$.expires_at".into(), at])
            .await
            .unwrap();
        let r = app
            .post("/v1/validate-key", &body(&key.api_key, 1), None)
            .await;
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        assert_eq!(
            minter.status(&key.api_key).await,
            match offset < 0.0 {
                true => StatusCode::UNAUTHORIZED,
                false => StatusCode::OK,
            }
        );
    }
    let ready = app
        .http
        .get(format!("{}/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        minter
            .http
            .get(format!("{}/ready", minter.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
