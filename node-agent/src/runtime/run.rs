//! Executing runs on the node that holds the session's lease: the agent loop (model turns
//! with tool calls), event emission (`agent` + `chat`, §4.2) and the transcript.

use std::sync::Arc;
use std::time::Duration;

use genai::chat::{ChatMessage, ToolCall, ToolResponse};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use argent_proto::subjects;
use argent_proto::version::MessageView;

use super::providers::{self, ModelChoice, Providers, TurnEvent};
use super::runs::{ConnRef, LeaseError, LeaseHandle, RunRecord, RunStatus, BEAT_INTERVAL};
use super::sessions::SessionEntry;
use super::{message_view, thinking};
use super::{LocalRun, Runtime, Steering};
use crate::error::ServiceError;
use crate::workspace::{self, BOOTSTRAP_FILES};
use argent_proto::agents::AgentsConfig;
use argent_proto::config::SharedConfig;

/// `chat` deltas (and the `agent` assistant events beside them) at most this often (§4.2).
const DELTA_INTERVAL: Duration = Duration::from_millis(150);
/// Model turns per run (each tool round is one more).
const MAX_TURNS: usize = 8;
const DEFAULT_RUN_TIMEOUT_MS: u64 = 600_000;

/// Why a run stopped driving its session.
pub(crate) enum Stop {
    /// Another node took the lease over: write nothing more.
    Lost,
    /// This node is stopping: the lease is handed back.
    Shutdown,
}

impl From<LeaseError> for Stop {
    fn from(err: LeaseError) -> Self {
        if let LeaseError::State(err) = &err {
            tracing::warn!(%err, "lease write failed; giving the run up");
        }
        Stop::Lost
    }
}

/// How a node came to drive a session.
pub(crate) enum Start {
    /// It took the lease for a run it just accepted.
    Fresh(Box<Fresh>),
    /// Its lease's active run came from the queue (read from the store).
    Queued,
    /// It took the lease over from a dead node, whose active run must be failed first.
    Recovered,
}

/// A run this node accepted and starts at once: what it already knows, so the run does
/// not read it back from the store before asking the model.
pub(crate) struct Fresh {
    pub record: RunRecord,
    /// Revision of the record as created.
    pub revision: u64,
    /// The config the request was checked against.
    pub config: Arc<SharedConfig>,
}

/// Runs the session's active run, then the queued ones, until the queue is empty.
pub(crate) async fn drive(rt: Arc<Runtime>, mut lease: LeaseHandle, start: Start) {
    let mut current = lease.lease.active.clone();
    let mut fresh = None;
    match start {
        Start::Recovered => {
            if let Some(run_id) = current.take() {
                if let Err(Stop::Lost) = fail_orphan(&rt, &mut lease, &run_id).await {
                    return;
                }
            }
        }
        Start::Fresh(known) => fresh = Some(*known),
        Start::Queued => {}
    }
    loop {
        if let Some(run_id) = current.take() {
            let span =
                tracing::info_span!("run", run = %run_id, session = %lease.lease.session_key);
            let known = fresh.take().filter(|f| f.record.run_id == run_id);
            match execute(&rt, &mut lease, &run_id, known)
                .instrument(span)
                .await
            {
                Ok(()) => {}
                Err(Stop::Lost) => return,
                Err(Stop::Shutdown) => {
                    if let Err(err) = lease.hand_back().await {
                        tracing::warn!(%err, "lease not handed back");
                    }
                    return;
                }
            }
        }
        let stopping = *rt.stopping.borrow();
        if stopping {
            if let Err(err) = lease.hand_back().await {
                tracing::warn!(%err, "lease not handed back");
            }
            return;
        }
        match lease.advance().await {
            Ok(Some(next)) => current = Some(next),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, session = %lease.lease.session_key, "cannot advance the session queue");
                return;
            }
        }
    }
}

/// Publishes a run's events. Every event's `seq` is first written to the lease (fencing:
/// a node that lost the lease cannot publish).
pub(crate) struct Emitter<'a> {
    rt: &'a Runtime,
    lease: &'a mut LeaseHandle,
    run_id: String,
    session_key: String,
    client_key: String,
    tool_events_to: Option<ConnRef>,
    seq: u64,
}

impl<'a> Emitter<'a> {
    /// `seq`: the number of the last event published for the run (0 for a new run).
    fn new(rt: &'a Runtime, lease: &'a mut LeaseHandle, record: &RunRecord, seq: u64) -> Self {
        Emitter {
            rt,
            lease,
            run_id: record.run_id.clone(),
            session_key: record.session_key.clone(),
            client_key: record.request.client_session_key.clone(),
            tool_events_to: record.request.tool_events_to.clone(),
            seq,
        }
    }

    fn payload(&self, stream: &str, data: Value) -> Value {
        json!({
            "runId": self.run_id, "seq": self.seq, "stream": stream,
            "ts": argent_proto::now_ms(), "data": data, "sessionKey": self.session_key,
        })
    }

    /// A broadcast `agent` event.
    async fn agent(&mut self, stream: &str, data: Value) -> Result<(), LeaseError> {
        self.seq += 1;
        self.lease.claim_seq(self.seq).await?;
        let payload = self.payload(stream, data);
        self.rt.publish("agent", &payload, None).await;
        Ok(())
    }

    /// A tool event: takes a `seq` like every agent event, but goes only to the connection
    /// that started the run, and only if it declared `tool-events` (§3.6).
    async fn tool(&mut self, data: Value) -> Result<(), LeaseError> {
        self.seq += 1;
        self.lease.claim_seq(self.seq).await?;
        if let Some(to) = &self.tool_events_to {
            let payload = self.payload("tool", data);
            self.rt
                .control(
                    subjects::CONTROL_CONN_EVENT,
                    json!({"gatewayId": to.gateway_id, "connId": to.conn_id, "event": "agent", "payload": payload}),
                )
                .await;
        }
        Ok(())
    }

    /// A `chat` event; it reuses the `seq` of the agent event before it.
    async fn chat(&self, state: &str, fields: Value) {
        let mut payload = json!({
            "runId": self.run_id, "sessionKey": self.client_key, "seq": self.seq, "state": state,
        });
        if let (Some(out), Some(fields)) = (payload.as_object_mut(), fields.as_object()) {
            out.extend(fields.clone());
        }
        self.rt
            .publish("chat", &payload, Some(state == "delta"))
            .await;
    }

    async fn beat(&mut self) -> Result<(), LeaseError> {
        self.lease.beat().await
    }
}

pub(crate) fn assistant_message(text: &str) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": argent_proto::now_ms()})
}

/// How a run ended.
enum Outcome {
    Completed { text: String, usage: Usage },
    Failed { error: String, text: String },
    Aborted { reason: String, text: String },
    Shutdown,
    Lost,
}

#[derive(Default, Clone)]
struct Usage {
    input: u64,
    output: u64,
    /// `provider/model` that produced it (priced by `usage.cost`).
    model: String,
}

/// Removes the run's controls when it ends, however it ends.
struct Registered<'a>(&'a Runtime, String);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.local.lock().remove(&self.1);
    }
}

async fn execute(
    rt: &Arc<Runtime>,
    lease: &mut LeaseHandle,
    run_id: &str,
    fresh: Option<Fresh>,
) -> Result<(), Stop> {
    let (record, revision, config) = match fresh {
        Some(f) => (f.record, Some(f.revision), Some(f.config)),
        None => match rt.runs.get(run_id).await {
            Ok(Some(record)) if !record.status.is_final() => (record, None, None),
            // Aborted while queued, or gone.
            Ok(_) => return Ok(()),
            Err(err) => {
                // Ended with an error rather than left queued forever (waiters would hang).
                tracing::warn!(run = run_id, err = %err, "run record unreadable; run failed");
                let error = format!("the run could not be started: {err}");
                complete(rt, run_id, |r| {
                    r.status = RunStatus::Error;
                    r.ended_at = Some(argent_proto::now_ms());
                    r.error = Some(error.clone());
                })
                .await;
                return Ok(());
            }
        },
    };
    let (abort, abort_rx) = watch::channel(None);
    let (steer, steer_rx) = mpsc::channel(16);
    rt.local.lock().insert(
        run_id.to_string(),
        LocalRun {
            session_key: record.session_key.clone(),
            abort,
            steer,
        },
    );
    let _registered = Registered(rt, run_id.to_string());
    let started_at = argent_proto::now_ms();
    // The session entry is read only now (the lease keeps `sessions.reset` out), beside the
    // record's write: neither needs the other.
    let (marked, session) = tokio::join!(
        mark_running(rt, &record, revision, started_at),
        rt.sessions.ensure(&record.session_key)
    );
    match marked {
        Ok(Some(r)) if r.status.is_final() => return Ok(()),
        Ok(Some(r)) => {
            if let Some(reason) = r.abort_requested {
                if let Some(run) = rt.local.lock().get(run_id) {
                    let _ = run.abort.send(Some(reason));
                }
            }
        }
        Ok(None) => return Ok(()),
        Err(err) => tracing::warn!(run = run_id, err = %err, "run record not updated"),
    }
    let mut emitter = Emitter::new(rt, lease, &record, 0);
    emitter
        .agent(
            "lifecycle",
            json!({"phase": "start", "startedAt": started_at}),
        )
        .await?;
    let controls = Controls {
        abort: abort_rx,
        steer: steer_rx,
        stopping: rt.stopping.subscribe(),
        deadline: Instant::now() + run_deadline(record.request.timeout_ms),
    };
    let known = Known { config, session };
    let outcome = agent_loop(rt, &mut emitter, &record, known, controls).await;
    finish(rt, &mut emitter, &record, started_at, outcome).await
}

/// Marks the record `running` on this node (unless it ended meanwhile); `revision`: the one
/// this node created it at, when it did (one write instead of a read and a write).
async fn mark_running(
    rt: &Runtime,
    record: &RunRecord,
    revision: Option<u64>,
    started_at: u64,
) -> Result<Option<RunRecord>, ServiceError> {
    let node_id = rt.node_id.clone();
    let mark = |r: &mut RunRecord| {
        // Aborted while it was being dequeued: leave it ended.
        if !r.status.is_final() {
            r.status = RunStatus::Running;
            r.started_at = Some(started_at);
            r.node_id = Some(node_id.clone());
        }
    };
    match revision {
        Some(revision) => rt.runs.update_known(record, revision, mark).await,
        None => rt.runs.update(&record.run_id, mark).await,
    }
}

/// What a run read before it was set up: the config when it was passed along, and its
/// session entry (`true`: created just now, so its transcript is empty).
struct Known {
    config: Option<Arc<SharedConfig>>,
    session: Result<(SessionEntry, bool), ServiceError>,
}

/// Runs expire at start + timeout + 60 s, within [2 min, 24 h] (§5.1).
fn run_deadline(timeout_ms: u64) -> Duration {
    let timeout = if timeout_ms == 0 {
        DEFAULT_RUN_TIMEOUT_MS
    } else {
        timeout_ms
    };
    Duration::from_millis(timeout.saturating_add(60_000).clamp(120_000, 86_400_000))
}

struct Controls {
    abort: watch::Receiver<Option<String>>,
    steer: mpsc::Receiver<Steering>,
    stopping: watch::Receiver<bool>,
    deadline: Instant,
}

/// The model, prompt and conversation a run starts from.
struct Setup {
    choice: ModelChoice,
    system: String,
    messages: Vec<ChatMessage>,
    session_id: String,
    session_key: String,
    agent_id: String,
    tools: Vec<providers::ToolSpec>,
}

async fn prepare(rt: &Runtime, record: &RunRecord, known: Known) -> Result<Setup, String> {
    let config = match known.config {
        Some(config) => config,
        None => rt.config.current().await.map_err(|e| e.to_string())?,
    };
    let agents = config.agents();
    let providers = Providers::from_config(config.document()).map_err(|e| e.to_string())?;
    let agent_id = record.request.agent_id.clone();
    let (entry, created) = known.session.map_err(|e| e.to_string())?;
    let mut choice = providers
        .choose_for_session(&agent_id, entry.picked_model().as_deref())
        .map_err(|e| e.to_string())?;
    // The turn's own `thinking` wins over the session's level.
    let level = record
        .request
        .thinking
        .as_deref()
        .and_then(thinking::normalize)
        .or(entry.thinking_level.as_deref());
    choice.effort = level.and_then(|l| thinking::effort(l, choice.reasoning));
    let mut user = json!({
        "role": "user", "content": [{"type": "text", "text": record.request.message}],
        "timestamp": argent_proto::now_ms(), "runId": record.run_id,
        // How the dashboard recognises the message it showed while sending (upstream's key).
        "idempotencyKey": user_turn_key(&record.run_id),
    });
    if let Some(thinking) = &record.request.thinking {
        user["thinking"] = json!(thinking);
    }
    if created {
        rt.transcript_cache.know_empty(&entry.session_id);
    }
    // The transcript and the workspace documents are both on the way to the first token
    // and independent: read at once.
    let transcript = async {
        let history = rt
            .transcript_cache
            .append_and_read(&entry.session_id, &user)
            .await
            .map_err(|e| format!("cannot write the transcript: {e}"))?;
        announce_message(rt, &record.session_key, &entry.session_id, &user).await;
        Ok::<_, String>(history)
    };
    let (history, documents) = tokio::join!(transcript, workspace_documents(rt, &agent_id));
    let history = history?;
    let system = system_prompt(agents, &agent_id, record, documents, &history);
    Ok(Setup {
        choice,
        system,
        messages: chat_messages(&history),
        session_id: entry.session_id,
        session_key: record.session_key.clone(),
        agent_id,
        tools: rt.tools.specs(),
    })
}

/// The agent's workspace documents that go into every system prompt, by file name (read
/// concurrently: this is on the path to the first token).
async fn workspace_documents(rt: &Runtime, agent_id: &str) -> Vec<(&'static str, String)> {
    let files: Vec<&'static str> = BOOTSTRAP_FILES
        .iter()
        .copied()
        .chain(["MEMORY.md"])
        .collect();
    let documents = futures_util::future::join_all(
        files
            .iter()
            .map(|file| workspace::text(rt.state.as_ref(), agent_id, file)),
    )
    .await;
    files
        .into_iter()
        .zip(documents)
        .filter_map(|(file, document)| Some((file, document.ok()??)))
        .collect()
}

fn system_prompt(
    agents: &AgentsConfig,
    agent_id: &str,
    record: &RunRecord,
    documents: Vec<(&str, String)>,
    history: &[Value],
) -> String {
    let name = agents
        .get(agent_id)
        .and_then(|a| a.name.clone())
        .unwrap_or_else(|| agent_id.to_string());
    let mut prompt = format!(
        "You are {name}, the ArgentOS agent \"{agent_id}\". Use your tools to read your workspace documents when they help.\n"
    );
    if let Some(extra) = &record.request.extra_system_prompt {
        prompt.push_str(&format!("\n{extra}\n"));
    }
    for (file, text) in documents {
        prompt.push_str(&format!("\n## {file}\n{text}\n"));
    }
    for summary in history.iter().filter(|m| m["role"] == "system") {
        prompt.push_str(&format!(
            "\n## Summary of the earlier conversation\n{}\n",
            message_text(summary)
        ));
    }
    prompt
}

/// The text parts of a transcript message, joined.
pub(crate) fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The transcript as the provider conversation.
fn chat_messages(history: &[Value]) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    for message in history {
        match message["role"].as_str() {
            Some("user") => out.push(ChatMessage::user(message_text(message))),
            Some("assistant") => {
                let calls: Vec<ToolCall> = message["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["type"] == "toolCall")
                    .map(|p| ToolCall {
                        call_id: p["id"].as_str().unwrap_or_default().to_string(),
                        fn_name: p["name"].as_str().unwrap_or_default().to_string(),
                        fn_arguments: p["arguments"].clone(),
                        thought_signatures: None,
                    })
                    .collect();
                if !calls.is_empty() {
                    out.push(ChatMessage::from(calls));
                } else {
                    let text = message_text(message);
                    if !text.is_empty() {
                        out.push(ChatMessage::assistant(text));
                    }
                }
            }
            Some("toolResult") => out.push(ChatMessage::from(ToolResponse::new(
                message["toolCallId"].as_str().unwrap_or_default(),
                message_text(message),
            ))),
            _ => {}
        }
    }
    out
}

/// The conversation with the model: turns until one ends without tool calls.
async fn agent_loop(
    rt: &Runtime,
    emitter: &mut Emitter<'_>,
    record: &RunRecord,
    known: Known,
    mut controls: Controls,
) -> Outcome {
    // The lease keeps beating while the run is set up (a slow store must not look dead).
    let Ok(prepared) = emitter.lease.beating(prepare(rt, record, known)).await else {
        return Outcome::Lost;
    };
    let mut setup = match prepared {
        Ok(setup) => setup,
        Err(error) => {
            return Outcome::Failed {
                error,
                text: String::new(),
            }
        }
    };
    let mut text = String::new();
    let mut usage = Usage {
        model: format!("{}/{}", setup.choice.provider.id, setup.choice.model),
        ..Usage::default()
    };
    for _turn in 0..MAX_TURNS {
        take_steering(rt, &mut setup, &mut controls).await;
        let turn_start = text.len();
        let turn = match stream_one_turn(emitter, &setup, &mut text, &mut controls).await {
            Ok(turn) => turn,
            Err(outcome) => return outcome,
        };
        usage.input += turn.input_tokens;
        usage.output += turn.output_tokens;
        if turn.tool_calls.is_empty() {
            // A message steered in during the last turn gets its own turn.
            if controls.steer.is_empty() {
                return Outcome::Completed { text, usage };
            }
            setup
                .messages
                .push(ChatMessage::assistant(text[turn_start..].to_string()));
            text.push_str("\n\n");
            continue;
        }
        if let Err(outcome) = run_tools(rt, emitter, &mut setup, turn.tool_calls).await {
            return outcome;
        }
    }
    Outcome::Failed {
        error: format!("the model kept calling tools for {MAX_TURNS} turns; stopped"),
        text,
    }
}

/// Messages steered into the run since the last turn join the conversation.
async fn take_steering(rt: &Runtime, setup: &mut Setup, controls: &mut Controls) {
    while let Ok(steered) = controls.steer.try_recv() {
        let mut message = json!({
            "role": "user", "content": [{"type": "text", "text": steered.text}],
            "timestamp": argent_proto::now_ms(), "steered": true,
        });
        if let Some(key) = &steered.idempotency_key {
            message["idempotencyKey"] = json!(user_turn_key(key));
        }
        append(rt, (&setup.session_key, &setup.session_id), &message).await;
        setup.messages.push(ChatMessage::user(steered.text));
    }
}

/// The key a user message carries: the idempotency key of the request that sent it, marked
/// as the user's turn (`<key>:user`, upstream's form, which the Control UI matches).
fn user_turn_key(idempotency_key: &str) -> String {
    format!("{idempotency_key}:user")
}

struct TurnResult {
    tool_calls: Vec<ToolCall>,
    input_tokens: u64,
    output_tokens: u64,
}

/// Aborts the provider task when the turn is left early.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Streams one model turn, publishing the growing text at most every 150 ms.
async fn stream_one_turn(
    emitter: &mut Emitter<'_>,
    setup: &Setup,
    text: &mut String,
    controls: &mut Controls,
) -> Result<TurnResult, Outcome> {
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(providers::stream_turn(
        setup.choice.clone(),
        setup.system.clone(),
        setup.messages.clone(),
        setup.tools.clone(),
        tx,
    ));
    let _cancel = AbortOnDrop(task.abort_handle());
    let mut published = text.len();
    let mut last_flush: Option<Instant> = None;
    let mut flush_at: Option<Instant> = None;
    let mut beat = tokio::time::interval_at(Instant::now() + BEAT_INTERVAL, BEAT_INTERVAL);
    let lost = |_| Outcome::Lost;
    let done = loop {
        let flush_wait = flush_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = rx.recv() => match event {
                Some(TurnEvent::Text(piece)) => {
                    text.push_str(&piece);
                    if flush_at.is_none() {
                        let earliest = last_flush.map(|at| at + DELTA_INTERVAL).unwrap_or_else(Instant::now);
                        flush_at = Some(earliest.max(Instant::now()));
                    }
                }
                Some(TurnEvent::Done { tool_calls, input_tokens, output_tokens }) => {
                    break TurnResult { tool_calls, input_tokens, output_tokens };
                }
                None => {
                    let error = match task.await {
                        Ok(Err(err)) => err.to_string(),
                        Ok(Ok(())) => "the model stream ended without finishing".to_string(),
                        Err(err) => format!("the model call failed: {err}"),
                    };
                    return Err(Outcome::Failed { error, text: text.clone() });
                }
            },
            _ = tokio::time::sleep_until(flush_wait), if flush_at.is_some() => {
                flush(emitter, text, &mut published).await.map_err(lost)?;
                last_flush = Some(Instant::now());
                flush_at = None;
            }
            _ = beat.tick() => emitter.beat().await.map_err(lost)?,
            changed = controls.abort.changed() => {
                let reason = match changed {
                    Ok(()) => controls.abort.borrow().clone(),
                    Err(_) => None,
                };
                if let Some(reason) = reason {
                    return Err(Outcome::Aborted { reason, text: text.clone() });
                }
            }
            // (The guard `wait_for` returns must not live in the select's output.)
            _ = async { controls.stopping.wait_for(|s| *s).await.is_ok() } => return Err(Outcome::Shutdown),
            _ = tokio::time::sleep_until(controls.deadline) => {
                return Err(Outcome::Aborted { reason: "timeout".into(), text: text.clone() });
            }
        }
    };
    flush(emitter, text, &mut published).await.map_err(lost)?;
    Ok(done)
}

/// Publishes the text added since the last flush: an `agent` assistant event and a `chat`
/// delta with the whole text so far.
async fn flush(
    emitter: &mut Emitter<'_>,
    text: &str,
    published: &mut usize,
) -> Result<(), LeaseError> {
    if text.len() == *published {
        return Ok(());
    }
    let delta = &text[*published..];
    emitter
        .agent("assistant", json!({"text": text, "delta": delta}))
        .await?;
    emitter
        .chat("delta", json!({"message": assistant_message(text)}))
        .await;
    *published = text.len();
    Ok(())
}

async fn run_tools(
    rt: &Runtime,
    emitter: &mut Emitter<'_>,
    setup: &mut Setup,
    calls: Vec<ToolCall>,
) -> Result<(), Outcome> {
    let lost = |_| Outcome::Lost;
    let parts: Vec<Value> = calls
        .iter()
        .map(|c| json!({"type": "toolCall", "id": c.call_id, "name": c.fn_name, "arguments": c.fn_arguments}))
        .collect();
    let call_message =
        json!({"role": "assistant", "content": parts, "timestamp": argent_proto::now_ms()});
    append(rt, (&setup.session_key, &setup.session_id), &call_message).await;
    setup.messages.push(ChatMessage::from(calls.clone()));
    for call in calls {
        emitter
            .tool(json!({"phase": "start", "name": call.fn_name, "toolCallId": call.call_id, "args": call.fn_arguments}))
            .await
            .map_err(lost)?;
        let outcome = rt
            .tools
            .execute(rt, &setup.agent_id, &call.fn_name, &call.fn_arguments)
            .await;
        // Attachments (audio) stay out of the event: clients read them in the transcript.
        emitter
            .tool(json!({
                "phase": "result", "name": call.fn_name, "toolCallId": call.call_id,
                "result": outcome.text, "isError": outcome.is_error,
            }))
            .await
            .map_err(lost)?;
        let mut content = vec![json!({"type": "text", "text": outcome.text})];
        content.extend(outcome.attachments);
        let result = json!({
            "role": "toolResult", "toolCallId": call.call_id, "toolName": call.fn_name,
            "content": content, "isError": outcome.is_error,
            "timestamp": argent_proto::now_ms(),
        });
        append(rt, (&setup.session_key, &setup.session_id), &result).await;
        setup.messages.push(ChatMessage::from(ToolResponse::new(
            call.call_id,
            outcome.text,
        )));
    }
    Ok(())
}

/// Appends to the transcript and announces it (`session.message`, for v4 subscribers).
async fn append(rt: &Runtime, session: (&str, &str), message: &Value) {
    let (session_key, session_id) = session;
    if let Err(err) = rt.transcript_cache.append(session_id, message).await {
        tracing::warn!(%err, "message not written to the transcript");
        return;
    }
    announce_message(rt, session_key, session_id, message).await;
}

/// `session.message` goes to protocol-4 subscribers only, so it carries their view of the
/// message (id mark, cut text) and its id.
async fn announce_message(rt: &Runtime, session_key: &str, session_id: &str, message: &Value) {
    let shown = message_view::project(message.clone(), None, MessageView::default());
    let payload = json!({
        "sessionKey": session_key, "sessionId": session_id,
        "messageId": shown[message_view::MARK_KEY]["id"], "message": shown,
    });
    rt.publish("session.message", &payload, None).await;
}

/// The end of a run: transcript, session counters, final events, run record, completion.
async fn finish(
    rt: &Runtime,
    emitter: &mut Emitter<'_>,
    record: &RunRecord,
    started_at: u64,
    outcome: Outcome,
) -> Result<(), Stop> {
    let ended_at = || argent_proto::now_ms();
    let is_agent = record.method == "agent";
    let session = rt.sessions.get(&record.session_key).await.ok().flatten();
    let session_id = session.as_ref().map(|s| s.session_id.clone());
    let (status, error, text, stop_reason, usage, shutdown) = match outcome {
        Outcome::Lost => return Err(Stop::Lost),
        Outcome::Completed { text, usage } => (RunStatus::Ok, None, text, None, usage, false),
        Outcome::Failed { error, text } => (
            RunStatus::Error,
            Some(error),
            text,
            None,
            Usage::default(),
            false,
        ),
        Outcome::Aborted { reason, text } => (
            RunStatus::Aborted,
            None,
            text,
            Some(reason),
            Usage::default(),
            false,
        ),
        Outcome::Shutdown => (
            RunStatus::Error,
            Some(format!(
                "node-agent {} stopped while running this turn; send the message again",
                rt.node_id
            )),
            String::new(),
            None,
            Usage::default(),
            true,
        ),
    };
    if let Some(session_id) = &session_id {
        if !text.is_empty() {
            let mut message = assistant_message(&text);
            message["runId"] = json!(record.run_id);
            if status == RunStatus::Aborted {
                message["aborted"] = json!(true);
            }
            if usage.input + usage.output > 0 {
                message["usage"] = json!({"input": usage.input, "output": usage.output});
                message["model"] = json!(usage.model);
            }
            append(rt, (&record.session_key, session_id), &message).await;
        }
    }
    let preview: String = text.chars().take(120).collect();
    let first_user: String = record.request.message.chars().take(60).collect();
    let aborted = status == RunStatus::Aborted;
    if let Err(err) = rt
        .sessions
        .update(&record.session_key, |entry| {
            entry.updated_at = argent_proto::now_ms();
            entry.input_tokens += usage.input;
            entry.output_tokens += usage.output;
            entry.total_tokens = entry.input_tokens + entry.output_tokens;
            entry.aborted_last_run = aborted;
            // The model that answered, for session rows (`model`, `modelProvider`).
            if let Some((provider, model)) = usage.model.split_once('/') {
                entry.model_provider = Some(provider.to_string());
                entry.model = Some(model.to_string());
            }
            if !preview.is_empty() {
                entry.last_message_preview = Some(preview.clone());
            }
            if entry.derived_title.is_none() && !first_user.is_empty() {
                entry.derived_title = Some(first_user.clone());
            }
        })
        .await
    {
        tracing::warn!(err = %err, "session entry not updated");
    }
    let end = ended_at();
    let message = (!text.is_empty()).then(|| assistant_message(&text));
    let with_message = |mut fields: Value| {
        if let Some(message) = &message {
            fields["message"] = message.clone();
        }
        fields
    };
    let (lifecycle, chat_state, chat_fields) = match status {
        RunStatus::Ok => (
            json!({"phase": "end", "startedAt": started_at, "endedAt": end}),
            "final",
            with_message(json!({"usage": {"input": usage.input, "output": usage.output}})),
        ),
        RunStatus::Aborted => (
            json!({"phase": "end", "startedAt": started_at, "endedAt": end, "aborted": true}),
            "aborted",
            with_message(json!({"stopReason": stop_reason})),
        ),
        _ => {
            let error = error.clone().unwrap_or_default();
            (
                json!({"phase": "error", "startedAt": started_at, "endedAt": end, "error": error}),
                "error",
                json!({"errorMessage": error}),
            )
        }
    };
    // The lifecycle event is fenced by the lease (a node that lost it stops here and the new
    // holder ends the run). Then the record, then the `chat` end: a client that saw the
    // final `chat` event and acts on the session at once (compaction, reset) finds the run
    // ended, not still running.
    emitter.agent("lifecycle", lifecycle).await?;
    let usage_value = json!({"input": usage.input, "output": usage.output});
    write_final(rt, &record.run_id, |r| {
        r.status = status;
        r.ended_at = Some(end);
        r.error = error.clone();
        r.text = (!text.is_empty()).then(|| text.clone());
        r.stop_reason = stop_reason.clone();
        r.usage = Some(usage_value.clone());
    })
    .await;
    emitter.chat(chat_state, chat_fields).await;
    let completed = if is_agent {
        let mut data = json!({"phase": "run_complete", "startedAt": started_at, "endedAt": end});
        if !text.is_empty() {
            data["text"] = json!(text);
        }
        if let Some(error) = &error {
            data["error"] = json!(error);
        }
        if aborted {
            data["aborted"] = json!(true);
        }
        emitter.agent("lifecycle", data).await
    } else {
        Ok(())
    };
    // The record is final: waiters are woken even if the lease was lost just now.
    announce_done(rt, &record.run_id).await;
    completed?;
    if shutdown {
        Err(Stop::Shutdown)
    } else {
        Ok(())
    }
}

/// Writes a run's final record and tells every node (waiters of `agent.wait`/`agent`).
pub(crate) async fn complete(rt: &Runtime, run_id: &str, change: impl FnMut(&mut RunRecord)) {
    write_final(rt, run_id, change).await;
    announce_done(rt, run_id).await;
}

/// Ends the record, unless it already ended (another node failed the run meanwhile).
async fn write_final(rt: &Runtime, run_id: &str, mut change: impl FnMut(&mut RunRecord)) {
    let ended = rt.runs.update(run_id, |r| {
        if !r.status.is_final() {
            change(r)
        }
    });
    if let Err(err) = ended.await {
        tracing::warn!(run = run_id, err = %err, "final run record not written");
    }
}

/// Wakes the waiters of `agent.wait`/`agent` on every node.
async fn announce_done(rt: &Runtime, run_id: &str) {
    rt.control(subjects::CONTROL_RUN_DONE, json!({"runId": run_id}))
        .await;
}

/// The holder of this lease died while running `run_id`: end that run with an error, so
/// no client waits for it forever.
async fn fail_orphan(rt: &Runtime, lease: &mut LeaseHandle, run_id: &str) -> Result<(), Stop> {
    let Ok(Some(record)) = rt.runs.get(run_id).await else {
        return Ok(());
    };
    if record.status.is_final() {
        return Ok(());
    }
    let dead = record.node_id.clone().unwrap_or_else(|| "?".into());
    let error =
        format!("node-agent {dead} stopped while running this turn; send the message again");
    let started_at = record.started_at.unwrap_or(record.accepted_at);
    // After every number the dead holder may have used.
    let claimed = lease.lease.seq;
    let mut emitter = Emitter::new(rt, lease, &record, claimed);
    let end = argent_proto::now_ms();
    emitter
        .agent(
            "lifecycle",
            json!({"phase": "error", "startedAt": started_at, "endedAt": end, "error": error}),
        )
        .await?;
    emitter.chat("error", json!({"errorMessage": error})).await;
    if record.method == "agent" {
        emitter
            .agent("lifecycle", json!({"phase": "run_complete", "startedAt": started_at, "endedAt": end, "error": error}))
            .await?;
    }
    complete(rt, run_id, |r| {
        r.status = RunStatus::Error;
        r.ended_at = Some(end);
        r.error = Some(error.clone());
    })
    .await;
    Ok(())
}

/// Ends a run that never started (aborted while queued): its record and its `chat`
/// `aborted` event (and `run_complete` for `agent` runs).
pub(crate) async fn abort_queued(rt: &Runtime, run_id: &str, reason: &str) {
    let Ok(Some(record)) = rt.runs.get(run_id).await else {
        return;
    };
    if record.status.is_final() {
        return;
    }
    let end = argent_proto::now_ms();
    let mut chat = Map::new();
    chat.insert("runId".into(), json!(run_id));
    chat.insert(
        "sessionKey".into(),
        json!(record.request.client_session_key),
    );
    chat.insert("seq".into(), json!(1));
    chat.insert("state".into(), json!("aborted"));
    chat.insert("stopReason".into(), json!(reason));
    if record.method == "agent" {
        let payload = json!({
            "runId": run_id, "seq": 1, "stream": "lifecycle", "ts": end, "sessionKey": record.session_key,
            "data": {"phase": "run_complete", "startedAt": record.accepted_at, "endedAt": end, "aborted": true},
        });
        rt.publish("agent", &payload, None).await;
    }
    rt.publish("chat", &Value::Object(chat), Some(false)).await;
    complete(rt, run_id, |r| {
        r.status = RunStatus::Aborted;
        r.ended_at = Some(end);
        r.stop_reason = Some(reason.to_string());
    })
    .await;
}
