//! Method families executed by the node-agent, one module per family.

pub mod agents;
pub mod automation;
pub mod channels;
pub mod chat;
pub mod cron;
pub mod diagnostics;
pub mod knowledge;
pub mod sessions;
pub mod tts;
pub mod usage;

use std::sync::Arc;

use argent_proto::config::SharedConfig;
use argent_proto::errors::RpcError;

use crate::respond;
use crate::runtime::Runtime;

/// The shared config snapshot a method reads its settings from.
pub(crate) async fn shared_config(rt: &Runtime) -> Result<Arc<SharedConfig>, RpcError> {
    rt.config.current().await.map_err(respond::state)
}
