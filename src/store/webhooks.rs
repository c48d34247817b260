//! Webhooks in Redis: the endpoints (manager), the events stream that the
//! validation path (validator) and the admin path (manager) append to, and
//! the delivery's working keys (manager): the queue of messages due, the
//! retries waiting, each endpoint's recent attempts.
//!
//! Every pending thing is in Redis, so any instance with the manager user
//! delivers: the events and the queue are streams read through one
//! consumer group, and an entry read by an instance that died is claimed
//! by another once it has been pending longer than an attempt can take
//! (`XAUTOCLAIM`). An entry is acknowledged (and deleted) only once what it
//! led to is written: messages for its endpoints, or the attempt's outcome
//! and any retry. So a crash repeats work, never loses it: delivery is at
//! least once, and a message keeps its `webhook-id` when it is repeated.

use std::collections::HashMap;

use fred::prelude::{
    KeysInterface, Pool, RedisJsonInterface, SortedSetsInterface, StreamsInterface, Value,
};
use fred::types::{Expiration, SetOptions};

use super::model::{Delivery, Message};
use super::{
    data_error, insert_indexed, names, parse_problem, read_docs, read_owned, report_unreadable,
};
use super::{index_page, unavailable, Store, WebhookDoc};
use crate::error::{Error, Result};
use crate::event::Event;

/// Events kept unfanned at most (no instance with the manager user running
/// for a long while): past it, the oldest are trimmed.
const EVENTS_MAXLEN: i64 = 100_000;
/// Attempts kept per endpoint for `GET .../deliveries`.
const DELIVERIES_MAXLEN: i64 = 500;

/// A stream entry as read: its id and its fields.
pub type Entry = (String, HashMap<String, String>);

impl Store {
    /// Stores a new endpoint and indexes it; `false` if the id is taken.
    pub async fn insert_webhook(&self, doc: &WebhookDoc) -> Result<bool> {
        let key = names::webhook(self.client_name(), &doc.webhook_id);
        let index = names::webhooks(self.client_name());
        insert_indexed(self.admin()?, &key, doc, &index, &doc.webhook_id).await
    }

    /// The endpoint's document; `None` if there is none. One that cannot be
    /// read is `Error::Unreadable` (logged).
    pub async fn get_webhook(&self, webhook_id: &str) -> Result<Option<WebhookDoc>> {
        let key = names::webhook(self.client_name(), webhook_id);
        read_owned(self.admin()?, &key, webhook_doc).await
    }

    /// Every endpoint, in id order; unreadable ones are logged and left out.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookDoc>> {
        let admin = self.admin()?;
        let index = names::webhooks(self.client_name());
        let ids: Vec<String> = admin
            .zrange(&index, 0, -1, None, false, None, false)
            .await
            .map_err(|e| data_error(&index, e))?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| names::webhook(self.client_name(), id))
            .collect();
        let docs = read_docs(admin, &keys).await?;
        Ok(keys
            .iter()
            .zip(docs)
            .filter_map(|(key, raw)| webhook_doc(key, &raw?))
            .collect())
    }

    /// Up to `limit` endpoints after `cursor`, in id order, and the cursor
    /// of the next page; unreadable ones are logged and left out.
    pub async fn webhooks_page(
        &self,
        cursor: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<WebhookDoc>, Option<String>)> {
        let index = names::webhooks(self.client_name());
        let key_of = |id: &str| names::webhook(self.client_name(), id);
        index_page(self.admin()?, &index, key_of, webhook_doc, cursor, limit).await
    }

    /// Removes the endpoint: its messages still pending are dropped when
    /// their turn comes. Its recent attempts expire with it (a day later).
    pub async fn delete_webhook(&self, webhook_id: &str) -> Result<()> {
        let admin = self.admin()?;
        let index = names::webhooks(self.client_name());
        admin
            .zrem::<(), _, _>(&index, webhook_id)
            .await
            .map_err(unavailable)?;
        let key = names::webhook(self.client_name(), webhook_id);
        admin.del::<(), _>(&key).await.map_err(unavailable)?;
        let log = names::webhook_deliveries(self.client_name(), webhook_id);
        admin
            .expire::<(), _>(&log, 86_400, None)
            .await
            .map_err(unavailable)
    }

    /// Marks the endpoint disabled (it answered `410 Gone`).
    pub async fn disable_webhook(&self, webhook_id: &str) -> Result<()> {
        let key = names::webhook(self.client_name(), webhook_id);
        let values = vec![
            (key.as_str(), "$.disabled", "true".to_owned()),
            (key.as_str(), "$.disabled_at", super::now().to_string()),
        ];
        self.admin()?
            .json_mset::<(), _, _, _>(values)
            .await
            .map_err(|e| data_error(&key, e))
    }

    /// Appends `event` to the events stream, as the validator user.
    pub async fn emit(&self, event: &Event) -> Result<()> {
        xadd_event(&self.validator, self.client_name(), event).await
    }

    /// Appends `event` to the events stream with the call's admin audit
    /// entry (the manager user).
    pub(super) async fn emit_as_manager(&self, event: &Event) -> Result<()> {
        xadd_event(self.admin()?, self.client_name(), event).await
    }

    /// Appends `event` unless an instance did for `marker` within its
    /// lifetime (`SET marker NX EX ttl`; with no `ttl`, `SET marker NX`:
    /// ever): once per key and window, across instances. `true` if this
    /// call appended it. The validator user on the validation path;
    /// `as_manager` for the expiry sweep.
    pub async fn emit_once(
        &self,
        marker: &str,
        ttl_secs: Option<u64>,
        event: &Event,
        as_manager: bool,
    ) -> Result<bool> {
        let pool = match as_manager {
            true => self.admin()?,
            false => &self.validator,
        };
        let ttl = ttl_secs.map(|s| Expiration::EX(s.clamp(1, i64::MAX as u64) as i64));
        let set: Option<String> = pool
            .set(marker, "1", ttl, Some(SetOptions::NX), false)
            .await
            .map_err(|e| data_error(marker, e))?;
        if set.is_none() {
            return Ok(false);
        }
        xadd_event(pool, self.client_name(), event).await?;
        Ok(true)
    }

    /// Creates the consumer group of the events stream and of the queue
    /// (from their start, so nothing appended before is skipped); a group
    /// that exists is left as it is.
    pub async fn webhook_groups(&self) -> Result<()> {
        let admin = self.admin()?;
        for stream in [
            names::webhook_events(self.client_name()),
            names::webhook_queue(self.client_name()),
        ] {
            create_group(admin, &stream).await?;
        }
        Ok(())
    }

    /// Up to `count` events to fan out for `consumer`: first those another
    /// consumer has held longer than `stale_ms` (it died), then new ones.
    pub async fn next_events(
        &self,
        consumer: &str,
        count: u64,
        stale_ms: u64,
    ) -> Result<Vec<Entry>> {
        let stream = names::webhook_events(self.client_name());
        next_entries(self.admin()?, &stream, consumer, count, stale_ms).await
    }

    /// Acknowledges and deletes a fanned-out event.
    pub async fn done_event(&self, id: &str) -> Result<()> {
        let stream = names::webhook_events(self.client_name());
        done(self.admin()?, &stream, id).await
    }

    /// Queues a message for an attempt now.
    pub async fn enqueue(&self, message: &Message) -> Result<String> {
        let stream = names::webhook_queue(self.client_name());
        self.admin()?
            .xadd::<String, _, _, _, _>(&stream, false, None, "*", message.fields())
            .await
            .map_err(|e| data_error(&stream, e))
    }

    /// Up to `count` messages due, as [`Store::next_events`] reads events.
    pub async fn next_messages(
        &self,
        consumer: &str,
        count: u64,
        stale_ms: u64,
    ) -> Result<Vec<Entry>> {
        let stream = names::webhook_queue(self.client_name());
        next_entries(self.admin()?, &stream, consumer, count, stale_ms).await
    }

    /// Acknowledges and deletes a message whose attempt is recorded.
    pub async fn done_message(&self, id: &str) -> Result<()> {
        let stream = names::webhook_queue(self.client_name());
        done(self.admin()?, &stream, id).await
    }

    /// Keeps `message` for a retry at `due_ms` (Unix milliseconds).
    pub async fn schedule_retry(&self, message: &Message, due_ms: u64) -> Result<()> {
        let retries = names::webhook_retries(self.client_name());
        let member = serde_json::to_string(message).map_err(|e| Error::Internal(e.to_string()))?;
        self.admin()?
            .zadd::<(), _, _>(&retries, None, None, false, false, (due_ms as f64, member))
            .await
            .map_err(|e| data_error(&retries, e))
    }

    /// Moves up to `count` retries that are due into the queue. Each is
    /// queued before it leaves the retries, so a crash between the two
    /// queues it twice, never not at all; of two instances moving the same
    /// one, the one whose `ZREM` lost deletes its copy. Answers how many.
    pub async fn move_due_retries(&self, now_ms: u64, count: u64) -> Result<usize> {
        let admin = self.admin()?;
        let retries = names::webhook_retries(self.client_name());
        let queue = names::webhook_queue(self.client_name());
        let due: Vec<String> = admin
            .zrangebyscore(
                &retries,
                "-inf",
                now_ms as f64,
                false,
                Some((0, count as i64)),
            )
            .await
            .map_err(|e| data_error(&retries, e))?;
        let mut moved = 0;
        for member in due {
            let Ok(message) = serde_json::from_str::<Message>(&member) else {
                report_unreadable(&retries, "a retry is not a message; dropped");
                let _: std::result::Result<(), _> = admin.zrem(&retries, member.as_str()).await;
                continue;
            };
            let id = self.enqueue(&message).await?;
            let removed: i64 = admin
                .zrem(&retries, member.as_str())
                .await
                .map_err(unavailable)?;
            if removed == 0 {
                // Another instance moved it first: take this copy back.
                let _: std::result::Result<(), _> = admin.xdel(&queue, id.as_str()).await;
            } else {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Records one attempt in the endpoint's recent deliveries.
    pub async fn record_delivery(&self, webhook_id: &str, delivery: &Delivery) -> Result<()> {
        let log = names::webhook_deliveries(self.client_name(), webhook_id);
        let json = serde_json::to_string(delivery).map_err(|e| Error::Internal(e.to_string()))?;
        let cap = ("MAXLEN", "~", DELIVERIES_MAXLEN);
        self.admin()?
            .xadd::<(), _, _, _, _>(&log, false, cap, "*", vec![("delivery", json)])
            .await
            .map_err(|e| data_error(&log, e))
    }

    /// The endpoint's latest `limit` attempts, newest first.
    pub async fn deliveries(&self, webhook_id: &str, limit: u64) -> Result<Vec<Delivery>> {
        let log = names::webhook_deliveries(self.client_name(), webhook_id);
        let entries: Vec<Entry> = self
            .admin()?
            .xrevrange(&log, "+", "-", Some(limit))
            .await
            .map_err(|e| data_error(&log, e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(_, fields)| serde_json::from_str(fields.get("delivery")?).ok())
            .collect())
    }
}

async fn xadd_event(pool: &Pool, deployment: &str, event: &Event) -> Result<()> {
    let stream = names::webhook_events(deployment);
    let data = serde_json::Value::Object(event.data.clone()).to_string();
    let fields = vec![
        ("type", event.kind.as_str().to_owned()),
        ("at", event.at.to_string()),
        ("project_id", event.project_id.clone()),
        ("key_id", event.key_id.clone()),
        ("data", data),
    ];
    let cap = ("MAXLEN", "~", EVENTS_MAXLEN);
    pool.xadd::<(), _, _, _, _>(&stream, false, cap, "*", fields)
        .await
        .map_err(|e| data_error(&stream, e))
}

/// Entries pending with another consumer for over `stale_ms`, claimed,
/// then (if room is left) new ones.
async fn next_entries(
    admin: &Pool,
    stream: &str,
    consumer: &str,
    count: u64,
    stale_ms: u64,
) -> Result<Vec<Entry>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    // Entries are deleted once done, so an empty stream has nothing new or
    // pending: one cheap command per idle tick, and the group is left as
    // it is.
    let len: u64 = admin
        .xlen(stream)
        .await
        .map_err(|e| data_error(stream, e))?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let group = names::WEBHOOK_GROUP;
    let claimed: std::result::Result<(String, Vec<Entry>), _> = admin
        .xautoclaim_values(stream, group, consumer, stale_ms, "0-0", Some(count), false)
        .await;
    let (_, mut entries) = match claimed {
        // The group went with Redis's data (a restart without persistence,
        // a flush) and the stream is back: the group is made again, from
        // its start, and read on the next tick.
        Err(e) if e.details().starts_with("NOGROUP") => {
            create_group(admin, stream).await?;
            return Ok(Vec::new());
        }
        claimed => claimed.map_err(|e| data_error(stream, e))?,
    };
    let room = count.saturating_sub(entries.len() as u64);
    if room > 0 {
        // Nil when nothing is new.
        let new: Value = admin
            .xreadgroup(group, consumer, Some(room), None, false, stream, ">")
            .await
            .map_err(|e| data_error(stream, e))?;
        if !new.is_null() {
            let new: HashMap<String, Vec<Entry>> =
                new.into_xread_response().map_err(unavailable)?;
            entries.extend(new.into_values().flatten());
        }
    }
    Ok(entries)
}

/// Creates the group of `stream` from its start (and the stream, if
/// missing); a group that exists is left as it is.
async fn create_group(admin: &Pool, stream: &str) -> Result<()> {
    let created: std::result::Result<(), _> = admin
        .xgroup_create(stream, names::WEBHOOK_GROUP, "0", true)
        .await;
    match created {
        Err(e) if !e.details().starts_with("BUSYGROUP") => Err(data_error(stream, e)),
        _ => Ok(()),
    }
}

async fn done(admin: &Pool, stream: &str, id: &str) -> Result<()> {
    admin
        .xack::<(), _, _, _>(stream, names::WEBHOOK_GROUP, id)
        .await
        .map_err(unavailable)?;
    admin
        .xdel::<(), _, _>(stream, id)
        .await
        .map_err(unavailable)
}

fn webhook_doc(redis_key: &str, raw: &str) -> Option<WebhookDoc> {
    serde_json::from_str(raw)
        .map_err(|e| report_unreadable(redis_key, &parse_problem("a webhook document", &e)))
        .ok()
}
