//! The health summary (PROTOCOL.md §5.10 `health`, §4.2 `health` event), aggregated across
//! the cluster, and its `stateVersion.health`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::{json, Value};

use argent_planes::members::GatewayRecord;
use argent_proto::frames::{EncodedEvent, StateVersion};

use argent_planes::members::{Members, NodeRecord};
use argent_planes::state::StateStore;

use crate::config::Mode;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::shared_config::SharedConfigView;

/// A channel status older than this is not shown (its refresh runs every 10 s).
const CHANNELS_MAX_AGE: Duration = Duration::from_secs(35);

/// How long a computed summary is reused for snapshots (`hello-ok`).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// Who this gateway is, as its registry record and the summary show it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub gateway_id: String,
    pub host: String,
    pub version: &'static str,
    pub ws_url: String,
    pub started_at_ms: u64,
    pub mode: Mode,
}

/// What the summary is computed from: the cluster registry, this gateway's connections and
/// NATS link, the shared config; and the last summary with its `stateVersion.health`.
pub struct Health {
    pub identity: Identity,
    gateways: Members<GatewayRecord>,
    nodes: Members<NodeRecord>,
    hub: Arc<Hub>,
    presence: Arc<Presence>,
    shared_config: Arc<SharedConfigView>,
    metrics: Arc<Metrics>,
    nats: Option<async_nats::Client>,
    state: Arc<dyn StateStore>,
    draining: AtomicBool,
    cached: RwLock<Option<Arc<Summary>>>,
    version: AtomicU64,
    /// The last `channels.status` a node-agent answered, and when (the server's channel
    /// loop keeps it fresh): the channel sections of `health` and `status`.
    channels: RwLock<(Value, Instant)>,
}

/// A computed summary, encoded once (JSON text for `hello-ok` snapshots and `health`
/// events).
struct Summary {
    at: Instant,
    value: Arc<Value>,
    json: Arc<str>,
}

/// The handles [`Health`] reads.
pub struct HealthSources {
    pub gateways: Members<GatewayRecord>,
    pub nodes: Members<NodeRecord>,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub shared_config: Arc<SharedConfigView>,
    pub metrics: Arc<Metrics>,
    pub nats: Option<async_nats::Client>,
    pub state: Arc<dyn StateStore>,
}

impl Health {
    pub fn new(identity: Identity, sources: HealthSources) -> Self {
        Health {
            identity,
            gateways: sources.gateways,
            nodes: sources.nodes,
            hub: sources.hub,
            presence: sources.presence,
            shared_config: sources.shared_config,
            metrics: sources.metrics,
            nats: sources.nats,
            state: sources.state,
            draining: AtomicBool::new(false),
            cached: RwLock::new(None),
            version: AtomicU64::new(argent_proto::now_ms()),
            channels: RwLock::new((json!({}), Instant::now())),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    /// Connected to NATS (always true in the one-process default).
    pub fn nats_connected(&self) -> bool {
        match &self.nats {
            None => true,
            Some(client) => client.connection_state() == async_nats::connection::State::Connected,
        }
    }

    /// `stateVersion.health`: a millisecond clock that never goes backwards, so it keeps
    /// increasing when a client moves to another gateway.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    fn bump(&self) -> u64 {
        let now = argent_proto::now_ms();
        let mut current = self.version.load(Ordering::Relaxed);
        loop {
            let next = now.max(current + 1);
            match self
                .version
                .compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }
}

impl Health {
    /// This gateway's own registry record, as the cluster sees it.
    pub fn self_record(&self) -> GatewayRecord {
        let me = &self.identity;
        GatewayRecord {
            id: me.gateway_id.clone(),
            host: me.host.clone(),
            version: me.version.to_string(),
            url: me.ws_url.clone(),
            connections: self.hub.len() as u64,
            draining: self.is_draining(),
            started_at_ms: me.started_at_ms,
            heartbeat_at_ms: argent_proto::now_ms(),
        }
    }

    /// `cluster: {gateways, nodes, degraded, reasons}` [EXT].
    pub fn cluster_section(&self) -> Value {
        let me = &self.identity.gateway_id;
        let now = argent_proto::now_ms();
        // This gateway as it is now; the others as of their last heartbeat.
        let mut gateways: Vec<GatewayRecord> = self
            .gateways
            .live()
            .into_iter()
            .filter(|g| &g.id != me)
            .collect();
        gateways.push(self.self_record());
        gateways.sort_by(|a, b| a.id.cmp(&b.id));
        let gateways: Vec<Value> = gateways
            .iter()
            .map(|g| {
                json!({"id": g.id, "host": g.host, "version": g.version, "url": g.url,
                   "connections": g.connections, "draining": g.draining,
                   "uptimeMs": now.saturating_sub(g.started_at_ms),
                   "self": &g.id == me})
            })
            .collect();
        let nodes = self.nodes.live();
        self.metrics.live_nodes.set(nodes.len() as i64);
        let node_rows: Vec<Value> = nodes
            .iter()
            .map(|n| {
                json!({"id": n.id, "address": n.address, "host": n.host, "version": n.version,
                   "capabilities": n.capabilities, "inFlight": n.in_flight,
                   "uptimeMs": now.saturating_sub(n.started_at_ms)})
            })
            .collect();
        let mut reasons = Vec::new();
        if !self.nats_connected() {
            reasons
                .push("NATS is unreachable: shared state and cross-gateway events are unavailable");
        }
        if nodes.is_empty() {
            reasons.push("no live node-agent: forwarded methods are unavailable");
        }
        // The embedded store (a cluster's store is NATS, covered above) refuses writes after
        // a failed write to disk until the gateway is restarted.
        if self.nats.is_none() && !self.state.is_healthy() {
            reasons.push(STORE_REFUSES_WRITES);
        }
        json!({
            "mode": self.identity.mode.name(),
            "gatewayId": me,
            "gateways": gateways,
            "nodes": node_rows,
            "degraded": !reasons.is_empty(),
            "reasons": reasons,
        })
    }
}

const STORE_REFUSES_WRITES: &str =
    "the state store refuses writes since a write to disk failed (see the gateway log)";

fn critical_alerts(cluster: &Value, now: u64) -> Vec<Value> {
    let reasons = cluster["reasons"].as_array().cloned().unwrap_or_default();
    reasons
        .iter()
        .filter_map(Value::as_str)
        .map(|reason| {
            let (id, service, command) = if reason == STORE_REFUSES_WRITES {
                (
                    "state.store",
                    "state store",
                    "free or fix the disk under the state dir, then restart the gateway",
                )
            } else if reason.starts_with("NATS") {
                (
                    "cluster.nats",
                    "nats",
                    "check the NATS server and --nats URL of the gateways",
                )
            } else {
                (
                    "cluster.nodes",
                    "node-agent",
                    "start one: argent-node run --nats <url> --token <token>",
                )
            };
            json!({"id": id, "service": service, "severity": "critical", "status": "down",
                   "message": reason, "operatorCommand": command,
                   "lastSeenAt": now, "lastSuccessAt": null})
        })
        .collect()
}

impl Health {
    /// Computes the summary now.
    pub fn compute(&self) -> Value {
        let started = Instant::now();
        let now = argent_proto::now_ms();
        let config = self.shared_config.get();
        let agents = config.agents();
        let cluster = self.cluster_section();
        let channels = self.channels();
        let agent_rows: Vec<Value> = agents
        .agents
        .iter()
        .map(|a| {
            let every = config.heartbeat_every(&a.id);
            let heartbeat = match every {
                Some(every) => {
                    json!({"enabled": true, "every": humantime::format_duration(every).to_string(),
                                      "everyMs": every.as_millis() as u64})
                }
                None => json!({"enabled": false, "every": "disabled", "everyMs": null}),
            };
            let mut row = json!({
                "agentId": a.id, "isDefault": a.id == agents.default_id,
                "heartbeat": heartbeat,
                "sessions": {"count": 0, "recent": []},
            });
            if let Some(name) = &a.name {
                row["name"] = json!(name);
            }
            row
        })
        .collect();
        json!({
            "ok": true,
            "ts": now,
            "durationMs": started.elapsed().as_millis() as u64,
            "channels": channels.get("channels").cloned().unwrap_or(json!({})),
            "channelOrder": channels.get("channelOrder").cloned().unwrap_or(json!([])),
            "channelLabels": channels.get("channelLabels").cloned().unwrap_or(json!({})),
            "heartbeatSeconds": config.heartbeat_every(&agents.default_id).map_or(0, |d| d.as_secs()),
            "defaultAgentId": agents.default_id,
            "agents": agent_rows,
            "authProviders": [],
            "sessions": {"path": "argent_runs", "count": 0, "recent": []},
            "criticalAlerts": critical_alerts(&cluster, now),
            "cluster": cluster,
        })
    }

    pub fn set_channels(&self, status: Value) {
        *self.channels.write() = (status, Instant::now());
    }

    /// The last `channels.status`, or nothing once it is too old to be true (no node-agent
    /// with channels answered lately: nothing is known to run).
    fn channels(&self) -> Value {
        let (status, at) = &*self.channels.read();
        if at.elapsed() > CHANNELS_MAX_AGE {
            json!({})
        } else {
            status.clone()
        }
    }

    /// `status`'s channel lines (`Telegram default: running`) and `channelRuntime`
    /// (each channel's default account), from the last `channels.status`.
    pub fn channel_summary(&self) -> (Vec<String>, Value) {
        let status = self.channels();
        let mut lines = Vec::new();
        let mut runtime = serde_json::Map::new();
        let order = status["channelOrder"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for id in order.iter().filter_map(Value::as_str) {
            let label = status["channelLabels"][id].as_str().unwrap_or(id);
            let default = &status["channelDefaultAccountId"][id];
            for account in status["channelAccounts"][id]
                .as_array()
                .into_iter()
                .flatten()
            {
                if account["configured"] != true {
                    continue;
                }
                let running = account["running"] == true;
                let mut line = format!(
                    "{label} {}: {}",
                    account["accountId"].as_str().unwrap_or("?"),
                    if running { "running" } else { "stopped" }
                );
                if let Some(error) = account["lastError"].as_str() {
                    line.push_str(&format!(" (last error: {error})"));
                }
                lines.push(line);
                if account["accountId"] == *default {
                    let state = match (running, account["lastError"].is_string()) {
                        (true, _) => "running",
                        (false, true) => "error",
                        (false, false) => "stopped",
                    };
                    runtime.insert(
                        id.to_string(),
                        json!({"accountId": default, "running": running, "state": state,
                               "lastError": account["lastError"], "nextRetryAt": null}),
                    );
                }
            }
        }
        (lines, Value::Object(runtime))
    }

    /// The summary, reused if younger than a second.
    fn summary(&self) -> Arc<Summary> {
        if let Some(summary) = self.cached.read().as_ref() {
            if summary.at.elapsed() < SNAPSHOT_MAX_AGE {
                return summary.clone();
            }
        }
        self.recompute()
    }

    pub fn snapshot(&self) -> Arc<Value> {
        self.summary().value.clone()
    }

    /// The summary as JSON text (`hello-ok.snapshot.health`), encoded once per refresh.
    pub fn snapshot_json(&self) -> Arc<str> {
        self.summary().json.clone()
    }

    /// Recomputes the summary now (the `health` method's `probe`).
    pub fn refresh(&self) -> Arc<Value> {
        self.recompute().value.clone()
    }

    /// Recomputes, encodes and caches the summary, bumping `stateVersion.health`.
    fn recompute(&self) -> Arc<Summary> {
        let value = Arc::new(self.compute());
        self.bump();
        let json: Arc<str> = value.to_string().into();
        let summary = Arc::new(Summary {
            at: Instant::now(),
            value,
            json,
        });
        *self.cached.write() = Some(summary.clone());
        summary
    }

    /// Recomputes and sends `health` to this gateway's connections (each gateway refreshes for
    /// its own clients; the summary itself is cluster-wide).
    pub fn broadcast(&self) {
        let event = self.event(&self.recompute().json);
        self.hub.deliver(&event);
    }

    /// The `health` event a new connection gets right after `hello-ok` (the summary is
    /// encoded once per refresh). Upstream broadcasts it to everyone on every connect; only
    /// the new client needs it, and a connect storm would otherwise send every client a
    /// health event per connect.
    pub fn welcome(&self) -> Arc<EncodedEvent> {
        self.event(&self.summary().json)
    }

    /// A `health` event around the encoded summary, with the state versions of now (never
    /// older than what the client saw in `hello-ok`).
    fn event(&self, json: &str) -> Arc<EncodedEvent> {
        let version = StateVersion {
            presence: self.presence.version(),
            health: self.version(),
        };
        Arc::new(EncodedEvent::new("health", json, Some(version)))
    }
}
