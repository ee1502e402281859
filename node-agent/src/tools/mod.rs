//! The agent's tools, one file each, offered to the model through the runtime's
//! [`ToolHost`]. Adding a tool: a file with a type implementing [`Tool`], and one line in
//! [`Toolbox::standard`]. The exec tool arrives with its issue.

mod documents;
mod knowledge;
mod messages;
mod reminders;
mod tasks;
mod tts;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use self::messages::ChannelsSlot;
use crate::knowledge::Knowledge;
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::{ToolHost, ToolOutcome};
use crate::runtime::Runtime;
use crate::tts::Speech;

/// One tool: its spec for the model, and how a call runs.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by (also `spec().name`).
    fn name(&self) -> &'static str;
    fn spec(&self) -> ToolSpec;
    async fn run(&self, rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome;
}

/// The tools every agent has.
pub struct Toolbox {
    tools: Vec<Box<dyn Tool>>,
}

impl Toolbox {
    pub fn standard(library: Arc<Knowledge>, speech: Arc<Speech>, channels: ChannelsSlot) -> Self {
        Toolbox {
            tools: vec![
                Box::new(documents::ReadFile),
                Box::new(documents::ListFiles),
                Box::new(reminders::Reminders),
                Box::new(tasks::AddTask),
                Box::new(knowledge::Search(library.clone())),
                Box::new(knowledge::CollectionsList(library.clone())),
                Box::new(knowledge::Ingest(library)),
                Box::new(tts::Speak(speech)),
                Box::new(messages::SendMessage(channels)),
            ],
        }
    }
}

#[async_trait]
impl ToolHost for Toolbox {
    fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|tool| tool.spec()).collect()
    }

    async fn execute(&self, rt: &Runtime, agent_id: &str, name: &str, args: &Value) -> ToolOutcome {
        match self.tools.iter().find(|tool| tool.name() == name) {
            Some(tool) => tool.run(rt, agent_id, args).await,
            None => ToolOutcome::failed(format!("unknown tool {name}")),
        }
    }
}

/// A string argument of a tool call, if present.
fn text_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolbox() -> Toolbox {
        let state = Arc::new(argent_planes::state_embedded::EmbeddedStore::open(None).unwrap());
        Toolbox::standard(
            Knowledge::start("test", state.clone(), None),
            Speech::new(state),
            ChannelsSlot::default(),
        )
    }

    #[tokio::test]
    async fn tool_names_are_unique() {
        let mut names: Vec<&str> = toolbox().specs().iter().map(|s| s.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(count, 9);
        for tool in toolbox().tools {
            assert_eq!(tool.name(), tool.spec().name);
        }
    }
}
