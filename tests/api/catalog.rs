//! `GET /v1/admin/catalog`: what this keyward offers (roles, webhook event
//! types), which the console lists instead of keeping copies.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN_TOKEN};

#[tokio::test]
async fn the_catalog_lists_every_role_least_first_and_every_event_type_to_any_caller() {
    let app = TestApp::spawn().await;

    let r = app.get("/v1/admin/catalog", Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let catalog: Value = r.json().await.unwrap();
    assert_eq!(
        catalog["roles"],
        json!(["viewer", "key_manager", "project_admin", "owner"])
    );
    let types: Vec<&str> = catalog["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let every: Vec<&str> = keyward::event::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types, every);
    assert!(types.contains(&"key.revoked") && types.contains(&"webhook.test"));

    let refused = app.get("/v1/admin/catalog", Some("not-a-token")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}
