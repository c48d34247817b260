//! Every Redis key name keyward uses. These names are a contract with
//! operators and other tools (the README's data table), and with the
//! original service whose layout keyward shares.

use crate::key::{KeyId, ProjectId};

pub const AUDIT_KEYLOOKUP: &str = "audit:keylookup";
pub const AUDIT_ADMIN: &str = "audit:admin";

pub fn project(project: &ProjectId) -> String {
    format!("project:{project}")
}
pub fn apikey(project: &str, key_id: &str) -> String {
    format!("apikey:{project}:{key_id}")
}
pub fn keyset(project: &ProjectId) -> String {
    format!("apiprojectkeys:{project}")
}
pub fn meta(project: &str, key_id: &str) -> String {
    format!("apimeta:{project}:{key_id}")
}
pub fn used(project: &ProjectId, key_id: &KeyId, minute: u64) -> String {
    format!("ratelimit:key:{project}:{key_id}:{minute}")
}
pub fn bad(project: &ProjectId, key_id: &KeyId, minute: u64) -> String {
    format!("ratelimit:key:{project}:{key_id}:bad:{minute}")
}

/// `keyward migrate`'s working keys while it converts a project's plain-set
/// index: the old set, moved aside (every id is in the index or here until
/// the conversion ends), and the sorted set being built. Project ids have no
/// `:`, so these can never be a project's own keys.
pub fn migrate_backup(project: &ProjectId) -> String {
    format!("migrate:apiprojectkeys:{project}:set")
}
pub fn migrate_building(project: &ProjectId) -> String {
    format!("migrate:apiprojectkeys:{project}:zset")
}
