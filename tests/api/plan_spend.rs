//! Usage plans on the validation path (issue #23): windows and credits
//! spent by each request's cost, exactly, and refusals that spend nothing.
//! Plans are written straight into the key documents here, as an admin
//! would through mint and update.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{raw, retry_after, TestApp, TestRedis};
use keyward::plan::{CreditsDoc, Interval, Per, Refill};

/// Gives the key `limits` and credits (`remaining`, with `refill` if any):
/// the document's fields and the current period's balance.
async fn plan(
    app: &TestApp,
    project: &str,
    key_id: &str,
    limits: Value,
    credits: Option<(i64, Option<Refill>)>,
) {
    let ops = app.redis().ops().await;
    let doc = format!("apikey:{project}:{key_id}");
    let set = |path: &str, value: Value| {
        raw(
            &ops,
            "JSON.SET",
            vec![doc.clone(), path.into(), value.to_string()],
        )
    };
    set("$.limits", limits).await.unwrap();
    if let Some((remaining, refill)) = credits {
        set("$.credits", json!({ "refill": refill })).await.unwrap();
        let counter = balance_key(project, key_id, refill);
        raw(&ops, "SET", vec![counter, remaining.to_string()])
            .await
            .unwrap();
    }
}

fn balance_key(project: &str, key_id: &str, refill: Option<Refill>) -> String {
    let (period, _) = CreditsDoc {
        refill,
        low_at: None,
    }
    .period(keyward::store::now());
    format!("apicredits:{project}:{key_id}:{period}")
}

async fn get(app: &TestApp, key: &str) -> Option<i64> {
    let ops = app.redis().ops().await;
    let v = raw(&ops, "GET", vec![key.to_owned()]).await.unwrap();
    v.as_str().map(|s| s.parse().unwrap())
}

/// A key's counters: its balance (credits without a refill), its `per`
/// window's and its minute's.
async fn spent(app: &TestApp, project: &str, key_id: &str, per: Per) -> [Option<i64>; 3] {
    [
        get(app, &balance_key(project, key_id, None)).await,
        get(app, &window_key(project, key_id, per)).await,
        get(app, &minute_key(project, key_id)).await,
    ]
}

fn minute_key(project: &str, key_id: &str) -> String {
    let minute = keyward::store::now() as u64 / 60;
    format!("ratelimit:key:{project}:{key_id}:{minute}")
}

fn window_key(project: &str, key_id: &str, per: Per) -> String {
    let w = per.window(keyward::store::now());
    format!("ratelimit:key:{project}:{key_id}:{}", w.name)
}

async fn validate(app: &TestApp, api_key: &str, cost: u64) -> reqwest::Response {
    app.post(
        "/v1/validate-key",
        &json!({ "api_key": api_key, "cost": cost }),
        None,
    )
    .await
}

async fn code(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn credits_running_out_spend_no_window_and_a_full_window_spends_no_credits() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    plan(
        &app,
        &project,
        &key.key_id,
        json!([{ "per": "hour", "limit": 100 }]),
        Some((3, None)),
    )
    .await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(code(validate(&app, &key.api_key, 1).await).await);
    }
    let ok: Vec<i64> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b["credits_remaining"].as_i64().unwrap())
        .collect();
    assert_eq!(ok, [2, 1, 0]);
    for (status, body) in &answers[3..] {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "credits_exhausted");
    }
    assert_eq!(
        get(&app, &balance_key(&project, &key.key_id, None)).await,
        Some(0)
    );
    assert_eq!(
        get(&app, &window_key(&project, &key.key_id, Per::Hour)).await,
        Some(3)
    );
    assert_eq!(get(&app, &minute_key(&project, &key.key_id)).await, Some(3));
    let audit = app.last_audit(&key.key_id).await;
    assert_eq!(
        (audit["reason"].as_str(), audit["cost"].as_str()),
        ("credits_exhausted", "1")
    );

    // A full day window: refused without spending credits.
    let other = app.mint(&project, json!({})).await;
    plan(
        &app,
        &project,
        &other.key_id,
        json!([{ "per": "day", "limit": 2 }]),
        Some((10, None)),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            validate(&app, &other.api_key, 1).await.status(),
            StatusCode::OK
        );
    }
    let day_left = || Per::Day.window(keyward::store::now()).ends_in;
    let before = day_left();
    let r = validate(&app, &other.api_key, 1).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset = retry_after(r.headers());
    // Until the day ends, as seen at some moment of the request.
    assert!((day_left()..=before).contains(&reset), "{reset}");
    assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    let (_, body) = code(r).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    let audit = app.last_audit(&other.key_id).await;
    assert_eq!(
        (audit["reason"].as_str(), audit["window"].as_str()),
        ("rate_limited", "day")
    );
    assert_eq!(
        spent(&app, &project, &other.key_id, Per::Day).await,
        [Some(8), Some(2), Some(2)]
    );
}

#[tokio::test]
async fn forty_simultaneous_requests_for_ten_credits_pass_exactly_ten() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    plan(
        &app,
        &project,
        &key.key_id,
        json!([{ "per": "month", "limit": 1000 }]),
        Some((10, None)),
    )
    .await;
    // Cost 0 verifies the secret (and spends nothing), so the race is warm.
    let r = validate(&app, &key.api_key, 0).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(code(r).await.1["credits_remaining"], 10);
    let answers = join_all((0..40).map(|_| validate(&app, &key.api_key, 1))).await;
    let passed = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(passed, 10);
    assert!(answers
        .iter()
        .all(|r| [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&r.status())));
    assert_eq!(
        spent(&app, &project, &key.key_id, Per::Month).await,
        [Some(0), Some(10), Some(10)]
    );
}

#[tokio::test]
async fn cost_zero_checks_and_spends_nothing_and_a_bad_cost_is_422() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    plan(
        &app,
        &project,
        &key.key_id,
        json!([{ "per": "hour", "limit": 5 }]),
        Some((2, None)),
    )
    .await;
    for _ in 0..3 {
        let (status, body) = code(validate(&app, &key.api_key, 0).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["credits_remaining"], 2);
    }
    assert_eq!(
        get(&app, &window_key(&project, &key.key_id, Per::Hour)).await,
        None
    );
    assert_eq!(get(&app, &minute_key(&project, &key.key_id)).await, None);
    // Weighted: 2 spends both credits; then cost 0 hears there are none.
    let (status, body) = code(validate(&app, &key.api_key, 2).await).await;
    assert_eq!(
        (status, body["credits_remaining"].as_i64()),
        (StatusCode::OK, Some(0))
    );
    let (status, body) = code(validate(&app, &key.api_key, 0).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "credits_exhausted");
    assert_eq!(
        get(&app, &window_key(&project, &key.key_id, Per::Hour)).await,
        Some(2)
    );
    for bad in [json!(-1), json!(1_000_001), json!("1"), json!(1.5)] {
        let r = app
            .post(
                "/v1/validate-key",
                &json!({ "api_key": key.api_key, "cost": bad }),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "cost {bad}");
    }
    // A key without a plan: unlimited credits, as before.
    let plain = app.mint(&project, json!({})).await;
    let (status, body) = code(validate(&app, &plain.api_key, 7).await).await;
    assert_eq!(
        (status, body["credits_remaining"].clone()),
        (StatusCode::OK, Value::Null)
    );
    assert_eq!(
        get(&app, &minute_key(&project, &plain.key_id)).await,
        Some(7)
    );
}

#[tokio::test]
async fn forward_auth_spends_x_keyward_cost_and_says_what_is_left() {
    let redis = Arc::new(TestRedis::start());
    let app = TestApp::spawn_with(redis, |c| c.auth_cost_header = true).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    plan(
        &app,
        &project,
        &key.key_id,
        json!([{ "per": "day", "limit": 50 }]),
        Some((10, None)),
    )
    .await;
    let auth = |cost: &str| {
        app.http
            .get(app.url("/v1/auth"))
            .bearer_auth(&key.api_key)
            .header("x-keyward-cost", cost)
            .send()
    };
    let r = auth("3").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-keyward-credits-remaining"], "7");
    // The window nearest to exhaustion: the credits aside, the day's 50
    // (47 left) is nearer than the minute's 100.
    assert_eq!(r.headers()["x-ratelimit-limit"], "50");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "47");
    let r = auth("8").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    for bad in ["-1", "1000001", "0123456", "+5", "x", ""] {
        let r = auth(bad).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "X-Keyward-Cost: {bad:?}"
        );
    }
    assert_eq!(
        get(&app, &balance_key(&project, &key.key_id, None)).await,
        Some(7)
    );
    assert_eq!(
        get(&app, &window_key(&project, &key.key_id, Per::Day)).await,
        Some(3)
    );
}

#[tokio::test]
async fn a_refill_happens_exactly_once_with_three_instances_racing_for_it() {
    let redis = Arc::new(TestRedis::start());
    let apps = [
        TestApp::spawn_with(redis.clone(), |_| {}).await,
        TestApp::spawn_with(redis.clone(), |_| {}).await,
        TestApp::spawn_with(redis, |_| {}).await,
    ];
    let project = apps[0].project().await;
    let key = apps[0].mint(&project, json!({})).await;
    let refill = Refill {
        interval: Interval::Day,
        amount: 20,
    };
    plan(
        &apps[0],
        &project,
        &key.key_id,
        json!([]),
        Some((0, Some(refill))),
    )
    .await;
    // The interval has not been spent yet: its balance does not exist, and
    // the first request of each instance creates it (`SET NX`).
    let ops = apps[0].redis().ops().await;
    let counter = balance_key(&project, &key.key_id, Some(refill));
    raw(&ops, "DEL", vec![counter.clone()]).await.unwrap();
    for app in &apps {
        // Warm each instance's verified-secret cache without spending.
        assert_eq!(
            validate(app, &key.api_key, 0).await.status(),
            StatusCode::OK
        );
    }
    raw(&ops, "DEL", vec![counter.clone()]).await.unwrap();
    // The day's seconds left before any balance is created: the most its
    // TTL can be (read after a second boundary, it would be one short).
    let day_left = Per::Day.window(keyward::store::now()).ends_in as i64;
    let api_key = key.api_key.as_str();
    let racing = apps
        .iter()
        .flat_map(|app| (0..15).map(move |_| validate(app, api_key, 1)));
    let answers = join_all(racing).await;
    let passed = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(passed, 20, "one refill of 20, however many instances race");
    assert_eq!(get(&apps[0], &counter).await, Some(0));
    let ttl = raw(&ops, "TTL", vec![counter])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= day_left + 120,
        "the interval's balance expires after it: {ttl}"
    );
}

#[tokio::test]
async fn a_day_and_a_month_ending_open_new_windows_and_refill_credits_once_across_instances() {
    use crate::helpers::{eventually, Binary, Clock};
    let redis = TestRedis::start();
    // Three instances on one clock, set ten seconds before
    // 2027-02-01T00:00:00Z, the end of a day and of a month, then past it.
    const FEBRUARY: f64 = 1_801_440_000.0;
    let clock = Clock::real();
    clock.set(FEBRUARY - 10.0);
    let mut bins = Vec::new();
    for _ in 0..3 {
        bins.push(Binary::start_on(&clock, &redis, &[]).await);
    }
    let bin = &bins[0];
    let project = "boundary";
    let day = bin.mint_creating(project, json!({})).await;
    let month = bin.mint_creating(project, json!({})).await;
    let ops = redis.ops().await;
    let set = |key_id: &str, path: &str, value: Value| {
        let doc = format!("apikey:{project}:{key_id}");
        raw(&ops, "JSON.SET", vec![doc, path.into(), value.to_string()])
    };
    set(
        &day.key_id,
        "$.limits",
        json!([{ "per": "day", "limit": 2 }]),
    )
    .await
    .unwrap();
    let refill = json!({ "refill": { "interval": "month", "amount": 2 } });
    set(&month.key_id, "$.credits", refill).await.unwrap();
    let body = |key: &str| json!({ "api_key": key });
    let code = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body["error"]["code"].as_str().map(str::to_owned))
    };

    // Before midnight: two each, then refused.
    for key in [&day, &month] {
        for _ in 0..2 {
            let r = bin
                .post("/v1/validate-key", &body(&key.api_key), None)
                .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    let r = bin
        .post("/v1/validate-key", &body(&day.api_key), None)
        .await;
    assert_eq!(
        code(r).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited".into()))
    );
    let r = bin
        .post("/v1/validate-key", &body(&month.api_key), None)
        .await;
    let (status, refused) = code(r).await;
    assert_eq!(
        (status, refused.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("credits_exhausted"))
    );
    let ts = bin
        .post("/v1/validate-key", &body(&day.api_key), None)
        .await;
    let retry = retry_after(ts.headers());
    assert!(
        (1..=10).contains(&retry),
        "the day ends within seconds: {retry}"
    );

    clock.set(FEBRUARY + 1.0);
    // After it, on each instance (cost 0 spends nothing: the full day
    // window refuses it until the new day): a new day window...
    let check = json!({ "api_key": &day.api_key, "cost": 0 });
    for bin in &bins {
        eventually("the new day", || async {
            let r = bin.post("/v1/validate-key", &check, None).await;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await;
    }
    for _ in 0..2 {
        let r = bin
            .post("/v1/validate-key", &body(&day.api_key), None)
            .await;
        assert_eq!(r.status(), StatusCode::OK, "two in the new day");
    }
    let r = bin
        .post("/v1/validate-key", &body(&day.api_key), None)
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...and the month's credits refilled once, the three racing for it.
    let racing = bins.iter().flat_map(|bin| {
        let body = body(&month.api_key);
        (0..5).map(move |_| {
            let body = body.clone();
            async move { bin.post("/v1/validate-key", &body, None).await.status() }
        })
    });
    let answers = join_all(racing).await;
    let passed = answers.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(passed, 2, "refilled to 2 once, in February: {answers:?}");
    let pattern = format!("apicredits:{project}:{}:*", month.key_id);
    let balances: Vec<String> = raw(&ops, "KEYS", vec![pattern])
        .await
        .unwrap()
        .convert()
        .unwrap();
    let mut balances = balances;
    balances.sort();
    assert_eq!(
        balances,
        [
            format!("apicredits:{project}:{}:mo202701", month.key_id),
            format!("apicredits:{project}:{}:mo202702", month.key_id)
        ]
    );
}

#[tokio::test]
async fn two_limits_on_one_length_share_its_counter() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let limits = json!([{ "per": "hour", "limit": 5 }, { "per": "hour", "limit": 3 }]);
    plan(&app, &project, &key.key_id, limits, None).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(validate(&app, &key.api_key, 1).await.status());
    }
    let ok = StatusCode::OK;
    assert_eq!(statuses, [ok, ok, ok, StatusCode::TOO_MANY_REQUESTS]);
    let hour = window_key(&project, &key.key_id, Per::Hour);
    assert_eq!(get(&app, &hour).await, Some(3), "spent once per request");
    let ops = app.redis().ops().await;
    let ttl = raw(&ops, "TTL", vec![hour])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= Per::Hour.ttl(),
        "the window expires: {ttl}"
    );
}

#[tokio::test]
async fn without_keyward_auth_cost_header_a_clients_cost_is_ignored() {
    // The default: a gateway may pass its clients' headers through, so
    // X-Keyward-Cost can neither lower nor raise what a request spends.
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    plan(&app, &project, &key.key_id, json!([]), Some((10, None))).await;
    let auth = |cost: &'static str| {
        app.http
            .get(app.url("/v1/auth"))
            .bearer_auth(&key.api_key)
            .header("x-keyward-cost", cost)
            .send()
    };
    for cost in ["0", "5"] {
        assert_eq!(auth(cost).await.unwrap().status(), StatusCode::OK);
    }
    let balance = get(&app, &balance_key(&project, &key.key_id, None)).await;
    assert_eq!(balance, Some(8), "1 each");
    let r = auth("x").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed either way"
    );
}
