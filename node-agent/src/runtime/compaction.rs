//! Session maintenance that must not race a turn: reset checks and compaction. Compaction
//! holds the session's lease, so a message sent meanwhile queues behind it and runs after.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use argent_proto::agents::AgentsConfig;
use argent_proto::session_key::agent_of;

use super::providers::{self, Providers, TurnEvent};
use super::run::message_text;
use super::runs::{self, Enqueued};
use super::Runtime;
use crate::error::ServiceError;

/// Messages `commands.compact` keeps verbatim after the summary.
const KEEP_TAIL: usize = 4;
/// Longest a model may take to write a summary.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(120);

fn busy(key: &str) -> ServiceError {
    ServiceError::Busy {
        message: format!("agent busy: session {key} is running a turn; try again when it ends"),
        retry_after_ms: 1000,
    }
}

/// Agent Busy when a run holds the session (reset and compaction would pull the
/// transcript from under it).
pub async fn refuse_if_running(rt: &Runtime, key: &str) -> Result<(), ServiceError> {
    let Some((lease, _)) = runs::read_lease(rt.state.as_ref(), key).await? else {
        return Ok(());
    };
    // A lease whose run has ended is about to be released.
    let active = match &lease.active {
        Some(run_id) => !rt
            .runs
            .get(run_id)
            .await?
            .is_some_and(|r| r.status.is_final()),
        None => false,
    };
    if active || !lease.queue.is_empty() {
        return Err(busy(key));
    }
    Ok(())
}

/// Runs `work` while this node holds the session's lease, so no turn starts meanwhile:
/// messages sent during it queue behind it and run afterwards. Agent Busy when a turn holds
/// the session.
pub(crate) async fn holding_lease<T>(
    rt: &std::sync::Arc<Runtime>,
    key: &str,
    work: impl std::future::Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    let marker = format!("maintenance-{}", uuid::Uuid::new_v4().simple());
    // A lease whose run just ended is released a moment later: wait for that, not longer.
    let mut attempts = 40;
    let mut lease = loop {
        refuse_if_running(rt, key).await?;
        match runs::enqueue(&rt.state, key, &marker, &rt.node_id, rt.lease_seen(key)).await? {
            Enqueued::Started(lease) => break *lease,
            Enqueued::Queued(_) => {
                runs::dequeue(rt.state.as_ref(), key, Some(&marker)).await?;
            }
            Enqueued::Busy => {}
        }
        attempts -= 1;
        if attempts == 0 {
            return Err(busy(key));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let result = lease.beating(work).await.unwrap_or_else(|err| {
        Err(ServiceError::Contended {
            message: format!("session {key}: {err}"),
            retry_after_ms: Some(1000),
        })
    });
    // Released before answering, so the caller's next request finds the session free; a
    // message that queued meanwhile becomes the active run and is driven from here.
    if *rt.stopping.borrow() {
        // Stopping: what queued meanwhile is left for another node to take over.
        if let Err(err) = lease.hand_back().await {
            tracing::warn!(%err, session = key, "session lease not handed back");
        }
        return result;
    }
    match lease.advance().await {
        Ok(None) => {}
        Ok(Some(_)) => rt.drive(lease, super::run::Start::Queued),
        // The lease goes stale and another node (or this one) takes it over.
        Err(err) => {
            tracing::warn!(%err, session = key, "session lease not released after maintenance")
        }
    }
    result
}

/// Asks the agent's model for a summary of `messages`; why not when no model is configured
/// or it fails.
async fn summarize(
    config: &Value,
    agent_id: &str,
    messages: &[Value],
    instructions: Option<&str>,
) -> Result<String, String> {
    let choice = Providers::from_config(config)
        .and_then(|p| p.choose(agent_id))
        .map_err(|e| e.to_string())?;
    let mut conversation = String::new();
    for message in messages {
        let role = message["role"].as_str().unwrap_or("other");
        conversation.push_str(&format!("{role}: {}\n", message_text(message)));
    }
    let mut system = "Summarize the conversation below for your future self: keep facts, decisions, open questions and the user's preferences. Answer with the summary only.".to_string();
    if let Some(instructions) = instructions {
        system.push_str(&format!("\nAlso: {instructions}"));
    }
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(providers::stream_turn(
        choice,
        system,
        vec![genai::chat::ChatMessage::user(conversation)],
        Vec::new(),
        tx,
    ));
    let collect = async {
        let mut text = String::new();
        while let Some(event) = rx.recv().await {
            if let TurnEvent::Text(piece) = event {
                text.push_str(&piece);
            }
        }
        text
    };
    let text = tokio::time::timeout(SUMMARY_TIMEOUT, collect)
        .await
        .map_err(|_| "the summary took too long".to_string())?;
    match task.await {
        Ok(Ok(())) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(Ok(())) => Err("the model returned an empty summary".into()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

fn summary_message(summary: &str, replaced: usize) -> Value {
    json!({
        "role": "system", "content": [{"type": "text", "text": summary}],
        "timestamp": argent_proto::now_ms(), "compactionSummary": true, "replacedMessages": replaced,
    })
}

fn estimate_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| message_text(m).chars().count() as u64)
        .sum::<u64>()
        .div_ceil(4)
}

async fn clear_counters(rt: &Runtime, key: &str) -> Result<(), ServiceError> {
    rt.sessions
        .update(key, |e| {
            e.input_tokens = 0;
            e.output_tokens = 0;
            e.total_tokens = 0;
        })
        .await?;
    Ok(())
}

/// What `sessions.compact` did.
pub enum Compaction {
    NoSession,
    NoTranscript,
    /// Already short enough: `kept` messages.
    Short {
        kept: usize,
    },
    Done {
        archived: String,
        kept: usize,
        summarized: bool,
    },
}

/// Keeps the last `max_lines` messages of the session; with a model available the dropped
/// part is replaced by a model-written summary.
pub async fn compact(
    rt: &std::sync::Arc<Runtime>,
    key: &str,
    max_lines: usize,
    config: &Value,
    agents: &AgentsConfig,
) -> Result<Compaction, ServiceError> {
    holding_lease(rt, key, async {
        let Some(entry) = rt.sessions.get(key).await? else {
            return Ok(Compaction::NoSession);
        };
        let messages = rt.transcript(&entry.session_id).await?;
        if messages.is_empty() {
            return Ok(Compaction::NoTranscript);
        }
        if messages.len() <= max_lines {
            return Ok(Compaction::Short {
                kept: messages.len(),
            });
        }
        let cut = messages.len() - max_lines;
        let (dropped, kept) = messages.split_at(cut);
        let summary = summarize(config, agent_of(key, agents), dropped, None).await;
        let mut next = Vec::with_capacity(kept.len() + 1);
        let summarized = match &summary {
            Ok(text) => {
                next.push(summary_message(text, dropped.len()));
                true
            }
            Err(why) => {
                tracing::info!(%why, "compaction without a summary");
                false
            }
        };
        next.extend_from_slice(kept);
        let archived = rt.transcripts.replace(&entry.session_id, &next).await?;
        rt.transcript_cache.forget(&entry.session_id);
        clear_counters(rt, key).await?;
        Ok(Compaction::Done {
            archived,
            kept: kept.len(),
            summarized,
        })
    })
    .await
}

/// What `commands.compact` did, with the transcript's estimated size before (and after).
pub enum Summarized {
    NothingToCompact {
        tokens_before: u64,
    },
    Done {
        tokens_before: u64,
        tokens_after: u64,
    },
}

/// The model summarizes all but the last few messages of the session.
pub async fn summarize_session(
    rt: &std::sync::Arc<Runtime>,
    key: &str,
    instructions: Option<&str>,
    config: &Value,
    agents: &AgentsConfig,
) -> Result<Summarized, ServiceError> {
    holding_lease(rt, key, async {
        let Some(entry) = rt.sessions.get(key).await? else {
            return Err(ServiceError::SessionNotFound(
                "session not found or has no sessionId".into(),
            ));
        };
        let messages = rt.transcript(&entry.session_id).await?;
        let tokens_before = estimate_tokens(&messages);
        if messages.len() <= KEEP_TAIL {
            return Ok(Summarized::NothingToCompact { tokens_before });
        }
        let (older, tail) = messages.split_at(messages.len() - KEEP_TAIL);
        let summary = summarize(config, agent_of(key, agents), older, instructions)
            .await
            .map_err(|why| ServiceError::ProviderFailed(format!("compaction failed: {why}")))?;
        let mut next = vec![summary_message(&summary, older.len())];
        next.extend_from_slice(tail);
        rt.transcripts.replace(&entry.session_id, &next).await?;
        rt.transcript_cache.forget(&entry.session_id);
        clear_counters(rt, key).await?;
        Ok(Summarized::Done {
            tokens_before,
            tokens_after: estimate_tokens(&next),
        })
    })
    .await
}
