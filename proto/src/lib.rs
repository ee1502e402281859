//! Contracts of Argent cluster, shared by the gateway and the node-agent.
//!
//! * [`grpc`] — the gateway → node-agent gRPC service (generated from `proto/`, no system
//!   `protoc` needed).
//! * [`frames`] — typed WebSocket frames (PROTOCOL.md §1.2–§1.3): strict parsing of what
//!   clients send, exact encoding of what we send (absent optional fields are omitted).
//! * [`connect`] — the `connect` request params and their strict validation (§2.3).
//! * [`errors`] — the one place where an error becomes the wire's `{code, message, details}`
//!   (§1.6, §1.10).
//! * [`catalog`] — every method with its scope class and where it runs, every event with
//!   its visibility, and the authorization algorithm of §3.3 over them.
//! * [`subjects`] — NATS subject and JetStream bucket names, spelled once.
//! * [`params`] — reading method params with upstream-style validation messages.
//! * [`limits`] — protocol constants (Appendix B).
//! * [`config`] — the shared config document: JSON5 parsing, validation, JSON Schema, and
//!   [`config::SharedConfig`], the parsed snapshot every component reads settings from.
//! * [`agents`] — the configured agents. [`session_key`] — session keys, built one way.
//! * [`secret`] — secrets in the config: literal or `${ENV}` reference.
//! * [`version`] — protocol 3 / 4 negotiation and every rule that differs between them.

#![forbid(unsafe_code)]

pub mod agents;
pub mod catalog;
pub mod config;
pub mod config_form;
pub mod connect;
pub mod errors;
pub mod frames;
pub mod limits;
pub mod params;
pub mod secret;
pub mod session_key;
pub mod session_patch;
pub mod subjects;
pub mod version;

/// Generated gRPC code for `argent.node.v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod grpc {
    tonic::include_proto!("argent.node.v1");
}

/// Current time in Unix epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
