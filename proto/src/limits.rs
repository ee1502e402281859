//! Protocol constants (PROTOCOL.md §1.7, §1.8, Appendix B).

/// Default WebSocket port.
pub const DEFAULT_PORT: u16 = 18789;
/// Default gRPC port of a node-agent.
pub const DEFAULT_NODE_GRPC_PORT: u16 = 18790;
/// Largest inbound frame after the handshake.
pub const MAX_PAYLOAD: usize = 10 * 1024 * 1024;
/// Largest inbound frame before the handshake [EXT]: a real `connect` is < 8 KiB.
pub const MAX_PREAUTH_PAYLOAD: usize = 64 * 1024;
/// Largest gRPC message between a gateway and a node-agent, each way: a request carries a
/// whole inbound frame (attachments up to `MAX_PAYLOAD`), an answer a whole `chat.history`
/// (6 MiB budget) or one large message. tonic refuses anything over 4 MiB unless told.
pub const MAX_GRPC_MESSAGE: usize = 2 * MAX_PAYLOAD;
/// Outbound bytes a connection may have queued before the slow-consumer rule applies.
pub const MAX_BUFFERED_BYTES: usize = 15 * 1024 * 1024;
/// Period of the `tick` event.
pub const TICK_INTERVAL_MS: u64 = 30_000;
/// A `connect` must succeed within this time after the socket opens.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Periodic health recompute.
pub const HEALTH_REFRESH_MS: u64 = 60_000;
/// Close reasons are cut to this many bytes.
pub const CLOSE_REASON_MAX: usize = 120;
/// Presence list cap (§1.8).
pub const PRESENCE_MAX_ENTRIES: usize = 200;
/// Restart hint sent in `shutdown` when a gateway is being replaced.
pub const RESTART_EXPECTED_MS: u64 = 1500;
