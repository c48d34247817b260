//! Operators, the projects index and the admin audit trail, with the
//! `manager` user (the trail is read with the monitor user, like
//! `activity`).
//!
//! Operator documents and both indexes are named after the deployment
//! (`KEYWARD_CLIENT_NAME`, see `names`), so `keyward acl` can give each
//! deployment's manager its own and no other.

use std::collections::HashMap;

use fred::prelude::Pool;
use fred::prelude::{RedisJsonInterface, SortedSetsInterface, StreamsInterface};

use super::entry::{field as name, Entry};
use super::read_docs;
use super::{data_error, index_page, insert_indexed, is_noperm, names, now, parse_problem};
use super::{read_owned, report_unreadable};
use super::{unavailable, zrange_after, AdminAudit, OperatorDoc, ProjectDoc, Store};
use crate::audit::{clip, Who, FIELD_MAX};
use crate::error::{Error, Result};
use crate::key::ProjectId;

const NOT_CONFIGURED: &str = "the admin audit needs a monitor Redis user: set \
     KEYWARD_MONITOR_REDIS_URL to the user `keyward acl --role monitor` prints \
     (it may read this deployment's audit streams)";
const NOT_PERMITTED: &str = "the monitor Redis user may not read this deployment's \
     admin trail: give it the rule `keyward acl --role monitor` prints";

/// One `audit:admin` entry as read: its stream id and its fields.
pub type AdminEntry = (String, HashMap<String, String>);

impl Store {
    /// This deployment's name (`KEYWARD_CLIENT_NAME`).
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Stores a new operator and adds it to the deployment's index; `false`
    /// if the id is taken (never overwrites).
    pub async fn insert_operator(&self, doc: &OperatorDoc) -> Result<bool> {
        let key = names::operator(self.client_name(), &doc.operator_id);
        let index = names::operators(self.client_name());
        insert_indexed(self.admin()?, &key, doc, &index, &doc.operator_id).await
    }

    /// The operator's document; `None` if there is none (or this
    /// deployment may not read it). One that cannot be read is
    /// `Error::Unreadable` (logged).
    pub async fn get_operator(&self, operator_id: &str) -> Result<Option<OperatorDoc>> {
        let key = names::operator(self.client_name(), operator_id);
        read_owned(self.admin()?, &key, operator_doc).await
    }

    /// Up to `limit` operators after `cursor`, in id order, and the cursor
    /// of the next page. One whose document cannot be read is logged and
    /// left out.
    pub async fn list_operators(
        &self,
        cursor: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<OperatorDoc>, Option<String>)> {
        let index = names::operators(self.client_name());
        let key_of = |id: &str| names::operator(self.client_name(), id);
        index_page(self.admin()?, &index, key_of, operator_doc, cursor, limit).await
    }

    /// Replaces the operator's stored secret hash (an Argon2id one, by its
    /// digest: see `access`).
    pub async fn set_operator_hash(&self, operator_id: &str, secret_hash: &str) -> Result<()> {
        let key = names::operator(self.client_name(), operator_id);
        let value =
            serde_json::to_string(secret_hash).map_err(|e| Error::Internal(e.to_string()))?;
        self.admin()?
            .json_mset::<(), _, _, _>(vec![(key.as_str(), "$.secret_hash", value)])
            .await
            .map_err(|e| data_error(&key, e))
    }

    /// Marks the operator revoked; `false` if there is no such operator.
    pub async fn revoke_operator(&self, operator_id: &str) -> Result<bool> {
        let admin = self.admin()?;
        let Some(_) = self.get_operator(operator_id).await? else {
            return Ok(false);
        };
        let key = names::operator(self.client_name(), operator_id);
        let values = vec![
            (key.as_str(), "$.revoked", "true".to_owned()),
            (key.as_str(), "$.revoked_at", now().to_string()),
        ];
        admin
            .json_mset::<(), _, _, _>(values)
            .await
            .map_err(|e| data_error(&key, e))?;
        Ok(true)
    }

    /// Adds `project` to the deployment's projects index (idempotent).
    pub(super) async fn index_project(&self, admin: &Pool, project: &ProjectId) -> Result<()> {
        admin
            .zadd::<(), _, _>(
                names::projects(self.client_name()),
                None,
                None,
                false,
                false,
                (0.0, project.as_str()),
            )
            .await
            .map_err(unavailable)
    }

    /// Up to `limit` ids of the deployment's projects index after `cursor`,
    /// in id order, and whether more may follow.
    pub async fn project_ids(
        &self,
        cursor: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<String>, bool)> {
        let index = names::projects(self.client_name());
        let ids = zrange_after(self.admin()?, &index, cursor, limit)
            .await
            .map_err(|e| data_error(&index, e))?;
        let more = ids.len() as u64 >= limit;
        Ok((ids, more))
    }

    /// The documents of those of `ids` that exist and this deployment may
    /// read, in order; unreadable ones are logged and left out.
    pub async fn get_projects(&self, ids: &[String]) -> Result<Vec<ProjectDoc>> {
        let keys: Vec<String> = ids
            .iter()
            .filter_map(|id| ProjectId::parse(id).ok())
            .map(|p| names::project(&p))
            .collect();
        let docs = read_docs(self.admin()?, &keys).await?;
        Ok(keys
            .iter()
            .zip(docs)
            .filter_map(|(key, raw)| {
                let raw = raw?;
                serde_json::from_str(&raw)
                    .map_err(|e| report_unreadable(key, &parse_problem("a project document", &e)))
                    .ok()
            })
            .collect())
    }

    /// Appends one entry to `audit:admin` (each text field cut to
    /// `audit::FIELD_MAX` bytes), unless it is a refused call over this
    /// second's budget: then it is counted for the second's summary entry
    /// (see `audit`), written by the flusher. With `event`
    /// (a key change's webhook event), the event goes in the same round
    /// trip; one Redis does not take is logged and counted, and the call's
    /// answer stands.
    pub async fn write_admin_audit(
        &self,
        entry: AdminAudit<'_>,
        event: Option<&crate::event::Event>,
    ) -> Result<()> {
        let admitted = match (entry.actor, entry.claimed_operator) {
            (crate::audit::UNKNOWN, "") => self.admin_budget.admit(entry.outcome),
            (actor, claimed_operator) => self.admin_budget.admit_claimed(
                entry.outcome,
                &Who {
                    actor: clip(actor, FIELD_MAX).to_owned(),
                    claimed_operator: clip(claimed_operator, FIELD_MAX).to_owned(),
                },
            ),
        };
        if !admitted {
            return Ok(());
        }
        let (written, emitted) = super::validation::together(async {
            futures::join!(
                Box::pin(self.xadd_admin_audit(entry)),
                futures::future::OptionFuture::from(
                    event.map(|e| Box::pin(self.emit_as_manager(e)))
                ),
            )
        })
        .await;
        if let (Some(Err(e)), Some(event)) = (emitted, event) {
            crate::event::lost(event.kind, &e);
        }
        written
    }

    async fn xadd_admin_audit(&self, entry: AdminAudit<'_>) -> Result<()> {
        let field = |text: &str| clip(text, FIELD_MAX).to_owned();
        let fields = Entry::now()
            .with(name::ACTOR, field(entry.actor))
            .with(name::ACTOR_NAME, field(entry.actor_name))
            .with(name::CLAIMED_OPERATOR, field(entry.claimed_operator))
            .with(name::ACTION, field(entry.action))
            .with(name::PROJECT_ID, field(entry.project_id))
            .with(name::KEY_ID, field(entry.key_id))
            .with(name::OPERATOR_ID, field(entry.operator_id))
            .with(name::OUTCOME, field(entry.outcome))
            .with(name::REQUEST_ID, field(entry.request_id))
            .with(name::CALLER_REQUEST_ID, field(entry.caller_request_id))
            .with(name::CLIENT, self.client_name.as_str())
            .fields();
        self.admin()?
            .xadd::<(), _, _, _, _>(self.streams.admin(), false, self.audit_cap(), "*", fields)
            .await
            .map_err(unavailable)
    }

    /// Writes the due summaries of refused admin calls over the budget,
    /// one entry per second and outcome (and per caller, or per operator a
    /// refused token named, in `actor` and `claimed_operator`; `unknown`
    /// and `""` for calls that name no one): `summary=1`, `second`,
    /// `count`. Those that cannot be written are kept for the next attempt.
    pub(super) async fn flush_admin_summaries(&self, all: bool) -> Result<()> {
        let due = self.admin_budget.take_due(all);
        let no_one = Who {
            actor: crate::audit::UNKNOWN.to_owned(),
            claimed_operator: String::new(),
        };
        for (i, summary) in due.iter().enumerate() {
            let written = self
                .xadd_admin_summary(summary.second, summary.reason, &no_one, summary.count)
                .await;
            if let Err(e) = written {
                self.admin_budget.put_back(&due[i..]);
                return Err(e);
            }
        }
        let claimed = self.admin_budget.take_claimed_due(all);
        for (i, summary) in claimed.iter().enumerate() {
            let written = self
                .xadd_admin_summary(summary.second, summary.reason, &summary.who, summary.count)
                .await;
            if let Err(e) = written {
                self.admin_budget.put_back_claimed(&claimed[i..]);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn xadd_admin_summary(
        &self,
        second: u64,
        outcome: &str,
        who: &Who,
        count: u64,
    ) -> Result<()> {
        let fields = Entry::now()
            .with(name::ACTOR, who.actor.as_str())
            .with(name::CLAIMED_OPERATOR, who.claimed_operator.as_str())
            .with(name::ACTION, "")
            .with(name::PROJECT_ID, "")
            .with(name::KEY_ID, "")
            .with(name::OUTCOME, outcome)
            .with(name::REQUEST_ID, "")
            .with(name::CLIENT, self.client_name.as_str())
            .with(name::SUMMARY, "1")
            .with(name::SECOND, second.to_string())
            .with(name::COUNT, count.to_string())
            .fields();
        self.admin()?
            .xadd(self.streams.admin(), false, self.audit_cap(), "*", fields)
            .await
            .map_err(unavailable)
    }

    /// Up to `count` entries of `audit:admin` older than the entry `before`
    /// (from the newest when `None`), newest first, read with the monitor
    /// user.
    pub async fn admin_audit_before(
        &self,
        before: Option<&str>,
        count: u64,
    ) -> Result<Vec<AdminEntry>> {
        let monitor = self
            .monitor
            .as_ref()
            .ok_or(Error::ActivityUnavailable(NOT_CONFIGURED))?;
        let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let page: Vec<AdminEntry> = monitor
            .xrevrange(self.streams.admin(), end.as_str(), "-", Some(count))
            .await
            .map_err(|e| match is_noperm(&e) {
                true => Error::ActivityUnavailable(NOT_PERMITTED),
                false => unavailable(e),
            })?;
        Ok(page)
    }
}

/// Parses an operator document; logged and counted when it cannot be read.
fn operator_doc(redis_key: &str, raw: &str) -> Option<OperatorDoc> {
    serde_json::from_str(raw)
        .map_err(|e| report_unreadable(redis_key, &parse_problem("an operator document", &e)))
        .ok()
}
