//! Prometheus metrics of the gateway, served at `/metrics` on the HTTP listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (authenticated or not).
    pub connections: Gauge,
    /// Handshakes by outcome (`ok`, `rejected`, `timeout`, `dropped`).
    pub handshakes: Family<Labels, Counter>,
    /// Requests by method and outcome (`ok` or the error code).
    pub requests: Family<Labels, Counter>,
    /// Seconds a forwarded call took, gateway to node and back.
    pub forward_seconds: Histogram,
    /// Forwarded calls retried on another node.
    pub forward_retries: Counter,
    /// Bytes queued for clients and not yet accepted by their sockets.
    pub outbound_queue_bytes: Gauge,
    /// Heap the connections' outbound paths hold: queue slots (used or not) of every
    /// connection plus the batch being written. An idle connection holds none, whatever it
    /// wrote before (memory per connection must not depend on past traffic).
    pub outbound_buffer_bytes: Gauge,
    /// Times the presence list was encoded (once per change, never per connection).
    pub presence_list_builds: Counter,
    /// Events delivered to connections.
    pub events_delivered: Counter,
    /// Drop-if-slow events skipped for slow clients.
    pub events_dropped: Counter,
    /// Clients closed with 1008 `slow consumer`.
    pub slow_consumers: Counter,
    /// 1 while NATS is connected (always 1 in the one-process default).
    pub nats_connected: Gauge,
    /// Node-agents currently live in the registry.
    pub live_nodes: Gauge,
    /// 1 while draining for shutdown.
    pub draining: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("argent_gateway");
        let connections = Gauge::default();
        let handshakes = Family::<Labels, Counter>::default();
        let requests = Family::<Labels, Counter>::default();
        let forward_seconds = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            5.0, 30.0,
        ]);
        let forward_retries = Counter::default();
        let outbound_queue_bytes = Gauge::default();
        let outbound_buffer_bytes = Gauge::default();
        let presence_list_builds = Counter::default();
        let events_delivered = Counter::default();
        let events_dropped = Counter::default();
        let slow_consumers = Counter::default();
        let nats_connected = Gauge::default();
        let live_nodes = Gauge::default();
        let draining = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register("handshakes", "Handshakes by outcome", handshakes.clone());
        registry.register(
            "requests",
            "Requests by method and outcome",
            requests.clone(),
        );
        registry.register(
            "forward_seconds",
            "Latency of calls forwarded to node-agents",
            forward_seconds.clone(),
        );
        registry.register(
            "forward_retries",
            "Forwarded calls retried on another node-agent",
            forward_retries.clone(),
        );
        registry.register(
            "outbound_queue_bytes",
            "Bytes queued for clients, not yet written",
            outbound_queue_bytes.clone(),
        );
        registry.register(
            "outbound_buffer_bytes",
            "Heap held by the connections' outbound queues and writes in progress",
            outbound_buffer_bytes.clone(),
        );
        registry.register(
            "presence_list_builds",
            "Times the presence list was encoded (once per change)",
            presence_list_builds.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to connections",
            events_delivered.clone(),
        );
        registry.register(
            "events_dropped",
            "Drop-if-slow events skipped for slow clients",
            events_dropped.clone(),
        );
        registry.register(
            "slow_consumers",
            "Clients closed as slow consumers",
            slow_consumers.clone(),
        );
        registry.register(
            "nats_connected",
            "1 while NATS is connected",
            nats_connected.clone(),
        );
        registry.register(
            "live_nodes",
            "Live node-agents in the registry",
            live_nodes.clone(),
        );
        registry.register(
            "draining",
            "1 while draining for shutdown",
            draining.clone(),
        );
        Metrics {
            registry,
            connections,
            handshakes,
            requests,
            forward_seconds,
            forward_retries,
            outbound_queue_bytes,
            outbound_buffer_bytes,
            presence_list_builds,
            events_delivered,
            events_dropped,
            slow_consumers,
            nats_connected,
            live_nodes,
            draining,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
