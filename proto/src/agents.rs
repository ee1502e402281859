//! The agents of the shared config (`agents.list`, `session.mainKey`, `session.scope`), read
//! leniently: an entry without an id is skipped, ids are lower-cased, the first duplicate
//! wins, and no agent at all means the single default agent `main` (PROTOCOL.md §2.11).

use serde_json::Value;

/// Default agent id, main session key and session scope (PROTOCOL.md §2.11).
pub const DEFAULT_AGENT_ID: &str = "main";
pub const DEFAULT_MAIN_KEY: &str = "main";
pub const DEFAULT_SCOPE: &str = "per-sender";

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
