//! The cluster-shared configuration document (`argent.json`, kept in the state plane under
//! `argent_config/argent.json`), and the agent settings read from it.

use argent_planes::state::{StateError, StateStore};
use argent_proto::subjects::{BUCKET_CONFIG, CONFIG_KEY};
use serde_json::Value;

/// Default agent id, main session key and session scope (PROTOCOL.md §2.11).
pub const DEFAULT_AGENT_ID: &str = "main";
pub const DEFAULT_MAIN_KEY: &str = "main";
pub const DEFAULT_SCOPE: &str = "per-sender";

/// Reads the shared config document; `{}` when none was published yet.
pub async fn load(state: &dyn StateStore) -> Result<Value, StateError> {
    let Some(entry) = state.get(BUCKET_CONFIG, CONFIG_KEY).await? else {
        return Ok(Value::Object(Default::default()));
    };
    let raw = std::str::from_utf8(&entry.value)
        .map_err(|e| StateError::Failed(format!("shared config is not UTF-8: {e}")))?;
    argent_proto::config::parse(raw)
        .map_err(|e| StateError::Failed(format!("shared config is not valid JSON5: {e}")))
}

/// The shared config and the agents it defines, as the methods need them.
pub async fn load_with_agents(
    state: &dyn StateStore,
) -> Result<(Value, AgentsConfig), argent_proto::errors::RpcError> {
    let config = load(state).await?;
    let agents = AgentsConfig::from_config(&config);
    Ok((config, agents))
}

/// `<section>.<field>` of the agent's own entry in `agents.list`, else of
/// `agents.defaults` (how per-agent settings inherit).
pub fn agent_setting<'a>(
    config: &'a Value,
    agent_id: &str,
    section: &str,
    field: &str,
) -> Option<&'a Value> {
    let own = config
        .pointer("/agents/list")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter().find(|a| {
                a.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(agent_id))
            })
        })
        .and_then(|a| a.get(section))
        .and_then(|s| s.get(field));
    own.or_else(|| {
        config
            .pointer("/agents/defaults")
            .and_then(|d| d.get(section))
            .and_then(|s| s.get(field))
    })
}

/// One configured agent (`agents.list[]` of the config).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEntry {
    pub id: String,
    pub name: Option<String>,
    /// `{name?, theme?, emoji?, avatar?, avatarUrl?}` as configured.
    pub identity: Option<Value>,
}

/// The agents known to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentsConfig {
    pub default_id: String,
    pub main_key: String,
    pub scope: String,
    pub agents: Vec<AgentEntry>,
}

impl AgentsConfig {
    /// Reads `agents.list`, `session.mainKey` and `session.scope`. With no agent configured
    /// the cluster has the single default agent `main`.
    pub fn from_config(config: &Value) -> Self {
        let mut agents = Vec::new();
        let mut default_id = None;
        if let Some(list) = config.pointer("/agents/list").and_then(Value::as_array) {
            for item in list {
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let id = id.trim().to_ascii_lowercase();
                if id.is_empty() || agents.iter().any(|a: &AgentEntry| a.id == id) {
                    continue;
                }
                if item.get("default").and_then(Value::as_bool) == Some(true)
                    && default_id.is_none()
                {
                    default_id = Some(id.clone());
                }
                agents.push(AgentEntry {
                    id,
                    name: item.get("name").and_then(Value::as_str).map(str::to_string),
                    identity: item.get("identity").filter(|v| v.is_object()).cloned(),
                });
            }
        }
        if agents.is_empty() {
            agents.push(AgentEntry {
                id: DEFAULT_AGENT_ID.to_string(),
                name: None,
                identity: None,
            });
        }
        let default_id = default_id.unwrap_or_else(|| agents[0].id.clone());
        let text = |pointer: &str, default: &str| {
            config
                .pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        AgentsConfig {
            default_id,
            main_key: text("/session/mainKey", DEFAULT_MAIN_KEY),
            scope: text("/session/scope", DEFAULT_SCOPE),
            agents,
        }
    }

    pub fn get(&self, id: &str) -> Option<&AgentEntry> {
        self.agents.iter().find(|a| a.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_is_a_single_main_agent() {
        let c = AgentsConfig::from_config(&json!({}));
        assert_eq!(c.default_id, "main");
        assert_eq!(c.agents.len(), 1);
        assert_eq!(c.main_key, "main");
        assert_eq!(c.scope, "per-sender");
    }

    #[test]
    fn reads_the_agent_list() {
        let c = AgentsConfig::from_config(&json!({
            "agents": {"list": [
                {"id": "Ops", "name": "Ops bot"},
                {"id": "home", "default": true, "identity": {"emoji": "🏠"}},
                {"id": "home"}, {"name": "no id"}
            ]},
            "session": {"mainKey": "primary", "scope": "global"}
        }));
        assert_eq!(c.default_id, "home");
        assert_eq!(
            c.agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["ops", "home"]
        );
        assert_eq!(c.main_key, "primary");
        assert_eq!(c.scope, "global");
    }
}
