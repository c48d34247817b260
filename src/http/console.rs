//! The admin console: one page of plain HTML, CSS and ES modules (written
//! for keyward, no build step, nothing from a CDN), embedded in the binary
//! and served under `/admin/` only when an admin token is configured.
//!
//! The page holds no secret and needs no token to load: it asks the
//! operator for a token (an operator's `kwop.` token or the admin token),
//! keeps it in `sessionStorage`, and calls the admin API on this origin with
//! `Authorization: Bearer`. Every response here carries a strict
//! Content-Security-Policy (scripts and styles from this origin only, no
//! inline code, no `innerHTML` sinks, requests only to this origin, no form
//! posts, no framing), `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`. Assets are revalidated on every load
//! (`no-cache` with a content-hash `ETag`), so a new build is picked up at once.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::RefOr;

use crate::error::{Error, ErrorBody, MethodNotAllowedResponse};
use crate::openapi::string_header;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the body, computed at compile time.
    etag: u64,
}

/// FNV-1a, 64 bits: a cheap content hash for `ETag`, not a security measure.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../console/", $name)),
            etag: fnv1a(include_bytes!(concat!("../console/", $name))),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("dialogs.js", JS),
    asset!("projects.js", JS),
    asset!("keys.js", JS),
    asset!("key.js", JS),
    asset!("plan.js", JS),
    asset!("activity.js", JS),
    asset!("usage.js", JS),
    asset!("audit.js", JS),
    asset!("webhooks.js", JS),
];

/// The console's security headers, on every response it makes: name, value,
/// and what the OpenAPI document says of it ([`document_headers`]).
const SECURITY_HEADERS: [(&str, &str, &str); 6] = [
    (
        "Content-Security-Policy",
        CSP,
        "No inline code, this origin only",
    ),
    ("X-Frame-Options", "DENY", "`DENY`"),
    ("Referrer-Policy", "no-referrer", "`no-referrer`"),
    ("X-Content-Type-Options", "nosniff", "`nosniff`"),
    ("Cross-Origin-Opener-Policy", "same-origin", "`same-origin`"),
    (
        "Cross-Origin-Resource-Policy",
        "same-origin",
        "`same-origin`",
    ),
];

/// Documents the security headers on every response of a console
/// operation (but for the shared 405, which is not the console's).
pub(super) fn document_headers(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            for (name, _, description) in SECURITY_HEADERS {
                response
                    .headers
                    .insert(name.into(), string_header(description));
            }
        }
    }
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value, _) in SECURITY_HEADERS {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// `GET /admin`: the page's relative URLs need the trailing slash.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "console",
    responses(
        (status = 308, description = "To `/admin/`", headers(
            ("Location" = String, description = "`/admin/`"),
        )),
        (status = 405, response = MethodNotAllowedResponse),
    )
)]
pub async fn redirect() -> Response {
    secured(Redirect::permanent("/admin/").into_response())
}

/// `GET /admin/`: the page.
#[utoipa::path(
    get,
    path = "/admin/",
    tag = "console",
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer")),
    responses(
        (status = 200, description = "The console's page", content_type = "text/html", body = String, headers(
            ("Cache-Control" = String, description = "`no-cache`: revalidated on every load"),
            ("ETag" = String, description = "A hash of the content"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` holds the current `ETag`", headers(
            ("Cache-Control" = String, description = "`no-cache`: revalidated on every load"),
            ("ETag" = String, description = "A hash of the content"),
        )),
        (status = 405, response = MethodNotAllowedResponse),
    )
)]
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /admin/{file}`: a script, the stylesheet or the icon.
#[utoipa::path(
    get,
    path = "/admin/{file}",
    tag = "console",
    params(
        ("file" = String, Path, example = "app.js", description = "An asset's name, e.g. `app.js`, `style.css`, `favicon.svg`"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "image/svg+xml"),
            (String = "text/html"),
        ), headers(
            ("Cache-Control" = String, description = "`no-cache`: revalidated on every load"),
            ("ETag" = String, description = "A hash of the content"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` holds the current `ETag`", headers(
            ("Cache-Control" = String, description = "`no-cache`: revalidated on every load"),
            ("ETag" = String, description = "A hash of the content"),
        )),
        (status = 404, description = "`not_found`: no such asset", body = ErrorBody),
        (status = 405, response = MethodNotAllowedResponse),
    )
)]
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return secured(Error::RouteNotFound.into_response());
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secured(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No inline script, inline style or event-handler attribute in the
    /// page: the CSP would block them, so they would be dead code.
    #[test]
    fn the_page_has_no_inline_code() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert_eq!(ASSETS[0].name, "index.html");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler attribute");
    }

    #[test]
    fn every_script_the_page_imports_is_served() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let file = line
                    .rsplit("'./")
                    .next()
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_else(|| panic!("{}: unexpected import: {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == file),
                    "{} imports {file}, which is not embedded",
                    asset.name
                );
            }
            assert!(
                !text.contains("innerHTML") && !text.contains("eval("),
                "{}: no HTML or code from strings",
                asset.name
            );
        }
    }
}
