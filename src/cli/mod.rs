//! The admin command line: `keyward project create|show|list`, `keyward key
//! mint|show|list|update|add-credits|rotate|revoke`, `keyward operator
//! create|list|revoke`, `keyward webhook add|list|test|remove|deliveries`,
//! `keyward whoami`, `keyward audit`, `keyward usage` and `keyward check`; and `keyward
//! healthcheck` (in `healthcheck`), which only asks the local listener for
//! `/health` and exits 0 or 1.
//!
//! A thin client of the HTTP API, exactly like any other (`client`): the
//! admin API stays the one contract, and its tests cover this too. Output is
//! a table by default and the API's JSON with `--json` (`render`).
//!
//! - The target: `--url`, else `KEYWARD_URL`, else `http://127.0.0.1:8080`;
//!   for an `https://` one, a private CA (`KEYWARD_URL_CA_FILE`) and a client
//!   certificate for an mTLS listener (`KEYWARD_URL_CERT_FILE`, `_KEY_FILE`).
//! - The admin token: `KEYWARD_ADMIN_TOKEN` or `KEYWARD_ADMIN_TOKEN_FILE`,
//!   never a flag (flags land in shell history and `ps`); the root token or
//!   an operator's `kwop.` token, which may do what its role allows
//!   ([`TOKEN_HELP`]). `check` needs none: it reads the key to check from
//!   standard input, for the same reason.
//! - Exit codes, for scripts: 0 success; 1 refused (not found, a validation
//!   error, an invalid key, a wrong token, a role that may not); 2 usage
//!   error (bad arguments, no token); 3 keyward or Redis unavailable. Errors
//!   are one line on stderr.
//! - `key mint`, `key rotate` and `operator create` print the new key (or
//!   token) and nothing else on stdout (or the JSON with `--json`), so
//!   `KEY=$(keyward key mint ...)` works. `webhook add` prints the new
//!   endpoint's id and signing secret, a row each (`webhook_id`, `secret`);
//!   `webhook test` prints only the message id it queued.

mod client;
mod healthcheck;
mod render;
pub use render::safe;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::page::{DEFAULT_LIMIT, MAX_LIMIT, MAX_RECENT};
use crate::plan::{Credits, Limit, Refill, MAX_AMOUNT, MAX_COST};

pub use client::{Client, Failure};
pub use healthcheck::healthcheck;

/// The documented exit codes.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Not found, a validation error, an invalid key, a wrong admin token,
    /// a role that may not (`403 insufficient_permission`).
    pub const REFUSED: u8 = 1;
    /// Bad arguments or environment (no admin token, a bad URL).
    pub const USAGE: u8 = 2;
    /// keyward cannot be reached, or it (or its Redis) is unavailable.
    pub const UNAVAILABLE: u8 = 3;
}

/// The admin commands' `--help` on the token they send.
pub const TOKEN_HELP: &str = "The token comes from KEYWARD_ADMIN_TOKEN or \
KEYWARD_ADMIN_TOKEN_FILE, never from an argument: the root token, or an \
operator's token (kwop.<operator_id>.<secret>, from `keyward operator create`), \
which may do only what its role allows in its projects. Exit codes: 0 done, \
1 refused (also a role that may not: insufficient_permission), 2 usage error, \
3 keyward or Redis unavailable.";

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
    #[command(flatten)]
    pub https: Https,
}

/// How the CLI reaches keyward over HTTPS: a private CA, and a client
/// certificate for an mTLS listener.
#[derive(Args, Debug, Clone, Default)]
pub struct Https {
    /// For an https:// URL: a PEM bundle of CA certificates keyward's
    /// certificate may chain to, besides the system's (a private CA).
    #[arg(
        long = "url-ca-file",
        env = "KEYWARD_URL_CA_FILE",
        value_name = "PATH",
        global = true
    )]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub cert: ClientCert,
}

/// The client certificate a keyward with `KEYWARD_TLS_CLIENT_CA_FILE` (mTLS)
/// requires.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientCert {
    /// For an mTLS listener: a PEM client certificate (chain) from its
    /// client CA, with --url-key-file.
    #[arg(
        long = "url-cert-file",
        env = "KEYWARD_URL_CERT_FILE",
        value_name = "PATH",
        global = true
    )]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of --url-cert-file.
    #[arg(
        long = "url-key-file",
        env = "KEYWARD_URL_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub key_file: Option<PathBuf>,
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
    /// List the projects the token may see, following the cursor to the end.
    List {
        /// Stop after this many projects.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

/// `keyward key ...`
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// When a key or an operator's token expires: `--expires-at` or `--expires-in`.
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
            .or(self.expires_in.map(|d| crate::clock::now() + d))
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
        /// A window: at most N per second, minute, hour, day or month (UTC),
        /// e.g. --limit second=10 --limit day=50000; repeat for more (up to 8).
        #[arg(long = "limit", value_name = "PER=N", value_parser = render::parse_limit)]
        limits: Vec<Limit>,
        /// Prepaid credits, each request spending its cost (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(u64).range(..=MAX_AMOUNT))]
        credits: Option<u64>,
        /// Set the credits to AMOUNT at the start of each UTC day or month,
        /// e.g. --refill day=500 (only with --credits).
        #[arg(long, value_name = "INTERVAL=AMOUNT", value_parser = render::parse_refill, requires = "credits")]
        refill: Option<Refill>,
        /// Send key.credits_low when a request takes the credits below N
        /// (once per refill; only with --credits).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_AMOUNT), requires = "credits")]
        low_at: Option<u64>,
    },
    /// Show a key (never its secret).
    Show { project_id: String, key_id: String },
    /// List a project's keys, following the cursor to the end.
    List {
        project_id: String,
        /// Stop after this many keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Only keys not used since this time (never used included): Unix
        /// seconds or a UTC date or time like 2027-01-31 or 2027-01-31T12:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = render::parse_time)]
        unused_since: Option<f64>,
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
        /// Replace the windows with these (PER=N, e.g. day=50000); repeat for more.
        #[arg(long = "limit", value_name = "PER=N", value_parser = render::parse_limit, conflicts_with = "no_limits")]
        limits: Vec<Limit>,
        /// Remove every window.
        #[arg(long)]
        no_limits: bool,
        /// Set the credits to N outright (and the refill to --refill's, or none).
        #[arg(long, value_parser = clap::value_parser!(u64).range(..=MAX_AMOUNT), conflicts_with = "unlimited_credits")]
        credits: Option<u64>,
        /// With --credits: set them to AMOUNT at the start of each UTC day or month.
        #[arg(long, value_name = "INTERVAL=AMOUNT", value_parser = render::parse_refill, requires = "credits")]
        refill: Option<Refill>,
        /// With --credits: send key.credits_low when a request takes them below N.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_AMOUNT), requires = "credits")]
        low_at: Option<u64>,
        /// Remove the credits: the key is no longer limited by them.
        #[arg(long)]
        unlimited_credits: bool,
    },
    /// Add credits to a key's balance (a negative AMOUNT takes them away).
    /// Prints the balance.
    AddCredits {
        project_id: String,
        key_id: String,
        /// Not 0; negative to take credits away (e.g. -5).
        #[arg(allow_negative_numbers = true, value_parser = render::parse_amount)]
        amount: i64,
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

/// `keyward operator ...`
#[derive(Args, Debug)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: OperatorCommand,
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Create an operator. Prints only its token (shown once: store it now).
    Create {
        /// Who the token is for (a person, a tool).
        #[arg(long)]
        name: String,
        /// What it may do; each role includes the ones before it.
        #[arg(long, value_parser = ["viewer", "key_manager", "project_admin", "owner"])]
        role: String,
        /// The projects it covers, comma-separated, or '*' for every project.
        #[arg(long, value_delimiter = ',', required = true)]
        projects: Vec<String>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// List the operators (never a token), following the cursor to the end.
    List {
        /// Stop after this many operators.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Revoke an operator: from its next call on, its token is refused.
    Revoke { operator_id: String },
}

/// `keyward webhook ...`
#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: WebhookCommand,
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Register an endpoint: the events named, of the projects named, are
    /// posted to it signed (Standard Webhooks). Prints its id and its
    /// signing secret (shown once: store it now).
    Add {
        /// Where events are posted: an http or https URL, which may not be
        /// (or resolve to) an internal address unless keyward runs with
        /// KEYWARD_WEBHOOK_ALLOW_PRIVATE=true. (An argument, not --url:
        /// --url is keyward's own.)
        #[arg(value_name = "ENDPOINT_URL")]
        endpoint: String,
        /// The event types sent, comma-separated (e.g.
        /// key.revoked,key.secret_attack), or '*' for every one.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        events: Vec<String>,
        /// Whose events: project ids, comma-separated, or '*' for every project.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        projects: Vec<String>,
        /// What the endpoint is for (up to 500 characters).
        #[arg(long)]
        description: Option<String>,
    },
    /// List the endpoints of the token's projects (never a secret),
    /// following the cursor to the end.
    List,
    /// Queue a webhook.test message to the endpoint. Prints only its
    /// message id (see `deliveries` for what became of it).
    Test { webhook_id: String },
    /// Delete an endpoint: nothing more is sent to it, pending messages
    /// included.
    Remove { webhook_id: String },
    /// The endpoint's recent delivery attempts, newest first.
    Deliveries {
        webhook_id: String,
        /// Show this many attempts, 1 to 200 (default 50).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_RECENT))]
        limit: Option<u64>,
    },
}

/// `keyward audit`
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this project's entries.
    #[arg(long)]
    pub project: Option<String>,
    /// Only this actor's entries: an operator id, `root` or `unknown`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Show the newest this many entries.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
}

/// `keyward usage`
#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub target: Target,
    pub project_id: String,
    /// One key's usage; without it, the whole project's.
    pub key_id: Option<String>,
    /// Each key's usage, key by key (every key `key list` shows), instead of
    /// the project's sum: a key column in the table and CSV, and
    /// `{"project_id", "key_id": null, "granularity", "keys": [each key's
    /// answer]}` as JSON.
    #[arg(long, conflicts_with = "key_id")]
    pub each_key: bool,
    /// Where the range starts: a UTC date (2026-11-01, its midnight) or
    /// Unix seconds; the bucket holding it is the first. Default: the
    /// midnight 29 days before --to's day (30 days in all).
    #[arg(long, value_parser = render::parse_instant)]
    pub from: Option<i64>,
    /// Where the range ends, excluded: a UTC date (2026-12-01, its
    /// midnight) or Unix seconds; the bucket holding its last second is the
    /// last. Default: now.
    #[arg(long, value_parser = render::parse_instant)]
    pub to: Option<i64>,
    /// The buckets: hour, day or month (UTC).
    #[arg(long, default_value = "day", value_parser = ["hour", "day", "month"])]
    pub by: String,
    /// table (a row per bucket, with a total), json (the API's answer) or
    /// csv (a header and a row per bucket with every count); default
    /// table, or json with --json.
    #[arg(long, value_parser = ["table", "json", "csv"])]
    pub format: Option<String>,
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
    #[command(flatten)]
    pub https: Https,
    /// A scope the request requires; repeat for more.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// The client's address, for keys bound to networks.
    #[arg(long)]
    pub client_ip: Option<std::net::IpAddr>,
    // What the check weighs: its help names `MAX_COST`.
    #[arg(long, help = cost_help(), value_parser = clap::value_parser!(u64).range(..=MAX_COST))]
    pub cost: Option<u64>,
    /// The header keyward reads the client's address from (its
    /// KEYWARD_CLIENT_IP_HEADER).
    #[arg(
        long,
        env = "KEYWARD_CLIENT_IP_HEADER",
        default_value = crate::config::CLIENT_IP_HEADER
    )]
    pub client_ip_header: String,
}

fn cost_help() -> String {
    format!(
        "What the check weighs, 0 to {MAX_COST} (default 1): it spends the key's windows \
         and credits by this much; 0 checks without spending"
    )
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// Runs an admin command; prints its output or one line of error.
pub async fn project(args: ProjectArgs) -> ExitCode {
    let name = match &args.command {
        ProjectCommand::Create { .. } => "project create",
        ProjectCommand::Show { .. } => "project show",
        ProjectCommand::List { .. } => "project list",
    };
    finish(name, run_project(args).await)
}

pub async fn key(args: KeyArgs) -> ExitCode {
    let name = match &args.command {
        KeyCommand::Mint { .. } => "key mint",
        KeyCommand::Show { .. } => "key show",
        KeyCommand::List { .. } => "key list",
        KeyCommand::Update { .. } => "key update",
        KeyCommand::AddCredits { .. } => "key add-credits",
        KeyCommand::Rotate { .. } => "key rotate",
        KeyCommand::Revoke { .. } => "key revoke",
    };
    finish(name, run_key(args).await)
}

pub async fn operator(args: OperatorArgs) -> ExitCode {
    let name = match &args.command {
        OperatorCommand::Create { .. } => "operator create",
        OperatorCommand::List { .. } => "operator list",
        OperatorCommand::Revoke { .. } => "operator revoke",
    };
    finish(name, run_operator(args).await)
}

pub async fn webhook(args: WebhookArgs) -> ExitCode {
    let name = match &args.command {
        WebhookCommand::Add { .. } => "webhook add",
        WebhookCommand::List => "webhook list",
        WebhookCommand::Test { .. } => "webhook test",
        WebhookCommand::Remove { .. } => "webhook remove",
        WebhookCommand::Deliveries { .. } => "webhook deliveries",
    };
    finish(name, run_webhook(args).await)
}

pub async fn whoami(target: Target) -> ExitCode {
    finish("whoami", run_whoami(target).await)
}

pub async fn audit(args: AuditArgs) -> ExitCode {
    finish("audit", run_audit(args).await)
}

pub async fn usage(args: UsageArgs) -> ExitCode {
    finish("usage", run_usage(args).await)
}

pub async fn check(args: CheckArgs) -> ExitCode {
    finish("check", run_check(args).await)
}

fn finish(name: &str, result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("keyward {name}: {}", render::safe(failure.message()));
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
    let client = Client::admin(&args.target)?;
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
        ProjectCommand::List { limit } => {
            let all = pages(&client, "/v1/admin/projects", &[], MAX_LIMIT, limit).await?;
            print(json_out, &all, render::project_list);
        }
    }
    Ok(exit::SUCCESS)
}

async fn run_key(args: KeyArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target)?;
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
            limits,
            credits,
            refill,
            low_at,
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
            if !limits.is_empty() {
                body.insert("limits".into(), json!(limits));
            }
            if let Some(remaining) = credits {
                let credits = Credits {
                    remaining,
                    refill,
                    low_at,
                };
                body.insert("credits".into(), json!(credits));
            }
            let minted = client.post("/v1/mint-key", &Value::Object(body)).await?;
            print_new_key(json_out, &minted, &minted_note("minted", &minted));
        }
        KeyCommand::Show { project_id, key_id } => {
            let query = [("project_id", project_id), ("key_id", key_id)];
            let key = client.get("/v1/get-key", &query).await?;
            print(json_out, &key, render::key);
        }
        KeyCommand::List {
            project_id,
            limit,
            unused_since,
        } => {
            let mut query = vec![("project_id", project_id)];
            if let Some(at) = unused_since {
                query.push(("unused_since", at.to_string()));
            }
            let all = pages(&client, "/v1/list-keys", &query, MAX_LIMIT, limit).await?;
            print(json_out, &all, render::key_list);
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
            limits,
            no_limits,
            credits,
            refill,
            low_at,
            unlimited_credits,
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
            if !limits.is_empty() || no_limits {
                set("limits", json!(limits));
            }
            if let Some(remaining) = credits {
                let credits = Credits {
                    remaining,
                    refill,
                    low_at,
                };
                set("credits", json!(credits));
            } else if unlimited_credits {
                set("credits", Value::Null);
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
        KeyCommand::AddCredits {
            project_id,
            key_id,
            amount,
        } => {
            let body = json!({ "project_id": project_id, "key_id": key_id, "amount": amount });
            let answer = client.post("/v1/add-credits", &body).await?;
            print(json_out, &answer, |a| {
                format!(
                    "{key_id} in {project_id}: {} credits left\n",
                    a["remaining"]
                )
            });
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
            print_new_key(json_out, &rotated, &minted_note("rotated", &rotated));
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

/// The new secret (`api_key` or `token`) alone on stdout (or the JSON);
/// `note` on stderr for a person at a terminal only, so that `$(...)` and
/// pipes get the secret and nothing else.
fn print_new_key(json_out: bool, answer: &Value, note: &str) {
    if json_out {
        println!("{answer}");
        return;
    }
    let secret = answer["api_key"].as_str().or(answer["token"].as_str());
    println!("{}", render::safe(secret.unwrap_or_default()));
    note_at_terminal(note);
}

/// `note` on stderr, for a person at a terminal only.
fn note_at_terminal(note: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{note}");
    }
}

/// The reminder after a mint or a rotation.
fn minted_note(verb: &str, answer: &Value) -> String {
    let mut note = format!(
        "{verb} {} in {}; the key above is shown once, store it now",
        answer["key_id"].as_str().unwrap_or_default(),
        answer["project_id"].as_str().unwrap_or_default(),
    );
    if let Some(until) = answer["previous_expires_at"].as_f64() {
        note += &format!(" (the previous secret works until {})", render::time(until));
    }
    note
}

/// Every page of a list endpoint (`{"items", "next"}`, `page` items a
/// request) from the start, up to `limit` items: `{"items", "next"}`,
/// `next` set only when `limit` stopped the walk early.
async fn pages(
    client: &Client,
    path: &str,
    query: &[(&str, String)],
    page: u64,
    limit: Option<u64>,
) -> Result<Value, Failure> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = limit.map_or(page, |l| (l - items.len() as u64).min(page));
        let mut query = query.to_vec();
        query.push(("limit", want.to_string()));
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let answer = client.get(path, &query).await?;
        if let Some(page_items) = answer["items"].as_array() {
            items.extend(page_items.iter().cloned());
        }
        cursor = answer["next"].as_str().map(str::to_owned);
        let full = limit.is_some_and(|l| items.len() as u64 >= l);
        if cursor.is_none() || full {
            return Ok(json!({ "items": items, "next": cursor }));
        }
    }
}

async fn run_operator(args: OperatorArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target)?;
    let json_out = args.target.json;
    match args.command {
        OperatorCommand::Create {
            name,
            role,
            projects,
            expiry,
        } => {
            let mut body = json!({ "name": name, "role": role, "projects": projects });
            if let Some(at) = expiry.at() {
                body["expires_at"] = json!(at);
            }
            let created = client.post("/v1/admin/operators", &body).await?;
            let note = format!(
                "created {} ({} of {}); the token above is shown once, store it now",
                created["operator_id"].as_str().unwrap_or_default(),
                created["role"].as_str().unwrap_or_default(),
                render::projects(&created["projects"]),
            );
            print_new_key(json_out, &created, &note);
        }
        OperatorCommand::List { limit } => {
            let all = pages(&client, "/v1/admin/operators", &[], MAX_LIMIT, limit).await?;
            print(json_out, &all, render::operator_list);
        }
        OperatorCommand::Revoke { operator_id } => {
            let path = format!(
                "/v1/admin/operators/{}/revoke",
                client::segment(&operator_id)
            );
            let answer = client.post(&path, &json!({})).await?;
            print(json_out, &answer, |_| format!("revoked {operator_id}\n"));
        }
    }
    Ok(exit::SUCCESS)
}

async fn run_webhook(args: WebhookArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target)?;
    let json_out = args.target.json;
    let path = |webhook_id: &str, rest: &str| {
        format!("/v1/admin/webhooks/{}{rest}", client::segment(webhook_id))
    };
    match args.command {
        WebhookCommand::Add {
            endpoint,
            events,
            projects,
            description,
        } => {
            let mut body = json!({ "url": endpoint, "events": events, "projects": projects });
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            let created = client.post("/v1/admin/webhooks", &body).await?;
            print(json_out, &created, render::webhook_created);
            if !json_out {
                note_at_terminal(&format!(
                    "registered {} (events {} of projects {}); the secret above is shown once, store it now",
                    created["webhook_id"].as_str().unwrap_or_default(),
                    render::projects(&created["events"]),
                    render::projects(&created["projects"]),
                ));
            }
        }
        WebhookCommand::List => {
            let all = pages(&client, "/v1/admin/webhooks", &[], MAX_LIMIT, None).await?;
            print(json_out, &all, render::webhook_list);
        }
        WebhookCommand::Test { webhook_id } => {
            let queued = client.post(&path(&webhook_id, "/test"), &json!({})).await?;
            print(json_out, &queued, |q| {
                format!("{}\n", q["message_id"].as_str().unwrap_or_default())
            });
        }
        WebhookCommand::Remove { webhook_id } => {
            let answer = client.delete(&path(&webhook_id, "")).await?;
            print(json_out, &answer, |_| format!("removed {webhook_id}\n"));
        }
        WebhookCommand::Deliveries { webhook_id, limit } => {
            let query: Vec<(&str, String)> = limit
                .map(|l| ("limit", l.to_string()))
                .into_iter()
                .collect();
            let answer = client
                .get(&path(&webhook_id, "/deliveries"), &query)
                .await?;
            print(json_out, &answer, render::deliveries);
        }
    }
    Ok(exit::SUCCESS)
}

async fn run_whoami(target: Target) -> Result<u8, Failure> {
    let client = Client::admin(&target)?;
    let me = client.get("/v1/admin/whoami", &[]).await?;
    print(target.json, &me, render::whoami);
    Ok(exit::SUCCESS)
}

/// The newest `--limit` entries of the admin trail, newest first.
async fn run_audit(args: AuditArgs) -> Result<u8, Failure> {
    let client = Client::admin(&args.target)?;
    let mut query = Vec::new();
    if let Some(project) = args.project {
        query.push(("project_id", project));
    }
    if let Some(actor) = args.actor {
        query.push(("actor", actor));
    }
    let all = pages(
        &client,
        "/v1/admin/audit",
        &query,
        MAX_RECENT,
        Some(args.limit),
    )
    .await?;
    print(args.target.json, &all, render::audit);
    Ok(exit::SUCCESS)
}

/// How far back `keyward usage` reaches without `--from`: 30 UTC days,
/// the one `--to` falls in (its last second) and the 29 before it.
const USAGE_DAYS: i64 = 30;

/// A project's or a key's usage per hour, day or month, from
/// `GET /v1/admin/usage`.
async fn run_usage(args: UsageArgs) -> Result<u8, Failure> {
    let format = match (args.format.as_deref(), args.target.json) {
        (Some("json") | None, true) => "json",
        (Some(other), true) => {
            return Err(Failure::Usage(format!(
                "--json and --format {other} disagree: give one"
            )))
        }
        (Some(format), false) => format,
        (None, false) => "table",
    };
    let to = args.to.unwrap_or_else(|| crate::clock::now().ceil() as i64);
    let from = args.from.unwrap_or_else(|| {
        let last_day = (to - 1).div_euclid(86_400);
        (last_day - (USAGE_DAYS - 1)) * 86_400
    });
    if from >= to {
        return Err(Failure::Usage(format!(
            "--from ({}) must come before --to ({})",
            render::time(from as f64),
            render::time(to as f64)
        )));
    }
    let client = Client::admin(&args.target)?;
    let range = [
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("granularity", args.by.clone()),
    ];
    let read = |key_id: Option<String>| {
        let mut query = vec![("project_id", args.project_id.clone())];
        query.extend(key_id.map(|k| ("key_id", k)));
        query.extend(range.iter().cloned());
        let client = &client;
        async move { client.get("/v1/admin/usage", &query).await }
    };
    let answer = if args.each_key {
        let query = [("project_id", args.project_id.clone())];
        let keys = pages(&client, "/v1/list-keys", &query, MAX_LIMIT, None).await?;
        let mut each = Vec::new();
        for key in keys["items"].as_array().map_or(&[][..], Vec::as_slice) {
            let key_id = key["key_id"].as_str().unwrap_or_default().to_owned();
            each.push(read(Some(key_id)).await?);
        }
        json!({ "project_id": args.project_id, "key_id": null, "granularity": args.by, "keys": each })
    } else {
        read(args.key_id.clone()).await?
    };
    match format {
        "json" => println!("{answer}"),
        "csv" => print!("{}", render::usage_csv(&answer)),
        _ => print!("{}", render::usage(&answer, from, to)),
    }
    Ok(exit::SUCCESS)
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
    let client = Client::anonymous(&args.url, &args.https)?;
    let outcome = client
        .forward_auth(
            &key,
            &args.scopes,
            args.cost,
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
