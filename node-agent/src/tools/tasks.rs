//! `add_task`: the agent queues a task for its execution worker.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{text_arg, Tool};
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;
use crate::scheduler::execution;

pub struct AddTask;

#[async_trait]
impl Tool for AddTask {
    fn name(&self) -> &'static str {
        "add_task"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Queue a task for your execution worker, which works through queued tasks in its cycles.",
            schema: json!({
                "type": "object",
                "properties": {"title": {"type": "string"}, "detail": {"type": "string"}},
                "required": ["title"]
            }),
        }
    }

    async fn run(&self, rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
        let Some(title) = text_arg(args, "title").filter(|t| !t.trim().is_empty()) else {
            return ToolOutcome::failed("add_task needs {\"title\": \"…\"}");
        };
        let detail = text_arg(args, "detail").map(str::to_string);
        match execution::add_task(rt.state.as_ref(), agent_id, title, detail).await {
            Ok(task) => ToolOutcome::done(format!("task {} queued", task.id)),
            Err(err) => ToolOutcome::failed(format!("cannot queue the task: {err}")),
        }
    }
}
