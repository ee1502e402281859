//! From an inbound message to the agent's reply. The account's owner runs [`process`]:
//! it takes the stored messages that have not ended, oldest first and one at a time per
//! chat (so a sender's messages are answered in order while other chats go on), and drives
//! each through its states with compare-and-set steps, so that of two nodes that both think
//! they own the account (a takeover racing a slow node), exactly one starts the turn and
//! exactly one sends the reply:
//!
//! `new` → (`ignored` | `running` → `replying` → `done` | `failed`)
//!
//! The turn's run id is derived from the message, so a successor that finds a message
//! `running` waits for the same run (the run record dedupes a second start); a run whose
//! node died is failed by the runtime's lease takeover, and the sender gets an apology
//! rather than a second run of tools that may already have acted. A message found
//! `replying` may have been delivered already: it is not sent again (at most once).

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use argent_proto::config::SharedConfig;
use argent_proto::session_key::{self, SessionKey};

use super::config::{Access, Account, ChannelId};
use super::platform::{platform, ChannelError, LoopHealth, Outbound, Receiving};
use super::store::{self, advance_inbound, InboundRecord, InboundState};
use super::Channels;
use crate::scheduler::turn::{self, Turn};

/// How often the inbox is looked at when no change was seen (a change that came between two
/// looks).
const INBOX_TICK: Duration = Duration::from_millis(250);
/// The longest a channel turn may take before it is aborted.
const TURN_TIMEOUT: Duration = Duration::from_secs(600);
/// What a sender is told when their message could not be answered.
const APOLOGY: &str = "Sorry, I could not answer that message. Please try again later.";
/// Replies that mean "nothing to say".
const SILENT_REPLIES: &[&str] = &["NO_REPLY", "HEARTBEAT_OK"];

/// Runs an account's inbox until `stop`.
pub async fn process(
    channels: Weak<Channels>,
    account: Account,
    health: Arc<LoopHealth>,
    inbox: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // A webhook account's liveness is this loop's; a polling account's is its poller's.
    let beats_itself = platform(account.channel).receiving(&account) != Receiving::Poll;
    let prefix = store::inbound_prefix(account.channel, &account.id);
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let told = Arc::new(Told::default());
    loop {
        let Some(c) = channels.upgrade() else { return };
        tokio::select! {
            _ = stop.changed() => return,
            _ = inbox.notified() => {}
            // A message stored by any node (a webhook), or an answer moving on.
            _ = c.changed() => {}
            _ = tokio::time::sleep(INBOX_TICK) => {}
        }
        if *stop.borrow() {
            return;
        }
        if beats_itself {
            health.beat();
        }
        let mut pending: Vec<(String, InboundRecord)> = c
            .records::<InboundRecord>(&prefix)
            .into_iter()
            .filter(|(_, r)| !r.state.is_final())
            .collect();
        pending.sort_by_key(|(_, r)| (r.received_at_ms, r.seq));
        let mut chats = HashSet::new();
        for (key, record) in pending {
            // Only the oldest open message of a chat; the next once it ended.
            if !chats.insert(record.chat.clone()) || !busy.lock().insert(record.chat.clone()) {
                continue;
            }
            let (c, account, health, busy, told) = (
                c.clone(),
                account.clone(),
                health.clone(),
                busy.clone(),
                told.clone(),
            );
            tokio::spawn(async move {
                let chat = record.chat.clone();
                let on = Answering {
                    c: &c,
                    account: &account,
                    health: &health,
                    told: &told,
                };
                if let Err(err) = answer(on, &key, record).await {
                    tracing::warn!(account = %account.key(), %err, "inbound message not answered");
                    health.error(err.to_string());
                }
                busy.lock().remove(&chat);
            });
        }
    }
}

/// The session a sender's messages go to: `session.dmScope` as upstream (`main`,
/// `per-peer`, `per-channel-peer`, `per-account-channel-peer`); `per-channel-peer` unless
/// set, so every sender has a session of their own [EXT: upstream's default is `main`].
pub fn session_key(config: &SharedConfig, account: &Account, agent_id: &str, peer: &str) -> String {
    let agents = config.agents();
    if agents.scope == "global" {
        return SessionKey::main(agents).into_string();
    }
    let peer: String = peer
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c == ':' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let channel = account.channel.as_str();
    let scope = config
        .document()
        .pointer("/session/dmScope")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("per-channel-peer");
    let rest = match scope {
        "main" => return SessionKey::main_of(agent_id, agents).into_string(),
        "per-peer" => format!("dm:{peer}"),
        "per-account-channel-peer" => format!("{channel}:{}:dm:{peer}", account.id),
        _ => format!("{channel}:dm:{peer}"),
    };
    SessionKey::of_agent(agent_id, &rest).into_string()
}

fn run_id(account: &Account, message_id: &str) -> String {
    format!(
        "ch-{}-{}-{}",
        account.channel.as_str(),
        account.id,
        store::message_segment(message_id)
    )
}

/// What the model is told beside its own prompt.
fn origin_prompt(channel: ChannelId, record: &InboundRecord) -> String {
    let who = match &record.from_name {
        Some(name) => format!("{name} ({})", record.from.join(", ")),
        None => record.from.join(", "),
    };
    format!(
        "This message came from {who} over {}. Your reply is sent back to them there as \
         plain text.",
        channel.label()
    )
}

/// How often a stranger is told how to be let in: once an hour at most, so that nobody can
/// make the bot send a message per message they send.
const TELL_EVERY_MS: u64 = 3_600_000;

/// When each stranger was last told (this receiver's memory; a takeover may tell once more).
#[derive(Default)]
struct Told(Mutex<std::collections::HashMap<String, u64>>);

impl Told {
    /// Whether to tell `sender` now (and remember it).
    fn now(&self, sender: &str) -> bool {
        let now = argent_proto::now_ms();
        let mut told = self.0.lock();
        told.retain(|_, at| now.saturating_sub(*at) < TELL_EVERY_MS);
        told.insert(sender.to_string(), now).is_none()
    }
}

/// What answering a message works with.
#[derive(Clone, Copy)]
struct Answering<'a> {
    c: &'a Arc<Channels>,
    account: &'a Account,
    health: &'a LoopHealth,
    told: &'a Told,
}

/// Tells a sender who may not reach the agent how to be let in.
fn pairing_text(account: &Account, record: &InboundRecord) -> String {
    let id = record.from.first().map(String::as_str).unwrap_or("?");
    format!(
        "I only talk with people my owner has allowed. Your {} id is {id}: to be let in, \
         ask the owner to add it to channels.{}.allowFrom.",
        account.channel.label(),
        account.channel.as_str()
    )
}

async fn answer(on: Answering<'_>, key: &str, record: InboundRecord) -> Result<(), ChannelError> {
    let Answering {
        c,
        account,
        health,
        told,
    } = on;
    let store = c.rt.state.as_ref();
    let config = c.rt.config.current().await?;
    let record = match record.state {
        InboundState::New
            if argent_proto::now_ms().saturating_sub(record.received_at_ms)
                > store::INBOUND_EXPIRES_MS =>
        {
            advance_inbound(store, key, &[InboundState::New], |r| {
                r.ended(
                    InboundState::Failed,
                    Some("not answered within a day".into()),
                )
            })
            .await?;
            return Ok(());
        }
        InboundState::New => {
            health.inbound(record.received_at_ms);
            let ids: Vec<&str> = record.from.iter().map(String::as_str).collect();
            let access = account.access(&ids);
            if access != Access::Allowed {
                let ignored = advance_inbound(store, key, &[InboundState::New], |r| {
                    r.ended(InboundState::Ignored, Some("sender not allowed".into()))
                })
                .await?;
                let sender = record.from.first().map(String::as_str).unwrap_or_default();
                if access == Access::Tell && ignored.is_some() && told.now(sender) {
                    let text = pairing_text(account, &record);
                    send(c, account, health, &record, &text).await?;
                }
                return Ok(());
            }
            let agent_id = account.agent_id(config.agents());
            let peer = record.from.first().cloned().unwrap_or_default();
            let session = session_key(&config, account, &agent_id, &peer);
            let run = run_id(account, &record.message_id);
            let started = advance_inbound(store, key, &[InboundState::New], |r| InboundRecord {
                state: InboundState::Running,
                run_id: Some(run.clone()),
                session_key: Some(session.clone()),
                ..r.clone()
            })
            .await?;
            match started {
                Some(record) => record,
                None => return Ok(()),
            }
        }
        InboundState::Running => record,
        InboundState::Replying => {
            advance_inbound(store, key, &[InboundState::Replying], |r| {
                r.ended(
                    InboundState::Failed,
                    Some("the reply may not have been delivered: its node-agent stopped while sending it".into()),
                )
            })
            .await?;
            return Ok(());
        }
        _ => return Ok(()),
    };
    let (Some(session), Some(run)) = (record.session_key.clone(), record.run_id.clone()) else {
        return Ok(());
    };
    let agent_id = session_key::agent_of(&session, config.agents()).to_string();
    let outcome = turn::run(
        &c.rt,
        Turn {
            agent_id: &agent_id,
            session_key: &session,
            run_id: &run,
            message: record.text.clone(),
            timeout: TURN_TIMEOUT,
            method: "channel",
            extra_system_prompt: Some(origin_prompt(account.channel, &record)),
        },
    )
    .await;
    if !outcome.ok {
        health.error(format!("a turn failed: {}", outcome.text));
    }
    let reply = if outcome.ok {
        let text = outcome.text.trim();
        (!text.is_empty() && !SILENT_REPLIES.contains(&text)).then(|| text.to_string())
    } else {
        // What went wrong stays with the operator (the record, `lastError`): a provider's or
        // the config's words are nobody else's business.
        Some(APOLOGY.to_string())
    };
    let Some(_) = advance_inbound(store, key, &[InboundState::Running], |r| InboundRecord {
        state: InboundState::Replying,
        ..r.clone()
    })
    .await?
    else {
        return Ok(());
    };
    let delivered = match &reply {
        Some(text) => send(c, account, health, &record, text).await,
        None => Ok(()),
    };
    let end = match (&delivered, outcome.ok) {
        (Err(err), _) => (InboundState::Failed, Some(err.to_string())),
        (Ok(()), true) => (InboundState::Done, None),
        (Ok(()), false) => (InboundState::Failed, Some(outcome.text.clone())),
    };
    advance_inbound(store, key, &[InboundState::Replying], |r| {
        r.ended(end.0, end.1.clone())
    })
    .await?;
    if outcome.ok && delivered.is_ok() {
        // Cron results go to the last chat only when it is someone named in `allowFrom`,
        // not anyone an open policy lets in.
        let ids: Vec<&str> = record.from.iter().map(String::as_str).collect();
        if account.names(&ids) {
            remember_route(c, account, &agent_id, &record).await;
        }
        if let Some(text) = &reply {
            speak(c, account, health, &record, text).await;
        }
    }
    delivered
}

/// Notes the chat the agent answered last (a cron announcement without a target goes
/// there).
async fn remember_route(c: &Channels, account: &Account, agent_id: &str, record: &InboundRecord) {
    let route = store::LastRoute {
        channel: account.channel.as_str().to_string(),
        account_id: account.id.clone(),
        to: record.chat.clone(),
        at_ms: argent_proto::now_ms(),
    };
    let body = serde_json::to_vec(&route).expect("records serialize");
    let key = store::last_route_key(agent_id);
    if let Err(err) = c.rt.state.put(store::BUCKET, &key, body.into()).await {
        tracing::debug!(%err, "last chat not noted");
    }
}

/// Sends text back to the message's chat.
async fn send(
    c: &Channels,
    account: &Account,
    health: &LoopHealth,
    record: &InboundRecord,
    text: &str,
) -> Result<(), ChannelError> {
    let message = Outbound {
        to: &record.chat,
        text,
        thread: record.thread.as_deref(),
    };
    platform(account.channel)
        .send(c.api(account), message)
        .await?;
    health.outbound();
    Ok(())
}

/// A spoken copy of the reply where the platform takes voice notes and automatic speech is
/// `always` (`messages.tts.auto`, or the shared preference). Failures are the account's
/// last error; the text went already.
async fn speak(
    c: &Channels,
    account: &Account,
    health: &LoopHealth,
    record: &InboundRecord,
    text: &str,
) {
    if account.channel != ChannelId::Telegram {
        return;
    }
    let Ok(config) = c.rt.config.current().await else {
        return;
    };
    let tts = config.tts();
    let Ok(prefs) = c.speech.prefs().await else {
        return;
    };
    if crate::tts::auto_mode(&tts, &prefs) != "always" {
        return;
    }
    let spoken = c
        .speech
        .convert(&tts, text, Some("telegram"), &serde_json::Map::new())
        .await;
    let result = match spoken {
        Ok(audio) => {
            super::telegram::send_voice(&c.http, account, &record.chat, audio.audio, "reply.ogg")
                .await
                .map(|_| ())
        }
        Err(err) => Err(ChannelError::Delivery(format!(
            "the spoken reply failed: {err}"
        ))),
    };
    if let Err(err) = result {
        health.error(err.to_string());
    }
}
