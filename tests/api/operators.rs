//! Operators and roles (issue #22): every role against every admin route,
//! in and out of its projects; revocation and expiry on a second instance;
//! the admin audit trail of a scripted sequence; no token anywhere it
//! should not be.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, eventually, random_id, template_user, Binary, TestApp, TestRedis, ADMIN_TOKEN,
    VALIDATOR_PASSWORD,
};

pub(crate) const MONITOR_PASSWORD: &str = "operators-monitor-pw";

/// A keyward whose monitor user is the template's `ops` user (the admin
/// trail is read with it), on a Redis of its own.
async fn app() -> TestApp {
    app_on(redis()).await
}

pub(crate) fn redis() -> Arc<TestRedis> {
    Arc::new(TestRedis::start_with_acl(&template_user(
        "ops",
        "operators-ops",
        MONITOR_PASSWORD,
    )))
}

async fn app_on(redis: Arc<TestRedis>) -> TestApp {
    let url = redis.url("operators-ops", MONITOR_PASSWORD);
    TestApp::spawn_with(redis, move |c| c.monitor_redis_url = Some(url.into())).await
}

/// An operator made by root: its id and token.
pub(crate) struct Operator {
    pub(crate) id: String,
    pub(crate) token: String,
}

pub(crate) async fn operator(
    app: &TestApp,
    role: &str,
    projects: &[&str],
    extra: Value,
) -> Operator {
    let mut body =
        json!({ "name": format!("{role} of {projects:?}"), "role": role, "projects": projects });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let r = app.admin_post("/v1/admin/operators", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["role"], role);
    assert_eq!(v["projects"], json!(projects));
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kwop.op_"), "{token}");
    Operator {
        id: v["operator_id"].as_str().unwrap().to_owned(),
        token,
    }
}

/// One admin call: method, path, body.
struct Call {
    name: &'static str,
    post: bool,
    path: String,
    body: Value,
}

fn get(name: &'static str, path: String) -> Call {
    Call {
        name,
        post: false,
        path,
        body: Value::Null,
    }
}

fn post(name: &'static str, path: &str, body: Value) -> Call {
    Call {
        name,
        post: true,
        path: path.to_owned(),
        body,
    }
}

async fn send(app: &TestApp, call: &Call, token: &str) -> (StatusCode, Value) {
    let r = match call.post {
        true => app.post(&call.path, &call.body, Some(token)).await,
        false => app.get(&call.path, Some(token)).await,
    };
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every project-scoped admin call on `project`'s key `key_id`, and the
/// least role that may make it (0 viewer .. 3 owner).
fn project_calls(project: &str, key_id: &str) -> Vec<(Call, usize, StatusCode)> {
    let key = json!({ "project_id": project, "key_id": key_id });
    let q = format!("project_id={project}&key_id={key_id}");
    vec![
        (
            get("project.read", format!("/v1/admin/projects/{project}")),
            0,
            StatusCode::OK,
        ),
        (
            get("key.list", format!("/v1/list-keys?project_id={project}")),
            0,
            StatusCode::OK,
        ),
        (
            get("key.read", format!("/v1/get-key?{q}")),
            0,
            StatusCode::OK,
        ),
        (
            get("activity", format!("/v1/activity?project_id={project}")),
            0,
            StatusCode::OK,
        ),
        (
            get("audit", format!("/v1/admin/audit?project_id={project}")),
            0,
            StatusCode::OK,
        ),
        (
            post(
                "key.mint",
                "/v1/mint-key",
                json!({ "project_id": project, "owner": "o", "server_name": "s" }),
            ),
            1,
            StatusCode::CREATED,
        ),
        (
            post("key.update", "/v1/update-key", {
                let mut k = key.clone();
                k["owner"] = json!("changed");
                k
            }),
            1,
            StatusCode::OK,
        ),
        (
            post("key.rotate", "/v1/rotate-key", key.clone()),
            1,
            StatusCode::CREATED,
        ),
        (
            post("key.revoke", "/v1/revoke-key", key.clone()),
            1,
            StatusCode::OK,
        ),
        (
            // The project exists: a role that may create it hears so.
            post(
                "project.create",
                "/v1/admin/projects",
                json!({ "project_id": project, "label": "l", "owner": "o" }),
            ),
            2,
            StatusCode::CONFLICT,
        ),
    ]
}

/// The code a project outside the caller's list answers with, per call.
fn not_found_code(name: &str) -> &'static str {
    match name {
        "key.read" | "key.update" | "key.rotate" | "key.revoke" => "key_not_found",
        _ => "project_not_found",
    }
}

const ROLES: [&str; 4] = ["viewer", "key_manager", "project_admin", "owner"];

#[tokio::test]
async fn every_role_meets_every_admin_route_in_and_out_of_its_projects() {
    let app = app().await;
    let alpha = app.project().await;
    let beta = app.project().await;
    let missing = random_id("nope");

    for (rank, role) in ROLES.iter().enumerate() {
        let projects = match *role {
            "owner" => ["*"],
            _ => [alpha.as_str()],
        };
        let op = operator(&app, role, &projects, json!({})).await;
        // Fresh keys for each role: the calls revoke and rotate them.
        let mine = app.mint(&alpha, json!({})).await;
        let theirs = app.mint(&beta, json!({})).await;

        for (call, least, allowed) in project_calls(&alpha, &mine.key_id) {
            let (status, body) = send(&app, &call, &op.token).await;
            if rank >= least {
                assert_eq!(
                    status, allowed,
                    "{role} {} in its project: {body}",
                    call.name
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} {}: {body}",
                    call.name
                );
                assert_eq!(body["error"]["code"], "insufficient_permission");
            }
        }

        // Outside its projects: exactly what a project that does not exist
        // answers to root (the owner covers every project: it is let in).
        let outside = project_calls(&beta, &theirs.key_id);
        let nowhere = project_calls(&missing, "k_missing00000");
        for ((call, _, allowed), (absent, _, _)) in outside.into_iter().zip(nowhere) {
            let (status, body) = send(&app, &call, &op.token).await;
            if *role == "owner" {
                assert_eq!(
                    status, allowed,
                    "owner {} on another project: {body}",
                    call.name
                );
                continue;
            }
            if call.name == "project.create" {
                // Refusing a creation reveals nothing about what exists.
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} create outside: {body}"
                );
                assert_eq!(body["error"]["code"], "insufficient_permission");
                continue;
            }
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{role} {} outside: {body}",
                call.name
            );
            assert_eq!(
                body["error"]["code"],
                not_found_code(call.name),
                "{}",
                call.name
            );
            let (absent_status, absent_body) = send(&app, &absent, ADMIN_TOKEN).await;
            assert_eq!(
                (status, &body),
                (absent_status, &absent_body),
                "{role} {}: out of scope must read as missing",
                call.name
            );
        }

        // Operators are the owner's alone; whoami and the project list anyone's.
        let create = post(
            "operator.create",
            "/v1/admin/operators",
            json!({ "name": "n", "role": "viewer", "projects": [&alpha] }),
        );
        let list = get("operator.list", "/v1/admin/operators".into());
        let revoke = post(
            "operator.revoke",
            "/v1/admin/operators/op_000000000000/revoke",
            Value::Null,
        );
        for (call, ok) in [
            (create, StatusCode::CREATED),
            (list, StatusCode::OK),
            (revoke, StatusCode::NOT_FOUND),
        ] {
            let (status, body) = send(&app, &call, &op.token).await;
            match *role == "owner" {
                true => assert_eq!(status, ok, "owner {}: {body}", call.name),
                false => {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{role} {}: {body}",
                        call.name
                    );
                    assert_eq!(body["error"]["code"], "insufficient_permission");
                }
            }
        }
        let (status, me) = send(&app, &get("whoami", "/v1/admin/whoami".into()), &op.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["operator_id"], op.id.as_str());
        assert_eq!(me["role"], *role);
        assert_eq!(me["projects"], json!(projects));
        let (status, page) = send(
            &app,
            &get("projects", "/v1/admin/projects".into()),
            &op.token,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["project_id"].as_str().unwrap())
            .collect();
        match *role == "owner" {
            true => assert!(ids.contains(&alpha.as_str()) && ids.contains(&beta.as_str())),
            false => assert_eq!(ids, [alpha.as_str()], "{role} sees its project only"),
        }
    }

    // A project admin of every project may create any; a key manager of
    // every project still may not.
    let any_admin = operator(&app, "project_admin", &["*"], json!({})).await;
    let created = app
        .post(
            "/v1/admin/projects",
            &json!({ "project_id": random_id("new"), "label": "l", "owner": "o" }),
            Some(&any_admin.token),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let any_km = operator(&app, "key_manager", &["*"], json!({})).await;
    let refused = app
        .post(
            "/v1/admin/projects",
            &json!({ "project_id": random_id("new"), "label": "l", "owner": "o" }),
            Some(&any_km.token),
        )
        .await;
    assert_error(refused, StatusCode::FORBIDDEN, "insufficient_permission").await;

    // Root is unchanged: whoami says so.
    let me: Value = app
        .admin_get("/v1/admin/whoami")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({ "operator_id": "root", "name": "root", "role": "owner", "projects": ["*"] })
    );
}

#[tokio::test]
async fn bad_tokens_are_401_on_every_route_and_bad_operator_input_is_422() {
    let app = app().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let op = operator(&app, "owner", &["*"], json!({})).await;
    let (prefix, _) = op.token.rsplit_once('.').unwrap();
    let wrong_secret = format!("{prefix}.{}", "A".repeat(43));
    for token in [
        "nope".to_owned(),
        wrong_secret,
        format!("kwop.op_000000000000.{}", "A".repeat(43)),
        key.api_key.clone(),
    ] {
        for (call, _, _) in project_calls(&project, &key.key_id) {
            let (status, body) = send(&app, &call, &token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: {body}", call.name);
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    for bad in [
        json!({ "name": "n", "role": "admin", "projects": ["*"] }),
        json!({ "name": "n", "role": "viewer", "projects": [] }),
        json!({ "name": "n", "role": "viewer", "projects": ["*", "a"] }),
        json!({ "name": "n", "role": "viewer", "projects": ["bad id"] }),
        json!({ "name": "", "role": "viewer", "projects": ["a"] }),
        json!({ "name": "n", "role": "viewer", "projects": ["a"], "expires_at": 1.0 }),
        json!({ "name": "n", "role": "viewer", "projects": ["a"], "token": "x" }),
        json!({ "name": "n", "role": "owner", "projects": ["alpha"] }),
    ] {
        let r = app.post("/v1/admin/operators", &bad, Some(&op.token)).await;
        let body = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        if bad["role"] == "owner" {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("projects: "), "{message}");
        }
    }
}

#[tokio::test]
async fn a_revoked_or_expired_operator_is_refused_on_its_next_call_on_another_instance() {
    let redis = redis();
    let a = app_on(redis.clone()).await;
    let b = app_on(redis).await;
    let project = a.project().await;
    let doomed = operator(&a, "viewer", &[&project], json!({})).await;
    // Written by the manager, under the deployment's name; the validator
    // user cannot read it.
    let validator = a.redis().client("validator", VALIDATOR_PASSWORD).await;
    let doc = format!("operator:test-gateway:{}", doomed.id);
    let refused = crate::helpers::raw(&validator, "JSON.GET", vec![doc.clone()]).await;
    assert!(
        refused.unwrap_err().starts_with("NOPERM"),
        "validator read {doc}"
    );
    let ops = a.redis().ops().await;
    let stored = crate::helpers::raw(&ops, "JSON.GET", vec![doc])
        .await
        .unwrap();
    let stored = format!("{stored:?}");
    assert!(
        stored.contains("sha256:") && !stored.contains(doomed.token.rsplit('.').next().unwrap())
    );
    // Warm on b: its verified-secret cache now holds the token.
    assert_eq!(whoami(&b, &doomed.token).await, StatusCode::OK);
    assert_eq!(whoami(&b, &doomed.token).await, StatusCode::OK);

    let r = a
        .admin_post(
            &format!("/v1/admin/operators/{}/revoke", doomed.id),
            &json!(null),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(whoami(&b, &doomed.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&a, &doomed.token).await, StatusCode::UNAUTHORIZED);
    let listed: Value = a
        .admin_get("/v1/admin/operators")
        .await
        .json()
        .await
        .unwrap();
    let entry = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operator_id"] == doomed.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["revoked"], true);

    let expires_at = keyward::store::now() + 2.0;
    let brief = operator(
        &a,
        "viewer",
        &[&project],
        json!({ "expires_at": expires_at }),
    )
    .await;
    assert_eq!(whoami(&b, &brief.token).await, StatusCode::OK);
    eventually("the expired operator refused on b", || async {
        (whoami(&b, &brief.token).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        keyward::store::now() >= expires_at,
        "refused only once expired"
    );
    let r = a.get("/v1/admin/whoami", Some(&brief.token)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn whoami(app: &TestApp, token: &str) -> StatusCode {
    app.get("/v1/admin/whoami", Some(token)).await.status()
}

#[tokio::test]
async fn every_admin_call_of_a_script_is_in_the_trail_with_its_actor_and_outcome() {
    let app = app().await;
    let alpha = app.project().await;
    let beta = app.project().await;
    let km = operator(&app, "key_manager", &[&alpha], json!({})).await;
    let viewer = operator(&app, "viewer", &[&alpha], json!({})).await;

    let with_id = |id: &str, call: reqwest::RequestBuilder| call.header("x-request-id", id);
    let mint = json!({ "project_id": &alpha, "owner": "o", "server_name": "s" });
    let r = with_id(
        "script-1",
        app.http
            .post(app.url("/v1/mint-key"))
            .bearer_auth(&km.token),
    )
    .json(&mint)
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let minted: Value = r.json().await.unwrap();
    let key_id = minted["key_id"].as_str().unwrap().to_owned();
    let created = random_id("n");
    let script: Vec<(&str, Value, StatusCode)> = vec![
        (
            "/v1/update-key",
            json!({ "project_id": &alpha, "key_id": &key_id, "owner": "x" }),
            StatusCode::OK,
        ),
        (
            "/v1/admin/projects",
            json!({ "project_id": &created, "label": "l", "owner": "o" }),
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/revoke-key",
            json!({ "project_id": &beta, "key_id": &key_id }),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/update-key",
            json!({ "project_id": &alpha }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/revoke-key",
            json!({ "project_id": &alpha, "key_id": &key_id }),
            StatusCode::OK,
        ),
    ];
    for (i, (path, body, status)) in script.iter().enumerate() {
        let id = format!("script-{}", i + 2);
        let r = with_id(&id, app.http.post(app.url(path)).bearer_auth(&km.token))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), *status, "{path}");
    }
    let bad = app
        .get("/v1/admin/whoami", Some("kwop.op_000000000000.x"))
        .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    // The key manager's id with a wrong secret: claimed, not its call.
    let (id, _) = km.token.rsplit_once('.').unwrap();
    let wrong = format!("{id}.{}", "B".repeat(43));
    let whoami = app
        .http
        .get(app.url("/v1/admin/whoami"))
        .bearer_auth(&wrong);
    let r = with_id("script-7", whoami).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Newest first; everything the key manager did, with its outcome.
    let mine = app.trail(&format!("actor={}", km.id)).await;
    let got: Vec<(&str, &str, &str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["project_id"].as_str().unwrap_or(""),
                e["caller_request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("key.revoke", "ok", alpha.as_str(), "script-6"),
            ("key.update", "invalid", "", "script-5"),
            ("key.revoke", "not_found", beta.as_str(), "script-4"),
            ("project.create", "forbidden", created.as_str(), "script-3"),
            ("key.update", "ok", alpha.as_str(), "script-2"),
            ("key.mint", "ok", alpha.as_str(), "script-1"),
        ]
    );
    assert_eq!(
        mine[5]["key_id"],
        key_id.as_str(),
        "a mint names its new key"
    );
    let name = format!("key_manager of [{alpha:?}]");
    assert_eq!(mine[0]["actor_name"], name.as_str());
    let unknown = app.trail("actor=unknown").await;
    assert!(
        unknown.iter().any(|e| e["action"] == "whoami"
            && e["outcome"] == "unauthorized"
            && e["caller_request_id"] == "script-7"
            && e["claimed_operator"] == km.id.as_str()),
        "{unknown:?}"
    );
    let root = app.trail("actor=root").await;
    assert!(
        root.iter().any(|e| e["action"] == "operator.create"
            && e["outcome"] == "ok"
            && e["operator_id"] == km.id.as_str()
            && e["actor_name"] == "root"),
        "an operator's creation names it: {root:?}"
    );

    // A viewer of alpha reads alpha's trail, and nothing of beta or of no
    // project; beta itself is "not found" to it.
    let r = app
        .get("/v1/admin/audit?limit=200", Some(&viewer.token))
        .await;
    let seen: Value = r.json().await.unwrap();
    let items = seen["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|e| e["project_id"] == alpha.as_str()),
        "{items:?}"
    );
    let r = app
        .get(
            &format!("/v1/admin/audit?project_id={beta}"),
            Some(&viewer.token),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "project_not_found").await;

    // Paging: a page of one, then the rest from its `next`.
    let r = app
        .admin_get(&format!("/v1/admin/audit?actor={}&limit=1", km.id))
        .await;
    let first: Value = r.json().await.unwrap();
    let next = first["next"].as_str().unwrap();
    let rest = app.trail(&format!("actor={}&cursor={next}", km.id)).await;
    assert_eq!(first["items"][0]["id"], mine[0]["id"]);
    let r = app
        .admin_post(
            &format!("/v1/admin/operators/{}/revoke", viewer.id),
            &Value::Null,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = app.trail("actor=root&limit=1").await;
    assert_eq!(revoked[0]["action"], "operator.revoke");
    assert_eq!(revoked[0]["operator_id"], viewer.id.as_str());
    assert_eq!(rest.len(), mine.len() - 1);
    assert_eq!(rest[0]["id"], mine[1]["id"]);
}

#[tokio::test]
async fn no_token_secret_or_hash_reaches_logs_streams_or_lists() {
    let redis = redis();
    let bin = Binary::start(&redis, &[("KEYWARD_LOG", "debug")]).await;
    let r = bin
        .post(
            "/v1/admin/operators",
            &json!({ "name": "n", "role": "owner", "projects": ["*"] }),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let secret = token.rsplit('.').next().unwrap().to_owned();
    // Use it, once right and once wrong.
    let me = bin
        .http
        .get(format!("{}/v1/admin/whoami", bin.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let wrong = format!("{}x", token);
    let r = bin
        .http
        .get(format!("{}/v1/admin/operators", bin.base))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let listed = bin
        .http
        .get(format!("{}/v1/admin/operators", bin.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(created["operator_id"].as_str().unwrap()));

    let ops = redis.ops().await;
    let stream: Vec<(String, std::collections::HashMap<String, String>)> =
        fred::prelude::StreamsInterface::xrange(&ops, "audit:admin", "-", "+", None)
            .await
            .unwrap();
    let stream = format!("{stream:?}");
    let mut bin = bin;
    let logs = bin.stop_and_read_logs();
    assert!(logs.contains("operator created"), "the log is read: {logs}");
    for (what, text) in [("list", &listed), ("audit:admin", &stream), ("log", &logs)] {
        assert!(!text.contains(&secret), "the secret is in the {what}");
        assert!(
            !text.contains(ADMIN_TOKEN),
            "the admin token is in the {what}"
        );
        assert!(!text.contains("$argon2"), "a hash is in the {what}");
    }
}

#[tokio::test]
async fn without_its_audit_entry_a_success_is_503_and_a_refusal_stands() {
    let app = app().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let viewer = operator(&app, "viewer", &[&project], json!({})).await;
    let ops = app.redis().ops().await;
    // audit:admin of another type: every XADD to it is refused.
    let raw = |cmd: &'static str, args: &[&str]| {
        crate::helpers::raw(&ops, cmd, args.iter().map(|a| a.to_string()).collect())
    };
    raw("DEL", &["audit:admin"]).await.unwrap();
    raw("SET", &["audit:admin", "not a stream"]).await.unwrap();

    let get_key = format!("/v1/get-key?project_id={project}&key_id={}", key.key_id);
    let r = app.admin_get(&get_key).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let mint = json!({ "project_id": &project, "owner": "o", "server_name": "s" });
    let r = app.post("/v1/mint-key", &mint, Some(&viewer.token)).await;
    assert_error(r, StatusCode::FORBIDDEN, "insufficient_permission").await;
    let r = app
        .get("/v1/admin/whoami", Some("kwop.op_000000000000.x"))
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = app
        .get(&get_key.replace(&project, "elsewhere"), Some(&viewer.token))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "key_not_found").await;

    // Back to a stream: answered and audited again.
    raw("DEL", &["audit:admin"]).await.unwrap();
    let r = app.get(&get_key, Some(&viewer.token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let entries = app.trail(&format!("actor={}", viewer.id)).await;
    assert_eq!(entries.len(), 1, "only the call made since: {entries:?}");
    assert_eq!(entries[0]["action"], "key.read");
}

#[tokio::test]
async fn webhook_urls_are_listed_without_their_credentials_below_project_admin() {
    let app = app().await;
    let alpha = app.project().await;
    let url = "https://93.184.215.14:8443/in?token=s3cret";
    let body = json!({ "url": url, "events": ["*"], "projects": [&alpha] });
    let r = app.admin_post("/v1/admin/webhooks", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let listed = |token: String| {
        let app = &app;
        async move {
            let r = app.get("/v1/admin/webhooks", Some(&token)).await;
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            v["items"][0]["url"].as_str().unwrap().to_owned()
        }
    };
    for role in ["viewer", "key_manager"] {
        let op = operator(&app, role, &[&alpha], json!({})).await;
        let shown = listed(op.token).await;
        assert_eq!(shown, "https://93.184.215.14:8443/in?***", "{role}");
    }
    let admin = operator(&app, "project_admin", &[&alpha], json!({})).await;
    assert_eq!(listed(admin.token).await, url);
    assert_eq!(listed(ADMIN_TOKEN.to_owned()).await, url);
}

#[tokio::test]
async fn a_wrong_secret_for_a_real_operator_is_audited_as_claimed_never_as_its_actor() {
    let app = app().await;
    let alpha = app.project().await;
    let op = operator(&app, "viewer", &[&alpha], json!({})).await;
    let (prefix, _) = op.token.rsplit_once('.').unwrap();
    let forged = format!("{prefix}.{}", "A".repeat(43));
    let r = app
        .http
        .get(app.url("/v1/admin/whoami"))
        .bearer_auth(&forged)
        .header("x-request-id", "forged-1")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let as_actor = app.trail(&format!("actor={}", op.id)).await;
    assert!(as_actor.is_empty(), "written as the operator: {as_actor:?}");
    let unknown = app.trail("actor=unknown").await;
    let entry = unknown
        .iter()
        .find(|e| e["caller_request_id"] == "forged-1")
        .unwrap_or_else(|| panic!("no entry: {unknown:?}"));
    assert_eq!(entry["claimed_operator"], op.id.as_str(), "{entry}");
    assert_eq!(entry["outcome"], "unauthorized");
    assert!(entry["actor_name"].is_null(), "{entry}");
}

#[tokio::test]
async fn a_bad_audit_cursor_is_422_never_a_redis_error() {
    let app = app().await;
    for cursor in ["0-0", "00-000", "18446744073709551616-0", "1-x"] {
        let r = app
            .admin_get(&format!("/v1/admin/audit?cursor={cursor}"))
            .await;
        let body = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("cursor: "),
            "{cursor}: {body}"
        );
    }
    let r = app.admin_get("/v1/admin/audit?cursor=0-1").await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// An operator's id and the secret of its token.
pub(crate) fn token_parts(token: &str) -> (&str, &str) {
    let (prefix, secret) = token.rsplit_once('.').unwrap();
    (prefix.trim_start_matches("kwop."), secret)
}

#[tokio::test]
async fn wrong_operator_tokens_never_take_the_argon2id_capacity_key_validation_needs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    // A slow Argon2id with one run at a time and a queue of one: a handful
    // of unauthenticated callers holding it would make validations `busy`.
    let argon2 = keyward::config::Argon2Params {
        memory_kib: 8192,
        iterations: 2,
        parallelism: 1,
    };
    let app = TestApp::spawn_with(redis(), move |c| {
        c.argon2 = argon2;
        c.argon2_concurrency = 1;
        c.argon2_queue = 1;
    })
    .await;
    let project = app.project().await;
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.push(app.mint(&project, json!({})).await);
    }
    let fresh = operator(&app, "viewer", &[&project], json!({})).await;
    // An operator stored as before: its secret's Argon2id PHC string.
    let old = operator(&app, "viewer", &[&project], json!({})).await;
    let (old_id, old_secret) = token_parts(&old.token);
    let mut config = crate::helpers::test_config("redis://x".into(), "redis://x".into());
    config.argon2 = argon2;
    let phc = keyward::hash::Hasher::new(&config)
        .unwrap()
        .hash(&keyward::key::Secret::parse(old_secret).unwrap())
        .await
        .unwrap();
    assert!(phc.starts_with("$argon2id$"));
    let doc_key = format!("operator:test-gateway:{old_id}");
    let ops = app.redis().ops().await;
    let set = crate::helpers::raw(
        &ops,
        "JSON.SET",
        vec![
            doc_key.clone(),
            "$.secret_hash".into(),
            json!(phc).to_string(),
        ],
    );
    set.await.unwrap();

    // Callers with made-up secrets for both operators, without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..16 {
        let (http, stop, sent) = (app.http.clone(), stop.clone(), sent.clone());
        let target = if i % 2 == 0 { &fresh.id } else { &old.id };
        let wrong = format!("kwop.{target}.{}", "W".repeat(43));
        let whoami = app.url("/v1/admin/whoami");
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(&whoami).bearer_auth(&wrong).send().await.unwrap();
                let status = r.status();
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{status}"
                );
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually("the flood under way", || async {
        (sent.load(Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    for key in &keys {
        let r = app.validate_response(&key.api_key).await;
        let status = r.status();
        assert_eq!(status, StatusCode::OK, "{}", r.text().await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }

    // The old-format operator still gets in, and is stored as a digest
    // from then on; the new one was never Argon2id.
    assert_eq!(whoami(&app, &old.token).await, StatusCode::OK);
    assert_eq!(whoami(&app, &fresh.token).await, StatusCode::OK);
    let stored = crate::helpers::raw(&ops, "JSON.GET", vec![doc_key, "$.secret_hash".into()])
        .await
        .unwrap();
    let stored: Vec<String> = serde_json::from_str(&stored.as_string().unwrap()).unwrap();
    assert!(stored[0].starts_with("sha256:"), "{stored:?}");
    assert_eq!(whoami(&app, &old.token).await, StatusCode::OK);
}
