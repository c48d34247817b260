//! keyward: API-key validation for API gateways, on Redis Stack.
//!
//! # Layout, in request order
//!
//! - [`http`]: the routes (each declared once, with its OpenAPI operation),
//!   layers and handlers. Handlers only translate HTTP to one call and back
//!   (`POST /v1/validate-key`, the forward-auth `/v1/auth` and Envoy's gRPC
//!   `Authorization/Check`, `http::ext_authz`, all call the one pipeline); `http::extract` validates bodies and queries;
//!   `http::access` lets each admin call in (token, role, projects) and
//!   writes its `audit:admin` entry.
//! - [`validate`]: the validation pipeline (parse, load, check, verify,
//!   scopes, rate limit, audit): `validate::rules`, every rule that can
//!   refuse a key as a pure function, and the I/O around them; under
//!   `KEYWARD_FAILSAFE=open`, the last known good. [`admin`]: projects; mint, inspect, update,
//!   rotate, revoke and list keys. [`activity`]: a project's recent
//!   validations and its validations per minute, for the console.
//!   [`operators`]: create, list and revoke operators. [`trail`]: the admin
//!   audit trail as `GET /v1/admin/audit` reads it.
//! - [`access`]: who may do what on the admin API: operator tokens, roles,
//!   project lists, and the one decision every admin call goes through.
//! - [`audit`]: which denials are anonymous (and which admin calls are
//!   refusals), their per-second budget of audit entries past which they are
//!   summarized, and the cap on an audited field; no I/O.
//! - [`limits`]: the admin API's limits per caller (writes per minute,
//!   audit reads at once) and its webhook quotas, in memory.
//! - [`key`]: the `sk-proj.<project>.<key_id>.<secret>` format, pure.
//! - [`text`]: the free text a caller may store (lengths, no control or
//!   bidirectional characters) and metadata's size, pure, with schemas.
//! - [`scope`]: what a key may do, and how granted scopes match, pure; with
//!   a scope list's validation rule and OpenAPI schema.
//! - [`plan`]: usage plans, pure: windows on UTC boundaries, credits and
//!   their refills, with their validation rules and OpenAPI schemas.
//! - [`net`]: what an IP address and a network may look like, pure; with a
//!   network list's validation rule and both OpenAPI schemas.
//! - [`hash`]: Argon2id, its blocking-pool cap and the verified-secret cache.
//! - [`store`]: every Redis key name and command (the only user of fred),
//!   one file per concern: the validation path's commands and its usage
//!   counts, the admin path's, the activity reads, `keyward migrate`'s.
//! - [`config`], [`error`], [`telemetry`]: used by all of the above.
//! - [`tls`]: rustls for `rediss://` connections and the HTTPS listener
//!   (its handshakes, and its certificate reloaded from disk).
//! - [`acl`]: off the request path; renders a client deployment's Redis ACL
//!   rules, and `keyward acl` prints them.
//! - [`migrate`]: off the request path; `keyward migrate` upgrades data the
//!   original service wrote to keyward's layout, in place.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`, assembled
//!   from the operations and wire types the routes collected.
//! - [`cli`]: off the request path; the `keyward project|key|check` admin
//!   commands, a client of the HTTP admin API like any other, and `keyward
//!   healthcheck`.
//!
//! [`run`] wires them together. `ARCHITECTURE.md` tells the same story at
//! greater length.

#![forbid(unsafe_code)]

pub mod access;
pub mod acl;
pub mod activity;
pub mod admin;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod hash;
pub mod http;
pub mod key;
pub mod limits;
pub mod migrate;
pub mod net;
pub mod openapi;
pub mod operators;
pub mod plan;
pub mod role;
pub mod scope;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod trail;
pub mod validate;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::config::Config;
pub use crate::error::{Error, Result};

/// The listeners `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The public listener; `run` serves it over TLS when
    /// `KEYWARD_TLS_CERT_FILE` is set.
    pub main: TcpListener,
    /// A separate, private listener for `/metrics`, if configured (always
    /// plain HTTP).
    pub metrics: Option<TcpListener>,
}

/// Connects to Redis, then serves until `shutdown` completes; requests in
/// flight then get up to `config.shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = store::Store::connect(&config).await?;
    let hasher = Arc::new(hash::Hasher::new(&config)?);
    let metrics = telemetry::prometheus();
    let state = http::App::new(&config, store.clone(), hasher, metrics.clone())?;
    if config.failsafe == config::Failsafe::Open {
        tracing::warn!(
            max_age = config.failsafe_max_age,
            "KEYWARD_FAILSAFE=open: while Redis cannot be read, a key this instance answered 200 \
             within KEYWARD_FAILSAFE_MAX_AGE seconds and has not refused since passes on what it \
             knew then (a revocation through another instance waits that long)"
        );
    }
    if config.admin_token.is_none() {
        tracing::info!("no admin token configured: admin endpoints are not served");
    }

    let upkeep = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        }
    });
    // Only with a monitor user: nobody else may read the audit streams.
    let sampler = config.monitor_redis_url.is_some().then(|| {
        let (store, every) = (store.clone(), config.audit_sample_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = store.sample_audit_lengths().await {
                    tracing::debug!(error = %e, "audit stream length not sampled");
                }
            }
        })
    });
    // Only with the manager user: the endpoints and their secrets are its.
    let deliverer = match config.admin_token.is_some() && config.admin_redis_url.is_some() {
        true => Some(tokio::spawn(
            webhook::deliver::Deliverer::new(store.clone(), &config)?.run(),
        )),
        false => None,
    };
    let served = http::serve(state, &config, listeners, shutdown).await;
    upkeep.abort();
    if let Some(task) = deliverer {
        task.abort();
    }
    if let Some(task) = sampler {
        task.abort();
    }
    store.quit().await;
    tracing::info!("stopped");
    served
}
