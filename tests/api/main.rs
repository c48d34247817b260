//! One integration binary; one file per area.

mod admin;
mod helpers;
mod isolation;
mod ops;
mod validate;
