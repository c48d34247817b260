//! Admin endpoints: projects, mint, revoke, list; auth.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp, TestRedis, ADMIN_TOKEN};

#[tokio::test]
async fn projects_are_created_once_and_read_back() {
    let app = TestApp::spawn().await;
    let body = json!({ "project_id": "alpha", "label": "Alpha", "owner": "team-a" });

    let r = app.admin_post("/v1/admin/projects", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["project_id"], "alpha");
    assert!(created["created_at"].as_f64().unwrap() > 1.7e9);

    assert_error(
        app.admin_post("/v1/admin/projects", &body).await,
        StatusCode::CONFLICT,
        "project_exists",
    )
    .await;
    let r = app.admin_get("/v1/admin/projects/alpha").await;
    assert_eq!(r.json::<Value>().await.unwrap(), created);
    assert_error(
        app.admin_get("/v1/admin/projects/nope").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    assert_error(
        app.admin_get("/v1/admin/projects/bad%20id").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
}

#[tokio::test]
async fn invalid_project_and_mint_requests_are_422_naming_the_problem() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let bad_projects = [
        json!({ "project_id": "has space", "label": "x", "owner": "y" }),
        json!({ "project_id": "p".repeat(65), "label": "x", "owner": "y" }),
        json!({ "project_id": "ok", "label": "x" }),
        json!({ "project_id": "ok", "label": "x", "owner": "y", "extra": true }),
    ];
    for body in bad_projects {
        assert_error(
            app.admin_post("/v1/admin/projects", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    let base = json!({ "project_id": project, "owner": "o", "server_name": "s" });
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let bad_mints = [
        (
            json!({ "project_id": project, "owner": "o" }),
            "missing server_name",
        ),
        (
            with(json!({ "expires_at": 1000.0 })),
            "expires_at in the past",
        ),
        (with(json!({ "rate_limit_per_minute": 0 })), "zero limit"),
        (
            with(json!({ "rate_limit_per_minute": -5 })),
            "negative limit",
        ),
        (with(json!({ "secret_hash": "x" })), "unknown field"),
    ];
    for (body, why) in bad_mints {
        let r = app.admin_post("/v1/mint-key", &body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
    }
    let r = app
        .admin_post("/v1/mint-key", &with(json!({ "project_id": "nope" })))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "project_not_found").await;
}

#[tokio::test]
async fn a_minted_key_has_the_documented_format_and_stored_document() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "metadata": [1, 2] })).await;

    let parsed = keyward::key::ApiKey::parse(&key.api_key).expect("minted key parses");
    assert_eq!(parsed.project_id.as_str(), project);
    assert_eq!(parsed.key_id.as_str(), key.key_id);
    let ops = app.redis().ops().await;
    let doc = crate::helpers::raw(
        &ops,
        "JSON.GET",
        vec![format!("apikey:{project}:{}", key.key_id)],
    )
    .await
    .unwrap();
    let doc: Value = serde_json::from_str(&doc.as_string().unwrap()).unwrap();
    assert!(doc["secret_hash"]
        .as_str()
        .unwrap()
        .starts_with("$argon2id$v=19$"));
    assert_eq!(doc["disabled"], false);
    assert_eq!(doc["metadata"], json!([1, 2]));
    assert!(doc["rate_limit_per_minute"].is_null());
    let members: Vec<String> = crate::helpers::raw(
        &ops,
        "ZRANGE",
        vec![format!("apiprojectkeys:{project}"), "0".into(), "-1".into()],
    )
    .await
    .unwrap()
    .convert()
    .unwrap();
    assert_eq!(members, vec![key.key_id.clone()]);
    let admin_audit = app.audit("audit:admin").await;
    assert!(admin_audit.iter().any(|e| e["action"] == "key.mint"
        && e["key_id"] == key.key_id
        && e["actor"] == "root"
        && e["outcome"] == "ok"));
}

#[tokio::test]
async fn revoking_an_unknown_key_is_404() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let r = app
        .admin_post(
            "/v1/revoke-key",
            &json!({ "project_id": project, "key_id": "k_missing1" }),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;
}

#[tokio::test]
async fn paging_returns_every_key_exactly_once_while_keys_are_minted() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let mut before = HashSet::new();
    for _ in 0..12 {
        before.insert(app.mint(&project, json!({})).await.key_id);
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/list-keys?project_id={project}&limit=5&cursor={c}"),
            None => format!("/v1/list-keys?project_id={project}&limit=5"),
        };
        let r = app.admin_get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert!(
                item.get("secret_hash").is_none(),
                "list must never include the hash"
            );
            seen.push(item["key_id"].as_str().unwrap().to_owned());
        }
        // Mint concurrently with the walk.
        app.mint(&project, json!({})).await;
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a key was listed twice");
    assert!(
        before.is_subset(&unique),
        "a key that existed throughout was missed"
    );
}

#[tokio::test]
async fn unused_since_lists_keys_unused_or_never_used_page_after_page() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let mut minted = Vec::new();
    for _ in 0..9 {
        minted.push(app.mint(&project, json!({})).await);
    }
    let (stale, rest) = minted.split_at(3);
    let (fresh, never) = rest.split_at(3);
    for key in stale {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    for key in stale {
        app.usage_is(&project, &key.key_id, 1).await;
    }
    // Every stale use is written, so before `since`; every fresh one after.
    let since = keyward::store::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for key in fresh {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    for key in fresh {
        app.usage_is(&project, &key.key_id, 1).await;
    }

    // Pages of 2 over 9 keys: 5 pages, some of them short once filtered.
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/list-keys?project_id={project}&limit=2&unused_since={since}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = app.admin_get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        for item in items {
            let last_used = item["last_used"].as_f64();
            assert!(last_used.map_or(true, |at| at < since), "{item}");
            listed.push(item["key_id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 5, "the filter skips no page of the walk");
    let want: HashSet<String> = stale
        .iter()
        .chain(never)
        .map(|k| k.key_id.clone())
        .collect();
    let got: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(got.len(), listed.len(), "a key was listed twice");
    assert_eq!(got, want, "unused since then, or never used");

    // Since the epoch: only the keys never used.
    let page: Value = app
        .admin_get(&format!(
            "/v1/list-keys?project_id={project}&unused_since=0"
        ))
        .await
        .json()
        .await
        .unwrap();
    let got: HashSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    let want: HashSet<&str> = never.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn list_rejects_bad_limits_and_unknown_projects() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let bad_times = [
        "unused_since=abc",
        "unused_since=-1",
        "unused_since=NaN",
        "unused_since=inf",
        "unused_since=",
    ];
    for q in ["limit=0", "limit=101", "limit=abc", "cursor=not-a-key-id"]
        .into_iter()
        .chain(bad_times)
    {
        let r = app
            .admin_get(&format!("/v1/list-keys?project_id={project}&{q}"))
            .await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    assert_error(
        app.admin_get("/v1/list-keys?project_id=nope").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    assert_error(
        app.admin_get("/v1/list-keys").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn admin_endpoints_need_the_bearer_token() {
    let app = TestApp::spawn().await;
    let body = json!({ "project_id": "alpha", "label": "A", "owner": "o" });
    for token in [None, Some("wrong-token"), Some(&ADMIN_TOKEN[..10])] {
        let r = app.post("/v1/admin/projects", &body, token).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = app
        .get("/v1/list-keys?project_id=alpha", Some("wrong"))
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn without_an_admin_token_admin_routes_are_not_served() {
    let app = TestApp::spawn_with(std::sync::Arc::new(TestRedis::start()), |c| {
        c.admin_token = None;
        c.admin_redis_url = None;
    })
    .await;
    let body = json!({ "project_id": "alpha", "label": "A", "owner": "o" });
    let r = app
        .post("/v1/admin/projects", &body, Some(ADMIN_TOKEN))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(
        app.get("/v1/list-keys?project_id=a", Some(ADMIN_TOKEN))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

/// Issue #37, finding 7: every answer that carries a secret shown once (a
/// minted or rotated key, an operator's token, a webhook's signing secret)
/// says `Cache-Control: no-store`; answers without one say nothing of it.
#[tokio::test]
async fn answers_carrying_a_secret_are_never_to_be_stored_by_a_cache() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let no_store = |r: &reqwest::Response| {
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mint = json!({ "project_id": project, "owner": "alice", "server_name": "api-1" });
    let r = app.admin_post("/v1/mint-key", &mint).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(no_store(&r).as_deref(), Some("no-store"), "mint");
    let key_id = r.json::<Value>().await.unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = json!({ "project_id": project, "key_id": key_id });
    let r = app.admin_post("/v1/rotate-key", &rotate).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(no_store(&r).as_deref(), Some("no-store"), "rotate");
    let operator = json!({ "name": "ci", "role": "viewer", "projects": [project] });
    let r = app.admin_post("/v1/admin/operators", &operator).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(no_store(&r).as_deref(), Some("no-store"), "operator");
    let hook = json!({ "url": "https://hooks.example.com/keyward", "events": ["*"], "projects": [project] });
    let r = app.admin_post("/v1/admin/webhooks", &hook).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = app.admin_post("/v1/admin/webhooks", &hook).await;
    assert_eq!(no_store(&r).as_deref(), Some("no-store"), "webhook");
    let get = format!("/v1/get-key?project_id={project}&key_id={key_id}");
    assert_eq!(no_store(&app.admin_get(&get).await), None);
}
