//! The Argent node-agent: the worker that executes forwarded protocol methods.
//!
//! Layers, top to bottom; a module imports only from the layers below it (checked by the
//! `layering` test of `tests/tests/it/layering.rs`):
//!
//! 0. [`agent`] — starting a node: gRPC listener, registry heartbeat, clean shutdown.
//! 1. [`join`] (joining by pairing), [`service`] (the tonic gRPC service: credential check,
//!    deadline, trace context).
//! 2. [`worker`] — [`worker::Worker`], the [`argent_planes::calls::MethodHandler`] that
//!    dispatches a catalog method to its family.
//! 3. [`methods`] — RPC adapters, one module per method family: they parse params, call a
//!    service and render the answer, nothing more.
//! 4. [`respond`] — the one place where a service error becomes a wire error.
//! 5. [`tools`] — the agent's tools, one file each, handed to the runtime as its
//!    [`runtime::tools::ToolHost`].
//! 6. [`channels`] — chat platforms: receivers owned once across the cluster, inbound
//!    messages to turns, `send`.
//! 7. [`scheduler`] — cron (and its job store), heartbeats and execution-worker cycles,
//!    claimed exactly once across the cluster. [`knowledge`] — the knowledge library: its
//!    records in the state plane and this node's index of them. [`tts`] — speech: the
//!    providers, their order, the shared preferences.
//! 8. [`runtime`] — the agent runtime: runs and their control, leases, model providers,
//!    sessions, transcripts.
//! 9. [`workspace`] (an agent's documents), [`shared_config`] (the config snapshot of each
//!    stored revision) — on the planes only.
//! 10. [`error`] — [`error::ServiceError`], what the services fail with. [`clock`] —
//!     timestamps as the protocol writes them.
//!
//! The gateway embeds a [`worker::Worker`] directly in its one-process default mode.

#![forbid(unsafe_code)]

pub mod agent;
pub mod channels;
pub mod clock;
pub mod error;
pub mod join;
pub mod knowledge;
pub mod methods;
pub mod respond;
pub mod runtime;
pub mod scheduler;
pub mod service;
pub mod shared_config;
pub mod tools;
pub mod tts;
pub mod worker;
pub mod workspace;

/// Version reported in the registry and in `Ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
