//! The health summary (PROTOCOL.md §5.10 `health`, §4.2 `health` event), aggregated across
//! the cluster, and its `stateVersion.health`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::{json, Value};

use argent_planes::members::GatewayRecord;
use argent_proto::frames::{EncodedEvent, StateVersion};

use crate::context::Ctx;

/// How long a computed summary is reused for snapshots (`hello-ok`).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

pub struct HealthState {
    cached: RwLock<Option<(Instant, Arc<Value>)>>,
    version: AtomicU64,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    pub fn new() -> Self {
        HealthState {
            cached: RwLock::new(None),
            version: AtomicU64::new(argent_proto::now_ms()),
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

/// This gateway's own registry record, as the cluster sees it.
pub fn self_record(ctx: &Ctx) -> GatewayRecord {
    GatewayRecord {
        id: ctx.gateway_id.clone(),
        host: ctx.host.clone(),
        version: ctx.version.to_string(),
        url: ctx.ws_url.clone(),
        connections: ctx.hub.len() as u64,
        draining: ctx.is_draining(),
        started_at_ms: ctx.started_at_ms,
        heartbeat_at_ms: argent_proto::now_ms(),
    }
}

/// `cluster: {gateways, nodes, degraded, reasons}` [EXT].
pub fn cluster_section(ctx: &Ctx) -> Value {
    let now = argent_proto::now_ms();
    // This gateway as it is now; the others as of their last heartbeat.
    let mut gateways: Vec<GatewayRecord> = ctx
        .gateways
        .live()
        .into_iter()
        .filter(|g| g.id != ctx.gateway_id)
        .collect();
    gateways.push(self_record(ctx));
    gateways.sort_by(|a, b| a.id.cmp(&b.id));
    let gateways: Vec<Value> = gateways
        .iter()
        .map(|g| {
            json!({"id": g.id, "host": g.host, "version": g.version, "url": g.url,
                   "connections": g.connections, "draining": g.draining,
                   "uptimeMs": now.saturating_sub(g.started_at_ms),
                   "self": g.id == ctx.gateway_id})
        })
        .collect();
    let nodes = ctx.nodes.live();
    ctx.metrics.live_nodes.set(nodes.len() as i64);
    let node_rows: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({"id": n.id, "address": n.address, "host": n.host, "version": n.version,
                   "capabilities": n.capabilities, "inFlight": n.in_flight,
                   "uptimeMs": now.saturating_sub(n.started_at_ms)})
        })
        .collect();
    let mut reasons = Vec::new();
    if !ctx.nats_connected() {
        reasons.push("NATS is unreachable: shared state and cross-gateway events are unavailable");
    }
    if nodes.is_empty() {
        reasons.push("no live node-agent: forwarded methods are unavailable");
    }
    json!({
        "mode": ctx.mode.name(),
        "gatewayId": ctx.gateway_id,
        "gateways": gateways,
        "nodes": node_rows,
        "degraded": !reasons.is_empty(),
        "reasons": reasons,
    })
}

fn critical_alerts(cluster: &Value, now: u64) -> Vec<Value> {
    let reasons = cluster["reasons"].as_array().cloned().unwrap_or_default();
    reasons
        .iter()
        .filter_map(Value::as_str)
        .map(|reason| {
            let (id, service, command) = if reason.starts_with("NATS") {
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

/// Computes the summary now.
pub fn compute(ctx: &Ctx) -> Value {
    let started = Instant::now();
    let now = argent_proto::now_ms();
    let config = ctx.shared_config.get();
    let agents = config.agents();
    let cluster = cluster_section(ctx);
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
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
        "heartbeatSeconds": config.heartbeat_every(&agents.default_id).map_or(0, |d| d.as_secs()),
        "defaultAgentId": agents.default_id,
        "agents": agent_rows,
        "authProviders": [],
        "sessions": {"path": "argent_runs", "count": 0, "recent": []},
        "criticalAlerts": critical_alerts(&cluster, now),
        "cluster": cluster,
    })
}

/// The summary for a snapshot: reused if younger than a second.
pub fn snapshot(ctx: &Ctx) -> Arc<Value> {
    if let Some((at, value)) = ctx.health.cached.read().as_ref() {
        if at.elapsed() < SNAPSHOT_MAX_AGE {
            return value.clone();
        }
    }
    refresh(ctx)
}

/// Recomputes and caches the summary, bumping `stateVersion.health`.
pub fn refresh(ctx: &Ctx) -> Arc<Value> {
    let value = Arc::new(compute(ctx));
    ctx.health.bump();
    *ctx.health.cached.write() = Some((Instant::now(), value.clone()));
    value
}

fn event(ctx: &Ctx, value: &Value) -> Arc<EncodedEvent> {
    let version = StateVersion {
        presence: ctx.presence.version(),
        health: ctx.health.version(),
    };
    Arc::new(EncodedEvent::from_value("health", value, Some(version)))
}

/// Recomputes and sends `health` to this gateway's connections (each gateway refreshes for
/// its own clients; the summary itself is cluster-wide).
pub fn broadcast(ctx: &Ctx) {
    let value = refresh(ctx);
    ctx.hub.deliver(&event(ctx, &value));
}

/// The `health` event a new connection gets right after `hello-ok`. Upstream broadcasts it
/// to everyone on every connect; only the new client needs it, and a connect storm would
/// otherwise send every client a health event per connect.
pub fn welcome(ctx: &Ctx) -> Arc<EncodedEvent> {
    event(ctx, &snapshot(ctx))
}
