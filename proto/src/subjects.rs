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

/// `{runId?, sessionKey?, reason}`: abort a run (or every run of a session) wherever it runs.
pub const CONTROL_RUN_ABORT: &str = "_ctl.run.abort";
/// `{runId, message}`: inject a message into an active run at its next model turn.
pub const CONTROL_RUN_STEER: &str = "_ctl.run.steer";
/// `{runId}`: a run finished (wakes `agent.wait` and `agent` finals on every node).
pub const CONTROL_RUN_DONE: &str = "_ctl.run.done";
/// `{gatewayId, connId, event, payload}`: an event for one connection only (tool-stream
/// `agent` events go to the connection that started the run, §3.6).
pub const CONTROL_CONN_EVENT: &str = "_ctl.conn.event";

/// Subjects of the transcript stream: `argent.tx.<sessionId>`.
pub const TRANSCRIPT_PREFIX: &str = "argent.tx";
/// Archived transcripts (before a compaction): `argent.txa.<sessionId>.<ms>`.
pub const TRANSCRIPT_ARCHIVE_PREFIX: &str = "argent.txa";

pub fn transcript_subject(session_id: &str) -> String {
    format!("{TRANSCRIPT_PREFIX}.{session_id}")
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
/// Run records (status, final result; also the idempotency cache of `chat.send`/`agent`).
pub const BUCKET_RUNS: &str = "argent_runs";
/// Session run leases: key = session hash, value = holder, active run, queue.
pub const BUCKET_LEASES: &str = "argent_leases";
/// Session entries (`sessions.list`): key = hex of the canonical session key.
pub const BUCKET_SESSIONS: &str = "argent_sessions";
/// Cron jobs.
pub const BUCKET_CRON: &str = "argent_cron";
/// Execution-worker task queues, `<agentId>.<taskId>`.
pub const BUCKET_TASKS: &str = "argent_tasks";
/// The knowledge library, source of truth of every node's index: `doc.<documentId>` (a
/// document and all its chunks, one value so no reader sees half of one) and
/// `col.<collectionTag>` (a collection's owner and grants).
pub const BUCKET_KNOWLEDGE: &str = "argent_knowledge";
/// Chat channels (`node-agent/src/channels`): `acct.<channel>.<account>` (the receiver's
/// lease, its polling cursor and its status) and `last.<agent>` (the chat an agent last
/// answered).
pub const BUCKET_CHANNELS: &str = "argent_channels";
/// Chat channels' messages, kept a week: `in.<channel>.<account>.<message>` (an inbound
/// message, created once per platform message id: the dedupe and the inbox) and
/// `send.<hash>` (an outbound `send` by its idempotency key).
pub const BUCKET_CHANNEL_MESSAGES: &str = "argent_channel_msgs";
/// Exec approval requests while they wait for a decision (key = hex of the id).
pub const BUCKET_APPROVALS: &str = "argent_approvals";

/// Key of the whole configuration document in [`BUCKET_CONFIG`].
pub const CONFIG_KEY: &str = "argent.json";
