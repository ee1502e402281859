//! The agent runtime of a node-agent: runs chat turns against model providers and streams
//! them to every gateway (PROTOCOL.md §4.2 `agent`/`chat`, §5.1, §5.2, §5.4, §5.6).
//!
//! * [`runs`] — run records (dedupe cache, results) and session leases (one writer per run).
//! * [`run`] — executing one run: the agent loop, event emission, transcript.
//! * [`control`] — starting and aborting runs, and the provider check before a turn.
//! * [`compaction`] — compaction and the reset check, which must not race a turn.
//! * [`providers`] — model providers through `genai`.
//! * [`sessions`] — session entries and short chat links. [`tools`] — the [`tools::ToolHost`] the runtime
//!   offers the model (the tools themselves are `crate::tools`).
//! * [`accounting`] — usage, cost and message counts read from transcripts.
//! * [`message_view`] — how transcript messages look to protocol-4 clients (ids, cut text).
//! * [`transcript_cache`] — the logs of the sessions this node runs, kept between turns.
//!
//! Cluster behaviour: whichever node takes a session's lease drives its runs one after
//! another; other nodes append to the lease's queue. Every node watches the leases; one
//! that stops beating (its node died) is taken over by a live node, which fails the run the
//! dead node was executing and continues with the queue. Aborts, steering messages and
//! completions travel as control messages on the event bus.

pub mod accounting;
pub mod compaction;
pub mod control;
pub mod message_view;
pub mod providers;
pub mod run;
pub mod runs;
pub mod sessions;
pub mod thinking;
pub mod tools;
pub mod transcript_cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::ServiceError;
use argent_planes::bus::{BusEvent, BusMessage, EventBus};
use argent_planes::members::Members;
use argent_planes::state::StateStore;
use argent_planes::transcripts::TranscriptLog;
use argent_proto::subjects::{self, BUCKET_LEASES};

use self::runs::{Lease, LeaseHandle, Runs};
use self::sessions::Sessions;
use self::tools::ToolHost;
use self::transcript_cache::TranscriptCache;
use crate::shared_config::ConfigSource;

/// A lease whose beat has not changed for this long belongs to a dead node.
pub const LEASE_STALE_AFTER: Duration = Duration::from_secs(5);

/// Controls of a run executing on this node.
pub(crate) struct LocalRun {
    pub session_key: String,
    pub abort: watch::Sender<Option<String>>,
    pub steer: mpsc::Sender<Steering>,
}

/// A message steered into a running turn, and the idempotency key of the `chat.send` that
/// carried it (the dashboard recognises its own message by it).
#[derive(Debug)]
pub struct Steering {
    pub text: String,
    pub idempotency_key: Option<String>,
}

pub struct Runtime {
    pub node_id: String,
    pub state: Arc<dyn StateStore>,
    pub bus: Arc<dyn EventBus>,
    pub transcripts: Arc<dyn TranscriptLog>,
    /// The same logs, cached for the sessions whose turns this node runs: every write to a
    /// session's log during a run goes through it.
    pub transcript_cache: TranscriptCache,
    pub runs: Runs,
    pub sessions: Sessions,
    /// The shared config, one parsed snapshot per stored revision.
    pub config: ConfigSource,
    /// The agent's tools.
    pub tools: Arc<dyn ToolHost>,
    pub(crate) local: Mutex<HashMap<String, LocalRun>>,
    /// Ids of runs that finished anywhere in the cluster (wakes waiters).
    done: broadcast::Sender<String>,
    /// Flips to true when the node stops: runs end and leases are handed back.
    pub(crate) stopping: watch::Sender<bool>,
    leases: Members<Lease>,
}

impl Runtime {
    pub fn start(
        node_id: String,
        state: Arc<dyn StateStore>,
        bus: Arc<dyn EventBus>,
        transcripts: Arc<dyn TranscriptLog>,
        tools: Arc<dyn ToolHost>,
    ) -> Arc<Self> {
        let (done, _) = broadcast::channel(1024);
        let runtime = Arc::new(Runtime {
            node_id,
            runs: Runs::new(state.clone()),
            sessions: Sessions::new(state.clone(), bus.clone()),
            config: ConfigSource::new(state.clone()),
            leases: Members::watch(state.clone(), BUCKET_LEASES, LEASE_STALE_AFTER),
            state,
            bus,
            transcript_cache: TranscriptCache::new(transcripts.clone()),
            transcripts,
            tools,
            local: Mutex::new(HashMap::new()),
            done,
            stopping: watch::channel(false).0,
        });
        tokio::spawn(control_loop(Arc::downgrade(&runtime)));
        tokio::spawn(sweep_loop(Arc::downgrade(&runtime)));
        runtime
    }

    /// Ends local runs (with an error saying why) and hands their leases back.
    pub fn stop(&self) {
        let _ = self.stopping.send(true);
    }

    pub fn active_runs(&self) -> usize {
        self.local.lock().len()
    }

    /// What this node's watch last saw of the session's lease.
    pub(crate) fn lease_seen(&self, session_key: &str) -> runs::Seen {
        let key = runs::lease_key(session_key);
        if self.leases.get(&key).is_some() {
            runs::Seen::Held
        } else if let Some(revision) = self.leases.deleted_at(&key) {
            runs::Seen::Released(revision)
        } else {
            runs::Seen::Nothing
        }
    }

    /// Every session lease whose holder is alive: the cluster's run lanes, one per session
    /// with a run active or queued.
    pub fn live_leases(&self) -> Vec<Lease> {
        self.leases.live()
    }

    /// Publishes a broadcast event (serialized once, here).
    pub async fn publish(&self, name: &str, payload: &Value, droppable: Option<bool>) {
        let mut event = BusEvent::new(name, payload);
        event.droppable = droppable;
        if let Err(err) = self.bus.publish(event).await {
            tracing::warn!(event = name, %err, "event not published");
        }
    }

    /// Every message of a session's transcript, oldest first (empty when it has none).
    pub async fn transcript(&self, session_id: &str) -> Result<Vec<Value>, ServiceError> {
        self.transcripts
            .read(session_id)
            .await
            .map_err(ServiceError::from)
    }

    pub async fn control(&self, name: &str, body: Value) {
        self.publish(name, &body, None).await
    }

    /// Waits until the run has a final record, or `timeout` passes; `None` then.
    pub async fn wait_final(
        &self,
        run_id: &str,
        timeout: Duration,
    ) -> Result<Option<runs::RunRecord>, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut done = self.done.subscribe();
        loop {
            if let Some(record) = self.runs.get(run_id).await? {
                if record.status.is_final() {
                    return Ok(Some(record));
                }
            }
            // Woken by the completion message; the poll is the backstop for a missed one.
            let poll = tokio::time::Instant::now() + Duration::from_secs(2);
            let until = poll.min(deadline);
            loop {
                tokio::select! {
                    finished = done.recv() => match finished {
                        Ok(id) if id == run_id => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(self.runs.get(run_id).await?.filter(|r| r.status.is_final()));
            }
        }
    }

    /// Starts driving a session whose lease this node just took.
    pub(crate) fn drive(self: &Arc<Self>, lease: LeaseHandle, start: run::Start) {
        let runtime = self.clone();
        tokio::spawn(async move { run::drive(runtime, lease, start).await });
    }
}

async fn control_loop(runtime: std::sync::Weak<Runtime>) {
    loop {
        let Some(rt) = runtime.upgrade() else { return };
        let subscribed = rt.bus.subscribe_prefix("_ctl.run.").await;
        drop(rt);
        match subscribed {
            Ok(mut messages) => {
                while let Some(message) = messages.recv().await {
                    let BusMessage::Event(event) = message else {
                        continue;
                    };
                    let Some(rt) = runtime.upgrade() else { return };
                    let Ok(body) = serde_json::from_slice::<Value>(&event.payload) else {
                        continue;
                    };
                    rt.on_control(&event.name, &body);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot subscribe to run control messages"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Runtime {
    fn on_control(&self, name: &str, body: &Value) {
        let run_id = body["runId"].as_str().unwrap_or_default();
        tracing::debug!(name, run = run_id, "run control message");
        match name {
            subjects::CONTROL_RUN_ABORT => {
                let reason = body["reason"].as_str().unwrap_or("rpc").to_string();
                let local = self.local.lock();
                for (id, run) in local.iter() {
                    let session = body["sessionKey"].as_str();
                    if id == run_id || (run_id.is_empty() && session == Some(&run.session_key)) {
                        let _ = run.abort.send(Some(reason.clone()));
                    }
                }
            }
            subjects::CONTROL_RUN_STEER => {
                if let (Some(run), Some(text)) =
                    (self.local.lock().get(run_id), body["message"].as_str())
                {
                    tracing::debug!(run = run_id, "steering message for a local run");
                    let steering = Steering {
                        text: text.to_string(),
                        idempotency_key: body["idempotencyKey"].as_str().map(str::to_string),
                    };
                    if run.steer.try_send(steering).is_err() {
                        tracing::warn!(run = run_id, "steering queue full; message dropped");
                    }
                }
            }
            subjects::CONTROL_RUN_DONE => {
                let _ = self.done.send(run_id.to_string());
            }
            _ => {}
        }
    }
}

/// Takes over leases whose holder stopped beating, and forgets old run records.
async fn sweep_loop(runtime: std::sync::Weak<Runtime>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        ticker.tick().await;
        ticks += 1;
        let Some(rt) = runtime.upgrade() else { return };
        if *rt.stopping.borrow() {
            return;
        }
        for key in rt.leases.stale_keys() {
            let Some(seen) = rt.leases.get(&key) else {
                continue;
            };
            // Our own run, still executing here (e.g. a slow store): not dead.
            let ours = seen.node_id == rt.node_id
                && seen
                    .active
                    .as_ref()
                    .is_some_and(|id| rt.local.lock().contains_key(id));
            if ours {
                continue;
            }
            match LeaseHandle::take_over(&rt.state, &seen, &rt.node_id).await {
                Ok(Some(handle)) => {
                    tracing::warn!(session = %seen.session_key, dead = %seen.node_id, "took over the lease of a silent node");
                    rt.drive(handle, run::Start::Recovered);
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, "lease takeover failed"),
            }
        }
        if ticks.is_multiple_of(60) {
            match rt.runs.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "old run records removed"),
                Err(err) => tracing::debug!(%err, "run record cleanup failed"),
            }
        }
    }
}

/// `{runId, status}` of a started run, or `{runId, status:"in_flight"}`-style answers.
pub fn status(run_id: &str, status: &str) -> Value {
    json!({"runId": run_id, "status": status})
}
