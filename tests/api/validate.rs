//! `POST /v1/validate-key`: every outcome, its status and its audit entry.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, raw, wrong_secret, TestApp};

#[tokio::test]
async fn a_valid_key_returns_its_routing_data_rate_headers_and_an_ok_audit() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "metadata": { "tier": "gold" }, "rate_limit_per_minute": 10 }),
        )
        .await;

    let r = app.validate_response(&key.api_key).await;

    assert_eq!(r.status(), StatusCode::OK);
    let header = |name: &str| r.headers()[name].to_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(header("x-ratelimit-limit"), 10);
    assert_eq!(header("x-ratelimit-remaining"), 9);
    assert!((1..=60).contains(&header("x-ratelimit-reset")));
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "project_id": project, "key_id": key.key_id, "owner": "alice",
            "server_name": "api-1", "metadata": { "tier": "gold" }, "expires_at": null,
            "scopes": [], "credits_remaining": null
        })
    );
    let audit = app.last_audit(&key.key_id).await;
    assert_eq!(audit["result"], "ok");
    assert_eq!(audit["reason"], "ok");
    assert_eq!(audit["project_id"], project);
    assert_eq!(audit["client"], "test-gateway");
    assert_eq!(audit["cost"], "1");
    assert!(audit["ts"].parse::<f64>().unwrap() > 1.7e9);
}

#[tokio::test]
async fn each_kind_of_bad_key_is_a_401_and_its_audit_entry_says_which() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let revoked = app.mint(&project, json!({})).await;
    let r = app
        .admin_post(
            "/v1/revoke-key",
            &json!({ "project_id": project, "key_id": revoked.key_id }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let wrong_secret = wrong_secret(&key.api_key);
    let unknown = key.api_key.replace(&key.key_id, "k_unknown00");

    let cases = [
        (wrong_secret.as_str(), key.key_id.as_str(), "bad_secret"),
        (unknown.as_str(), "k_unknown00", "not_found"),
        (
            revoked.api_key.as_str(),
            revoked.key_id.as_str(),
            "disabled",
        ),
    ];
    for (presented, key_id, reason) in cases {
        let r = app.validate_response(presented).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;
        let audit = app.last_audit(key_id).await;
        assert_eq!(
            (audit["result"].as_str(), audit["reason"].as_str()),
            ("denied", reason),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_malformed_key_is_a_401_audited_without_echoing_the_input() {
    let app = TestApp::spawn().await;
    for garbage in [
        "",
        "sk-proj.",
        "not a key",
        "sk-proj.p.k_abc1234.short",
        &"x".repeat(300),
    ] {
        let r = app.validate_response(garbage).await;
        let body = assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;
        assert!(garbage.is_empty() || !body.to_string().contains(garbage));
    }
    let audit = app.audit("audit:keylookup").await;
    assert_eq!(audit.len(), 5);
    assert!(audit
        .iter()
        .all(|e| e["reason"] == "malformed" && e["key_id"].is_empty()));
}

#[tokio::test]
async fn an_expired_key_is_denied_with_reason_expired() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "expires_at": 4_000_000_000.0 }))
        .await;
    app.validate(&key.api_key, StatusCode::OK).await;

    // Move the expiry into the past directly in Redis (no sleeping).
    let ops = app.redis().ops().await;
    let doc_key = format!("apikey:{project}:{}", key.key_id);
    raw(
        &ops,
        "JSON.SET",
        vec![doc_key, "$.expires_at".into(), "1000".into()],
    )
    .await
    .unwrap();

    app.assert_denied(&key.api_key, &key.key_id, "expired")
        .await;
}

#[tokio::test]
async fn revocation_takes_effect_on_the_very_next_validation() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    // Warm the verified-secret cache first: revocation must still win.
    for _ in 0..3 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }

    let r = app
        .admin_post(
            "/v1/revoke-key",
            &json!({ "project_id": project, "key_id": key.key_id }),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "revoked": true }));

    app.assert_denied(&key.api_key, &key.key_id, "disabled")
        .await;
}

#[tokio::test]
async fn a_success_bumps_usage_count_and_last_used() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    for _ in 0..2 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    app.usage_is(&project, &key.key_id, 2).await;
    let r = app
        .admin_get(&format!("/v1/list-keys?project_id={project}"))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["items"][0]["usage_count"], 2);
    assert!(body["items"][0]["last_used"].as_f64().unwrap() > 1.7e9);
}

#[tokio::test]
async fn bad_request_bodies_are_422_and_oversized_ones_413() {
    let app = TestApp::spawn().await;
    let cases: [(&str, &str); 6] = [
        (r#"{}"#, "missing api_key"),
        (r#"{"api_key": 5}"#, "non-string api_key"),
        (r#"{"api_key": "x", "extra": 1}"#, "unknown field"),
        (r#"{"api_key": "#, "truncated JSON"),
        (r#"[]"#, "array body"),
        ("\u{0}\u{1}", "binary"),
    ];
    for (body, why) in cases {
        let r = app
            .http
            .post(app.url("/v1/validate-key"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    let huge = json!({ "api_key": "x".repeat(70 * 1024) });
    app.validate_fails(
        huge["api_key"].as_str().unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}
