//! Chat platforms' webhooks on the gateway's port (the URL a platform is given):
//! `/channels/<channel>/webhook` for a channel's default account and
//! `/channels/<channel>/<account>/webhook` for a named one. Any gateway takes them: the
//! request (method, query, headers, body up to 1 MiB) is handed to a node-agent with the
//! channel service (internal method `channels.webhook`), which checks the platform's
//! signature, answers its handshake, and stores the messages under create-once keys for
//! the account's receiver; its answer is sent back as it is. A message is acknowledged only
//! once it is stored, so a platform retries what a failure lost, and a retry starts no
//! second turn.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use argent_proto::catalog;

use crate::context::Ctx;
use crate::forward;

/// Where webhook URLs start.
pub const PREFIX: &str = "/channels/";
/// The largest webhook body read (platform notifications are a few KiB).
const MAX_BODY: usize = 1 << 20;
/// How long a node may take to store a delivery (platforms wait 3 to 10 s).
const NODE_WAIT: Duration = Duration::from_secs(8);
/// Headers a platform's check may need; the rest (cookies, proxies') stay here.
const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "x-hub-signature-256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "x-argent-signature",
];

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

/// `(channel, account)` of a webhook path.
fn target(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(PREFIX)?.strip_suffix("/webhook")?;
    match rest.split('/').collect::<Vec<_>>()[..] {
        [channel] if !channel.is_empty() => Some((channel, None)),
        [channel, account] if !channel.is_empty() && !account.is_empty() => {
            Some((channel, Some(account)))
        }
        _ => None,
    }
}

pub async fn answer(ctx: &Ctx, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let Some((channel, account)) = target(parts.uri.path()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a webhook body is at most 1 MiB",
            )
        }
    };
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .filter(|(name, _)| FORWARDED_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some(json!([name.as_str(), value.to_str().ok()?])))
        .collect();
    let mut params = json!({
        "channel": channel,
        "method": parts.method.as_str(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
    });
    if let Some(account) = account {
        params["accountId"] = json!(account);
    }
    let span =
        tracing::info_span!("channel.webhook", %channel, account = account.unwrap_or("default"));
    let answered = tracing::Instrument::instrument(
        forward::call_for_gateway(
            ctx,
            "webhook",
            &catalog::CHANNELS_WEBHOOK_METHOD,
            params,
            NODE_WAIT,
        ),
        span,
    )
    .await;
    let payload = match answered {
        Ok(payload) => payload,
        Err(err) => {
            tracing::warn!(%channel, error = %err.message, "webhook not handed to a node-agent");
            return text(StatusCode::SERVICE_UNAVAILABLE, &err.message);
        }
    };
    let node: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    let status = node
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = Response::new(Full::new(Bytes::from(
        node.get("body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )));
    *answer.status_mut() = status;
    let content_type = node
        .get("contentType")
        .and_then(Value::as_str)
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths() {
        assert_eq!(target("/channels/slack/webhook"), Some(("slack", None)));
        assert_eq!(
            target("/channels/telegram/work/webhook"),
            Some(("telegram", Some("work")))
        );
        assert_eq!(target("/channels/slack/a/b/webhook"), None);
        assert_eq!(target("/channels//webhook"), None);
        assert_eq!(target("/channels/slack"), None);
    }
}
