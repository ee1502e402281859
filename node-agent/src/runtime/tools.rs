//! The agent's tools as the runtime sees them: a [`ToolHost`] offers their specs to the
//! model and executes the calls the model makes. The tools themselves live in
//! `crate::tools`, above the runtime and the scheduler, so a tool may use any service (the
//! cron job store, the task queue) without the runtime depending on it.

use async_trait::async_trait;
use serde_json::Value;

use super::providers::ToolSpec;
use super::Runtime;

#[async_trait]
pub trait ToolHost: Send + Sync {
    /// What the model is offered, every turn.
    fn specs(&self) -> Vec<ToolSpec>;
    /// Runs one tool call of `agent_id`'s model.
    async fn execute(&self, rt: &Runtime, agent_id: &str, name: &str, args: &Value) -> ToolOutcome;
}

/// The outcome of one tool call: text for the model, and whether it failed.
pub struct ToolOutcome {
    pub text: String,
    pub is_error: bool,
    /// Content parts for the person, not the model (`{"type":"audio","data":…}` of the
    /// `tts` tool): kept in the transcript (clients read them with `chat.history`), never
    /// in the model's context nor in the tool's result event.
    pub attachments: Vec<Value>,
}

impl ToolOutcome {
    pub fn done(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            is_error: false,
            attachments: Vec::new(),
        }
    }

    pub fn failed(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            is_error: true,
            attachments: Vec::new(),
        }
    }
}
