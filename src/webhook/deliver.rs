//! The delivery worker, on every instance with the manager user: fans the
//! events out to the endpoints that want them, posts each message signed,
//! and retries on `KEYWARD_WEBHOOK_RETRY_SCHEDULE`; also the expiry sweep
//! that finds the keys `key.expiring` is about.
//!
//! One loop, every [`TICK`]: move the retries that are due into the queue,
//! fan out new events, start an attempt for each message due (at most
//! [`IN_FLIGHT`] at once, each in its own task), and every
//! [`SWEEP_EVERY`] sweep for expiring keys. What an attempt's answer means:
//! a 2xx is delivered; `410 Gone` disables the endpoint; anything else, a
//! timeout or a connection error is retried after the schedule's next wait
//! (or the answer's `Retry-After`, whichever is longer); after the last the
//! message is given up. Each attempt is recorded in the endpoint's
//! deliveries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{sign, Delivery, Event, EventType};
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{Store, WebhookDoc};
use crate::telemetry::metric;

/// How often the worker looks for work.
const TICK: Duration = Duration::from_millis(250);
/// How often a lasting fault is logged.
const QUIET: Duration = Duration::from_secs(30);
/// Attempts running at once per instance.
const IN_FLIGHT: usize = 32;
/// Events fanned out per tick.
const EVENTS_PER_TICK: u64 = 100;
/// How often keys are swept for `key.expiring`.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Keys read per page of the sweep.
const SWEEP_PAGE: u64 = 100;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
/// Why a message of a deleted endpoint is dropped.
const DELETED: &str = "the endpoint was deleted";
/// Who the posts say they are from.
const USER_AGENT: &str = concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION"));

pub use crate::store::Message;

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered(u16),
    /// `410 Gone`: the endpoint is disabled.
    Gone,
    /// No 2xx: the status (if any answer came), why, and the
    /// `Retry-After` it asked for.
    Failed {
        status: Option<u16>,
        error: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Not sent: the endpoint is gone or disabled.
    Dropped(&'static str),
}

#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    http: reqwest::Client,
    schedule: Arc<Vec<Duration>>,
    timeout: Duration,
    allow_private: bool,
    expiry_notice: Duration,
    /// This instance's consumer name in the groups.
    consumer: String,
    in_flight: Arc<Semaphore>,
}

impl Deliverer {
    pub fn new(store: Store, config: &Config) -> Result<Self> {
        let guard = Guard {
            allow_private: config.webhook_allow_private,
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(guard))
            .build()
            .map_err(|e| Error::Internal(format!("webhook HTTP client: {e}")))?;
        let consumer = format!("{}-{}", config.client_name, crate::admin::random_id("")?);
        Ok(Self {
            store,
            http,
            schedule: Arc::new(config.webhook_retry_schedule.0.clone()),
            timeout: config.webhook_timeout,
            allow_private: config.webhook_allow_private,
            expiry_notice: Duration::from_secs(config.expiry_notice_days * 86_400),
            consumer,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        })
    }

    /// An entry pending this long with another consumer is taken over: that
    /// consumer's attempt would have ended long before, so it died.
    fn stale_ms(&self) -> u64 {
        (self.timeout + Duration::from_secs(5)).as_millis() as u64
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut grouped = false;
        let mut next_sweep = tokio::time::Instant::now();
        // A fault lasting longer than a tick is logged every QUIET at most.
        let mut warned: Option<tokio::time::Instant> = None;
        let mut warn = |e: &Error| {
            if warned.map_or(true, |at| at.elapsed() >= QUIET) {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(error = %e, "webhook delivery: Redis did not answer or refused; trying again");
            }
        };
        loop {
            tick.tick().await;
            if !grouped {
                match self.store.webhook_groups().await {
                    Ok(()) => grouped = true,
                    Err(e) => {
                        warn(&e);
                        continue;
                    }
                }
            }
            if let Err(e) = self.once().await {
                warn(&e);
            }
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep += SWEEP_EVERY;
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.sweep_expiring().await {
                        tracing::warn!(error = %e, "expiry sweep not finished");
                    }
                });
            }
        }
    }

    async fn once(&self) -> Result<()> {
        let now_ms = (now() * 1000.0) as u64;
        self.store.move_due_retries(now_ms, 100).await?;
        self.fan_out().await?;
        let free = self.in_flight.available_permits() as u64;
        for (id, fields) in self
            .store
            .next_messages(&self.consumer, free, self.stale_ms())
            .await?
        {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.attempt(&id, &fields).await;
                drop(permit);
            });
        }
        Ok(())
    }

    /// One message per endpoint that wants the event; then the event is
    /// done. Its message ids are made from the event's stream id, so a
    /// fan-out repeated after a crash repeats the same ids.
    async fn fan_out(&self) -> Result<()> {
        let events = self
            .store
            .next_events(&self.consumer, EVENTS_PER_TICK, self.stale_ms())
            .await?;
        if events.is_empty() {
            return Ok(());
        }
        let endpoints = self.store.list_webhooks().await?;
        for (id, fields) in events {
            let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
            let (kind, project) = (field("type"), field("project_id"));
            let data: serde_json::Value = serde_json::from_str(field("data")).unwrap_or_default();
            let at = field("at").parse().unwrap_or_else(|_| now());
            let body = Event::body(kind, at, &data);
            for endpoint in endpoints.iter().filter(|e| super::wants(e, kind, project)) {
                let message = Message {
                    message_id: format!("msg_{id}_{}", endpoint.webhook_id),
                    webhook_id: endpoint.webhook_id.clone(),
                    event_type: kind.to_owned(),
                    body: body.clone(),
                    attempt: 1,
                };
                self.store.enqueue(&message).await?;
            }
            self.store.done_event(&id).await?;
        }
        Ok(())
    }

    /// One attempt of the message in queue entry `id`, then its outcome
    /// recorded and any retry scheduled, then the entry done. When Redis
    /// fails on the way the entry stays pending, and is attempted again
    /// (by this or another instance) once it is stale.
    async fn attempt(&self, id: &str, fields: &std::collections::HashMap<String, String>) {
        let Some(message) = Message::from_fields(fields) else {
            tracing::error!(
                entry = id,
                "a webhook queue entry is not a message; dropped"
            );
            let _ = self.store.done_message(id).await;
            return;
        };
        let outcome = match self.store.get_webhook(&message.webhook_id).await {
            Ok(None) => Outcome::Dropped(DELETED),
            Ok(Some(doc)) if doc.disabled => Outcome::Dropped("the endpoint is disabled"),
            Ok(Some(doc)) => self.post(&doc, &message).await,
            Err(Error::Unreadable) => Outcome::Dropped("the endpoint's document cannot be read"),
            Err(e) => {
                tracing::warn!(error = %e, "webhook attempt postponed: Redis did not answer");
                return;
            }
        };
        if let Err(e) = self.settle(id, &message, outcome).await {
            tracing::warn!(error = %e, message_id = %message.message_id, "webhook attempt not recorded; it will be repeated");
        }
    }

    async fn settle(&self, id: &str, message: &Message, outcome: Outcome) -> Result<()> {
        let at = now();
        let mut delivery = Delivery {
            message_id: message.message_id.clone(),
            event_type: message.event_type.clone(),
            attempt: message.attempt,
            at,
            status_code: None,
            error: None,
            delivered: false,
            next_attempt: None,
            given_up: false,
        };
        let result = match outcome {
            Outcome::Delivered(status) => {
                delivery.status_code = Some(status);
                delivery.delivered = true;
                "delivered"
            }
            Outcome::Gone => {
                delivery.status_code = Some(410);
                delivery.given_up = true;
                self.store.disable_webhook(&message.webhook_id).await?;
                tracing::warn!(webhook_id = %message.webhook_id, "webhook endpoint answered 410 Gone: disabled");
                "gone"
            }
            Outcome::Dropped(why) => {
                delivery.error = Some(why.to_owned());
                delivery.given_up = true;
                "dropped"
            }
            Outcome::Failed {
                status,
                error,
                retry_after,
            } => {
                delivery.status_code = status;
                delivery.error = error;
                let waits = (message.attempt as usize).saturating_sub(1);
                match self.schedule.get(waits) {
                    Some(wait) => {
                        let wait =
                            (*wait).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                        let due = at + wait.as_secs_f64();
                        delivery.next_attempt = Some(due);
                        let retry = Message {
                            attempt: message.attempt + 1,
                            ..message.clone()
                        };
                        self.store
                            .schedule_retry(&retry, (due * 1000.0) as u64)
                            .await?;
                        "retry"
                    }
                    None => {
                        delivery.given_up = true;
                        "given_up"
                    }
                }
            }
        };
        metrics::counter!(metric::WEBHOOK_ATTEMPTS, "result" => result).increment(1);
        // What became of the message is written before its entry is done
        // (not for a deleted endpoint, whose attempts are going away).
        let recorded = match delivery.error.as_deref() == Some(DELETED) {
            true => Ok(()),
            false => {
                self.store
                    .record_delivery(&message.webhook_id, &delivery)
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "webhook attempt not added to the deliveries");
        }
        self.store.done_message(id).await
    }

    /// Posts the message, signed, to the endpoint.
    async fn post(&self, doc: &WebhookDoc, message: &Message) -> Outcome {
        let failed = |error: String| Outcome::Failed {
            status: None,
            error: Some(error),
            retry_after: None,
        };
        let url = match super::endpoint_url(&doc.url) {
            Ok(url) => url,
            Err(problem) => return failed(format!("url: {problem}")),
        };
        // A literal address meets no resolver: checked here.
        if let Err(e) = literal_allowed(&url, self.allow_private) {
            return failed(e);
        }
        let timestamp = now() as i64;
        let Some(signature) =
            sign::signature(&doc.secret, &message.message_id, timestamp, &message.body)
        else {
            return Outcome::Dropped("the endpoint's secret cannot be read");
        };
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return failed("timed out".into()),
            Err(e) => return failed(describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            200..=299 => Outcome::Delivered(status),
            410 => Outcome::Gone,
            _ => Outcome::Failed {
                status: Some(status),
                error: None,
                retry_after,
            },
        }
    }

    /// `key.expiring` for each key whose `expires_at` is within
    /// `KEYWARD_EXPIRY_NOTICE_DAYS`, once per key and expiry (a marker that
    /// lives until a day after it).
    async fn sweep_expiring(&self) -> Result<()> {
        let now = now();
        let horizon = now + self.expiry_notice.as_secs_f64();
        let mut cursor: Option<String> = None;
        loop {
            let (projects, more) = self
                .store
                .project_ids(cursor.as_deref(), SWEEP_PAGE)
                .await?;
            for project in &projects {
                let Ok(project) = crate::key::ProjectId::parse(project) else {
                    continue;
                };
                let mut after: Option<crate::key::KeyId> = None;
                loop {
                    let page = match self
                        .store
                        .list_keys(&project, after.as_ref(), SWEEP_PAGE, None)
                        .await
                    {
                        Ok(page) => page,
                        Err(Error::ProjectNotFound | Error::Unreadable) => break,
                        Err(e) => return Err(e),
                    };
                    for (doc, _) in &page.keys {
                        let Some(expires_at) = doc.expires_at else {
                            continue;
                        };
                        if doc.disabled
                            || doc.unreadable
                            || expires_at <= now
                            || expires_at > horizon
                        {
                            continue;
                        }
                        let marker = crate::store::names::key_event(
                            &doc.project_id,
                            &doc.key_id,
                            &format!("expiring:{}", expires_at as i64),
                        );
                        let ttl = (expires_at - now) as u64 + 86_400;
                        let event =
                            Event::key(EventType::KeyExpiring, &doc.project_id, &doc.key_id)
                                .with("expires_at", crate::clock::rfc3339(expires_at))
                                .with("expires_in_seconds", (expires_at - now) as u64);
                        self.store
                            .emit_once(&marker, Some(ttl), &event, true)
                            .await?;
                    }
                    match page.next.and_then(|n| crate::key::KeyId::parse(&n).ok()) {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
            match (more, projects.last()) {
                (true, Some(last)) => cursor = Some(last.clone()),
                _ => return Ok(()),
            }
        }
    }
}

/// A short, safe description of a failed request (no URL query, no body).
fn describe(e: &reqwest::Error) -> String {
    let mut text = match () {
        _ if e.is_connect() => "connection failed".to_owned(),
        _ if e.is_request() => "request failed".to_owned(),
        _ => "failed".to_owned(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.to_string().contains(INTERNAL) {
            text = format!("refused: {INTERNAL}");
        }
        source = inner.source();
    }
    text
}

const INTERNAL: &str = "the host resolves only to internal addresses";

fn literal_allowed(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    let Some(ip) = super::literal_ip(url) else {
        return Ok(());
    };
    match allow_private || !crate::net::is_internal(ip) {
        true => Ok(()),
        false => Err(format!("refused: {ip} is an internal address")),
    }
}

/// The webhook client's resolver: a name's internal addresses are dropped
/// (unless allowed), so a connection only ever goes to an address checked
/// at the moment it is made, whatever the name resolved to at registration.
struct Guard {
    allow_private: bool,
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, allow_private) = (name.as_str().to_owned(), self.allow_private);
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|a| allow_private || !crate::net::is_internal(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(INTERNAL.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_their_stream_fields() {
        let m = Message {
            message_id: "msg_1-0_wh_abcdefabcdef".into(),
            webhook_id: "wh_abcdefabcdef".into(),
            event_type: "key.revoked".into(),
            body: r#"{"type":"key.revoked"}"#.into(),
            attempt: 3,
        };
        let fields = m
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Message::from_fields(&fields), Some(m));
    }

    #[test]
    fn literal_internal_addresses_are_refused_at_delivery() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(literal_allowed(&url, false).is_err());
        assert!(literal_allowed(&url, true).is_ok());
        let named = reqwest::Url::parse("http://example.com/").unwrap();
        assert!(literal_allowed(&named, false).is_ok());
    }
}
