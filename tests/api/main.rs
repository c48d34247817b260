//! One integration binary; one file per area.

mod admin;
mod faults;
mod forward_auth;
mod fuzz;
mod gateways;
mod helpers;
mod hot_path;
mod isolation;
mod lifecycle;
mod ops;
mod validate;
