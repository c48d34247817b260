//! Webhooks: signed events for key changes and anomalies, delivered at
//! least once.
//!
//! An event is appended to the deployment's events stream by whoever sees
//! it happen: the admin layer (`key.created`, ...), written with the call's
//! `audit:admin` entry; the validation path (`key.rate_limited`, ...; see
//! [`signal`]); the expiry sweep (`key.expiring`). Instances with the
//! manager user run [`deliver`]: they fan each event out to the endpoints
//! that want it, one message per endpoint, and post each message signed
//! ([`sign`]), retrying on `KEYWARD_WEBHOOK_RETRY_SCHEDULE`. Everything
//! pending lives in Redis (see `store::webhooks`), so any such instance
//! delivers, and one that dies leaves its messages to the others.
//!
//! This file: the endpoints' admin functions and their wire types, and
//! where an endpoint may point (no internal address without
//! `KEYWARD_WEBHOOK_ALLOW_PRIVATE`). The event types and an event are
//! `crate::event`'s (pure, so the store may name them); the stored message
//! and delivery attempt are `store::model`'s.

pub mod deliver;
pub mod sign;
pub mod signal;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::Schema;
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError};

use crate::access::{Caller, Role, Target, ALL_PROJECTS};
use crate::admin::random_id;
use crate::clock::{now, stamp};
use crate::error::{Error, Result};
pub use crate::event::{lost, Event, EventType};
use crate::limits::Limits;
pub use crate::store::Delivery;
use crate::store::{Store, WebhookDoc};

/// A webhook id is `wh_` and 12 of `[A-Za-z0-9]`.
pub const WEBHOOK_ID_PREFIX: &str = "wh_";
/// Most event types or projects one endpoint may name.
const MAX_LIST: usize = 64;

fn valid_events(events: &[String]) -> Result<(), ValidationError> {
    let fail = |m: &'static str| Err(ValidationError::new("events").with_message(m.into()));
    match events {
        [] => fail("must name 1 to 64 event types, or [\"*\"]"),
        [all] if all == "*" => Ok(()),
        _ if events.len() > MAX_LIST => fail("at most 64 event types"),
        _ if events.iter().any(|e| e == "*") => fail("\"*\" stands alone: every event type"),
        _ if events.iter().all(|e| EventType::parse(e).is_some()) => Ok(()),
        _ => fail("each entry must be an event type (see the `events` schema) or \"*\""),
    }
}

/// `valid_events` as a schema: `["*"]`, or 1 to 64 event types.
fn events_schema() -> Schema {
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    let listed = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_LIST));
    let all = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["*"])),
        )
        .min_items(Some(1))
        .max_items(Some(1));
    OneOfBuilder::new()
        .item(listed)
        .item(all)
        .description(Some("The event types sent, or `[\"*\"]`: every one"))
        .examples([serde_json::json!(["key.revoked", "key.secret_attack"])])
        .into()
}

/// What an endpoint URL may look like, as the OpenAPI document states it
/// and the validator holds it: `http` or `https`, a host name (its last
/// label starting with a letter) or an IPv4 address, an optional port, a
/// path and a query of URL characters; no user information, no fragment.
/// Everything it matches parses as a URL with that host.
pub fn url_pattern() -> String {
    let label = "[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*";
    let last = "[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*";
    let port =
        "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
    let chars = "[A-Za-z0-9._~%!$&'()*+,;=:@/-]";
    format!(
        "^[Hh][Tt][Tt][Pp][Ss]?://(?:(?:{label}\\.)*{last}|{ipv4})(?::{port})?(?:/{chars}*)?(?:\\?(?:{chars}|\\?)*)?$",
        ipv4 = crate::net::IPV4,
    )
}

fn url_regex() -> &'static regex::Regex {
    static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(&url_pattern()).expect("the URL pattern compiles")
    });
    &URL
}

fn valid_url(url: &str) -> Result<(), ValidationError> {
    let fail = |m: &'static str| Err(ValidationError::new("url").with_message(m.into()));
    if !url_regex().is_match(url) {
        return fail("must be an http(s) URL: a host name or IPv4 address, an optional port, a path and a query (no user information, no fragment)");
    }
    match endpoint_url(url) {
        Ok(_) => Ok(()),
        Err(problem) => fail(problem),
    }
}

fn url_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(2048))
        .pattern(Some(url_pattern()))
        .description(Some(
            "Where events are posted: an `http` or `https` URL, which may not be (or resolve to) \
             an internal address unless `KEYWARD_WEBHOOK_ALLOW_PRIVATE=true`.",
        ))
        .examples([serde_json::json!("https://hooks.example.com/keyward")])
        .into()
}

/// The parsed URL of an endpoint: `http` or `https`, a host, no user
/// information. Says why not, safe to show.
pub fn endpoint_url(url: &str) -> Result<reqwest::Url, &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "must be an absolute http(s) URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL");
    }
    if parsed.host_str().map_or(true, str::is_empty) {
        return Err("must name a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password");
    }
    Ok(parsed)
}

/// How long registration waits for a name to resolve.
const RESOLVE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses an endpoint whose host is, or resolves to, an internal address
/// (unless `allow_private`): a literal address is checked as it is, a name
/// by every address it resolves to now. A name that does not resolve now
/// (or not within 2 s) is accepted: its DNS may not exist yet, and
/// delivery checks each address again at every attempt, as a name may
/// resolve differently later.
pub async fn check_destination(url: &reqwest::Url, allow_private: bool) -> Result<()> {
    if allow_private {
        return Ok(());
    }
    let refused = || {
        Error::InvalidRequest(
            "url: resolves to a loopback, private, link-local or otherwise internal address \
             (KEYWARD_WEBHOOK_ALLOW_PRIVATE=true allows it)"
                .into(),
        )
    };
    let addrs = destination_addrs(url).await;
    if addrs.iter().any(|ip| crate::net::is_internal(*ip)) {
        return Err(refused());
    }
    Ok(())
}

/// The address `url`'s host is, if it is one (not a name).
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Every address `url`'s host is or resolves to now (none if it does not).
async fn destination_addrs(url: &reqwest::Url) -> Vec<IpAddr> {
    if let Some(ip) = literal_ip(url) {
        return vec![ip];
    }
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(443);
            match tokio::time::timeout(RESOLVE_FOR, tokio::net::lookup_host((name, port))).await {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// `POST /v1/admin/webhooks`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Where events are posted: an `http` or `https` URL, which may not be
    /// (or resolve to) an internal address unless
    /// `KEYWARD_WEBHOOK_ALLOW_PRIVATE=true`.
    #[validate(length(min = 1, max = 2048), custom(function = "valid_url"))]
    #[schema(schema_with = url_schema)]
    pub url: String,
    /// The event types sent: 1 to 64 of them, or `["*"]`.
    #[validate(custom(function = "valid_events"))]
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    /// Whose events: 1 to 64 project ids, or `["*"]` (every project).
    #[validate(custom(function = "crate::operators::valid_projects"))]
    #[schema(schema_with = crate::operators::projects_schema)]
    pub projects: Vec<String>,
    #[validate(custom(function = "crate::text::description"))]
    #[schema(schema_with = crate::text::description_schema)]
    pub description: Option<String>,
}

/// An endpoint as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    #[schema(example = "wh_3xAmPlE0wh1x")]
    pub webhook_id: String,
    /// The endpoint. Listed to a caller below `project_admin` with its
    /// credentials hidden: userinfo, query and fragment each `***`
    /// (`https://***@hooks.example.com/in?***`).
    pub url: String,
    pub events: Vec<String>,
    pub projects: Vec<String>,
    pub description: Option<String>,
    pub created_at: f64,
    /// The actor that registered it (`root` or an operator id).
    pub created_by: String,
    /// Disabled after the endpoint answered `410 Gone`: nothing more is sent.
    pub disabled: bool,
    pub disabled_at: Option<f64>,
}

/// `201` from `POST /v1/admin/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookOut,
    /// The signing secret (Standard Webhooks: `whsec_` and base64). Shown
    /// once, here; it is never listed.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=")]
    pub secret: String,
}

/// `GET /v1/admin/webhooks`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhooksQuery {
    /// Endpoints read per page (default 50); those the caller does not
    /// cover are left out, so a page may hold fewer.
    #[validate(range(min = 1, max = crate::page::MAX_LIMIT))]
    #[param(inline, value_type = Option<crate::page::LimitDoc>)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[param(inline, value_type = Option<WebhookIdDoc>)]
    #[validate(custom(function = "webhook_id"))]
    pub cursor: Option<String>,
}

fn webhook_id(id: &str) -> Result<(), ValidationError> {
    match is_webhook_id(id) {
        true => Ok(()),
        false => Err(ValidationError::new("webhook_id")
            .with_message("must be `wh_` and 12 of [A-Za-z0-9]".into())),
    }
}

/// `200` from `GET /v1/admin/webhooks`: one page, in id order.
pub type WebhooksOut = crate::page::Page<WebhookOut>;

/// A path naming one endpoint.
#[derive(Debug, Deserialize)]
pub struct WebhookPath {
    pub webhook_id: String,
}

/// `200` from `DELETE /v1/admin/webhooks/{webhook_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeleted {
    pub webhook_id: String,
    /// Always `true`: nothing more is sent to it, pending messages included.
    pub deleted: bool,
}

/// `202` from `POST /v1/admin/webhooks/{webhook_id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    pub webhook_id: String,
    /// The `webhook-id` the `webhook.test` message is sent with.
    #[schema(example = "msg_1733100000000-0_wh_3xAmPlE0wh1x")]
    pub message_id: String,
}

/// `GET /v1/admin/webhooks/{webhook_id}/deliveries`'s query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Attempts to return, newest first (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_RECENT))]
    #[param(inline, value_type = Option<crate::page::RecentDoc>)]
    pub limit: Option<u64>,
}

/// `200` from `GET /v1/admin/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesOut {
    pub items: Vec<Delivery>,
}

// Endpoints belong to the projects they name; `covers` decides (see below).
impl Target for WebhookIn {}
impl Target for WebhookPath {}
impl Target for DeliveriesQuery {}
impl Target for WebhooksQuery {}

/// Whether the caller covers every project the endpoint names: only then
/// may it see or manage the endpoint, whose events are those projects'.
fn covers(caller: &Caller, projects: &[String]) -> bool {
    match projects {
        [all] if all == ALL_PROJECTS => caller.covers_all(),
        _ => projects.iter().all(|p| caller.sees(p)),
    }
}

fn out(doc: WebhookDoc) -> WebhookOut {
    WebhookOut {
        webhook_id: doc.webhook_id,
        url: doc.url,
        events: doc.events,
        projects: doc.projects,
        description: doc.description,
        created_at: doc.created_at,
        created_by: doc.created_by,
        disabled: doc.disabled,
        disabled_at: doc.disabled_at,
    }
}

/// Registers an endpoint for projects the caller covers (else 403).
pub async fn create(
    store: &Store,
    caller: &Caller,
    input: WebhookIn,
    allow_private: bool,
    limits: &Limits,
) -> Result<WebhookCreated> {
    if !covers(caller, &input.projects) {
        return Err(Error::InsufficientPermission);
    }
    let existing = store.list_webhooks().await?;
    let named: Vec<&[String]> = existing.iter().map(|d| d.projects.as_slice()).collect();
    limits.webhook_fits(&named, &input.projects)?;
    let url = endpoint_url(&input.url).map_err(|p| Error::InvalidRequest(format!("url: {p}")))?;
    check_destination(&url, allow_private).await?;
    for _ in 0..5 {
        let doc = WebhookDoc {
            webhook_id: random_id(WEBHOOK_ID_PREFIX)?,
            url: input.url.clone(),
            events: input.events.clone(),
            projects: input.projects.clone(),
            description: input.description.clone(),
            secret: sign::new_secret()?,
            created_at: stamp(),
            created_by: caller.actor.clone(),
            disabled: false,
            disabled_at: None,
        };
        if store.insert_webhook(&doc).await? {
            tracing::info!(webhook_id = %doc.webhook_id, "webhook registered");
            let secret = doc.secret.clone();
            return Ok(WebhookCreated {
                webhook: out(doc),
                secret,
            });
        }
    }
    Err(Error::Internal("could not find a free webhook id".into()))
}

/// Mask for what may carry a credential in an endpoint's URL.
const HIDDEN: &str = "***";

/// `url` with its userinfo, query and fragment (where tokens for an
/// endpoint live) each replaced by `***`; scheme, host, port and path kept.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return HIDDEN.to_owned();
    };
    let had_userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    if had_userinfo {
        // An http(s) URL has a host, so these cannot fail.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username(HIDDEN);
    }
    if parsed.query().is_some() {
        parsed.set_query(Some(HIDDEN));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(HIDDEN));
    }
    parsed.to_string()
}

/// One page of the endpoints whose projects the caller covers, in id
/// order; below
/// `project_admin` (who may not manage them), their URLs [`redacted`].
pub async fn list(store: &Store, caller: &Caller, query: WebhooksQuery) -> Result<WebhooksOut> {
    let (docs, next) = store
        .webhooks_page(query.cursor.as_deref(), crate::page::limit(query.limit))
        .await?;
    let manages = caller.role >= Role::ProjectAdmin;
    Ok(WebhooksOut {
        next,
        items: docs
            .into_iter()
            .filter(|d| covers(caller, &d.projects))
            .map(|d| {
                let mut listed = out(d);
                if !manages {
                    listed.url = redacted(&listed.url);
                }
                listed
            })
            .collect(),
    })
}

/// The endpoint, if it exists and the caller covers its projects: else
/// `webhook_not_found`, the same for both.
async fn visible(store: &Store, caller: &Caller, webhook_id: &str) -> Result<WebhookDoc> {
    if !is_webhook_id(webhook_id) {
        return Err(Error::WebhookNotFound);
    }
    match store.get_webhook(webhook_id).await? {
        Some(doc) if covers(caller, &doc.projects) => Ok(doc),
        _ => Err(Error::WebhookNotFound),
    }
}

pub async fn delete(store: &Store, caller: &Caller, webhook_id: &str) -> Result<WebhookDeleted> {
    visible(store, caller, webhook_id).await?;
    store.delete_webhook(webhook_id).await?;
    tracing::info!(webhook_id, "webhook deleted");
    Ok(WebhookDeleted {
        webhook_id: webhook_id.to_owned(),
        deleted: true,
    })
}

/// Queues a `webhook.test` message for the endpoint alone.
pub async fn test(store: &Store, caller: &Caller, webhook_id: &str) -> Result<TestQueued> {
    let doc = visible(store, caller, webhook_id).await?;
    let mut data = Map::new();
    data.insert("webhook_id".into(), doc.webhook_id.clone().into());
    let body = Event::body(EventType::WebhookTest.as_str(), now(), &Value::Object(data));
    let message_id = format!("msg_{}", random_id("")?);
    store
        .enqueue(&deliver::Message {
            message_id: message_id.clone(),
            webhook_id: doc.webhook_id.clone(),
            event_type: EventType::WebhookTest.as_str().to_owned(),
            body,
            attempt: 1,
        })
        .await?;
    Ok(TestQueued {
        webhook_id: doc.webhook_id,
        message_id,
    })
}

pub async fn deliveries(
    store: &Store,
    caller: &Caller,
    webhook_id: &str,
    query: DeliveriesQuery,
) -> Result<DeliveriesOut> {
    visible(store, caller, webhook_id).await?;
    let items = store
        .deliveries(webhook_id, crate::page::limit(query.limit))
        .await?;
    Ok(DeliveriesOut { items })
}

/// Whether `id` is a webhook id: `wh_` and 12 of `[A-Za-z0-9]`.
/// A webhook id's pattern, as the OpenAPI document states it; the same as
/// [`is_webhook_id`] (a test holds them together).
pub const WEBHOOK_ID_PATTERN: &str = "^wh_[A-Za-z0-9]{12}$";

crate::openapi::pattern_doc!(
    /// A webhook id in the OpenAPI document: [`WEBHOOK_ID_PATTERN`].
    WebhookIdDoc = "WebhookId", WEBHOOK_ID_PATTERN, "wh_3xAmPlE0hook"
);

pub fn is_webhook_id(id: &str) -> bool {
    id.strip_prefix(WEBHOOK_ID_PREFIX)
        .is_some_and(|body| body.len() == 12 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether an endpoint wants this event.
pub fn wants(doc: &WebhookDoc, kind: &str, project_id: &str) -> bool {
    let any = |list: &[String], item: &str| list.iter().any(|e| e == "*" || e == item);
    !doc.disabled && any(&doc.events, kind) && any(&doc.projects, project_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_are_known_types_or_a_lone_star() {
        let list =
            |l: &[&str]| valid_events(&l.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
        assert!(list(&["key.revoked", "key.new_network"]).is_ok());
        assert!(list(&["*"]).is_ok());
        assert!(list(&[]).is_err());
        assert!(list(&["*", "key.revoked"]).is_err());
        assert!(list(&["key.nope"]).is_err());
    }

    #[test]
    fn only_plain_http_urls_are_endpoints() {
        assert!(endpoint_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(endpoint_url("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://u:p@example.com/",
            "/relative",
            "gopher://x",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn internal_destinations_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://localhost:9/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[::ffff:0:93.184.215.14]/",
        ] {
            let parsed = endpoint_url(url).unwrap();
            assert!(check_destination(&parsed, false).await.is_err(), "{url}");
            assert!(check_destination(&parsed, true).await.is_ok(), "{url}");
        }
        let public = endpoint_url("http://93.184.215.14/").unwrap();
        assert!(check_destination(&public, false).await.is_ok());
    }

    #[test]
    fn an_endpoint_wants_its_types_and_projects() {
        let doc = |events: &[&str], projects: &[&str]| WebhookDoc {
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            projects: projects.iter().map(|s| (*s).to_owned()).collect(),
            ..WebhookDoc::default()
        };
        assert!(wants(&doc(&["*"], &["*"]), "key.revoked", "alpha"));
        assert!(wants(
            &doc(&["key.revoked"], &["alpha"]),
            "key.revoked",
            "alpha"
        ));
        assert!(!wants(
            &doc(&["key.revoked"], &["alpha"]),
            "key.created",
            "alpha"
        ));
        assert!(!wants(&doc(&["*"], &["beta"]), "key.revoked", "alpha"));
        let disabled = WebhookDoc {
            disabled: true,
            ..doc(&["*"], &["*"])
        };
        assert!(!wants(&disabled, "key.revoked", "alpha"));
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_in_an_endpoint_url_are_hidden_and_the_rest_kept() {
        for (url, shown) in [
            (
                "https://hooks.example.com/in",
                "https://hooks.example.com/in",
            ),
            (
                "https://user:pw@hooks.example.com:8443/in?token=s3cret#frag",
                "https://***@hooks.example.com:8443/in?***#***",
            ),
            ("http://tok@93.184.215.14/", "http://***@93.184.215.14/"),
            (
                "https://h.example/in?sig=abc&x=1",
                "https://h.example/in?***",
            ),
            ("not a url", "***"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn the_url_pattern_accepts_only_urls_with_a_host() {
        for good in [
            "https://hooks.example.com/keyward",
            "http://127.0.0.1:9/hook?x=1&y=%20",
            "http://a/",
            "HTTPS://EXAMPLE.COM:65535",
            "http://0x1.a/p",
            "http://1.example",
        ] {
            assert!(valid_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://1.2.3.999/",
            "http://[::1]/",
            "http://xn--a/",
            "http://a:0/",
            "http://a:65536/",
            "http://u@a/",
            "http://a/#frag",
            "http://a b/",
            "ftp://a/",
            "0000",
        ] {
            assert!(valid_url(bad).is_err(), "{bad}");
        }
    }
}
