//! The planes of Argent cluster (ARCHITECTURE.md "Planes"): the seams between the code a
//! request runs and what it runs on. Each plane is a trait with an embedded implementation
//! (one process, no NATS) and a cluster implementation (NATS, JetStream, gRPC).
//!
//! * [`state`] — [`state::StateStore`]: per-bucket key-value state. Embedded:
//!   [`state_embedded::EmbeddedStore`]; cluster: [`state_nats::NatsStore`] (JetStream KV).
//! * [`transcripts`] — [`transcripts::TranscriptLog`]: each chat session's message log.
//!   Embedded: [`transcripts::EmbeddedTranscripts`]; cluster: a JetStream stream.
//! * [`embedded`] — [`embedded::EmbeddedDb`]: the one fjall database of a state dir under
//!   both embedded implementations, with its group-committing writer thread.
//! * [`blobs`] — payloads over one NATS message, in the JetStream object store by reference.
//! * [`bus`] — [`bus::EventBus`]: broadcast events between instances. Embedded: tokio
//!   broadcast; cluster: NATS core subjects.
//! * [`members`] — who is alive: node-agents and gateways heartbeat a record into a bucket;
//!   [`members::Members`] watches it and forgets records that stop beating.
//! * [`calls`] — [`calls::NodeClient`]: invoke a protocol method on a node-agent, in process
//!   or over gRPC with a connection pool.
//! * [`cluster`] — connecting to NATS and creating buckets explicitly (works on NATS 2.9).
//! * [`trace`] — carrying the trace context across gRPC metadata and NATS headers.

#![forbid(unsafe_code)]

pub mod blobs;
pub mod bus;
pub mod calls;
pub mod cluster;
pub mod embedded;
pub mod members;
pub mod mirror;
pub mod state;
pub mod state_embedded;
pub mod state_nats;
pub mod trace;
pub mod transcripts;
