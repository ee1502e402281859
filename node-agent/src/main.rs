//! `argent-node`: run a node-agent that joins a cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use argent_client::{Client, ClientError, ConnectOptions};
use argent_node_agent::agent::{NodeOptions, NodePlanes, RunningNode};
use argent_node_agent::join;
use argent_planes::bus::NatsBus;
use argent_planes::cluster::{self, NatsOptions};
use argent_planes::state_nats::NatsStore;
use argent_planes::transcripts::NatsTranscripts;

#[derive(Parser, Debug)]
#[command(
    name = "argent-node",
    version,
    about = "Argent cluster node-agent: executes forwarded methods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join the cluster and serve forwarded calls until SIGTERM.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A gateway of the cluster; the credential is checked against it at start.
    #[arg(long, env = "ARGENT_GATEWAY_URL")]
    gateway: Option<String>,
    /// NATS URL of the cluster (node registry, shared state, events).
    #[arg(long, env = "ARGENT_NATS_URL")]
    nats: String,
    /// Where the gRPC server listens.
    #[arg(long, env = "ARGENT_NODE_GRPC_LISTEN", default_value = "0.0.0.0:18790")]
    grpc_listen: SocketAddr,
    /// `host:port` gateways dial to reach this node (default: the bound address).
    #[arg(long, env = "ARGENT_NODE_ADVERTISE")]
    advertise: Option<String>,
    /// State dir: the node's identity and credentials (default `~/.argentos/node`).
    #[arg(long, env = "ARGENT_NODE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The cluster secret, for trusted in-cluster nodes. Without it the node joins by
    /// pairing: it asks a gateway (`--gateway`) and waits for an operator's approval.
    #[arg(long, env = "ARGENT_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Node id of a node given the cluster secret (a paired node's id is its device id).
    #[arg(long, env = "ARGENT_NODE_ID")]
    node_id: Option<String>,
    /// JetStream replicas for buckets this node declares.
    #[arg(long, env = "ARGENT_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
}

/// Reads or creates the node id in `<state dir>/node-id`.
fn node_id(given: Option<String>, state_dir: Option<&Path>) -> anyhow::Result<String> {
    if let Some(id) = given {
        return Ok(id);
    }
    let fresh = || format!("node-{}", uuid::Uuid::new_v4().simple());
    let Some(dir) = state_dir else {
        return Ok(fresh());
    };
    let path = dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = fresh();
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Connects to the gateway as role `node` once, to fail fast on a wrong credential.
async fn check_credential(url: &str, token: &str, node_id: &str) -> anyhow::Result<()> {
    let mut options = ConnectOptions::cli(url, Some(token.to_string()));
    options.role = Some("node".into());
    options.scopes = Some(Vec::new());
    options.client_id = "node-host".into();
    options.client_mode = "node".into();
    options.display_name = Some(node_id.to_string());
    match Client::connect(&options).await {
        Ok(client) => {
            client.close().await;
            Ok(())
        }
        Err(err @ ClientError::Rejected { .. }) => Err(anyhow::anyhow!("{err}")),
        Err(err) => {
            tracing::warn!(%err, %url, "gateway not reachable; credential not checked");
            Ok(())
        }
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn default_state_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".argentos").join("node")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Trusted in-cluster node with the cluster secret, or a node that joins by pairing.
    let (node_id, credential, paired) = match &args.token {
        Some(token) => {
            let node_id = node_id(args.node_id.clone(), args.state_dir.as_deref())?;
            if let Some(url) = &args.gateway {
                check_credential(url, token, &node_id)
                    .await
                    .context("the gateway refused this node's credential")?;
            }
            // Gateways present the credential derived for this id, never the secret itself.
            let credential = argent_planes::calls::node_call_secret(token, &node_id);
            (node_id, credential, false)
        }
        None => {
            let gateway = args
                .gateway
                .as_deref()
                .context("without --token a node joins by pairing: give it --gateway URL")?;
            let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
            let key = join::identity(&state_dir)?;
            let name = std::env::var("HOSTNAME").unwrap_or_else(|_| key.id()[..12].to_string());
            let credentials = join::join(gateway, &key, &state_dir, &name).await?;
            (key.id(), credentials.call_secret, true)
        }
    };
    let nats = cluster::connect(&NatsOptions {
        url: args.nats.clone(),
        name: format!("argent-node {node_id}"),
        replicas: args.nats_replicas,
    })
    .await?;
    let js = async_nats::jetstream::new(nats.client.clone());
    cluster::ensure_buckets(&js, args.nats_replicas).await?;
    argent_planes::transcripts::ensure_stream(&js, args.nats_replicas).await?;
    let planes = NodePlanes {
        // Kept with the node's state so a restart resumes its index; without a state
        // dir the index lives in memory and is rebuilt from the shared state at start.
        knowledge_dir: args.state_dir.as_ref().map(|d| d.join("knowledge-index")),
        state: Arc::new(NatsStore::new(nats.client.clone())),
        bus: Arc::new(NatsBus::new(&nats)),
        transcripts: Arc::new(NatsTranscripts::new(nats.client.clone())),
    };
    let node = RunningNode::start(
        NodeOptions {
            node_id: node_id.clone(),
            grpc_listen: args.grpc_listen,
            advertise: args.advertise,
            credential,
            paired,
        },
        planes,
    )
    .await?;
    println!(
        "{}",
        json!({"event": "listening", "grpc": node.address, "nodeId": node_id})
    );
    terminated().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// The same allocator as the gateway's, for the same reasons (see its `main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Freed memory goes back to the system while the node is idle (see the gateway).
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    let _telemetry = match argent_telemetry::init("argent-node") {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("argent-node: cannot set up logging: {err:#}");
            return ExitCode::from(70);
        }
    };
    match cli.command {
        Command::Run(args) => match run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("argent-node: {err:#}");
                ExitCode::from(78)
            }
        },
    }
}
