//! NATS subject and JetStream bucket names. Nobody spells them anywhere else.

/// Prefix of broadcast event subjects: `argent.evt.<event>`.
pub const EVENT_PREFIX: &str = "argent.evt";
/// Wildcard a gateway subscribes to for every broadcast event.
pub const EVENT_WILDCARD: &str = "argent.evt.>";

/// Subject a broadcast event travels on.
pub fn event_subject(event: &str) -> String {
    format!("{EVENT_PREFIX}.{event}")
}

/// Names of internal control messages that travel on the event bus between gateways and
/// are never delivered to clients.
pub const CONTROL_PREFIX: &str = "_ctl.";
/// `{deviceId, role?}`: close that device's connections (token revoked or rotated away,
/// pairing rejected) on every gateway.
pub const CONTROL_DEVICE_REMOVED: &str = "_ctl.device.removed";

/// `node.invoke` on its way to the gateway holding the node's socket.
pub const CONTROL_NODE_INVOKE: &str = "_ctl.node.invoke";
/// A node's answer on its way back to the gateway of the caller.
pub const CONTROL_NODE_RESULT: &str = "_ctl.node.result";

/// Run abort requests: `argent.ctl.abort.<runId>`.
pub fn abort_subject(run_id: &str) -> String {
    format!("argent.ctl.abort.{run_id}")
}

/// Shared configuration document(s).
pub const BUCKET_CONFIG: &str = "argent_config";
/// Tokens and pairing records.
pub const BUCKET_AUTH: &str = "argent_auth";
/// Live node-agents: key = node id, value = registration (address, capabilities, load).
pub const BUCKET_NODES: &str = "argent_nodes";
/// Live gateways: key = gateway id, value = registration.
pub const BUCKET_GATEWAYS: &str = "argent_gateways";
/// Connected clients: key = `<gatewayId>.<entry key hash>`, value = presence entry.
pub const BUCKET_PRESENCE: &str = "argent_presence";
/// Agent workspace documents: key = `<agentId>.<file name>`.
pub const BUCKET_AGENTS: &str = "argent_agents";
/// Run records and leases.
pub const BUCKET_RUNS: &str = "argent_runs";
/// Cron jobs.
pub const BUCKET_CRON: &str = "argent_cron";

/// Key of the whole configuration document in [`BUCKET_CONFIG`].
pub const CONFIG_KEY: &str = "argent.json";
