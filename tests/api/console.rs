//! The admin console (`/admin/`) and the activity endpoint behind it.
//!
//! The `browser_*` tests drive the console in a real Chromium (see
//! `browser.rs`), each against a keyward and a Redis of its own (so each
//! has its own origin, and its own sessionStorage). Every screen is saved
//! at desktop and at phone width under `target/console-screenshots/`.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::browser::in_browser;
use crate::helpers::{
    assert_error, random_id, raw, template_user, TestApp, TestRedis, ADMIN_TOKEN, MANAGER_PASSWORD,
    VALIDATOR_PASSWORD,
};

const MONITOR_PASSWORD: &str = "console-ops-password";

/// A keyward whose monitor user is the template's `ops` user.
async fn app_with_monitor() -> TestApp {
    let redis = Arc::new(TestRedis::start_with_acl(&template_user(
        "ops",
        "console-ops",
        MONITOR_PASSWORD,
    )));
    let url = redis.url("console-ops", MONITOR_PASSWORD);
    TestApp::spawn_with(redis, move |c| c.monitor_redis_url = Some(url.into())).await
}

async fn activity(app: &TestApp, project: &str, query: &str) -> reqwest::Response {
    app.admin_get(&format!("/v1/activity?project_id={project}{query}"))
        .await
}

/// Appends an `audit:keylookup` entry as another writer would, with `ops`
/// (the test's inspection user).
async fn xadd(ops: &fred::prelude::Pool, fields: &[(&str, &str)]) {
    let mut args = vec!["audit:keylookup".to_owned(), "*".to_owned()];
    for (name, value) in fields {
        args.push((*name).to_owned());
        args.push((*value).to_owned());
    }
    raw(ops, "XADD", args).await.expect("XADD");
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Routes, headers and the activity API, without a browser.

#[tokio::test]
async fn no_console_route_answers_without_an_admin_token() {
    let redis = Arc::new(TestRedis::start());
    let app = TestApp::spawn_with(redis, |c| c.admin_token = None).await;

    for path in [
        "/admin",
        "/admin/",
        "/admin/index.html",
        "/admin/app.js",
        "/admin/style.css",
        "/v1/activity?project_id=p",
    ] {
        let r = app.get(path, Some(ADMIN_TOKEN)).await;
        assert!(
            r.headers().get("content-security-policy").is_none(),
            "{path} answered as the console"
        );
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn console_files_carry_the_security_headers_and_are_revalidated() {
    let app = TestApp::spawn().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = no_redirects.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/admin/");

    let files = [
        ("/admin/", "text/html; charset=utf-8"),
        ("/admin/app.js", "text/javascript; charset=utf-8"),
        ("/admin/activity.js", "text/javascript; charset=utf-8"),
        ("/admin/webhooks.js", "text/javascript; charset=utf-8"),
        ("/admin/style.css", "text/css; charset=utf-8"),
        ("/admin/favicon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in files {
        let r = app.get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP lacks {directive}: {csp}"
            );
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        // Nothing is loaded from anywhere but this origin.
        let body = r.text().await.unwrap();
        let body = body.replace("http://www.w3.org/2000/svg", "");
        let external = body.contains("http://") || body.contains("https://");
        assert!(!external, "{path} names another origin");

        let etag = h["etag"].to_str().unwrap();
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["x-frame-options"], "DENY", "{path}");
    }

    let r = app.get("/admin/nothing.js", None).await;
    assert!(r.headers().contains_key("content-security-policy"));
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn activity_without_a_monitor_user_says_how_to_enable_it() {
    let app = TestApp::spawn().await;
    let project = app.project().await;

    let body = assert_error(
        activity(&app, &project, "").await,
        StatusCode::CONFLICT,
        "activity_unavailable",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("KEYWARD_MONITOR_REDIS_URL"), "{message}");

    // The admin token and a readable project come first.
    let r = app
        .get(&format!("/v1/activity?project_id={project}"), None)
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_error(
        activity(&app, "nosuchproject", "").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    assert_error(
        activity(&app, "bad%20id", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn activity_counts_a_projects_validations_per_minute_and_lists_them_newest_first() {
    let app = app_with_monitor().await;
    let project = app.project().await;
    let other = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let elsewhere = app.mint(&other, json!({})).await;
    for _ in 0..3 {
        app.validate(&key.api_key, StatusCode::OK).await;
    }
    let wrong = format!("{}x", key.api_key);
    for _ in 0..2 {
        app.validate_response(&wrong).await;
    }
    app.validate_response(&elsewhere.api_key).await;
    // An entry written by an older service (no `reason`), then a summary
    // entry standing for 40 denials.
    let ops = app.redis().ops().await;
    let ts = now().to_string();
    xadd(
        &ops,
        &[
            ("ts", &ts),
            ("project_id", &project),
            ("key_id", &key.key_id),
            ("result", "ok"),
        ],
    )
    .await;
    let second = (now() as u64).to_string();
    xadd(
        &ops,
        &[
            ("ts", &ts),
            ("project_id", &project),
            ("key_id", ""),
            ("result", "denied"),
            ("reason", "not_found"),
            ("client", "gw-old"),
            ("summary", "1"),
            ("second", &second),
            ("count", "40"),
        ],
    )
    .await;

    let r = activity(&app, &project, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["project_id"], project);
    assert_eq!(out["complete"], true);
    assert_eq!(
        out["totals"],
        json!({ "ok": 4, "denied": 42, "rate_limited": 0, "other": 0 })
    );
    let minutes = out["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let sum = |result: &str| -> u64 { minutes.iter().map(|m| m[result].as_u64().unwrap()).sum() };
    assert_eq!((sum("ok"), sum("denied")), (4, 42));

    let recent = out["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 7, "{recent:?}");
    assert_eq!(recent[0]["summary"], true, "newest first: {recent:?}");
    assert_eq!(recent[0]["count"], 40);
    assert_eq!(recent[1]["reason"], Value::Null, "older service's entry");
    assert_eq!(recent[2]["reason"], "bad_secret");
    assert_eq!(recent[6]["reason"], "ok");
    assert_eq!(recent[6]["client"], "test-gateway");
    assert!(
        recent.iter().all(|e| e["key_id"] != elsewhere.key_id),
        "another project's entries: {recent:?}"
    );

    let r = activity(&app, &project, "&limit=2").await;
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["recent"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["totals"]["denied"], 42,
        "the limit bounds the list only"
    );
    assert_error(
        activity(&app, &project, "&limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn activity_shows_only_projects_the_manager_user_may_read() {
    // A per-client manager (the template's admin-a: project alpha only).
    let acl = [
        template_user("ops", "console-ops", MONITOR_PASSWORD),
        template_user("admin-a", "console-admin-a", "admin-a-password"),
    ]
    .join("\n");
    let redis = Arc::new(TestRedis::start_with_acl(&acl));
    let (monitor, manager) = (
        redis.url("console-ops", MONITOR_PASSWORD),
        redis.url("console-admin-a", "admin-a-password"),
    );
    let app = TestApp::spawn_with(redis, move |c| {
        c.monitor_redis_url = Some(monitor.into());
        c.admin_redis_url = Some(manager.into());
    })
    .await;
    let r = app
        .admin_post(
            "/v1/admin/projects",
            &json!({ "project_id": "alpha", "label": "A", "owner": "a" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Another client's project, and its traffic in the shared stream.
    let ops = app.redis().ops().await;
    let doc = json!({ "project_id": "beta", "label": "B", "owner": "b", "created_at": now() });
    raw(
        &ops,
        "JSON.SET",
        vec!["project:beta".into(), "$".into(), doc.to_string()],
    )
    .await
    .unwrap();
    let ts = now().to_string();
    for project in ["alpha", "beta"] {
        xadd(
            &ops,
            &[
                ("ts", &ts),
                ("project_id", project),
                ("key_id", "k_abcdefgh"),
                ("result", "ok"),
                ("reason", "ok"),
            ],
        )
        .await;
    }

    let out: Value = activity(&app, "alpha", "").await.json().await.unwrap();
    assert_eq!(out["totals"]["ok"], 1);
    assert_error(
        activity(&app, "beta", "").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
}

#[tokio::test]
async fn only_the_monitor_user_may_read_the_keylookup_stream() {
    let redis = TestRedis::start_with_acl(&template_user("ops", "console-ops", MONITOR_PASSWORD));
    let validator = redis.client("validator", VALIDATOR_PASSWORD).await;
    let manager = redis.client("manager", MANAGER_PASSWORD).await;
    let monitor = redis.client("console-ops", MONITOR_PASSWORD).await;
    let args = || vec!["audit:keylookup".to_owned(), "+".into(), "-".into()];
    for (who, pool) in [("validator", &validator), ("manager", &manager)] {
        let err = raw(pool, "XREVRANGE", args()).await.unwrap_err();
        assert!(err.starts_with("NOPERM"), "{who}: {err}");
    }
    raw(&monitor, "XREVRANGE", args())
        .await
        .expect("the monitor user reads the stream");
    let err = raw(
        &monitor,
        "XADD",
        vec!["audit:keylookup".into(), "*".into(), "a".into(), "b".into()],
    )
    .await
    .unwrap_err();
    assert!(
        err.starts_with("NOPERM"),
        "the monitor user only reads: {err}"
    );
}

// ---------------------------------------------------------------------------
// The console in a browser.

#[test]
fn browser_a_wrong_token_is_refused_and_nothing_is_kept() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        page.open(&app, "").await;
        page.find("#token").await;
        page.shot("01-sign-in", true).await;

        page.fill("#token", "not-the-admin-token-at-all").await;
        page.click("#signin-submit").await;
        page.until_text("#signin-status", "refused").await;
        page.shot("02-sign-in-refused", true).await;
        let stored = page
            .script(
                "return [sessionStorage.length, localStorage.length, document.cookie];",
                vec![],
            )
            .await;
        assert_eq!(
            stored,
            json!([0, 0, ""]),
            "nothing is kept of a refused token"
        );
        page.find("#signin-form").await;
        assert!(!page.contains("Create a project").await, "still signed out");
    });
}

#[test]
fn browser_an_operator_creates_a_project_and_mints_a_key_shown_once() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        page.sign_in(&app).await;
        // The token is in this tab's sessionStorage, and nowhere else.
        let where_ = page
            .script(
                "return [sessionStorage.getItem('keyward.adminToken'), \
                         JSON.stringify(localStorage), document.cookie, location.href];",
                vec![],
            )
            .await;
        assert_eq!(where_[0], ADMIN_TOKEN);
        for i in 1..4 {
            assert!(
                !where_[i].as_str().unwrap().contains(ADMIN_TOKEN),
                "{where_}"
            );
        }
        page.shot("03-projects-empty", true).await;

        let project = random_id("shop");
        page.fill("#create-project input[name=project_id]", &project)
            .await;
        page.fill("#create-project input[name=label]", "Web shop")
            .await;
        page.fill("#create-project input[name=owner]", "team-shop")
            .await;
        page.click("#create-project button[type=submit]").await;
        page.until_text("#key-summary", "0 keys loaded").await;
        let r = app
            .admin_get(&format!("/v1/admin/projects/{project}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "the project exists");

        page.click("#mint-open").await;
        page.fill("#mint-form input[name=owner]", "alice").await;
        page.fill("#mint-form input[name=server_name]", "checkout-1")
            .await;
        page.fill("#mint-form input[name=scopes]", "orders:read, orders:write")
            .await;
        page.fill("#mint-form input[name=rate_limit_per_minute]", "600")
            .await;
        page.fill("#mint-form textarea[name=metadata]", r#"{"env": "prod"}"#)
            .await;
        page.shot("04-mint-form", false).await;
        page.click("#mint-submit").await;

        let api_key = page.text("#secret-value").await;
        assert!(
            api_key.starts_with(&format!("sk-proj.{project}.k_")),
            "{api_key}"
        );
        assert!(page
            .text("dialog")
            .await
            .contains("you will not see it again"));
        page.shot("05-mint-key-shown-once", false).await;

        let r = app
            .post(
                "/v1/validate-key",
                &json!({ "api_key": api_key, "scopes": ["orders:read"] }),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "the shown key validates");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["owner"], "alice");
        assert_eq!(v["metadata"], json!({ "env": "prod" }));

        page.click("#secret-close").await;
        page.until_text("#key-summary", "1 key loaded").await;
        assert!(
            !page.contains(&api_key).await,
            "the key is gone from the DOM"
        );
        let secret = api_key.rsplit('.').next().unwrap();
        assert!(!page.contains(secret).await, "its secret too");
        assert_eq!(page.rows("#key-list").await, 1);
        page.shot("06-keys-one", true).await;

        // Escape closes the dialog too, and takes the key with it.
        page.click("#mint-open").await;
        page.fill("#mint-form input[name=owner]", "bob").await;
        page.fill("#mint-form input[name=server_name]", "checkout-2")
            .await;
        page.click("#mint-submit").await;
        let second = page.text("#secret-value").await;
        let escape: char = fantoccini::key::Key::Escape.into();
        page.find("#secret-close")
            .await
            .send_keys(&escape.to_string())
            .await
            .unwrap();
        page.until_text("#key-summary", "2 keys loaded").await;
        assert!(!page.contains(&second).await, "Escape removes the key too");
    });
}

#[test]
fn browser_the_key_list_pages_with_the_cursor_and_searches_loaded_keys() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let project = app.project().await;
        let mut keys = Vec::new();
        for i in 0..12 {
            let owner = if i % 2 == 0 { "alice" } else { "bob" };
            keys.push(
                app.mint(
                    &project,
                    json!({ "owner": owner, "server_name": format!("api-{i}") }),
                )
                .await,
            );
        }
        // One of each status.
        app.admin_post(
            "/v1/revoke-key",
            &json!({ "project_id": project, "key_id": keys[0].key_id }),
        )
        .await;
        app.admin_post(
            "/v1/rotate-key",
            &json!({ "project_id": project, "key_id": keys[1].key_id }),
        )
        .await;
        let ops = app.redis().ops().await;
        raw(
            &ops,
            "JSON.SET",
            vec![
                format!("apikey:{project}:{}", keys[2].key_id),
                "$.expires_at".into(),
                "1000".into(),
            ],
        )
        .await
        .unwrap();
        for _ in 0..3 {
            app.validate_response(&keys[3].api_key).await;
        }

        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}")).await;
        page.until_text("#key-summary", "12 keys loaded").await;
        page.find("#page-size")
            .await
            .select_by_value("10")
            .await
            .unwrap();
        page.until_text("#key-summary", "10 keys loaded, more available")
            .await;
        assert_eq!(page.rows("#key-list").await, 10);
        page.shot("07-keys-first-page", true).await;

        page.click("#load-more").await;
        page.until_text("#key-summary", "12 keys loaded.").await;
        assert_eq!(page.rows("#key-list").await, 12, "each key listed once");
        assert!(!page.find("#load-more").await.is_displayed().await.unwrap());
        let badges = page.text("#key-list").await;
        for badge in ["Disabled", "In rotation", "Expired", "Active"] {
            assert!(badges.contains(badge), "no {badge} badge: {badges}");
        }

        page.fill("#key-search", "bob").await;
        page.until_text("#key-summary", "6 of 12 keys loaded match")
            .await;
        assert_eq!(page.rows("#key-list").await, 6);
        page.shot("08-keys-search", true).await;
        page.fill("#key-search", &keys[7].key_id).await;
        page.until_text("#key-summary", "1 of 12").await;
        assert_eq!(page.rows("#key-list").await, 1);
    });
}

#[test]
fn browser_key_detail_updates_rotates_and_revokes_behind_confirmations() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let project = app.project().await;
        let key = app
            .mint(
                &project,
                json!({ "scopes": ["chat:*"], "metadata": { "team": "core" } }),
            )
            .await;
        app.validate(&key.api_key, StatusCode::OK).await;
        // The page reads usage once; it reaches Redis about a second later.
        app.usage_is(&project, &key.key_id, 1).await;
        let get = || async {
            let r = app
                .admin_get(&format!(
                    "/v1/get-key?project_id={project}&key_id={}",
                    key.key_id
                ))
                .await;
            r.json::<Value>().await.unwrap()
        };

        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}/keys/{}", key.key_id))
            .await;
        page.until_text("#usage-count", "1").await;
        page.shot("09-key-detail", true).await;

        // Update: only what was edited, after a confirmation.
        page.fill("#update-form input[name=owner]", "carol").await;
        page.fill("#update-form input[name=rate_limit_per_minute]", "42")
            .await;
        page.click("#update-submit").await;
        page.until_text("dialog", "Change the owner").await;
        page.shot("10-confirm-update", false).await;
        page.click("#confirm-button").await;
        page.until_text("#key-details", "carol").await;
        let doc = get().await;
        assert_eq!(
            (doc["owner"].clone(), doc["rate_limit_per_minute"].clone()),
            (json!("carol"), json!(42))
        );
        assert_eq!(
            doc["metadata"],
            json!({ "team": "core" }),
            "untouched fields stay"
        );
        assert_eq!(doc["scopes"], json!(["chat:*"]));

        // Rotate: the new key is shown once; both secrets validate.
        page.fill("#rotate-form input", "3600").await;
        page.click("#rotate-submit").await;
        page.find("#confirm-button").await;
        page.click("#confirm-button").await;
        let rotated = page.text("#secret-value").await;
        assert_ne!(rotated, key.api_key);
        app.validate(&rotated, StatusCode::OK).await;
        assert_eq!(app.status(&key.api_key).await, StatusCode::OK, "in grace");
        page.click("#secret-close").await;
        page.until_text("h1 .badges", "In rotation").await;
        assert!(
            !page.contains(&rotated).await,
            "the rotated key is gone from the DOM"
        );

        // Revoke: after a confirmation, neither secret validates.
        page.click("#revoke-submit").await;
        page.until_text("dialog", "cannot be undone").await;
        page.shot("11-confirm-revoke", false).await;
        page.click("#confirm-button").await;
        page.until_text("h1 .badges", "Disabled").await;
        for k in [&rotated, &key.api_key] {
            app.validate(k, StatusCode::UNAUTHORIZED).await;
        }
        assert_eq!(get().await["disabled"], true);
        assert!(!page
            .find("#rotate-submit")
            .await
            .is_enabled()
            .await
            .unwrap());
        page.shot("12-key-revoked", true).await;
    });
}

#[test]
fn browser_a_key_minted_with_windows_and_credits_shows_them_takes_credits_and_clears_them() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let project = app.project().await;
        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}")).await;
        page.until_text("#key-summary", "0 keys loaded").await;

        // Two windows, and credits that refill every month (a day's refill
        // could fall in the middle of the test).
        page.click("#mint-open").await;
        page.fill("#mint-form input[name=owner]", "alice").await;
        page.fill("#mint-form input[name=server_name]", "llm-gateway")
            .await;
        for (row, (limit, per)) in [("10", "second"), ("50000", "day")].iter().enumerate() {
            page.click("#mint-form button[name=add-limit]").await;
            let row = format!("#mint-form .limit-row:nth-child({})", row + 1);
            page.fill(&format!("{row} input[name=limit]"), limit).await;
            let select = page.find(&format!("{row} select[name=per]")).await;
            select.select_by_value(per).await.unwrap();
        }
        page.fill("#mint-form input[name=credits_remaining]", "480")
            .await;
        let refill = page.find("#mint-form select[name=refill_interval]").await;
        refill.select_by_value("month").await.unwrap();
        page.fill("#mint-form input[name=refill_amount]", "500")
            .await;
        page.fill("#mint-form input[name=credits_low_at]", "100")
            .await;
        page.shot("23-mint-form-plan", false).await;
        page.click("#mint-submit").await;
        let api_key = page.text("#secret-value").await;
        let key_id = api_key.split('.').nth(2).unwrap().to_owned();
        page.click("#secret-close").await;
        let row = format!("#key-list tr[data-key-id='{key_id}']");
        page.until_text(&row, "480").await;
        let get = || async {
            let path = format!("/v1/get-key?project_id={project}&key_id={key_id}");
            app.admin_get(&path).await.json::<Value>().await.unwrap()
        };
        let doc = get().await;
        assert_eq!(
            doc["limits"],
            json!([{ "per": "second", "limit": 10 }, { "per": "day", "limit": 50000 }])
        );
        assert_eq!(
            doc["credits"],
            json!({ "remaining": 480, "refill": { "interval": "month", "amount": 500 }, "low_at": 100 })
        );

        // A request of cost 5 spends them; the key screen says what is left.
        let body = json!({ "api_key": api_key, "cost": 5 });
        let r = app.post("/v1/validate-key", &body, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        page.click(&format!("{row} a")).await;
        page.until_text("#key-limits", "10 per second, 50,000 per day")
            .await;
        page.until_text(
            "#key-credits",
            "475 left, refilled to 500 every month; key.credits_low below 100",
        )
        .await;
        page.shot("24-key-plan", true).await;

        // Add credits: the dialog shows the new balance.
        page.click("#add-credits-open").await;
        page.fill("#add-credits-form input[name=amount]", "25")
            .await;
        page.click("#add-credits-submit").await;
        page.until_text("#add-credits-status", "Added 25: 500 left now.")
            .await;
        page.until_text("#credits-balance", "500 left").await;
        // Taking away more than is left is refused, and changes nothing.
        page.fill("#add-credits-form input[name=amount]", "-600")
            .await;
        page.click("#add-credits-submit").await;
        page.until_text("#add-credits-status", "fewer than 0 credits (500 left)")
            .await;
        assert!(page
            .text("#add-credits-status")
            .await
            .contains("credits_conflict"));
        page.shot("25-add-credits-refused", false).await;
        assert_eq!(get().await["credits"]["remaining"], 500);
        page.click("#add-credits-close").await;
        page.until_text("#key-credits", "500 left").await;

        // Edit: one window fewer, and no credits (unlimited).
        page.click("#update-form .limit-row:nth-child(2) button[name=remove-limit]")
            .await;
        page.find("#update-form input[name=credits_remaining]")
            .await
            .clear()
            .await
            .unwrap();
        let refill = page.find("#update-form select[name=refill_interval]").await;
        refill.select_by_value("").await.unwrap();
        page.click("#update-submit").await;
        page.until_text("dialog", "Change the windows").await;
        let confirm = page.text("dialog").await;
        assert!(
            confirm.contains("Change the credits") && !confirm.contains("owner"),
            "{confirm}"
        );
        page.click("#confirm-button").await;
        page.until_text("#key-credits", "unlimited").await;
        assert_eq!(page.text("#key-limits").await, "10 per second");
        assert!(!page.has("#add-credits-open").await, "nothing to add to");
        let doc = get().await;
        assert_eq!(doc["limits"], json!([{ "per": "second", "limit": 10 }]));
        assert_eq!(doc["credits"], Value::Null);
    });
}

#[test]
fn browser_the_activity_screen_charts_recent_validations_with_a_monitor_user() {
    in_browser(|page| async move {
        let app = app_with_monitor().await;
        let project = app.project().await;
        let key = app.mint(&project, json!({})).await;
        let other = app.mint(&project, json!({ "owner": "bob" })).await;
        let ops = app.redis().ops().await;
        // An hour of earlier traffic, as gateways would have written it
        // (dated by `ts`), so the chart has a history to show.
        let mut earlier = 0;
        for minute in (1..59u64).rev() {
            let at = (now() - (minute * 60) as f64).to_string();
            let ok = 2 + (minute * 7) % 9;
            let denied = u64::from(minute % 5 == 0) * 2 + u64::from(minute % 7 == 0);
            let limited = if (20..=23).contains(&minute) { 3 } else { 0 };
            for (result, reason, n) in [
                ("ok", "ok", ok),
                ("denied", "bad_secret", denied),
                ("rate_limited", "rate_limited", limited),
            ] {
                for _ in 0..n {
                    xadd(
                        &ops,
                        &[
                            ("ts", &at),
                            ("project_id", &project),
                            ("key_id", &key.key_id),
                            ("result", result),
                            ("reason", reason),
                            ("client", "edge-gateway"),
                        ],
                    )
                    .await;
                    earlier += 1;
                }
            }
        }

        for _ in 0..5 {
            app.validate_response(&key.api_key).await;
        }
        for _ in 0..2 {
            app.validate_response(&other.api_key).await;
        }
        app.validate_response(&format!("{}x", key.api_key)).await;
        let ts = now().to_string();
        xadd(
            &ops,
            &[
                ("ts", &ts),
                ("project_id", &project),
                ("key_id", &other.key_id),
                ("result", "ok"),
            ],
        )
        .await;
        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}/activity")).await;
        page.until_text("#activity-totals", &(9 + earlier).to_string())
            .await;
        let recent = page.text("#recent-list").await;
        assert!(recent.contains("bad_secret"), "{recent}");
        assert!(
            recent.contains("not recorded"),
            "an entry without reason: {recent}"
        );
        assert!(recent.contains(&key.key_id) && recent.contains(&other.key_id));
        let bars = page
            .script(
                "return document.querySelectorAll('#activity-chart rect.bar').length;",
                vec![],
            )
            .await;
        assert!(
            bars.as_u64().unwrap() >= 59,
            "a bar per minute with traffic: {bars}"
        );
        page.shot("13-activity", true).await;
    });
}

#[test]
fn browser_without_a_monitor_user_the_activity_screen_says_how_to_enable_it() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let project = app.project().await;
        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}/activity")).await;
        page.until_text("#activity-unavailable", "KEYWARD_MONITOR_REDIS_URL")
            .await;
        page.shot("14-activity-not-enabled", true).await;

        // The admin log reads with the same monitor user.
        page.open(&app, "#/audit").await;
        page.until_text("#audit-unavailable", "KEYWARD_MONITOR_REDIS_URL")
            .await;
        assert!(page
            .text("#audit-unavailable")
            .await
            .contains("audit:admin"));
        page.shot("16-audit-not-enabled", true).await;

        // And the projects screen lists the project.
        page.open(&app, "#/").await;
        page.until_text("#project-list", &project).await;
        page.shot("15-projects", true).await;
    });
}

/// An operator made through the API with the admin token: its id and token.
async fn operator(app: &TestApp, name: &str, role: &str, projects: &[&str]) -> (String, String) {
    let r = app
        .admin_post(
            "/v1/admin/operators",
            &json!({ "name": name, "role": role, "projects": projects }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let out: Value = r.json().await.unwrap();
    let token = out["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kwop.op_"), "{token}");
    (out["operator_id"].as_str().unwrap().to_owned(), token)
}

/// The `data-*` attribute of each row of a list, in order.
async fn row_ids(page: &crate::browser::Page, table: &str, attr: &str) -> Vec<String> {
    let ids = page
        .script(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')] \
                 .map(tr => tr.getAttribute(arguments[1])).filter(Boolean);",
            vec![json!(table), json!(attr)],
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

#[test]
fn browser_a_viewer_sees_its_one_project_and_its_keys_and_can_change_nothing() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let mine = app.project().await;
        let other = app.project().await;
        let plan = json!({
            "owner": "carol",
            "limits": [{ "per": "minute", "limit": 100 }],
            "credits": { "remaining": 7, "refill": null },
        });
        let key = app.mint(&mine, plan).await;
        app.mint(&other, json!({})).await;
        let (_, token) = operator(&app, "support: Ada", "viewer", &[&mine]).await;

        page.sign_in_with(&app, &token).await;
        page.until_text("#whoami", "support: Ada").await;
        assert_eq!(page.text("#whoami-role").await, "Viewer");
        assert!(!page.contains(&token).await, "the token is not in the page");
        let secret = token.rsplit('.').next().unwrap();
        assert!(!page.contains(secret).await, "nor its secret");
        assert_eq!(
            row_ids(&page, "#project-list", "data-project-id").await,
            [mine.as_str()],
            "exactly its project"
        );
        for hidden in ["#create-project", "#open-project"] {
            assert!(!page.has(hidden).await, "{hidden} is shown");
        }
        page.shot("17-viewer-projects", true).await;

        page.click(&format!("#project-list a[href='#/p/{mine}']"))
            .await;
        page.until_text("#key-summary", "1 key loaded").await;
        assert!(page.text("#key-list").await.contains(&key.key_id));
        assert!(!page.has("#mint-open").await, "no mint button");
        assert!(!page.contains("Mint a key").await);
        page.shot("18-viewer-keys", true).await;

        page.open(&app, &format!("#/p/{mine}/keys/{}", key.key_id))
            .await;
        page.until_text("#key-details", "carol").await;
        assert_eq!(page.text("#key-limits").await, "100 per minute");
        assert_eq!(page.text("#key-credits").await, "7 left");
        for hidden in [
            "#update-form",
            "#rotate-submit",
            "#revoke-submit",
            "#add-credits-open",
        ] {
            assert!(!page.has(hidden).await, "{hidden} is shown");
        }
        page.shot("19-viewer-key", true).await;

        // Another project answers as one that does not exist.
        page.open(&app, &format!("#/p/{other}")).await;
        page.until_text("main", &format!("No project \"{other}\""))
            .await;
    });
}

#[test]
fn browser_an_owner_lists_projects_mints_and_reads_who_did_what_in_the_admin_log() {
    in_browser(|page| async move {
        let app = app_with_monitor().await;
        let first = app.project().await;
        let second = app.project().await;
        let (viewer, token) = operator(&app, "support: Ada", "viewer", &[&first]).await;
        // Refused calls: the viewer tries to mint, and a token of no one.
        let mint = json!({ "project_id": first, "owner": "eve", "server_name": "x" });
        let r = app.post("/v1/mint-key", &mint, Some(&token)).await;
        assert_error(r, StatusCode::FORBIDDEN, "insufficient_permission").await;
        let r = app
            .get("/v1/admin/whoami", Some("not-a-token-of-anyone"))
            .await;
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

        page.sign_in(&app).await;
        page.until_text("#whoami", "root").await;
        assert_eq!(page.text("#whoami-role").await, "Owner");
        let mut projects = [first.clone(), second.clone()];
        projects.sort();
        assert_eq!(
            row_ids(&page, "#project-list", "data-project-id").await,
            projects
        );
        page.find("#create-project").await;
        page.find("#open-project").await;
        page.shot("20-owner-projects", true).await;

        page.click(&format!("#project-list a[href='#/p/{first}']"))
            .await;
        page.until_text("#key-summary", "0 keys loaded").await;
        page.click("#mint-open").await;
        page.fill("#mint-form input[name=owner]", "alice").await;
        page.fill("#mint-form input[name=server_name]", "checkout-1")
            .await;
        page.click("#mint-submit").await;
        let api_key = page.text("#secret-value").await;
        app.validate(&api_key, StatusCode::OK).await;
        let key_id = api_key.split('.').nth(2).unwrap().to_owned();
        page.click("#secret-close").await;
        page.until_text("#key-summary", "1 key loaded").await;

        page.click("#nav-audit").await;
        page.until_text("#audit-summary", "loaded").await;
        page.shot("21-admin-log", true).await;
        // Newest first: what each row says, as the console shows it.
        let rows = page
            .script(
                "return [...document.querySelectorAll('#audit-list tbody tr')] \
                     .map(tr => [...tr.cells].slice(1, 6).map(td => td.textContent).join(' '));",
                vec![],
            )
            .await;
        let rows: Vec<String> = serde_json::from_value(rows).unwrap();
        let at = |row: String| {
            rows.iter()
                .position(|r| *r == row)
                .unwrap_or_else(|| panic!("no row {row:?} in {rows:#?}"))
        };
        let minted = at(format!("root key.mint {first} {key_id} ok"));
        let refused = at("unknown whoami — — unauthorized".into());
        let forbidden = at(format!("{viewer} key.mint {first} — forbidden"));
        let created = at("root operator.create — — ok".into());
        let made = at(format!("root project.create {second} — ok"));
        assert!(
            minted < refused && refused < forbidden && forbidden < created && created < made,
            "newest first: {rows:#?}"
        );
        assert!(!page.contains(&token).await && !page.contains(&api_key).await);

        // A project's tab: only that project's entries.
        page.open(&app, &format!("#/p/{second}/audit")).await;
        page.find("nav.tabs").await;
        page.until_text("#audit-summary", "loaded").await;
        let list = page.text("#audit-list").await;
        assert!(
            list.contains("project.create") && !list.contains(&first),
            "{list}"
        );
        page.shot("22-project-admin-log", true).await;

        // Only what one actor did.
        page.open(&app, "#/audit").await;
        page.find("#audit-project").await;
        page.until_text("#audit-summary", "loaded").await;
        page.fill("#audit-actor", &viewer).await;
        page.click("#audit-filters button[type=submit]").await;
        page.until_text("#audit-summary", "1 entry loaded.").await;
        assert!(page.text("#audit-list").await.contains("forbidden"));

        // Older entries a page at a time, each once.
        for _ in 0..50 {
            app.admin_get("/v1/admin/whoami").await;
        }
        page.fill("#audit-actor", "").await;
        page.click("#audit-refresh").await;
        page.until_text("#audit-summary", "50 entries loaded, older ones available")
            .await;
        page.click("#audit-more").await;
        page.until(
            "a second page of entries",
            "return document.querySelectorAll('#audit-list tbody tr').length > 50;",
            vec![],
        )
        .await;
        let ids = row_ids(&page, "#audit-list", "data-entry-id").await;
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "each entry once");
        page.until_text("#audit-summary", &format!("{} entries loaded", ids.len()))
            .await;
    });
}

#[test]
fn browser_a_webhook_endpoint_is_added_with_its_secret_shown_once_tested_and_deleted() {
    in_browser(|page| async move {
        let redis = Arc::new(TestRedis::start());
        // Port 9 of the loopback: nothing listens, so each attempt fails
        // with a connection error.
        let app = TestApp::spawn_with(redis, |c| c.webhook_allow_private = true).await;
        let url = "http://127.0.0.1:9/hook";

        page.sign_in(&app).await;
        page.click("#nav-webhooks").await;
        page.until_text("#webhook-summary", "0 endpoints.").await;
        page.shot("26-webhooks-empty", true).await;

        page.click("#webhook-add-open").await;
        page.fill("#webhook-form input[name=url]", url).await;
        page.click("#webhook-all-events").await;
        for event in ["key.revoked", "webhook.test"] {
            page.click(&format!("#webhook-form input[value='{event}']"))
                .await;
        }
        page.fill("#webhook-form input[name=description]", "billing sync")
            .await;
        page.shot("27-webhook-form", false).await;
        page.click("#webhook-submit").await;

        let secret = page.text("#secret-value").await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        let dialog = page.text("dialog").await;
        assert!(dialog.contains("you will not see it again"), "{dialog}");
        assert_eq!(page.text("#secret-copy").await, "Copy signing secret");
        page.shot("28-webhook-secret-once", false).await;
        page.click("#secret-close").await;
        page.until_text("#webhook-summary", "1 endpoint.").await;
        assert!(
            !page.contains(&secret).await,
            "the secret is gone from the DOM"
        );
        let encoded = secret.trim_start_matches("whsec_");
        assert!(!page.contains(encoded).await, "all of it");

        let listed: Value = app
            .admin_get("/v1/admin/webhooks")
            .await
            .json()
            .await
            .unwrap();
        let endpoint = &listed["items"][0];
        assert_eq!(endpoint["url"], url);
        assert_eq!(endpoint["events"], json!(["key.revoked", "webhook.test"]));
        assert_eq!(endpoint["projects"], json!(["*"]));
        assert_eq!(endpoint["description"], "billing sync");
        let id = endpoint["webhook_id"].as_str().unwrap().to_owned();
        assert_eq!(
            row_ids(&page, "#webhook-list", "data-webhook-id").await,
            [id.as_str()]
        );
        let row = page.text("#webhook-list tbody tr").await;
        assert!(
            row.contains(url) && row.contains("key.revoked, webhook.test"),
            "{row}"
        );
        page.shot("29-webhooks-one", true).await;

        page.click(&format!("#webhook-list a[href='#/webhooks/{id}']"))
            .await;
        page.until_text("#delivery-summary", "0 attempts").await;
        page.click("#webhook-test").await;
        page.until_text("#webhook-status", "Test queued").await;
        let message_id = page.text("#webhook-status code").await;
        assert!(message_id.starts_with("msg_"), "{message_id}");
        // The worker's first attempt shows without a reload.
        page.until(
            "the test's failed attempt in the deliveries",
            "const tr = document.querySelector(`#delivery-list tr[data-message-id='${arguments[0]}'][data-attempt='1']`); \
             return !!tr && tr.textContent.includes('webhook.test') \
                 && tr.textContent.includes('Failed') && tr.textContent.includes('connection failed');",
            vec![json!(message_id)],
        )
        .await;
        let deliveries: Value = app
            .admin_get(&format!("/v1/admin/webhooks/{id}/deliveries?limit=10"))
            .await
            .json()
            .await
            .unwrap();
        let first = deliveries["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["message_id"] == message_id.as_str() && d["attempt"] == 1)
            .unwrap_or_else(|| panic!("no first attempt in {deliveries}"));
        assert_eq!(first["event_type"], "webhook.test");
        assert_eq!(first["delivered"], false);
        assert_eq!(first["status_code"], Value::Null);
        page.shot("30-webhook-deliveries", true).await;

        page.click("#webhook-delete").await;
        page.click("#confirm-button").await;
        page.until_text("#webhook-summary", "0 endpoints.").await;
        let listed: Value = app
            .admin_get("/v1/admin/webhooks")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"], json!([]), "deleted");

        // A viewer sees its project's endpoints and their deliveries, and
        // neither adds, tests nor deletes.
        let project = app.project().await;
        let body = json!({ "url": url, "events": ["*"], "projects": [project] });
        let r = app.admin_post("/v1/admin/webhooks", &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let created: Value = r.json().await.unwrap();
        let theirs = created["webhook_id"].as_str().unwrap();
        let (_, token) = operator(&app, "support: Ada", "viewer", &[&project]).await;
        page.click("#signout").await;
        page.sign_in_with(&app, &token).await;
        page.click("#nav-webhooks").await;
        page.until_text("#webhook-summary", "1 endpoint.").await;
        assert!(!page.has("#webhook-add-open").await, "an add button");
        page.click(&format!("#webhook-list a[href='#/webhooks/{theirs}']"))
            .await;
        page.until_text("#delivery-summary", "attempt").await;
        for hidden in ["#webhook-test", "#webhook-delete"] {
            assert!(!page.has(hidden).await, "{hidden} is shown");
        }
        assert!(page.text("#webhook-details").await.contains(&project));
    });
}

// ---------------------------------------------------------------------------
// The Usage tabs (issue #34).

/// One day of a usage record, as the test expects the console to show it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Day {
    cost: u64,
    ok: u64,
    bad_secret: u64,
    rate_limited: u64,
}

/// Adds `day` to the record of `project` and of its `key_id` at the UTC day
/// starting `start`, as keyward's flush writes it (`apiusage:<p>[:<k>]:days:
/// <yyyymm><01|11|21>`, fields `<dd>:<count>`, the cost as `<dd>:extra_cost`
/// beyond 1 a pass), with `ops`: earlier days for the chart.
async fn seed_day(ops: &fred::prelude::Pool, project: &str, key_id: &str, start: u64, day: Day) {
    let (y, m, d) = keyward::clock::civil_from_days((start / 86_400) as i64);
    let third = match d {
        1..=10 => 1,
        11..=20 => 11,
        _ => 21,
    };
    let span = format!("days:{y:04}{m:02}{third:02}");
    for name in [
        format!("apiusage:{project}:{key_id}:{span}"),
        format!("apiusage:{project}:{span}"),
    ] {
        for (field, n) in [
            ("ok", day.ok),
            ("extra_cost", day.cost - day.ok),
            ("bad_secret", day.bad_secret),
            ("rate_limited", day.rate_limited),
        ] {
            if n > 0 {
                let args = vec![name.clone(), format!("{d:02}:{field}"), n.to_string()];
                raw(ops, "HINCRBY", args).await.expect("HINCRBY");
            }
        }
    }
}

/// Checks the CSV the console offers (the columns `keyward usage --format
/// csv` prints) against `days`: a header of `start`, `start_utc`, `cost` and
/// every count, then a row per day, oldest first, every count not in
/// [`Day`] 0.
fn assert_usage_csv(csv: &str, days: &std::collections::BTreeMap<u64, Day>) {
    let lines: Vec<&str> = csv.lines().collect();
    assert!(csv.ends_with('\n'), "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        header[..6],
        [
            "start",
            "start_utc",
            "cost",
            "ok",
            "rate_limited",
            "credits_exhausted"
        ],
        "{csv}"
    );
    assert!(header.contains(&"bad_secret"), "{csv}");
    assert_eq!(lines.len(), 1 + days.len(), "a row per day: {csv}");
    for (line, (start, d)) in lines[1..].iter().zip(days) {
        let (y, m, dd) = keyward::clock::civil_from_days((start / 86_400) as i64);
        let row: std::collections::HashMap<&str, &str> =
            header.iter().copied().zip(line.split(',')).collect();
        assert_eq!(row.len(), header.len(), "{line}");
        for (name, value) in row {
            let expected = match name {
                "start" => start.to_string(),
                "start_utc" => format!("{y:04}-{m:02}-{dd:02}T00:00:00Z"),
                "cost" => d.cost.to_string(),
                "ok" => d.ok.to_string(),
                "bad_secret" => d.bad_secret.to_string(),
                "rate_limited" => d.rate_limited.to_string(),
                _ => "0".into(),
            };
            assert_eq!(value, expected, "{name} in {line}");
        }
    }
}

/// Checks the open Usage tab against `days`: a bar per day with a cost, of
/// that cost; a table row per day, with its counts; the totals.
async fn assert_usage_shown(
    page: &crate::browser::Page,
    days: &std::collections::BTreeMap<u64, Day>,
) {
    let cost: u64 = days.values().map(|d| d.cost).sum();
    page.until_text("#usage-cost", &cost.to_string()).await;
    let bars = page
        .script(
            "return [...document.querySelectorAll('#usage-chart rect.bar')] \
                 .map(r => [Number(r.dataset.start), Number(r.dataset.cost)]);",
            vec![],
        )
        .await;
    let expected: Vec<(u64, u64)> = days.iter().map(|(s, d)| (*s, d.cost)).collect();
    assert_eq!(
        serde_json::from_value::<Vec<(u64, u64)>>(bars).unwrap(),
        expected,
        "a bar per day with a cost, of that cost"
    );
    let rows = page
        .script(
            "return [...document.querySelectorAll('#usage-list tbody tr')].map(tr => { \
                 const n = (name) => Number((tr.querySelector(`[data-count=\"${name}\"]`)?.textContent ?? '0').replaceAll(',', '')); \
                 return [Number(tr.dataset.start), n('cost'), n('ok'), n('bad_secret'), n('rate_limited')]; });",
            vec![],
        )
        .await;
    let expected: Vec<(u64, u64, u64, u64, u64)> = days
        .iter()
        .map(|(s, d)| (*s, d.cost, d.ok, d.bad_secret, d.rate_limited))
        .collect();
    assert_eq!(
        serde_json::from_value::<Vec<(u64, u64, u64, u64, u64)>>(rows).unwrap(),
        expected,
        "a row per day with traffic, oldest first"
    );
}

#[test]
fn browser_the_usage_tabs_chart_tabulate_and_export_a_projects_and_a_keys_days() {
    in_browser(|page| async move {
        let app = app_with_monitor().await;
        let project = app.project().await;
        let a = app.mint(&project, json!({})).await;
        let b = app
            .mint(
                &project,
                json!({ "owner": "bob", "rate_limit_per_minute": 4 }),
            )
            .await;
        // Today: a passes 3 times and is refused once (a wrong secret); b
        // passes once at cost 4, which takes its minute, and is refused once.
        for _ in 0..3 {
            app.validate(&a.api_key, StatusCode::OK).await;
        }
        app.validate_response(&format!("{}x", a.api_key)).await;
        for (cost, status) in [(4, StatusCode::OK), (1, StatusCode::TOO_MANY_REQUESTS)] {
            let body = json!({ "api_key": b.api_key, "cost": cost });
            let r = app.post("/v1/validate-key", &body, None).await;
            assert_eq!(r.status(), status);
        }
        let today = (now() as u64) / 86_400 * 86_400;
        // Earlier days of a, as other instances would have written them.
        let ops = app.redis().ops().await;
        let earlier = [
            (
                3,
                Day {
                    cost: 40,
                    ok: 25,
                    bad_secret: 2,
                    rate_limited: 0,
                },
            ),
            (
                11,
                Day {
                    cost: 9,
                    ok: 9,
                    bad_secret: 0,
                    rate_limited: 1,
                },
            ),
            (
                29,
                Day {
                    cost: 120,
                    ok: 100,
                    bad_secret: 0,
                    rate_limited: 5,
                },
            ),
        ];
        let mut key_days = std::collections::BTreeMap::new();
        for (ago, day) in earlier {
            let start = today - ago * 86_400;
            seed_day(&ops, &project, &a.key_id, start, day).await;
            key_days.insert(start, day);
        }
        let mut project_days = key_days.clone();
        key_days.insert(
            today,
            Day {
                cost: 3,
                ok: 3,
                bad_secret: 1,
                rate_limited: 0,
            },
        );
        project_days.insert(
            today,
            Day {
                cost: 7,
                ok: 4,
                bad_secret: 1,
                rate_limited: 1,
            },
        );
        // The record is written about once a second: wait for today's.
        let path = format!(
            "/v1/admin/usage?project_id={project}&from={}&to={}&granularity=day",
            today,
            today + 86_400
        );
        crate::helpers::eventually("today's usage", || async {
            let out: Value = app.admin_get(&path).await.json().await.ok()?;
            (out["buckets"][0]["counts"]["ok"] == 4
                && out["buckets"][0]["counts"]["rate_limited"] == 1)
                .then_some(())
        })
        .await;

        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}/usage")).await;
        assert_usage_shown(&page, &project_days).await;
        assert_eq!(page.text("#usage-ok").await, "138");
        assert_eq!(page.text("#usage-denied").await, "10");
        let (name, csv) = page.download("#usage-csv").await;
        assert_usage_csv(&csv, &project_days);
        assert!(
            name.starts_with(&format!("usage-{project}-")) && name.ends_with(".csv"),
            "{name}"
        );
        page.shot("23-usage-project", true).await;

        // The key screen's Usage tab: only a's days.
        page.open(&app, &format!("#/p/{project}/keys/{}", a.key_id))
            .await;
        page.until_text("#key-details", "alice").await;
        page.click("nav.tabs a[href$='/usage']").await;
        assert_usage_shown(&page, &key_days).await;
        let (name, csv) = page.download("#usage-csv").await;
        assert_usage_csv(&csv, &key_days);
        assert!(
            name.starts_with(&format!("usage-{project}-{}-", a.key_id)),
            "{name}"
        );
        page.shot("24-usage-key", true).await;

        // A key without traffic: no bar, and a table that says so.
        let c = app.mint(&project, json!({ "owner": "carol" })).await;
        page.open(&app, &format!("#/p/{project}/keys/{}/usage", c.key_id))
            .await;
        page.until_text("#usage-list", "No validations in the last 30 days")
            .await;
        assert!(!page.has("#usage-chart rect.bar").await);
        assert_eq!(page.rows("#usage-list").await, 0);
    });
}

#[test]
fn browser_without_a_monitor_user_the_usage_tab_shows_what_keyward_says_it_needs() {
    in_browser(|page| async move {
        let app = TestApp::spawn().await;
        let project = app.project().await;
        let today = (now() as u64) / 86_400 * 86_400;
        let path = format!(
            "/v1/admin/usage?project_id={project}&from={today}&to={}&granularity=day",
            today + 86_400
        );
        let r = app.admin_get(&path).await;
        let body = assert_error(r, StatusCode::CONFLICT, "usage_unavailable").await;
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        page.sign_in(&app).await;
        page.open(&app, &format!("#/p/{project}/usage")).await;
        page.until_text("#usage-unavailable", &message).await;
        page.shot("25-usage-not-enabled", true).await;
    });
}
