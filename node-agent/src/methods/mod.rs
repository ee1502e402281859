//! Method families executed by the node-agent, one module per family.

pub mod agents;
pub mod chat;
pub mod sessions;
