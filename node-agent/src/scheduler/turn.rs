//! An agent turn started by the scheduler (cron `agentTurn`, heartbeat, execution worker):
//! the same run machinery as `agent`, with a run id derived from the occurrence, so even a
//! repeated start of one occurrence is deduplicated by the run record.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::control::{abort_runs, check_provider, start_run};
use crate::runtime::runs::{RunRecord, RunRequest, RunStatus};
use crate::runtime::Runtime;

/// A turn's outcome as the scheduler reports it.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub ok: bool,
    /// The reply, or why the turn failed.
    pub text: String,
}

impl TurnOutcome {
    pub fn failed(text: impl Into<String>) -> Self {
        TurnOutcome {
            ok: false,
            text: text.into(),
        }
    }

    fn from_record(record: &RunRecord) -> Self {
        match record.status {
            RunStatus::Ok => TurnOutcome {
                ok: true,
                text: record.text.clone().unwrap_or_default(),
            },
            RunStatus::Aborted => TurnOutcome::failed("the run was aborted"),
            _ => TurnOutcome::failed(
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run failed".into()),
            ),
        }
    }
}

pub struct Turn<'a> {
    pub agent_id: &'a str,
    pub session_key: &'a str,
    pub run_id: &'a str,
    pub message: String,
    pub timeout: Duration,
    pub method: &'a str,
    /// Said to the model beside the agent's own prompt (where the message came from).
    pub extra_system_prompt: Option<String>,
}

/// Runs the turn and waits for its end (at most `timeout`, then it is aborted).
pub async fn run(rt: &Arc<Runtime>, turn: Turn<'_>) -> TurnOutcome {
    let config = match rt.config.current().await {
        Ok(config) => config,
        Err(err) => return TurnOutcome::failed(format!("cannot read the config: {err}")),
    };
    if let Err(err) = check_provider(&config, turn.agent_id) {
        return TurnOutcome::failed(err.to_string());
    }
    let request = RunRequest {
        message: turn.message,
        client_session_key: turn.session_key.to_string(),
        agent_id: turn.agent_id.to_string(),
        thinking: None,
        timeout_ms: turn.timeout.as_millis() as u64,
        extra_system_prompt: turn.extra_system_prompt,
        tool_events_to: None,
    };
    if let Err(err) = start_run(
        rt,
        turn.method,
        turn.session_key,
        turn.run_id,
        request,
        &config,
    )
    .await
    {
        return TurnOutcome::failed(err.to_string());
    }
    match rt.wait_final(turn.run_id, turn.timeout).await {
        Ok(Some(record)) => TurnOutcome::from_record(&record),
        Ok(None) => {
            let _ = abort_runs(rt, turn.session_key, Some(turn.run_id), "timeout").await;
            TurnOutcome::failed(format!(
                "the turn did not finish within {} s and was aborted",
                turn.timeout.as_secs()
            ))
        }
        Err(err) => TurnOutcome::failed(err.to_string()),
    }
}
