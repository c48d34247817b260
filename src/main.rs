//! The `keyward` binary: load config, start telemetry, bind, run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyward::{config::Config, telemetry, Listeners};

#[derive(Parser)]
#[command(version, about = "API-key validation for API gateways, on Redis Stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (configured by KEYWARD_* environment variables).
    Serve,
    /// Exit 0 if the local keyward at KEYWARD_LISTEN answers /health with 200.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve => match Config::from_env() {
            Ok(config) => runtime.block_on(serve(config)),
            Err(e) => {
                eprintln!("keyward: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        // Container health checks treat any non-zero as unhealthy; keep to 0/1.
        Command::Healthcheck => match Config::listen_from_env() {
            Ok(listen) => runtime.block_on(keyward::http::healthcheck(listen)),
            Err(e) => {
                eprintln!("keyward: configuration error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: Config) -> ExitCode {
    telemetry::init_tracing(config.log_format, &config.log_filter);
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

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
