//! The one place where a gateway-internal error becomes a wire error (PROTOCOL.md §1.6,
//! §1.10): state-plane failures, config reads and writes, and calls to node-agents that
//! failed.

use std::time::Duration;

use argent_planes::state::StateError;
use argent_proto::errors::RpcError;

use crate::shared_config::WriteError;

/// How long a client should wait before retrying after a passing failure.
const RETRY_AFTER_MS: u64 = 1000;

/// A state-plane failure. ARCHITECTURE.md failure model: state methods fail fast with a
/// retryable `UNAVAILABLE` while NATS is gone, or when another writer won a race.
pub fn state(err: StateError) -> RpcError {
    let wire = RpcError::unavailable(err.to_string());
    match err {
        StateError::Unavailable(_) | StateError::WrongRevision => {
            wire.retryable(Some(RETRY_AFTER_MS))
        }
        _ => wire,
    }
}

/// The config document could not be read, or a `config.set|patch|apply` not stored.
pub fn config(err: WriteError) -> RpcError {
    match err {
        // Another writer won: the client must re-read (§5.3 baseHash rule).
        WriteError::Changed => RpcError::bad_params(err.to_string()),
        WriteError::Failed(_) => {
            RpcError::unavailable(err.to_string()).retryable(Some(RETRY_AFTER_MS))
        }
    }
}

/// No live node-agent serves the capability a forwarded method needs.
pub fn no_node(capability: &str, method: &str) -> RpcError {
    RpcError::unavailable(format!(
        "no live node-agent with capability \"{capability}\" to run {method}; start one with `argent-node run`"
    ))
    .with_detail("reason", "no_node")
    .retryable(Some(RETRY_AFTER_MS))
}

/// A node-agent took longer than the call's deadline.
pub fn node_timeout(node_id: &str, method: &str, after: Duration) -> RpcError {
    RpcError::unavailable(format!(
        "node-agent {node_id} did not answer {method} within {} ms",
        after.as_millis()
    ))
    .retryable(Some(RETRY_AFTER_MS))
}

/// Every node-agent tried was unreachable (`last_failure` says the last one's why).
pub fn nodes_unreachable(method: &str, last_failure: &str) -> RpcError {
    RpcError::unavailable(format!("{method} failed: {last_failure}"))
        .with_detail("reason", "node_unavailable")
        .retryable(Some(500))
}
