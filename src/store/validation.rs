//! The validation path's commands, with the `validator` user.
//!
//! Each step's commands are sent together on one pool client rather than
//! as a fred `Pipeline`: fred writes a command when its future is first
//! polled, `futures::join!` polls in the order written (so the wrong-secret
//! counter's `EXPIRE NX` follows its `INCR`), and fred's router flushes the socket only once no
//! command is queued behind the one it writes, so a step goes out in one
//! write. fred 10.1 flushes after each command of a `Pipeline` unless more
//! commands are already queued, which cost a system call, and a wake-up of
//! Redis, per command (ARCHITECTURE.md has the measurement).
//!
//! Each command's future is boxed (`Box::pin`): a fred 10.1 command future
//! is about 10 KB, and a future holds inline every future it may await, so
//! unboxed they made a validation's future 61 KB, which each `.await` and
//! axum's boxing of the handler copied whole.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use fred::clients::Client;
use fred::prelude::{Error as FredError, HashesInterface, KeysInterface, StreamsInterface, Value};
use fred::types::ExpireOptions;
use futures::future::{join_all, OptionFuture};

use super::{
    get_doc, is_refused, is_wrongtype, key_doc, names, now, report_unreadable, unavailable, Store,
    COUNTER_TTL_SECS,
};
use super::{Audit, Effects, Lookup, Read};
use crate::audit::Summary;
use crate::error::{Error, Result};
use crate::hash::Remembered;
use crate::key::{KeyId, ProjectId};
use crate::telemetry::metric;

type Reply = std::result::Result<Value, FredError>;

/// Awaits commands sent together, timing their round trip.
pub(super) async fn together<F: Future>(commands: F) -> F::Output {
    let started = Instant::now();
    let replies = commands.await;
    metrics::histogram!(metric::REDIS_ROUNDTRIP).record(started.elapsed().as_secs_f64());
    replies
}

/// `EXPIRE counter 120 NX`: only the first use of a window sets its TTL.
fn expire_nx<'a>(client: &'a Client, counter: &'a str) -> impl Future<Output = Reply> + 'a {
    client.expire(counter, COUNTER_TTL_SECS, Some(ExpireOptions::NX))
}

/// The answer of a counter command (`INCR`, or `GET` of a counter that may
/// be missing: 0); a failure is a 503 if the decision needs it.
fn counter(reply: Reply) -> Result<u64> {
    reply
        .map_err(unavailable)?
        .convert::<Option<u64>>()
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::Unavailable(format!("a counter is not a number: {e}")))
}

/// Use counters owed a `DECR` (a counted use to take back) or an expiry:
/// what a validation's writes could not settle, by counter, with the
/// `DECR`s owed. The flusher sends them again until Redis takes them.
#[derive(Default)]
pub struct Unsettled(Mutex<HashMap<String, u32>>);

impl Unsettled {
    fn owed(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // Plain counts, consistent after every statement.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owe(&self, counter: String, decrs: u32) {
        *self.owed().entry(counter).or_default() += decrs;
    }

    fn take(&self) -> HashMap<String, u32> {
        std::mem::take(&mut *self.owed())
    }
}

/// Takes `decrs` counted uses back from `counter` (`DECR`) and makes sure
/// it expires (`EXPIRE NX`: a TTL already set stands); what Redis did not
/// take is owed to `unsettled`, and the first failure returned. A `DECR`
/// Redis refused did not run and is owed; one whose answer was lost (a
/// timeout, a connection lost) may have run, and is not sent again: taking a
/// use back twice would let the key past its limit, while a use too many
/// only refuses sooner, until its window ends.
async fn settle(
    client: &Client,
    unsettled: &Unsettled,
    counter: String,
    decrs: u32,
) -> Option<FredError> {
    let (taken, expiry) = futures::join!(
        join_all((0..decrs).map(|_| client.decr::<Value, _>(&counter))),
        expire_nx(client, &counter),
    );
    let mut first = None;
    let mut owed = 0;
    for e in taken.into_iter().filter_map(Result::err) {
        owed += u32::from(is_refused(&e));
        first.get_or_insert(e);
    }
    let expires = match expiry {
        Ok(_) => true,
        Err(e) => {
            first.get_or_insert(e);
            false
        }
    };
    if owed > 0 || !expires {
        unsettled.owe(counter, owed);
    }
    first
}

impl Store {
    /// Round trip 1 for a secret not verified before: the key's document
    /// and this minute's use and wrong-secret counters, each answered on its
    /// own.
    pub async fn read(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Read {
        let client = self.pool.next();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        let bad_key = names::bad(project.as_str(), key_id.as_str(), minute);
        let verified_key = names::verified(project.as_str(), key_id.as_str());
        let (doc, used, bad, remembered) = together(async {
            futures::join!(
                Box::pin(get_doc(client, &doc_key)),
                Box::pin(client.get::<Value, _>(&used_key)),
                Box::pin(client.get::<Value, _>(&bad_key)),
                OptionFuture::from(
                    self.remembers
                        .then(|| Box::pin(client.hgetall::<Remembered, _>(&verified_key)))
                ),
            )
        })
        .await;
        Read {
            doc: read_doc(&doc_key, doc),
            used: counter(used),
            bad: counter(bad),
            // Unreadable (an old ACL, another type): Argon2id decides.
            remembered: remembered.and_then(Result::ok).unwrap_or_default(),
        }
    }

    /// Round trip 1 for a secret verified before: the key's document, and
    /// this use counted against this minute's window (`INCR`); `used` is the
    /// count including it (1: a new window, whose expiry `finish` sets).
    pub async fn read_counting(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Read {
        let client = self.pool.next();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        let (doc, used) = together(async {
            futures::join!(
                Box::pin(get_doc(client, &doc_key)),
                Box::pin(client.incr::<Value, _>(&used_key)),
            )
        })
        .await;
        Read {
            doc: read_doc(&doc_key, doc),
            used: counter(used),
            bad: Ok(0),
            remembered: Remembered::new(),
        }
    }

    /// This minute's right-secret validations, read (`GET`) without counting.
    pub async fn used(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<u64> {
        let client = self.pool.next();
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        counter(together(Box::pin(client.get::<Value, _>(&used_key))).await)
    }

    /// Counts a right-secret validation against this minute's window
    /// (`INCR`) and returns the count including it (1: a new window, whose
    /// expiry `finish` sets). The INCR's own result decides the 429, so the
    /// decision is exact under any concurrency.
    pub async fn count_use(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<u64> {
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        counter(together(Box::pin(self.pool.next().incr::<Value, _>(&used_key))).await)
    }

    /// The last round trip of a validation, its only writes: `effects`'
    /// audit entry (unless the anonymous budget only counts it for a
    /// summary, see `audit`), the new window's expiry, wrong-secret count,
    /// undone use and a verified secret's digest.
    /// Nothing to write is no round trip. `Err` when the audit entry was due
    /// and not written; the other writes are bookkeeping, so their failure
    /// is logged and counted, not answered, and what the use counters did
    /// not take is owed to the flusher (see [`Unsettled`]).
    pub async fn finish(&self, effects: Effects<'_>) -> Result<()> {
        let Effects {
            audit,
            minute,
            new_window,
            bad_secret,
            undo_use,
            remember,
        } = effects;
        let (project, key_id) = (audit.project_id, audit.key_id);
        let entry = self.audit_budget.admit(audit.reason).then_some(audit);
        let used = (new_window || undo_use).then(|| names::used(project, key_id, minute));
        let bad = bad_secret.then(|| names::bad(project, key_id, minute));
        let verified = remember.map(|r| (names::verified(project, key_id), r));
        if entry.is_none() && used.is_none() && bad.is_none() && verified.is_none() {
            return Ok(());
        }
        let client = self.pool.next();
        let (expire, decr, incr_bad, expire_bad, hset, entry) = together(async {
            futures::join!(
                OptionFuture::from(
                    used.as_ref()
                        .filter(|_| new_window)
                        .map(|k| Box::pin(client.expire::<Value, _>(k, COUNTER_TTL_SECS, None)))
                ),
                OptionFuture::from(
                    used.as_ref()
                        .filter(|_| undo_use)
                        .map(|k| Box::pin(client.decr::<Value, _>(k)))
                ),
                OptionFuture::from(bad.as_ref().map(|k| Box::pin(client.incr::<Value, _>(k)))),
                OptionFuture::from(bad.as_ref().map(|k| Box::pin(expire_nx(client, k)))),
                OptionFuture::from(verified.as_ref().map(|(k, (field, value))| {
                    Box::pin(client.hset::<Value, _, _>(k, (*field, *value)))
                })),
                OptionFuture::from(entry.map(|a| Box::pin(self.xadd_audit(client, a)))),
            )
        })
        .await;
        // What the counters did not take is owed (see `Unsettled`).
        let decr_owed = matches!(&decr, Some(Err(e)) if is_refused(e));
        if let Some(used) = used.filter(|_| decr_owed || matches!(expire, Some(Err(_)))) {
            self.unsettled.owe(used, u32::from(decr_owed));
        }
        if let Some(bad) = bad.filter(|_| matches!(expire_bad, Some(Err(_)))) {
            self.unsettled.owe(bad, 0);
        }
        let bookkeeping = [
            ("the new window's expiry", expire),
            ("undoing a refused use", decr),
            ("wrong-secret count", incr_bad),
            ("wrong-secret count expiry", expire_bad),
            ("the verified secret's digest", hset),
        ];
        for (what, reply) in bookkeeping {
            if let Some(Err(e)) = reply {
                let e = unavailable(e);
                tracing::warn!(error = %e, "validation bookkeeping not written: {what}");
            }
        }
        match entry {
            Some(Err(e)) if crate::audit::is_anonymous(audit.reason) => {
                // Not lost: counted into its second's summary, which the
                // flusher writes (and retries) like any other.
                let second = now() as u64;
                let reason = audit.reason;
                self.audit_budget.put_back(&[Summary {
                    second,
                    reason,
                    count: 1,
                }]);
                Err(unavailable(e))
            }
            Some(Err(e)) => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    /// A pass of `project`/`key_id`, for `apimeta` (written by the flusher).
    pub fn count_usage(&self, project: &ProjectId, key_id: &KeyId) {
        self.usage.add(project.as_str(), key_id.as_str(), now());
    }

    /// After a validation that ended without `finish`'s round trip (or
    /// whose round trip failed): in the background, takes back a use that
    /// was counted (`undo`) and makes sure its window expires; what Redis
    /// does not take now, the flusher sends again (see [`settle`]). Never in
    /// the answer's way: Redis was just failing.
    pub fn settle_in_background(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        minute: u64,
        undo: bool,
    ) {
        let used = names::used(project.as_str(), key_id.as_str(), minute);
        let (client, unsettled) = (self.pool.next().clone(), self.unsettled.clone());
        tokio::spawn(async move {
            let failed = together(settle(&client, &unsettled, used, u32::from(undo))).await;
            if let Some(e) = failed {
                let e = unavailable(e);
                tracing::warn!(error = %e, "a counted use is not settled yet: Redis is failing");
            }
        });
    }

    /// Sends again what settles and finishes could not write to the use
    /// counters (see [`Unsettled`]).
    pub(super) async fn settle_owed(&self) -> Result<()> {
        let owed = self.unsettled.take();
        if owed.is_empty() {
            return Ok(());
        }
        let client = self.pool.next();
        let settles = owed
            .into_iter()
            .map(|(counter, decrs)| settle(client, &self.unsettled, counter, decrs));
        let failed = together(join_all(settles)).await;
        failed
            .into_iter()
            .flatten()
            .next()
            .map_or(Ok(()), |e| Err(unavailable(e)))
    }

    /// `XADD` of a validation's audit entry to its stream.
    fn xadd_audit<'a>(
        &'a self,
        client: &'a Client,
        audit: Audit<'_>,
    ) -> impl Future<Output = Reply> + 'a {
        let mut fields = vec![
            ("ts", now().to_string()),
            ("project_id", audit.project_id.to_owned()),
            ("key_id", audit.key_id.to_owned()),
            ("result", audit.result.to_owned()),
            ("reason", audit.reason.to_owned()),
            ("client", self.client_name.clone()),
        ];
        if let Some(origin) = audit.origin {
            fields.push(("method", origin.method.to_owned()));
            fields.push(("path", origin.path.to_owned()));
        }
        let stream = names::audit_keylookup(audit.project_id, audit.key_id, self.audit_shards);
        client.xadd(stream, false, self.keylookup_cap(), "*", fields)
    }

    /// Logs and counts a key whose stored hash is not a PHC string, found
    /// while verifying a secret (the document itself parsed).
    pub fn report_corrupt_hash(&self, project: &ProjectId, key_id: &KeyId) {
        let redis_key = names::apikey(project.as_str(), key_id.as_str());
        report_unreadable(&redis_key, "secret_hash is not an Argon2 PHC string");
    }

    /// Writes the anonymous-denial summaries that are due (see `audit`):
    /// those of seconds that are over, or all of them when `all`. Each is a
    /// single `XADD`, sent together, not a fred `Pipeline`, for the reason
    /// `flush_usage` gives; a summary Redis did not take is kept for the
    /// next attempt, so none that Redis took is written twice.
    pub async fn flush_summaries(&self, all: bool) -> Result<()> {
        let due = self.audit_budget.take_due(all);
        if due.is_empty() {
            return Ok(());
        }
        let client = self.pool.next();
        let writes = due.iter().map(|summary| self.xadd_summary(client, summary));
        let replies = together(join_all(writes)).await;
        let mut error = None;
        let mut failed = Vec::new();
        for (summary, reply) in due.into_iter().zip(replies) {
            if let Err(e) = reply {
                error.get_or_insert(e);
                failed.push(summary);
            }
        }
        self.audit_budget.put_back(&failed);
        error.map_or(Ok(()), |e| Err(unavailable(e)))
    }

    /// `XADD` of one anonymous-denial summary.
    fn xadd_summary<'a>(
        &'a self,
        client: &'a Client,
        summary: &Summary,
    ) -> impl Future<Output = Reply> + 'a {
        let fields = vec![
            ("ts", now().to_string()),
            ("project_id", String::new()),
            ("key_id", String::new()),
            ("result", "denied".to_owned()),
            ("reason", summary.reason.to_owned()),
            ("client", self.client_name.clone()),
            ("summary", "1".to_owned()),
            ("second", summary.second.to_string()),
            ("count", summary.count.to_string()),
        ];
        // Summaries name no key: they go where a key-less entry goes.
        let stream = names::audit_keylookup("", "", self.audit_shards);
        client.xadd(stream, false, self.keylookup_cap(), "*", fields)
    }

    /// The flusher task: summaries of each second, and the usage counted
    /// in it, about a second later; and what the use counters are owed.
    pub(super) async fn flush_every_second(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_summaries(false).await {
                tracing::warn!(error = %e, "audit summaries not written yet; retrying");
            }
            if let Err(e) = self.flush_usage().await {
                tracing::warn!(error = %e, "usage counts not written yet; retrying");
            }
            if let Err(e) = self.settle_owed().await {
                tracing::warn!(error = %e, "counted uses not settled yet; retrying");
            }
        }
    }
}

/// What `JSON.GET` of a key document found.
fn read_doc(doc_key: &str, doc: Result<Value, FredError>) -> Result<Lookup> {
    let raw = match doc {
        Err(e) if super::is_noperm(&e) => return Ok(Lookup::Forbidden),
        // A key of another type than JSON: not a key document.
        Err(e) if is_wrongtype(&e) => {
            report_unreadable(doc_key, "the key is not a JSON document");
            return Ok(Lookup::Unreadable);
        }
        Err(e) => return Err(unavailable(e)),
        Ok(Value::Null) => return Ok(Lookup::Missing),
        Ok(value) => value,
    };
    let Some(raw) = raw.as_str() else {
        report_unreadable(doc_key, "JSON.GET did not answer with text");
        return Ok(Lookup::Unreadable);
    };
    Ok(match key_doc(doc_key, &raw) {
        Some(doc) => Lookup::Found(Box::new(doc)),
        None => Lookup::Unreadable,
    })
}
