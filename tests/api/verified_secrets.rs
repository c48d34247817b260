//! No cold storm after a restart: with `KEYWARD_VERIFY_PEPPER_FILE`, a
//! secret one instance verified is validated by a new instance without
//! Argon2id, and never once its key has moved on. Each instance is a
//! process of its own, so its Argon2id count is its own.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{raw, wrong_secret, Binary, Minted, TestRedis, ADMIN_TOKEN};

const RUNS: &str = "keyward_argon2_runs_total";
const REMEMBERED: &str = "keyward_verify_remembered_total";

fn pepper_file(dir: &std::path::Path, name: &str, lines: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// A new keyward on `redis` with the pepper file `peppers` (or none).
async fn instance(redis: &TestRedis, peppers: Option<&str>) -> Binary {
    let env: Vec<(&str, &str)> = peppers
        .map(|p| ("KEYWARD_VERIFY_PEPPER_FILE", p))
        .into_iter()
        .collect();
    Binary::start(redis, &env).await
}

/// Validates each key once on `app`; returns the Argon2id runs it took.
async fn validate_all(app: &Binary, keys: &[&str], want: StatusCode) -> f64 {
    let before = app.metric(RUNS).await;
    for key in keys {
        assert_eq!(app.status(key).await, want, "{key:.30}");
    }
    app.metric(RUNS).await - before
}

#[tokio::test]
async fn a_secret_verified_by_one_instance_costs_a_new_instance_no_argon2() {
    let redis = TestRedis::start();
    let dir = redis.dir.clone();
    let pepper = "p".repeat(40);
    let current = pepper_file(&dir, "current", &[&pepper]);
    let first = instance(&redis, Some(&current)).await;
    let mut keys: Vec<Minted> = Vec::new();
    for _ in 0..6 {
        keys.push(first.mint_creating("alpha", json!({})).await);
    }
    let all: Vec<&str> = keys.iter().map(|k| k.api_key.as_str()).collect();
    assert_eq!(validate_all(&first, &all, StatusCode::OK).await, 6.0);

    // A new instance with the same pepper: every key at warm cost.
    let second = instance(&redis, Some(&current)).await;
    assert_eq!(validate_all(&second, &all, StatusCode::OK).await, 0.0);
    assert_eq!(second.metric(REMEMBERED).await, 6.0);
    // A wrong secret matches no digest, and its tag refuses it: no
    // Argon2id, and 401.
    let wrong = wrong_secret(&keys[0].api_key);
    assert_eq!(
        validate_all(&second, &[&wrong], StatusCode::UNAUTHORIZED).await,
        0.0
    );

    // Redis holds digests, never a secret.
    let ops = redis.ops().await;
    let stored = raw(
        &ops,
        "HGETALL",
        vec![format!("apiverify:alpha:{}", keys[0].key_id)],
    )
    .await
    .unwrap();
    let stored = format!("{stored:?}");
    let secret = keys[0].api_key.rsplit('.').next().unwrap();
    assert!(!stored.contains(secret), "{stored}");

    // Re-keyed (rotation, no grace) and revoked keys: the digest of the old
    // hash proves nothing any more.
    let rotate = json!({ "project_id": "alpha", "key_id": keys[1].key_id, "grace_seconds": 0 });
    let r = first
        .post("/v1/rotate-key", &rotate, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let rotated: serde_json::Value = r.json().await.unwrap();
    let revoke = json!({ "project_id": "alpha", "key_id": keys[2].key_id });
    let r = first
        .post("/v1/revoke-key", &revoke, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let third = instance(&redis, Some(&current)).await;
    assert_eq!(
        validate_all(&third, &[&keys[1].api_key], StatusCode::UNAUTHORIZED).await,
        0.0,
        "the old secret of a re-keyed key is refused by its tag, free"
    );
    assert_eq!(
        validate_all(&third, &[&keys[2].api_key], StatusCode::UNAUTHORIZED).await,
        0.0,
        "a revoked key is refused by its document"
    );
    let new_secret = rotated["api_key"].as_str().unwrap();
    assert_eq!(
        validate_all(&third, &[new_secret], StatusCode::OK).await,
        1.0
    );

    // No pepper, or another one: each instance verifies once, as without.
    let without = instance(&redis, None).await;
    assert_eq!(
        validate_all(&without, &[&keys[3].api_key], StatusCode::OK).await,
        1.0
    );
    let other = pepper_file(&dir, "other", &[&"q".repeat(40)]);
    let stranger = instance(&redis, Some(&other)).await;
    assert_eq!(
        validate_all(&stranger, &[&keys[4].api_key], StatusCode::OK).await,
        1.0
    );

    // Pepper rotation: the new pepper first, the old one still accepted;
    // a digest made with the old one is written again with the new.
    let rotating = pepper_file(&dir, "rotating", &[&"n".repeat(40), &pepper]);
    let during = instance(&redis, Some(&rotating)).await;
    assert_eq!(
        validate_all(&during, &[&keys[5].api_key], StatusCode::OK).await,
        0.0
    );
    let only_new = pepper_file(&dir, "new", &[&"n".repeat(40)]);
    let after = instance(&redis, Some(&only_new)).await;
    assert_eq!(
        validate_all(&after, &[&keys[5].api_key], StatusCode::OK).await,
        0.0
    );
}

#[tokio::test]
async fn a_bad_pepper_file_stops_start_up_naming_the_variable() {
    let redis = TestRedis::start();
    let short = pepper_file(&redis.dir, "short", &["too-short"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_REDIS_URL", redis.url("validator", "x"))
        .env("KEYWARD_VERIFY_PEPPER_FILE", &short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KEYWARD_VERIFY_PEPPER_FILE"), "{stderr}");
    assert!(
        !stderr.contains("too-short"),
        "the pepper is never printed: {stderr}"
    );
}
