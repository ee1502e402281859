//! The worker: executes one forwarded method against the state plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use argent_planes::calls::MethodHandler;
use argent_proto::catalog::{self, NodeMethod};
use argent_proto::errors::RpcError;
use argent_proto::grpc::Caller;

use crate::channels::Channels;
use crate::knowledge::Knowledge;
use crate::methods::{
    agents, automation, channels, chat, cron, diagnostics, knowledge, sessions, tts, usage,
};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::tts::Speech;

/// Capabilities this node-agent serves (catalog `Forward::capability`).
pub const CAPABILITIES: &[&str] = &[
    argent_proto::catalog::CAP_AGENTS,
    argent_proto::catalog::CAP_KNOWLEDGE,
    argent_proto::catalog::CAP_TTS,
    argent_proto::catalog::CAP_CHANNELS,
];

pub struct Worker {
    node_id: String,
    runtime: Arc<Runtime>,
    scheduler: Arc<Scheduler>,
    knowledge: Arc<Knowledge>,
    speech: Arc<Speech>,
    channels: Arc<Channels>,
    in_flight: AtomicU64,
}

/// Decrements the in-flight count however the call ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    pub fn new(
        node_id: String,
        runtime: Arc<Runtime>,
        knowledge: Arc<Knowledge>,
        speech: Arc<Speech>,
    ) -> Self {
        let channels = Channels::start(runtime.clone(), speech.clone());
        let scheduler = Scheduler::start(runtime.clone(), channels.clone());
        Worker {
            node_id,
            runtime,
            scheduler,
            knowledge,
            speech,
            channels,
            in_flight: AtomicU64::new(0),
        }
    }

    pub fn knowledge(&self) -> &Arc<Knowledge> {
        &self.knowledge
    }

    pub fn channels(&self) -> &Arc<Channels> {
        &self.channels
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Calls and runs being executed right now (reported as load in the registry).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed) + self.runtime.active_runs() as u64
    }
}

impl Worker {
    /// Runs one method. The `match` has no wildcard: a node method of the catalog without a
    /// handler does not compile.
    async fn execute(
        &self,
        method: NodeMethod,
        params: Value,
        caller: &Caller,
    ) -> Result<Value, RpcError> {
        use NodeMethod as M;
        let (rt, s, k) = (&self.runtime, &self.scheduler, self.knowledge.as_ref());
        let speech = self.speech.as_ref();
        let ch = self.channels.as_ref();
        match method {
            M::AgentsList => agents::list(rt, params).await,
            M::AgentIdentityGet => agents::identity_get(rt, params).await,
            M::AgentsFilesList => agents::files_list(rt, params).await,
            M::AgentsFilesGet => agents::files_get(rt, params).await,
            M::AgentsFilesSet => agents::files_set(rt, params).await,
            M::ChatSend => chat::send(rt, params, caller).await,
            M::ChatAbort => chat::abort(rt, params).await,
            M::ChatHistory => chat::history(rt, params, caller).await,
            M::ChatStartup => chat::startup(rt, params, caller).await,
            M::ChatMessageGet => chat::message_get(rt, params).await,
            M::ChatInject => chat::inject(rt, params).await,
            M::Agent => chat::agent(rt, params, caller).await,
            M::AgentWait => chat::wait(rt, params).await,
            M::AgentResult => chat::result(rt, params).await,
            M::SessionsList => sessions::list(rt, params).await,
            M::SessionsDescribe => sessions::describe(rt, params).await,
            M::SessionsPreview => sessions::preview(rt, params).await,
            M::SessionsReset => sessions::reset(rt, params).await,
            M::SessionsCompact => sessions::compact(rt, params).await,
            M::SessionsPatch => sessions::patch(rt, params).await,
            M::CommandsCompact => sessions::command_compact(rt, params).await,
            M::ModelsList => sessions::models(rt, params).await,
            M::UsageCost => usage::cost(rt, params).await,
            M::SessionsUsage => usage::sessions_usage(rt, params).await,
            M::DiagnosticsLanes => diagnostics::lanes(rt, params).await,
            M::WebSearchStatus => agents::web_search_status(rt, params).await,
            M::CronList => cron::list(s, params).await,
            M::CronStatus => cron::status(s, params).await,
            M::CronRuns => cron::runs(s, params).await,
            M::CronAdd => cron::add(s, params).await,
            M::CronUpdate => cron::update(s, params).await,
            M::CronRun => cron::run(s, params).await,
            M::CronRemove => cron::remove(s, params).await,
            M::LastHeartbeat => automation::last_heartbeat(s, params).await,
            M::SetHeartbeats => automation::set_heartbeats(s, params).await,
            M::Wake => automation::wake(s, params).await,
            M::TasksAdd => automation::tasks_add(s, params).await,
            M::TasksList => automation::tasks_list(s, params).await,
            M::ExecutionWorkerStatus => automation::worker_status_method(s, params).await,
            M::ExecutionWorkerRunNow => automation::worker_run_now(s, params).await,
            M::ExecutionWorkerPause => automation::worker_pause(s, params, true).await,
            M::ExecutionWorkerResume => automation::worker_pause(s, params, false).await,
            M::ExecutionWorkerMetricsReset => automation::worker_metrics_reset(s, params).await,
            M::KnowledgeSearch => knowledge::search(k, params).await,
            M::KnowledgeIngest => knowledge::ingest(k, params).await,
            M::KnowledgeVaultIngest => knowledge::vault_ingest(k, params).await,
            M::KnowledgeLibraryList => knowledge::library_list(k, params).await,
            M::KnowledgeLibraryDelete => knowledge::library_delete(k, params).await,
            M::KnowledgeLibraryReindex => knowledge::library_reindex(k, params).await,
            M::KnowledgeCollectionsList => knowledge::collections_list(k, params).await,
            M::KnowledgeCollectionsGrant => knowledge::collections_grant(k, params).await,
            M::TtsStatus => tts::status(rt, speech).await,
            M::TtsProviders => tts::list(rt, speech).await,
            M::TtsEnable => tts::set_enabled(speech, true).await,
            M::TtsDisable => tts::set_enabled(speech, false).await,
            M::TtsSetProvider => tts::set_provider(speech, params).await,
            M::TtsConvert => tts::convert(rt, speech, params).await,
            M::ChannelsStatus => channels::status(ch, params).await,
            M::ChannelsLogout => channels::logout(ch, params).await,
            M::Send => channels::send(ch, params).await,
            M::ChannelsWebhook => channels::webhook(ch, params).await,
        }
    }
}

#[async_trait]
impl MethodHandler for Worker {
    async fn invoke(
        &self,
        method: &str,
        params: Value,
        caller: &Caller,
    ) -> Result<Value, RpcError> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&self.in_flight);
        tracing::debug!(method, conn = %caller.conn_id, gateway = %caller.gateway_id, "executing");
        let Some(method) = catalog::lookup_node_method(method).and_then(|s| s.node_method()) else {
            return Err(RpcError::unavailable(format!(
                "node-agent {} does not execute {method}",
                self.node_id
            )));
        };
        self.execute(method, params, caller).await
    }
}
