//! `agents.list`, `agent.identity.get`, `agents.files.list|get|set` (PROTOCOL.md §5.2, §5.12)
//! over the documents of [`crate::workspace`].

use serde_json::{json, Map, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use super::shared_config;
use crate::runtime::providers::Providers;
use crate::runtime::Runtime;
use crate::workspace::{self, is_allowed, Document, BOOTSTRAP_FILES, MEMORY_FILES};
use argent_proto::agents::AgentsConfig;

async fn agents(rt: &Runtime) -> Result<AgentsConfig, RpcError> {
    Ok(shared_config(rt).await?.agents().clone())
}

fn file_entry(agent_id: &str, name: &str, file: Option<&Document>, with_content: bool) -> Value {
    let mut entry = Map::new();
    entry.insert("name".into(), json!(name));
    entry.insert(
        "path".into(),
        json!(format!("{}/{name}", workspace::location(agent_id))),
    );
    entry.insert("missing".into(), json!(file.is_none()));
    if let Some(file) = file {
        entry.insert("size".into(), json!(file.content.len()));
        entry.insert("updatedAtMs".into(), json!(file.updated_at_ms));
        if with_content {
            entry.insert("content".into(), json!(file.content));
        }
    }
    Value::Object(entry)
}

/// Resolves `agentId` to a configured agent (`unknown agent id` otherwise).
async fn known_agent(rt: &Runtime, params: &Params<'_>) -> Result<String, RpcError> {
    let agent_id = params.required_str("agentId")?.trim().to_ascii_lowercase();
    if agents(rt).await?.get(&agent_id).is_none() {
        return Err(RpcError::bad_params("unknown agent id"));
    }
    Ok(agent_id)
}

fn checked_name(params: &Params<'_>) -> Result<String, RpcError> {
    let name = params.required_str("name")?;
    if !is_allowed(&name) {
        return Err(RpcError::bad_params(format!("unsupported file \"{name}\"")));
    }
    Ok(name)
}

pub async fn list(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    Params::new("agents.list", params)?;
    let shared = shared_config(rt).await?;
    let config = shared.agents();
    // The model a run of each agent would use, as the runtime chooses it. The dashboard
    // enables sending only for an agent whose model it knows; none without a provider.
    let providers = Providers::from_config(shared.document()).ok();
    let agents: Vec<Value> = config
        .agents
        .iter()
        .map(|a| {
            let mut row = Map::new();
            row.insert("id".into(), json!(a.id));
            if let Some(name) = &a.name {
                row.insert("name".into(), json!(name));
            }
            if let Some(identity) = &a.identity {
                row.insert("identity".into(), identity.clone());
            }
            if let Some(choice) = providers.as_ref().and_then(|p| p.choose(&a.id).ok()) {
                let primary = format!("{}/{}", choice.provider.id, choice.model);
                row.insert("model".into(), json!({ "primary": primary }));
            }
            Value::Object(row)
        })
        .collect();
    Ok(json!({
        "defaultId": config.default_id,
        "mainKey": config.main_key,
        "scope": config.scope,
        "agents": agents,
    }))
}

/// The agent a session key belongs to (`agent:<id>:…`).
fn agent_of_session(session_key: &str) -> Option<String> {
    let mut parts = session_key.split(':');
    match (parts.next(), parts.next()) {
        (Some(prefix), Some(id)) if prefix.eq_ignore_ascii_case("agent") && !id.is_empty() => {
            Some(id.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// `Name:`, `Emoji:`, `Avatar:` lines of IDENTITY.md (markdown list and bold tolerated).
fn parse_identity_md(text: &str) -> Map<String, Value> {
    let mut found = Map::new();
    for line in text.lines() {
        let line = line
            .trim()
            .trim_start_matches(['-', '*', ' '])
            .replace("**", "");
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.is_empty() || !["name", "emoji", "avatar", "theme"].contains(&key.as_str()) {
            continue;
        }
        found.entry(key).or_insert_with(|| json!(value));
    }
    found
}

pub async fn identity_get(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let state = rt.state.as_ref();
    let params = Params::new("agent.identity.get", params)?.only(&["agentId", "sessionKey"])?;
    let config = agents(rt).await?;
    let requested = params
        .optional_str("agentId")?
        .map(|s| s.to_ascii_lowercase());
    let from_session = params
        .optional_str("sessionKey")?
        .and_then(|k| agent_of_session(&k));
    let agent_id = match (requested, from_session) {
        (Some(a), Some(s)) if a != s => {
            return Err(RpcError::invalid_params(
                "agent.identity.get",
                &format!("agent \"{a}\" does not match session agent \"{s}\""),
            ))
        }
        (Some(a), _) => a,
        (None, Some(s)) => s,
        (None, None) => config.default_id.clone(),
    };
    let agent = config
        .get(&agent_id)
        .ok_or_else(|| RpcError::bad_params("unknown agent id"))?;
    // Precedence: IDENTITY.md, then the configured identity, then the agent's name.
    let mut identity = agent
        .identity
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(file) = workspace::read(state, &agent_id, "IDENTITY.md").await? {
        identity.extend(parse_identity_md(&file.content));
    }
    let text = |key: &str| {
        identity
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let name = text("name")
        .or_else(|| agent.name.clone())
        .unwrap_or_else(|| "Assistant".to_string());
    let emoji = text("emoji");
    let avatar = text("avatar")
        .or_else(|| text("avatarUrl"))
        .or_else(|| emoji.clone())
        .unwrap_or_else(|| {
            name.chars()
                .next()
                .unwrap_or('A')
                .to_uppercase()
                .to_string()
        });
    let mut result = json!({"agentId": agent_id, "name": name, "avatar": avatar});
    if let Some(emoji) = emoji {
        result["emoji"] = json!(emoji);
    }
    Ok(result)
}

pub async fn files_list(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let state = rt.state.as_ref();
    let params = Params::new("agents.files.list", params)?.only(&["agentId"])?;
    let agent_id = known_agent(rt, &params).await?;
    let mut files = Vec::new();
    for name in BOOTSTRAP_FILES {
        let file = workspace::read(state, &agent_id, name).await?;
        files.push(file_entry(&agent_id, name, file.as_ref(), false));
    }
    let upper = workspace::read(state, &agent_id, MEMORY_FILES[0]).await?;
    let lower = match upper {
        Some(_) => None,
        None => workspace::read(state, &agent_id, MEMORY_FILES[1]).await?,
    };
    match (upper, lower) {
        (None, Some(lower)) => {
            files.push(file_entry(&agent_id, MEMORY_FILES[1], Some(&lower), false))
        }
        (upper, _) => files.push(file_entry(
            &agent_id,
            MEMORY_FILES[0],
            upper.as_ref(),
            false,
        )),
    }
    Ok(json!({"agentId": agent_id, "workspace": workspace::location(&agent_id), "files": files}))
}

pub async fn files_get(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let state = rt.state.as_ref();
    let params = Params::new("agents.files.get", params)?.only(&["agentId", "name"])?;
    let agent_id = known_agent(rt, &params).await?;
    let name = checked_name(&params)?;
    let file = workspace::read(state, &agent_id, &name).await?;
    Ok(json!({
        "agentId": agent_id,
        "workspace": workspace::location(&agent_id),
        "file": file_entry(&agent_id, &name, file.as_ref(), true),
    }))
}

pub async fn files_set(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let state = rt.state.as_ref();
    let params = Params::new("agents.files.set", params)?.only(&["agentId", "name", "content"])?;
    let agent_id = known_agent(rt, &params).await?;
    let name = checked_name(&params)?;
    let content = params.required_text("content")?;
    let stored = workspace::write(state, &agent_id, &name, content).await?;
    Ok(json!({
        "ok": true,
        "agentId": agent_id,
        "workspace": workspace::location(&agent_id),
        "file": file_entry(&agent_id, &name, Some(&stored), true),
    }))
}

/// `webSearch.status {agentId?, modelProvider?, modelId?}` (protocol 4): the agent has no
/// web search tool here, so search is unavailable; the model is the one its runs use (or the
/// one asked about).
pub async fn web_search_status(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p =
        Params::new("webSearch.status", params)?.only(&["agentId", "modelProvider", "modelId"])?;
    let (provider, model) = (p.optional_str("modelProvider")?, p.optional_str("modelId")?);
    if provider.is_some() != model.is_some() {
        return Err(RpcError::bad_params(
            "modelProvider and modelId must be supplied together.",
        ));
    }
    let config = agents(rt).await?;
    let agent_id = p
        .optional_str("agentId")?
        .unwrap_or_else(|| config.default_id.clone());
    if config.get(&agent_id).is_none() {
        return Err(RpcError::bad_params(format!(
            "unknown agent id \"{agent_id}\""
        )));
    }
    let (provider, model) = match (provider, model) {
        (Some(provider), Some(model)) => (provider, model),
        _ => {
            let shared = shared_config(rt).await?;
            let choice = Providers::from_config(shared.document())
                .and_then(|p| p.choose(&agent_id))
                .map_err(crate::respond::provider)?;
            (choice.provider.id, choice.model)
        }
    };
    Ok(json!({
        "enabled": false, "provider": null, "agentId": agent_id,
        "model": {"provider": provider, "id": model, "runtime": "argent", "runtimeLabel": "Built-in"},
        "route": {"kind": "unavailable", "label": "Search unavailable", "testable": false,
                  "reason": "This system's agents have no web search tool."},
        "providers": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_md_lines() {
        let parsed = parse_identity_md("# Me\n- **Name:** Argent\n- Emoji: 🦀\nnotes: x\n");
        assert_eq!(parsed.get("name"), Some(&json!("Argent")));
        assert_eq!(parsed.get("emoji"), Some(&json!("🦀")));
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn session_keys_name_their_agent() {
        assert_eq!(agent_of_session("agent:ops:main"), Some("ops".into()));
        assert_eq!(agent_of_session("main"), None);
    }
}
