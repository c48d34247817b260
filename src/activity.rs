//! A project's activity, for the admin console: its recent validations and
//! the validations per minute by result over the last hour, from the
//! `audit:keylookup` stream (read by the monitor user, see
//! `store::activity`).
//!
//! Only projects this deployment's manager user may read are shown: the
//! project document is read first, with the manager user, and a project it
//! may not read (`NOPERM`) is not found.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::clock::now;
use crate::error::{Error, Result};
use crate::key::ProjectId;
use crate::store::activity::{KeylookupEntry, KeylookupScan};
use crate::store::Store;

/// Minutes in the chart, the current (partial) one included.
pub const WINDOW_MINUTES: u64 = 60;
/// Stream entries read per round trip.
pub const SCAN_BATCH: usize = 1_000;
/// Stream entries (of every project) read at most per request: the stream
/// is shared, so a busy hour may hold more; then the answer says how far
/// back it got (`complete: false`, `covered_from`).
pub const SCAN_MAX: usize = 20_000;

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    #[validate(custom(function = "crate::admin::project_id"))]
    #[param(inline, value_type = crate::admin::ProjectIdDoc)]
    pub project_id: String,
    /// Recent entries to return (default 50).
    #[validate(range(min = 1, max = crate::page::MAX_RECENT))]
    #[param(inline, value_type = Option<crate::page::RecentDoc>)]
    pub limit: Option<u64>,
}

impl crate::access::Target for ActivityQuery {
    fn project(&self) -> Option<&str> {
        Some(&self.project_id)
    }
}

/// One recent validation (or a summary entry standing for `count` of them).
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub struct RecentOut {
    pub ts: f64,
    pub key_id: String,
    pub result: String,
    /// `null` for entries written without one (older services).
    pub reason: Option<String>,
    pub count: u64,
    pub client: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Whether this entry summarizes `count` anonymous denials.
    pub summary: bool,
}

/// Validations by result.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, ToSchema)]
pub struct Counts {
    pub ok: u64,
    pub denied: u64,
    pub rate_limited: u64,
    /// Any other result.
    pub other: u64,
}

impl Counts {
    fn add(&mut self, result: &str, n: u64) {
        let slot = match result {
            crate::audit::RESULT_OK => &mut self.ok,
            crate::audit::RESULT_DENIED => &mut self.denied,
            crate::audit::RESULT_RATE_LIMITED => &mut self.rate_limited,
            _ => &mut self.other,
        };
        *slot = slot.saturating_add(n);
    }
}

/// One minute's validations by result.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub struct MinuteOut {
    /// The minute's start, Unix seconds.
    pub minute: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `200` from `GET /v1/activity`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityOut {
    pub project_id: String,
    /// The window: from the first minute's start to now, Unix seconds.
    pub from: f64,
    pub to: f64,
    /// Newest first, at most `limit`.
    pub recent: Vec<RecentOut>,
    /// One per minute of the window, oldest first.
    pub per_minute: Vec<MinuteOut>,
    pub totals: Counts,
    /// Stream entries read (of every project).
    pub scanned: usize,
    /// Whether the whole window was read; if not, counts cover only the
    /// entries since `covered_from`.
    pub complete: bool,
    pub covered_from: f64,
}

pub async fn activity(store: &Store, query: ActivityQuery) -> Result<ActivityOut> {
    let project = ProjectId::parse(&query.project_id).map_err(|_| Error::ProjectNotFound)?;
    store
        .get_project(&project)
        .await?
        .ok_or(Error::ProjectNotFound)?;
    let at = now();
    let from = window_start(at);
    let scan = store
        .keylookup_since(&project, from as f64, SCAN_MAX, SCAN_BATCH)
        .await?;
    let limit = crate::page::limit(query.limit) as usize;
    Ok(summarize(project.to_string(), scan, at, limit))
}

/// The start of the window's first minute.
fn window_start(now: f64) -> u64 {
    let minute = (now.max(0.0) as u64) / 60 * 60;
    minute.saturating_sub((WINDOW_MINUTES - 1) * 60)
}

fn summarize(project_id: String, scan: KeylookupScan, now: f64, limit: usize) -> ActivityOut {
    let from = window_start(now);
    let mut per_minute: Vec<MinuteOut> = (0..WINDOW_MINUTES)
        .map(|i| MinuteOut {
            minute: from + i * 60,
            counts: Counts::default(),
        })
        .collect();
    let mut totals = Counts::default();
    for entry in &scan.entries {
        if entry.at < from as f64 {
            continue; // written with a clock behind Redis's
        }
        let i = ((entry.at as u64 - from) / 60).min(WINDOW_MINUTES - 1) as usize;
        per_minute[i].counts.add(&entry.result, entry.count);
        totals.add(&entry.result, entry.count);
    }
    let covered_from = match (scan.complete, scan.oldest) {
        (false, Some(oldest)) => oldest.max(from as f64),
        _ => from as f64,
    };
    let recent = scan.entries.into_iter().take(limit).map(recent).collect();
    ActivityOut {
        project_id,
        from: from as f64,
        to: now,
        recent,
        per_minute,
        totals,
        scanned: scan.scanned,
        complete: scan.complete,
        covered_from,
    }
}

fn recent(e: KeylookupEntry) -> RecentOut {
    RecentOut {
        ts: e.at,
        key_id: e.key_id,
        result: e.result,
        reason: e.reason,
        count: e.count,
        client: e.client,
        method: e.method,
        path: e.path,
        summary: e.summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: f64, result: &str, count: u64) -> KeylookupEntry {
        KeylookupEntry {
            at,
            key_id: "k_abcdefg".into(),
            result: result.into(),
            reason: None,
            client: None,
            method: None,
            path: None,
            count,
            summary: false,
        }
    }

    const NOW: f64 = 1_700_000_030.0; // 30 s into a minute

    #[test]
    fn the_window_is_sixty_minutes_ending_with_the_current_one() {
        let out = summarize("p".into(), KeylookupScan::default(), NOW, 10);
        assert_eq!(out.per_minute.len(), 60);
        assert_eq!(
            out.per_minute[59].minute,
            1_700_000_000 - 1_700_000_000 % 60
        );
        assert_eq!(
            out.per_minute[0].minute + 59 * 60,
            out.per_minute[59].minute
        );
        assert_eq!(out.from, out.per_minute[0].minute as f64);
    }

    #[test]
    fn entries_count_in_their_minute_by_result_and_summaries_by_their_count() {
        let scan = KeylookupScan {
            entries: vec![
                entry(NOW, "ok", 1),
                entry(NOW - 1.0, "denied", 57),
                entry(NOW - 120.0, "rate_limited", 1),
                entry(NOW - 121.0, "something_new", 1),
                entry(NOW - 7200.0, "ok", 1), // before the window
            ],
            scanned: 9,
            complete: true,
            oldest: Some(NOW - 7200.0),
        };
        let out = summarize("p".into(), scan, NOW, 3);
        let last = out.per_minute[59].counts;
        assert_eq!((last.ok, last.denied), (1, 57));
        let two_ago = out.per_minute[57].counts;
        assert_eq!((two_ago.rate_limited, two_ago.other), (1, 1));
        assert_eq!(
            out.totals,
            Counts {
                ok: 1,
                denied: 57,
                rate_limited: 1,
                other: 1
            }
        );
        assert_eq!(out.recent.len(), 3, "recent is bounded by the limit");
        assert_eq!(out.recent[1].count, 57);
        assert_eq!(out.covered_from, out.from);
    }

    #[test]
    fn an_incomplete_scan_says_how_far_back_it_got() {
        let scan = KeylookupScan {
            entries: vec![],
            scanned: SCAN_MAX,
            complete: false,
            oldest: Some(NOW - 300.0),
        };
        let out = summarize("p".into(), scan, NOW, 3);
        assert!(!out.complete);
        assert_eq!(out.covered_from, NOW - 300.0);
    }
}
