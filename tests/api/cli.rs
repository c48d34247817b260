//! The `keyward` admin command line: the real binary's `project`, `key`,
//! `operator`, `webhook`, `whoami`, `audit` and `check` subcommands against
//! a live keyward on a real Redis. Each test checks what a script relies
//! on: stdout, one line of error on stderr, and the exit code (0 done,
//! 1 refused, 2 usage, 3 unavailable).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{free_port, template_user, TestApp, TestRedis, ADMIN_TOKEN};

/// One run of the binary: its stdout, stderr and exit code.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self}");
        assert_eq!(self.stderr, "", "{self}");
        &self.stdout
    }

    /// Asserts exit `code` with one line on stderr containing `says`.
    fn fails(&self, code: i32, says: &str) {
        assert_eq!(self.code, Some(code), "{self}");
        assert_eq!(self.stderr.lines().count(), 1, "one line of error: {self}");
        assert!(self.stderr.contains(says), "{self}");
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The value of `name`'s row in a two-column table.
fn row<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table.lines().find_map(|line| {
        let (first, rest) = line.split_once(' ')?;
        (first == name).then(|| rest.trim())
    })
}

/// A table row's cells, for cells without spaces.
fn fields(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The binary pointed at `url`, with the admin token in its environment
/// (and nothing of the test's own KEYWARD_* environment).
fn keyward(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("KEYWARD_URL", url)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN);
    cmd
}

/// Runs `cmd` with `stdin`, off the async runtime (keyward may be serving
/// in this process).
async fn run(mut cmd: Command, stdin: &str) -> Run {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyward");
        // A child that exits without reading its input (a usage error)
        // may close the pipe first: its exit and output are what callers
        // assert.
        let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
        }
        Run::from(child.wait_with_output().unwrap())
    })
    .await
    .unwrap()
}

/// `keyward <args>` against `app`, with the admin token.
async fn cli(app: &TestApp, args: &[&str]) -> Run {
    let mut cmd = keyward(&app.url(""));
    cmd.args(args);
    run(cmd, "").await
}

/// `keyward <args>` against `app`, with `token` (an operator's) as the admin token.
async fn cli_as(app: &TestApp, token: &str, args: &[&str]) -> Run {
    let mut cmd = keyward(&app.url(""));
    cmd.env("KEYWARD_ADMIN_TOKEN", token).args(args);
    run(cmd, "").await
}

/// `keyward check <args>` against `app`, the key on standard input.
async fn check(app: &TestApp, key: &str, args: &[&str]) -> Run {
    let mut cmd = keyward(&app.url(""));
    cmd.env_remove("KEYWARD_ADMIN_TOKEN")
        .arg("check")
        .args(args);
    run(cmd, &format!("{key}\n")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_create_and_show_print_a_table_or_json_and_refusals_exit_1() {
    let app = TestApp::spawn().await;
    let id = crate::helpers::random_id("p");

    let created = cli(
        &app,
        &[
            "project", "create", &id, "--label", "Alpha", "--owner", "team-a",
        ],
    )
    .await;
    let table = created.ok();
    assert_eq!(row(table, "project_id"), Some(id.as_str()), "{created}");
    assert_eq!(row(table, "label"), Some("Alpha"), "{created}");
    assert!(
        row(table, "created_at").unwrap().starts_with("20"),
        "{created}"
    );

    let shown = cli(&app, &["project", "show", &id, "--json"]).await.json();
    assert_eq!(shown["project_id"], id.as_str());
    assert_eq!(shown["owner"], "team-a");
    // --json and --url may come before the subcommand too.
    let shown_again = cli(&app, &["project", "--json", "show", &id]).await.json();
    assert_eq!(shown_again, shown);

    cli(
        &app,
        &["project", "create", &id, "--label", "A", "--owner", "o"],
    )
    .await
    .fails(1, "project_exists");
    cli(&app, &["project", "show", "nope-no-such-project"])
        .await
        .fails(1, "project_not_found");
    cli(
        &app,
        &[
            "project", "create", "bad id!", "--label", "A", "--owner", "o",
        ],
    )
    .await
    .fails(1, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mint_prints_only_the_key_so_command_substitution_works() {
    let app = TestApp::spawn().await;
    let project = app.project().await;

    // KEY=$(keyward key mint ...): stdout is the key and a newline, nothing else.
    let minted = cli(
        &app,
        &[
            "key",
            "mint",
            &project,
            "--owner",
            "alice",
            "--server-name",
            "api-1",
        ],
    )
    .await;
    let stdout = minted.ok();
    assert_eq!(stdout.lines().count(), 1, "{minted}");
    let key = stdout.trim_end_matches('\n');
    assert!(
        key.starts_with(&format!("sk-proj.{project}.k_")),
        "{minted}"
    );
    app.validate(key, StatusCode::OK).await;

    // Through a real shell, as the README shows it.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "KEY=$(\"$0\" key mint {project} --owner bob --server-name api-2) && printf '%s' \"$KEY\""
        ))
        .arg(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_URL", app.url(""))
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN);
    let from_shell = run(sh, "").await;
    let key_from_shell = from_shell.ok();
    assert!(key_from_shell.starts_with("sk-proj."), "{from_shell}");
    app.validate(key_from_shell, StatusCode::OK).await;

    // Every mint option, then --json: the API's answer.
    let minted = cli(
        &app,
        &[
            "key",
            "mint",
            &project,
            "--owner",
            "Zoë",
            "--server-name",
            "api-3",
            "--metadata",
            r#"{"tier":"gold"}"#,
            "--expires-in",
            "30d",
            "--rate-limit",
            "600",
            "--scope",
            "chat:*",
            "--scope",
            "files:read",
            "--cidr",
            "10.0.0.0/8",
            "--json",
        ],
    )
    .await
    .json();
    assert!(minted["api_key"].as_str().unwrap().starts_with("sk-proj."));
    let key_id = minted["key_id"].as_str().unwrap();
    let expires_at = minted["expires_at"].as_f64().unwrap();
    let in_30_days = keyward::store::now() + 30.0 * 86_400.0;
    assert!((expires_at - in_30_days).abs() < 60.0, "{minted}");

    let shown = cli(&app, &["key", "show", &project, key_id, "--json"])
        .await
        .json();
    assert_eq!(shown["owner"], "Zoë");
    assert_eq!(shown["metadata"], json!({"tier": "gold"}));
    assert_eq!(shown["rate_limit_per_minute"], 600);
    assert_eq!(shown["scopes"], json!(["chat:*", "files:read"]));
    assert_eq!(shown["allowed_cidrs"], json!(["10.0.0.0/8"]));
    assert!(shown.get("secret_hash").is_none());

    let table = cli(&app, &["key", "show", &project, key_id]).await;
    let table = table.ok();
    for (name, value) in [
        ("key_id", key_id),
        ("status", "active"),
        ("owner", "Zoë"),
        ("scopes", "chat:*,files:read"),
        ("allowed_cidrs", "10.0.0.0/8"),
        ("rate_limit", "600/min"),
        ("metadata", r#"{"tier":"gold"}"#),
        ("usage_count", "0"),
        ("last_used", "never"),
    ] {
        assert_eq!(row(table, name), Some(value), "{name} in\n{table}");
    }

    // The API's refusals, one line each.
    cli(
        &app,
        &[
            "key",
            "mint",
            "no-such-project",
            "--owner",
            "a",
            "--server-name",
            "s",
        ],
    )
    .await
    .fails(1, "project_not_found");
    cli(
        &app,
        &[
            "key",
            "mint",
            &project,
            "--owner",
            "a",
            "--server-name",
            "s",
            "--cidr",
            "nonsense",
        ],
    )
    .await
    .fails(1, "allowed_cidrs");
    cli(&app, &["key", "show", &project, "k_NoSuchKey0"])
        .await
        .fails(1, "key_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_follows_the_cursor_across_pages_and_stops_at_limit() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    // More keys than one page (the CLI asks for 100 at a time).
    let mut minted = std::collections::BTreeSet::new();
    for _ in 0..7 {
        let mints = (0..15).map(|_| app.mint(&project, json!({})));
        for m in futures::future::join_all(mints).await {
            minted.insert(m.key_id);
        }
    }
    assert_eq!(minted.len(), 105);

    let all = cli(&app, &["key", "list", &project, "--json"]).await.json();
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 105, "every key once");
    assert_eq!(
        listed
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        minted.iter().map(String::as_str).collect(),
    );
    assert!(all["next"].is_null());

    let table = cli(&app, &["key", "list", &project]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert!(lines[0].starts_with("KEY ID"), "{table}");
    assert_eq!(lines.len(), 1 + 105 + 1, "{table}");
    assert_eq!(lines[106], "105 keys");
    assert!(lines[1].contains(" active "), "{table}");

    // --limit across a page boundary, and within one.
    let some = cli(&app, &["key", "list", &project, "--limit", "102", "--json"])
        .await
        .json();
    assert_eq!(some["items"].as_array().unwrap().len(), 102);
    assert!(some["next"].is_string());
    let few = cli(&app, &["key", "list", &project, "--limit", "3"]).await;
    assert!(
        few.ok()
            .ends_with("3 keys (stopped at --limit; there are more)\n"),
        "{few}"
    );

    let empty = app.project().await;
    assert_eq!(cli(&app, &["key", "list", &empty]).await.ok(), "no keys\n");
    cli(&app, &["key", "list", "no-such-project"])
        .await
        .fails(1, "project_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_update_rotate_and_revoke_change_what_validation_sees() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({ "scopes": ["a"] })).await;
    let id = key.key_id.as_str();

    let updated = cli(
        &app,
        &[
            "key",
            "update",
            &project,
            id,
            "--owner",
            "carol",
            "--scope",
            "chat:*",
            "--scope",
            "files:read",
            "--rate-limit",
            "5",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(updated["owner"], "carol");
    assert_eq!(updated["scopes"], json!(["chat:*", "files:read"]));
    assert_eq!(updated["rate_limit_per_minute"], 5);

    let cleared = cli(
        &app,
        &[
            "key",
            "update",
            &project,
            id,
            "--no-scopes",
            "--default-rate-limit",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(cleared["scopes"], json!([]));
    assert!(cleared["rate_limit_per_minute"].is_null());

    cli(&app, &["key", "update", &project, id])
        .await
        .fails(2, "nothing to update");
    cli(
        &app,
        &[
            "key",
            "update",
            &project,
            id,
            "--rate-limit",
            "5",
            "--default-rate-limit",
        ],
    )
    .await
    .fails(2, "cannot be used with");

    // Rotate: only the new key on stdout; both secrets work during the grace.
    let rotated = cli(
        &app,
        &["key", "rotate", &project, id, "--grace-seconds", "60"],
    )
    .await;
    let new_key = rotated.ok().trim_end().to_owned();
    assert_eq!(rotated.stdout.lines().count(), 1, "{rotated}");
    assert_ne!(new_key, key.api_key);
    app.validate(&new_key, StatusCode::OK).await;
    app.validate(&key.api_key, StatusCode::OK).await;
    let shown = cli(&app, &["key", "show", &project, id]).await;
    assert_eq!(row(shown.ok(), "status"), Some("rotating"), "{shown}");
    assert!(
        row(&shown.stdout, "previous_secret_until").is_some(),
        "{shown}"
    );

    let revoked = cli(&app, &["key", "revoke", &project, id]).await;
    assert_eq!(revoked.ok(), format!("revoked {id} in {project}\n"));
    app.validate(&new_key, StatusCode::UNAUTHORIZED).await;
    let json = cli(&app, &["key", "revoke", &project, id, "--json"])
        .await
        .json();
    assert_eq!(json, json!({ "revoked": true }));
    cli(&app, &["key", "rotate", &project, id])
        .await
        .fails(1, "key_disabled");
    cli(&app, &["key", "revoke", &project, "k_NoSuchKey0"])
        .await
        .fails(1, "key_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mint_and_update_set_windows_and_credits_that_show_list_and_check_see() {
    // `check --cost` is forward auth's X-Keyward-Cost, honoured when on.
    let redis = std::sync::Arc::new(crate::helpers::TestRedis::start());
    let app = TestApp::spawn_with(redis, |c| c.auth_cost_header = true).await;
    let project = app.project().await;

    let minted = cli(
        &app,
        &[
            "key",
            "mint",
            &project,
            "--owner",
            "alice",
            "--server-name",
            "api-1",
            "--limit",
            "second=10",
            "--limit",
            "day=50000",
            "--credits",
            "500",
            "--refill",
            "day=500",
            "--json",
        ],
    )
    .await
    .json();
    let api_key = minted["api_key"].as_str().unwrap().to_owned();
    let id = minted["key_id"].as_str().unwrap().to_owned();
    let id = id.as_str();

    let shown = cli(&app, &["key", "show", &project, id, "--json"])
        .await
        .json();
    assert_eq!(
        shown["limits"],
        json!([{"per": "second", "limit": 10}, {"per": "day", "limit": 50000}])
    );
    assert_eq!(
        shown["credits"],
        json!({"remaining": 500, "refill": {"interval": "day", "amount": 500}})
    );
    let table = cli(&app, &["key", "show", &project, id]).await;
    assert_eq!(
        row(table.ok(), "limits"),
        Some("second=10 day=50000"),
        "{table}"
    );
    assert_eq!(
        row(&table.stdout, "credits"),
        Some("500/500 day"),
        "{table}"
    );

    // update: --limit replaces the windows, --credits sets the balance outright.
    let updated = cli(
        &app,
        &[
            "key",
            "update",
            &project,
            id,
            "--limit",
            "hour=100",
            "--credits",
            "7",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(updated["limits"], json!([{"per": "hour", "limit": 100}]));
    assert_eq!(updated["credits"], json!({"remaining": 7, "refill": null}));

    // check --cost spends that much; --cost 0 checks and spends nothing.
    let spent = check(&app, &api_key, &["--cost", "2", "--json"])
        .await
        .json();
    assert_eq!(spent["headers"]["x-keyward-credits-remaining"], "5");
    let free = check(&app, &api_key, &["--cost", "0"]).await;
    assert!(
        free.ok().contains("  X-Keyward-Credits-Remaining: 5\n"),
        "{free}"
    );
    check(&app, &api_key, &["--cost", "6"])
        .await
        .fails(1, "credits_exhausted");
    let listed = cli(&app, &["key", "list", &project]).await;
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(
        lines[0].contains("  SCOPES  LIMITS    CREDITS  EXPIRES"),
        "{listed}"
    );
    assert_eq!(fields(lines[1])[4..7], ["-", "hour=100", "5"], "{listed}");

    // --no-limits and --unlimited-credits clear them.
    let cleared = cli(
        &app,
        &[
            "key",
            "update",
            &project,
            id,
            "--no-limits",
            "--unlimited-credits",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(cleared["limits"], json!([]));
    assert!(cleared["credits"].is_null());
    let table = cli(&app, &["key", "show", &project, id]).await;
    assert_eq!(row(table.ok(), "limits"), Some("(none)"), "{table}");
    assert_eq!(row(&table.stdout, "credits"), Some("unlimited"), "{table}");
    check(&app, &api_key, &["--cost", "6"]).await.ok();

    // What only the API knows is refused by it: a ninth window.
    let mut nine = vec!["key", "update", &project, id];
    nine.extend(["--limit", "day=1"].repeat(9));
    cli(&app, &nine).await.fails(1, "at most 8 windows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_add_credits_moves_the_balance_both_ways_and_prints_it() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "credits": {"remaining": 10, "refill": null} }),
        )
        .await;
    let id = key.key_id.as_str();

    let added = cli(&app, &["key", "add-credits", &project, id, "20"]).await;
    assert_eq!(added.ok(), format!("{id} in {project}: 30 credits left\n"));
    // A negative amount, as clap would otherwise take for a flag.
    let taken = cli(&app, &["key", "add-credits", &project, id, "-5", "--json"])
        .await
        .json();
    assert_eq!(taken, json!({ "remaining": 25 }));
    let shown = cli(&app, &["key", "show", &project, id, "--json"])
        .await
        .json();
    assert_eq!(shown["credits"], json!({"remaining": 25, "refill": null}));

    // Refusals: exit 1 with the server's message; the balance is untouched.
    cli(&app, &["key", "add-credits", &project, id, "-26"])
        .await
        .fails(
            1,
            "would leave fewer than 0 credits (25 left) (credits_conflict)",
        );
    let unlimited = app.mint(&project, json!({})).await;
    cli(
        &app,
        &["key", "add-credits", &project, &unlimited.key_id, "5"],
    )
    .await
    .fails(1, "credits_conflict");
    cli(&app, &["key", "add-credits", &project, "k_NoSuchKey0", "5"])
        .await
        .fails(1, "key_not_found");
    let shown = cli(&app, &["key", "show", &project, id]).await;
    assert_eq!(row(shown.ok(), "credits"), Some("25"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_key_from_stdin_and_shows_what_a_gateway_receives() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app
        .mint(
            &project,
            json!({ "owner": "Zoë Smith", "scopes": ["chat:*"], "metadata": {"tier": "gold"} }),
        )
        .await;

    let ok = check(&app, &key.api_key, &["--scope", "chat:write"]).await;
    let out = ok.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "valid: yes", "{ok}");
    for line in [
        format!("  X-Keyward-Project-Id: {project}"),
        format!("  X-Keyward-Key-Id: {}", key.key_id),
        "  X-Keyward-Owner: Zo%C3%AB%20Smith".into(),
        "  X-Keyward-Scopes: chat:*".into(),
        r#"    (the metadata, decoded: {"tier":"gold"})"#.into(),
        "  X-RateLimit-Limit: 100".into(),
    ] {
        assert!(lines.contains(&line.as_str()), "{line:?} in\n{ok}");
    }
    assert!(!out.contains(&key.api_key), "the key is never printed");

    let json = check(&app, &key.api_key, &["--json"]).await.json();
    assert_eq!(json["valid"], true);
    assert_eq!(json["status"], 200);
    assert_eq!(json["headers"]["x-keyward-project-id"], project.as_str());
    // The check is a real, audited validation.
    assert_eq!(app.last_audit(&key.key_id).await["path"], "/keyward-check");

    // Refusals: the verdict on stdout, one line on stderr, exit 1.
    let denied = check(&app, &crate::helpers::wrong_secret(&key.api_key), &[]).await;
    denied.fails(1, "invalid_key");
    assert!(
        denied.stdout.starts_with("valid: no\nHTTP 401 invalid_key"),
        "{denied}"
    );
    assert!(
        denied
            .stdout
            .contains("WWW-Authenticate: Bearer realm=\"keyward\""),
        "{denied}"
    );
    let scoped = check(&app, &key.api_key, &["--scope", "admin:keys", "--json"]).await;
    scoped.fails(1, "insufficient_scope");
    let verdict: Value = serde_json::from_str(&scoped.stdout).unwrap();
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["error"]["code"], "insufficient_scope");

    // A key bound to a network, checked from inside and outside it.
    let bound = app
        .mint(&project, json!({ "allowed_cidrs": ["10.1.0.0/16"] }))
        .await;
    check(&app, &bound.api_key, &["--client-ip", "10.1.2.3"])
        .await
        .ok();
    check(&app, &bound.api_key, &["--client-ip", "192.0.2.1"])
        .await
        .fails(1, "invalid_key");

    // No key on stdin is a usage error; the check needs no admin token.
    check(&app, "", &[])
        .await
        .fails(2, "no key on standard input");
    check(&app, &key.api_key, &["--client-ip", "not-an-ip"])
        .await
        .fails(2, "--client-ip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_token_from_operator_create_does_what_its_role_allows_until_revoked() {
    // The template's `ops` user as the monitor, so `audit` can read the trail.
    let password = "cli-ops-password";
    let redis = Arc::new(TestRedis::start_with_acl(&template_user(
        "ops", "cli-ops", password,
    )));
    let monitor = redis.url("cli-ops", password);
    let app = TestApp::spawn_with(redis, move |c| c.monitor_redis_url = Some(monitor.into())).await;
    let project = app.project().await;
    let other = app.project().await;

    // TOKEN=$(keyward operator create ...): the token and a newline, nothing else.
    let created = cli(
        &app,
        &[
            "operator",
            "create",
            "--name",
            "support: Ada",
            "--role",
            "viewer",
            "--projects",
            &project,
            "--expires-in",
            "1d",
        ],
    )
    .await;
    assert_eq!(created.ok().lines().count(), 1, "{created}");
    let token = created.stdout.trim_end().to_owned();
    let operator_id = token
        .strip_prefix("kwop.")
        .and_then(|rest| rest.split_once('.'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("kwop.<operator_id>.<secret>: {created}"));
    let secret = &token[token.rfind('.').unwrap() + 1..];

    // whoami and project list, as the viewer: its role and its one project.
    let me = cli_as(&app, &token, &["whoami"]).await;
    for (name, value) in [
        ("operator_id", operator_id.as_str()),
        ("name", "support: Ada"),
        ("role", "viewer"),
        ("projects", project.as_str()),
    ] {
        assert_eq!(row(me.ok(), name), Some(value), "{name} in\n{me}");
    }
    let me = cli_as(&app, &token, &["whoami", "--json"]).await.json();
    assert_eq!(
        me,
        json!({ "operator_id": operator_id, "name": "support: Ada", "role": "viewer", "projects": [project] })
    );
    let listed = cli_as(&app, &token, &["project", "list"]).await;
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(lines[0].starts_with("PROJECT ID"), "{listed}");
    assert!(lines[1].starts_with(&format!("{project} ")), "{listed}");
    assert_eq!(lines[2..], ["1 project"], "{listed}");
    let all = cli(&app, &["project", "list", "--json"]).await.json();
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project_id"].as_str().unwrap())
        .collect();
    let mut both = vec![project.as_str(), other.as_str()];
    both.sort_unstable();
    assert_eq!(ids, both, "root sees every project");

    // What the role may not: refused (exit 1) with the server's message,
    // and the token nowhere in it.
    let mint = [
        "key",
        "mint",
        &project,
        "--owner",
        "a",
        "--server-name",
        "s",
    ];
    let refused = cli_as(&app, &token, &mint).await;
    refused.fails(1, "insufficient_permission");
    assert!(
        refused.stderr.starts_with("keyward key mint: "),
        "{refused}"
    );
    assert!(!refused.stderr.contains(secret), "{refused}");
    cli_as(&app, &token, &["operator", "list"])
        .await
        .fails(1, "insufficient_permission");
    // A project outside its list is one that does not exist.
    cli_as(&app, &token, &["key", "list", &other])
        .await
        .fails(1, "project_not_found");

    // operator list: never a token, a secret or a hash.
    let table = cli(&app, &["operator", "list"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert!(lines[0].starts_with("OPERATOR ID"), "{table}");
    let cells = fields(lines[1]);
    assert_eq!(
        cells[..4],
        [operator_id.as_str(), "active", "viewer", project.as_str()],
        "{table}"
    );
    assert_eq!(cells[5], "root", "created by: {table}");
    assert!(lines[1].ends_with("support: Ada"), "{table}");
    assert_eq!(lines[2], "1 operator", "{table}");
    let json = cli(&app, &["operator", "list", "--json"]).await;
    for out in [&table, &json] {
        assert!(!out.stdout.contains(secret), "{out}");
        assert!(!out.stdout.contains("kwop."), "{out}");
        assert!(!out.stdout.contains("argon2"), "{out}");
        assert!(!out.stdout.contains("hash"), "{out}");
    }
    assert_eq!(json.json()["items"][0]["operator_id"], operator_id.as_str());

    // The trail names the operator on each of its calls, newest first.
    let trail = cli(&app, &["audit", "--actor", &operator_id, "--json"])
        .await
        .json();
    let entries = trail["items"].as_array().unwrap();
    let calls: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], operator_id.as_str(), "{trail}");
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("key.list", "not_found"),
            ("operator.list", "forbidden"),
            ("key.mint", "forbidden"),
            ("project.list", "ok"),
            ("whoami", "ok"),
            ("whoami", "ok"),
        ],
        "{trail}"
    );
    let table = cli(&app, &["audit", "--actor", &operator_id, "--limit", "2"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert!(lines[0].starts_with("TIME "), "{table}");
    assert!(lines[1].starts_with("20"), "{table}");
    assert_eq!(
        fields(lines[1])[1..6],
        [
            operator_id.as_str(),
            "key.list",
            other.as_str(),
            "-",
            "not_found"
        ],
        "{table}"
    );
    assert_eq!(
        fields(lines[2])[1..6],
        [operator_id.as_str(), "operator.list", "-", "-", "forbidden"],
        "{table}"
    );
    assert_eq!(
        lines[3], "2 entries (stopped at --limit; older ones may follow)",
        "{table}"
    );
    // The viewer reads the trail of its own project only.
    let mine = cli_as(&app, &token, &["audit", "--json"]).await.json();
    let mine = mine["items"].as_array().unwrap();
    assert!(!mine.is_empty());
    assert!(
        mine.iter().all(|e| e["project_id"] == project.as_str()),
        "{mine:?}"
    );

    // Revoked: refused on its very next call.
    let revoked = cli(&app, &["operator", "revoke", &operator_id]).await;
    assert_eq!(revoked.ok(), format!("revoked {operator_id}\n"));
    let after = cli_as(&app, &token, &["whoami"]).await;
    after.fails(1, "admin token was refused");
    assert!(!after.stderr.contains(secret), "{after}");
    let table = cli(&app, &["operator", "list"]).await;
    assert!(
        table
            .ok()
            .lines()
            .nth(1)
            .unwrap()
            .contains("  revoked  viewer  "),
        "{table}"
    );
    cli(&app, &["operator", "revoke", "op_NoSuchOper1"])
        .await
        .fails(1, "operator_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_from_webhook_add_is_listed_tested_shows_its_deliveries_and_is_removed() {
    // Nothing listens there: each delivery fails to connect.
    let endpoint = format!("http://127.0.0.1:{}/", free_port());

    // An internal address is refused like any other 422 (exit 1), unless
    // keyward runs with KEYWARD_WEBHOOK_ALLOW_PRIVATE.
    let strict = TestApp::spawn().await;
    let refused = cli(&strict, &["webhook", "add", &endpoint]).await;
    refused.fails(1, "invalid_request");
    assert!(
        refused.stderr.starts_with("keyward webhook add: url: "),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("KEYWARD_WEBHOOK_ALLOW_PRIVATE"),
        "{refused}"
    );
    assert_eq!(
        cli(&strict, &["webhook", "list"]).await.ok(),
        "no webhooks\n"
    );
    drop(strict);

    let redis = Arc::new(TestRedis::start());
    let app = TestApp::spawn_with(redis, |c| c.webhook_allow_private = true).await;
    let project = app.project().await;

    // The id and the secret, a row each; the secret is shown only here.
    let added = cli(
        &app,
        &[
            "webhook",
            "add",
            &endpoint,
            "--events",
            "webhook.test,key.revoked",
            "--projects",
            &project,
            "--description",
            "billing sync",
        ],
    )
    .await;
    let table = added.ok();
    assert_eq!(table.lines().count(), 2, "{added}");
    let webhook_id = row(table, "webhook_id").unwrap().to_owned();
    let secret = row(table, "secret").unwrap().to_owned();
    assert!(webhook_id.starts_with("wh_"), "{added}");
    assert!(secret.starts_with("whsec_"), "{added}");
    // --json: the whole body; --events and --projects default to every one.
    let other = cli(&app, &["webhook", "add", &endpoint, "--json"])
        .await
        .json();
    assert_eq!(other["events"], json!(["*"]), "{other}");
    assert_eq!(other["projects"], json!(["*"]), "{other}");
    assert_eq!(other["url"], endpoint.as_str(), "{other}");
    assert_eq!(other["created_by"], "root", "{other}");
    assert!(other["secret"].as_str().unwrap().starts_with("whsec_"));
    let other_id = other["webhook_id"].as_str().unwrap().to_owned();
    let removed = cli(&app, &["webhook", "remove", &other_id, "--json"])
        .await
        .json();
    assert_eq!(removed, json!({ "webhook_id": other_id, "deleted": true }));

    // list: never a secret.
    let listed = cli(&app, &["webhook", "list"]).await;
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(lines[0].starts_with("WEBHOOK ID"), "{listed}");
    assert_eq!(
        fields(lines[1])[..5],
        [
            webhook_id.as_str(),
            "active",
            endpoint.as_str(),
            "webhook.test,key.revoked",
            project.as_str()
        ],
        "{listed}"
    );
    assert!(fields(lines[1])[5].starts_with("20"), "created: {listed}");
    assert!(lines[1].ends_with("  billing sync"), "{listed}");
    assert_eq!(lines[2..], ["1 webhook"], "{listed}");
    let json = cli(&app, &["webhook", "list", "--json"]).await;
    for out in [&listed, &json] {
        assert!(!out.stdout.contains(&secret), "{out}");
        assert!(!out.stdout.contains("whsec_"), "{out}");
        assert!(!out.stdout.contains("secret"), "{out}");
    }
    assert_eq!(json.json()["items"][0]["webhook_id"], webhook_id.as_str());

    // MSG=$(keyward webhook test ...): the message id and a newline.
    let tested = cli(&app, &["webhook", "test", &webhook_id]).await;
    assert_eq!(tested.ok().lines().count(), 1, "{tested}");
    let message_id = tested.stdout.trim_end().to_owned();
    assert!(message_id.starts_with("msg_"), "{tested}");

    // The delivery worker tries it within a tick or two; nothing answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let attempt = loop {
        let shown = cli(&app, &["webhook", "deliveries", &webhook_id]).await;
        let first = shown
            .ok()
            .lines()
            .find(|l| fields(l).get(1) == Some(&message_id.as_str()) && fields(l)[3] == "1")
            .map(str::to_owned);
        if let Some(line) = first {
            assert!(shown.stdout.starts_with("TIME "), "{shown}");
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt of {message_id}: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let cells = fields(&attempt);
    assert!(cells[0].starts_with("20"), "{attempt}");
    assert_eq!(cells[2], "webhook.test", "{attempt}");
    // Retried later (the next attempt's time), the error last.
    assert!(cells[4].starts_with("20"), "{attempt}");
    assert!(attempt.ends_with("  connection failed"), "{attempt}");
    let json = cli(
        &app,
        &[
            "webhook",
            "deliveries",
            &webhook_id,
            "--limit",
            "1",
            "--json",
        ],
    )
    .await
    .json();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{json}");
    assert_eq!(items[0]["message_id"], message_id.as_str(), "{json}");
    assert_eq!(items[0]["delivered"], false, "{json}");
    assert_eq!(items[0]["status_code"], Value::Null, "{json}");
    assert_eq!(items[0]["error"], "connection failed", "{json}");

    // Removed: no longer listed, and gone for every command.
    let removed = cli(&app, &["webhook", "remove", &webhook_id]).await;
    assert_eq!(removed.ok(), format!("removed {webhook_id}\n"));
    assert_eq!(cli(&app, &["webhook", "list"]).await.ok(), "no webhooks\n");
    for command in ["remove", "test", "deliveries"] {
        cli(&app, &["webhook", command, &webhook_id])
            .await
            .fails(1, "webhook_not_found");
    }

    // Usage errors, before anything is sent: exit 2.
    for args in [
        &["webhook", "add"][..],
        &["webhook", "deliveries", &webhook_id, "--limit", "0"],
        &["webhook", "deliveries", &webhook_id, "--limit", "201"],
        &["webhook", "test"],
    ] {
        let out = cli(&app, args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_comes_only_from_the_environment() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let url = app.url("");

    // There is no flag for it: any attempt is a usage error, and nothing is sent.
    for flag in ["--token", "--admin-token", "--auth"] {
        let mut cmd = keyward(&url);
        cmd.env_remove("KEYWARD_ADMIN_TOKEN")
            .args(["key", "list", &project, flag, ADMIN_TOKEN]);
        let out = run(cmd, "").await;
        out.fails(2, "unexpected argument");
        assert!(!out.stderr.contains(ADMIN_TOKEN), "{out}");
    }

    let mut cmd = keyward(&url);
    cmd.env_remove("KEYWARD_ADMIN_TOKEN")
        .args(["key", "list", &project]);
    run(cmd, "").await.fails(2, "KEYWARD_ADMIN_TOKEN");

    // From a file, trimmed.
    let file = std::env::temp_dir().join(crate::helpers::random_id("keyward-cli-token-"));
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let mut cmd = keyward(&url);
    cmd.env_remove("KEYWARD_ADMIN_TOKEN")
        .env("KEYWARD_ADMIN_TOKEN_FILE", &file)
        .args(["key", "list", &project]);
    assert_eq!(run(cmd, "").await.ok(), "no keys\n");
    let mut both = keyward(&url);
    both.env("KEYWARD_ADMIN_TOKEN_FILE", &file)
        .args(["key", "list", &project]);
    run(both, "").await.fails(2, "not both");
    let _ = std::fs::remove_file(&file);

    // A wrong token is refused by keyward: exit 1, and the token is not echoed.
    let mut cmd = keyward(&url);
    cmd.env("KEYWARD_ADMIN_TOKEN", "wrong-token-0123456789")
        .args(["key", "list", &project]);
    let out = run(cmd, "").await;
    out.fails(1, "admin token was refused");
    assert!(!out.stderr.contains("wrong-token"), "{out}");

    // A keyward without an admin API says so.
    let redis = Arc::new(TestRedis::start());
    let no_admin = TestApp::spawn_with(redis, |c| c.admin_token = None).await;
    cli(&no_admin, &["project", "show", &project])
        .await
        .fails(1, "serves no admin API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_when_keyward_or_redis_is_down_and_2_on_usage_errors() {
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = keyward(&down);
    cmd.args(["key", "list", "alpha"]);
    run(cmd, "").await.fails(3, "cannot reach keyward");
    let mut cmd = keyward(&down);
    cmd.env_remove("KEYWARD_ADMIN_TOKEN").arg("check");
    run(cmd, "sk-proj.a.k_aaaaaaa.bbbb\n")
        .await
        .fails(3, "cannot reach keyward");

    // keyward up, Redis down: keyward answers 503, the CLI exits 3.
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    // Without a monitor Redis user there is no trail to read: says how.
    cli(&app, &["audit"])
        .await
        .fails(1, "KEYWARD_MONITOR_REDIS_URL");
    app.redis().stop();
    cli(&app, &["project", "show", &project])
        .await
        .fails(3, "unavailable");
    let out = check(&app, &key.api_key, &[]).await;
    out.fails(3, "unavailable");
    assert!(
        out.stdout.starts_with("valid: no\nHTTP 503 unavailable"),
        "{out}"
    );

    // Usage errors: one line, exit 2, before anything is sent.
    for args in [
        &["key"][..],
        &["key", "frobnicate"],
        &["key", "mint", "alpha"],
        &["key", "list", "alpha", "--limit", "0"],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--metadata",
            "{not json",
        ],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--expires-at",
            "soon",
        ],
        &["project", "create", "alpha"],
        &[
            "operator",
            "create",
            "--name",
            "n",
            "--role",
            "boss",
            "--projects",
            "alpha",
        ],
        &["operator", "create", "--name", "n", "--role", "viewer"],
        &["audit", "--limit", "0"],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--limit",
            "week=5",
        ],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--limit",
            "day=0",
        ],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--limit",
            "day",
        ],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--refill",
            "day=5",
        ],
        &[
            "key",
            "mint",
            "alpha",
            "--owner",
            "a",
            "--server-name",
            "s",
            "--credits",
            "5",
            "--refill",
            "hour=5",
        ],
        &[
            "key",
            "update",
            "alpha",
            "k_aaaaaaa1",
            "--limit",
            "day=5",
            "--no-limits",
        ],
        &[
            "key",
            "update",
            "alpha",
            "k_aaaaaaa1",
            "--credits",
            "5",
            "--unlimited-credits",
        ],
        &[
            "key",
            "update",
            "alpha",
            "k_aaaaaaa1",
            "--refill",
            "month=5",
        ],
        &["key", "update", "alpha", "k_aaaaaaa1", "--credits", "-1"],
        &["key", "add-credits", "alpha", "k_aaaaaaa1", "0"],
        &["key", "add-credits", "alpha", "k_aaaaaaa1", "1.5"],
        &["key", "add-credits", "alpha", "k_aaaaaaa1"],
        &["check", "--cost", "1000001"],
    ] {
        let mut cmd = keyward(&down);
        cmd.args(args);
        let out = run(cmd, "").await;
        assert_eq!(out.code, Some(2), "{args:?}: {out}");
        assert!(!out.stderr.is_empty(), "{args:?}: {out}");
        if args.len() > 1 {
            assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out}");
        }
    }
    let mut cmd = keyward("127.0.0.1:8080");
    cmd.args(["key", "list", "alpha"]);
    run(cmd, "").await.fails(2, "not an http");
}

/// Issue #37, finding 2: text stored in Redis (by a key manager, another
/// tool, anyone) reaches the terminal escaped: no escape sequence, carriage
/// return, bell or bidirectional override from the server is ever printed
/// as it is, in tables and plain output alike; `--json` stays the server's
/// JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_text_cannot_forge_a_terminal_row_or_write_the_clipboard() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    let hostile = "\u{1b}[2K\r| k_forged | disabled |\u{1b}]52;c;ZXZpbA==\u{7}\u{202e}evil";
    let ops = app.redis().ops().await;
    let doc = format!("apikey:{project}:{}", key.key_id);
    for path in ["$.owner", "$.server_name", "$.metadata"] {
        let value = serde_json::to_string(hostile).unwrap();
        crate::helpers::raw(&ops, "JSON.SET", vec![doc.clone(), path.into(), value])
            .await
            .unwrap();
    }
    let forged = |out: &str| {
        out.chars()
            .any(|c| c.is_control() && c != '\n' || ('\u{202a}'..='\u{202e}').contains(&c))
    };
    for args in [
        vec!["key", "list", project.as_str()],
        vec!["key", "show", project.as_str(), key.key_id.as_str()],
    ] {
        let out = cli(&app, &args).await;
        let out = out.ok();
        assert!(!forged(out), "{args:?} printed hostile text raw:\n{out:?}");
        assert!(out.contains(r"\u{1b}[2K\u{d}"), "{args:?}: {out}");
    }
    let json = cli(&app, &["key", "list", project.as_str(), "--json"])
        .await
        .json();
    assert_eq!(json["items"][0]["owner"], hostile, "JSON output stays JSON");
}

/// Issue #37, finding 5: the CLI sends the admin token only to the URL it
/// was given. A server that answers with a redirect (to another path on the
/// same host, or to another port) gets an exit 1 naming the redirect, and
/// the redirect's target never hears from the CLI, token or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_no_redirect_so_the_token_goes_only_where_it_was_told() {
    use std::io::{BufRead, BufReader, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    let heard = Arc::new(AtomicUsize::new(0));
    {
        let heard = heard.clone();
        target.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if target.accept().is_ok() {
                    heard.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
    }
    let redirector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = redirector.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, stream) in redirector.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let location = match i {
                0 => format!("http://127.0.0.1:{port}/elsewhere"),
                _ => format!("http://127.0.0.1:{target_port}/v1/admin/projects/p"),
            };
            let answer = format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    for _ in 0..2 {
        let mut cmd = keyward(&format!("http://127.0.0.1:{port}"));
        cmd.args(["project", "show", "p"]);
        run(cmd, "").await.fails(1, "redirect");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "the redirect's target heard from the CLI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_at_is_set_by_mint_and_update_and_key_list_finds_keys_unused_since() {
    let app = TestApp::spawn().await;
    let project = app.project().await;
    let minted = cli(
        &app,
        &[
            "key",
            "mint",
            &project,
            "--owner",
            "o",
            "--server-name",
            "s",
            "--credits",
            "500",
            "--refill",
            "day=500",
            "--low-at",
            "100",
            "--json",
        ],
    )
    .await
    .json();
    let used = minted["key_id"].as_str().unwrap().to_owned();
    let shown = cli(&app, &["key", "show", &project, &used]).await;
    assert_eq!(
        row(shown.ok(), "credits"),
        Some("500/500 day (low at 100)"),
        "{shown}"
    );
    let updated = cli(
        &app,
        &[
            "key",
            "update",
            &project,
            &used,
            "--credits",
            "40",
            "--low-at",
            "10",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        updated["credits"],
        json!({"remaining": 40, "refill": null, "low_at": 10})
    );
    cli(
        &app,
        &[
            "key",
            "update",
            &project,
            &used,
            "--credits",
            "5",
            "--low-at",
            "5",
        ],
    )
    .await
    .fails(1, "low_at must be below remaining");
    cli(&app, &["key", "update", &project, &used, "--low-at", "5"])
        .await
        .fails(2, "--credits");

    // Read before the use, so the use is on or after the start of it.
    let today = keyward::clock::rfc3339(keyward::store::now())[..10].to_owned();
    let api_key = minted["api_key"].as_str().unwrap();
    app.validate(api_key, StatusCode::OK).await;
    app.usage_is(&project, &used, 1).await;
    let idle = app.mint(&project, json!({})).await.key_id;
    let ids = |run: Run| -> Vec<String> {
        run.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let since = format!("{}", keyward::store::now() as u64 + 1);
    let both = cli(
        &app,
        &["key", "list", &project, "--unused-since", &since, "--json"],
    )
    .await;
    let mut want = vec![used.clone(), idle.clone()];
    want.sort();
    assert_eq!(ids(both), want);
    // A date: the key used today was not unused since the start of it.
    let unused = cli(
        &app,
        &["key", "list", &project, "--unused-since", &today, "--json"],
    )
    .await;
    assert_eq!(ids(unused), [idle]);
    cli(
        &app,
        &["key", "list", &project, "--unused-since", "yesterday"],
    )
    .await
    .fails(2, "--unused-since");
}

/// A keyward whose monitor Redis user is the template's `ops` user, which
/// reads the usage record (and the audit trail).
async fn app_with_monitor() -> TestApp {
    let password = "cli-usage-ops-password";
    let redis = Arc::new(TestRedis::start_with_acl(&template_user(
        "ops",
        "cli-usage-ops",
        password,
    )));
    let monitor = redis.url("cli-usage-ops", password);
    TestApp::spawn_with(redis, move |c| c.monitor_redis_url = Some(monitor.into())).await
}

/// `count` summed over a usage answer's buckets (`cost` for the cost).
fn usage_sum(answer: &Value, count: &str) -> u64 {
    let buckets = answer["buckets"].as_array().expect("buckets");
    buckets
        .iter()
        .map(|b| match count {
            "cost" => b["cost"].as_u64().unwrap(),
            _ => b["counts"][count].as_u64().unwrap_or(0),
        })
        .sum()
}

/// The UTC day a Unix time falls in, as `keyward usage` prints it.
fn utc_day(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = keyward::clock::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_prints_a_projects_and_a_keys_spend_per_day_as_a_table_json_and_csv() {
    let app = app_with_monitor().await;
    let project = app.project().await;
    let a = app.mint(&project, json!({})).await;
    let b = app
        .mint(
            &project,
            json!({ "owner": "bob", "rate_limit_per_minute": 2 }),
        )
        .await;
    // a: 3 passes of cost 1 and a wrong secret; b: a pass of cost 2, which
    // takes its minute's limit, then a refusal.
    for _ in 0..3 {
        app.validate(&a.api_key, StatusCode::OK).await;
    }
    app.validate_fails(
        &crate::helpers::wrong_secret(&a.api_key),
        StatusCode::UNAUTHORIZED,
        "invalid_key",
    )
    .await;
    for (cost, status) in [(2, StatusCode::OK), (1, StatusCode::TOO_MANY_REQUESTS)] {
        let body = json!({ "api_key": b.api_key, "cost": cost });
        let r = app.post("/v1/validate-key", &body, None).await;
        assert_eq!(r.status(), status, "cost {cost}");
    }
    let today = utc_day(keyward::clock::now() as u64);

    // The record is written about once a second: poll until it shows all six.
    let answer = crate::helpers::eventually("the project's usage", || async {
        let answer = cli(&app, &["usage", &project, "--format", "json"])
            .await
            .json();
        (usage_sum(&answer, "ok") == 4
            && usage_sum(&answer, "bad_secret") == 1
            && usage_sum(&answer, "rate_limited") == 1)
            .then_some(answer)
    })
    .await;
    assert_eq!(answer["project_id"], project.as_str());
    assert_eq!(answer["key_id"], Value::Null);
    assert_eq!(answer["granularity"], "day");
    assert_eq!(usage_sum(&answer, "cost"), 5, "{answer}");
    assert_eq!(usage_sum(&answer, "credits_exhausted"), 0, "{answer}");
    let buckets = answer["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "one day with traffic: {answer}");
    let start = buckets[0]["start"].as_u64().unwrap();
    assert_eq!(start % 86_400, 0, "a day starts at midnight UTC: {answer}");
    assert_eq!(utc_day(start), today);
    // --json is --format json.
    let again = cli(&app, &["usage", &project, "--json"]).await.json();
    assert_eq!(usage_sum(&again, "ok"), 4);

    // The table: the day, its cost, ok and each count that is not 0, a total.
    let run = cli(&app, &["usage", &project]).await;
    let table: Vec<&str> = run.ok().lines().collect();
    assert_eq!(
        fields(table[0]),
        ["START", "(UTC)", "COST", "OK", "RATE_LIMITED", "BAD_SECRET"],
        "{run}"
    );
    assert_eq!(
        fields(table[1]),
        [today.as_str(), "5", "4", "1", "1"],
        "{run}"
    );
    assert_eq!(fields(table[2]), ["total", "5", "4", "1", "1"], "{run}");
    assert!(
        table[3].starts_with(&format!("1 day with traffic, project {project}, ")),
        "{run}"
    );
    assert_eq!(table.len(), 4, "{run}");

    // One key's: only its own validations.
    let key = cli(&app, &["usage", &project, &a.key_id, "--json"])
        .await
        .json();
    assert_eq!(key["key_id"], a.key_id.as_str());
    assert_eq!(
        (
            usage_sum(&key, "ok"),
            usage_sum(&key, "bad_secret"),
            usage_sum(&key, "rate_limited"),
            usage_sum(&key, "cost")
        ),
        (3, 1, 0, 3),
        "{key}"
    );

    // Each key's, in one command: a row per key and day, the key first.
    let run = cli(&app, &["usage", &project, "--each-key"]).await;
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(
        fields(lines[0]),
        [
            "KEY",
            "ID",
            "START",
            "(UTC)",
            "COST",
            "OK",
            "RATE_LIMITED",
            "BAD_SECRET"
        ],
        "{run}"
    );
    let mut rows: Vec<Vec<&str>> = lines[1..3].iter().map(|l| fields(l)).collect();
    rows.sort();
    let mut expected = vec![
        vec![a.key_id.as_str(), today.as_str(), "3", "3", "0", "1"],
        vec![b.key_id.as_str(), today.as_str(), "2", "1", "1", "0"],
    ];
    expected.sort();
    assert_eq!(rows, expected, "{run}");
    assert_eq!(fields(lines[3]), ["total", "5", "4", "1", "1"], "{run}");
    assert!(
        lines[4].starts_with(&format!(
            "2 days with traffic, in 2 of the 2 keys of project {project}, "
        )),
        "{run}"
    );
    let each = cli(&app, &["usage", &project, "--each-key", "--json"])
        .await
        .json();
    let keys = each["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{each}");
    let ok: u64 = keys.iter().map(|k| usage_sum(k, "ok")).sum();
    assert_eq!(ok, 4, "{each}");
    let run = cli(&app, &["usage", &project, "--each-key", "--format", "csv"]).await;
    let csv: Vec<&str> = run.ok().lines().collect();
    assert!(
        csv[0].starts_with("key_id,start,start_utc,cost,ok,"),
        "{run}"
    );
    assert_eq!(csv.len(), 3, "{run}");
    cli(&app, &["usage", &project, &a.key_id, "--each-key"])
        .await
        .fails(2, "--each-key");

    // CSV: a header with every count, a row per bucket.
    let run = cli(&app, &["usage", &project, &b.key_id, "--format", "csv"]).await;
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{run}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        header[..6],
        [
            "start",
            "start_utc",
            "cost",
            "ok",
            "rate_limited",
            "credits_exhausted"
        ],
        "{run}"
    );
    let row: std::collections::HashMap<&str, &str> =
        header.iter().copied().zip(lines[1].split(',')).collect();
    assert_eq!(row["start"], start.to_string(), "{run}");
    assert_eq!(row["start_utc"], format!("{today}T00:00:00Z"), "{run}");
    assert_eq!(
        (row["cost"], row["ok"], row["rate_limited"]),
        ("2", "1", "1"),
        "{run}"
    );
    assert_eq!(row.get("bad_secret").copied().unwrap_or("0"), "0", "{run}");

    // By hour and by month: the same validations in other buckets.
    for (by, span) in [("hour", 3_600), ("month", 0)] {
        let answer = cli(&app, &["usage", &project, "--by", by, "--json"])
            .await
            .json();
        assert_eq!(answer["granularity"], by);
        assert_eq!(
            (usage_sum(&answer, "ok"), usage_sum(&answer, "cost")),
            (4, 5),
            "{by}: {answer}"
        );
        for bucket in answer["buckets"].as_array().unwrap() {
            let start = bucket["start"].as_u64().unwrap();
            match span {
                0 => assert!(utc_day(start).ends_with("-01"), "{answer}"),
                _ => assert_eq!(start % span, 0, "{answer}"),
            }
        }
    }

    // A range with nothing in it (yesterday, in Unix seconds): says so.
    let (from, to) = (start - 86_400, start);
    let run = cli(
        &app,
        &[
            "usage",
            &project,
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ],
    )
    .await;
    assert_eq!(
        run.ok(),
        format!(
            "no usage of project {project} from {}T00:00:00Z to {today}T00:00:00Z\n",
            utc_day(from)
        )
    );
    // And a date range that holds today: the same day as the default.
    let tomorrow = utc_day(start + 86_400);
    let run = cli(
        &app,
        &["usage", &project, "--from", &today, "--to", &tomorrow],
    )
    .await;
    assert_eq!(
        fields(run.ok().lines().nth(1).unwrap())[..3],
        [today.as_str(), "5", "4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_refuses_bad_ranges_and_says_what_it_needs_exit_1_2_or_3() {
    let app = app_with_monitor().await;
    let project = app.project().await;

    // Usage errors: exit 2, before anything is sent.
    for (args, says) in [
        (
            &["--from", "2026-12-02", "--to", "2026-12-01"][..],
            "must come before --to",
        ),
        (&["--from", "2026-13-01"], "expected a UTC date"),
        (&["--to", "1796083200.5"], "expected a UTC date"),
        (&["--by", "week"], "--by"),
        (&["--format", "xml"], "--format"),
        (&["--format", "csv", "--json"], "disagree"),
    ] {
        let mut all = vec!["usage", project.as_str()];
        all.extend_from_slice(args);
        cli(&app, &all).await.fails(2, says);
    }
    // Refusals: exit 1, with keyward's code.
    cli(&app, &["usage", "nosuchproject"])
        .await
        .fails(1, "project_not_found");
    cli(
        &app,
        &["usage", &project, "--by", "hour", "--from", "2020-01-01"],
    )
    .await
    .fails(1, "invalid_request");

    // Without a monitor Redis user: says what is needed.
    let plain = TestApp::spawn().await;
    let project = plain.project().await;
    cli(&plain, &["usage", &project])
        .await
        .fails(1, "usage_unavailable");
    // Redis down: keyward answers 503, the CLI exits 3.
    app.redis().stop();
    cli(&app, &["usage", "anyproject"])
        .await
        .fails(3, "unavailable");
}
