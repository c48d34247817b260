//! HTTP: the state, the routes (each declared once, with its OpenAPI
//! operation), the layers.
//!
//! [`routes`] is the one list of routes. Each handler carries its operation
//! (`#[utoipa::path]`) and `utoipa-axum`'s `routes!` registers the two
//! together, so [`router`] serves exactly what [`openapi`] documents:
//! the document lists every route, including those a configuration leaves
//! out (the admin API without an admin token, `/metrics` on a listener of its
//! own), so it is the same for every deployment. Envoy's gRPC
//! `Authorization` service (`ext_authz`) is mounted beside them, on the same
//! listener and layers; it is no OpenAPI route.
//!
//! Layers, outermost first: [`observe`], every request's one middleware
//! (its ids: keyward's own for every request, and the caller's
//! `X-Request-Id` only when it is short and plain; the caller's, else
//! keyward's, echoed; a trace span carrying them; the in-flight gauge,
//! per-route metrics, the request deadline, logging of server-side error
//! detail), panic catching, and a 64 KiB body limit.

mod access;
mod activity;
mod admin;
mod auth;
mod console;
mod ext_authz;
mod extract;
mod operators;
mod ops;
mod serve;
mod usage;
mod validate;
mod webhooks;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, ErrorDetail};
use crate::hash::Hasher;
use crate::openapi::{operations, string_header};
use crate::store::Store;
use crate::telemetry::{metric, Handles};
use crate::validate::Validator;

/// A `201 Created` whose body holds a secret shown this once (a key, an
/// operator token, a webhook's signing secret): `Cache-Control: no-store`,
/// so no cache or proxy on the way keeps it.
pub struct ShownOnce<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ShownOnce<T> {
    fn into_response(self) -> Response {
        let no_store = [(axum::http::header::CACHE_CONTROL, "no-store")];
        (
            axum::http::StatusCode::CREATED,
            no_store,
            axum::Json(self.0),
        )
            .into_response()
    }
}

/// The request id header: the caller's, kept when [`plain_request_id`],
/// and echoed (else keyward's own).
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller request id kept.
pub const REQUEST_ID_MAX: usize = 64;

/// Whether a caller's request id is kept: 1 to [`REQUEST_ID_MAX`] of
/// `[A-Za-z0-9._:-]`. Any other is dropped whole (not echoed, logged or
/// stored), so a caller cannot make keyward write what it likes, or much.
pub fn plain_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_MAX).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(b))
}

/// A request's ids, in its extensions: keyward's own, always, and the
/// caller's when it was plain.
#[derive(Clone, Debug)]
pub struct RequestIdPair {
    pub own: HeaderValue,
    pub caller: Option<HeaderValue>,
}

impl RequestIdPair {
    /// The id echoed to the caller: its own when it sent a plain one.
    pub fn shown(&self) -> &HeaderValue {
        self.caller.as_ref().unwrap_or(&self.own)
    }

    fn of(req: &Request) -> Option<&Self> {
        req.extensions().get::<Self>()
    }
}

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares. Handed out as `AppState` (an `Arc`), so the
/// per-request clones axum makes are one reference count each.
pub struct App {
    /// The validation pipeline.
    pub validator: Validator,
    /// Redis, for admin calls and health checks.
    pub store: Store,
    /// The keys' Argon2id hasher, the validator's own (its cap, queue and
    /// cache): mint and rotate hash new secrets with it.
    pub hasher: Arc<Hasher>,
    /// Argon2id for operator tokens stored before digests, with capacity
    /// of its own (see `access`): never the keys' hasher.
    pub operator_hasher: Hasher,
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
    /// Forward auth: whether `X-Keyward-Cost` is honoured.
    pub auth_cost_header: bool,
    /// Forward auth: the headers that name the original request.
    pub auth_original_headers: crate::config::OriginalHeaders,
    /// Whether webhook endpoints may be internal addresses.
    pub webhook_allow_private: bool,
    /// The admin API's limits per caller, and its webhook quotas.
    pub limits: crate::limits::Limits,
}

pub type AppState = Arc<App>;

pub use serve::{serve, Listeners};

/// Every route with its operation, in the groups a configuration serves or
/// leaves out.
struct Routes {
    /// Served always.
    public: OpenApiRouter<AppState>,
    /// The admin API: only with an admin token; each call audited.
    admin: OpenApiRouter<AppState>,
    /// The console's page and assets: only with an admin token.
    console: OpenApiRouter<AppState>,
    /// `/metrics`: on the main listener, unless it has one of its own.
    metrics: OpenApiRouter<AppState>,
}

/// The one list of routes.
fn routes() -> Routes {
    let public = forward_auth()
        .routes(routes!(validate::validate_key))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::openapi));
    let mut admin = OpenApiRouter::default()
        .routes(routes!(admin::create_project))
        .routes(routes!(admin::get_project))
        .routes(routes!(admin::mint_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::get_key))
        .routes(routes!(admin::update_key))
        .routes(routes!(admin::rotate_key))
        .routes(routes!(admin::add_credits))
        .routes(routes!(admin::list_keys))
        .routes(routes!(admin::list_projects))
        .routes(routes!(activity::activity))
        .routes(routes!(usage::usage))
        .routes(routes!(operators::create_operator))
        .routes(routes!(operators::list_operators))
        .routes(routes!(operators::revoke_operator))
        .routes(routes!(operators::whoami))
        .routes(routes!(operators::catalog))
        .routes(routes!(operators::audit))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::deliveries));
    operations(admin.get_openapi_mut()).for_each(admin::common_responses);
    let mut console = OpenApiRouter::default()
        .routes(routes!(console::redirect))
        .routes(routes!(console::index))
        .routes(routes!(console::asset));
    operations(console.get_openapi_mut()).for_each(console::document_headers);
    Routes {
        public,
        admin,
        console,
        metrics: OpenApiRouter::default().routes(routes!(ops::metrics)),
    }
}

/// Forward auth's paths, and the suffix of their `operationId`s.
/// `/v1/auth/` too: Envoy's `path_prefix` turns a request for `/` into it,
/// and `{*path}` does not match an empty tail.
const AUTH_PATHS: [(&str, &str); 3] = [
    ("/v1/auth", ""),
    ("/v1/auth/", "_slash"),
    ("/v1/auth/{*path}", "_path"),
];

/// Methods `/v1/auth` is documented with: every method OpenAPI can name
/// (it answers any).
const AUTH_METHODS: [(HttpMethod, &str); 8] = [
    (HttpMethod::Get, "get"),
    (HttpMethod::Head, "head"),
    (HttpMethod::Post, "post"),
    (HttpMethod::Put, "put"),
    (HttpMethod::Patch, "patch"),
    (HttpMethod::Delete, "delete"),
    (HttpMethod::Options, "options"),
    (HttpMethod::Trace, "trace"),
];

/// `/v1/auth` answers any method at each of [`AUTH_PATHS`]. Its handler
/// documents it once, as `GET /v1/auth` (`routes!`'s GET-only method router
/// goes unused); that operation is copied to every method of
/// [`AUTH_METHODS`] at every path (`{*path}` is `{path}` in OpenAPI), each
/// copy with its own `operationId` (`GET /v1/auth` keeps `forward_auth`:
/// links name it), every response with `Cache-Control: no-store`, and a
/// `HEAD` answer without a body.
fn forward_auth() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::default();
    for (path, _) in AUTH_PATHS {
        router = router.route(path, any(auth::forward_auth));
    }
    let (schemas, paths, _) = routes!(auth::forward_auth);
    let Some(mut get) = paths.paths.into_values().find_map(|item| item.get) else {
        return router;
    };
    for param in get.parameters.iter_mut().flatten() {
        if param.name == "X-Keyward-Cost" {
            auth::document_cost(param);
        }
    }
    for response in get.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .insert("Cache-Control".into(), string_header("`no-store`"));
        }
    }
    let doc = router.get_openapi_mut();
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    for (path, suffix) in AUTH_PATHS {
        let mut item = PathItem::default();
        for (method, name) in AUTH_METHODS {
            let mut op = get.clone();
            op.operation_id = Some(if suffix.is_empty() && method == HttpMethod::Get {
                "forward_auth".into()
            } else {
                format!("forward_auth{suffix}_{name}")
            });
            if suffix == "_path" {
                op.parameters.get_or_insert_with(Vec::new).insert(
                    0,
                    ParameterBuilder::new()
                        .name("path")
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .description(Some(
                            "The original request's path after `/v1/auth/` (Envoy's \
                             `path_prefix`), written to the audit entry unless \
                             `X-Forwarded-Uri` or `X-Original-URI` is present",
                        ))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                );
            }
            if method == HttpMethod::Head {
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.content.clear();
                    }
                }
            }
            item.merge_operations(PathItem::new(method, op));
        }
        doc.paths.paths.insert(path.replace("{*", "{"), item);
    }
    router
}

/// The public router: the routes above, Envoy's gRPC `Authorization`
/// service (not an OpenAPI route), and `/metrics` unless `separate_metrics`.
pub fn router(state: AppState, separate_metrics: bool) -> Router {
    let Routes {
        public,
        admin,
        console,
        metrics,
    } = routes();
    let mut router: Router<AppState> =
        Router::from(public).route_service(ext_authz::PATH, ext_authz::service(state.clone()));
    if state.admin_token.is_some() {
        // `layer`, not `route_layer`: a wrong method on an admin route is
        // audited too, so its `405` is set before the layer goes on.
        let audited = Router::from(admin)
            .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
            .layer(middleware::from_fn_with_state(state.clone(), access::audit));
        router = router.merge(audited).merge(Router::from(console));
    }
    if !separate_metrics {
        router = router.merge(Router::from(metrics));
    }
    layered(router, state)
}

/// The router for a separate, private metrics listener.
pub fn metrics_router(state: AppState) -> Router {
    layered(routes().metrics.into(), state)
}

/// The OpenAPI document, as `/openapi.json` serves it: every route's
/// operation, whether this configuration serves the route or not.
pub fn openapi() -> Result<serde_json::Value, serde_json::Error> {
    let Routes {
        public,
        admin,
        console,
        metrics,
    } = routes();
    let all = public.merge(admin).merge(console).merge(metrics);
    crate::openapi::document(all.into_openapi())
}

fn layered(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
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
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    /// The process's.
    fn get() -> &'static Self {
        static IDS: OnceLock<RequestIds> = OnceLock::new();
        IDS.get_or_init(|| Self {
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(0),
        })
    }

    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{}-{n:x}", self.prefix))
            .unwrap_or(HeaderValue::from_static("-"))
    }
}

/// The per-request span. On the validation routes it is a DEBUG span, so at
/// the default INFO level it costs nothing there (`observe` names the
/// request id in its own error lines); admin and other routes keep an INFO
/// span whose fields every log line inside it carries.
fn request_span(req: &Request) -> tracing::Span {
    let ids = RequestIdPair::of(req);
    fn text(v: Option<&HeaderValue>) -> &str {
        v.and_then(|v| v.to_str().ok()).unwrap_or("-")
    }
    let id = text(ids.map(|i| &i.own));
    let caller_id = text(ids.and_then(|i| i.caller.as_ref()));
    // The path only (query strings may carry anything), and not all of it.
    let path = crate::audit::clip(req.uri().path(), crate::audit::FIELD_MAX);
    if path == "/v1/validate-key"
        || path.starts_with("/v1/auth")
        || path.starts_with("/envoy.service.auth.v3.Authorization/")
    {
        tracing::debug_span!("request", request_id = %id, caller_request_id = %caller_id, method = %req.method(), path = %path)
    } else {
        tracing::info_span!("request", request_id = %id, caller_request_id = %caller_id, method = %req.method(), path = %path)
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
        HTTP_IN_FLIGHT.with([], |g| g.increment(1.0));
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        HTTP_IN_FLIGHT.with([], |g| g.decrement(1.0));
    }
}

/// Every request's one middleware: its ids ([`RequestIdPair`]; the
/// caller's `X-Request-Id` is removed from the request whatever it was, and
/// the shown one echoed), its span ([`request_span`]), metrics by matched
/// route, the request deadline, and logging of the operator-only detail
/// that server errors carry.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let caller = req
        .headers_mut()
        .remove(&REQUEST_ID)
        .filter(|v| plain_request_id(v.as_bytes()));
    let ids = RequestIdPair {
        own: RequestIds::get().make(),
        caller,
    };
    let (own, shown) = (ids.own.clone(), ids.shown().clone());
    req.extensions_mut().insert(ids);
    let span = request_span(&req);
    let route = label(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = method_label(req.method());
    let deadline = tokio::time::timeout(state.request_timeout, next.run(req));
    let mut response = match deadline.instrument(span.clone()).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable("request deadline exceeded".into()).into_response(),
    };
    let status = response.status();
    let _entered = span.enter();
    let request_id = own.to_str().ok();
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(status = status.as_u16(), error = %detail, request_id, "request failed");
    } else if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), request_id, "request failed");
    } else if status.is_client_error() {
        tracing::debug!(status = status.as_u16(), "request rejected");
    }
    let status = label(status.as_str());
    HTTP_REQUESTS.with([route, method, status], |c| c.increment(1));
    let elapsed = started.elapsed().as_secs_f64();
    HTTP_DURATION.with([route], |h| h.record(elapsed));
    response.headers_mut().insert(REQUEST_ID, shown);
    response
}

static HTTP_REQUESTS: Handles<Counter, 3> =
    Handles::new(metric::HTTP_REQUESTS, ["route", "method", "status"]);
static HTTP_DURATION: Handles<Histogram, 1> = Handles::new(metric::HTTP_DURATION, ["route"]);
static HTTP_IN_FLIGHT: Handles<Gauge, 0> = Handles::new(metric::HTTP_IN_FLIGHT, []);
