//! The worker: executes one forwarded method against the state plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use argent_planes::calls::MethodHandler;
use argent_planes::state::StateStore;
use argent_proto::errors::RpcError;
use argent_proto::grpc::Caller;

use crate::methods::{agents, automation, chat, cron, sessions, usage};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;

/// Capabilities this node-agent serves (catalog `Forward::capability`).
pub const CAPABILITIES: &[&str] = &[argent_proto::catalog::CAP_AGENTS];

pub struct Worker {
    node_id: String,
    state: Arc<dyn StateStore>,
    runtime: Arc<Runtime>,
    scheduler: Arc<Scheduler>,
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
    pub fn new(node_id: String, state: Arc<dyn StateStore>, runtime: Arc<Runtime>) -> Self {
        let scheduler = Scheduler::start(runtime.clone());
        Worker {
            node_id,
            state,
            runtime,
            scheduler,
            in_flight: AtomicU64::new(0),
        }
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
        let state = self.state.as_ref();
        match method {
            "agents.list" => agents::list(state, params).await,
            "agent.identity.get" => agents::identity_get(state, params).await,
            "agents.files.list" => agents::files_list(state, params).await,
            "agents.files.get" => agents::files_get(state, params).await,
            "agents.files.set" => agents::files_set(state, params).await,
            "chat.send" => chat::send(&self.runtime, params, caller).await,
            "chat.abort" => chat::abort(&self.runtime, params).await,
            "chat.history" => chat::history(&self.runtime, params, caller).await,
            "chat.startup" => chat::startup(&self.runtime, params, caller).await,
            "chat.message.get" => chat::message_get(&self.runtime, params).await,
            "chat.inject" => chat::inject(&self.runtime, params).await,
            "agent" => chat::agent(&self.runtime, params, caller).await,
            "agent.wait" => chat::wait(&self.runtime, params).await,
            argent_proto::catalog::AGENT_RESULT => chat::result(&self.runtime, params).await,
            "sessions.list" => sessions::list(&self.runtime, params).await,
            "sessions.preview" => sessions::preview(&self.runtime, params).await,
            "sessions.reset" => sessions::reset(&self.runtime, params).await,
            "sessions.compact" => sessions::compact(&self.runtime, params).await,
            "commands.compact" => sessions::command_compact(&self.runtime, params).await,
            "models.list" => sessions::models(&self.runtime, params).await,
            "usage.cost" => usage::cost(&self.runtime, params).await,
            "cron.list" => cron::list(&self.scheduler, params).await,
            "cron.status" => cron::status(&self.scheduler, params).await,
            "cron.runs" => cron::runs(&self.scheduler, params).await,
            "cron.add" => cron::add(&self.scheduler, params).await,
            "cron.update" => cron::update(&self.scheduler, params).await,
            "cron.run" => cron::run(&self.scheduler, params).await,
            "cron.remove" => cron::remove(&self.scheduler, params).await,
            "last-heartbeat" => automation::last_heartbeat(&self.scheduler, params).await,
            "set-heartbeats" => automation::set_heartbeats(&self.scheduler, params).await,
            "wake" => automation::wake(&self.scheduler, params).await,
            "tasks.add" => automation::tasks_add(&self.scheduler, params).await,
            "tasks.list" => automation::tasks_list(&self.scheduler, params).await,
            m if m.starts_with("execution.worker.") => {
                automation::worker(&self.scheduler, m, params).await
            }
            other => Err(RpcError::unavailable(format!(
                "node-agent {} does not execute {other}",
                self.node_id
            ))),
        }
    }
}
