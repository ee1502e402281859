//! `cron`: reminders are `main` cron jobs of this agent that wake its heartbeat.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{text_arg, Tool};
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;
use crate::scheduler::job_store;

pub struct Reminders;

#[async_trait]
impl Tool for Reminders {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
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
        }
    }

    async fn run(&self, rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
        match text_arg(args, "action") {
            Some("add") => add(rt, agent_id, args).await,
            Some("list") => match job_store::all_jobs(rt.state.as_ref()).await {
                Ok(jobs) => {
                    let mine: Vec<Value> = jobs
                        .into_iter()
                        .filter(|j| j.agent_id.as_deref() == Some(agent_id))
                        .map(|j| json!({"id": j.id, "name": j.name, "schedule": j.schedule, "nextRunAtMs": j.state.next_run_at_ms}))
                        .collect();
                    ToolOutcome::done(Value::Array(mine).to_string())
                }
                Err(err) => ToolOutcome::failed(err.to_string()),
            },
            Some("remove") => match text_arg(args, "id") {
                Some(id) => match job_store::delete(rt, id).await {
                    Ok(true) => ToolOutcome::done(format!("reminder {id} removed")),
                    Ok(false) => ToolOutcome::failed(format!("no reminder {id}")),
                    Err(err) => ToolOutcome::failed(err.to_string()),
                },
                None => ToolOutcome::failed("cron remove needs an \"id\""),
            },
            _ => ToolOutcome::failed("cron needs \"action\": \"add\", \"list\" or \"remove\""),
        }
    }
}

async fn add(rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
    let text = |key: &str| text_arg(args, key);
    let Some(message) = text("message").filter(|m| !m.trim().is_empty()) else {
        return ToolOutcome::failed("cron add needs a \"message\"");
    };
    let schedule = if let Some(at) = text("at") {
        json!({"kind": "at", "at": at})
    } else if let Some(minutes) = args.get("everyMinutes").and_then(Value::as_u64) {
        json!({"kind": "every", "everyMs": minutes.saturating_mul(60_000)})
    } else if let Some(expr) = text("cron") {
        json!({"kind": "cron", "expr": expr, "tz": text("tz")})
    } else {
        return ToolOutcome::failed("cron add needs \"at\", \"everyMinutes\" or \"cron\"");
    };
    let params = json!({
        "name": text("name").unwrap_or(message), "agentId": agent_id, "schedule": schedule,
        "sessionTarget": "main", "wakeMode": "now",
        "payload": {"kind": "systemEvent", "text": message},
    });
    match job_store::create(rt, params).await {
        Ok(job) => ToolOutcome::done(format!(
            "reminder {} scheduled (next run at {:?} ms)",
            job.id, job.state.next_run_at_ms
        )),
        Err(err) => ToolOutcome::failed(err.to_string()),
    }
}
