//! The agent's tools. Each is a name, a description and a JSON schema offered to the
//! model, and an executor. Exec, knowledge and send tools arrive with their issues.

use serde_json::{json, Value};

use crate::methods::cron as cron_methods;
use crate::runtime::Runtime;
use crate::scheduler::execution;

use crate::methods::agents::{self, BOOTSTRAP_FILES};
use crate::runtime::providers::ToolSpec;

pub const READ_FILE: &str = "read_file";
pub const LIST_FILES: &str = "list_files";
pub const CRON: &str = "cron";
pub const ADD_TASK: &str = "add_task";

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
        ToolSpec {
            name: CRON,
            description: "Manage reminders: action \"add\" schedules a message to yourself (at an ISO-8601 time, every N minutes, or on a cron expression with an optional IANA tz), \"list\" shows your reminders, \"remove\" deletes one by id.",
            schema: json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["add", "list", "remove"]},
                    "name": {"type": "string"},
                    "message": {"type": "string", "description": "what to remind you of"},
                    "at": {"type": "string", "description": "ISO-8601 time, e.g. 2026-12-01T09:00:00Z"},
                    "everyMinutes": {"type": "integer", "minimum": 1},
                    "cron": {"type": "string", "description": "5-field cron expression"},
                    "tz": {"type": "string"},
                    "id": {"type": "string", "description": "reminder id (remove)"}
                },
                "required": ["action"]
            }),
        },
        ToolSpec {
            name: ADD_TASK,
            description: "Queue a task for your execution worker, which works through queued tasks in its cycles.",
            schema: json!({
                "type": "object",
                "properties": {"title": {"type": "string"}, "detail": {"type": "string"}},
                "required": ["title"]
            }),
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
pub async fn execute(rt: &Runtime, agent_id: &str, name: &str, args: &Value) -> ToolOutcome {
    let state = rt.state.as_ref();
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
        CRON => reminders(rt, agent_id, args).await,
        ADD_TASK => {
            let Some(title) = args
                .get("title")
                .and_then(Value::as_str)
                .filter(|t| !t.trim().is_empty())
            else {
                return failed("add_task needs {\"title\": \"…\"}".into());
            };
            let detail = args
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string);
            match execution::add_task(state, agent_id, title, detail).await {
                Ok(task) => done(format!("task {} queued", task.id)),
                Err(err) => failed(format!("cannot queue the task: {err}")),
            }
        }
        other => failed(format!("unknown tool {other}")),
    }
}

fn done(text: String) -> ToolOutcome {
    ToolOutcome {
        text,
        is_error: false,
    }
}

/// The `cron` tool: reminders are `main` cron jobs of this agent that wake its heartbeat.
async fn reminders(rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
    let text = |key: &str| args.get(key).and_then(Value::as_str);
    match text("action") {
        Some("add") => {
            let Some(message) = text("message").filter(|m| !m.trim().is_empty()) else {
                return failed("cron add needs a \"message\"".into());
            };
            let schedule = if let Some(at) = text("at") {
                json!({"kind": "at", "at": at})
            } else if let Some(minutes) = args.get("everyMinutes").and_then(Value::as_u64) {
                json!({"kind": "every", "everyMs": minutes.saturating_mul(60_000)})
            } else if let Some(expr) = text("cron") {
                json!({"kind": "cron", "expr": expr, "tz": text("tz")})
            } else {
                return failed("cron add needs \"at\", \"everyMinutes\" or \"cron\"".into());
            };
            let params = json!({
                "name": text("name").unwrap_or(message), "agentId": agent_id, "schedule": schedule,
                "sessionTarget": "main", "wakeMode": "now",
                "payload": {"kind": "systemEvent", "text": message},
            });
            match cron_methods::create(rt, params).await {
                Ok(job) => done(format!(
                    "reminder {} scheduled (next run at {:?} ms)",
                    job.id, job.state.next_run_at_ms
                )),
                Err(err) => failed(err.message),
            }
        }
        Some("list") => match cron_methods::all_jobs(rt.state.as_ref()).await {
            Ok(jobs) => {
                let mine: Vec<Value> = jobs
                    .into_iter()
                    .filter(|j| j.agent_id.as_deref() == Some(agent_id))
                    .map(|j| json!({"id": j.id, "name": j.name, "schedule": j.schedule, "nextRunAtMs": j.state.next_run_at_ms}))
                    .collect();
                done(Value::Array(mine).to_string())
            }
            Err(err) => failed(err.message),
        },
        Some("remove") => match text("id") {
            Some(id) => match cron_methods::delete(rt, id).await {
                Ok(true) => done(format!("reminder {id} removed")),
                Ok(false) => failed(format!("no reminder {id}")),
                Err(err) => failed(err.message),
            },
            None => failed("cron remove needs an \"id\"".into()),
        },
        _ => failed("cron needs \"action\": \"add\", \"list\" or \"remove\"".into()),
    }
}
