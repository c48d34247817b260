//! keyward: API-key validation for API gateways, on Redis Stack.
//!
//! # Layout, in request order
//!
//! Dependencies point one way, down this list's layers: [`http`] calls the
//! operations (validate, admin, operators, trail, activity, usage, webhook), which
//! call [`access`], [`store`], [`hash`] and the pure modules; nothing below
//! imports anything above it. axum stops at `http` (and [`error`]'s one
//! `IntoResponse`), fred at `store`, argon2 at `hash`. `ARCHITECTURE.md`
//! lists the layers, and `tests/api/architecture.rs` holds the code to
//! them (no import circle, who names fred, axum and argon2), with the one
//! exception they name: [`config`] and [`tls`] import each other (config
//! checks the TLS files load; tls reads its settings).
//!
//! - [`http`]: the routes (each declared once, with its OpenAPI operation),
//!   layers and handlers, and serving them (`http::serve`, the state built
//!   from the configuration). Handlers only translate HTTP to one call and
//!   back (`POST /v1/validate-key`, the forward-auth `/v1/auth` and Envoy's
//!   gRPC `Authorization/Check`, `http::ext_authz`, all call the one
//!   pipeline); `http::extract` validates bodies and queries;
//!   `http::access` lets each admin call in (token, role, projects) and
//!   writes its `audit:admin` entry.
//! - The operations:
//!   [`validate`], the validation pipeline (parse, load, check, verify,
//!   scopes, rate limit and plan, audit): `validate::rules`, every rule
//!   that can refuse a key as a pure function, and the I/O around them;
//!   under `KEYWARD_FAILSAFE=open`, the last known good. [`admin`]:
//!   projects; mint, inspect, update, rotate, revoke and list keys.
//!   [`operators`]: create, list and revoke operators; `whoami`; the
//!   catalog (roles, event types). [`trail`]: the admin audit trail as `GET
//!   /v1/admin/audit` reads it. [`activity`]: a project's recent
//!   validations and its validations per minute, for the console.
//!   [`usage`]: a project's or key's usage record by hour, day or month,
//!   for billing.
//!   [`webhook`]: the endpoints' admin functions, what the validation path
//!   signals, and the delivery worker (started by [`run`]).
//! - [`access`]: who may do what on the admin API: operator tokens, the
//!   one decision every admin call goes through. [`limits`]: the admin
//!   API's limits per caller (writes per minute, audit reads at once), in
//!   memory, and the rule of its webhook quotas.
//! - [`store`]: every Redis key name and command (the only user of fred),
//!   one file per concern. [`hash`]: Argon2id (the only user of argon2),
//!   its blocking-pool cap, the verified-secret cache and verified digests.
//! - Pure, used by the layers above and by the store: [`key`] (the
//!   `sk-proj.<project>.<key_id>.<secret>` format, the project-id grammar);
//!   [`scope`] (what a key may do, how scopes match); [`plan`] (usage
//!   plans: windows, credits, costs); [`net`] (addresses and networks);
//!   [`text`] (the free text a caller may store); [`role`] (the operators'
//!   roles); [`event`] (the webhook event types, an event); [`audit`] (the
//!   audit reasons and outcomes, the per-second budget of anonymous and
//!   refused entries, the cap on a field); [`clock`] (keyward's one clock
//!   and the civil calendar). Each carries its validation rules and
//!   OpenAPI schemas where the wire types need them.
//! - [`config`], [`error`], [`telemetry`]: used by all of the above.
//!   [`tls`]: rustls for `rediss://` connections (handed to fred by the
//!   store) and the HTTPS listener (its handshakes, and its certificate
//!   reloaded from disk), which `http` serves.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`, assembled
//!   from the operations and wire types the routes collected.
//! - Off the request path: [`cli`], the `keyward project|key|operator|
//!   webhook|whoami|audit|check` admin commands, a client of the HTTP admin
//!   API like any other, and `keyward healthcheck`; [`acl`], a client
//!   deployment's Redis ACL rules (`keyward acl`), made from the store's
//!   key prefixes; [`migrate`], `keyward migrate`, which upgrades data the
//!   original service wrote to keyward's layout, in place.
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
pub mod page;
pub mod plan;
pub mod role;
pub mod scope;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod trail;
pub mod usage;
pub mod validate;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

pub use crate::config::Config;
pub use crate::error::{Error, Result};

pub use crate::http::Listeners;

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
