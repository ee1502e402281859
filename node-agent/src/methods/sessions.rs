//! `sessions.list`, `sessions.preview`, `sessions.reset`, `sessions.compact`,
//! `commands.compact` (PROTOCOL.md §5.4) and `models.list` (§5.6).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use super::shared_config;
use crate::respond;
use crate::runtime::providers::{self, Providers, TurnEvent};
use crate::runtime::run::message_text;
use crate::runtime::runs::{self, Enqueued};
use crate::runtime::sessions::SessionEntry;
use crate::runtime::Runtime;
use argent_proto::agents::AgentsConfig;
use argent_proto::session_key::{agent_of, kind_of, SessionKey};

/// Messages `commands.compact` keeps verbatim after the summary.
const KEEP_TAIL: usize = 4;
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(120);

/// Agent Busy when a run holds the session (reset and compaction would pull the
/// transcript from under it).
async fn refuse_if_running(rt: &Runtime, key: &str) -> Result<(), RpcError> {
    let lease = runs::read_lease(rt.state.as_ref(), key)
        .await
        .map_err(respond::state)?;
    let Some((lease, _)) = lease else {
        return Ok(());
    };
    // A lease whose run has ended is about to be released.
    let active = match &lease.active {
        Some(run_id) => !rt
            .runs
            .get(run_id)
            .await?
            .is_some_and(|r| r.status.is_final()),
        None => false,
    };
    if active || !lease.queue.is_empty() {
        return Err(RpcError::agent_busy(
            format!("agent busy: session {key} is running a turn; try again when it ends"),
            1000,
        ));
    }
    Ok(())
}

/// Runs `work` while this node holds the session's lease, so no turn starts meanwhile:
/// messages sent during it queue behind it and run afterwards. Agent Busy when a turn holds
/// the session.
async fn holding_lease<T>(
    rt: &Arc<Runtime>,
    key: &str,
    work: impl std::future::Future<Output = Result<T, RpcError>>,
) -> Result<T, RpcError> {
    let marker = format!("maintenance-{}", uuid::Uuid::new_v4().simple());
    // A lease whose run just ended is released a moment later: wait for that, not longer.
    let mut attempts = 40;
    let mut lease = loop {
        refuse_if_running(rt, key).await?;
        let enqueued = runs::enqueue(&rt.state, key, &marker, &rt.node_id)
            .await
            .map_err(respond::state)?;
        match enqueued {
            Enqueued::Started(lease) => break lease,
            Enqueued::Queued(_) => {
                runs::dequeue(rt.state.as_ref(), key, Some(&marker))
                    .await
                    .map_err(respond::state)?;
            }
            Enqueued::Busy => {}
        }
        attempts -= 1;
        if attempts == 0 {
            return Err(RpcError::agent_busy(
                format!("agent busy: session {key} is running a turn; try again when it ends"),
                1000,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let result = lease.beating(work).await.unwrap_or_else(|err| {
        Err(RpcError::unavailable(format!("session {key}: {err}")).retryable(Some(1000)))
    });
    // The marker is no run (the driver skips it); what queued meanwhile runs now.
    rt.drive(lease, false);
    result
}

fn row(entry: &SessionEntry, titles: bool, last_message: bool) -> Value {
    let mut row = entry.to_value();
    let object = row.as_object_mut().expect("entries are objects");
    object.insert("kind".into(), json!(kind_of(&entry.key)));
    if !titles {
        object.remove("derivedTitle");
    }
    if !last_message {
        object.remove("lastMessagePreview");
    }
    object.remove("createdAt");
    row
}

/// The fields `search` matches: display name, label, subject, session id, key.
fn searchable(e: &SessionEntry) -> impl Iterator<Item = &str> {
    let subject = e.extra.get("subject").and_then(Value::as_str);
    [e.key.as_str(), e.session_id.as_str()]
        .into_iter()
        .chain(e.display_names())
        .chain(subject)
}

pub async fn list(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.list", params)?.only(&[
        "limit",
        "activeMinutes",
        "kinds",
        "surface",
        "channel",
        "includeGlobal",
        "includeUnknown",
        "includeDerivedTitles",
        "includeLastMessage",
        "label",
        "spawnedBy",
        "agentId",
        "search",
    ])?;
    let limit = p.optional_u64("limit", 1)?;
    let active_minutes = p.optional_u64("activeMinutes", 1)?;
    let kinds = p.optional_str_list("kinds")?;
    let channel = p.optional_str("channel")?;
    p.optional_str("surface")?;
    let include_global = p.optional_bool("includeGlobal")?.unwrap_or(true);
    let include_unknown = p.optional_bool("includeUnknown")?.unwrap_or(true);
    let titles = p.optional_bool("includeDerivedTitles")?.unwrap_or(false);
    let last_message = p.optional_bool("includeLastMessage")?.unwrap_or(false);
    let label = p.optional_str("label")?;
    let spawned_by = p.optional_str("spawnedBy")?;
    let agent_id = p.optional_str("agentId")?.map(|a| a.to_ascii_lowercase());
    let search = p.optional_str("search")?.map(|s| s.to_lowercase());
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let now = argent_proto::now_ms();
    let mut entries: Vec<SessionEntry> = rt
        .sessions
        .list()
        .await?
        .into_iter()
        .filter(|e| {
            let kind = kind_of(&e.key);
            (include_global || kind != "global")
                && (include_unknown || kind != "unknown")
                && kinds.as_ref().is_none_or(|k| k.iter().any(|x| x == kind))
                && active_minutes.is_none_or(|m| now.saturating_sub(e.updated_at) <= m * 60_000)
                && channel
                    .as_ref()
                    .is_none_or(|c| e.channel.as_ref() == Some(c))
                && label.as_ref().is_none_or(|l| e.label.as_ref() == Some(l))
                && spawned_by
                    .as_ref()
                    .is_none_or(|s| e.spawned_by.as_ref() == Some(s))
                && agent_id
                    .as_ref()
                    .is_none_or(|a| agent_of(&e.key, agents) == a)
                && search
                    .as_ref()
                    .is_none_or(|s| searchable(e).any(|f| f.to_lowercase().contains(s.as_str())))
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.updated_at));
    if let Some(limit) = limit {
        entries.truncate(limit as usize);
    }
    let defaults = match Providers::from_config(config.document())
        .and_then(|p| p.choose(&agents.default_id))
    {
        Ok(choice) => {
            json!({"modelProvider": choice.provider.id, "model": choice.model, "contextTokens": choice.context_window})
        }
        Err(_) => json!({"modelProvider": null, "model": null, "contextTokens": null}),
    };
    let sessions: Vec<Value> = entries
        .iter()
        .map(|e| row(e, titles, last_message))
        .collect();
    Ok(json!({
        "ts": now, "path": argent_proto::subjects::BUCKET_SESSIONS, "count": sessions.len(),
        "defaults": defaults, "sessions": sessions,
    }))
}

fn preview_role(role: Option<&str>) -> &'static str {
    match role {
        Some("user") => "user",
        Some("assistant") => "assistant",
        Some("toolResult") | Some("tool") => "tool",
        Some("system") => "system",
        _ => "other",
    }
}

pub async fn preview(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.preview", params)?.only(&["keys", "limit", "maxChars"])?;
    let keys = p
        .optional_str_list("keys")?
        .ok_or_else(|| p.invalid("at root: must have required property 'keys'"))?;
    if keys.is_empty() {
        return Err(p.invalid("at /keys: must NOT have fewer than 1 items"));
    }
    let limit = p.optional_u64("limit", 1)?.unwrap_or(12) as usize;
    let max_chars = p.optional_u64("maxChars", 20)?.unwrap_or(240) as usize;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let mut previews = Vec::new();
    for key in keys.iter().take(64) {
        let canonical = SessionKey::canonical(key, agents).into_string();
        let status_of =
            |status: &str, items: Vec<Value>| json!({"key": key, "status": status, "items": items});
        let entry = match rt.sessions.get(&canonical).await {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                previews.push(status_of("missing", Vec::new()));
                continue;
            }
            Err(_) => {
                previews.push(status_of("error", Vec::new()));
                continue;
            }
        };
        match rt.transcripts.read(&entry.session_id).await {
            Ok(messages) if messages.is_empty() => previews.push(status_of("empty", Vec::new())),
            Ok(messages) => {
                let start = messages.len().saturating_sub(limit);
                let items = messages[start..]
                    .iter()
                    .map(|m| {
                        let text: String = message_text(m).chars().take(max_chars).collect();
                        json!({"role": preview_role(m["role"].as_str()), "text": text})
                    })
                    .collect();
                previews.push(status_of("ok", items));
            }
            Err(_) => previews.push(status_of("error", Vec::new())),
        }
    }
    Ok(json!({"ts": argent_proto::now_ms(), "previews": previews}))
}

pub async fn reset(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.reset", params)?.only(&["key"])?;
    let raw = p.required_str("key")?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = SessionKey::canonical(&raw, agents).into_string();
    refuse_if_running(rt, &key).await?;
    let entry = rt.sessions.update(&key, |e| *e = e.reset()).await?;
    Ok(json!({"ok": true, "key": key, "entry": entry.to_value()}))
}

/// Asks the session's model for a summary of `messages`; `None` when no model is
/// configured or it fails (compaction then only truncates).
async fn summarize(
    config: &Value,
    agent_id: &str,
    messages: &[Value],
    instructions: Option<&str>,
) -> Result<String, String> {
    let choice = Providers::from_config(config)
        .and_then(|p| p.choose(agent_id))
        .map_err(|e| e.to_string())?;
    let mut conversation = String::new();
    for message in messages {
        let role = message["role"].as_str().unwrap_or("other");
        conversation.push_str(&format!("{role}: {}\n", message_text(message)));
    }
    let mut system = "Summarize the conversation below for your future self: keep facts, decisions, open questions and the user's preferences. Answer with the summary only.".to_string();
    if let Some(instructions) = instructions {
        system.push_str(&format!("\nAlso: {instructions}"));
    }
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(providers::stream_turn(
        choice,
        system,
        vec![genai::chat::ChatMessage::user(conversation)],
        Vec::new(),
        tx,
    ));
    let collect = async {
        let mut text = String::new();
        while let Some(event) = rx.recv().await {
            if let TurnEvent::Text(piece) = event {
                text.push_str(&piece);
            }
        }
        text
    };
    let text = tokio::time::timeout(SUMMARY_TIMEOUT, collect)
        .await
        .map_err(|_| "the summary took too long".to_string())?;
    match task.await {
        Ok(Ok(())) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(Ok(())) => Err("the model returned an empty summary".into()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

fn summary_message(summary: &str, replaced: usize) -> Value {
    json!({
        "role": "system", "content": [{"type": "text", "text": summary}],
        "timestamp": argent_proto::now_ms(), "compactionSummary": true, "replacedMessages": replaced,
    })
}

fn estimate_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| message_text(m).chars().count() as u64)
        .sum::<u64>()
        .div_ceil(4)
}

async fn clear_counters(rt: &Runtime, key: &str) -> Result<(), RpcError> {
    rt.sessions
        .update(key, |e| {
            e.input_tokens = 0;
            e.output_tokens = 0;
            e.total_tokens = 0;
        })
        .await?;
    Ok(())
}

/// Keeps the last `maxLines` messages; with a model available the dropped part is replaced
/// by a model-written summary (`summarized:true` [EXT]).
pub async fn compact(rt: &Arc<Runtime>, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.compact", params)?.only(&["key", "maxLines"])?;
    let raw = p.required_str("key")?;
    let max_lines = p.optional_u64("maxLines", 1)?.unwrap_or(400) as usize;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = SessionKey::canonical(&raw, agents).into_string();
    holding_lease(
        rt,
        &key,
        compact_transcript(rt, &key, max_lines, config.document(), agents),
    )
    .await
}

async fn compact_transcript(
    rt: &Runtime,
    key: &str,
    max_lines: usize,
    config: &Value,
    agents: &AgentsConfig,
) -> Result<Value, RpcError> {
    let Some(entry) = rt.sessions.get(key).await? else {
        return Ok(json!({"ok": true, "key": key, "compacted": false, "reason": "no sessionId"}));
    };
    let messages = rt.transcript(&entry.session_id).await?;
    if messages.is_empty() {
        return Ok(json!({"ok": true, "key": key, "compacted": false, "reason": "no transcript"}));
    }
    if messages.len() <= max_lines {
        return Ok(json!({"ok": true, "key": key, "compacted": false, "kept": messages.len()}));
    }
    let cut = messages.len() - max_lines;
    let (dropped, kept) = messages.split_at(cut);
    let summary = summarize(config, agent_of(key, agents), dropped, None).await;
    let mut next = Vec::with_capacity(kept.len() + 1);
    let summarized = match &summary {
        Ok(text) => {
            next.push(summary_message(text, dropped.len()));
            true
        }
        Err(why) => {
            tracing::info!(%why, "compaction without a summary");
            false
        }
    };
    next.extend_from_slice(kept);
    let archived = rt
        .transcripts
        .replace(&entry.session_id, &next)
        .await
        .map_err(respond::state)?;
    clear_counters(rt, key).await?;
    Ok(json!({
        "ok": true, "key": key, "compacted": true, "archived": archived, "kept": kept.len(),
        "summarized": summarized,
    }))
}

/// `commands.compact`: the model summarizes all but the last few messages.
pub async fn command_compact(rt: &Arc<Runtime>, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("commands.compact", params)?.only(&["sessionKey", "instructions"])?;
    let raw = p.required_str("sessionKey")?;
    let instructions = p.optional_str("instructions")?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = SessionKey::canonical(&raw, agents).into_string();
    let instructions = instructions.as_deref();
    holding_lease(
        rt,
        &key,
        summarize_session(rt, &key, instructions, config.document(), agents),
    )
    .await
}

async fn summarize_session(
    rt: &Runtime,
    key: &str,
    instructions: Option<&str>,
    config: &Value,
    agents: &AgentsConfig,
) -> Result<Value, RpcError> {
    let Some(entry) = rt.sessions.get(key).await? else {
        return Err(RpcError::session_not_found(
            "session not found or has no sessionId",
        ));
    };
    let messages = rt.transcript(&entry.session_id).await?;
    let tokens_before = estimate_tokens(&messages);
    if messages.len() <= KEEP_TAIL {
        return Ok(
            json!({"ok": true, "compacted": false, "reason": "nothing to compact", "tokensBefore": tokens_before}),
        );
    }
    let (older, tail) = messages.split_at(messages.len() - KEEP_TAIL);
    let summary = summarize(config, agent_of(key, agents), older, instructions)
        .await
        .map_err(|why| RpcError::unavailable(format!("compaction failed: {why}")))?;
    let mut next = vec![summary_message(&summary, older.len())];
    next.extend_from_slice(tail);
    rt.transcripts
        .replace(&entry.session_id, &next)
        .await
        .map_err(respond::state)?;
    clear_counters(rt, key).await?;
    Ok(json!({
        "ok": true, "compacted": true, "tokensBefore": tokens_before,
        "tokensAfter": estimate_tokens(&next),
    }))
}

pub async fn models(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    Params::new("models.list", params)?.only(&[])?;
    let config = shared_config(rt).await?;

    let providers = Providers::from_config(config.document())
        .map_err(|e| RpcError::unavailable(e.to_string()))?;
    Ok(json!({"models": providers::list_models(&providers).await}))
}
