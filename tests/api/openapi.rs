//! The OpenAPI document at `/openapi.json`, held to the service by
//! independent tools from PyPI (installed by `tests/openapi/install.sh` into
//! a virtualenv under `target/` when missing): `openapi-spec-validator` says
//! it is valid OpenAPI, and `schemathesis` runs every operation against a
//! live keyward on a real Redis, with the admin token, and finds nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regex::Regex;
use reqwest::StatusCode;
use serde_json::{json, Value};
use validator::Validate;

use crate::helpers::{TestApp, TestRedis, ADMIN_TOKEN};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's `bin/` folder, installing the tools on first use.
fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/openapi/install.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/openapi/install.sh");
        assert!(out.status.success(), "tests/openapi/install.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A scratch folder under `target/` for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/openapi-test").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;

    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    // Every operation: a unique id, and an error body for its error statuses.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            let responses = op["responses"].as_object().unwrap();
            // `/v1/auth` answers every method; every other path has a 405.
            assert_eq!(
                responses.contains_key("405"),
                !path.starts_with("/v1/auth"),
                "{method} {path}: 405"
            );
            let is_admin = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("admin_token").is_some()));
            if is_admin {
                for status in ["401", "404", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: admin operation without {status}"
                    );
                }
            }
        }
    }
    // Links as OpenAPI spells them (utoipa writes `operation_id`; src/openapi.rs mends it).
    let link = &doc["paths"]["/v1/mint-key"]["post"]["responses"]["201"]["links"]["ValidateKey"];
    assert_eq!(link["operationId"], "validate_key", "{link}");
    assert_eq!(link["requestBody"]["api_key"], "$response.body#/api_key");
    assert!(!doc.to_string().contains("\"operation_id\""));

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["admin_token"]["type"], "http");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    let rate_limited = &doc["components"]["responses"]["RateLimited"]["headers"];
    assert!(rate_limited.get("Retry-After").is_some(), "{rate_limited}");
    assert!(
        rate_limited.get("X-RateLimit-Limit").is_some(),
        "{rate_limited}"
    );

    // The document is the same without an admin token, and served without one.
    let redis = Arc::new(TestRedis::start());
    let no_admin = TestApp::spawn_with(redis, |c| c.admin_token = None).await;
    assert_eq!(document(&no_admin).await, doc);

    let dir = scratch("valid");
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(tools().join("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        text(&out)
    );
}

/// What the document says a value may be, against what the service takes:
/// every value generated from a pattern is taken, and random values match
/// the pattern exactly when they are taken (for networks, only the first:
/// `ipnet` also takes leading zeros in IPv4 octets and a `::` that stands
/// for no group, which the document leaves out).
#[test]
fn the_documents_patterns_and_bounds_are_the_validators() {
    let doc = keyward::http::openapi().unwrap();
    let schemas = &doc["components"]["schemas"];
    let pattern = |v: &Value| v["pattern"].as_str().unwrap().to_owned();
    let auth = doc["paths"]["/v1/auth"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "X-Keyward-Required-Scopes")
        .unwrap();
    let required_scopes = pattern(&auth["schema"]);
    let scope = pattern(&schemas["Scope"]);
    let ip = pattern(&schemas["ValidateIn"]["properties"]["client_ip"]["oneOf"][1]);
    let network = pattern(&schemas["Network"]);

    // A runner per property: one counts its cases across runs.
    let runner = || {
        TestRunner::new(Config {
            cases: 400,
            failure_persistence: None,
            ..Config::default()
        })
    };
    // From a pattern (`^...$`, which proptest cannot generate from).
    let generated = |p: &str| {
        let inner = p.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
        proptest::string::string_regex(inner).unwrap()
    };
    let visible = |s: &str| s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));

    // Required scopes: a value matches exactly when it is visible ASCII and
    // parses (any other is a 422).
    let re = Regex::new(&required_scopes).unwrap();
    let values = prop_oneof![
        generated(&required_scopes),
        "[a-c*:, \t!-]{0,12}",
        "([a-b]{127,129}, ?){1,2}",
    ];
    runner()
        .run(&values, |s| {
            let parsed = visible(&s) && keyward::scope::parse_list(&s).is_ok();
            prop_assert_eq!(re.is_match(&s), parsed, "{:?}", s);
            Ok(())
        })
        .unwrap();
    for (n, expected) in [(64, true), (65, false)] {
        let s = vec!["a"; n].join(", ");
        assert_eq!(re.is_match(&s), expected, "{n} scopes");
        assert_eq!(keyward::scope::parse_list(&s).is_ok(), expected);
    }

    let re = Regex::new(&scope).unwrap();
    runner()
        .run(
            &prop_oneof![generated(&scope), "[a-c*:é ]{0,4}", "a{127,129}"],
            |s| {
                prop_assert_eq!(re.is_match(&s), keyward::scope::is_valid(&s), "{:?}", s);
                Ok(())
            },
        )
        .unwrap();

    // Addresses: the pattern is std's `IpAddr` grammar.
    let addresses = || {
        prop_oneof![
            "[0-9a-f:.]{0,20}",
            "(:{0,2}[0-9a-f]{1,5}){0,9}:{0,2}",
            "(:{0,2}[0-9a-f]{1,4}){0,7}:{0,2}([0-9]{1,3}\\.){3}[0-9]{1,4}",
            "([0-9]{1,4}\\.){2,4}[0-9]{1,4}",
        ]
    };
    let re = Regex::new(&ip).unwrap();
    runner()
        .run(&prop_oneof![generated(&ip), addresses()], |s| {
            let parsed = s.parse::<std::net::IpAddr>().is_ok();
            prop_assert_eq!(re.is_match(&s), parsed, "{:?}", s);
            Ok(())
        })
        .unwrap();

    // Networks: what the pattern matches, mint-key takes.
    let takes = |cidrs: Value| {
        let mint =
            json!({"project_id": "p", "owner": "o", "server_name": "s", "allowed_cidrs": cidrs});
        serde_json::from_value::<keyward::admin::MintIn>(mint)
            .unwrap()
            .validate()
            .is_ok()
    };
    let re = Regex::new(&network).unwrap();
    let networks = prop_oneof![
        generated(&network),
        (addresses(), "(/[0-9]{1,4})?").prop_map(|(a, p)| a + &p),
    ];
    runner()
        .run(&networks, |s| {
            if re.is_match(&s) {
                prop_assert!(takes(json!([s])), "{:?}", s);
            }
            Ok(())
        })
        .unwrap();
    for refused in [
        "",
        " ",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/8/8",
        "example.com",
    ] {
        assert!(
            !re.is_match(refused) && !takes(json!([refused])),
            "{refused:?}"
        );
    }

    // Rate limits: the documented maximum, and no more.
    let mint = &schemas["MintIn"]["properties"];
    let max = mint["rate_limit_per_minute"]["maximum"].as_u64().unwrap();
    assert_eq!(max, i64::MAX as u64);
    let limit = |n: u64| {
        let mint = json!({"project_id": "p", "owner": "o", "server_name": "s", "rate_limit_per_minute": n});
        serde_json::from_value::<keyward::admin::MintIn>(mint)
            .unwrap()
            .validate()
            .is_ok()
    };
    assert!(limit(max) && !limit(max + 1));
    assert_eq!(
        schemas["UpdateIn"]["properties"]["rate_limit_per_minute"]["maximum"],
        max
    );

    // Expiry: "in the future" as of when the document was made.
    let floor = mint["expires_at"]["exclusiveMinimum"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(floor <= now && now - floor < 60.0, "{floor} vs {now}");
    let at = |t: f64| {
        let mint = json!({"project_id": "p", "owner": "o", "server_name": "s", "expires_at": t});
        serde_json::from_value::<keyward::admin::MintIn>(mint)
            .unwrap()
            .validate()
            .is_ok()
    };
    assert!(!at(floor) && at(now + 3600.0));
}

/// schemathesis over every operation, with every check (schema-valid data
/// accepted, schema-invalid data refused, undeclared methods, ...), fixed
/// seeds and a bounded number of examples per operation.
/// `tests/openapi/schemathesis.toml` sets the phases, the admin token (per
/// security scheme) and that `/v1/auth` takes every method; this test adds two
/// live keys minted for the run, so that validation's success answers are
/// checked too: one for `/v1/auth` (scoped, with metadata, a non-ASCII owner
/// and a low rate limit, so 200, 403 and 429 all happen) and one that
/// `validate-key` bodies use half of the time. `tests/openapi/hooks.py`
/// adds two checks: the headers are exactly the documented ones, and the
/// run reached the answers that matter; and it moves expiry times on as the
/// run goes, since "in the future" moves too. The first seed runs every phase;
/// the others only the seeded ones (fuzzing and stateful chains), with fewer
/// examples and without the reached-answers check, for breadth at a small
/// cost; the last two with operator tokens, an owner's and a viewer's of the
/// project, so the 403s and 404s of a scoped role are checked against the
/// document too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_a_live_keyward() {
    // Webhook URLs are pointed at loopback (hooks.py), which this allows.
    let redis = Arc::new(TestRedis::start());
    let app = TestApp::spawn_with(redis, |c| c.webhook_allow_private = true).await;
    let project = app.project().await;
    let auth_key = app
        .mint(
            &project,
            json!({
                "owner": "Zoë Smith",
                "scopes": ["chat:*", "files:read"],
                "metadata": {"tier": "gold", "limits": [1, 2]},
                "rate_limit_per_minute": 300,
            }),
        )
        .await;
    let body_key = app.mint(&project, json!({ "scopes": ["*"] })).await;

    let dir = scratch("schemathesis");
    let committed =
        std::fs::read_to_string(repo().join("tests/openapi/schemathesis.toml")).unwrap();
    let config = format!(
        "{committed}\n# Added by tests/api/openapi.rs for this run: live keys.\n\
         [auth.openapi.api_key_bearer]\nbearer = \"{}\"\n\n\
         [dictionaries.live_keys]\nvalues = [\"{}\"]\n\n\
         [parameters.\"body.api_key\"]\ndictionary = \"live_keys\"\nprobability = 0.5\n",
        auth_key.api_key, body_key.api_key
    );
    std::fs::write(dir.join("schemathesis.toml"), config).unwrap();

    // A viewer of the project: the same document, answered with its 403s
    // and 404s.
    let viewer: Value = app
        .admin_post(
            "/v1/admin/operators",
            &json!({ "name": "schemathesis", "role": "viewer", "projects": [&project] }),
        )
        .await
        .json()
        .await
        .unwrap();
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let owner: Value = app
        .admin_post(
            "/v1/admin/operators",
            &json!({ "name": "schemathesis", "role": "owner", "projects": ["*"] }),
        )
        .await
        .json()
        .await
        .unwrap();
    let owner = owner["token"].as_str().unwrap().to_owned();

    // Seed, then what differs from the first run's arguments, then whose
    // token the admin operations carry.
    let scoped: &[&str] = &[
        "--max-examples",
        "4",
        "--phases",
        "fuzzing,stateful",
        "--exclude-checks",
        "keyward_reached",
    ];
    let runs: [(&str, &[&str], &str); 4] = [
        ("20260613", &["--max-examples", "12"], ADMIN_TOKEN),
        ("7", scoped, ADMIN_TOKEN),
        ("1", scoped, &owner),
        ("22", scoped, &viewer),
    ];
    // For exploring by hand, e.g. `--max-examples 200 --seed 1`: added to
    // the first run only (later options win), and the others are skipped.
    let extra = std::env::var("KEYWARD_SCHEMATHESIS_ARGS").unwrap_or_default();
    let runs = if extra.is_empty() {
        &runs[..]
    } else {
        &runs[..1]
    };
    for &(seed, args, token) in runs {
        let (base, schema) = (app.url(""), app.url("/openapi.json"));
        let (bin, cwd) = (tools().to_owned(), dir.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let extra = extra.clone();
        let token = token.to_owned();
        let report = dir.join(format!("report-{seed}"));
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin.join("schemathesis"))
                .current_dir(&cwd)
                .arg("--config-file")
                .arg(cwd.join("schemathesis.toml"))
                .args(["run", &schema, "--url", &base])
                .args(["--seed", seed])
                .args(&args)
                .args(["--workers", "1", "--no-color"])
                .args(["--checks", "all"])
                .args(["--report", "junit", "--report-dir"])
                .arg(report)
                .args(extra.split_whitespace())
                .env("KEYWARD_TEST_ADMIN_TOKEN", &token)
                .env("SCHEMATHESIS_HOOKS", "hooks")
                .env("PYTHONPATH", repo().join("tests/openapi"))
                .output()
                .expect("run schemathesis")
        })
        .await
        .unwrap();
        eprintln!("schemathesis --seed {seed} took {:?}", started.elapsed());
        std::fs::write(dir.join(format!("output-{seed}.txt")), text(&out)).unwrap();
        assert!(
            out.status.success(),
            "schemathesis --seed {seed}: {}",
            text(&out)
        );
    }
}

#[test]
fn integers_written_with_a_zero_fraction_are_integers() {
    // JSON Schema's integers include `5.0`; so do the validators'.
    let counts = |n: Value| {
        let mint = json!({"project_id": "p", "owner": "o", "server_name": "s", "rate_limit_per_minute": n});
        let rotate = json!({"project_id": "p", "key_id": "k_3xAmPlE0key1", "grace_seconds": n});
        let update =
            json!({"project_id": "p", "key_id": "k_3xAmPlE0key1", "rate_limit_per_minute": n});
        let mint =
            serde_json::from_value::<keyward::admin::MintIn>(mint).map(|m| m.rate_limit_per_minute);
        let rotate =
            serde_json::from_value::<keyward::admin::RotateIn>(rotate).map(|r| r.grace_seconds);
        let update = serde_json::from_value::<keyward::admin::UpdateIn>(update);
        let update = update.map(|u| u.rate_limit_per_minute.flatten());
        [mint.ok(), rotate.ok(), update.ok()]
    };
    assert_eq!(counts(json!(5.0)), [Some(Some(5)); 3]);
    assert_eq!(counts(json!(5)), [Some(Some(5)); 3]);
    // Parsed exactly (serde_json's float_roundtrip): a fast parse read this
    // as ...059.25, not a whole number.
    let big: Value = serde_json::from_str("1930318414343059.0").unwrap();
    assert_eq!(counts(big), [Some(Some(1_930_318_414_343_059)); 3]);
    for refused in [json!(5.5), json!(-1), json!(-1.0), json!("5"), json!(1e20)] {
        assert_eq!(counts(refused.clone()), [None; 3], "{refused}");
    }
}
