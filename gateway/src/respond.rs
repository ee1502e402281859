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
    match err {
        // A name built from the caller's input that the store cannot hold: the caller's
        // mistake, said without the store's key layout.
        StateError::InvalidKey(_) => RpcError::bad_params(argent_proto::params::INVALID_ID),
        StateError::TooLarge { .. } => RpcError::bad_params(err.to_string()),
        StateError::Unavailable(_) | StateError::WrongRevision => {
            RpcError::unavailable(err.to_string()).retryable(Some(RETRY_AFTER_MS))
        }
        _ => RpcError::unavailable(err.to_string()),
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

/// NATS is unreachable, so this gateway can neither see nor reach node-agents (they may
/// well be running).
pub fn nats_unreachable(method: &str) -> RpcError {
    RpcError::unavailable(format!(
        "cannot run {method}: NATS is unreachable from this gateway, so no node-agent can be reached until it is back"
    ))
    .with_detail("reason", "nats_unreachable")
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
