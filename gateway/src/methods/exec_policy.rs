//! `exec.approvals.get` / `exec.approvals.set` (PROTOCOL.md §5.14): the cluster's exec policy
//! document, kept in the state plane (`argent_config/exec-approvals.json`) so every gateway
//! and node-agent reads the same one. Writes follow `config.set`'s base-hash rule and are
//! compare-and-set on the key's revision, so two operators saving at once cannot both win.
//!
//! The document is what upstream's `exec-approvals.json` holds: `{version: 1, socket?,
//! defaults?, agents?}`. Its socket token is never returned and never taken from a client.
//! What enforces the policy is the agent's exec tool (issue 19); until it exists nothing
//! runs commands. No document yet reads as `{version: 1}`, with no `resolvedDefaults`: the
//! UI then shows its own defaults (deny, ask on miss, deny when nobody answers).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use argent_planes::state::StateError;
use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::subjects::BUCKET_CONFIG;

use crate::context::Ctx;
use crate::respond;

const POLICY_KEY: &str = "exec-approvals.json";
/// Where the document lives, as `path` shows it.
const PATH: &str = "nats://argent_config/exec-approvals.json";
const SECURITY: [&str; 3] = ["deny", "allowlist", "full"];
const ASK: [&str; 3] = ["off", "on-miss", "always"];
const SETTINGS: [&str; 4] = ["security", "ask", "askFallback", "autoAllowSkills"];
const ALLOWLIST_ENTRY: [&str; 5] = [
    "id",
    "pattern",
    "lastUsedAt",
    "lastUsedCommand",
    "lastResolvedPath",
];

/// The stored document and the revision it was read at.
struct Stored {
    text: Option<String>,
    revision: Option<u64>,
}

impl Stored {
    fn hash(&self) -> String {
        argent_proto::config::hash(self.text.as_deref().unwrap_or(""))
    }

    /// The stored document; an unreadable one is an error naming its hash, so that a write
    /// can replace it (and nothing is taken for empty).
    fn file(&self) -> Result<Value, RpcError> {
        let Some(text) = self.text.as_deref() else {
            return Ok(json!({"version": 1}));
        };
        serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                RpcError::unavailable(format!(
                    "the exec approvals document ({PATH}) is unreadable; replace it with exec.approvals.set and baseHash {}",
                    self.hash()
                ))
            })
    }

    /// `{path, exists, hash, file}`, the socket token left out.
    fn snapshot(&self) -> Result<Value, RpcError> {
        let mut file = self.file()?;
        if let Some(socket) = file.get_mut("socket").and_then(Value::as_object_mut) {
            socket.remove("token");
        }
        Ok(json!({
            "path": PATH,
            "exists": self.text.is_some(),
            "hash": self.hash(),
            "file": file,
        }))
    }
}

async fn read(ctx: &Ctx) -> Result<Stored, RpcError> {
    let entry = ctx
        .state
        .get(BUCKET_CONFIG, POLICY_KEY)
        .await
        .map_err(respond::state)?;
    Ok(match entry {
        Some(entry) => Stored {
            text: Some(String::from_utf8_lossy(&entry.value).into_owned()),
            revision: Some(entry.revision),
        },
        None => Stored {
            text: None,
            revision: None,
        },
    })
}

pub async fn get(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("exec.approvals.get", params)?.only(&[])?;
    read(ctx).await?.snapshot()
}

fn changed() -> RpcError {
    RpcError::bad_params(
        "exec approvals changed since last load; re-run exec.approvals.get and retry",
    )
}

pub async fn set(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("exec.approvals.set", params)?.only(&["file", "baseHash"])?;
    let mut file = p
        .get("file")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| p.invalid("at root: must have required property 'file' (an object)"))?;
    validate(&file).map_err(|detail| p.invalid(detail))?;
    let stored = read(ctx).await?;
    if stored.text.is_some() {
        match p.optional_str("baseHash")? {
            None => {
                return Err(RpcError::bad_params(
                    "exec approvals base hash required; re-run exec.approvals.get and retry",
                ))
            }
            Some(hash) if hash.trim().to_ascii_lowercase() != stored.hash() => {
                return Err(changed())
            }
            Some(_) => {}
        }
    }
    // A stored document that cannot be read has no token to keep.
    keep_stored_token(&mut file, &stored.file().unwrap_or(Value::Null));
    file.insert("version".into(), json!(1));
    let text = serde_json::to_string_pretty(&Value::Object(file)).expect("JSON values serialize");
    let bytes = Bytes::from(text.clone());
    let written = match stored.revision {
        Some(revision) => {
            ctx.state
                .update(BUCKET_CONFIG, POLICY_KEY, bytes, revision)
                .await
        }
        None => ctx.state.create(BUCKET_CONFIG, POLICY_KEY, bytes).await,
    };
    match written {
        Ok(revision) => Stored {
            text: Some(text),
            revision: Some(revision),
        }
        .snapshot(),
        Err(StateError::WrongRevision | StateError::Exists) => Err(changed()),
        Err(err) => Err(respond::state(err)),
    }
}

/// A client never sets the socket token: the stored one stays, a sent one is dropped.
fn keep_stored_token(file: &mut Map<String, Value>, stored: &Value) {
    if let Some(socket) = file.get_mut("socket").and_then(Value::as_object_mut) {
        socket.remove("token");
    }
    if let Some(token) = stored.pointer("/socket/token") {
        let socket = file.entry("socket").or_insert_with(|| json!({}));
        if let Some(socket) = socket.as_object_mut() {
            socket.insert("token".into(), token.clone());
        }
    }
}

fn one_of(value: &Value, allowed: &[&str], at: &str) -> Result<(), String> {
    match value.as_str() {
        Some(v) if allowed.contains(&v) => Ok(()),
        _ => Err(format!("at {at}: must be one of {}", allowed.join(", "))),
    }
}

fn settings(value: &Value, at: &str, extra: &[&str]) -> Result<(), String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("at {at}: must be object"))?;
    for (key, field) in object {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "security" => one_of(field, &SECURITY, &here)?,
            "ask" => one_of(field, &ASK, &here)?,
            "askFallback" => one_of(field, &SECURITY, &here)?,
            "autoAllowSkills" if !field.is_boolean() => {
                return Err(format!("at {here}: must be boolean"))
            }
            "allowlist" if extra.contains(&"allowlist") => allowlist(field, &here)?,
            _ if SETTINGS.contains(&key.as_str()) => {}
            _ => return Err(format!("at {at}: unexpected property '{key}'")),
        }
    }
    Ok(())
}

fn allowlist(value: &Value, at: &str) -> Result<(), String> {
    let entries = value
        .as_array()
        .ok_or_else(|| format!("at {at}: must be array"))?;
    for (i, entry) in entries.iter().enumerate() {
        let here = format!("{at}/{i}");
        let object = entry
            .as_object()
            .ok_or_else(|| format!("at {here}: must be object"))?;
        if object
            .get("pattern")
            .and_then(Value::as_str)
            .is_none_or(|p| p.trim().is_empty())
        {
            return Err(format!("at {here}: must have required property 'pattern'"));
        }
        if let Some(key) = object
            .keys()
            .find(|k| !ALLOWLIST_ENTRY.contains(&k.as_str()))
        {
            return Err(format!("at {here}: unexpected property '{key}'"));
        }
    }
    Ok(())
}

/// `socket: {path?, token?}` (a sent token is dropped, see [`keep_stored_token`]).
fn socket(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or("at /file/socket: must be object")?;
    for (key, field) in object {
        match key.as_str() {
            "path" | "token" if field.is_string() => {}
            "path" | "token" => return Err(format!("at /file/socket/{key}: must be string")),
            _ => return Err(format!("at /file/socket: unexpected property '{key}'")),
        }
    }
    Ok(())
}

/// The document's shape (PROTOCOL.md §5.14), checked before anything is stored.
fn validate(file: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in file {
        match key.as_str() {
            "version" if value != &json!(1) => return Err("at /file/version: must be 1".into()),
            "version" => {}
            "socket" => socket(value)?,
            "defaults" => settings(value, "/file/defaults", &[])?,
            "agents" => {
                let agents = value.as_object().ok_or("at /file/agents: must be object")?;
                for (agent, policy) in agents {
                    settings(policy, &format!("/file/agents/{agent}"), &["allowlist"])?;
                }
            }
            _ => return Err(format!("at /file: unexpected property '{key}'")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: Value) -> Result<(), String> {
        validate(file.as_object().unwrap())
    }

    #[test]
    fn policy_documents_are_checked_field_by_field() {
        assert_eq!(
            check(
                json!({"version": 1, "defaults": {"security": "deny", "ask": "on-miss",
                "askFallback": "deny"}, "agents": {"main": {"security": "allowlist",
                "allowlist": [{"pattern": "/usr/bin/ls", "id": "a"}]}}})
            ),
            Ok(())
        );
        assert_eq!(
            check(json!({"defaults": {"security": "maybe"}})),
            Err("at /file/defaults/security: must be one of deny, allowlist, full".into())
        );
        assert_eq!(
            check(json!({"agents": {"main": {"allowlist": [{"id": "x"}]}}})),
            Err("at /file/agents/main/allowlist/0: must have required property 'pattern'".into())
        );
        assert_eq!(
            check(json!({"defaults": {"allowlist": []}})),
            Err("at /file/defaults: unexpected property 'allowlist'".into())
        );
        assert_eq!(
            check(json!({"version": 2})),
            Err("at /file/version: must be 1".into())
        );
    }

    #[test]
    fn the_socket_token_is_never_shown_nor_taken_from_a_client() {
        let stored = Stored {
            text: Some(r#"{"version":1,"socket":{"path":"/run/x.sock","token":"secret"}}"#.into()),
            revision: Some(1),
        };
        assert_eq!(
            stored.snapshot().unwrap()["file"]["socket"],
            json!({"path": "/run/x.sock"})
        );
        let mut sent = json!({"socket": {"path": "/run/x.sock", "token": "forged"}});
        keep_stored_token(sent.as_object_mut().unwrap(), &stored.file().unwrap());
        // An unreadable document is an error naming its hash, not an empty policy.
        let broken = Stored {
            text: Some("{not json".into()),
            revision: Some(2),
        };
        let err = broken.snapshot().unwrap_err();
        assert!(err.message.contains(&broken.hash()), "{}", err.message);
        assert_eq!(
            check(json!({"socket": {"path": "/x", "mode": 1}})),
            Err("at /file/socket: unexpected property 'mode'".into())
        );
        assert_eq!(sent["socket"]["token"], "secret");
    }
}
