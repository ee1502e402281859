//! `sessions.list`, `sessions.preview`, `sessions.reset`, `sessions.compact`,
//! `commands.compact` (PROTOCOL.md §5.4) and `models.list` (§5.6).

use std::sync::Arc;

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use super::shared_config;
use crate::error::ServiceError;
use crate::respond;
use crate::runtime::compaction::{self, Compaction, Summarized};
use crate::runtime::providers::{self, Providers};
use crate::runtime::run::message_text;
use crate::runtime::sessions::SessionEntry;
use crate::runtime::{thinking, Runtime};
use argent_proto::session_key::{agent_of, kind_of, SessionKey};
use argent_proto::session_patch;

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
        // Protocol 4 (2026.9.6). Those about attributes this system's sessions do not have
        // (projects, boards, pins, owners, archives) select nothing when they ask for one.
        "configuredAgentsOnly",
        "offset",
        "activeOnly",
        "requireLastInteraction",
        "sortBy",
        "excludeSubagents",
        "excludeCron",
        "excludeSystem",
        "includeActivitySummary",
        "projectId",
        "workspaceDir",
        "group",
        "pinned",
        "boardFace",
        "hasBoard",
        "creatorId",
        "ownerId",
        "ownerFirst",
        "involvingMe",
        "profileRelation",
        "involvingProfileId",
        "includePeople",
        "archived",
    ])?;
    let offset = p.optional_u64("offset", 0)?.unwrap_or(0) as usize;
    for flag in [
        "activeOnly",
        "requireLastInteraction",
        "excludeSubagents",
        "excludeCron",
        "excludeSystem",
        "includeActivitySummary",
        "ownerFirst",
        "involvingMe",
        "includePeople",
    ] {
        p.optional_bool(flag)?;
    }
    let mut absent_attribute = false;
    for attribute in [
        "projectId",
        "workspaceDir",
        "creatorId",
        "ownerId",
        "involvingProfileId",
        "boardFace",
    ] {
        absent_attribute |= p.optional_str(attribute)?.is_some();
    }
    absent_attribute |= p.get("group").is_some_and(|g| g.as_str() != Some(""));
    absent_attribute |= p.get("profileRelation").is_some();
    absent_attribute |= p.optional_bool("pinned")? == Some(true);
    absent_attribute |= p.optional_bool("hasBoard")? == Some(true);
    absent_attribute |= p.get("archived") == Some(&Value::Bool(true));
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
    // Protocol 4: only sessions of agents the config lists (not of agents removed since).
    let configured_only = p.optional_bool("configuredAgentsOnly")?.unwrap_or(false);
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
                && active_minutes
                    .is_none_or(|m| now.saturating_sub(e.updated_at) <= m.saturating_mul(60_000))
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
                && (!configured_only
                    || agents
                        .agents
                        .iter()
                        .any(|a| a.id == agent_of(&e.key, agents)))
                && search
                    .as_ref()
                    .is_none_or(|s| searchable(e).any(|f| f.to_lowercase().contains(s.as_str())))
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.updated_at));
    if absent_attribute {
        entries.clear();
    }
    entries.drain(..offset.min(entries.len()));
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

pub async fn reset(rt: &Arc<Runtime>, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.reset", params)?.only(&["key"])?;
    let raw = p.required_str("key")?;
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = SessionKey::canonical(&raw, agents).into_string();
    // Under the session's lease: a turn starting meanwhile queues behind the reset instead
    // of reading the entry just before it changes (and writing to the old transcript).
    let reset = async { rt.sessions.update(&key, |e| *e = e.reset()).await };
    let entry = compaction::holding_lease(rt, &key, reset).await?;
    Ok(json!({"ok": true, "key": key, "entry": entry.to_value()}))
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
    let outcome = compaction::compact(rt, &key, max_lines, config.document(), agents).await?;
    Ok(match outcome {
        Compaction::NoSession => {
            json!({"ok": true, "key": key, "compacted": false, "reason": "no sessionId"})
        }
        Compaction::NoTranscript => {
            json!({"ok": true, "key": key, "compacted": false, "reason": "no transcript"})
        }
        Compaction::Short { kept } => {
            json!({"ok": true, "key": key, "compacted": false, "kept": kept})
        }
        Compaction::Done {
            archived,
            kept,
            summarized,
        } => json!({
            "ok": true, "key": key, "compacted": true, "archived": archived, "kept": kept,
            "summarized": summarized,
        }),
    })
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
    let outcome =
        compaction::summarize_session(rt, &key, instructions, config.document(), agents).await?;
    Ok(match outcome {
        Summarized::NothingToCompact { tokens_before } => json!({
            "ok": true, "compacted": false, "reason": "nothing to compact",
            "tokensBefore": tokens_before,
        }),
        Summarized::Done {
            tokens_before,
            tokens_after,
        } => json!({
            "ok": true, "compacted": true, "tokensBefore": tokens_before,
            "tokensAfter": tokens_after,
        }),
    })
}

pub async fn models(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    // Protocol 4's filters. This system knows only the models of the configured providers,
    // so every `view` is that list; `provider` narrows it.
    let p = Params::new("models.list", params)?.only(&[
        "agentId",
        "sessionKey",
        "authProfileId",
        "provider",
        "includeDetails",
        "includeProviderCapabilities",
        "includeDefaultModels",
        "preparedOnly",
        "refresh",
        "view",
    ])?;
    for flag in [
        "includeDetails",
        "includeProviderCapabilities",
        "includeDefaultModels",
        "preparedOnly",
        "refresh",
    ] {
        p.optional_bool(flag)?;
    }
    for text in ["agentId", "sessionKey", "authProfileId"] {
        p.optional_str(text)?;
    }
    if let Some(view) = p.optional_str("view")? {
        if !["default", "configured", "provider-config", "all"].contains(&view.as_str()) {
            return Err(p.invalid("at /view: must be equal to one of the allowed values"));
        }
    }
    let provider = p.optional_str("provider")?;
    let config = shared_config(rt).await?;

    let providers = Providers::from_config(config.document()).map_err(respond::provider)?;
    let mut models = providers::list_models(&providers).await;
    if let Some(provider) = provider {
        models.retain(|m| m["provider"] == provider.as_str());
    }
    Ok(json!({ "models": models }))
}

/// `sessions.describe {key, agentId?, includeDerivedTitles?, includeLastMessage?}`
/// (protocol 4): the row `sessions.list` has for `key`, or `session: null`.
pub async fn describe(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.describe", params)?.only(&[
        "key",
        "agentId",
        "includeDerivedTitles",
        "includeLastMessage",
    ])?;
    let key = p.required_str("key")?;
    let agent_id = p.optional_str("agentId")?;
    let titles = p.optional_bool("includeDerivedTitles")?.unwrap_or(false);
    let last_message = p.optional_bool("includeLastMessage")?.unwrap_or(false);
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = match &agent_id {
        Some(agent) => SessionKey::for_agent(Some(&key), agent, agents).into_string(),
        None => SessionKey::canonical(&key, agents).into_string(),
    };
    let session = rt
        .sessions
        .get(&key)
        .await?
        .map(|entry| row(&entry, titles, last_message));
    Ok(json!({ "session": session }))
}

/// What this system's sessions have: a name, a model, a thinking level.
const PATCHABLE: [&str; 3] = ["label", "model", "thinkingLevel"];

/// A nullable text param: `Some(None)` clears, `Some(Some(text))` sets, `None` leaves it.
fn nullable_text(
    p: &Params,
    key: &str,
    max_chars: usize,
) -> Result<Option<Option<String>>, RpcError> {
    match p.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text))
            if !text.trim().is_empty() && text.chars().count() <= max_chars =>
        {
            Ok(Some(Some(text.trim().to_string())))
        }
        Some(_) => Err(p.invalid(format!(
            "at /{key}: must be a non-empty string of at most {max_chars} characters, or null"
        ))),
    }
}

/// `sessions.patch {key, agentId?, expectedSessionId?, label?, model?, thinkingLevel?}`:
/// per-session settings the dashboard's pickers and rename write. `model` (`provider/model`,
/// or a model id one provider lists; `null`: the agent's model) is what the session's runs
/// use from the next turn on; `thinkingLevel` (`null`: the model's default) what they ask
/// of the model's reasoning. Settings of upstream's sessions this system does not have are
/// refused by name.
pub async fn patch(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let all = session_patch::params();
    let p = Params::new("sessions.patch", params)?.only(&all)?;
    let raw = p.required_str("key")?;
    let agent_id = p.optional_str("agentId")?;
    let expected = p.optional_str("expectedSessionId")?;
    // Preconditions on state this system's sessions do not have cannot be checked: refused
    // by name, like the settings (a runtime only when one is named).
    let unsupported: Vec<&str> = all
        .iter()
        .copied()
        .filter(|k| p.get(k).is_some_and(|v| !v.is_null()))
        .filter(|k| !PATCHABLE.contains(k))
        .filter(|k| !matches!(*k, "key" | "agentId" | "expectedSessionId" | "agentRuntime"))
        .collect();
    if !unsupported.is_empty() {
        return Err(p.invalid(format!(
            "this system's sessions have no {}; only label, model and thinkingLevel can be patched",
            unsupported.join(", ")
        )));
    }
    if matches!(p.get("agentRuntime"), Some(v) if !v.is_null()) {
        return Err(p.invalid(
            "agent runtimes cannot be chosen here: every session runs on the built-in runtime",
        ));
    }
    let label = nullable_text(&p, "label", 512)?;
    let model = nullable_text(&p, "model", 512)?;
    let level = nullable_text(&p, "thinkingLevel", 64)?;
    let level = match level {
        Some(Some(raw)) => Some(Some(thinking::normalize(&raw).ok_or_else(|| {
            RpcError::bad_params(format!(
                "invalid thinkingLevel (use {})",
                thinking::LEVELS.join("|")
            ))
        })?)),
        Some(None) => Some(None),
        None => None,
    };
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = match &agent_id {
        Some(agent) => SessionKey::for_agent(Some(&raw), agent, agents).into_string(),
        None => SessionKey::canonical(&raw, agents).into_string(),
    };
    let agent = agent_of(&key, agents).to_string();
    // Models are looked at only when the patch is about them: a rename works without any.
    let providers = if model.is_some() || level.is_some() {
        Some(Providers::from_config(config.document()).map_err(respond::provider)?)
    } else {
        None
    };
    let picked = match (&model, &providers) {
        (Some(Some(raw)), Some(providers)) => Some(Some(
            providers.resolve_pick(raw).map_err(RpcError::bad_params)?,
        )),
        (Some(None), _) => Some(None),
        _ => None,
    };
    let mut choice = None;
    let entry = rt
        .sessions
        .update_if(&key, |entry, existed| {
            // Checked under the revision written: a reset in between is not overtaken.
            if let Some(expected) = &expected {
                if !existed || &entry.session_id != expected {
                    return Err(ServiceError::invalid(
                        "sessions.patch",
                        format!("session {key} is no longer {expected} (it was reset or removed); reload and retry"),
                    ));
                }
            }
            if let Some(label) = &label {
                entry.label = label.clone();
            }
            match &picked {
                Some(Some((provider, model))) => {
                    entry.provider_override = Some(provider.clone());
                    entry.model_override = Some(model.clone());
                    entry.model_override_source = Some("user".into());
                }
                Some(None) => {
                    entry.provider_override = None;
                    entry.model_override = None;
                    entry.model_override_source = Some("default".into());
                }
                None => {}
            }
            if let Some(providers) = &providers {
                // The level must suit the model the session runs on from now on: one asked
                // for is checked, one kept from before is dropped when the model lacks it.
                let runs_on = providers
                    .choose_for_session(&agent, entry.picked_model().as_deref())
                    .map_err(|e| ServiceError::NoProvider(e.to_string()))?;
                let offered = thinking::levels_for(runs_on.reasoning);
                match level {
                    Some(Some(level)) if !offered.contains(&level) => {
                        return Err(ServiceError::invalid(
                            "sessions.patch",
                            format!(
                                "thinkingLevel \"{level}\" is not supported for {}/{} (use {})",
                                runs_on.provider.id,
                                runs_on.model,
                                offered.join("|")
                            ),
                        ))
                    }
                    Some(level) => entry.thinking_level = level.map(str::to_string),
                    None => {
                        if entry.thinking_level.as_deref().is_some_and(|l| !offered.contains(&l)) {
                            entry.thinking_level = None;
                        }
                    }
                }
                choice = Some(runs_on);
            }
            entry.updated_at = argent_proto::now_ms();
            Ok(())
        })
        .await?;
    let mut resolved = json!({
        "agentRuntime": {"id": "argent", "source": "implicit"},
        "runtimeSelectionLocked": false,
    });
    if let Some(choice) = &choice {
        resolved["modelProvider"] = json!(choice.provider.id);
        resolved["model"] = json!(choice.model);
        resolved["thinkingLevels"] = json!(thinking::level_rows(choice.reasoning));
    }
    if let Some(level) = &entry.thinking_level {
        resolved["thinkingLevel"] = json!(level);
    }
    Ok(json!({"ok": true, "key": key, "entry": entry.to_value(), "resolved": resolved}))
}
