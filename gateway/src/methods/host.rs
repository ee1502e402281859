//! Protocol 4 methods the Control UI asks about this system itself: `system.info` (the
//! gateway's host), `environments.list` (where sessions run: this gateway and the live
//! node-agents) and `models.authStatus` (the credentials of the configured providers). All
//! from what this gateway knows now; nothing invented.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::context::Ctx;

/// `system.info`: the host the gateway runs on, from the OS (`/proc` on Linux).
pub fn system_info(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("system.info", params)?.only(&[])?;
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let kib = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let release = read("/proc/sys/kernel/osrelease").trim().to_string();
    let os_label = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, v)| v.trim().to_string());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut info = json!({
        "machineName": ctx.host,
        "hostname": ctx.host,
        "platform": std::env::consts::OS,
        "release": release,
        "arch": std::env::consts::ARCH,
        "osLabel": os_label,
        // Upstream's Node.js version; this gateway is not Node: its own build instead.
        "nodeVersion": format!("argent-gateway {}", ctx.version),
        "pid": std::process::id(),
        "processInstanceId": ctx.gateway_id,
        "uptimeMs": ctx.uptime_ms(),
        "cpuCount": cpus,
        "memoryTotalBytes": kib("MemTotal:"),
        "memoryFreeBytes": kib("MemAvailable:"),
    });
    if let Some(model) = cpu_model {
        info["cpuModel"] = json!(model);
    }
    if load.iter().any(|l| *l > 0.0) {
        info["loadAverage"] = json!(load);
    }
    Ok(info)
}

/// `environments.list`: this gateway (sessions are hosted by the cluster behind it) and
/// every live node-agent.
pub fn environments_list(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("environments.list", params)?.only(&[
        "runtimeId",
        "projection",
        "includeDesktopSetup",
    ])?;
    p.optional_str("runtimeId")?;
    p.optional_bool("includeDesktopSetup")?;
    if let Some(projection) = p.optional_str("projection")? {
        if projection != "profiles" {
            return Err(p.invalid("at /projection: must be equal to constant"));
        }
        // Only runner profiles were asked for; this system has none.
        return Ok(json!({"environments": []}));
    }
    let mut environments = vec![json!({
        "id": "gateway", "type": "local", "label": "Gateway local", "status": "available",
        "platform": std::env::consts::OS, "sessionHost": true, "trust": "persistent",
        "capabilities": ["agent.run", "sessions", "tools", "workspace"],
    })];
    let mut nodes = ctx.nodes.live();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    for node in nodes {
        environments.push(json!({
            "id": format!("node:{}", node.id), "type": "node", "label": node.id,
            "status": "available", "trust": "persistent",
            "capabilities": node.capabilities, "lastSeenAtMs": node.heartbeat_at_ms,
        }));
    }
    Ok(json!({ "environments": environments }))
}

/// `models.authStatus`: each configured provider and how its key is given. Keys are
/// static (an API key in the config or in the node-agents' environment); none expires.
pub fn models_auth_status(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("models.authStatus", params)?.only(&["refresh", "agentId"])?;
    p.optional_bool("refresh")?;
    p.optional_str("agentId")?;
    let config = ctx.shared_config.get();
    let providers: Vec<Value> = config
        .providers()
        .into_iter()
        .flatten()
        .map(|(id, provider)| {
            let source = match (&provider.api_key, &provider.api_key_env) {
                (Some(key), _) if key.starts_with("${") => Some("external"),
                (Some(_), _) => Some("config"),
                (None, Some(_)) => Some("external"),
                (None, None) => None,
            };
            let profiles: Vec<Value> = source
                .map(|source| {
                    json!({"profileId": format!("{id}:default"), "type": "api_key",
                           "status": "static", "source": source})
                })
                .into_iter()
                .collect();
            json!({
                "provider": id, "authProvider": id, "displayName": id,
                "status": if source.is_some() { "static" } else { "missing" },
                "profiles": profiles,
            })
        })
        .collect();
    Ok(json!({"ts": argent_proto::now_ms(), "providers": providers}))
}
