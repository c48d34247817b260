//! Bounded memory: Argon2id's blocks are reused, so a burst of mints and
//! cold validations at OWASP's minimum parameters leaves keyward small.
//!
//! Before, each run allocated its 19 MiB afresh, and glibc kept the freed
//! blocks in the arenas of tokio's blocking threads: hundreds of MiB that
//! were never returned.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Binary, TestRedis, ADMIN_TOKEN};

/// Resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn argon2id_at_owasp_minimum_leaves_keyward_under_100_mib_after_a_burst() {
    const KEYS: usize = 50;
    const AT_ONCE: usize = 8;
    const LIMIT_KIB: u64 = 100 * 1024;
    let redis = TestRedis::start();
    let app = Binary::start(
        &redis,
        &[
            ("KEYWARD_ARGON2_MEMORY_KIB", "19456"),
            ("KEYWARD_ARGON2_ITERATIONS", "2"),
            // Set, not the host's core count, so the bound is the same everywhere.
            ("KEYWARD_ARGON2_CONCURRENCY", "2"),
        ],
    )
    .await;
    let pid = app.process.0.id();
    let project = json!({ "project_id": "mem", "label": "p", "owner": "o" });
    let r = app
        .post("/v1/admin/projects", &project, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let mint = json!({ "project_id": "mem", "owner": "alice", "server_name": "api-1" });
    let keys: Vec<String> = futures::stream::iter(0..KEYS)
        .map(|_| async {
            let r = app.post("/v1/mint-key", &mint, Some(ADMIN_TOKEN)).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: serde_json::Value = r.json().await.unwrap();
            v["api_key"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let answers: Vec<StatusCode> = futures::stream::iter(&keys)
        .map(|key| app.status(key))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    // Every mint and every (cold) validation was an Argon2id run.
    assert_eq!(
        app.metric("keyward_argon2_runs_total").await,
        (2 * KEYS) as f64
    );

    let peak = rss_kib(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut rss = peak;
    while rss >= LIMIT_KIB && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        rss = rss_kib(pid);
    }
    eprintln!("keyward VmRSS: {peak} KiB after the burst, {rss} KiB at the end");
    assert!(
        rss < LIMIT_KIB,
        "keyward holds {rss} KiB 5 s after the burst (limit {LIMIT_KIB} KiB)"
    );
}
