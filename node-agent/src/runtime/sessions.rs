//! Session keys (PROTOCOL.md §5.0) and session entries (`sessions.*`), kept in the state
//! plane (`argent_sessions`, key = hex of the canonical key) so every node sees them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use argent_planes::bus::{BusEvent, EventBus};
use argent_planes::state::{list_json, modify_json, StateStore};
use argent_proto::errors::RpcError;
use argent_proto::subjects::BUCKET_SESSIONS;

use crate::shared_config::AgentsConfig;

/// Canonical form of a session key given by a client (§5.0).
pub fn canonical_key(raw: &str, agents: &AgentsConfig) -> String {
    let key = raw.trim().to_ascii_lowercase();
    let main = || {
        if agents.scope == "global" {
            "global".to_string()
        } else {
            format!("agent:{}:{}", agents.default_id, agents.main_key)
        }
    };
    if key == "main" || key == agents.main_key {
        return main();
    }
    if key == "global" || key == "unknown" {
        return key;
    }
    if let Some(rest) = key.strip_prefix("agent:main:") {
        // The upstream clients' aliases of the main agent follow the configured default.
        if agents.default_id != "main" && agents.get("main").is_none() {
            return format!("agent:{}:{rest}", agents.default_id);
        }
    }
    if key.starts_with("agent:") {
        return key;
    }
    format!("agent:{}:{key}", agents.default_id)
}

/// The key for the `agent` method: a bare key belongs to the given agent.
pub fn agent_session_key(raw: Option<&str>, agent_id: &str, agents: &AgentsConfig) -> String {
    match raw.map(str::trim).filter(|k| !k.is_empty()) {
        None => format!("agent:{agent_id}:{}", agents.main_key),
        Some(key) if key.contains(':') || key == "main" || key == "global" => {
            canonical_key(key, agents)
        }
        Some(key) => format!("agent:{agent_id}:{}", key.to_ascii_lowercase()),
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

/// A session entry. Settings a client set that we do not interpret are kept in `extra`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionEntry {
    pub key: String,
    pub session_id: String,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default)]
    pub aborted_last_run: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionEntry {
    pub fn fresh(key: &str) -> Self {
        let now = argent_proto::now_ms();
        SessionEntry {
            key: key.to_string(),
            session_id: uuid::Uuid::new_v4().to_string(),
            created_at: now,
            updated_at: now,
            ..Default::default()
        }
    }

    /// A new transcript and zero counters, keeping every setting (`sessions.reset`).
    pub fn reset(&self) -> Self {
        let mut entry = self.clone();
        entry.session_id = uuid::Uuid::new_v4().to_string();
        entry.updated_at = argent_proto::now_ms();
        entry.input_tokens = 0;
        entry.output_tokens = 0;
        entry.total_tokens = 0;
        entry.last_message_preview = None;
        entry.derived_title = None;
        entry.aborted_last_run = false;
        entry
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("entries serialize")
    }
}

fn store_key(session_key: &str) -> String {
    hex::encode(session_key.as_bytes())
}

#[derive(Clone)]
pub struct Sessions {
    state: Arc<dyn StateStore>,
    /// Every written entry is announced (`sessions.changed`, for v4 subscribers).
    bus: Arc<dyn EventBus>,
}

fn unreadable(key: &str, err: serde_json::Error) -> RpcError {
    RpcError::unavailable(format!("session entry {key} is unreadable: {err}"))
}

impl Sessions {
    pub fn new(state: Arc<dyn StateStore>, bus: Arc<dyn EventBus>) -> Self {
        Sessions { state, bus }
    }

    pub async fn get(&self, key: &str) -> Result<Option<SessionEntry>, RpcError> {
        let entry = self
            .state
            .get(BUCKET_SESSIONS, &store_key(key))
            .await
            .map_err(|e| e.to_rpc())?;
        entry
            .map(|e| serde_json::from_slice(&e.value).map_err(|err| unreadable(key, err)))
            .transpose()
    }

    /// Read-modify-write under the entry's revision (creating it when missing), retried
    /// when another node changed it in between.
    pub async fn update(
        &self,
        key: &str,
        mut change: impl FnMut(&mut SessionEntry),
    ) -> Result<SessionEntry, RpcError> {
        let written = modify_json(
            self.state.as_ref(),
            BUCKET_SESSIONS,
            &store_key(key),
            |current| {
                let mut entry = current.unwrap_or_else(|| SessionEntry::fresh(key));
                change(&mut entry);
                Ok::<_, RpcError>(Some((entry.clone(), entry)))
            },
        )
        .await?;
        let entry = written.ok_or_else(|| {
            RpcError::unavailable(format!("session {key} was not written; retry"))
        })?;
        let changed = serde_json::json!({
            "sessionKey": key, "reason": "updated", "ts": argent_proto::now_ms(),
            "updatedAt": entry.updated_at,
        });
        if let Err(err) = self
            .bus
            .publish(BusEvent::new("sessions.changed", &changed))
            .await
        {
            tracing::debug!(%err, "sessions.changed not published");
        }
        Ok(entry)
    }

    /// The entry, created when missing.
    pub async fn ensure(&self, key: &str) -> Result<SessionEntry, RpcError> {
        match self.get(key).await? {
            Some(entry) => Ok(entry),
            None => self.update(key, |_| {}).await,
        }
    }

    pub async fn list(&self) -> Result<Vec<SessionEntry>, RpcError> {
        let entries = list_json(self.state.as_ref(), BUCKET_SESSIONS, "").await?;
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agents(config: Value) -> AgentsConfig {
        AgentsConfig::from_config(&config)
    }

    #[test]
    fn canonical_keys_follow_the_protocol() {
        let a = agents(json!({}));
        assert_eq!(canonical_key("main", &a), "agent:main:main");
        assert_eq!(canonical_key("Agent:Main:Main", &a), "agent:main:main");
        assert_eq!(canonical_key("x", &a), "agent:main:x");
        assert_eq!(canonical_key("global", &a), "global");
        assert_eq!(canonical_key("agent:ops:dm:bob", &a), "agent:ops:dm:bob");
        let g = agents(json!({"session": {"scope": "global"}}));
        assert_eq!(canonical_key("main", &g), "global");
        let home = agents(json!({"agents": {"list": [{"id": "home"}]}}));
        assert_eq!(canonical_key("agent:main:main", &home), "agent:home:main");
        assert_eq!(canonical_key("main", &home), "agent:home:main");
    }

    #[test]
    fn agent_method_keys_belong_to_the_agent() {
        let a = agents(json!({"agents": {"list": [{"id": "main"}, {"id": "ops"}]}}));
        assert_eq!(agent_session_key(None, "ops", &a), "agent:ops:main");
        assert_eq!(agent_session_key(Some("Work"), "ops", &a), "agent:ops:work");
        assert_eq!(
            agent_session_key(Some("agent:main:x"), "ops", &a),
            "agent:main:x"
        );
        assert_eq!(agent_of("agent:ops:work", &a), "ops");
        assert_eq!(agent_of("global", &a), "main");
        assert_eq!(kind_of("agent:ops:slack:group:g1"), "group");
        assert_eq!(kind_of("agent:ops:main"), "direct");
    }
}
