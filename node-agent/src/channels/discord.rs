//! Discord: outbound messages over the REST API (`POST /channels/{id}/messages`, a direct
//! message through `POST /users/@me/channels` first). Receiving needs a session on
//! Discord's gateway WebSocket (identify, heartbeats, resume), which this release does not
//! run: `channels.status` says so on every Discord account. Settings: `token` (the bot
//! token, also `${ENV}`), `apiBaseUrl` [EXT].

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::config::Account;
use super::platform::{
    call_json, in_parts, missing_secrets, mode_fields, required, Api, ChannelError, Delivered,
    Outbound, Platform, Receiving,
};

pub struct Discord;

const DEFAULT_API: &str = "https://discord.com/api/v10";
/// Discord's longest message.
const MAX_TEXT: usize = 2000;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

async fn api(
    http: &reqwest::Client,
    account: &Account,
    request: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
    path: &str,
    what: &str,
) -> Result<Value, ChannelError> {
    let token = required(account, "token")?;
    let url = format!("{}{path}", account.api_base(DEFAULT_API));
    let request = request(http, url).header(reqwest::header::AUTHORIZATION, format!("Bot {token}"));
    let (status, answer) = call_json(request, what).await?;
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    let message = answer
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(ChannelError::Delivery(format!(
        "{what} failed (HTTP {status}): {message}"
    )))
}

/// `channel:<id>`, `user:<id>` or a bare channel id (all snowflakes: digits).
fn target(to: &str) -> Result<(bool, String), ChannelError> {
    let to = to.trim();
    let to = to.strip_prefix("discord:").unwrap_or(to);
    let (user, id) = match to.split_once(':') {
        Some(("user", id)) => (true, id),
        Some(("channel", id)) => (false, id),
        _ => (false, to),
    };
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok((user, id.to_string()))
    } else {
        Err(ChannelError::BadTarget(format!(
            "Discord target must be channel:<id>, user:<id> or a channel id, not {to:?}"
        )))
    }
}

#[async_trait]
impl Platform for Discord {
    fn missing(&self, account: &Account) -> Vec<&'static str> {
        missing_secrets(account, &["token"])
    }

    fn receiving(&self, _account: &Account) -> Receiving {
        Receiving::No(
            "receiving needs Discord's gateway WebSocket, which this release does not run; \
             sending works",
        )
    }

    fn status_fields(&self, account: &Account) -> Map<String, Value> {
        mode_fields(account, "rest", "token")
    }

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError> {
        let Api { http, account } = on;
        let (user, id) = target(message.to)?;
        let channel = if user {
            let dm = api(
                http,
                account,
                |h, url| {
                    h.post(url)
                        .json(&json!({"recipient_id": id}))
                        .timeout(SEND_TIMEOUT)
                },
                "/users/@me/channels",
                "Discord DM channel",
            )
            .await?;
            dm.get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| ChannelError::Delivery("Discord opened no DM channel".into()))?
                .to_string()
        } else {
            id
        };
        let path = format!("/channels/{channel}/messages");
        let last = in_parts(message.text, MAX_TEXT, |part| {
            let body = json!({ "content": part });
            api(
                http,
                account,
                move |h, url| h.post(url).json(&body).timeout(SEND_TIMEOUT),
                &path,
                "Discord message",
            )
        })
        .await?;
        Ok(Delivered {
            message_id: last
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            target_field: "channelId",
            target: channel,
        })
    }

    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError> {
        let Api { http, account } = on;
        let me = api(
            http,
            account,
            |h, url| h.get(url).timeout(timeout),
            "/users/@me",
            "Discord users/@me",
        )
        .await?;
        Ok(json!({"ok": true, "bot": {"id": me.get("id"), "username": me.get("username")}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("user:42").unwrap(), (true, "42".to_string()));
        assert_eq!(target("channel:7").unwrap(), (false, "7".to_string()));
        assert_eq!(target("7").unwrap(), (false, "7".to_string()));
        assert!(target("#general").is_err());
    }
}
