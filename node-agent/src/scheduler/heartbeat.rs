//! The agent heartbeat: a periodic agent turn in the agent's main session, one per agent
//! across the cluster, that also delivers queued system events (cron `main` jobs, `wake`).
//!
//! Per agent, `argent_cron/hb.<agentId>` holds the next due time, the queued system events
//! and the claim of the running turn. The interval is `heartbeat.every` of the agent (or of
//! `agents.defaults`); `set-heartbeats` switches all of them off and on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use argent_planes::state::{modify_json, StateError};
use argent_proto::config::SharedConfig;
use argent_proto::session_key::SessionKey;
use argent_proto::subjects::BUCKET_CRON;

use super::claim::{release, while_beating, Claim};
use super::turn::{self, Turn};
use super::{step, Period, Scheduler, Step};

/// Events waiting for one agent's heartbeat, at most (the oldest are dropped).
const MAX_QUEUED_EVENTS: usize = 50;
const SETTINGS_KEY: &str = "hb-settings";
const LAST_KEY: &str = "hb-last";
const TURN_TIMEOUT: Duration = Duration::from_secs(600);
/// The reply token of a heartbeat with nothing to report.
const OK_TOKEN: &str = "HEARTBEAT_OK";
const DEFAULT_PROMPT: &str = "Heartbeat. Read HEARTBEAT.md if it exists and follow it. Handle the system events below, if any. If nothing needs attention, reply exactly HEARTBEAT_OK.";

pub fn key(agent_id: &str) -> String {
    format!("hb.{agent_id}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemEvent {
    pub text: String,
    pub ts: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRecord {
    #[serde(flatten)]
    pub period: Period,
    #[serde(default)]
    pub wake_requested: bool,
    #[serde(default)]
    pub events: Vec<SystemEvent>,
    #[serde(default)]
    pub claim: Option<Claim>,
}

super::periodic_record!(HeartbeatRecord);

/// The agent's heartbeat interval (`None`: no periodic heartbeat).
fn prompt(config: &SharedConfig) -> String {
    config
        .heartbeat_prompt()
        .unwrap_or(DEFAULT_PROMPT)
        .to_string()
}

fn heartbeats_enabled(s: &Scheduler) -> bool {
    s.record::<Value>(SETTINGS_KEY)
        .and_then(|v| v.get("enabled").and_then(Value::as_bool))
        .unwrap_or(true)
}

/// One scheduler pass over the agents.
pub fn tick(s: &Arc<Scheduler>, config: &SharedConfig, now: u64) {
    let enabled = heartbeats_enabled(s);
    for agent in &config.agents().agents {
        let key = key(&agent.id);
        let every = config
            .heartbeat_every(&agent.id)
            .filter(|_| enabled)
            .map(|d| d.as_millis() as u64);
        let record = s.record::<HeartbeatRecord>(&key);
        let woken = record.as_ref().is_some_and(|r| r.wake_requested);
        let (s2, agent_id) = (s.clone(), agent.id.clone());
        match step(record.as_ref(), every, now, woken) {
            Step::SettleDead(claim) => {
                s.spawn_for(
                    key,
                    async move { settle_dead(&s2, &agent_id, &claim).await },
                )
            }
            Step::Run => s.spawn_for(key, async move { beat_once(&s2, &agent_id).await }),
            Step::Reschedule => s.reschedule::<HeartbeatRecord>(key, every),
            Step::Nothing => {}
        }
    }
}

/// Queues a system event for the agent's next heartbeat (`wake`: run it now).
pub async fn enqueue(
    s: &Scheduler,
    agent_id: &str,
    text: &str,
    wake: bool,
) -> Result<(), StateError> {
    let event = SystemEvent {
        text: text.to_string(),
        ts: argent_proto::now_ms(),
    };
    modify_json(
        s.rt.state.as_ref(),
        BUCKET_CRON,
        &key(agent_id),
        |r: Option<HeartbeatRecord>| {
            let mut r = r.unwrap_or_default();
            // The same text twice in a row is one event (upstream's rule: a client
            // repeating its status fills no queue).
            if r.events.last().map(|e| e.text.as_str()) != Some(event.text.as_str()) {
                r.events.push(event.clone());
            }
            let excess = r.events.len().saturating_sub(MAX_QUEUED_EVENTS);
            r.events.drain(..excess);
            r.wake_requested |= wake;
            Ok::<_, StateError>(Some((r, ())))
        },
    )
    .await?;
    Ok(())
}

/// Claims and runs one heartbeat of the agent (if nobody else does).
async fn beat_once(s: &Arc<Scheduler>, agent_id: &str) {
    let store = s.rt.state.as_ref();
    let key = key(agent_id);
    let now = argent_proto::now_ms();
    let claim = Claim::new(s.node_id(), now);
    let taken = modify_json(store, BUCKET_CRON, &key, |r: Option<HeartbeatRecord>| {
        let Some(mut r) = r.filter(|r| r.claim.is_none()) else {
            return Ok::<_, StateError>(None);
        };
        if !r.wake_requested && !r.period.is_due(now) {
            return Ok(None);
        }
        let events = std::mem::take(&mut r.events);
        r.wake_requested = false;
        r.claim = Some(claim.clone());
        Ok(Some((r, events)))
    })
    .await;
    let events = match taken {
        Ok(Some(events)) => events,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(agent = agent_id, %err, "heartbeat not claimed");
            return;
        }
    };
    let started = Instant::now();
    let (status, text) = while_beating::<HeartbeatRecord, _>(
        store,
        BUCKET_CRON,
        &key,
        &claim,
        run_turn(s, agent_id, &events, now),
    )
    .await;
    let failed = status == "failed";
    let config = s.rt.config.current().await.unwrap_or_default();
    let every = config
        .heartbeat_every(agent_id)
        .map(|d| d.as_millis() as u64);
    let _ = release::<HeartbeatRecord>(store, BUCKET_CRON, &key, &claim, |r| {
        r.period.ran(Some(now), every);
        if failed {
            // Not delivered: the events wait for the next heartbeat.
            let mut back = events.clone();
            back.append(&mut r.events);
            r.events = back;
        }
    })
    .await;
    announce(
        s,
        agent_id,
        status,
        &text,
        started.elapsed().as_millis() as u64,
    )
    .await;
}

/// The heartbeat turn: `(status, preview or reason)` as the `heartbeat` event says them.
async fn run_turn(
    s: &Arc<Scheduler>,
    agent_id: &str,
    events: &[SystemEvent],
    at: u64,
) -> (&'static str, String) {
    let config = match s.rt.config.current().await {
        Ok(config) => config,
        Err(err) => return ("failed", format!("cannot read the config: {err}")),
    };
    let mut message = prompt(&config);
    if !events.is_empty() {
        message.push_str("\n\nSystem events:");
        for event in events {
            message.push_str(&format!("\n- {}", event.text));
        }
    }
    let session_key = SessionKey::main_of(agent_id, config.agents()).into_string();
    let run_id = format!("hb-{agent_id}-{at}");
    if let Err(err) = crate::runtime::control::check_provider(&config, agent_id) {
        return ("skipped", err.to_string());
    }
    let outcome = turn::run(
        &s.rt,
        Turn {
            agent_id,
            session_key: &session_key,
            run_id: &run_id,
            message,
            timeout: TURN_TIMEOUT,
            method: "heartbeat",
            extra_system_prompt: None,
        },
    )
    .await;
    if !outcome.ok {
        return ("failed", outcome.text);
    }
    let reply = outcome.text.trim();
    if reply.is_empty() {
        ("ok-empty", String::new())
    } else if reply.replace(OK_TOKEN, "").trim().len() <= 300 && reply.contains(OK_TOKEN) {
        ("ok-token", String::new())
    } else {
        ("sent", reply.chars().take(200).collect())
    }
}

/// A claim whose node died: the heartbeat counts as failed and is rescheduled.
async fn settle_dead(s: &Arc<Scheduler>, agent_id: &str, claim: &Claim) {
    let store = s.rt.state.as_ref();
    let config = s.rt.config.current().await.unwrap_or_default();
    let every = config
        .heartbeat_every(agent_id)
        .map(|d| d.as_millis() as u64);
    let settled = release::<HeartbeatRecord>(store, BUCKET_CRON, &key(agent_id), claim, |r| {
        r.period.ran(None, every)
    })
    .await;
    if let Ok(Some(())) = settled {
        let reason = format!("node-agent {} stopped during the heartbeat", claim.node);
        announce(s, agent_id, "failed", &reason, 0).await;
    }
}

/// Publishes the `heartbeat` event and keeps it for `last-heartbeat`.
async fn announce(s: &Scheduler, agent_id: &str, status: &str, text: &str, duration_ms: u64) {
    let mut event = json!({
        "ts": argent_proto::now_ms(), "status": status, "durationMs": duration_ms,
        "agentId": agent_id,
        "indicatorType": match status { "failed" => "error", "sent" => "alert", _ => "ok" },
    });
    match status {
        "sent" => event["preview"] = json!(text),
        "failed" | "skipped" => event["reason"] = json!(text),
        _ => {}
    }
    let bytes = bytes::Bytes::from(event.to_string());
    if let Err(err) = s.rt.state.put(BUCKET_CRON, LAST_KEY, bytes).await {
        tracing::warn!(%err, "last heartbeat not stored");
    }
    s.rt.publish("heartbeat", &event, Some(true)).await;
}

/// `last-heartbeat`: the last `heartbeat` event, or null.
pub async fn last(s: &Scheduler) -> Result<Value, StateError> {
    Ok(s.rt
        .state
        .get(BUCKET_CRON, LAST_KEY)
        .await?
        .and_then(|e| serde_json::from_slice(&e.value).ok())
        .unwrap_or(Value::Null))
}

/// `set-heartbeats`: periodic heartbeats on or off for every agent.
pub async fn set_enabled(s: &Scheduler, enabled: bool) -> Result<(), StateError> {
    let bytes = bytes::Bytes::from(json!({"enabled": enabled}).to_string());
    s.rt.state.put(BUCKET_CRON, SETTINGS_KEY, bytes).await?;
    Ok(())
}
