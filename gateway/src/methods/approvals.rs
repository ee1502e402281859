//! Exec approvals (PROTOCOL.md §5.14; `exec.approval.list` of PROTOCOL-v4.md §9): a caller
//! asks, an operator with `operator.approvals` decides on any gateway, the asker's long poll
//! answers. Pending requests live in the state plane (`argent_approvals`), so the request,
//! the decision and the list may each go through a different gateway.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use argent_planes::state::{list_json, StateError};
use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::subjects::BUCKET_APPROVALS;

use crate::context::Ctx;
use crate::respond;
use crate::ws::session::Session;

const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// A request waits at most this long (bounds what one caller can hold open).
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// How often a waiting request looks for its decision.
const POLL_EVERY: Duration = Duration::from_millis(200);
const DECISIONS: [&str; 3] = ["allow-once", "allow-always", "deny"];
/// The request fields, each a string or `null` in the events.
const REQUEST_FIELDS: [&str; 7] = [
    "cwd",
    "host",
    "security",
    "ask",
    "agentId",
    "resolvedPath",
    "sessionKey",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Approval {
    id: String,
    request: Map<String, Value>,
    created_at_ms: u64,
    expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision: Option<String>,
}

impl Approval {
    fn pending(&self, now: u64) -> bool {
        self.decision.is_none() && now < self.expires_at_ms
    }

    /// The `exec.approval.requested` payload (also a row of `exec.approval.list`).
    fn requested(&self) -> Value {
        json!({"id": self.id, "request": self.request,
               "createdAtMs": self.created_at_ms, "expiresAtMs": self.expires_at_ms})
    }
}

/// Keys are limited to `[A-Za-z0-9_=./-]`; ids are free text.
fn key(id: &str) -> String {
    hex::encode(id.as_bytes())
}

fn unknown() -> RpcError {
    RpcError::bad_params("unknown approval id")
}

/// `exec.approval.request`: records the request, announces it, and answers once decided
/// (or with `decision: null` once expired).
pub async fn request(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let method = "exec.approval.request";
    let mut allowed = REQUEST_FIELDS.to_vec();
    allowed.extend(["id", "command", "timeoutMs"]);
    let p = Params::new(method, params.clone())?.only(&allowed)?;
    let command = p.required_str("command")?;
    let timeout = p
        .optional_u64("timeoutMs", 1)?
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout > MAX_TIMEOUT_MS {
        return Err(p.invalid(format!("at /timeoutMs: must be <= {MAX_TIMEOUT_MS}")));
    }
    let id = p
        .optional_str("id")?
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut request = Map::new();
    request.insert("command".into(), json!(command));
    for field in REQUEST_FIELDS {
        let value = match params.get(field) {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) => json!(s),
            Some(_) => return Err(p.invalid(format!("at /{field}: must be string or null"))),
        };
        request.insert(field.into(), value);
    }
    let now = argent_proto::now_ms();
    let approval = Approval {
        id: id.clone(),
        request,
        created_at_ms: now,
        expires_at_ms: now + timeout,
        decision: None,
    };
    let body = serde_json::to_vec(&approval).expect("approvals serialize");
    let store = ctx.state.as_ref();
    match store
        .create(BUCKET_APPROVALS, &key(&id), body.clone().into())
        .await
    {
        Ok(_) => {}
        Err(StateError::Exists) => {
            // A finished request of the same id may still be on record: replace that one.
            let current = store
                .get(BUCKET_APPROVALS, &key(&id))
                .await
                .map_err(respond::state)?;
            let old: Option<Approval> = current
                .as_ref()
                .and_then(|e| serde_json::from_slice(&e.value).ok());
            match (current, old) {
                (Some(entry), Some(old)) if !old.pending(now) => {
                    store
                        .update(BUCKET_APPROVALS, &key(&id), body.into(), entry.revision)
                        .await
                        .map_err(|_| RpcError::bad_params("approval id already pending"))?;
                }
                _ => return Err(RpcError::bad_params("approval id already pending")),
            }
        }
        Err(err) => return Err(respond::state(err)),
    }
    ctx.publish("exec.approval.requested", &approval.requested())
        .await;
    let decision = wait_for_decision(ctx, &id, approval.expires_at_ms).await?;
    // Settled either way: the record goes (a later request may reuse the id).
    let _ = store.delete(BUCKET_APPROVALS, &key(&id)).await;
    Ok(
        json!({"id": id, "decision": decision, "createdAtMs": approval.created_at_ms,
              "expiresAtMs": approval.expires_at_ms}),
    )
}

async fn wait_for_decision(ctx: &Ctx, id: &str, expires_at_ms: u64) -> Result<Value, RpcError> {
    loop {
        let entry = ctx
            .state
            .get(BUCKET_APPROVALS, &key(id))
            .await
            .map_err(respond::state)?;
        let decision = entry
            .and_then(|e| serde_json::from_slice::<Approval>(&e.value).ok())
            .and_then(|a| a.decision);
        if let Some(decision) = decision {
            return Ok(json!(decision));
        }
        if argent_proto::now_ms() >= expires_at_ms {
            return Ok(Value::Null);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `exec.approval.resolve {id, decision}`.
pub async fn resolve(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("exec.approval.resolve", params)?.only(&["id", "decision"])?;
    let id = p.required_str("id")?;
    let decision = p.required_str("decision")?;
    if !DECISIONS.contains(&decision.as_str()) {
        return Err(RpcError::bad_params("invalid decision"));
    }
    let store = ctx.state.as_ref();
    let entry = store
        .get(BUCKET_APPROVALS, &key(&id))
        .await
        .map_err(respond::state)?
        .ok_or_else(unknown)?;
    let mut approval: Approval = serde_json::from_slice(&entry.value).map_err(|_| unknown())?;
    if !approval.pending(argent_proto::now_ms()) {
        return Err(unknown());
    }
    approval.decision = Some(decision.clone());
    let body = serde_json::to_vec(&approval).expect("approvals serialize");
    // Two operators deciding at once: the first write wins, the second hears "unknown".
    store
        .update(BUCKET_APPROVALS, &key(&id), body.into(), entry.revision)
        .await
        .map_err(|err| match err {
            StateError::WrongRevision => unknown(),
            other => respond::state(other),
        })?;
    let resolved_by = session
        .client
        .display_name
        .clone()
        .unwrap_or_else(|| session.client.id.clone());
    let payload = json!({"id": id, "decision": decision, "resolvedBy": resolved_by,
                         "ts": argent_proto::now_ms()});
    ctx.publish("exec.approval.resolved", &payload).await;
    Ok(json!({"ok": true}))
}

/// `exec.approval.list` (protocol 4): the pending requests, as their `requested` payloads.
pub async fn list(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("exec.approval.list", params)?;
    let now = argent_proto::now_ms();
    let all: Vec<(String, Approval)> = list_json(ctx.state.as_ref(), BUCKET_APPROVALS, "")
        .await
        .map_err(respond::state)?;
    let mut pending: Vec<Approval> = all
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a.pending(now))
        .collect();
    pending.sort_by_key(|a| a.created_at_ms);
    Ok(Value::Array(
        pending
            .iter()
            .map(|a| {
                let mut row = a.requested();
                row["approvalKind"] = json!("exec");
                row
            })
            .collect(),
    ))
}
