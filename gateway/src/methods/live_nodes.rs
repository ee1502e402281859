//! The live nodes (PROTOCOL.md §5.13 "Live nodes"): `node.list`, `node.describe`,
//! `node.invoke` for operators; `node.invoke.result`, `node.event`, `skills.bins` for nodes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::auth::devices::DeviceStore;
use crate::context::Ctx;
use crate::node_invoke::{MAX_SESSION_KEY, MAX_SUBSCRIPTIONS};
use crate::ws::session::Session;

/// Node invokes wait this long unless told otherwise (§6.3).
const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 30_000;

/// The node sessions connected to live gateways, anywhere in the cluster.
pub fn connected(ctx: &Ctx) -> Vec<Value> {
    let gateways = ctx.gateways.clone();
    ctx.presence.nodes(|id| gateways.is_live(id))
}

/// Devices paired with role `node` and connected nodes, connected first, then by name.
async fn all_nodes(ctx: &Ctx) -> Result<Vec<Value>, RpcError> {
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    for device in DeviceStore::new(ctx.state.clone()).devices().await? {
        if device.roles.iter().any(|r| r == "node") {
            let mut row = json!({"nodeId": device.device_id, "caps": [], "commands": [],
                                 "paired": true, "connected": false});
            for (key, value) in [
                ("displayName", &device.display_name),
                ("platform", &device.platform),
                ("remoteIp", &device.remote_ip),
            ] {
                if let Some(v) = value {
                    row[key] = json!(v);
                }
            }
            nodes.insert(device.device_id.clone(), row);
        }
    }
    // Node-agents that joined by pairing serve over gRPC: live in the registry = connected.
    for agent in ctx.nodes.live().into_iter().filter(|n| n.paired) {
        if let Some(row) = nodes.get_mut(&agent.id) {
            row["connected"] = json!(true);
            row["caps"] = json!(agent.capabilities);
            row["address"] = json!(agent.address);
            row["version"] = json!(agent.version);
            row["connectedAtMs"] = json!(agent.started_at_ms);
        }
    }
    for session in connected(ctx) {
        let id = session["nodeId"].as_str().unwrap_or_default().to_string();
        let paired = nodes.contains_key(&id);
        let mut row = session.clone();
        if let Some(map) = row.as_object_mut() {
            map.remove("gatewayId");
            map.remove("connId");
        }
        row["paired"] = json!(paired);
        row["connected"] = json!(true);
        nodes.insert(id, row);
    }
    let mut list: Vec<Value> = nodes.into_values().collect();
    let name = |v: &Value| {
        v["displayName"]
            .as_str()
            .or(v["nodeId"].as_str())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    list.sort_by(|a, b| {
        (b["connected"] == true)
            .cmp(&(a["connected"] == true))
            .then_with(|| name(a).cmp(&name(b)))
    });
    Ok(list)
}

pub async fn list(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("node.list", params)?.only(&[])?;
    Ok(json!({"ts": argent_proto::now_ms(), "nodes": all_nodes(ctx).await?}))
}

pub async fn describe(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("node.describe", params)?.only(&["nodeId"])?;
    let node_id = params.required_str("nodeId")?;
    let mut node = all_nodes(ctx)
        .await?
        .into_iter()
        .find(|n| n["nodeId"] == node_id.as_str())
        .ok_or_else(|| RpcError::bad_params("unknown nodeId"))?;
    node["ts"] = json!(argent_proto::now_ms());
    Ok(node)
}

pub async fn invoke(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let raw_params = params.get("params").cloned();
    let params = Params::new("node.invoke", params)?.only(&[
        "nodeId",
        "command",
        "params",
        "timeoutMs",
        "idempotencyKey",
    ])?;
    let node_id = params.required_str("nodeId")?;
    let command = params.required_str("command")?;
    let idempotency_key = params.required_str("idempotencyKey")?;
    let timeout_ms = params
        .optional_u64("timeoutMs", 0)?
        .unwrap_or(DEFAULT_INVOKE_TIMEOUT_MS);
    let session = connected(ctx)
        .into_iter()
        .find(|n| n["nodeId"] == node_id.as_str())
        .ok_or_else(|| {
            RpcError::unavailable("node not connected").with_detail("code", "NOT_CONNECTED")
        })?;
    let declared = session["commands"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == command.as_str()));
    if !declared {
        return Err(RpcError::bad_params("node command not allowed")
            .with_detail(
                "reason",
                "command not declared by the node or not allowlisted",
            )
            .with_detail("command", command));
    }
    let params_json = raw_params.map(|p| p.to_string());
    ctx.node_invokes
        .invoke(
            &session,
            &command,
            params_json,
            timeout_ms.max(1),
            &idempotency_key,
        )
        .await
}

pub async fn invoke_result(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let result = params.clone();
    let params = Params::new("node.invoke.result", params)?.only(&[
        "id",
        "nodeId",
        "ok",
        "payload",
        "payloadJSON",
        "error",
    ])?;
    params.required_str("id")?;
    params.required_str("nodeId")?;
    if params.optional_bool("ok")?.is_none() {
        return Err(RpcError::invalid_params(
            "node.invoke.result",
            "at root: must have required property 'ok'",
        ));
    }
    let caller = session
        .device_id
        .clone()
        .unwrap_or_else(|| session.client.id.clone());
    if ctx
        .node_invokes
        .complete(&caller, &session.conn_id, &result)
        .await?
    {
        Ok(json!({"ok": true}))
    } else {
        Ok(json!({"ok": true, "ignored": true}))
    }
}

/// `node.event`: `chat.subscribe` / `chat.unsubscribe` keep the node's session
/// subscriptions (it receives that session's `chat` events once the agent runtime produces
/// them); the events that start agent runs arrive with the agent runtime.
pub fn node_event(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let payload = params
        .get("payload")
        .cloned()
        .or_else(|| {
            params
                .get("payloadJSON")
                .and_then(Value::as_str)
                .and_then(|t| serde_json::from_str(t).ok())
        })
        .unwrap_or(Value::Null);
    let params = Params::new("node.event", params)?.only(&["event", "payload", "payloadJSON"])?;
    let event = params.required_str("event")?;
    let session_key = payload["sessionKey"].as_str();
    match (event.as_str(), session_key) {
        ("chat.subscribe", Some(key)) if key.len() > MAX_SESSION_KEY => {
            return Err(RpcError::invalid_params(
                "node.event",
                "payload.sessionKey is too long",
            ))
        }
        ("chat.subscribe", Some(key)) => {
            if !ctx.node_subscriptions.subscribe(&session.conn_id, key) {
                return Err(RpcError::bad_params(format!(
                    "a node may follow at most {MAX_SUBSCRIPTIONS} sessions"
                )));
            }
        }
        ("chat.unsubscribe", Some(key)) => {
            ctx.node_subscriptions.unsubscribe(&session.conn_id, key)
        }
        ("chat.subscribe" | "chat.unsubscribe", None) => {
            return Err(RpcError::invalid_params(
                "node.event",
                "payload.sessionKey is required",
            ))
        }
        (other, _) => {
            return Err(RpcError::unavailable(format!(
                "node event {other} is not supported yet in this Argent cluster release"
            ))
            .with_detail("reason", "not_implemented"))
        }
    }
    Ok(json!({"ok": true}))
}

/// Skill executables nodes may auto-allow: this release installs no skills.
pub fn skills_bins(params: Value) -> Result<Value, RpcError> {
    Params::new("skills.bins", params)?.only(&[])?;
    Ok(json!({"bins": []}))
}
