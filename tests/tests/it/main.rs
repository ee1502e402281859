//! Cluster tests: every test boots real processes (nats-server, gateways, node-agents) on
//! free loopback ports and talks to them with real WebSocket and gRPC clients.

mod authz;
mod channels;
mod chaos;
mod chat_cluster;
mod chat_local;
mod cluster;
mod control_ui;
mod dashboard;
mod device;
mod edge;
mod frames;
mod full_disk;
mod handshake;
mod knowledge;
mod layering;
mod local;
mod node_join;
mod node_pairing;
mod node_role;
mod protocol_v4;
mod scheduling;
mod slow_consumer;
mod tracing;
mod voice;
