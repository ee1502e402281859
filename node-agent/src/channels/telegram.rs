//! Telegram through the Bot API (`https://api.telegram.org/bot<token>/<method>`): long
//! polling with `getUpdates`, `sendMessage`, `sendVoice` for spoken replies, `getMe` as the
//! probe. Settings: `botToken` (or `${ENV}`), `apiBaseUrl` [EXT].
//!
//! The polling offset lives in the account's record, moved only under the receiver's lease
//! and only after the updates it confirms were stored as inbound records: a node that dies
//! mid-batch leaves the offset behind, its successor fetches the batch again, and the
//! records' create-once keys (`<chat>_<message>`, stable even when Telegram restarts its
//! update ids after a quiet week) drop what was already stored.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use argent_planes::state::{modify_json, StateError};

use super::config::{Account, ChannelId};
use super::platform::{
    call_json, in_parts, missing_secrets, mode_fields, required, Api, ChannelError, Delivered,
    Outbound, Platform, PollContext, Received, Receiving,
};
use super::store::{self, AccountRecord, InboundRecord, BUCKET};

pub struct Telegram;

const DEFAULT_API: &str = "https://api.telegram.org";
/// How long one `getUpdates` is held by Telegram (`pollTimeoutSeconds` [EXT], 1…50).
const POLL_TIMEOUT_S: u64 = 25;
/// A `getUpdates` unanswered this long after its hold ended is stalled: abandoned, retried.
const STALL_GRACE: Duration = Duration::from_secs(10);
/// Telegram's longest message.
const MAX_TEXT: usize = 4096;
/// Telegram picks update ids at random after a week without updates; an offset this old
/// is not sent (it could confirm, and so drop, the new ones).
const CURSOR_FORGET_MS: u64 = 6 * 24 * 3600 * 1000;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

fn token(account: &Account) -> Result<String, ChannelError> {
    required(account, "botToken")
}

/// Calls a Bot API method; its `result`, or Telegram's own `description` of the failure.
async fn api(
    on: Api<'_>,
    method: &str,
    body: Value,
    timeout: Duration,
) -> Result<Value, ChannelError> {
    let Api { http, account } = on;
    let url = format!(
        "{}/bot{}/{method}",
        account.api_base(DEFAULT_API),
        token(account)?
    );
    let what = format!("Telegram {method}");
    let (status, answer) = call_json(http.post(url).json(&body).timeout(timeout), &what).await?;
    read_answer(&what, status, answer)
}

fn read_answer(what: &str, status: u16, answer: Value) -> Result<Value, ChannelError> {
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer.get("result").cloned().unwrap_or(Value::Null));
    }
    let description = answer
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("no description");
    Err(ChannelError::Delivery(format!(
        "{what} failed (HTTP {status}): {description}"
    )))
}

/// A chat id (`123`, `-100123`) or a public channel's `@name`, with or without `telegram:`.
fn chat_id(to: &str) -> Result<Value, ChannelError> {
    let to = to.trim();
    let to = to.strip_prefix("telegram:").unwrap_or(to).trim();
    if let Ok(id) = to.parse::<i64>() {
        return Ok(json!(id));
    }
    if to.len() > 1 && to.starts_with('@') {
        return Ok(json!(to));
    }
    Err(ChannelError::BadTarget(format!(
        "Telegram target must be a numeric chat id or @channel name, not {to:?}"
    )))
}

/// Reads a private text message out of an update; `None` for anything else (groups, media,
/// edits, service messages are not handed to the agent in this release).
fn received(update: &Value) -> Option<Received> {
    let message = update.get("message")?;
    let chat = message.get("chat")?;
    if chat.get("type").and_then(Value::as_str) != Some("private") {
        return None;
    }
    let text = message
        .get("text")
        .or_else(|| message.get("caption"))
        .and_then(Value::as_str)?;
    let chat_id = chat.get("id").and_then(Value::as_i64)?;
    let message_id = message.get("message_id").and_then(Value::as_i64)?;
    let from = message.get("from");
    let mut ids = vec![from
        .and_then(|f| f.get("id"))
        .and_then(Value::as_i64)
        .unwrap_or(chat_id)
        .to_string()];
    if let Some(name) = from.and_then(|f| f.get("username")).and_then(Value::as_str) {
        ids.push(format!("@{name}"));
    }
    let name = from
        .and_then(|f| f.get("first_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(Received {
        message_id: format!("{chat_id}_{message_id}"),
        seq: update.get("update_id").and_then(Value::as_i64).unwrap_or(0),
        from: ids,
        from_name: name,
        chat: chat_id.to_string(),
        thread: None,
        text: text.to_string(),
    })
}

/// Sends a voice note (Ogg Opus) as `multipart/form-data`.
pub async fn send_voice(
    http: &reqwest::Client,
    account: &Account,
    to: &str,
    audio: Vec<u8>,
    file_name: &str,
) -> Result<Delivered, ChannelError> {
    let chat = chat_id(to)?;
    let boundary = format!("argent-{}", uuid::Uuid::new_v4().simple());
    let chat_text = match &chat {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut body = Vec::with_capacity(audio.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n{chat_text}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"voice\"; filename=\"{file_name}\"\r\n\
             Content-Type: audio/ogg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let url = format!(
        "{}/bot{}/sendVoice",
        account.api_base(DEFAULT_API),
        token(account)?
    );
    let request = http
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .timeout(SEND_TIMEOUT);
    let (status, answer) = call_json(request, "Telegram sendVoice").await?;
    let message = read_answer("Telegram sendVoice", status, answer)?;
    Ok(delivered(&message, &chat_text))
}

fn delivered(message: &Value, chat: &str) -> Delivered {
    Delivered {
        message_id: message
            .get("message_id")
            .map(|v| v.to_string())
            .unwrap_or_default(),
        target_field: "chatId",
        target: message
            .pointer("/chat/id")
            .map(|v| v.to_string())
            .unwrap_or_else(|| chat.to_string()),
    }
}

/// The offset to poll from, read under the lease (`Err` when the lease is gone).
async fn cursor(ctx: &PollContext) -> Result<Option<i64>, ()> {
    let entry = ctx
        .store
        .get(
            BUCKET,
            &store::account_key(ChannelId::Telegram, &ctx.account.id),
        )
        .await;
    let record = match entry {
        Ok(Some(e)) => serde_json::from_slice::<AccountRecord>(&e.value).unwrap_or_default(),
        Ok(None) => AccountRecord::default(),
        // Unreachable state: poll from the start of what Telegram still holds; the
        // records' keys drop what was stored before.
        Err(_) => return Ok(None),
    };
    if !ctx.fence.holds(&record) {
        return Err(());
    }
    let fresh = record
        .cursor_at_ms
        .is_some_and(|at| argent_proto::now_ms().saturating_sub(at) < CURSOR_FORGET_MS);
    Ok(record.cursor.filter(|_| fresh))
}

/// Moves the offset under the lease; `Ok(false)` when the lease is gone.
async fn move_cursor(ctx: &PollContext, next: i64) -> Result<bool, StateError> {
    let key = store::account_key(ChannelId::Telegram, &ctx.account.id);
    let moved = modify_json(
        ctx.store.as_ref(),
        BUCKET,
        &key,
        |r: Option<AccountRecord>| {
            let Some(mut r) = r.filter(|r| ctx.fence.holds(r)) else {
                return Ok::<_, StateError>(None);
            };
            r.cursor = Some(next);
            r.cursor_at_ms = Some(argent_proto::now_ms());
            Ok(Some((r, ())))
        },
    )
    .await?;
    Ok(moved.is_some())
}

/// Waits `delay`, or less when the receiver is told to stop (then `false`).
async fn pause(ctx: &mut PollContext, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => !*ctx.stop.borrow(),
        _ = ctx.stop.changed() => false,
    }
}

/// Exponential backoff after failures: 1 s doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

#[async_trait]
impl Platform for Telegram {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        missing_secrets(account, &["botToken"])
    }

    fn receiving(&self, _account: &Account) -> Receiving {
        Receiving::Poll
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        mode_fields(account, "polling", "botToken")
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let chat = chat_id(message.to)?;
        let last = in_parts(message.text, MAX_TEXT, |part| {
            api(
                on,
                "sendMessage",
                json!({"chat_id": chat, "text": part}),
                SEND_TIMEOUT,
            )
        })
        .await?;
        Ok(delivered(&last, &chat.to_string()))
    }

    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError> {
        let me = api(on, "getMe", json!({}), timeout).await?;
        Ok(json!({
            "ok": true,
            "bot": {"id": me.get("id"), "username": me.get("username")},
        }))
    }

    async fn poll(&self, mut ctx: PollContext) {
        let mut failures = 0u32;
        let (http, account) = (ctx.http.clone(), ctx.account.clone());
        let on = Api {
            http: &http,
            account: &account,
        };
        let poll_timeout = ctx
            .account
            .settings
            .get("pollTimeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(POLL_TIMEOUT_S)
            .clamp(1, 50);
        let hold = Duration::from_secs(poll_timeout) + STALL_GRACE;
        // Who the bot is, once: status shows it.
        loop {
            let asked = tokio::select! {
                r = api(on, "getMe", json!({}), hold) => r,
                _ = ctx.stop.changed() => return,
            };
            match asked {
                Ok(me) => {
                    if let Some(name) = me.get("username").and_then(Value::as_str) {
                        ctx.health.set_bot(format!("@{name}"));
                    }
                    ctx.health.connected();
                    break;
                }
                Err(err) => {
                    ctx.health.failed(err.to_string());
                    failures += 1;
                    if !pause(&mut ctx, backoff(failures)).await {
                        return;
                    }
                }
            }
        }
        let Ok(mut offset) = cursor(&ctx).await else {
            return;
        };
        loop {
            if *ctx.stop.borrow() {
                return;
            }
            let mut body = json!({"timeout": poll_timeout, "allowed_updates": ["message"]});
            if let Some(offset) = offset {
                body["offset"] = json!(offset);
            }
            let asked = tokio::select! {
                r = api(on, "getUpdates", body, hold) => r,
                _ = ctx.stop.changed() => return,
            };
            let updates = match asked {
                Ok(Value::Array(updates)) => updates,
                Ok(other) => {
                    ctx.health
                        .failed(format!("Telegram getUpdates answered no list: {other}"));
                    Vec::new()
                }
                Err(err) => {
                    let err = match err {
                        ChannelError::Unknown(m) if m.contains("timed out") => format!(
                            "Telegram getUpdates stalled: no answer within {} s",
                            hold.as_secs()
                        ),
                        other => other.to_string(),
                    };
                    tracing::warn!(account = %ctx.account.id, %err, "telegram polling failed");
                    ctx.health.failed(err);
                    failures += 1;
                    if !pause(&mut ctx, backoff(failures)).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            ctx.health.connected();
            let mut next = offset;
            let mut stored_all = true;
            for update in &updates {
                let Some(id) = update.get("update_id").and_then(Value::as_i64) else {
                    continue;
                };
                if let Some(message) = received(update) {
                    let record = InboundRecord::from_received(&message);
                    if let Err(err) = store::receive(
                        ctx.store.as_ref(),
                        ChannelId::Telegram,
                        &ctx.account.id,
                        &record,
                    )
                    .await
                    {
                        // Not stored: the offset stays before it, so it is fetched again.
                        ctx.health
                            .failed(format!("cannot store an inbound message: {err}"));
                        stored_all = false;
                        break;
                    }
                }
                next = Some(next.map_or(id + 1, |n: i64| n.max(id + 1)));
            }
            if !updates.is_empty() {
                ctx.inbox.notify_one();
            }
            if next != offset {
                match move_cursor(&ctx, next.unwrap_or_default()).await {
                    Ok(true) => offset = next,
                    Ok(false) => return,
                    // The updates are stored; polling on from the local offset is safe (a
                    // successor that reads the older one drops the repeats by their keys).
                    Err(err) => {
                        tracing::warn!(%err, "telegram cursor not saved");
                        offset = next;
                    }
                }
            }
            if !stored_all && !pause(&mut ctx, backoff(1)).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_text_messages_only() {
        let update = json!({"update_id": 9, "message": {"message_id": 7, "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "username": "bob", "first_name": "Bob"}, "text": "hi"}});
        let r = received(&update).unwrap();
        assert_eq!(r.message_id, "5_7");
        assert_eq!(r.from, ["5", "@bob"]);
        assert_eq!((r.chat.as_str(), r.text.as_str()), ("5", "hi"));
        let group = json!({"update_id": 9, "message": {"message_id": 7, "chat": {"id": -5, "type": "group"}, "text": "hi"}});
        assert!(received(&group).is_none());
        let sticker = json!({"update_id": 9, "message": {"message_id": 7, "chat": {"id": 5, "type": "private"}}});
        assert!(received(&sticker).is_none());
    }

    #[test]
    fn targets() {
        assert_eq!(chat_id("telegram:-100").unwrap(), json!(-100));
        assert_eq!(chat_id("@news").unwrap(), json!("@news"));
        assert!(matches!(chat_id("bob"), Err(ChannelError::BadTarget(_))));
    }

    #[test]
    fn failures_read_telegrams_description() {
        let err = read_answer(
            "Telegram sendMessage",
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Telegram sendMessage failed (HTTP 400): Bad Request: chat not found"
        );
    }
}
