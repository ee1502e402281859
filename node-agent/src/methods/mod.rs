//! Method families executed by the node-agent, one module per family.

pub mod agents;
