//! Health, metrics, least privilege, secrets hygiene and the Redis-down path.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, free_port, raw, Binary, TestApp, TestRedis, ADMIN_TOKEN, MANAGER_PASSWORD,
    VALIDATOR_PASSWORD,
};

#[tokio::test]
async fn health_is_ok_and_metrics_count_validations_by_reason() {
    let app = TestApp::spawn().await;
    let r = app.get("/health", None).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "status": "ok" }));
    assert_eq!(app.get("/ready", None).await.status(), StatusCode::OK);
    app.validate_response("garbage").await;

    let text = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains(r#"keyward_validations_total{result="denied",reason="malformed"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"keyward_http_request_duration_seconds_bucket{route="/v1/validate-key""#),
        "{text}"
    );
    assert!(
        text.contains("keyward_redis_roundtrip_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn the_validator_user_gets_noperm_for_writes_reads_of_projects_and_audit_reads() {
    let redis = TestRedis::start();
    let validator = redis.client("validator", VALIDATOR_PASSWORD).await;
    let denied = [
        (
            "JSON.SET",
            vec!["apikey:p:k_abcdefg".to_owned(), "$".into(), "{}".into()],
        ),
        ("DEL", vec!["apikey:p:k_abcdefg".into()]),
        ("JSON.GET", vec!["project:p".into()]),
        (
            "XRANGE",
            vec!["audit:keylookup".into(), "-".into(), "+".into()],
        ),
        (
            "XTRIM",
            vec!["audit:keylookup".into(), "MAXLEN".into(), "0".into()],
        ),
        ("KEYS", vec!["*".into()]),
        ("FLUSHALL", vec![]),
    ];
    for (cmd, args) in denied {
        let err = raw(&validator, cmd, args).await.expect_err(cmd);
        assert!(err.starts_with("NOPERM"), "{cmd}: {err}");
    }
    assert!(
        raw(&validator, "JSON.GET", vec!["apikey:p:k_abcdefg".into()])
            .await
            .is_ok()
    );
    let manager = redis.client("manager", MANAGER_PASSWORD).await;
    let err = raw(
        &manager,
        "XRANGE",
        vec!["audit:admin".into(), "-".into(), "+".into()],
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("NOPERM"), "{err}");
}

#[tokio::test]
async fn secrets_never_reach_streams_lists_or_logs() {
    // The real binary, with debug logs captured from stderr.
    let redis = TestRedis::start();
    let mut app = Binary::start(
        &redis,
        &[("KEYWARD_LOG", "debug"), ("KEYWARD_LOG_FORMAT", "json")],
    )
    .await;
    let minted = app.mint_creating("alpha", json!({})).await;
    let api_key = minted.api_key.clone();
    let secret = api_key.rsplit('.').next().unwrap().to_owned();
    for presented in [
        api_key.clone(),
        format!("{api_key}x"),
        api_key.replace("k_", "k_x"),
    ] {
        app.validate_response(&presented).await;
    }
    let (http, base) = (&app.http, &app.base);
    let list = http
        .get(format!("{base}/v1/list-keys?project_id=alpha"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let ops = redis.ops().await;
    let doc = raw(
        &ops,
        "JSON.GET",
        vec![format!("apikey:alpha:{}", minted.key_id)],
    )
    .await
    .unwrap()
    .as_string()
    .unwrap();
    let hash: Value = serde_json::from_str(&doc).unwrap();
    let hash = hash["secret_hash"].as_str().unwrap().to_owned();
    let mut streams = String::new();
    for stream in ["audit:keylookup", "audit:admin"] {
        let v = raw(&ops, "XRANGE", vec![stream.into(), "-".into(), "+".into()])
            .await
            .unwrap();
        streams.push_str(&format!("{v:?}"));
    }
    // Stop it and read all it logged.
    let logs = app.stop_and_read_logs();

    assert!(logs.contains("key minted"), "logs were captured: {logs}");
    assert!(streams.contains("bad_secret"));
    for (place, text) in [("logs", &logs), ("streams", &streams), ("list", &list)] {
        assert!(!text.contains(&secret), "secret in {place}");
        assert!(!text.contains(&hash), "hash in {place}");
        assert!(!text.contains("$argon2id$"), "a hash in {place}");
        assert!(!text.contains(ADMIN_TOKEN), "admin token in {place}");
    }
}

/// Long enough that only a hang takes it, on however loaded a machine.
const HANG: Duration = Duration::from_secs(60);

/// keyward's stderr piped to a reader that takes nothing (a stalled log
/// collector: the pipe fills at 64 KiB). With the lines written from the
/// workers, they blocked on the full pipe and stopped answering; now lines
/// queue for a thread of their own, then drop, counted.
#[tokio::test]
async fn a_log_reader_that_takes_nothing_stalls_no_answer_and_drops_are_counted() {
    let redis = TestRedis::start();
    // Debug logs: several lines per validation (the harness reads stderr
    // only once the process has exited).
    let mut app = Binary::start(&redis, &[("KEYWARD_LOG", "debug")]).await;
    let limit = json!({ "rate_limit_per_minute": 1_000_000 });
    let key = app.mint_creating("alpha", limit).await.api_key;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = 0;
    loop {
        let answers = futures::stream::iter(0..400)
            .map(|_| {
                app.http
                    .post(app.url("/v1/validate-key"))
                    .json(&json!({ "api_key": key }))
                    .timeout(Duration::from_secs(10))
                    .send()
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for answer in answers {
            let status = answer.expect("answered within 10 s").status();
            assert_eq!(status, StatusCode::OK);
            answered += 1;
        }
        if app.metric("keyward_log_lines_dropped_total").await > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} answered and no log line dropped"
        );
    }
    // What the pipe held: the first lines, whole.
    let logs = app.stop_and_read_logs();
    assert!(
        logs.contains("key minted"),
        "{}",
        &logs[..logs.len().min(2000)]
    );
}

#[tokio::test]
async fn when_redis_is_down_validation_and_health_are_503_then_recover() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    app.validate(&key.api_key, StatusCode::OK).await;

    app.redis().stop();
    // Answered, not hung: the Redis deadline (500 ms here) ends the wait.
    // How fast is no concern of this test's.
    let r = tokio::time::timeout(HANG, app.validate_response(&key.api_key))
        .await
        .expect("a down Redis must not hang validation");
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1"),
        "status {}",
        r.status()
    );
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_error(
        app.get("/health", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;

    // Back up: the service reconnects by itself, no restart.
    app.redis().restart();
    app.wait_until(|s| s == StatusCode::OK).await;
    // Every pooled connection reconnects on its own schedule: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = app.validate_response(&key.api_key).await;
        if r.status() != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The restarted Redis reloaded its AOF: the key is valid again.
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn start_up_fails_clearly_on_bad_config_and_bad_credentials() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env_remove("KEYWARD_REDIS_URL")
        .env("KEYWARD_DEFAULT_RATE_LIMIT", "lots")
        .env("KEYWARD_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KEYWARD_DEFAULT_RATE_LIMIT"), "{stderr}");

    // A budget of zero would refuse what it budgets, every time.
    let zero = "KEYWARD_BAD_SECRET_HASHES_PER_MINUTE";
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env(zero, "0")
        .env("KEYWARD_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{zero}=0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(zero), "{stderr}");

    let redis = TestRedis::start();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "KEYWARD_REDIS_URL",
            redis.url("validator", "wrong-password"),
        )
        .env("KEYWARD_REDIS_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("validator"), "{stderr}");
    assert!(
        !stderr.contains("wrong-password"),
        "the password leaked: {stderr}"
    );
}

/// `keyward serve --help` is the table of settings, secrets included; an
/// empty variable counts as unset, as with the flags' defaults.
#[test]
fn serve_help_lists_every_setting_and_empty_variables_are_unset() {
    let help = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "[env: KEYWARD_DEFAULT_RATE_LIMIT=",
        "[default: 100]",
        "(1 to 256)",
        "KEYWARD_REDIS_URL ",
        "KEYWARD_ADMIN_TOKEN ",
    ] {
        assert!(help.contains(line), "{line} in {help}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_METRICS_LISTEN", "")
        .env("KEYWARD_DEFAULT_RATE_LIMIT", "")
        .env("KEYWARD_CLIENT_NAME", "")
        .env("KEYWARD_REDIS_URL", "http://not-redis")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KEYWARD_REDIS_URL: must be"), "{stderr}");
}

#[tokio::test]
async fn shutdown_finishes_cleanly_and_stops_accepting() {
    let mut app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    // A validation in flight while shutdown begins still gets its answer.
    let in_flight = {
        let (http, url) = (app.http.clone(), app.url("/v1/validate-key"));
        let body = json!({ "api_key": key.api_key });
        tokio::spawn(async move { http.post(url).json(&body).send().await.map(|r| r.status()) })
    };
    app.shutdown().await.expect("run returns Ok after shutdown");
    if let Ok(status) = in_flight.await.unwrap() {
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        app.http.get(app.url("/health")).send().await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn the_binary_runs_as_an_unprivileged_user_as_in_the_container() {
    // The Dockerfile runs keyward as uid 10001 with only its environment.
    let redis = TestRedis::start();
    let mut as_nobody = Command::new("setpriv");
    as_nobody.args(["--reuid=10001", "--regid=10001", "--clear-groups", "--"]);
    as_nobody.arg(env!("CARGO_BIN_EXE_keyward"));
    let app = Binary::start_with(as_nobody, &redis, &[]).await;
    let key = app.mint_creating("alpha", json!({})).await;
    app.validate(&key.api_key, StatusCode::OK).await;

    let listen = app.base.trim_start_matches("http://");
    let health = Command::new("setpriv")
        .args(["--reuid=10001", "--regid=10001", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_keyward"))
        .arg("healthcheck")
        .env("KEYWARD_LISTEN", listen)
        .status()
        .unwrap();
    assert!(health.success(), "keyward healthcheck as uid 10001");
}

#[tokio::test]
async fn a_monitor_user_samples_the_audit_stream_lengths() {
    // Like the template's `ops` user: XLEN on the audit streams, nothing else.
    let monitor = "user monitor on >monitor-pw resetkeys resetchannels -@all +ping +hello +auth \
                   +client|setname +client|id +info +xlen %R~audit:*";
    let redis = std::sync::Arc::new(TestRedis::start_with_acl(monitor));
    let url = redis.url("monitor", "monitor-pw");
    let app = TestApp::spawn_with(redis, move |c| {
        c.monitor_redis_url = Some(url.into());
        c.audit_sample_interval = Duration::from_millis(50);
    })
    .await;
    for _ in 0..3 {
        app.validate_response("garbage").await;
    }

    let want = r#"keyward_audit_stream_length{stream="audit:keylookup"} 3"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        if text.contains(want) {
            break;
        }
        assert!(Instant::now() < deadline, "never sampled: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
