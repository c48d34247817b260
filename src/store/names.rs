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
