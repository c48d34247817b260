//! HTTP: the state, the router (the only list of routes) and the layers.
//!
//! Layers, outermost first: request id (from `X-Request-Id` or a new one,
//! echoed in the response), a trace span per request carrying that id, the
//! `observe` middleware (in-flight gauge, per-route metrics, the request
//! deadline, logging of server-side error detail), panic catching, and a
//! 64 KiB body limit.

// `pub(crate)` so that `crate::openapi` can list the handlers' operations.
pub(crate) mod activity;
pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod console;
mod extract;
pub(crate) mod ops;
pub(crate) mod validate;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::{Error, ErrorDetail};
use crate::hash::Hasher;
use crate::store::Store;
use crate::telemetry::metric;
use crate::validate::Validator;

/// The request id header: taken from the caller or generated, and echoed.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares. Handed out as `AppState` (an `Arc`), so the
/// per-request clones axum makes are one reference count each.
pub struct App {
    /// The validation pipeline.
    pub validator: Validator,
    /// Redis, for admin calls and health checks.
    pub store: Store,
    /// Argon2id, for minting.
    pub hasher: Arc<Hasher>,
    /// The admin bearer token; `None` means admin routes are not served.
    pub admin_token: Option<SecretString>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
    /// Forward auth: the header holding the client's address.
    pub client_ip_header: HeaderName,
    /// Forward auth: the query parameter a key may come in, if enabled.
    pub auth_query_param: Option<String>,
}

pub type AppState = Arc<App>;

/// The public router. `/metrics` is on it unless `separate_metrics`.
pub fn router(state: AppState, separate_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/v1/validate-key", post(validate::validate_key))
        // `/v1/auth/` too: Envoy's `path_prefix` turns a request for `/`
        // into it, and `{*path}` does not match an empty tail.
        .route("/v1/auth", any(auth::forward_auth))
        .route("/v1/auth/", any(auth::forward_auth))
        .route("/v1/auth/{*path}", any(auth::forward_auth))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/openapi.json", get(crate::openapi::serve));
    if state.admin_token.is_some() {
        router = router
            .route("/v1/admin/projects", post(admin::create_project))
            .route("/v1/admin/projects/{project_id}", get(admin::get_project))
            .route("/v1/mint-key", post(admin::mint_key))
            .route("/v1/revoke-key", post(admin::revoke_key))
            .route("/v1/get-key", get(admin::get_key))
            .route("/v1/update-key", post(admin::update_key))
            .route("/v1/rotate-key", post(admin::rotate_key))
            .route("/v1/list-keys", get(admin::list_keys))
            .route("/v1/activity", get(activity::activity))
            .route("/admin", get(console::redirect))
            .route("/admin/", get(console::index))
            .route("/admin/{file}", get(console::asset));
    }
    if !separate_metrics {
        router = router.route("/metrics", get(ops::metrics));
    }
    layered(router, state)
}

/// The router for a separate, private metrics listener.
pub fn metrics_router(state: AppState) -> Router {
    layered(Router::new().route("/metrics", get(ops::metrics)), state)
}

fn layered(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn_with_state(state.clone(), observe))
                .layer(CatchPanicLayer::custom(|_| {
                    Error::Internal("handler panicked".into()).into_response()
                }))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .with_state(state)
}

/// Request ids: a random per-process prefix and a counter. Unique across
/// instances for practical purposes, and no random-number syscall per
/// request (a UUID v4 costs one).
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: format!("{:016x}", rand::random::<u64>()).into(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// The per-request span. On the validation routes it is a DEBUG span, so at
/// the default INFO level it costs nothing there (`observe` names the
/// request id in its own error lines); admin and other routes keep an INFO
/// span whose fields every log line inside it carries.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    // The path only: query strings may carry anything.
    let path = req.uri().path();
    if path == "/v1/validate-key" || path.starts_with("/v1/auth") {
        tracing::debug_span!("request", request_id = %id, method = %req.method(), path = %path)
    } else {
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path)
    }
}

/// Metric labels as `&'static str`, so recording allocates nothing. Only
/// bounded sets reach this: matched routes, status codes.
fn label(value: &str) -> &'static str {
    static LABELS: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let labels = LABELS.get_or_init(Default::default);
    if let Some(found) = labels.read().ok().and_then(|l| l.get(value).copied()) {
        return found;
    }
    let mut labels = match labels.write() {
        Ok(labels) => labels,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(found) = labels.get(value) {
        return found;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    labels.insert(leaked);
    leaked
}

/// The method as a label: the standard ones, else `other` (methods are
/// client-chosen strings, so not a bounded set).
fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .iter()
    .find(|m| *m == method)
    .map_or("other", |m| label(m.as_str()))
}

/// Decrements the in-flight gauge however the request ends.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(metric::HTTP_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(metric::HTTP_IN_FLIGHT).decrement(1.0);
    }
}

/// Metrics by matched route, the request deadline, and logging of the
/// operator-only detail that server errors carry.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let route = label(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = method_label(req.method());
    let request_id = req.headers().get(&REQUEST_ID).cloned();
    let response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable("request deadline exceeded".into()).into_response(),
    };
    let status = response.status();
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        let request_id = request_id.as_ref().and_then(|v| v.to_str().ok());
        tracing::error!(status = status.as_u16(), error = %detail, request_id, "request failed");
    } else if status.is_client_error() {
        tracing::debug!(status = status.as_u16(), "request rejected");
    }
    metrics::counter!(metric::HTTP_REQUESTS, "route" => route, "method" => method, "status" => label(status.as_str()))
        .increment(1);
    metrics::histogram!(metric::HTTP_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `keyward healthcheck`: GET /health on the local listener, for container
/// health checks (no curl needed in the image).
pub async fn healthcheck(listen: std::net::SocketAddr) -> std::process::ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(true)) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}
