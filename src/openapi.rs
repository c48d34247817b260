//! The OpenAPI 3.1 document, generated from the code and served at
//! `GET /openapi.json`.
//!
//! Each handler in `http/` carries its operation (`#[utoipa::path]`: method,
//! path, parameters, every status it can answer with, headers), and the wire
//! types derive `ToSchema`, so the document is built from the same types the
//! handlers serialize. This file only assembles them: the info, the security
//! scheme, the reusable error responses, and a few things the macros cannot
//! say (see [`Finish`]): `/v1/auth` answers every method at three paths, and
//! every response carries `X-Request-Id`. [`json`] also mends utoipa's
//! spelling of link fields.
//!
//! `tests/api/openapi.rs` checks the document with `openapi-spec-validator`
//! and runs `schemathesis` against a live keyward, and checks that it lists
//! every route `http::router` serves.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ObjectBuilder, OpenApi as Document, Ref, RefOr, Required, Response as Resp, Type,
};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::{Error, ErrorBody};
use crate::http::{activity, admin, auth, console, ops, validate};

/// The security scheme name of the admin bearer token.
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "API-key validation for API gateways, on Redis Stack.\n\n\
            Validation: `POST /v1/validate-key`, and forward auth for gateways at `/v1/auth` \
            (any method; the key in `Authorization: Bearer` or `X-API-Key`).\n\n\
            The admin API (`/v1/admin/*`, `/v1/mint-key`, `/v1/get-key`, `/v1/update-key`, \
            `/v1/rotate-key`, `/v1/revoke-key`, `/v1/list-keys`, `/v1/activity`) and the \
            admin console (`/admin/`) exist only when the service runs with `KEYWARD_ADMIN_TOKEN` \
            set; otherwise every one of their routes answers `404 not_found`. They take \
            `Authorization: Bearer <admin token>`.\n\n\
            Every error has the body `{\"error\": {\"code\", \"message\"}}`; every response \
            carries `X-Request-Id` (the caller's, or a new one). A path that exists answers \
            other methods with `405 method_not_allowed`, and an unknown path is \
            `404 not_found`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        validate::validate_key,
        auth::forward_auth,
        ops::health,
        ops::ready,
        ops::metrics,
        serve,
        admin::create_project,
        admin::get_project,
        admin::mint_key,
        admin::get_key,
        admin::update_key,
        admin::rotate_key,
        admin::revoke_key,
        admin::list_keys,
        activity::activity,
        console::redirect,
        console::index,
        console::asset,
    ),
    components(responses(
        InvalidRequest,
        PayloadTooLarge,
        InvalidKey,
        InsufficientScope,
        RateLimited,
        Unauthorized,
        MethodNotAllowed,
        Unavailable,
    )),
    modifiers(&Finish),
    tags(
        (name = "validation", description = "Is this key valid, for what, and for whom?"),
        (name = "admin", description = "Projects and keys. Only with an admin token configured."),
        (name = "ops", description = "Health, readiness, metrics and this document."),
        (name = "console", description = "The admin console's page and assets. Only with an admin token configured."),
    )
)]
pub struct ApiDoc;

/// The document as JSON, as served.
pub fn json() -> Result<serde_json::Value, serde_json::Error> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for item in paths.values_mut().filter_map(|i| i.as_object_mut()) {
            for op in item.values_mut() {
                let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
                for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                    let links = response.get_mut("links").and_then(|l| l.as_object_mut());
                    for link in links.into_iter().flat_map(|l| l.values_mut()) {
                        camel_case_link(link);
                    }
                }
            }
        }
    }
    Ok(doc)
}

/// utoipa 5 serializes a Link Object's fields in snake case
/// (`operation_id`, `request_body`); OpenAPI spells them `operationId`,
/// `operationRef` and `requestBody`.
fn camel_case_link(link: &mut serde_json::Value) {
    let Some(link) = link.as_object_mut() else {
        return;
    };
    for (from, to) in [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ] {
        if let Some(value) = link.remove(from) {
            link.insert(to.into(), value);
        }
    }
}

/// The served bytes, built once.
static JSON: LazyLock<Result<String, String>> = LazyLock::new(|| {
    json()
        .and_then(|doc| serde_json::to_string(&doc))
        .map_err(|e| e.to_string())
});

/// `GET /openapi.json`: this document. No authentication: it holds no secret.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this service", content_type = "application/json", body = Object),
        (status = 405, response = MethodNotAllowed),
    )
)]
pub async fn serve() -> Response {
    match &*JSON {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        Err(e) => Error::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

// Reusable error responses. Each wraps `ErrorBody`; the description says
// which codes it carries.

/// `invalid_request`: the body, query or a header is not what the endpoint
/// takes (unknown fields, wrong types, values out of range, a body that is
/// not JSON).
#[derive(ToResponse)]
pub struct InvalidRequest(#[allow(dead_code)] ErrorBody);

/// `payload_too_large`: the body is over 64 KiB.
#[derive(ToResponse)]
pub struct PayloadTooLarge(#[allow(dead_code)] ErrorBody);

/// `invalid_key`: malformed, unknown, wrong secret, disabled, expired,
/// outside the key's networks, unreadable, or of a project this deployment
/// may not read. The answer never says which; the audit entry does.
#[derive(ToResponse)]
#[response(headers(
    ("WWW-Authenticate" = String, description = "`Bearer realm=\"keyward\"`"),
))]
pub struct InvalidKey(#[allow(dead_code)] ErrorBody);

/// `insufficient_scope`: the key is valid but lacks a scope the request
/// requires (does not count against the rate limit).
#[derive(ToResponse)]
#[response(headers(
    ("WWW-Authenticate" = String, description = "`Bearer error=\"insufficient_scope\", scope=\"<required scopes>\"`"),
))]
pub struct InsufficientScope(#[allow(dead_code)] ErrorBody);

/// `rate_limited`: the key is over its per-minute limit.
#[derive(ToResponse)]
#[response(headers(
    ("Retry-After" = u64, description = "Seconds until the key's window resets"),
    ("X-RateLimit-Limit" = u64, description = "The key's validations per minute"),
    ("X-RateLimit-Remaining" = u64, description = "Always 0 here"),
    ("X-RateLimit-Reset" = u64, description = "Seconds until the window resets"),
))]
pub struct RateLimited(#[allow(dead_code)] ErrorBody);

/// `unauthorized`: the admin bearer token is missing or wrong.
#[derive(ToResponse)]
#[response(headers(
    ("WWW-Authenticate" = String, description = "`Bearer`"),
))]
pub struct Unauthorized(#[allow(dead_code)] ErrorBody);

/// `method_not_allowed`: this path answers other methods only.
#[derive(ToResponse)]
#[response(headers(
    ("Allow" = String, description = "The methods this path answers"),
))]
pub struct MethodNotAllowed(#[allow(dead_code)] ErrorBody);

/// `unavailable`: Redis cannot answer (the service fails closed), or the
/// request took longer than its deadline; `busy`: too many first-time
/// Argon2id verifications are queued.
#[derive(ToResponse)]
#[response(headers(
    ("Retry-After" = u64, description = "Seconds to wait before retrying (1)"),
))]
pub struct Unavailable(#[allow(dead_code)] ErrorBody);

/// Methods `/v1/auth` is documented with (it answers any).
const AUTH_METHODS: [(HttpMethod, &str); 7] = [
    (HttpMethod::Get, "get"),
    (HttpMethod::Head, "head"),
    (HttpMethod::Post, "post"),
    (HttpMethod::Put, "put"),
    (HttpMethod::Patch, "patch"),
    (HttpMethod::Delete, "delete"),
    (HttpMethod::Options, "options"),
];

/// What the derive cannot say:
///
/// - the admin bearer security scheme, and the API-key schemes of `/v1/auth`;
/// - `/v1/auth` answers every method, at `/v1/auth`, `/v1/auth/` and
///   `/v1/auth/{path}`: one handler, documented once (as `GET /v1/auth`) and
///   copied here to the other methods and paths, each with its own
///   `operationId`; every response of it carries `Cache-Control: no-store`,
///   and a `HEAD` answer has no body;
/// - every response carries `X-Request-Id`;
/// - every admin operation (tag `admin`) may also answer 401, 405 and 503;
/// - every console response (tag `console`) carries its security headers
///   (`console::SECURITY_HEADERS`), but for the shared 405.
pub struct Finish;

/// What every admin operation may answer besides its own statuses.
const ADMIN_RESPONSES: [(&str, &str); 3] = [
    ("401", "Unauthorized"),
    ("405", "MethodNotAllowed"),
    ("503", "Unavailable"),
];

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`KEYWARD_ADMIN_TOKEN`): `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, `sk-proj.<project_id>.<key_id>.<secret>`, as `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key in `X-API-Key` (read when there is no `Authorization: Bearer`)",
            ))),
        );

        // Every response carries X-Request-Id; the reusable ones too.
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_request_id(response);
            }
        }
        let reusable = components.responses.clone();
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let tagged = |tag: &str| op.tags.iter().flatten().any(|t| t == tag);
                let (admin, console) = (tagged("admin"), tagged("console"));
                if admin {
                    for (status, name) in ADMIN_RESPONSES {
                        op.responses
                            .responses
                            .entry(status.into())
                            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                    }
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        add_request_id(response);
                        if console {
                            add_console_headers(response);
                        }
                    }
                }
            }
        }

        // `/v1/auth`: every method, three paths.
        let Some(get) = doc
            .paths
            .paths
            .get("/v1/auth")
            .and_then(|item| item.get.clone())
        else {
            return;
        };
        let mut get = get;
        // Inline the reusable responses, to add Cache-Control to each.
        for response in get.responses.responses.values_mut() {
            if let RefOr::Ref(r) = response {
                let name = r.ref_location.rsplit('/').next().unwrap_or_default();
                if let Some(RefOr::T(found)) = reusable.get(name) {
                    *response = RefOr::T(found.clone());
                }
            }
            if let RefOr::T(response) = response {
                response.headers.insert(
                    "Cache-Control".into(),
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("`no-store`"))
                        .build(),
                );
            }
        }
        for (path, suffix) in [
            ("/v1/auth", ""),
            ("/v1/auth/", "_slash"),
            ("/v1/auth/{path}", "_path"),
        ] {
            let mut item = PathItem::default();
            for (method, name) in AUTH_METHODS {
                let mut op = get.clone();
                // `GET /v1/auth` keeps the handler's id (links name it).
                if suffix.is_empty() && method == HttpMethod::Get {
                    op.operation_id = Some("forward_auth".into());
                } else {
                    op.operation_id = Some(format!("forward_auth{suffix}_{name}"));
                }
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
                set(&mut item, method, op);
            }
            doc.paths.paths.insert(path.into(), item);
        }
    }
}

fn add_request_id(response: &mut Resp) {
    response.headers.insert(
        "X-Request-Id".into(),
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The request's id: the caller's `X-Request-Id`, or a new one",
            ))
            .build(),
    );
}

fn add_console_headers(response: &mut Resp) {
    for (name, _, description) in console::SECURITY_HEADERS {
        response.headers.insert(
            name.into(),
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build(),
        );
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn set(item: &mut PathItem, method: HttpMethod, op: Operation) {
    let slot = match method {
        HttpMethod::Get => &mut item.get,
        HttpMethod::Head => &mut item.head,
        HttpMethod::Post => &mut item.post,
        HttpMethod::Put => &mut item.put,
        HttpMethod::Patch => &mut item.patch,
        HttpMethod::Delete => &mut item.delete,
        HttpMethod::Options => &mut item.options,
        HttpMethod::Trace => &mut item.trace,
    };
    *slot = Some(op);
}

/// `/health` and `/ready`'s answer.
#[derive(utoipa::ToSchema)]
pub struct Status {
    /// `ok` (`/health`) or `ready` (`/ready`).
    #[allow(dead_code)]
    status: String,
}

/// `POST /v1/revoke-key`'s answer.
#[derive(utoipa::ToSchema)]
pub struct Revoked {
    /// Always `true`.
    #[allow(dead_code)]
    revoked: bool,
}
