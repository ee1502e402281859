//! `send` (PROTOCOL.md §5.9): a message pushed out on a channel, once per idempotency key
//! across the cluster, and mirrored into the session's transcript.
//!
//! The key's record is created before the platform is called: of two calls with one key
//! (a retry through another gateway, a double click), one delivers and the other waits for
//! its answer. A failed delivery removes the record, so a retry may deliver; a record left
//! pending by a node that died mid-call is an unknown outcome, said as such and never
//! delivered a second time.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use argent_planes::state::{modify_json, StateError};
use argent_proto::session_key::SessionKey;

use super::config::{self, Account, ChannelId};
use super::platform::{platform, ChannelError, Delivered, Outbound};
use super::store::{self, AccountRecord, LastRoute, SendRecord, BUCKET, MESSAGES};
use super::Channels;
use crate::runtime::control;
use crate::scheduler::Announcer;

/// The channel `send` uses when none is named (upstream's default).
pub const DEFAULT_CHANNEL: &str = "whatsapp";
/// How long a second call with a key waits for the first one's answer.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(30);
/// A pending record older than this belongs to a node that died while delivering.
const PENDING_STALE_MS: u64 = 90_000;

pub struct SendRequest {
    pub to: String,
    pub message: String,
    pub idempotency_key: String,
    pub channel: Option<String>,
    pub account_id: Option<String>,
    pub media_urls: Vec<String>,
    pub session_key: Option<String>,
}

/// The account a `send` (or a cron announcement) goes out on.
pub async fn account_for(
    c: &Channels,
    channel: Option<&str>,
    account_id: Option<&str>,
) -> Result<Account, ChannelError> {
    let name = channel
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CHANNEL);
    let channel =
        ChannelId::parse(name).ok_or_else(|| ChannelError::Unsupported(name.to_string()))?;
    let config = c.rt.config.current().await?;
    let account = config::account(&config, channel, account_id).ok_or_else(|| {
        ChannelError::NotConfigured(match account_id {
            Some(id) => format!("{} account {id} is not configured", channel.as_str()),
            None => format!(
                "channel {} is not configured (channels.{})",
                channel.as_str(),
                channel.as_str()
            ),
        })
    })?;
    if !account.enabled() {
        return Err(ChannelError::NotConfigured(format!(
            "{} account {} is disabled",
            channel.as_str(),
            account.id
        )));
    }
    let missing = platform(channel).missing(&account);
    if !missing.is_empty() {
        return Err(ChannelError::NotConfigured(format!(
            "{} account {} lacks {}",
            channel.as_str(),
            account.id,
            missing.join(", ")
        )));
    }
    Ok(account)
}

/// Delivers a message with no idempotency record (replies, announcements with their own
/// once-only guard), noting the account's last outbound time.
pub async fn deliver(
    c: &Channels,
    account: &Account,
    to: &str,
    text: &str,
) -> Result<Delivered, ChannelError> {
    let message = Outbound {
        to,
        text,
        thread: None,
    };
    let delivered = platform(account.channel)
        .send(c.api(account), message)
        .await?;
    note_outbound(c, account).await;
    Ok(delivered)
}

pub async fn send(c: &Channels, request: SendRequest) -> Result<Value, ChannelError> {
    let account = account_for(c, request.channel.as_deref(), request.account_id.as_deref()).await?;
    // Media goes as links after the text: this release uploads no files.
    let mut text = request.message.trim().to_string();
    for url in &request.media_urls {
        text.push('\n');
        text.push_str(url.trim());
    }
    if text.is_empty() {
        return Err(ChannelError::BadTarget("message is empty".into()));
    }
    let key = store::send_key(&request.idempotency_key);
    if let Some(earlier) = claim(c, &key).await? {
        return Ok(earlier);
    }
    let delivered = match deliver(c, &account, &request.to, &text).await {
        Ok(delivered) => delivered,
        Err(err @ ChannelError::Unknown(_)) => {
            // Perhaps delivered: a retry with the key is told so, never sent again.
            let record = SendRecord {
                node: c.node_id().to_string(),
                started_at_ms: argent_proto::now_ms(),
                result: None,
                unknown: Some(err.to_string()),
            };
            let body = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
            if let Err(e) = c.rt.state.put(MESSAGES, &key, body).await {
                tracing::warn!(%e, "an unknown send outcome not recorded");
            }
            return Err(err);
        }
        Err(err) => {
            // Not delivered: a retry with the same key may try again.
            let _ = c.rt.state.delete(MESSAGES, &key).await;
            return Err(err);
        }
    };
    let mut result = json!({
        "runId": request.idempotency_key,
        "messageId": delivered.message_id,
        "channel": account.channel.as_str(),
    });
    result[delivered.target_field] = json!(delivered.target);
    let record = SendRecord {
        node: c.node_id().to_string(),
        started_at_ms: argent_proto::now_ms(),
        result: Some(result.clone()),
        unknown: None,
    };
    let body = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
    if let Err(err) = c.rt.state.put(MESSAGES, &key, body).await {
        tracing::warn!(%err, "send delivered, its idempotency record not saved");
    }
    mirror(c, &account, &request, &delivered, &text).await;
    Ok(result)
}

/// Creates the key's record; `Some(answer)` when an earlier call with the key delivered.
async fn claim(c: &Channels, key: &str) -> Result<Option<Value>, ChannelError> {
    let pending = SendRecord {
        node: c.node_id().to_string(),
        started_at_ms: argent_proto::now_ms(),
        result: None,
        unknown: None,
    };
    let body = Bytes::from(serde_json::to_vec(&pending).expect("records serialize"));
    let waited = tokio::time::Instant::now();
    loop {
        match c.rt.state.create(MESSAGES, key, body.clone()).await {
            Ok(_) => return Ok(None),
            Err(StateError::Exists) => {}
            Err(err) => return Err(err.into()),
        }
        let Some(entry) = c.rt.state.get(MESSAGES, key).await? else {
            continue; // the first call failed and removed it: deliver now
        };
        let earlier: SendRecord = serde_json::from_slice(&entry.value)
            .map_err(|e| ChannelError::Delivery(format!("unreadable send record: {e}")))?;
        if let Some(result) = earlier.result {
            return Ok(Some(result));
        }
        if let Some(why) = earlier.unknown {
            return Err(ChannelError::Unknown(format!(
                "an earlier send with this idempotency key may have been delivered ({why}); \
                 send again with a new key"
            )));
        }
        if argent_proto::now_ms().saturating_sub(earlier.started_at_ms) > PENDING_STALE_MS {
            return Err(ChannelError::Unknown(
                "an earlier send with this idempotency key did not finish (its node-agent \
                 stopped); whether it was delivered is unknown — send again with a new key"
                    .into(),
            ));
        }
        if waited.elapsed() > WAIT_FOR_FIRST {
            return Err(ChannelError::Delivery(
                "a send with this idempotency key is still being delivered; retry".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Notes when the account last sent (for `channels.status`), whoever runs its receiver.
async fn note_outbound(c: &Channels, account: &Account) {
    let noted = modify_json(
        c.rt.state.as_ref(),
        BUCKET,
        &store::account_key(account.channel, &account.id),
        |r: Option<AccountRecord>| {
            let mut r = r.unwrap_or_default();
            r.status.last_outbound_at = Some(argent_proto::now_ms());
            Ok::<_, StateError>(Some((r, ())))
        },
    )
    .await;
    if let Err(err) = noted {
        tracing::debug!(%err, "last outbound time not noted");
    }
}

/// Writes the sent text into `sessionKey`'s transcript, or the recipient's session on the
/// channel (the one their own messages go to, where the platform names them alike), as an
/// assistant message (dashboards see it live). The message went out already: a failure
/// here is logged, not answered.
async fn mirror(
    c: &Channels,
    account: &Account,
    request: &SendRequest,
    delivered: &Delivered,
    text: &str,
) {
    let config = match c.rt.config.current().await {
        Ok(config) => config,
        Err(err) => {
            tracing::warn!(%err, "send not mirrored into the transcript");
            return;
        }
    };
    let agents = config.agents();
    let key = match request.session_key.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => SessionKey::canonical(raw, agents).into_string(),
        _ => {
            let agent_id = account.agent_id(agents);
            // The platform's form of the recipient, as its messages name the sender.
            let peer = delivered.target.trim_end_matches("@s.whatsapp.net");
            super::inbound::session_key(&config, account, &agent_id, peer)
        }
    };
    let mirrored = async {
        c.rt.sessions.ensure(&key).await?;
        control::inject(&c.rt, &key, &key, text).await
    }
    .await;
    if let Err(err) = mirrored {
        tracing::warn!(session = %key, %err, "send not mirrored into the transcript");
    }
}

/// Cron announcements (`delivery: {mode:"announce", channel?, to?, accountId?}`): to the
/// named target, or to the chat the agent answered last (`channel` absent or `"last"`).
#[async_trait::async_trait]
impl Announcer for Channels {
    async fn announce(
        &self,
        agent_id: &str,
        delivery: &Value,
        text: &str,
    ) -> Result<Option<String>, String> {
        let field = |key: &str| {
            delivery
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let named = field("channel").filter(|c| *c != "last");
        let last = self.last_route(agent_id).await;
        let (channel, to, account) = match (named, field("to"), &last) {
            (Some(channel), Some(to), _) => (channel, to, field("accountId")),
            (named, to, Some(last)) if named.is_none_or(|n| n == last.channel) => (
                last.channel.as_str(),
                to.unwrap_or(last.to.as_str()),
                field("accountId").or(Some(last.account_id.as_str())),
            ),
            (None, None, None) => return Ok(None),
            _ => return Err("delivery needs both channel and to (there is no last chat of this agent on that channel)".into()),
        };
        let account = account_for(self, Some(channel), account)
            .await
            .map_err(|e| e.to_string())?;
        deliver(self, &account, to, text)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(format!("{channel}:{to}")))
    }
}

impl Channels {
    /// The chat `agent_id` answered last, if any.
    async fn last_route(&self, agent_id: &str) -> Option<LastRoute> {
        let entry = self
            .rt
            .state
            .get(BUCKET, &store::last_route_key(agent_id))
            .await
            .ok()??;
        serde_json::from_slice(&entry.value).ok()
    }
}
