//! `keyward healthcheck`, for container health checks: no curl needed in
//! the image.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ClientCert;
use crate::config::Config;

/// GET /health on the local listener (`KEYWARD_LISTEN`, as `keyward serve`
/// reads it; over TLS when `KEYWARD_TLS_CERT_FILE` is set, presenting
/// `cert` if given, for an mTLS listener): exit 0 on a 200, else 1.
/// Container health checks treat any non-zero as unhealthy, so a
/// configuration error is 1 too.
///
/// A request written by hand rather than the CLI's HTTP client: no proxy
/// settings, no TLS roots (see [`crate::tls::probe_client`]), no redirects,
/// only the status line.
pub async fn healthcheck(cert: ClientCert) -> ExitCode {
    let (mut addr, https) = match Config::listen_from_env() {
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
    let tls = match (https, &cert.cert_file, &cert.key_file) {
        (false, _, _) => None,
        (true, Some(c), Some(k)) => Some(crate::tls::probe_client(Some((c, k)))),
        (true, None, None) => Some(crate::tls::probe_client(None)),
        (true, _, _) => {
            eprintln!("keyward: KEYWARD_URL_CERT_FILE and KEYWARD_URL_KEY_FILE go together");
            return ExitCode::FAILURE;
        }
    };
    let tls = match tls.transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("keyward: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let check = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        match tls {
            None => health(stream).await,
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls::pki_types::ServerName::from(addr.ip());
                health(connector.connect(name, stream).await?).await
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Whether `GET /health` on `stream` answers 200.
async fn health(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> std::io::Result<bool> {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    Ok(head.starts_with(b"HTTP/1.1 200"))
}
