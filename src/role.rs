//! The operators' roles, pure: the store keeps one in each operator
//! document, `access` decides what each may do, and the console lists them
//! as the API gives them (`GET /v1/admin/catalog`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role; each includes the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads projects, keys, activity, webhooks and the admin audit of its
    /// projects.
    Viewer,
    /// Also mints, updates, rotates and revokes keys, and adds credits.
    KeyManager,
    /// Also creates projects (within its list, or any with `*`), and manages
    /// the webhooks of its projects.
    ProjectAdmin,
    /// Everything, every project, and operators.
    Owner,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [
        Role::Viewer,
        Role::KeyManager,
        Role::ProjectAdmin,
        Role::Owner,
    ];

    /// Its name on the wire and in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::KeyManager => "key_manager",
            Role::ProjectAdmin => "project_admin",
            Role::Owner => "owner",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roles_name_is_its_serde_name() {
        for role in Role::ALL {
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, role.as_str());
        }
    }
}
