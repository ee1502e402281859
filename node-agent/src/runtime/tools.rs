//! The agent's tools. Each is a name, a description and a JSON schema offered to the
//! model, and an executor. Exec, knowledge, cron and send tools arrive with their issues.

use serde_json::{json, Value};

use argent_planes::state::StateStore;

use crate::methods::agents::{self, BOOTSTRAP_FILES};
use crate::runtime::providers::ToolSpec;

pub const READ_FILE: &str = "read_file";
pub const LIST_FILES: &str = "list_files";

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: READ_FILE,
            description: "Read one document of your agent workspace (AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md, USER.md, HEARTBEAT.md, BOOTSTRAP.md, MEMORY.md).",
            schema: json!({
                "type": "object",
                "properties": {"name": {"type": "string", "description": "document name, e.g. USER.md"}},
                "required": ["name"]
            }),
        },
        ToolSpec {
            name: LIST_FILES,
            description: "List the documents of your agent workspace that exist.",
            schema: json!({"type": "object", "properties": {}}),
        },
    ]
}

/// The outcome of one tool call: text for the model, and whether it failed.
pub struct ToolOutcome {
    pub text: String,
    pub is_error: bool,
}

fn failed(text: String) -> ToolOutcome {
    ToolOutcome {
        text,
        is_error: true,
    }
}

/// Runs a tool call of `agent_id`'s model.
pub async fn execute(
    state: &dyn StateStore,
    agent_id: &str,
    name: &str,
    args: &Value,
) -> ToolOutcome {
    match name {
        READ_FILE => {
            let Some(file) = args.get("name").and_then(Value::as_str) else {
                return failed("read_file needs {\"name\": \"<document>\"}".into());
            };
            if !agents::is_allowed(file) {
                return failed(format!("{file} is not a workspace document"));
            }
            match agents::document(state, agent_id, file).await {
                Ok(Some(text)) => ToolOutcome {
                    text,
                    is_error: false,
                },
                Ok(None) => failed(format!("{file} does not exist in the workspace")),
                Err(err) => failed(format!("cannot read {file}: {}", err.message)),
            }
        }
        LIST_FILES => {
            let mut present = Vec::new();
            for file in BOOTSTRAP_FILES.iter().chain(["MEMORY.md"].iter()) {
                match agents::document(state, agent_id, file).await {
                    Ok(Some(_)) => present.push(*file),
                    Ok(None) => {}
                    Err(err) => return failed(format!("cannot list documents: {}", err.message)),
                }
            }
            ToolOutcome {
                text: present.join("\n"),
                is_error: false,
            }
        }
        other => failed(format!("unknown tool {other}")),
    }
}
