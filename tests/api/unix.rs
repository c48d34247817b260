//! A co-located Redis over a Unix socket (`redis+unix://`): keyward mints,
//! validates and revokes through it as through TCP.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, TestRedis, MANAGER_PASSWORD, VALIDATOR_PASSWORD};

#[tokio::test]
async fn keyward_mints_validates_and_revokes_through_redis_on_a_unix_socket() {
    let redis = Arc::new(TestRedis::start_with_unix_socket());
    let validator = redis.unix_url("validator", VALIDATOR_PASSWORD);
    let manager = redis.unix_url("manager", MANAGER_PASSWORD);
    let app = TestApp::spawn_with(redis.clone(), |config| {
        config.redis_url = validator.into();
        config.admin_redis_url = Some(manager.into());
    })
    .await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;

    let r = app.validate_response(&key.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    let audit = app.last_audit(&key.key_id).await;
    assert_eq!(
        (audit["result"].as_str(), audit["reason"].as_str()),
        ("ok", "ok")
    );
    let r = app
        .admin_post(
            "/v1/revoke-key",
            &json!({ "project_id": project, "key_id": key.key_id }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.assert_denied(&key.api_key, &key.key_id, "disabled")
        .await;

    // Every connection of keyward's users came in over the socket
    // (`flags` has `U` for a Unix-socket client).
    for client in crate::helpers::keyward_clients(&redis).await {
        let flags = client.split(' ').find_map(|f| f.strip_prefix("flags="));
        assert!(flags.is_some_and(|f| f.contains('U')), "{client}");
    }
}
