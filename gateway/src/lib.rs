//! The Argent gateway: the stateless WebSocket edge of the cluster.
//!
//! * [`server`] — starting and draining a gateway: planes, listeners, background loops;
//!   [`embedded_node`] — the in-process node-agent of the one-process default (the only
//!   user of the node-agent crate, behind the default feature `embedded-node`).
//! * [`ws`] — one task per WebSocket connection: handshake, request loop, bounded outbox.
//! * [`auth`] — shared-secret checks and the exact failure messages; [`client_address`] —
//!   the client's address behind trusted proxies.
//! * [`router`] — authorization on every request, then local method or forwarding to a
//!   node-agent (rendezvous hashing in [`select`], failover for idempotent calls).
//! * [`methods`] — methods the gateway answers itself (`health`, `status`, `system-presence`).
//! * [`hub`] — live connections and event fan-out (each event encoded once per gateway).
//! * [`chat_stream`] — the protocol-4 `deltaText`/`replace` view of `chat` deltas;
//!   [`subscriptions`] — what a protocol-4 connection follows (`sessions.changed`, …).
//! * [`presence`], [`health`] — cluster-wide presence and health with their state versions.
//! * [`config`], [`shared_config`] — the state dir, the token, the shared config document.
//! * [`http`], [`metrics`] — `/healthz`, `/readyz`, `/metrics`; [`stability`] — event-loop
//!   and queue figures for `diagnostics.stability`.
//! * [`respond`] — the one place where an internal error becomes a wire error.
//! * [`cli`] — the `argent` command line (`gateway run|status`, `call`).

#![forbid(unsafe_code)]

pub mod auth;
pub mod channel_webhooks;
pub mod chat_stream;
pub mod cli;
pub mod client_address;
pub mod config;
pub mod context;
pub mod control_ui;
pub mod embedded_node;
pub mod forward;
pub mod health;
pub mod http;
pub mod hub;
pub mod methods;
pub mod metrics;
pub mod node_commands;
pub mod node_invoke;
pub mod presence;
pub mod respond;
pub mod router;
pub mod select;
pub mod server;
pub mod shared_config;
pub mod stability;
pub mod subscriptions;
pub mod ws;
