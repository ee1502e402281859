//! The execution worker (PROTOCOL.md §5.8): per agent, a cycle every `every` that takes up
//! to `maxTasksPerCycle` tasks from the agent's task queue and runs each as an agent turn in
//! the worker session, within `maxRunMinutes`. One cycle per agent at a time across the
//! cluster (a claim on `argent_cron/worker.<agentId>`); pause state and metrics live in that
//! record too, so they survive restarts.
//!
//! Tasks [EXT] live in `argent_tasks/<agentId>.<taskId>`; `tasks.add` and the agent's
//! `add_task` tool create them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use argent_planes::state::{list_json, modify_json, StateError, StateStore};
use argent_proto::config::parse_duration;
use argent_proto::subjects::{BUCKET_CRON, BUCKET_TASKS};

use super::claim::{release, while_beating, Claim};
use super::turn::{self, Turn};
use super::{step, Period, Scheduler, Step};
use argent_proto::config::SharedConfig;
use argent_proto::session_key::SessionKey;

pub const GLOBAL_KEY: &str = "worker-global";
const DEFAULT_EVERY: Duration = Duration::from_secs(20 * 60);
const DEFAULT_MAX_TASKS: u64 = 3;
const DEFAULT_MAX_RUN_MINUTES: u64 = 15;
const DEFAULT_SESSION: &str = "worker";
/// The reply word of a turn that cannot progress on its task.
const BLOCKED_TOKEN: &str = "TASK_BLOCKED";

pub fn key(agent_id: &str) -> String {
    format!("worker.{agent_id}")
}

/// The worker settings of one agent (its own over `agents.defaults.executionWorker`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub every: Duration,
    pub every_text: String,
    pub model: Option<String>,
    pub session_main_key: String,
    pub max_run_minutes: u64,
    pub max_tasks_per_cycle: u64,
    pub scope: String,
    pub require_evidence: bool,
    pub max_no_progress_attempts: u64,
}

impl WorkerSettings {
    pub fn of(config: &SharedConfig, agent_id: &str) -> Self {
        let own = config.execution_worker(agent_id);
        let every = own
            .every
            .as_ref()
            .and_then(|v| parse_duration(v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_EVERY);
        WorkerSettings {
            enabled: own.enabled.unwrap_or(false),
            every,
            every_text: own
                .every
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| humantime::format_duration(every).to_string()),
            model: own.model,
            session_main_key: own
                .session_main_key
                .unwrap_or_else(|| DEFAULT_SESSION.to_string()),
            max_run_minutes: own
                .max_run_minutes
                .unwrap_or(DEFAULT_MAX_RUN_MINUTES)
                .max(1),
            max_tasks_per_cycle: own.max_tasks_per_cycle.unwrap_or(DEFAULT_MAX_TASKS).max(1),
            scope: own.scope.unwrap_or_else(|| "agent".to_string()),
            require_evidence: own.require_evidence.unwrap_or(false),
            max_no_progress_attempts: own.max_no_progress_attempts.unwrap_or(3).max(1),
        }
    }

    pub fn to_value(&self) -> Value {
        json!({
            "every": self.every_text, "model": self.model, "sessionMainKey": self.session_main_key,
            "maxRunMinutes": self.max_run_minutes, "maxTasksPerCycle": self.max_tasks_per_cycle,
            "scope": self.scope, "requireEvidence": self.require_evidence,
            "maxNoProgressAttempts": self.max_no_progress_attempts,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub total_runs: u64,
    pub total_skips: u64,
    pub total_attempted: u64,
    pub total_progressed: u64,
    pub total_completed: u64,
    pub total_blocked: u64,
    pub last_status: Option<String>,
    pub last_reason: Option<String>,
    pub last_attempted: u64,
    pub last_progressed: u64,
    pub last_completed: u64,
    pub last_blocked: u64,
    pub last_finished_at: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    #[serde(flatten)]
    pub period: Period,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub rerun_requested: bool,
    #[serde(default)]
    pub last_dispatch_requested_at: Option<u64>,
    #[serde(default)]
    pub last_dispatch_reason: Option<String>,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub claim: Option<Claim>,
}

super::periodic_record!(WorkerRecord);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub agent_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `queued`, `running`, `completed` or `blocked`.
    pub status: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

pub fn task_key(agent_id: &str, id: &str) -> String {
    format!("{agent_id}.{id}")
}

/// Adds a task to the agent's queue.
pub async fn add_task(
    store: &dyn StateStore,
    agent_id: &str,
    title: &str,
    detail: Option<String>,
) -> Result<Task, StateError> {
    let now = argent_proto::now_ms();
    let task = Task {
        id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent_id.to_string(),
        title: title.to_string(),
        detail,
        status: "queued".into(),
        created_at_ms: now,
        updated_at_ms: now,
        attempts: 0,
        result: None,
    };
    let bytes = bytes::Bytes::from(serde_json::to_vec(&task).expect("tasks serialize"));
    store
        .create(BUCKET_TASKS, &task_key(agent_id, &task.id), bytes)
        .await?;
    Ok(task)
}

/// The agent's tasks, oldest first.
pub async fn tasks(store: &dyn StateStore, agent_id: &str) -> Result<Vec<Task>, StateError> {
    let mut out: Vec<Task> = list_json(store, BUCKET_TASKS, &format!("{agent_id}."))
        .await?
        .into_iter()
        .map(|(_, task)| task)
        .collect();
    out.sort_by_key(|t| t.created_at_ms);
    Ok(out)
}

pub fn globally_paused(s: &Scheduler) -> bool {
    s.record::<Value>(GLOBAL_KEY)
        .and_then(|v| v.get("paused").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// An agent's worker record as stored (the default when it has none or it is unreadable).
pub async fn stored_record(
    state: &dyn StateStore,
    agent_id: &str,
) -> Result<WorkerRecord, StateError> {
    Ok(state
        .get(BUCKET_CRON, &key(agent_id))
        .await?
        .and_then(|e| serde_json::from_slice(&e.value).ok())
        .unwrap_or_default())
}

/// Changes an agent's worker record (compare-and-set), created when missing.
pub async fn modify_record(
    state: &dyn StateStore,
    agent_id: &str,
    mut change: impl FnMut(&mut WorkerRecord),
) -> Result<WorkerRecord, StateError> {
    let written = modify_json(
        state,
        BUCKET_CRON,
        &key(agent_id),
        |r: Option<WorkerRecord>| {
            let mut r = r.unwrap_or_default();
            change(&mut r);
            Ok::<_, StateError>(Some((r.clone(), r)))
        },
    )
    .await?;
    Ok(written.unwrap_or_default())
}

/// Whether every agent's worker is paused, as stored (`execution.worker.pause` without an
/// agent).
pub async fn stored_global_pause(state: &dyn StateStore) -> Result<bool, StateError> {
    Ok(state
        .get(BUCKET_CRON, GLOBAL_KEY)
        .await?
        .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
        .and_then(|v| v["paused"].as_bool())
        .unwrap_or(false))
}

pub async fn set_global_pause(state: &dyn StateStore, paused: bool) -> Result<(), StateError> {
    let bytes = bytes::Bytes::from(json!({"paused": paused}).to_string());
    state.put(BUCKET_CRON, GLOBAL_KEY, bytes).await?;
    Ok(())
}

/// One scheduler pass over the agents whose worker is enabled.
pub fn tick(s: &Arc<Scheduler>, config: &SharedConfig, now: u64) {
    let paused_all = globally_paused(s);
    for agent in &config.agents().agents {
        let settings = WorkerSettings::of(config, &agent.id);
        if !settings.enabled {
            continue;
        }
        let key = key(&agent.id);
        let every = Some(settings.every.as_millis() as u64);
        let record = s.record::<WorkerRecord>(&key);
        let paused = paused_all || record.as_ref().is_some_and(|r| r.paused);
        let requested = record.as_ref().is_some_and(|r| r.rerun_requested);
        let (s2, agent_id) = (s.clone(), agent.id.clone());
        match step(record.as_ref(), every, now, requested) {
            Step::SettleDead(claim) => {
                s.spawn_for(
                    key,
                    async move { settle_dead(&s2, &agent_id, &claim).await },
                )
            }
            Step::Run if !paused => s.spawn_for(key, async move { cycle(&s2, &agent_id).await }),
            Step::Reschedule => s.reschedule::<WorkerRecord>(key, every),
            Step::Run | Step::Nothing => {}
        }
    }
}

/// What one cycle did.
#[derive(Debug, Default)]
struct CycleReport {
    attempted: u64,
    progressed: u64,
    completed: u64,
    blocked: u64,
    reason: Option<String>,
}

/// Claims and runs one cycle of the agent's worker.
async fn cycle(s: &Arc<Scheduler>, agent_id: &str) {
    let store = s.rt.state.as_ref();
    let key = key(agent_id);
    let now = argent_proto::now_ms();
    let claim = Claim::new(s.node_id(), now);
    let claimed = modify_json(store, BUCKET_CRON, &key, |r: Option<WorkerRecord>| {
        let Some(mut r) = r.filter(|r| r.claim.is_none() && !r.paused) else {
            return Ok::<_, StateError>(None);
        };
        if !r.rerun_requested && !r.period.is_due(now) {
            return Ok(None);
        }
        r.rerun_requested = false;
        r.claim = Some(claim.clone());
        Ok(Some((r, ())))
    })
    .await;
    if !matches!(claimed, Ok(Some(()))) {
        return;
    }
    let config = s.rt.config.current().await.unwrap_or_default();
    let settings = WorkerSettings::of(&config, agent_id);
    let report = while_beating::<WorkerRecord, _>(
        store,
        BUCKET_CRON,
        &key,
        &claim,
        work(s, agent_id, &settings, now),
    )
    .await;
    let every = settings.every.as_millis() as u64;
    let _ = release::<WorkerRecord>(store, BUCKET_CRON, &key, &claim, |r| {
        let m = &mut r.metrics;
        let skipped = report.attempted == 0;
        if skipped {
            m.total_skips += 1;
        } else {
            m.total_runs += 1;
        }
        m.total_attempted += report.attempted;
        m.total_progressed += report.progressed;
        m.total_completed += report.completed;
        m.total_blocked += report.blocked;
        m.last_attempted = report.attempted;
        m.last_progressed = report.progressed;
        m.last_completed = report.completed;
        m.last_blocked = report.blocked;
        m.last_status = Some(
            if skipped {
                "skipped"
            } else if report.progressed < report.attempted {
                "error"
            } else {
                "ok"
            }
            .into(),
        );
        m.last_reason = report.reason.clone();
        m.last_finished_at = Some(argent_proto::now_ms());
        r.period.ran(Some(now), Some(every));
    })
    .await;
}

/// Runs up to `maxTasksPerCycle` queued tasks, one agent turn each, within the deadline.
async fn work(
    s: &Arc<Scheduler>,
    agent_id: &str,
    settings: &WorkerSettings,
    at: u64,
) -> CycleReport {
    let store = s.rt.state.as_ref();
    let mut report = CycleReport::default();
    let deadline = Instant::now() + Duration::from_secs(settings.max_run_minutes * 60);
    let queued = match tasks(store, agent_id).await {
        Ok(all) => all.into_iter().filter(|t| t.status == "queued"),
        Err(err) => {
            report.reason = Some(format!("cannot read the task queue: {err}"));
            return report;
        }
    };
    let session_key = SessionKey::of_agent(agent_id, &settings.session_main_key).into_string();
    for task in queued.take(settings.max_tasks_per_cycle as usize) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            report.reason = Some("maxRunMinutes reached".into());
            break;
        }
        if !take_task(store, &task).await {
            continue;
        }
        report.attempted += 1;
        let mut message = format!("Execution worker task {}: {}", task.id, task.title);
        if let Some(detail) = &task.detail {
            message.push_str(&format!("\n\n{detail}"));
        }
        message.push_str(&format!("\n\nWork on this task now. If you cannot make progress, start your answer with {BLOCKED_TOKEN}: and say why."));
        let outcome = turn::run(
            &s.rt,
            Turn {
                agent_id,
                session_key: &session_key,
                run_id: &format!("task-{}-{at}", task.id),
                message,
                timeout: left,
                method: "execution.worker",
                extra_system_prompt: None,
            },
        )
        .await;
        let status = if !outcome.ok {
            report.reason = Some(outcome.text.clone());
            if task.attempts + 1 >= settings.max_no_progress_attempts {
                report.blocked += 1;
                "blocked"
            } else {
                "queued"
            }
        } else if outcome.text.trim_start().starts_with(BLOCKED_TOKEN) {
            report.progressed += 1;
            report.blocked += 1;
            "blocked"
        } else {
            report.progressed += 1;
            report.completed += 1;
            "completed"
        };
        settle_task(store, &task, status, &outcome.text).await;
    }
    if report.attempted == 0 && report.reason.is_none() {
        report.reason = Some("no queued tasks".into());
    }
    report
}

/// Moves a task from `queued` to `running`; false when someone else took it.
async fn take_task(store: &dyn StateStore, task: &Task) -> bool {
    let key = task_key(&task.agent_id, &task.id);
    matches!(
        modify_json(store, BUCKET_TASKS, &key, |t: Option<Task>| {
            let Some(mut t) = t.filter(|t| t.status == "queued") else {
                return Ok::<_, StateError>(None);
            };
            t.status = "running".into();
            t.updated_at_ms = argent_proto::now_ms();
            Ok(Some((t, ())))
        })
        .await,
        Ok(Some(()))
    )
}

async fn settle_task(store: &dyn StateStore, task: &Task, status: &str, result: &str) {
    let key = task_key(&task.agent_id, &task.id);
    let written = modify_json(store, BUCKET_TASKS, &key, |t: Option<Task>| {
        let Some(mut t) = t else {
            return Ok::<_, StateError>(None);
        };
        t.status = status.to_string();
        t.attempts += 1;
        t.updated_at_ms = argent_proto::now_ms();
        t.result = Some(result.chars().take(2000).collect());
        Ok(Some((t, ())))
    })
    .await;
    if let Err(err) = written {
        tracing::warn!(task = %task.id, %err, "task outcome not stored");
    }
}

/// A cycle whose node died: its running tasks go back to the queue, the cycle is counted
/// as failed.
async fn settle_dead(s: &Arc<Scheduler>, agent_id: &str, claim: &Claim) {
    let store = s.rt.state.as_ref();
    if let Ok(all) = tasks(store, agent_id).await {
        for task in all.iter().filter(|t| t.status == "running") {
            settle_task(
                store,
                task,
                "queued",
                &format!("node-agent {} stopped during the task", claim.node),
            )
            .await;
        }
    }
    let reason = format!("node-agent {} stopped during the cycle", claim.node);
    let _ = release::<WorkerRecord>(store, BUCKET_CRON, &key(agent_id), claim, |r| {
        r.metrics.last_status = Some("error".into());
        r.metrics.last_reason = Some(reason.clone());
        r.metrics.last_finished_at = Some(argent_proto::now_ms());
        let every = r.period.every_ms;
        r.period.ran(None, every);
    })
    .await;
}
