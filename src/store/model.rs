//! The documents keyward reads and writes, and what store calls return.
//!
//! Documents are read leniently: fields that keyward added over time (and
//! that the original Python service never wrote) default when absent, so a
//! deployment's existing data reads as it is. A document that still cannot be
//! read is reported as such, never as a server error.

use serde::{Deserialize, Serialize};

/// The `project:<project_id>` document (the original service wrote the
/// same shape; all but the id default when absent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Project)]
pub struct ProjectDoc {
    pub project_id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub created_at: f64,
}

/// The `apikey:<project_id>:<key_id>` document. Holds Argon2id hashes, so it
/// never leaves the service: responses are built from its other fields.
///
/// Unknown fields are ignored on read and left untouched in Redis: updates
/// write single paths, never the whole document.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct KeyDoc {
    pub key_id: String,
    pub project_id: String,
    #[serde(default)]
    pub owner: String,
    /// Absent from the original service's documents: read as `""` rather
    /// than `null`, so that a gateway that routes by it always gets a string
    /// (`""`: no server named), as it does for every key keyward mints.
    #[serde(default)]
    pub server_name: String,
    /// Any JSON, returned as stored; the original service always wrote a
    /// string (often JSON text), which stays a string.
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub secret_hash: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub created_at: f64,
    #[serde(default)]
    pub expires_at: Option<f64>,
    /// `None`: the deployment's default limit.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u64>,
    /// Granted scopes (see `scope`); none by default.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Networks the key may be used from; `None`: anywhere.
    #[serde(default)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Tells which of two hashes a presented secret belongs to during a
    /// rotation, without Argon2id (see `hash::Hasher::tag`).
    #[serde(default)]
    pub secret_tag: Option<String>,
    /// The hash of the secret this key had before its last rotation, valid
    /// until `previous_expires_at`.
    #[serde(default)]
    pub previous_secret_hash: Option<String>,
    #[serde(default)]
    pub previous_secret_tag: Option<String>,
    #[serde(default)]
    pub previous_expires_at: Option<f64>,
    #[serde(default)]
    pub updated_at: Option<f64>,
    /// Windows besides the minute's (see `plan`); none by default.
    #[serde(default)]
    pub limits: Vec<crate::plan::Limit>,
    /// `None`: unlimited. The balance is a counter of its own
    /// (`names::credits`); the document keeps the refill.
    #[serde(default)]
    pub credits: Option<crate::plan::CreditsDoc>,
    /// Not stored: set on the placeholder a listing returns for a key whose
    /// document cannot be read (only `key_id` and `project_id` are real;
    /// it reads as disabled because it cannot validate).
    #[serde(skip)]
    pub unreadable: bool,
}

impl KeyDoc {
    /// The listing's stand-in for a key whose document cannot be read.
    pub fn unreadable(project_id: &str, key_id: &str) -> Self {
        Self {
            key_id: key_id.to_owned(),
            project_id: project_id.to_owned(),
            disabled: true,
            unreadable: true,
            ..Self::default()
        }
    }

    /// The previous secret's hash while its grace period lasts.
    pub fn previous_hash(&self, now: f64) -> Option<&str> {
        match (&self.previous_secret_hash, self.previous_expires_at) {
            (Some(hash), Some(until)) if until > now => Some(hash),
            _ => None,
        }
    }
}

impl std::fmt::Debug for KeyDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDoc")
            .field("key_id", &self.key_id)
            .field("project_id", &self.project_id)
            .field("disabled", &self.disabled)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The `apimeta:<project_id>:<key_id>` hash, and the key's credit balance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyMeta {
    pub usage_count: u64,
    pub last_used: Option<f64>,
    /// The current period's `apicredits` counter as read (`None`: missing,
    /// or not read: the key has no credits; `Some(0)` when unreadable).
    pub credits: Option<i64>,
}

/// What `JSON.GET` of a key document found.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<KeyDoc>),
    Missing,
    /// This deployment's Redis user may not read the key (ACL `NOPERM`).
    NoPermission,
    /// A document is there but is not a key document keyward can read.
    Unreadable,
}

/// What the first round trip of a validation read. Each part is Redis's
/// answer to its own command, so a failed counter never hides what the
/// document says.
#[derive(Debug)]
pub struct Read {
    pub doc: crate::error::Result<Lookup>,
    /// Right-secret validations this minute (with this one, when counted).
    pub used: crate::error::Result<u64>,
    /// Wrong-secret attempts this minute (not read when counting).
    pub bad: crate::error::Result<u64>,
    /// The verified digests `apiverify:<p>:<k>` holds of secrets verified before (read
    /// only for a first-time secret, with a pepper configured; empty when
    /// unreadable).
    pub verified_digests: crate::hash::VerifiedDigests,
}

/// One `audit:keylookup` entry. Never holds the secret, key or hash.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub project_id: &'a str,
    pub key_id: &'a str,
    pub result: &'static str,
    pub reason: &'static str,
    /// The gateway's original request, for forward-auth validations.
    pub origin: Option<Origin<'a>>,
    /// What the request weighed (`cost`, default 1).
    pub cost: u64,
    /// The plan window that refused it (`rate_limited` by one of `limits`):
    /// `second`, `minute`, `hour`, `day` or `month`.
    pub window: Option<&'static str>,
}

/// The request a gateway asked about: method and path (never the query).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// A page of a project's keys.
#[derive(Debug)]
pub struct KeyPage {
    pub keys: Vec<(KeyDoc, KeyMeta)>,
    /// The last key id of this page when more may follow.
    pub next: Option<String>,
}

/// The writes that finish a validation, sent in one round trip.
#[derive(Debug, Clone, Copy)]
pub struct Effects<'a> {
    /// The audit entry (unless the anonymous budget summarizes it); its
    /// project and key (`""` for a malformed key) own the counters below.
    pub audit: Audit<'a>,
    /// The rate-limit window the counters belong to.
    pub minute: u64,
    /// This use opened its window (the minute's `INCRBY` answered exactly
    /// the cost): `EXPIRE` the counter.
    pub new_window: bool,
    /// A wrong secret: `INCR` and `EXPIRE NX` of the wrong-secret counter.
    pub bad_secret: bool,
    /// A refusal of a use already counted: `DECRBY` takes back this much
    /// (its cost); 0: nothing to take back.
    pub undo_use: u64,
    /// A secret just verified: `HSET apiverify:<p>:<k> field value`.
    pub digest_to_share: Option<(&'a str, &'a str)>,
    /// A plan's counters (see `plan`): what each is owed, a spend to take
    /// back (a refusal) and a new window's expiry.
    pub plan: &'a [(String, crate::store::Owed)],
    /// A success's network probe for `key.new_network` (see
    /// `webhook::signal`): `SET name 1 EX ttl GET`.
    pub network: Option<(&'a str, u64)>,
}

/// What the finish round trip learnt besides the audit entry's fate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Finished {
    /// The network probe found no use from that network lately.
    pub new_network: bool,
}

/// The `operator:<deployment>:<operator_id>` document. Holds an Argon2id
/// hash, so it never leaves the service: answers are built from its other
/// fields.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorDoc {
    pub operator_id: String,
    pub name: String,
    pub role: crate::role::Role,
    /// Project ids, or `["*"]`.
    pub projects: Vec<String>,
    pub created_at: f64,
    #[serde(default)]
    pub expires_at: Option<f64>,
    /// The actor that created it.
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub revoked_at: Option<f64>,
    pub secret_hash: String,
}

impl std::fmt::Debug for OperatorDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorDoc")
            .field("operator_id", &self.operator_id)
            .field("role", &self.role)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// One `audit:admin` entry: who did what to which project and key, and how
/// it ended. Never holds a token, secret or hash.
#[derive(Debug, Clone, Copy)]
pub struct AdminAudit<'a> {
    /// An operator id, `root`, or `unknown`.
    pub actor: &'a str,
    /// `project.create`, `key.mint`, ... (`access::Action::name`).
    pub action: &'a str,
    pub project_id: &'a str,
    pub key_id: &'a str,
    /// The operator an `operator.*` call is about (`""` otherwise).
    pub operator_id: &'a str,
    /// The actor's name (`""` when no one).
    pub actor_name: &'a str,
    /// The existing operator a refused token named (`kwop.<id>.<wrong
    /// secret>`, or a revoked or expired operator's), `""` otherwise. Never
    /// the actor: presenting an operator's id proves nothing.
    pub claimed_operator: &'a str,
    /// `ok`, `unauthorized`, `forbidden`, `not_found`, `invalid`, `conflict`
    /// or `error`.
    pub outcome: &'static str,
    /// keyward's own id of the request.
    pub request_id: &'a str,
    /// The caller's `X-Request-Id`, when it was plain (`""` otherwise).
    pub caller_request_id: &'a str,
}

/// The `webhook:<deployment>:<webhook_id>` document. Holds the signing
/// secret, so it never leaves the service but once, at registration.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WebhookDoc {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub projects: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub secret: String,
    pub created_at: f64,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub disabled_at: Option<f64>,
}

impl std::fmt::Debug for WebhookDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDoc")
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// One event for one endpoint: what an attempt posts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The `webhook-id` header: the same for every attempt, and for a
    /// repeat after a crash (it is made from the event's stream id).
    pub message_id: String,
    pub webhook_id: String,
    pub event_type: String,
    /// The JSON body, exactly as signed.
    pub body: String,
    /// 1 for the first attempt.
    pub attempt: u64,
}

impl Message {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("message_id", self.message_id.clone()),
            ("webhook_id", self.webhook_id.clone()),
            ("event_type", self.event_type.clone()),
            ("body", self.body.clone()),
            ("attempt", self.attempt.to_string()),
        ]
    }

    pub fn from_fields(fields: &std::collections::HashMap<String, String>) -> Option<Self> {
        Some(Self {
            message_id: fields.get("message_id")?.clone(),
            webhook_id: fields.get("webhook_id")?.clone(),
            event_type: fields.get("event_type")?.clone(),
            body: fields.get("body")?.clone(),
            attempt: fields.get("attempt")?.parse().ok()?,
        })
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The message's `webhook-id`, the same for each attempt of it.
    pub message_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u64,
    /// Unix seconds of the attempt.
    pub at: f64,
    /// The endpoint's answer; `null` when there was none (see `error`).
    pub status_code: Option<u16>,
    /// What went wrong without an answer (timeout, connection, refused
    /// address), or why a message was not sent.
    pub error: Option<String>,
    /// A 2xx answer.
    pub delivered: bool,
    /// Unix seconds of the next attempt, if there is one.
    pub next_attempt: Option<f64>,
    /// No more attempts: the schedule is over, the endpoint answered `410`,
    /// or it was disabled or deleted.
    pub given_up: bool,
}
