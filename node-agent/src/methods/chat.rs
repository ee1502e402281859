//! `chat.send`, `chat.abort`, `chat.history`, `chat.inject`, `agent`, `agent.wait`
//! (PROTOCOL.md §5.1, §5.2), and the internal `agent.result` the gateway uses to send the
//! `agent` method's second (final) response.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::grpc::Caller;
use argent_proto::params::CHAT_STARTUP_KEYS;
use argent_proto::params::{Params, CHAT_ABORT_KEYS, CHAT_MESSAGE_GET_KEYS, CHAT_SEND_KEYS};
use argent_proto::version::{MessageView, Protocol};

use super::shared_config;
use crate::runtime::control::{self, abort_runs, check_provider, start_run, Steered};
use crate::runtime::message_view;
use crate::runtime::runs::{ConnRef, RunRecord, RunRequest, RunStatus};
use crate::runtime::sessions::{is_short_id, sessions_by_short_id};
use crate::runtime::{status, Runtime};
use argent_proto::agents::AgentsConfig;
use argent_proto::session_key::{agent_of, SessionKey};

/// Longest single wait of `agent.result`; the gateway asks again until the run ends.
const RESULT_POLL: Duration = Duration::from_secs(25);
/// `agent.wait` waits at most this long per call.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Decoded size limit per attachment (§1.7).
const MAX_ATTACHMENT_BYTES: usize = 5_000_000;
/// `chat.history` JSON budget (§1.7); also the largest message `chat.message.get` returns.
const HISTORY_BUDGET: usize = 6 * 1024 * 1024;
/// Largest `maxChars` a v4 `chat.history` may ask for (upstream's schema).
const LARGEST_HISTORY_MAX_CHARS: u64 = 500_000;
/// `chat.message.get` text cap without a `maxChars`, and the largest one (upstream's).
const MESSAGE_GET_DEFAULT_MAX_CHARS: u64 = 1_000_000;
const LARGEST_MESSAGE_GET_MAX_CHARS: u64 = 2_000_000;

/// The cap a client declares to receive tool-stream events (§3.6).
const CAP_TOOL_EVENTS: &str = "tool-events";

/// `/stop`, or exactly one of the stop words (§5.1 step 3).
fn is_stop_command(message: &str) -> bool {
    let m = message.trim().to_ascii_lowercase();
    m == "/stop" || ["stop", "esc", "abort", "wait", "exit", "interrupt"].contains(&m.as_str())
}

fn busy_mode(p: &Params) -> Result<bool, RpcError> {
    match p.optional_str("busyMode")?.as_deref() {
        None | Some("cue") => Ok(false),
        Some("steer") => Ok(true),
        Some(_) => Err(p.invalid("at /busyMode: must be equal to one of the allowed values")),
    }
}

/// Text the model gets from attachments: text files inline, others named.
fn attachments_text(method: &str, value: Option<&Value>) -> Result<(String, bool), RpcError> {
    let Some(value) = value else {
        return Ok((String::new(), false));
    };
    let items = value
        .as_array()
        .ok_or_else(|| RpcError::invalid_params(method, "at /attachments: must be array"))?;
    let mut text = String::new();
    let mut images = false;
    for (i, item) in items.iter().enumerate() {
        let content = item["content"].as_str().ok_or_else(|| {
            RpcError::invalid_params(
                method,
                &format!("at /attachments/{i}/content: must be string"),
            )
        })?;
        let data = content.split_once(";base64,").map_or(content, |(_, d)| d);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| {
                RpcError::invalid_params(
                    method,
                    &format!("at /attachments/{i}/content: must be base64"),
                )
            })?;
        if bytes.len() > MAX_ATTACHMENT_BYTES {
            return Err(RpcError::bad_params(format!(
                "attachment {i} is larger than {MAX_ATTACHMENT_BYTES} bytes"
            )));
        }
        let name = item["fileName"].as_str().unwrap_or("attachment");
        let mime = item["mimeType"].as_str().unwrap_or("");
        if mime.starts_with("image/") {
            images = true;
            text.push_str(&format!(
                "\n[image attachment {name}: images are not passed to the model by this release]\n"
            ));
        } else if let Ok(body) = String::from_utf8(bytes) {
            text.push_str(&format!("\n[attachment {name}]\n{body}\n"));
        } else {
            text.push_str(&format!("\n[binary attachment {name} omitted]\n"));
        }
    }
    Ok((text, images))
}

fn tool_events_to(caller: &Caller) -> Option<ConnRef> {
    caller
        .caps
        .iter()
        .any(|c| c == CAP_TOOL_EVENTS)
        .then(|| ConnRef {
            gateway_id: caller.gateway_id.clone(),
            conn_id: caller.conn_id.clone(),
        })
}

/// Steering (§5.1 step 5): the answer for the run that steered (`run_id`).
async fn steer(
    rt: &Runtime,
    session_key: &str,
    run_id: &str,
    message: &str,
) -> Result<Value, RpcError> {
    Ok(
        match control::steer(rt, session_key, message, run_id).await? {
            Steered::NotActive => status(run_id, "not_active"),
            Steered::Into(target) => {
                let mut out = status(run_id, "steered");
                out["targetRunId"] = json!(target);
                out
            }
        },
    )
}

/// Refuses, before anything is accepted, a message the transcript could not hold (a run
/// accepted with it would fail when it writes it).
fn fits_the_transcript(rt: &Runtime, method: &str, bytes: usize) -> Result<(), RpcError> {
    /// Room for the message's JSON around its text (role, run id, keys, escapes).
    const ENVELOPE: usize = 1024;
    match rt.transcripts.max_message_bytes() {
        Some(limit) if bytes + ENVELOPE > limit => Err(RpcError::bad_params(format!(
            "{method}: the message is {bytes} bytes, over the limit of {} bytes for one \
             transcript message",
            limit.saturating_sub(ENVELOPE)
        ))),
        _ => Ok(()),
    }
}

fn aborted_result(ids: Vec<String>) -> Value {
    json!({"ok": true, "aborted": !ids.is_empty(), "runIds": ids})
}

pub async fn send(rt: &Arc<Runtime>, params: Value, caller: &Caller) -> Result<Value, RpcError> {
    let p = Params::new("chat.send", params)?.only(&CHAT_SEND_KEYS)?;
    let raw_key = p.required_str("sessionKey")?;
    let message = p.required_text("message")?;
    let run_id = p.required_str("idempotencyKey")?;
    let steering = busy_mode(&p)?;
    let thinking = p.optional_str("thinking")?;
    p.optional_bool("deliver")?;
    let timeout_ms = p.optional_u64("timeoutMs", 0)?.unwrap_or(0);
    let (attached, images) = attachments_text("chat.send", p.get("attachments"))?;
    fits_the_transcript(rt, "chat.send", message.len() + attached.len())?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let session_key = SessionKey::canonical(&raw_key, agents).into_string();
    if message.trim().is_empty() && attached.is_empty() {
        return Err(RpcError::bad_params("message or attachment required"));
    }
    if is_stop_command(&message) {
        let aborted = abort_runs(rt, &session_key, None, "stop").await?;
        return Ok(aborted_result(aborted));
    }
    let agent_id = agent_of(&session_key, agents).to_string();
    if steering {
        if images {
            return Err(RpcError::bad_params(
                "images cannot be steered into a running turn",
            ));
        }
        return steer(rt, &session_key, &run_id, &message).await;
    }
    check_provider(&config, &agent_id)?;
    let request = RunRequest {
        message: format!("{message}{attached}"),
        client_session_key: raw_key,
        agent_id,
        thinking,
        timeout_ms,
        extra_system_prompt: None,
        tool_events_to: tool_events_to(caller),
    };
    match start_run(rt, "chat.send", &session_key, &run_id, request, &config).await? {
        None => Ok(status(&run_id, "started")),
        Some(earlier) => match earlier.status {
            RunStatus::Queued | RunStatus::Running => Ok(status(&run_id, "in_flight")),
            RunStatus::Ok | RunStatus::Aborted => Ok(status(&run_id, "ok")),
            RunStatus::Error => Err(RpcError::unavailable(earlier.error.unwrap_or_default())),
        },
    }
}

const AGENT_PARAMS: &[&str] = &[
    "message",
    "idempotencyKey",
    "agentId",
    "sessionKey",
    "sessionId",
    "busyMode",
    "thinking",
    "deliver",
    "attachments",
    "channel",
    "replyChannel",
    "accountId",
    "replyAccountId",
    "to",
    "replyTo",
    "threadId",
    "groupId",
    "groupChannel",
    "groupSpace",
    "timeout",
    "lane",
    "extraSystemPrompt",
    "label",
    "spawnedBy",
    "silent",
];

/// `agent`: the ack (`accepted`), or for a duplicate key its cached ack or final payload.
pub async fn agent(rt: &Arc<Runtime>, params: Value, caller: &Caller) -> Result<Value, RpcError> {
    let p = Params::new("agent", params)?.only(AGENT_PARAMS)?;
    let message = p.required_str("message")?;
    let run_id = p.required_str("idempotencyKey")?;
    let steering = busy_mode(&p)?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let agent_id = match p.optional_str("agentId")? {
        Some(id) => known_agent("agent", &id, agents)?,
        None => agents.default_id.clone(),
    };
    for key in ["channel", "replyChannel"] {
        if let Some(channel) = p.optional_str(key)? {
            if channel != "webchat" {
                return Err(RpcError::bad_params(format!(
                    "invalid agent params: unknown channel: {channel}"
                )));
            }
        }
    }
    for key in [
        "sessionId",
        "thinking",
        "lane",
        "label",
        "spawnedBy",
        "accountId",
        "to",
    ] {
        p.optional_str(key)?;
    }
    let raw_key = p.optional_str("sessionKey")?;
    let session_key = SessionKey::for_agent(raw_key.as_deref(), &agent_id, agents).into_string();
    let timeout_ms = p
        .optional_u64("timeout", 0)?
        .unwrap_or(0)
        .saturating_mul(1000);
    let (attached, _) = attachments_text("agent", p.get("attachments"))?;
    fits_the_transcript(rt, "agent", message.len() + attached.len())?;
    if steering {
        return steer(rt, &session_key, &run_id, &message).await;
    }
    check_provider(&config, &agent_id)?;
    let request = RunRequest {
        message: format!("{message}{attached}"),
        client_session_key: raw_key.unwrap_or_else(|| session_key.clone()),
        agent_id,
        thinking: p.optional_str("thinking")?,
        timeout_ms,
        extra_system_prompt: p.optional_str("extraSystemPrompt")?,
        tool_events_to: tool_events_to(caller),
    };
    match start_run(rt, "agent", &session_key, &run_id, request, &config).await? {
        None => Ok(ack(&run_id, argent_proto::now_ms())),
        Some(earlier) if earlier.status.is_final() => Ok(final_payload(&earlier)),
        Some(earlier) => Ok(ack(&run_id, earlier.accepted_at)),
    }
}

fn ack(run_id: &str, accepted_at: u64) -> Value {
    json!({"runId": run_id, "status": "accepted", "acceptedAt": accepted_at})
}

/// The `agent` method's final payload (§5.2); `status:"error"` becomes an `ok:false`
/// response at the gateway.
fn final_payload(record: &RunRecord) -> Value {
    match record.status {
        RunStatus::Error => json!({
            "runId": record.run_id, "status": "error",
            "summary": record.error.clone().unwrap_or_default(),
        }),
        _ => {
            let aborted = record.status == RunStatus::Aborted;
            let payloads: Vec<Value> = record.text.iter().map(|t| json!({"text": t})).collect();
            let duration = record
                .ended_at
                .zip(record.started_at)
                .map(|(e, s)| e.saturating_sub(s));
            json!({
                "runId": record.run_id, "status": "ok",
                "summary": if aborted { "aborted" } else { "completed" },
                "result": {"payloads": payloads, "meta": {"durationMs": duration, "aborted": aborted, "usage": record.usage}},
            })
        }
    }
}

/// Internal: waits (up to ~25 s per call) for the final payload of an `agent` run;
/// `{runId, status:"pending"}` while it runs.
pub async fn result(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("agent.result", params)?.only(&["runId"])?;
    let run_id = p.required_str("runId")?;
    match rt.wait_final(&run_id, RESULT_POLL).await? {
        Some(record) => Ok(final_payload(&record)),
        // Forgotten (or never recorded): end the caller's wait instead of polling forever.
        None if rt.runs.get(&run_id).await?.is_none() => Ok(json!({
            "runId": run_id, "status": "error", "summary": format!("run {run_id} is not known to the cluster"),
        })),
        None => Ok(status(&run_id, "pending")),
    }
}

pub async fn wait(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("agent.wait", params)?.only(&["runId", "timeoutMs"])?;
    let run_id = p.required_str("runId")?;
    let timeout =
        Duration::from_millis(p.optional_u64("timeoutMs", 0)?.unwrap_or(30_000)).min(MAX_WAIT);
    match rt.wait_final(&run_id, timeout).await? {
        Some(record) => Ok(record.wait_result()),
        None => Ok(status(&run_id, "timeout")),
    }
}

pub async fn abort(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("chat.abort", params)?.only(&CHAT_ABORT_KEYS)?;
    let raw_key = p.required_str("sessionKey")?;
    let run_id = p.optional_str("runId")?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let session_key = SessionKey::canonical(&raw_key, agents).into_string();
    if let Some(run_id) = &run_id {
        match rt.runs.get(run_id).await? {
            Some(record) if !record.status.is_final() => {
                if record.session_key != session_key {
                    return Err(RpcError::bad_params("runId does not match sessionKey"));
                }
            }
            _ => return Ok(aborted_result(Vec::new())),
        }
    }
    let aborted = abort_runs(rt, &session_key, run_id.as_deref(), "rpc").await?;
    Ok(aborted_result(aborted))
}

/// The canonical session key of a chat read: `raw` as given, which a v4 `agentId` may
/// qualify (a bare key then belongs to that agent; an `agent:` key must be that agent's).
fn qualified_key(p: &Params, raw: &str, agents: &AgentsConfig) -> Result<String, RpcError> {
    let Some(agent_id) = p.optional_str("agentId")? else {
        return Ok(SessionKey::canonical(raw, agents).into_string());
    };
    let agent_id = known_agent(p.method(), &agent_id, agents)?;
    let key = SessionKey::for_agent(Some(raw), &agent_id, agents).into_string();
    if key.starts_with("agent:") && agent_of(&key, agents) != agent_id {
        return Err(RpcError::bad_params(format!(
            "agentId \"{agent_id}\" does not match session key \"{raw}\""
        )));
    }
    Ok(key)
}

/// A configured agent's id, lowercased.
fn known_agent(method: &str, id: &str, agents: &AgentsConfig) -> Result<String, RpcError> {
    let id = id.to_ascii_lowercase();
    if agents.get(&id).is_none() {
        return Err(RpcError::bad_params(format!(
            "invalid {method} params: unknown agent id \"{id}\""
        )));
    }
    Ok(id)
}

/// `chat.history` (§5.1); on protocol 4 every message carries its id and position and long
/// texts are cut (PROTOCOL-v4.md §9).
pub async fn history(rt: &Runtime, params: Value, caller: &Caller) -> Result<Value, RpcError> {
    let protocol = Protocol::from_number(caller.protocol);
    let p = Params::new("chat.history", params)?.only(protocol.chat_history_keys())?;
    let raw_key = p.required_str("sessionKey")?;
    let page = HistoryPage::asked(&p, protocol)?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let session_key = qualified_key(&p, &raw_key, agents)?;
    page.read(rt, raw_key, &session_key).await
}

/// `chat.startup` (protocol 4): `chat.history` of `sessionKey`, or of the session a short
/// chat link names (`shortId` with `agentId`; `slugHint` picks among several), the latter
/// with `resolution` added.
pub async fn startup(rt: &Runtime, params: Value, caller: &Caller) -> Result<Value, RpcError> {
    let protocol = Protocol::from_number(caller.protocol);
    let p = Params::new("chat.startup", params)?.only(&CHAT_STARTUP_KEYS)?;
    let Some(short_id) = p.optional_str("shortId")? else {
        let raw_key = p.required_str("sessionKey")?;
        let page = HistoryPage::asked(&p, protocol)?;
        let config = shared_config(rt).await?;
        let agents = config.agents();
        let session_key = qualified_key(&p, &raw_key, agents)?;
        return page.read(rt, raw_key, &session_key).await;
    };
    if p.get("sessionKey").is_some() {
        return Err(p.invalid("at root: sessionKey and shortId exclude each other"));
    }
    if !is_short_id(&short_id) {
        return Err(p.invalid("at /shortId: must be 8 to 32 hexadecimal digits"));
    }
    let agent_id = p.required_str("agentId")?;
    let slug_hint = p.optional_str("slugHint")?;
    let page = HistoryPage::asked(&p, protocol)?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let agent_id = known_agent("chat.startup", &agent_id, agents)?;
    let entries = rt.sessions.list().await?;
    let found = sessions_by_short_id(&entries, &agent_id, &short_id, slug_hint.as_deref(), agents);
    let entry = match found.as_slice() {
        [entry] => *entry,
        [] => {
            return Err(RpcError::bad_params(format!(
                "no session of agent \"{agent_id}\" matches shortId \"{short_id}\""
            )))
        }
        several => {
            return Err(RpcError::bad_params(format!(
                "shortId \"{short_id}\" matches {} sessions of agent \"{agent_id}\"; give more of the id or a slugHint",
                several.len()
            )))
        }
    };
    let key = entry.key.clone();
    let mut out = page.read(rt, key.clone(), &key).await?;
    out["resolution"] = json!({
        "ok": true, "key": key, "sessionId": entry.session_id, "agentId": agent_id,
        "shortId": short_id.to_ascii_lowercase(),
    });
    Ok(out)
}

/// What a history read asks for: the last `limit` messages, as stored (v3) or in the v4
/// view.
struct HistoryPage {
    limit: usize,
    view: Option<MessageView>,
}

impl HistoryPage {
    fn asked(p: &Params, protocol: Protocol) -> Result<Self, RpcError> {
        let limit = p.optional_u64_in("limit", 1, 1000)?.unwrap_or(200) as usize;
        let max_chars = p.optional_u64_in("maxChars", 1, LARGEST_HISTORY_MAX_CHARS)?;
        Ok(HistoryPage {
            limit,
            view: protocol.history_view(max_chars),
        })
    }

    /// The page of `session_key`, oldest messages dropped further to stay within the
    /// budget; `raw_key` is the key as the caller gave it.
    async fn read(
        self,
        rt: &Runtime,
        raw_key: String,
        session_key: &str,
    ) -> Result<Value, RpcError> {
        let Some(entry) = rt.sessions.get(session_key).await? else {
            return Ok(json!({"sessionKey": raw_key, "messages": []}));
        };
        let all = rt.transcript(&entry.session_id).await?;
        let start = all.len().saturating_sub(self.limit);
        let shown: Vec<Value> = all
            .into_iter()
            .enumerate()
            .skip(start)
            .map(|(index, message)| match self.view {
                Some(view) => message_view::project(message, Some(index + 1), view),
                None => message,
            })
            .collect();
        // Newest first: keep adding while the budget lasts, then restore the order.
        let mut used = 0;
        let mut kept = Vec::new();
        for message in shown.into_iter().rev() {
            let size = serde_json::to_vec(&message).map(|b| b.len()).unwrap_or(0);
            if used + size > HISTORY_BUDGET {
                break;
            }
            used += size;
            kept.push(message);
        }
        kept.reverse();
        let mut out =
            json!({"sessionKey": raw_key, "sessionId": entry.session_id, "messages": kept});
        if let Some(level) = &entry.thinking_level {
            out["thinkingLevel"] = json!(level);
        }
        if let Some(value) = entry.extra.get("verboseLevel") {
            out["verboseLevel"] = value.clone();
        }
        Ok(out)
    }
}

/// `chat.message.get` (protocol 4): one whole message, by the id history gave it, so a
/// client can expand a row that was cut. `{ok:true, message}`, or `{ok:false,
/// unavailableReason}` (`not_found`, `oversized`).
pub async fn message_get(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("chat.message.get", params)?.only(&CHAT_MESSAGE_GET_KEYS)?;
    let raw_key = p.required_str("sessionKey")?;
    let message_id = p.required_str("messageId")?;
    let max_chars = p
        .optional_u64_in("maxChars", 1, LARGEST_MESSAGE_GET_MAX_CHARS)?
        .unwrap_or(MESSAGE_GET_DEFAULT_MAX_CHARS) as usize;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let session_key = qualified_key(&p, &raw_key, agents)?;
    let unavailable = |reason: &str| json!({"ok": false, "unavailableReason": reason});
    let Some(entry) = rt.sessions.get(&session_key).await? else {
        return Ok(unavailable("not_found"));
    };
    let all = rt.transcript(&entry.session_id).await?;
    let Some((index, message)) = all
        .into_iter()
        .enumerate()
        .find(|(_, m)| message_view::message_id(m) == message_id)
    else {
        return Ok(unavailable("not_found"));
    };
    let shown = message_view::project(message, Some(index + 1), MessageView { max_chars });
    let size = serde_json::to_vec(&shown).map_or(usize::MAX, |b| b.len());
    if size > HISTORY_BUDGET {
        return Ok(unavailable("oversized"));
    }
    Ok(json!({"ok": true, "message": shown}))
}

pub async fn inject(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("chat.inject", params)?.only(&["sessionKey", "message", "label"])?;
    let raw_key = p.required_str("sessionKey")?;
    let message = p.required_text("message")?;
    let label = p.optional_str("label")?;
    if label.as_ref().is_some_and(|l| l.chars().count() > 100) {
        return Err(p.invalid("at /label: must NOT have more than 100 characters"));
    }
    fits_the_transcript(rt, "chat.inject", message.len())?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let session_key = SessionKey::canonical(&raw_key, agents).into_string();
    let text = match &label {
        Some(label) => format!("[{label}] {message}"),
        None => message,
    };
    let message_id = control::inject(rt, &session_key, &raw_key, &text).await?;
    Ok(json!({"ok": true, "messageId": message_id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_commands_are_exact_words() {
        assert!(is_stop_command("/stop"));
        assert!(is_stop_command(" STOP "));
        assert!(is_stop_command("interrupt"));
        assert!(!is_stop_command("stop it"));
        assert!(!is_stop_command("please wait for me"));
    }

    #[test]
    fn attachments_are_checked_and_inlined() {
        let text = base64::engine::general_purpose::STANDARD.encode("hello file");
        let (out, images) = attachments_text(
            "chat.send",
            Some(&json!([{"fileName": "a.txt", "mimeType": "text/plain", "content": text}])),
        )
        .unwrap();
        assert!(out.contains("hello file") && !images);
        let err = attachments_text("chat.send", Some(&json!([{"content": 5}]))).unwrap_err();
        assert_eq!(
            err.message,
            "invalid chat.send params: at /attachments/0/content: must be string"
        );
    }

    #[test]
    fn the_final_payload_reads_like_upstream() {
        let mut record = RunRecord {
            run_id: "r1".into(),
            method: "agent".into(),
            session_key: "agent:main:main".into(),
            status: RunStatus::Ok,
            accepted_at: 1,
            started_at: Some(2),
            ended_at: Some(5),
            error: None,
            text: Some("hi".into()),
            stop_reason: None,
            node_id: None,
            usage: None,
            abort_requested: None,
            request: RunRequest::default(),
        };
        let ok = final_payload(&record);
        assert_eq!(ok["summary"], "completed");
        assert_eq!(ok["result"]["payloads"][0]["text"], "hi");
        assert_eq!(ok["result"]["meta"]["durationMs"], 3);
        record.status = RunStatus::Error;
        record.error = Some("boom".into());
        assert_eq!(final_payload(&record)["summary"], "boom");
    }
}
