//! `/v1/auth`, the forward-auth endpoint, and scopes, spoken to directly as a
//! gateway would (the real gateways are in `gateways.rs`).

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, wrong_secret, TestApp, TestRedis};

impl TestApp {
    /// A forward-auth request with `headers`.
    async fn auth(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("request reaches keyward")
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn a_valid_key_is_200_with_an_empty_body_and_the_identity_headers_for_every_method() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let metadata = json!({ "tier": "gold", "server": "s1" });
    let key = app
        .mint(
            &project,
            json!({ "metadata": metadata, "scopes": ["chat:*", "files:read"], "rate_limit_per_minute": 1000 }),
        )
        .await;
    let bearer = format!("Bearer {}", key.api_key);

    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = app
            .auth(
                method.clone(),
                "/v1/auth/chat/1",
                &[("authorization", &bearer)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        assert_eq!(header(&r, "cache-control"), "no-store");
        assert_eq!(header(&r, "x-keyward-project-id"), project);
        assert_eq!(header(&r, "x-keyward-key-id"), key.key_id);
        assert_eq!(header(&r, "x-keyward-owner"), "alice");
        assert_eq!(header(&r, "x-keyward-server-name"), "api-1");
        assert_eq!(header(&r, "x-keyward-scopes"), "chat:*,files:read");
        assert_eq!(header(&r, "x-ratelimit-limit"), "1000");
        assert!(r.headers().contains_key("x-ratelimit-remaining"));
        assert!(r.headers().contains_key("x-ratelimit-reset"));
        let meta = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header(&r, "x-keyward-metadata"))
            .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&meta).unwrap(), metadata);
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "{method}: body not empty"
        );
    }
}

#[tokio::test]
async fn the_key_comes_from_bearer_or_x_api_key_and_a_query_parameter_only_when_configured() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;

    let by_header = app
        .auth(Method::GET, "/v1/auth", &[("x-api-key", &key.api_key)])
        .await;
    assert_eq!(by_header.status(), StatusCode::OK);

    let none = app.auth(Method::GET, "/v1/auth", &[]).await;
    assert_eq!(
        header(&none, "www-authenticate"),
        r#"Bearer realm="keyward""#
    );
    assert_error(none, StatusCode::UNAUTHORIZED, "invalid_key").await;

    let in_query = format!("/v1/auth?api_key={}", key.api_key);
    let r = app.auth(Method::GET, &in_query, &[]).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;

    let opted_in = TestApp::spawn_with(app.redis().clone(), |c| {
        c.auth_query_param = Some("api_key".into())
    })
    .await;
    let r = opted_in.auth(Method::GET, &in_query, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_scope_is_403_after_the_secret_and_never_counts_against_the_limit() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "scopes": ["chat:*"], "rate_limit_per_minute": 2 }),
        )
        .await;
    let bearer = format!("Bearer {}", key.api_key);
    let wrong = format!("Bearer {}", wrong_secret(&key.api_key));
    let require = |scopes| {
        [
            ("authorization", bearer.as_str()),
            ("x-keyward-required-scopes", scopes),
        ]
    };

    for _ in 0..4 {
        let r = app
            .auth(Method::GET, "/v1/auth", &require("chat:read, admin:keys"))
            .await;
        assert_eq!(
            header(&r, "www-authenticate"),
            r#"Bearer error="insufficient_scope", scope="chat:read admin:keys""#
        );
        assert_error(r, StatusCode::FORBIDDEN, "insufficient_scope").await;
    }
    let audit = app.last_audit(&key.key_id).await;
    assert_eq!(
        (audit["result"].as_str(), audit["reason"].as_str()),
        ("denied", "insufficient_scope")
    );
    // A wrong secret is 401 whatever the scopes.
    let r = app
        .auth(
            Method::GET,
            "/v1/auth",
            &[
                ("authorization", &wrong),
                ("x-keyward-required-scopes", "admin:keys"),
            ],
        )
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;

    // The four 403s used none of the limit of 2.
    for _ in 0..2 {
        let r = app
            .auth(Method::GET, "/v1/auth", &require("chat:write"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = app.auth(Method::GET, "/v1/auth", &require("")).await;
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() <= 60);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn validate_key_takes_required_scopes_and_returns_the_granted_ones() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "scopes": ["*"] })).await;
    let none = app.mint(&project, json!({})).await;
    let body = |k: &str, scopes: Value| json!({ "api_key": k, "scopes": scopes });

    let r = app
        .post(
            "/v1/validate-key",
            &body(&key.api_key, json!(["admin:keys"])),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["scopes"], json!(["*"]));

    let r = app
        .post("/v1/validate-key", &body(&none.api_key, json!(["a"])), None)
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let r = app
        .post("/v1/validate-key", &body(&none.api_key, json!([])), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = app
        .post(
            "/v1/validate-key",
            &body(&key.api_key, json!(["no spaces"])),
            None,
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let r = app
        .auth(
            Method::GET,
            "/v1/auth",
            &[
                ("x-api-key", &key.api_key),
                ("x-keyward-required-scopes", "a b"),
            ],
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
}

#[tokio::test]
async fn mint_rejects_malformed_scopes() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let cases = [
        json!(["has space"]),
        json!([""]),
        json!(["x".repeat(129)]),
        json!(vec!["a"; 65]),
        json!("chat:*"),
    ];
    for scopes in cases {
        let body =
            json!({ "project_id": project, "owner": "o", "server_name": "s", "scopes": scopes });
        let r = app.admin_post("/v1/mint-key", &body).await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
}

#[tokio::test]
async fn audit_entries_carry_the_original_request_from_the_trusted_headers_only() {
    use keyward::config::OriginalHeaders;
    let redis = std::sync::Arc::new(TestRedis::start());
    // Every request carries both families of headers: only the configured
    // one is believed, whatever the client added of the other.
    let both = [
        ("x-forwarded-method", "PATCH"),
        ("x-forwarded-uri", "/f?q=1"),
        ("x-original-method", "PUT"),
        ("x-original-uri", "/o?q=1"),
    ];
    for (trusted, method, original) in [
        (OriginalHeaders::XForwarded, "PATCH", "/f"),
        (OriginalHeaders::XOriginal, "PUT", "/o"),
        // Envoy: the check request's method and the path after /v1/auth.
        (OriginalHeaders::Envoy, "DELETE", "/v1/chat"),
    ] {
        let app = TestApp::spawn_with(redis.clone(), |c| c.auth_original_headers = trusted).await;
        let project = app.project().await;
        let key = app.mint(&project, json!({})).await;
        let mut headers = vec![("x-api-key", key.api_key.as_str())];
        headers.extend(both);
        let r = app
            .auth(Method::DELETE, "/v1/auth/v1/chat?token=secret", &headers)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let audit = app.last_audit(&key.key_id).await;
        assert_eq!(
            (audit["method"].as_str(), audit["path"].as_str()),
            (method, original),
            "{trusted:?}"
        );
        assert_eq!(audit["reason"], "ok");
        // validate-key entries have no such fields.
        app.validate_response(&key.api_key).await;
        assert!(!app.last_audit(&key.key_id).await.contains_key("path"));
    }
}

#[tokio::test]
async fn required_scopes_cost_and_address_headers_that_cannot_be_read_are_422_never_absent() {
    use reqwest::header::HeaderValue;
    let app = TestApp::spawn().await;
    let project = app.project().await;
    // Granted nothing: any scope required is a 403, so reading the header
    // as absent would be a 200.
    let key = app.mint(&project, json!({})).await;
    let bytes = |b: &[u8]| HeaderValue::from_bytes(b).unwrap();
    let cases: Vec<(&str, Vec<(&str, HeaderValue)>)> = vec![
        (
            "X-Keyward-Required-Scopes",
            vec![("x-keyward-required-scopes", bytes(b"admin:keys\xe9"))],
        ),
        (
            "X-Keyward-Required-Scopes",
            vec![
                ("x-keyward-required-scopes", bytes(b"admin:keys")),
                ("x-keyward-required-scopes", bytes(b"")),
            ],
        ),
        (
            "X-Keyward-Cost",
            vec![
                ("x-keyward-cost", bytes(b"1")),
                ("x-keyward-cost", bytes(b"0")),
            ],
        ),
        (
            "x-forwarded-for",
            vec![
                ("x-forwarded-for", bytes(b"203.0.113.7")),
                ("x-forwarded-for", bytes(b"10.0.0.1\xff")),
            ],
        ),
    ];
    for (name, headers) in cases {
        let mut req = app
            .http
            .get(app.url("/v1/auth"))
            .header("x-api-key", &key.api_key);
        for (header, value) in headers {
            req = req.header(header, value);
        }
        let r = req.send().await.unwrap();
        let body = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{name}: ")), "{message}");
    }
    // The same shape as a malformed cost.
    let r = app
        .auth(
            Method::GET,
            "/v1/auth",
            &[("x-api-key", &key.api_key), ("x-keyward-cost", "lots")],
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
}

#[tokio::test]
async fn identity_headers_are_percent_encoded_and_large_metadata_is_left_out() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "owner": "Zoë Smith 100%", "metadata": { "blob": "x".repeat(5000) } }),
        )
        .await;

    let r = app
        .auth(Method::GET, "/v1/auth", &[("x-api-key", &key.api_key)])
        .await;

    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-keyward-owner"), "Zo%C3%AB%20Smith%20100%25");
    assert!(!r.headers().contains_key("x-keyward-metadata"));
    assert_eq!(header(&r, "x-keyward-scopes"), "");
}

#[tokio::test]
async fn redis_down_is_503_with_retry_after_on_the_auth_endpoint() {
    let app = TestApp::spawn_with(std::sync::Arc::new(TestRedis::start()), |_| {}).await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    app.redis().stop();

    let r = app
        .auth(Method::GET, "/v1/auth", &[("x-api-key", &key.api_key)])
        .await;

    assert_eq!(header(&r, "retry-after"), "1");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}
