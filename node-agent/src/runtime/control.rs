//! Run control shared by the chat methods and the scheduler: starting a run (or finding
//! the earlier one with the same key), aborting a session's runs wherever they execute,
//! refusing a turn no model can run, steering a running turn, and injecting a note.

use std::sync::Arc;

use serde_json::json;

use crate::error::ServiceError;
use argent_proto::config::SharedConfig;
use argent_proto::subjects;

use super::providers::Providers;
use super::run;
use super::run::{Fresh, Start};
use super::runs::{self, Created, Enqueued, RunRecord, RunRequest, RunStatus};
use super::Runtime;

/// A new run (`Ok(None)`) or the record of an earlier one with the same key. `config` is
/// the snapshot the request was checked against; a run that starts at once runs with it.
pub async fn start_run(
    rt: &Arc<Runtime>,
    method: &str,
    session_key: &str,
    run_id: &str,
    request: RunRequest,
    config: &Arc<SharedConfig>,
) -> Result<Option<RunRecord>, ServiceError> {
    let record = RunRecord {
        run_id: run_id.to_string(),
        method: method.to_string(),
        session_key: session_key.to_string(),
        status: RunStatus::Queued,
        accepted_at: argent_proto::now_ms(),
        started_at: None,
        ended_at: None,
        error: None,
        text: None,
        stop_reason: None,
        node_id: None,
        usage: None,
        abort_requested: None,
        request,
    };
    let revision = match rt.runs.create(&record).await? {
        Created::New(revision) => revision,
        Created::Earlier(existing) => return Ok(Some(*existing)),
    };
    let refuse = |err: ServiceError| async {
        // The key was not used: a retry must be able to start it.
        let _ = rt.runs.delete(run_id).await;
        Err(err)
    };
    let seen = rt.lease_seen(session_key);
    match runs::enqueue(&rt.state, session_key, run_id, &rt.node_id, seen).await {
        Ok(Enqueued::Started(lease)) => {
            let fresh = Fresh {
                record,
                revision,
                config: config.clone(),
            };
            rt.drive(*lease, Start::Fresh(Box::new(fresh)));
            Ok(None)
        }
        Ok(Enqueued::Queued(position)) => {
            tracing::debug!(run = run_id, position, "run queued behind the active one");
            Ok(None)
        }
        Ok(Enqueued::Busy) => {
            refuse(ServiceError::Busy {
                message: format!(
                "agent busy: session {session_key} already has {} messages waiting; retry later",
                runs::MAX_QUEUE
            ),
                retry_after_ms: 2000,
            })
            .await
        }
        Err(err) => refuse(err.into()).await,
    }
}

/// Aborts runs of a session (all, or `only`): queued ones here, the active one through its
/// holder. Returns the ids.
pub async fn abort_runs(
    rt: &Runtime,
    session_key: &str,
    only: Option<&str>,
    reason: &str,
) -> Result<Vec<String>, ServiceError> {
    let queued = runs::dequeue(rt.state.as_ref(), session_key, only).await?;
    for id in &queued {
        run::abort_queued(rt, id, reason).await;
    }
    let mut ids = Vec::new();
    let lease = runs::read_lease(rt.state.as_ref(), session_key).await?;
    if let Some(active) = lease.and_then(|(l, _)| l.active) {
        if only.is_none_or(|o| o == active) {
            // Recorded first: the holder checks it when the run registers, so an abort
            // that arrives before that is not lost.
            let reason_text = reason.to_string();
            rt.runs
                .update(&active, |r| r.abort_requested = Some(reason_text.clone()))
                .await?;
            rt.control(
                subjects::CONTROL_RUN_ABORT,
                json!({"runId": active, "reason": reason}),
            )
            .await;
            ids.push(active);
        }
    }
    ids.extend(queued);
    Ok(ids)
}

/// Refuses before the ack when no model can run the turn, saying how to configure one.
pub fn check_provider(config: &SharedConfig, agent_id: &str) -> Result<(), ServiceError> {
    Providers::from_config(config.document())
        .and_then(|p| p.choose(agent_id))
        .map(|_| ())
        .map_err(|e| ServiceError::NoProvider(e.to_string()))
}

/// Where a steering message went.
pub enum Steered {
    /// No run of the session is executing: nothing to steer into.
    NotActive,
    /// Into this run, wherever it executes.
    Into(String),
}

/// Steering (§5.1 step 5): sends `message` into the session's executing run.
pub async fn steer(
    rt: &Runtime,
    session_key: &str,
    message: &str,
    idempotency_key: &str,
) -> Result<Steered, ServiceError> {
    let lease = runs::read_lease(rt.state.as_ref(), session_key).await?;
    let Some(target) = lease.and_then(|(l, _)| l.active) else {
        return Ok(Steered::NotActive);
    };
    // Only a run that is executing can take it (not one ending, nor a maintenance marker).
    let running = rt
        .runs
        .get(&target)
        .await?
        .is_some_and(|r| r.status == RunStatus::Running);
    if !running {
        return Ok(Steered::NotActive);
    }
    rt.control(
        subjects::CONTROL_RUN_STEER,
        json!({"runId": target, "message": message, "idempotencyKey": idempotency_key}),
    )
    .await;
    Ok(Steered::Into(target))
}

/// `chat.inject`: appends an assistant note to the session's transcript (no run) and
/// announces it as a `chat` final for `client_key`; the new message's id.
pub async fn inject(
    rt: &Runtime,
    session_key: &str,
    client_key: &str,
    text: &str,
) -> Result<String, ServiceError> {
    let Some(entry) = rt.sessions.get(session_key).await? else {
        return Err(ServiceError::SessionNotFound("session not found".into()));
    };
    let message_id = uuid::Uuid::new_v4().simple().to_string();
    let mut stored = run::assistant_message(text);
    stored["id"] = json!(message_id);
    stored["injected"] = json!(true);
    rt.transcript_cache
        .append(&entry.session_id, &stored)
        .await?;
    // The session changed: lists sort by it, and usage reports read only sessions written
    // since their window began.
    rt.sessions
        .update(session_key, |e| e.updated_at = argent_proto::now_ms())
        .await?;
    rt.publish(
        "chat",
        &json!({
            "runId": format!("inject-{message_id}"), "sessionKey": client_key, "seq": 0,
            "state": "final", "message": run::assistant_message(text),
        }),
        Some(false),
    )
    .await;
    Ok(message_id)
}
