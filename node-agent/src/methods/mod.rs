//! Method families executed by the node-agent, one module per family.

pub mod agents;
pub mod automation;
pub mod chat;
pub mod cron;
pub mod sessions;
pub mod usage;
