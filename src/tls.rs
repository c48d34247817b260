//! TLS, with rustls and its ring provider (no OpenSSL): the PEM files
//! keyward reads, for its Redis connections (`rediss://`, a client) and for
//! its public listener (HTTPS, a server).
//!
//! Every problem with a file names the variable that points at it, so a bad
//! deployment stops with one clear line. The listener's files are read again
//! every `KEYWARD_TLS_RELOAD_MS`: a renewed certificate is served to new
//! connections, a renewed file that does not load keeps the previous one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, ListenerTls, RedisTls};

/// The one crypto provider, named rather than left to rustls' process-wide
/// default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(var: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        problem: problem.into(),
    }
}

/// The bytes of the file `var` names.
fn read(var: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| bad(var, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file's bytes; none is an error.
fn certificates(
    var: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(var, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(var, format!("{} holds no CERTIFICATE", path.display())));
    }
    Ok(certs)
}

/// The private key in a PEM file's bytes (PKCS#8, PKCS#1 or SEC1). The
/// error never quotes the file.
fn private_key(var: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| bad(var, format!("{} holds no PEM private key", path.display())))
}

/// A trust store of every certificate in the file `var` names.
fn roots(var: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(var, path, &read(var, path)?)? {
        roots
            .add(cert)
            .map_err(|e| bad(var, format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The system's trust store (what `rediss://` trusts without a CA file).
fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(bad(
            "KEYWARD_REDIS_CA_FILE",
            format!("is unset and the system's CA certificates cannot be used ({why}): install them (ca-certificates) or name a PEM bundle"),
        ));
    }
    Ok(roots)
}

/// The client side of every `rediss://` connection: the server's
/// certificate checked against `KEYWARD_REDIS_CA_FILE` (else the system's
/// roots) and its name against the URL's host (rustls does both), and the
/// client certificate of `KEYWARD_REDIS_CERT_FILE` and `_KEY_FILE`, if set.
pub fn redis_client(files: &RedisTls) -> Result<ClientConfig, ConfigError> {
    let roots = match &files.ca_file {
        Some(path) => roots("KEYWARD_REDIS_CA_FILE", path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("KEYWARD_REDIS_CA_FILE", e.to_string()))?
        .with_root_certificates(roots);
    match (&files.cert_file, &files.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let (cert_var, key_var) = ("KEYWARD_REDIS_CERT_FILE", "KEYWARD_REDIS_KEY_FILE");
            let chain = certificates(cert_var, cert, &read(cert_var, cert)?)?;
            let key = private_key(key_var, key, &read(key_var, key)?)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                bad(
                    key_var,
                    format!("does not go with KEYWARD_REDIS_CERT_FILE: {e}"),
                )
            })
        }
        (Some(_), None) => Err(bad(
            "KEYWARD_REDIS_KEY_FILE",
            "is required with KEYWARD_REDIS_CERT_FILE",
        )),
        (None, Some(_)) => Err(bad(
            "KEYWARD_REDIS_CERT_FILE",
            "is required with KEYWARD_REDIS_KEY_FILE",
        )),
    }
}

/// The files of the listener's TLS as read at one moment, so a reload can
/// tell whether anything changed.
#[derive(PartialEq, Eq)]
struct ListenerFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ListenerFiles {
    fn read(tls: &ListenerTls) -> Result<Self, ConfigError> {
        let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
            return Err(bad(
                "KEYWARD_TLS_CERT_FILE",
                "and KEYWARD_TLS_KEY_FILE are both required for HTTPS",
            ));
        };
        Ok(Self {
            cert: read("KEYWARD_TLS_CERT_FILE", cert)?,
            key: read("KEYWARD_TLS_KEY_FILE", key)?,
            client_ca: match &tls.client_ca_file {
                Some(path) => Some(read("KEYWARD_TLS_CLIENT_CA_FILE", path)?),
                None => None,
            },
        })
    }

    /// The server configuration these files make: HTTP/2 and HTTP/1.1 by
    /// ALPN; with a client CA, a client certificate from it is required.
    fn server_config(&self, tls: &ListenerTls) -> Result<ServerConfig, ConfigError> {
        let path = |p: &Option<std::path::PathBuf>| p.clone().unwrap_or_default();
        let cert_path = path(&tls.cert_file);
        let chain = certificates("KEYWARD_TLS_CERT_FILE", &cert_path, &self.cert)?;
        let key = private_key("KEYWARD_TLS_KEY_FILE", &path(&tls.key_file), &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("KEYWARD_TLS_CERT_FILE", e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let var = "KEYWARD_TLS_CLIENT_CA_FILE";
                let ca_path = path(&tls.client_ca_file);
                let mut roots = RootCertStore::empty();
                for cert in certificates(var, &ca_path, pem)? {
                    roots
                        .add(cert)
                        .map_err(|e| bad(var, format!("{}: {e}", ca_path.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .map_err(|e| bad(var, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            bad(
                "KEYWARD_TLS_KEY_FILE",
                format!("does not go with KEYWARD_TLS_CERT_FILE: {e}"),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Checks that the listener's files load, as at start-up.
pub fn check_listener(tls: &ListenerTls) -> Result<(), ConfigError> {
    ListenerFiles::read(tls)?.server_config(tls).map(drop)
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The public listener over TLS (`http::serve` serves it: HTTP/1.1 and HTTP/2 by
/// ALPN: a gRPC service routed beside the HTTP API shares it). A task
/// accepts TCP connections and runs each handshake in a task of its own, so
/// a slow client holds up nobody; a connection whose handshake fails (no
/// client certificate from the CA, under mTLS) never reaches the router,
/// and gets no HTTP answer at all. Another task reloads the files. Both
/// stop when the listener is dropped.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: [tokio::task::AbortHandle; 2],
}

impl TlsListener {
    /// Serves `tcp` with the certificate in `tls`'s files; fails, naming the
    /// variable, when they do not load.
    pub fn new(tcp: TcpListener, tls: &ListenerTls) -> Result<Self, ConfigError> {
        let files = ListenerFiles::read(tls)?;
        let acceptor = Arc::new(RwLock::new(TlsAcceptor::from(Arc::new(
            files.server_config(tls)?,
        ))));
        let local = tcp
            .local_addr()
            .map_err(|e| bad("KEYWARD_LISTEN", e.to_string()))?;
        let (tx, incoming) = mpsc::channel(64);
        let accept = tokio::spawn(accept(tcp, acceptor.clone(), tx));
        let reload = tokio::spawn(reload(tls.clone(), files, acceptor));
        Ok(Self {
            incoming,
            local,
            tasks: [accept.abort_handle(), reload.abort_handle()],
        })
    }

    /// The next connection whose handshake is done.
    pub async fn next(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task is gone only when the listener is.
            None => std::future::pending().await,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accepts connections and hands each one, once its handshake is done with
/// the acceptor current at its accept, to `tx`.
async fn accept(
    tcp: TcpListener,
    acceptor: Arc<RwLock<TlsAcceptor>>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // As axum's own listener: a connection's error is its own;
                // any other (too many open files) is waited out.
                use std::io::ErrorKind::*;
                if !matches!(
                    e.kind(),
                    ConnectionRefused | ConnectionAborted | ConnectionReset
                ) {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = match acceptor.read() {
            Ok(acceptor) => acceptor.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Reads the listener's files every `KEYWARD_TLS_RELOAD_MS`; when they
/// changed and load, new connections get them; when they do not load, the
/// previous ones stay, and the reason is logged once per change.
async fn reload(tls: ListenerTls, mut loaded: ListenerFiles, acceptor: Arc<RwLock<TlsAcceptor>>) {
    let mut tick = tokio::time::interval(tls.reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_problem = None;
    loop {
        tick.tick().await;
        let files = match ListenerFiles::read(&tls) {
            Ok(files) if files == loaded => {
                last_problem = None;
                continue;
            }
            Ok(files) => files,
            Err(e) => {
                let problem = e.to_string();
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(error = %problem, "TLS files not reloaded: still serving the previous certificate");
                }
                last_problem = Some(problem);
                continue;
            }
        };
        match files.server_config(&tls) {
            Ok(config) => {
                let fresh = TlsAcceptor::from(Arc::new(config));
                match acceptor.write() {
                    Ok(mut current) => *current = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                loaded = files;
                last_problem = None;
                tracing::info!("TLS certificate reloaded");
            }
            Err(e) => {
                let problem = e.to_string();
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(error = %problem, "renewed TLS files not loaded: still serving the previous certificate");
                }
                last_problem = Some(problem);
            }
        }
    }
}

/// The client side of `keyward healthcheck` on an HTTPS listener: it checks
/// that the server holds the key of the certificate it presents (the
/// handshake's signatures), not whom the certificate names, since the probe
/// reaches the listener on a loopback address its certificate need not
/// name, and it sends nothing secret. With `cert` (`KEYWARD_URL_CERT_FILE`,
/// `_KEY_FILE`) it presents a client certificate, for an mTLS listener.
pub fn probe_client(cert: Option<(&Path, &Path)>) -> Result<ClientConfig, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(AnyServer(provider.clone()));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("KEYWARD_TLS_CERT_FILE", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (cert_var, key_var) = ("KEYWARD_URL_CERT_FILE", "KEYWARD_URL_KEY_FILE");
            let chain = certificates(cert_var, cert, &read(cert_var, cert)?)?;
            let key = private_key(key_var, key, &read(key_var, key)?)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                bad(
                    key_var,
                    format!("does not go with KEYWARD_URL_CERT_FILE: {e}"),
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate, but still checks the handshake's
/// signatures with it: see [`probe_client`].
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
