//! Unix seconds now: keyward's one clock, pure and at the bottom of the
//! crate, so that every layer (the store, the audit budget, the admin
//! functions, the CLI) reads the same one without depending on another.
//!
//! The store measures it against Redis's `TIME` (see
//! `store::Store::clock_skew`): past `KEYWARD_MAX_CLOCK_SKEW_MS`, an
//! instance is not ready and answers no validation, so no instance decides
//! expiry or a rotation's grace on a clock of its own.

/// Unix seconds now, with a fraction.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
