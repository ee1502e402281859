//! Starting a gateway, its background loops, the accept loop, and draining on shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use argent_planes::bus::{BusMessage, EventBus, LocalBus, NatsBus};
use argent_planes::calls::NodeClients;
use argent_planes::cluster::{self, NatsOptions};
use argent_planes::embedded::EmbeddedDb;
use argent_planes::members::{host_name, spawn_heartbeat, Members, STALE_AFTER};
use argent_planes::state::StateStore;
use argent_planes::state_embedded::EmbeddedStore;
use argent_planes::state_nats::NatsStore;
use argent_planes::transcripts::EmbeddedTranscripts;
use argent_proto::catalog::Audience;
use argent_proto::frames::{EncodedEvent, StateVersion};
use argent_proto::limits::RESTART_EXPECTED_MS;
use argent_proto::subjects::{self, BUCKET_GATEWAYS, BUCKET_NODES};

use crate::config::{self, ConfigFile};
use crate::context::{Ctx, CtxParts, Limits, Mode};
use crate::embedded_node::EmbeddedNode;
use crate::methods::presence::presence_json;
use crate::metrics::Metrics;
use crate::shared_config::SharedConfigView;
use crate::ws::connection;

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub bind: IpAddr,
    pub port: u16,
    pub http_bind: IpAddr,
    /// `None`: no HTTP listener.
    pub http_port: Option<u16>,
    /// Cluster mode when set.
    pub nats_url: Option<String>,
    pub nats_replicas: usize,
    pub state_dir: PathBuf,
    /// Run a node-agent inside this process (one-process default only).
    pub embedded_node: bool,
    pub gateway_id: Option<String>,
    pub max_connections: usize,
    pub limits: Limits,
    /// Cluster mode: a config file stored as the shared config when none exists yet.
    pub config_seed: Option<PathBuf>,
}

/// A gateway that is serving.
pub struct RunningGateway {
    pub ctx: Arc<Ctx>,
    pub ws_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    stop_accepting: watch::Sender<bool>,
    accept: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    embedded_node: Option<EmbeddedNode>,
    background: Vec<JoinHandle<()>>,
}

/// A gateway id that is a valid key segment: `[a-z0-9-]`.
fn make_gateway_id(given: Option<&str>, host: &str) -> String {
    let raw = match given {
        Some(id) => id.to_string(),
        None => format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    raw.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Makes sure a shared secret exists; generates one on the first local run.
fn ensure_secret(config_file: &ConfigFile, mode: &Mode) -> anyhow::Result<()> {
    let document = config_file.load()?;
    let secrets = config::resolve_secrets(&document, config_file.path(), mode.precedence());
    if secrets.token.is_some() || secrets.password.is_some() {
        return Ok(());
    }
    if let Mode::Cluster { .. } = mode {
        bail!(
            "no gateway token: set ARGENT_GATEWAY_TOKEN (one secret shared by every gateway and node-agent) or gateway.auth.token in {}",
            config_file.path().display()
        );
    }
    let token = config::generate_token();
    config::write_token(config_file.path(), &token)?;
    tracing::info!(path = %config_file.path().display(), "generated a gateway token (gateway.auth.token, mode 0600)");
    eprintln!(
        "argent: generated a gateway token in {} (gateway.auth.token)",
        config_file.path().display()
    );
    Ok(())
}

impl RunningGateway {
    pub async fn start(options: GatewayOptions) -> anyhow::Result<Self> {
        let host = host_name();
        let gateway_id = make_gateway_id(options.gateway_id.as_deref(), &host);
        let mode = match &options.nats_url {
            Some(url) => Mode::Cluster {
                nats_url: url.clone(),
            },
            None => Mode::Local,
        };
        if mode == Mode::Local {
            std::fs::create_dir_all(&options.state_dir).with_context(|| {
                format!("cannot create state dir {}", options.state_dir.display())
            })?;
        }
        let config_file = Arc::new(ConfigFile::new(config::config_path(&options.state_dir)));
        ensure_secret(&config_file, &mode)?;
        let credential =
            config::resolve_secrets(&config_file.load()?, config_file.path(), mode.precedence())
                .token
                .unwrap_or_default();

        let metrics = Arc::new(Metrics::new());
        // One embedded database for the state and the transcripts: fjall locks its directory.
        let embedded_db = match &mode {
            Mode::Local => Some(EmbeddedDb::open(Some(&options.state_dir))?),
            Mode::Cluster { .. } => None,
        };
        let (state, bus, nats): (Arc<dyn StateStore>, Arc<dyn EventBus>, _) = match &mode {
            Mode::Local => (
                Arc::new(EmbeddedStore::on(
                    embedded_db.as_ref().context("no embedded database")?,
                )?),
                Arc::new(LocalBus::new()),
                None,
            ),
            Mode::Cluster { nats_url } => {
                let nats = cluster::connect(&NatsOptions {
                    url: nats_url.clone(),
                    name: format!("argent-gateway {gateway_id}"),
                    replicas: options.nats_replicas,
                })
                .await?;
                declare_buckets(nats.client.clone(), options.nats_replicas).await;
                (
                    Arc::new(NatsStore::new(nats.client.clone())),
                    Arc::new(NatsBus::new(&nats)),
                    Some(nats.client),
                )
            }
        };

        let embedded_node = match (&embedded_db, options.embedded_node) {
            (Some(db), true) => Some(EmbeddedNode::start(
                format!("{gateway_id}-node"),
                state.clone(),
                bus.clone(),
                Arc::new(EmbeddedTranscripts::on(db)),
                options.state_dir.join("knowledge-index"),
            )?),
            _ => None,
        };
        let local_handler = embedded_node.as_ref().map(EmbeddedNode::handler);

        let listener = TcpListener::bind((options.bind, options.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", options.bind, options.port))?;
        let ws_addr = listener.local_addr()?;
        let http_listener = match options.http_port {
            Some(port) => Some(
                TcpListener::bind((options.http_bind, port))
                    .await
                    .with_context(|| format!("cannot listen on {}:{port}", options.http_bind))?,
            ),
            None => None,
        };
        let http_addr = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };

        let ctx = Arc::new(Ctx::new(CtxParts {
            gateway_id: gateway_id.clone(),
            host,
            mode: mode.clone(),
            state_dir: options.state_dir.clone(),
            config_file,
            limits: options.limits.clone(),
            nodes: Members::watch(state.clone(), BUCKET_NODES, STALE_AFTER),
            gateways: Members::watch(state.clone(), BUCKET_GATEWAYS, STALE_AFTER),
            state: state.clone(),
            bus,
            node_clients: NodeClients::new(local_handler, credential),
            metrics,
            nats,
            ws_url: format!("ws://{ws_addr}"),
        }));
        ctx.presence.purge_previous_run().await;
        if embedded_node.is_some() {
            wait_for_node(&ctx, &format!("{gateway_id}-node")).await;
        }
        if mode == Mode::Local {
            let loaded = ctx.config_file.load_shared()?;
            ctx.shared_config.publish_local(&loaded).await;
        } else if let Some(seed) = &options.config_seed {
            let raw = std::fs::read_to_string(seed)
                .with_context(|| format!("cannot read the seed config {}", seed.display()))?;
            match SharedConfigView::seed(state.as_ref(), &raw).await {
                Ok(true) => tracing::info!(seed = %seed.display(), "shared config seeded"),
                Ok(false) => tracing::info!("shared config exists; seed file not used"),
                Err(err) => bail!("cannot seed the shared config: {err}"),
            }
        }

        let (stop, stop_rx) = watch::channel(false);
        let mut background = vec![
            tokio::spawn(deliver_bus_events(ctx.clone())),
            tokio::spawn(tick_loop(ctx.clone())),
            tokio::spawn(crate::stability::monitor(ctx.stability.clone())),
            tokio::spawn(health_loop(ctx.clone())),
            tokio::spawn(channels_loop(ctx.clone())),
            tokio::spawn(presence_loop(ctx.clone())),
            tokio::spawn({
                let presence = ctx.presence.clone();
                async move { presence.follow().await }
            }),
            tokio::spawn(collect_orphans(ctx.clone())),
            tokio::spawn(refresh_presence(ctx.clone())),
            tokio::spawn(refresh_paired_nodes(ctx.clone())),
        ];
        if mode == Mode::Local {
            background.push(tokio::spawn(config_file_loop(ctx.clone())));
        }
        if let Some(listener) = http_listener {
            background.push(tokio::spawn(crate::http::serve(
                ctx.clone(),
                listener,
                stop_rx.clone(),
            )));
        }
        let record_ctx = ctx.clone();
        let heartbeat = spawn_heartbeat(
            state,
            BUCKET_GATEWAYS,
            gateway_id.clone(),
            move || {
                let record = record_ctx.health.self_record();
                Bytes::from(serde_json::to_vec(&record).expect("records serialize"))
            },
            stop_rx.clone(),
        );
        let (stop_accepting, stop_accepting_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            ctx.clone(),
            listener,
            options.max_connections,
            stop_accepting_rx,
        ));
        tracing::info!(gateway = %gateway_id, ws = %ws_addr, mode = mode.name(), "gateway serving");
        Ok(RunningGateway {
            ctx,
            ws_addr,
            http_addr,
            stop,
            stop_accepting,
            accept,
            heartbeat,
            embedded_node,
            background,
        })
    }

    /// SIGTERM path: report not-ready, stop accepting, send `shutdown` and close every
    /// client with 1012 (also those whose handshake was still in flight), wait for them
    /// (bounded), deregister.
    pub async fn shutdown(self) {
        let ctx = self.ctx.clone();
        ctx.start_draining();
        let _ = self.stop_accepting.send(true);
        let _ = self.accept.await;
        let event = EncodedEvent::from_value(
            "shutdown",
            &json!({"reason": "gateway restarting", "restartExpectedMs": RESTART_EXPECTED_MS}),
            None,
        );
        ctx.hub.shut_down(Arc::new(event), 1012, "service restart");
        let deadline = tokio::time::Instant::now() + ctx.limits.drain_grace;
        while !ctx.hub.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        let _ = self.heartbeat.await;
        if let Some(node) = self.embedded_node {
            node.shutdown().await;
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("gateway stopped");
    }
}

/// Declares the buckets, retrying in the background while NATS is unreachable.
async fn declare_buckets(client: async_nats::Client, replicas: usize) {
    let js = async_nats::jetstream::new(client);
    match cluster::ensure_buckets(&js, replicas).await {
        Ok(()) => {}
        Err(err) => {
            tracing::warn!(%err, "cannot declare buckets yet; retrying in the background");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match cluster::ensure_buckets(&js, replicas).await {
                        Ok(()) => return,
                        Err(err) => tracing::debug!(%err, "buckets still not declared"),
                    }
                }
            });
        }
    }
}

async fn accept_loop(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        // A permit first: past the connection bound we stop accepting (the kernel backlog
        // holds the rest) instead of failing sockets we accepted.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(5);
                tokio::spawn(connection::serve(ctx.clone(), tcp, peer, permit));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Events from the bus (every gateway and node publishes there) to local connections.
async fn deliver_bus_events(ctx: Arc<Ctx>) {
    loop {
        match ctx.bus.subscribe().await {
            Ok(mut events) => {
                while let Some(message) = events.recv().await {
                    let event = match message {
                        BusMessage::Event(event) => event,
                        // Lost before reaching this gateway: every client must see the gap.
                        BusMessage::Lost(n) => {
                            tracing::warn!(lost = n, "events lost before delivery");
                            ctx.stability
                                .record("events.lost", serde_json::json!({"count": n}));
                            ctx.hub.skip_seq(n);
                            continue;
                        }
                    };
                    if event.name.starts_with(subjects::CONTROL_PREFIX) {
                        control(&ctx, &event.name, &event.payload);
                        continue;
                    }
                    let Ok(payload) = std::str::from_utf8(&event.payload) else {
                        tracing::warn!(event = %event.name, "event payload is not UTF-8; dropped");
                        continue;
                    };
                    if serde_json::from_str::<serde::de::IgnoredAny>(payload).is_err() {
                        tracing::warn!(event = %event.name, "event payload is not JSON; dropped");
                        continue;
                    }
                    // Part of the producer's trace (context from the NATS headers).
                    let span = tracing::info_span!("event.deliver", event = %event.name);
                    argent_planes::trace::set_parent_from_headers(&span, &event.trace);
                    let _entered = span.enter();
                    let mut encoded = EncodedEvent::new(&event.name, payload, None);
                    if let Some(droppable) = event.droppable {
                        encoded = encoded.with_droppable(droppable);
                    }
                    // Protocol-4 work only when a v4 socket is here to receive it.
                    let v4_here = ctx.hub.has_v4_connections();
                    if encoded.audience == Audience::Subscribers {
                        if v4_here {
                            let key = serde_json::from_str::<serde_json::Value>(payload)
                                .ok()
                                .and_then(|p| p["sessionKey"].as_str().map(str::to_string));
                            ctx.hub
                                .deliver_subscribed(&Arc::new(encoded), key.as_deref());
                        }
                        continue;
                    }
                    // v4 connections get `deltaText` on `chat` deltas (PROTOCOL-v4.md §8).
                    let v4 = match (event.name == "chat", v4_here) {
                        (true, true) => ctx.delta_texts.observe(payload, encoded.droppable),
                        (true, false) => {
                            ctx.delta_texts.clear();
                            None
                        }
                        _ => None,
                    };
                    let delivered = ctx.hub.deliver_chat(&Arc::new(encoded), v4.as_ref());
                    tracing::debug!(delivered, "event delivered");
                }
            }
            Err(err) => tracing::warn!(%err, "cannot subscribe to events; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// An internal control message from another gateway (or this one).
fn control(ctx: &Arc<Ctx>, name: &str, payload: &[u8]) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(payload) else {
        tracing::warn!(name, "unreadable control message");
        return;
    };
    match name {
        subjects::CONTROL_DEVICE_REMOVED => {
            let Some(device_id) = body["deviceId"].as_str() else {
                return;
            };
            let role = body["role"].as_str();
            let closed = ctx
                .hub
                .close_device(device_id, role, 4001, "device removed");
            tracing::info!(device = device_id, closed, "device connections closed");
        }
        subjects::CONTROL_NODE_INVOKE if body["gatewayId"] == ctx.gateway_id.as_str() => {
            ctx.node_invokes.deliver_request(&body);
        }
        subjects::CONTROL_NODE_RESULT if body["replyTo"] == ctx.gateway_id.as_str() => {
            ctx.node_invokes.deliver_result(&body);
        }
        subjects::CONTROL_CONN_EVENT if body["gatewayId"] == ctx.gateway_id.as_str() => {
            deliver_to_connection(ctx, &body);
        }
        // Addressed to another gateway, or to node-agents (run control).
        subjects::CONTROL_NODE_INVOKE
        | subjects::CONTROL_NODE_RESULT
        | subjects::CONTROL_CONN_EVENT => {}
        other if other.starts_with("_ctl.run.") => {}
        other => tracing::warn!(name = other, "unknown control message"),
    }
}

/// A targeted event (no `seq`) for one connection of this gateway, e.g. the tool stream of
/// a run for the connection that started it (§3.6).
fn deliver_to_connection(ctx: &Arc<Ctx>, body: &serde_json::Value) {
    let (Some(conn_id), Some(event)) = (body["connId"].as_str(), body["event"].as_str()) else {
        return;
    };
    let payload = body["payload"].to_string();
    let encoded = Arc::new(EncodedEvent::new(event, &payload, None));
    if !ctx.hub.send_to(conn_id, &encoded) {
        tracing::debug!(
            conn = conn_id,
            event,
            "targeted event for a connection that is gone"
        );
    }
}

/// `tick` to this gateway's connections every `tickIntervalMs` (re-read each time: a
/// config change applies without a restart).
async fn tick_loop(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(ctx.tick_interval()).await;
        let event = EncodedEvent::from_value("tick", &json!({"ts": argent_proto::now_ms()}), None);
        ctx.hub.deliver(&Arc::new(event));
    }
}

/// How long a start waits for its embedded node-agent to be seen in the registry.
const EMBEDDED_NODE_WAIT: Duration = Duration::from_secs(5);

/// The one-process default answers agent methods from its first connection on, so the
/// gateway waits (bounded) until its own registry watch sees the embedded node-agent;
/// otherwise a call right after start would hear "no live node-agent".
async fn wait_for_node(ctx: &Ctx, node_id: &str) {
    let deadline = tokio::time::Instant::now() + EMBEDDED_NODE_WAIT;
    while !ctx.nodes.live().iter().any(|n| n.id == node_id) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(node = node_id, "the embedded node-agent is not registered yet; agent methods answer UNAVAILABLE until it is");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One-process default: notices edits of the config file within a second and publishes
/// them to the embedded node-agent (a cluster watches the state plane instead).
async fn config_file_loop(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let loaded = ctx.config();
        ctx.shared_config.publish_local(&loaded).await;
    }
}

/// Periodic health refresh and broadcast (every 60 s).
async fn health_loop(ctx: Arc<Ctx>) {
    let mut ticker = tokio::time::interval(ctx.limits.health_refresh);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        ctx.health.broadcast();
    }
}

/// How often the channel sections of `health` and `status` are refreshed.
const CHANNELS_REFRESH: Duration = Duration::from_secs(10);

/// Keeps the channel sections of `health` and `status` fresh: a node-agent's answer to
/// `channels.status` (the receivers' snapshots in shared state), every few seconds.
async fn channels_loop(ctx: Arc<Ctx>) {
    let Some(spec) = argent_proto::catalog::lookup("channels.status") else {
        return;
    };
    let mut ticker = tokio::time::interval(CHANNELS_REFRESH);
    loop {
        ticker.tick().await;
        let asked =
            crate::forward::call_for_gateway(&ctx, "health", spec, json!({}), CHANNELS_REFRESH)
                .await;
        match asked.map(|payload| serde_json::from_str::<serde_json::Value>(&payload)) {
            Ok(Ok(status)) => ctx.health.set_channels(status),
            Ok(Err(err)) => tracing::debug!(%err, "unreadable channels.status"),
            Err(err) => tracing::debug!(error = %err.message, "channels.status not refreshed"),
        }
    }
}

/// A `presence` event after disconnects and client reports anywhere in the cluster
/// (coalesced).
async fn presence_loop(ctx: Arc<Ctx>) {
    loop {
        ctx.presence.changed().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let version = StateVersion {
            presence: ctx.presence.version(),
            health: ctx.health.version(),
        };
        let payload = format!(r#"{{"presence":{}}}"#, presence_json(&ctx));
        let event = EncodedEvent::new("presence", &payload, Some(version));
        ctx.hub.deliver(&Arc::new(event));
    }
}

/// Every second: which paired node-agents may receive calls (revoking a node's token takes
/// it out of routing within a second or two), and a sweep that closes device connections
/// whose token is gone (the backstop for a missed revocation message, or a revocation that
/// raced a handshake).
async fn refresh_paired_nodes(ctx: Arc<Ctx>) {
    let store = crate::auth::devices::DeviceStore::new(ctx.state.clone());
    loop {
        match store.valid_nodes().await {
            Ok(valid) => *ctx.paired_nodes.write() = valid,
            Err(err) => tracing::debug!(%err, "paired nodes not refreshed"),
        }
        match store.live_roles().await {
            Ok(live) => {
                let closed = ctx.hub.close_revoked(&live);
                if closed > 0 {
                    tracing::info!(closed, "closed connections of revoked devices");
                }
            }
            Err(err) => tracing::debug!(%err, "revoked devices not swept"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps this gateway's presence records fresh.
async fn refresh_presence(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(crate::presence::REFRESH_EVERY).await;
        ctx.presence.refresh().await;
    }
}

/// Collects presence records of gateways that died without cleaning up.
async fn collect_orphans(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        if ctx.uptime_ms() < 30_000 {
            continue;
        }
        let gateways = ctx.gateways.clone();
        ctx.presence
            .collect_orphans(|id| gateways.is_live(id))
            .await;
    }
}
