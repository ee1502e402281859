//! Client presence (PROTOCOL.md §5.10): `system-presence`, the bare array of presence
//! entries, cluster-wide; and `system-event`, with which a client reports itself (its
//! entry is updated and announced) and a line of text for the default agent's next
//! heartbeat.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;
use crate::forward;
use crate::presence::Reported;
use crate::respond;
use crate::ws::session::Session;

/// The list as JSON text, shared until presence changes (`hello-ok`, `presence` events).
pub fn presence_json(ctx: &Ctx) -> Arc<str> {
    ctx.presence
        .list_json(&ctx.gateways.live(), &ctx.health.self_record())
}

pub fn system_presence(ctx: &Ctx, _session: &Session, params: Value) -> Result<Value, RpcError> {
    Params::new("system-presence", params)?.only(&[])?;
    Ok(Value::Array(
        ctx.presence
            .list(&ctx.gateways.live(), &ctx.health.self_record()),
    ))
}

/// Sets each field that has a value.
pub fn set_present<const N: usize>(object: &mut Value, fields: [(&str, &Option<String>); N]) {
    for (key, value) in fields {
        if let Some(value) = value {
            object[key] = json!(value);
        }
    }
}

/// A connection's presence key (device id, else instance id, else connection id) and entry;
/// `user_agent` is the browser's, shown as the entry's text.
pub fn presence_entry(session: &Session, user_agent: Option<&str>) -> (String, Value) {
    let client = &session.client;
    let key = session
        .device_id
        .clone()
        .or_else(|| client.instance_id.clone())
        .unwrap_or_else(|| session.conn_id.clone());
    let mut entry = json!({
        "host": client.display_name.clone().unwrap_or_else(|| client.id.clone()),
        "ip": session.peer.ip().to_string(),
        "version": client.version,
        "platform": client.platform,
        "mode": client.mode,
        "reason": "connect",
        "ts": argent_proto::now_ms(),
        "roles": [session.role.as_str()],
        "scopes": session.scopes,
    });
    set_present(
        &mut entry,
        [
            ("deviceFamily", &client.device_family),
            ("modelIdentifier", &client.model_identifier),
            ("instanceId", &client.instance_id),
            ("deviceId", &session.device_id),
            ("text", &user_agent.map(str::to_string)),
        ],
    );
    (key, entry)
}

/// The string fields a `system-event` may report (upstream reads them as they are).
/// `deviceId` is not one: an entry's device is the one its connection proved, which
/// `device.pair.list` shows as online (a report naming another device must not).
const REPORTED_TEXT: [&str; 9] = [
    "instanceId",
    "host",
    "ip",
    "mode",
    "version",
    "platform",
    "deviceFamily",
    "modelIdentifier",
    "reason",
];

/// Longest `text` of a report (it is stored in presence, sent in every `hello-ok` and
/// `presence` event, and queued for the agent).
const MAX_REPORT_TEXT: usize = 4096;
/// Longest other field of a report, and most `roles` / `scopes`.
const MAX_REPORT_FIELD: usize = 256;
const MAX_REPORT_LIST: usize = 32;

/// Refuses a report whose fields are larger than any real client sends (what is kept of
/// it reaches every client of the cluster).
fn check_sizes(params: &Value, text: &str) -> Result<(), RpcError> {
    if text.len() > MAX_REPORT_TEXT {
        return Err(RpcError::bad_params(format!(
            "text too long ({} bytes, max {MAX_REPORT_TEXT})",
            text.len()
        )));
    }
    for field in REPORTED_TEXT {
        if params
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|v| v.len() > MAX_REPORT_FIELD)
        {
            return Err(RpcError::bad_params(format!(
                "{field} too long (max {MAX_REPORT_FIELD} bytes)"
            )));
        }
    }
    for field in ["roles", "scopes"] {
        if let Some(list) = string_list(params.get(field)) {
            if list.len() > MAX_REPORT_LIST || list.iter().any(|s| s.len() > MAX_REPORT_FIELD) {
                return Err(RpcError::bad_params(format!(
                    "{field}: at most {MAX_REPORT_LIST} entries of {MAX_REPORT_FIELD} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// Merges a report into an entry (upstream's rules: a field given wins, roles and scopes
/// add up, the text is the event's); returns the instance id it names, if any (the
/// entry's key when the connection proved no device).
fn merge_report(params: &Value, text: &str, entry: &mut Value) -> Option<String> {
    let map = entry.as_object_mut()?;
    for field in REPORTED_TEXT {
        if let Some(value) = params.get(field).and_then(Value::as_str) {
            map.insert(field.to_string(), json!(value));
        }
    }
    // A number as the client wrote it (`12` stays `12`).
    if let Some(seconds) = params
        .get("lastInputSeconds")
        .filter(|v| v.as_f64().is_some_and(f64::is_finite))
    {
        map.insert("lastInputSeconds".into(), seconds.clone());
    }
    for field in ["roles", "scopes"] {
        let Some(added) = string_list(params.get(field)) else {
            continue;
        };
        let mut all = string_list(map.get(field)).unwrap_or_default();
        for item in added {
            if !all.contains(&item) {
                all.push(item);
            }
        }
        map.insert(field.into(), json!(all));
    }
    map.insert("text".into(), json!(text));
    map.insert("ts".into(), json!(argent_proto::now_ms()));
    params
        .get("instanceId")
        .and_then(Value::as_str)
        .map(|id| id.trim().to_lowercase())
        .filter(|id| !id.is_empty())
}

/// An array of strings, trimmed (anything else: not given).
fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    let items = value?.as_array()?;
    items
        .iter()
        .map(|item| item.as_str().map(|s| s.trim().to_string()))
        .collect::<Option<Vec<String>>>()
        .map(|list| list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// What the default agent is told. Ordinary text as it is; a node's status line
/// (`Node: …`) only when something an agent cares about changed, as the node and the
/// changes (upstream names the node only when the previous event was about another one;
/// here always, so every line says which node it is about). Periodic and heartbeat
/// reasons are not news.
fn queued_text(text: &str, reported: &Reported) -> Option<String> {
    if !text.starts_with("Node:") {
        return Some(text.to_string());
    }
    let entry = &reported.entry;
    let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::trim);
    let changed = |name: &str| reported.changed.contains(&name);
    let reason = field("reason").unwrap_or_default();
    let lowered = reason.to_lowercase();
    let routine = lowered.starts_with("periodic") || lowered == "heartbeat";
    let mut changes = Vec::new();
    if changed("version") {
        changes.push(format!("app {}", field("version").unwrap_or("unknown")));
    }
    if changed("mode") {
        changes.push(format!("mode {}", field("mode").unwrap_or("unknown")));
    }
    if changed("reason") && !routine {
        changes.push(format!(
            "reason {}",
            Some(reason).filter(|r| !r.is_empty()).unwrap_or("event")
        ));
    }
    if changes.is_empty() && !changed("host") && !changed("ip") {
        return None;
    }
    let host = field("host").filter(|h| !h.is_empty()).unwrap_or("Unknown");
    let node = match field("ip").filter(|ip| !ip.is_empty()) {
        Some(ip) => format!("Node: {host} ({ip})"),
        None => format!("Node: {host}"),
    };
    Some(
        std::iter::once(node)
            .chain(changes)
            .collect::<Vec<_>>()
            .join(" · "),
    )
}

/// `system-event {text, deviceId?, instanceId?, host?, ip?, mode?, version?, platform?,
/// deviceFamily?, modelIdentifier?, lastInputSeconds?, reason?, roles?, scopes?, tags?}`:
/// the caller's presence entry updated and announced on every gateway, then the text
/// queued for the default agent's heartbeat (through `wake`, the queue cron's
/// `systemEvent` jobs use) → `{ok: true}`.
pub async fn system_event(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let params = match params {
        Value::Object(map) => Value::Object(map),
        _ => Value::Object(Map::new()),
    };
    let text = params
        .get("text")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if text.is_empty() {
        return Err(RpcError::bad_params("text required"));
    }
    check_sizes(&params, &text)?;
    let reported = ctx
        .presence
        .report(
            &session.conn_id,
            &session.closed,
            || presence_entry(session, None),
            |entry| {
                let named = merge_report(&params, &text, entry);
                session.device_id.clone().or(named)
            },
        )
        .await
        .map_err(respond::state)?;
    if let Some(queued) = queued_text(&text, &reported) {
        // No routing key: any node with the agent runtime queues it (the queue is shared).
        let routing = uuid::Uuid::new_v4().to_string();
        forward::call_method(
            ctx,
            session,
            &routing,
            "wake",
            json!({"mode": "next-heartbeat", "text": queued}),
        )
        .await?;
    }
    Ok(json!({ "ok": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(changed: Vec<&'static str>, entry: Value) -> Reported {
        Reported { changed, entry }
    }

    #[test]
    fn a_report_merges_into_the_entry() {
        let mut entry =
            json!({"host": "old", "roles": ["operator"], "mode": "ui", "deviceId": "proven"});
        let params = json!({"host": "mac", "roles": ["node", "operator"], "lastInputSeconds": 3,
                            "instanceId": " Inst-1 ", "tags": ["x"], "mode": 7, "deviceId": "other"});
        let key = merge_report(&params, "hello", &mut entry);
        assert_eq!(key.as_deref(), Some("inst-1"));
        assert_eq!(entry["host"], "mac");
        assert_eq!(entry["roles"], json!(["operator", "node"]));
        assert_eq!(entry["lastInputSeconds"], json!(3));
        assert_eq!(entry["text"], "hello");
        // A wrong type is ignored, as upstream ignores it; `tags` is not stored; the proven
        // device stays.
        assert_eq!(entry["mode"], "ui");
        assert!(entry.get("tags").is_none());
        assert_eq!(entry["deviceId"], "proven");
    }

    #[test]
    fn reports_larger_than_any_client_sends_are_refused() {
        assert!(check_sizes(&json!({"host": "mac", "roles": ["node"]}), "hello").is_ok());
        let err = check_sizes(&json!({"host": "h".repeat(300)}), "x").unwrap_err();
        assert_eq!(err.message, "host too long (max 256 bytes)");
        let err = check_sizes(&json!({}), &"t".repeat(5000)).unwrap_err();
        assert_eq!(err.message, "text too long (5000 bytes, max 4096)");
        let many: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
        assert!(check_sizes(&json!({"roles": many}), "x").is_err());
    }

    #[test]
    fn node_lines_queue_only_their_changes_and_name_the_node() {
        let entry =
            json!({"host": "mac", "ip": "10.0.0.2", "version": "1.2", "reason": "periodic"});
        let queued = |text: &str, changed: Vec<&'static str>, entry: &Value| {
            queued_text(text, &reported(changed, entry.clone()))
        };
        assert_eq!(queued("hi", vec![], &entry).as_deref(), Some("hi"));
        assert_eq!(queued("Node: mac", vec![], &entry), None);
        assert_eq!(queued("Node: mac", vec!["reason"], &entry), None);
        let beat = json!({"host": "mac", "reason": "Heartbeat"});
        assert_eq!(queued("Node: mac", vec!["reason"], &beat), None);
        assert_eq!(
            queued("Node: mac", vec!["ip", "version"], &entry).as_deref(),
            Some("Node: mac (10.0.0.2) · app 1.2")
        );
        assert_eq!(
            queued("Node: mac", vec!["version"], &entry).as_deref(),
            Some("Node: mac (10.0.0.2) · app 1.2")
        );
        assert_eq!(
            queued("Node: mac", vec!["ip"], &entry).as_deref(),
            Some("Node: mac (10.0.0.2)")
        );
    }
}
