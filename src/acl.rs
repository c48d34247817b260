//! Redis ACL rules for one client deployment: `keyward acl`.
//!
//! Isolation between deployments is enforced by Redis, not by keyward: each
//! deployment connects as its own users, and these rules grant them only
//! their own projects' keys. Each command is paired with its key patterns in
//! a Redis 7 selector, `(~pattern ... +command ...)`: RedisJSON's `JSON.GET`
//! needs read-write key access, so `%R~` alone cannot say "read-only"; the
//! command list per selector does. No user may run scripts. The validator
//! and the manager may append to their audit stream and never read or trim
//! it; the monitor may read the deployment's audit streams and nothing
//! else (with `KEYWARD_AUDIT_LAYOUT=deployment`, only its own).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::{is_plain_name, AuditLayout};
use crate::key::ProjectId;
use crate::store::{names, AuditStreams};

/// What a deployment's user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The validation path: read key documents, count, audit.
    Validator,
    /// The admin path: projects, mint, revoke, list.
    Manager,
    /// The audit reader (`KEYWARD_MONITOR_REDIS_URL`): the deployment's
    /// own audit streams, read-only: activity, the admin trail, lengths;
    /// and its projects' usage records (`--projects`).
    Monitor,
}

/// The deployment a rule is for: its `KEYWARD_CLIENT_NAME` and its
/// `KEYWARD_AUDIT_LAYOUT` (a bare name: the shared layout).
#[derive(Debug, Clone, Copy)]
pub struct Deployment<'a> {
    pub name: &'a str,
    pub audit: AuditLayout,
}

impl<'a> From<&'a str> for Deployment<'a> {
    fn from(name: &'a str) -> Self {
        Deployment {
            name,
            audit: AuditLayout::Shared,
        }
    }
}

/// What the manager may do to a project's index: a sorted set, or the plain
/// set the original service wrote (read and added to as it is; `TYPE` tells
/// which).
const INDEX_COMMANDS: &str = "+zadd +zrange +type +sadd +smembers";

/// Commands every user needs to connect (fred sends `INFO` for the server
/// version; `CLIENT SETINFO` is deliberately absent: Redis 7.0 rejects it),
/// plus what fred sends to a Redis Cluster: `CLUSTER INFO` (is the cluster
/// healthy?) on each new connection and `CLUSTER SLOTS` for the slot map
/// (no `ASKING`: keyward has fred follow no redirection, see `store`). A
/// Redis outside a cluster refuses these subcommands anyway, so one rule
/// fits both. And `TIME`: Redis's clock is the deployment's (`clock::now`).
const CONNECT: &str =
    "+ping +hello +auth +client|setname +client|id +info +time +cluster|info +cluster|slots";

use crate::key::PROJECT_ID_GRAMMAR;

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("user name must be {PROJECT_ID_GRAMMAR}")]
    User,
    #[error(
        "deployment name (KEYWARD_CLIENT_NAME) must be {PROJECT_ID_GRAMMAR}, \
         and not keylookup or admin with --audit-layout deployment"
    )]
    Deployment,
    #[error("at least one project is required")]
    NoProjects,
    #[error("project {0:?}: {1}")]
    Project(String, crate::key::KeyError),
    #[error("a password must be 1 to 512 bytes without whitespace")]
    Password,
}

/// A new random password: 32 bytes from the OS-seeded CSPRNG, hex-encoded
/// (safe both in an ACL file and in a `redis://` URL).
pub fn generate_password() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The SHA-256 of a password as Redis ACL's `#<hex>` form takes it.
pub fn password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

fn patterns(prefix: &str, projects: &[ProjectId], suffix: &str) -> String {
    projects
        .iter()
        .map(|p| format!("~{prefix}{p}{suffix}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `user ...` line in ACL-file syntax for `user`, granting `role` on
/// `projects`, accepting each of `passwords` (several during a rotation).
/// A manager also gets its deployment's operators and indexes: those named
/// after `deployment`, the deployment's `KEYWARD_CLIENT_NAME`.
pub fn rule<'a>(
    user: &str,
    role: Role,
    projects: &[&str],
    passwords: &[String],
    deployment: impl Into<Deployment<'a>>,
) -> Result<String, AclError> {
    let Deployment {
        name: deployment,
        audit,
    } = deployment.into();
    if !is_plain_name(user) {
        return Err(AclError::User);
    }
    let reserved = audit == AuditLayout::Deployment
        && crate::config::RESERVED_DEPLOYMENT_NAMES.contains(&deployment);
    if !is_plain_name(deployment) || reserved {
        return Err(AclError::Deployment);
    }
    if projects.is_empty() && role != Role::Monitor {
        return Err(AclError::NoProjects);
    }
    let streams = AuditStreams::new(audit, deployment, 1);
    let (keylookup, admin) = (streams.keylookup("", ""), streams.admin());
    let projects = projects
        .iter()
        .map(|p| ProjectId::parse(p).map_err(|e| AclError::Project((*p).to_owned(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    if passwords.is_empty()
        || passwords
            .iter()
            .any(|p| p.is_empty() || p.len() > 512 || p.chars().any(char::is_whitespace))
    {
        return Err(AclError::Password);
    }
    let mut line = format!("user {user} on resetpass");
    for password in passwords {
        let _ = write!(line, " #{}", password_hash(password));
    }
    let _ = write!(line, " resetkeys resetchannels -@all {CONNECT}");
    if role == Role::Manager {
        // KEYWARD_ADMIN_WAIT_REPLICAS: WAIT names no key.
        line.push_str(" +wait");
    }
    let d = deployment;
    let p = |prefix: &str| patterns(prefix, &projects, ":*");
    // Each selector: its key patterns and the commands it may run on them.
    let selectors: Vec<(String, &str)> = match role {
        Role::Validator => vec![
            (p(names::APIKEY), "+json.get"),
            (
                p(names::COUNTER),
                "+get +incr +incrby +decr +decrby +expire",
            ),
            (p(names::META), "+hincrby +hset"),
            // The usage record, written by the flusher (`store::record`).
            (p(names::USAGE), "+hincrby +expireat"),
            (p(names::VERIFIED), "+hgetall +hset"),
            (p(names::CREDITS), "+get +set +incrby +decrby"),
            (
                format!("{} {}", p(names::KEY_EVENT), p(names::KEY_NETWORK)),
                "+set",
            ),
            (
                format!(
                    "%W~{keylookup} %W~{keylookup}:* %W~{}{d}",
                    names::WEBHOOK_EVENTS
                ),
                "+xadd",
            ),
        ],
        Role::Manager => vec![
            (
                format!(
                    "{} {} ~{}{d}:*",
                    patterns(names::PROJECT, &projects, ""),
                    p(names::APIKEY),
                    names::OPERATOR
                ),
                "+json.get +json.set +json.mset +exists",
            ),
            (
                format!(
                    "{} ~{}{d} ~{}{d}",
                    patterns(names::KEYSET, &projects, ""),
                    names::OPERATORS,
                    names::PROJECTS
                ),
                INDEX_COMMANDS,
            ),
            (p(names::META).replace('~', "%R~"), "+hmget"),
            (p(names::CREDITS), "+get +set +incrby"),
            (format!("%W~{admin}"), "+xadd"),
            (p(names::KEY_EVENT), "+set"),
            (
                format!("~{}{d}:*", names::WEBHOOK),
                "+json.get +json.set +json.mset +del",
            ),
            (
                format!("~{}{d} ~{}{d}", names::WEBHOOKS, names::WEBHOOK_RETRIES),
                "+zadd +zrange +zrangebyscore +zrem",
            ),
            (
                format!("~{}{d} ~{}{d}", names::WEBHOOK_EVENTS, names::WEBHOOK_QUEUE),
                "+xadd +xlen +xgroup|create +xreadgroup +xautoclaim +xack +xdel",
            ),
            (
                format!("~{}{d}:*", names::WEBHOOK_DELIVERIES),
                "+xadd +xrevrange +expire",
            ),
        ],
        Role::Monitor => {
            let mut selectors = vec![(
                format!("%R~{keylookup} %R~{keylookup}:* %R~{admin}"),
                "+xrange +xrevrange +xlen +xinfo|stream",
            )];
            // The projects' usage records (`GET /v1/admin/usage`), read only.
            if !projects.is_empty() {
                selectors.push((p(names::USAGE).replace('~', "%R~"), "+hgetall"));
            }
            selectors
        }
    };
    for (keys, commands) in selectors {
        let _ = write!(line, " ({keys} {commands})");
    }
    Ok(line)
}

/// `keyward acl ...`
#[derive(clap::Args, Debug)]
pub struct AclArgs {
    /// The Redis user name, e.g. `gateway-a`.
    pub user: String,
    /// The projects this user may touch, comma-separated. A monitor reads
    /// the deployment's audit streams whole, and the usage records of the
    /// projects given here (none: no usage record).
    #[arg(long, value_delimiter = ',', required_if_eq_any([("role", "validator"), ("role", "manager")]))]
    pub projects: Vec<String>,
    #[arg(long, value_enum)]
    pub role: Role,
    /// The deployment's `KEYWARD_CLIENT_NAME`: a manager gets the operators
    /// and indexes named after it, and with the `deployment` audit layout
    /// every role gets the audit streams named after it.
    #[arg(long, default_value = crate::config::DEFAULT_CLIENT_NAME)]
    pub deployment: String,
    /// The deployment's `KEYWARD_AUDIT_LAYOUT`: `shared` (`audit:keylookup`,
    /// `audit:admin`, every deployment's; a monitor there reads them all)
    /// or `deployment` (`audit:<deployment>:*`, its own alone).
    #[arg(long, env = "KEYWARD_AUDIT_LAYOUT", value_enum, default_value_t = AuditLayout::Shared)]
    pub audit_layout: AuditLayout,
    /// Read the password from this file; repeat it during a rotation so
    /// both passwords work. Without it, a password is generated and
    /// printed once on stderr.
    #[arg(long = "password-file")]
    pub password_files: Vec<PathBuf>,
}

/// `keyward acl`: prints the rule on stdout; exit 2 for a password file
/// that cannot be read or a rule that cannot be made.
pub fn command(args: &AclArgs) -> ExitCode {
    let mut passwords = Vec::new();
    for path in &args.password_files {
        match crate::config::secret_file(path) {
            Ok(p) => passwords.push(p.expose_secret().to_owned()),
            Err(problem) => {
                eprintln!("keyward acl: {problem}");
                return ExitCode::from(2);
            }
        }
    }
    if passwords.is_empty() {
        let generated = generate_password();
        eprintln!("password for {} (shown once): {generated}", args.user);
        passwords.push(generated);
    }
    let projects: Vec<&str> = args.projects.iter().map(String::as_str).collect();
    let deployment = Deployment {
        name: &args.deployment,
        audit: args.audit_layout,
    };
    match rule(&args.user, args.role, &projects, &passwords, deployment) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyward acl: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw() -> Vec<String> {
        vec!["s3cret".into()]
    }

    /// The shipped ACL template.
    const TEMPLATE: &str = include_str!("../redis/users.acl");

    fn shipped(user: &str) -> &'static str {
        let start = format!("user {user} ");
        TEMPLATE
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("no `{user}` in redis/users.acl"))
    }

    /// A rule from `resetkeys` on: what its user may do, whatever its
    /// password and whether it is on.
    fn grants(line: &str) -> &str {
        &line[line.find(" resetkeys").expect("a rule resets keys")..]
    }

    #[test]
    fn the_shipped_template_is_what_keyward_acl_prints() {
        let default = crate::config::DEFAULT_CLIENT_NAME;
        for (user, role, projects) in [
            ("gateway-a", Role::Validator, &["alpha"][..]),
            ("admin-a", Role::Manager, &["alpha"]),
            ("monitor-a", Role::Monitor, &["alpha"]),
        ] {
            let line = rule(user, role, projects, &pw(), default).unwrap();
            assert_eq!(grants(shipped(user)), grants(&line), "{user}");
        }
        // The single-tenant users: the same rule, over every project and
        // every deployment.
        for (user, role) in [("validator", Role::Validator), ("manager", Role::Manager)] {
            let one = rule(user, role, &["alpha"], &pw(), default).unwrap();
            let every = grants(&one)
                .replace("alpha:*", "*")
                .replace("alpha", "*")
                .replace(&format!("{default}:*"), "*")
                .replace(default, "*");
            assert_eq!(grants(shipped(user)), every, "{user}");
        }
    }

    #[test]
    fn a_validator_rule_names_only_its_projects_and_hashes_the_password() {
        let line = rule("gw-a", Role::Validator, &["alpha", "beta"], &pw(), "d").unwrap();
        assert!(line.starts_with("user gw-a on resetpass #"));
        assert!(line.contains(&password_hash("s3cret")));
        assert!(!line.contains("s3cret"));
        assert!(line.contains("~apikey:alpha:* ~apikey:beta:* +json.get"));
        assert!(
            !line.contains("apikey:*"),
            "no wildcard over all projects: {line}"
        );
        assert!(
            !line.contains("project:"),
            "validators never read projects: {line}"
        );
        assert!(!line.contains("json.set") && !line.contains("+del") && !line.contains("xrange"));
        assert!(
            line.contains("(%W~audit:keylookup %W~audit:keylookup:* %W~webhookevents:d +xadd)"),
            "append-only, to the one stream or its shards: {line}"
        );
        assert!(
            line.contains("+cluster|slots"),
            "works on a cluster: {line}"
        );
    }

    #[test]
    fn a_manager_rule_covers_its_projects_admin_keys_only() {
        let line = rule("adm-a", Role::Manager, &["alpha"], &pw(), "d").unwrap();
        assert!(line.contains(
            "(~project:alpha ~apikey:alpha:* ~operator:d:* +json.get +json.set +json.mset +exists)"
        ));
        assert!(line.contains(
            "(~apiprojectkeys:alpha ~operators:d ~projects:d +zadd +zrange +type +sadd +smembers)"
        ));
        assert!(line.contains("(%R~apimeta:alpha:* +hmget)"));
        assert!(line.contains("(%W~audit:admin +xadd)"));
        assert!(!line.contains("audit:keylookup"));
        assert!(line.contains("(~webhook:d:* +json.get +json.set +json.mset +del)"));
        assert!(line.contains("(~apievent:alpha:* +set)"));
        assert!(
            !line.contains("apinet:"),
            "only validations see networks: {line}"
        );
    }

    #[test]
    fn a_monitor_reads_its_deployments_audit_streams_and_nothing_else() {
        let own = Deployment {
            name: "gw-a",
            audit: AuditLayout::Deployment,
        };
        let line = rule("mon-a", Role::Monitor, &[], &pw(), own).unwrap();
        assert!(line.ends_with(
            " (%R~audit:gw-a:keylookup %R~audit:gw-a:keylookup:* %R~audit:gw-a:admin \
             +xrange +xrevrange +xlen +xinfo|stream)"
        ));
        assert!(!line.contains("apikey") && !line.contains("xadd"), "{line}");
        let validator = rule("gw-a", Role::Validator, &["alpha"], &pw(), own).unwrap();
        assert!(validator.contains("(%W~audit:gw-a:keylookup %W~audit:gw-a:keylookup:* "));
        let manager = rule("adm-a", Role::Manager, &["alpha"], &pw(), own).unwrap();
        assert!(manager.contains("(%W~audit:gw-a:admin +xadd)"));
        let reserved = Deployment {
            name: "keylookup",
            audit: AuditLayout::Deployment,
        };
        assert!(matches!(
            rule("m", Role::Monitor, &[], &pw(), reserved),
            Err(AclError::Deployment)
        ));
    }

    #[test]
    fn two_passwords_are_both_accepted_during_a_rotation() {
        let line = rule(
            "gw",
            Role::Validator,
            &["a"],
            &["old".into(), "new".into()],
            "d",
        )
        .unwrap();
        assert!(line.contains(&format!(
            "#{} #{}",
            password_hash("old"),
            password_hash("new")
        )));
    }

    #[test]
    fn bad_input_is_rejected() {
        assert!(matches!(
            rule("bad user", Role::Validator, &["a"], &pw(), "d"),
            Err(AclError::User)
        ));
        assert!(matches!(
            rule("u", Role::Validator, &[], &pw(), "d"),
            Err(AclError::NoProjects)
        ));
        assert!(matches!(
            rule("u", Role::Validator, &["a*"], &pw(), "d"),
            Err(AclError::Project(..))
        ));
        assert!(matches!(
            rule("u", Role::Validator, &["a"], &["has space".into()], "d"),
            Err(AclError::Password)
        ));
        assert!(matches!(
            rule("u", Role::Validator, &["a"], &[], "d"),
            Err(AclError::Password)
        ));
    }
}
