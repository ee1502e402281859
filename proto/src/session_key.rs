//! Session keys (PROTOCOL.md §5.0): `agent:<agentId>:<rest>`, or `global` / `unknown`. One
//! type builds them, so no site spells the format itself.

use std::fmt;

use crate::agents::AgentsConfig;

/// A canonical session key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// `agent:<agent_id>:<rest>`.
    pub fn of_agent(agent_id: &str, rest: &str) -> Self {
        SessionKey(format!("agent:{agent_id}:{rest}"))
    }

    /// The agent's main session (`agent:<id>:<session.mainKey>`).
    pub fn main_of(agent_id: &str, agents: &AgentsConfig) -> Self {
        Self::of_agent(agent_id, &agents.main_key)
    }

    /// The session `main` means: the default agent's main session, or `global` when the
    /// config's `session.scope` is `global`.
    pub fn main(agents: &AgentsConfig) -> Self {
        if agents.scope == "global" {
            SessionKey("global".to_string())
        } else {
            Self::main_of(&agents.default_id, agents)
        }
    }

    /// Canonical form of a session key given by a client (§5.0).
    pub fn canonical(raw: &str, agents: &AgentsConfig) -> Self {
        let key = raw.trim().to_ascii_lowercase();
        if key == "main" || key == agents.main_key {
            return Self::main(agents);
        }
        if key == "global" || key == "unknown" {
            return SessionKey(key);
        }
        if let Some(rest) = key.strip_prefix("agent:main:") {
            // The upstream clients' aliases of the main agent follow the configured default.
            if agents.default_id != "main" && agents.get("main").is_none() {
                return Self::of_agent(&agents.default_id, rest);
            }
        }
        if key.starts_with("agent:") {
            return SessionKey(key);
        }
        Self::of_agent(&agents.default_id, &key)
    }

    /// The key for the `agent` method: a bare key belongs to the given agent.
    pub fn for_agent(raw: Option<&str>, agent_id: &str, agents: &AgentsConfig) -> Self {
        match raw.map(str::trim).filter(|k| !k.is_empty()) {
            None => Self::main_of(agent_id, agents),
            Some(key) if key.contains(':') || key == "main" || key == "global" => {
                Self::canonical(key, agents)
            }
            Some(key) => Self::of_agent(agent_id, &key.to_ascii_lowercase()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The agent a canonical key belongs to (`global`/`unknown`: the default agent).
pub fn agent_of<'a>(key: &'a str, agents: &'a AgentsConfig) -> &'a str {
    key.strip_prefix("agent:")
        .and_then(|rest| rest.split(':').next())
        .filter(|id| !id.is_empty())
        .unwrap_or(&agents.default_id)
}

/// `direct`, `group`, `global` or `unknown` (sessions.list `kinds`).
pub fn kind_of(key: &str) -> &'static str {
    match key {
        "global" => "global",
        "unknown" => "unknown",
        _ if key.contains(":group:") || key.contains(":channel:") => "group",
        _ => "direct",
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SessionKey> for String {
    fn from(key: SessionKey) -> String {
        key.0
    }
}

impl AsRef<str> for SessionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn agents(config: Value) -> AgentsConfig {
        AgentsConfig::from_config(&config)
    }

    fn canonical(raw: &str, agents: &AgentsConfig) -> String {
        SessionKey::canonical(raw, agents).into_string()
    }

    fn for_agent(raw: Option<&str>, agent_id: &str, agents: &AgentsConfig) -> String {
        SessionKey::for_agent(raw, agent_id, agents).into_string()
    }

    #[test]
    fn canonical_keys_follow_the_protocol() {
        let a = agents(json!({}));
        assert_eq!(canonical("main", &a), "agent:main:main");
        assert_eq!(canonical("Agent:Main:Main", &a), "agent:main:main");
        assert_eq!(canonical("x", &a), "agent:main:x");
        assert_eq!(canonical("global", &a), "global");
        assert_eq!(canonical("agent:ops:dm:bob", &a), "agent:ops:dm:bob");
        let g = agents(json!({"session": {"scope": "global"}}));
        assert_eq!(canonical("main", &g), "global");
        let home = agents(json!({"agents": {"list": [{"id": "home"}]}}));
        assert_eq!(canonical("agent:main:main", &home), "agent:home:main");
        assert_eq!(canonical("main", &home), "agent:home:main");
    }

    #[test]
    fn agent_method_keys_belong_to_the_agent() {
        let a = agents(json!({"agents": {"list": [{"id": "main"}, {"id": "ops"}]}}));
        assert_eq!(for_agent(None, "ops", &a), "agent:ops:main");
        assert_eq!(for_agent(Some("Work"), "ops", &a), "agent:ops:work");
        assert_eq!(for_agent(Some("agent:main:x"), "ops", &a), "agent:main:x");
        assert_eq!(agent_of("agent:ops:work", &a), "ops");
        assert_eq!(agent_of("global", &a), "main");
        assert_eq!(kind_of("agent:ops:slack:group:g1"), "group");
        assert_eq!(kind_of("agent:ops:main"), "direct");
    }
}
