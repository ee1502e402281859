//! The method and event catalog: the single source of truth for method names, their scope
//! class (PROTOCOL.md §3.2–§3.4), where they run, and `features.methods` / `features.events`.
//! [`authorize`] is the algorithm of §3.3 over it.

use crate::errors::RpcError;

/// Which scope a method needs (§3.2). `Admin` is also the class of every method that is in
/// none of upstream's read/write/approval/pairing lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Admin,
    Approvals,
    Pairing,
    /// `node.invoke.result`, `node.event`, `skills.bins`: role `node` only.
    NodeOnly,
}

/// How a forwarded method is routed to a node-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Capability a node must advertise to receive the call.
    pub capability: &'static str,
    /// Param whose value is the routing key (rendezvous hashing keeps one key on one node).
    pub route_param: Option<&'static str>,
    /// Safe to send again to another node when the first one died mid-call.
    pub idempotent: bool,
}

/// Where a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Answered by the gateway itself against the state plane.
    Gateway,
    /// Forwarded to a node-agent over gRPC.
    Node(Forward),
    /// In the catalog, but its capability is not built yet: answers `UNAVAILABLE`.
    Planned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: &'static str,
    pub access: Access,
    pub placement: Placement,
}

/// Capability of node-agents that serve agent identity and workspace documents.
pub const CAP_AGENTS: &str = "agents";

/// Internal method (not in the catalog clients see): the final result of an `agent` run,
/// asked by the gateway after the ack until the run ends.
pub const AGENT_RESULT: &str = "agent.result";

const fn m(name: &'static str, access: Access) -> MethodSpec {
    MethodSpec {
        name,
        access,
        placement: Placement::Planned,
    }
}

const fn gw(name: &'static str, access: Access) -> MethodSpec {
    MethodSpec {
        name,
        access,
        placement: Placement::Gateway,
    }
}

const fn node(
    name: &'static str,
    access: Access,
    capability: &'static str,
    route_param: Option<&'static str>,
    idempotent: bool,
) -> MethodSpec {
    MethodSpec {
        name,
        access,
        placement: Placement::Node(Forward {
            capability,
            route_param,
            idempotent,
        }),
    }
}

use Access::{Admin, Approvals, NodeOnly, Pairing, Read, Write};

/// Every method of PROTOCOL.md §3.4 and §5, in the order of the document.
pub const METHODS: &[MethodSpec] = &[
    // §5.1 chat
    node("chat.send", Write, CAP_AGENTS, Some("sessionKey"), true),
    node("chat.history", Read, CAP_AGENTS, Some("sessionKey"), true),
    node("chat.abort", Write, CAP_AGENTS, Some("sessionKey"), true),
    node("chat.inject", Admin, CAP_AGENTS, Some("sessionKey"), false),
    // Protocol 4 (PROTOCOL-v4.md §9): the Control UI opens a chat with it.
    node("chat.startup", Read, CAP_AGENTS, Some("sessionKey"), true),
    // Protocol 4: one whole message of a history whose rows were cut.
    node(
        "chat.message.get",
        Read,
        CAP_AGENTS,
        Some("sessionKey"),
        true,
    ),
    // §5.2 agent
    node("agent", Write, CAP_AGENTS, Some("sessionKey"), true),
    node("agent.wait", Write, CAP_AGENTS, Some("runId"), true),
    node(
        "agent.identity.get",
        Read,
        CAP_AGENTS,
        Some("agentId"),
        true,
    ),
    // §5.3 config
    gw("config.get", Admin),
    gw("config.set", Admin),
    gw("config.patch", Admin),
    gw("config.apply", Admin),
    gw("config.schema", Admin),
    // §5.4 sessions
    node("sessions.list", Read, CAP_AGENTS, None, true),
    node("sessions.preview", Read, CAP_AGENTS, None, true),
    node("sessions.reset", Admin, CAP_AGENTS, Some("key"), false),
    node("sessions.compact", Admin, CAP_AGENTS, Some("key"), false),
    m("sessions.delete", Admin),
    m("sessions.patch", Admin),
    m("sessions.search", Admin),
    m("sessions.resolve", Admin),
    node(
        "commands.compact",
        Write,
        CAP_AGENTS,
        Some("sessionKey"),
        false,
    ),
    m("commands.list", Read),
    // §5.5 cron
    node("cron.list", Read, CAP_AGENTS, None, true),
    node("cron.status", Read, CAP_AGENTS, None, true),
    node("cron.runs", Read, CAP_AGENTS, None, true),
    node("cron.add", Admin, CAP_AGENTS, None, false),
    node("cron.update", Admin, CAP_AGENTS, None, true),
    node("cron.run", Admin, CAP_AGENTS, None, false),
    node("cron.remove", Admin, CAP_AGENTS, None, true),
    // §5.6 models
    node("models.list", Read, CAP_AGENTS, None, true),
    // §5.7 knowledge
    m("knowledge.search", Read),
    m("knowledge.ingest", Write),
    m("knowledge.library.list", Read),
    m("knowledge.collections.list", Read),
    m("knowledge.vault.ingest", Write),
    m("knowledge.library.delete", Write),
    m("knowledge.library.reindex", Write),
    m("knowledge.collections.grant", Write),
    // §5.8 execution worker
    node("execution.worker.status", Read, CAP_AGENTS, None, true),
    node("execution.worker.runNow", Write, CAP_AGENTS, None, false),
    node("execution.worker.pause", Write, CAP_AGENTS, None, true),
    node("execution.worker.resume", Write, CAP_AGENTS, None, true),
    node(
        "execution.worker.metrics.reset",
        Write,
        CAP_AGENTS,
        None,
        false,
    ),
    // [EXT] the execution worker's task queues
    node("tasks.add", Write, CAP_AGENTS, None, false),
    node("tasks.list", Read, CAP_AGENTS, None, true),
    // §5.9 channels
    m("channels.status", Read),
    m("channels.logout", Admin),
    m("send", Write),
    // §5.10 health, status, presence
    gw("health", Read),
    gw("status", Read),
    gw("system-presence", Read),
    node("last-heartbeat", Read, CAP_AGENTS, None, true),
    node("set-heartbeats", Admin, CAP_AGENTS, None, true),
    m("system-event", Admin),
    node("wake", Write, CAP_AGENTS, None, false),
    m("talk.mode", Write),
    // §5.11 tts
    m("tts.status", Read),
    m("tts.convert", Write),
    m("tts.providers", Read),
    m("tts.enable", Write),
    m("tts.disable", Write),
    m("tts.setProvider", Write),
    // §5.12 agents
    node("agents.list", Read, CAP_AGENTS, None, true),
    node(
        "agents.files.list",
        Admin,
        CAP_AGENTS,
        Some("agentId"),
        true,
    ),
    node("agents.files.get", Admin, CAP_AGENTS, Some("agentId"), true),
    node("agents.files.set", Admin, CAP_AGENTS, Some("agentId"), true),
    m("agents.profile.get", Read),
    m("agents.profile.update", Write),
    // §5.13 pairing, nodes, devices
    gw("node.pair.request", Pairing),
    gw("node.pair.list", Pairing),
    gw("node.pair.approve", Pairing),
    gw("node.pair.reject", Pairing),
    gw("node.pair.verify", Pairing),
    gw("node.rename", Pairing),
    gw("device.pair.list", Pairing),
    gw("device.pair.approve", Pairing),
    gw("device.pair.reject", Pairing),
    gw("device.token.rotate", Pairing),
    gw("device.token.revoke", Pairing),
    gw("node.list", Read),
    gw("node.describe", Read),
    gw("node.invoke", Write),
    gw("node.invoke.result", NodeOnly),
    gw("node.event", NodeOnly),
    gw("skills.bins", NodeOnly),
    // §5.14 exec approvals
    gw("exec.approval.request", Approvals),
    gw("exec.approval.resolve", Approvals),
    // Protocol 4 (PROTOCOL-v4.md §9): pending approvals, for clients that connect later.
    gw("exec.approval.list", Approvals),
    m("exec.approvals.get", Admin),
    m("exec.approvals.set", Admin),
    m("exec.approvals.node.get", Admin),
    m("exec.approvals.node.set", Admin),
    // §3.4 / §5.15 other methods real clients call
    m("usage.status", Read),
    node("usage.cost", Read, CAP_AGENTS, None, true),
    gw("logs.tail", Read),
    // Protocol 4 (PROTOCOL-v4.md §9).
    gw("diagnostics.stability", Read),
    gw("sessions.subscribe", Read),
    gw("sessions.unsubscribe", Read),
    gw("sessions.messages.subscribe", Read),
    gw("sessions.messages.unsubscribe", Read),
    m("family.members", Read),
    m("family.telemetry", Read),
    m("family.register", Write),
    m("skills.status", Read),
    m("skills.personal", Read),
    // [QUIRK] mutating methods in upstream's read list.
    m("skills.personal.update", Read),
    m("skills.personal.resolveConflict", Read),
    m("skills.personal.delete", Read),
    m("skills.install", Admin),
    m("skills.update", Admin),
    m("tools.status", Read),
    m("voicewake.get", Read),
    m("voicewake.set", Write),
    m("connectors.catalog", Read),
    m("credentials.list", Read),
    m("workflows.list", Read),
    m("jobs.overview", Read),
    m("providers.status", Read),
    m("terminal.create", Write),
    m("terminal.write", Write),
    m("terminal.resize", Write),
    m("terminal.kill", Write),
    m("terminal.read", Admin),
    m("browser.request", Write),
    m("contemplation.runOnce", Write),
    m("poll", Admin),
];

/// Methods the seed's `device` role may call besides the read methods (§3.1, [EXT]).
const DEVICE_EXTRA: [&str; 7] = [
    "chat.send",
    "chat.history",
    "chat.abort",
    "agent",
    "agent.wait",
    "tts.convert",
    "talk.mode",
];

/// Looks a method up by name.
pub fn lookup(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|spec| spec.name == name)
}

/// Every method of the catalog.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|spec| spec.name).collect()
}

/// `features.methods` of `hello-ok`: the methods this server handles — the catalog minus
/// the ones that still answer `not implemented yet`. It grows as capabilities land.
pub fn handled_method_names() -> Vec<&'static str> {
    METHODS
        .iter()
        .filter(|spec| spec.placement != Placement::Planned)
        .map(|spec| spec.name)
        .collect()
}

/// Connection roles (§3.1). `Device` is the seed's role [EXT].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Operator,
    Node,
    Device,
}

impl Role {
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "operator" => Some(Role::Operator),
            "node" => Some(Role::Node),
            "device" => Some(Role::Device),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Node => "node",
            Role::Device => "device",
        }
    }
}

pub const SCOPE_ADMIN: &str = "operator.admin";
pub const SCOPE_READ: &str = "operator.read";
pub const SCOPE_WRITE: &str = "operator.write";
pub const SCOPE_APPROVALS: &str = "operator.approvals";
pub const SCOPE_PAIRING: &str = "operator.pairing";

/// Every operator scope (§3.2).
pub const OPERATOR_SCOPES: [&str; 5] = [
    SCOPE_ADMIN,
    SCOPE_READ,
    SCOPE_WRITE,
    SCOPE_APPROVALS,
    SCOPE_PAIRING,
];

/// The authorization algorithm of §3.3, run on every request after the handshake.
/// Failures are `INVALID_REQUEST` with `details.jsonrpcCode = -32002`; the socket stays open.
pub fn authorize(role: Role, scopes: &[String], method: &str) -> Result<(), RpcError> {
    let access = lookup(method).map(|spec| spec.access);
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let denied = |what: String| Err(RpcError::unauthorized(what));

    if access == Some(Access::NodeOnly) {
        return if role == Role::Node {
            Ok(())
        } else {
            denied(format!("unauthorized role: {}", role.as_str()))
        };
    }
    match role {
        Role::Node => return denied("unauthorized role: node".into()),
        Role::Device => {
            let granted = access == Some(Access::Read) || DEVICE_EXTRA.contains(&method);
            return if granted {
                Ok(())
            } else {
                denied("unauthorized role: device".into())
            };
        }
        Role::Operator => {}
    }
    if has(SCOPE_ADMIN) {
        return Ok(());
    }
    match access {
        Some(Access::Approvals) if !has(SCOPE_APPROVALS) => {
            denied(format!("missing scope: {SCOPE_APPROVALS}"))
        }
        Some(Access::Pairing) if !has(SCOPE_PAIRING) => {
            denied(format!("missing scope: {SCOPE_PAIRING}"))
        }
        Some(Access::Read) if !(has(SCOPE_READ) || has(SCOPE_WRITE)) => {
            denied(format!("missing scope: {SCOPE_READ}"))
        }
        Some(Access::Write) if !has(SCOPE_WRITE) => denied(format!("missing scope: {SCOPE_WRITE}")),
        Some(Access::Approvals | Access::Pairing | Access::Read | Access::Write) => Ok(()),
        _ => denied(format!("missing scope: {SCOPE_ADMIN}")),
    }
}

/// Who may receive an event (§3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every operator (and device) connection.
    Everyone,
    /// Operators with `operator.approvals` or `operator.admin`.
    Approvals,
    /// Operators with `operator.pairing` or `operator.admin`.
    Pairing,
    /// Operators with `operator.write` or `operator.admin` (`terminal`, our SHOULD of §4.2).
    Writers,
    /// Sent to chosen connections only; never broadcast, carries no `seq`.
    Targeted,
    /// Protocol-4 connections that subscribed to it (`sessions.subscribe`,
    /// `sessions.messages.subscribe` for the event's session).
    Subscribers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    pub name: &'static str,
    pub audience: Audience,
    /// May be skipped for a slow client instead of closing it (§1.7). `chat` deltas are
    /// droppable too; that is decided per payload.
    pub droppable: bool,
    /// Node connections receive it (§3.5: only targeted events plus `tick` and `shutdown`).
    pub to_nodes: bool,
}

const fn ev(name: &'static str, audience: Audience, droppable: bool) -> EventSpec {
    EventSpec {
        name,
        audience,
        droppable,
        to_nodes: false,
    }
}

/// `features.events` (§4.1), in upstream's order.
pub const EVENTS: &[EventSpec] = &[
    ev("connect.challenge", Audience::Targeted, false),
    ev("agent", Audience::Everyone, false),
    ev("chat", Audience::Everyone, false),
    ev("presence", Audience::Everyone, true),
    EventSpec {
        name: "tick",
        audience: Audience::Everyone,
        droppable: true,
        to_nodes: true,
    },
    ev("talk.mode", Audience::Everyone, true),
    ev("talk.realtime.relay", Audience::Everyone, true),
    ev("intent.simulation", Audience::Everyone, true),
    EventSpec {
        name: "shutdown",
        audience: Audience::Everyone,
        droppable: false,
        to_nodes: true,
    },
    ev("health", Audience::Everyone, false),
    ev("heartbeat", Audience::Everyone, true),
    ev("cron", Audience::Everyone, true),
    ev("node.pair.requested", Audience::Pairing, true),
    ev("node.pair.resolved", Audience::Pairing, true),
    ev("node.invoke.request", Audience::Targeted, false),
    ev("device.pair.requested", Audience::Pairing, true),
    ev("device.pair.resolved", Audience::Pairing, true),
    ev("voicewake.changed", Audience::Targeted, true),
    ev("exec.approval.requested", Audience::Approvals, true),
    ev("exec.approval.resolved", Audience::Approvals, true),
    ev("terminal", Audience::Writers, false),
    // Protocol 4 (PROTOCOL-v4.md §8.4), for subscribers only.
    ev("sessions.changed", Audience::Subscribers, true),
    ev("session.message", Audience::Subscribers, false),
];

/// Looks up an event; unadvertised events (§4.3) get the default: everyone, droppable.
pub fn event_spec(name: &str) -> EventSpec {
    EVENTS
        .iter()
        .find(|spec| spec.name == name)
        .copied()
        .unwrap_or(EventSpec {
            name: "",
            audience: Audience::Everyone,
            droppable: true,
            to_nodes: false,
        })
}

/// `features.events` of `hello-ok`.
pub fn event_names() -> Vec<&'static str> {
    EVENTS.iter().map(|spec| spec.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn catalog_has_no_duplicates() {
        let mut names = method_names();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn upstream_corrections_of_the_seed() {
        assert_eq!(lookup("config.set").unwrap().access, Access::Admin);
        assert_eq!(lookup("cron.add").unwrap().access, Access::Admin);
    }

    #[test]
    fn algorithm_order() {
        let read = scopes(&[SCOPE_READ]);
        assert!(authorize(Role::Operator, &read, "health").is_ok());
        assert_eq!(
            authorize(Role::Operator, &read, "chat.send")
                .unwrap_err()
                .message,
            "missing scope: operator.write"
        );
        assert_eq!(
            authorize(Role::Operator, &read, "unknown.thing")
                .unwrap_err()
                .message,
            "missing scope: operator.admin"
        );
        assert!(authorize(Role::Operator, &scopes(&[SCOPE_ADMIN]), "unknown.thing").is_ok());
        assert_eq!(
            authorize(Role::Operator, &scopes(&[SCOPE_ADMIN]), "node.event")
                .unwrap_err()
                .message,
            "unauthorized role: operator"
        );
        assert_eq!(
            authorize(Role::Node, &[], "health").unwrap_err().message,
            "unauthorized role: node"
        );
        assert!(authorize(Role::Node, &[], "skills.bins").is_ok());
        assert!(authorize(Role::Device, &[], "chat.send").is_ok());
        assert!(authorize(Role::Device, &[], "health").is_ok());
        assert_eq!(
            authorize(Role::Device, &[], "config.get")
                .unwrap_err()
                .message,
            "unauthorized role: device"
        );
        let write = scopes(&[SCOPE_WRITE]);
        assert!(authorize(Role::Operator, &write, "health").is_ok());
        assert_eq!(
            authorize(Role::Operator, &write, "exec.approval.resolve")
                .unwrap_err()
                .message,
            "missing scope: operator.approvals"
        );
        assert_eq!(
            authorize(Role::Operator, &write, "device.pair.list")
                .unwrap_err()
                .message,
            "missing scope: operator.pairing"
        );
    }
}
