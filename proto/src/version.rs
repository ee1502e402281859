//! The protocol version of one connection (PROTOCOL-v4.md §1.2) and every rule that differs
//! between protocol 3 (ArgentOS clients) and protocol 4 (OpenClaw clients).
//!
//! The version is negotiated once per socket and stored on its session; code elsewhere asks
//! that [`Protocol`] value ("does this connection get `deltaText`?", "how does a missing
//! scope read?") instead of comparing numbers, so every difference is listed here.

use serde_json::{json, Value};

use crate::catalog::{self, Access, Role, SCOPE_ADMIN, SCOPE_APPROVALS, SCOPE_PAIRING};
use crate::catalog::{Versions, SCOPE_READ, SCOPE_WRITE};
use crate::errors::{ErrorCode, RpcError};
use crate::params::{CHAT_ABORT_KEYS, CHAT_HISTORY_KEYS, CHAT_HISTORY_V4_KEYS};
use crate::params::{CHAT_SEND_KEYS, CHAT_STARTUP_KEYS};

/// A protocol version this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    /// ArgentOS clients (PROTOCOL.md).
    #[default]
    V3,
    /// OpenClaw 2026.9.x clients (PROTOCOL-v4.md).
    V4,
}

/// Highest first: negotiation picks the first one inside the client's range.
pub const SUPPORTED: [Protocol; 2] = [Protocol::V4, Protocol::V3];

/// `operator.talk` (v4 scope for `talk.mode`; `write` implies it).
pub const SCOPE_TALK: &str = "operator.talk";
/// Upstream's scope for the agent-questions surface (`question.list`), since 2026.7.
pub const SCOPE_QUESTIONS: &str = "operator.questions";

/// Node-only methods of protocol 4 (§5.3). Those not in our catalog answer a node with
/// `unknown method` (the node host's "optional feature unsupported" signal) and an operator
/// with `unauthorized role: operator`.
const V4_NODE_ONLY: [&str; 11] = [
    "node.invoke.result",
    "node.event",
    "skills.bins",
    "node.invoke.progress",
    "node.pending.pull",
    "node.pending.drain",
    "node.pending.ack",
    "node.pluginTools.update",
    "node.skills.update",
    "node.runnerInventory.update",
    "node.pluginSurface.refresh",
];

/// Events only protocol-4 connections can receive (after subscribing).
const V4_ONLY_EVENTS: [&str; 2] = ["sessions.changed", "session.message"];

/// Params a forwarded method understands; on v4 connections other keys are dropped before
/// forwarding (v4 clients send many more, §9 "be lenient on input").
const V4_KNOWN_PARAMS: [(&str, &[&str]); 4] = [
    ("chat.send", &CHAT_SEND_KEYS),
    ("chat.history", &CHAT_HISTORY_V4_KEYS),
    ("chat.startup", &CHAT_STARTUP_KEYS),
    ("chat.abort", &CHAT_ABORT_KEYS),
];

/// What a v4 caller needs for a method, where that differs from the catalog (§5.2, §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V4Access {
    /// No scope, any role (`health`).
    Open,
    Catalog(Access),
    /// `operator.talk`, which `write` and `admin` satisfy.
    Talk,
    /// `operator.questions` (the openclaw CLI asks for exactly that scope for
    /// `question.list`), which `write` and `admin` satisfy too.
    Questions,
}

fn v4_access(method: &str) -> Option<V4Access> {
    let access = match method {
        "health" => V4Access::Open,
        "config.get" | "config.schema" | "config.schema.lookup" => V4Access::Catalog(Access::Read),
        "agents.files.list" | "agents.files.get" => V4Access::Catalog(Access::Read),
        "sessions.resolve" | "sessions.search" => V4Access::Catalog(Access::Read),
        "poll" => V4Access::Catalog(Access::Write),
        // Write for what a chat user changes (name, model, thinking…); the params decide
        // when it takes admin (`Protocol::authorize_params`).
        "sessions.patch" => V4Access::Catalog(Access::Write),
        "exec.approval.list" => V4Access::Catalog(Access::Approvals),
        "talk.mode" => V4Access::Talk,
        "question.list" => V4Access::Questions,
        _ => return catalog::lookup(method).map(|spec| V4Access::Catalog(spec.access)),
    };
    Some(access)
}

/// Upstream's default `maxChars` of a v4 `chat.history`: longer text blocks are cut.
pub const HISTORY_MAX_CHARS: usize = 8_000;
/// What ends a cut text; the Control UI looks for it and loads the whole message with
/// `chat.message.get`.
pub const TRUNCATED_MARK: &str = "\n...(truncated)...";

/// How `chat.history` shows transcript messages to a v4 connection: each with its id and
/// position (`__openclaw: {id, seq}`), every text block cut at `max_chars` characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView {
    pub max_chars: usize,
}

impl Default for MessageView {
    /// The view of v4-only payloads (`session.message`): upstream's default cut.
    fn default() -> Self {
        MessageView {
            max_chars: HISTORY_MAX_CHARS,
        }
    }
}

/// How `config.get` answers this caller (§5.2 decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigView {
    /// The raw document, secrets included.
    Full,
    /// Parsed, with every secret replaced by a marker.
    Redacted,
}

impl Protocol {
    /// `max({3,4} ∩ [min, max])`; `None` when the ranges do not meet (§1.2).
    pub fn negotiate(min: u64, max: u64) -> Option<Protocol> {
        SUPPORTED
            .into_iter()
            .find(|p| (min..=max).contains(&p.number()))
    }

    /// The version a node-agent call was made on (`Caller.protocol`; 0, from an older
    /// gateway, is 3).
    pub fn from_number(number: u32) -> Protocol {
        match number {
            4 => Protocol::V4,
            _ => Protocol::V3,
        }
    }

    pub fn number(self) -> u64 {
        match self {
            Protocol::V3 => 3,
            Protocol::V4 => 4,
        }
    }

    /// The refusal of a range outside 3..4 (§7.3), the same for every client: our highest
    /// version as `expectedProtocol`, so the node host's 3..3 fallback never triggers.
    pub fn mismatch(min: u64, max: u64) -> RpcError {
        RpcError::invalid_request("protocol mismatch")
            .with_detail("expectedProtocol", SUPPORTED[0].number())
            .with_detail("code", "PROTOCOL_MISMATCH")
            .with_detail("clientMinProtocol", min)
            .with_detail("clientMaxProtocol", max)
            .with_detail("minimumProbeProtocol", 3)
            .with_detail(
                "supportedProtocols",
                json!(SUPPORTED
                    .iter()
                    .rev()
                    .map(|p| p.number())
                    .collect::<Vec<_>>()),
            )
    }

    /// Top-level request keys besides `type`/`id`/`method`/`params` (§2): accepted and
    /// ignored on v4; v3 stays strict.
    pub fn extra_request_keys(self) -> &'static [&'static str] {
        match self {
            Protocol::V3 => &[],
            Protocol::V4 => &["traceparent", "expectedProfileId"],
        }
    }

    /// Whether this version has `method` at all.
    pub fn knows_method(self, method: &str) -> bool {
        match catalog::lookup(method).map(|spec| spec.versions) {
            Some(Versions::V4Only) => self == Protocol::V4,
            Some(Versions::Internal) => false,
            Some(Versions::All) | None => true,
        }
    }

    /// The params to forward: on v4, the keys the method understands (`queueMode:"steer"`
    /// becomes v3's `busyMode:"steer"`); on v3, unchanged (strict validation follows).
    pub fn lenient_params(self, method: &str, params: Value) -> Value {
        let known = V4_KNOWN_PARAMS.iter().find(|(m, _)| *m == method);
        let (Protocol::V4, Some((_, known)), Value::Object(mut map)) =
            (self, known, params.clone())
        else {
            return params;
        };
        if method == "chat.send" && !map.contains_key("busyMode") {
            let steer = map.get("queueMode").and_then(Value::as_str) == Some("steer");
            if steer {
                map.insert("busyMode".into(), Value::from("steer"));
            }
        }
        map.retain(|key, _| known.contains(&key.as_str()));
        Value::Object(map)
    }

    /// `features.methods` of `hello-ok`: what this server handles for this version.
    pub fn method_names(self) -> Vec<&'static str> {
        catalog::handled_method_names()
            .into_iter()
            .filter(|m| self.knows_method(m))
            .collect()
    }

    /// `features.events` of `hello-ok` for this version.
    pub fn event_names(self) -> Vec<&'static str> {
        catalog::event_names()
            .into_iter()
            .filter(|e| self == Protocol::V4 || !V4_ONLY_EVENTS.contains(e))
            .collect()
    }

    /// Scopes of an operator that asked for none (§3.2): v3 grants admin, v4 nothing.
    pub fn default_operator_scopes(self) -> Vec<String> {
        match self {
            Protocol::V3 => vec![SCOPE_ADMIN.to_string()],
            Protocol::V4 => Vec::new(),
        }
    }

    /// `hello-ok.auth` is always present on v4, only with an issued device token on v3.
    pub fn always_sends_hello_auth(self) -> bool {
        self == Protocol::V4
    }

    /// `hello-ok.features.capabilities` (v4 only): the server capabilities we implement.
    pub fn server_capabilities(self) -> Option<Value> {
        match self {
            Protocol::V3 => None,
            Protocol::V4 => Some(json!([])),
        }
    }

    /// The params `chat.history` takes (v3 strict; v4 also `agentId`, `maxChars`).
    pub fn chat_history_keys(self) -> &'static [&'static str] {
        match self {
            Protocol::V3 => &CHAT_HISTORY_KEYS,
            Protocol::V4 => &CHAT_HISTORY_V4_KEYS,
        }
    }

    /// How history shows messages: as stored on v3 (`None`); on v4 marked with ids and cut
    /// at the caller's `maxChars` or upstream's default.
    pub fn history_view(self, max_chars: Option<u64>) -> Option<MessageView> {
        match self {
            Protocol::V3 => None,
            Protocol::V4 => Some(match max_chars {
                Some(max_chars) => MessageView {
                    max_chars: max_chars as usize,
                },
                None => MessageView::default(),
            }),
        }
    }

    /// `chat` deltas carry `deltaText` (+ `replace`) on v4 (§8).
    pub fn chat_delta_text(self) -> bool {
        self == Protocol::V4
    }

    /// A handshake failure: on v4 it carries `details.code` and `extra` details (§7.2);
    /// on v3 it is left exactly as it was.
    pub fn connect_error(self, error: RpcError, code: &str, extra: &[(&str, Value)]) -> RpcError {
        match self {
            Protocol::V3 => error,
            Protocol::V4 => extra
                .iter()
                .fold(error.with_detail("code", code), |e, (k, v)| {
                    e.with_detail(k, v.clone())
                }),
        }
    }

    /// The v4 message where it differs from v3 (§7.2), else `v3`.
    pub fn message<'a>(self, v3: &'a str, v4: &'a str) -> &'a str {
        match self {
            Protocol::V3 => v3,
            Protocol::V4 => v4,
        }
    }

    /// Whether a client in `mode` appears in presence. Tools that come and go (the CLI, a
    /// backend, a probe) are not people at a screen: protocol 4 leaves all three out, as
    /// OpenClaw does; protocol 3 only the CLI, as ArgentOS does. Besides being right, it
    /// keeps a fleet of backends from inflating every `hello-ok` snapshot.
    pub fn tracks_presence(self, mode: &str) -> bool {
        match self {
            Protocol::V3 => mode != "cli",
            Protocol::V4 => !matches!(mode, "cli" | "backend" | "probe"),
        }
    }

    /// How `config.get` answers an authorized caller of this version.
    pub fn config_view(self) -> ConfigView {
        match self {
            // The Control UI shows what it gets and offers to "reveal" it: every v4 caller,
            // admins included, gets the secrets masked (issue 13; PROTOCOL-v4.md §5.2 let
            // v4 admins read them raw). Writes put the stored secrets back.
            Protocol::V4 => ConfigView::Redacted,
            Protocol::V3 => ConfigView::Full,
        }
    }

    /// The v4 rules that look at the params (§5.2): `agent` with `/new` or `/reset` resets
    /// the session, and a `sessions.patch` of anything beyond what a chat user changes (or
    /// to full permissions, or a sandbox) configures it; both need admin.
    pub fn authorize_params(
        self,
        scopes: &[String],
        method: &str,
        params: &Value,
    ) -> Result<(), RpcError> {
        let message = params.get("message").and_then(Value::as_str).unwrap_or("");
        let command = message.split_whitespace().next().unwrap_or("");
        let resets = method == "agent" && matches!(command, "/new" | "/reset");
        let configures = method == "sessions.patch"
            && params.as_object().is_some_and(|fields| {
                fields.keys().any(|k| crate::session_patch::needs_admin(k))
                    || fields.contains_key("sandboxMode")
                    || fields.get("permissionMode").and_then(Value::as_str) == Some("full")
            });
        if self == Protocol::V4 && (resets || configures) && !satisfies(scopes, SCOPE_ADMIN) {
            return Err(missing_scope(SCOPE_ADMIN));
        }
        Ok(())
    }

    /// Whether `role` with `scopes` may call `method` (§3.3 on v3; PROTOCOL-v4.md §5 on v4).
    pub fn authorize(self, role: Role, scopes: &[String], method: &str) -> Result<(), RpcError> {
        match self {
            // A v4-only method is unknown on v3, and authorized like one.
            Protocol::V3 if !self.knows_method(method) => catalog::authorize(role, scopes, ""),
            Protocol::V3 => catalog::authorize(role, scopes, method),
            Protocol::V4 => authorize_v4(role, scopes, method),
        }
    }
}

/// §5.1 implications: admin satisfies everything; write satisfies read and talk.
fn satisfies(scopes: &[String], needed: &str) -> bool {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    has(SCOPE_ADMIN)
        || has(needed)
        || (matches!(needed, SCOPE_READ | SCOPE_TALK | SCOPE_QUESTIONS) && has(SCOPE_WRITE))
}

fn missing_scope(scope: &str) -> RpcError {
    RpcError::unauthorized(format!("missing scope: {scope}"))
        .with_detail("code", "MISSING_SCOPE")
        .with_detail("missingScope", scope)
        .with_detail("requiredScopes", json!([scope]))
        .with_code(ErrorCode::Forbidden)
}

fn authorize_v4(role: Role, scopes: &[String], method: &str) -> Result<(), RpcError> {
    let denied = |who: &str| Err(RpcError::unauthorized(format!("unauthorized role: {who}")));
    let access = v4_access(method);
    if V4_NODE_ONLY.contains(&method) || access == Some(V4Access::Catalog(Access::NodeOnly)) {
        // A node asking for one we lack hears `unknown method` from the router.
        return if role == Role::Node {
            Ok(())
        } else {
            denied(role.as_str())
        };
    }
    if access == Some(V4Access::Open) {
        return Ok(());
    }
    match role {
        Role::Node => return denied("node"),
        // The seed's device role keeps its v3 rule.
        Role::Device => return catalog::authorize(role, scopes, method),
        Role::Operator => {}
    }
    let needed = match access {
        Some(V4Access::Talk) => SCOPE_TALK,
        Some(V4Access::Questions) => SCOPE_QUESTIONS,
        Some(V4Access::Catalog(Access::Read)) => SCOPE_READ,
        Some(V4Access::Catalog(Access::Write)) => SCOPE_WRITE,
        Some(V4Access::Catalog(Access::Approvals)) => SCOPE_APPROVALS,
        Some(V4Access::Catalog(Access::Pairing)) => SCOPE_PAIRING,
        // Admin methods, and methods nobody knows (§3.3 rule 10).
        _ => SCOPE_ADMIN,
    };
    if satisfies(scopes, needed) {
        Ok(())
    } else {
        Err(missing_scope(needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(Protocol::negotiate(3, 3), Some(Protocol::V3));
        assert_eq!(Protocol::negotiate(3, 4), Some(Protocol::V4));
        assert_eq!(Protocol::negotiate(4, 4), Some(Protocol::V4));
        assert_eq!(Protocol::negotiate(1, 3), Some(Protocol::V3));
        assert_eq!(Protocol::negotiate(2, 9), Some(Protocol::V4));
        assert_eq!(Protocol::negotiate(5, 6), None);
        assert_eq!(Protocol::negotiate(1, 2), None);
        assert_eq!(Protocol::negotiate(4, 3), None);
        let e = Protocol::mismatch(5, 6);
        assert_eq!(e.details["expectedProtocol"], 4);
        assert_eq!(e.details["code"], "PROTOCOL_MISMATCH");
        assert_eq!(e.details["supportedProtocols"], json!([3, 4]));
    }

    #[test]
    fn v4_scope_rules() {
        let v4 = Protocol::V4;
        let read = scopes(&["operator.read"]);
        let write = scopes(&["operator.write"]);
        assert!(v4.authorize(Role::Operator, &read, "config.get").is_ok());
        assert!(Protocol::V3
            .authorize(Role::Operator, &read, "config.get")
            .is_err());
        assert!(v4.authorize(Role::Operator, &write, "chat.history").is_ok());
        assert!(v4.authorize(Role::Operator, &write, "talk.mode").is_ok());
        // The openclaw CLI asks for `operator.questions` alone to call `question.list`.
        let questions = scopes(&["operator.questions"]);
        assert!(v4
            .authorize(Role::Operator, &questions, "question.list")
            .is_ok());
        assert!(v4
            .authorize(Role::Operator, &questions, "chat.history")
            .is_err());
        assert!(v4
            .authorize(Role::Operator, &read, "question.list")
            .is_err());
        assert!(v4.authorize(Role::Operator, &[], "health").is_ok());
        assert!(v4.authorize(Role::Node, &[], "health").is_ok());
        let reset = json!({"message": " /reset now", "sessionKey": "main"});
        assert!(v4.authorize_params(&write, "agent", &reset).is_err());
        assert!(Protocol::V3
            .authorize_params(&write, "agent", &reset)
            .is_ok());
        assert!(v4
            .authorize_params(&write, "agent", &json!({"message": "hi"}))
            .is_ok());
        // Presence: v4 leaves tools out, v3 only the CLI.
        assert!(!v4.tracks_presence("backend") && !v4.tracks_presence("probe"));
        assert!(v4.tracks_presence("webchat") && v4.tracks_presence("node"));
        assert!(Protocol::V3.tracks_presence("backend") && !Protocol::V3.tracks_presence("cli"));
        // sessions.patch: a chat user's pickers need write; configuring the session admin.
        assert!(v4
            .authorize(Role::Operator, &write, "sessions.patch")
            .is_ok());
        let pick = json!({"key": "main", "model": "p/m", "thinkingLevel": "high"});
        assert!(v4.authorize_params(&write, "sessions.patch", &pick).is_ok());
        for configure in [
            json!({"key": "main", "contextWindow": "1m"}),
            json!({"key": "main", "permissionMode": "full"}),
            json!({"key": "main", "sandboxMode": "off"}),
        ] {
            assert!(v4
                .authorize_params(&write, "sessions.patch", &configure)
                .is_err());
        }
        assert!(Protocol::V3
            .authorize(Role::Operator, &write, "sessions.patch")
            .is_err());
        let approvals = scopes(&["operator.approvals"]);
        assert!(v4
            .authorize(Role::Operator, &approvals, "exec.approval.list")
            .is_ok());
        let e = v4
            .authorize(Role::Operator, &read, "config.set")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(e.message, "missing scope: operator.admin");
        assert_eq!(e.details["code"], "MISSING_SCOPE");
        assert_eq!(e.details["missingScope"], "operator.admin");
        assert_eq!(e.details["requiredScopes"], json!(["operator.admin"]));
        let e = Protocol::V3
            .authorize(Role::Operator, &read, "config.set")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.details.get("code").is_none());
        // Node-only methods: operators are refused by role, nodes pass (→ unknown method).
        let admin = scopes(&["operator.admin"]);
        assert_eq!(
            v4.authorize(Role::Operator, &admin, "node.pending.pull")
                .unwrap_err()
                .message,
            "unauthorized role: operator"
        );
        assert!(v4.authorize(Role::Node, &[], "node.pending.pull").is_ok());
        assert_eq!(
            v4.authorize(Role::Node, &[], "chat.send")
                .unwrap_err()
                .message,
            "unauthorized role: node"
        );
        // Unknown scope names never break anything; unknown methods need admin.
        let odd = scopes(&["operator.questions", "operator.read"]);
        assert_eq!(
            v4.authorize(Role::Operator, &odd, "made.up")
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn v4_params_are_trimmed_to_what_the_method_knows() {
        let sent = json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "k",
                          "queueMode": "steer", "mentions": [], "agentId": "main"});
        let v4 = Protocol::V4.lenient_params("chat.send", sent.clone());
        assert_eq!(
            v4,
            json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "k", "busyMode": "steer"})
        );
        assert_eq!(Protocol::V3.lenient_params("chat.send", sent.clone()), sent);
        assert!(!Protocol::V3.method_names().contains(&"chat.startup"));
        assert!(Protocol::V4.method_names().contains(&"chat.startup"));
        let admin = scopes(&["operator.admin"]);
        assert!(Protocol::V3
            .authorize(Role::Operator, &scopes(&["operator.read"]), "chat.startup")
            .is_err());
        assert!(Protocol::V3
            .authorize(Role::Operator, &admin, "chat.startup")
            .is_ok());
    }

    #[test]
    fn history_is_shown_as_stored_on_v3_and_marked_on_v4() {
        assert_eq!(Protocol::from_number(0), Protocol::V3, "an older gateway");
        assert_eq!(Protocol::from_number(4), Protocol::V4);
        assert_eq!(Protocol::V3.history_view(None), None);
        assert_eq!(
            Protocol::V4.history_view(None),
            Some(MessageView {
                max_chars: HISTORY_MAX_CHARS
            })
        );
        assert_eq!(
            Protocol::V4.history_view(Some(100)),
            Some(MessageView { max_chars: 100 })
        );
        assert!(!Protocol::V3.chat_history_keys().contains(&"maxChars"));
        assert!(Protocol::V4.chat_history_keys().contains(&"maxChars"));
        let kept = Protocol::V4.lenient_params(
            "chat.history",
            json!({"sessionKey": "main", "maxChars": 5, "cursor": "c", "agentId": "main"}),
        );
        assert_eq!(
            kept,
            json!({"sessionKey": "main", "maxChars": 5, "agentId": "main"})
        );
    }

    #[test]
    fn v3_connect_errors_stay_as_they_were() {
        let e = RpcError::unauthorized("device signature invalid");
        let v3 = Protocol::V3.connect_error(e.clone(), "DEVICE_AUTH_SIGNATURE_INVALID", &[]);
        assert_eq!(v3, e);
        let v4 = Protocol::V4.connect_error(
            e,
            "DEVICE_AUTH_SIGNATURE_INVALID",
            &[("reason", json!("device-signature"))],
        );
        assert_eq!(v4.details["code"], "DEVICE_AUTH_SIGNATURE_INVALID");
        assert_eq!(v4.details["reason"], "device-signature");
    }
}
