//! Issue #37, the admin plane under hostile input, each finding reproduced
//! as it was found (each of these failed on 240fbde): what a caller sends
//! is bounded wherever keyward keeps it, and no admin call escapes the
//! trail. Sizes are measured: Redis's `used_memory` and keyward's resident
//! memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, eventually, raw, rss_kib, template_user, Binary, TestApp, TestRedis, ADMIN_TOKEN,
};

pub(crate) const MONITOR_PASSWORD: &str = "edges-monitor-pw";

pub(crate) fn redis() -> Arc<TestRedis> {
    Arc::new(TestRedis::start_with_acl(&template_user(
        "ops",
        "edges-ops",
        MONITOR_PASSWORD,
    )))
}

/// Redis's `used_memory`, in bytes.
async fn used_memory(redis: &TestRedis) -> u64 {
    let ops = redis.ops().await;
    let info = raw(&ops, "INFO", vec!["memory".into()]).await.unwrap();
    let info: String = info.convert().unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// Creates an operator as root: its id and token.
async fn operator(bin: &Binary, role: &str, projects: &[&str]) -> (String, String) {
    let body = json!({ "name": role, "role": role, "projects": projects });
    let r = bin
        .post("/v1/admin/operators", &body, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    (
        v["operator_id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Finding 1: a 100 KB `X-Request-Id` (and an 8 KB project id in a path)
/// on 300 unauthenticated calls and 300 refused calls of a viewer, then a
/// root mint with one: before, each was echoed, logged and stored whole
/// (Redis +60 MB; reading the trail back took keyward hundreds of MB). Now
/// such an id is kept nowhere, keyward's own id is in every entry beside a
/// plain one the caller sent, every field is capped, and the viewer's
/// refusals are budgeted and summarized under its id.
#[tokio::test]
async fn a_long_request_id_is_kept_nowhere_and_refusal_floods_leave_redis_and_keyward_small() {
    const FLOOD: usize = 300;
    const AT_ONCE: usize = 8;
    let redis = redis();
    let monitor = redis.url("edges-ops", MONITOR_PASSWORD);
    let mut bin = Binary::start(
        &redis,
        &[
            ("KEYWARD_MONITOR_REDIS_URL", monitor.as_str()),
            ("KEYWARD_AUDIT_ANONYMOUS_PER_SECOND", "5"),
        ],
    )
    .await;
    let logs = bin.collect_logs();
    let pid = bin.process.0.id();
    let project = json!({ "project_id": "alpha", "label": "a", "owner": "o" });
    let r = bin
        .post("/v1/admin/projects", &project, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (viewer_id, viewer) = operator(&bin, "viewer", &["alpha"]).await;

    let long_id = "R".repeat(100_000);
    let long_project = "p".repeat(8_000);
    let before = used_memory(&redis).await;
    let call = |i: usize| {
        let (base, http) = (bin.base.clone(), bin.http.clone());
        let (long_id, long_project) = (long_id.clone(), long_project.clone());
        let viewer = viewer.clone();
        async move {
            let (req, want) = match i % 4 {
                0 | 1 => (
                    http.get(format!("{base}/v1/admin/whoami")),
                    StatusCode::UNAUTHORIZED,
                ),
                2 => (
                    http.get(format!("{base}/v1/admin/projects/{long_project}"))
                        .bearer_auth(&viewer),
                    StatusCode::NOT_FOUND,
                ),
                _ => (
                    http.post(format!("{base}/v1/mint-key"))
                        .bearer_auth(&viewer)
                        .json(&json!({ "project_id": "alpha", "owner": "o", "server_name": "s" })),
                    StatusCode::FORBIDDEN,
                ),
            };
            let r = req.header("x-request-id", &long_id).send().await.unwrap();
            assert_eq!(r.status(), want);
            r.headers()["x-request-id"].len()
        }
    };
    let echoed: Vec<usize> = futures::stream::iter(0..2 * FLOOD)
        .map(call)
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;

    // A root mint with the long id, and a call with a plain one.
    let mint = json!({ "project_id": "alpha", "owner": "o", "server_name": "s" });
    let r = bin
        .http
        .post(format!("{}/v1/mint-key", bin.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", &long_id)
        .json(&mint)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let own = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r = bin
        .http
        .get(format!("{}/v1/admin/whoami", bin.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "gw-1.2:3_x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "gw-1.2:3_x");

    let after = used_memory(&redis).await;
    let grown = after.saturating_sub(before);
    eprintln!("Redis used_memory {before} -> {after} (+{grown} bytes)");

    // Reading the whole trail back, page by page, as root.
    let rss_before = rss_kib(pid);
    let (mut cursor, mut largest) = (String::new(), 0);
    for _ in 0..10 {
        let page = bin.trail_page(&format!("limit=200{cursor}")).await;
        for e in page["items"].as_array().unwrap() {
            largest = largest.max(e.to_string().len());
        }
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let rss_after = rss_kib(pid);
    eprintln!("keyward VmRSS {rss_before} -> {rss_after} KiB");

    // The bounds first, so that a run on an older keyward reports its sizes.
    assert!(grown < 4 << 20, "Redis grew {grown} bytes");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "keyward grew from {rss_before} to {rss_after} KiB"
    );
    assert!(largest < 4096, "an entry of {largest} bytes");
    assert!(
        echoed.iter().all(|&n| n <= 64),
        "keyward's own id is echoed"
    );

    // The viewer's refusals: its entries and summaries, under its id,
    // account for all of them.
    let viewer_trail = format!("actor={viewer_id}&limit=200");
    let (own_entries, summarized) = eventually("the viewer's summaries", || async {
        let items = bin.trail_page(&viewer_trail).await["items"].clone();
        let items = items.as_array().unwrap().clone();
        let own = items.iter().filter(|e| e["count"] == 1).count();
        let summarized: u64 = items
            .iter()
            .filter(|e| e["count"] != 1)
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        (own as u64 + summarized == FLOOD as u64).then_some((own, summarized))
    })
    .await;
    assert!(summarized > 0 && own_entries < FLOOD / 2, "{own_entries}");

    // The root mint's entry: keyward's own id, no caller's.
    let items = bin.trail_page("actor=root&limit=200").await;
    let items = items["items"].as_array().unwrap().clone();
    let mint = items
        .iter()
        .find(|e| e["action"] == "key.mint")
        .unwrap_or_else(|| panic!("{items:?}"));
    assert_eq!(mint["request_id"], own.as_str());
    assert!(mint["caller_request_id"].is_null(), "{mint}");
    let whoami = items.iter().find(|e| e["action"] == "whoami").unwrap();
    assert_eq!(whoami["caller_request_id"], "gw-1.2:3_x");
    assert!(whoami["request_id"].as_str().unwrap().len() <= 64);

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains(&long_id[..1000]), "the long id was logged");
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
}

/// A keyward whose trail is readable (the monitor user), with `tweak`.
async fn app_with(tweak: impl FnOnce(&mut keyward::config::Config)) -> TestApp {
    let redis = redis();
    let url = redis.url("edges-ops", MONITOR_PASSWORD);
    TestApp::spawn_with(redis, move |c| {
        c.monitor_redis_url = Some(url.into());
        tweak(c);
    })
    .await
}

/// Finding 4: a wrong method on an admin route (405) left no entry.
#[tokio::test]
async fn a_wrong_method_on_an_admin_route_is_audited() {
    let app = app_with(|_| {}).await;
    let r = app
        .http
        .delete(app.url("/v1/admin/audit"))
        .header("x-request-id", "wrong-method-1")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let unknown = app.trail("actor=unknown").await;
    let entry = unknown
        .iter()
        .find(|e| e["caller_request_id"] == "wrong-method-1")
        .unwrap_or_else(|| panic!("no entry: {unknown:?}"));
    assert_eq!(entry["outcome"], "invalid", "{entry}");
}

/// Finding 4: the request deadline sat outside the audit layer, so a call
/// it cut short left no entry. Now the call and its entry run to the end
/// whatever the deadline did: here a mint whose Argon2id outlasts a 50 ms
/// deadline is answered 503 and written as `deadline`.
#[tokio::test]
async fn a_call_the_deadline_cuts_short_still_has_its_entry() {
    let app = app_with(|c| {
        c.request_timeout = Duration::from_millis(50);
        c.argon2 = keyward::config::Argon2Params {
            memory_kib: 64 * 1024,
            iterations: 4,
            parallelism: 1,
        };
    })
    .await;
    let project = app.project().await;
    let r = app
        .http
        .post(app.url("/v1/mint-key"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "slow-mint-1")
        .json(&json!({ "project_id": &project, "owner": "o", "server_name": "s" }))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let entry = eventually("the mint's entry", || async {
        app.trail("actor=root")
            .await
            .into_iter()
            .find(|e| e["caller_request_id"] == "slow-mint-1")
    })
    .await;
    assert_eq!(entry["action"], "key.mint", "{entry}");
    assert_eq!(entry["outcome"], "deadline", "{entry}");
    assert_eq!(entry["project_id"], project.as_str(), "{entry}");
}

/// Finding 3: a project_admin registered 3,000 endpoints, and the list
/// answered all of them at once. Now both quotas hold (a clear `409`
/// naming the setting) and the list is paged like every other.
#[tokio::test]
async fn webhook_endpoints_are_held_to_their_quotas_and_listed_in_pages() {
    let app = app_with(|c| {
        c.webhooks_max = 5;
        c.webhooks_per_project = 3;
        c.webhook_allow_private = true;
    })
    .await;
    let (alpha, beta, gamma) = (
        app.project().await,
        app.project().await,
        app.project().await,
    );
    let app = &app;
    let add = |project: &str| {
        let body =
            json!({ "url": "http://127.0.0.1:9/in", "events": ["*"], "projects": [project] });
        async move { app.admin_post("/v1/admin/webhooks", &body).await }
    };
    for _ in 0..3 {
        assert_eq!(add(&alpha).await.status(), StatusCode::CREATED);
    }
    let refused = assert_error(add(&alpha).await, StatusCode::CONFLICT, "quota_reached").await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("KEYWARD_WEBHOOKS_PER_PROJECT (3)"),
        "{message}"
    );
    assert!(message.contains(&alpha), "{message}");
    for _ in 0..2 {
        assert_eq!(add(&beta).await.status(), StatusCode::CREATED);
    }
    let refused = assert_error(add(&gamma).await, StatusCode::CONFLICT, "quota_reached").await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("KEYWARD_WEBHOOKS_MAX (5)"), "{message}");

    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, String::new());
    loop {
        let r = app
            .admin_get(&format!("/v1/admin/webhooks?limit=2{cursor}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        ids.extend(
            items
                .iter()
                .map(|w| w["webhook_id"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!((ids.len(), pages), (5, 3), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
}

/// Finding 1: reading the trail had no bound on the work in flight. Now
/// one caller has at most `KEYWARD_ADMIN_READS_AT_ONCE` audit (or
/// activity) reads running; the rest are `429`.
#[tokio::test]
async fn a_callers_audit_reads_at_once_are_limited() {
    let app = app_with(|c| c.admin_reads_at_once = 1).await;
    // A trail of 3,000 entries of another deployment: each read below
    // scans them all (it keeps none).
    let ops = app.redis().ops().await;
    for i in 0..3_000 {
        let args = ["audit:admin", "*", "client", "elsewhere", "n"]
            .into_iter()
            .map(str::to_owned)
            .chain([i.to_string()])
            .collect();
        raw(&ops, "XADD", args).await.unwrap();
    }
    let statuses: Vec<StatusCode> = futures::stream::iter(0..8)
        .map(|_| async {
            let r = app.admin_get("/v1/admin/audit?actor=nobody").await;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(r.headers()["retry-after"], "1");
                let body =
                    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "admin_rate_limited").await;
                assert!(body.to_string().contains("KEYWARD_ADMIN_READS_AT_ONCE (1)"));
                return StatusCode::TOO_MANY_REQUESTS;
            }
            r.status()
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(s)));
}

/// Finding 1: stored text had only a length (or, for metadata, only the
/// body's 64 KiB): a terminal escape or a right-to-left override went into
/// labels, names and owners as it was. Now each field is plain text of a
/// bounded length, metadata at most 16 KiB as JSON, or 422 naming it.
#[tokio::test]
async fn stored_text_with_control_or_bidirectional_characters_or_too_long_is_422() {
    let app = app_with(|c| c.webhook_allow_private = true).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let escape = "ops\u{1b}[2J";
    let flipped = "admin\u{202E}txt.exe";
    let long = "x".repeat(201);
    let big = json!({ "blob": "x".repeat(16 * 1024) });
    let mint = |field: &str, value: Value| {
        let mut body = json!({ "project_id": &project, "owner": "o", "server_name": "s" });
        body[field] = value;
        ("/v1/mint-key", body, field.to_owned())
    };
    let cases = vec![
        (
            "/v1/admin/projects",
            json!({ "project_id": "fresh1", "label": flipped, "owner": "o" }),
            "label".to_owned(),
        ),
        (
            "/v1/admin/projects",
            json!({ "project_id": "fresh2", "label": "l", "owner": long }),
            "owner".to_owned(),
        ),
        mint("owner", json!(escape)),
        mint("server_name", json!(flipped)),
        mint("metadata", big.clone()),
        (
            "/v1/update-key",
            json!({ "project_id": &project, "key_id": &key.key_id, "owner": "a\u{2066}b" }),
            "owner".to_owned(),
        ),
        (
            "/v1/update-key",
            json!({ "project_id": &project, "key_id": &key.key_id, "metadata": big }),
            "metadata".to_owned(),
        ),
        (
            "/v1/admin/operators",
            json!({ "name": escape, "role": "viewer", "projects": [&project] }),
            "name".to_owned(),
        ),
        (
            "/v1/admin/webhooks",
            json!({ "url": "http://127.0.0.1:9/in", "events": ["*"], "projects": [&project], "description": "a\u{85}b" }),
            "description".to_owned(),
        ),
    ];
    for (path, body, field) in cases {
        let r = app.admin_post(path, &body).await;
        let refused = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(&field), "{path} {field}: {message}");
    }
    // Plain text of any script, at the limit, is taken.
    let body = json!({ "project_id": &project, "owner": "Zoë 日本", "server_name": "x".repeat(200), "metadata": { "n": 1 } });
    let r = app.admin_post("/v1/mint-key", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
