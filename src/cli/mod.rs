//! The admin command line: `keyward project create|show`, `keyward key
//! mint|show|list|update|rotate|revoke` and `keyward check`; and `keyward
//! healthcheck` (in `healthcheck`), which only asks the local listener for
//! `/health` and exits 0 or 1.
//!
//! A thin client of the HTTP API, exactly like any other (`client`): the
//! admin API stays the one contract, and its tests cover this too. Output is
//! a table by default and the API's JSON with `--json` (`render`).
//!
//! - The target: `--url`, else `KEYWARD_URL`, else `http://127.0.0.1:8080`.
//! - The admin token: `KEYWARD_ADMIN_TOKEN` or `KEYWARD_ADMIN_TOKEN_FILE`,
//!   never a flag (flags land in shell history and `ps`). `check` needs none:
//!   it reads the key to check from standard input, for the same reason.
//! - Exit codes, for scripts: 0 success; 1 refused (not found, a validation
//!   error, an invalid key, a wrong token); 2 usage error (bad arguments, no
//!   token); 3 keyward or Redis unavailable. Errors are one line on stderr.
//! - `key mint` and `key rotate` print the new key and nothing else on
//!   stdout (or the JSON with `--json`), so `KEY=$(keyward key mint ...)`
//!   works.

mod client;
mod healthcheck;
mod render;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

pub use client::{Client, Failure};
pub use healthcheck::healthcheck;

/// The documented exit codes.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Not found, a validation error, an invalid key, a wrong admin token.
    pub const REFUSED: u8 = 1;
    /// Bad arguments or environment (no admin token, a bad URL).
    pub const USAGE: u8 = 2;
    /// keyward cannot be reached, or it (or its Redis) is unavailable.
    pub const UNAVAILABLE: u8 = 3;
}

/// Where keyward is, and how to print: shared by every admin command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// keyward's base URL.
    #[arg(
        long,
        env = "KEYWARD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `keyward project ...`
#[derive(Args, Debug)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: ProjectCommand,
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// 1 to 64 of [A-Za-z0-9_-].
        project_id: String,
        /// A human-readable name.
        #[arg(long)]
        label: String,
        /// Who owns the project (a team, a person).
        #[arg(long)]
        owner: String,
    },
    /// Show a project.
    Show { project_id: String },
}

/// `keyward key ...`
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// When a key expires: `--expires-at` or `--expires-in`.
#[derive(Args, Debug, Default)]
pub struct Expiry {
    /// Expiry time: Unix seconds, or UTC as 2027-01-31 or 2027-01-31T12:00:00Z.
    #[arg(long, value_parser = render::parse_time, conflicts_with = "expires_in")]
    pub expires_at: Option<f64>,
    /// Expiry from now: a number and s, m, h or d (90d, 12h).
    #[arg(long, value_parser = render::parse_duration)]
    pub expires_in: Option<f64>,
}

impl Expiry {
    fn at(&self) -> Option<f64> {
        self.expires_at
            .or(self.expires_in.map(|d| crate::store::now() + d))
    }
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Mint a key. Prints only the key (shown once: store it now).
    Mint {
        project_id: String,
        /// Who holds the key.
        #[arg(long)]
        owner: String,
        /// The server (or service) the key is for.
        #[arg(long)]
        server_name: String,
        /// Any JSON, returned on every validation.
        #[arg(long, value_parser = parse_json)]
        metadata: Option<Value>,
        #[command(flatten)]
        expiry: Expiry,
        /// Validations per minute (default: the deployment's).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        rate_limit: Option<u64>,
        /// A scope the key grants; repeat for more (e.g. --scope 'chat:*').
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A network the key may be used from (CIDR or address); repeat for more.
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
    /// Show a key (never its secret).
    Show { project_id: String, key_id: String },
    /// List a project's keys, following the cursor to the end.
    List {
        project_id: String,
        /// Stop after this many keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Change a key's properties; fields not named stay as they are.
    Update {
        project_id: String,
        key_id: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        server_name: Option<String>,
        /// New metadata (any JSON).
        #[arg(long, value_parser = parse_json, conflicts_with = "clear_metadata")]
        metadata: Option<Value>,
        /// Set the metadata to null.
        #[arg(long)]
        clear_metadata: bool,
        #[command(flatten)]
        expiry: Expiry,
        /// Remove the expiry.
        #[arg(long, conflicts_with_all = ["expires_at", "expires_in"])]
        never_expires: bool,
        /// Validations per minute.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "default_rate_limit")]
        rate_limit: Option<u64>,
        /// Back to the deployment's default rate limit.
        #[arg(long)]
        default_rate_limit: bool,
        /// Replace the scopes with these; repeat for more.
        #[arg(long = "scope", conflicts_with = "no_scopes")]
        scopes: Vec<String>,
        /// Remove every scope.
        #[arg(long)]
        no_scopes: bool,
        /// Replace the networks with these; repeat for more.
        #[arg(long = "cidr", conflicts_with = "any_network")]
        cidrs: Vec<String>,
        /// Remove the network restriction.
        #[arg(long)]
        any_network: bool,
    },
    /// Give a key a new secret, keeping its id. Prints only the new key.
    Rotate {
        project_id: String,
        key_id: String,
        /// How long the previous secret keeps working, in seconds (default a
        /// day, at most a week, 0 ends it now).
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    /// Revoke a key: from the next validation on, it is refused.
    Revoke { project_id: String, key_id: String },
}

/// `keyward check`
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// keyward's base URL.
    #[arg(long, env = "KEYWARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A scope the request requires; repeat for more.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// The client's address, for keys bound to networks.
    #[arg(long)]
    pub client_ip: Option<std::net::IpAddr>,
    /// The header keyward reads the client's address from (its
    /// KEYWARD_CLIENT_IP_HEADER).
    #[arg(
        long,
        env = "KEYWARD_CLIENT_IP_HEADER",
        default_value = crate::config::CLIENT_IP_HEADER
    )]
    pub client_ip_header: String,
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// Runs an admin command; prints its output or one line of error.
pub async fn project(args: ProjectArgs) -> ExitCode {
    let name = match &args.command {
        ProjectCommand::Create { .. } => "project create",
        ProjectCommand::Show { .. } => "project show",
    };
    finish(name, run_project(args).await)
}

pub async fn key(args: KeyArgs) -> ExitCode {
    let name = match &args.command {
        KeyCommand::Mint { .. } => "key mint",
        KeyCommand::Show { .. } => "key show",
        KeyCommand::List { .. } => "key list",
        KeyCommand::Update { .. } => "key update",
        KeyCommand::Rotate { .. } => "key rotate",
        KeyCommand::Revoke { .. } => "key revoke",
    };
    finish(name, run_key(args).await)
}

pub async fn check(args: CheckArgs) -> ExitCode {
    finish("check", run_check(args).await)
}

fn finish(name: &str, result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("keyward {name}: {}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Prints `value` as JSON, or `table(value)`.
fn print(json_out: bool, value: &Value, table: impl FnOnce(&Value) -> String) {
    if json_out {
        println!("{value}");
    } else {
        print!("{}", table(value));
    }
}

async fn run_project(args: ProjectArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target.url)?;
    let json_out = args.target.json;
    match args.command {
        ProjectCommand::Create {
            project_id,
            label,
            owner,
        } => {
            let body = json!({ "project_id": project_id, "label": label, "owner": owner });
            let project = client.post("/v1/admin/projects", &body).await?;
            print(json_out, &project, render::project);
        }
        ProjectCommand::Show { project_id } => {
            let path = format!("/v1/admin/projects/{}", client::segment(&project_id));
            let project = client.get(&path, &[]).await?;
            print(json_out, &project, render::project);
        }
    }
    Ok(exit::SUCCESS)
}

async fn run_key(args: KeyArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target.url)?;
    let json_out = args.target.json;
    match args.command {
        KeyCommand::Mint {
            project_id,
            owner,
            server_name,
            metadata,
            expiry,
            rate_limit,
            scopes,
            cidrs,
        } => {
            let mut body = Map::new();
            body.insert("project_id".into(), json!(project_id));
            body.insert("owner".into(), json!(owner));
            body.insert("server_name".into(), json!(server_name));
            if let Some(metadata) = metadata {
                body.insert("metadata".into(), metadata);
            }
            if let Some(at) = expiry.at() {
                body.insert("expires_at".into(), json!(at));
            }
            if let Some(limit) = rate_limit {
                body.insert("rate_limit_per_minute".into(), json!(limit));
            }
            if !scopes.is_empty() {
                body.insert("scopes".into(), json!(scopes));
            }
            if !cidrs.is_empty() {
                body.insert("allowed_cidrs".into(), json!(cidrs));
            }
            let minted = client.post("/v1/mint-key", &Value::Object(body)).await?;
            print_new_key(json_out, &minted, "minted");
        }
        KeyCommand::Show { project_id, key_id } => {
            let query = [("project_id", project_id), ("key_id", key_id)];
            let key = client.get("/v1/get-key", &query).await?;
            print(json_out, &key, render::key);
        }
        KeyCommand::List { project_id, limit } => {
            let page = list_all(&client, &project_id, limit).await?;
            print(json_out, &page, render::key_list);
        }
        KeyCommand::Update {
            project_id,
            key_id,
            owner,
            server_name,
            metadata,
            clear_metadata,
            expiry,
            never_expires,
            rate_limit,
            default_rate_limit,
            scopes,
            no_scopes,
            cidrs,
            any_network,
        } => {
            let mut fields = Map::new();
            let mut set = |name: &str, value: Value| {
                fields.insert(name.into(), value);
            };
            if let Some(owner) = owner {
                set("owner", json!(owner));
            }
            if let Some(server_name) = server_name {
                set("server_name", json!(server_name));
            }
            if let Some(metadata) = metadata {
                set("metadata", metadata);
            } else if clear_metadata {
                set("metadata", Value::Null);
            }
            if let Some(at) = expiry.at() {
                set("expires_at", json!(at));
            } else if never_expires {
                set("expires_at", Value::Null);
            }
            if let Some(limit) = rate_limit {
                set("rate_limit_per_minute", json!(limit));
            } else if default_rate_limit {
                set("rate_limit_per_minute", Value::Null);
            }
            if !scopes.is_empty() || no_scopes {
                set("scopes", json!(scopes));
            }
            if !cidrs.is_empty() {
                set("allowed_cidrs", json!(cidrs));
            } else if any_network {
                set("allowed_cidrs", Value::Null);
            }
            if fields.is_empty() {
                return Err(Failure::Usage(
                    "nothing to update: name at least one field (see --help)".into(),
                ));
            }
            fields.insert("project_id".into(), json!(project_id));
            fields.insert("key_id".into(), json!(key_id));
            let key = client
                .post("/v1/update-key", &Value::Object(fields))
                .await?;
            print(json_out, &key, render::key);
        }
        KeyCommand::Rotate {
            project_id,
            key_id,
            grace_seconds,
        } => {
            let mut body = json!({ "project_id": project_id, "key_id": key_id });
            if let Some(grace) = grace_seconds {
                body["grace_seconds"] = json!(grace);
            }
            let rotated = client.post("/v1/rotate-key", &body).await?;
            print_new_key(json_out, &rotated, "rotated");
        }
        KeyCommand::Revoke { project_id, key_id } => {
            let body = json!({ "project_id": project_id, "key_id": key_id });
            let answer = client.post("/v1/revoke-key", &body).await?;
            print(json_out, &answer, |_| {
                format!("revoked {key_id} in {project_id}\n")
            });
        }
    }
    Ok(exit::SUCCESS)
}

/// The new key alone on stdout (or the JSON); a note on stderr for a person
/// at a terminal only, so that `$(...)` and pipes get the key and nothing else.
fn print_new_key(json_out: bool, answer: &Value, verb: &str) {
    if json_out {
        println!("{answer}");
        return;
    }
    println!("{}", answer["api_key"].as_str().unwrap_or_default());
    if std::io::stderr().is_terminal() {
        let mut note = format!(
            "{verb} {} in {}; the key above is shown once, store it now",
            answer["key_id"].as_str().unwrap_or_default(),
            answer["project_id"].as_str().unwrap_or_default(),
        );
        if let Some(until) = answer["previous_expires_at"].as_f64() {
            note += &format!(" (the previous secret works until {})", render::time(until));
        }
        eprintln!("{note}");
    }
}

/// Every page from the cursor on, up to `limit` keys: `{"items", "next"}`,
/// `next` set only when `limit` stopped the walk early.
async fn list_all(client: &Client, project_id: &str, limit: Option<u64>) -> Result<Value, Failure> {
    const PAGE: u64 = 100;
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = limit.map_or(PAGE, |l| (l - items.len() as u64).min(PAGE));
        let mut query = vec![
            ("project_id", project_id.to_owned()),
            ("limit", want.to_string()),
        ];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let page = client.get("/v1/list-keys", &query).await?;
        if let Some(page_items) = page["items"].as_array() {
            items.extend(page_items.iter().cloned());
        }
        cursor = page["next"].as_str().map(str::to_owned);
        let full = limit.is_some_and(|l| items.len() as u64 >= l);
        if cursor.is_none() || full {
            return Ok(json!({ "items": items, "next": cursor }));
        }
    }
}

/// The key to check, from standard input: the first line, trimmed.
fn read_key() -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("keyward check: paste the key, then press Enter and ctrl-d");
    }
    let mut input = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut input)
        .map_err(|e| Failure::Usage(format!("cannot read the key from standard input: {e}")))?;
    let key = input.lines().next().unwrap_or_default().trim().to_owned();
    if key.is_empty() {
        return Err(Failure::Usage(
            "no key on standard input (e.g. `keyward check < key.txt`)".into(),
        ));
    }
    Ok(key)
}

async fn run_check(args: CheckArgs) -> Result<u8, Failure> {
    let key = read_key()?;
    let client = Client::anonymous(&args.url)?;
    let outcome = client
        .forward_auth(
            &key,
            &args.scopes,
            args.client_ip
                .map(|ip| (args.client_ip_header.as_str(), ip.to_string())),
        )
        .await?;
    let valid = outcome["valid"].as_bool().unwrap_or(false);
    print(args.json, &outcome, render::check);
    if valid {
        Ok(exit::SUCCESS)
    } else if outcome["status"].as_u64().is_some_and(|s| s >= 500) {
        Err(Failure::Unavailable(format!(
            "keyward could not decide: {}",
            render::error_summary(&outcome)
        )))
    } else {
        Err(Failure::Refused(format!(
            "the key is not valid: {}",
            render::error_summary(&outcome)
        )))
    }
}
