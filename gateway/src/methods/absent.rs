//! Methods of the OpenClaw Control UI (protocol 4) for features this system does not have:
//! agent questions, plugins, the skills marketplace, update rollouts, talk mode (issue 17),
//! channel pairing (issue 18), progress cards, session branches, side chats and observers.
//! Each answers what upstream itself answers when the feature is empty or absent, so the
//! UI shows the feature as empty, not as an error; none invents data. Params are checked
//! against the 2026.9.6 schemas (closed objects).

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

/// Checks `params` against the method's allowed keys and their types (`strings`, `flags`).
fn check(method: &str, params: Value, strings: &[&str], flags: &[&str]) -> Result<(), RpcError> {
    let allowed: Vec<&str> = strings.iter().chain(flags).copied().collect();
    let p = Params::new(method, params)?.only(&allowed)?;
    for key in strings {
        p.optional_str(key)?;
    }
    for key in flags {
        p.optional_bool(key)?;
    }
    Ok(())
}

/// `question.list`: no agent asks the operator questions here.
pub fn question_list(params: Value) -> Result<Value, RpcError> {
    check("question.list", params, &[], &[])?;
    Ok(json!({"questions": []}))
}

/// `update.status`: no update is known and none has run; the deployment (a package, an
/// image) updates this system, not the gateway.
pub fn update_status(params: Value) -> Result<Value, RpcError> {
    check("update.status", params, &[], &["refreshCheckout"])?;
    Ok(json!({"sentinel": null, "updateAvailable": null}))
}

/// `openclaw.approval.list` / `plugin.approval.list`: no such approvals exist here (exec
/// approvals are `exec.approval.list`). Upstream ignores their params.
pub fn approval_list() -> Result<Value, RpcError> {
    Ok(json!([]))
}

/// `sessions.observer.visibility`: upstream's answer without session observers.
pub fn observer_visibility(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.observer.visibility", params)?.only(&["visible"])?;
    if p.optional_bool("visible")?.is_none() {
        return Err(p.invalid("at root: must have required property 'visible'"));
    }
    Err(RpcError::unavailable("session observers are unavailable"))
}

/// `sessions.companion.state`: no side chat has happened.
pub fn companion_state(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.companion.state", params)?.only(&["sessionKey", "agentId"])?;
    p.required_str("sessionKey")?;
    p.optional_str("agentId")?;
    Ok(json!({"exchanges": []}))
}

/// `sessions.branches.list`: transcripts here are linear, without a tree of branches.
pub fn branches_list(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.branches.list", params)?.only(&["sessionKey", "agentId"])?;
    p.required_str("sessionKey")?;
    p.optional_str("agentId")?;
    Ok(json!({"branches": []}))
}

/// `progressCard.get`: runs here publish no progress cards.
pub fn progress_card(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("progressCard.get", params)?.only(&["sessionKey", "agentId"])?;
    p.required_str("sessionKey")?;
    p.optional_str("agentId")?;
    Ok(json!({"card": null}))
}

/// `talk.catalog`: no speech, transcription or realtime voice provider (issue 17).
pub fn talk_catalog(params: Value) -> Result<Value, RpcError> {
    check("talk.catalog", params, &["provider", "model"], &[])?;
    let none = json!({"ready": false, "providers": []});
    Ok(json!({
        "modes": [], "transports": [], "brains": [],
        "speech": none, "transcription": none, "realtime": none,
    }))
}

/// `chat.metadata`: no agent swarms; the UI keeps its own slash commands and asks
/// `models.list` for models.
pub fn chat_metadata(params: Value) -> Result<Value, RpcError> {
    check(
        "chat.metadata",
        params,
        &["agentId", "authProfileId", "sessionKey"],
        &[],
    )?;
    Ok(json!({"swarmEnabled": false}))
}

/// `plugins.list`: this system has no plugins, and none can be installed through it.
pub fn plugins_list(params: Value) -> Result<Value, RpcError> {
    check("plugins.list", params, &[], &[])?;
    Ok(json!({"plugins": [], "diagnostics": [], "mutationAllowed": false}))
}

/// `skills.search`: no skills marketplace.
pub fn skills_search(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("skills.search", params)?.only(&["query", "limit"])?;
    p.optional_str("query")?;
    p.optional_u64_in("limit", 1, 100)?;
    Ok(json!({"results": []}))
}

/// `skills.library.list`: no skills library.
pub fn skills_library(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("skills.library.list", params)?.only(&["sessionKey", "scope"])?;
    p.optional_str("sessionKey")?;
    if let Some(scope) = p.optional_str("scope")? {
        if !["mine", "team", "all"].contains(&scope.as_str()) {
            return Err(p.invalid("at /scope: must be equal to one of the allowed values"));
        }
    }
    Ok(json!({
        "entries": [], "profileId": null, "multipleProfiles": false,
        "defaultTarget": "unavailable", "canManageWorkspace": false, "defaultSelectionLimit": 64,
    }))
}

/// `channels.pairing.list`: no chat channel accounts, so no pairing requests (issue 18).
pub fn channels_pairing(params: Value) -> Result<Value, RpcError> {
    check(
        "channels.pairing.list",
        params,
        &["channel", "accountId"],
        &[],
    )?;
    Ok(json!({
        "accounts": [], "requests": [], "commandOwnerConfigured": false,
        "limits": {"pendingPerAccount": 3, "ttlMs": 3_600_000},
    }))
}

/// `plugins.catalog.browse`: no plugin catalog to browse (upstream answers `items` with
/// the catalog it could reach; here there is none).
pub fn plugins_catalog(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("plugins.catalog.browse", params)?.only(&[
        "query",
        "searchSource",
        "intent",
        "category",
        "cursor",
        "pageSize",
    ])?;
    if p.get("query").is_some_and(|q| !q.is_string()) {
        return Err(p.invalid("at /query: must be string"));
    }
    for key in ["searchSource", "intent", "category", "cursor"] {
        p.optional_str(key)?;
    }
    p.optional_u64("pageSize", 1)?;
    Ok(json!({"items": []}))
}

/// `channels.status`: no chat channel is configured (channels arrive with issue 18), so the
/// status of none — the shape upstream reports for a gateway without channels.
pub fn channels_status(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("channels.status", params)?.only(&["probe", "timeoutMs", "channel"])?;
    p.optional_bool("probe")?;
    p.optional_u64("timeoutMs", 0)?;
    p.optional_str("channel")?;
    Ok(json!({
        "ts": argent_proto::now_ms(), "channelOrder": [], "channelLabels": {},
        "channels": {}, "channelAccounts": {}, "channelDefaultAccountId": {},
    }))
}
