//! `system-presence` (PROTOCOL.md §5.10): the bare array of presence entries, cluster-wide.

use std::sync::Arc;

use serde_json::Value;

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;
use crate::ws::session::Session;

/// The list as JSON text, shared until presence changes (`hello-ok`, `presence` events).
pub fn presence_json(ctx: &Ctx) -> Arc<str> {
    ctx.presence
        .list_json(&ctx.gateways.live(), &ctx.health.self_record())
}

pub fn system_presence(ctx: &Ctx, _session: &Session, params: Value) -> Result<Value, RpcError> {
    Params::new("system-presence", params)?.only(&[])?;
    Ok(Value::Array(
        ctx.presence
            .list(&ctx.gateways.live(), &ctx.health.self_record()),
    ))
}
