//! The crate map's rules, held by a test: dependencies point one way (no
//! module imports one of a layer above its own, and no two modules import
//! each other, directly or round a circle), and fred, axum and argon2 stay
//! in the modules that own them. Reads the source files; test-only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules by layer, lowest first; `lib` (the crate
/// root, `run`) wires the layers together.
const LAYERS: &[&[&str]] = &[
    // Pure, or used by all: no I/O of keyward's own.
    &[
        "clock",
        "key",
        "scope",
        "plan",
        "net",
        "text",
        "role",
        "event",
        "audit",
        "page",
        "config",
        "error",
        "telemetry",
    ],
    // Redis, Argon2id, TLS.
    &["store", "hash", "tls"],
    // Who may do what on the admin API.
    &["access", "limits"],
    // The operations.
    &[
        "validate",
        "admin",
        "operators",
        "trail",
        "activity",
        "webhook",
    ],
    // HTTP, and the document of its routes.
    &["http", "openapi"],
    // The crate root and the commands off the request path.
    &["lib", "cli", "acl", "migrate"],
];

/// Imports that break the layers, each with its reason; the one circle
/// the crate has. `config` checks at start-up that the TLS files load,
/// which only `tls` (rustls) can do, and `tls` reads `config`'s TLS
/// settings and answers its `ConfigError`.
const EXCEPTIONS: &[(&str, &str)] = &[("config", "tls")];

/// Which modules may name each of these crates.
const OWNERS: &[(&str, &[&str])] = &[
    ("fred", &["store"]),
    ("axum", &["http", "error"]),
    ("argon2", &["hash"]),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each source file's top-level module and its code lines (comments and
/// `#[cfg(test)]` modules at the end of a file left out).
fn sources() -> Vec<(String, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    paths
        .into_iter()
        .filter(|p| !p.ends_with("main.rs") && !p.ends_with("layers.rs"))
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = Path::new(first.as_os_str())
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(str::to_owned)
                .collect();
            (module, code)
        })
        .collect()
}

/// What each top-level module imports of the crate's others.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, lines) in sources() {
        let uses = graph.entry(module.clone()).or_default();
        for line in lines {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_module_is_in_a_layer_and_imports_none_above_its_own() {
    let graph = imports();
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        let Some(own) = layer(module) else {
            wrong.push(format!("{module} is in no layer"));
            continue;
        };
        for used in uses {
            // `crate::Error`, `crate::Result`, `crate::Config`: the root's
            // re-exports of error and config.
            let used = match used.as_str() {
                "Error" | "Result" => "error",
                "Config" => "config",
                other => other,
            };
            match layer(used) {
                Some(theirs) if theirs <= own => {}
                _ if EXCEPTIONS.contains(&(module.as_str(), used)) => {}
                _ => wrong.push(format!("{module} imports {used}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_two_modules_import_each_other_even_round_a_circle() {
    let graph = imports();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            let mut circle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        let allowed = |next: &str| !EXCEPTIONS.contains(&(m, next));
        for next in graph.get(m).into_iter().flatten().filter(|n| allowed(n)) {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let circle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "an import circle: {circle:?}");
    }
}

#[test]
fn fred_axum_and_argon2_stay_in_their_modules() {
    let mut wrong = Vec::new();
    for (module, lines) in sources() {
        for (krate, owners) in OWNERS {
            let named = lines
                .iter()
                .any(|l| l.contains(&format!("{krate}::")) && !l.contains(&format!("_{krate}::")));
            if named && !owners.contains(&module.as_str()) {
                wrong.push(format!("{module} names {krate}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
