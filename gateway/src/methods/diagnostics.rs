//! `logs.tail` (the gateway's own recent log lines) and `diagnostics.stability` (event-loop
//! and queue figures), answered by the gateway that holds the connection.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;

const DEFAULT_LINES: u64 = 200;
const MAX_LINES: u64 = 2000;
const DEFAULT_MAX_BYTES: u64 = 250_000;
const MAX_BYTES: u64 = 1_000_000;

/// `logs.tail {cursor?, limit?, maxBytes?}` → `{file, cursor, size, lines, truncated, reset}`.
pub fn logs_tail(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
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
    let tail = argent_telemetry::recent_logs().tail(cursor, limit as usize, max_bytes as usize);
    Ok(json!({
        "file": format!("memory://{}/stderr", ctx.gateway_id),
        "cursor": tail.cursor,
        "size": tail.size,
        "lines": tail.lines,
        "truncated": tail.truncated,
        "reset": tail.reset,
    }))
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
