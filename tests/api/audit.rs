//! The audit trail under floods: budgets (anonymous denials, bad admin
//! tokens, wrong operator secrets) keep a flood from flushing the entries
//! that matter, and summaries still count every call. What each validation
//! and admin call writes to the trail is asserted with the capability
//! (`validate.rs`, `operators.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, TestApp, TestRedis};
use crate::operators::{operator, redis, token_parts, MONITOR_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_anonymous_denials_cannot_flush_the_successes_from_the_audit_trail() {
    const SUCCESSES: usize = 400;
    const FLOOD: usize = 200_000;
    // With MAXLEN 5000 and 400 successes, the flood (at most 2 + 2 entries a
    // second) may take over 1,000 s before it could reach a success entry,
    // however slow a loaded machine makes it; without the budget its 200,000
    // entries would have flushed them 40 times over. (MAXLEN 1000 left too
    // little room: a flood slowed to ~150 s on a busy machine trimmed one.)
    const PER_SECOND: u64 = 2;
    let started = Instant::now();
    let redis = Arc::new(TestRedis::start());
    let app = Arc::new(
        TestApp::spawn_with(redis.clone(), |c| {
            c.audit_maxlen = 5_000;
            c.audit_anonymous_per_second = PER_SECOND;
            // Over 200,000 requests on a busy host, a few Redis answers came
            // later than the 500 ms test deadline (503s; the test Redis
            // fsyncs every write, `appendfsync always`). This test is about the
            // audit budget, not deadlines (ops.rs tests those), so Redis
            // gets 4 s, within the 5 s request deadline.
            c.redis_timeout = Duration::from_secs(4);
        })
        .await,
    );
    let project = app.project().await;
    let key = app
        .mint(&project, json!({ "rate_limit_per_minute": 1_000_000 }))
        .await;
    for _ in 0..SUCCESSES {
        app.validate(&key.api_key, StatusCode::OK).await;
    }

    // Half malformed, half well-formed keys of nobody, pipelined on a few
    // keep-alive connections so that the client costs next to nothing.
    let flood_started = Instant::now();
    let connections = 16;
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let bodies: Vec<String> = (c..FLOOD)
                .step_by(connections)
                .enumerate()
                .map(|(n, i)| {
                    // Both kinds on every connection, all through the flood.
                    let api_key = if n % 2 == 0 {
                        format!("garbage-{i}")
                    } else {
                        format!("sk-proj.{project}.k_nobody{i:07}.{}", "x".repeat(32))
                    };
                    json!({ "api_key": api_key }).to_string()
                })
                .collect();
            tokio::spawn(pipelined(app.addr, bodies))
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        for (status, n) in t.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    assert_eq!(
        statuses,
        BTreeMap::from([(401, FLOOD)]),
        "every flood request is a 401"
    );

    // Wait for the flusher to write the last seconds' summaries.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (entries, individual, summarized) = loop {
        let entries = app.audit("audit:keylookup").await;
        let anonymous = |e: &&HashMap<String, String>| {
            matches!(e["reason"].as_str(), "malformed" | "not_found")
        };
        let individual = entries
            .iter()
            .filter(anonymous)
            .filter(|e| !e.contains_key("summary"))
            .count() as u64;
        let summarized: u64 = entries
            .iter()
            .filter(anonymous)
            .filter(|e| e.get("summary").map(String::as_str) == Some("1"))
            .map(|e| e["count"].parse::<u64>().unwrap())
            .sum();
        if individual + summarized >= FLOOD as u64 || Instant::now() > deadline {
            break (entries, individual, summarized);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let successes = entries
        .iter()
        .filter(|e| e["reason"] == "ok" && e["key_id"] == key.key_id)
        .count();
    eprintln!(
        "flood: {FLOOD} requests in {flood_secs:.1} s ({:.0}/s); stream {} entries \
         ({individual} individual, {summarized} summarized); whole test {:.1} s",
        FLOOD as f64 / flood_secs,
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(successes, SUCCESSES, "every success entry is still there");
    assert_eq!(
        individual + summarized,
        FLOOD as u64,
        "the entries and the summaries account for every flood request"
    );
    // The flood wrote at most PER_SECOND entries plus one summary per
    // reason for each second it lasted (plus the partial seconds at its ends).
    let seconds = flood_secs.ceil() as u64 + 2;
    let flood_entries = entries.len() as u64 - SUCCESSES as u64;
    assert!(
        flood_entries <= (PER_SECOND + 2) * seconds,
        "{flood_entries} entries in {seconds} s"
    );
}

/// Sends each body as a `POST /v1/validate-key` on one HTTP/1.1 keep-alive
/// connection, pipelined (written while the answers are read), and counts
/// the answers by status.
async fn pipelined(addr: std::net::SocketAddr, bodies: Vec<String>) -> BTreeMap<u16, usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let expected = bodies.len();
    let write = tokio::spawn(async move {
        for chunk in bodies.chunks(256) {
            let mut bytes = Vec::new();
            for body in chunk {
                bytes.extend_from_slice(
                    format!(
                        "POST /v1/validate-key HTTP/1.1\r\nhost: keyward\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            writer.write_all(&bytes).await.unwrap();
        }
        writer
    });
    let mut statuses = BTreeMap::new();
    let (mut buf, mut read) = (Vec::new(), vec![0u8; 64 * 1024]);
    let mut answered = 0;
    while answered < expected {
        let n = reader.read(&mut read).await.unwrap();
        assert!(
            n > 0,
            "keyward closed the connection after {answered} answers"
        );
        buf.extend_from_slice(&read[..n]);
        // Consume every complete response in the buffer.
        let mut at = 0;
        while let Some(end) = find(&buf[at..], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[at..at + end]).unwrap();
            let status: u16 = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() < at + end + 4 + length {
                break;
            }
            at += end + 4 + length;
            *statuses.entry(status).or_default() += 1;
            answered += 1;
        }
        buf.drain(..at);
    }
    drop(write.await.unwrap());
    statuses
}

/// A keyward with the trail's monitor user and a bad-token budget of 3 a
/// second.
async fn budgeted_app() -> TestApp {
    let redis = redis();
    let url = redis.url("operators-ops", MONITOR_PASSWORD);
    TestApp::spawn_with(redis, move |c| {
        c.monitor_redis_url = Some(url.into());
        c.audit_anonymous_per_second = 3;
    })
    .await
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_budgeted_and_every_call_is_counted() {
    let app = budgeted_app().await;
    const FLOOD: u64 = 200;
    for i in 0..FLOOD {
        let token = format!("kwop.op_{i:012}.{}", "A".repeat(43));
        let r = app.get("/v1/admin/whoami", Some(&token)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The entries and the summaries (written about a second later) account
    // for every call; few are entries of their own.
    all_counted(&app, FLOOD, |_| true).await;
}

/// Waits until the `actor=unknown` entries that `keep` keeps, each and in
/// summaries (written about a second later), account for `flood` calls,
/// and checks that most were summarized.
async fn all_counted(app: &TestApp, flood: u64, keep: impl Fn(&Value) -> bool) {
    let (own, summarized) = eventually("the flood's summaries", || async {
        let items = app.trail("actor=unknown&limit=200").await;
        let items: Vec<&Value> = items.iter().filter(|e| keep(e)).collect();
        let own = items.iter().filter(|e| e["count"] == 1).count() as u64;
        let summarized: u64 = items
            .iter()
            .filter(|e| e["count"] != 1)
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        (own + summarized == flood).then_some((own, summarized))
    })
    .await;
    assert!(
        summarized > 0 && own < flood / 2,
        "own {own}, summarized {summarized}"
    );
}

#[tokio::test]
async fn a_flood_of_wrong_secrets_for_one_operator_is_summarized_under_its_claimed_id() {
    let app = budgeted_app().await;
    let alpha = app.project().await;
    let op = operator(&app, "viewer", &[&alpha], json!({})).await;
    let (id, _) = token_parts(&op.token);
    let forged = format!("kwop.{id}.{}", "F".repeat(43));
    const FLOOD: u64 = 100;
    for _ in 0..FLOOD {
        let r = app.get("/v1/admin/whoami", Some(&forged)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Entries of their own and the summaries (about a second later) all
    // name the operator as claimed, never as the actor.
    all_counted(&app, FLOOD, |e| e["claimed_operator"] == op.id.as_str()).await;
    assert!(app.trail(&format!("actor={}", op.id)).await.is_empty());
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
