//! Admission to the admin API, and its audit trail: the [`Admin`]
//! extractor every admin handler takes, and the [`audit`] layer around
//! every admin route.
//!
//! `Admin<A, I>` is the one place a call is let in: it names the action
//! (`A`, a marker of `access::act`), authenticates the bearer token (401), reads
//! the input `I` (a JSON body, a query or path parameters; 422), and asks
//! [`Caller::authorize`] about the action on the input's project (404 for a
//! project outside the caller's list, 403 for a role that may not). A
//! handler that takes it runs only for a caller that may.
//!
//! As it goes it notes who asked for what in a [`Note`] that the `audit`
//! layer put in the request, and the layer writes one `audit:admin` entry
//! per call from that note and the answer's status, before the answer
//! leaves: allowed or refused, with the outcome. A success whose entry
//! cannot be written is answered `503` (for a mint or a rotation the new
//! secret is then never shown, and the key holds it unknown to anyone); a
//! refusal is answered as itself, logged and counted
//! (`keyward_admin_unaudited_total`).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use validator::Validate;

use super::extract::{ValidatedJson, ValidatedQuery};
use super::{AppState, RequestIdPair};
use crate::access::{self, Act, Action, Caller, Target};
use crate::error::{Error, Result};
use crate::store::AdminAudit;
use crate::telemetry::metric;
use crate::webhook::{Event, EventType};
use futures::FutureExt;

/// Where an admin call's input comes from.
pub trait Input {
    type Value: Target + Send;
    fn read(
        req: Request,
        state: &AppState,
    ) -> impl std::future::Future<Output = Result<Self::Value>> + Send;
}

/// A validated JSON body.
pub struct Body<T>(PhantomData<T>);
/// A validated query string.
pub struct Query<T>(PhantomData<T>);
/// Path parameters.
pub struct Params<T>(PhantomData<T>);
/// Nothing.
pub struct Nothing;

impl<T: DeserializeOwned + Validate + Target + Send> Input for Body<T> {
    type Value = T;
    async fn read(req: Request, state: &AppState) -> Result<T> {
        Ok(ValidatedJson::<T>::from_request(req, state).await?.0)
    }
}

impl<T: DeserializeOwned + Validate + Target + Send> Input for Query<T> {
    type Value = T;
    async fn read(req: Request, state: &AppState) -> Result<T> {
        let (mut parts, _) = req.into_parts();
        Ok(ValidatedQuery::<T>::from_request_parts(&mut parts, state)
            .await?
            .0)
    }
}

impl<T: DeserializeOwned + Target + Send> Input for Params<T> {
    type Value = T;
    async fn read(req: Request, state: &AppState) -> Result<T> {
        let (mut parts, _) = req.into_parts();
        let Path(value) = Path::<T>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| Error::InvalidRequest(e.body_text()))?;
        Ok(value)
    }
}

impl Input for Nothing {
    type Value = ();
    async fn read(_: Request, _: &AppState) -> Result<()> {
        Ok(())
    }
}

/// An admin call let in: who is calling, and its input.
pub struct Admin<A, I: Input> {
    pub caller: Caller,
    pub input: I::Value,
    note: Note,
    action: PhantomData<A>,
}

impl<A, I: Input> Admin<A, I> {
    /// The call's note, to name what it made once it has.
    pub fn note(&self) -> Note {
        self.note.clone()
    }
}

impl<A: Act, I: Input> FromRequest<AppState> for Admin<A, I> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let note = req.extensions().get::<Note>().cloned().unwrap_or_default();
        note.with(|n| n.action = Some(A::ACTION));
        let root = state.admin_token.as_ref().ok_or(Error::RouteNotFound)?;
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?;
        let caller =
            access::authenticate(&state.store, &state.operator_hasher, root, presented.trim())
                .await
                .map_err(|refused| {
                    // A refused token names an operator, but proves nothing: the
                    // actor stays unknown, the operator is only claimed.
                    note.with(|n| n.claimed_operator = refused.operator_id.unwrap_or_default());
                    refused.error
                })?;
        note.with(|n| {
            n.actor = Some(caller.actor.clone());
            n.actor_name = caller.name.clone();
        });
        let input = I::read(req, state).await?;
        note.with(|n| {
            n.project = input.project().unwrap_or_default().to_owned();
            n.key = input.key().unwrap_or_default().to_owned();
            n.operator = input.operator().unwrap_or_default().to_owned();
        });
        caller.authorize(A::ACTION, input.project())?;
        // Writes the caller may make count (refused calls are budgeted in
        // the trail instead); the break-glass root is never held back.
        if A::ACTION.writes() && caller.actor != access::ROOT {
            let now = crate::clock::now() as u64;
            state.limits.write(&caller.actor, now)?;
        }
        Ok(Self {
            caller,
            input,
            note,
            action: PhantomData,
        })
    }
}

/// What the `audit` layer learns of a call as it is let in.
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Noted>>);

#[derive(Default)]
struct Noted {
    action: Option<Action>,
    actor: Option<String>,
    actor_name: String,
    project: String,
    key: String,
    /// The operator an operator call is about.
    operator: String,
    /// The existing operator a refused token named.
    claimed_operator: String,
}

impl Note {
    /// Names the key the call made (a mint's new key) in its audit entry.
    pub fn made_key(&self, key_id: &str) {
        self.with(|n| n.key = key_id.to_owned());
    }

    /// Names the operator the call made in its audit entry.
    pub fn made_operator(&self, operator_id: &str) {
        self.with(|n| n.operator = operator_id.to_owned());
    }

    fn with(&self, f: impl FnOnce(&mut Noted)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The webhook event a successful admin action is, if any: a key's
/// change (adding credits is an update).
fn key_event(action: Action) -> Option<EventType> {
    match action {
        Action::KeyMint => Some(EventType::KeyCreated),
        Action::KeyUpdate | Action::KeyAddCredits => Some(EventType::KeyUpdated),
        Action::KeyRotate => Some(EventType::KeyRotated),
        Action::KeyRevoke => Some(EventType::KeyRevoked),
        _ => None,
    }
}

/// The layer around every admin route (and its `405`): one `audit:admin`
/// entry per call, and with a key's change its webhook event, in the same
/// round trip.
///
/// The call runs in a task of its own under the request deadline, and its
/// entry is written in that task whatever happens to the request: when the
/// outer deadline (`observe`) or a dropped connection ends the request
/// while the call or its entry is under way, the task still finishes both,
/// so no change is left without its entry. A call that its own deadline
/// stops is written with the outcome `deadline` (whatever it had done by
/// then, if anything, is named by the entry's action, project and key).
pub async fn audit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let note = Note::default();
    req.extensions_mut().insert(note.clone());
    let ids = req.extensions().get::<RequestIdPair>().cloned();
    let deadline = state.request_timeout;
    let call = tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(next.run(req)).catch_unwind();
        let (response, outcome) = match tokio::time::timeout(deadline, run).await {
            Ok(Ok(response)) => {
                let outcome = crate::audit::outcome::of(response.status().as_u16());
                (response, outcome)
            }
            Ok(Err(_)) => (
                Error::Internal("admin handler panicked".into()).into_response(),
                crate::audit::outcome::ERROR,
            ),
            Err(_) => (
                Error::Unavailable("request deadline exceeded".into()).into_response(),
                crate::audit::outcome::DEADLINE,
            ),
        };
        record(&state, &note, ids.as_ref(), response, outcome).await
    });
    call.await
        .unwrap_or_else(|e| Error::Internal(format!("admin call task failed: {e}")).into_response())
}

/// Writes the call's entry (and event); the answer, or `503` for a
/// success whose entry could not be written.
async fn record(
    state: &AppState,
    note: &Note,
    ids: Option<&RequestIdPair>,
    response: Response,
    outcome: &'static str,
) -> Response {
    let status = response.status();
    let noted = std::mem::take(&mut *note.0.lock().unwrap_or_else(|e| e.into_inner()));
    let id = |v: Option<&axum::http::HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let request_id = id(ids.map(|i| &i.own));
    let caller_request_id = id(ids.and_then(|i| i.caller.as_ref()));
    // A call refused before its token was read names no one.
    let actor = noted.actor.as_deref().unwrap_or(access::UNKNOWN);
    let entry = AdminAudit {
        actor,
        action: noted.action.map_or("unknown", Action::name),
        project_id: &noted.project,
        key_id: &noted.key,
        operator_id: &noted.operator,
        actor_name: &noted.actor_name,
        claimed_operator: &noted.claimed_operator,
        outcome,
        request_id: &request_id,
        caller_request_id: &caller_request_id,
    };
    let event = status
        .is_success()
        .then(|| noted.action.and_then(key_event))
        .flatten()
        .map(|kind| {
            Event::key(kind, &noted.project, &noted.key)
                .with("actor", actor)
                .with("action", entry.action)
        });
    match state.store.write_admin_audit(entry, event.as_ref()).await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, action = entry.action, outcome, "admin audit entry not written");
            metrics::counter!(metric::ADMIN_UNAUDITED, "outcome" => outcome).increment(1);
            if status.is_success() {
                Error::Unavailable(format!("admin audit entry not written: {e}")).into_response()
            } else {
                response
            }
        }
    }
}
