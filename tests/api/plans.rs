//! Usage plans, the admin side (issue #23): windows and credits set at mint
//! and update and shown by get-key and list-keys, their balance counters in
//! Redis, add-credits and who may call it, and the shapes refused.

use fred::prelude::KeysInterface;
use reqwest::StatusCode;
use serde_json::{json, Value};
use validator::Validate;

use crate::helpers::{assert_error, raw, TestApp};

const MAX: u64 = i64::MAX as u64;

impl TestApp {
    async fn key(&self, project: &str, key_id: &str) -> Value {
        let path = format!("/v1/get-key?project_id={project}&key_id={key_id}");
        let r = self.admin_get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn listed(&self, project: &str, key_id: &str) -> Value {
        let path = format!("/v1/list-keys?project_id={project}");
        let page: Value = self.admin_get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        items
            .iter()
            .find(|k| k["key_id"] == key_id)
            .unwrap_or_else(|| panic!("{key_id} not listed"))
            .clone()
    }

    async fn update_key(&self, project: &str, key_id: &str, fields: Value) -> reqwest::Response {
        let mut body = json!({ "project_id": project, "key_id": key_id });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.admin_post("/v1/update-key", &body).await
    }

    async fn add_credits(&self, project: &str, key_id: &str, amount: i64) -> reqwest::Response {
        let body = json!({ "project_id": project, "key_id": key_id, "amount": amount });
        self.admin_post("/v1/add-credits", &body).await
    }

    /// The key's credit counters in Redis: (name after the key id, value,
    /// TTL in seconds, -1 for none).
    async fn counters(&self, project: &str, key_id: &str) -> Vec<(String, i64, i64)> {
        let ops = self.redis().ops().await;
        let prefix = format!("apicredits:{project}:{key_id}:");
        let names: Vec<String> = raw(&ops, "KEYS", vec![format!("{prefix}*")])
            .await
            .unwrap()
            .convert()
            .unwrap();
        let mut counters = Vec::new();
        for name in names {
            let value: i64 = ops.get(&name).await.unwrap();
            let ttl: i64 = ops.ttl(&name).await.unwrap();
            counters.push((name[prefix.len()..].to_owned(), value, ttl));
        }
        counters.sort();
        counters
    }

    async fn drop_counters(&self, project: &str, key_id: &str) {
        let ops = self.redis().ops().await;
        for (period, _, _) in self.counters(project, key_id).await {
            let () = ops
                .del(format!("apicredits:{project}:{key_id}:{period}"))
                .await
                .unwrap();
        }
    }
}

/// Seconds to the end of the current UTC day, as the tests see it.
fn day_ends_in() -> i64 {
    let now = keyward::store::now();
    keyward::plan::Per::Day.window(now).ends_in as i64
}

#[tokio::test]
async fn a_key_minted_with_windows_and_credits_shows_them_in_get_and_list() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let limits = json!([{"per": "second", "limit": 10}, {"per": "day", "limit": 50000}]);
    let daily = json!({"remaining": 500, "refill": {"interval": "day", "amount": 1000}});
    let refilled = app
        .mint(&project, json!({ "limits": limits, "credits": daily }))
        .await;
    let once = json!({"remaining": 7, "refill": null});
    let prepaid = app.mint(&project, json!({ "credits": once })).await;
    let plain = app.mint(&project, json!({})).await;

    for (key, limits, credits) in [
        (&refilled, &limits, &daily),
        (&prepaid, &json!([]), &once),
        (&plain, &json!([]), &Value::Null),
    ] {
        let got = app.key(&project, &key.key_id).await;
        assert_eq!(got["limits"], *limits, "{got}");
        assert_eq!(got["credits"], *credits, "{got}");
        assert_eq!(app.listed(&project, &key.key_id).await, got);
    }

    // The balance is a counter of its own: for a refill, the day's, expiring
    // a little after the day ends; without one, `once`, for good.
    let counters = app.counters(&project, &refilled.key_id).await;
    let [(period, 500, ttl)] = &counters[..] else {
        panic!("{counters:?}")
    };
    assert!(period.starts_with('d'), "{period}");
    assert!(*ttl > day_ends_in() && *ttl <= day_ends_in() + 121, "{ttl}");
    assert_eq!(
        app.counters(&project, &prepaid.key_id).await,
        [("once".to_owned(), 7, -1)]
    );
    assert_eq!(app.counters(&project, &plain.key_id).await, []);
    let ops = app.redis().ops().await;
    let doc = raw(
        &ops,
        "JSON.GET",
        vec![format!("apikey:{project}:{}", refilled.key_id)],
    )
    .await
    .unwrap();
    let doc: Value = serde_json::from_str(&doc.as_string().unwrap()).unwrap();
    assert_eq!(doc["limits"], limits);
    assert_eq!(
        doc["credits"],
        json!({"refill": {"interval": "day", "amount": 1000}}),
        "the document keeps the refill, not the balance"
    );

    // An interval no validation has started yet holds its full amount;
    // credits without refill and without a balance have none.
    app.drop_counters(&project, &refilled.key_id).await;
    app.drop_counters(&project, &prepaid.key_id).await;
    let got = app.key(&project, &refilled.key_id).await;
    assert_eq!(got["credits"]["remaining"], 1000);
    assert_eq!(app.listed(&project, &refilled.key_id).await, got);
    assert_eq!(
        app.key(&project, &prepaid.key_id).await["credits"]["remaining"],
        0
    );
}

#[tokio::test]
async fn update_sets_replaces_and_clears_windows_and_credits() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let id = &key.key_id;

    let minute = json!([{"per": "minute", "limit": 5}]);
    let once = json!({"remaining": 3, "refill": null});
    let r = app
        .update_key(&project, id, json!({ "limits": minute, "credits": once }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!((&got["limits"], &got["credits"]), (&minute, &once));
    assert_eq!(app.counters(&project, id).await, [("once".into(), 3, -1)]);

    // Replaced outright, not merged; absent fields stay as they are.
    let windows = json!([{"per": "hour", "limit": 1}, {"per": "month", "limit": 2}]);
    let monthly = json!({"remaining": 9, "refill": {"interval": "month", "amount": 100}});
    let r = app
        .update_key(
            &project,
            id,
            json!({ "limits": windows, "credits": monthly }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .update_key(&project, id, json!({ "owner": "bob" }))
        .await;
    let got: Value = r.json().await.unwrap();
    assert_eq!((&got["limits"], &got["credits"]), (&windows, &monthly));
    assert_eq!(app.key(&project, id).await, got);
    let counters = app.counters(&project, id).await;
    assert!(
        counters
            .iter()
            .any(|(p, v, ttl)| p.starts_with("mo") && *v == 9 && *ttl > 0),
        "{counters:?}"
    );

    // Set again with the same refill: the balance is set, not added to.
    let r = app
        .update_key(
            &project,
            id,
            json!({ "credits": {"remaining": 4, "refill": {"interval": "month", "amount": 100}} }),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["credits"]["remaining"], 4);

    // `[]` and `null` both remove the windows; `null` the credits.
    let r = app.update_key(&project, id, json!({ "limits": [] })).await;
    assert_eq!(r.json::<Value>().await.unwrap()["limits"], json!([]));
    app.update_key(&project, id, json!({ "limits": windows }))
        .await;
    let r = app
        .update_key(&project, id, json!({ "limits": null, "credits": null }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        (&got["limits"], &got["credits"]),
        (&json!([]), &Value::Null)
    );
    assert_eq!(app.listed(&project, id).await, got);
}

#[tokio::test]
async fn add_credits_adds_and_takes_but_never_below_zero() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let once = app
        .mint(
            &project,
            json!({ "credits": {"remaining": 10, "refill": null} }),
        )
        .await;
    let remaining = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["remaining"].clone()
    };

    assert_eq!(
        remaining(app.add_credits(&project, &once.key_id, 5).await).await,
        15
    );
    assert_eq!(
        remaining(app.add_credits(&project, &once.key_id, -15).await).await,
        0
    );
    let body = assert_error(
        app.add_credits(&project, &once.key_id, -1).await,
        StatusCode::CONFLICT,
        "credits_conflict",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("fewer than 0"), "{message}");
    assert_eq!(
        app.key(&project, &once.key_id).await["credits"]["remaining"],
        0
    );
    assert_eq!(
        app.counters(&project, &once.key_id).await,
        [("once".into(), 0, -1)]
    );

    // Refill credits whose interval no validation has started: it starts
    // with the refill amount (and its expiry), then the change.
    let daily = app
        .mint(
            &project,
            json!({ "credits": {"remaining": 1, "refill": {"interval": "day", "amount": 100}} }),
        )
        .await;
    app.drop_counters(&project, &daily.key_id).await;
    assert_eq!(
        remaining(app.add_credits(&project, &daily.key_id, -30).await).await,
        70
    );
    let counters = app.counters(&project, &daily.key_id).await;
    let [(_, 70, ttl)] = &counters[..] else {
        panic!("{counters:?}")
    };
    assert!(*ttl > day_ends_in() && *ttl <= day_ends_in() + 121, "{ttl}");
    // Past the largest balance Redis holds: refused, nothing changes.
    let r = app.add_credits(&project, &daily.key_id, i64::MAX).await;
    assert_error(r, StatusCode::CONFLICT, "credits_conflict").await;
    assert_eq!(
        app.key(&project, &daily.key_id).await["credits"]["remaining"],
        70
    );
    assert_eq!(
        remaining(app.add_credits(&project, &daily.key_id, -70).await).await,
        0
    );

    // Unlimited keys have no balance to change; unknown keys are 404.
    let unlimited = app.mint(&project, json!({})).await;
    let body = assert_error(
        app.add_credits(&project, &unlimited.key_id, 5).await,
        StatusCode::CONFLICT,
        "credits_conflict",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("update-key"), "{message}");
    assert_eq!(app.counters(&project, &unlimited.key_id).await, []);
    assert_error(
        app.add_credits(&project, "k_nosuchkey0", 5).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    )
    .await;

    let audit = app.audit("audit:admin").await;
    let entries: Vec<_> = audit
        .iter()
        .filter(|e| e["action"] == "key.add_credits" && e["key_id"] == once.key_id)
        .map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(entries, ["ok", "ok", "conflict"]);

    // A balance that is not a number reads as none left, and cannot be
    // added to.
    let ops = app.redis().ops().await;
    let counter = format!("apicredits:{project}:{}:once", once.key_id);
    let () = ops.set(&counter, "abc", None, None, false).await.unwrap();
    assert_eq!(
        app.key(&project, &once.key_id).await["credits"]["remaining"],
        0
    );
    assert_error(
        app.add_credits(&project, &once.key_id, 5).await,
        StatusCode::CONFLICT,
        "unreadable_data",
    )
    .await;
}

#[tokio::test]
async fn add_credits_needs_a_key_manager_of_the_project() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let other = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "credits": {"remaining": 1, "refill": null} }),
        )
        .await;
    let token = |role: &'static str, projects: Value| {
        let app = &app;
        async move {
            let body = json!({ "name": role, "role": role, "projects": projects });
            let r = app.admin_post("/v1/admin/operators", &body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: Value = r.json().await.unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let viewer = token("viewer", json!([project])).await;
    let manager = token("key_manager", json!([project])).await;
    let outsider = token("key_manager", json!([other])).await;
    let body = json!({ "project_id": project, "key_id": key.key_id, "amount": 2 });

    let r = app.post("/v1/add-credits", &body, Some(&viewer)).await;
    assert_error(r, StatusCode::FORBIDDEN, "insufficient_permission").await;
    let r = app.post("/v1/add-credits", &body, Some(&outsider)).await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;
    let r = app.post("/v1/add-credits", &body, None).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(
        app.key(&project, &key.key_id).await["credits"]["remaining"],
        1
    );

    let r = app.post("/v1/add-credits", &body, Some(&manager)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "remaining": 3 }));
}

#[tokio::test]
async fn malformed_windows_credits_and_amounts_are_422_and_change_nothing() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "credits": {"remaining": 5, "refill": null} }),
        )
        .await;
    let nine = vec![json!({"per": "second", "limit": 1}); 9];
    let plans = [
        (json!({ "limits": nine }), "9 windows"),
        (
            json!({ "limits": [{"per": "week", "limit": 1}] }),
            "per week",
        ),
        (json!({ "limits": [{"per": "day", "limit": 0}] }), "limit 0"),
        (
            json!({ "limits": [{"per": "day", "limit": -1}] }),
            "negative limit",
        ),
        (
            json!({ "limits": [{"per": "day", "limit": MAX + 1}] }),
            "limit past int64",
        ),
        (json!({ "limits": [{"per": "day"}] }), "no limit"),
        (
            json!({ "limits": [{"per": "day", "limit": 1, "burst": 2}] }),
            "unknown window field",
        ),
        (
            json!({ "limits": {"per": "day", "limit": 1} }),
            "not a list",
        ),
        (
            json!({ "credits": {"remaining": 1, "refill": {"interval": "year", "amount": 1}} }),
            "refill year",
        ),
        (
            json!({ "credits": {"remaining": 1, "refill": {"interval": "day"}} }),
            "no amount",
        ),
        (
            json!({ "credits": {"remaining": 1, "refill": {"interval": "day", "amount": -1}} }),
            "negative amount",
        ),
        (
            json!({ "credits": {"remaining": 1, "refill": {"interval": "day", "amount": 1, "at": 0}} }),
            "unknown refill field",
        ),
        (
            json!({ "credits": {"remaining": -1, "refill": null} }),
            "negative remaining",
        ),
        (
            json!({ "credits": {"remaining": MAX + 1, "refill": null} }),
            "remaining past int64",
        ),
        (json!({ "credits": {"refill": null} }), "no remaining"),
        (
            json!({ "credits": {"remaining": 1, "refill": null, "cost": 1} }),
            "unknown credits field",
        ),
        (json!({ "credits": 5 }), "not an object"),
    ];
    let mint = json!({ "project_id": project, "owner": "o", "server_name": "s" });
    let update = json!({ "project_id": project, "key_id": key.key_id });
    for (fields, why) in plans {
        for (path, base) in [("/v1/mint-key", &mint), ("/v1/update-key", &update)] {
            let mut body = base.clone();
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let r = app.admin_post(path, &body).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path} {why}");
        }
    }
    let amounts = [
        (json!(0), "zero"),
        (json!(i64::MIN), "below -int64 max"),
        (json!(MAX + 1), "past int64"),
        (json!(1.5), "a fraction"),
        (json!("5"), "a string"),
        (Value::Null, "null"),
    ];
    for (amount, why) in amounts {
        let body = json!({ "project_id": project, "key_id": key.key_id, "amount": amount });
        let r = app.admin_post("/v1/add-credits", &body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "amount {why}");
    }
    let body = json!({ "project_id": project, "key_id": key.key_id, "amount": 1, "x": 1 });
    let r = app.admin_post("/v1/add-credits", &body).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;

    let got = app.key(&project, &key.key_id).await;
    assert_eq!(got["credits"], json!({"remaining": 5, "refill": null}));
    assert_eq!(got["limits"], json!([]));
}

/// What the document says the plan fields may be, against what the service
/// takes: the bounds given are the validators'.
#[test]
fn the_documents_plan_bounds_are_the_validators() {
    let doc = keyward::http::openapi().unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["MintIn"]["properties"]["limits"]["maxItems"], 8);
    assert_eq!(schemas["Limit"]["properties"]["limit"]["minimum"], 1);
    assert_eq!(schemas["Limit"]["properties"]["limit"]["maximum"], MAX);
    assert_eq!(
        schemas["Credits"]["properties"]["remaining"]["maximum"],
        MAX
    );
    assert_eq!(schemas["Refill"]["properties"]["amount"]["maximum"], MAX);
    let amount = &schemas["AddCreditsIn"]["properties"]["amount"]["oneOf"];
    assert_eq!(amount[0]["minimum"], -(MAX as i64));
    assert_eq!(amount[0]["maximum"], -1);
    assert_eq!(
        (&amount[1]["minimum"], &amount[1]["maximum"]),
        (&json!(1), &json!(MAX))
    );
    let update = serde_json::to_string(&schemas["UpdateIn"]["properties"]).unwrap();
    assert!(
        update.contains("Limit") && update.contains("Credits"),
        "{update}"
    );
    assert!(doc["paths"]["/v1/add-credits"]["post"].is_object());

    let mint = |fields: Value| {
        let mut body = json!({ "project_id": "p", "owner": "o", "server_name": "s" });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        serde_json::from_value::<keyward::admin::MintIn>(body).is_ok_and(|m| m.validate().is_ok())
    };
    let window = |n: u64| json!({ "limits": [{"per": "month", "limit": n}] });
    assert!(mint(window(MAX)) && !mint(window(MAX + 1)) && !mint(window(0)));
    assert!(mint(
        json!({ "limits": vec![json!({"per": "second", "limit": 1}); 8] })
    ));
    let credits = |remaining: u64, amount: u64| json!({ "credits": {"remaining": remaining, "refill": {"interval": "day", "amount": amount}} });
    assert!(mint(credits(MAX, MAX)) && mint(credits(0, 0)));
    assert!(!mint(credits(MAX + 1, 0)) && !mint(credits(0, MAX + 1)));
    let add = |amount: i64| {
        let body = json!({ "project_id": "p", "key_id": "k_abcdefgh", "amount": amount });
        serde_json::from_value::<keyward::admin::AddCreditsIn>(body)
            .is_ok_and(|a| a.validate().is_ok())
    };
    assert!(add(i64::MAX) && add(-i64::MAX) && add(1) && add(-1));
    assert!(!add(0) && !add(i64::MIN));
}

#[tokio::test]
async fn low_at_is_set_at_mint_and_update_shown_and_refused_where_it_could_never_warn() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let daily =
        json!({"remaining": 500, "refill": {"interval": "day", "amount": 500}, "low_at": 100});
    let key = app.mint(&project, json!({ "credits": daily })).await;
    assert_eq!(app.key(&project, &key.key_id).await["credits"], daily);
    assert_eq!(app.listed(&project, &key.key_id).await["credits"], daily);

    // Update sets the credits whole: without low_at, no warning.
    let once = json!({"remaining": 40, "refill": null, "low_at": 39});
    let r = app
        .update_key(&project, &key.key_id, json!({ "credits": once }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.key(&project, &key.key_id).await["credits"], once);
    let plain = json!({"remaining": 40, "refill": null});
    let r = app
        .update_key(&project, &key.key_id, json!({ "credits": plain }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = app.key(&project, &key.key_id).await;
    assert_eq!(got["credits"], plain, "no low_at field without one");

    let refill = |amount: u64| json!({"interval": "day", "amount": amount});
    let refused = [
        (
            json!({"remaining": 5, "refill": null, "low_at": 0}),
            "1 or more",
        ),
        (
            json!({"remaining": 5, "refill": null, "low_at": 5}),
            "below remaining (5)",
        ),
        (
            json!({"remaining": 5, "refill": null, "low_at": 6}),
            "below remaining (5)",
        ),
        (
            json!({"remaining": 1, "refill": refill(50), "low_at": 50}),
            "below the refill amount (50)",
        ),
        (
            json!({"remaining": 1, "refill": refill(0), "low_at": 1}),
            "below the refill amount (0)",
        ),
        (
            json!({"remaining": MAX, "refill": null, "low_at": MAX + 1}),
            "below remaining",
        ),
        (
            json!({"remaining": 5, "refill": null, "low_at": -1}),
            "low_at",
        ),
        (
            json!({"remaining": 5, "refill": null, "low_at": 1.5}),
            "low_at",
        ),
        (
            json!({"remaining": 5, "refill": null, "low_at": "1"}),
            "low_at",
        ),
    ];
    let mint = json!({ "project_id": project, "owner": "o", "server_name": "s" });
    let update = json!({ "project_id": project, "key_id": key.key_id });
    for (credits, says) in refused {
        for (path, base) in [("/v1/mint-key", &mint), ("/v1/update-key", &update)] {
            let mut body = base.clone();
            body["credits"] = credits.clone();
            let r = app.admin_post(path, &body).await;
            let error = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
            let message = error["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                message.contains("low_at") && message.contains(says),
                "{path} {credits}: {error}"
            );
        }
    }
    let got = app.key(&project, &key.key_id).await;
    assert_eq!(got["credits"], plain, "a refused update changes nothing");
}
