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
const REPORTED_TEXT: [&str; 10] = [
    "deviceId",
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

/// Merges a report into an entry (upstream's rules: a field given wins, roles and scopes
/// add up, the text is the event's); returns the presence key the report names, if any.
fn merge_report(params: &Value, text: &str, entry: &mut Value) -> Option<String> {
    let map = entry.as_object_mut()?;
    for field in REPORTED_TEXT {
        if let Some(value) = params.get(field).and_then(Value::as_str) {
            map.insert(field.to_string(), json!(value));
        }
    }
    if let Some(seconds) = params.get("lastInputSeconds").and_then(Value::as_f64) {
        map.insert("lastInputSeconds".into(), json!(seconds));
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
    ["deviceId", "instanceId"]
        .into_iter()
        .filter_map(|field| params.get(field).and_then(Value::as_str))
        .map(|id| id.trim().to_lowercase())
        .find(|id| !id.is_empty())
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
/// (`Node: …`) only when something an agent cares about changed, as only the changes
/// (upstream's rule: periodic and heartbeat reasons are not news).
fn queued_text(text: &str, reported: &Reported) -> Option<String> {
    if !text.starts_with("Node:") {
        return Some(text.to_string());
    }
    let entry = &reported.entry;
    let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::trim);
    let changed = |name: &str| reported.changed.contains(&name);
    let reason = field("reason").unwrap_or_default();
    let routine = reason.to_lowercase().starts_with("periodic") || reason == "heartbeat";
    let mut parts = Vec::new();
    if changed("host") || changed("ip") {
        let host = field("host").filter(|h| !h.is_empty()).unwrap_or("Unknown");
        parts.push(match field("ip").filter(|ip| !ip.is_empty()) {
            Some(ip) => format!("Node: {host} ({ip})"),
            None => format!("Node: {host}"),
        });
    }
    if changed("version") {
        parts.push(format!("app {}", field("version").unwrap_or("unknown")));
    }
    if changed("mode") {
        parts.push(format!("mode {}", field("mode").unwrap_or("unknown")));
    }
    if changed("reason") && !routine {
        parts.push(format!(
            "reason {}",
            Some(reason).filter(|r| !r.is_empty()).unwrap_or("event")
        ));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
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
    let reported = ctx
        .presence
        .report(
            &session.conn_id,
            || presence_entry(session, None),
            |entry| merge_report(&params, &text, entry),
        )
        .await
        .map_err(respond::state)?;
    if let Some(queued) = queued_text(&text, &reported) {
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
        let mut entry = json!({"host": "old", "roles": ["operator"], "mode": "ui"});
        let params = json!({"host": "mac", "roles": ["node", "operator"], "lastInputSeconds": 3,
                            "instanceId": " Inst-1 ", "tags": ["x"], "mode": 7});
        let key = merge_report(&params, "hello", &mut entry);
        assert_eq!(key.as_deref(), Some("inst-1"));
        assert_eq!(entry["host"], "mac");
        assert_eq!(entry["roles"], json!(["operator", "node"]));
        assert_eq!(entry["lastInputSeconds"], json!(3.0));
        assert_eq!(entry["text"], "hello");
        // A wrong type is ignored, as upstream ignores it; `tags` is not stored.
        assert_eq!(entry["mode"], "ui");
        assert!(entry.get("tags").is_none());
    }

    #[test]
    fn node_lines_queue_only_their_changes() {
        let entry =
            json!({"host": "mac", "ip": "10.0.0.2", "version": "1.2", "reason": "periodic"});
        assert_eq!(
            queued_text("hi", &reported(vec![], entry.clone())).as_deref(),
            Some("hi")
        );
        assert_eq!(
            queued_text("Node: mac", &reported(vec![], entry.clone())),
            None
        );
        assert_eq!(
            queued_text("Node: mac", &reported(vec!["reason"], entry.clone())),
            None
        );
        assert_eq!(
            queued_text("Node: mac", &reported(vec!["ip", "version"], entry)).as_deref(),
            Some("Node: mac (10.0.0.2) · app 1.2")
        );
    }
}
