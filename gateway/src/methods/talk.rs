//! `talk.mode` (PROTOCOL.md §4.2): a client switches talk mode; every client of every
//! gateway hears it as the `talk.mode` event (drop-if-slow).

use serde_json::{json, Value};

use argent_proto::errors::RpcError;

use crate::context::Ctx;
use crate::methods::live_nodes;
use crate::ws::session::Session;

/// Whether a node that can talk (a phone or tablet app) is connected anywhere in the
/// cluster.
fn mobile_node_connected(ctx: &Ctx) -> bool {
    live_nodes::connected(ctx).iter().any(|node| {
        let platform = node["platform"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        ["ios", "ipados", "android"]
            .iter()
            .any(|p| platform.starts_with(p))
    })
}

/// Upstream's schema `{enabled: boolean, phase?: string}` without other keys, and its
/// messages (every problem, joined).
fn validate(params: &Value) -> Result<(bool, Option<String>), RpcError> {
    let invalid =
        |problems: Vec<String>| RpcError::invalid_params("talk.mode", &problems.join("; "));
    let Some(map) = params.as_object() else {
        return Err(invalid(vec!["must be object".into()]));
    };
    let mut problems: Vec<String> = map
        .keys()
        .filter(|k| !matches!(k.as_str(), "enabled" | "phase"))
        .map(|k| format!("at root: unexpected property '{k}'"))
        .collect();
    let enabled = match map.get("enabled") {
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            problems.push("at /enabled: must be boolean".into());
            None
        }
        None => {
            problems.push("must have required property 'enabled'".into());
            None
        }
    };
    let phase = match map.get("phase") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push("at /phase: must be string".into());
            None
        }
    };
    match enabled {
        Some(enabled) if problems.is_empty() => Ok((enabled, phase)),
        _ => Err(invalid(problems)),
    }
}

/// `talk.mode {enabled, phase?}` → `{enabled, phase|null, ts}`, also broadcast. A webchat
/// client may switch it only while a mobile node is connected (upstream's rule, checked
/// first).
pub async fn mode(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    if session.client.is_webchat() && !mobile_node_connected(ctx) {
        return Err(RpcError::unavailable(
            "talk disabled: no connected iOS/Android nodes",
        ));
    }
    let (enabled, phase) = validate(&params)?;
    let payload = json!({"enabled": enabled, "phase": phase, "ts": argent_proto::now_ms()});
    ctx.publish("talk.mode", &payload).await;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_as_upstream_checks_them() {
        assert_eq!(
            validate(&json!({"enabled": true, "phase": "listening"})).unwrap(),
            (true, Some("listening".into()))
        );
        assert_eq!(validate(&json!({"enabled": false})).unwrap(), (false, None));
        let err = validate(&json!({"phase": 1, "x": 2})).unwrap_err();
        assert_eq!(
            err.message,
            "invalid talk.mode params: at root: unexpected property 'x'; must have required property 'enabled'; at /phase: must be string"
        );
        let err = validate(&json!({"enabled": "yes"})).unwrap_err();
        assert_eq!(
            err.message,
            "invalid talk.mode params: at /enabled: must be boolean"
        );
    }
}
