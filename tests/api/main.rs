//! One integration binary; one file per area.

mod admin;
mod helpers;
mod ops;
mod validate;
