//! Starting and stopping a node-agent: gRPC listener, registry heartbeat, drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use argent_planes::bus::EventBus;
use argent_planes::calls::INPROC_SCHEME;
use argent_planes::members::{host_name, spawn_heartbeat, NodeRecord};
use argent_planes::state::StateStore;
use argent_planes::transcripts::TranscriptLog;
use argent_proto::grpc::node_agent_server::NodeAgentServer;
use argent_proto::limits::MAX_GRPC_MESSAGE;
use argent_proto::subjects::BUCKET_NODES;

use crate::knowledge::Knowledge;
use crate::runtime::Runtime;
use crate::service::NodeService;
use crate::tools::{ChannelsSlot, Toolbox};
use crate::tts::Speech;
use crate::worker::{Worker, CAPABILITIES};

/// The planes a node-agent works on.
#[derive(Clone)]
pub struct NodePlanes {
    pub state: Arc<dyn StateStore>,
    pub bus: Arc<dyn EventBus>,
    pub transcripts: Arc<dyn TranscriptLog>,
    /// Where the knowledge index is kept across restarts (in memory when `None`: rebuilt
    /// from the shared state at every start).
    pub knowledge_dir: Option<PathBuf>,
}

impl NodePlanes {
    fn worker(&self, node_id: &str) -> Arc<Worker> {
        let knowledge =
            Knowledge::start(node_id, self.state.clone(), self.knowledge_dir.as_deref());
        let speech = Speech::new(self.state.clone());
        let channels = ChannelsSlot::default();
        let runtime = Runtime::start(
            node_id.to_string(),
            self.state.clone(),
            self.bus.clone(),
            self.transcripts.clone(),
            Arc::new(Toolbox::standard(
                knowledge.clone(),
                speech.clone(),
                channels.clone(),
            )),
        );
        let worker = Worker::new(node_id.to_string(), runtime, knowledge, speech);
        let _ = channels.set(Arc::downgrade(worker.channels()));
        Arc::new(worker)
    }
}

/// How long a stopping node-agent lets calls in flight finish.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How a standalone node-agent runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: String,
    /// Where the gRPC server listens (port 0 picks a free one).
    pub grpc_listen: SocketAddr,
    /// `host:port` gateways dial; defaults to the bound address (loopback if unspecified).
    pub advertise: Option<String>,
    /// Gateways must present this credential on every gRPC call.
    pub credential: String,
    /// Joined by pairing (the credential is its derived call secret, not the cluster's).
    pub paired: bool,
}

/// A node-agent that is serving and registered.
pub struct RunningNode {
    pub worker: Arc<Worker>,
    /// The gRPC address written to the registry.
    pub address: String,
    stop: watch::Sender<bool>,
    heartbeat: JoinHandle<()>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

fn register(
    state: Arc<dyn StateStore>,
    worker: Arc<Worker>,
    address: String,
    paired: bool,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let started_at_ms = argent_proto::now_ms();
    let host = host_name();
    let id = worker.node_id().to_string();
    let record = move || {
        let record = NodeRecord {
            id: worker.node_id().to_string(),
            address: address.clone(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            version: crate::VERSION.to_string(),
            host: host.clone(),
            in_flight: worker.in_flight(),
            paired,
            started_at_ms,
            heartbeat_at_ms: argent_proto::now_ms(),
        };
        Bytes::from(serde_json::to_vec(&record).expect("records serialize"))
    };
    spawn_heartbeat(state, BUCKET_NODES, id, record, stop)
}

impl RunningNode {
    /// Serves gRPC on `options.grpc_listen` and registers in the node registry.
    pub async fn start(options: NodeOptions, planes: NodePlanes) -> anyhow::Result<Self> {
        let state = planes.state.clone();
        let listener = tokio::net::TcpListener::bind(options.grpc_listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", options.grpc_listen))?;
        let bound = listener.local_addr()?;
        let advertise = options.advertise.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                tracing::warn!("--grpc-listen is a wildcard address and --advertise is not set; advertising loopback");
                format!("127.0.0.1:{}", bound.port())
            } else {
                bound.to_string()
            }
        });
        let address = format!("http://{advertise}");
        let worker = planes.worker(&options.node_id);
        let service = NodeService::new(worker.clone(), &options.credential);
        let (stop, stop_rx) = watch::channel(false);
        let mut server_stop = stop_rx.clone();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    NodeAgentServer::new(service)
                        .max_decoding_message_size(MAX_GRPC_MESSAGE)
                        .max_encoding_message_size(MAX_GRPC_MESSAGE),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = server_stop.wait_for(|stopped| *stopped).await;
                }),
        );
        let heartbeat = register(
            state,
            worker.clone(),
            address.clone(),
            options.paired,
            stop_rx,
        );
        tracing::info!(node = %options.node_id, %address, "node-agent serving");
        Ok(RunningNode {
            worker,
            address,
            stop,
            heartbeat,
            server: Some(server),
        })
    }

    /// The node-agent embedded in a one-process gateway: no gRPC, an `inproc://` address.
    pub fn embedded(node_id: String, planes: NodePlanes) -> Self {
        let address = format!("{INPROC_SCHEME}{node_id}");
        let state = planes.state.clone();
        let worker = planes.worker(&node_id);
        let (stop, stop_rx) = watch::channel(false);
        let heartbeat = register(state, worker.clone(), address.clone(), false, stop_rx);
        RunningNode {
            worker,
            address,
            stop,
            heartbeat,
            server: None,
        }
    }

    /// Deregisters (so gateways stop routing here at once), then lets in-flight calls
    /// finish and stops the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // Runs in flight end with an error saying so; queued ones go to another node.
        let runtime = self.worker.runtime().clone();
        runtime.stop();
        self.worker.knowledge().stop();
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        while runtime.active_runs() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = self.heartbeat.await;
        if let Some(mut server) = self.server {
            // Calls in flight get a grace period; connections gateways keep open do not
            // hold the exit beyond it.
            match tokio::time::timeout(DRAIN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => tracing::warn!(%err, "gRPC server ended with an error"),
                Ok(Err(err)) => tracing::warn!(%err, "gRPC server task failed"),
                Err(_) => {
                    tracing::warn!("calls still open after the drain grace; stopping anyway");
                    server.abort();
                }
            }
        }
    }
}
