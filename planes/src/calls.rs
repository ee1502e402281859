//! The call plane: invoking a protocol method on a node-agent.
//!
//! A node-agent implements [`MethodHandler`]. The gateway reaches it through
//! [`NodeClients`]: directly for the embedded node (`inproc://` address), or over gRPC with
//! one pooled HTTP/2 channel per node, authenticated with the cluster credential.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use argent_proto::errors::RpcError;
use argent_proto::grpc::{
    invoke_reply, node_agent_client::NodeAgentClient, Caller, InvokeReply, InvokeRequest,
};
use argent_proto::limits::MAX_GRPC_MESSAGE;

use crate::members::NodeRecord;

/// Address scheme of the node-agent embedded in a gateway process.
pub const INPROC_SCHEME: &str = "inproc://";

/// What a node-agent executes.
#[async_trait]
pub trait MethodHandler: Send + Sync {
    async fn invoke(&self, method: &str, params: Value, caller: &Caller)
        -> Result<Value, RpcError>;
}

/// One forwarded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub caller: Caller,
    pub timeout: Duration,
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node answered with a protocol error: pass it to the client as is.
    #[error(transparent)]
    Rpc(RpcError),
    /// The node could not be reached or broke the connection: another node may do.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// No connection to the node could be opened, so the call was never sent: any call,
    /// idempotent or not, may go to another node.
    #[error("node not connectable: {0}")]
    NotConnected(String),
    /// No answer within the deadline; the node may still be executing the call.
    #[error("node did not answer within {0:?}")]
    Timeout(Duration),
}

/// Invokes methods on nodes by their registry record. The answer is the payload as JSON
/// text, so the gateway can pass it to the client without parsing and re-encoding it.
#[async_trait]
pub trait NodeClient: Send + Sync {
    async fn invoke(&self, node: &NodeRecord, call: &Call) -> Result<String, CallError>;
}

/// Converts a handler result into the gRPC reply.
pub fn reply_from_result(result: Result<Value, RpcError>) -> InvokeReply {
    let outcome = match result {
        Ok(payload) => invoke_reply::Outcome::PayloadJson(payload.to_string()),
        Err(err) => invoke_reply::Outcome::Error(argent_proto::grpc::RpcError {
            code: err.code.as_str().to_string(),
            message: err.message.clone(),
            details_json: Value::Object(err.details.clone()).to_string(),
            retryable: err.retryable.unwrap_or(false),
            retry_after_ms: err.retry_after_ms.unwrap_or(0),
        }),
    };
    InvokeReply {
        outcome: Some(outcome),
    }
}

/// Converts a gRPC reply back into the handler result: the payload as (checked) JSON text.
pub fn result_from_reply(reply: InvokeReply) -> Result<String, RpcError> {
    match reply.outcome {
        Some(invoke_reply::Outcome::PayloadJson(json)) => {
            // Checked without building a tree: a broken node must not break a client's frame.
            serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| {
                RpcError::unavailable(format!("node sent an unreadable payload: {e}"))
            })?;
            Ok(json)
        }
        Some(invoke_reply::Outcome::Error(e)) => {
            let details = serde_json::from_str::<Value>(&e.details_json)
                .ok()
                .and_then(|v| match v {
                    Value::Object(map) => Some(map),
                    _ => None,
                });
            Err(RpcError::from_parts(
                &e.code,
                e.message,
                details,
                e.retryable.then_some(true),
                (e.retry_after_ms > 0).then_some(e.retry_after_ms),
            ))
        }
        None => Err(RpcError::unavailable("node sent an empty reply")),
    }
}

/// Bearer credential for node-agent calls.
pub fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

/// The credential gateways present to a node-agent that joined by pairing:
/// HMAC-SHA256(cluster secret, node id), hex. Gateways (which hold the cluster secret) can
/// compute it for any node; the node receives its own once it is paired, and learns nothing
/// about the cluster secret or other nodes' credentials from it.
pub fn node_call_secret(cluster_secret: &str, node_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(cluster_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"argent-node-call:");
    mac.update(node_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// HTTP/2 pings to a node-agent while calls are open, and how long an answer may take:
/// together within the 3 s after which the registry declares a silent node dead.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's way to every node: in process or gRPC.
pub struct NodeClients {
    local: Option<Arc<dyn MethodHandler>>,
    cluster_secret: String,
    channels: Mutex<HashMap<String, NodeAgentClient<Channel>>>,
}

impl NodeClients {
    pub fn new(local: Option<Arc<dyn MethodHandler>>, cluster_secret: String) -> Self {
        NodeClients {
            local,
            cluster_secret,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// What this gateway presents to `node`: its derived credential, never the cluster
    /// secret itself (a registry record is no proof that the address is a trusted node).
    fn authorization_for(
        &self,
        node: &NodeRecord,
    ) -> Option<MetadataValue<tonic::metadata::Ascii>> {
        MetadataValue::try_from(bearer(&node_call_secret(&self.cluster_secret, &node.id))).ok()
    }

    fn client(&self, address: &str) -> Result<NodeAgentClient<Channel>, CallError> {
        if let Some(client) = self.channels.lock().get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| CallError::Unreachable(format!("bad node address {address}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            // A node that stops answering mid-call (hung, or its host gone) fails the calls
            // in flight within the registry's liveness bound (3 s), so idempotent ones move
            // to another node instead of waiting for the call's deadline. Pings are sent
            // only while calls are open.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let client = NodeAgentClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        self.channels
            .lock()
            .insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets the pooled channel of a node that failed, so the next call reconnects.
    pub fn forget(&self, address: &str) {
        self.channels.lock().remove(address);
    }

    async fn invoke_grpc(&self, node: &NodeRecord, call: &Call) -> Result<String, CallError> {
        let mut client = self.client(&node.address)?;
        let deadline_ms = argent_proto::now_ms() + call.timeout.as_millis() as u64;
        let mut request = tonic::Request::new(InvokeRequest {
            method: call.method.clone(),
            params_json: call.params.to_string(),
            caller: Some(call.caller.clone()),
            deadline_unix_ms: deadline_ms,
            request_id: call.request_id.clone(),
            timeout_ms: call.timeout.as_millis() as u64,
        });
        request.set_timeout(call.timeout);
        let metadata = request.metadata_mut();
        if let Some(value) = self.authorization_for(node) {
            metadata.insert("authorization", value);
        }
        for (key, value) in crate::trace::current_context_headers() {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value),
            ) {
                metadata.insert(k, v);
            }
        }
        match client.invoke(request).await {
            Ok(reply) => result_from_reply(reply.into_inner()).map_err(CallError::Rpc),
            Err(status) => Err(status_to_error(status, call.timeout)),
        }
    }
}

/// The connection could not be opened at all (refused, unreachable, or the connect timed
/// out): the request was never written, whatever the method.
fn never_connected(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            );
        }
        if err.to_string().contains("connect timed out") {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Classifies a gRPC failure: transport-level failures mean "try another node".
fn status_to_error(status: tonic::Status, timeout: Duration) -> CallError {
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded => CallError::Timeout(timeout),
        Code::Unavailable if never_connected(&status) => {
            CallError::NotConnected(status.message().to_string())
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled => {
            CallError::Unreachable(status.message().to_string())
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            CallError::Rpc(RpcError::unavailable(format!(
                "node refused the gateway's credential: {}",
                status.message()
            )))
        }
        _ => CallError::Rpc(RpcError::unavailable(format!(
            "node call failed: {}",
            status.message()
        ))),
    }
}

#[async_trait]
impl NodeClient for NodeClients {
    async fn invoke(&self, node: &NodeRecord, call: &Call) -> Result<String, CallError> {
        if node.address.starts_with(INPROC_SCHEME) {
            let Some(local) = &self.local else {
                return Err(CallError::Unreachable(format!(
                    "{} is in another process",
                    node.address
                )));
            };
            return match tokio::time::timeout(
                call.timeout,
                local.invoke(&call.method, call.params.clone(), &call.caller),
            )
            .await
            {
                Ok(result) => result.map(|v| v.to_string()).map_err(CallError::Rpc),
                Err(_) => Err(CallError::Timeout(call.timeout)),
            };
        }
        self.invoke_grpc(node, call).await
    }
}
