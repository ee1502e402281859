//! Request params of every method family. The first byte picks the method from the catalog
//! (`catalog::method_names()`, index modulo its length), the rest is the params as JSON
//! (empty: `{}`). Decisions that are not part of the input (which scopes the caller holds,
//! which bounds a helper is asked for) come from a hash of the whole input.
//!
//! Why: every handler reads its params with the same helpers, and what a caller may do is
//! decided before that by the router's pure layer. Most handlers need a running gateway or
//! node (`Ctx`, `Runtime`, `Scheduler`) and cannot be called here; what is pure is fuzzed:
//! * `Params` helpers (`only`, `required_str`, `required_id`, `required_text`,
//!   `optional_str`/`_bool`/`_u64`/`_u64_in`/`_str_list`) on every key the params have and
//!   on one they lack: each answer matches the value's JSON type exactly, and every refusal
//!   is `INVALID_REQUEST` / -32602 `invalid <method> params: at …` in upstream's wording;
//!   `is_id` holds exactly its documented charset and bounds;
//! * the router's layer (gateway/src/router.rs): `Protocol::authorize` against the
//!   algorithm of PROTOCOL.md §3.3 on protocol 3 (as a table), and on protocol 4 the
//!   properties of PROTOCOL-v4.md §5: more scopes never take access away, a "missing scope:
//!   X" refusal is lifted by X exactly, a role refusal by no scope; `authorize_params`
//!   (admin for `agent /new|/reset` and configuring `sessions.patch`), `lenient_params`
//!   (v3 unchanged; v4 keeps only the known chat keys, unchanged, and is idempotent),
//!   `knows_method` (v4 ⊇ v3), the catalog's timeout rule;
//! * the pure handlers: the protocol-4 methods of gateway/src/methods/absent.rs (closed
//!   params: an accepted object with one unknown key more is refused), `config.schema.lookup`,
//!   `skills.bins`, the v4 `cron.list` pager (page size, totals, `hasMore`/`nextOffset`,
//!   a revision that names the list, not the page), and — with the default `node-agent`
//!   feature — `cron.add` / `cron.update` validation (`jobs::new_job`, `jobs::apply_patch`):
//!   a job either is refused with a params error or is a storable job (PROTOCOL.md §5.5
//!   shape, a schedule that parses, a next run strictly in the future, a JSON round trip,
//!   an empty patch that changes nothing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

use argent_fuzz::{check_error_frame, Choices};
use argent_gateway::methods::config as config_methods;
use argent_gateway::methods::{absent, cron_page, live_nodes};
use argent_proto::catalog::{self, Access, Placement, Role, Timeout};
use argent_proto::catalog::{SCOPE_ADMIN, SCOPE_APPROVALS, SCOPE_PAIRING, SCOPE_READ, SCOPE_WRITE};
use argent_proto::errors::{jsonrpc, ErrorCode, RpcError};
use argent_proto::params::{is_id, Params, MAX_ID_LEN};
use argent_proto::params::{
    CHAT_ABORT_KEYS, CHAT_HISTORY_V4_KEYS, CHAT_SEND_KEYS, CHAT_STARTUP_KEYS,
};
use argent_proto::session_patch;
use argent_proto::version::{Protocol, SCOPE_QUESTIONS, SCOPE_TALK};

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let names = catalog::method_names();
    let method = names[usize::from(*first) % names.len()];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let params: Value = if text.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(text) {
            Ok(params) => params,
            Err(_) => return,
        }
    };
    let mut choices = Choices::new(data);
    check_helpers(method, &params, &mut choices);
    check_routing(method, &params, &mut choices);
    check_handlers(method, &params);
    cron::check(method, &params);
});

// ---------------------------------------------------------------------------------------
// `Params` helpers.

fn invalid(method: &str, detail: &str) -> String {
    format!("invalid {method} params: {detail}")
}

/// A params refusal: INVALID_REQUEST, -32602, `invalid <method> params: <detail>`.
fn check_params_error(method: &str, err: &RpcError) {
    check_error_frame("r1", err);
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err:?}");
    assert_eq!(err.jsonrpc_code(), jsonrpc::INVALID_PARAMS, "{err:?}");
    let prefix = invalid(method, "");
    assert!(
        err.message.starts_with(&prefix) && err.message.len() > prefix.len(),
        "{:?}",
        err.message
    );
}

fn expect_err<T: std::fmt::Debug>(method: &str, result: Result<T, RpcError>, detail: &str) {
    match result {
        Ok(v) => panic!("{method}: accepted {v:?}, expected {detail:?}"),
        Err(err) => {
            check_params_error(method, &err);
            assert_eq!(err.message, invalid(method, detail));
        }
    }
}

fn params_of<'a>(method: &'a str, params: &Value) -> Params<'a> {
    Params::new(method, params.clone()).expect("checked: an object or null")
}

fn check_helpers(method: &str, params: &Value, c: &mut Choices) {
    let p = match Params::new(method, params.clone()) {
        Ok(p) => p,
        Err(err) => {
            assert!(!params.is_object() && !params.is_null(), "{params} refused");
            check_params_error(method, &err);
            assert_eq!(err.message, invalid(method, "at root: must be object"));
            return;
        }
    };
    assert!(params.is_object() || params.is_null(), "{params} accepted");
    assert_eq!(p.method(), method);
    assert_eq!(p.invalid("x").message, invalid(method, "x"));
    let obj = params.as_object().cloned().unwrap_or_default();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();

    // `only`: the keys it has pass; leaving one out names exactly that one.
    assert!(params_of(method, params).only(&keys).is_ok());
    if !keys.is_empty() {
        let left_out = keys[c.below(keys.len())];
        let allowed: Vec<&str> = keys.iter().copied().filter(|k| *k != left_out).collect();
        let detail = format!("at root: unexpected property '{left_out}'");
        expect_err(
            method,
            params_of(method, params).only(&allowed).map(|_| ()),
            &detail,
        );
        if keys.len() <= 32 {
            let err = params_of(method, params).only(&[]).map(|_| ()).unwrap_err();
            check_params_error(method, &err);
            for key in &keys {
                assert!(err
                    .message
                    .contains(&format!("unexpected property '{key}'")));
            }
        }
    }

    for (key, value) in obj.iter().take(16) {
        check_present(method, &p, key, value, c);
    }
    let mut missing = String::from("absentKey");
    while obj.contains_key(&missing) {
        missing.push('_');
    }
    check_absent(method, &p, &missing);
}

fn check_present(method: &str, p: &Params, key: &str, value: &Value, c: &mut Choices) {
    assert_eq!(p.get(key), Some(value));
    let not_string = format!("at /{key}: must be string");
    let empty = format!("at /{key}: must NOT have fewer than 1 characters");

    // Strings.
    match value {
        Value::String(s) if s.is_empty() => {
            expect_err(method, p.optional_str(key), &empty);
            expect_err(method, p.required_str(key), &empty);
            assert_eq!(p.required_text(key), Ok(String::new()));
        }
        Value::String(s) => {
            assert_eq!(p.optional_str(key), Ok(Some(s.clone())));
            assert_eq!(p.required_str(key), Ok(s.clone()));
            assert_eq!(p.required_text(key), Ok(s.clone()));
            check_id(method, p, key, s);
        }
        _ => {
            expect_err(method, p.optional_str(key), &not_string);
            expect_err(method, p.required_str(key), &not_string);
            expect_err(method, p.required_text(key), &not_string);
            expect_err(method, p.optional_id(key), &not_string);
        }
    }

    // Booleans.
    match value {
        Value::Bool(b) => assert_eq!(p.optional_bool(key), Ok(Some(*b))),
        _ => expect_err(
            method,
            p.optional_bool(key),
            &format!("at /{key}: must be boolean"),
        ),
    }

    // Integers, with a lower bound and a range drawn from the input.
    let min = [0, 1, 20, c.next_u64() % 1000][c.below(4)];
    let max = min + [0, 1, 99, 4999, u64::MAX - min][c.below(5)];
    let below_min = format!("at /{key}: must be >= {min}");
    let expected = match (value.as_u64(), value.as_i64()) {
        (Some(n), _) if n >= min => Ok(Some(n)),
        (Some(_), _) | (None, Some(_)) => Err(below_min.clone()),
        (None, None) => Err(format!("at /{key}: must be integer")),
    };
    match &expected {
        Ok(n) => assert_eq!(p.optional_u64(key, min), Ok(*n)),
        Err(detail) => expect_err(method, p.optional_u64(key, min), detail),
    }
    match (expected, value.as_u64()) {
        (Ok(_), Some(n)) if n > max => expect_err(
            method,
            p.optional_u64_in(key, min, max),
            &format!("at /{key}: must be <= {max}"),
        ),
        (Ok(n), _) => assert_eq!(p.optional_u64_in(key, min, max), Ok(n)),
        (Err(detail), _) => expect_err(method, p.optional_u64_in(key, min, max), &detail),
    }

    // Lists of non-empty strings.
    match value {
        Value::Array(items) => {
            let bad = items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match item.as_str() {
                    Some("") => Some(format!(
                        "at /{key}/{i}: must NOT have fewer than 1 characters"
                    )),
                    Some(_) => None,
                    None => Some(format!("at /{key}/{i}: must be string")),
                });
            match bad {
                Some(detail) => expect_err(method, p.optional_str_list(key), &detail),
                None => {
                    let strings: Vec<String> = items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect();
                    assert_eq!(p.optional_str_list(key), Ok(Some(strings)));
                }
            }
        }
        _ => expect_err(
            method,
            p.optional_str_list(key),
            &format!("at /{key}: must be array"),
        ),
    }
}

/// `required_id` / `optional_id` and `is_id`: letters, digits, `-_.=`, 1–128 bytes, not
/// starting or ending with `.`, no `..` (params.rs).
fn check_id(method: &str, p: &Params, key: &str, s: &str) {
    let documented = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b));
    assert_eq!(is_id(s), documented, "{s:?}");
    if documented {
        assert_eq!(p.required_id(key), Ok(s.to_string()));
        assert_eq!(p.optional_id(key), Ok(Some(s.to_string())));
    } else {
        let err = p.required_id(key).expect_err("not an id");
        check_params_error(method, &err);
        assert!(err
            .message
            .contains(&format!("at /{key}: must be 1 to {MAX_ID_LEN} ")));
        assert_eq!(p.optional_id(key), Err(err));
    }
}

fn check_absent(method: &str, p: &Params, key: &str) {
    let required = format!("at root: must have required property '{key}'");
    assert_eq!(p.get(key), None);
    assert_eq!(p.optional_str(key), Ok(None));
    assert_eq!(p.optional_id(key), Ok(None));
    assert_eq!(p.optional_bool(key), Ok(None));
    assert_eq!(p.optional_u64(key, 1), Ok(None));
    assert_eq!(p.optional_u64_in(key, 1, 10), Ok(None));
    assert_eq!(p.optional_str_list(key), Ok(None));
    expect_err(method, p.required_str(key), &required);
    expect_err(method, p.required_id(key), &required);
    expect_err(method, p.required_text(key), &required);
}

// ---------------------------------------------------------------------------------------
// The router's pure layer.

/// Scopes a caller may hold: the operator scopes, v4's, and two that must grant nothing.
const SCOPE_POOL: [&str; 10] = [
    SCOPE_ADMIN,
    SCOPE_READ,
    SCOPE_WRITE,
    SCOPE_APPROVALS,
    SCOPE_PAIRING,
    SCOPE_TALK,
    SCOPE_QUESTIONS,
    "operator.talk.secrets",
    "OPERATOR.ADMIN",
    "",
];

/// What the `device` role may call besides read methods (PROTOCOL.md §3.1).
const DEVICE_EXTRA: [&str; 7] = [
    "chat.send",
    "chat.history",
    "chat.abort",
    "agent",
    "agent.wait",
    "tts.convert",
    "talk.mode",
];

const ROLES: [Role; 3] = [Role::Operator, Role::Node, Role::Device];

fn check_routing(method: &str, params: &Value, c: &mut Choices) {
    let spec = catalog::lookup(method).expect("chosen from the catalog");
    assert_eq!(spec.name, method);
    assert_eq!(
        spec.node_method().is_some(),
        matches!(spec.placement, Placement::Node(..))
    );
    assert!(
        Protocol::V4.knows_method(method) || !Protocol::V3.knows_method(method),
        "protocol 4 must know what protocol 3 knows"
    );
    match spec.timeout {
        Timeout::Default => assert_eq!(spec.timeout.asked_ms(params), 0),
        Timeout::Fixed(ms) => assert_eq!(spec.timeout.asked_ms(params), ms),
        Timeout::FromParam { max_ms, .. } => assert!(spec.timeout.asked_ms(params) <= max_ms),
    }

    let bits = c.next_u64();
    let mut scopes: Vec<String> = SCOPE_POOL
        .iter()
        .enumerate()
        .filter(|(i, _)| bits >> i & 1 == 1)
        .map(|(_, s)| s.to_string())
        .collect();
    if let Some(sent) = params.get("scopes").and_then(Value::as_array) {
        scopes.extend(
            sent.iter()
                .filter_map(Value::as_str)
                .take(8)
                .map(String::from),
        );
    }
    let every_scope: Vec<String> = SCOPE_POOL[..8].iter().map(|s| s.to_string()).collect();

    for protocol in [Protocol::V3, Protocol::V4] {
        for role in ROLES {
            let result = protocol.authorize(role, &scopes, method);
            check_authorization(protocol, role, &scopes, &every_scope, method, &result, c);
        }
        check_authorize_params(protocol, &scopes, method, params);
        check_lenient_params(protocol, method, params);
    }

    // Protocol 3 against §3.3, as a table: v4-only methods are unknown there.
    let (access, name) = if Protocol::V3.knows_method(method) {
        (Some(spec.access), method)
    } else {
        (None, "")
    };
    for role in ROLES {
        let got = Protocol::V3
            .authorize(role, &scopes, method)
            .map_err(|e| e.message);
        assert_eq!(
            got,
            v3_rule(role, &scopes, access, name),
            "{role:?} {scopes:?} {method}"
        );
    }

    // Protocol 4's fixed points (PROTOCOL-v4.md §5).
    let node_only = spec.access == Access::NodeOnly;
    for role in ROLES {
        let result = Protocol::V4.authorize(role, &scopes, method);
        if node_only {
            assert_eq!(result.is_ok(), role == Role::Node, "{role:?} {method}");
        } else if method == "health" {
            assert!(result.is_ok(), "health is open to every role");
        } else if role == Role::Node {
            assert!(result.is_err(), "a node called {method}");
        } else if role == Role::Device {
            assert_eq!(result, catalog::authorize(role, &scopes, method));
        } else if scopes.iter().any(|s| s == SCOPE_ADMIN) {
            assert!(result.is_ok(), "admin refused {method}");
        }
    }
}

/// PROTOCOL.md §3.3, in its order.
fn v3_rule(
    role: Role,
    scopes: &[String],
    access: Option<Access>,
    method: &str,
) -> Result<(), String> {
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let missing = |scope: &str| Err(format!("missing scope: {scope}"));
    if access == Some(Access::NodeOnly) {
        return match role {
            Role::Node => Ok(()),
            other => Err(format!("unauthorized role: {}", other.as_str())),
        };
    }
    match role {
        Role::Node => return Err("unauthorized role: node".into()),
        Role::Device if access == Some(Access::Read) || DEVICE_EXTRA.contains(&method) => {
            return Ok(())
        }
        Role::Device => return Err("unauthorized role: device".into()),
        Role::Operator => {}
    }
    if has(SCOPE_ADMIN) {
        return Ok(());
    }
    match access {
        Some(Access::Approvals) if !has(SCOPE_APPROVALS) => missing(SCOPE_APPROVALS),
        Some(Access::Pairing) if !has(SCOPE_PAIRING) => missing(SCOPE_PAIRING),
        Some(Access::Read) if !(has(SCOPE_READ) || has(SCOPE_WRITE)) => missing(SCOPE_READ),
        Some(Access::Write) if !has(SCOPE_WRITE) => missing(SCOPE_WRITE),
        Some(Access::Approvals | Access::Pairing | Access::Read | Access::Write) => Ok(()),
        _ => missing(SCOPE_ADMIN),
    }
}

fn check_authorization(
    protocol: Protocol,
    role: Role,
    scopes: &[String],
    every_scope: &[String],
    method: &str,
    result: &Result<(), RpcError>,
    c: &mut Choices,
) {
    // One scope more never takes access away.
    let mut more = scopes.to_vec();
    more.push(SCOPE_POOL[c.below(SCOPE_POOL.len())].to_string());
    if result.is_ok() {
        assert!(
            protocol.authorize(role, &more, method).is_ok(),
            "{more:?} lost {method}"
        );
        return;
    }
    let err = result.as_ref().unwrap_err();
    check_error_frame("r1", err);
    assert_eq!(err.jsonrpc_code(), jsonrpc::AUTH_FAILED, "{err:?}");
    if let Some(scope) = err.message.strip_prefix("missing scope: ") {
        assert!(SCOPE_POOL[..7].contains(&scope), "{scope:?}");
        // Exactly that scope lifts the refusal.
        let mut with = scopes.to_vec();
        with.push(scope.to_string());
        assert!(
            protocol.authorize(role, &with, method).is_ok(),
            "{scope} did not suffice"
        );
        if protocol == Protocol::V4 {
            assert_eq!(err.code, ErrorCode::Forbidden);
            assert_eq!(err.details.get("code"), Some(&json!("MISSING_SCOPE")));
            assert_eq!(err.details.get("missingScope"), Some(&json!(scope)));
            assert_eq!(err.details.get("requiredScopes"), Some(&json!([scope])));
        } else {
            assert_eq!(err.code, ErrorCode::InvalidRequest);
        }
    } else {
        let who = err.message.strip_prefix("unauthorized role: ");
        assert_eq!(who, Some(role.as_str()), "{:?}", err.message);
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        // No scope lifts a role refusal.
        assert!(protocol.authorize(role, every_scope, method).is_err());
    }
}

/// PROTOCOL-v4.md §5.2: `agent` with `/new` or `/reset`, and a `sessions.patch` beyond what
/// a chat user changes (or to full permissions), need admin on protocol 4; never on 3.
fn check_authorize_params(protocol: Protocol, scopes: &[String], method: &str, params: &Value) {
    let result = protocol.authorize_params(scopes, method, params);
    let admin = scopes.iter().any(|s| s == SCOPE_ADMIN);
    let message = params.get("message").and_then(Value::as_str).unwrap_or("");
    let resets =
        method == "agent" && matches!(message.split_whitespace().next(), Some("/new" | "/reset"));
    let configures = method == "sessions.patch"
        && params.as_object().is_some_and(|fields| {
            fields.keys().any(|k| {
                !session_patch::ENVELOPE.contains(&k.as_str())
                    && !session_patch::WRITE_FIELDS.contains(&k.as_str())
            }) || fields.get("permissionMode").and_then(Value::as_str) == Some("full")
        });
    let needs_admin = protocol == Protocol::V4 && (resets || configures) && !admin;
    match result {
        Ok(()) => assert!(!needs_admin, "{method} {params} without admin"),
        Err(err) => {
            assert!(needs_admin, "{method} refused: {err:?}");
            check_error_frame("r1", &err);
            assert_eq!(err.message, "missing scope: operator.admin");
            assert_eq!(err.code, ErrorCode::Forbidden);
        }
    }
}

/// v3 forwards params as sent; v4 keeps the keys the chat methods know (with `queueMode:
/// "steer"` read as `busyMode:"steer"`), unchanged, and doing it twice changes nothing.
fn check_lenient_params(protocol: Protocol, method: &str, params: &Value) {
    let out = protocol.lenient_params(method, params.clone());
    let known: Option<&[&str]> = match method {
        "chat.send" => Some(&CHAT_SEND_KEYS[..]),
        "chat.history" => Some(&CHAT_HISTORY_V4_KEYS[..]),
        "chat.startup" => Some(&CHAT_STARTUP_KEYS[..]),
        "chat.abort" => Some(&CHAT_ABORT_KEYS[..]),
        _ => None,
    };
    let (Protocol::V4, Some(known), Some(sent)) = (protocol, known, params.as_object()) else {
        assert_eq!(&out, params, "{method} params changed");
        return;
    };
    let kept = out.as_object().expect("an object stays an object");
    let steer = method == "chat.send"
        && !sent.contains_key("busyMode")
        && sent.get("queueMode").and_then(Value::as_str) == Some("steer");
    for (key, value) in kept {
        assert!(known.contains(&key.as_str()), "{key} forwarded");
        if key == "busyMode" && steer {
            assert_eq!(value, "steer");
        } else {
            assert_eq!(sent.get(key), Some(value), "{key} changed");
        }
    }
    for (key, value) in sent {
        if known.contains(&key.as_str()) {
            assert_eq!(kept.get(key), Some(value), "{key} dropped");
        }
    }
    if steer {
        assert_eq!(kept.get("busyMode"), Some(&json!("steer")));
    }
    assert_eq!(protocol.lenient_params(method, out.clone()), out);
}

// ---------------------------------------------------------------------------------------
// Pure handlers.

type Handler = fn(Value) -> Result<Value, RpcError>;

/// The handlers that need nothing but their params, and whether their params object is
/// closed (upstream's `additionalProperties: false`).
fn pure_handler(method: &str) -> Option<(Handler, bool)> {
    let (handler, closed): (Handler, bool) = match method {
        "question.list" => (absent::question_list as Handler, true),
        "update.status" => (absent::update_status as Handler, true),
        "sessions.observer.visibility" => (absent::observer_visibility as Handler, true),
        "sessions.companion.state" => (absent::companion_state as Handler, true),
        "sessions.branches.list" => (absent::branches_list as Handler, true),
        "progressCard.get" => (absent::progress_card as Handler, true),
        "talk.catalog" => (absent::talk_catalog as Handler, true),
        "chat.metadata" => (absent::chat_metadata as Handler, true),
        "plugins.list" => (absent::plugins_list as Handler, true),
        "skills.search" => (absent::skills_search as Handler, true),
        "skills.library.list" => (absent::skills_library as Handler, true),
        "channels.pairing.list" => (absent::channels_pairing as Handler, true),
        "plugins.catalog.browse" => (absent::plugins_catalog as Handler, true),
        "usage.status" => (absent::usage_status as Handler, false),
        "themes.list" => (absent::themes_list as Handler, true),
        "approval.history" => (absent::approval_history as Handler, true),
        "worktrees.list" => (absent::worktrees_list as Handler, true),
        "transcripts.list" => (absent::meeting_transcripts as Handler, true),
        "exec.approval.grants.list" => (absent::approval_grants as Handler, true),
        "artifacts.list" => (absent::artifacts_list as Handler, true),
        "config.schema.lookup" => (config_methods::schema_lookup as Handler, true),
        "skills.bins" => (live_nodes::skills_bins as Handler, true),
        _ => return None,
    };
    Some((handler, closed))
}

fn check_handlers(method: &str, params: &Value) {
    if let Some((handler, closed)) = pure_handler(method) {
        match handler(params.clone()) {
            Ok(answer) => {
                assert!(
                    params.is_object() || params.is_null(),
                    "{method} took {params}"
                );
                assert!(
                    answer.is_object() || answer.is_array(),
                    "{method}: {answer}"
                );
                if closed && params.is_object() {
                    let mut more = params.clone();
                    more["fuzzUnknownKey"] = json!(true);
                    expect_err(
                        method,
                        handler(more),
                        "at root: unexpected property 'fuzzUnknownKey'",
                    );
                }
                if method == "config.schema.lookup" {
                    assert!(answer["path"].is_string() && answer["children"].is_array());
                }
            }
            Err(err) => check_handler_error(method, &err),
        }
    }
    if method == "cron.list" {
        check_cron_page(params);
    }
}

fn check_handler_error(method: &str, err: &RpcError) {
    check_error_frame("r1", err);
    assert!(
        matches!(err.code, ErrorCode::InvalidRequest | ErrorCode::Unavailable),
        "{err:?}"
    );
    if err.code == ErrorCode::InvalidRequest {
        assert_eq!(err.jsonrpc_code(), jsonrpc::INVALID_PARAMS, "{err:?}");
    }
    // A params error names its own method.
    if err.message.starts_with("invalid ") && err.message.contains(" params: ") {
        assert!(
            err.message.starts_with(&invalid(method, "")),
            "{:?}",
            err.message
        );
    }
}

/// The node's `{jobs}` answer the v4 pager cuts: unordered, one job without an id, one
/// without a creation time, names in mixed case and outside ASCII.
fn node_jobs() -> Value {
    json!({"jobs": [
        {"id": "j-b", "name": "Backup nightly", "enabled": true, "createdAtMs": 3},
        {"id": "j-a", "name": "alpha digest", "enabled": false, "createdAtMs": 1},
        {"id": "j-c", "name": "Ćron ünïcode", "enabled": true, "createdAtMs": 2},
        {"id": "j-d", "name": "no creation time", "enabled": false},
        {"name": "no id", "enabled": true, "createdAtMs": 5},
        {"id": "j-e", "name": "JOB e", "enabled": true, "createdAtMs": 2},
        {"id": "j-f", "name": "Disabled backup", "enabled": false, "createdAtMs": 9}
    ]})
}

/// PROTOCOL-v4.md §9: `jobs` plus `snapshotRevision`, `total`, `offset`, `limit` (1–200),
/// `hasMore`, `nextOffset` (`null` on the last page; `total` = the jobs that match).
fn check_cron_page(params: &Value) {
    let forwarded = cron_page::node_params(params);
    assert!(forwarded["includeDisabled"].is_boolean(), "{forwarded}");
    assert_eq!(forwarded.as_object().map(Map::len), Some(1));

    let answer = node_jobs().to_string();
    let page = match cron_page::page(params, &answer) {
        Ok(page) => page,
        Err(err) => {
            check_params_error("cron.list", &err);
            return;
        }
    };
    let limit = params.get("limit").and_then(Value::as_u64).unwrap_or(50);
    let offset = params.get("offset").and_then(Value::as_u64).unwrap_or(0);
    assert!((1..=200).contains(&limit), "{params}");
    let query = params
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let only_disabled = params.get("enabled").and_then(Value::as_str) == Some("disabled");
    let total = node_jobs()["jobs"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|job| {
            let text = |k: &str| job[k].as_str().unwrap_or("").to_lowercase();
            query
                .as_deref()
                .is_none_or(|q| text("name").contains(q) || text("id").contains(q))
                && (!only_disabled || job["enabled"] == false)
        })
        .count() as u64;
    let jobs = page["jobs"].as_array().expect("jobs");
    let shown = jobs.len() as u64;
    assert_eq!(page["total"], total, "{params} -> {page}");
    assert_eq!(page["limit"], limit);
    assert_eq!(page["offset"], offset);
    assert_eq!(shown, limit.min(total.saturating_sub(offset)));
    let has_more = offset.saturating_add(shown) < total;
    assert_eq!(page["hasMore"], has_more);
    if has_more {
        assert_eq!(page["nextOffset"], offset + shown);
    } else {
        assert!(page["nextOffset"].is_null());
    }
    if only_disabled {
        assert!(jobs.iter().all(|j| j["enabled"] == false));
    }
    // The revision names the node's list, whatever page of it is asked.
    let revision = page["snapshotRevision"].as_str().expect("a revision");
    assert!(revision.len() == 16 && revision.bytes().all(|b| b.is_ascii_hexdigit()));
    let whole = cron_page::page(&json!({}), &answer).expect("the first page");
    assert_eq!(whole["snapshotRevision"], revision);
}

// ---------------------------------------------------------------------------------------
// `cron.add` / `cron.update` (node-agent scheduler).

#[cfg(not(feature = "node-agent"))]
mod cron {
    pub fn check(_method: &str, _params: &serde_json::Value) {}
}

#[cfg(feature = "node-agent")]
mod cron {
    use std::sync::OnceLock;

    use serde_json::{json, Value};

    use argent_fuzz::{check_error_frame, json_eq};
    use argent_node_agent::error::ServiceError;
    use argent_node_agent::scheduler::jobs::{apply_patch, new_job, CronJob};
    use argent_node_agent::scheduler::schedule::Schedule;
    use argent_proto::errors::{ErrorCode, RpcError};
    use argent_proto::params::Params;

    /// The clock of every call: 2027-01-15T08:00:00Z.
    const NOW: u64 = 1_800_000_000_000;
    const DAY_MS: u64 = 86_400_000;
    const MAIN_KINDS: [&str; 2] = ["systemEvent", "audioAlert"];
    const ISOLATED_KINDS: [&str; 3] = ["agentTurn", "vipEmailScan", "slackSignalScan"];

    /// Stored jobs `cron.update` patches: an `every` job and an `at` job.
    fn stored() -> &'static [CronJob; 2] {
        static JOBS: OnceLock<[CronJob; 2]> = OnceLock::new();
        JOBS.get_or_init(|| {
            let every = json!({"name": "hourly digest",
                "schedule": {"everyMs": 3_600_000, "anchorMs": 0},
                "payload": {"kind": "systemEvent", "text": "digest"}});
            let at = json!({"name": "reminder",
                "schedule": {"at": "2027-01-15T09:00:00.000Z"},
                "payload": {"kind": "agentTurn", "message": "stand-up"}});
            [
                new_job(every, "job-every".into(), NOW).expect("a valid job"),
                new_job(at, "job-at".into(), NOW).expect("a valid job"),
            ]
        })
    }

    pub fn check(method: &str, params: &Value) {
        match method {
            "cron.add" => {
                if let Some(schedule) = params.get("schedule") {
                    check_schedule(schedule);
                }
                match new_job(params.clone(), "fuzz-job".into(), NOW) {
                    Ok(job) => {
                        check_job(&job, "fuzz-job", NOW);
                        let same = apply_patch(&job, &json!({}), NOW).expect("an empty patch");
                        assert!(json_eq(&same.to_value(), &job.to_value()), "{same:?}");
                    }
                    Err(err) => check_refusal("cron.add", err),
                }
            }
            "cron.update" => {
                let Ok(p) = Params::new("cron.update", params.clone())
                    .and_then(|p| p.only(&["id", "jobId", "patch"]))
                else {
                    return;
                };
                let Some(patch) = p.get("patch") else {
                    return;
                };
                if let Some(schedule) = patch.get("schedule") {
                    check_schedule(schedule);
                }
                for job in stored() {
                    match apply_patch(job, patch, NOW) {
                        Ok(updated) => {
                            assert!(
                                patch.get("id").is_none() && patch.get("createdAtMs").is_none()
                            );
                            check_job(&updated, &job.id, job.created_at_ms);
                        }
                        Err(err) => check_refusal("cron.update", err),
                    }
                }
            }
            _ => {}
        }
    }

    /// A refusal is a params error or a rule of §5.5 (`UNAVAILABLE`), never anything else.
    fn check_refusal(method: &str, err: ServiceError) {
        let rule = matches!(err, ServiceError::Refused(_));
        assert!(
            rule || matches!(err, ServiceError::InvalidInput { .. }),
            "{method}: {err:?}"
        );
        let err = RpcError::from(err);
        check_error_frame("r1", &err);
        if rule {
            assert_eq!(err.code, ErrorCode::Unavailable);
        } else {
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err
                .message
                .starts_with(&format!("invalid {method} params: ")));
        }
    }

    /// A schedule that parses fires strictly after the time asked, or never.
    fn check_schedule(schedule: &Value) {
        let Ok(parsed) = Schedule::from_value(schedule, NOW) else {
            return;
        };
        for after in [NOW, NOW + DAY_MS] {
            if let Some(next) = parsed.next_after(after) {
                assert!(next > after, "{schedule}: {next} after {after}");
            }
        }
    }

    /// What a stored job is (PROTOCOL.md §5.5).
    fn check_job(job: &CronJob, id: &str, created_at_ms: u64) {
        assert_eq!(job.id, id);
        assert_eq!(job.created_at_ms, created_at_ms);
        assert_eq!(job.updated_at_ms, NOW);
        assert!(!job.name.trim().is_empty(), "a job without a name: {job:?}");
        let kind = job.payload_kind();
        match job.session_target.as_str() {
            "main" => assert!(MAIN_KINDS.contains(&kind), "{job:?}"),
            "isolated" => assert!(ISOLATED_KINDS.contains(&kind), "{job:?}"),
            other => panic!("session target {other:?}"),
        }
        assert!(
            matches!(job.wake_mode.as_str(), "next-heartbeat" | "now"),
            "{job:?}"
        );
        assert!(
            matches!(
                job.execution_mode.as_deref(),
                None | Some("live" | "paper_trade")
            ),
            "{job:?}"
        );
        let schedule = job.schedule().expect("a stored job's schedule parses");
        let next = job.state.next_run_at_ms;
        match (&schedule, job.enabled) {
            (_, false) => assert_eq!(next, None, "a disabled job is not due"),
            (Schedule::At(at), true) => {
                if job.state.last_status.as_deref() != Some("ok") {
                    assert!(next.is_some_and(|n| n >= *at), "{job:?}");
                }
            }
            (_, true) => {
                assert_eq!(next, schedule.next_after(NOW));
                assert!(next.is_none_or(|n| n > NOW), "due in the past: {job:?}");
            }
        }
        // What is stored reads back as itself.
        let value = job.to_value();
        let back: CronJob = serde_json::from_value(value.clone()).expect("a stored job reads back");
        assert!(json_eq(&back.to_value(), &value), "{value}");
    }
}
