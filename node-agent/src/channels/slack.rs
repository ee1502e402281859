//! Slack: outbound `chat.postMessage`, inbound through the Events API — deliveries signed
//! with the app's signing secret (`X-Slack-Signature: v0=HMAC-SHA256("v0:{ts}:{body}")`,
//! refused when the timestamp is more than five minutes off), the `url_verification`
//! handshake, and direct messages to the bot (`message` events in `im` channels) handed to
//! the agent. Settings: `botToken`, `signingSecret` (also `${ENV}`), `apiBaseUrl` [EXT].

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::config::Account;
use super::platform::{
    call_json, hmac_matches, in_parts, missing_secrets, mode_fields, required, Api, ChannelError,
    Delivered, Outbound, Platform, Received, Receiving, WebhookOutcome, WebhookRequest,
};

pub struct Slack;

const DEFAULT_API: &str = "https://slack.com/api";
/// Slack truncates messages over 40,000 characters.
const MAX_TEXT: usize = 39_000;
/// How far a delivery's timestamp may be from now (Slack's own advice: five minutes).
const MAX_SKEW_S: u64 = 300;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

async fn api(
    on: Api<'_>,
    method: &str,
    body: Value,
    timeout: Duration,
) -> Result<Value, ChannelError> {
    let Api { http, account } = on;
    let token = required(account, "botToken")?;
    let url = format!("{}/{method}", account.api_base(DEFAULT_API));
    let request = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .timeout(timeout);
    let what = format!("Slack {method}");
    let (status, answer) = call_json(request, &what).await?;
    // Slack says failures in the body, mostly with HTTP 200.
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer);
    }
    let error = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no error given");
    Err(ChannelError::Delivery(format!(
        "{what} failed (HTTP {status}): {error}"
    )))
}

/// Checks the signature and the timestamp of a delivery.
fn verify(secret: &str, request: &WebhookRequest, now_s: u64) -> Result<(), ChannelError> {
    let ts = request
        .header("x-slack-request-timestamp")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| ChannelError::Forbidden("X-Slack-Request-Timestamp missing".into()))?;
    if now_s.abs_diff(ts) > MAX_SKEW_S {
        return Err(ChannelError::Forbidden(
            "X-Slack-Request-Timestamp is too far from now".into(),
        ));
    }
    let signature = request
        .header("x-slack-signature")
        .and_then(|s| s.trim().strip_prefix("v0="))
        .ok_or_else(|| ChannelError::Forbidden("X-Slack-Signature missing".into()))?;
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(&request.body);
    if hmac_matches(secret.as_bytes(), &base, signature) {
        Ok(())
    } else {
        Err(ChannelError::Forbidden(
            "X-Slack-Signature does not match".into(),
        ))
    }
}

/// A direct message to the bot out of an `event_callback`; `None` for anything else (the
/// bot's own messages, edits, channel chatter).
fn received(envelope: &Value) -> Option<Received> {
    let event = envelope.get("event")?;
    if event.get("type").and_then(Value::as_str) != Some("message")
        || event.get("subtype").is_some()
        || event.get("bot_id").is_some()
        || event.get("channel_type").and_then(Value::as_str) != Some("im")
    {
        return None;
    }
    let field = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let user = field(event, "user")?;
    let channel = field(event, "channel")?;
    let text = event.get("text").and_then(Value::as_str)?;
    let id = field(envelope, "event_id")
        .or_else(|| field(event, "ts").map(|ts| format!("{channel}-{ts}")))?;
    Some(Received {
        message_id: id,
        seq: 0,
        from: vec![user],
        from_name: None,
        chat: channel,
        thread: event
            .get("thread_ts")
            .and_then(Value::as_str)
            .map(str::to_string),
        text: text.to_string(),
    })
}

#[async_trait]
impl Platform for Slack {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        missing_secrets(account, &["botToken"])
    }

    fn receiving(&self, account: &Account) -> Receiving {
        if account.secret("signingSecret").is_some() {
            Receiving::Webhook
        } else {
            Receiving::No("set signingSecret to receive messages through the Events API")
        }
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        mode_fields(account, "http", "botToken")
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let to = message.to.trim();
        let to = to.strip_prefix("slack:").unwrap_or(to).trim();
        if to.is_empty() || to.contains(char::is_whitespace) {
            return Err(ChannelError::BadTarget(format!(
                "Slack target must be a channel or user id, not {to:?}"
            )));
        }
        let last = in_parts(message.text, MAX_TEXT, |part| {
            let mut body = json!({"channel": to, "text": part});
            if let Some(thread) = message.thread {
                body["thread_ts"] = json!(thread);
            }
            api(on, "chat.postMessage", body, SEND_TIMEOUT)
        })
        .await?;
        Ok(Delivered {
            message_id: last
                .get("ts")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            target_field: "channelId",
            target: last
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or(to)
                .to_string(),
        })
    }

    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError> {
        let me = api(on, "auth.test", json!({}), timeout).await?;
        Ok(json!({
            "ok": true,
            "team": me.get("team"),
            "user": me.get("user"),
            "botId": me.get("bot_id"),
        }))
    }

    fn webhook(
        &self,
        account: &Account,
        request: &WebhookRequest,
    ) -> Result<WebhookOutcome, ChannelError> {
        let Some(secret) = account.secret("signingSecret") else {
            return Ok(WebhookOutcome::text(404, "this account takes no webhooks"));
        };
        if request.method != "POST" {
            return Ok(WebhookOutcome::text(405, "POST only"));
        }
        verify(&secret, request, argent_proto::now_ms() / 1000)?;
        let envelope: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ChannelError::Malformed(format!("not JSON: {e}")))?;
        match envelope.get("type").and_then(Value::as_str) {
            Some("url_verification") => {
                let challenge = envelope.get("challenge").cloned().unwrap_or(Value::Null);
                Ok(WebhookOutcome {
                    status: 200,
                    content_type: "application/json",
                    body: json!({ "challenge": challenge }).to_string(),
                    messages: Vec::new(),
                })
            }
            Some("event_callback") => Ok(WebhookOutcome::ok(
                received(&envelope).into_iter().collect(),
            )),
            _ => Ok(WebhookOutcome::ok(Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::platform::hmac_hex;

    fn signed(secret: &str, ts: u64, body: &str) -> WebhookRequest {
        let sig = hmac_hex(secret.as_bytes(), format!("v0:{ts}:{body}").as_bytes());
        WebhookRequest {
            method: "POST".into(),
            headers: vec![
                ("x-slack-request-timestamp".into(), ts.to_string()),
                ("x-slack-signature".into(), format!("v0={sig}")),
            ],
            body: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn signatures_and_timestamps() {
        let r = signed("s3", 1_700_000_000, "{}");
        assert!(verify("s3", &r, 1_700_000_100).is_ok());
        assert!(verify("other", &r, 1_700_000_100).is_err());
        assert!(verify("s3", &r, 1_700_000_400).is_err());
    }

    #[test]
    fn direct_messages_only() {
        let e = json!({"type": "event_callback", "event_id": "Ev1", "event": {
            "type": "message", "channel_type": "im", "user": "U1", "channel": "D1", "text": "hi", "ts": "1.2"}});
        let r = received(&e).unwrap();
        assert_eq!((r.message_id.as_str(), r.chat.as_str()), ("Ev1", "D1"));
        let bot = json!({"type": "event_callback", "event_id": "Ev2", "event": {
            "type": "message", "channel_type": "im", "bot_id": "B1", "user": "U1", "channel": "D1", "text": "x"}});
        assert!(received(&bot).is_none());
    }
}
