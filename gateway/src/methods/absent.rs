//! Methods of the OpenClaw Control UI (protocol 4) for features this system does not have:
//! agent questions, plugins, the skills marketplace, update rollouts, realtime talk,
//! channel pairing (issue 18), progress cards, session branches, side chats and observers,
//! provider quotas, themes, GitHub identities, memory search, approval history, worktrees
//! and meeting transcripts.
//! Each answers what upstream itself answers when the feature is empty or absent, so the
//! UI shows the feature as empty, not as an error; none invents data. Params are checked
//! against the 2026.9.6 schemas (closed objects).

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::subjects::BUCKET_AGENTS;

use crate::context::Ctx;

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

/// `talk.catalog`: no realtime talk providers (transcription, realtime voice, talk speech).
/// Speech from text is `tts.*` (ADR 20), which this catalog does not describe.
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

/// `usage.status`: provider quota windows and balances (upstream reads them from some
/// providers' billing APIs) are not fetched here; token usage and cost are `sessions.usage`.
pub fn usage_status(params: Value) -> Result<Value, RpcError> {
    Params::new("usage.status", params)?;
    Ok(json!({"updatedAt": argent_proto::now_ms(), "providers": []}))
}

/// `themes.list`: no theme is stored on the gateway, so the UI's default (`claw`, following
/// the system's light or dark mode) is current, and the catalog adds nothing to the UI's own
/// built-in themes.
pub fn themes_list(params: Value) -> Result<Value, RpcError> {
    check("themes.list", params, &[], &[])?;
    Ok(json!({
        "current": {"id": "claw", "mode": "system", "scope": "gateway", "overrides": {}},
        "theme": {"id": "claw", "name": "Claw", "description": "The Control UI's default theme.",
                  "source": "builtin", "modes": ["light", "dark"]},
        "themes": [],
    }))
}

/// The configured agent `params.agentId` names (the default agent when absent), or
/// upstream's `unknown agent id` error.
fn known_agent(ctx: &Ctx, p: &Params) -> Result<String, RpcError> {
    let config = ctx.shared_config.get();
    let agents = config.agents();
    match p.optional_str("agentId")? {
        None => Ok(agents.default_id.clone()),
        Some(id) if agents.get(&id).is_some() || id == agents.default_id => Ok(id),
        Some(id) => Err(RpcError::bad_params(format!("unknown agent id \"{id}\""))),
    }
}

/// `doctor.memory.status`: OpenClaw's memory plugin (search over the workspace's memory
/// files) is not part of this system — the knowledge library (`knowledge.*`) is another
/// feature with its own embeddings; upstream's answer without a memory plugin.
pub fn memory_status(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("doctor.memory.status", params)?;
    if p.get("agentId").is_some_and(|a| !a.is_string()) {
        return Err(RpcError::bad_params("agentId must be a string"));
    }
    let agent = known_agent(ctx, &p)?;
    Ok(json!({"agentId": agent, "embedding": {"ok": false, "error": "memory plugin unavailable"}}))
}

/// `tools.github.status`: the agent has no GitHub tool and no GitHub credential is managed
/// here; the identity upstream reports when none is detected.
pub fn github_status(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("tools.github.status", params)?.only(&["agentId", "selectedScope"])?;
    p.required_str("agentId")?;
    let scope = p.required_str("selectedScope")?;
    if !["system", "agent"].contains(&scope.as_str()) {
        return Err(p.invalid("at /selectedScope: must be equal to one of the allowed values"));
    }
    let agent = known_agent(ctx, &p)?;
    let none = json!({
        "source": "system-detected", "credentialKind": "native", "credentialState": "unavailable",
        "account": null, "gitAuthor": {"name": null, "email": null}, "evidence": "none",
        "accessExpiresAtMs": null, "refreshState": "not_applicable", "oauthScopes": [],
        "repositoryGrants": "unknown",
    });
    let selected = if scope == "system" {
        none.clone()
    } else {
        Value::Null
    };
    Ok(json!({
        "agentId": agent, "selectedScope": scope,
        "selected": {"scope": scope, "configured": false, "identity": selected},
        "effective": none,
    }))
}

/// `approval.history`: decided approvals are not kept here (a request's record is removed
/// once its asker has the decision), so there is no ledger to page through.
pub fn approval_history(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("approval.history", params)?.only(&["cursor", "limit", "kind"])?;
    if p.optional_str("cursor")?.is_some() {
        return Err(RpcError::bad_params("invalid approval.history cursor"));
    }
    p.optional_u64_in("limit", 1, 100)?;
    if let Some(kind) = p.optional_str("kind")? {
        if !["exec", "plugin", "system-agent"].contains(&kind.as_str()) {
            return Err(p.invalid("at /kind: must be equal to one of the allowed values"));
        }
    }
    Ok(json!({"items": []}))
}

/// `worktrees.list`: agents here work in their workspace, not in git worktrees.
pub fn worktrees_list(params: Value) -> Result<Value, RpcError> {
    check("worktrees.list", params, &[], &[])?;
    Ok(json!({"worktrees": []}))
}

/// `transcripts.list`: no meeting recorder, so no meeting transcripts (chat transcripts are
/// `chat.history`).
pub fn meeting_transcripts(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("transcripts.list", params)?.only(&[
        "limit",
        "cursor",
        "query",
        "providerId",
        "accountId",
        "agentId",
        "startedAfter",
        "startedBefore",
    ])?;
    p.optional_u64_in("limit", 1, 200)?;
    for key in [
        "cursor",
        "query",
        "providerId",
        "accountId",
        "agentId",
        "startedAfter",
        "startedBefore",
    ] {
        p.optional_str(key)?;
    }
    Ok(json!({"sessions": [], "nextCursor": null}))
}

/// `skills.status {agentId?, sessionKey?}`: agents here have no skills (their abilities are
/// the built-in tools); the workspace is where their documents live.
pub fn skills_status(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("skills.status", params)?.only(&["agentId", "sessionKey"])?;
    p.optional_str("sessionKey")?;
    let agent = known_agent(ctx, &p)?;
    Ok(json!({
        "workspaceDir": format!("{BUCKET_AGENTS}/{agent}"), "agentId": agent, "skills": [],
    }))
}

/// `migrations.memory.plan {agentId, overwrite?}`: no importer of other assistants' memories
/// exists here, so the plan has no provider.
pub fn memory_migration_plan(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("migrations.memory.plan", params)?.only(&["agentId", "overwrite"])?;
    p.required_str("agentId")?;
    p.optional_bool("overwrite")?;
    let agent = known_agent(ctx, &p)?;
    Ok(json!({"agentId": agent, "workspace": format!("{BUCKET_AGENTS}/{agent}"), "providers": []}))
}

/// `exec.approval.grants.list {limit?}`: no standing grants (upstream mints them for cron
/// jobs' commands; nothing here runs commands yet).
pub fn approval_grants(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("exec.approval.grants.list", params)?.only(&["limit"])?;
    p.optional_u64_in("limit", 1, 500)?;
    Ok(json!({"grants": []}))
}

/// `artifacts.list`: runs here produce text, no artifacts (images, files). Upstream's query
/// rules still hold: a scope is required, and paging only for images.
pub fn artifacts_list(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("artifacts.list", params)?.only(&[
        "sessionKey",
        "runId",
        "taskId",
        "agentId",
        "messageRole",
        "type",
        "limit",
        "cursor",
    ])?;
    let mut scoped = false;
    for key in ["sessionKey", "runId", "taskId", "agentId", "cursor"] {
        let given = p.optional_str(key)?.is_some();
        scoped |= given && matches!(key, "sessionKey" | "runId" | "taskId");
    }
    let unsupported = |message: &str| {
        RpcError::bad_params(message).with_detail("type", "artifact_query_unsupported")
    };
    if !scoped {
        return Err(unsupported(
            "artifacts require one of sessionKey, runId, or taskId",
        ));
    }
    let image = p.optional_str("type")?.as_deref() == Some("image");
    if !image && (p.get("limit").is_some() || p.get("cursor").is_some()) {
        return Err(unsupported("limit and cursor require type image"));
    }
    p.optional_u64_in("limit", 1, 4)?;
    Ok(json!({"artifacts": []}))
}
