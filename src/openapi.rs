//! The OpenAPI 3.1 document served at `GET /openapi.json`, assembled from
//! what the router collected.
//!
//! `http` declares each route once, with its operation (`#[utoipa::path]` on
//! the handler: method, path, parameters, every status it answers with,
//! headers), through `utoipa-axum`'s `routes!`, and the wire types derive
//! `ToSchema`, so the document is built from the routes served and the types
//! the handlers serialize. [`document`] adds only what belongs to the
//! document as a whole: the info, the tags, the reusable error responses (from
//! `error.rs`), the security schemes, `X-Request-Id` on every response (the
//! request-id layer sets it on all of them), and utoipa's spelling of link
//! fields mended. Nothing here imports `http`.
//!
//! `tests/api/openapi.rs` checks the document with `openapi-spec-validator`
//! and runs `schemathesis` against a live keyward.

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi as Document, RefOr, Response, Type};
use utoipa::OpenApi;

use crate::error::{
    AdminLimitedResponse, InsufficientPermissionResponse, InsufficientScopeResponse,
    InvalidKeyResponse, InvalidRequestResponse, MethodNotAllowedResponse, PayloadTooLargeResponse,
    RateLimitedResponse, UnauthorizedResponse, UnavailableResponse,
};

/// A string type that exists for the document alone: an id's pattern and
/// an example, named `$component`, for parameters (`value_type`,
/// `inline(...)`) and fields (`schema_with = <type>::schema`). The pattern
/// is the constant the code validates with, so the two cannot drift.
macro_rules! pattern_doc {
    ($(#[$doc:meta])* $name:ident = $component:literal, $pattern:expr, $example:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            /// The schema, for `#[schema(schema_with = ...)]`.
            pub fn schema() -> utoipa::openapi::Schema {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some($pattern))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                $name::schema().into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                $component.into()
            }
        }
    };
}
pub(crate) use pattern_doc;

/// The security scheme name of the admin bearer token.
pub const ADMIN_TOKEN: &str = "admin_token";

/// What the document says besides its operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "API-key validation for API gateways, on Redis Stack.\n\n\
            Validation: `POST /v1/validate-key`, and forward auth for gateways at `/v1/auth` \
            (any method; the key in `Authorization: Bearer` or `X-API-Key`).\n\n\
            The admin API (`/v1/admin/*`, `/v1/mint-key`, `/v1/get-key`, `/v1/update-key`, \
            `/v1/rotate-key`, `/v1/revoke-key`, `/v1/list-keys`, `/v1/add-credits`, `/v1/activity`) and the \
            admin console (`/admin/`) exist only when the service runs with `KEYWARD_ADMIN_TOKEN` \
            set; otherwise every one of their routes answers `404 not_found`. They take \
            `Authorization: Bearer <token>`: `KEYWARD_ADMIN_TOKEN` (the break-glass owner, actor \
            `root`) or an operator's token (`kwop.<operator_id>.<secret>`, from \
            `POST /v1/admin/operators`). An operator's role (`viewer`, `key_manager`, \
            `project_admin`, `owner`, each including the one before) and project list decide \
            what it may do: a project outside its list answers exactly as one that does not \
            exist (the route's `404`), and an action its role does not allow within its \
            projects is `403 insufficient_permission`. Every admin call, allowed or refused, \
            leaves one entry in the admin audit trail (`GET /v1/admin/audit`).\n\n\
            Every error has the body `{\"error\": {\"code\", \"message\"}}`; every response \
            carries `X-Request-Id` (the caller's, or a new one). A path that exists answers \
            other methods with `405 method_not_allowed`, and an unknown path is \
            `404 not_found`. keyward writes integers without a fraction (`1`, not `1.0`), and \
            takes them so in query strings; in JSON request bodies either spelling is taken.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(responses(
        InvalidRequestResponse,
        PayloadTooLargeResponse,
        InvalidKeyResponse,
        InsufficientScopeResponse,
        RateLimitedResponse,
        UnauthorizedResponse,
        InsufficientPermissionResponse,
        MethodNotAllowedResponse,
        AdminLimitedResponse,
        UnavailableResponse,
    )),
    tags(
        (name = "validation", description = "Is this key valid, for what, and for whom?"),
        (name = "admin", description = "Projects and keys. Only with an admin token configured."),
        (name = "operators", description = "Operators, `whoami` and the admin audit trail. Only with an admin token configured."),
        (name = "webhooks", description = "Signed event delivery (Standard Webhooks) for key changes and anomalies. Only with an admin token configured."),
        (name = "ops", description = "Health, readiness, metrics and this document."),
        (name = "console", description = "The admin console's page and assets. Only with an admin token configured."),
    )
)]
struct ApiDoc;

/// The document of the operations `routes` collected, as JSON.
pub fn document(routes: Document) -> Result<serde_json::Value, serde_json::Error> {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes);
    add_security_schemes(&mut doc);
    // Every response carries X-Request-Id; the reusable ones too.
    let components = doc.components.get_or_insert_with(Default::default);
    for response in components.responses.values_mut() {
        if let RefOr::T(response) = response {
            add_request_id(response);
        }
    }
    for op in operations(&mut doc) {
        for response in op.responses.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_request_id(response);
            }
        }
    }

    let mut doc = serde_json::to_value(doc)?;
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

/// The admin bearer scheme, and the API-key schemes of `/v1/auth`.
fn add_security_schemes(doc: &mut Document) {
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
}

fn add_request_id(response: &mut Response) {
    response.headers.insert(
        "X-Request-Id".into(),
        string_header(
            "The request's id: the caller's `X-Request-Id` when it is 1 to 64 of \
             `[A-Za-z0-9._:-]`, else keyward's own (a caller's id of any other shape is kept \
             nowhere)",
        ),
    );
}

/// A response header whose value is a string.
pub(crate) fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// Every operation of `doc`, of every path and method.
pub(crate) fn operations(doc: &mut Document) -> impl Iterator<Item = &mut Operation> {
    doc.paths
        .paths
        .values_mut()
        .flat_map(|item: &mut PathItem| {
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
        })
}
