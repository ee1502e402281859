//! Claiming and executing cron occurrences, exactly once across the cluster.
//!
//! Catch-up policy (`cron.catchUp`): occurrences found late by less than [`MISSED_GRACE`]
//! (a busy or restarting scheduler) all run, one after another. Occurrences missed by more
//! (no scheduler ran: the whole cluster was down) run once (`"once"`, the default) or not at
//! all (`"skip"`, recorded as `skipped`); the job then continues at its next occurrence
//! after now. An `at` job always runs: it stays due until it succeeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use argent_planes::state::{modify_json, StateError};
use argent_proto::config::CatchUp;
use argent_proto::subjects::BUCKET_CRON;

use super::claim::{release, while_beating, Claim};
use super::jobs::{job_key, run_entry, runs_log, CronJob};
use super::turn::{self, Turn};
use super::{heartbeat, Scheduler};
use crate::runtime::Runtime;
use argent_proto::config::SharedConfig;
use argent_proto::session_key::SessionKey;

/// Lateness after which an occurrence counts as missed (see the module docs).
pub const MISSED_GRACE_MS: u64 = 60_000;
/// An `agentTurn` without `timeoutSeconds` may run this long.
const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(600);

/// What starts an occurrence.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// The scheduler (or `cron.run` `due`) found it due at this time.
    Due(u64),
    /// `cron.run` `force`: now, whatever the schedule says.
    Force,
}

/// How a claim attempt ended.
#[derive(Debug)]
pub enum Started {
    /// This node ran the occurrence.
    Ran,
    /// Not due (any more), disabled, or someone else holds it.
    NotDue,
    AlreadyRunning,
    /// Missed and skipped by the catch-up policy.
    Skipped,
    Unknown,
}

/// One scheduler pass: start due jobs, settle claims of dead nodes.
pub fn tick(s: &Arc<Scheduler>, config: &SharedConfig, now: u64) {
    let enabled = config.cron_enabled();
    let policy = config.cron_catch_up();
    for (key, job) in s.records::<CronJob>("job.") {
        if let Some(claim) = job.state.claim.clone() {
            if claim.is_stale(now) {
                let s2 = s.clone();
                s.spawn_for(key, async move { settle_dead(&s2, &job.id, &claim).await });
            }
            continue;
        }
        let Some(due) = job.state.next_run_at_ms else {
            continue;
        };
        if !enabled || !job.enabled || due > now {
            continue;
        }
        let s2 = s.clone();
        s.spawn_for(key, async move {
            if let Err(err) = run_occurrence(&s2, &job.id, Trigger::Due(due), policy).await {
                tracing::warn!(job = %job.id, %err, "cron occurrence not started");
            }
        });
    }
}

/// Claims the occurrence and, when this node won it, runs it to the end.
pub async fn run_occurrence(
    s: &Arc<Scheduler>,
    id: &str,
    trigger: Trigger,
    policy: CatchUp,
) -> Result<Started, StateError> {
    let store = s.rt.state.as_ref();
    let key = job_key(id);
    let now = argent_proto::now_ms();
    let node = s.node_id().to_string();
    let mut refused = Started::NotDue;
    let claimed = modify_json(store, BUCKET_CRON, &key, |job: Option<CronJob>| {
        let Some(mut job) = job else {
            refused = Started::Unknown;
            return Ok::<_, StateError>(None);
        };
        if job.state.claim.is_some() {
            refused = Started::AlreadyRunning;
            return Ok(None);
        }
        let occurrence = match trigger {
            Trigger::Force => now,
            Trigger::Due(due) => {
                if !job.enabled || job.state.next_run_at_ms != Some(due) || due > now {
                    refused = Started::NotDue;
                    return Ok(None);
                }
                let missed = now.saturating_sub(due) > MISSED_GRACE_MS;
                job.state.next_run_at_ms = job.next_run(if missed { now } else { due });
                if missed && policy == CatchUp::Skip && !job.is_at() {
                    return Ok(Some((job.clone(), (job, None))));
                }
                due
            }
        };
        let claim = Claim::new(&node, occurrence);
        job.state.claim = Some(claim.clone());
        job.state.running_at_ms = Some(now);
        Ok(Some((job.clone(), (job, Some(claim)))))
    })
    .await?;
    let Some((job, claim)) = claimed else {
        return Ok(refused);
    };
    let Some(claim) = claim else {
        let missed_at = match trigger {
            Trigger::Due(due) => due,
            Trigger::Force => now,
        };
        let detail = "missed while no scheduler was running (cron.catchUp is \"skip\")";
        record_outcome(
            s,
            &job,
            "skipped",
            missed_at,
            0,
            detail,
            job.state.next_run_at_ms,
        )
        .await;
        return Ok(Started::Skipped);
    };
    publish(
        &s.rt,
        json!({"jobId": job.id, "action": "started", "runAtMs": claim.occurrence_ms}),
    )
    .await;
    let started = Instant::now();
    let (ok, detail) = while_beating::<CronJob, _>(
        store,
        BUCKET_CRON,
        &key,
        &claim,
        execute(s, &job, claim.occurrence_ms),
    )
    .await;
    let duration = started.elapsed().as_millis() as u64;
    let status = if ok { "ok" } else { "error" };
    if !finish(s, &job, &claim, status, &detail, duration).await? {
        tracing::warn!(job = %job.id, "the occurrence was settled by another node while it ran");
    }
    Ok(Started::Ran)
}

/// Writes the outcome into the job (if it still holds `claim`), deletes a succeeded `at`
/// job marked `deleteAfterRun`, and records the run. False when someone else settled it.
async fn finish(
    s: &Arc<Scheduler>,
    job: &CronJob,
    claim: &Claim,
    status: &str,
    detail: &str,
    duration_ms: u64,
) -> Result<bool, StateError> {
    let store = s.rt.state.as_ref();
    let key = job_key(&job.id);
    let now = argent_proto::now_ms();
    let mut ended = None;
    let settled = release::<CronJob>(store, BUCKET_CRON, &key, claim, |record| {
        record.state.running_at_ms = None;
        record.state.last_run_at_ms = Some(claim.occurrence_ms.min(now));
        record.state.last_status = Some(status.to_string());
        record.state.last_error = (status != "ok").then(|| detail.to_string());
        record.state.last_duration_ms = Some(duration_ms);
        record.state.last_execution_mode = Some(
            record
                .execution_mode
                .clone()
                .unwrap_or_else(|| "live".into()),
        );
        if record.is_at() {
            record.state.next_run_at_ms = record.next_run(now);
            if status == "ok" && record.delete_after_run != Some(true) {
                record.enabled = false;
            }
        }
        ended = Some(record.clone());
    })
    .await?;
    let Some(ended) = ended.filter(|_| settled.is_some()) else {
        return Ok(false);
    };
    record_outcome(
        s,
        &ended,
        status,
        claim.occurrence_ms,
        duration_ms,
        detail,
        ended.state.next_run_at_ms,
    )
    .await;
    if ended.is_at() && status == "ok" && ended.delete_after_run == Some(true) {
        store.delete(BUCKET_CRON, &key).await?;
        publish(&s.rt, json!({"jobId": ended.id, "action": "removed"})).await;
    }
    Ok(true)
}

/// A claim whose node died: the occurrence is marked failed, never run a second time.
async fn settle_dead(s: &Arc<Scheduler>, id: &str, claim: &Claim) {
    let detail = format!(
        "node-agent {} stopped while running this occurrence; it was not run again",
        claim.node
    );
    let Ok(Some(job)) = s.rt.state.get(BUCKET_CRON, &job_key(id)).await else {
        return;
    };
    let Ok(job) = serde_json::from_slice::<CronJob>(&job.value) else {
        return;
    };
    let duration = argent_proto::now_ms().saturating_sub(claim.started_at_ms);
    match finish(s, &job, claim, "error", &detail, duration).await {
        Ok(true) => {
            tracing::warn!(job = %id, node = %claim.node, "settled the occurrence of a dead node")
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(job = %id, %err, "cannot settle a dead node's occurrence"),
    }
}

/// Appends the run to the job's history and announces it (`cron` `finished`).
async fn record_outcome(
    s: &Arc<Scheduler>,
    job: &CronJob,
    status: &str,
    run_at_ms: u64,
    duration_ms: u64,
    detail: &str,
    next_run_at_ms: Option<u64>,
) {
    let entry = run_entry(
        &job.id,
        status,
        run_at_ms,
        duration_ms,
        detail,
        next_run_at_ms,
        s.node_id(),
    );
    if let Err(err) = s.rt.transcripts.append(&runs_log(&job.id), &entry).await {
        tracing::warn!(job = %job.id, %err, "cron run not recorded");
    }
    let mut event = json!({
        "jobId": job.id, "action": "finished", "status": status, "runAtMs": run_at_ms,
        "durationMs": duration_ms, "nextRunAtMs": next_run_at_ms,
        "executionMode": job.execution_mode.clone().unwrap_or_else(|| "live".into()),
    });
    event[if status == "ok" { "summary" } else { "error" }] = json!(detail);
    publish(&s.rt, event).await;
}

/// A `cron` event (droppable: dashboards re-read `cron.list`).
pub async fn publish(rt: &Runtime, payload: Value) {
    rt.publish("cron", &payload, Some(true)).await;
}

/// Runs the payload: `(succeeded, summary or error)`.
async fn execute(s: &Arc<Scheduler>, job: &CronJob, occurrence_ms: u64) -> (bool, String) {
    let config = match s.rt.config.current().await {
        Ok(config) => config,
        Err(err) => return (false, format!("cannot read the config: {err}")),
    };
    let agents = config.agents();
    let agent_id = job
        .agent_id
        .clone()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_else(|| agents.default_id.clone());
    if agents.get(&agent_id).is_none() {
        return (false, format!("unknown agent id \"{agent_id}\""));
    }
    let payload = &job.payload;
    let text = |field: &str| {
        payload
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match job.payload_kind() {
        "systemEvent" => deliver_to_main(s, job, &agent_id, text("text")).await,
        "audioAlert" => {
            let urgency = payload.get("urgency").and_then(Value::as_str).unwrap_or("info");
            let title = payload.get("title").and_then(Value::as_str);
            let line = match title {
                Some(title) => format!("[audio alert, {urgency}] {title}: {}", text("message")),
                None => format!("[audio alert, {urgency}] {}", text("message")),
            };
            deliver_to_main(s, job, &agent_id, line).await
        }
        "agentTurn" => {
            let timeout = payload
                .get("timeoutSeconds")
                .and_then(Value::as_u64)
                .filter(|t| *t > 0)
                .map_or(DEFAULT_TURN_TIMEOUT, Duration::from_secs);
            let session_key = SessionKey::of_agent(&agent_id, &format!("cron:{}", job.id));
            let session_key = session_key.as_str();
            let run_id = format!("cron-{}-{occurrence_ms}", job.id);
            let outcome = turn::run(
                &s.rt,
                Turn {
                    agent_id: &agent_id,
                    session_key,
                    run_id: &run_id,
                    message: text("message"),
                    timeout,
                    method: "cron",
                    extra_system_prompt: None,
                },
            )
            .await;
            announce(s, job, &agent_id, outcome.ok, &outcome.text).await
        }
        "vipEmailScan" => (false, "payload kind vipEmailScan needs the email integration, which this Argent cluster release does not include".into()),
        "slackSignalScan" => (false, "payload kind slackSignalScan needs the Slack integration, which this Argent cluster release does not include".into()),
        other => (false, format!("unknown payload kind \"{other}\"")),
    }
}

/// `main` jobs: the text joins the agent's system events for its next heartbeat turn
/// (woken now for `wakeMode:"now"`).
async fn deliver_to_main(
    s: &Arc<Scheduler>,
    job: &CronJob,
    agent_id: &str,
    text: String,
) -> (bool, String) {
    let wake = job.wake_mode == "now";
    match heartbeat::enqueue(s, agent_id, &text, wake).await {
        Ok(()) if wake => (
            true,
            format!("system event delivered; heartbeat of {agent_id} woken"),
        ),
        Ok(()) => (
            true,
            format!("system event queued for the next heartbeat of {agent_id}"),
        ),
        Err(err) => (false, format!("cannot queue the system event: {err}")),
    }
}

/// Replies that mean "nothing to say": not announced.
const SILENT: &[&str] = &["NO_REPLY", "HEARTBEAT_OK"];

/// `delivery: {mode:"announce", channel?, to?, accountId?, bestEffort?}` of an isolated
/// turn: the reply (or the failure) goes out on a chat channel. A job that names no target
/// and has no last chat to go to is not announced; a failed announcement fails the run
/// unless `bestEffort`. `(succeeded, summary or error)`.
async fn announce(
    s: &Arc<Scheduler>,
    job: &CronJob,
    agent_id: &str,
    ok: bool,
    reply: &str,
) -> (bool, String) {
    let done = (ok, summary(reply));
    let Some(delivery) = job
        .delivery
        .as_ref()
        .filter(|d| d.get("mode").and_then(Value::as_str) == Some("announce"))
    else {
        return done;
    };
    let text = if ok {
        reply.trim().to_string()
    } else {
        format!("Cron job \"{}\" failed: {}", job.name, reply.trim())
    };
    if text.is_empty() || SILENT.contains(&text.as_str()) {
        return done;
    }
    let best_effort = delivery.get("bestEffort").and_then(Value::as_bool) == Some(true);
    match s.announcer.announce(agent_id, delivery, &text).await {
        Ok(Some(to)) => (done.0, format!("{} (announced to {to})", done.1)),
        Ok(None) => done,
        Err(err) if best_effort => {
            tracing::warn!(job = %job.id, %err, "cron announcement failed (best effort)");
            (done.0, format!("{} (not announced: {err})", done.1))
        }
        Err(err) => (false, format!("the announcement failed: {err}")),
    }
}

/// At most 200 characters of a reply, for `summary`.
fn summary(text: &str) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}
