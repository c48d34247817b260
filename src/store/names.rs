//! Every Redis key name keyward uses. These names are a contract with
//! operators and other tools (the README's data table), and with the
//! original service whose layout keyward shares.
//!
//! Redis Cluster: no name has a hash tag except the sharded audit streams
//! and migrate's working keys in a cluster, so each key lands on the slot of
//! its whole name. No command keyward sends names two keys, except
//! `keyward migrate`'s `RENAME`/`RENAMENX`/`SMOVE` between a project's index
//! and its working keys, which in a cluster are tagged with the index's name
//! to share its slot.

use crate::config::AuditLayout;
use crate::key::ProjectId;

/// Each key family's prefix, once: the functions below, `keyward acl`'s
/// patterns (`acl.rs`) and `keyward migrate`'s scan are made from these.
pub const PROJECT: &str = "project:";
pub const APIKEY: &str = "apikey:";
pub const KEYSET: &str = "apiprojectkeys:";
pub const META: &str = "apimeta:";
pub const OPERATOR: &str = "operator:";
pub const OPERATORS: &str = "operators:";
pub const PROJECTS: &str = "projects:";
pub const VERIFIED: &str = "apiverify:";
/// The use counters: the minute's, the wrong secrets', each plan window's.
pub const COUNTER: &str = "ratelimit:key:";
pub const CREDITS: &str = "apicredits:";
pub const WEBHOOK: &str = "webhook:";
pub const WEBHOOKS: &str = "webhooks:";
pub const WEBHOOK_EVENTS: &str = "webhookevents:";
pub const WEBHOOK_QUEUE: &str = "webhookqueue:";
pub const WEBHOOK_RETRIES: &str = "webhookretry:";
pub const WEBHOOK_DELIVERIES: &str = "webhookdeliveries:";
pub const KEY_EVENT: &str = "apievent:";
pub const KEY_NETWORK: &str = "apinet:";
/// The usage record (see [`usage`]).
pub const USAGE: &str = "apiusage:";
/// `keyward migrate`'s working keys (see [`migrate_backup`]).
pub const MIGRATE: &str = "migrate:";

pub const AUDIT_KEYLOOKUP: &str = "audit:keylookup";
pub const AUDIT_ADMIN: &str = "audit:admin";

/// A deployment's audit streams (`KEYWARD_AUDIT_LAYOUT`): the validation
/// entries' (`keylookup`, maybe sharded) and the admin trail's (`admin`).
/// `shared`: `audit:keylookup` and `audit:admin`, as the original service
/// wrote them, for every deployment on the Redis. `deployment`:
/// `audit:<deployment>:keylookup` and `audit:<deployment>:admin`, so an ACL
/// pattern `audit:<deployment>:*` grants one deployment's streams and no
/// other's (deployment names have no `:` and are never `keylookup` or
/// `admin`: see `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStreams {
    keylookup: String,
    admin: String,
    /// `KEYWARD_AUDIT_SHARDS`.
    shards: usize,
}

impl AuditStreams {
    pub fn new(layout: AuditLayout, deployment: &str, shards: usize) -> Self {
        let (keylookup, admin) = match layout {
            AuditLayout::Shared => (AUDIT_KEYLOOKUP.to_owned(), AUDIT_ADMIN.to_owned()),
            AuditLayout::Deployment => (
                format!("audit:{deployment}:keylookup"),
                format!("audit:{deployment}:admin"),
            ),
        };
        Self {
            keylookup,
            admin,
            shards: shards.max(1),
        }
    }

    /// The validation audit stream of `project`'s `key_id`: the keylookup
    /// stream for one shard, else `<keylookup>:{i}`, `i` a stable hash of
    /// the key (Redis Cluster's own CRC16 key slot, the same in every
    /// keyward instance and version), so one key's entries stay in one
    /// stream, in order. Entries naming no key (malformed keys, summaries)
    /// hash the empty key like any other.
    pub fn keylookup(&self, project: &str, key_id: &str) -> String {
        if self.shards <= 1 {
            return self.keylookup.clone();
        }
        let slot = fred::util::redis_keyslot(format!("{project}:{key_id}").as_bytes());
        self.shard(usize::from(slot) % self.shards)
    }

    /// The `i`th sharded validation audit stream. The tag `{i}` puts the
    /// streams on different hash slots, so a cluster spreads them over its
    /// masters.
    fn shard(&self, i: usize) -> String {
        format!("{}:{{{i}}}", self.keylookup)
    }

    /// Every validation audit stream.
    pub fn keylookup_all(&self) -> Vec<String> {
        if self.shards <= 1 {
            return vec![self.keylookup.clone()];
        }
        (0..self.shards).map(|i| self.shard(i)).collect()
    }

    /// The admin trail.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// The number of validation streams.
    pub fn shards(&self) -> usize {
        self.shards
    }
}

pub fn project(project: &ProjectId) -> String {
    format!("{PROJECT}{project}")
}
pub fn apikey(project: &str, key_id: &str) -> String {
    format!("{APIKEY}{project}:{key_id}")
}
pub fn keyset(project: &ProjectId) -> String {
    format!("{KEYSET}{project}")
}
pub fn meta(project: &str, key_id: &str) -> String {
    format!("{META}{project}:{key_id}")
}
/// A span of the usage record: `apiusage:<p>:<k>:<span>` for a key,
/// `apiusage:<p>:<span>` for its project (`key_id` `None`), `span` one of
/// `hours:<yyyymmdd><00|12>`, `days:<yyyymm><01|11|21>`, `months:<yyyy>`
/// (`store::record`). Project and key ids hold no `:`, so a key's names
/// (four segments after the prefix) never meet a project's (three), and
/// `apiusage:<p>:*` covers both and no other project's.
pub fn usage(project: &str, key_id: Option<&str>, span: &str) -> String {
    match key_id {
        Some(key_id) => format!("{USAGE}{project}:{key_id}:{span}"),
        None => format!("{USAGE}{project}:{span}"),
    }
}
/// An operator of the deployment named `deployment` (`KEYWARD_CLIENT_NAME`):
/// operators are a deployment's own, so one deployment's tokens mean nothing
/// to another's keyward and its Redis user cannot read them.
pub fn operator(deployment: &str, operator_id: &str) -> String {
    format!("{OPERATOR}{deployment}:{operator_id}")
}
/// The deployment's operator ids, a sorted set (all score 0).
pub fn operators(deployment: &str) -> String {
    format!("{OPERATORS}{deployment}")
}
/// The ids of the projects created through the deployment's admin API (or
/// read by it since), a sorted set (all score 0): what `GET
/// /v1/admin/projects` pages through.
pub fn projects(deployment: &str) -> String {
    format!("{PROJECTS}{deployment}")
}
/// Digests of secrets verified before, by hash fingerprint (see `hash`).
pub fn verified(project: &str, key_id: &str) -> String {
    format!("{VERIFIED}{project}:{key_id}")
}
pub fn used(project: &str, key_id: &str, minute: u64) -> String {
    format!("{COUNTER}{project}:{key_id}:{minute}")
}
pub fn bad(project: &str, key_id: &str, minute: u64) -> String {
    format!("{COUNTER}{project}:{key_id}:bad:{minute}")
}
/// The use counter of one of a key's plan windows (`plan::Window::name`:
/// `s<n>`, `h<n>`, `d<n>`, `mo<yyyymm>`; the minute's is [`used`]).
pub fn window(project: &str, key_id: &str, window: &str) -> String {
    format!("{COUNTER}{project}:{key_id}:{window}")
}
/// A key's credit balance: for credits that refill, one per refill
/// interval (`period` the interval's window name), else `period` `once`.
pub fn credits(project: &str, key_id: &str, period: &str) -> String {
    format!("{CREDITS}{project}:{key_id}:{period}")
}

/// A webhook endpoint of the deployment (its document holds the secret).
pub fn webhook(deployment: &str, webhook_id: &str) -> String {
    format!("{WEBHOOK}{deployment}:{webhook_id}")
}
/// The deployment's webhook ids, a sorted set (all score 0).
pub fn webhooks(deployment: &str) -> String {
    format!("{WEBHOOKS}{deployment}")
}
/// Events not yet fanned out to endpoints, a stream with the consumer
/// group [`WEBHOOK_GROUP`].
pub fn webhook_events(deployment: &str) -> String {
    format!("{WEBHOOK_EVENTS}{deployment}")
}
/// Messages (an event for one endpoint) due for an attempt, a stream with
/// the consumer group [`WEBHOOK_GROUP`].
pub fn webhook_queue(deployment: &str) -> String {
    format!("{WEBHOOK_QUEUE}{deployment}")
}
/// Messages waiting for a retry, a sorted set scored by when (Unix ms).
pub fn webhook_retries(deployment: &str) -> String {
    format!("{WEBHOOK_RETRIES}{deployment}")
}
/// An endpoint's recent delivery attempts, a capped stream.
pub fn webhook_deliveries(deployment: &str, webhook_id: &str) -> String {
    format!("{WEBHOOK_DELIVERIES}{deployment}:{webhook_id}")
}
/// The consumer group of the events and the queue.
pub const WEBHOOK_GROUP: &str = "keyward";
/// That an event about a key was sent for this window (`SET NX EX`, its
/// lifetime the window's): `kind` such as `rate_limited:minute`.
pub fn key_event(project: &str, key_id: &str, kind: &str) -> String {
    format!("{KEY_EVENT}{project}:{key_id}:{kind}")
}
/// That a key was used from `network` (a /24 or /64) lately
/// (`KEYWARD_NEW_NETWORK_DAYS`).
pub fn key_network(project: &str, key_id: &str, network: &str) -> String {
    format!("{KEY_NETWORK}{project}:{key_id}:{network}")
}

/// `keyward migrate`'s working keys while it converts a project's plain-set
/// index: the old set, moved aside (every id is in the index or here until
/// the conversion ends), and the sorted set being built. Project ids have no
/// `:`, so these can never be a project's own keys.
///
/// In a cluster they carry the index's name as a hash tag
/// (`migrate:{apiprojectkeys:<p>}:set`): the index has no tag, so its slot
/// is that of its whole name, and `RENAME` between the index and these keys
/// stays within one slot, as Redis Cluster requires.
pub fn migrate_backup(project: &ProjectId, cluster: bool) -> String {
    match cluster {
        false => format!("{MIGRATE}{KEYSET}{project}:set"),
        true => format!("{MIGRATE}{{{KEYSET}{project}}}:set"),
    }
}
pub fn migrate_building(project: &ProjectId, cluster: bool) -> String {
    match cluster {
        false => format!("{MIGRATE}{KEYSET}{project}:zset"),
        true => format!("{MIGRATE}{{{KEYSET}{project}}}:zset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(shards: usize) -> AuditStreams {
        AuditStreams::new(AuditLayout::Shared, "gw-a", shards)
    }

    #[test]
    fn one_audit_shard_is_the_classic_stream() {
        assert_eq!(shared(1).keylookup("p", "k_abcdefg"), "audit:keylookup");
        assert_eq!(shared(1).keylookup_all(), ["audit:keylookup"]);
        assert_eq!(shared(1).admin(), "audit:admin");
    }

    #[test]
    fn audit_shards_are_stable_per_key_and_spread_over_keys() {
        let all = shared(4).keylookup_all();
        assert_eq!(all[2], "audit:keylookup:{2}");
        let shard = shared(4).keylookup("alpha", "k_abcdefg");
        assert_eq!(shard, shared(4).keylookup("alpha", "k_abcdefg"));
        assert!(all.contains(&shard));
        let used: std::collections::HashSet<String> = (0..100)
            .map(|i| shared(4).keylookup("alpha", &format!("k_{i:07}")))
            .collect();
        assert_eq!(used.len(), 4, "100 keys use every shard");
    }

    #[test]
    fn a_deployments_own_streams_are_under_its_name_alone() {
        let own = AuditStreams::new(AuditLayout::Deployment, "gw-a", 2);
        assert_eq!(own.admin(), "audit:gw-a:admin");
        assert_eq!(
            own.keylookup_all(),
            ["audit:gw-a:keylookup:{0}", "audit:gw-a:keylookup:{1}"]
        );
        let one = AuditStreams::new(AuditLayout::Deployment, "gw-a", 1);
        assert_eq!(one.keylookup("p", "k_abcdefg"), "audit:gw-a:keylookup");
    }

    #[test]
    fn migrate_working_keys_share_the_index_slot_in_a_cluster() {
        let p = ProjectId::parse("alpha").unwrap();
        assert_eq!(
            migrate_backup(&p, false),
            "migrate:apiprojectkeys:alpha:set"
        );
        // The tag is exactly the index's name.
        let tagged = migrate_building(&p, true);
        let tag = &tagged[tagged.find('{').unwrap() + 1..tagged.find('}').unwrap()];
        assert_eq!(tag, keyset(&p));
    }
}
