//! The legacy node pairing store (PROTOCOL.md §5.13 `node.pair.*`, `node.rename`): used by
//! the macOS app, the CLI and the agent's nodes tool. It does not gate the WebSocket
//! handshake (nodes pair through device pairing with role `node`). Tokens are stored as
//! hashes and returned once, by `node.pair.approve`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::auth::devices::{hash_token, new_token, DeviceStore, PENDING_TTL_MS};
use crate::auth::secrets_equal;
use crate::context::Ctx;

/// What a node tells about itself (request and paired record share it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePairRequest {
    pub request_id: String,
    pub node_id: String,
    #[serde(flatten)]
    pub info: NodeInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent: Option<bool>,
    pub is_repair: bool,
    pub ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PairedNode {
    node_id: String,
    token_hash: String,
    #[serde(flatten)]
    info: NodeInfo,
    created_at_ms: u64,
    approved_at_ms: u64,
}

impl PairedNode {
    /// The record as clients see it: never the token (nor its hash).
    fn public(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("records serialize");
        if let Some(map) = value.as_object_mut() {
            map.remove("tokenHash");
        }
        value
    }
}

/// Node ids are free text: keys use their hash.
fn node_key(node_id: &str) -> String {
    format!(
        "node.{}",
        &hex::encode(Sha256::digest(node_id.as_bytes()))[..32]
    )
}

fn request_key(request_id: &str) -> String {
    format!("nodereq.{request_id}")
}

const INFO_KEYS: [&str; 10] = [
    "displayName",
    "platform",
    "version",
    "coreVersion",
    "uiVersion",
    "deviceFamily",
    "modelIdentifier",
    "caps",
    "commands",
    "remoteIp",
];

fn read_info(params: &Params<'_>) -> Result<NodeInfo, RpcError> {
    Ok(NodeInfo {
        display_name: params.optional_str("displayName")?,
        platform: params.optional_str("platform")?,
        version: params.optional_str("version")?,
        core_version: params.optional_str("coreVersion")?,
        ui_version: params.optional_str("uiVersion")?,
        device_family: params.optional_str("deviceFamily")?,
        model_identifier: params.optional_str("modelIdentifier")?,
        caps: params.optional_str_list("caps")?,
        commands: params.optional_str_list("commands")?,
        remote_ip: params.optional_str("remoteIp")?,
    })
}

async fn live_requests(store: &DeviceStore) -> Result<Vec<NodePairRequest>, RpcError> {
    let now = argent_proto::now_ms();
    let mut live = Vec::new();
    for request in store.list::<NodePairRequest>("nodereq.").await? {
        if now.saturating_sub(request.ts) > PENDING_TTL_MS {
            store.remove(&request_key(&request.request_id)).await?;
        } else {
            live.push(request);
        }
    }
    live.sort_by_key(|r| r.ts);
    Ok(live)
}

async fn request_by_id(store: &DeviceStore, request_id: &str) -> Result<NodePairRequest, RpcError> {
    live_requests(store)
        .await?
        .into_iter()
        .find(|r| r.request_id == request_id)
        .ok_or_else(|| RpcError::bad_params("unknown requestId"))
}

async fn resolved(ctx: &Ctx, request: &NodePairRequest, decision: &str) {
    let payload = json!({"requestId": request.request_id, "nodeId": request.node_id,
                         "decision": decision, "ts": argent_proto::now_ms()});
    ctx.publish("node.pair.resolved", &payload).await;
}

pub async fn pair_request(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let mut allowed = vec!["nodeId", "silent"];
    allowed.extend(INFO_KEYS);
    let params = Params::new("node.pair.request", params)?.only(&allowed)?;
    let node_id = params.required_str("nodeId")?;
    let store = DeviceStore::new(ctx.state.clone());
    if let Some(existing) = live_requests(&store)
        .await?
        .into_iter()
        .find(|r| r.node_id == node_id)
    {
        return Ok(json!({"status": "pending", "request": existing, "created": false}));
    }
    let request = NodePairRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        is_repair: store
            .read::<PairedNode>(&node_key(&node_id))
            .await?
            .is_some(),
        node_id,
        info: read_info(&params)?,
        silent: params.optional_bool("silent")?,
        ts: argent_proto::now_ms(),
    };
    store
        .put(&request_key(&request.request_id), &request)
        .await?;
    let payload = serde_json::to_value(&request).expect("requests serialize");
    ctx.publish("node.pair.requested", &payload).await;
    Ok(json!({"status": "pending", "request": request, "created": true}))
}

pub async fn pair_list(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("node.pair.list", params)?.only(&[])?;
    let store = DeviceStore::new(ctx.state.clone());
    let pending = live_requests(&store).await?;
    let paired: Vec<Value> = store
        .list::<PairedNode>("node.")
        .await?
        .iter()
        .map(PairedNode::public)
        .collect();
    Ok(json!({"pending": pending, "paired": paired}))
}

pub async fn pair_approve(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("node.pair.approve", params)?.only(&["requestId"])?;
    let request_id = params.required_id("requestId")?;
    let store = DeviceStore::new(ctx.state.clone());
    let request = request_by_id(&store, &request_id).await?;
    let now = argent_proto::now_ms();
    let key = node_key(&request.node_id);
    let created_at_ms = store
        .read::<PairedNode>(&key)
        .await?
        .map_or(now, |(node, _)| node.created_at_ms);
    // A fresh token on every approval, shown this once.
    let token = new_token();
    let node = PairedNode {
        node_id: request.node_id.clone(),
        token_hash: hash_token(&token),
        info: request.info.clone(),
        created_at_ms,
        approved_at_ms: now,
    };
    store.put(&key, &node).await?;
    store.remove(&request_key(&request_id)).await?;
    resolved(ctx, &request, "approved").await;
    let mut shown = node.public();
    shown["token"] = json!(token);
    Ok(json!({"requestId": request_id, "node": shown}))
}

pub async fn pair_reject(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("node.pair.reject", params)?.only(&["requestId"])?;
    let request_id = params.required_id("requestId")?;
    let store = DeviceStore::new(ctx.state.clone());
    let request = request_by_id(&store, &request_id).await?;
    store.remove(&request_key(&request_id)).await?;
    resolved(ctx, &request, "rejected").await;
    Ok(json!({"requestId": request_id, "nodeId": request.node_id}))
}

pub async fn pair_verify(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("node.pair.verify", params)?.only(&["nodeId", "token"])?;
    let node_id = params.required_str("nodeId")?;
    let token = params.required_str("token")?;
    let store = DeviceStore::new(ctx.state.clone());
    match store.read::<PairedNode>(&node_key(&node_id)).await? {
        Some((node, _)) if secrets_equal(&node.token_hash, &hash_token(&token)) => {
            Ok(json!({"ok": true, "node": node.public()}))
        }
        _ => Ok(json!({"ok": false})),
    }
}

pub async fn rename(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("node.rename", params)?.only(&["nodeId", "displayName"])?;
    let node_id = params.required_str("nodeId")?;
    let display_name = params.required_str("displayName")?;
    let store = DeviceStore::new(ctx.state.clone());
    let key = node_key(&node_id);
    let (mut node, _) = store
        .read::<PairedNode>(&key)
        .await?
        .ok_or_else(|| RpcError::bad_params("unknown nodeId"))?;
    node.info.display_name = Some(display_name.clone());
    store.put(&key, &node).await?;
    Ok(json!({"nodeId": node_id, "displayName": display_name}))
}
