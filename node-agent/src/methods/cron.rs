//! `cron.list`, `cron.status`, `cron.runs`, `cron.add`, `cron.update`, `cron.run`,
//! `cron.remove` (PROTOCOL.md §5.5). The jobs are records in the state plane; any node-agent
//! answers, and every node's scheduler runs them (exactly once per occurrence).

use std::sync::Arc;

use serde_json::{json, Value};

use argent_proto::config::CatchUp;
use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::subjects::BUCKET_CRON;

use super::shared_config;
use crate::respond;
use crate::scheduler::cron::{self, Started, Trigger};
use crate::scheduler::jobs::{runs_log, unknown_job};
use crate::scheduler::{job_store, Scheduler};

fn job_id(p: &Params) -> Result<String, RpcError> {
    match (p.optional_id("id")?, p.optional_id("jobId")?) {
        (Some(id), _) | (None, Some(id)) if !id.trim().is_empty() => Ok(id),
        _ => Err(p.invalid("at root: must have required property 'id'")),
    }
}

pub async fn list(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.list", params)?.only(&["includeDisabled"])?;
    let include_disabled = p.optional_bool("includeDisabled")?.unwrap_or(false);
    let jobs: Vec<Value> = job_store::all_jobs(s.rt.state.as_ref())
        .await?
        .into_iter()
        .filter(|j| include_disabled || j.enabled)
        .map(|j| j.to_value())
        .collect();
    Ok(json!({"jobs": jobs}))
}

pub async fn status(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    Params::new("cron.status", params)?.only(&[])?;
    let config = shared_config(&s.rt).await?;
    let jobs = job_store::all_jobs(s.rt.state.as_ref()).await?;
    let next = jobs.iter().filter_map(|j| j.state.next_run_at_ms).min();
    Ok(json!({
        "enabled": config.cron_enabled(),
        "storePath": format!("state://{BUCKET_CRON}"),
        "jobs": jobs.len(),
        "nextWakeAtMs": next,
    }))
}

/// `cron.runs`: a job's run log (`{id}`), or with protocol 4's `scope: "all"` the runs of
/// every job (of `agentId`), filtered and paged as the Control UI asks. Without `offset`
/// or `sortDir` the answer is as protocol 3 has it: the last `limit` entries, oldest first.
pub async fn runs(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.runs", params)?.only(&[
        "id",
        "jobId",
        "agentId",
        "scope",
        "runId",
        "limit",
        "offset",
        "statuses",
        "status",
        "deliveryStatuses",
        "deliveryStatus",
        "query",
        "sortDir",
    ])?;
    let all = match p.optional_str("scope")?.as_deref() {
        None | Some("job") => false,
        Some("all") => true,
        Some(_) => return Err(p.invalid("at /scope: must be equal to one of the allowed values")),
    };
    let limit = p.optional_u64("limit", 1)?.unwrap_or(200);
    if limit > 5000 {
        return Err(p.invalid("at /limit: must be <= 5000"));
    }
    let offset = p.optional_u64("offset", 0)?;
    let descending = match p.optional_str("sortDir")?.as_deref() {
        None => None,
        Some("asc") => Some(false),
        Some("desc") => Some(true),
        Some(_) => return Err(p.invalid("at /sortDir: must be equal to one of the allowed values")),
    };
    let mut statuses = p.optional_str_list("statuses")?.unwrap_or_default();
    match p.optional_str("status")? {
        Some(status) if status != "all" => statuses.push(status),
        _ => {}
    }
    // Runs here deliver nothing anywhere: their delivery status is "not-requested".
    let mut deliveries = p.optional_str_list("deliveryStatuses")?.unwrap_or_default();
    deliveries.extend(p.optional_str("deliveryStatus")?);
    let delivered_match = deliveries.is_empty() || deliveries.iter().any(|d| d == "not-requested");
    let query = p.optional_str("query")?.map(|q| q.to_lowercase());
    let run_id = p.optional_str("runId")?;

    let ids = if all {
        let agent = p.optional_str("agentId")?.map(|a| a.to_ascii_lowercase());
        // A job without an agent runs as the default agent.
        let config = super::shared_config(&s.rt).await?;
        let default = config.agents().default_id.clone();
        job_store::all_jobs(s.rt.state.as_ref())
            .await?
            .into_iter()
            .filter(|j| {
                let runs_as = j
                    .agent_id
                    .as_deref()
                    .unwrap_or(&default)
                    .to_ascii_lowercase();
                agent.as_ref().is_none_or(|a| *a == runs_as)
            })
            .map(|j| j.id)
            .collect()
    } else {
        p.optional_str("agentId")?;
        vec![job_id(&p)?]
    };
    let mut entries = Vec::new();
    for id in &ids {
        let log = s.rt.transcripts.read(&runs_log(id)).await;
        match log {
            Ok(log) => entries.extend(log),
            Err(argent_planes::state::StateError::InvalidKey(_)) if !all => {
                return Err(unknown_job(id).into())
            }
            Err(argent_planes::state::StateError::InvalidKey(_)) => {}
            Err(other) => return Err(respond::state(other)),
        }
    }
    entries.retain(|e| {
        (statuses.is_empty() || statuses.iter().any(|st| e["status"] == st.as_str()))
            && delivered_match
            && run_id.is_none()
            && query.as_ref().is_none_or(|q| {
                ["jobId", "summary", "error"].iter().any(|f| {
                    e[*f]
                        .as_str()
                        .is_some_and(|t| t.to_lowercase().contains(q.as_str()))
                })
            })
    });
    entries.sort_by_key(|e| e["ts"].as_u64().unwrap_or(0));
    if offset.is_none() && descending.is_none() {
        let skip = entries.len().saturating_sub(limit as usize);
        entries.drain(..skip);
        return Ok(json!({"entries": entries}));
    }
    if descending == Some(true) {
        entries.reverse();
    }
    let total = entries.len();
    let offset = offset.unwrap_or(0) as usize;
    let page: Vec<Value> = entries
        .into_iter()
        .skip(offset)
        .take(limit as usize)
        .collect();
    let next = offset + page.len();
    Ok(json!({
        "entries": page, "total": total, "offset": offset, "limit": limit,
        "hasMore": next < total, "nextOffset": (next < total).then_some(next),
    }))
}

pub async fn add(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    Ok(job_store::create(&s.rt, params).await?.to_value())
}

pub async fn update(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.update", params)?.only(&["id", "jobId", "patch"])?;
    let id = job_id(&p)?;
    let patch = p
        .get("patch")
        .cloned()
        .ok_or_else(|| p.invalid("at root: must have required property 'patch'"))?;
    let updated = job_store::update(&s.rt, &id, &patch).await?;
    Ok(updated.to_value())
}

pub async fn run(s: &Arc<Scheduler>, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.run", params)?.only(&["id", "jobId", "mode"])?;
    let id = job_id(&p)?;
    let trigger = match p.optional_str("mode")?.as_deref() {
        None | Some("due") => {
            let job = job_store::get(s.rt.state.as_ref(), &id)
                .await?
                .ok_or_else(|| unknown_job(&id))?;
            match job.state.next_run_at_ms {
                Some(due) if job.enabled && due <= argent_proto::now_ms() => Trigger::Due(due),
                _ => return Ok(json!({"ok": true, "ran": false, "reason": "not-due"})),
            }
        }
        Some("force") => Trigger::Force,
        Some(_) => return Err(p.invalid("at /mode: must be equal to one of the allowed values")),
    };
    match cron::run_occurrence(s, &id, trigger, CatchUp::Once)
        .await
        .map_err(respond::state)?
    {
        Started::Ran => Ok(json!({"ok": true, "ran": true})),
        Started::Unknown => Err(unknown_job(&id).into()),
        Started::AlreadyRunning => {
            Ok(json!({"ok": true, "ran": false, "reason": "already-running"}))
        }
        Started::NotDue | Started::Skipped => {
            Ok(json!({"ok": true, "ran": false, "reason": "not-due"}))
        }
    }
}

pub async fn remove(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.remove", params)?.only(&["id", "jobId"])?;
    let id = job_id(&p)?;
    let removed = job_store::delete(&s.rt, &id).await?;
    Ok(json!({"ok": true, "removed": removed}))
}
