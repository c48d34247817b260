//! keyward behind real gateways: nginx (`auth_request`), Envoy (`ext_authz`
//! over HTTP, and over gRPC) and Caddy (`forward_auth`), each started from its example config in
//! `examples/gateways/` with only the ports changed, in front of a small
//! app that records every request it gets. The client talks to the gateway
//! only; each test shows what the client and the app see.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    free_port, random_id, retry_after, signal, Binary, Clock, KillOnDrop, Minted, TestRedis,
};

/// What the app answers to every request that reaches it.
const APP_BODY: &str = "hello from the app";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateways")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Envoy,
    /// Envoy's ext_authz over gRPC (`Authorization/Check`).
    EnvoyGrpc,
    Caddy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Envoy => "envoy",
            Kind::EnvoyGrpc => "envoy-grpc",
            Kind::Caddy => "caddy",
        }
    }

    /// The program it runs.
    fn program(self) -> Kind {
        match self {
            Kind::EnvoyGrpc => Kind::Envoy,
            other => other,
        }
    }

    /// The `KEYWARD_AUTH_ORIGINAL_HEADERS` its example says keyward runs with.
    fn original_headers(self) -> &'static str {
        match self {
            Kind::Nginx => "x-original",
            Kind::Envoy => "envoy",
            // Not read over gRPC: the default.
            Kind::Caddy | Kind::EnvoyGrpc => "x-forwarded",
        }
    }

    /// The example config the gateway is started from.
    fn example(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx.conf",
            Kind::Envoy => "envoy.yaml",
            Kind::EnvoyGrpc => "envoy-grpc.yaml",
            Kind::Caddy => "Caddyfile",
        }
    }

    /// The gateway's binary, installed by `examples/gateways/install.sh` if missing.
    fn binary(self) -> String {
        let program = self.program();
        static PATHS: Mutex<Vec<(Kind, String)>> = Mutex::new(Vec::new());
        // One install at a time: apt-get takes a lock.
        let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, path)) = paths.iter().find(|(kind, _)| *kind == program) {
            return path.clone();
        }
        let out = Command::new("bash")
            .arg(examples().join("install.sh"))
            .arg(format!("{}-path", program.name()))
            .stderr(Stdio::inherit())
            .output()
            .expect("run examples/gateways/install.sh");
        assert!(
            out.status.success(),
            "install.sh {}-path failed",
            program.name()
        );
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        paths.push((program, path.clone()));
        path
    }

    /// The command that runs the gateway in the foreground with `config`,
    /// keeping every file it writes under `dir`.
    fn command(self, dir: &Path, config: &Path) -> Command {
        let mut cmd = Command::new(self.binary());
        match self {
            Kind::Nginx => {
                std::fs::create_dir_all(dir.join("logs")).unwrap();
                // One process (no master and workers), so killing it stops it all.
                cmd.arg("-p")
                    .arg(format!("{}/", dir.display()))
                    .arg("-e")
                    .arg(dir.join("logs/error.log"))
                    .arg("-c")
                    .arg(config)
                    .args(["-g", "daemon off; master_process off;"]);
            }
            Kind::Envoy | Kind::EnvoyGrpc => {
                cmd.arg("-c")
                    .arg(config)
                    // No shared memory, so several can run at once.
                    .arg("--disable-hot-restart")
                    .args(["--concurrency", "1", "--log-level", "warn"])
                    // Access log lines reach the file within 0.1 s.
                    .args(["--file-flush-interval-msec", "100"]);
            }
            Kind::Caddy => {
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(config)
                    .env("HOME", dir)
                    .env("XDG_CONFIG_HOME", dir.join("config"))
                    .env("XDG_DATA_HOME", dir.join("data"));
            }
        }
        cmd
    }
}

/// Rewrites the example's ports, the gateway's 8000, keyward's 8080 and the
/// app's 9000, to the test's, in the spellings the examples use for an
/// address (`127.0.0.1:8080`; Envoy's `port_value: 8080`; Caddy's site
/// address for any host, `http://:8000`). Every default port must be found,
/// and none may be left.
fn render(template: &str, ports: &[(u16, u16)]) -> String {
    let spellings = |port: u16| {
        [
            format!("127.0.0.1:{port}"),
            format!("port_value: {port}"),
            format!("http://:{port}"),
        ]
    };
    let mut text = template.to_owned();
    for &(default, port) in ports {
        let mut found = false;
        for (from, to) in spellings(default).iter().zip(spellings(port)) {
            found |= text.contains(from.as_str());
            text = text.replace(from.as_str(), &to);
        }
        assert!(found, "port {default} is not in the example");
    }
    for &(default, _) in ports {
        for from in spellings(default) {
            assert!(!text.contains(&from), "{from} left in the rendered config");
        }
    }
    text
}

/// A request as the app received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The protected app on 127.0.0.1:0: records every request and answers 200.
struct App {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers,
                    body: body.to_vec(),
                });
                APP_BODY
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        App { port, seen, task }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the app saw a request")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the client presents its key.
#[derive(Clone, Copy)]
enum Key<'a> {
    Bearer(&'a str),
    Header(&'a str),
    Missing,
}

/// A real gateway process from an example config, killed on drop.
struct Gateway {
    kind: Kind,
    base: String,
    dir: PathBuf,
    http: reqwest::Client,
    process: KillOnDrop,
}

impl Gateway {
    /// Starts `kind` in front of keyward at `keyward` and the app on
    /// `app_port`, and waits until a request without a key comes back 401
    /// (the gateway is up and reaches keyward).
    async fn start(kind: Kind, keyward: SocketAddr, app_port: u16) -> Self {
        Self::start_with(kind, keyward, app_port, |_, template| template).await
    }

    /// As `start`, from the example as `edit` changes it, given the
    /// gateway's directory (a variant, e.g. mTLS to keyward).
    async fn start_with(
        kind: Kind,
        keyward: SocketAddr,
        app_port: u16,
        edit: impl FnOnce(&Path, String) -> String,
    ) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(random_id(&format!("keyward-{}-", kind.name())));
        std::fs::create_dir_all(&dir).unwrap();
        let template = std::fs::read_to_string(examples().join(kind.example())).unwrap();
        let template = edit(&dir, template);
        let config = dir.join(kind.example());
        let ports = [(8000, port), (8080, keyward.port()), (9000, app_port)];
        std::fs::write(&config, render(&template, &ports)).unwrap();
        let mut cmd = kind.command(&dir, &config);
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.log")).unwrap())
            .stderr(File::create(dir.join("stderr.log")).unwrap());
        let process = KillOnDrop(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", kind.name())),
        );
        let mut gateway = Gateway {
            kind,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            process,
        };
        gateway.wait_until_ready().await;
        gateway
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no answer");
        loop {
            if let Ok(r) = self.http.get(format!("{}/ping", self.base)).send().await {
                if r.status() == StatusCode::UNAUTHORIZED {
                    return;
                }
                last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            }
            if let Ok(Some(status)) = self.process.0.try_wait() {
                panic!("{} exited during start-up: {status}", self.kind.name());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer 401 to a request without a key; last answer: {last}",
                self.kind.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Key<'_>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match key {
            Key::Bearer(key) => request.bearer_auth(key),
            Key::Header(key) => request.header("x-api-key", key),
            Key::Missing => request,
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request reaches the gateway")
    }

    async fn get(&self, path: &str, key: Key<'_>) -> Response {
        self.send(reqwest::Method::GET, path, key, &[]).await
    }

    /// Everything the gateway wrote: its logs and the config it ran.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in walk(&self.dir) {
            let name = entry.display().to_string();
            if let Ok(text) = std::fs::read_to_string(&entry) {
                out += &format!("--- {name}\n{text}\n");
            }
        }
        out
    }
}

/// The files under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        if std::thread::panicking() {
            eprintln!("{} files:\n{}", self.kind.name(), self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts the app answered: 200 with its body.
async fn assert_reached_app(r: Response) {
    let url = r.url().clone();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, APP_BODY), "{url}");
}

/// Asserts a refusal: `status`, keyward's error `code` in a JSON body, and
/// the header `must_have`; returns the response's headers.
async fn assert_refused(r: Response, status: StatusCode, code: &str, must_have: &str) -> HeaderMap {
    let headers = r.headers().clone();
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "headers: {headers:?}, body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["code"], code, "body: {text}");
    assert!(
        headers.contains_key(must_have),
        "no {must_have} in {headers:?}"
    );
    headers
}

/// Asserts the app got the request with `key`'s identity and without the key.
fn assert_identity(seen: &Seen, project: &str, key: &Minted, scopes: &str) {
    assert_eq!(seen.header("x-keyward-project-id"), Some(project));
    assert_eq!(seen.header("x-keyward-key-id"), Some(key.key_id.as_str()));
    assert_eq!(seen.header("x-keyward-owner"), Some("alice"));
    assert_eq!(seen.header("x-keyward-server-name"), Some("api-1"));
    assert_eq!(seen.header("x-keyward-scopes"), Some(scopes));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the key reached the app"
    );
    assert_eq!(seen.header("x-api-key"), None, "the key reached the app");
    assert_eq!(seen.header("x-keyward-required-scopes"), None);
}

/// Redis, keyward, the app, the gateway in front of them, and three keys.
struct Setup {
    redis: TestRedis,
    /// keyward's clock, which the rate-limit step sets.
    clock: Clock,
    keyward: Binary,
    app: App,
    gateway: Gateway,
    project: String,
    /// Scopes `chat:*`, with metadata.
    chat: Minted,
    /// Scopes `docs:read` only, no metadata.
    reader: Minted,
    /// Scopes `chat:write`, one request a minute.
    limited: Minted,
}

impl Setup {
    async fn new(kind: Kind) -> Self {
        let redis = TestRedis::start();
        let clock = Clock::real();
        let env = [("KEYWARD_AUTH_ORIGINAL_HEADERS", kind.original_headers())];
        let keyward = Binary::start_on(&clock, &redis, &env).await;
        let app = App::start().await;
        let addr = keyward.base.trim_start_matches("http://").parse().unwrap();
        let gateway = Gateway::start(kind, addr, app.port).await;
        let project = keyward.project().await;
        let scoped = |scopes: &[&str], extra: Value| {
            let mut body = json!({ "scopes": scopes });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        let chat = keyward
            .mint(
                &project,
                scoped(&["chat:*"], json!({ "metadata": { "tier": "gold" } })),
            )
            .await;
        let reader = keyward
            .mint(&project, scoped(&["docs:read"], json!({})))
            .await;
        let limited = keyward
            .mint(
                &project,
                scoped(&["chat:write"], json!({ "rate_limit_per_minute": 1 })),
            )
            .await;
        Setup {
            redis,
            clock,
            keyward,
            app,
            gateway,
            project,
            chat,
            reader,
            limited,
        }
    }
}

/// Each step below acts through the gateway and asserts on what the client
/// and the app saw; `keyward_guards_the_app_behind` runs them in order.
async fn a_key_with_the_routes_scope_reaches_the_app_as_its_identity_not_as_itself(s: &Setup) {
    let r = s
        .gateway
        .http
        .post(format!("{}/chat/completions?stream=false", s.gateway.base))
        .bearer_auth(&s.chat.api_key)
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();

    assert_reached_app(r).await;
    let seen = s.app.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/chat/completions?stream=false")
    );
    assert_eq!(
        seen.body, br#"{"prompt":"hi"}"#,
        "the body reached the app whole"
    );
    assert_identity(&seen, &s.project, &s.chat, "chat:*");
    let metadata = seen
        .header("x-keyward-metadata")
        .expect("metadata reached the app");
    let metadata = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(metadata.trim_end_matches('='))
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&metadata).unwrap(),
        json!({ "tier": "gold" })
    );
    // keyward's audit entry names the client's request, not the gateway's.
    let audit = s.redis.last_audit(&s.chat.key_id).await;
    assert_eq!(
        (
            audit["result"].as_str(),
            audit.get("method").map(String::as_str),
            audit.get("path").map(String::as_str)
        ),
        ("ok", Some("POST"), Some("/chat/completions")),
        "{audit:?}"
    );
}

async fn identity_headers_the_client_makes_up_never_reach_the_app(s: &Setup) {
    let mut made_up = vec![
        ("x-keyward-owner", "mallory"),
        ("x-keyward-key-id", "k_forged"),
        ("x-keyward-metadata", "eyJ0aWVyIjoiZm9yZ2VkIn0"),
        ("x-keyward-required-scopes", "admin"),
        // Names keyward leaves out for these keys, or reads.
        ("x-keyward-credits-remaining", "999999"),
        ("x-keyward-failsafe", "open"),
        ("x-keyward-cost", "0"),
        // Its own audit entry, rewritten.
        ("x-forwarded-method", "FORGED"),
        ("x-forwarded-uri", "/forged"),
        ("x-original-method", "FORGED"),
        ("x-original-uri", "/forged"),
    ];
    // nginx cannot drop headers by pattern (its recipe sets or clears every
    // name keyward sends or reads); the others drop any X-Keyward-*.
    if s.gateway.kind != Kind::Nginx {
        made_up.push(("x-keyward-anything", "forged"));
    }

    let r = s
        .gateway
        .send(
            reqwest::Method::GET,
            "/chat/threads/7",
            Key::Header(&s.chat.api_key),
            made_up.as_slice(),
        )
        .await;
    assert_reached_app(r).await;
    let with_metadata = s.app.last();
    let r = s
        .gateway
        .send(
            reqwest::Method::GET,
            "/",
            Key::Header(&s.reader.api_key),
            made_up.as_slice(),
        )
        .await;
    assert_reached_app(r).await;
    let without_metadata = s.app.last();

    assert_eq!(with_metadata.uri, "/chat/threads/7");
    assert_identity(&with_metadata, &s.project, &s.chat, "chat:*");
    for seen in [&with_metadata, &without_metadata] {
        for (name, value) in &made_up {
            if name.starts_with("x-keyward-") {
                assert_ne!(seen.header(name), Some(*value), "{name} reached the app");
            }
        }
        for name in [
            "x-keyward-credits-remaining",
            "x-keyward-failsafe",
            "x-keyward-cost",
        ] {
            assert_eq!(seen.header(name), None, "{name} reached the app");
        }
    }
    // keyward audited the client's real request, not the one it claimed.
    let audit = s.redis.last_audit(&s.chat.key_id).await;
    assert_eq!(
        (
            audit.get("method").map(String::as_str),
            audit.get("path").map(String::as_str)
        ),
        (Some("GET"), Some("/chat/threads/7")),
        "{audit:?}"
    );
    assert_ne!(
        with_metadata.header("x-keyward-metadata"),
        Some("eyJ0aWVyIjoiZm9yZ2VkIn0")
    );
    assert_eq!(without_metadata.uri, "/");
    assert_identity(&without_metadata, &s.project, &s.reader, "docs:read");
    assert_eq!(without_metadata.header("x-keyward-metadata"), None);
}

async fn a_key_without_the_routes_scope_is_403_there_and_passes_where_none_is_required(s: &Setup) {
    let before = s.app.count();

    let scoped = s
        .gateway
        .get("/chat/completions", Key::Header(&s.reader.api_key))
        .await;
    let headers = assert_refused(
        scoped,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "www-authenticate",
    )
    .await;
    let unscoped = s
        .gateway
        .get("/docs/intro", Key::Bearer(&s.reader.api_key))
        .await;

    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains("chat:write"), "{challenge}");
    assert_reached_app(unscoped).await;
    assert_eq!(
        s.app.count(),
        before + 1,
        "only the unscoped request reached the app"
    );
    assert_eq!(s.app.last().uri, "/docs/intro");
}

async fn a_wrong_or_missing_key_is_401_and_never_reaches_the_app(s: &Setup) {
    let before = s.app.count();
    let (rest, last) = s.chat.api_key.split_at(s.chat.api_key.len() - 1);
    let wrong = format!("{rest}{}", if last == "X" { "Y" } else { "X" });

    for key in [Key::Bearer(&wrong), Key::Missing, Key::Header("not-a-key")] {
        let r = s.gateway.get("/chat/completions", key).await;

        let headers = assert_refused(
            r,
            StatusCode::UNAUTHORIZED,
            "invalid_key",
            "www-authenticate",
        )
        .await;
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    assert_eq!(s.app.count(), before, "a refused request reached the app");
}

async fn a_key_over_its_rate_limit_is_429_with_retry_after(s: &Setup) {
    let before = s.app.count();

    // With one request a minute, at a minute's start, the second is refused.
    s.clock.start_of_minute(1.0);
    let r = s
        .gateway
        .get("/chat/completions", Key::Bearer(&s.limited.api_key))
        .await;
    assert_reached_app(r).await;
    let allowed = 1;
    let r = s
        .gateway
        .get("/chat/completions", Key::Bearer(&s.limited.api_key))
        .await;
    let headers = assert_refused(
        r,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "retry-after",
    )
    .await;
    // The rest of the minute, which began a second before.
    assert!((50..=60).contains(&retry_after(&headers)), "{headers:?}");
    assert!(headers.contains_key("x-ratelimit-limit"), "{headers:?}");
    assert_eq!(
        s.app.count(),
        before + allowed,
        "a refused request reached the app"
    );
}

/// A request now gets keyward's 503 with `Retry-After`, and the app nothing.
async fn the_client_gets_503_with_retry_after_and_the_app_nothing(s: &Setup) {
    let before = s.app.count();

    let r = s
        .gateway
        .get("/chat/completions", Key::Bearer(&s.chat.api_key))
        .await;

    let headers = assert_refused(
        r,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "retry-after",
    )
    .await;
    assert!(retry_after(&headers) >= 1, "{headers:?}");
    assert_eq!(s.app.count(), before, "a request reached the app unchecked");
}

async fn with_redis_down_the_client_gets_503_with_retry_after_and_the_app_nothing(s: &Setup) {
    s.redis.stop();
    the_client_gets_503_with_retry_after_and_the_app_nothing(s).await;
}

/// gRPC: a route's `cost` context extension is what the request spends.
async fn a_routes_cost_is_spent_from_the_keys_credits(s: &Setup) {
    let key = s
        .keyward
        .mint(&s.project, json!({ "credits": { "remaining": 100 } }))
        .await;

    assert_reached_app(
        s.gateway
            .get("/batch/nightly", Key::Bearer(&key.api_key))
            .await,
    )
    .await;
    assert_reached_app(s.gateway.get("/other", Key::Bearer(&key.api_key)).await).await;

    // The batch route weighs 10, the rest 1.
    assert_eq!(
        s.app.last().header("x-keyward-credits-remaining"),
        Some("89")
    );
    let audit = s.redis.audit("audit:keylookup").await;
    let costs: Vec<_> = audit
        .iter()
        .filter(|e| e.get("key_id") == Some(&key.key_id))
        .map(|e| (e["path"].as_str(), e["cost"].as_str()))
        .collect();
    assert_eq!(costs, [("/batch/nightly", "10"), ("/other", "1")]);
}

/// gRPC: the identity is the ext_authz filter's dynamic metadata, which
/// the example's access log prints.
async fn the_identity_is_in_envoys_dynamic_metadata(s: &Setup) {
    assert_reached_app(s.gateway.get("/meta/1", Key::Bearer(&s.chat.api_key)).await).await;

    let want = format!(
        "GET /meta/1 200 project={} key={} owner=alice server=api-1",
        s.project, s.chat.key_id
    );
    let log = s.gateway.dir.join("stdout.log");
    crate::helpers::eventually("the access log names the identity", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text.lines().any(|l| l == want);
        async move { found.then_some(()) }
    })
    .await;
}

/// A stalled Redis (SIGSTOP): keyward's 503 reaches the client, nothing the app.
async fn with_redis_stalled_the_client_gets_503_and_the_app_nothing(s: &Setup) {
    let pid = s.redis.pid().await;
    signal(&pid, "-STOP");
    the_client_gets_503_with_retry_after_and_the_app_nothing(s).await;
    signal(&pid, "-CONT");
}

/// The whole story through one gateway.
async fn keyward_guards_the_app_behind(kind: Kind) {
    let s = Setup::new(kind).await;
    a_key_with_the_routes_scope_reaches_the_app_as_its_identity_not_as_itself(&s).await;
    identity_headers_the_client_makes_up_never_reach_the_app(&s).await;
    a_key_without_the_routes_scope_is_403_there_and_passes_where_none_is_required(&s).await;
    a_wrong_or_missing_key_is_401_and_never_reaches_the_app(&s).await;
    a_key_over_its_rate_limit_is_429_with_retry_after(&s).await;
    if kind == Kind::EnvoyGrpc {
        a_routes_cost_is_spent_from_the_keys_credits(&s).await;
        the_identity_is_in_envoys_dynamic_metadata(&s).await;
        with_redis_stalled_the_client_gets_503_and_the_app_nothing(&s).await;
    }
    // Last: it stops Redis.
    with_redis_down_the_client_gets_503_with_retry_after_and_the_app_nothing(&s).await;
}

#[tokio::test]
async fn nginx_in_front_lets_valid_keys_through_as_their_identity_and_gives_the_client_keywards_refusals(
) {
    keyward_guards_the_app_behind(Kind::Nginx).await;
}

#[tokio::test]
async fn envoy_in_front_lets_valid_keys_through_as_their_identity_and_gives_the_client_keywards_refusals(
) {
    keyward_guards_the_app_behind(Kind::Envoy).await;
}

#[tokio::test]
async fn envoy_over_grpc_in_front_lets_valid_keys_through_as_their_identity_and_gives_the_client_keywards_refusals(
) {
    keyward_guards_the_app_behind(Kind::EnvoyGrpc).await;
}

#[tokio::test]
async fn caddy_in_front_lets_valid_keys_through_as_their_identity_and_gives_the_client_keywards_refusals(
) {
    keyward_guards_the_app_behind(Kind::Caddy).await;
}

/// The example with keyward behind mTLS, as `examples/gateways/<kind>-mtls.*`
/// says to change it, in `dir` with the certificates it names: keyward's
/// CA, and a client certificate `pki` issued from it.
fn mtls_variant(kind: Kind, pki: &crate::tls::Pki, dir: &Path, template: String) -> String {
    for (from, to) in [
        ("ca.crt", "keyward-ca.crt"),
        ("gateway.crt", "keyward-client.crt"),
        ("gateway.key", "keyward-client.key"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).unwrap();
    }
    let snippet = |file: &str| {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        let lines = text.lines().filter(|l| !l.starts_with('#'));
        lines.map(|l| format!("{l}\n")).collect::<String>()
    };
    match kind {
        Kind::Nginx => {
            let line = "            proxy_pass http://keyward/v1/auth;\n";
            assert!(template.contains(line));
            template.replace(line, &snippet("nginx-mtls.conf"))
        }
        Kind::Envoy | Kind::EnvoyGrpc => {
            let cluster = "  - name: keyward\n    type: STATIC\n    connect_timeout: 1s\n";
            assert!(template.contains(cluster));
            template.replace(cluster, &(cluster.to_owned() + &snippet("envoy-mtls.yaml")))
        }
        Kind::Caddy => {
            let uri = "\turi /v1/auth\n";
            assert!(template.contains(uri));
            template.replace(uri, &(uri.to_owned() + &snippet("Caddyfile-mtls")))
        }
    }
}

/// The gateway reaches keyward over mTLS: a valid key reaches the app as
/// its identity, a wrong one is refused with keyward's 401.
async fn the_gateway_reaches_keyward_over_mtls(kind: Kind) {
    let pki = crate::tls::Pki::new();
    pki.ca("ca").issue("ca", "server").issue("ca", "gateway");
    let keyward = crate::tls::Https::start(&pki, "server", Some("ca")).await;
    let admin = crate::tls::client(&pki, "ca", Some("gateway"))
        .build()
        .unwrap();
    keyward.health(&admin).await.unwrap();
    let app = App::start().await;
    // `start_with` waits for a 401 through the gateway: keyward's answer.
    let gateway = Gateway::start_with(kind, keyward.addr, app.port, |dir, template| {
        mtls_variant(kind, &pki, dir, template)
    })
    .await;
    let project = random_id("p");
    let post = |path: &str, body: Value| {
        admin
            .post(keyward.url(path))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let body = json!({ "project_id": project, "label": "Test", "owner": "team-a" });
    let r = post("/v1/admin/projects", body).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json!({ "project_id": project, "owner": "alice", "server_name": "api-1" });
    let minted: Value = post("/v1/mint-key", body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = minted["api_key"].as_str().unwrap();

    assert_reached_app(gateway.get("/ping", Key::Bearer(key)).await).await;
    assert_eq!(
        app.last().header("x-keyward-project-id"),
        Some(project.as_str())
    );
    let wrong = crate::helpers::wrong_secret(key);
    let r = gateway.get("/ping", Key::Bearer(&wrong)).await;
    assert_refused(
        r,
        StatusCode::UNAUTHORIZED,
        "invalid_key",
        "www-authenticate",
    )
    .await;
}

#[tokio::test]
async fn nginx_reaches_keyward_over_mtls_with_proxy_ssl_certificate() {
    the_gateway_reaches_keyward_over_mtls(Kind::Nginx).await;
}

#[tokio::test]
async fn envoy_reaches_keyward_over_mtls_with_a_tls_transport_socket() {
    the_gateway_reaches_keyward_over_mtls(Kind::Envoy).await;
}

#[tokio::test]
async fn envoy_over_grpc_reaches_keyward_over_mtls_with_a_tls_transport_socket() {
    the_gateway_reaches_keyward_over_mtls(Kind::EnvoyGrpc).await;
}

#[tokio::test]
async fn caddy_reaches_keyward_over_mtls_with_its_http_transports_tls() {
    the_gateway_reaches_keyward_over_mtls(Kind::Caddy).await;
}
