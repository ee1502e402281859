//! The one-process default's in-process node-agent: the only place the gateway uses the
//! node-agent crate (cargo feature `embedded-node`, on by default). A gateway built without
//! it is a pure edge: it forwards every node method to node-agents over gRPC.

use std::sync::Arc;

use argent_planes::bus::EventBus;
use argent_planes::calls::MethodHandler;
use argent_planes::state::StateStore;
use argent_planes::transcripts::TranscriptLog;

/// A node-agent running inside the gateway process.
pub struct EmbeddedNode {
    #[cfg(feature = "embedded-node")]
    node: argent_node_agent::agent::RunningNode,
    /// Without the feature no value of this type exists.
    #[cfg(not(feature = "embedded-node"))]
    never: std::convert::Infallible,
}

impl EmbeddedNode {
    /// Starts one on the gateway's own planes; `Err` says why it cannot.
    pub fn start(
        node_id: String,
        state: Arc<dyn StateStore>,
        bus: Arc<dyn EventBus>,
        transcripts: Arc<dyn TranscriptLog>,
        knowledge_dir: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        #[cfg(feature = "embedded-node")]
        {
            use argent_node_agent::agent::{NodePlanes, RunningNode};
            let planes = NodePlanes {
                state,
                bus,
                transcripts,
                knowledge_dir: Some(knowledge_dir),
            };
            Ok(EmbeddedNode {
                node: RunningNode::embedded(node_id, planes),
            })
        }
        #[cfg(not(feature = "embedded-node"))]
        {
            let _ = (node_id, state, bus, transcripts, knowledge_dir);
            anyhow::bail!(
                "this gateway was built without the embedded node-agent (cargo feature \
                 `embedded-node`): run it with --no-embedded-node and start `argent-node run`"
            )
        }
    }

    /// Where the gateway's node client calls it, without a network hop.
    pub fn handler(&self) -> Arc<dyn MethodHandler> {
        #[cfg(feature = "embedded-node")]
        return self.node.worker.clone();
        #[cfg(not(feature = "embedded-node"))]
        match self.never {}
    }

    pub async fn shutdown(self) {
        #[cfg(feature = "embedded-node")]
        self.node.shutdown().await;
        #[cfg(not(feature = "embedded-node"))]
        match self.never {}
    }
}
