//! `system-presence` (PROTOCOL.md §5.10): the bare array of presence entries, cluster-wide.

use serde_json::Value;

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;
use crate::ws::session::Session;

pub fn presence_list(ctx: &Ctx) -> Vec<Value> {
    ctx.presence
        .list(&ctx.gateways.live(), &ctx.health.self_record())
}

pub fn system_presence(ctx: &Ctx, _session: &Session, params: Value) -> Result<Value, RpcError> {
    Params::new("system-presence", params)?.only(&[])?;
    Ok(Value::Array(presence_list(ctx)))
}
