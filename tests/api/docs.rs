//! The docs hold up: every relative link and `#anchor` in README.md,
//! ARCHITECTURE.md and `docs/*.md` resolves, and every shell block
//! (```` ```sh ````, `bash`, `shell`, `console`) in README.md and `docs/`
//! is either run here or says why not. The line before such a block is
//! `<!-- run -->` or `<!-- not run: <reason> -->`.
//!
//! A page's `run` blocks run in order, in one `bash` with `set -euo
//! pipefail` (so a variable one block sets is there in the next, and any
//! failing command fails the page), against a Redis and a real `keyward
//! serve` of the page's own, as `make run` leaves them: `KEYWARD_URL` and
//! `KEYWARD_ADMIN_TOKEN` set, `keyward` on `PATH`, a monitor user (for
//! `keyward audit`), and an empty directory as the working and home one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{
    free_port, random_id, repo, template_user, TestRedis, ADMIN_TOKEN, MANAGER_PASSWORD,
    VALIDATOR_PASSWORD,
};

/// The languages of the blocks that must be run or say why not.
const SHELL: [&str; 4] = ["sh", "bash", "shell", "console"];

/// How long one page's blocks may take, all together.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// The monitor user's password in the pages' Redis.
const MONITOR_PASSWORD: &str = "docs-monitor-password";

/// A fenced code block: where it starts, its language, its text, and the
/// marker on the line before it, if any.
struct Block {
    line: usize,
    lang: String,
    text: String,
    marker: Option<Marker>,
}

#[derive(Debug, PartialEq)]
enum Marker {
    Run,
    NotRun(String),
}

/// A Markdown page, split into what is outside code blocks (for links and
/// headings) and its code blocks.
struct Page {
    path: PathBuf,
    /// Lines outside code blocks, with their 1-based numbers.
    prose: Vec<(usize, String)>,
    blocks: Vec<Block>,
    /// Markers not followed by a code block.
    stray_markers: Vec<usize>,
}

fn marker(line: &str) -> Option<Marker> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    if inner == "run" {
        return Some(Marker::Run);
    }
    let reason = inner.strip_prefix("not run:")?.trim();
    Some(Marker::NotRun(reason.to_owned()))
}

fn parse(path: &Path) -> Page {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut page = Page {
        path: path.to_owned(),
        prose: Vec::new(),
        blocks: Vec::new(),
        stray_markers: Vec::new(),
    };
    // The fence that opened the block we are in, and the block so far.
    let mut open: Option<(String, Block)> = None;
    // The last marker seen and its line, until a non-blank line uses it.
    let mut pending: Option<(usize, Marker)> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        if let Some((fence, mut block)) = open.take() {
            if trimmed.starts_with(&fence) && trimmed.trim_end() == fence {
                page.blocks.push(block);
            } else {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some((fence, block));
            }
            continue;
        }
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        if ticks >= 3 && line.len() - trimmed.len() <= 3 {
            let lang = trimmed[ticks..].split_whitespace().next().unwrap_or("");
            let block = Block {
                line: number,
                lang: lang.to_owned(),
                text: String::new(),
                marker: pending.take().map(|(_, m)| m),
            };
            open = Some(("`".repeat(ticks), block));
            continue;
        }
        if let Some(m) = marker(line) {
            if let Some((at, _)) = pending.replace((number, m)) {
                page.stray_markers.push(at);
            }
            continue;
        }
        if !line.trim().is_empty() {
            if let Some((at, _)) = pending.take() {
                page.stray_markers.push(at);
            }
        }
        page.prose.push((number, line.to_owned()));
    }
    assert!(
        open.is_none(),
        "{}: a code block is never closed",
        path.display()
    );
    if let Some((at, _)) = pending {
        page.stray_markers.push(at);
    }
    page
}

/// README.md and every page under `docs/`: the pages whose shell blocks
/// must be run or marked.
fn guide_pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 12, "docs/ has its guide pages: {docs:?}");
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading's text: lower case, inline code marks and
/// punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a page's headings give, numbered as GitHub numbers repeats
/// (`name`, `name-1`, ...).
fn anchors(page: &Page) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for (_, line) in &page.prose {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// A line without its inline code spans, where `](` means nothing.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The targets of a line's inline links and images, `[text](target)`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_owned());
        rest = &rest[end..];
    }
    targets
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut files = guide_pages();
    files.push(repo().join("ARCHITECTURE.md"));
    let pages: HashMap<PathBuf, Page> = files.iter().map(|p| (p.clone(), parse(p))).collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages.values() {
        let dir = page.path.parent().unwrap();
        for (number, line) in &page.prose {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let file = if path.is_empty() {
                    page.path.clone()
                } else {
                    dir.join(path)
                };
                let at = format!("{}:{number}: {target}", page.path.display());
                let Ok(file) = file.canonicalize() else {
                    broken.push(format!("{at}: no such file"));
                    continue;
                };
                let Some(anchor) = anchor else { continue };
                let target_page = pages
                    .iter()
                    .find(|(p, _)| p.canonicalize().ok().as_ref() == Some(&file))
                    .map(|(_, page)| page);
                match target_page {
                    Some(target_page) if anchors(target_page).contains(anchor) => {}
                    Some(_) => broken.push(format!("{at}: no such heading")),
                    None => broken.push(format!("{at}: an anchor into a page not checked")),
                }
            }
        }
    }
    assert!(checked > 100, "the link check saw the links ({checked})");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The guide's pages in reading order, as `docs/README.md` lists them
/// (`1. [Title](page.md): ...`).
fn reading_order() -> Vec<String> {
    let index = std::fs::read_to_string(repo().join("docs/README.md")).unwrap();
    index
        .lines()
        .filter(|line| {
            line.split_once(". [")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .filter_map(|line| Some(line.split_once("](")?.1.split_once(')')?.0.to_owned()))
        .collect()
}

#[test]
fn the_guide_lists_every_page_and_each_links_to_the_next() {
    let order = reading_order();
    let mut listed: Vec<String> = order.clone();
    listed.sort();
    let mut pages: Vec<String> = guide_pages()
        .iter()
        .filter_map(|p| p.strip_prefix(repo().join("docs")).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p != "README.md")
        .collect();
    pages.sort();
    assert_eq!(listed, pages, "docs/README.md lists every page once");
    for pair in order.windows(2) {
        let text = std::fs::read_to_string(repo().join("docs").join(&pair[0])).unwrap();
        let next = text.lines().rev().find(|l| l.starts_with("Next: "));
        assert!(
            next.is_some_and(|l| l.contains(&format!("]({})", pair[1]))),
            "{} ends with `Next: ` and a link to {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn every_shell_block_is_run_or_says_why_not() {
    let mut wrong = Vec::new();
    let mut run = 0;
    for path in guide_pages() {
        let page = parse(&path);
        let at = |line: usize| format!("{}:{line}", path.display());
        for line in &page.stray_markers {
            wrong.push(format!("{}: a marker not before a code block", at(*line)));
        }
        for block in &page.blocks {
            let shell = SHELL.contains(&block.lang.as_str());
            match (&block.marker, shell) {
                (Some(Marker::Run), true) => run += 1,
                (Some(Marker::NotRun(reason)), true) if !reason.is_empty() => {}
                (Some(Marker::NotRun(_)), true) => {
                    wrong.push(format!("{}: `not run:` without a reason", at(block.line)))
                }
                (None, true) => wrong.push(format!(
                    "{}: a {} block needs <!-- run --> or <!-- not run: why -->",
                    at(block.line),
                    block.lang
                )),
                (Some(_), false) => wrong.push(format!(
                    "{}: a marker on a `{}` block, which is not run",
                    at(block.line),
                    block.lang
                )),
                (None, false) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(run >= 5, "the pages run their commands ({run} blocks)");
}

/// `keyward serve` on `redis`, killed on drop.
struct Keyward {
    url: String,
    child: Child,
}

impl Keyward {
    async fn start(redis: &TestRedis) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("serve")
            .env_clear()
            .env("KEYWARD_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "KEYWARD_REDIS_URL",
                redis.url("validator", VALIDATOR_PASSWORD),
            )
            .env(
                "KEYWARD_ADMIN_REDIS_URL",
                redis.url("manager", MANAGER_PASSWORD),
            )
            .env(
                "KEYWARD_MONITOR_REDIS_URL",
                redis.url("docs-monitor", MONITOR_PASSWORD),
            )
            .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYWARD_ARGON2_MEMORY_KIB", "1024")
            .env("KEYWARD_ARGON2_ITERATIONS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyward");
        let keyward = Keyward {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let health = http.get(format!("{}/ready", keyward.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "keyward did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        keyward
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `page`'s `run` blocks as one script; `Err` says what went wrong.
async fn run_page(page: &Page) -> Result<usize, String> {
    let blocks: Vec<&Block> = page
        .blocks
        .iter()
        .filter(|b| b.marker == Some(Marker::Run))
        .collect();
    if blocks.is_empty() {
        return Ok(0);
    }
    let name = page
        .path
        .strip_prefix(repo())
        .unwrap()
        .display()
        .to_string();
    let mut script = String::from("set -euo pipefail\n");
    for block in &blocks {
        script.push_str(&format!("echo '>>> {name}:{}' >&2\n", block.line));
        script.push_str(&block.text);
    }
    let redis = TestRedis::start_with_acl(&template_user("ops", "docs-monitor", MONITOR_PASSWORD));
    let keyward = Keyward::start(&redis).await;
    let home = std::env::temp_dir().join(random_id("keyward-docs-"));
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyward"), home.join("bin/keyward")).unwrap();
    let path = format!(
        "{}:{}",
        home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("KEYWARD_URL", &keyward.url)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .current_dir(&home)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PAGE_DEADLINE, run).await;
    let _ = std::fs::remove_dir_all(&home);
    let out = out
        .map_err(|_| format!("{name}: its blocks took over {PAGE_DEADLINE:?}"))?
        .map_err(|e| format!("{name}: cannot run bash: {e}"))?;
    println!(
        "{name}:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "{name}: a block failed ({}); the last `>>>` line says which\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(blocks.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_runs_its_commands() {
    // Each page on a Redis and keyward of its own, all at once.
    let runs: Vec<_> = guide_pages()
        .into_iter()
        .map(|path| tokio::spawn(async move { (run_page(&parse(&path)).await, path) }))
        .collect();
    let mut failures = Vec::new();
    let mut ran = HashMap::new();
    for run in runs {
        match run.await.expect("the page's task ends") {
            (Ok(n), path) => {
                ran.insert(path.strip_prefix(repo()).unwrap().to_owned(), n);
            }
            (Err(e), _) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for must in ["README.md", "docs/getting-started.md"] {
        let n = ran.get(Path::new(must)).copied().unwrap_or(0);
        assert!(n > 0, "{must} runs its commands");
    }
}
