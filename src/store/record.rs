//! The usage record (`apiusage:`): each key's and each project's
//! validations by result, and the cost its passes spent, per hour, day and
//! month, for billing (`GET /v1/admin/usage`).
//!
//! Layout (the measured choice: docs/usage-plans.md, "Usage records"): one
//! hash per key (and per project) per span of buckets, fields
//! `<nn>:<name>`, so that each hash stays a small listpack (at most 12 ×
//! 10 fields, under Redis's default `hash-max-listpack-entries` 128):
//!
//! | span | hash | field `<nn>` |
//! |---|---|---|
//! | half a day of hours | `hours:<yyyymmdd><00|12>` | the hour, `00`..`23` |
//! | a third of a month of days | `days:<yyyymm><01|11|21>` | the day, `01`..`31` |
//! | a year of months | `months:<yyyy>` | the month, `01`..`12` |
//!
//! `<name>` is `ok` (every 200), `extra_cost` (the sum of `cost - 1` over
//! passes, so a pass's cost is `ok + extra_cost` and a key whose requests
//! all cost 1 holds one field a bucket) or a per-key refusal's reason.
//!
//! Nothing here is on the validation path: a validation adds to a map in
//! memory (`usage.rs`), and the flusher sends the sums about once a second
//! as `HINCRBY` (commutative, so any number of instances agree), then once
//! per hash and instance an absolute `EXPIREAT` (the span's end plus the
//! retention setting). A command Redis refused, or whose answer was lost, is
//! owed and sent again; `NOPERM` and `WRONGTYPE` never succeed and are
//! dropped and counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::{Error as FredError, HashesInterface, KeysInterface, Value};
use fred::types::config::Options;
use futures::future::join_all;

use super::validation::together;
use super::{is_noperm, is_refused, is_wrongtype, names, report_unreadable, unavailable, Store};
use crate::audit::Reason;
use crate::clock::{civil_from_days, days_from_civil};
use crate::error::{Error, Result};
use crate::telemetry::metric;

/// The record's fields, by index: [`field_of`] maps a reason here.
pub const FIELDS: [&str; 10] = [
    "ok",
    "extra_cost",
    "bad_secret",
    "disabled",
    "expired",
    "ip_not_allowed",
    "insufficient_scope",
    "unreadable",
    "rate_limited",
    "credits_exhausted",
];
/// [`FIELDS`]' `ok` and `extra_cost`.
pub const OK: usize = 0;
pub const EXTRA_COST: usize = 1;

/// One bucket's sums, by [`FIELDS`] index.
pub type Sums = [i64; FIELDS.len()];

/// Where a validation that ended with `reason` is recorded, for a key whose
/// document was found: every 200 as `ok`; each refusal about the key under
/// its reason. `not_found` (no key to record it under; random ids would
/// each make a record), `malformed`, `forbidden` (another deployment's
/// project) and 503s are not recorded.
pub fn field_of(reason: Reason) -> Option<usize> {
    let name = match reason {
        Reason::Ok | Reason::PreviousSecret | Reason::FailsafeOpen => return Some(OK),
        Reason::Malformed | Reason::NotFound | Reason::NoPermission => return None,
        other => other.as_str(),
    };
    FIELDS.iter().position(|f| *f == name)
}

/// A bucket's size, and the span of buckets each hash holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

const DAY: i64 = 86_400;

fn month_start(year: i64, month: u32) -> i64 {
    days_from_civil(year, month, 1) * DAY
}

/// The start of the month `months` after (year, month).
fn months_after(year: i64, month: u32, months: i64) -> i64 {
    let index = year * 12 + i64::from(month) - 1 + months;
    month_start(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32)
}

/// One hash of the record: its name's span part, where its span starts and
/// ends (Unix seconds), and where its buckets start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// `hours:2026120712`, `days:20261211`, `months:2026`.
    pub name: String,
    pub start: i64,
    pub end: i64,
    granularity: Granularity,
    /// The span's year and month (hours, days) or year (months).
    year: i64,
    month: u32,
}

impl Span {
    /// The span of `granularity` that holds the second `at`.
    pub fn at(granularity: Granularity, at: i64) -> Span {
        let day = at.div_euclid(DAY);
        let (year, month, d) = civil_from_days(day);
        match granularity {
            Granularity::Hour => {
                let half = if at.rem_euclid(DAY) < DAY / 2 { 0 } else { 12 };
                let start = day * DAY + half * 3_600;
                Span {
                    name: format!("hours:{year:04}{month:02}{d:02}{half:02}"),
                    start,
                    end: start + DAY / 2,
                    granularity,
                    year,
                    month,
                }
            }
            Granularity::Day => {
                let third = match d {
                    ..=10 => 1,
                    11..=20 => 11,
                    _ => 21,
                };
                let start = days_from_civil(year, month, third) * DAY;
                let end = match third {
                    21 => months_after(year, month, 1),
                    _ => start + 10 * DAY,
                };
                Span {
                    name: format!("days:{year:04}{month:02}{third:02}"),
                    start,
                    end,
                    granularity,
                    year,
                    month,
                }
            }
            Granularity::Month => Span {
                name: format!("months:{year:04}"),
                start: month_start(year, 1),
                end: month_start(year + 1, 1),
                granularity,
                year,
                month: 1,
            },
        }
    }

    /// The field prefix (`<nn>`) of the bucket holding `at`, in this span.
    fn bucket_of(&self, at: i64) -> u32 {
        let (_, month, day) = civil_from_days(at.div_euclid(DAY));
        match self.granularity {
            Granularity::Hour => (at.rem_euclid(DAY) / 3_600) as u32,
            Granularity::Day => day,
            Granularity::Month => month,
        }
    }

    /// The bucket `nn` of this span: its start and end, if it is one.
    fn bucket(&self, nn: u32) -> Option<(i64, i64)> {
        // Checked first: a field another tool wrote (`4294967295:ok`) must
        // not reach the calendar arithmetic.
        let valid = match self.granularity {
            Granularity::Hour => nn < 24,
            Granularity::Day => (1..=31).contains(&nn),
            Granularity::Month => (1..=12).contains(&nn),
        };
        if !valid {
            return None;
        }
        let (start, end) = match self.granularity {
            Granularity::Hour => {
                let start = self.start - self.start.rem_euclid(DAY) + i64::from(nn) * 3_600;
                (start, start + 3_600)
            }
            Granularity::Day => {
                let start = days_from_civil(self.year, self.month, nn) * DAY;
                (start, start + DAY)
            }
            Granularity::Month => (month_start(self.year, nn), months_after(self.year, nn, 1)),
        };
        (start >= self.start && end <= self.end).then_some((start, end))
    }

    /// The span after this one.
    fn next(&self) -> Span {
        Span::at(self.granularity, self.end)
    }
}

/// How long each level of the record is kept after its span ends
/// (`KEYWARD_USAGE_HOURS_KEPT_DAYS`, `KEYWARD_USAGE_DAYS_KEPT_DAYS`,
/// `KEYWARD_USAGE_MONTHS_KEPT`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub hours_days: u32,
    pub days_days: u32,
    pub months: u32,
}

impl Retention {
    /// When a span's hash expires (Unix seconds): the same for every
    /// instance, so an `EXPIREAT` sent twice changes nothing.
    pub fn expire_at(&self, span: &Span) -> i64 {
        match span.granularity {
            Granularity::Hour => span.end + i64::from(self.hours_days) * DAY,
            Granularity::Day => span.end + i64::from(self.days_days) * DAY,
            Granularity::Month => months_after(span.year + 1, 1, i64::from(self.months)),
        }
    }
}

/// A sum owed to one field of one hash.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    delta: i64,
    /// Validations it stands for in its own series (a count field's delta;
    /// 0 for the cost), and which kind of series that is ([`series`]).
    counts: i64,
    series: usize,
}

impl Owed {
    /// Validations it stands for at the key's hour level (what
    /// `keyward_usage_pending` counts), else 0.
    fn validations(&self) -> i64 {
        // `LEVELS[0]` is the hour.
        const _: () = assert!(matches!(LEVELS[0], Granularity::Hour));
        if self.series == series(0, true) {
            self.counts
        } else {
            0
        }
    }
}

/// The kinds of series a record hash belongs to: a key's or a project's,
/// at each granularity (`LEVELS`' index). A sum sent again after a lost
/// answer may count twice in its own series only.
const SERIES: usize = 2 * LEVELS.len();

const fn series(level: usize, of_key: bool) -> usize {
    2 * level + of_key as usize
}

/// What the flush has not written yet, and which hashes have their expiry.
#[derive(Default)]
struct State {
    /// By (hash, field).
    owed: HashMap<(String, String), Owed>,
    /// Hashes whose `EXPIREAT` is owed: when they expire.
    expiry_owed: HashMap<String, i64>,
    /// Hashes this instance set the expiry of, by when: forgotten after
    /// [`EXPIRY_MEMO_SECS`], so a hash Redis lost (evicted, a restart from an
    /// older snapshot, a failover) and a later `HINCRBY` made again gets its
    /// expiry within the hour, and the memo holds only the last hour's hashes.
    expiring: HashMap<String, i64>,
}

/// The record's flush state and settings, one per store.
pub struct Record {
    state: Mutex<State>,
    retention: Retention,
    /// Each flush command's deadline: nobody waits for the flush, so a Redis
    /// slow for a few seconds still takes it rather than seeing it again.
    timeout: Duration,
}

/// The flush commands' deadline.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl Record {
    pub fn new(retention: Retention) -> Self {
        Record {
            state: Mutex::default(),
            retention,
            timeout: FLUSH_TIMEOUT,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain sums, consistent after every statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anything is owed to Redis.
    pub fn is_settled(&self) -> bool {
        let state = self.state();
        state.owed.is_empty() && state.expiry_owed.is_empty()
    }
}

/// A key's sums per hour index (hours since the epoch), as counted in
/// memory by `usage.rs`.
pub struct KeyHours {
    pub project: String,
    pub key_id: String,
    pub hours: Vec<(i64, Sums)>,
}

impl KeyHours {
    pub fn add(&mut self, hour: i64, field: usize, extra_cost: i64) {
        let sums = match self.hours.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, sums)) => sums,
            None => {
                self.hours.push((hour, Sums::default()));
                &mut self.hours.last_mut().expect("just pushed").1
            }
        };
        sums[field] += 1;
        sums[EXTRA_COST] += extra_cost;
    }
}

/// Redis refuses the field for good: another tool wrote something that is
/// not a whole number there, or the sum would overflow.
fn is_not_a_count(e: &FredError) -> bool {
    let detail = e.details();
    detail.contains("not an integer") || detail.contains("overflow")
}

/// How long this instance trusts an `EXPIREAT` it set before sending it
/// again with the hash's next write (it is absolute, so sending it again is
/// harmless).
const EXPIRY_MEMO_SECS: i64 = 3_600;

/// The most commands of a flush in flight at once: a flush of a flood of
/// keys goes out a batch (one round trip) at a time, so its memory stays
/// bounded however many keys were used in the second.
const FLUSH_BATCH: usize = 256;

/// One flush's commands, sent `FLUSH_BATCH` at a time. Once a batch has a
/// reply whose outcome is unknown (a timeout, a connection lost: Redis is
/// stalled or away), nothing more of the flush is sent, in this call or a
/// later one, and each reply is [`FlushReply::not_sent`]: a flush meets a
/// hung Redis once, not once per batch (3,000 keys' `apimeta` writes are 12
/// batches, each waiting out its deadline), and what it did not send is
/// owed to the next flush, as a refusal is (it did not run).
#[derive(Default)]
pub(super) struct Batches {
    /// A reply so far was unanswered.
    stopped: bool,
}

impl Batches {
    /// `send` for each item, the replies in order.
    pub(super) async fn send<'a, T, F, Fut>(&mut self, items: &'a [T], send: F) -> Vec<Fut::Output>
    where
        F: Fn(&'a T) -> Fut,
        Fut: std::future::Future,
        Fut::Output: FlushReply,
    {
        let mut replies = Vec::with_capacity(items.len());
        for batch in items.chunks(FLUSH_BATCH) {
            if self.stopped {
                replies.extend(batch.iter().map(|_| Fut::Output::not_sent()));
                continue;
            }
            let sent = join_all(batch.iter().map(&send)).await;
            self.stopped = sent.iter().any(FlushReply::unanswered);
            replies.extend(sent);
        }
        replies
    }
}

/// A flush command's reply, as [`Batches`] reads it.
pub(super) trait FlushReply {
    /// Redis did not answer (a timeout, a connection lost).
    fn unanswered(&self) -> bool;
    /// The reply of a command not sent.
    fn not_sent() -> Self;
}

impl FlushReply for std::result::Result<Value, FredError> {
    fn unanswered(&self) -> bool {
        use fred::error::ErrorKind::{Canceled, Timeout, IO};
        matches!(self, Err(e) if matches!(e.kind(), Timeout | IO | Canceled))
    }

    fn not_sent() -> Self {
        // Upper case, as Redis's own refusals: `is_refused` (it did not run).
        let detail = "NOTSENT an earlier batch of this flush had no answer from Redis";
        Err(FredError::new(fred::error::ErrorKind::Unknown, detail))
    }
}

impl<A: FlushReply, B: FlushReply> FlushReply for (A, B) {
    fn unanswered(&self) -> bool {
        self.0.unanswered() || self.1.unanswered()
    }

    fn not_sent() -> Self {
        (A::not_sent(), B::not_sent())
    }
}

const LEVELS: [Granularity; 3] = [Granularity::Hour, Granularity::Day, Granularity::Month];

impl Store {
    /// Writes the record's sums counted since the last flush (`taken`) and
    /// what earlier flushes still owe: `HINCRBY` per (hash, field), then
    /// `EXPIREAT` for each hash whose expiry this instance has not set, all
    /// sent together as single commands (see `flush_usage`). The first
    /// failure is returned; what failed is owed.
    pub(super) async fn flush_record(&self, taken: Vec<KeyHours>) -> Result<()> {
        let record = &self.record;
        let now = crate::clock::now() as i64;
        let (writes, expiries) = {
            let mut state = record.state();
            state
                .expiring
                .retain(|_, set| *set + EXPIRY_MEMO_SECS > now);
            for key in taken {
                for (hour, sums) in key.hours {
                    let at = hour * 3_600;
                    for (l, level) in LEVELS.into_iter().enumerate() {
                        let span = Span::at(level, at);
                        let nn = span.bucket_of(at);
                        let expire_at = record.retention.expire_at(&span);
                        for key_id in [Some(key.key_id.as_str()), None] {
                            let hash = names::usage(&key.project, key_id, &span.name);
                            let kind = series(l, key_id.is_some());
                            for (i, &n) in sums.iter().enumerate().filter(|(_, n)| **n != 0) {
                                let owed = state
                                    .owed
                                    .entry((hash.clone(), format!("{nn:02}:{}", FIELDS[i])))
                                    .or_default();
                                owed.delta += n;
                                owed.series = kind;
                                if i != EXTRA_COST {
                                    owed.counts += n;
                                }
                            }
                            if !state.expiring.contains_key(&hash) {
                                state.expiry_owed.insert(hash, expire_at);
                            }
                        }
                    }
                }
            }
            let writes: Vec<_> = state.owed.drain().filter(|(_, o)| o.delta != 0).collect();
            let expiries: Vec<_> = state.expiry_owed.drain().collect();
            (writes, expiries)
        };
        if writes.is_empty() && expiries.is_empty() {
            metrics::gauge!(metric::USAGE_PENDING).set(0.0);
            return Ok(());
        }
        // Counted, not yet in Redis: what a crash would lose now.
        let pending: i64 = writes.iter().map(|(_, o)| o.validations()).sum();
        metrics::gauge!(metric::USAGE_PENDING).set(pending as f64);
        let client = self.validator.next().with_options(&Options {
            timeout: Some(record.timeout),
            ..Default::default()
        });
        let client = &client;
        // Every `HINCRBY` is answered before any `EXPIREAT` is sent:
        // `EXPIREAT` on a missing key does nothing, so it must follow. A
        // batch at a time, so a flush of many keys never holds more than
        // `FLUSH_BATCH` command futures (each some KiB in fred) at once.
        let (written, expired) = together(async {
            // The expiries after the writes, so not after one unanswered.
            let mut batches = Batches::default();
            let written = batches
                .send(&writes, |((hash, field), owed)| {
                    client.hincrby::<Value, _, _>(hash, field.as_str(), owed.delta)
                })
                .await;
            let expired = batches
                .send(&expiries, |(hash, at)| {
                    client.expire_at::<Value, _>(hash, *at, None)
                })
                .await;
            (written, expired)
        })
        .await;
        let mut first: Option<FredError> = None;
        let mut state = record.state();
        // What each kind of series may count twice: sums sent again whose
        // answer was lost (Redis may have run them).
        let (mut recorded, mut lost) = (0i64, [0i64; SERIES]);
        for ((key, owed), reply) in writes.into_iter().zip(written) {
            match reply {
                Ok(_) => recorded += owed.validations(),
                Err(e) if is_noperm(&e) || is_wrongtype(&e) || is_not_a_count(&e) => {
                    let reason = match () {
                        _ if is_noperm(&e) => "noperm",
                        _ if is_wrongtype(&e) => "wrongtype",
                        _ => "not_a_count",
                    };
                    metrics::counter!(metric::USAGE_DROPPED, "reason" => reason).increment(1);
                    if !is_noperm(&e) {
                        report_unreadable(&key.0, "a usage record field that is not a count");
                    }
                    // Dropped, not owed: the flush itself did not fail
                    // (its own warning is the one above, once a minute).
                    warn_dropped(&e);
                }
                Err(e) => {
                    if !is_refused(&e) {
                        // It may have run: sent again, it may count twice.
                        lost[owed.series] += owed.counts.max(0);
                    }
                    let again = state.owed.entry(key).or_default();
                    again.delta += owed.delta;
                    again.counts += owed.counts;
                    again.series = owed.series;
                    first.get_or_insert(e);
                }
            }
        }
        for ((hash, at), reply) in expiries.into_iter().zip(expired) {
            match reply {
                Ok(set) if set.as_i64() == Some(1) => {
                    state.expiring.insert(hash, now);
                }
                // No such hash: its `HINCRBY` did not run, and is owed.
                Ok(_) => {
                    if state.owed.keys().any(|(h, _)| *h == hash) {
                        state.expiry_owed.insert(hash, at);
                    }
                }
                // The hash's writes were dropped and counted above.
                Err(e) if is_noperm(&e) || is_wrongtype(&e) => {}
                Err(e) => {
                    state.expiry_owed.insert(hash, at);
                    first.get_or_insert(e);
                }
            }
        }
        let pending: i64 = state.owed.values().map(Owed::validations).sum();
        drop(state);
        metrics::counter!(metric::USAGE_RECORDED).increment(recorded.max(0) as u64);
        // No one series over-counts by more than the most its kind lost.
        let resent = lost.into_iter().max().unwrap_or(0);
        if resent > 0 {
            metrics::counter!(metric::USAGE_RESENT).increment(resent as u64);
        }
        metrics::gauge!(metric::USAGE_PENDING).set(pending as f64);
        first.map_or(Ok(()), |e| Err(unavailable(e)))
    }

    /// The record of `project` (or its `key_id`'s) for the buckets of
    /// `granularity` that meet `[from, to)` (Unix seconds): each non-empty
    /// bucket's start and sums, oldest first. Read with the monitor user,
    /// every hash or none (503): never a partial series.
    pub async fn read_record(
        &self,
        project: &str,
        key_id: Option<&str>,
        granularity: Granularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Sums)>> {
        let monitor = self
            .monitor
            .as_ref()
            .ok_or(Error::UsageUnavailable(NOT_CONFIGURED))?;
        let mut spans = vec![Span::at(granularity, from)];
        while let Some(next) = spans.last().map(Span::next).filter(|s| s.start < to) {
            spans.push(next);
        }
        let client = monitor.next();
        let hashes: Vec<String> = spans
            .iter()
            .map(|s| names::usage(project, key_id, &s.name))
            .collect();
        let replies = together(join_all(
            hashes
                .iter()
                .map(|h| client.hgetall::<HashMap<String, String>, _>(h)),
        ))
        .await;
        let mut buckets: Vec<(i64, Sums)> = Vec::new();
        for ((span, hash), reply) in spans.iter().zip(&hashes).zip(replies) {
            let fields = match reply {
                Ok(fields) => fields,
                Err(e) if is_noperm(&e) => return Err(Error::UsageUnavailable(NOT_PERMITTED)),
                Err(e) if is_wrongtype(&e) => {
                    report_unreadable(hash, "a usage record that is not a hash");
                    return Err(Error::Unreadable);
                }
                Err(e) => return Err(unavailable(e)),
            };
            let mut sums: Vec<(i64, Sums)> = Vec::new();
            for (field, value) in fields {
                let parsed = field.split_once(':').and_then(|(nn, name)| {
                    let bucket = span.bucket(nn.parse().ok()?)?;
                    Some((bucket, name, value.parse::<i64>().ok()?))
                });
                let Some(((start, end), name, n)) = parsed else {
                    report_unreadable(
                        hash,
                        "a usage record field that is not `<nn>:<name>` = a number",
                    );
                    return Err(Error::Unreadable);
                };
                // A name of a later version: not one this one answers.
                let Some(i) = FIELDS.iter().position(|f| *f == name) else {
                    continue;
                };
                if start >= to || end <= from {
                    continue;
                }
                match sums.iter_mut().find(|(s, _)| *s == start) {
                    Some((_, b)) => b[i] = b[i].saturating_add(n),
                    None => {
                        let mut b = Sums::default();
                        b[i] = n;
                        sums.push((start, b));
                    }
                }
            }
            buckets.extend(sums);
        }
        buckets.sort_by_key(|(start, _)| *start);
        buckets.retain(|(_, sums)| sums.iter().any(|n| *n != 0));
        Ok(buckets)
    }
}

/// Warns, at most once a minute, that the validator may not write the
/// record.
fn warn_dropped(e: &FredError) {
    static LAST: Mutex<i64> = Mutex::new(i64::MIN);
    let now = crate::clock::now() as i64;
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if now.saturating_sub(*last) >= 60 {
        *last = now;
        tracing::warn!(
            error = %e,
            "usage record counts dropped: Redis refuses them for good; regenerate the \
             validator's rule with `keyward acl` (it needs HINCRBY and EXPIREAT on apiusage:<project>:*)"
        );
    }
}

const NOT_CONFIGURED: &str = "usage needs a monitor Redis user: set \
     KEYWARD_MONITOR_REDIS_URL to the user `keyward acl --role monitor --projects ...` \
     prints (it may read the projects' usage records)";
const NOT_PERMITTED: &str = "the monitor Redis user may not read this project's usage \
     record: give it the rule `keyward acl --role monitor --projects <project>` prints";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_sends_no_batch_after_one_redis_did_not_answer() {
        use fred::error::ErrorKind;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let items: Vec<usize> = (0..FLUSH_BATCH * 3).collect();
        let sent = AtomicUsize::new(0);
        // The second batch's first command times out.
        let mut batches = Batches::default();
        let replies = batches
            .send(&items, |&i| {
                sent.fetch_add(1, Ordering::Relaxed);
                async move {
                    match i == FLUSH_BATCH {
                        true => Err(FredError::new(ErrorKind::Timeout, "Request timed out.")),
                        false => Ok(Value::Integer(1)),
                    }
                }
            })
            .await;
        assert_eq!(sent.load(Ordering::Relaxed), FLUSH_BATCH * 2);
        assert_eq!(replies.len(), items.len());
        assert!(replies[..FLUSH_BATCH].iter().all(Result::is_ok));
        assert!(replies[FLUSH_BATCH].as_ref().is_err_and(|e| !is_refused(e)));
        let not_sent = &replies[FLUSH_BATCH * 2..];
        assert!(not_sent.iter().all(|r| r.as_ref().is_err_and(is_refused)));
        // Nor is anything sent by the same flush after (its expiries).
        let after = batches
            .send(&items[..1], |_| {
                sent.fetch_add(1, Ordering::Relaxed);
                async { Ok(Value::Integer(1)) }
            })
            .await;
        assert_eq!(sent.load(Ordering::Relaxed), FLUSH_BATCH * 2);
        assert!(after[0].as_ref().is_err_and(is_refused));

        // A refusal (it did not run) stops nothing; a pair stops on either half.
        let refused = || {
            Err(FredError::new(
                ErrorKind::Unknown,
                "OOM command not allowed",
            ))
        };
        let replies = Batches::default()
            .send(&items, |_| async move { (Ok(Value::Null), refused()) })
            .await;
        assert!(replies
            .iter()
            .all(|(a, b)| a.is_ok() && b.as_ref().is_err_and(is_refused)));
        let lost = || Err(FredError::new(ErrorKind::IO, "connection lost"));
        let pair = Batches::default()
            .send(&items, |_| async move { (Ok(Value::Null), lost()) })
            .await;
        assert!(pair[FLUSH_BATCH..]
            .iter()
            .all(|(a, b)| a.is_err() && b.is_err()));
    }

    /// 2026-12-31T23:59:50Z: the last seconds of an hour, a day, a month
    /// and a year.
    const EVE: i64 = 1_798_761_590;

    #[test]
    fn spans_are_named_by_their_first_bucket_and_end_where_the_next_starts() {
        let hours = Span::at(Granularity::Hour, EVE);
        assert_eq!(hours.name, "hours:2026123112");
        assert_eq!(hours.end, EVE + 10);
        assert_eq!(hours.bucket_of(EVE), 23);
        assert_eq!(hours.next().name, "hours:2027010100");
        let days = Span::at(Granularity::Day, EVE);
        assert_eq!(days.name, "days:20261221");
        assert_eq!((days.end, days.bucket_of(EVE)), (EVE + 10, 31));
        assert_eq!(days.next().name, "days:20270101");
        assert_eq!(
            Span::at(Granularity::Day, EVE + 11 * DAY).name,
            "days:20270111"
        );
        let months = Span::at(Granularity::Month, EVE);
        assert_eq!(
            (months.name.as_str(), months.end),
            ("months:2026", EVE + 10)
        );
        assert_eq!(months.bucket_of(EVE), 12);
        assert_eq!(months.bucket(12), Some((EVE + 10 - 31 * DAY, EVE + 10)));
        assert_eq!(months.bucket(13), None);
        // February of a leap year: the last third is 9 days.
        let feb = Span::at(Granularity::Day, days_from_civil(2028, 2, 29) * DAY);
        assert_eq!(feb.name, "days:20280221");
        assert_eq!(feb.end, days_from_civil(2028, 3, 1) * DAY);
        assert!(feb.bucket(29).is_some() && feb.bucket(30).is_none());
    }

    #[test]
    fn each_level_expires_its_retention_after_its_span() {
        let r = Retention {
            hours_days: 35,
            days_days: 400,
            months: 60,
        };
        let end = EVE + 10;
        assert_eq!(
            r.expire_at(&Span::at(Granularity::Hour, EVE)),
            end + 35 * DAY
        );
        assert_eq!(
            r.expire_at(&Span::at(Granularity::Day, EVE)),
            end + 400 * DAY
        );
        assert_eq!(
            r.expire_at(&Span::at(Granularity::Month, EVE)),
            month_start(2032, 1)
        );
    }

    #[test]
    fn every_answer_to_a_found_key_has_a_field_and_nothing_else_does() {
        assert_eq!(field_of(Reason::FailsafeOpen), Some(OK));
        assert_eq!(field_of(Reason::PreviousSecret), Some(OK));
        assert_eq!(
            field_of(Reason::CreditsExhausted).map(|i| FIELDS[i]),
            Some("credits_exhausted")
        );
        assert_eq!(field_of(Reason::NotFound), None);
        for reason in [
            Reason::BadSecret,
            Reason::Disabled,
            Reason::Expired,
            Reason::IpNotAllowed,
            Reason::InsufficientScope,
            Reason::Unreadable,
            Reason::RateLimited,
        ] {
            assert_eq!(field_of(reason).map(|i| FIELDS[i]), Some(reason.as_str()));
        }
    }
}
