//! `argent gateway run`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::context::Limits;
use crate::server::{GatewayOptions, RunningGateway};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Address to listen on for WebSocket clients.
    #[arg(long, env = "ARGENT_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// WebSocket port (0 picks a free one); default: the config's `gateway.port`, else 18789.
    #[arg(long, env = "ARGENT_GATEWAY_PORT")]
    pub port: Option<u16>,
    /// NATS URL: run as a stateless cluster gateway instead of the one-process default.
    #[arg(long, env = "ARGENT_NATS_URL")]
    pub nats: Option<String>,
    /// JetStream replicas for the buckets this gateway declares.
    #[arg(long, env = "ARGENT_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// State dir (config, token, and in the one-process default all state).
    #[arg(long, env = "ARGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not run the in-process node-agent of the one-process default.
    #[arg(long, env = "ARGENT_NO_EMBEDDED_NODE")]
    pub no_embedded_node: bool,
    /// Address of the operations listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "ARGENT_HTTP_BIND", default_value = "127.0.0.1")]
    pub http_bind: IpAddr,
    /// Port of the operations listener (0 picks a free one).
    #[arg(long, env = "ARGENT_HTTP_PORT", default_value_t = 18791)]
    pub http_port: u16,
    /// Stable id of this gateway in the cluster (default: host name plus a random suffix).
    #[arg(long, env = "ARGENT_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Most concurrent WebSocket connections.
    #[arg(long, env = "ARGENT_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// `tick` period in milliseconds (advertised in hello-ok).
    #[arg(long, env = "ARGENT_TICK_INTERVAL_MS", default_value_t = argent_proto::limits::TICK_INTERVAL_MS)]
    pub tick_interval_ms: u64,
    /// Outbound bytes a client may have pending before the slow-consumer rule applies.
    #[arg(long, env = "ARGENT_MAX_BUFFERED_BYTES", default_value_t = argent_proto::limits::MAX_BUFFERED_BYTES)]
    pub max_buffered_bytes: usize,
    /// Time a new socket has to complete the handshake, in milliseconds.
    #[arg(long, env = "ARGENT_HANDSHAKE_TIMEOUT_MS", default_value_t = argent_proto::limits::HANDSHAKE_TIMEOUT_MS)]
    pub handshake_timeout_ms: u64,
    /// Failed authentications one address (or one device) may make per minute before its
    /// further failures are refused, for 1 s doubling up to 5 min (0: unlimited). A valid
    /// credential is never refused by this limit.
    #[arg(long, env = "ARGENT_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// Sockets one address may hold before their handshake completes; more are answered
    /// with HTTP 503 and `Retry-After`.
    #[arg(
        long,
        env = "ARGENT_PENDING_HANDSHAKES_PER_ADDRESS",
        default_value_t = 1024
    )]
    pub pending_handshakes_per_address: u32,
    /// Cluster mode: a JSON5 config file stored as the shared config on first start (when
    /// the cluster has none yet; later starts leave the stored one alone).
    #[arg(long, env = "ARGENT_CONFIG_SEED")]
    pub config_seed: Option<PathBuf>,
    /// Deadline of calls forwarded to node-agents, in milliseconds.
    #[arg(long, env = "ARGENT_CALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub call_timeout_ms: u64,
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::config::default_state_dir);
    let port = args
        .port
        .or_else(|| crate::config::configured_port(&state_dir))
        .unwrap_or(argent_proto::limits::DEFAULT_PORT);
    let options = GatewayOptions {
        bind: args.bind,
        port,
        http_bind: args.http_bind,
        http_port: Some(args.http_port),
        nats_url: args.nats,
        nats_replicas: args.nats_replicas,
        state_dir: args
            .state_dir
            .unwrap_or_else(crate::config::default_state_dir),
        embedded_node: !args.no_embedded_node,
        gateway_id: args.gateway_id,
        max_connections: args.max_connections,
        config_seed: args.config_seed,
        limits: Limits {
            tick_interval: Duration::from_millis(args.tick_interval_ms.max(1)),
            max_buffered_bytes: args.max_buffered_bytes,
            call_timeout: Duration::from_millis(args.call_timeout_ms.max(1)),
            handshake_timeout: Duration::from_millis(args.handshake_timeout_ms.max(1)),
            auth_failures_per_minute: args.auth_failures_per_minute,
            pending_handshakes_per_address: args.pending_handshakes_per_address.max(1),
            ..Limits::default()
        },
    };
    let gateway = RunningGateway::start(options).await?;
    let ctx = gateway.ctx.clone();
    // One machine-readable line on stdout (test harnesses and scripts read it).
    println!(
        "{}",
        json!({
            "event": "listening",
            "ws": format!("ws://{}", gateway.ws_addr),
            "http": gateway.http_addr.map(|a| format!("http://{a}")),
            "gatewayId": ctx.gateway_id,
            "mode": ctx.mode.name(),
            "tokenSource": ctx.secrets().token_source,
        })
    );
    eprintln!(
        "argent: gateway {} listening on ws://{} ({} mode); token: {}",
        ctx.gateway_id,
        gateway.ws_addr,
        ctx.mode.name(),
        ctx.secrets().token_source
    );
    terminated().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
