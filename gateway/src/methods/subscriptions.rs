//! `sessions.subscribe` / `sessions.unsubscribe` and `sessions.messages.subscribe` /
//! `sessions.messages.unsubscribe` (protocol 4): the connection then receives
//! `sessions.changed` when any session entry changes and `session.message` for each message
//! written to a followed session's transcript, from whichever node-agent wrote it.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::session_key::SessionKey;

use crate::context::Ctx;
use crate::ws::session::Session;

pub fn sessions(
    session: &Session,
    method: &str,
    params: Value,
    on: bool,
) -> Result<Value, RpcError> {
    // List params (`limit`, `search`, …) are accepted; the list itself is `sessions.list`.
    Params::new(method, params)?;
    session.subscriptions.set_sessions(on);
    Ok(json!({"subscribed": on}))
}

pub fn messages(
    ctx: &Ctx,
    session: &Session,
    method: &str,
    params: Value,
    on: bool,
) -> Result<Value, RpcError> {
    let p = Params::new(method, params)?;
    let raw = match p.optional_str("key")? {
        Some(key) => key,
        None => p.required_str("sessionKey")?,
    };
    let key = SessionKey::canonical(&raw, ctx.shared_config.get().agents()).into_string();
    if on {
        session.subscriptions.add_messages(&key)?;
    } else {
        session.subscriptions.remove_messages(&key);
    }
    Ok(json!({"subscribed": on, "key": key}))
}
