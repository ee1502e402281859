//! A generic signed webhook [EXT], for systems with no platform of their own:
//!
//! * outbound: `POST {url}` with `{"id", "to", "text", "account", "ts"}` and
//!   `X-Argent-Signature: sha256=<hex HMAC-SHA256 of the body under secret>`;
//! * inbound: `POST /channels/webhook/<account>/webhook` on any gateway with
//!   `{"id", "from", "text", "name"?, "chat"?}` signed the same way; `id` is the sender's
//!   message id (a retry with the same id starts no second turn), the reply goes to `chat`
//!   (default `from`) through the outbound URL.
//!
//! Settings: `secret` (also `${ENV}`), `url`, `apiBaseUrl` is not used.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::config::Account;
use super::platform::{
    call_json, hmac_hex, hmac_matches, missing_secrets, required, Api, ChannelError, Delivered,
    Outbound, Platform, Received, Receiving, WebhookOutcome, WebhookRequest,
};

pub struct Webhook;

pub const SIGNATURE_HEADER: &str = "x-argent-signature";
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_FIELD: usize = 256;

fn secret(account: &Account) -> Result<String, ChannelError> {
    required(account, "secret")
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ChannelError> {
    let value = body
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ChannelError::Malformed(format!("{name} (a non-empty string) is required"))
        })?;
    if value.len() > MAX_FIELD && name != "text" {
        return Err(ChannelError::Malformed(format!(
            "{name} is longer than {MAX_FIELD} bytes"
        )));
    }
    Ok(value)
}

#[async_trait]
impl Platform for Webhook {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        missing_secrets(account, &["secret"])
    }

    fn receiving(&self, _account: &Account) -> Receiving {
        Receiving::Webhook
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("mode".into(), json!("webhook"));
        fields.insert("outbound".into(), json!(account.text("url").is_some()));
        fields
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let Api { http, account } = on;
        let url = account.text("url").ok_or_else(|| {
            ChannelError::NotConfigured(format!(
                "webhook account {} has no url to send to",
                account.id
            ))
        })?;
        let to = message.to.trim();
        if to.is_empty() {
            return Err(ChannelError::BadTarget("webhook target is empty".into()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "id": id, "to": to, "text": message.text, "account": account.id,
            "ts": argent_proto::now_ms(),
        });
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        let signature = format!("sha256={}", hmac_hex(secret(account)?.as_bytes(), &body));
        let request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .timeout(SEND_TIMEOUT);
        let (status, answer) = call_json(request, "webhook").await?;
        if !(200..300).contains(&status) {
            let said: String = answer.to_string().chars().take(200).collect();
            return Err(ChannelError::Delivery(format!(
                "webhook failed (HTTP {status}): {said}"
            )));
        }
        Ok(Delivered {
            message_id: answer
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(id),
            target_field: "conversationId",
            target: to.to_string(),
        })
    }

    async fn probe(&self, on: Api<'_>, _timeout: Duration) -> Result<Value, ChannelError> {
        let account = on.account;
        // Nothing to ask: a webhook's far end has no identity endpoint.
        Ok(json!({"ok": true, "outbound": account.text("url").is_some()}))
    }

    fn webhook(
        &self,
        account: &Account,
        request: &WebhookRequest,
    ) -> Result<WebhookOutcome, ChannelError> {
        if request.method != "POST" {
            return Ok(WebhookOutcome::text(405, "POST only"));
        }
        let secret = secret(account)?;
        let signature = request
            .header(SIGNATURE_HEADER)
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .ok_or_else(|| ChannelError::Forbidden("X-Argent-Signature missing".into()))?;
        if !hmac_matches(secret.as_bytes(), &request.body, signature) {
            return Err(ChannelError::Forbidden(
                "X-Argent-Signature does not match".into(),
            ));
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ChannelError::Malformed(format!("not JSON: {e}")))?;
        let from = field(&body, "from")?;
        let message = Received {
            message_id: field(&body, "id")?.to_string(),
            seq: 0,
            from: vec![from.to_string()],
            from_name: body.get("name").and_then(Value::as_str).map(str::to_string),
            chat: field(&body, "chat").unwrap_or(from).to_string(),
            thread: None,
            text: field(&body, "text")?.to_string(),
        };
        Ok(WebhookOutcome::ok(vec![message]))
    }
}
