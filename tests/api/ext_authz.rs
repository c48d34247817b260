//! The gRPC ext_authz service (`envoy.service.auth.v3.Authorization/Check`)
//! called directly, a tonic client playing Envoy's part: key by key, its
//! answer is `/v1/auth`'s, before Redis faults, while Redis is stalled and
//! while it is down, under both failsafe modes; and what only the gRPC
//! service reads (context extensions, Envoy's view of the client).
//! `gateways.rs` runs it behind a real Envoy.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use keyward::config::Failsafe;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{signal, wrong_secret, TestApp, TestRedis};

/// A check as Envoy would send it.
#[derive(Clone, Default)]
struct Check<'a> {
    /// The `Authorization: Bearer` key, if any.
    key: Option<&'a str>,
    /// The route's `required_scopes` context extension (`/v1/auth`:
    /// `X-Keyward-Required-Scopes`).
    scopes: Option<&'a str>,
    /// Envoy's `source.address` (`/v1/auth`: `X-Forwarded-For`).
    source: Option<&'a str>,
    /// More headers of the client's request.
    headers: Vec<(&'a str, &'a str)>,
    /// More context extensions.
    extensions: Vec<(&'a str, &'a str)>,
}

impl Check<'_> {
    fn request(&self) -> CheckRequest {
        let mut headers: HashMap<String, String> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.insert(":method".into(), "POST".into());
        headers.insert(":path".into(), "/chat/completions?stream=1".into());
        if let Some(key) = self.key {
            headers.insert("authorization".into(), format!("Bearer {key}"));
        }
        let mut context_extensions: HashMap<String, String> = self
            .extensions
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(scopes) = self.scopes {
            context_extensions.insert("required_scopes".into(), scopes.into());
        }
        let source = self.source.map(|ip| Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
        CheckRequest {
            attributes: Some(AttributeContext {
                source,
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        path: "/chat/completions?stream=1".into(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions,
                ..Default::default()
            }),
        }
    }
}

async fn client(app: &TestApp) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{}", app.addr))
        .await
        .expect("connect over h2c")
}

async fn grpc(app: &TestApp, check: &Check<'_>) -> CheckResponse {
    client(app)
        .await
        .check(check.request())
        .await
        .expect("a CheckResponse")
        .into_inner()
}

/// A check with `key` as its bearer token and nothing else.
async fn grpc_key(app: &TestApp, key: &str) -> CheckResponse {
    let check = Check {
        key: Some(key),
        ..Default::default()
    };
    grpc(app, &check).await
}

/// What a client of the gateway gets: status, error code, and whether it
/// passed under the failsafe.
#[derive(Debug, PartialEq, Eq)]
struct Class {
    status: u16,
    code: String,
    failsafe: bool,
}

fn code(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn classify(r: &CheckResponse) -> Class {
    match r.http_response.as_ref().expect("an HTTP response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
            let failsafe = ok.headers.iter().any(|h| {
                h.header
                    .as_ref()
                    .is_some_and(|h| h.key == "x-keyward-failsafe" && h.value == "open")
            });
            Class {
                status: 200,
                code: String::new(),
                failsafe,
            }
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(r.status.as_ref().map(|s| s.code), Some(0));
            Class {
                status: denied.status.as_ref().map_or(0, |s| s.code as u16),
                code: code(&denied.body),
                failsafe: false,
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The same check, as `/v1/auth` gets it from a gateway.
async fn http(app: &TestApp, check: &Check<'_>) -> Class {
    let mut request = app.http.post(app.url("/v1/auth/chat/completions"));
    if let Some(key) = check.key {
        request = request.bearer_auth(key);
    }
    if let Some(scopes) = check.scopes {
        request = request.header("x-keyward-required-scopes", scopes);
    }
    if let Some(ip) = check.source {
        request = request.header("x-forwarded-for", ip);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let failsafe = r.headers().get("x-keyward-failsafe").is_some();
    let text = r.text().await.unwrap();
    Class {
        status,
        code: if status == 200 {
            String::new()
        } else {
            code(&text)
        },
        failsafe,
    }
}

/// A denial's status, headers (lower-case) and body.
fn denied(r: &CheckResponse) -> (i32, HashMap<String, String>, Value) {
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("not denied: {r:?}");
    };
    let headers = d
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let body = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    (d.status.as_ref().map_or(0, |s| s.code), headers, body)
}

/// Keys of every kind the gRPC path must answer as `/v1/auth` does.
struct Keys {
    valid: String,
    wrong: String,
    revoked: String,
    scoped: String,
    limited: String,
    bound: String,
}

impl Keys {
    async fn mint(app: &TestApp) -> Self {
        let project = app.project().await;
        let valid = app.mint(&project, json!({})).await;
        let revoked = app.mint(&project, json!({})).await;
        let scoped = app.mint(&project, json!({ "scopes": ["docs:read"] })).await;
        let limited = app
            .mint(&project, json!({ "rate_limit_per_minute": 1 }))
            .await;
        let bound = app
            .mint(&project, json!({ "allowed_cidrs": ["203.0.113.0/24"] }))
            .await;
        app.revoke(&project, &revoked.key_id).await;
        Keys {
            wrong: wrong_secret(&valid.api_key),
            valid: valid.api_key,
            revoked: revoked.api_key,
            scoped: scoped.api_key,
            limited: limited.api_key,
            bound: bound.api_key,
        }
    }

    fn checks(&self) -> Vec<(&'static str, Check<'_>)> {
        let key = |key| Check {
            key: Some(key),
            ..Default::default()
        };
        vec![
            ("valid", key(&self.valid)),
            ("wrong secret", key(&self.wrong)),
            ("revoked", key(&self.revoked)),
            ("no key", Check::default()),
            ("malformed", key("garbage")),
            (
                "lacks the scope",
                Check {
                    scopes: Some("chat:write"),
                    ..key(&self.scoped)
                },
            ),
            ("over its limit", key(&self.limited)),
            (
                "inside its networks",
                Check {
                    source: Some("203.0.113.7"),
                    ..key(&self.bound)
                },
            ),
            (
                "outside its networks",
                Check {
                    source: Some("198.51.100.1"),
                    ..key(&self.bound)
                },
            ),
        ]
    }
}

/// Every check through gRPC and through `/v1/auth`, on both instances:
/// the same class each time; returns them.
async fn same_answers(apps: &[&TestApp; 2], keys: &Keys, when: &str) -> Vec<(String, Class)> {
    let mut seen = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        for (what, check) in keys.checks() {
            let over_grpc = classify(&grpc(app, &check).await);
            let over_http = http(app, &check).await;
            assert_eq!(over_grpc, over_http, "{when}, instance {i}: {what}");
            seen.push((format!("{i} {what}"), over_grpc));
        }
    }
    seen
}

#[tokio::test]
async fn over_grpc_every_key_gets_v1_auths_answer_with_redis_up_stalled_and_down_in_both_failsafe_modes(
) {
    let redis = Arc::new(TestRedis::start());
    let closed = TestApp::spawn_with(redis.clone(), |_| {}).await;
    let open = TestApp::spawn_with(redis.clone(), |c| c.failsafe = Failsafe::Open).await;
    let keys = Keys::mint(&closed).await;
    // Each instance answers the valid key once, and uses up the limited one.
    for app in [&closed, &open] {
        app.validate(&keys.valid, StatusCode::OK).await;
        app.validate_response(&keys.limited).await;
    }
    let apps = [&closed, &open];

    let up = same_answers(&apps, &keys, "Redis up").await;
    for (what, class) in &up {
        let want = match what.split_once(' ').unwrap().1 {
            "valid" | "inside its networks" => 200,
            "lacks the scope" => 403,
            "over its limit" => 429,
            _ => 401,
        };
        assert_eq!((class.status, class.failsafe), (want, false), "{what}");
    }

    let pid = redis.pid().await;
    signal(&pid, "-STOP");
    let stalled = same_answers(&apps, &keys, "Redis stalled").await;
    signal(&pid, "-CONT");
    crate::helpers::eventually("recovery", || async {
        let r = open.validate_response(&keys.valid).await;
        (r.status() == StatusCode::OK && r.headers().get("x-keyward-failsafe").is_none())
            .then_some(())
    })
    .await;
    redis.stop();
    let down = same_answers(&apps, &keys, "Redis down").await;

    for (what, class) in stalled.iter().chain(&down) {
        let (instance, kind) = what.split_once(' ').unwrap();
        let want = match (instance, kind) {
            (_, "no key" | "malformed") => (401, false),
            // The last known good, on the fail-open instance only.
            ("1", "valid") => (200, true),
            _ => (503, false),
        };
        assert_eq!((class.status, class.failsafe), want, "{what}");
    }
}

#[tokio::test]
async fn over_grpc_the_routes_extensions_and_envoys_peer_decide_and_a_bad_extension_is_a_422_denial(
) {
    let app = TestApp::spawn().await;
    let keys = Keys::mint(&app).await;
    let key = Some(keys.valid.as_str());

    // Envoy's view of the client wins over a header the client sent.
    let r = grpc(
        &app,
        &Check {
            key: Some(&keys.bound),
            source: Some("198.51.100.1"),
            headers: vec![("x-forwarded-for", "203.0.113.7")],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(denied(&r).0, 401);
    // A malformed or out-of-range extension is never "nothing required".
    for (name, value) in [
        ("required_scopes", "chat:write, not a scope"),
        ("cost", "-1"),
        ("cost", "1000001"),
        ("cost", ""),
    ] {
        let r = grpc(
            &app,
            &Check {
                key,
                extensions: vec![(name, value)],
                ..Default::default()
            },
        )
        .await;
        let (status, headers, body) = denied(&r);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_request")),
            "{name}={value:?}: {body}"
        );
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("context_extensions.{name}: ")),
            "{message}"
        );
    }
    // A refusal carries /v1/auth's headers.
    let r = grpc_key(&app, &keys.wrong).await;
    let (status, headers, _) = denied(&r);
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="keyward""#);
    let r = grpc_key(&app, &keys.limited).await;
    assert!(matches!(r.http_response, Some(HttpResponse::OkResponse(_))));
    let r = grpc_key(&app, &keys.limited).await;
    let (status, headers, _) = denied(&r);
    assert_eq!(status, 429);
    assert!(
        headers.contains_key("retry-after") && headers.contains_key("x-ratelimit-limit"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn a_grpc_request_that_is_no_http_check_is_a_grpc_error_not_an_answer() {
    let app = TestApp::spawn().await;

    let err = client(&app)
        .await
        .check(CheckRequest::default())
        .await
        .expect_err("no CheckResponse");

    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn over_grpc_an_ok_removes_the_key_and_the_clients_own_x_keyward_headers_and_names_the_identity(
) {
    let app = TestApp::spawn_with(Arc::new(TestRedis::start()), |c| {
        c.auth_query_param = Some("api_key".into());
    })
    .await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let check = Check {
        headers: vec![
            ("x-api-key", &key.api_key),
            ("x-keyward-key-id", "k_forged"),
            ("x-keyward-anything", "forged"),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ],
        ..Default::default()
    };
    let mut request = check.request();
    let attributes = request.attributes.as_mut().unwrap();
    let http = attributes.request.as_mut().unwrap().http.as_mut().unwrap();
    // The key parameter is removed whenever sent, used or not.
    http.path = "/chat?b=1&api_key=sk-proj.other".into();

    let r = client(&app)
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner();

    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not OK: {r:?}");
    };
    let set: HashMap<_, _> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(set.get("x-keyward-key-id"), Some(&key.key_id.as_str()));
    assert_eq!(set.get("x-keyward-project-id"), Some(&project.as_str()));
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    // Envoy removes after it sets: x-keyward-key-id is replaced, not removed;
    // a Basic Authorization is the app's, not a key.
    assert_eq!(removed, ["x-api-key", "x-keyward-anything"]);
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);
    let identity = r.dynamic_metadata.expect("dynamic metadata");
    let field = |name: &str| match &identity.fields[name].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        [
            field("project_id"),
            field("key_id"),
            field("owner"),
            field("server_name")
        ],
        [project.as_str(), key.key_id.as_str(), "alice", "api-1"]
    );
}
