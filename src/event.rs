//! Webhook events, pure: every event type once, an event and the body its
//! endpoints receive. Whoever sees a thing happen builds an [`Event`] (the
//! admin layer, the validation path's `webhook::signal`, the expiry sweep)
//! and the store appends it to the events stream; `webhook` delivers it.
//! The console lists the types as the API gives them
//! (`GET /v1/admin/catalog`).

use serde_json::{Map, Value};

use crate::clock::now;
use crate::error::Error;

/// Every event type, once: its variant and its `type` on the wire.
macro_rules! event_types {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EventType {
            $($variant),*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name),*
                }
            }
        }
    };
}

event_types!(
    KeyCreated = "key.created",
    KeyUpdated = "key.updated",
    KeyRotated = "key.rotated",
    KeyRevoked = "key.revoked",
    KeyExpiring = "key.expiring",
    KeyRateLimited = "key.rate_limited",
    KeySecretAttack = "key.secret_attack",
    KeyNewNetwork = "key.new_network",
    KeyCreditsExhausted = "key.credits_exhausted",
    KeyCreditsLow = "key.credits_low",
    WebhookTest = "webhook.test",
);

impl EventType {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == name)
    }
}

/// One event: its type, when, and what it is about (`data`, which always
/// holds `project_id` and `key_id` for a key's event). Never a secret, a
/// hash or a full key.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub at: f64,
    pub project_id: String,
    pub key_id: String,
    pub data: Map<String, Value>,
}

impl Event {
    /// An event about `project_id`'s `key_id`, now.
    pub fn key(kind: EventType, project_id: &str, key_id: &str) -> Self {
        let mut data = Map::new();
        data.insert("project_id".into(), project_id.into());
        data.insert("key_id".into(), key_id.into());
        Self {
            kind,
            at: now(),
            project_id: project_id.to_owned(),
            key_id: key_id.to_owned(),
            data,
        }
    }

    /// With one more field in `data`.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.data.insert(field.to_owned(), value.into());
        self
    }

    /// The body every endpoint receives: `{"type", "timestamp", "data"}`.
    pub fn body(kind: &str, at: f64, data: &Value) -> String {
        serde_json::json!({
            "type": kind,
            "timestamp": crate::clock::rfc3339(at),
            "data": data,
        })
        .to_string()
    }
}

/// An event Redis did not take: logged and counted; the answer or the
/// change it belongs to stands.
pub fn lost(kind: EventType, e: &Error) {
    metrics::counter!(crate::telemetry::metric::EVENTS_LOST, "type" => kind.as_str()).increment(1);
    tracing::warn!(event = kind.as_str(), error = %e, "webhook event not written: Redis did not take it");
}
