//! Reading method params with upstream-style validation messages
//! (`invalid <method> params: at root: must have required property 'agentId'`).

use serde_json::{Map, Value};

use crate::errors::RpcError;

/// The params `chat.send` takes (PROTOCOL.md §5.1); the node-agent validates against
/// them and v4 connections are trimmed to them.
pub const CHAT_SEND_KEYS: [&str; 9] = [
    "sessionKey",
    "message",
    "idempotencyKey",
    "busyMode",
    "thinking",
    "deliver",
    "attachments",
    "timeoutMs",
    "cliMcpServers",
];
pub const CHAT_HISTORY_KEYS: [&str; 2] = ["sessionKey", "limit"];
/// `chat.history` on protocol 4 (PROTOCOL-v4.md §9): also the agent and a text cap.
pub const CHAT_HISTORY_V4_KEYS: [&str; 4] = ["sessionKey", "limit", "agentId", "maxChars"];
/// `chat.startup` (protocol 4 only): the v4 history params, or a short id to resolve.
pub const CHAT_STARTUP_KEYS: [&str; 6] = [
    "sessionKey",
    "limit",
    "agentId",
    "maxChars",
    "shortId",
    "slugHint",
];
/// `chat.message.get` (protocol 4 only), a closed set as upstream's schema.
pub const CHAT_MESSAGE_GET_KEYS: [&str; 4] = ["sessionKey", "agentId", "messageId", "maxChars"];
pub const CHAT_ABORT_KEYS: [&str; 2] = ["sessionKey", "runId"];

/// A method's params object, read field by field.
pub struct Params<'a> {
    method: &'a str,
    obj: Map<String, Value>,
}

impl<'a> Params<'a> {
    /// `params` must be an object (absent params arrive as `{}`).
    pub fn new(method: &'a str, params: Value) -> Result<Self, RpcError> {
        match params {
            Value::Object(obj) => Ok(Params { method, obj }),
            Value::Null => Ok(Params {
                method,
                obj: Map::new(),
            }),
            _ => Err(RpcError::invalid_params(method, "at root: must be object")),
        }
    }

    /// The method whose params these are.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// `invalid <method> params: <detail>`.
    pub fn invalid(&self, detail: impl AsRef<str>) -> RpcError {
        RpcError::invalid_params(self.method, detail.as_ref())
    }

    /// A raw value, for shapes the typed getters do not cover.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key)
    }

    /// Rejects keys outside `allowed` (upstream's `additionalProperties: false`).
    pub fn only(self, allowed: &[&str]) -> Result<Self, RpcError> {
        // Every unexpected key, not just the first: a client learns all it must change.
        let unexpected: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|key| format!("at root: unexpected property '{key}'"))
            .collect();
        if !unexpected.is_empty() {
            return Err(self.invalid(unexpected.join("; ")));
        }
        Ok(self)
    }

    /// A required non-empty string.
    pub fn required_str(&self, key: &str) -> Result<String, RpcError> {
        match self.optional_str(key)? {
            Some(s) => Ok(s),
            None => Err(self.invalid(format!("at root: must have required property '{key}'"))),
        }
    }

    /// An optional non-empty string.
    pub fn optional_str(&self, key: &str) -> Result<Option<String>, RpcError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                Err(self.invalid(format!("at /{key}: must NOT have fewer than 1 characters")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(format!("at /{key}: must be string"))),
        }
    }

    /// A required id that names a stored record ([`is_id`]): a clear error naming the field
    /// otherwise, before anything reaches the store.
    pub fn required_id(&self, key: &str) -> Result<String, RpcError> {
        let id = self.required_str(key)?;
        self.check_id(key, &id)?;
        Ok(id)
    }

    /// [`Params::required_id`] of an optional field.
    pub fn optional_id(&self, key: &str) -> Result<Option<String>, RpcError> {
        let id = self.optional_str(key)?;
        if let Some(id) = &id {
            self.check_id(key, id)?;
        }
        Ok(id)
    }

    fn check_id(&self, key: &str, id: &str) -> Result<(), RpcError> {
        if is_id(id) {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "at /{key}: must be 1 to {MAX_ID_LEN} letters, digits, '-', '_', '.' or '=' \
                 (not starting or ending with '.')"
            )))
        }
    }

    /// A required string that may be empty (file contents).
    pub fn required_text(&self, key: &str) -> Result<String, RpcError> {
        match self.obj.get(key) {
            None => Err(self.invalid(format!("at root: must have required property '{key}'"))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.invalid(format!("at /{key}: must be string"))),
        }
    }

    /// An optional array of non-empty strings.
    pub fn optional_str_list(&self, key: &str) -> Result<Option<Vec<String>>, RpcError> {
        let Some(value) = self.obj.get(key) else {
            return Ok(None);
        };
        let Some(items) = value.as_array() else {
            return Err(self.invalid(format!("at /{key}: must be array")));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                Some(_) => Err(self.invalid(format!(
                    "at /{key}/{i}: must NOT have fewer than 1 characters"
                ))),
                None => Err(self.invalid(format!("at /{key}/{i}: must be string"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, RpcError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.invalid(format!("at /{key}: must be boolean"))),
        }
    }

    /// An optional integer ≥ `min`.
    pub fn optional_u64(&self, key: &str, min: u64) -> Result<Option<u64>, RpcError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= min => Ok(Some(n)),
                Some(_) => Err(self.invalid(format!("at /{key}: must be >= {min}"))),
                None if v.as_i64().is_some() => {
                    Err(self.invalid(format!("at /{key}: must be >= {min}")))
                }
                None => Err(self.invalid(format!("at /{key}: must be integer"))),
            },
        }
    }

    /// An optional integer in `min..=max`.
    pub fn optional_u64_in(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, RpcError> {
        match self.optional_u64(key, min)? {
            Some(n) if n > max => Err(self.invalid(format!("at /{key}: must be <= {max}"))),
            n => Ok(n),
        }
    }
}

/// The longest id [`is_id`] accepts.
pub const MAX_ID_LEN: usize = 128;

/// What an id that cannot name a stored record is told when the field is not known.
pub const INVALID_ID: &str =
    "invalid id: use 1 to 128 letters, digits, '-', '_', '.' or '=' (not starting or ending with '.')";

/// Whether `id` can name a stored record (request ids, device ids, job ids): letters,
/// digits and `-_.=`, not starting or ending with `.`, no `..`.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_read_like_upstream() {
        let p = Params::new("agents.files.get", json!({"agentId": 5})).unwrap();
        assert_eq!(
            p.required_str("agentId").unwrap_err().message,
            "invalid agents.files.get params: at /agentId: must be string"
        );
        assert_eq!(
            p.required_str("name").unwrap_err().message,
            "invalid agents.files.get params: at root: must have required property 'name'"
        );
        let e = Params::new("health", json!({"x": 1}))
            .unwrap()
            .only(&["probe"]);
        assert_eq!(
            e.err().unwrap().message,
            "invalid health params: at root: unexpected property 'x'"
        );
        assert!(Params::new("health", json!([1])).is_err());
        let p = Params::new("x", json!({"n": -1, "b": "no"})).unwrap();
        assert!(p.optional_u64("n", 0).is_err());
        assert!(p.optional_bool("b").is_err());
    }
}
