//! `channels.status`, `channels.logout`, `send` (PROTOCOL.md §5.9), and the internal
//! `channels.webhook` a gateway calls with a request to a channel's webhook URL. The work
//! is the channel service's (`crate::channels`).

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use argent_planes::state::{modify_json, StateError};
use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::channels::config::{self, ChannelId};
use crate::channels::outbound::{self, SendRequest};
use crate::channels::platform::{platform, ChannelError, Receiving, WebhookRequest};
use crate::channels::store::{self, AccountRecord, BUCKET};
use crate::channels::{fingerprint, status, Channels};

/// `channels.status {probe?, timeoutMs?}`.
pub async fn status(c: &Channels, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("channels.status", params)?.only(&["probe", "timeoutMs", "channel"])?;
    let probe = p.optional_bool("probe")?.unwrap_or(false);
    let timeout = p
        .optional_u64("timeoutMs", 0)?
        .map(|ms| Duration::from_millis(ms.clamp(1, 60_000)))
        .unwrap_or(status::DEFAULT_PROBE_TIMEOUT);
    p.optional_str("channel")?;
    Ok(status::status(c, probe.then_some(timeout)).await?)
}

/// `send {to, message, idempotencyKey, channel?, accountId?, mediaUrl?, mediaUrls?,
/// gifPlayback?, sessionKey?}`.
pub async fn send(c: &Channels, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("send", params)?.only(&[
        "to",
        "message",
        "idempotencyKey",
        "channel",
        "accountId",
        "mediaUrl",
        "mediaUrls",
        "gifPlayback",
        "sessionKey",
    ])?;
    let mut media_urls = p.optional_str_list("mediaUrls")?.unwrap_or_default();
    if let Some(url) = p.optional_str("mediaUrl")? {
        media_urls.insert(0, url);
    }
    p.optional_bool("gifPlayback")?;
    let request = SendRequest {
        to: p.required_str("to")?,
        message: p.required_str("message")?,
        idempotency_key: p.required_str("idempotencyKey")?,
        channel: p.optional_str("channel")?,
        account_id: p.optional_str("accountId")?,
        media_urls,
        session_key: p.optional_str("sessionKey")?,
    };
    Ok(outbound::send(c, request).await?)
}

/// `channels.logout {channel, accountId?}`: stops the account's receiver on whichever node
/// runs it; it stays stopped until the account's config changes.
pub async fn logout(c: &Channels, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("channels.logout", params)?.only(&["channel", "accountId"])?;
    let name = p.required_str("channel")?;
    let channel = ChannelId::parse(&name).ok_or(ChannelError::Unsupported(name))?;
    let config = crate::methods::shared_config(&c.rt).await?;
    let account = config::account(&config, channel, p.optional_str("accountId")?.as_deref())
        .ok_or_else(|| {
            ChannelError::NotConfigured(format!("channel {} is not configured", channel.as_str()))
        })?;
    let print = fingerprint(&account);
    let now = argent_proto::now_ms();
    let stopped = modify_json(
        c.rt.state.as_ref(),
        BUCKET,
        &store::account_key(channel, &account.id),
        |r: Option<AccountRecord>| {
            let mut r = r.unwrap_or_default();
            let was_running = r.lease.as_ref().is_some_and(|l| !l.is_stale(now));
            r.lease = None;
            r.logged_out = Some(print.clone());
            r.status.last_stop_at = Some(now);
            r.status.connected = None;
            Ok::<_, StateError>(Some((r, was_running)))
        },
    )
    .await
    .map_err(crate::respond::state)?
    .unwrap_or(false);
    Ok(json!({
        "channel": channel.as_str(),
        "accountId": account.id,
        "cleared": stopped,
        "loggedOut": true,
    }))
}

/// The internal `channels.webhook {channel, accountId?, method, query, headers, body}`
/// (body base64): `{status, contentType, body}` for the gateway to answer with.
pub async fn webhook(c: &Channels, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(argent_proto::catalog::CHANNELS_WEBHOOK, params)?;
    let channel = p.required_str("channel")?;
    let account_id = p.optional_str("accountId")?;
    let headers = p
        .get("headers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|pair| {
                    let pair = pair.as_array()?;
                    Some((
                        pair.first()?.as_str()?.to_ascii_lowercase(),
                        pair.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let body = base64::engine::general_purpose::STANDARD
        .decode(p.get("body").and_then(Value::as_str).unwrap_or_default())
        .map_err(|_| p.invalid("at /body: must be base64"))?;
    let request = WebhookRequest {
        method: p.required_str("method")?.to_ascii_uppercase(),
        query: p
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        headers,
        body,
    };
    let answer = |status: u16, body: &str| json!({"status": status, "contentType": "text/plain; charset=utf-8", "body": body});
    let Some(channel) = ChannelId::parse(&channel) else {
        return Ok(answer(404, "no such channel"));
    };
    let config = crate::methods::shared_config(&c.rt).await?;
    let account = config::account(&config, channel, account_id.as_deref())
        .filter(|a| a.enabled() && platform(channel).receiving(a) == Receiving::Webhook);
    let Some(account) = account else {
        return Ok(answer(404, "no such account takes webhooks"));
    };
    if logged_out(c, &account).await? {
        // `channels.logout`: the account receives nothing until its config changes. The
        // platform is told all is well, so that it does not retry or disable the hook.
        return Ok(answer(200, "this account is logged out"));
    }
    let outcome = match platform(channel).webhook(&account, &request) {
        Ok(outcome) => outcome,
        Err(ChannelError::Forbidden(why)) => {
            tracing::warn!(account = %account.key(), %why, "webhook refused");
            return Ok(answer(401, &why));
        }
        Err(ChannelError::Malformed(why)) => return Ok(answer(400, &why)),
        Err(err) => return Ok(answer(503, &err.to_string())),
    };
    for message in &outcome.messages {
        let record = store::InboundRecord::from_received(message);
        match store::receive(c.rt.state.as_ref(), channel, &account.id, &record).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(id = %message.message_id, "webhook repeated a message"),
            // Not stored: a 5xx makes the platform deliver it again.
            Err(err) => return Ok(answer(503, &format!("cannot store the message: {err}"))),
        }
    }
    Ok(json!({"status": outcome.status, "contentType": outcome.content_type, "body": outcome.body}))
}

/// Whether `channels.logout` stopped the account (and its config has not changed since).
async fn logged_out(c: &Channels, account: &config::Account) -> Result<bool, RpcError> {
    let entry =
        c.rt.state
            .get(BUCKET, &store::account_key(account.channel, &account.id))
            .await
            .map_err(crate::respond::state)?;
    let record: AccountRecord = entry
        .and_then(|e| serde_json::from_slice(&e.value).ok())
        .unwrap_or_default();
    Ok(record.logged_out.as_deref() == Some(fingerprint(account).as_str()))
}
