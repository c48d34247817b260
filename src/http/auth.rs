//! `/v1/auth` and `/v1/auth/{*path}`: forward auth for gateways (nginx
//! `auth_request`, Envoy `ext_authz`, Caddy `forward_auth`, Traefik
//! `ForwardAuth`). Translates the gateway's request into a validation
//! [`Request`] and the outcome into a status and headers; never reads a body.

use std::net::{IpAddr, SocketAddr};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::AppState;
use crate::config::OriginalHeaders;
use crate::error::{Error, Result};
use crate::scope;
use crate::store::Origin;
use crate::validate::{Request, Validated};

/// Header values are sent as visible ASCII: everything else (and `%` itself)
/// is percent-encoded.
const NOT_VISIBLE: &AsciiSet = &CONTROLS.add(b' ').add(b'%');
/// `X-Keyward-Metadata` is left out when the metadata's JSON is larger.
const MAX_METADATA_BYTES: usize = 4096;
/// Audit entries keep at most this much of the original path.
const MAX_AUDIT_PATH: usize = 256;

const REQUIRED_SCOPES: &str = "X-Keyward-Required-Scopes";
const COST: &str = "X-Keyward-Cost";

/// The value of the header `name`, if sent. A header that says what a
/// request needs is never read as absent: sent twice, or with a byte
/// outside visible ASCII, it is a 422.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidRequest(format!("{name}: must be sent once")));
    }
    match value.to_str() {
        Ok(text) => Ok(Some(text)),
        Err(_) => Err(Error::InvalidRequest(format!(
            "{name}: must be visible ASCII"
        ))),
    }
}

/// `X-Keyward-Cost`: `plan::parse_cost` (the document's pattern);
/// absent, or not `honoured` (`KEYWARD_AUTH_COST_HEADER`): 1. A malformed
/// or repeated value is a 422 either way.
fn cost(headers: &HeaderMap, honoured: bool) -> Result<u64> {
    let Some(text) = single(headers, COST)? else {
        return Ok(1);
    };
    let cost = parse_cost(COST, text)?;
    Ok(if honoured { cost } else { 1 })
}

/// A cost as `name` states it (`plan::parse_cost`); anything else is a
/// 422 naming `name`.
pub(super) fn parse_cost(name: &str, text: &str) -> Result<u64> {
    crate::plan::parse_cost(text).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{name}: must be an integer from 0 to {}",
            crate::plan::MAX_COST
        ))
    })
}

/// `X-Keyward-Cost`'s pattern and range in the document, from
/// `plan::MAX_COST`.
pub(super) fn document_cost(param: &mut utoipa::openapi::path::Parameter) {
    use utoipa::openapi::{ObjectBuilder, Type};
    param.schema = Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(crate::plan::cost_pattern()))
            .into(),
    );
    if let Some(description) = &mut param.description {
        *description = description.replace("MAX_COST", &crate::plan::MAX_COST.to_string());
    }
}

/// Required scopes as `name` states them, comma-separated; a malformed item
/// is a 422 naming `name`, never "nothing required".
pub(super) fn parse_scopes(name: &str, text: &str) -> Result<Vec<String>> {
    scope::parse_list(text).map_err(|i| {
        Error::InvalidRequest(format!(
            "{name}: item {} is not a scope of [A-Za-z0-9_.:/*-]",
            i + 1
        ))
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Authorization: Bearer <key>`, else `X-API-Key`, else (only when
/// configured) a query parameter; `""` when there is none.
pub(super) fn presented_key<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    query_param: Option<&str>,
) -> &'a str {
    bearer(headers)
        .or_else(|| header_str(headers, "x-api-key").map(str::trim))
        .or_else(|| query_key(uri, query_param?))
        .unwrap_or("")
}

/// The key of `Authorization: Bearer <key>`, when it is sent that way.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// The value of the query parameter `name`, if the URI has one.
pub(super) fn query_key<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The right-most address in the configured header: the one the gateway
/// itself saw (earlier entries are whatever the client claimed). Its last
/// line with a byte outside visible ASCII is a 422, never skipped for an
/// earlier, client-supplied one; a right-most entry that is no address is
/// no address (`None`).
pub(super) fn client_ip(headers: &HeaderMap, name: &HeaderName) -> Result<Option<IpAddr>> {
    let Some(line) = headers.get_all(name).iter().next_back() else {
        return Ok(None);
    };
    let line = line.to_str().map_err(|_| {
        Error::InvalidRequest(format!("{name}: its last line must be visible ASCII"))
    })?;
    let last = line.rsplit(',').next().unwrap_or_default().trim();
    Ok(last
        .parse::<IpAddr>()
        .or_else(|_| last.parse::<SocketAddr>().map(|a| a.ip()))
        .ok())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The request the gateway is asking about, from the headers `trusted`
/// names (`KEYWARD_AUTH_ORIGINAL_HEADERS`; no others) or, without them, from
/// our own method and path (Envoy's `path_prefix`).
fn origin<'a>(
    headers: &'a HeaderMap,
    method: &'a Method,
    uri: &'a Uri,
    trusted: OriginalHeaders,
) -> Origin<'a> {
    let (method_header, uri_header) = match trusted {
        OriginalHeaders::XForwarded => ("x-forwarded-method", "x-forwarded-uri"),
        OriginalHeaders::XOriginal => ("x-original-method", "x-original-uri"),
        OriginalHeaders::Envoy => ("", ""),
    };
    let read = |name: &str| match name {
        "" => None,
        name => header_str(headers, name),
    };
    let method = read(method_header).unwrap_or(method.as_str());
    let path = read(uri_header).unwrap_or_else(|| match uri.path().strip_prefix("/v1/auth") {
        Some("") | None => "/",
        Some(rest) => rest,
    });
    audited(method, path)
}

/// The audit entry's view of the original request: its method, and its
/// path without the query string, both cut to size.
pub(super) fn audited<'a>(method: &'a str, path: &'a str) -> Origin<'a> {
    let path = path.split('?').next().unwrap_or_default();
    Origin {
        method: cut(method, 16),
        path: cut(path, MAX_AUDIT_PATH),
    }
}

/// Forward auth for gateways.
///
/// "May this request through?" for nginx `auth_request`, Envoy `ext_authz`,
/// Caddy `forward_auth` and Traefik `ForwardAuth`. Answers any method, at
/// `/v1/auth`, `/v1/auth/` and `/v1/auth/{path}`; the body is never read. The
/// same pipeline as `POST /v1/validate-key`. The key comes from
/// `Authorization: Bearer`, else `X-API-Key`, else (only when
/// `KEYWARD_AUTH_QUERY_PARAM` names one) a query parameter; no key is `401`.
/// Header values of the identity headers are visible ASCII: any other byte
/// and `%` are percent-encoded as UTF-8.
#[utoipa::path(
    get,
    path = "/v1/auth",
    tag = "validation",
    operation_id = "forward_auth",
    params(
        ("X-Keyward-Required-Scopes" = Option<String>, Header, pattern = "^(?:[ \\t,]*(?:[A-Za-z0-9_.:/*-]{1,128}(?:[ \\t]*,[ \\t,]*[A-Za-z0-9_.:/*-]{1,128}){0,63}[ \\t,]*)?)$", description = "Scopes the route requires, comma-separated (spaces around items and empty items are ignored; at most 64 scopes of 1 to 128 characters of `[A-Za-z0-9_.:/*-]`); every one must be granted. A malformed value, a byte outside visible ASCII, or the header sent twice is 422"),
        ("X-Keyward-Cost" = Option<String>, Header, nullable = false, description = "What the request weighs, 0 to MAX_COST (default 1): each of the key's windows and its credits are spent by it; 0 checks everything and spends nothing. Honoured only with `KEYWARD_AUTH_COST_HEADER=true` (the gateway must then set or remove it on every request); otherwise a well-formed value is ignored (cost 1). A malformed value, or the header sent twice, is 422 either way"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "The original request's method, for the audit entry; read only with `KEYWARD_AUTH_ORIGINAL_HEADERS=x-forwarded` (the default: Caddy, Traefik, Kong)"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original request's URI; its path is audited; read only with `KEYWARD_AUTH_ORIGINAL_HEADERS=x-forwarded`"),
        ("X-Original-Method" = Option<String>, Header, description = "The original request's method; read only with `KEYWARD_AUTH_ORIGINAL_HEADERS=x-original` (nginx recipe)"),
        ("X-Original-URI" = Option<String>, Header, description = "The original request's URI; read only with `KEYWARD_AUTH_ORIGINAL_HEADERS=x-original`"),
        ("X-Forwarded-For" = Option<String>, Header, description = "The client's address is its right-most entry (the header is `KEYWARD_CLIENT_IP_HEADER`), for keys bound to networks; a last line with a byte outside visible ASCII is 422"),
    ),
    security(("api_key_bearer" = []), ("api_key_header" = [])),
    responses(
        (status = 200, description = "Allow: empty body, and identity headers for the gateway to copy upstream", headers(
            ("X-Keyward-Project-Id" = String, description = "The key's project"),
            ("X-Keyward-Key-Id" = String, description = "The key's id"),
            ("X-Keyward-Owner" = String, description = "The key's owner"),
            ("X-Keyward-Server-Name" = String, description = "The key's server name"),
            ("X-Keyward-Scopes" = String, description = "The key's scopes, comma-separated (empty for none)"),
            ("X-Keyward-Metadata" = String, description = "The key's metadata as JSON, base64url without padding; absent when null or over 4 KiB"),
            ("X-RateLimit-Limit" = u64, description = "The limit of the key's window nearest to exhaustion (its minute's, or one of its `limits`)"),
            ("X-RateLimit-Remaining" = u64, description = "What is left in that window"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until that window resets"),
            ("X-Keyward-Credits-Remaining" = i64, description = "The key's credits left after this request; absent when unlimited"),
            ("X-Keyward-Failsafe" = String, description = "`open`: accepted under `KEYWARD_FAILSAFE=open` without a complete check, because Redis did not answer a read a pass needs or did not take its audit entry (no read refused the key); not audited, and no `X-RateLimit-*` headers"),
        )),
        (status = 401, response = inline(crate::error::InvalidKeyResponse)),
        (status = 403, response = inline(crate::error::InsufficientScopeResponse)),
        (status = 422, description = "`invalid_request`: a malformed or repeated `X-Keyward-Required-Scopes` or `X-Keyward-Cost`, or a last client-address line that is not visible ASCII", body = crate::error::ErrorBody),
        (status = 429, response = inline(crate::error::RateLimitedResponse)),
        (status = 503, response = inline(crate::error::UnavailableResponse)),
    )
)]
pub async fn forward_auth(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(check(&state, &method, &uri, &headers).await)
}

/// Forward auth's answer to a validation: 200 with the identity headers,
/// or the error's status, headers and body; never cached. The gRPC
/// `Authorization/Check` answers from this same response.
pub(super) fn answer(result: Result<Validated>) -> Response {
    let mut response = match result {
        Ok(validated) => allow(&validated),
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn check(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Validated> {
    let required = single(headers, REQUIRED_SCOPES)?.unwrap_or_default();
    let required_scopes = parse_scopes(REQUIRED_SCOPES, required)?;
    let request = Request {
        api_key: presented_key(headers, uri, state.auth_query_param.as_deref()),
        required_scopes: &required_scopes,
        client_ip: client_ip(headers, &state.client_ip_header)?,
        origin: Some(origin(headers, method, uri, state.auth_original_headers)),
        cost: cost(headers, state.auth_cost_header)?,
    };
    state.validator.validate(&request).await
}

fn encoded(value: &str) -> HeaderValue {
    let value = utf8_percent_encode(value, NOT_VISIBLE).to_string();
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 200, empty body, the identity headers a gateway copies upstream.
fn allow(v: &Validated) -> Response {
    let mut response = ().into_response();
    let headers = response.headers_mut();
    headers.insert("x-keyward-project-id", encoded(&v.project_id));
    headers.insert("x-keyward-key-id", encoded(&v.key_id));
    headers.insert("x-keyward-owner", encoded(&v.owner));
    headers.insert("x-keyward-server-name", encoded(&v.server_name));
    headers.insert("x-keyward-scopes", encoded(&v.scopes.join(",")));
    if !v.metadata.is_null() {
        let json = serde_json::to_vec(&v.metadata).unwrap_or_default();
        if json.len() <= MAX_METADATA_BYTES {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
            headers.insert("x-keyward-metadata", encoded(&b64));
        }
    }
    super::validate::rate_headers(headers, v);
    if let Some(credits) = v.credits_remaining {
        headers.insert("x-keyward-credits-remaining", HeaderValue::from(credits));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_key_comes_from_bearer_then_x_api_key_then_a_configured_query_parameter() {
        let uri: Uri = "/v1/auth/x?api_key=Q&b=1".parse().unwrap();
        let both = headers(&[("authorization", "Bearer B"), ("x-api-key", "X")]);
        assert_eq!(presented_key(&both, &uri, None), "B");
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  B ")]), &uri, None),
            "B"
        );
        assert_eq!(
            presented_key(
                &headers(&[("authorization", "Basic B"), ("x-api-key", "X")]),
                &uri,
                None
            ),
            "X"
        );
        assert_eq!(presented_key(&HeaderMap::new(), &uri, None), "");
        assert_eq!(presented_key(&HeaderMap::new(), &uri, Some("api_key")), "Q");
    }

    #[test]
    fn the_client_address_is_the_right_most_forwarded_entry() {
        let xff = HeaderName::from_static("x-forwarded-for");
        let ip = |h: &HeaderMap| client_ip(h, &xff).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "10.0.0.1, 2001:db8::1"),
        ]);
        assert_eq!(ip(&h), "2001:db8::1".parse().ok());
        let h = headers(&[("x-forwarded-for", "10.0.0.1:5000")]);
        assert_eq!(ip(&h), "10.0.0.1".parse().ok());
        assert_eq!(ip(&headers(&[("x-forwarded-for", "nonsense")])), None);
        assert_eq!(ip(&HeaderMap::new()), None);
    }

    #[test]
    fn a_last_address_line_that_is_not_ascii_is_refused_not_skipped() {
        let xff = HeaderName::from_static("x-forwarded-for");
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"10.0.0.1\xff").unwrap(),
        );
        assert!(matches!(
            client_ip(&h, &xff),
            Err(Error::InvalidRequest(m)) if m.starts_with("x-forwarded-for: ")
        ));
    }

    #[test]
    fn required_scopes_and_cost_sent_twice_or_not_ascii_are_refused_never_absent() {
        let not_ascii = HeaderValue::from_bytes(b"chat:write\xe9").unwrap();
        for name in [REQUIRED_SCOPES, COST] {
            let twice = headers(&[(name, "1"), (name, "2")]);
            let mut odd = HeaderMap::new();
            odd.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                not_ascii.clone(),
            );
            for h in [twice, odd] {
                let got = single(&h, name);
                assert!(
                    matches!(&got, Err(Error::InvalidRequest(m)) if m.starts_with(&format!("{name}: "))),
                    "{name}: {got:?}"
                );
            }
            assert_eq!(single(&HeaderMap::new(), name).unwrap(), None);
        }
        assert!(cost(&headers(&[(COST, "5"), (COST, "0")]), true).is_err());
    }

    #[test]
    fn the_original_request_comes_from_the_trusted_headers_only_or_the_path_without_its_query() {
        let (get, post, none) = (Method::GET, Method::POST, HeaderMap::new());
        let uri: Uri = "/v1/auth/chat/1?secret=x".parse().unwrap();
        let all = headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/c?q=1"),
            ("x-original-method", "PUT"),
            ("x-original-uri", "/a/b?q=1"),
        ]);
        for (trusted, want) in [
            (OriginalHeaders::XForwarded, ("DELETE", "/c")),
            (OriginalHeaders::XOriginal, ("PUT", "/a/b")),
            (OriginalHeaders::Envoy, ("GET", "/chat/1")),
        ] {
            let o = origin(&all, &get, &uri, trusted);
            assert_eq!((o.method, o.path), want, "{trusted:?}");
            let o = origin(&none, &post, &uri, trusted);
            assert_eq!((o.method, o.path), ("POST", "/chat/1"), "{trusted:?}");
        }
        let bare: Uri = "/v1/auth".parse().unwrap();
        let o = origin(&none, &get, &bare, OriginalHeaders::XForwarded);
        assert_eq!(o.path, "/");
        let long = format!("/{}", "é".repeat(300));
        let h = headers(&[("x-forwarded-uri", &long)]);
        assert!(
            origin(&h, &get, &uri, OriginalHeaders::XForwarded)
                .path
                .len()
                <= MAX_AUDIT_PATH
        );
    }

    #[test]
    fn header_values_that_are_not_visible_ascii_are_percent_encoded() {
        assert_eq!(encoded("team-a"), "team-a");
        assert_eq!(encoded("Zoë Smith"), "Zo%C3%AB%20Smith");
        assert_eq!(encoded("100%"), "100%25");
        assert_eq!(encoded("a\nb"), "a%0Ab");
    }
}
