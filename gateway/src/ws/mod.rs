//! The WebSocket edge: one task per connection.
//!
//! * [`connection`] — accept, challenge, handshake, the request loop, teardown.
//! * [`handshake`] — the server-side processing order of `connect` (PROTOCOL.md §2.4).
//! * [`pairing`] — steps 15–18 for a proven device: device token, pairing, token issue.
//! * [`session`] — who is connected: role, scopes, client, and the upgrade request's headers.
//! * [`outbox`] — the bounded outbound queue, `seq`, the slow-consumer rule, the writer.
//! * [`wire`] — server frames written straight from shared bytes (vectored writes).
//! * [`limit`] — the pre-handshake input cap on the raw socket.
//! * [`linger`] — after closing first, the peer's input is drained so the close frame arrives.
//! * [`frame_meter`] — measures the frames a peer sends before `connect`, header by header.

pub mod connection;
pub mod frame_meter;
pub mod handshake;
pub mod limit;
pub mod linger;
pub mod outbox;
pub mod pairing;
pub mod session;
pub mod wire;
