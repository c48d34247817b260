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
//! Each command's future is boxed (`Box::pin`): a future holds inline every
//! future it may await, and fred 10.1's command futures (about 7 KB as
//! published, 1.2 KB with `vendor/fred`'s patch) made a validation's future
//! 61 KB unboxed, which each `.await` and axum's boxing of the handler
//! copied whole.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use fred::clients::Client;
use fred::prelude::{Error as FredError, HashesInterface, KeysInterface, StreamsInterface, Value};
use fred::types::{Expiration, ExpireOptions};
use futures::future::{join_all, OptionFuture};

use super::entry::{field, Entry};
use super::{
    get_doc, is_refused, is_wrongtype, key_doc, names, now, report_unreadable, unavailable, Store,
    COUNTER_TTL_SECS,
};
use super::{Audit, Effects, Finished, Lookup, Read};
use crate::audit::{Reason, Summary, RESULT_DENIED};
use crate::error::{Error, Result};
use crate::hash::VerifiedDigests;
use crate::key::{KeyId, ProjectId};
use crate::telemetry::{metric, Handles};
use metrics::Histogram;

type Reply = std::result::Result<Value, FredError>;

/// Awaits commands sent together, timing their round trip.
pub(super) async fn together<F: Future>(commands: F) -> F::Output {
    let started = Instant::now();
    let replies = commands.await;
    let elapsed = started.elapsed().as_secs_f64();
    REDIS_ROUNDTRIP.with([], |h| h.record(elapsed));
    replies
}

static REDIS_ROUNDTRIP: Handles<Histogram, 0> = Handles::new(metric::REDIS_ROUNDTRIP, []);

/// `EXPIRE counter <COUNTER_TTL_SECS> NX`: only the first use of a window
/// sets its TTL.
fn expire_nx<'a>(client: &'a Client, counter: &'a str) -> impl Future<Output = Reply> + 'a {
    client.expire(counter, COUNTER_TTL_SECS, Some(ExpireOptions::NX))
}

/// `INCRBY counter delta`, or `GET` for a delta of 0.
fn spend_one<'a>(client: &'a Client, s: &'a Spend) -> impl Future<Output = Reply> + 'a {
    let counter = s.counter.as_str();
    async move {
        match s.delta {
            0 => client.get::<Value, _>(counter).await,
            delta => client.incr_by::<Value, _>(counter, delta).await,
        }
    }
}

/// A plan counter's answer: a count or a balance, which may be negative
/// (missing: 0).
fn balance(reply: Reply) -> Result<i64> {
    reply
        .map_err(unavailable)?
        .convert::<Option<i64>>()
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::Unavailable(format!("a counter is not a number: {e}")))
}

/// The answer of a counter command (`INCRBY`, or `GET` of a counter that may
/// be missing: 0); a failure is a 503 if the decision needs it.
fn counter(reply: Reply) -> Result<u64> {
    reply
        .map_err(unavailable)?
        .convert::<Option<u64>>()
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::Unavailable(format!("a counter is not a number: {e}")))
}

/// What a counter is owed: an `INCRBY` (a counted use to take back from a
/// window, negative; credits to give back, positive) and an expiry (its TTL
/// in seconds, set with `NX`: one already set stands).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    pub add: i64,
    pub expire: Option<i64>,
}

/// Counters owed what a validation's writes could not settle (see
/// [`Owed`]). The flusher sends them again until Redis takes them.
#[derive(Default)]
pub struct Unsettled(Mutex<HashMap<String, Owed>>);

impl Unsettled {
    fn owed(&self) -> MutexGuard<'_, HashMap<String, Owed>> {
        // Plain counts, consistent after every statement.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owe(&self, counter: String, owed: Owed) {
        let mut all = self.owed();
        let entry = all.entry(counter).or_default();
        entry.add += owed.add;
        entry.expire = entry.expire.or(owed.expire);
    }

    fn take(&self) -> HashMap<String, Owed> {
        std::mem::take(&mut *self.owed())
    }
}

/// Gives `counter` what it is owed: `DECRBY` (a use taken back) or
/// `INCRBY` (credits given back), and `EXPIRE NX`. What Redis
/// did not take is owed to `unsettled` again, and the first failure
/// returned. An `INCRBY` Redis refused did not run and is owed; one whose
/// answer was lost (a timeout, a connection lost) may have run, and is not
/// sent again: taking a use back twice would let the key past its limit,
/// while a use too many only refuses sooner, until its window ends (and
/// credits not given back are the safe side of a refusal).
async fn settle(
    client: &Client,
    unsettled: &Unsettled,
    counter: String,
    owed: Owed,
) -> Option<FredError> {
    let (added, expiry) = futures::join!(
        OptionFuture::from((owed.add != 0).then_some(async {
            match owed.add {
                back if back < 0 => client.decr_by::<Value, _>(&counter, -back).await,
                add => client.incr_by::<Value, _>(&counter, add).await,
            }
        })),
        OptionFuture::from(owed.expire.map(|ttl| client.expire::<Value, _>(
            &counter,
            ttl,
            Some(ExpireOptions::NX)
        ))),
    );
    let mut first = None;
    let mut again = Owed::default();
    if let Some(Err(e)) = added {
        if is_refused(&e) {
            again.add = owed.add;
        }
        first.get_or_insert(e);
    }
    if let Some(Err(e)) = expiry {
        again.expire = owed.expire;
        first.get_or_insert(e);
    }
    if again != Owed::default() {
        unsettled.owe(counter, again);
    }
    first
}

/// Failsafe 200s not audited yet, by (project, key id): (count, first,
/// last), written as summaries by the flusher.
pub(super) type Failsafes = Mutex<HashMap<(String, String), (u64, f64, f64)>>;

/// One of a plan's counters, spent in [`Store::spend`]: a window's
/// (`delta` the cost) or the credit balance (`delta` minus the cost, and
/// `init` the refill that creates the interval's balance: value and TTL).
#[derive(Debug, Clone)]
pub struct Spend {
    pub counter: String,
    pub delta: i64,
    pub init: Option<(i64, i64)>,
}

impl Store {
    /// Round trip 1 for a secret not verified before: the key's document
    /// and this minute's use and wrong-secret counters, each answered on its
    /// own.
    pub async fn read(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Read {
        let client = self.validator.next();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        let bad_key = names::bad(project.as_str(), key_id.as_str(), minute);
        let verified_key = names::verified(project.as_str(), key_id.as_str());
        let (doc, used, bad, verified_digests) = together(async {
            futures::join!(
                Box::pin(get_doc(client, &doc_key)),
                Box::pin(client.get::<Value, _>(&used_key)),
                Box::pin(client.get::<Value, _>(&bad_key)),
                OptionFuture::from(
                    self.shares_digests
                        .then(|| Box::pin(client.hgetall::<VerifiedDigests, _>(&verified_key)))
                ),
            )
        })
        .await;
        Read {
            doc: read_doc(&doc_key, doc),
            used: counter(used),
            bad: counter(bad),
            // Unreadable (an old ACL, another type): Argon2id decides.
            verified_digests: verified_digests.and_then(Result::ok).unwrap_or_default(),
        }
    }

    /// Round trip 1 for a secret verified before: the key's document, and
    /// this request's cost spent in this minute's window (`INCRBY cost`);
    /// `used` is the count including it (equal to the cost: a new window,
    /// whose expiry [`Store::write_effects`] sets).
    pub async fn read_counting(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        minute: u64,
        cost: u64,
    ) -> Read {
        let client = self.validator.next();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        let (doc, used) = together(async {
            futures::join!(
                Box::pin(get_doc(client, &doc_key)),
                Box::pin(client.incr_by::<Value, _>(&used_key, cost as i64)),
            )
        })
        .await;
        Read {
            doc: read_doc(&doc_key, doc),
            used: counter(used),
            bad: Ok(0),
            verified_digests: VerifiedDigests::new(),
        }
    }

    /// This minute's right-secret validations, read (`GET`) without counting.
    pub async fn used(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<u64> {
        let client = self.validator.next();
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        counter(together(Box::pin(client.get::<Value, _>(&used_key))).await)
    }

    /// Spends a right-secret validation's cost in this minute's window
    /// (`INCRBY cost`) and returns the count including it (equal to the
    /// cost: a new window, whose expiry [`Store::write_effects`] sets). The
    /// `INCRBY`'s own answer decides the 429, so the decision is exact
    /// under any concurrency.
    pub async fn spend_minute(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        minute: u64,
        cost: u64,
    ) -> Result<u64> {
        let used_key = names::used(project.as_str(), key_id.as_str(), minute);
        let client = self.validator.next();
        counter(together(Box::pin(client.incr_by::<Value, _>(&used_key, cost as i64))).await)
    }

    /// Spends a plan's counters in one round trip: each `INCRBY delta` (a
    /// `GET` for a delta of 0: spending nothing creates nothing), after the
    /// `SET NX` with its TTL of a balance that refills. Each answer (the
    /// count or balance after it) on its own.
    pub async fn spend(&self, spends: &[Spend]) -> Vec<Result<i64>> {
        let client = self.validator.next();
        let replies = together(join_all(spends.iter().map(|s| async move {
            if let Some((value, ttl)) = s.init {
                let set = client.set::<Value, _, _>(
                    &s.counter,
                    value,
                    Some(fred::types::Expiration::EX(ttl)),
                    Some(fred::types::SetOptions::NX),
                    false,
                );
                // Sent before the spend on the same connection: it runs first.
                // The spend's own answer says what it did; a refused `SET`
                // (the interval's balance not created) shows in it.
                let (set, spent) = futures::join!(set, spend_one(client, s));
                if let Err(e) = set {
                    tracing::warn!(error = %e, "a refill interval's balance not created");
                }
                spent
            } else {
                spend_one(client, s).await
            }
        })))
        .await;
        replies.into_iter().map(balance).collect()
    }

    /// The last round trip of a validation (`Validator::finish` sends it):
    /// its writes besides the spends whose answers are counts (the minute's
    /// and a plan's `INCRBY`): `effects`' audit entry (unless the anonymous budget only counts it for a
    /// summary, see `audit`), the new window's expiry, wrong-secret count,
    /// undone use and a verified secret's digest.
    /// Nothing to write is no round trip. `Err` when the audit entry was due
    /// and not written; the other writes are bookkeeping, so their failure
    /// is logged and counted, not answered, and what the use counters did
    /// not take is owed to the flusher (see [`Unsettled`]).
    pub async fn write_effects(&self, effects: Effects<'_>) -> Result<Finished> {
        let Effects {
            audit,
            minute,
            new_window,
            bad_secret,
            undo_use,
            digest_to_share,
            plan,
            network,
        } = effects;
        let (project, key_id) = (audit.project_id, audit.key_id);
        let entry = self.audit_budget.admit(audit.reason).then_some(audit);
        let used = (new_window || undo_use > 0).then(|| names::used(project, key_id, minute));
        let bad = bad_secret.then(|| names::bad(project, key_id, minute));
        let verified = digest_to_share.map(|r| (names::verified(project, key_id), r));
        if entry.is_none()
            && used.is_none()
            && bad.is_none()
            && verified.is_none()
            && plan.is_empty()
            && network.is_none()
        {
            return Ok(Finished::default());
        }
        let client = self.validator.next();
        let (expire, decr, incr_bad, expire_bad, hset, probe, entry) = together(async {
            futures::join!(
                OptionFuture::from(
                    used.as_ref()
                        .filter(|_| new_window)
                        .map(|k| Box::pin(client.expire::<Value, _>(k, COUNTER_TTL_SECS, None)))
                ),
                OptionFuture::from(
                    used.as_ref()
                        .filter(|_| undo_use > 0)
                        .map(|k| Box::pin(client.decr_by::<Value, _>(k, undo_use as i64)))
                ),
                OptionFuture::from(bad.as_ref().map(|k| Box::pin(client.incr::<Value, _>(k)))),
                OptionFuture::from(bad.as_ref().map(|k| Box::pin(expire_nx(client, k)))),
                OptionFuture::from(verified.as_ref().map(|(k, (field, value))| {
                    Box::pin(client.hset::<Value, _, _>(k, (*field, *value)))
                })),
                OptionFuture::from(network.map(|(name, ttl)| {
                    let ttl = Some(Expiration::EX(ttl as i64));
                    Box::pin(client.set::<Option<String>, _, _>(name, "1", ttl, None, true))
                })),
                OptionFuture::from(entry.map(|a| Box::pin(self.xadd_audit(client, a)))),
            )
        })
        .await;
        let plan_replies = match plan.is_empty() {
            true => Vec::new(),
            false => {
                join_all(plan.iter().map(|(counter, owed)| {
                    settle(client, &self.unsettled, counter.to_string(), *owed)
                }))
                .await
            }
        };
        // What the counters did not take is owed (see `Unsettled`).
        let decr_owed = matches!(&decr, Some(Err(e)) if is_refused(e));
        if let Some(used) = used.filter(|_| decr_owed || matches!(expire, Some(Err(_)))) {
            let owed = Owed {
                add: if decr_owed { -(undo_use as i64) } else { 0 },
                expire: matches!(expire, Some(Err(_))).then_some(COUNTER_TTL_SECS),
            };
            self.unsettled.owe(used, owed);
        }
        if let Some(bad) = bad.filter(|_| matches!(expire_bad, Some(Err(_)))) {
            let owed = Owed {
                add: 0,
                expire: Some(COUNTER_TTL_SECS),
            };
            self.unsettled.owe(bad, owed);
        }
        if let Some(e) = plan_replies.into_iter().flatten().next() {
            let e = unavailable(e);
            tracing::warn!(error = %e, "validation bookkeeping not written: a plan's counters (owed)");
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
        if let Some(Err(e)) = &probe {
            tracing::warn!(error = %e, "validation bookkeeping not written: the network probe");
        }
        let finished = Finished {
            new_network: matches!(probe, Some(Ok(None))),
        };
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
            _ => Ok(finished),
        }
    }

    /// An answer to `project`/`key_id` that ended with `reason`, for the
    /// usage record (and a pass for `apimeta`), written by the flusher; one
    /// the record does not keep (`record::field_of`) is not counted.
    pub fn count_usage(&self, project: &ProjectId, key_id: &KeyId, reason: Reason, cost: u64) {
        let Some(field) = super::record::field_of(reason) else {
            return;
        };
        let pass = field == super::record::OK;
        let extra_cost = if pass { cost as i64 - 1 } else { 0 };
        let (project, key_id) = (project.as_str(), key_id.as_str());
        self.usage
            .add(project, key_id, now(), field, extra_cost, pass);
    }

    /// In the background, gives a plan's counters what they are owed (see
    /// [`Owed`]): what the flusher sends again when Redis does not take it.
    pub fn settle_plan_in_background(&self, plan: Vec<(String, Owed)>) {
        if plan.is_empty() {
            return;
        }
        let (client, unsettled) = (self.validator.next().clone(), self.unsettled.clone());
        tokio::spawn(async move {
            let settles = plan
                .into_iter()
                .map(|(counter, owed)| settle(&client, &unsettled, counter, owed));
            if let Some(e) = together(join_all(settles))
                .await
                .into_iter()
                .flatten()
                .next()
            {
                let e = unavailable(e);
                tracing::warn!(error = %e, "a plan's counters are not settled yet: Redis is failing");
            }
        });
    }

    /// After a validation that ended without [`Store::write_effects`]'s round trip (or
    /// whose round trip failed): in the background, takes back a use that
    /// was counted (`undo`) and makes sure its window expires; what Redis
    /// does not take now, the flusher sends again (see [`settle`]). Never in
    /// the answer's way: Redis was just failing.
    pub fn settle_in_background(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        minute: u64,
        undo: u64,
    ) {
        let used = names::used(project.as_str(), key_id.as_str(), minute);
        let (client, unsettled) = (self.validator.next().clone(), self.unsettled.clone());
        let owed = Owed {
            add: -(undo as i64),
            expire: Some(COUNTER_TTL_SECS),
        };
        tokio::spawn(async move {
            let failed = together(settle(&client, &unsettled, used, owed)).await;
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
        let client = self.validator.next();
        let settles = owed
            .into_iter()
            .map(|(counter, owed)| settle(client, &self.unsettled, counter, owed));
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
        let mut entry = Entry::now()
            .with(field::PROJECT_ID, audit.project_id)
            .with(field::KEY_ID, audit.key_id)
            .with_static(field::RESULT, audit.result)
            .with_static(field::REASON, audit.reason)
            .with(field::CLIENT, self.client_name.as_str())
            .with(field::COST, audit.cost.to_string());
        if let Some(window) = audit.window {
            entry = entry.with_static(field::WINDOW, window);
        }
        if let Some(origin) = audit.origin {
            entry = entry
                .with(field::METHOD, origin.method)
                .with(field::PATH, origin.path);
        }
        let fields = entry.fields();
        let stream = self.streams.keylookup(audit.project_id, audit.key_id);
        client.xadd(stream, false, self.keylookup_cap(), "*", fields)
    }

    /// Logs and counts a key document refused as unreadable for what it
    /// holds (it parsed, but is not to be trusted): `problem` names what.
    pub fn report_unreadable_key(&self, project: &str, key_id: &str, problem: &str) {
        report_unreadable(&names::apikey(project, key_id), problem);
    }

    /// A 200 answered under `KEYWARD_FAILSAFE=open` for `project`/`key_id`,
    /// without its own audit entry: the flusher writes one summary entry
    /// per key (`reason` `failsafe_open`, with `count`, `first` and `last`)
    /// once Redis takes it.
    pub fn failsafe_admitted(&self, project: &ProjectId, key_id: &KeyId) {
        let mut pending = self.failsafes.lock().unwrap_or_else(|e| e.into_inner());
        let at = now();
        let entry = pending
            .entry((project.as_str().to_owned(), key_id.as_str().to_owned()))
            .or_insert((0, at, at));
        entry.0 += 1;
        entry.2 = at;
    }

    /// Writes the failsafe admissions' summaries (see
    /// [`Store::failsafe_admitted`]); one Redis did not take is kept for the
    /// next attempt.
    pub async fn flush_failsafes(&self) -> Result<()> {
        let due: Vec<_> =
            std::mem::take(&mut *self.failsafes.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if due.is_empty() {
            return Ok(());
        }
        let client = self.validator.next();
        let writes = due.iter().map(|((project, key_id), (count, first, last))| {
            let reason = Reason::FailsafeOpen;
            let fields = Entry::now()
                .with(field::PROJECT_ID, project.as_str())
                .with(field::KEY_ID, key_id.as_str())
                .with(field::RESULT, reason.result())
                .with(field::REASON, reason.as_str())
                .with(field::CLIENT, self.client_name.as_str())
                .summary(*count)
                .with(field::FIRST, first.to_string())
                .with(field::LAST, last.to_string())
                .fields();
            let stream = self.streams.keylookup(project, key_id);
            client.xadd::<Value, _, _, _, _>(stream, false, self.keylookup_cap(), "*", fields)
        });
        let replies = together(join_all(writes)).await;
        let mut error = None;
        let mut pending = self.failsafes.lock().unwrap_or_else(|e| e.into_inner());
        for ((name, (count, first, last)), reply) in due.into_iter().zip(replies) {
            if let Err(e) = reply {
                error.get_or_insert(e);
                let entry = pending.entry(name).or_insert((0, first, last));
                entry.0 += count;
                entry.1 = entry.1.min(first);
                entry.2 = entry.2.max(last);
            }
        }
        error.map_or(Ok(()), |e| Err(unavailable(e)))
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
        let client = self.validator.next();
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
        let fields = Entry::now()
            .with(field::PROJECT_ID, "")
            .with(field::KEY_ID, "")
            .with(field::RESULT, RESULT_DENIED)
            .with(field::REASON, summary.reason)
            .with(field::CLIENT, self.client_name.as_str())
            .with(field::SUMMARY, "1")
            .with(field::SECOND, summary.second.to_string())
            .with(field::COUNT, summary.count.to_string())
            .fields();
        // Summaries name no key: they go where a key-less entry goes.
        let stream = self.streams.keylookup("", "");
        client.xadd(stream, false, self.keylookup_cap(), "*", fields)
    }

    /// The flusher task: summaries of each second, and the usage counted
    /// in it, about a second later; and what the use counters are owed.
    pub(super) async fn flush_every_second(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Stopped only here, between two flushes: never with a flush's
            // counts taken and not yet written or put back.
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.flush_summaries(false).await {
                tracing::warn!(error = %e, "audit summaries not written yet; retrying");
            }
            if let Err(e) = self.flush_admin_summaries(false).await {
                tracing::warn!(error = %e, "admin audit summaries not written yet; retrying");
            }
            if let Err(e) = self.flush_usage().await {
                tracing::warn!(error = %e, "usage counts not written yet; retrying");
            }
            if let Err(e) = self.settle_owed().await {
                tracing::warn!(error = %e, "counted uses not settled yet; retrying");
            }
            if let Err(e) = self.flush_failsafes().await {
                tracing::warn!(error = %e, "failsafe answers' audit summaries not written yet; retrying");
            }
            let measured = self
                .skew
                .measured
                .load(std::sync::atomic::Ordering::Relaxed);
            if let (Err(e), true) = (self.measure_clock().await, measured) {
                tracing::warn!(error = %e, "Redis's clock not read: the last skew stands");
            }
        }
    }
}

/// What `JSON.GET` of a key document found.
fn read_doc(doc_key: &str, doc: Result<Value, FredError>) -> Result<Lookup> {
    let raw = match doc {
        Err(e) if super::is_noperm(&e) => return Ok(Lookup::NoPermission),
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
