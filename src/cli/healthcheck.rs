//! `keyward healthcheck`, for container health checks: no curl needed in
//! the image.

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

/// GET /health on the local listener (`KEYWARD_LISTEN`, as `keyward serve`
/// reads it): exit 0 on a 200, else 1. Container health checks treat any
/// non-zero as unhealthy, so a configuration error is 1 too.
///
/// A request written by hand rather than the CLI's HTTP client: no proxy
/// settings, no TLS roots, no redirects, only the status line.
pub async fn healthcheck() -> ExitCode {
    let mut addr = match Config::listen_from_env() {
        Ok(listen) => listen,
        Err(e) => {
            eprintln!("keyward: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
