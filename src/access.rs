//! Who may do what on the admin API: operator tokens, roles, the projects a
//! caller covers, and the one decision every admin call goes through.
//!
//! A caller is the break-glass root (`KEYWARD_ADMIN_TOKEN`: actor `root`,
//! `owner` of every project) or an operator, whose token
//! `kwop.<operator_id>.<secret>` names its document in Redis. The document
//! is read on every call, so a revoke or an expiry is refused on the very
//! next call on every instance.
//!
//! The secret is 258 random bits, so a slow hash would protect nothing: the
//! document holds `sha256:` and the hex SHA-256 of the secret, compared in
//! constant time, and checking a token costs no Argon2id, whoever sends it.
//! Documents written before that hold an Argon2id PHC string: those are
//! checked by a hasher of their own ([`legacy_hasher`]: one run at a time,
//! [`LEGACY_QUEUE`] waiting, then `503 busy`), which never takes a permit
//! key validation needs, and the first success re-writes the document with
//! the digest, so each such operator pays Argon2id once.
//!
//! [`Caller::authorize`] is the one decision: a project outside the
//! caller's list answers exactly as a project that does not exist (the
//! route's own `404`), and an action the role does not allow within its
//! projects is `403 insufficient_permission`.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hash::{Hasher, Verdict};
use crate::key::Secret;
pub use crate::role::Role;
use crate::store::Store;

/// The prefix of every operator token: unlike an API key's `sk-proj.`, so
/// people and secret scanners can tell them apart.
pub const TOKEN_PREFIX: &str = "kwop.";
/// An operator id is `op_` and 12 of `[A-Za-z0-9]`.
pub const OPERATOR_ID_PREFIX: &str = "op_";
/// The break-glass token's actor.
pub const ROOT: &str = "root";
/// The actor of a call whose token named no valid caller.
pub use crate::audit::UNKNOWN;
/// "Every project" in a project list.
pub const ALL_PROJECTS: &str = "*";
/// How an operator document's `secret_hash` starts when it holds the
/// token's digest: `sha256:<64 hex digits>`.
pub const DIGEST_PREFIX: &str = "sha256:";
/// Checks of Argon2id-stored operator tokens that may wait for the one
/// running; past them, `503 busy`.
pub const LEGACY_QUEUE: usize = 2;

/// What an operator document stores for its token's secret.
pub fn token_digest(secret: &Secret) -> String {
    format!(
        "{DIGEST_PREFIX}{}",
        hex::encode(Sha256::digest(secret.expose()))
    )
}

/// The hasher for operator documents stored with Argon2id: the configured
/// parameters, but one run at a time, [`LEGACY_QUEUE`] waiting and a small
/// cache, all its own, so nobody presenting tokens can take key
/// validation's Argon2id capacity.
pub fn legacy_hasher(config: &Config) -> Result<Hasher> {
    Hasher::new(&Config {
        argon2_concurrency: 1,
        argon2_queue: LEGACY_QUEUE,
        verify_cache_entries: config.verify_cache_entries.min(1024),
        verify_peppers: Vec::new(),
        ..config.clone()
    })
}

/// Every action, once: its variant, its name in `audit:admin`, and its
/// marker type in [`act`] (`Admin<act::KeyMint, _>` in `http`).
macro_rules! actions {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// What an admin call does: its name in `audit:admin`, and the least
        /// role that may do it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action {
            $($variant),*
        }

        impl Action {
            pub fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name),*
                }
            }
        }

        /// One marker type per [`Action`].
        pub mod act {
            $(
                pub struct $variant;
                impl super::Act for $variant {
                    const ACTION: super::Action = super::Action::$variant;
                }
            )*
        }
    };
}

impl Action {
    /// Whether the action changes something (counted against
    /// `KEYWARD_ADMIN_WRITES_PER_MINUTE`).
    pub fn writes(self) -> bool {
        use Action::*;
        matches!(
            self,
            ProjectCreate
                | KeyMint
                | KeyUpdate
                | KeyRotate
                | KeyRevoke
                | KeyAddCredits
                | OperatorCreate
                | OperatorRevoke
                | WebhookCreate
                | WebhookDelete
                | WebhookTest
        )
    }
}

/// An action, as a type.
pub trait Act {
    const ACTION: Action;
}

actions!(
    ProjectCreate = "project.create",
    ProjectRead = "project.read",
    ProjectList = "project.list",
    KeyMint = "key.mint",
    KeyRead = "key.read",
    KeyList = "key.list",
    KeyUpdate = "key.update",
    KeyRotate = "key.rotate",
    KeyRevoke = "key.revoke",
    KeyAddCredits = "key.add_credits",
    ActivityRead = "activity.read",
    UsageRead = "usage.read",
    AuditRead = "audit.read",
    OperatorCreate = "operator.create",
    OperatorList = "operator.list",
    OperatorRevoke = "operator.revoke",
    Whoami = "whoami",
    Catalog = "catalog",
    WebhookCreate = "webhook.create",
    WebhookList = "webhook.list",
    WebhookDelete = "webhook.delete",
    WebhookTest = "webhook.test",
    WebhookDeliveries = "webhook.deliveries",
);

impl Action {
    /// The least role that may do this within its projects.
    pub fn needs(self) -> Role {
        match self {
            Action::ProjectRead
            | Action::ProjectList
            | Action::KeyRead
            | Action::KeyList
            | Action::ActivityRead
            | Action::UsageRead
            | Action::AuditRead
            | Action::WebhookList
            | Action::WebhookDeliveries
            | Action::Whoami
            | Action::Catalog => Role::Viewer,
            Action::KeyMint
            | Action::KeyUpdate
            | Action::KeyRotate
            | Action::KeyRevoke
            | Action::KeyAddCredits => Role::KeyManager,
            Action::ProjectCreate
            | Action::WebhookCreate
            | Action::WebhookDelete
            | Action::WebhookTest => Role::ProjectAdmin,
            Action::OperatorCreate | Action::OperatorList | Action::OperatorRevoke => Role::Owner,
        }
    }

    /// What a project outside the caller's list answers: the route's own
    /// answer for a project that does not exist.
    fn not_found(self) -> Error {
        match self {
            Action::KeyRead
            | Action::KeyUpdate
            | Action::KeyRotate
            | Action::KeyRevoke
            | Action::KeyAddCredits => Error::KeyNotFound,
            _ => Error::ProjectNotFound,
        }
    }
}

/// The project and key an admin call's input is about: what
/// [`Caller::authorize`] decides on and the audit entry names.
pub trait Target {
    fn project(&self) -> Option<&str> {
        None
    }
    fn key(&self) -> Option<&str> {
        None
    }
    /// The operator an operator call is about.
    fn operator(&self) -> Option<&str> {
        None
    }
}

impl Target for () {}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The operator id, or `root`.
    pub actor: String,
    pub name: String,
    pub role: Role,
    /// Project ids, or `["*"]`.
    pub projects: Vec<String>,
}

impl Caller {
    fn root() -> Self {
        Self {
            actor: ROOT.into(),
            name: ROOT.into(),
            role: Role::Owner,
            projects: vec![ALL_PROJECTS.into()],
        }
    }

    /// Whether the caller covers every project.
    pub fn covers_all(&self) -> bool {
        self.role == Role::Owner || self.projects.iter().any(|p| p == ALL_PROJECTS)
    }

    /// Whether `project` is one of the caller's.
    pub fn sees(&self, project: &str) -> bool {
        self.covers_all() || self.projects.iter().any(|p| p == project)
    }

    /// The one decision: may the caller do `action` on `project` (`None`:
    /// an action on no single project)?
    ///
    /// Outside its projects, the route's `404` (a project the caller may not
    /// see does not exist for it), except for creating a project, which
    /// reveals nothing by being refused: `403`. Within them, `403` unless
    /// the role allows the action.
    pub fn authorize(&self, action: Action, project: Option<&str>) -> Result<()> {
        if let Some(project) = project {
            if !self.sees(project) {
                return Err(match action {
                    Action::ProjectCreate => Error::InsufficientPermission,
                    _ => action.not_found(),
                });
            }
        }
        if self.role < action.needs() {
            return Err(Error::InsufficientPermission);
        }
        Ok(())
    }
}

/// The projects a role with this stored list covers: an owner's are every
/// project, whatever an older document says (creation refuses any other
/// list), so `whoami` and the list say what the owner may do.
pub fn covered(role: Role, projects: Vec<String>) -> Vec<String> {
    match role {
        Role::Owner => vec![ALL_PROJECTS.into()],
        _ => projects,
    }
}

/// A parsed operator token.
pub struct Token {
    pub operator_id: String,
    pub secret: Secret,
}

/// Whether `id` is an operator id: `op_` and 12 of `[A-Za-z0-9]`.
pub fn is_operator_id(id: &str) -> bool {
    id.strip_prefix(OPERATOR_ID_PREFIX)
        .is_some_and(|body| body.len() == 12 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Token {
    /// Parses `kwop.<operator_id>.<secret>`. Never echoes the input.
    pub fn parse(s: &str) -> Option<Self> {
        let (operator_id, secret) = s.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
        if !is_operator_id(operator_id) {
            return None;
        }
        Some(Self {
            operator_id: operator_id.to_owned(),
            secret: Secret::parse(secret).ok()?,
        })
    }

    /// The full token, as shown once at creation.
    pub fn expose(operator_id: &str, secret: &str) -> String {
        format!("{TOKEN_PREFIX}{operator_id}.{secret}")
    }
}

/// A token refused: why, and the operator it names when that operator
/// exists (revoked, expired, or a wrong secret), for the audit entry.
#[derive(Debug)]
pub struct Refused {
    pub error: Error,
    pub operator_id: Option<String>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Self {
            error,
            operator_id: None,
        }
    }
}

/// The caller behind a bearer token: root, or a live operator whose
/// secret matches. `Unauthorized` for anything else (unknown, revoked,
/// expired, wrong secret, unreadable); `Busy`/`Unavailable` when it cannot
/// be told now. `legacy` checks documents stored with Argon2id (see
/// [`legacy_hasher`]).
pub async fn authenticate(
    store: &Store,
    legacy: &Hasher,
    root: &SecretString,
    presented: &str,
) -> Result<Caller, Refused> {
    // Comparing fixed-size digests in constant time leaks neither the
    // token's bytes nor its length.
    let digest = Sha256::digest(presented.as_bytes());
    if bool::from(digest.ct_eq(&Sha256::digest(root.expose_secret().as_bytes()))) {
        return Ok(Caller::root());
    }
    let token = Token::parse(presented).ok_or(Error::Unauthorized)?;
    let doc = match store.get_operator(&token.operator_id).await {
        Ok(Some(doc)) => doc,
        Ok(None) | Err(Error::Unreadable) => return Err(Error::Unauthorized.into()),
        Err(e) => return Err(e.into()),
    };
    let refused = |error| Refused {
        error,
        operator_id: Some(doc.operator_id.clone()),
    };
    if doc.revoked || doc.expires_at.is_some_and(|at| at <= now()) {
        return Err(refused(Error::Unauthorized));
    }
    if doc.secret_hash.starts_with(DIGEST_PREFIX) {
        let digest = token_digest(&token.secret);
        if !bool::from(digest.as_bytes().ct_eq(doc.secret_hash.as_bytes())) {
            return Err(refused(Error::Unauthorized));
        }
    } else {
        check_legacy(store, legacy, &token, &doc.secret_hash)
            .await
            .map_err(refused)?;
    }
    Ok(Caller {
        actor: doc.operator_id,
        name: doc.name,
        role: doc.role,
        projects: covered(doc.role, doc.projects),
    })
}

/// Checks `token` against an Argon2id `phc` on the legacy hasher, and on
/// a match stores the digest instead (a failed write is logged: the next
/// call tries again).
async fn check_legacy(store: &Store, legacy: &Hasher, token: &Token, phc: &str) -> Result<()> {
    let cache_key = legacy.operator_cache_key(&token.operator_id, &token.secret);
    if legacy.cached(&cache_key).as_deref() != Some(phc) {
        match legacy.verify(&token.secret, phc, Some(&cache_key)).await? {
            Verdict::Match => {}
            Verdict::Mismatch => return Err(Error::Unauthorized),
            Verdict::Corrupt => {
                tracing::warn!(
                    operator_id = %token.operator_id,
                    "an operator's stored hash cannot be read; its token is refused"
                );
                return Err(Error::Unauthorized);
            }
        }
    }
    let digest = token_digest(&token.secret);
    if let Err(e) = store.set_operator_hash(&token.operator_id, &digest).await {
        tracing::warn!(operator_id = %token.operator_id, error = %e, "an operator's Argon2id hash was not replaced by its digest");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_as_the_hex_sha256_of_its_secret() {
        let secret = Secret::parse(&"A".repeat(43)).unwrap();
        let digest = token_digest(&secret);
        assert_eq!(digest.len(), DIGEST_PREFIX.len() + 64);
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest("A".repeat(43))))
        );
    }

    fn operator(role: Role, projects: &[&str]) -> Caller {
        Caller {
            actor: "op_abcdefabcdef".into(),
            name: "n".into(),
            role,
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn roles_include_the_ones_before() {
        let actions = [
            Action::KeyRead,
            Action::KeyMint,
            Action::ProjectCreate,
            Action::OperatorCreate,
        ];
        for (r, role) in Role::ALL.into_iter().enumerate() {
            let caller = operator(role, &["alpha"]);
            for (a, action) in actions.into_iter().enumerate() {
                let got = caller.authorize(action, Some("alpha"));
                assert_eq!(got.is_ok(), a <= r, "{role:?} {action:?}: {got:?}");
                if a > r {
                    assert!(matches!(got, Err(Error::InsufficientPermission)));
                }
            }
        }
    }

    #[test]
    fn a_project_outside_the_list_is_the_routes_not_found_whatever_the_role() {
        let viewer = operator(Role::Viewer, &["alpha"]);
        assert!(matches!(
            viewer.authorize(Action::KeyMint, Some("beta")),
            Err(Error::ProjectNotFound)
        ));
        assert!(matches!(
            viewer.authorize(Action::KeyRevoke, Some("beta")),
            Err(Error::KeyNotFound)
        ));
        let admin = operator(Role::ProjectAdmin, &["alpha"]);
        assert!(matches!(
            admin.authorize(Action::ProjectCreate, Some("beta")),
            Err(Error::InsufficientPermission)
        ));
        assert!(admin
            .authorize(Action::ProjectCreate, Some("alpha"))
            .is_ok());
        let any = operator(Role::ProjectAdmin, &["*"]);
        assert!(any.authorize(Action::ProjectCreate, Some("beta")).is_ok());
        assert!(Caller::root()
            .authorize(Action::OperatorCreate, None)
            .is_ok());
    }

    #[test]
    fn tokens_parse_only_in_their_own_shape() {
        let secret = "A".repeat(43);
        let token = Token::expose("op_abcdefABCDEF", &secret);
        assert!(token.starts_with("kwop.op_"));
        assert_eq!(Token::parse(&token).unwrap().operator_id, "op_abcdefABCDEF");
        for bad in [
            format!("sk-proj.op_abcdefABCDEF.{secret}"),
            format!("kwop.op_abcdef.{secret}"),
            "kwop.op_abcdefABCDEF.short".to_owned(),
            format!("kwop.op_abcdefABCDEF.{secret}.x"),
            String::new(),
        ] {
            assert!(Token::parse(&bad).is_none(), "{bad}");
        }
    }
}
