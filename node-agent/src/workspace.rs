//! Workspace documents of an agent (AGENTS.md, SOUL.md, …, MEMORY.md): the service behind
//! `agents.files.*`, the system prompt and the agent's `read_file` / `list_files` tools.
//!
//! Documents live in the state plane (`argent_agents/<agentId>.<file>`), so every node-agent
//! sees the same files and a node can die without losing any.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use argent_planes::state::StateStore;
use argent_proto::subjects::BUCKET_AGENTS;

/// The bootstrap documents, in listing order (then `MEMORY.md` or `memory.md`).
pub const BOOTSTRAP_FILES: [&str; 7] = [
    "AGENTS.md",
    "SOUL.md",
    "TOOLS.md",
    "IDENTITY.md",
    "USER.md",
    "HEARTBEAT.md",
    "BOOTSTRAP.md",
];
/// The memory document, under either of its names (upper case preferred).
pub const MEMORY_FILES: [&str; 2] = ["MEMORY.md", "memory.md"];

/// The allowed names: this whitelist is also the path-traversal guard.
pub fn is_allowed(name: &str) -> bool {
    BOOTSTRAP_FILES.contains(&name) || MEMORY_FILES.contains(&name)
}

/// One stored document.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub content: String,
    pub updated_at_ms: u64,
}

/// Where an agent's documents live, as shown to clients.
pub fn location(agent_id: &str) -> String {
    format!("{BUCKET_AGENTS}/{agent_id}")
}

fn key(agent_id: &str, name: &str) -> String {
    format!("{agent_id}.{name}")
}

/// The text of one workspace document, if it exists.
pub async fn text(
    state: &dyn StateStore,
    agent_id: &str,
    name: &str,
) -> Result<Option<String>, ServiceError> {
    Ok(read(state, agent_id, name).await?.map(|d| d.content))
}

/// One workspace document, if it exists.
pub async fn read(
    state: &dyn StateStore,
    agent_id: &str,
    name: &str,
) -> Result<Option<Document>, ServiceError> {
    let entry = state.get(BUCKET_AGENTS, &key(agent_id, name)).await?;
    entry
        .map(|e| {
            serde_json::from_slice(&e.value).map_err(|err| {
                ServiceError::Unreadable(format!("stored {name} is unreadable: {err}"))
            })
        })
        .transpose()
}

/// Writes a document (the caller checked the name with [`is_allowed`]).
pub async fn write(
    state: &dyn StateStore,
    agent_id: &str,
    name: &str,
    content: String,
) -> Result<Document, ServiceError> {
    let document = Document {
        content,
        updated_at_ms: argent_proto::now_ms(),
    };
    let value = Bytes::from(serde_json::to_vec(&document).expect("documents serialize"));
    state
        .put(BUCKET_AGENTS, &key(agent_id, name), value)
        .await?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_guards_paths() {
        assert!(is_allowed("SOUL.md"));
        assert!(!is_allowed("../etc/passwd"));
        assert!(!is_allowed("soul.md"));
    }
}
