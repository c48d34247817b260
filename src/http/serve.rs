//! Serving: the state built from the configuration, and the listeners
//! served until shutdown (the public one over TLS when configured, and a
//! private `/metrics` one), then drained. `lib.rs`'s `run` calls these, so
//! axum stays inside `http`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderName;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::{metrics_router, router, App, AppState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::store::Store;
use crate::tls::TlsListener;
use crate::validate::Validator;

/// The listeners `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The public listener; `run` serves it over TLS when
    /// `KEYWARD_TLS_CERT_FILE` is set.
    pub main: TcpListener,
    /// A separate, private listener for `/metrics`, if configured (always
    /// plain HTTP).
    pub metrics: Option<TcpListener>,
}

impl App {
    /// The state every handler shares, from the configuration.
    pub fn new(
        config: &Config,
        store: Store,
        hasher: Arc<Hasher>,
        metrics: PrometheusHandle,
    ) -> Result<AppState> {
        Ok(Arc::new(App {
            validator: Validator::new(store.clone(), hasher.clone(), config),
            store,
            hasher,
            operator_hasher: crate::access::legacy_hasher(config)?,
            admin_token: config.admin_token.clone(),
            metrics,
            request_timeout: config.request_timeout,
            client_ip_header: HeaderName::from_bytes(config.client_ip_header.as_bytes()).map_err(
                |_| Error::Internal("KEYWARD_CLIENT_IP_HEADER is not a header name".into()),
            )?,
            auth_query_param: config.auth_query_param.clone(),
            auth_cost_header: config.auth_cost_header,
            auth_original_headers: config.auth_original_headers,
            webhook_allow_private: config.webhook_allow_private,
            limits: crate::limits::Limits::new(config),
        }))
    }
}

/// The TLS listener as axum serves it.
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.next().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(TlsListener::local_addr(self))
    }
}

/// Serves `listeners` until `shutdown` completes; requests in flight then
/// get up to `config.shutdown_grace` to finish.
pub async fn serve(
    state: AppState,
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics_server = listeners.metrics.map(|listener| {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics separately");
        let app = metrics_router(state.clone());
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped())
                .into_future(),
        )
    });

    let https = config.tls.enabled();
    tracing::info!(addr = ?listeners.main.local_addr().ok(), https, client = %config.client_name, "keyward listening");
    let app = router(state, config.metrics_listen.is_some());
    let server = match https {
        true => {
            let listener = TlsListener::new(listeners.main, &config.tls)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped());
            tokio::spawn(server.into_future())
        }
        false => {
            // No Nagle delay: an HTTP/2 connection (gRPC ext_authz) carries
            // many small answers at once, as the TLS listener's do.
            let main = axum::serve::ListenerExt::tap_io(listeners.main, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(main, app).with_graceful_shutdown(stopped());
            tokio::spawn(server.into_future())
        }
    };
    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("shutdown grace period over: dropping requests still in flight"),
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    Ok(())
}
