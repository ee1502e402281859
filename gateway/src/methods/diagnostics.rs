//! `logs.tail` (the gateway's own recent log lines) and `diagnostics.stability` (event-loop
//! and queue figures), answered by the gateway that holds the connection.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;
use crate::ws::session::Session;
use argent_proto::version::Protocol;

const DEFAULT_LINES: u64 = 200;
const MAX_LINES: u64 = 2000;
const DEFAULT_MAX_BYTES: u64 = 250_000;
const MAX_BYTES: u64 = 1_000_000;

/// `logs.tail {cursor?, limit?, maxBytes?}` → `{file, cursor, size, lines, truncated, reset}`.
pub fn logs_tail(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("logs.tail", params)?.only(&["cursor", "limit", "maxBytes"])?;
    let cursor = p.optional_u64("cursor", 0)?;
    let limit = p
        .optional_u64("limit", 1)?
        .unwrap_or(DEFAULT_LINES)
        .clamp(1, MAX_LINES);
    let max_bytes = p
        .optional_u64("maxBytes", 1)?
        .unwrap_or(DEFAULT_MAX_BYTES)
        .clamp(1, MAX_BYTES);
    let mut tail = argent_telemetry::recent_logs().tail(cursor, limit as usize, max_bytes as usize);
    if session.protocol == Protocol::V4 {
        tail.lines = tail.lines.iter().map(|l| structured(l)).collect();
    }
    Ok(json!({
        "file": format!("memory://{}/stderr", ctx.gateway_id),
        "cursor": tail.cursor,
        "size": tail.size,
        "lines": tail.lines,
        "truncated": tail.truncated,
        "reset": tail.reset,
    }))
}

/// A log line as upstream's log file has it, one JSON object per line, which the Control
/// UI's Logs page splits into its columns: `{time, level, subsystem, message}`. Our lines
/// are `<RFC 3339 time> <LEVEL> <message>`; one that is not stays whole in `message`.
fn structured(line: &str) -> String {
    let mut rest = line.trim_end();
    let mut next = || {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        rest = after;
        word
    };
    let (time, level) = (next(), next());
    let known = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    let entry = if time.contains('T') && known.contains(&level) {
        json!({"time": time, "level": level.to_ascii_lowercase(), "subsystem": "gateway",
               "message": rest.trim_start()})
    } else {
        json!({"subsystem": "gateway", "message": line})
    };
    entry.to_string()
}

/// `diagnostics.stability {limit?, type?, sinceSeq?}`.
pub fn stability(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("diagnostics.stability", params)?.only(&["limit", "type", "sinceSeq"])?;
    let limit = p
        .optional_u64("limit", 1)?
        .unwrap_or(100)
        .clamp(1, crate::stability::CAPACITY as u64);
    let kind = p.optional_str("type")?;
    let since = p.optional_u64("sinceSeq", 0)?.unwrap_or(0);
    Ok(ctx
        .stability
        .report(ctx.hub.len(), limit as usize, kind.as_deref(), since))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_upstream_json_lines() {
        let line = structured("2026-12-07T00:59:45.395301Z  WARN node gone node=n1");
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            line,
            json!({"time": "2026-12-07T00:59:45.395301Z", "level": "warn",
                   "subsystem": "gateway", "message": "node gone node=n1"})
        );
        let odd: Value = serde_json::from_str(&structured("argent: listening")).unwrap();
        assert_eq!(
            odd,
            json!({"subsystem": "gateway", "message": "argent: listening"})
        );
    }
}
