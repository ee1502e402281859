//! `node.invoke` across gateways (PROTOCOL.md §6.3). The operator's gateway (the requester)
//! keeps the pending call; the gateway holding the node's socket (the owner) sends it
//! `node.invoke.request` and relays its `node.invoke.result`. Both hops are control
//! messages on the event bus, addressed by gateway id and routed by invoke id.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use argent_proto::errors::RpcError;
use argent_proto::frames::EncodedEvent;
use argent_proto::subjects::{CONTROL_NODE_INVOKE, CONTROL_NODE_RESULT};

use argent_planes::bus::{BusEvent, EventBus};

use crate::hub::Hub;

/// What the owner remembers of an invoke it handed to a node.
struct Owned {
    reply_to: String,
    conn_id: String,
    node_id: String,
    command: String,
}

/// The chat sessions each node connection subscribed to (`node.event chat.subscribe`).
#[derive(Default)]
pub struct NodeSubscriptions {
    by_conn: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

/// Sessions one node connection may follow, and the longest session key accepted.
pub const MAX_SUBSCRIPTIONS: usize = 256;
pub const MAX_SESSION_KEY: usize = 512;

impl NodeSubscriptions {
    /// `false` when the connection already follows [`MAX_SUBSCRIPTIONS`] sessions.
    pub fn subscribe(&self, conn_id: &str, session_key: &str) -> bool {
        let mut by_conn = self.by_conn.lock();
        let keys = by_conn.entry(conn_id.to_string()).or_default();
        if keys.len() >= MAX_SUBSCRIPTIONS && !keys.contains(session_key) {
            return false;
        }
        keys.insert(session_key.to_string());
        true
    }

    pub fn unsubscribe(&self, conn_id: &str, session_key: &str) {
        if let Some(keys) = self.by_conn.lock().get_mut(conn_id) {
            keys.remove(session_key);
        }
    }

    /// The node connections subscribed to a session.
    pub fn subscribers(&self, session_key: &str) -> Vec<String> {
        self.by_conn
            .lock()
            .iter()
            .filter(|(_, keys)| keys.contains(session_key))
            .map(|(conn, _)| conn.clone())
            .collect()
    }

    pub fn forget(&self, conn_id: &str) {
        self.by_conn.lock().remove(conn_id);
    }
}

pub struct NodeInvokes {
    gateway_id: String,
    /// Both hops are control messages on the bus.
    bus: Arc<dyn EventBus>,
    /// Where the owner finds the node's socket.
    hub: Arc<Hub>,
    /// Requester side: invoke id → the waiting `node.invoke`.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Owner side: invoke id → where the result goes.
    owned: Mutex<HashMap<String, Owned>>,
}

impl NodeInvokes {
    pub fn new(gateway_id: String, bus: Arc<dyn EventBus>, hub: Arc<Hub>) -> Self {
        NodeInvokes {
            gateway_id,
            bus,
            hub,
            waiting: Mutex::default(),
            owned: Mutex::default(),
        }
    }

    async fn publish(&self, subject: &str, body: &Value) {
        publish(&self.bus, subject, body).await
    }

    /// Requester: sends the invoke towards the node's gateway and waits for the outcome.
    pub async fn invoke(
        &self,
        session: &Value,
        command: &str,
        params_json: Option<String>,
        timeout_ms: u64,
        idempotency_key: &str,
    ) -> Result<Value, RpcError> {
        let invoke_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(invoke_id.clone(), tx);
        let node_id = session["nodeId"].as_str().unwrap_or_default();
        let request = json!({
            "invokeId": invoke_id, "replyTo": self.gateway_id,
            "gatewayId": session["gatewayId"], "connId": session["connId"],
            "nodeId": node_id, "command": command, "paramsJSON": params_json,
            "timeoutMs": timeout_ms, "idempotencyKey": idempotency_key,
        });
        self.publish(CONTROL_NODE_INVOKE, &request).await;
        let outcome = tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), rx).await;
        self.waiting.lock().remove(&invoke_id);
        let result = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => {
                json!({"ok": false, "error": {"code": "TIMEOUT", "message": "node invoke timed out"}})
            }
        };
        if result["ok"] == true {
            let payload_json = result["payloadJSON"].as_str().map(str::to_string);
            let payload = match (&result["payload"], &payload_json) {
                (Value::Null, Some(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
                (payload, _) => payload.clone(),
            };
            return Ok(json!({"ok": true, "nodeId": node_id, "command": command,
                             "payload": payload, "payloadJSON": payload_json}));
        }
        let error = &result["error"];
        let message = error["message"].as_str().unwrap_or("node invoke failed");
        Err(RpcError::unavailable(message.to_string()).with_detail(
            "nodeError",
            json!({"code": error["code"].as_str().unwrap_or("UNAVAILABLE"), "message": message}),
        ))
    }

    /// Owner: a control message asked this gateway to hand an invoke to one of its nodes.
    pub fn deliver_request(self: &Arc<Self>, request: &Value) {
        let conn_id = request["connId"].as_str().unwrap_or_default();
        let invoke_id = request["invokeId"].as_str().unwrap_or_default().to_string();
        let event = Arc::new(EncodedEvent::from_value(
            "node.invoke.request",
            &json!({"id": invoke_id, "nodeId": request["nodeId"], "command": request["command"],
                    "paramsJSON": request["paramsJSON"], "timeoutMs": request["timeoutMs"],
                    "idempotencyKey": request["idempotencyKey"]}),
            None,
        ));
        self.owned.lock().insert(
            invoke_id.clone(),
            Owned {
                reply_to: request["replyTo"].as_str().unwrap_or_default().to_string(),
                conn_id: conn_id.to_string(),
                node_id: request["nodeId"].as_str().unwrap_or_default().to_string(),
                command: request["command"].as_str().unwrap_or_default().to_string(),
            },
        );
        if !self.hub.send_to(conn_id, &event) {
            self.fail(&invoke_id, "NOT_CONNECTED", "node not connected");
            return;
        }
        // The caller stops waiting after its timeout; the entry goes a little later, so a
        // node that never answers does not hold memory for the life of its connection.
        let timeout_ms = request["timeoutMs"].as_u64().unwrap_or(30_000);
        let invokes = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(timeout_ms + 5_000)).await;
            if let Some(invokes) = invokes.upgrade() {
                invokes.owned.lock().remove(&invoke_id);
            }
        });
    }

    /// Owner: the node answered (`node.invoke.result`). `false` for unknown or late ids —
    /// and for ids handed to another connection: only the socket that got the request may
    /// answer it.
    pub async fn complete(
        &self,
        caller_node: &str,
        caller_conn: &str,
        result: &Value,
    ) -> Result<bool, RpcError> {
        let invoke_id = result["id"].as_str().unwrap_or_default();
        if result["nodeId"].as_str() != Some(caller_node) {
            return Err(RpcError::bad_params("nodeId mismatch"));
        }
        let owned = {
            let mut owned = self.owned.lock();
            match owned.get(invoke_id) {
                Some(o) if o.conn_id == caller_conn => owned.remove(invoke_id),
                _ => None,
            }
        };
        let Some(owned) = owned else {
            return Ok(false);
        };
        let mut relay = json!({"invokeId": invoke_id, "replyTo": owned.reply_to,
                               "ok": result["ok"] == true, "nodeId": owned.node_id});
        for key in ["payload", "payloadJSON", "error"] {
            if let Some(v) = result.get(key) {
                relay[key] = v.clone();
            }
        }
        self.publish(CONTROL_NODE_RESULT, &relay).await;
        Ok(true)
    }

    /// Requester: a result for one of our waiting invokes arrived.
    pub fn deliver_result(&self, result: &Value) {
        let invoke_id = result["invokeId"].as_str().unwrap_or_default();
        if let Some(tx) = self.waiting.lock().remove(invoke_id) {
            let _ = tx.send(result.clone());
        }
    }

    /// Owner: fails one owned invoke (node gone).
    fn fail(&self, invoke_id: &str, code: &str, message: &str) {
        let Some(owned) = self.owned.lock().remove(invoke_id) else {
            return;
        };
        let relay = json!({"invokeId": invoke_id, "replyTo": owned.reply_to, "ok": false,
                           "nodeId": owned.node_id, "error": {"code": code, "message": message}});
        let bus = self.bus.clone();
        tokio::spawn(async move { publish(&bus, CONTROL_NODE_RESULT, &relay).await });
    }

    /// Owner: a node connection closed; its pending invokes fail at once.
    pub fn node_disconnected(&self, conn_id: &str) {
        let ids: Vec<(String, String)> = self
            .owned
            .lock()
            .iter()
            .filter(|(_, o)| o.conn_id == conn_id)
            .map(|(id, o)| (id.clone(), o.command.clone()))
            .collect();
        for (id, command) in ids {
            self.fail(
                &id,
                "NOT_CONNECTED",
                &format!("node disconnected ({command})"),
            );
        }
    }
}

/// Publishes a control message; a failure is logged (the waiting side times out).
async fn publish(bus: &Arc<dyn EventBus>, subject: &str, body: &Value) {
    if let Err(err) = bus.publish(BusEvent::new(subject, body)).await {
        tracing::warn!(subject, %err, "node invoke control message not published");
    }
}
