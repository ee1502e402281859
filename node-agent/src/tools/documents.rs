//! `read_file` and `list_files`: the agent reads its own workspace documents.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{text_arg, Tool};
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;
use crate::workspace::{self, BOOTSTRAP_FILES};

pub struct ReadFile;

#[async_trait]
impl Tool for ReadFile {
    fn name(&self) -> &'static str {
        "read_file"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Read one document of your agent workspace (AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md, USER.md, HEARTBEAT.md, BOOTSTRAP.md, MEMORY.md).",
            schema: json!({
                "type": "object",
                "properties": {"name": {"type": "string", "description": "document name, e.g. USER.md"}},
                "required": ["name"]
            }),
        }
    }

    async fn run(&self, rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
        let Some(file) = text_arg(args, "name") else {
            return ToolOutcome::failed("read_file needs {\"name\": \"<document>\"}");
        };
        if !workspace::is_allowed(file) {
            return ToolOutcome::failed(format!("{file} is not a workspace document"));
        }
        match workspace::text(rt.state.as_ref(), agent_id, file).await {
            Ok(Some(text)) => ToolOutcome::done(text),
            Ok(None) => ToolOutcome::failed(format!("{file} does not exist in the workspace")),
            Err(err) => ToolOutcome::failed(format!("cannot read {file}: {err}")),
        }
    }
}

pub struct ListFiles;

#[async_trait]
impl Tool for ListFiles {
    fn name(&self) -> &'static str {
        "list_files"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "List the documents of your agent workspace that exist.",
            schema: json!({"type": "object", "properties": {}}),
        }
    }

    async fn run(&self, rt: &Runtime, agent_id: &str, _args: &Value) -> ToolOutcome {
        let mut present = Vec::new();
        for file in BOOTSTRAP_FILES.iter().chain(["MEMORY.md"].iter()) {
            match workspace::text(rt.state.as_ref(), agent_id, file).await {
                Ok(Some(_)) => present.push(*file),
                Ok(None) => {}
                Err(err) => return ToolOutcome::failed(format!("cannot list documents: {err}")),
            }
        }
        ToolOutcome::done(present.join("\n"))
    }
}
