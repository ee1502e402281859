//! Background agent work: `last-heartbeat`, `set-heartbeats`, `wake` (PROTOCOL.md §5.10,
//! §3.4), `execution.worker.*` (§5.8), and the task queue methods `tasks.add` /
//! `tasks.list` [EXT].

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::session_key::SessionKey;

use super::shared_config;
use crate::respond;
use crate::scheduler::execution::{self, WorkerRecord, WorkerSettings};
use crate::scheduler::{heartbeat, Scheduler};
use argent_proto::agents::AgentsConfig;

pub async fn last_heartbeat(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    Params::new("last-heartbeat", params)?.only(&[])?;
    heartbeat::last(s).await.map_err(respond::state)
}

pub async fn set_heartbeats(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("set-heartbeats", params)?.only(&["enabled"])?;
    let enabled = p
        .optional_bool("enabled")?
        .ok_or_else(|| p.invalid("at root: must have required property 'enabled'"))?;
    heartbeat::set_enabled(s, enabled)
        .await
        .map_err(respond::state)?;
    Ok(json!({"ok": true, "enabled": enabled}))
}

/// `wake {mode, text}`: a system event for the default agent's heartbeat, now or at the next.
pub async fn wake(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("wake", params)?.only(&["mode", "text"])?;
    let now = match p.optional_str("mode")?.as_deref() {
        Some("now") => true,
        Some("next-heartbeat") => false,
        _ => return Err(p.invalid("at /mode: must be equal to one of the allowed values")),
    };
    let text = p.required_text("text")?;
    let config = shared_config(&s.rt).await?;
    let agents = config.agents();
    heartbeat::enqueue(s, &agents.default_id, &text, now)
        .await
        .map_err(respond::state)?;
    Ok(json!({"ok": true}))
}

/// The agents a worker method applies to: the named one, or all.
fn targets(p: &Params, agents: &AgentsConfig) -> Result<(Option<String>, Vec<String>), RpcError> {
    let agent_id = match p.get("agentId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.trim().to_ascii_lowercase()),
        Some(_) => return Err(RpcError::bad_params("agentId must be a string")),
    };
    match &agent_id {
        Some(id) if agents.get(id).is_none() => Err(RpcError::bad_params(format!(
            "unknown execution worker agent: {id}"
        ))),
        Some(id) => Ok((agent_id.clone(), vec![id.clone()])),
        None => Ok((None, agents.agents.iter().map(|a| a.id.clone()).collect())),
    }
}

fn scope(agent_id: &Option<String>) -> &'static str {
    if agent_id.is_some() {
        "agent"
    } else {
        "global"
    }
}

async fn modify_worker(
    s: &Scheduler,
    agent_id: &str,
    change: impl FnMut(&mut WorkerRecord),
) -> Result<WorkerRecord, RpcError> {
    execution::modify_record(s.rt.state.as_ref(), agent_id, change)
        .await
        .map_err(respond::state)
}

async fn set_global_pause(s: &Scheduler, paused: bool) -> Result<(), RpcError> {
    execution::set_global_pause(s.rt.state.as_ref(), paused)
        .await
        .map_err(respond::state)
}

/// Status of §5.8 from the stored records, the task queues and the config.
async fn worker_status(s: &Scheduler) -> Result<Value, RpcError> {
    let config = shared_config(&s.rt).await?;
    let agents = config.agents();
    let state = s.rt.state.as_ref();
    let global_paused = execution::stored_global_pause(state)
        .await
        .map_err(respond::state)?;
    let now = argent_proto::now_ms();
    let mut rows = Vec::new();
    for agent in &agents.agents {
        let settings = WorkerSettings::of(&config, &agent.id);
        let record = execution::stored_record(state, &agent.id)
            .await
            .map_err(respond::state)?;
        let tasks = execution::tasks(state, &agent.id)
            .await
            .map_err(respond::state)?;
        let queued = tasks.iter().filter(|t| t.status == "queued").count();
        let blocked = tasks.iter().filter(|t| t.status == "blocked").count();
        let running = record.claim.as_ref().is_some_and(|c| !c.is_stale(now));
        let paused = record.paused || global_paused;
        let (kind, summary) = if paused {
            ("paused", "the worker is paused".to_string())
        } else if running {
            ("running", "a cycle is running".to_string())
        } else if record.rerun_requested {
            (
                "queued",
                "a cycle was requested and starts shortly".to_string(),
            )
        } else if !settings.enabled {
            (
                "idle",
                "the execution worker is not enabled for this agent".to_string(),
            )
        } else if queued > 0 {
            (
                "waiting",
                format!("{queued} task(s) queued for the next cycle"),
            )
        } else if blocked > 0 {
            ("blocked", format!("{blocked} task(s) blocked, none queued"))
        } else {
            ("idle", "no queued tasks".to_string())
        };
        let mut metrics = serde_json::to_value(&record.metrics).expect("metrics serialize");
        metrics["lastStatus"] = json!(record
            .metrics
            .last_status
            .clone()
            .unwrap_or_else(|| "idle".into()));
        rows.push(json!({
            "agentId": agent.id, "enabled": settings.enabled, "paused": paused, "running": running,
            "rerunRequested": record.rerun_requested, "nextDueAt": record.period.next_due_at_ms,
            "lastRunAt": record.period.last_run_at_ms,
            "lastDispatchRequestedAt": record.last_dispatch_requested_at,
            "lastDispatchReason": record.last_dispatch_reason,
            "statusHint": {"kind": kind, "summary": summary,
                           "taskSnapshot": {"queued": queued, "blocked": blocked, "total": tasks.len()}},
            "config": settings.to_value(),
            "metrics": metrics,
        }));
    }
    Ok(json!({
        "enabled": rows.iter().any(|r| r["enabled"] == true),
        "globalPaused": global_paused,
        "agentCount": rows.len(),
        "agents": rows,
    }))
}

/// The params of an execution-worker method with the agents it targets (`agentId`, or all).
async fn worker_targets<'a>(
    s: &Scheduler,
    method: &'a str,
    params: Value,
    keys: &[&str],
) -> Result<(Params<'a>, Option<String>, Vec<String>), RpcError> {
    let p = Params::new(method, params)?.only(keys)?;
    let config = shared_config(&s.rt).await?;
    let agents = config.agents();
    let (agent_id, ids) = targets(&p, agents)?;
    Ok((p, agent_id, ids))
}

/// `execution.worker.status {agentId?}`.
pub async fn worker_status_method(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    worker_targets(s, "execution.worker.status", params, &["agentId"]).await?;
    worker_status(s).await
}

/// `execution.worker.runNow {agentId?, reason?}`: the next cycle starts at once.
pub async fn worker_run_now(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let (p, agent_id, ids) =
        worker_targets(s, "execution.worker.runNow", params, &["agentId", "reason"]).await?;
    let reason = p.optional_str("reason")?;
    let mut dispatched = false;
    let mut paused = false;
    let mut running = false;
    for id in &ids {
        let record = modify_worker(s, id, |r| {
            r.rerun_requested = true;
            r.last_dispatch_requested_at = Some(argent_proto::now_ms());
            r.last_dispatch_reason = reason.clone();
        })
        .await?;
        paused |= record.paused;
        running |= record.claim.is_some();
        dispatched |= !record.paused;
    }
    let status = worker_status(s).await?;
    paused |= status["globalPaused"] == true;
    let mut dispatch = json!({"ok": true, "scope": scope(&agent_id), "dispatched": dispatched && !paused,
                              "paused": paused, "running": running, "reason": reason});
    if let Some(id) = agent_id {
        dispatch["agentId"] = json!(id);
    }
    Ok(json!({"dispatch": dispatch, "status": status}))
}

/// `execution.worker.pause` / `resume {agentId?}`: one agent's worker, or all.
pub async fn worker_pause(s: &Scheduler, params: Value, paused: bool) -> Result<Value, RpcError> {
    let method = if paused {
        "execution.worker.pause"
    } else {
        "execution.worker.resume"
    };
    let (_, agent_id, _) = worker_targets(s, method, params, &["agentId"]).await?;
    match &agent_id {
        Some(id) => {
            modify_worker(s, id, |r| r.paused = paused).await?;
        }
        None => set_global_pause(s, paused).await?,
    }
    control(s, &agent_id, json!({"paused": paused})).await
}

/// `execution.worker.metrics.reset {agentId?}`.
pub async fn worker_metrics_reset(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let (_, agent_id, ids) =
        worker_targets(s, "execution.worker.metrics.reset", params, &["agentId"]).await?;
    for id in &ids {
        modify_worker(s, id, |r| r.metrics = Default::default()).await?;
    }
    control(s, &agent_id, json!({"resetCount": ids.len()})).await
}

async fn control(
    s: &Scheduler,
    agent_id: &Option<String>,
    extra: Value,
) -> Result<Value, RpcError> {
    let mut control = json!({"ok": true, "scope": scope(agent_id)});
    if let Some(id) = agent_id {
        control["agentId"] = json!(id);
    }
    for (k, v) in extra.as_object().expect("an object") {
        control[k.as_str()] = v.clone();
    }
    Ok(json!({"control": control, "status": worker_status(s).await?}))
}

/// `tasks.add {agentId?, title, detail?}` [EXT]: queues a task for the agent's worker.
pub async fn tasks_add(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("tasks.add", params)?.only(&["agentId", "title", "detail"])?;
    let config = shared_config(&s.rt).await?;
    let agents = config.agents();
    let (agent_id, _) = targets(&p, agents)?;
    let agent_id = agent_id.unwrap_or_else(|| agents.default_id.clone());
    let title = p.required_text("title")?;
    let task = execution::add_task(
        s.rt.state.as_ref(),
        &agent_id,
        &title,
        p.optional_str("detail")?,
    )
    .await
    .map_err(respond::state)?;
    Ok(json!({"ok": true, "task": task}))
}

/// `tasks.list {agentId?, status?, sessionKey?, limit?, cursor?, sortBy?}` [EXT]: the
/// execution worker's tasks. Protocol 4's `status` may be a list; a `sessionKey` matches
/// the tasks of the agent whose worker session it is. All tasks fit one page (`cursor` is
/// accepted and no `nextCursor` is given).
pub async fn tasks_list(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("tasks.list", params)?.only(&[
        "agentId",
        "status",
        "sessionKey",
        "limit",
        "cursor",
        "sortBy",
    ])?;
    let config = shared_config(&s.rt).await?;
    let agents = config.agents();
    let (_, ids) = targets(&p, agents)?;
    let statuses: Option<Vec<String>> = match p.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(one)) => Some(vec![one.clone()]),
        Some(_) => p.optional_str_list("status")?,
    };
    let session = p
        .optional_str("sessionKey")?
        .map(|k| SessionKey::canonical(&k, agents).into_string());
    let limit = p.optional_u64_in("limit", 1, 500)?;
    p.optional_str("cursor")?;
    // A task's end is its last update: both orders are by that.
    if let Some(order) = p.optional_str("sortBy")? {
        if order != "updatedAt" && order != "endedAt" {
            return Err(p.invalid("at /sortBy: must be equal to one of the allowed values"));
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if let Some(session) = &session {
            let own = WorkerSettings::of(&config, &id).session_main_key;
            if SessionKey::of_agent(&id, &own).into_string() != *session {
                continue;
            }
        }
        for task in execution::tasks(s.rt.state.as_ref(), &id)
            .await
            .map_err(respond::state)?
        {
            if statuses.as_ref().is_none_or(|st| st.contains(&task.status)) {
                out.push(task);
            }
        }
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.updated_at_ms));
    if let Some(limit) = limit {
        out.truncate(limit as usize);
    }
    Ok(json!({"tasks": out}))
}
