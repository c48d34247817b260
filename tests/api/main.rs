//! One integration binary; one file per area, beside the support code:
//! `helpers` (the test app, on a Redis of its own or on the cluster, and
//! its typed calls), `browser` (the console tests' WebDriver harness) and
//! `proxy` (a TCP proxy that cuts connections on demand).

mod admin;
mod admin_edges;
mod browser;
mod catalog;
mod cli;
mod cluster;
mod console;
mod ext_authz;
mod fault_background;
mod fault_matrix;
mod faults;
mod forward_auth;
mod fuzz;
mod gateways;
mod helpers;
mod hostile;
mod hot_path;
mod isolation;
mod legacy;
mod lifecycle;
mod memory;
mod openapi;
mod operators;
mod ops;
mod plan_spend;
mod plans;
mod proxy;
mod remember;
mod rules_model;
mod tls;
mod unix;
mod validate;
mod webhook_faults;
mod webhooks;
