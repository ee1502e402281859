//! Everything a connection or a request needs from its gateway, shared behind one `Arc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argent_planes::bus::{BusEvent, EventBus};
use argent_planes::calls::NodeClients;
use argent_planes::members::{GatewayRecord, Members, NodeRecord};
use argent_planes::state::StateStore;

use crate::auth::limiter::AuthLimiter;
use crate::chat_stream::DeltaTexts;
use crate::client_address::TrustedProxies;
pub use crate::config::Mode;
use crate::config::{ConfigFile, Loaded, SharedSecrets};
use crate::health::{Health, HealthSources, Identity};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::node_invoke::{NodeInvokes, NodeSubscriptions};
use crate::presence::Presence;
use crate::shared_config::SharedConfigView;
use crate::stability::Stability;

/// Tunables with protocol defaults; tests shorten some of them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub tick_interval: Duration,
    pub max_buffered_bytes: usize,
    pub handshake_timeout: Duration,
    pub health_refresh: Duration,
    /// Deadline of a forwarded call.
    pub call_timeout: Duration,
    /// Concurrent requests per connection before the gateway stops reading from it.
    pub requests_per_connection: usize,
    /// How long shutdown waits for connections to close.
    pub drain_grace: Duration,
    /// Failed handshakes per address per minute before it is refused for the rest of the
    /// minute (0: unlimited).
    pub auth_failures_per_minute: u32,
    /// Sockets one address may hold before their handshake completes.
    pub pending_handshakes_per_address: u32,
}

impl Default for Limits {
    fn default() -> Self {
        use argent_proto::limits::*;
        Limits {
            tick_interval: Duration::from_millis(TICK_INTERVAL_MS),
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            health_refresh: Duration::from_millis(HEALTH_REFRESH_MS),
            call_timeout: Duration::from_secs(30),
            requests_per_connection: 64,
            drain_grace: Duration::from_secs(5),
            auth_failures_per_minute: 30,
            pending_handshakes_per_address: 1024,
        }
    }
}

pub struct Ctx {
    pub gateway_id: String,
    pub host: String,
    pub version: &'static str,
    pub mode: Mode,
    pub started: Instant,
    pub started_at_ms: u64,
    pub state_dir: PathBuf,
    pub config_file: Arc<ConfigFile>,
    /// Secrets from the environment or the first-run generation, when the file has none.
    pub limits: Limits,
    pub state: Arc<dyn StateStore>,
    pub bus: Arc<dyn EventBus>,
    pub nodes: Members<NodeRecord>,
    pub gateways: Members<GatewayRecord>,
    pub node_clients: NodeClients,
    pub hub: Arc<Hub>,
    /// The last `chat` delta text of each live run, for v4 `deltaText`.
    pub delta_texts: DeltaTexts,
    /// Event-loop and queue figures for `diagnostics.stability`.
    pub stability: Arc<Stability>,
    pub presence: Arc<Presence>,
    pub health: Arc<Health>,
    pub shared_config: Arc<SharedConfigView>,
    pub metrics: Arc<Metrics>,
    pub nats: Option<async_nats::Client>,
    pub ws_url: String,
    pub auth_limiter: AuthLimiter,
    pub node_invokes: Arc<NodeInvokes>,
    pub node_subscriptions: NodeSubscriptions,
    /// Node-agents that joined by pairing and whose pairing is valid (refreshed every second).
    pub paired_nodes: parking_lot::RwLock<std::collections::HashSet<String>>,
    /// `gateway.trustedProxies` and the config generation it was parsed from (`u64::MAX`:
    /// not read yet).
    trusted_proxies: parking_lot::Mutex<(u64, Arc<TrustedProxies>)>,
}

pub struct CtxParts {
    pub gateway_id: String,
    pub host: String,
    pub mode: Mode,
    pub state_dir: PathBuf,
    pub config_file: Arc<ConfigFile>,
    pub limits: Limits,
    pub state: Arc<dyn StateStore>,
    pub bus: Arc<dyn EventBus>,
    pub nodes: Members<NodeRecord>,
    pub gateways: Members<GatewayRecord>,
    pub node_clients: NodeClients,
    pub metrics: Arc<Metrics>,
    pub nats: Option<async_nats::Client>,
    pub ws_url: String,
}

impl Ctx {
    pub fn new(parts: CtxParts) -> Self {
        let presence = Arc::new(Presence::new(
            parts.gateway_id.clone(),
            parts.state.clone(),
            parts.metrics.presence_list_builds.clone(),
        ));
        let shared_config = Arc::new(SharedConfigView::new(
            parts.mode.clone(),
            parts.state.clone(),
            parts.config_file.clone(),
        ));
        let hub = Arc::new(Hub::new(parts.metrics.clone()));
        let node_invokes = Arc::new(NodeInvokes::new(
            parts.gateway_id.clone(),
            parts.bus.clone(),
            hub.clone(),
        ));
        let started_at_ms = argent_proto::now_ms();
        let health = Arc::new(Health::new(
            Identity {
                gateway_id: parts.gateway_id.clone(),
                host: parts.host.clone(),
                version: env!("CARGO_PKG_VERSION"),
                ws_url: parts.ws_url.clone(),
                started_at_ms,
                mode: parts.mode.clone(),
            },
            HealthSources {
                gateways: parts.gateways.clone(),
                nodes: parts.nodes.clone(),
                hub: hub.clone(),
                presence: presence.clone(),
                shared_config: shared_config.clone(),
                metrics: parts.metrics.clone(),
                nats: parts.nats.clone(),
                state: parts.state.clone(),
            },
        ));
        let auth_limiter = AuthLimiter::new(
            parts.limits.auth_failures_per_minute,
            parts.limits.pending_handshakes_per_address,
        );
        Ctx {
            hub: hub.clone(),
            delta_texts: DeltaTexts::default(),
            stability: Arc::new(Stability::new(parts.metrics.clone())),
            presence,
            health,
            shared_config,
            gateway_id: parts.gateway_id,
            host: parts.host,
            version: env!("CARGO_PKG_VERSION"),
            mode: parts.mode,
            started: Instant::now(),
            started_at_ms,
            state_dir: parts.state_dir,
            config_file: parts.config_file,
            limits: parts.limits,
            state: parts.state,
            bus: parts.bus,
            nodes: parts.nodes,
            gateways: parts.gateways,
            node_clients: parts.node_clients,
            metrics: parts.metrics,
            nats: parts.nats,
            ws_url: parts.ws_url,
            auth_limiter,
            node_invokes,
            node_subscriptions: NodeSubscriptions::default(),
            paired_nodes: Default::default(),
            trusted_proxies: parking_lot::Mutex::new((u64::MAX, Arc::default())),
        }
    }

    /// The largest frame a client may send: the WebSocket limit, in a cluster too (what one
    /// NATS message cannot hold goes to the object store, `argent_planes::blobs`).
    pub fn max_payload(&self) -> usize {
        argent_proto::limits::MAX_PAYLOAD
    }

    /// The proxies whose forwarding headers are believed (`gateway.trustedProxies`): as of
    /// the config the last handshake read. Called on every accept, so it does not read the
    /// config file itself (only the first time).
    pub fn trusted_proxies(&self) -> Arc<TrustedProxies> {
        let cached = self.trusted_proxies.lock();
        if cached.0 != u64::MAX {
            return cached.1.clone();
        }
        drop(cached);
        self.refresh_trusted_proxies(&self.config())
    }

    /// Re-parses `gateway.trustedProxies` when `config` is a newer generation (each
    /// handshake reads the config anyway; a change applies from the next connection on).
    pub fn refresh_trusted_proxies(&self, config: &Loaded) -> Arc<TrustedProxies> {
        let mut cached = self.trusted_proxies.lock();
        if cached.0 != config.generation {
            let (trusted, problems) = TrustedProxies::from_config(&config.document);
            for problem in problems {
                tracing::warn!(%problem, "ignored in the config");
            }
            *cached = (config.generation, Arc::new(trusted));
        }
        cached.1.clone()
    }

    /// The `tick` period: the shared config's `gateway.tickIntervalMs` when set (applied
    /// live), else the command line's.
    pub fn tick_interval(&self) -> Duration {
        self.shared_config
            .get()
            .tick_interval_ms()
            .filter(|ms| (1_000..=3_600_000).contains(ms))
            .map_or(self.limits.tick_interval, Duration::from_millis)
    }

    /// The config document in force now (re-read when the file changed).
    pub fn config(&self) -> Loaded {
        self.config_file.load_shared().unwrap_or_else(|err| {
            tracing::warn!(%err, "config file unreadable; using environment secrets only");
            Loaded {
                document: Arc::new(serde_json::json!({})),
                generation: 0,
            }
        })
    }

    /// The shared secrets in force now.
    pub fn secrets(&self) -> SharedSecrets {
        self.secrets_in(&self.config())
    }

    /// The shared secrets a given config snapshot yields in this mode.
    pub fn secrets_in(&self, config: &Loaded) -> SharedSecrets {
        crate::config::resolve_secrets(
            &config.document,
            self.config_file.path(),
            self.mode.precedence(),
        )
    }

    pub fn is_draining(&self) -> bool {
        self.health.is_draining()
    }

    pub fn start_draining(&self) {
        self.health.start_draining()
    }

    /// Ready for traffic: not draining and, in cluster mode, connected to NATS.
    pub fn is_ready(&self) -> bool {
        !self.health.is_draining() && self.health.nats_connected()
    }

    /// Publishes an event (or a control message) to every gateway; a failure is logged,
    /// never returned: callers have already done their work.
    pub async fn publish(&self, name: &str, payload: &serde_json::Value) {
        if let Err(err) = self.bus.publish(BusEvent::new(name, payload)).await {
            tracing::warn!(event = name, %err, "not published");
        }
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
