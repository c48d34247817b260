//! Key lifecycle: inspect, update, rotate with a grace period, and bind a
//! key to networks. Every change takes effect on the very next validation,
//! with the verified-secret cache warm.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, raw, Binary, Minted, TestApp, TestRedis, ADMIN_TOKEN, OPS_PASSWORD,
};

impl TestApp {
    async fn get_key(&self, project: &str, key_id: &str) -> Value {
        let r = self
            .admin_get(&format!("/v1/get-key?project_id={project}&key_id={key_id}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn update(&self, project: &str, key_id: &str, fields: Value) -> reqwest::Response {
        let mut body = json!({ "project_id": project, "key_id": key_id });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.admin_post("/v1/update-key", &body).await
    }

    async fn rotate(&self, project: &str, key_id: &str, grace: u64) -> Minted {
        let body = json!({ "project_id": project, "key_id": key_id, "grace_seconds": grace });
        let r = self.admin_post("/v1/rotate-key", &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["key_id"], key_id);
        Minted {
            api_key: v["api_key"].as_str().unwrap().to_owned(),
            key_id: key_id.to_owned(),
        }
    }

    async fn validate_from(&self, api_key: &str, ip: Option<&str>) -> reqwest::Response {
        let body = json!({ "api_key": api_key, "client_ip": ip });
        self.post("/v1/validate-key", &body, None).await
    }

    /// Ends the key's rotation grace period now, directly in Redis.
    async fn end_grace(&self, project: &str, key_id: &str) {
        let ops = self.redis().ops().await;
        let doc = format!("apikey:{project}:{key_id}");
        let path = "$.previous_expires_at".to_owned();
        raw(&ops, "JSON.SET", vec![doc, path, "1000".into()])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn get_key_returns_the_list_item_shape_plus_limits_scopes_networks_and_rotation_state() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "scopes": ["chat:*"], "allowed_cidrs": ["10.0.0.0/8", "2001:db8::1"], "rate_limit_per_minute": 7 }),
        )
        .await;

    let got = app.get_key(&project, &key.key_id).await;

    let listed: Value = app
        .admin_get(&format!("/v1/list-keys?project_id={project}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, listed["items"][0]);
    assert_eq!(got["scopes"], json!(["chat:*"]));
    assert_eq!(
        got["allowed_cidrs"],
        json!(["10.0.0.0/8", "2001:db8::1/128"])
    );
    assert_eq!(got["rate_limit_per_minute"], 7);
    assert_eq!(got["previous_expires_at"], Value::Null);
    let text = got.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("secret"),
        "{text}"
    );

    let r = app
        .admin_get(&format!(
            "/v1/get-key?project_id={project}&key_id=k_nosuchkey"
        ))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;
    let r = app
        .get(
            &format!("/v1/get-key?project_id={project}&key_id={}", key.key_id),
            None,
        )
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn an_update_takes_effect_on_the_very_next_validation_with_the_cache_warm() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": 100 }))
        .await;
    for _ in 0..2 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }

    let r = app
        .update(
            &project,
            &key.key_id,
            json!({ "owner": "bob", "server_name": "api-2", "metadata": { "tier": "silver" },
                    "scopes": ["chat:read"], "expires_at": 4_000_000_000.0, "rate_limit_per_minute": 3 }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["owner"], "bob");
    assert!(updated["updated_at"].as_f64().unwrap() > updated["created_at"].as_f64().unwrap());

    let body = json!({ "api_key": key.api_key, "scopes": ["chat:read"] });
    let r = app.post("/v1/validate-key", &body, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            &v["owner"],
            &v["server_name"],
            &v["metadata"],
            &v["expires_at"]
        ),
        (
            &json!("bob"),
            &json!("api-2"),
            &json!({ "tier": "silver" }),
            &json!(4_000_000_000.0)
        )
    );
    // Three validations this minute: the new limit of 3 is reached.
    app.validate_fails(&key.api_key, StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        .await;
}

#[tokio::test]
async fn null_clears_each_nullable_field_and_the_key_follows_the_defaults_again() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "expires_at": 4_000_000_000.0, "rate_limit_per_minute": 5, "metadata": { "a": 1 },
                    "allowed_cidrs": ["192.0.2.0/24"] }),
        )
        .await;
    app.validate(&key.api_key, StatusCode::UNAUTHORIZED).await;

    let r = app
        .update(
            &project,
            &key.key_id,
            json!({ "expires_at": null, "rate_limit_per_minute": null, "metadata": null, "allowed_cidrs": null }),
        )
        .await;

    assert_eq!(r.status(), StatusCode::OK);
    let got = app.get_key(&project, &key.key_id).await;
    for field in [
        "expires_at",
        "rate_limit_per_minute",
        "metadata",
        "allowed_cidrs",
    ] {
        assert_eq!(got[field], Value::Null, "{field}");
    }
    let r = app.validate_response(&key.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "100");
}

#[tokio::test]
async fn a_bad_update_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "scopes": ["a"] })).await;
    let before = app.get_key(&project, &key.key_id).await;

    let cases = [
        json!({ "owner": "changed", "expires_at": 1000.0 }),
        json!({ "owner": "changed", "rate_limit_per_minute": 0 }),
        json!({ "owner": "changed", "scopes": ["bad scope"] }),
        json!({ "owner": "changed", "allowed_cidrs": ["10.0.0.0/33"] }),
        json!({ "owner": "changed", "allowed_cidrs": [] }),
        json!({ "owner": null }),
        json!({ "server_name": null }),
        json!({ "scopes": null }),
        json!({ "owner": "changed", "secret_hash": "x" }),
        json!({ "owner": "changed", "disabled": true }),
        json!({ "owner": "" }),
    ];
    for fields in cases {
        let r = app.update(&project, &key.key_id, fields.clone()).await;
        let body = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        assert!(!body.to_string().contains("argon2"), "{fields}");
    }

    assert_eq!(app.get_key(&project, &key.key_id).await, before);
    let r = app
        .update(&project, "k_nosuchkey", json!({ "owner": "x" }))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;
}

#[tokio::test]
async fn an_update_never_touches_the_secret_created_at_usage_or_disabled() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    app.validate(&key.api_key, StatusCode::OK).await;
    let ops = app.redis().ops().await;
    let doc_key = format!("apikey:{project}:{}", key.key_id);
    let doc = || async {
        let raw = raw(&ops, "JSON.GET", vec![doc_key.clone()]).await.unwrap();
        serde_json::from_str::<Value>(&raw.as_string().unwrap()).unwrap()
    };
    let before = doc().await;
    app.admin_post(
        "/v1/revoke-key",
        &json!({ "project_id": project, "key_id": key.key_id }),
    )
    .await;

    let r = app
        .update(&project, &key.key_id, json!({ "owner": "carol" }))
        .await;

    assert_eq!(r.status(), StatusCode::OK);
    let after = doc().await;
    for field in ["secret_hash", "secret_tag", "created_at"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["disabled"], true);
    app.usage_is(&project, &key.key_id, 1).await;
    app.assert_denied(&key.api_key, &key.key_id, "disabled")
        .await;
}

#[tokio::test]
async fn a_rotated_key_accepts_both_secrets_during_the_grace_period_then_only_the_new_one() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let old = app.mint(&project, json!({})).await;
    // The old secret is in the verified-secret cache before the rotation.
    app.validate(&old.api_key, StatusCode::OK).await;

    let new = app.rotate(&project, &old.key_id, 3600).await;

    assert_ne!(new.api_key, old.api_key);
    assert!(new
        .api_key
        .starts_with(&format!("sk-proj.{project}.{}.", old.key_id)));
    for _ in 0..2 {
        app.validate(&new.api_key, StatusCode::OK).await;
        assert_eq!(app.last_audit(&old.key_id).await["reason"], "ok");
        app.validate(&old.api_key, StatusCode::OK).await;
        let audit = app.last_audit(&old.key_id).await;
        assert_eq!(
            (audit["result"].as_str(), audit["reason"].as_str()),
            ("ok", "previous_secret")
        );
    }
    // One key: one usage count across both secrets.
    let state = app.usage_is(&project, &old.key_id, 5).await;
    assert!(state["previous_expires_at"].as_f64().unwrap() > 1.7e9);

    app.end_grace(&project, &old.key_id).await;

    app.assert_denied(&old.api_key, &old.key_id, "bad_secret")
        .await;
    app.validate(&new.api_key, StatusCode::OK).await;
    assert_eq!(
        app.get_key(&project, &old.key_id).await["previous_expires_at"],
        Value::Null
    );
}

#[tokio::test]
async fn rotating_again_ends_the_older_secret_at_once_and_grace_zero_ends_it_now() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let first = app.mint(&project, json!({})).await;
    let second = app.rotate(&project, &first.key_id, 3600).await;

    let third = app.rotate(&project, &first.key_id, 3600).await;

    app.assert_denied(&first.api_key, &first.key_id, "bad_secret")
        .await;
    app.validate(&second.api_key, StatusCode::OK).await;
    app.validate(&third.api_key, StatusCode::OK).await;

    let fourth = app.rotate(&project, &first.key_id, 0).await;
    app.assert_denied(&third.api_key, &first.key_id, "bad_secret")
        .await;
    app.validate(&fourth.api_key, StatusCode::OK).await;
}

#[tokio::test]
async fn revoking_a_rotated_key_disables_both_secrets_and_a_disabled_key_cannot_be_rotated() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let old = app.mint(&project, json!({})).await;
    let new = app.rotate(&project, &old.key_id, 3600).await;
    let key_ref = json!({ "project_id": project, "key_id": old.key_id });

    app.admin_post("/v1/revoke-key", &key_ref).await;

    app.assert_denied(&old.api_key, &old.key_id, "disabled")
        .await;
    app.assert_denied(&new.api_key, &old.key_id, "disabled")
        .await;
    let r = app.admin_post("/v1/rotate-key", &key_ref).await;
    assert_error(r, StatusCode::CONFLICT, "key_disabled").await;
    let too_long = json!({ "project_id": project, "key_id": old.key_id, "grace_seconds": 604_801 });
    let r = app.admin_post("/v1/rotate-key", &too_long).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let missing = json!({ "project_id": project, "key_id": "k_nosuchkey" });
    let r = app.admin_post("/v1/rotate-key", &missing).await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;
}

#[tokio::test]
async fn a_key_bound_to_networks_admits_only_addresses_inside_them_and_fails_closed() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "allowed_cidrs": ["203.0.113.0/24", "2001:db8::/32"] }),
        )
        .await;

    for ip in ["203.0.113.9", "2001:db8::42", "::ffff:203.0.113.10"] {
        assert_eq!(
            app.validate_from(&key.api_key, Some(ip)).await.status(),
            StatusCode::OK,
            "{ip}"
        );
    }
    for ip in [Some("198.51.100.1"), Some("2001:db9::1"), None] {
        let r = app.validate_from(&key.api_key, ip).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;
        assert_eq!(
            app.last_audit(&key.key_id).await["reason"],
            "ip_not_allowed",
            "{ip:?}"
        );
    }
    // Forward auth: the right-most X-Forwarded-For entry is the gateway's own view.
    let auth = |xff: &'static str| {
        app.http
            .get(app.url("/v1/auth"))
            .header("x-api-key", &key.api_key)
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(
        auth("198.51.100.1, 203.0.113.5").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        auth("203.0.113.5, 198.51.100.1").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let r = app
        .validate_from(&key.api_key, Some("not-an-address"))
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let bad = json!({ "project_id": project, "owner": "o", "server_name": "s", "allowed_cidrs": ["300.0.0.0/8"] });
    let r = app.admin_post("/v1/mint-key", &bad).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
}

#[tokio::test]
async fn denied_addresses_and_wrong_secrets_during_a_rotation_cost_at_most_one_argon2_run_each() {
    const RUNS: &str = "keyward_argon2_runs_total";
    let redis = TestRedis::start();
    let app = Binary::start(&redis, &[("KEYWARD_BAD_SECRET_HASHES_PER_MINUTE", "100")]).await;
    let bound = app
        .mint_creating(
            "alpha",
            json!({ "allowed_cidrs": ["10.0.0.0/8"], "rate_limit_per_minute": 1000 }),
        )
        .await;
    let old = app
        .mint_creating("alpha", json!({ "rate_limit_per_minute": 1000 }))
        .await;
    let r = app
        .post(
            "/v1/rotate-key",
            &json!({ "project_id": "alpha", "key_id": old.key_id, "grace_seconds": 3600 }),
            Some(ADMIN_TOKEN),
        )
        .await;
    let new = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.metric(RUNS).await;

    // A never-verified key from outside its networks: no Argon2id at all.
    let outside = json!({ "api_key": bound.api_key, "client_ip": "192.0.2.1" });
    for _ in 0..5 {
        let r = app.post("/v1/validate-key", &outside, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.metric(RUNS).await - before, 0.0);

    // Wrong secrets during the grace period: both hashes carry tags, which
    // rule a wrong secret out without any run (the bound is one).
    for n in 0..5 {
        let wrong = format!("{}{n:04}", &new[..new.len() - 4]);
        app.validate(&wrong, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.metric(RUNS).await - before, 0.0);

    // Each secret costs one run the first time, then none (cached).
    for _ in 0..3 {
        app.validate(&old.api_key, StatusCode::OK).await;
        app.validate(&new, StatusCode::OK).await;
    }
    assert_eq!(app.metric(RUNS).await - before, 2.0);

    // A rotated key whose previous hash has no tag (minted by another tool):
    // a wrong secret costs exactly one run, against one of the two hashes.
    let untagged = app.mint_creating("alpha", json!({})).await;
    let doc = format!("apikey:alpha:{}", untagged.key_id);
    let ops = redis.ops().await;
    raw(&ops, "JSON.DEL", vec![doc, "$.secret_tag".into()])
        .await
        .unwrap();
    app.post(
        "/v1/rotate-key",
        &json!({ "project_id": "alpha", "key_id": untagged.key_id, "grace_seconds": 3600 }),
        Some(ADMIN_TOKEN),
    )
    .await;
    let before = app.metric(RUNS).await;
    let wrong = format!("{}0000", &untagged.api_key[..untagged.api_key.len() - 4]);
    app.validate(&wrong, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.metric(RUNS).await - before, 1.0);
    app.validate(&untagged.api_key, StatusCode::OK).await;
    assert_eq!(app.metric(RUNS).await - before, 2.0);
}

#[tokio::test]
async fn every_admin_write_is_in_the_admin_audit_stream_with_its_action() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    app.update(&project, &key.key_id, json!({ "owner": "dave" }))
        .await;
    app.rotate(&project, &key.key_id, 60).await;
    let key_ref = json!({ "project_id": project, "key_id": key.key_id });
    app.admin_post("/v1/revoke-key", &key_ref).await;

    let actions: Vec<String> = app
        .audit("audit:admin")
        .await
        .into_iter()
        .filter(|e| e["key_id"] == key.key_id)
        .map(|e| e["action"].clone())
        .collect();

    assert_eq!(
        actions,
        ["key.mint", "key.update", "key.rotate", "key.revoke"]
    );
}

#[tokio::test]
async fn writes_waiting_for_a_replica_that_is_not_there_are_answered_and_counted() {
    const UNCONFIRMED: &str = "keyward_admin_writes_unconfirmed_total";
    let redis = TestRedis::start(); // no replica
    let env = [
        ("KEYWARD_ADMIN_WAIT_REPLICAS", "1"),
        ("KEYWARD_REDIS_TIMEOUT_MS", "1000"),
    ];
    let app = Binary::start(&redis, &env).await;
    assert_eq!(app.metric(UNCONFIRMED).await, 0.0);
    let key = app.mint_creating("alpha", json!({})).await;
    assert_eq!(app.metric(UNCONFIRMED).await, 1.0, "the mint");
    let body = json!({ "project_id": "alpha", "key_id": key.key_id });
    let r = app.post("/v1/revoke-key", &body, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.metric(UNCONFIRMED).await, 2.0, "the revoke");
    let r = app
        .post("/v1/validate-key", &json!({ "api_key": key.api_key }), None)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "revoked all the same");

    // A manager that may not WAIT (ACLs from before this setting): the
    // write is done and answered, and counted unconfirmed.
    let inspector = redis.client("test-inspector", OPS_PASSWORD).await;
    let no_wait = ["SETUSER", "manager", "-wait"].map(String::from).to_vec();
    raw(&inspector, "ACL", no_wait).await.unwrap();
    let key = app.mint_creating("alpha", json!({})).await;
    assert_eq!(app.metric(UNCONFIRMED).await, 3.0, "the mint without WAIT");
    app.validate(&key.api_key, StatusCode::OK).await;
}
