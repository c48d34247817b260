//! Production behaviour: Redis outages under load, a slow or full Redis,
//! SIGTERM, the failsafe, request ids and hostile input.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, raw, wrong_secret, Binary, TestApp, TestRedis};

#[tokio::test]
async fn a_redis_outage_under_load_never_admits_a_revoked_key_or_loses_an_audit_entry() {
    let app = Arc::new(TestApp::spawn().await);
    let project = app.project().await;
    let good = app
        .mint(&project, json!({ "rate_limit_per_minute": 100000 }))
        .await;
    let revoked = app.mint(&project, json!({})).await;
    app.validate(&revoked.api_key, StatusCode::OK).await;
    app.admin_post(
        "/v1/revoke-key",
        &json!({ "project_id": project, "key_id": revoked.key_id }),
    )
    .await;

    let good_200 = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (app, good, revoked) = (app.clone(), good.api_key.clone(), revoked.api_key.clone());
        let (good_200, unavailable, stop) = (good_200.clone(), unavailable.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match app.status(&good).await {
                    StatusCode::OK => good_200.fetch_add(1, Ordering::Relaxed),
                    StatusCode::SERVICE_UNAVAILABLE => unavailable.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected {other} for the good key"),
                };
                let status = app.status(&revoked).await;
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                    "revoked key answered {status}"
                );
            }
        }));
    }
    // Waits (bounded) until `done` holds, polling.
    let wait_for = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ok = good_200.clone();
    wait_for(
        "no 200 before the outage",
        Box::new(move || ok.load(Ordering::Relaxed) > 0),
    )
    .await;
    // A crash (SIGKILL) and a restart from the AOF: audit entries written
    // before the crash must be read back too. Redis stays down until the
    // outage has been answered 503, however slow the machine is.
    app.redis().stop();
    let down = unavailable.clone();
    wait_for(
        "the outage was not observed",
        Box::new(move || down.load(Ordering::Relaxed) > 0),
    )
    .await;
    app.redis().restart();
    let before_recovery = good_200.load(Ordering::Relaxed);
    let ok = good_200.clone();
    wait_for(
        "the service did not recover by itself",
        Box::new(move || ok.load(Ordering::Relaxed) > before_recovery),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker panicked");
    }

    let answered_ok = good_200.load(Ordering::Relaxed);
    let audited_ok = app
        .audit("audit:keylookup")
        .await
        .iter()
        .filter(|e| e["key_id"] == good.key_id && e["result"] == "ok")
        .count();
    assert!(
        audited_ok >= answered_ok,
        "{answered_ok} answered 200 but only {audited_ok} audited ok"
    );
}

#[tokio::test]
async fn a_slow_redis_is_a_prompt_503_never_a_wrong_answer() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": 1_000_000 }))
        .await;
    let inspector = app.redis().ops().await;
    let sleeper =
        tokio::spawn(
            async move { raw(&inspector, "DEBUG", vec!["SLEEP".into(), "3".into()]).await },
        );

    // Until Redis falls asleep the key is valid. Once it is asleep,
    // keyward answers 503 at its deadline (500 ms) without waiting for
    // Redis: the 503 comes while the sleeper is still sleeping.
    let r = loop {
        let r = app.validate_response(&key.api_key).await;
        assert!(
            !sleeper.is_finished(),
            "Redis woke up before keyward answered: {}",
            r.status()
        );
        if r.status() != StatusCode::OK {
            break r;
        }
    };
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    sleeper.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_redis_at_maxmemory_is_a_503_and_recovers() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let inspector = app.redis().ops().await;
    let set = |value: &str| {
        raw(
            &inspector,
            "CONFIG",
            vec!["SET".into(), "maxmemory".into(), value.into()],
        )
    };

    set("1").await.unwrap();
    app.validate_fails(&key.api_key, StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        .await;
    set("0").await.unwrap();
    app.validate(&key.api_key, StatusCode::OK).await;
}

#[tokio::test]
async fn sigterm_finishes_cleanly_with_exit_code_0() {
    let redis = TestRedis::start();
    let mut app = Binary::start(&redis, &[]).await;
    let key = app.mint_creating("alpha", json!({})).await;
    app.validate(&key.api_key, StatusCode::OK).await;

    let pid = app.process.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = app.process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keyward did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

/// Issue #30, finding 1: under `KEYWARD_FAILSAFE=open`, with Redis away, a
/// 200 only for a secret this instance answered 200 lately and has not
/// refused since, with the document it read then; every other key (unknown,
/// wrong secret, never verified, revoked, lacking the route's scope) is a
/// 503. The admissions reach the audit stream once Redis is back, and the
/// stand-in ends after `KEYWARD_FAILSAFE_MAX_AGE`.
#[tokio::test]
async fn failsafe_open_admits_only_what_this_instance_verified_lately_and_audits_it_later() {
    let max_age = 4;
    let app = TestApp::spawn_with(Arc::new(TestRedis::start()), |c| {
        c.failsafe = keyward::config::Failsafe::Open;
        c.failsafe_max_age = max_age;
        // The last known good then holds 1,000 keys, fewer than the flood below.
        c.verify_cache_entries = 10;
    })
    .await;
    let project = app.project().await;
    let good = app.mint(&project, json!({ "scopes": ["read"] })).await;
    let cold = app.mint(&project, json!({})).await;
    let revoked = app.mint(&project, json!({})).await;
    let scoped = |key: &str, scopes: &[&str]| json!({ "api_key": key, "scopes": scopes });
    for key in [&good, &revoked] {
        assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    }
    let r = app
        .post("/v1/validate-key", &scoped(&good.api_key, &["read"]), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.revoke(&project, &revoked.key_id).await;
    assert_eq!(app.status(&revoked.api_key).await, StatusCode::UNAUTHORIZED);
    let mut unknown: Vec<&str> = good.api_key.split('.').collect();
    unknown[2] = "k_nobodyknows";
    let unknown = unknown.join(".");
    // A stranger's flood of unknown key ids, more than the memory holds,
    // cannot push the revoked key's refusal out.
    let strangers: Vec<String> = (0..1_200)
        .map(|i| unknown.replace("k_nobodyknows", &format!("k_stranger{i:05}")))
        .collect();
    for chunk in strangers.chunks(50) {
        let answers =
            futures::future::join_all(chunk.iter().map(|k| app.validate_response(k))).await;
        assert!(answers
            .iter()
            .all(|r| r.status() == StatusCode::UNAUTHORIZED));
    }
    assert_eq!(app.status(&good.api_key).await, StatusCode::OK);
    let answered = std::time::Instant::now();

    app.redis().stop();
    let r = app.validate_response(&good.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-keyward-failsafe"], "open");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (
            body["project_id"].as_str(),
            body["key_id"].as_str(),
            body["owner"].as_str()
        ),
        (
            Some(project.as_str()),
            Some(good.key_id.as_str()),
            Some("alice")
        ),
        "the identity of the document read then"
    );
    let r = app
        .post("/v1/validate-key", &scoped(&good.api_key, &["read"]), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK, "a scope the document granted");
    for (what, body) in [
        ("an unknown key id", json!({ "api_key": unknown })),
        (
            "a wrong secret",
            json!({ "api_key": wrong_secret(&good.api_key) }),
        ),
        (
            "a key never verified here",
            json!({ "api_key": cold.api_key }),
        ),
        ("a key refused since", json!({ "api_key": revoked.api_key })),
        (
            "a scope the document lacks",
            scoped(&good.api_key, &["write"]),
        ),
    ] {
        let r = app.post("/v1/validate-key", &body, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(r.headers().get("x-keyward-failsafe").is_none(), "{what}");
    }
    assert_ne!(app.status("garbage").await, StatusCode::OK);

    // Redis back: the two admissions are audited, as one summary.
    app.redis().restart();
    let summary = crate::helpers::eventually("the failsafe summary", || async {
        app.audit("audit:keylookup")
            .await
            .into_iter()
            .find(|e| e["reason"] == "failsafe_open" && e["key_id"] == good.key_id)
    })
    .await;
    assert_eq!(summary["result"], "ok");
    assert_eq!(summary["count"], "2");
    assert_eq!(summary["project_id"], project);

    // Past the bound, nothing stands in any more.
    let left = Duration::from_secs(max_age + 1).saturating_sub(answered.elapsed());
    tokio::time::sleep(left).await;
    app.redis().stop();
    let r = app.validate_response(&good.api_key).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "older than the bound"
    );
    app.redis().restart();
}

#[tokio::test]
async fn the_request_id_is_taken_from_the_caller_or_generated_and_echoed() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "gw-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "gw-1234");
    let id = || async {
        let r = app.http.get(app.url("/health")).send().await.unwrap();
        r.headers()["x-request-id"].to_str().unwrap().to_owned()
    };
    let (first, second) = (id().await, id().await);
    assert_ne!(first, second, "generated ids are unique");
    let (prefix, _) = first.split_once('-').expect("<process prefix>-<counter>");
    assert_eq!(prefix.len(), 16);
    assert!(second.starts_with(prefix));
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_never_a_5xx() {
    let app = TestApp::spawn().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let invalid_utf8: Vec<u8> = vec![
        b'{', b'"', b'a', b'p', b'i', b'_', b'k', b'e', b'y', b'"', b':', b'"', 0xff, 0xfe, b'"',
        b'}',
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", deep.clone().into_bytes()),
        ("application/json", invalid_utf8),
        ("text/plain", br#"{"api_key":"x"}"#.to_vec()),
        ("application/x-www-form-urlencoded", b"api_key=x".to_vec()),
        ("application/json", vec![0u8; 1000]),
        ("application/json", b"null".to_vec()),
        ("application/json", br#"{"api_key": null}"#.to_vec()),
        ("application/json", br#"{"api_key": "\u0000"}"#.to_vec()),
        ("application/json", vec![b'a'; 2 * 1024 * 1024]),
    ];
    let paths = [
        "/v1/validate-key",
        "/v1/mint-key",
        "/v1/revoke-key",
        "/v1/admin/projects",
    ];
    for path in paths {
        for (content_type, body) in &bodies {
            let r = app
                .http
                .post(app.url(path))
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .header("content-type", *content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(
                status.is_client_error(),
                "{path} {content_type}: {status} {text}"
            );
            assert!(
                text.contains(r#""error""#),
                "{path} {content_type}: no error body: {text}"
            );
        }
    }
    let long_query = format!(
        "/v1/list-keys?project_id={}&limit=1&x={}",
        "a".repeat(100),
        "y".repeat(30_000)
    );
    let r = app.admin_get(&long_query).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = app
        .admin_get("/v1/list-keys?project_id=a&project_id=b&limit=1&limit=2")
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let mut flood = app.http.get(app.url("/health"));
    for i in 0..500 {
        flood = flood.header(format!("x-flood-{i}"), "v");
    }
    let status = flood.send().await.map(|r| r.status()).ok();
    assert!(
        status.is_none_or(|s| s.is_client_error()),
        "header flood: {status:?}"
    );
    assert_error(
        app.get("/v1/validate-key", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.get("/nope", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.get("/health", None).await.status(),
        StatusCode::OK,
        "still serving"
    );
}
