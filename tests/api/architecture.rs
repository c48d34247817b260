//! ARCHITECTURE.md's checkable claims, checked against the code: the module
//! map covers every source file, the layers say which module may use which
//! (so there is no import circle), the third-party crates stay in the
//! modules the map names, the route list is the router's, and the metric
//! names and webhook event types the docs name are the code's. The file's
//! "What the tests hold true" section lists these; a claim added there
//! needs its check here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;

use crate::helpers::repo;

fn architecture() -> String {
    std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap()
}

/// The fenced block whose info string is "text <name>", one entry per line.
fn block(doc: &str, name: &str) -> Vec<String> {
    let fence = format!("```text {name}\n");
    let start = doc
        .find(&fence)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no ```text {name} block"))
        + fence.len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// One source file: its top-level module (`store` for `src/store/admin.rs`),
/// its path under `src/`, and its code without whole-line comments (doc
/// links are not dependencies).
struct Source {
    module: String,
    path: String,
    code: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = repo().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let path = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = path.split('/').next().unwrap().trim_end_matches(".rs");
            let text = std::fs::read_to_string(&file).unwrap();
            // A file's unit tests (its `#[cfg(test)]` module, at its end)
            // may use anything.
            let code = text
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Source {
                module: module.to_string(),
                path,
                code,
            }
        })
        .collect()
}

/// Which top-level modules each top-level module names (`crate::x`, `use
/// crate::{x, y::z}`; `keyward::x` in `main.rs`).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let path = Regex::new(r"(?:crate|keyward)::(\w+)").unwrap();
    let group = Regex::new(r"(?:crate|keyward)::\{([^}]*)\}").unwrap();
    let first = Regex::new(r"(?:^|,)\s*(\w+)").unwrap();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources() {
        let mut named: BTreeSet<String> = path
            .captures_iter(&s.code)
            .map(|c| c[1].to_string())
            .collect();
        for g in group.captures_iter(&s.code) {
            named.extend(first.captures_iter(&g[1]).map(|c| c[1].to_string()));
        }
        // The root's re-exports of `error` and `config`.
        let named = named.into_iter().map(|n| match n.as_str() {
            "Error" | "Result" => "error".to_string(),
            "Config" => "config".to_string(),
            _ => n,
        });
        let modules = top_modules();
        let named: Vec<String> = named
            .filter(|n| *n != s.module && modules.contains(n))
            .collect();
        deps.entry(s.module).or_default().extend(named);
    }
    deps
}

/// The name of every function of the tests and the code.
fn functions() -> BTreeSet<String> {
    let mut names = String::new();
    for dir in ["tests", "src"] {
        let out = std::process::Command::new("grep")
            .args(["-rhoE", r"fn [a-z0-9_]+"])
            .arg(repo().join(dir))
            .output()
            .unwrap();
        names.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    names
        .lines()
        .filter_map(|l| l.strip_prefix("fn "))
        .map(String::from)
        .collect()
}

fn top_modules() -> BTreeSet<String> {
    sources().into_iter().map(|s| s.module).collect()
}

#[test]
fn the_module_map_names_every_source_file_and_nothing_else() {
    let doc = architecture();
    let row = Regex::new(r"(?m)^\| `([a-z_]+(?:\.rs|/))` \|(.*)$").unwrap();
    let rows: BTreeMap<String, String> = row
        .captures_iter(&doc)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let mut missing = Vec::new();
    let mut entries = BTreeSet::new();
    for s in sources() {
        let (entry, file) = match s.path.split_once('/') {
            Some((dir, file)) => (format!("{dir}/"), Some(file.to_string())),
            None => (s.path.clone(), None),
        };
        match (rows.get(&entry), file) {
            (None, _) => missing.push(s.path.clone()),
            (Some(text), Some(file)) if !text.contains(&format!("`{file}`")) => {
                missing.push(s.path.clone())
            }
            _ => {}
        }
        entries.insert(entry);
    }
    let stale: Vec<_> = rows.keys().filter(|r| !entries.contains(*r)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table: not on it {missing:?}; on it but not in src/ {stale:?}"
    );
}

/// The layers block: one layer per line, highest first; a module may use
/// modules of its own layer or below, and `allow a -> b` lines name the
/// exceptions.
fn layers() -> (BTreeMap<String, usize>, BTreeSet<(String, String)>) {
    let mut layer_of = BTreeMap::new();
    let mut allowed = BTreeSet::new();
    for (i, line) in block(&architecture(), "layers").iter().enumerate() {
        if let Some(edge) = line.strip_prefix("allow ") {
            let (from, to) = edge.split_once("->").expect("allow a -> b");
            allowed.insert((from.trim().to_string(), to.trim().to_string()));
            continue;
        }
        for module in line.split_whitespace() {
            assert!(
                layer_of.insert(module.to_string(), i).is_none(),
                "{module} is in two layers"
            );
        }
    }
    (layer_of, allowed)
}

#[test]
fn dependencies_point_one_way_down_the_layers() {
    let (layer_of, allowed) = layers();
    let modules = top_modules();
    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(*m))
        .collect();
    let unknown: Vec<_> = layer_of.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        unplaced.is_empty() && unknown.is_empty(),
        "the layers block: modules in no layer {unplaced:?}, names that are no module {unknown:?}"
    );
    let mut upward = Vec::new();
    for (from, tos) in dependencies() {
        for to in tos {
            if layer_of[&to] < layer_of[&from] && !allowed.contains(&(from.clone(), to.clone())) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "dependencies that point up ARCHITECTURE.md's layers: {upward:?}"
    );
}

#[test]
fn no_import_circle_but_the_one_the_layers_allow() {
    let (_, allowed) = layers();
    let mut graph = dependencies();
    for (from, to) in &allowed {
        graph.get_mut(from).map(|d| d.remove(to));
    }
    // Depth-first, looking for an edge back into the path.
    fn circle(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut found = path[at..].to_vec();
            found.push(m.to_string());
            return Some(found);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(found) = circle(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let found = circle(module, &graph, &mut Vec::new(), &mut done);
        assert!(found.is_none(), "an import circle: {found:?}");
    }
}

#[test]
fn third_party_crates_stay_in_the_modules_the_map_names() {
    let doc = architecture();
    let mut wrong = Vec::new();
    for line in block(&doc, "crates") {
        let (krate, claimed) = line.split_once(':').expect("`crate: module ...`");
        let claimed: BTreeSet<String> = claimed.split_whitespace().map(String::from).collect();
        let name = Regex::new(&format!(r"(?:^|[^\w]){}::", krate.trim())).unwrap();
        let users: BTreeSet<String> = sources()
            .into_iter()
            .filter(|s| name.is_match(&s.code))
            .map(|s| s.module)
            .collect();
        if users != claimed {
            wrong.push(format!("{krate}: the code {users:?}, the map {claimed:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md's crates block: {wrong:?}"
    );
}

/// The methods an OpenAPI path item may hold: a path with all of them is
/// written `ANY` in the table.
const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

#[test]
fn the_route_table_is_the_routers() {
    let doc = architecture();
    let row =
        Regex::new(r"(?m)^\| `(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|TRACE|ANY) ([^`]+)` \|(.*)$")
            .unwrap();
    let mut documented = BTreeSet::new();
    let mut elsewhere = BTreeSet::new();
    for c in row.captures_iter(&doc) {
        let route = format!("{} {}", &c[1], &c[2]);
        if c[3].contains("not in OpenAPI") {
            elsewhere.insert(c[2].to_string());
        } else {
            documented.insert(route);
        }
    }
    let openapi = keyward::http::openapi().unwrap();
    let mut served = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        let methods: Vec<&String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| METHODS.contains(&m.as_str()))
            .collect();
        if methods.len() == METHODS.len() {
            served.insert(format!("ANY {path}"));
        } else {
            served.extend(
                methods
                    .iter()
                    .map(|m| format!("{} {path}", m.to_uppercase())),
            );
        }
    }
    assert_eq!(
        documented, served,
        "ARCHITECTURE.md's route table against the OpenAPI document"
    );
    let http: String = sources()
        .into_iter()
        .filter(|s| s.module == "http")
        .map(|s| s.code)
        .collect();
    for path in elsewhere {
        assert!(
            http.contains(&format!("\"{path}\"")),
            "{path} is in the route table but no route of src/http/"
        );
    }
}

/// Every `keyward_*` metric the docs name is one the code declares, and
/// every metric the code declares is in the docs.
#[test]
fn the_metrics_the_docs_name_are_the_codes() {
    let telemetry = std::fs::read_to_string(repo().join("src/telemetry.rs")).unwrap();
    let name = Regex::new(r"\bkeyward_[a-z0-9_]+[a-z0-9]").unwrap();
    let declared: BTreeSet<String> = name
        .find_iter(&telemetry)
        .map(|m| m.as_str().to_string())
        .collect();
    let mut docs = architecture();
    for page in std::fs::read_dir(repo().join("docs")).unwrap() {
        let page = page.unwrap().path();
        if page.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(page).unwrap());
        }
    }
    docs.push_str(&std::fs::read_to_string(repo().join("README.md")).unwrap());
    // A histogram's series carry suffixes of their own.
    // Not a test's name (`keyward_migrate_finds_...`).
    let tests = functions();
    let named: BTreeSet<String> = name
        .find_iter(&docs)
        .map(|m| m.as_str())
        .filter(|m| !tests.contains(*m))
        .map(|m| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s).filter(|b| declared.contains(*b)))
                .unwrap_or(m)
                .to_string()
        })
        .collect();
    let unknown: Vec<_> = named.difference(&declared).collect();
    let undocumented: Vec<_> = declared.difference(&named).collect();
    assert!(
        unknown.is_empty() && undocumented.is_empty(),
        "metrics the docs name but the code does not declare {unknown:?}; \
         declared but never documented {undocumented:?}"
    );
}

#[test]
fn the_event_types_listed_are_the_webhooks_list() {
    let listed = block(&architecture(), "events");
    let code: Vec<String> = keyward::webhook::EventType::ALL
        .iter()
        .map(|e| e.as_str().to_string())
        .collect();
    assert_eq!(listed, code, "ARCHITECTURE.md's events block");
}

/// The data table of `docs/redis.md` (the names operators and other tools
/// read) against `store/names.rs`, which every name keyward writes is made
/// from: each prefix there begins a row here, and each row begins with one.
#[test]
fn the_redis_data_table_is_names_rs() {
    let names = std::fs::read_to_string(repo().join("src/store/names.rs")).unwrap();
    let constant = Regex::new(r#"pub const [A-Z_]+: &str = "([^"]+)";"#).unwrap();
    let prefixes: BTreeSet<String> = constant
        .captures_iter(&names)
        .map(|c| c[1].to_string())
        .filter(|p| p.contains(':'))
        .collect();
    let page = std::fs::read_to_string(repo().join("docs/redis.md")).unwrap();
    let table = &page[page
        .find("## Redis data")
        .expect("docs/redis.md: ## Redis data")..];
    let table = &table[..table[3..].find("\n## ").map_or(table.len(), |i| i + 3)];
    let row = Regex::new(r"(?m)^\| `([^`]+)`").unwrap();
    let rows: Vec<String> = row
        .captures_iter(table)
        .map(|c| c[1].to_string())
        .filter(|r| r != "key")
        .collect();
    let undocumented: Vec<_> = prefixes
        .iter()
        .filter(|p| !rows.iter().any(|r| r.starts_with(p.as_str())))
        .collect();
    // The audit streams of the deployment layout are `audit:<deployment>:`.
    let unknown: Vec<_> = rows
        .iter()
        .filter(|r| !prefixes.iter().any(|p| r.starts_with(p.as_str())))
        .filter(|r| !r.starts_with("audit:<deployment>:"))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/redis.md's data table: names.rs prefixes with no row {undocumented:?}; \
         rows no names.rs prefix begins {unknown:?}"
    );
}

/// Every `KEYWARD_*` variable the docs name is one something reads: a
/// setting of `config.rs` (or the CLI's), a benchmark's, a test's or a
/// script's.
#[test]
fn every_variable_the_docs_name_is_read_somewhere() {
    let variable = Regex::new(r"KEYWARD_[A-Z0-9_]*[A-Z0-9]").unwrap();
    let mut read = String::new();
    for dir in ["src", "benches", "tests", "redis", "examples"] {
        let out = std::process::Command::new("grep")
            .args(["-rhoE", "KEYWARD_[A-Z0-9_]*[A-Z0-9]"])
            .arg(repo().join(dir))
            .output()
            .unwrap();
        read.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    read.push_str(&std::fs::read_to_string(repo().join("Makefile")).unwrap());
    let read: BTreeSet<&str> = read.split_whitespace().collect();
    let mut docs = architecture();
    docs.push_str(&std::fs::read_to_string(repo().join("README.md")).unwrap());
    for page in std::fs::read_dir(repo().join("docs")).unwrap() {
        let page = page.unwrap().path();
        if page.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(page).unwrap());
        }
    }
    let unknown: BTreeSet<&str> = variable
        .find_iter(&docs)
        .map(|m| m.as_str())
        // `<NAME>_FILE` of a secret, and placeholders like `KEYWARD_X`.
        .filter(|v| !read.contains(v) && !read.contains(&v.trim_end_matches("_FILE")))
        .collect();
    assert!(
        unknown.is_empty(),
        "variables the docs name that nothing reads: {unknown:?}"
    );
}

/// Every test ARCHITECTURE.md cites by name (a backticked snake_case name
/// of four words or more, alone or as `file::name`) is a function of the
/// tests or the code: a renamed test leaves no claim pointing at nothing.
#[test]
fn every_test_cited_exists() {
    let defined = functions();
    let cited = Regex::new(r"`(?:[a-z_]+::)?([a-z0-9]+(?:_[a-z0-9]+){3,})`").unwrap();
    let doc = architecture();
    // Fields, settings and metrics are names too: any word of the code.
    let src: String = sources().into_iter().map(|s| s.code).collect();
    let word = |name: &str| Regex::new(&format!(r"\b{name}\b")).unwrap().is_match(&src);
    let missing: BTreeSet<&str> = cited
        .captures_iter(&doc)
        .map(|c| c.get(1).unwrap().as_str())
        .filter(|name| !defined.contains(*name) && !word(name))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md cites tests that do not exist: {missing:?}"
    );
}
