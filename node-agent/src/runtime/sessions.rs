//! Session entries (`sessions.*`; the keys themselves are `argent_proto::session_key`),
//! kept in the state plane (`argent_sessions`, key = hex of the canonical key) so every node sees them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ServiceError;
use argent_planes::bus::{BusEvent, EventBus};
use argent_planes::state::{list_json, modify_json, StateError, StateStore};
use argent_proto::subjects::BUCKET_SESSIONS;

use argent_proto::agents::AgentsConfig;
use argent_proto::session_key::agent_of;

/// Whether `text` has the form of a short id: 8–32 hexadecimal digits.
pub fn is_short_id(text: &str) -> bool {
    (8..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The UUID a key ends in (`agent:main:dashboard:<uuid>`), as 32 lowercase hex digits.
fn trailing_uuid(key: &str) -> Option<String> {
    let last = key.rsplit(':').next()?;
    uuid::Uuid::try_parse(last)
        .ok()
        .map(|u| u.simple().to_string())
}

/// A display name as a URL slug: lowercase words joined by `-`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The sessions of `agent_id` a short chat link names (PROTOCOL-v4.md §9 `chat.startup`):
/// those whose key ends in a UUID that starts with `short_id`. When several do, `slug_hint`
/// keeps the ones whose display name has that slug.
pub fn sessions_by_short_id<'a>(
    entries: &'a [SessionEntry],
    agent_id: &str,
    short_id: &str,
    slug_hint: Option<&str>,
    agents: &AgentsConfig,
) -> Vec<&'a SessionEntry> {
    let short = short_id.to_ascii_lowercase();
    let matches: Vec<&SessionEntry> = entries
        .iter()
        .filter(|e| agent_of(&e.key, agents) == agent_id)
        .filter(|e| trailing_uuid(&e.key).is_some_and(|u| u.starts_with(&short)))
        .collect();
    let Some(hint) = slug_hint.map(slug).filter(|_| matches.len() > 1) else {
        return matches;
    };
    let named: Vec<&SessionEntry> = matches
        .iter()
        .copied()
        .filter(|e| e.display_names().any(|name| slug(name) == hint))
        .collect();
    if named.is_empty() {
        matches
    } else {
        named
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
    /// The model `sessions.patch` picked for this session (provider and model id apart, as
    /// upstream stores them); runs use it instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_override: Option<String>,
    /// `user` (picked) or `default` (the agent's model explicitly chosen back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_override_source: Option<String>,
    /// The thinking level runs of this session ask for (`runtime::thinking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<String>,
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

    /// What a user may call the session: its label, display name, derived title.
    pub fn display_names(&self) -> impl Iterator<Item = &str> {
        [
            self.label.as_deref(),
            self.extra.get("displayName").and_then(Value::as_str),
            self.derived_title.as_deref(),
        ]
        .into_iter()
        .flatten()
    }

    /// The `provider/model` picked for this session, if any.
    pub fn picked_model(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.provider_override.as_deref()?,
            self.model_override.as_deref()?
        ))
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

fn unreadable(key: &str, err: serde_json::Error) -> ServiceError {
    ServiceError::Unreadable(format!("session entry {key} is unreadable: {err}"))
}

impl Sessions {
    pub fn new(state: Arc<dyn StateStore>, bus: Arc<dyn EventBus>) -> Self {
        Sessions { state, bus }
    }

    pub async fn get(&self, key: &str) -> Result<Option<SessionEntry>, ServiceError> {
        let entry = self.state.get(BUCKET_SESSIONS, &store_key(key)).await?;
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
    ) -> Result<SessionEntry, ServiceError> {
        self.update_if(key, |entry, _| {
            change(entry);
            Ok(())
        })
        .await
    }

    /// [`Sessions::update`] whose change may refuse, seeing the entry as it is under the
    /// revision being written (and whether it existed): a check there cannot be overtaken
    /// by another writer.
    pub async fn update_if(
        &self,
        key: &str,
        mut change: impl FnMut(&mut SessionEntry, bool) -> Result<(), ServiceError>,
    ) -> Result<SessionEntry, ServiceError> {
        let written = modify_json(
            self.state.as_ref(),
            BUCKET_SESSIONS,
            &store_key(key),
            |current| {
                let existed = current.is_some();
                let mut entry = current.unwrap_or_else(|| SessionEntry::fresh(key));
                change(&mut entry, existed)?;
                Ok::<_, ServiceError>(Some((entry.clone(), entry)))
            },
        )
        .await?;
        let entry = written.ok_or_else(|| ServiceError::Contended {
            message: format!("session {key} was not written; retry"),
            retry_after_ms: None,
        })?;
        self.announce(&entry).await;
        Ok(entry)
    }

    async fn announce(&self, entry: &SessionEntry) {
        let changed = serde_json::json!({
            "sessionKey": entry.key, "reason": "updated", "ts": argent_proto::now_ms(),
            "updatedAt": entry.updated_at,
        });
        if let Err(err) = self
            .bus
            .publish(BusEvent::new("sessions.changed", &changed))
            .await
        {
            tracing::debug!(%err, "sessions.changed not published");
        }
    }

    /// The entry, created when missing; `true` when this call created it (so its
    /// transcript is known to be empty).
    pub async fn ensure(&self, key: &str) -> Result<(SessionEntry, bool), ServiceError> {
        if let Some(entry) = self.get(key).await? {
            return Ok((entry, false));
        }
        let fresh = SessionEntry::fresh(key);
        let value = serde_json::to_vec(&fresh).expect("entries serialize");
        match self
            .state
            .create(BUCKET_SESSIONS, &store_key(key), value.into())
            .await
        {
            Ok(_) => {
                self.announce(&fresh).await;
                Ok((fresh, true))
            }
            // Created by another node meanwhile (or created and removed: then create it).
            Err(StateError::Exists) => match self.get(key).await? {
                Some(entry) => Ok((entry, false)),
                None => Ok((self.update(key, |_| {}).await?, false)),
            },
            Err(err) => Err(err.into()),
        }
    }

    pub async fn list(&self) -> Result<Vec<SessionEntry>, ServiceError> {
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
    fn short_ids_name_sessions_by_their_trailing_uuid() {
        let a = agents(json!({"agents": {"list": [{"id": "main"}, {"id": "ops"}]}}));
        let entry = |key: &str, label: Option<&str>| SessionEntry {
            label: label.map(str::to_string),
            ..SessionEntry::fresh(key)
        };
        let entries = [
            entry(
                "agent:main:dashboard:3f9a1c2e-0000-4000-8000-000000000001",
                Some("Trip plans"),
            ),
            entry(
                "agent:main:dashboard:3f9a1c2e-0000-4000-8000-000000000002",
                Some("Taxes"),
            ),
            entry(
                "agent:main:dashboard:7777aaaa-0000-4000-8000-000000000003",
                None,
            ),
            entry(
                "agent:ops:dashboard:3f9a1c2e-0000-4000-8000-000000000004",
                None,
            ),
            entry("agent:main:main", None),
        ];
        let keys = |found: Vec<&SessionEntry>| -> Vec<String> {
            found.into_iter().map(|e| e.key.clone()).collect()
        };
        assert!(is_short_id("3f9a1c2e") && is_short_id(&"a".repeat(32)));
        assert!(
            !is_short_id("3f9a1c2") && !is_short_id("3f9a1c2g") && !is_short_id(&"a".repeat(33))
        );
        assert_eq!(
            keys(sessions_by_short_id(&entries, "main", "7777AAAA", None, &a)),
            ["agent:main:dashboard:7777aaaa-0000-4000-8000-000000000003"]
        );
        // Two of main's sessions share the prefix (ops' is another agent's): ambiguous …
        assert_eq!(
            sessions_by_short_id(&entries, "main", "3f9a1c2e", None, &a).len(),
            2
        );
        // … until the slug of a display name picks one; an unknown slug narrows nothing.
        assert_eq!(
            keys(sessions_by_short_id(
                &entries,
                "main",
                "3f9a1c2e",
                Some("trip-plans"),
                &a
            )),
            ["agent:main:dashboard:3f9a1c2e-0000-4000-8000-000000000001"]
        );
        assert_eq!(
            sessions_by_short_id(&entries, "main", "3f9a1c2e", Some("nope"), &a).len(),
            2
        );
        let longer = "3f9a1c2e000040008000000000000002";
        assert_eq!(
            sessions_by_short_id(&entries, "main", longer, None, &a).len(),
            1
        );
        assert!(sessions_by_short_id(&entries, "main", "deadbeef", None, &a).is_empty());
    }
}
