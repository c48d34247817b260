//! The activity read: a project's recent `audit:keylookup` entries, read
//! newest first with `XREVRANGE` as the monitor user (the validator and
//! manager users may only append to the stream).
//!
//! With `KEYWARD_AUDIT_SHARDS=N` the entries are spread over N streams
//! (`audit:keylookup:{0}`..): each round trip reads the next page of every
//! stream not yet read back to the window's start (one pipeline, one batch
//! per master), and the entries are merged newest first.

use std::collections::HashMap;

use fred::prelude::{Error as FredError, StreamsInterface};

use super::entry::{field, id_time};
use super::{is_noperm, send, unavailable, Store};
use crate::error::{Error, Result};
use crate::key::ProjectId;

const NOT_CONFIGURED: &str = "activity needs a monitor Redis user: set \
     KEYWARD_MONITOR_REDIS_URL to the user `keyward acl --role monitor` prints \
     (it may read this deployment's audit streams)";
const NOT_PERMITTED: &str = "the monitor Redis user may not read this deployment's \
     validation audit streams: give it the rule `keyward acl --role monitor` prints";

/// One `audit:keylookup` entry, as the activity screen shows it.
///
/// Entries are read leniently: one written by an older service may lack
/// `reason` (or `client`), and a summary of a flood of anonymous denials
/// (see `audit`) carries `summary=1`, the `second` they happened in and
/// their `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeylookupEntry {
    /// When it happened (Unix seconds): a summary's `second`, else the
    /// entry's `ts`, else the time of its stream id.
    pub at: f64,
    pub key_id: String,
    pub result: String,
    pub reason: Option<String>,
    pub client: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Validations this entry stands for: 1 unless it summarizes several.
    pub count: u64,
    /// Whether the entry summarizes `count` denials.
    pub summary: bool,
}

impl KeylookupEntry {
    fn from_fields(id: &str, mut fields: HashMap<String, String>) -> Self {
        let time = |name: &str| {
            fields
                .get(name)
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|t| t.is_finite())
        };
        let at = time(field::SECOND)
            .or_else(|| time(field::TS))
            .unwrap_or_else(|| id_time(id));
        let summary = fields
            .get(field::SUMMARY)
            .is_some_and(|s| !s.is_empty() && s != "0");
        let count = fields
            .get(field::COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        let mut take = |name: &str| fields.remove(name).filter(|v| !v.is_empty());
        KeylookupEntry {
            at,
            key_id: take(field::KEY_ID).unwrap_or_default(),
            result: take(field::RESULT).unwrap_or_else(|| "unknown".into()),
            reason: take(field::REASON),
            client: take(field::CLIENT),
            method: take(field::METHOD),
            path: take(field::PATH),
            count,
            summary,
        }
    }
}

/// What one bounded scan of the stream found.
#[derive(Debug, Default)]
pub struct KeylookupScan {
    /// The project's entries, newest first.
    pub entries: Vec<KeylookupEntry>,
    /// Stream entries read, of every project.
    pub scanned: usize,
    /// Whether the scan reached `since` (or the stream's start); `false`
    /// when it stopped at `max_scan` entries.
    pub complete: bool,
    /// The time of the oldest entry read, of any project.
    pub oldest: Option<f64>,
}

/// One audit stream being read newest first.
struct Cursor {
    stream: String,
    /// `XREVRANGE`'s end: `+`, then just before the last entry read.
    end: String,
    /// Read back to the window's start (or the stream's).
    done: bool,
    /// The time of the oldest entry read from this stream.
    oldest: Option<f64>,
}

type Page = Vec<(String, HashMap<String, String>)>;

fn refused(e: FredError) -> Error {
    if is_noperm(&e) {
        Error::ActivityUnavailable(NOT_PERMITTED)
    } else {
        unavailable(e)
    }
}

impl Store {
    /// The project's `audit:keylookup` entries since `since` (Unix seconds),
    /// newest first. Reads at most `max_scan` stream entries (of all
    /// projects), `batch` per round trip (shared by the streams, with
    /// `KEYWARD_AUDIT_SHARDS`).
    ///
    /// When the bound stops the scan, it is `complete: false` and `oldest`
    /// is the time back to which every stream was read; entries older than
    /// that (read from some streams only) are left out, so the counts are
    /// whole for the time they cover.
    pub async fn keylookup_since(
        &self,
        project: &ProjectId,
        since: f64,
        max_scan: usize,
        batch: usize,
    ) -> Result<KeylookupScan> {
        let monitor = self
            .monitor
            .as_ref()
            .ok_or(Error::ActivityUnavailable(NOT_CONFIGURED))?;
        // Stream ids are milliseconds: the smallest id of the window.
        let start = format!("{}", (since.max(0.0) * 1000.0) as u64);
        let mut cursors: Vec<Cursor> = self
            .streams
            .keylookup_all()
            .into_iter()
            .map(|stream| Cursor {
                stream,
                end: "+".to_owned(),
                done: false,
                oldest: None,
            })
            .collect();
        let mut scan = KeylookupScan::default();
        while scan.scanned < max_scan && cursors.iter().any(|c| !c.done) {
            let open: Vec<&mut Cursor> = cursors.iter_mut().filter(|c| !c.done).collect();
            let per_stream = (batch.min(max_scan - scan.scanned) / open.len()).max(1);
            let pipe = monitor.next().pipeline();
            for cursor in &open {
                let _: () = pipe
                    .xrevrange(
                        cursor.stream.as_str(),
                        cursor.end.as_str(),
                        start.as_str(),
                        Some(per_stream as u64),
                    )
                    .await
                    .map_err(unavailable)?;
            }
            let pages = send(pipe, open.len()).await?;
            for (cursor, page) in open.into_iter().zip(pages) {
                let page: Page = page.map_err(refused)?.convert().map_err(unavailable)?;
                scan.scanned += page.len();
                cursor.done = page.len() < per_stream;
                if let Some((last, _)) = page.last() {
                    // Exclusive: the next page starts just before this one's end.
                    cursor.end = format!("({last}");
                }
                for (id, fields) in page {
                    let mine =
                        fields.get("project_id").map(String::as_str) == Some(project.as_str());
                    let entry = KeylookupEntry::from_fields(&id, fields);
                    cursor.oldest = Some(entry.at);
                    if mine {
                        scan.entries.push(entry);
                    }
                }
            }
        }
        scan.complete = cursors.iter().all(|c| c.done);
        if let [one] = cursors.as_slice() {
            // One stream: its entries are in its order, the oldest read last.
            scan.oldest = one.oldest;
            return Ok(scan);
        }
        // Several: every stream is whole back to the latest of the
        // unfinished streams' oldest entries (or, when all are finished,
        // back to the oldest entry read).
        let unfinished = cursors.iter().filter(|c| !c.done).filter_map(|c| c.oldest);
        scan.oldest = match scan.complete {
            true => cursors.iter().filter_map(|c| c.oldest).reduce(f64::min),
            false => unfinished.reduce(f64::max),
        };
        if let (false, Some(covered)) = (scan.complete, scan.oldest) {
            scan.entries.retain(|e| e.at >= covered);
        }
        scan.entries.sort_by(|a, b| b.at.total_cmp(&a.at));
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_entry_without_reason_or_ts_reads_with_defaults() {
        let e = KeylookupEntry::from_fields(
            "1700000000123-0",
            fields(&[("key_id", "k_abcdefg"), ("result", "ok")]),
        );
        assert_eq!(e.at, 1_700_000_000.123);
        assert_eq!(e.reason, None);
        assert_eq!(e.count, 1);
        assert_eq!(e.result, "ok");
    }

    #[test]
    fn a_summarized_entry_counts_as_its_count() {
        let e = KeylookupEntry::from_fields(
            "1-0",
            fields(&[
                ("ts", "1700000001.5"),
                ("result", "denied"),
                ("reason", "not_found"),
                ("summary", "1"),
                ("second", "1700000000"),
                ("count", "57"),
            ]),
        );
        assert_eq!(e.at, 1_700_000_000.0, "a summary is dated by its second");
        assert_eq!(e.count, 57);
        assert!(e.summary);
        let zero = KeylookupEntry::from_fields("1-0", fields(&[("count", "0")]));
        assert_eq!(zero.count, 1, "a count of 0 still is one entry");
        assert_eq!(zero.result, "unknown");
    }
}
