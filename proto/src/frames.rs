//! WebSocket frames (PROTOCOL.md §1.2–§1.5).
//!
//! Inbound: client JSON is parsed into a typed [`Request`] once, at the edge, with upstream's
//! strictness (no extra top-level keys, non-empty `id`/`method`).
//! Outbound: responses and events are encoded exactly: absent optional fields are omitted,
//! never `null`. An event is encoded once per gateway into an [`EncodedEvent`]; each
//! connection only appends its own `seq`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::catalog::{event_spec, Audience};
use crate::errors::{ErrorShape, RpcError};

/// A client request frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub method: String,
    /// `None` when the client sent no `params`; handlers then see `{}`.
    pub params: Option<Value>,
}

impl Request {
    /// The params, or `{}` when absent.
    pub fn params_or_empty(&self) -> Value {
        self.params
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default()))
    }
}

/// Why an inbound text is not a usable request.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    /// Not JSON at all.
    NotJson,
    /// JSON, but not a request frame (`type` is not `"req"`, or not an object).
    NotRequest { id: Option<String> },
    /// A request frame that breaks the schema; `id` is the client's id when it had one.
    Invalid { id: Option<String>, detail: String },
}

impl FrameError {
    /// The id to answer with: the client's when it sent a usable one.
    pub fn reply_id(&self) -> &str {
        match self {
            FrameError::NotRequest { id: Some(id) } | FrameError::Invalid { id: Some(id), .. } => {
                id
            }
            _ => "invalid",
        }
    }

    pub fn to_error(&self) -> RpcError {
        match self {
            FrameError::NotJson => RpcError::invalid_frame("frame is not valid JSON"),
            FrameError::NotRequest { .. } => {
                RpcError::invalid_frame("at /type: must be equal to constant 'req'")
            }
            FrameError::Invalid { detail, .. } => RpcError::invalid_frame(detail),
        }
    }
}

const REQUEST_KEYS: [&str; 4] = ["type", "id", "method", "params"];

/// Parses one inbound text frame as a request, strictly; `extra` names the optional
/// top-level string keys this connection's protocol version adds (v4: `traceparent`, …).
pub fn parse_request(text: &str, extra: &[&str]) -> Result<Request, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|err| unparsed(text, &err))?;
    request_from_value(value, extra)
}

/// A frame that is not JSON as a value (`1e400` overflows a double): answered to the
/// request's own `id` when a lenient pass can still read it, so the client is not left
/// waiting for an answer to a request the gateway could not read.
fn unparsed(text: &str, err: &serde_json::Error) -> FrameError {
    /// Only `id` is read; everything else is skipped by syntax, without converting numbers.
    #[derive(serde::Deserialize)]
    struct JustTheId {
        id: Option<String>,
    }
    match serde_json::from_str::<JustTheId>(text) {
        Ok(JustTheId { id: Some(id) }) if !id.is_empty() => FrameError::Invalid {
            id: Some(id),
            detail: format!("frame is not valid JSON: {err}"),
        },
        _ => FrameError::NotJson,
    }
}

/// Validates an already parsed JSON value as a request frame.
pub fn request_from_value(value: Value, extra: &[&str]) -> Result<Request, FrameError> {
    let Value::Object(mut obj) = value else {
        return Err(FrameError::NotRequest { id: None });
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if obj.get("type").and_then(Value::as_str) != Some("req") {
        return Err(FrameError::NotRequest { id });
    }
    let mut issues = Vec::new();
    for (key, value) in &obj {
        if extra.contains(&key.as_str()) {
            // Accepted and ignored, but still well-formed: a string of 1–128 characters.
            let len = value.as_str().map(|v| v.chars().count());
            if !matches!(len, Some(1..=128)) {
                issues.push(format!(
                    "at /{key}: must be a string of 1 to 128 characters"
                ));
            }
        } else if !REQUEST_KEYS.contains(&key.as_str()) {
            issues.push(format!("at root: unexpected property '{key}'"));
        }
    }
    let method = non_empty_string(&obj, "method", &mut issues);
    non_empty_string(&obj, "id", &mut issues);
    if !issues.is_empty() {
        return Err(FrameError::Invalid {
            id,
            detail: issues.join("; "),
        });
    }
    Ok(Request {
        id: id.unwrap_or_default(),
        method: method.unwrap_or_default(),
        params: obj.remove("params"),
    })
}

fn non_empty_string(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    issues: &mut Vec<String>,
) -> Option<String> {
    match obj.get(key) {
        None => {
            issues.push(format!("at root: must have required property '{key}'"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            issues.push(format!("at /{key}: must NOT have fewer than 1 characters"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            issues.push(format!("at /{key}: must be string"));
            None
        }
    }
}

#[derive(Serialize)]
struct ResponseFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorShape>,
}

/// `{"type":"res","id":…,"ok":true,"payload":…}`
pub fn encode_ok(id: &str, payload: &Value) -> String {
    encode_response(id, true, Some(payload), None)
}

/// `{"type":"res","id":…,"ok":true,"payload":…}` around a payload that is already JSON text
/// (a node-agent's answer is passed through without being parsed and re-encoded).
pub fn encode_ok_raw(id: &str, payload_json: &str) -> String {
    let id = serde_json::to_string(id).expect("strings serialize");
    let mut out = String::with_capacity(payload_json.len() + id.len() + 40);
    out.push_str(r#"{"type":"res","id":"#);
    out.push_str(&id);
    out.push_str(r#","ok":true,"payload":"#);
    out.push_str(payload_json);
    out.push('}');
    out
}

/// Adds `"key":raw` as the last field of a JSON object's text (`raw` is JSON text already:
/// a shared encoded part is copied, not parsed and serialized again).
pub fn with_raw_field(mut object_json: String, key: &str, raw: &str) -> String {
    debug_assert!(object_json.ends_with('}'));
    object_json.pop();
    if !object_json.ends_with('{') {
        object_json.push(',');
    }
    object_json.push_str(&serde_json::to_string(key).expect("strings serialize"));
    object_json.push(':');
    object_json.push_str(raw);
    object_json.push('}');
    object_json
}

/// `{"type":"res","id":…,"ok":false,"error":{…}}`
pub fn encode_error(id: &str, error: &RpcError) -> String {
    encode_response(id, false, None, Some(&error.to_shape()))
}

/// Any response, for the rare `ok:false` with a payload (the final frame of a failed `agent`).
pub fn encode_response(
    id: &str,
    ok: bool,
    payload: Option<&Value>,
    error: Option<&ErrorShape>,
) -> String {
    let frame = ResponseFrame {
        kind: "res",
        id,
        ok,
        payload,
        error,
    };
    serde_json::to_string(&frame).expect("a response frame always serializes")
}

/// `stateVersion` on `presence` and `health` events and in the `hello-ok` snapshot.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct StateVersion {
    pub presence: u64,
    pub health: u64,
}

/// An event encoded once: every byte of the frame except the per-connection `seq`.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// Event name.
    pub name: String,
    /// Who may receive it (§3.6).
    pub audience: Audience,
    /// May be skipped for a slow client (§1.7).
    pub droppable: bool,
    /// Node connections receive it (§3.5).
    pub to_nodes: bool,
    /// `{"type":"event","event":…,"payload":…[,"stateVersion":…]` — no closing brace.
    head: Bytes,
}

impl EncodedEvent {
    /// Encodes `payload` once. `payload` is already JSON text.
    pub fn new(name: &str, payload_json: &str, state_version: Option<StateVersion>) -> Self {
        let mut head = String::with_capacity(payload_json.len() + name.len() + 64);
        head.push_str(r#"{"type":"event","event":"#);
        head.push_str(&serde_json::to_string(name).expect("strings serialize"));
        head.push_str(r#","payload":"#);
        head.push_str(payload_json);
        if let Some(sv) = state_version {
            head.push_str(r#","stateVersion":"#);
            head.push_str(&serde_json::to_string(&sv).expect("state versions serialize"));
        }
        let spec = event_spec(name);
        EncodedEvent {
            name: name.to_string(),
            audience: spec.audience,
            droppable: spec.droppable,
            to_nodes: spec.to_nodes,
            head: Bytes::from(head),
        }
    }

    /// Overrides the catalog's drop rule (a `chat` delta is droppable, a `chat` final not).
    pub fn with_droppable(mut self, droppable: bool) -> Self {
        self.droppable = droppable;
        self
    }

    /// Encodes a payload value once.
    pub fn from_value(name: &str, payload: &Value, state_version: Option<StateVersion>) -> Self {
        let json = serde_json::to_string(payload).expect("JSON values serialize");
        Self::new(name, &json, state_version)
    }

    /// Size of the frame on the wire, within a few bytes.
    pub fn len(&self) -> usize {
        self.head.len() + 24
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame without its closing brace: followed by `,"seq":N}` or `}` per connection.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The full frame for one connection: with `seq` for broadcast events, without for
    /// targeted ones (§1.5).
    pub fn frame(&self, seq: Option<u64>) -> String {
        let head = std::str::from_utf8(&self.head).expect("built from a String");
        let mut out = String::with_capacity(head.len() + 24);
        out.push_str(head);
        if let Some(seq) = seq {
            out.push_str(r#","seq":"#);
            out.push_str(&seq.to_string());
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_fields_are_appended_to_any_object() {
        let empty = with_raw_field("{}".into(), "a", "[1]");
        let full = with_raw_field(r#"{"b":2}"#.into(), "a", r#"{"c":[]}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&empty).unwrap(),
            json!({"a":[1]})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&full).unwrap(),
            json!({"b":2,"a":{"c":[]}})
        );
    }

    #[test]
    fn parses_a_request() {
        let r = parse_request(
            r#"{"type":"req","id":"1","method":"health","params":{}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(r.id, "1");
        assert_eq!(r.method, "health");
        assert_eq!(r.params, Some(json!({})));
    }

    #[test]
    fn rejects_extra_keys_and_empty_ids() {
        let e =
            parse_request(r#"{"type":"req","id":"1","method":"x","extra":1}"#, &[]).unwrap_err();
        assert_eq!(
            e,
            FrameError::Invalid {
                id: Some("1".into()),
                detail: "at root: unexpected property 'extra'".into()
            }
        );
        let e = parse_request(r#"{"type":"req","id":"","method":"x"}"#, &[]).unwrap_err();
        assert!(matches!(e, FrameError::Invalid { id: None, .. }));
        assert_eq!(e.reply_id(), "invalid");
        let e = parse_request(r#"{"type":"req","id":"a","method":5}"#, &[]).unwrap_err();
        assert_eq!(
            e.to_error().message,
            "invalid request frame: at /method: must be string"
        );
    }

    #[test]
    fn not_json_and_not_request() {
        assert_eq!(parse_request("{nope", &[]), Err(FrameError::NotJson));
        let huge = parse_request(
            r#"{"type":"req","id":"r1","method":"x","params":{"n":1e400}}"#,
            &[],
        );
        match huge {
            Err(err @ FrameError::Invalid { .. }) => {
                assert_eq!(err.reply_id(), "r1");
                assert!(
                    err.to_error().message.contains("number out of range"),
                    "{:?}",
                    err.to_error()
                );
            }
            other => panic!("{other:?}"),
        }
        // v4 connections may add a trace context and a profile id; v3 ones may not.
        let traced = r#"{"type":"req","id":"1","method":"health","traceparent":"00-ab-cd-01"}"#;
        assert!(parse_request(traced, &[]).is_err());
        assert!(parse_request(traced, &["traceparent", "expectedProfileId"]).is_ok());
        let bad = r#"{"type":"req","id":"1","method":"health","expectedProfileId":""}"#;
        assert!(parse_request(bad, &["traceparent", "expectedProfileId"]).is_err());
        assert_eq!(
            parse_request(r#"{"type":"event"}"#, &[]),
            Err(FrameError::NotRequest { id: None })
        );
        assert_eq!(
            parse_request("[1]", &[]),
            Err(FrameError::NotRequest { id: None })
        );
    }

    #[test]
    fn responses_omit_absent_fields() {
        let ok = encode_ok("a", &json!({"x":1}));
        assert_eq!(ok, r#"{"type":"res","id":"a","ok":true,"payload":{"x":1}}"#);
        let err = encode_error("a", &RpcError::unknown_method("nope"));
        let v: Value = serde_json::from_str(&err).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v.get("payload").is_none());
        assert_eq!(v["error"]["message"], "unknown method: nope");
    }

    #[test]
    fn raw_payloads_are_embedded_verbatim() {
        let frame = encode_ok_raw("a\"b", r#"{"x":[1,2]}"#);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            json!({"type":"res","id":"a\"b","ok":true,"payload":{"x":[1,2]}})
        );
    }

    #[test]
    fn event_encoded_once_with_per_connection_seq() {
        let ev = EncodedEvent::from_value(
            "presence",
            &json!({"presence":[]}),
            Some(StateVersion {
                presence: 3,
                health: 1,
            }),
        );
        let a: Value = serde_json::from_str(&ev.frame(Some(7))).unwrap();
        assert_eq!(
            a,
            json!({"type":"event","event":"presence","payload":{"presence":[]},
                   "stateVersion":{"presence":3,"health":1},"seq":7})
        );
        let b: Value = serde_json::from_str(&ev.frame(None)).unwrap();
        assert!(b.get("seq").is_none());
    }
}
