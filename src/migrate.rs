//! `keyward migrate [--apply]`: upgrades, in place, data the original
//! service wrote to keyward's layout.
//!
//! - A project's index that is a plain set becomes a sorted set (every id at
//!   score 0), so list-keys pages with `ZRANGE BYLEX` instead of reading the
//!   whole set per page.
//! - A key document gets every field keyward's documents have and it lacks
//!   (`server_name: ""`, `rate_limit_per_minute: null`, `scopes: []`, ...),
//!   each with `JSON.SET <path> <value> NX`: never the whole document, never
//!   a field that is there. `metadata` is kept as it is (a string stays a
//!   string), because gateways that route by it expect what they had.
//!
//! Without `--apply` it only reads, and prints what it would change. Every
//! step is idempotent, so a second run (or a run after an interruption)
//! does only what is left, and says "nothing to change" when nothing is.
//! Projects are found with `SCAN MATCH project:*`, never `KEYS` (on a Redis
//! Cluster, on every master).
//!
//! Converting an index without losing an id, without transactions or scripts
//! (keyward uses none, see ARCHITECTURE.md), while keyward may be minting
//! into it: with `I` the index, `B` = `migrate:apiprojectkeys:<p>:set` and
//! `Z` = `migrate:apiprojectkeys:<p>:zset` (on a Redis Cluster
//! `migrate:{apiprojectkeys:<p>}:set` and `:zset`, in `I`'s slot),
//!
//! 1. copy `I`'s ids into `Z` (a sorted set, built aside);
//! 2. `RENAME I B`: atomically, every id is now in `B`;
//! 3. `RENAMENX Z I`: the sorted set takes the index's place;
//! 4. add `B`'s ids to `I` (those added to the set after step 1);
//! 5. `DEL B`.
//!
//! At every moment each id is in `I` or `B` (or both), and `B` is deleted
//! only after its ids are in `I`. Each round looks at what is there and does
//! the next step, so a rerun after a crash anywhere resumes. A set that
//! reappears at `I` (a mint that read the index's type just before step 2)
//! has its ids moved into `B` one `SMOVE` at a time; an `I` created in
//! between by a mint (a sorted set) gets `Z`'s ids added instead of step 3.
//! Between steps 2 and 3 (two commands) a list-keys call can see an empty
//! index; no key is lost, and validation never reads the index.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};
use crate::store::migrate::{Doc, Kind, Migrator};
use crate::store::names;

/// Key documents read per round trip.
const DOC_CHUNK: usize = 200;
/// Rounds of the conversion before giving up on an index that keeps
/// changing (something is still writing a plain set: the old service).
const MAX_ROUNDS: usize = 50;
/// Projects with at least this many keys get a progress bar on a terminal.
const PROGRESS_FROM: usize = 1_000;

/// What a run found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub projects: u64,
    pub keys: u64,
    /// Indexes converted (or, in a dry run, that would be).
    pub indexes: u64,
    /// Key documents upgraded (or that would be).
    pub documents: u64,
    /// Things that cannot be read and were left as they are.
    pub unreadable: u64,
}

/// Runs the migration (a dry run unless `apply`), printing what it finds to
/// `out` and, on a terminal, progress to stderr.
pub async fn run(m: &Migrator, apply: bool, out: &mut dyn Write) -> Result<Report> {
    // Key names and index members come from Redis: anyone's text.
    let mut say = |line: String| {
        let _ = writeln!(out, "{}", crate::cli::safe(&line));
    };
    say(if apply {
        "keyward migrate: applying".into()
    } else {
        "keyward migrate: dry run (nothing is written; --apply migrates)".into()
    });
    let projects = m.project_ids().await?;
    let mut report = Report::default();
    for id in projects {
        let Ok(project) = ProjectId::parse(&id) else {
            say(format!(
                "project:{id}: not a project id keyward accepts; skipped"
            ));
            report.unreadable += 1;
            continue;
        };
        report.projects += 1;
        migrate_project(m, &project, apply, &mut say, &mut report).await?;
    }
    let i = count(report.indexes, "index", "indexes");
    let d = count(report.documents, "key document", "key documents");
    let p = count(report.projects, "project", "projects");
    say(match (report.indexes + report.documents > 0, apply) {
        (false, _) => format!(
            "nothing to change: {p} and {} are in keyward's layout",
            count(report.keys, "key", "keys")
        ),
        (true, false) => format!(
            "dry run: would change {i} and {d} in {p}; run `keyward migrate --apply` to do it"
        ),
        (true, true) => format!("migrated: changed {i} and {d} in {p}"),
    });
    if report.unreadable > 0 {
        say(format!(
            "{} cannot be read and were left as they are (listed above); \
             keyward answers them as unreadable (401 for validation, 409 for admin calls)",
            count(report.unreadable, "item", "items")
        ));
    }
    Ok(report)
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn migrate_project(
    m: &Migrator,
    project: &ProjectId,
    apply: bool,
    say: &mut impl FnMut(String),
    report: &mut Report,
) -> Result<()> {
    if let Some(problem) = m.check_project(project).await? {
        say(format!(
            "{}: cannot be read ({problem}); left as it is",
            names::project(project)
        ));
        report.unreadable += 1;
    }
    let index = names::keyset(project);
    let st = m.index_state(project).await?;
    if let Kind::Other(kind) = &st.index {
        say(format!(
            "{index}: is a {kind}, not a set of key ids; left as it is"
        ));
        report.unreadable += 1;
        return Ok(());
    }
    let converting =
        st.index == Kind::Set || st.backup != Kind::Missing || st.building != Kind::Missing;
    let mut changed = false;
    if converting {
        report.indexes += 1;
        changed = true;
        let interrupted = st.backup != Kind::Missing || st.building != Kind::Missing;
        match (apply, interrupted) {
            (false, false) => say(format!(
                "{index}: a set of {} ids; would become a sorted set",
                st.index_len
            )),
            (false, true) => say(format!(
                "{index}: an interrupted conversion ({} ids in the index, {} in {}, {} in {}); \
                 would finish it",
                st.index_len,
                st.backup_len,
                m.backup_key(project),
                st.building_len,
                m.building_key(project)
            )),
            (true, _) => {
                // What the conversion will leave behind, said before it does.
                key_ids(say, &index, m.members(&index, &st.index).await?);
                let ids = convert(m, project).await?;
                say(format!("{index}: now a sorted set of {ids} ids"));
            }
        }
    }

    // The ids: after a conversion the index holds them all; in a dry run
    // (or an interrupted conversion) they may be in the working keys too.
    let st = m.index_state(project).await?;
    let mut ids = BTreeSet::new();
    for (key, kind) in [
        (index.clone(), &st.index),
        (m.backup_key(project), &st.backup),
        (m.building_key(project), &st.building),
    ] {
        ids.extend(m.members(&key, kind).await?);
    }
    let ids = key_ids(say, &index, ids);
    report.keys += ids.len() as u64;
    let mut progress = Progress::new(project.as_str(), ids.len());
    let mut fields: BTreeMap<String, u64> = BTreeMap::new();
    let (mut upgraded, mut missing) = (0u64, 0u64);
    for chunk in ids.chunks(DOC_CHUNK) {
        for (id, doc) in chunk.iter().zip(m.docs(project, chunk).await?) {
            let key = names::apikey(project.as_str(), id);
            match doc {
                Doc::Missing => missing += 1,
                Doc::Unreadable(problem) => {
                    say(format!("{key}: cannot be read ({problem}); left as it is"));
                    report.unreadable += 1;
                }
                Doc::Readable(absent) if absent.is_empty() => {}
                Doc::Readable(absent) => {
                    for (name, _) in &absent {
                        *fields.entry(name.clone()).or_default() += 1;
                    }
                    // In a dry run, or when this run added something: a
                    // concurrent writer may have added them all first.
                    if !apply || m.add_fields(project, id, &absent).await? > 0 {
                        upgraded += 1;
                    }
                }
            }
        }
        progress.advance(chunk.len());
    }
    progress.finish();
    if missing > 0 {
        say(format!(
            "{index}: {missing} ids have no key document (not keys; list-keys skips them); left as they are"
        ));
    }
    if upgraded > 0 {
        let list: Vec<String> = fields.iter().map(|(f, n)| format!("{f} ({n})")).collect();
        say(format!(
            "project {project}: {upgraded} of {} key documents {} absent fields: {}",
            ids.len(),
            if apply {
                "got their"
            } else {
                "would get their"
            },
            list.join(", ")
        ));
        report.documents += upgraded;
        changed = true;
    }
    if apply && changed {
        m.audit(project, "migrate").await?;
    }
    Ok(())
}

/// The members of `index` that are key ids. The others (anyone may have
/// added them) cannot name a key: reported, never copied (see `copy`) nor
/// read as keys.
fn key_ids(
    say: &mut impl FnMut(String),
    index: &str,
    members: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let (ids, junk): (Vec<String>, Vec<String>) =
        members.into_iter().partition(|id| KeyId::parse(id).is_ok());
    if !junk.is_empty() {
        let shown: Vec<&str> = junk.iter().take(5).map(String::as_str).collect();
        say(format!(
            "{index}: {} members are not key ids; skipped, never copied: {}{}",
            junk.len(),
            shown.join(", "),
            if junk.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    ids
}

/// Converts the project's plain-set index to a sorted set, or finishes an
/// interrupted conversion; see the module doc for the steps. Returns the
/// number of ids in the index afterwards.
async fn convert(m: &Migrator, project: &ProjectId) -> Result<u64> {
    let index = names::keyset(project);
    let backup = m.backup_key(project);
    let building = m.building_key(project);
    for _ in 0..MAX_ROUNDS {
        let st = m.index_state(project).await?;
        match (&st.index, &st.backup, &st.building) {
            // Not started (or stopped during the copy: the set still has
            // every id, so a partial copy is dropped and redone).
            (Kind::Set, Kind::Missing, _) => {
                if st.building != Kind::Missing {
                    m.delete_working_key(&building).await?;
                }
                if !copy(m, &index, &Kind::Set, &building).await? {
                    return Err(stuck(&building, "is not a sorted set"));
                }
                m.rename(&index, &backup).await?;
                // Fails if a mint created the index in between: next round.
                m.rename_nx(&building, &index).await?;
            }
            // A set reappeared at the index while it was moved aside.
            (Kind::Set, Kind::Set, _) => {
                m.move_members(&index, &backup).await?;
            }
            (Kind::Sorted | Kind::Missing, _, Kind::Sorted) => {
                if st.index == Kind::Missing && m.rename_nx(&building, &index).await? {
                    continue;
                }
                // A mint created the index meanwhile: merge into it.
                if copy(m, &building, &Kind::Sorted, &index).await? {
                    m.delete_working_key(&building).await?;
                }
            }
            // Ids added to the old set after the copy are only in the backup.
            (Kind::Sorted | Kind::Missing, Kind::Set, Kind::Missing) => {
                if copy(m, &backup, &Kind::Set, &index).await?
                    && m.index_state(project).await?.index == Kind::Sorted
                {
                    m.delete_working_key(&backup).await?;
                }
            }
            (Kind::Sorted | Kind::Missing, Kind::Missing, Kind::Missing) => {
                return Ok(st.index_len);
            }
            _ => {
                return Err(stuck(
                    &index,
                    &format!("is in a state migrate does not know: {st:?}"),
                ))
            }
        }
    }
    Err(stuck(
        &index,
        "keeps being rewritten as a plain set: stop the original service, then run migrate again",
    ))
}

fn stuck(key: &str, why: &str) -> Error {
    Error::Unavailable(format!("{key} {why}"))
}

/// Adds every id of `from` to the sorted set `to`; `false` if `to` turned
/// out to be something else (a plain set appeared there).
async fn copy(m: &Migrator, from: &str, kind: &Kind, to: &str) -> Result<bool> {
    let mut ids = m.members(from, kind).await?;
    ids.retain(|id| KeyId::parse(id).is_ok());
    for chunk in ids.chunks(1_000) {
        if m.add_sorted(to, chunk).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A progress bar on stderr, drawn only on a terminal and for projects
/// large enough to need one.
struct Progress {
    label: String,
    total: usize,
    done: usize,
    drawn: Option<Instant>,
    on: bool,
}

impl Progress {
    fn new(label: &str, total: usize) -> Self {
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            drawn: None,
            on: total >= PROGRESS_FROM && std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if !self.on
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let width = 40;
        let filled = width * self.done / self.total.max(1);
        eprint!(
            "\r{} [{}{}] {}/{} keys",
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.done,
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self) {
        if self.on && self.drawn.is_some() {
            // Clear the bar's line.
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// `keyward migrate` itself: connects as the migrator user, runs, and
/// exits 0 when done (or nothing was left to do), 3 when some data could not
/// be read and was left as it is, 1 on an error (Redis down, refused, or a
/// permission the migrator user lacks; rerun when it is fixed).
pub async fn command(config: &crate::config::MigrateConfig, apply: bool) -> std::process::ExitCode {
    let detail = |e: Error| match e {
        Error::Unavailable(d) | Error::Internal(d) => d,
        other => other.to_string(),
    };
    let m = match Migrator::connect(config).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("keyward migrate: {}", detail(e));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = run(&m, apply, &mut std::io::stdout()).await;
    m.quit().await;
    match result {
        Ok(report) if report.unreadable > 0 => std::process::ExitCode::from(3),
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "keyward migrate: {} (nothing is lost: run it again to resume)",
                detail(e)
            );
            std::process::ExitCode::FAILURE
        }
    }
}
