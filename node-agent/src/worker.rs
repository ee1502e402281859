//! The worker: executes one forwarded method against the state plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use argent_planes::calls::MethodHandler;
use argent_planes::state::StateStore;
use argent_proto::errors::RpcError;
use argent_proto::grpc::Caller;

use crate::methods::agents;

/// Capabilities this node-agent serves (catalog `Forward::capability`).
pub const CAPABILITIES: &[&str] = &[argent_proto::catalog::CAP_AGENTS];

pub struct Worker {
    node_id: String,
    state: Arc<dyn StateStore>,
    in_flight: AtomicU64,
}

/// Decrements the in-flight count however the call ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    pub fn new(node_id: String, state: Arc<dyn StateStore>) -> Self {
        Worker {
            node_id,
            state,
            in_flight: AtomicU64::new(0),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Calls being executed right now (reported as load in the registry).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl MethodHandler for Worker {
    async fn invoke(
        &self,
        method: &str,
        params: Value,
        caller: &Caller,
    ) -> Result<Value, RpcError> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&self.in_flight);
        tracing::debug!(method, conn = %caller.conn_id, gateway = %caller.gateway_id, "executing");
        let state = self.state.as_ref();
        match method {
            "agents.list" => agents::list(state, params).await,
            "agent.identity.get" => agents::identity_get(state, params).await,
            "agents.files.list" => agents::files_list(state, params).await,
            "agents.files.get" => agents::files_get(state, params).await,
            "agents.files.set" => agents::files_set(state, params).await,
            other => Err(RpcError::unavailable(format!(
                "node-agent {} does not execute {other}",
                self.node_id
            ))),
        }
    }
}
