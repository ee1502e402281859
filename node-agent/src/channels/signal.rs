//! Signal through a `signal-cli` daemon in HTTP mode (`signal-cli -a <account> daemon
//! --http`): sending with the JSON-RPC method `send` on `POST /api/v1/rpc`, receiving from
//! the Server-Sent-Events stream `GET /api/v1/events`, held open by the account's receiver
//! and opened again (with backoff) when it breaks. Settings: `account` (the bot's number),
//! `httpUrl` (the daemon, default `http://127.0.0.1:8080`; `apiBaseUrl` [EXT] also works).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::config::{Account, ChannelId};
use super::platform::{
    call_json, describe, in_parts, required, Api, ChannelError, Delivered, Outbound, Platform,
    PollContext, Received, Receiving,
};
use super::store::{self, InboundRecord};

pub struct Signal;

const DEFAULT_DAEMON: &str = "http://127.0.0.1:8080";
/// Signal's longest message (longer ones go as an attachment in the apps).
const MAX_TEXT: usize = 2000;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// While the event stream is open the loop is alive; it says so this often.
const STREAM_BEAT: Duration = Duration::from_secs(10);
/// The most one event may hold before the stream is judged broken.
const MAX_EVENT_BYTES: usize = 1 << 20;

fn daemon(account: &Account) -> String {
    let default = account
        .text("httpUrl")
        .unwrap_or(DEFAULT_DAEMON)
        .to_string();
    account.api_base(&default)
}

fn number(account: &Account) -> Result<String, ChannelError> {
    required(account, "account")
}

/// Calls a JSON-RPC method of the daemon; its `result`, or its error's message.
async fn rpc(
    on: Api<'_>,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ChannelError> {
    let Api { http, account } = on;
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params,
                      "id": uuid::Uuid::new_v4().to_string()});
    let request = http
        .post(format!("{}/api/v1/rpc", daemon(account)))
        .json(&body)
        .timeout(timeout);
    let what = format!("signal-cli {method}");
    let (status, answer) = call_json(request, &what).await?;
    if let Some(error) = answer.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(ChannelError::Delivery(format!("{what} failed: {message}")));
    }
    if !(200..300).contains(&status) {
        return Err(ChannelError::Delivery(format!(
            "{what} failed (HTTP {status})"
        )));
    }
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

/// `+<digits>` (a number), `group:<id>`, or a `u:`/uuid recipient.
fn recipient(to: &str) -> Result<(&'static str, Value), ChannelError> {
    let to = to.trim();
    let to = to.strip_prefix("signal:").unwrap_or(to);
    if let Some(group) = to.strip_prefix("group:").filter(|g| !g.is_empty()) {
        return Ok(("groupId", json!(group)));
    }
    let digits = to.strip_prefix('+').unwrap_or(to);
    let is_number = (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    let is_uuid = to.len() == 36 && to.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if is_number {
        Ok(("recipient", json!([format!("+{digits}")])))
    } else if is_uuid {
        Ok(("recipient", json!([to])))
    } else {
        Err(ChannelError::BadTarget(format!(
            "Signal target must be +<number>, a uuid or group:<id>, not {to:?}"
        )))
    }
}

/// A direct text message out of one `receive` event; `None` for receipts, typing, groups.
fn received(event: &Value) -> Option<Received> {
    let envelope = event
        .get("envelope")
        .or_else(|| event.pointer("/params/envelope"))?;
    let data = envelope.get("dataMessage")?;
    if data.get("groupInfo").is_some() || data.get("groupV2").is_some() {
        return None;
    }
    let text = data.get("message").and_then(Value::as_str)?;
    let number = envelope
        .get("sourceNumber")
        .or_else(|| envelope.get("source"))
        .and_then(Value::as_str)?;
    let ts = envelope
        .get("timestamp")
        .or_else(|| data.get("timestamp"))
        .and_then(Value::as_u64)?;
    let mut from = vec![number.to_string()];
    if let Some(uuid) = envelope.get("sourceUuid").and_then(Value::as_str) {
        from.push(uuid.to_string());
    }
    Some(Received {
        message_id: format!("{}_{ts}", number.trim_start_matches('+')),
        seq: ts as i64,
        from,
        from_name: envelope
            .get("sourceName")
            .and_then(Value::as_str)
            .map(str::to_string),
        chat: number.to_string(),
        thread: None,
        text: text.to_string(),
    })
}

/// Pulls complete events (`data:` lines up to a blank line) out of `buffer`, which holds
/// the stream's bytes with every `\r` dropped (SSE ends lines with CR, LF or CRLF; JSON
/// escapes its own). A block is decoded only once complete, so a character split between
/// two network reads stays whole.
fn take_events(buffer: &mut Vec<u8>) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buffer.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            continue; // a keep-alive comment, or an event name alone
        }
        if let Ok(event) = serde_json::from_str(&data.join("\n")) {
            events.push(event);
        }
    }
    events
}

/// Stores a received message, trying again while the state plane is away (signal-cli does
/// not send an event twice: it is kept until stored). `false` when told to stop first.
async fn keep(ctx: &mut PollContext, message: &Received) -> bool {
    let record = InboundRecord::from_received(message);
    loop {
        let stored = store::receive(
            ctx.store.as_ref(),
            ChannelId::Signal,
            &ctx.account.id,
            &record,
        )
        .await;
        match stored {
            Ok(_) => return true,
            Err(err) => ctx
                .health
                .failed(format!("cannot store an inbound message: {err}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = ctx.stop.changed() => return false,
        }
    }
}

/// Reads one opened stream until it breaks (`Err` says why) or the receiver stops (`Ok`).
/// The loop beats while the stream is open; the client's TCP keep-alive breaks a stream
/// whose peer went away without closing it.
async fn follow(ctx: &mut PollContext, mut response: reqwest::Response) -> Result<(), String> {
    let mut buffer = Vec::new();
    let mut beat = tokio::time::interval(STREAM_BEAT);
    loop {
        let chunk = tokio::select! {
            c = response.chunk() => c,
            _ = beat.tick() => { ctx.health.beat(); continue; }
            _ = ctx.stop.changed() => return Ok(()),
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Err("signal-cli closed the event stream".into()),
            Err(e) => return Err(format!("signal-cli event stream: {}", describe(e))),
        };
        buffer.extend(chunk.iter().filter(|b| **b != b'\r'));
        ctx.health.beat();
        let mut arrived = false;
        for event in take_events(&mut buffer) {
            let Some(message) = received(&event) else {
                continue;
            };
            if !keep(ctx, &message).await {
                return Ok(());
            }
            arrived = true;
        }
        if arrived {
            ctx.inbox.notify_one();
        }
        // What is left is one event still arriving.
        if buffer.len() > MAX_EVENT_BYTES {
            return Err("signal-cli sent an event over 1 MiB".into());
        }
    }
}

#[async_trait]
impl Platform for Signal {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        if account.text("account").is_some() {
            Vec::new()
        } else {
            vec!["account"]
        }
    }

    fn receiving(&self, _account: &Account) -> Receiving {
        Receiving::Poll
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("mode".into(), json!("signal-cli"));
        fields.insert("daemon".into(), json!(daemon(account)));
        fields
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let account = on.account;
        let (field, to) = recipient(message.to)?;
        let from = number(account)?;
        let last = in_parts(message.text, MAX_TEXT, |part| {
            let mut params = json!({"account": from, "message": part});
            params[field] = to.clone();
            rpc(on, "send", params, SEND_TIMEOUT)
        })
        .await?;
        Ok(Delivered {
            message_id: last
                .get("timestamp")
                .map(|t| t.to_string())
                .unwrap_or_default(),
            target_field: "chatId",
            target: message.to.trim().to_string(),
        })
    }

    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError> {
        let version = rpc(on, "version", json!({}), timeout).await?;
        Ok(json!({"ok": true, "version": version.get("version")}))
    }

    async fn poll(&self, mut ctx: PollContext) {
        let mut failures = 0u32;
        loop {
            if *ctx.stop.borrow() {
                return;
            }
            let Ok(account) = number(&ctx.account) else {
                return;
            };
            let account: String = account
                .bytes()
                .map(|b| match b {
                    b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let url = format!("{}/api/v1/events?account={account}", daemon(&ctx.account));
            let opened = tokio::select! {
                r = ctx.http.get(url).send() => r,
                _ = ctx.stop.changed() => return,
            };
            let outcome = match opened {
                Ok(r) if r.status().is_success() => {
                    failures = 0;
                    ctx.health.connected();
                    follow(&mut ctx, r).await
                }
                Ok(r) => Err(format!(
                    "signal-cli event stream: HTTP {}",
                    r.status().as_u16()
                )),
                Err(e) => Err(format!("signal-cli event stream: {}", describe(e))),
            };
            match outcome {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(account = %ctx.account.id, %err, "signal receiving failed");
                    ctx.health.failed(err);
                    failures += 1;
                }
            }
            let delay = Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines() {
        let mut b = b":keepalive\n\nevent:receive\ndata:{\"envelope\":{\"sourceNumber\":\"+155\",\"timestamp\":7,\"dataMessage\":{\"message\":\"hi\"}}}\n\ndata:{\"x\"".to_vec();
        let events = take_events(&mut b);
        assert_eq!(events.len(), 1);
        let r = received(&events[0]).unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.text.as_str(), r.chat.as_str()),
            ("155_7", "hi", "+155")
        );
        assert_eq!(b, b"data:{\"x\"");
    }

    #[test]
    fn a_character_split_between_reads_stays_whole() {
        let event = "data:{\"envelope\":{\"sourceNumber\":\"+155\",\"timestamp\":8,\"dataMessage\":{\"message\":\"café\"}}}\n\n";
        let bytes = event.as_bytes();
        let cut = event.find('é').unwrap() + 1; // inside the two bytes of é
        let mut b = bytes[..cut].to_vec();
        assert!(take_events(&mut b).is_empty());
        b.extend_from_slice(&bytes[cut..]);
        let events = take_events(&mut b);
        assert_eq!(received(&events[0]).unwrap().text, "café");
    }

    #[test]
    fn recipients() {
        assert_eq!(recipient("+1555000").unwrap().0, "recipient");
        assert_eq!(recipient("group:abc").unwrap(), ("groupId", json!("abc")));
        assert!(recipient("bob").is_err());
    }
}
