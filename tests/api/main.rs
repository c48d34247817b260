//! One integration binary; one file per area.

mod admin;
mod cli;
mod cluster;
mod console;
mod fault_matrix;
mod faults;
mod forward_auth;
mod fuzz;
mod gateways;
mod helpers;
mod hot_path;
mod isolation;
mod legacy;
mod lifecycle;
mod memory;
mod openapi;
mod ops;
mod proxy;
mod remember;
mod unix;
mod validate;
