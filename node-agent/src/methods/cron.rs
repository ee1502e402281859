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
    match (p.optional_str("id")?, p.optional_str("jobId")?) {
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

pub async fn runs(s: &Scheduler, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("cron.runs", params)?.only(&["id", "jobId", "limit"])?;
    let id = job_id(&p)?;
    let limit = p.optional_u64("limit", 1)?.unwrap_or(200);
    if limit > 5000 {
        return Err(p.invalid("at /limit: must be <= 5000"));
    }
    let mut entries =
        s.rt.transcripts
            .read(&runs_log(&id))
            .await
            .map_err(|e| match e {
                argent_planes::state::StateError::InvalidKey(_) => unknown_job(&id),
                other => other.into(),
            })?;
    let skip = entries.len().saturating_sub(limit as usize);
    entries.drain(..skip);
    Ok(json!({"entries": entries}))
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
