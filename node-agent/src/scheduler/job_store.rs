//! The cron job store: jobs are records in the state plane (`argent_cron/job.<id>`); adding
//! or removing one announces it with a `cron` event. Used by the `cron.*` methods and by the
//! agent's reminder tool.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::ServiceError;
use argent_planes::state::{list_json, modify_json, StateStore};
use argent_proto::subjects::BUCKET_CRON;

use crate::runtime::Runtime;

use super::cron;
use super::jobs::{self, job_key, unknown_job, CronJob};

/// Every stored job.
pub async fn all_jobs(state: &dyn StateStore) -> Result<Vec<CronJob>, ServiceError> {
    let mut out: Vec<CronJob> = list_json(state, BUCKET_CRON, "job.")
        .await?
        .into_iter()
        .map(|(_, job)| job)
        .collect();
    // By next wake time; jobs with none last.
    out.sort_by_key(|j| {
        (
            j.state.next_run_at_ms.is_none(),
            j.state.next_run_at_ms,
            j.created_at_ms,
        )
    });
    Ok(out)
}

/// One stored job (`None` when it does not exist or cannot be read).
pub async fn get(state: &dyn StateStore, id: &str) -> Result<Option<CronJob>, ServiceError> {
    let entry = state.get(BUCKET_CRON, &job_key(id)).await?;
    Ok(entry.and_then(|e| serde_json::from_slice(&e.value).ok()))
}

/// Creates a job (`cron.add`, and the agent's cron tool).
pub async fn create(rt: &Runtime, params: Value) -> Result<CronJob, ServiceError> {
    let job = jobs::new_job(
        params,
        uuid::Uuid::new_v4().to_string(),
        argent_proto::now_ms(),
    )?;
    let bytes = Bytes::from(serde_json::to_vec(&job).expect("jobs serialize"));
    rt.state
        .create(BUCKET_CRON, &job_key(&job.id), bytes)
        .await?;
    cron::publish(
        rt,
        json!({"jobId": job.id, "action": "added", "nextRunAtMs": job.state.next_run_at_ms}),
    )
    .await;
    Ok(job)
}

/// Applies a `cron.update` patch to a job (compare-and-set on its record) and announces it.
pub async fn update(rt: &Runtime, id: &str, patch: &Value) -> Result<CronJob, ServiceError> {
    let now = argent_proto::now_ms();
    let updated = modify_json(
        rt.state.as_ref(),
        BUCKET_CRON,
        &job_key(id),
        |job: Option<CronJob>| {
            let job = job.ok_or_else(|| unknown_job(id))?;
            let updated = jobs::apply_patch(&job, patch, now)?;
            Ok::<_, ServiceError>(Some((updated.clone(), updated)))
        },
    )
    .await?
    .ok_or_else(|| unknown_job(id))?;
    cron::publish(
        rt,
        json!({"jobId": id, "action": "updated", "nextRunAtMs": updated.state.next_run_at_ms}),
    )
    .await;
    Ok(updated)
}

/// Deletes a job (`cron.remove`, and the agent's cron tool); whether it existed.
pub async fn delete(rt: &Runtime, id: &str) -> Result<bool, ServiceError> {
    let key = job_key(id);
    if rt.state.get(BUCKET_CRON, &key).await?.is_none() {
        return Ok(false);
    }
    rt.state.delete(BUCKET_CRON, &key).await?;
    cron::publish(rt, json!({"jobId": id, "action": "removed"})).await;
    Ok(true)
}
