//! WhatsApp through the Business Cloud API (Meta's Graph API): outbound
//! `POST /{version}/{phoneNumberId}/messages`, inbound by webhook — the `hub.verify_token`
//! handshake on `GET`, and deliveries signed with `X-Hub-Signature-256` (HMAC-SHA256 of the
//! body under the app secret). Settings: `accessToken`, `phoneNumberId`, and for receiving
//! `verifyToken` and `appSecret` (secrets also as `${ENV}`), `apiVersion` (default
//! `v21.0`), `apiBaseUrl` [EXT].

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::config::Account;
use super::platform::{
    call_json, hmac_matches, in_parts, missing_secrets, mode_fields, required, Api, ChannelError,
    Delivered, Outbound, Platform, Received, Receiving, WebhookOutcome, WebhookRequest,
};

pub struct WhatsApp;

const DEFAULT_API: &str = "https://graph.facebook.com";
const DEFAULT_VERSION: &str = "v21.0";
/// WhatsApp's longest text message.
const MAX_TEXT: usize = 4096;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

fn base(account: &Account) -> Result<String, ChannelError> {
    let phone = required(account, "phoneNumberId")?;
    Ok(format!(
        "{}/{}/{phone}",
        account.api_base(DEFAULT_API),
        account.text("apiVersion").unwrap_or(DEFAULT_VERSION)
    ))
}

fn token(account: &Account) -> Result<String, ChannelError> {
    required(account, "accessToken")
}

/// The Graph API's own message for a failure.
fn graph_error(what: &str, status: u16, answer: &Value) -> ChannelError {
    let message = answer
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    ChannelError::Delivery(format!("{what} failed (HTTP {status}): {message}"))
}

/// A phone number in international form, digits only (`+1 555-0100` → `15550100`).
fn recipient(to: &str) -> Result<String, ChannelError> {
    let to = to.trim();
    let to = to.strip_prefix("whatsapp:").unwrap_or(to);
    let digits: String = to
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
        .collect();
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(ChannelError::BadTarget(format!(
            "WhatsApp target must be a phone number in international form, not {to:?}"
        )))
    }
}

/// The text messages of a webhook notification for `phone_number_id`.
fn messages(notification: &Value, phone_number_id: &str) -> Vec<Received> {
    let mut out = Vec::new();
    let changes = notification
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten();
    for change in changes {
        let Some(value) = change.get("value") else {
            continue;
        };
        let to_us = value
            .pointer("/metadata/phone_number_id")
            .and_then(Value::as_str)
            .is_none_or(|id| id == phone_number_id);
        if !to_us {
            continue;
        }
        let contacts = value.get("contacts").and_then(Value::as_array);
        for m in value
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text_of = |key: &str| m.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
            let (Some(from), Some(id)) = (text_of("from"), text_of("id")) else {
                continue;
            };
            let Some(text) = m.pointer("/text/body").and_then(Value::as_str) else {
                continue; // media, reactions, locations: not handed to the agent yet
            };
            let name = contacts
                .into_iter()
                .flatten()
                .find(|c| c.get("wa_id").and_then(Value::as_str) == Some(from))
                .and_then(|c| c.pointer("/profile/name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.push(Received {
                message_id: id.to_string(),
                seq: m
                    .get("timestamp")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                from: vec![from.to_string(), format!("+{from}")],
                from_name: name,
                chat: from.to_string(),
                thread: None,
                text: text.to_string(),
            });
        }
    }
    out
}

fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[async_trait]
impl Platform for WhatsApp {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        missing_secrets(account, &["accessToken", "phoneNumberId"])
    }

    fn receiving(&self, account: &Account) -> Receiving {
        if account.secret("appSecret").is_some() && account.secret("verifyToken").is_some() {
            Receiving::Webhook
        } else {
            Receiving::No("set appSecret and verifyToken to receive messages by webhook")
        }
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        mode_fields(account, "cloud-api", "accessToken")
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let Api { http, account } = on;
        let to = recipient(message.to)?;
        let url = format!("{}/messages", base(account)?);
        let token = token(account)?;
        let last = in_parts(message.text, MAX_TEXT, |part| {
            let body = json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                "type": "text", "text": {"body": part},
            });
            let request = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .timeout(SEND_TIMEOUT);
            async move {
                let (status, answer) = call_json(request, "WhatsApp messages").await?;
                if !(200..300).contains(&status) {
                    return Err(graph_error("WhatsApp messages", status, &answer));
                }
                Ok(answer)
            }
        })
        .await?;
        Ok(Delivered {
            message_id: last
                .pointer("/messages/0/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            target_field: "toJid",
            target: format!("{to}@s.whatsapp.net"),
        })
    }

    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError> {
        let Api { http, account } = on;
        let request = http
            .get(base(account)?)
            .bearer_auth(token(account)?)
            .timeout(timeout);
        let (status, answer) = call_json(request, "WhatsApp phone number").await?;
        if !(200..300).contains(&status) {
            return Err(graph_error("WhatsApp phone number", status, &answer));
        }
        Ok(json!({
            "ok": true,
            "phone": answer.get("display_phone_number"),
            "name": answer.get("verified_name"),
        }))
    }

    fn webhook(
        &self,
        account: &Account,
        request: &WebhookRequest,
    ) -> Result<WebhookOutcome, ChannelError> {
        let (Some(secret), Some(verify)) =
            (account.secret("appSecret"), account.secret("verifyToken"))
        else {
            return Ok(WebhookOutcome::text(404, "this account takes no webhooks"));
        };
        if request.method == "GET" {
            // Subscription handshake: echo the challenge to whoever knows the verify token.
            let mode = request.query_param("hub.mode");
            let given = request.query_param("hub.verify_token").unwrap_or_default();
            if mode.as_deref() == Some("subscribe") && same_secret(&given, &verify) {
                let challenge = request.query_param("hub.challenge").unwrap_or_default();
                return Ok(WebhookOutcome::text(200, challenge));
            }
            return Err(ChannelError::Forbidden("verify token mismatch".into()));
        }
        let signature = request
            .header("x-hub-signature-256")
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .ok_or_else(|| ChannelError::Forbidden("X-Hub-Signature-256 missing".into()))?;
        if !hmac_matches(secret.as_bytes(), &request.body, signature) {
            return Err(ChannelError::Forbidden(
                "X-Hub-Signature-256 does not match".into(),
            ));
        }
        let notification: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ChannelError::Malformed(format!("not JSON: {e}")))?;
        let phone = account.text("phoneNumberId").unwrap_or_default();
        Ok(WebhookOutcome::ok(messages(&notification, phone)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_digits() {
        assert_eq!(recipient("+1 (555) 010-0").unwrap(), "15550100");
        assert_eq!(recipient("whatsapp:15550100").unwrap(), "15550100");
        assert!(matches!(recipient("bob"), Err(ChannelError::BadTarget(_))));
    }

    #[test]
    fn text_messages_of_a_notification() {
        let n = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
            "metadata": {"phone_number_id": "P1"},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": "155"}],
            "messages": [
                {"from": "155", "id": "wamid.1", "type": "text", "text": {"body": "hi"}},
                {"from": "155", "id": "wamid.2", "type": "image", "image": {}}
            ]}, "field": "messages"}]}]});
        let m = messages(&n, "P1");
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].message_id.as_str(), m[0].text.as_str()),
            ("wamid.1", "hi")
        );
        assert_eq!(m[0].from_name.as_deref(), Some("Ann"));
        assert!(messages(&n, "P2").is_empty());
    }
}
