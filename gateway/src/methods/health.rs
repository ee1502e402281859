//! `health` and `status` (PROTOCOL.md §5.10), aggregated across the cluster.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;

pub fn health(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("health", params)?.only(&["probe"])?;
    let summary = if params.optional_bool("probe")? == Some(true) {
        ctx.health.refresh()
    } else {
        ctx.health.snapshot()
    };
    Ok((*summary).clone())
}

pub fn status(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("status", params)?.only(&[])?;
    let config = ctx.shared_config.get();
    let agents = config.agents();
    let (channel_summary, channel_runtime) = ctx.health.channel_summary();
    Ok(json!({
        "heartbeat": {"defaultAgentId": agents.default_id, "agents": []},
        "channelSummary": channel_summary,
        "queuedSystemEvents": [],
        "sessions": {
            "paths": [],
            "count": 0,
            "defaults": {"model": null, "contextTokens": null},
            "recent": [],
            "byAgent": [],
        },
        "channelRuntime": channel_runtime,
        "gateway": {
            "id": ctx.gateway_id,
            "host": ctx.host,
            "version": ctx.version,
            "mode": ctx.mode.name(),
            "url": ctx.ws_url,
            "uptimeMs": ctx.uptime_ms(),
            "connections": ctx.hub.len(),
            "stateDir": ctx.state_dir.display().to_string(),
            "configPath": ctx.config_file.path().display().to_string(),
            "tokenSource": ctx.secrets().token_source,
        },
        "cluster": ctx.health.cluster_section(),
    }))
}
