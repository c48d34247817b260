//! `envoy.service.auth.v3.Authorization/Check`: Envoy's ext_authz over gRPC
//! (Istio's `envoyExtAuthzGrpc`, Envoy Gateway's `SecurityPolicy`), served on
//! the public listener beside the HTTP API (HTTP/2: h2c, or h2 by ALPN).
//!
//! A thin adapter around `/v1/auth`: the check request becomes the same
//! validation [`Request`], and the same answer ([`auth::answer`]) becomes
//! the `CheckResponse`. What differs is where the request's facts come
//! from: the client's address from Envoy's `source.address`, the method and
//! path from its `http` attributes, and the route's required scopes and
//! cost from `context_extensions`, which only Envoy's configuration can set.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue as EnvoyHeader, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;
use tonic::Code;

use super::{auth, AppState, BODY_LIMIT};
use crate::error::{ErrorDetail, Result};
use crate::validate::{Request, Validated};

/// Where the service is mounted: every method of it (`Check` is its one).
pub(super) const PATH: &str = "/envoy.service.auth.v3.Authorization/{*method}";

/// The route's scopes (comma-separated) and cost, in `context_extensions`.
const REQUIRED_SCOPES: &str = "context_extensions.required_scopes";
const COST: &str = "context_extensions.cost";

/// The gRPC service, to mount at [`PATH`].
pub(super) fn service(state: AppState) -> AuthorizationServer<ExtAuthz> {
    AuthorizationServer::new(ExtAuthz { state })
}

pub(super) struct ExtAuthz {
    state: AppState,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        let attributes = check.attributes.unwrap_or_default();
        let Some(http) = attributes.request.and_then(|r| r.http) else {
            return Err(tonic::Status::invalid_argument(
                "not an HTTP check request: attributes.request.http is missing",
            ));
        };
        let headers = header_map(&http);
        let uri = http.path.parse::<Uri>().unwrap_or_default();
        let result = validate(
            &self.state,
            &http,
            &headers,
            &uri,
            attributes.source.as_ref(),
            &attributes.context_extensions,
        )
        .await;
        let identity = result.as_ref().ok().map(identity);
        let answer = auth::answer(result);
        let response = match answer.status() {
            StatusCode::OK => allow(answer, identity, &headers, &uri, &self.state),
            _ => deny(answer).await,
        };
        Ok(tonic::Response::new(response))
    }
}

/// The check request's headers: Envoy's map (lower-case names, repeated
/// headers joined by commas), or its raw list with `encode_raw_headers`.
/// Pseudo-headers and names or values HTTP cannot carry are left out.
fn header_map(http: &HttpRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let raw = http.header_map.iter().flat_map(|m| &m.headers);
    let raw = raw.map(|h| (h.key.as_str(), h.raw_value.as_slice()));
    let joined = http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
    for (name, value) in raw.chain(joined) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Runs the pipeline on what Envoy says of the request.
async fn validate(
    state: &AppState,
    http: &HttpRequest,
    headers: &HeaderMap,
    uri: &Uri,
    source: Option<&Peer>,
    extensions: &HashMap<String, String>,
) -> Result<Validated> {
    let required = extensions.get("required_scopes").map_or("", String::as_str);
    let required_scopes = auth::parse_scopes(REQUIRED_SCOPES, required)?;
    let cost = match extensions.get("cost") {
        Some(text) => auth::parse_cost(COST, text)?,
        None => 1,
    };
    // Envoy's own view of the peer first; a header only without one.
    let client_ip = match source_ip(source) {
        Some(ip) => Some(ip),
        None => auth::client_ip(headers, &state.client_ip_header)?,
    };
    let request = Request {
        api_key: auth::presented_key(headers, uri, state.auth_query_param.as_deref()),
        required_scopes: &required_scopes,
        client_ip,
        origin: Some(auth::audited(&http.method, &http.path)),
        cost,
    };
    state.validator.validate(&request).await
}

/// The downstream peer's address, as Envoy computed it.
fn source_ip(source: Option<&Peer>) -> Option<IpAddr> {
    match source?.address.as_ref()?.address.as_ref()? {
        Address::SocketAddress(socket) => socket.address.parse().ok(),
        _ => None,
    }
}

/// The identity, as the filter's dynamic metadata (for access logs and the
/// filters after it).
fn identity(v: &Validated) -> Struct {
    let fields = [
        ("project_id", &v.project_id),
        ("key_id", &v.key_id),
        ("owner", &v.owner),
        ("server_name", &v.server_name),
    ];
    let string = |s: &String| Value {
        kind: Some(Kind::StringValue(s.clone())),
    };
    Struct {
        fields: fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), string(value)))
            .collect(),
    }
}

fn option(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// OK: `/v1/auth`'s `X-Keyward-*` headers to the upstream (replacing the
/// client's of the same name), its `X-RateLimit-*` to the client; the key's
/// header, its query parameter and every other `x-keyward-*` the client
/// sent removed, so the upstream sees keyward's identity and never the key.
fn allow(
    answer: Response,
    identity: Option<Struct>,
    sent: &HeaderMap,
    uri: &Uri,
    state: &AppState,
) -> CheckResponse {
    let mut ok = OkHttpResponse::default();
    let ours = answer.headers();
    for (name, value) in ours {
        match name.as_str() {
            n if n.starts_with("x-keyward-") => ok.headers.push(option(name, value)),
            n if n.starts_with("x-ratelimit-") => {
                ok.response_headers_to_add.push(option(name, value))
            }
            _ => {}
        }
    }
    // Envoy removes after it sets: never name a header set above.
    let keyed = |name: &str| match name {
        "x-api-key" => true,
        "authorization" => auth::bearer(sent).is_some(),
        other => other.starts_with("x-keyward-") && !ours.contains_key(other),
    };
    ok.headers_to_remove = sent
        .keys()
        .map(HeaderName::as_str)
        .filter(|name| keyed(name))
        .map(str::to_owned)
        .collect();
    if let Some(param) = state.auth_query_param.as_deref() {
        if auth::query_key(uri, param).is_some() {
            ok.query_parameters_to_remove.push(param.to_owned());
        }
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: Code::Ok as i32,
            ..Default::default()
        }),
        dynamic_metadata: identity,
        http_response: Some(HttpResponse::OkResponse(ok)),
    }
}

/// Denied: `/v1/auth`'s status, headers and body, for Envoy to send the
/// client as they are; the gRPC status says the kind of refusal.
async fn deny(answer: Response) -> CheckResponse {
    let (parts, body) = answer.into_parts();
    if let Some(ErrorDetail(detail)) = parts.extensions.get::<ErrorDetail>() {
        tracing::error!(status = parts.status.as_u16(), error = %detail, "check failed");
    }
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let code = match parts.status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        _ => Code::PermissionDenied,
    };
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(parts.status.as_u16()),
        }),
        headers: parts.headers.iter().map(|(n, v)| option(n, v)).collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            ..Default::default()
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(denied)),
    }
}
