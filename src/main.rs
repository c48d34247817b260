//! The `keyward` binary: load config, start telemetry, bind, run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use keyward::acl;
use keyward::cli;
use keyward::config::{Config, MigrateConfig};
use keyward::{telemetry, Listeners};

/// jemalloc rather than glibc's malloc: 0.64x the CPU per warm validation
/// (docs/performance.md, "Round 4"). Argon2id's blocks still come from
/// glibc's, in mappings of their own (`hash.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about = "API-key validation for API gateways, on Redis Stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Projects, through a running keyward's admin API: create, show, list.
    #[command(after_help = cli::TOKEN_HELP)]
    Project(cli::ProjectArgs),
    /// Keys, through a running keyward's admin API: mint, show, list, update,
    /// rotate, revoke.
    #[command(after_help = cli::TOKEN_HELP)]
    Key(cli::KeyArgs),
    /// Operators and their tokens, through a running keyward's admin API
    /// (owners only): create, list, revoke.
    #[command(after_help = cli::TOKEN_HELP)]
    Operator(cli::OperatorArgs),
    /// Webhook endpoints of the token's projects, through a running
    /// keyward's admin API: add, list, test, remove, deliveries (add, test
    /// and remove need project_admin).
    #[command(after_help = cli::TOKEN_HELP)]
    Webhook(cli::WebhookArgs),
    /// Show who the admin token in the environment is: operator id, name,
    /// role and projects.
    #[command(after_help = cli::TOKEN_HELP)]
    Whoami(cli::Target),
    /// The admin audit trail, newest first: who did what, allowed or
    /// refused, in the projects the token may see. Needs keyward's monitor
    /// Redis user (KEYWARD_MONITOR_REDIS_URL).
    #[command(after_help = cli::TOKEN_HELP)]
    Audit(cli::AuditArgs),
    /// A project's or one key's validations and spend per hour, day or
    /// month (UTC), as a table, JSON or CSV: by result (ok, rate_limited,
    /// credits_exhausted, each denial reason) and the cost the passes spent.
    /// Needs keyward's monitor Redis user (KEYWARD_MONITOR_REDIS_URL).
    #[command(after_help = cli::TOKEN_HELP)]
    Usage(cli::UsageArgs),
    /// Read a key from standard input and show whether it validates, and what
    /// a gateway would receive from /v1/auth.
    ///
    /// A real validation: it counts against the key's rate limit and is
    /// audited (path /keyward-check). Exit codes: 0 valid, 1 not valid,
    /// 2 usage error, 3 keyward or Redis unavailable.
    Check(cli::CheckArgs),
    /// Serve the HTTP API, configured by flags or their KEYWARD_* environment
    /// variables, and secrets from the environment only.
    Serve(Box<Config>),
    /// Exit 0 if the local keyward at KEYWARD_LISTEN answers /health with
    /// 200: over HTTPS when KEYWARD_TLS_CERT_FILE is set (not checking the
    /// certificate's name: a loopback liveness probe), with the client
    /// certificate of KEYWARD_URL_CERT_FILE for an mTLS listener.
    Healthcheck(cli::ClientCert),
    /// Print the Redis ACL rule (ACL-file syntax) for a client deployment's user.
    Acl(acl::AclArgs),
    /// Upgrade data the original key service wrote to keyward's layout, in
    /// place; a dry run unless --apply. Connects as the `migrator` Redis
    /// user, from KEYWARD_MIGRATE_REDIS_URL (or _FILE) or --redis-url-file.
    Migrate {
        /// Write the changes; without it, only print what would change.
        #[arg(long)]
        apply: bool,
        /// A file holding the migrator user's redis:// URL (never pass a
        /// password on the command line).
        #[arg(long = "redis-url-file")]
        redis_url_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Command::Acl(args) = &cli.command {
        return acl::command(args);
    }
    if let Command::Serve(settings) = cli.command {
        return match (*settings).with_secrets_from_env() {
            Ok(config) => match runtime(config.worker_threads) {
                Some(runtime) => runtime.block_on(serve(config)),
                None => ExitCode::FAILURE,
            },
            Err(e) => {
                eprintln!("keyward: configuration error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(runtime) = runtime(keyward::config::cores()) else {
        return ExitCode::FAILURE;
    };
    match cli.command {
        Command::Project(args) => runtime.block_on(cli::project(args)),
        Command::Key(args) => runtime.block_on(cli::key(args)),
        Command::Operator(args) => runtime.block_on(cli::operator(args)),
        Command::Webhook(args) => runtime.block_on(cli::webhook(args)),
        Command::Whoami(target) => runtime.block_on(cli::whoami(target)),
        Command::Audit(args) => runtime.block_on(cli::audit(args)),
        Command::Usage(args) => runtime.block_on(cli::usage(args)),
        Command::Check(args) => runtime.block_on(cli::check(args)),
        Command::Healthcheck(cert) => runtime.block_on(cli::healthcheck(cert)),
        Command::Migrate {
            apply,
            redis_url_file,
        } => match MigrateConfig::from_env(redis_url_file.as_deref()) {
            Ok(config) => runtime.block_on(keyward::migrate::command(&config, apply)),
            Err(e) => {
                eprintln!("keyward migrate: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Acl(_) | Command::Serve(_) => unreachable!("handled above"),
    }
}

/// The tokio runtime, with `workers` worker threads.
fn runtime(workers: usize) -> Option<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build();
    runtime
        .map_err(|e| eprintln!("keyward: cannot start the runtime: {e}"))
        .ok()
}

/// Help and version as clap prints them; a usage error as one line on
/// stderr naming what is wrong, exit 2 (scripts rely on it).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "...were not provided:" is followed by the indented arguments it means.
    let named: Vec<&str> = match first.ends_with(':') {
        true => lines
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect(),
        false => Vec::new(),
    };
    let first = match named.is_empty() {
        true => first.to_owned(),
        false => format!("{first} {}", named.join(", ")),
    };
    eprintln!("keyward: {first} (see --help)");
    ExitCode::from(2)
}

async fn serve(config: Config) -> ExitCode {
    let _flushed_at_exit = telemetry::init_tracing(config.log_format, &config.log_filter);
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let listeners = async {
        Ok::<_, String>(Listeners {
            main: bind(config.listen).await?,
            metrics: match config.metrics_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    };
    let listeners = match listeners.await {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match keyward::run(config, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keyward failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on ctrl-c or SIGTERM. The SIGTERM handler is installed at once,
/// not when the future is first polled: a signal that arrives while the
/// server is already answering but `run` has not polled this yet (a busy
/// machine) must stop it gracefully, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Some(mut sig) => {
                    sig.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate => {},
        }
    }
}
