//! The validation path's commands, with the `validator` user.

use fred::prelude::{Error as FredError, HashesInterface, KeysInterface, StreamsInterface, Value};

use super::{
    is_wrongtype, key_doc, names, now, queue_doc, report_unreadable, send, send_all, unavailable,
    Store,
};
use super::{Audit, Counter, Lookup};
use crate::audit::Summary;
use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};

impl Store {
    /// Round trip 1 of a cold validation: the key's document and this
    /// minute's counters, pipelined.
    pub async fn lookup(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<Lookup> {
        let pipe = self.pool.next().pipeline();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        queue_doc(&pipe, &doc_key).await.map_err(unavailable)?;
        let _: () = pipe
            .get(names::used(project, key_id, minute))
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .get(names::bad(project, key_id, minute))
            .await
            .map_err(unavailable)?;
        let [doc, used, bad]: [_; 3] = send(pipe, 3)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("lookup pipeline result count".into()))?;
        let count = |r: Result<Value, FredError>| -> Result<u64> {
            match r {
                Ok(v) => Ok(v.convert::<Option<u64>>().ok().flatten().unwrap_or(0)),
                Err(e) => Err(unavailable(e)),
            }
        };
        Ok(match read_doc(&doc_key, doc)? {
            Lookup::Found { doc, .. } => Lookup::Found {
                doc,
                used: count(used)?,
                bad: count(bad)?,
            },
            other => other,
        })
    }

    /// Round trip 1 of a warm validation: the key's document, and the use
    /// counted against this minute's window (`INCR`, `EXPIRE NX`), pipelined.
    /// Returns the lookup and the count including this use.
    pub async fn lookup_counting(
        &self,
        project: &ProjectId,
        key_id: &KeyId,
        minute: u64,
    ) -> Result<(Lookup, u64)> {
        let pipe = self.pool.next().pipeline();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        queue_doc(&pipe, &doc_key).await.map_err(unavailable)?;
        Self::queue_count(&pipe, &names::used(project, key_id, minute)).await?;
        let [doc, used, expire]: [_; 3] = send(pipe, 3)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("lookup pipeline result count".into()))?;
        let lookup = read_doc(&doc_key, doc)?;
        if matches!(lookup, Lookup::Found { .. }) {
            expire.map_err(unavailable)?;
            let used = used
                .map_err(unavailable)?
                .convert()
                .map_err(|e| Error::Internal(format!("INCR answer: {e}")))?;
            return Ok((lookup, used));
        }
        // No document to read (or not ours: the counter was refused too).
        Ok((lookup, 0))
    }

    /// Counts a right-secret validation against this minute's window and
    /// returns the count including it. The INCR's own result decides the
    /// 429, so the decision is exact under any concurrency.
    pub async fn count_use(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<u64> {
        let pipe = self.pool.next().pipeline();
        Self::queue_count(&pipe, &names::used(project, key_id, minute)).await?;
        let [used, expire]: [_; 2] = send(pipe, 2)
            .await?
            .try_into()
            .map_err(|_| Error::Internal("count pipeline result count".into()))?;
        expire.map_err(unavailable)?;
        used.map_err(unavailable)?
            .convert()
            .map_err(|e| Error::Internal(format!("INCR answer: {e}")))
    }

    /// After a validation within its limit: bumps `apimeta` and writes the
    /// audit entry, pipelined.
    pub async fn record_success(&self, audit: Audit<'_>) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        let meta = names::meta(audit.project_id, audit.key_id);
        let _: () = pipe
            .hincrby(&meta, "usage_count", 1)
            .await
            .map_err(unavailable)?;
        let _: () = pipe
            .hset(&meta, ("last_used", now().to_string()))
            .await
            .map_err(unavailable)?;
        self.queue_audit(&pipe, audit).await?;
        send_all(pipe, 3).await
    }

    async fn queue_audit(
        &self,
        pipe: &fred::clients::Pipeline<fred::clients::Client>,
        audit: Audit<'_>,
    ) -> Result<()> {
        let mut fields = vec![
            ("ts", now().to_string()),
            ("project_id", audit.project_id.to_owned()),
            ("key_id", audit.key_id.to_owned()),
            ("result", audit.result.to_owned()),
            ("reason", audit.reason.to_owned()),
            ("client", self.client_name.clone()),
        ];
        if let Some(origin) = audit.origin {
            fields.push(("method", origin.method.to_owned()));
            fields.push(("path", origin.path.to_owned()));
        }
        let stream = names::audit_keylookup(audit.project_id, audit.key_id, self.audit_shards);
        pipe.xadd::<(), _, _, _, _>(stream, false, self.keylookup_cap(), "*", fields)
            .await
            .map_err(unavailable)
    }

    /// The last round trip of every other outcome: the audit entry (if
    /// any), plus the adjustment of a per-minute counter.
    pub async fn record_denial(
        &self,
        audit: Option<Audit<'_>>,
        counter: Option<Counter<'_>>,
    ) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        let mut commands = 0;
        match counter {
            Some(Counter::BadSecret(project, key_id, minute)) => {
                Self::queue_count(&pipe, &names::bad(project, key_id, minute)).await?;
                commands += 2;
            }
            Some(Counter::UndoUse(project, key_id, minute)) => {
                let _: () = pipe
                    .decr(names::used(project, key_id, minute))
                    .await
                    .map_err(unavailable)?;
                commands += 1;
            }
            None => {}
        }
        if let Some(audit) = audit {
            self.queue_audit(&pipe, audit).await?;
            commands += 1;
        }
        send_all(pipe, commands).await
    }

    /// Logs and counts a key whose stored hash is not a PHC string, found
    /// while verifying a secret (the document itself parsed).
    pub fn report_corrupt_hash(&self, project: &ProjectId, key_id: &KeyId) {
        let redis_key = names::apikey(project.as_str(), key_id.as_str());
        report_unreadable(&redis_key, "secret_hash is not an Argon2 PHC string");
    }

    /// Writes the anonymous-denial summaries that are due (see `audit`):
    /// those of seconds that are over, or all of them when `all`. Summaries
    /// that cannot be written are kept for the next attempt.
    pub async fn flush_summaries(&self, all: bool) -> Result<()> {
        let due = self.audit_budget.take_due(all);
        if due.is_empty() {
            return Ok(());
        }
        let pipe = self.pool.next().pipeline();
        for summary in &due {
            if let Err(e) = self.queue_summary(&pipe, summary).await {
                self.audit_budget.put_back(&due);
                return Err(e);
            }
        }
        let results = match send(pipe, due.len()).await {
            Ok(results) => results,
            Err(e) => {
                self.audit_budget.put_back(&due);
                return Err(e);
            }
        };
        // Put back exactly those that failed: none is written twice.
        let failed: Vec<Summary> = due
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(s, _)| *s)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        self.audit_budget.put_back(&failed);
        Err(Error::Unavailable(format!(
            "{} audit summaries not written",
            failed.len()
        )))
    }

    async fn queue_summary(
        &self,
        pipe: &fred::clients::Pipeline<fred::clients::Client>,
        summary: &Summary,
    ) -> Result<()> {
        let fields = vec![
            ("ts", now().to_string()),
            ("project_id", String::new()),
            ("key_id", String::new()),
            ("result", "denied".to_owned()),
            ("reason", summary.reason.to_owned()),
            ("client", self.client_name.clone()),
            ("summary", "1".to_owned()),
            ("second", summary.second.to_string()),
            ("count", summary.count.to_string()),
        ];
        // Summaries name no key: they go where a key-less entry goes.
        let stream = names::audit_keylookup("", "", self.audit_shards);
        pipe.xadd::<(), _, _, _, _>(stream, false, self.keylookup_cap(), "*", fields)
            .await
            .map_err(unavailable)
    }

    /// The flusher task: summaries of each second, about a second later.
    pub(super) async fn flush_summaries_every_second(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_summaries(false).await {
                tracing::warn!(error = %e, "audit summaries not written yet; retrying");
            }
        }
    }
}

/// What `JSON.GET` of a key document found.
fn read_doc(doc_key: &str, doc: Result<Value, FredError>) -> Result<Lookup> {
    let raw = match doc {
        Err(e) if super::is_noperm(&e) => return Ok(Lookup::Forbidden),
        // A key of another type than JSON: not a key document.
        Err(e) if is_wrongtype(&e) => {
            report_unreadable(doc_key, "the key is not a JSON document");
            return Ok(Lookup::Unreadable);
        }
        Err(e) => return Err(unavailable(e)),
        Ok(Value::Null) => return Ok(Lookup::Missing),
        Ok(value) => value,
    };
    let Some(raw) = raw.as_str() else {
        report_unreadable(doc_key, "JSON.GET did not answer with text");
        return Ok(Lookup::Unreadable);
    };
    Ok(match key_doc(doc_key, &raw) {
        Some(doc) => Lookup::Found {
            doc: Box::new(doc),
            used: 0,
            bad: 0,
        },
        None => Lookup::Unreadable,
    })
}
