//! The channel records in the shared state. Bucket `argent_channels`:
//!
//! * `acct.<channel>.<account>` — [`AccountRecord`]: the receiver's [`Lease`] (one owner per
//!   account in the cluster, fenced by an epoch that grows with every takeover), the polling
//!   cursor, and the status snapshot `channels.status` reads.
//! * `last.<agent>` — [`LastRoute`]: the chat an agent last answered, where a cron
//!   announcement without a target goes.
//!
//! Bucket `argent_channel_msgs`, whose records age out after 8 days (the store's age limit
//! collects them, and the delete markers of removed ones):
//!
//! * `in.<channel>.<account>.<message>` — [`InboundRecord`]: one platform message, created
//!   once (a second `create` of the same message id fails: a re-fetched update or a retried
//!   webhook never starts a second turn), then driven to its end by the account's owner.
//! * `send.<hash>` — [`SendRecord`]: an outbound `send` by its idempotency key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use argent_planes::state::{modify_json, StateError, StateStore};
use argent_proto::subjects::{BUCKET_CHANNELS, BUCKET_CHANNEL_MESSAGES};

use super::config::ChannelId;
use super::platform::Received;

pub const BUCKET: &str = BUCKET_CHANNELS;
pub const MESSAGES: &str = BUCKET_CHANNEL_MESSAGES;

/// A lease not beaten for this long belongs to a dead node-agent: another takes over.
pub const LEASE_STALE_MS: u64 = 5_000;

/// A message not answered within a day is not answered at all (its account was stopped,
/// logged out or removed meanwhile): it ends as failed rather than surprise its sender later.
pub const INBOUND_EXPIRES_MS: u64 = 24 * 3600 * 1000;

pub fn account_key(channel: ChannelId, account: &str) -> String {
    format!("acct.{}.{account}", channel.as_str())
}

/// The record key of an account named `<channel>.<account>` (`Account::key`).
pub fn account_key_of(name: &str) -> String {
    format!("acct.{name}")
}

pub fn inbound_prefix(channel: ChannelId, account: &str) -> String {
    format!("in.{}.{account}.", channel.as_str())
}

/// A platform message id as a key segment: kept when it is short and plain, else hashed.
pub fn message_segment(message_id: &str) -> String {
    let plain = !message_id.is_empty()
        && message_id.len() <= 64
        && message_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        message_id.to_string()
    } else {
        hex::encode(&Sha256::digest(message_id.as_bytes())[..16])
    }
}

pub fn inbound_key(channel: ChannelId, account: &str, message_id: &str) -> String {
    format!(
        "{}{}",
        inbound_prefix(channel, account),
        message_segment(message_id)
    )
}

pub fn send_key(idempotency_key: &str) -> String {
    format!(
        "send.{}",
        hex::encode(&Sha256::digest(idempotency_key.as_bytes())[..20])
    )
}

/// Who runs an account's receiver, and since which takeover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub node: String,
    pub epoch: u64,
    pub beat_ms: u64,
}

impl Lease {
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.beat_ms) > LEASE_STALE_MS
    }
}

/// What a receiver holds: its node and epoch. Every write it makes to its account's record
/// checks both, so a node that lost its lease (paused, partitioned) cannot move the cursor
/// back or overwrite the new owner's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub epoch: u64,
}

impl Fence {
    pub fn holds(&self, record: &AccountRecord) -> bool {
        record
            .lease
            .as_ref()
            .is_some_and(|l| l.node == self.node && l.epoch == self.epoch)
    }
}

/// The status snapshot of one account, written by its owner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    /// The receiving loop's own last sign of life (a poll answered or timed out, a stream
    /// event, the inbox processor's pass); `running` is derived from it, never from a probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_beat_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    #[serde(default)]
    pub reconnect_attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stop_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_inbound_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outbound_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Value>,
    /// The platform's name for the bot (Telegram `@username`, …) as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The last epoch granted (a takeover takes the next one).
    #[serde(default)]
    pub epoch: u64,
    /// Telegram: the next `getUpdates` offset; when it was last moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_at_ms: Option<u64>,
    /// `channels.logout`: the account's config fingerprint when it was logged out; it
    /// stays out until its config changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_out: Option<String>,
    #[serde(default)]
    pub status: AccountStatus,
}

/// Where an inbound message is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InboundState {
    /// Received, not yet looked at.
    New,
    /// Its turn was started (`run_id`).
    Running,
    /// The reply is being sent: a takeover that finds this does not send it again.
    Replying,
    Done,
    /// Not for the agent (policy), answered or not as the policy says.
    Ignored,
    Failed,
}

impl InboundState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InboundState::Done | InboundState::Ignored | InboundState::Failed
        )
    }
}

/// One inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRecord {
    pub state: InboundState,
    pub received_at_ms: u64,
    /// The platform's order (see `Received::seq`).
    #[serde(default)]
    pub seq: i64,
    /// The platform's id of the message.
    #[serde(default)]
    pub message_id: String,
    /// The sender's ids, the stable one first (numeric id, phone number, user id), then
    /// names an `allowFrom` may use (`@username`).
    #[serde(default)]
    pub from: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// Where the reply goes (chat id, phone number, channel id).
    #[serde(default)]
    pub chat: String,
    /// The thread to reply in, where the platform has them (Slack `thread_ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
}

impl InboundRecord {
    pub fn from_received(message: &Received) -> Self {
        InboundRecord {
            state: InboundState::New,
            received_at_ms: argent_proto::now_ms(),
            seq: message.seq,
            message_id: message.message_id.clone(),
            from: message.from.clone(),
            from_name: message.from_name.clone(),
            chat: message.chat.clone(),
            thread: message.thread.clone(),
            text: message.text.clone(),
            run_id: None,
            session_key: None,
            error: None,
            ended_at_ms: None,
        }
    }

    /// The record once it ended: the text is dropped (the transcript has it), the outcome
    /// and the dedupe stay.
    pub fn ended(&self, state: InboundState, error: Option<String>) -> Self {
        InboundRecord {
            state,
            text: String::new(),
            error,
            ended_at_ms: Some(argent_proto::now_ms()),
            ..self.clone()
        }
    }
}

/// Stores a received message unless it was received before: `true` when it is new.
pub async fn receive(
    store: &dyn StateStore,
    channel: ChannelId,
    account: &str,
    record: &InboundRecord,
) -> Result<bool, StateError> {
    let key = inbound_key(channel, account, &record.message_id);
    let body = serde_json::to_vec(record).expect("records serialize");
    match store.create(MESSAGES, &key, body.into()).await {
        Ok(_) => Ok(true),
        Err(StateError::Exists) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Moves an inbound record on, unless another writer already moved it past `from`.
pub async fn advance_inbound(
    store: &dyn StateStore,
    key: &str,
    from: &[InboundState],
    change: impl Fn(&InboundRecord) -> InboundRecord,
) -> Result<Option<InboundRecord>, StateError> {
    modify_json(store, MESSAGES, key, |r: Option<InboundRecord>| {
        let Some(r) = r.filter(|r| from.contains(&r.state)) else {
            return Ok::<_, StateError>(None);
        };
        let next = change(&r);
        Ok(Some((next.clone(), next)))
    })
    .await
}

/// An outbound `send` by its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRecord {
    /// The node delivering it, and since when (a pending record of a dead node is an
    /// unknown outcome, never delivered again).
    pub node: String,
    pub started_at_ms: u64,
    /// The `send` answer once delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the outcome is unknown (it may have been delivered): a retry is told so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

pub fn last_route_key(agent_id: &str) -> String {
    format!("last.{}", message_segment(agent_id))
}

/// The chat an agent last answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRoute {
    pub channel: String,
    pub account_id: String,
    pub to: String,
    pub at_ms: u64,
}
