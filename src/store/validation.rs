//! The validation path's commands, with the `validator` user.

use fred::prelude::{
    Error as FredError, HashesInterface, KeysInterface, RedisJsonInterface, StreamsInterface, Value,
};

use super::{key_doc, names, now, send, send_all, unavailable, Store, NO_FMT, ROOT};
use super::{Audit, Lookup};
use crate::error::{Error, Result};
use crate::key::{KeyId, ProjectId};

impl Store {
    /// Round trip 1: the key's document and this minute's counters, pipelined.
    pub async fn lookup(&self, project: &ProjectId, key_id: &KeyId, minute: u64) -> Result<Lookup> {
        let pipe = self.pool.next().pipeline();
        let doc_key = names::apikey(project.as_str(), key_id.as_str());
        let _: () = pipe
            .json_get(&doc_key, NO_FMT, NO_FMT, NO_FMT, ROOT)
            .await
            .map_err(unavailable)?;
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
        let raw = match doc {
            Err(e) if super::is_noperm(&e) => return Ok(Lookup::Forbidden),
            // A key of another type than JSON: not a key document.
            Err(e) if e.details().starts_with("WRONGTYPE") => {
                tracing::error!(redis_key = doc_key, "key document is not JSON");
                return Ok(Lookup::Unreadable);
            }
            Err(e) => return Err(unavailable(e)),
            Ok(Value::Null) => return Ok(Lookup::Missing),
            Ok(value) => value,
        };
        let count = |r: Result<Value, FredError>| -> Result<u64> {
            match r {
                Ok(v) => Ok(v.convert::<Option<u64>>().ok().flatten().unwrap_or(0)),
                Err(e) => Err(unavailable(e)),
            }
        };
        let Some(doc) = raw.as_str().and_then(|raw| key_doc(&doc_key, &raw)) else {
            return Ok(Lookup::Unreadable);
        };
        Ok(Lookup::Found {
            doc: Box::new(doc),
            used: count(used)?,
            bad: count(bad)?,
        })
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
        pipe.xadd::<(), _, _, _, _>(names::AUDIT_KEYLOOKUP, false, self.audit_cap(), "*", fields)
            .await
            .map_err(unavailable)
    }

    /// Round trip 2 for every other outcome: the audit entry, plus the
    /// wrong-secret counter when `count_bad_secret` is given.
    pub async fn record_denial(
        &self,
        audit: Audit<'_>,
        count_bad_secret: Option<(&ProjectId, &KeyId, u64)>,
    ) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        if let Some((project, key_id, minute)) = count_bad_secret {
            Self::queue_count(&pipe, &names::bad(project, key_id, minute)).await?;
        }
        self.queue_audit(&pipe, audit).await?;
        send_all(pipe, 1 + 2 * usize::from(count_bad_secret.is_some())).await
    }
}
