//! The Argent node-agent: the worker that executes forwarded protocol methods.
//!
//! * [`worker`] — [`worker::Worker`], the [`argent_planes::calls::MethodHandler`] that
//!   dispatches a method to its family module in [`methods`].
//! * [`methods`] — one module per method family (`agents.rs`: agent identity and workspace
//!   documents; `chat.rs`: chat and agent runs; `sessions.rs`: sessions and models;
//!   `cron.rs`: cron jobs; `automation.rs`: heartbeat, wake, execution worker, tasks).
//! * [`shared_config`] — the parts of the cluster-shared configuration the node reads.
//! * [`service`] — the tonic gRPC service: credential check, deadline, trace context.
//! * [`agent`] — starting a node: gRPC listener, registry heartbeat, clean shutdown.
//! * [`join`] — joining a cluster by pairing: identity, waiting for approval, credentials.
//! * [`runtime`] — the agent runtime: runs, leases, model providers, sessions, transcripts.
//! * [`scheduler`] — cron, heartbeats and execution-worker cycles, claimed exactly once
//!   across the cluster.
//!
//! The gateway embeds a [`worker::Worker`] directly in its one-process default mode.

#![forbid(unsafe_code)]

pub mod agent;
pub mod join;
pub mod methods;
pub mod runtime;
pub mod scheduler;
pub mod service;
pub mod shared_config;
pub mod worker;

/// Version reported in the registry and in `Ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
