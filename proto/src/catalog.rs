//! The method and event catalog: the single source of truth for every fact about a method —
//! its name, scope class (PROTOCOL.md §3.2–§3.4), where it runs and how it is routed, the
//! protocol versions that know it, how long the gateway waits for it and how it answers —
//! and for `features.methods` / `features.events`. [`authorize`] is the algorithm of §3.3
//! over it.
//!
//! A method that runs somewhere names its handler by a variant of [`GatewayMethod`] or
//! [`NodeMethod`]. Both dispatchers (`argent_gateway::methods::call`, the node-agent's
//! `Worker`) `match` those enums without a wildcard, so a catalog entry without a handler
//! does not compile, and a unit test below checks that every variant has exactly one entry.

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

/// Declares a handler enum and the list of its variants (for the completeness test).
macro_rules! handler_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }
    };
}

handler_enum! {
    /// The handler of a method the gateway answers itself, against the state plane.
    GatewayMethod {
        Health, Status, SystemPresence, LogsTail, DiagnosticsStability,
        ConfigGet, ConfigSet, ConfigPatch, ConfigApply, ConfigSchema, ConfigSchemaLookup,
        ExecApprovalRequest, ExecApprovalResolve, ExecApprovalList, ExecApprovalsGet, ExecApprovalsSet,
        SessionsSubscribe, SessionsUnsubscribe, SessionsMessagesSubscribe,
        SessionsMessagesUnsubscribe,
        DevicePairList, DevicePairApprove, DevicePairReject, DeviceTokenRotate,
        DeviceTokenRevoke,
        NodePairRequest, NodePairList, NodePairApprove, NodePairReject, NodePairVerify,
        NodeRename, NodeList, NodeDescribe, NodeInvoke, NodeInvokeResult, NodeEvent,
        SkillsBins,
        QuestionList, UpdateStatus, OpenclawApprovalList, PluginApprovalList,
        SessionsObserverVisibility, SessionsCompanionState, SessionsBranchesList,
        ProgressCardGet, TalkCatalog, ChatMetadata, PluginsList, SkillsSearch,
        SkillsLibraryList, ChannelsPairingList, PluginsCatalogBrowse,
        SystemInfo, EnvironmentsList, ModelsAuthStatus,
        UsageStatus, ThemesList, ToolsGithubStatus, DoctorMemoryStatus, ApprovalHistory,
        WorktreesList, TranscriptsList, SkillsStatus, MigrationsMemoryPlan,
        ExecApprovalGrantsList, ArtifactsList,
        TalkMode, SystemEvent,
    }
}

handler_enum! {
    /// The handler of a method a node-agent executes.
    NodeMethod {
        ChatSend, ChatHistory, ChatAbort, ChatInject, ChatStartup, ChatMessageGet,
        Agent, AgentWait, AgentResult, AgentIdentityGet,
        SessionsList, SessionsDescribe, SessionsPreview, SessionsReset, SessionsCompact, SessionsPatch, CommandsCompact,
        CronList, CronStatus, CronRuns, CronAdd, CronUpdate, CronRun, CronRemove,
        ModelsList,
        ExecutionWorkerStatus, ExecutionWorkerRunNow, ExecutionWorkerPause,
        ExecutionWorkerResume, ExecutionWorkerMetricsReset,
        TasksAdd, TasksList,
        LastHeartbeat, SetHeartbeats, Wake,
        AgentsList, AgentsFilesList, AgentsFilesGet, AgentsFilesSet,
        UsageCost, SessionsUsage, DiagnosticsLanes, WebSearchStatus,
        KnowledgeSearch, KnowledgeIngest, KnowledgeVaultIngest, KnowledgeLibraryList,
        KnowledgeLibraryDelete, KnowledgeLibraryReindex, KnowledgeCollectionsList,
        KnowledgeCollectionsGrant,
        TtsStatus, TtsConvert, TtsProviders, TtsEnable, TtsDisable, TtsSetProvider,
        ChannelsStatus, ChannelsLogout, Send, ChannelsWebhook,
    }
}

/// Where a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Answered by the gateway itself against the state plane.
    Gateway(GatewayMethod),
    /// Forwarded to a node-agent over gRPC.
    Node(NodeMethod, Forward),
    /// In the catalog, but its capability is not built yet: answers `UNAVAILABLE`.
    Planned,
}

/// The protocol versions whose clients know a method (PROTOCOL-v4.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Protocol 3 and 4.
    All,
    /// Protocol 4 only; a v3 connection is told `unknown method`.
    V4Only,
    /// No client: called by gateways on node-agents only ([`AGENT_RESULT`]).
    Internal,
}

/// How long the gateway waits for a forwarded method. Whatever the rule asks, the wait is
/// at least the gateway's configured call timeout, and 5 s are added for the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The configured call timeout (`--call-timeout-ms`).
    Default,
    /// The method itself waits as long as a param says (`agent.wait`'s `timeoutMs`).
    FromParam {
        param: &'static str,
        default_ms: u64,
        max_ms: u64,
    },
    /// The method is known to take this long at most (a model-written summary, a forced
    /// cron run).
    Fixed(u64),
}

impl Timeout {
    /// How long the method itself may take for these params, in milliseconds.
    pub fn asked_ms(self, params: &serde_json::Value) -> u64 {
        match self {
            Timeout::Default => 0,
            Timeout::FromParam {
                param,
                default_ms,
                max_ms,
            } => params
                .get(param)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(default_ms)
                .min(max_ms),
            Timeout::Fixed(ms) => ms,
        }
    }
}

/// How a method answers the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// One response.
    Once,
    /// An ack at once, then the final result when the run ends (`agent`, §1.4): the gateway
    /// asks the node for [`AGENT_RESULT`] until it has it.
    AckThenFinal,
    /// On protocol 4 the gateway cuts the node's whole list into pages (`cron.list`,
    /// PROTOCOL-v4.md §9); protocol 3 gets the list as the node answers it.
    PagedOnV4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: &'static str,
    pub access: Access,
    pub placement: Placement,
    pub versions: Versions,
    pub timeout: Timeout,
    pub answer: Answer,
}

impl MethodSpec {
    const fn new(name: &'static str, access: Access, placement: Placement) -> Self {
        MethodSpec {
            name,
            access,
            placement,
            versions: Versions::All,
            timeout: Timeout::Default,
            answer: Answer::Once,
        }
    }

    const fn v4_only(mut self) -> Self {
        self.versions = Versions::V4Only;
        self
    }

    const fn waits(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Forwarded to nodes with `capability` instead.
    const fn on(mut self, capability: &'static str) -> Self {
        if let Placement::Node(method, forward) = self.placement {
            self.placement = Placement::Node(
                method,
                Forward {
                    capability,
                    ..forward
                },
            );
        }
        self
    }

    const fn answers(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }

    /// The node-agent handler, for a forwarded method.
    pub fn node_method(&self) -> Option<NodeMethod> {
        match self.placement {
            Placement::Node(method, _) => Some(method),
            _ => None,
        }
    }
}

/// Capability of node-agents that serve agent identity and workspace documents.
pub const CAP_AGENTS: &str = "agents";

/// Capability of node-agents that keep a knowledge index (`knowledge.*`).
pub const CAP_KNOWLEDGE: &str = "knowledge";

/// Capability of node-agents that speak (`tts.*`).
pub const CAP_TTS: &str = "tts";

/// Capability of node-agents that run chat channels (`channels.*`, `send`).
pub const CAP_CHANNELS: &str = "channels";

/// Internal method (not in the catalog clients see): the final result of an `agent` run,
/// asked by the gateway after the ack until the run ends.
pub const AGENT_RESULT: &str = "agent.result";

const fn planned(name: &'static str, access: Access) -> MethodSpec {
    MethodSpec::new(name, access, Placement::Planned)
}

const fn gw(name: &'static str, access: Access, method: GatewayMethod) -> MethodSpec {
    MethodSpec::new(name, access, Placement::Gateway(method))
}

/// A method of the agent runtime (capability `agents`).
const fn node(
    name: &'static str,
    access: Access,
    method: NodeMethod,
    route_param: Option<&'static str>,
    idempotent: bool,
) -> MethodSpec {
    let forward = Forward {
        capability: CAP_AGENTS,
        route_param,
        idempotent,
    };
    MethodSpec::new(name, access, Placement::Node(method, forward))
}

/// A knowledge method: any node with a knowledge index serves it (each index reflects the
/// whole library), and every one of them is safe to send again (an ingest replaces the
/// same documents).
const fn knowledge(name: &'static str, access: Access, method: NodeMethod) -> MethodSpec {
    node(name, access, method, None, true).on(CAP_KNOWLEDGE)
}

/// A speech method: any node that speaks serves it (preferences are shared state), and
/// each is safe to send again (a conversion makes new audio; the others set a value).
const fn tts(name: &'static str, access: Access, method: NodeMethod) -> MethodSpec {
    node(name, access, method, None, true).on(CAP_TTS)
}

/// A chat-channel method: any node with the channel service serves it (receivers' state
/// is shared), and each is safe to send again (`send` by its idempotency key, the others
/// read or set state).
const fn channels(name: &'static str, access: Access, method: NodeMethod) -> MethodSpec {
    node(name, access, method, None, true).on(CAP_CHANNELS)
}

/// `channels.status {probe:true}` waits for every probe, each within `timeoutMs`.
const PROBE: Timeout = Timeout::FromParam {
    param: "timeoutMs",
    default_ms: 10_000,
    max_ms: 60_000,
};

/// A `send` may wait for an earlier call with its key (30 s), then deliver (30 s a part).
const DELIVERY: Timeout = Timeout::Fixed(65_000);

/// A conversion tries each configured provider in turn, within two minutes.
const SPEECH: Timeout = Timeout::Fixed(125_000);

/// Extracting, chunking and embedding many files takes a while.
const INGEST: Timeout = Timeout::Fixed(300_000);

use Access::{Admin, Approvals, NodeOnly, Pairing, Read, Write};
use GatewayMethod as G;
use NodeMethod as N;

/// A model-written summary may take up to two minutes.
const COMPACTION: Timeout = Timeout::Fixed(125_000);
const SESSION: Option<&str> = Some("sessionKey");
const AGENT_ID: Option<&str> = Some("agentId");

/// Every method of PROTOCOL.md §3.4 and §5, in the order of the document.
pub const METHODS: &[MethodSpec] = &[
    // §5.1 chat
    node("chat.send", Write, N::ChatSend, SESSION, true),
    node("chat.history", Read, N::ChatHistory, SESSION, true),
    node("chat.abort", Write, N::ChatAbort, SESSION, true),
    node("chat.inject", Admin, N::ChatInject, SESSION, false),
    // Protocol 4 (PROTOCOL-v4.md §9): the Control UI opens a chat with it.
    node("chat.startup", Read, N::ChatStartup, SESSION, true).v4_only(),
    // Protocol 4: one whole message of a history whose rows were cut.
    node("chat.message.get", Read, N::ChatMessageGet, SESSION, true).v4_only(),
    // §5.2 agent
    node("agent", Write, N::Agent, SESSION, true).answers(Answer::AckThenFinal),
    node("agent.wait", Write, N::AgentWait, Some("runId"), true).waits(Timeout::FromParam {
        param: "timeoutMs",
        default_ms: 30_000,
        max_ms: 600_000,
    }),
    node(
        "agent.identity.get",
        Read,
        N::AgentIdentityGet,
        AGENT_ID,
        true,
    ),
    // §5.3 config
    gw("config.get", Admin, G::ConfigGet),
    gw("config.set", Admin, G::ConfigSet),
    gw("config.patch", Admin, G::ConfigPatch),
    gw("config.apply", Admin, G::ConfigApply),
    gw("config.schema", Admin, G::ConfigSchema),
    // Protocol 4: one node of the schema (read there, like `config.schema`).
    gw("config.schema.lookup", Admin, G::ConfigSchemaLookup).v4_only(),
    // §5.4 sessions
    node("sessions.list", Read, N::SessionsList, None, true),
    node("sessions.preview", Read, N::SessionsPreview, None, true),
    // Protocol 4: one row of `sessions.list`.
    node(
        "sessions.describe",
        Read,
        N::SessionsDescribe,
        Some("key"),
        true,
    )
    .v4_only(),
    node(
        "sessions.reset",
        Admin,
        N::SessionsReset,
        Some("key"),
        false,
    ),
    node(
        "sessions.compact",
        Admin,
        N::SessionsCompact,
        Some("key"),
        false,
    )
    .waits(COMPACTION),
    planned("sessions.delete", Admin),
    node("sessions.patch", Admin, N::SessionsPatch, Some("key"), true),
    planned("sessions.search", Admin),
    planned("sessions.resolve", Admin),
    node(
        "commands.compact",
        Write,
        N::CommandsCompact,
        SESSION,
        false,
    )
    .waits(COMPACTION),
    planned("commands.list", Read),
    // §5.5 cron
    node("cron.list", Read, N::CronList, None, true).answers(Answer::PagedOnV4),
    node("cron.status", Read, N::CronStatus, None, true),
    node("cron.runs", Read, N::CronRuns, None, true),
    node("cron.add", Admin, N::CronAdd, None, false),
    node("cron.update", Admin, N::CronUpdate, None, true),
    // A forced run answers when the job finished (an agent turn: ≤ 10 min).
    node("cron.run", Admin, N::CronRun, None, false).waits(Timeout::Fixed(605_000)),
    node("cron.remove", Admin, N::CronRemove, None, true),
    // §5.6 models
    node("models.list", Read, N::ModelsList, None, true),
    // §5.7 knowledge
    knowledge("knowledge.search", Read, N::KnowledgeSearch),
    knowledge("knowledge.ingest", Write, N::KnowledgeIngest).waits(INGEST),
    knowledge("knowledge.library.list", Read, N::KnowledgeLibraryList),
    knowledge(
        "knowledge.collections.list",
        Read,
        N::KnowledgeCollectionsList,
    ),
    knowledge("knowledge.vault.ingest", Write, N::KnowledgeVaultIngest).waits(INGEST),
    knowledge("knowledge.library.delete", Write, N::KnowledgeLibraryDelete),
    knowledge(
        "knowledge.library.reindex",
        Write,
        N::KnowledgeLibraryReindex,
    )
    .waits(INGEST),
    knowledge(
        "knowledge.collections.grant",
        Write,
        N::KnowledgeCollectionsGrant,
    ),
    // §5.8 execution worker
    node(
        "execution.worker.status",
        Read,
        N::ExecutionWorkerStatus,
        None,
        true,
    ),
    node(
        "execution.worker.runNow",
        Write,
        N::ExecutionWorkerRunNow,
        None,
        false,
    ),
    node(
        "execution.worker.pause",
        Write,
        N::ExecutionWorkerPause,
        None,
        true,
    ),
    node(
        "execution.worker.resume",
        Write,
        N::ExecutionWorkerResume,
        None,
        true,
    ),
    node(
        "execution.worker.metrics.reset",
        Write,
        N::ExecutionWorkerMetricsReset,
        None,
        false,
    ),
    // [EXT] the execution worker's task queues
    node("tasks.add", Write, N::TasksAdd, None, false),
    node("tasks.list", Read, N::TasksList, None, true),
    // §5.9 channels
    channels("channels.status", Read, N::ChannelsStatus).waits(PROBE),
    channels("channels.logout", Admin, N::ChannelsLogout),
    // Safe to send again: the idempotency key's record delivers it once.
    channels("send", Write, N::Send).waits(DELIVERY),
    // §5.10 health, status, presence
    gw("health", Read, G::Health),
    gw("status", Read, G::Status),
    gw("system-presence", Read, G::SystemPresence),
    node("last-heartbeat", Read, N::LastHeartbeat, None, true),
    node("set-heartbeats", Admin, N::SetHeartbeats, None, true),
    gw("system-event", Admin, G::SystemEvent),
    node("wake", Write, N::Wake, None, false),
    gw("talk.mode", Write, G::TalkMode),
    // §5.11 tts
    tts("tts.status", Read, N::TtsStatus),
    tts("tts.convert", Write, N::TtsConvert).waits(SPEECH),
    tts("tts.providers", Read, N::TtsProviders),
    tts("tts.enable", Write, N::TtsEnable),
    tts("tts.disable", Write, N::TtsDisable),
    tts("tts.setProvider", Write, N::TtsSetProvider),
    // §5.12 agents
    node("agents.list", Read, N::AgentsList, None, true),
    node(
        "agents.files.list",
        Admin,
        N::AgentsFilesList,
        AGENT_ID,
        true,
    ),
    node("agents.files.get", Admin, N::AgentsFilesGet, AGENT_ID, true),
    node("agents.files.set", Admin, N::AgentsFilesSet, AGENT_ID, true),
    planned("agents.profile.get", Read),
    planned("agents.profile.update", Write),
    // §5.13 pairing, nodes, devices
    gw("node.pair.request", Pairing, G::NodePairRequest),
    gw("node.pair.list", Pairing, G::NodePairList),
    gw("node.pair.approve", Pairing, G::NodePairApprove),
    gw("node.pair.reject", Pairing, G::NodePairReject),
    gw("node.pair.verify", Pairing, G::NodePairVerify),
    gw("node.rename", Pairing, G::NodeRename),
    gw("device.pair.list", Pairing, G::DevicePairList),
    gw("device.pair.approve", Pairing, G::DevicePairApprove),
    gw("device.pair.reject", Pairing, G::DevicePairReject),
    gw("device.token.rotate", Pairing, G::DeviceTokenRotate),
    gw("device.token.revoke", Pairing, G::DeviceTokenRevoke),
    gw("node.list", Read, G::NodeList),
    gw("node.describe", Read, G::NodeDescribe),
    gw("node.invoke", Write, G::NodeInvoke),
    gw("node.invoke.result", NodeOnly, G::NodeInvokeResult),
    gw("node.event", NodeOnly, G::NodeEvent),
    gw("skills.bins", NodeOnly, G::SkillsBins),
    // §5.14 exec approvals
    gw("exec.approval.request", Approvals, G::ExecApprovalRequest),
    gw("exec.approval.resolve", Approvals, G::ExecApprovalResolve),
    // Protocol 4 (PROTOCOL-v4.md §9): pending approvals, for clients that connect later.
    gw("exec.approval.list", Approvals, G::ExecApprovalList).v4_only(),
    gw("exec.approvals.get", Admin, G::ExecApprovalsGet),
    gw("exec.approvals.set", Admin, G::ExecApprovalsSet),
    planned("exec.approvals.node.get", Admin),
    planned("exec.approvals.node.set", Admin),
    // §3.4 / §5.15 other methods real clients call
    gw("usage.status", Read, G::UsageStatus),
    node("usage.cost", Read, N::UsageCost, None, true),
    // Protocol 4: the dashboard's Usage page, and its Debug page's run queues.
    node("sessions.usage", Read, N::SessionsUsage, None, true).v4_only(),
    node("diagnostics.lanes", Read, N::DiagnosticsLanes, None, true).v4_only(),
    node("webSearch.status", Read, N::WebSearchStatus, AGENT_ID, true).v4_only(),
    // Protocol 4: settings pages of features this system does not have; each answers
    // upstream's empty shape (`gateway/src/methods/absent.rs`).
    gw("themes.list", Read, G::ThemesList).v4_only(),
    gw("tools.github.status", Read, G::ToolsGithubStatus).v4_only(),
    gw("doctor.memory.status", Read, G::DoctorMemoryStatus).v4_only(),
    gw("approval.history", Approvals, G::ApprovalHistory).v4_only(),
    gw("worktrees.list", Read, G::WorktreesList).v4_only(),
    gw("artifacts.list", Read, G::ArtifactsList).v4_only(),
    gw(
        "exec.approval.grants.list",
        Approvals,
        G::ExecApprovalGrantsList,
    )
    .v4_only(),
    gw("transcripts.list", Read, G::TranscriptsList).v4_only(),
    gw("migrations.memory.plan", Admin, G::MigrationsMemoryPlan).v4_only(),
    gw("logs.tail", Read, G::LogsTail),
    // Protocol 4 (PROTOCOL-v4.md §9).
    gw("diagnostics.stability", Read, G::DiagnosticsStability).v4_only(),
    gw("sessions.subscribe", Read, G::SessionsSubscribe).v4_only(),
    gw("sessions.unsubscribe", Read, G::SessionsUnsubscribe).v4_only(),
    gw(
        "sessions.messages.subscribe",
        Read,
        G::SessionsMessagesSubscribe,
    )
    .v4_only(),
    gw(
        "sessions.messages.unsubscribe",
        Read,
        G::SessionsMessagesUnsubscribe,
    )
    .v4_only(),
    // Protocol 4: the Control UI's calls for features this system does not have; each
    // answers upstream's empty or "unavailable" shape (gateway/src/methods/absent.rs).
    gw("question.list", Read, G::QuestionList).v4_only(),
    gw("update.status", Admin, G::UpdateStatus).v4_only(),
    gw("openclaw.approval.list", Approvals, G::OpenclawApprovalList).v4_only(),
    gw("plugin.approval.list", Approvals, G::PluginApprovalList).v4_only(),
    gw(
        "sessions.observer.visibility",
        Read,
        G::SessionsObserverVisibility,
    )
    .v4_only(),
    gw("sessions.companion.state", Read, G::SessionsCompanionState).v4_only(),
    gw("sessions.branches.list", Read, G::SessionsBranchesList).v4_only(),
    gw("progressCard.get", Read, G::ProgressCardGet).v4_only(),
    gw("talk.catalog", Read, G::TalkCatalog).v4_only(),
    gw("chat.metadata", Read, G::ChatMetadata).v4_only(),
    gw("plugins.list", Read, G::PluginsList).v4_only(),
    gw("skills.search", Read, G::SkillsSearch).v4_only(),
    gw("skills.library.list", Read, G::SkillsLibraryList).v4_only(),
    gw("channels.pairing.list", Pairing, G::ChannelsPairingList).v4_only(),
    gw("plugins.catalog.browse", Read, G::PluginsCatalogBrowse).v4_only(),
    // Protocol 4: about this system (gateway/src/methods/host.rs).
    gw("system.info", Read, G::SystemInfo).v4_only(),
    gw("environments.list", Read, G::EnvironmentsList).v4_only(),
    gw("models.authStatus", Read, G::ModelsAuthStatus).v4_only(),
    planned("family.members", Read),
    planned("family.telemetry", Read),
    planned("family.register", Write),
    gw("skills.status", Read, G::SkillsStatus),
    planned("skills.personal", Read),
    // [QUIRK] mutating methods in upstream's read list.
    planned("skills.personal.update", Read),
    planned("skills.personal.resolveConflict", Read),
    planned("skills.personal.delete", Read),
    planned("skills.install", Admin),
    planned("skills.update", Admin),
    planned("tools.status", Read),
    planned("voicewake.get", Read),
    planned("voicewake.set", Write),
    planned("connectors.catalog", Read),
    planned("credentials.list", Read),
    planned("workflows.list", Read),
    planned("jobs.overview", Read),
    planned("providers.status", Read),
    planned("terminal.create", Write),
    planned("terminal.write", Write),
    planned("terminal.resize", Write),
    planned("terminal.kill", Write),
    planned("terminal.read", Admin),
    planned("browser.request", Write),
    planned("contemplation.runOnce", Write),
    planned("poll", Admin),
];

/// How [`AGENT_RESULT`] is routed: to any node (the run record is shared), by the run id.
pub const AGENT_RESULT_FORWARD: Forward = Forward {
    capability: CAP_AGENTS,
    route_param: Some("runId"),
    idempotent: true,
};

/// [`AGENT_RESULT`]'s entry; its longest single wait is 25 s, then the gateway asks again.
pub const AGENT_RESULT_METHOD: MethodSpec = MethodSpec {
    versions: Versions::Internal,
    timeout: Timeout::Fixed(25_000),
    ..MethodSpec::new(
        AGENT_RESULT,
        Admin,
        Placement::Node(N::AgentResult, AGENT_RESULT_FORWARD),
    )
};

/// Internal method: a request to a gateway's channel webhook URL
/// (`/channels/<channel>/<account>/webhook`), handed to any node with the channel service,
/// which checks it and stores its messages for the account's receiver.
pub const CHANNELS_WEBHOOK: &str = "channels.webhook";

/// [`CHANNELS_WEBHOOK`]'s entry: safe to send again (messages are stored once by id).
pub const CHANNELS_WEBHOOK_METHOD: MethodSpec = MethodSpec {
    versions: Versions::Internal,
    ..MethodSpec::new(
        CHANNELS_WEBHOOK,
        Admin,
        Placement::Node(
            N::ChannelsWebhook,
            Forward {
                capability: CAP_CHANNELS,
                route_param: None,
                idempotent: true,
            },
        ),
    )
};

/// Methods no client calls: gateways call them on node-agents.
pub const INTERNAL_METHODS: &[MethodSpec] = &[AGENT_RESULT_METHOD, CHANNELS_WEBHOOK_METHOD];

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

/// Looks a client-facing method up by name.
pub fn lookup(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|spec| spec.name == name)
}

/// Looks up any method a node-agent may be asked to run, internal ones included.
pub fn lookup_node_method(name: &str) -> Option<&'static MethodSpec> {
    METHODS
        .iter()
        .chain(INTERNAL_METHODS)
        .find(|spec| spec.name == name && spec.node_method().is_some())
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

    /// Every handler variant names exactly one catalog entry, so the exhaustive `match`es
    /// of the two dispatchers cover the catalog and nothing else.
    #[test]
    fn every_handler_has_exactly_one_entry() {
        let all = || METHODS.iter().chain(INTERNAL_METHODS);
        for method in GatewayMethod::ALL {
            let entries: Vec<_> = all()
                .filter(|s| s.placement == Placement::Gateway(*method))
                .map(|s| s.name)
                .collect();
            assert_eq!(entries.len(), 1, "{method:?} has entries {entries:?}");
        }
        for method in NodeMethod::ALL {
            let entries: Vec<_> = all()
                .filter(|s| s.node_method() == Some(*method))
                .map(|s| s.name)
                .collect();
            assert_eq!(entries.len(), 1, "{method:?} has entries {entries:?}");
        }
        assert_eq!(
            lookup_node_method(AGENT_RESULT).and_then(|s| s.node_method()),
            Some(NodeMethod::AgentResult)
        );
        assert!(
            lookup(AGENT_RESULT).is_none(),
            "internal methods are hidden"
        );
        assert!(
            lookup_node_method("health").is_none(),
            "gateway methods are not forwarded"
        );
    }

    #[test]
    fn timeouts_follow_their_rule() {
        let wait = lookup("agent.wait").unwrap().timeout;
        assert_eq!(wait.asked_ms(&serde_json::json!({})), 30_000);
        assert_eq!(wait.asked_ms(&serde_json::json!({"timeoutMs": 5})), 5);
        assert_eq!(
            wait.asked_ms(&serde_json::json!({"timeoutMs": 9e9})),
            30_000
        );
        assert_eq!(
            wait.asked_ms(&serde_json::json!({"timeoutMs": 10_000_000})),
            600_000
        );
        assert_eq!(
            lookup("health")
                .unwrap()
                .timeout
                .asked_ms(&serde_json::json!({})),
            0
        );
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
