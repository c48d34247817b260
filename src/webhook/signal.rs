//! What the validation path tells webhooks: `key.rate_limited`,
//! `key.secret_attack`, `key.credits_exhausted`, `key.credits_low` and
//! `key.new_network`.
//!
//! Each is sent once per key and window, across instances, by a marker in
//! Redis (`apievent:<p>:<k>:<kind>`, `SET NX` with the window's lifetime):
//! only the request whose `SET` made the marker appends the event, right
//! after its audit entry and before its answer leaves. A memo in the
//! process keeps later refusals of the same window from even trying, so a
//! flood of 429s or wrong secrets costs Redis one `SET` per instance and
//! window, not one per request.
//!
//! `key.credits_low` is told by the pass whose spend took the balance below
//! the key's `low_at` (`plan::CreditsDoc::crossed_low`, from the balance
//! the spend answered and the cost): only that request sends its marker's `SET NX`
//! (the refill interval's rest as lifetime; credits that never refill,
//! none: once), so a key without `low_at`, or a spend that crosses
//! nothing, costs no command.
//!
//! `key.new_network` is told by the probe [`Signals::network_probe`] puts in
//! the finish round trip a success already has (`SET apinet:<p>:<k>:<net>
//! 1 EX <days> GET`: no answer means no use from that network for
//! `KEYWARD_NEW_NETWORK_DAYS`). The memo skips the probe for a network this
//! instance saw the key use within the hour, so a warm success sends no
//! extra command; only a request whose probe found the network new pays a
//! round trip, to append its event.

use std::net::IpAddr;
use std::time::Duration;

use super::{Event, EventType};
use crate::clock::now;
use crate::config::Config;
use crate::key::ApiKey;
use crate::plan::CreditsDoc;
use crate::store::{names, Store};

/// How long the memo trusts that a key was seen from a network.
const SEEN_FOR: f64 = 3600.0;
/// How long a marker lives when its window has no end to name (credits
/// that never refill): one notice per hour at most while they are out.
const NO_REFILL_SECS: u64 = 3600;

/// A refusal webhooks hear about.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Over a limit: the window that refused (`minute`, or a plan's), its
    /// limit, and the seconds until it ends.
    RateLimited {
        window: &'static str,
        limit: u64,
        reset: u64,
    },
    /// A wrong secret, with the key's wrong secrets this minute before it.
    BadSecret { before: Option<u64>, reset: u64 },
    /// Credits short, and the seconds until they refill, if they do.
    CreditsExhausted { refill_in: Option<u64> },
}

pub struct Signals {
    /// Marker or probe name → until when (Unix seconds) it needs no command.
    memo: moka::sync::Cache<String, f64>,
    bad_secrets_per_minute: u64,
    network_ttl: u64,
}

impl Signals {
    pub fn new(config: &Config) -> Self {
        Self {
            memo: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            bad_secrets_per_minute: config.bad_secret_hashes_per_minute,
            network_ttl: config.new_network_days * 86_400,
        }
    }

    fn fresh(&self, name: &str) -> bool {
        self.memo.get(name).is_some_and(|until| until > now())
    }

    /// The probe for a success with a client address: the Redis key to
    /// `SET ... GET` and its lifetime, unless this instance saw the key use
    /// that network within the hour.
    pub fn network_probe(&self, key: &ApiKey, ip: Option<IpAddr>) -> Option<(String, u64)> {
        let network = crate::net::network_of(ip?).to_string();
        let name = names::key_network(key.project_id.as_str(), key.key_id.as_str(), &network);
        if self.fresh(&name) {
            return None;
        }
        Some((name, self.network_ttl))
    }

    /// The probe `name` went out with a success that was answered: this
    /// instance need not send it again within the hour. (A validation that
    /// ended otherwise, a failsafe answer, probes again next time.)
    pub fn probed(&self, name: String) {
        self.memo.insert(name, now() + SEEN_FOR);
    }

    /// A success whose probe found the network new: `key.new_network`.
    pub async fn new_network(&self, store: &Store, key: &ApiKey, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let network = crate::net::network_of(ip).to_string();
        let event = Event::key(
            EventType::KeyNewNetwork,
            key.project_id.as_str(),
            key.key_id.as_str(),
        )
        .with("network", network);
        if let Err(e) = store.emit(&event).await {
            super::lost(event.kind, &e);
        }
    }

    /// A refusal: its event, if this is the first of its key and window.
    pub async fn refused(&self, store: &Store, key: &ApiKey, refusal: Refusal) {
        let (project, key_id) = (key.project_id.as_str(), key.key_id.as_str());
        let (kind, window, ttl, event) = match refusal {
            Refusal::RateLimited {
                window,
                limit,
                reset,
            } => {
                let event = Event::key(EventType::KeyRateLimited, project, key_id)
                    .with("window", window)
                    .with("limit", limit)
                    .with("retry_after", reset);
                ("rate_limited", window, reset, event)
            }
            Refusal::BadSecret { before, reset } => {
                // Reaching the threshold: this wrong secret is its Nth or later.
                let reached = before.is_some_and(|n| n + 1 >= self.bad_secrets_per_minute);
                if !reached {
                    return;
                }
                let event = Event::key(EventType::KeySecretAttack, project, key_id)
                    .with("wrong_secrets_per_minute", self.bad_secrets_per_minute);
                ("secret_attack", "minute", reset, event)
            }
            Refusal::CreditsExhausted { refill_in } => {
                let mut event = Event::key(EventType::KeyCreditsExhausted, project, key_id);
                if let Some(refill_in) = refill_in {
                    event = event.with("refill_in", refill_in);
                }
                (
                    "credits_exhausted",
                    "credits",
                    refill_in.unwrap_or(NO_REFILL_SECS),
                    event,
                )
            }
        };
        let marker = names::key_event(project, key_id, &format!("{kind}:{window}"));
        if self.fresh(&marker) {
            return;
        }
        let ttl = ttl.max(1);
        match store.emit_once(&marker, Some(ttl), &event, false).await {
            Ok(_) => {
                self.memo.insert(marker, now() + ttl as f64);
            }
            Err(e) => super::lost(event.kind, &e),
        }
    }

    /// A pass whose spend took the balance (`remaining` now) below the
    /// key's `low_at`: `key.credits_low`, unless it was sent in this refill
    /// interval (for credits that never refill: ever).
    pub async fn credits_low(
        &self,
        store: &Store,
        key: &ApiKey,
        credits: &CreditsDoc,
        remaining: i64,
    ) {
        let (project, key_id) = (key.project_id.as_str(), key.key_id.as_str());
        let (period, refill_in) = credits.period(now());
        let marker = names::key_event(project, key_id, &format!("credits_low:{period}"));
        if self.fresh(&marker) {
            return;
        }
        let event = Event::key(EventType::KeyCreditsLow, project, key_id)
            .with("credits_remaining", remaining)
            .with("low_at", credits.low_at.unwrap_or_default());
        match store.emit_once(&marker, refill_in, &event, false).await {
            Ok(_) => {
                // Without a refill the memo's own hour bounds it.
                let ttl = refill_in.unwrap_or(NO_REFILL_SECS);
                self.memo.insert(marker, now() + ttl as f64);
            }
            Err(e) => super::lost(event.kind, &e),
        }
    }
}
