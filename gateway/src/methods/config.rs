//! `config.get`, `config.set`, `config.patch`, `config.apply`, `config.schema`
//! (PROTOCOL.md §5.3). Writes are optimistic: `baseHash` must be the hash of the stored
//! text, and the store itself refuses a write that raced another one (file lock in one
//! process, state-plane revision across gateways).

use serde_json::{json, Value};

use argent_proto::config as document;
use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use argent_proto::catalog::SCOPE_ADMIN;
use argent_proto::version::ConfigView;

use crate::context::Ctx;
use crate::respond;
use crate::shared_config::{Document, WriteError};
use crate::ws::session::Session;

/// `config.patch` / `config.apply`: default and longest announced restart delay.
const DEFAULT_RESTART_DELAY_MS: u64 = 2_000;
const MAX_RESTART_DELAY_MS: u64 = 60_000;

async fn read(ctx: &Ctx) -> Result<Document, RpcError> {
    ctx.shared_config.read().await.map_err(respond::config)
}

pub async fn get(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    Params::new("config.get", params)?.only(&[])?;
    let doc = read(ctx).await?;
    let view = session.protocol.config_view();
    let (parsed, issues) = match doc.raw.as_deref().map(document::parse) {
        None => (json!({}), Vec::new()),
        Some(Ok(parsed)) => {
            let issues = document::validate(&parsed).err().unwrap_or_default();
            (parsed, issues)
        }
        Some(Err(message)) => (
            Value::Null,
            vec![document::Issue {
                path: String::new(),
                message,
            }],
        ),
    };
    // A v4 reader sees the document with every secret masked; the raw text is then the
    // masked document, not the file.
    let admin = session.scopes.iter().any(|s| s == SCOPE_ADMIN);
    let (raw, parsed) = match view {
        ConfigView::Full => (doc.raw.clone(), parsed),
        // A file that does not parse cannot be masked key by key; an admin must still be
        // able to see and repair it.
        ConfigView::Redacted if parsed.is_null() && admin => (doc.raw.clone(), parsed),
        ConfigView::Redacted if parsed.is_null() => (None, parsed),
        ConfigView::Redacted => {
            let masked = document::redacted(&parsed);
            let raw = doc
                .raw
                .as_ref()
                .map(|_| serde_json::to_string_pretty(&masked).expect("JSON values serialize"));
            (raw, masked)
        }
    };
    Ok(json!({
        "path": doc.path,
        "exists": doc.raw.is_some(),
        "raw": raw,
        "parsed": parsed,
        "valid": issues.is_empty(),
        "config": if parsed.is_null() { json!({}) } else { parsed.clone() },
        "hash": doc.hash(),
        "issues": issues,
        "warnings": [],
        "legacyIssues": [],
    }))
}

/// The `baseHash` rule: required once a config exists, and it must be the current one.
fn check_base(doc: &Document, p: &Params) -> Result<(), RpcError> {
    if doc.raw.is_none() {
        return Ok(());
    }
    match p.optional_str("baseHash")? {
        None => Err(RpcError::bad_params(
            "config base hash required; re-run config.get and retry",
        )),
        Some(hash) if hash.trim().to_ascii_lowercase() != doc.hash() => Err(changed()),
        Some(_) => Ok(()),
    }
}

fn changed() -> RpcError {
    respond::config(WriteError::Changed)
}

/// A document sent back with `config.get`'s secret markers in it, with the stored secrets
/// in their places (the text is then re-written as JSON: a marker cannot stay in a file).
fn with_stored_secrets(doc: &Document, raw: String) -> Result<String, RpcError> {
    if !raw.contains(document::REDACTED) {
        return Ok(raw);
    }
    let mut parsed = document::parse(&raw).map_err(RpcError::bad_params)?;
    restore_secrets(doc, &mut parsed)?;
    Ok(serde_json::to_string_pretty(&parsed).expect("JSON values serialize") + "\n")
}

fn restore_secrets(doc: &Document, value: &mut Value) -> Result<(), RpcError> {
    let stored = match doc.raw.as_deref().map(document::parse) {
        Some(Ok(stored)) => stored,
        _ => json!({}),
    };
    document::restore_redacted(value, &stored).map_err(|path| {
        RpcError::bad_params(format!(
            "{path}: a redacted secret ({}) with nothing stored in its place; send the value itself",
            document::REDACTED
        ))
    })
}

/// Parses and validates a whole document.
fn checked(raw: &str) -> Result<Value, RpcError> {
    let parsed = document::parse(raw).map_err(RpcError::bad_params)?;
    document::validate(&parsed).map_err(|issues| {
        let first = &issues[0];
        RpcError::bad_params(format!("invalid config: {}: {}", first.path, first.message))
            .with_detail(
                "issues",
                serde_json::to_value(&issues).expect("issues serialize"),
            )
    })?;
    Ok(parsed)
}

async fn store(ctx: &Ctx, base: &Document, raw: String) -> Result<(), RpcError> {
    ctx.shared_config
        .write(base, raw)
        .await
        .map_err(respond::config)
}

pub async fn set(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("config.set", params)?.only(&["raw", "baseHash"])?;
    let raw = p.required_str("raw")?;
    let doc = read(ctx).await?;
    check_base(&doc, &p)?;
    let raw = with_stored_secrets(&doc, raw)?;
    let config = checked(&raw)?;
    store(ctx, &doc, raw).await?;
    tracing::info!(path = %doc.path, "config replaced (config.set)");
    Ok(json!({"ok": true, "path": doc.path, "config": config}))
}

const RESTARTING_PARAMS: &[&str] = &["raw", "baseHash", "sessionKey", "note", "restartDelayMs"];

pub async fn patch(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("config.patch", params)?.only(RESTARTING_PARAMS)?;
    let raw_patch = p.required_str("raw")?;
    let delay = restart_delay(&p)?;
    let doc = read(ctx).await?;
    check_base(&doc, &p)?;
    let mut config = match doc.raw.as_deref().map(document::parse) {
        None => json!({}),
        Some(Ok(current)) if document::validate(&current).is_ok() => current,
        Some(_) => return Err(RpcError::bad_params("invalid config; fix before patching")),
    };
    let mut patch = document::parse(&raw_patch).map_err(RpcError::bad_params)?;
    restore_secrets(&doc, &mut patch)?;
    if !patch.is_object() {
        return Err(RpcError::bad_params("config.patch raw must be an object"));
    }
    document::merge_patch(&mut config, &patch);
    let raw = serde_json::to_string_pretty(&config).expect("JSON values serialize") + "\n";
    let config = checked(&raw)?;
    store(ctx, &doc, raw).await?;
    tracing::info!(path = %doc.path, "config patched (config.patch)");
    Ok(restarting(ctx, &doc, config, delay, "config.patch", &p))
}

pub async fn apply(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("config.apply", params)?.only(RESTARTING_PARAMS)?;
    let raw = p.required_str("raw")?;
    let delay = restart_delay(&p)?;
    let doc = read(ctx).await?;
    check_base(&doc, &p)?;
    let raw = with_stored_secrets(&doc, raw)?;
    let config = checked(&raw)?;
    store(ctx, &doc, raw).await?;
    tracing::info!(path = %doc.path, "config replaced (config.apply)");
    Ok(restarting(ctx, &doc, config, delay, "config.apply", &p))
}

fn restart_delay(p: &Params) -> Result<u64, RpcError> {
    Ok(p.optional_u64("restartDelayMs", 0)?
        .unwrap_or(DEFAULT_RESTART_DELAY_MS)
        .min(MAX_RESTART_DELAY_MS))
}

/// The result of a write that upstream follows with a restart. Here every gateway and
/// node-agent applies the new revision live, so nothing restarts; the `restart` object is
/// still sent (clients display it) and says so in `mode`.
fn restarting(
    ctx: &Ctx,
    doc: &Document,
    config: Value,
    delay_ms: u64,
    reason: &str,
    p: &Params,
) -> Value {
    let payload = json!({
        "kind": "config-apply",
        "status": "ok",
        "ts": argent_proto::now_ms(),
        "sessionKey": p.get("sessionKey").cloned().unwrap_or(Value::Null),
        "message": p.get("note").cloned().unwrap_or(Value::Null),
        "doctorHint": null,
        "stats": {"mode": reason, "root": doc.path},
    });
    json!({
        "ok": true,
        "path": doc.path,
        "config": config,
        "restart": {
            "ok": true,
            "pid": std::process::id(),
            "signal": "SIGUSR1",
            "delayMs": delay_ms,
            "reason": reason,
            "mode": "live-reload",
        },
        "sentinel": {"path": format!("{}/restart-sentinel", ctx.gateway_id), "payload": payload},
    })
}

pub fn schema(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("config.schema", params)?.only(&[])?;
    Ok(json!({
        "schema": document::schema(),
        "uiHints": document::ui_hints(),
        "version": ctx.version,
        "generatedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

/// `config.schema.lookup {path}` (protocol 4): one node of the schema and its children, so
/// a form can ask whether a setting exists (`a.b`, `a.*`, `a[0]`, `.` for the root).
pub fn schema_lookup(params: Value) -> Result<Value, RpcError> {
    let p = Params::new("config.schema.lookup", params)?.only(&["path"])?;
    let path = p.required_str("path")?;
    let well_formed = path.len() <= 1024
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./[]-*".contains(c));
    if !well_formed {
        return Err(p.invalid("at /path: must match pattern \"^[A-Za-z0-9_./\\[\\]\\-*]+$\" (at most 1024 characters)"));
    }
    argent_proto::config_form::lookup(document::schema(), &document::ui_hints(), &path)
        .ok_or_else(|| RpcError::bad_params("config schema path not found"))
}
