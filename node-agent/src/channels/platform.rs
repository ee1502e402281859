//! What every chat platform offers the channel service: sending, probing, the settings it
//! needs, and how it receives (polling loop, webhook, or not at all). One implementation per
//! platform module; [`platform`] picks it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use argent_planes::state::{StateError, StateStore};

use super::config::{Account, ChannelId};
use super::store::Fence;

/// Why a channel operation failed; `crate::respond` says it on the wire.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChannelError {
    #[error("unsupported channel: {0}")]
    Unsupported(String),
    /// The account is missing, disabled, or lacks a setting it needs (which).
    #[error("{0}")]
    NotConfigured(String),
    /// The target cannot be addressed on the platform (the resolver's message).
    #[error("{0}")]
    BadTarget(String),
    /// The platform did not take the message (its own words, never a secret).
    #[error("{0}")]
    Delivery(String),
    /// Whether the platform took the message is not known (the request went out and no
    /// answer came, or part of a long message went out): never sent again by itself.
    #[error("{0}")]
    Unknown(String),
    /// A webhook delivery that is not the platform's (signature, token).
    #[error("{0}")]
    Forbidden(String),
    /// A webhook delivery that cannot be read.
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// An account, and the HTTP client its platform is reached with.
#[derive(Clone, Copy)]
pub struct Api<'a> {
    pub http: &'a reqwest::Client,
    pub account: &'a Account,
}

/// A setting the account cannot work without (a secret resolves here).
pub fn required(account: &Account, key: &str) -> Result<String, ChannelError> {
    account.secret(key).ok_or_else(|| {
        ChannelError::NotConfigured(format!(
            "{} account {} has no {key} (channels.{}.{key})",
            account.channel.as_str(),
            account.id,
            account.channel.as_str()
        ))
    })
}

/// A message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub to: &'a str,
    pub text: &'a str,
    /// Reply in this thread (Slack `thread_ts`), where the platform has threads.
    pub thread: Option<&'a str>,
}

/// A message the platform took.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub message_id: String,
    /// The `send` result's target field: `chatId`, `channelId`, `toJid`, `conversationId`.
    pub target_field: &'static str,
    pub target: String,
}

/// How an account receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiving {
    /// A loop on the owning node asks the platform ([`Platform::poll`]).
    Poll,
    /// The platform calls the gateways' webhook URL ([`Platform::webhook`]).
    Webhook,
    /// Outbound only (why, for `channels.status`).
    No(&'static str),
}

/// One HTTP request to a gateway's channel webhook URL, as forwarded to a node-agent.
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    pub method: String,
    /// The raw query string (no `?`).
    pub query: String,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A received message, as a platform reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message_id: String,
    /// The platform's order of messages (Telegram's update id, a timestamp; 0 when it has
    /// none): messages stored in the same millisecond are answered in this order.
    pub seq: i64,
    pub from: Vec<String>,
    pub from_name: Option<String>,
    pub chat: String,
    pub thread: Option<String>,
    pub text: String,
}

/// What a webhook delivery yields: the HTTP answer, and the messages it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOutcome {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub messages: Vec<Received>,
}

impl WebhookOutcome {
    pub fn ok(messages: Vec<Received>) -> Self {
        WebhookOutcome {
            status: 200,
            content_type: "application/json",
            body: "{\"ok\":true}".into(),
            messages,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        WebhookOutcome {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            messages: Vec::new(),
        }
    }
}

/// What a polling loop reports of itself, copied into the account's status every second
/// by its owner: `running` is derived from this loop's own beat.
#[derive(Debug, Default)]
pub struct LoopHealth {
    inner: Mutex<LoopHealthInner>,
}

#[derive(Debug, Default, Clone)]
pub struct LoopHealthInner {
    pub beat_at: Option<u64>,
    pub connected: Option<bool>,
    pub last_connected_at: Option<u64>,
    pub reconnect_attempts: u64,
    pub last_error: Option<(String, u64)>,
    pub bot: Option<String>,
    pub last_inbound_at: Option<u64>,
    pub last_outbound_at: Option<u64>,
}

impl LoopHealth {
    pub fn beat(&self) {
        self.inner.lock().beat_at = Some(argent_proto::now_ms());
    }

    pub fn connected(&self) {
        let now = argent_proto::now_ms();
        let mut h = self.inner.lock();
        if h.connected != Some(true) {
            h.last_connected_at = Some(now);
        }
        h.connected = Some(true);
        h.beat_at = Some(now);
    }

    pub fn failed(&self, error: String) {
        let now = argent_proto::now_ms();
        let mut h = self.inner.lock();
        h.connected = Some(false);
        h.reconnect_attempts += 1;
        h.last_error = Some((error, now));
        h.beat_at = Some(now);
    }

    /// A message arrived (when it was received).
    pub fn inbound(&self, at_ms: u64) {
        let mut h = self.inner.lock();
        h.last_inbound_at = h.last_inbound_at.max(Some(at_ms));
    }

    pub fn outbound(&self) {
        self.inner.lock().last_outbound_at = Some(argent_proto::now_ms());
    }

    /// Something went wrong outside the loop (a reply not delivered); the loop still runs.
    pub fn error(&self, error: String) {
        self.inner.lock().last_error = Some((error, argent_proto::now_ms()));
    }

    pub fn set_bot(&self, bot: String) {
        self.inner.lock().bot = Some(bot);
    }

    pub fn snapshot(&self) -> LoopHealthInner {
        self.inner.lock().clone()
    }
}

/// What a polling loop works with.
pub struct PollContext {
    pub http: reqwest::Client,
    pub store: Arc<dyn StateStore>,
    pub account: Account,
    pub fence: Fence,
    pub health: Arc<LoopHealth>,
    /// Tells the account's inbox processor that a message arrived.
    pub inbox: Arc<tokio::sync::Notify>,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
pub trait Platform: Send + Sync {
    /// The settings the account lacks to work at all, named (`botToken`).
    fn missing(&self, account: &Account) -> Vec<&'static str>;

    fn receiving(&self, account: &Account) -> Receiving;

    /// Extra fields of the account's `channels.status` snapshot (`tokenSource`, `mode`).
    fn status_fields(&self, account: &Account) -> Map<String, Value>;

    async fn send(&self, on: Api<'_>, message: Outbound<'_>) -> Result<Delivered, ChannelError>;

    /// Asks the platform who the account is (`probe:true`), within `timeout`.
    async fn probe(&self, on: Api<'_>, timeout: Duration) -> Result<Value, ChannelError>;

    /// Polling platforms: receives until `ctx.stop`, a lost lease or a config change.
    async fn poll(&self, ctx: PollContext) {
        let _ = ctx;
    }

    /// Webhook platforms: checks one delivery and reads its messages.
    fn webhook(
        &self,
        account: &Account,
        request: &WebhookRequest,
    ) -> Result<WebhookOutcome, ChannelError> {
        let _ = (account, request);
        Ok(WebhookOutcome::text(404, "this channel takes no webhooks"))
    }
}

/// The settings of `keys` the account lacks (secrets resolve here: a `${ENV}` this
/// process does not have is missing).
pub fn missing_secrets(account: &Account, keys: &[&'static str]) -> Vec<&'static str> {
    keys.iter()
        .copied()
        .filter(|k| account.secret(k).is_none())
        .collect()
}

/// Status fields: the platform's `mode`, and where its credential `secret` comes from.
pub fn mode_fields(account: &Account, mode: &str, secret: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("mode".into(), Value::from(mode));
    fields.insert(
        "tokenSource".into(),
        Value::from(account.secret_source(secret)),
    );
    fields
}

/// The platform of a channel.
pub fn platform(channel: ChannelId) -> &'static dyn Platform {
    match channel {
        ChannelId::Telegram => &super::telegram::Telegram,
        ChannelId::WhatsApp => &super::whatsapp::WhatsApp,
        ChannelId::Slack => &super::slack::Slack,
        ChannelId::Discord => &super::discord::Discord,
        ChannelId::Signal => &super::signal::Signal,
        ChannelId::Webhook => &super::webhook::Webhook,
    }
}

/// The most of a platform's answer that is read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Sends a request and reads a JSON answer (bounded). Transport failures say what failed
/// without the URL, which may carry a token (Telegram's does).
pub async fn call_json(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, Value), ChannelError> {
    let mut response = request.send().await.map_err(|e| {
        // A connection never made sent nothing; any other failure may have reached it.
        let said = format!("{what}: {}", describe_ref(&e));
        if e.is_connect() {
            ChannelError::Delivery(said)
        } else {
            ChannelError::Unknown(format!("{said} (it may have been delivered)"))
        }
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(ChannelError::Delivery(format!(
                        "{what}: the answer is over {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ChannelError::Unknown(format!(
                    "{what}: {} (it may have been delivered)",
                    describe(e)
                )))
            }
        }
    }
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        Value::String(String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
    });
    Ok((status, value))
}

/// A transport failure in words, without the URL (which may carry a token): `timed out`
/// for a timeout, else the error and its causes.
pub fn describe(err: reqwest::Error) -> String {
    describe_ref(&err)
}

fn describe_ref(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    // The URL is left out: `reqwest::Error`'s own text would name it.
    let mut words = match (err.is_connect(), err.is_body(), err.is_decode()) {
        (true, _, _) => "cannot connect".to_string(),
        (_, true, _) | (_, _, true) => "the answer broke off".to_string(),
        _ => "the request failed".to_string(),
    };
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        words.push_str(": ");
        words.push_str(&c.to_string());
        cause = c.source();
    }
    words
}

/// HMAC-SHA256 of `body` under `secret`, compared in constant time with `given_hex`.
pub fn hmac_matches(secret: &[u8], body: &[u8], given_hex: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Ok(given) = hex::decode(given_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// HMAC-SHA256 of `body` under `secret`, lower-case hex.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Sends `text` in parts of at most `max` characters, one call each, and answers the last
/// call's answer. A failure after a part went out is an unknown outcome: the recipient has
/// part of the message, and sending it again would repeat that part.
pub async fn in_parts<F, Fut>(text: &str, max: usize, mut send: F) -> Result<Value, ChannelError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ChannelError>>,
{
    let mut last = None;
    for (sent, part) in split_text(text, max).into_iter().enumerate() {
        match send(part).await {
            Ok(answer) => last = Some(answer),
            Err(err) if sent > 0 => {
                return Err(ChannelError::Unknown(format!(
                    "{err} (after {sent} part(s) of the message went out)"
                )))
            }
            Err(err) => return Err(err),
        }
    }
    last.ok_or_else(|| ChannelError::BadTarget("the message is empty".into()))
}

/// Splits a reply into pieces of at most `max` characters, at a line or word break when
/// there is one in the last quarter.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..cut];
        let min = window
            .char_indices()
            .nth(max * 3 / 4)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let at = window[min..]
            .rfind('\n')
            .or_else(|| window[min..].rfind(' '))
            .map(|i| min + i)
            .filter(|&i| i > 0)
            .unwrap_or(cut);
        out.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let r = WebhookRequest {
            query: "hub.mode=subscribe&hub.verify_token=a%20b+c&hub.challenge=12".into(),
            ..Default::default()
        };
        assert_eq!(r.query_param("hub.verify_token").as_deref(), Some("a b c"));
        assert_eq!(r.query_param("hub.challenge").as_deref(), Some("12"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn hmac_round_trip() {
        let mac = hmac_hex(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            mac,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(hmac_matches(
            b"key",
            b"The quick brown fox jumps over the lazy dog",
            &mac
        ));
        assert!(!hmac_matches(
            b"key2",
            b"The quick brown fox jumps over the lazy dog",
            &mac
        ));
        assert!(!hmac_matches(b"key", b"x", "not hex"));
    }

    #[tokio::test]
    async fn a_failure_after_a_part_went_out_is_an_unknown_outcome() {
        let text = format!("{} {}", "a".repeat(90), "b".repeat(50));
        let sent = std::sync::Mutex::new(Vec::new());
        let fail_second = |part: String| {
            let n = {
                let mut sent = sent.lock().unwrap();
                sent.push(part);
                sent.len()
            };
            async move {
                match n {
                    1 => Ok(Value::from(1)),
                    _ => Err(ChannelError::Delivery("HTTP 500".into())),
                }
            }
        };
        let err = in_parts(&text, 100, fail_second).await.unwrap_err();
        assert!(
            matches!(err, ChannelError::Unknown(ref m) if m.contains("after 1 part")),
            "{err:?}"
        );
        // The first part failing sent nothing: the platform's own error.
        let refused = in_parts("short", 100, |_| async {
            Err::<Value, _>(ChannelError::Delivery("HTTP 400".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(refused, ChannelError::Delivery("HTTP 400".into()));
        assert!(matches!(
            in_parts("  ", 100, |_| async { Ok(Value::Null) }).await,
            Err(ChannelError::BadTarget(_))
        ));
    }

    #[test]
    fn long_replies_are_split_at_breaks() {
        let text = format!("{} {}", "a".repeat(90), "b".repeat(50));
        let parts = split_text(&text, 100);
        assert_eq!(parts, vec!["a".repeat(90), "b".repeat(50)]);
        let solid = "x".repeat(250);
        assert_eq!(split_text(&solid, 100).len(), 3);
        assert!(split_text("  ", 10).is_empty());
    }
}
