//! The transcript plane: the durable, append-only message log of each chat session.
//!
//! Embedded: one JSON-lines file per session under `<state dir>/transcripts/`. Cluster: one
//! JetStream stream, one subject per session (`argent.tx.<sessionId>`), so any node-agent
//! can continue any session and nothing is lost when a node or gateway dies. Compaction
//! archives the full log first (`argent.txa.<sessionId>.<ms>` / a `.bak` file), then
//! replaces it, in an order where a crash can duplicate but never lose messages.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use argent_proto::subjects;

use crate::state::StateError;

#[async_trait]
pub trait TranscriptLog: Send + Sync {
    /// Appends one message (a JSON object) to the session's log.
    async fn append(&self, session_id: &str, message: &Value) -> Result<(), StateError>;
    /// Every message of the session, oldest first; empty for an unknown session.
    async fn read(&self, session_id: &str) -> Result<Vec<Value>, StateError>;
    /// Archives the whole log, then makes `messages` its content; returns where the
    /// archive is.
    async fn replace(&self, session_id: &str, messages: &[Value]) -> Result<String, StateError>;
}

/// Session ids are ours (UUIDs), but they become file names and subjects: refuse anything
/// else.
fn check_id(session_id: &str) -> Result<(), StateError> {
    let ok = !session_id.is_empty()
        && session_id.len() <= 128
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidKey(session_id.to_string()))
    }
}

fn encode(message: &Value) -> Vec<u8> {
    serde_json::to_vec(message).expect("JSON values serialize")
}

/// JSON-lines files, one per session (the one-process default).
pub struct FileTranscripts {
    dir: Option<PathBuf>,
    /// In-memory logs when there is no state dir (tests, `--no-state`).
    memory: parking_lot::Mutex<std::collections::HashMap<String, Vec<Value>>>,
    /// Serializes writers: appends and replacements of one process never interleave.
    write: tokio::sync::Mutex<()>,
}

impl FileTranscripts {
    pub fn open(state_dir: Option<&std::path::Path>) -> Result<Self, StateError> {
        let dir = match state_dir {
            Some(base) => {
                let dir = base.join("transcripts");
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StateError::Failed(format!("cannot create {}: {e}", dir.display()))
                })?;
                Some(dir)
            }
            None => None,
        };
        Ok(FileTranscripts {
            dir,
            memory: Default::default(),
            write: tokio::sync::Mutex::new(()),
        })
    }

    fn path(&self, dir: &std::path::Path, session_id: &str) -> PathBuf {
        dir.join(format!("{session_id}.jsonl"))
    }
}

fn io_error(what: &str, err: std::io::Error) -> StateError {
    StateError::Failed(format!("{what}: {err}"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StateError::Failed(format!("transcript task failed: {e}")))?
}

#[async_trait]
impl TranscriptLog for FileTranscripts {
    async fn append(&self, session_id: &str, message: &Value) -> Result<(), StateError> {
        check_id(session_id)?;
        let Some(dir) = &self.dir else {
            self.memory
                .lock()
                .entry(session_id.to_string())
                .or_default()
                .push(message.clone());
            return Ok(());
        };
        let path = self.path(dir, session_id);
        let mut line = encode(message);
        line.push(b'\n');
        let _writer = self.write.lock().await;
        blocking(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_error("cannot open transcript", e))?;
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("cannot append to transcript", e))
        })
        .await
    }

    async fn read(&self, session_id: &str) -> Result<Vec<Value>, StateError> {
        check_id(session_id)?;
        let Some(dir) = &self.dir else {
            return Ok(self
                .memory
                .lock()
                .get(session_id)
                .cloned()
                .unwrap_or_default());
        };
        let path = self.path(dir, session_id);
        blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error("cannot read transcript", e)),
            };
            // A torn last line (crash mid-append) is skipped, not fatal.
            Ok(text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect())
        })
        .await
    }

    async fn replace(&self, session_id: &str, messages: &[Value]) -> Result<String, StateError> {
        check_id(session_id)?;
        let Some(dir) = &self.dir else {
            let mut memory = self.memory.lock();
            let old = memory.insert(session_id.to_string(), messages.to_vec());
            let archive = format!("memory:{session_id}.{}", argent_proto::now_ms());
            memory.insert(archive.clone(), old.unwrap_or_default());
            return Ok(archive);
        };
        let path = self.path(dir, session_id);
        let archive = dir.join(format!("{session_id}.jsonl.bak.{}", argent_proto::now_ms()));
        let mut body = Vec::new();
        for message in messages {
            body.extend_from_slice(&encode(message));
            body.push(b'\n');
        }
        let _writer = self.write.lock().await;
        blocking(move || {
            if path.exists() {
                std::fs::copy(&path, &archive)
                    .map_err(|e| io_error("cannot archive transcript", e))?;
            }
            let temp = path.with_extension("jsonl.tmp");
            std::fs::write(&temp, &body)
                .and_then(|()| std::fs::File::open(&temp)?.sync_all())
                .and_then(|()| std::fs::rename(&temp, &path))
                .map_err(|e| io_error("cannot rewrite transcript", e))?;
            Ok(archive.display().to_string())
        })
        .await
    }
}

/// Name of the JetStream stream holding every transcript.
pub const TRANSCRIPT_STREAM: &str = "ARGENT_TRANSCRIPTS";

/// Declares the transcript stream (idempotent).
pub async fn ensure_stream(js: &jetstream::Context, replicas: usize) -> Result<(), StateError> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: TRANSCRIPT_STREAM.to_string(),
        subjects: vec![
            format!("{}.>", subjects::TRANSCRIPT_PREFIX),
            format!("{}.>", subjects::TRANSCRIPT_ARCHIVE_PREFIX),
        ],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| StateError::Unavailable(format!("cannot declare {TRANSCRIPT_STREAM}: {e}")))?;
    Ok(())
}

/// Transcripts in JetStream (cluster mode).
pub struct NatsTranscripts {
    client: async_nats::Client,
    js: jetstream::Context,
}

const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Reading a whole (long) transcript may take longer than one operation.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl NatsTranscripts {
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        NatsTranscripts { client, js }
    }

    fn available(&self) -> Result<(), StateError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(StateError::Unavailable("NATS is not connected".into())),
        }
    }

    async fn publish(&self, subject: String, message: &Value) -> Result<(), StateError> {
        let ack = self
            .js
            .publish(subject, Bytes::from(encode(message)))
            .await
            .map_err(|e| StateError::Unavailable(format!("transcript append failed: {e}")))?;
        tokio::time::timeout(OP_TIMEOUT, ack)
            .await
            .map_err(|_| StateError::Unavailable("transcript append not acknowledged".into()))?
            .map_err(|e| StateError::Unavailable(format!("transcript append failed: {e}")))?;
        Ok(())
    }

    async fn read_subject(&self, subject: String) -> Result<Vec<Value>, StateError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            StateError::Unavailable(format!("cannot read transcript: {e}"))
        };
        let stream = self
            .js
            .get_stream(TRANSCRIPT_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: subject,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .num_pending as usize;
        let mut messages = Vec::with_capacity(pending);
        while messages.len() < pending {
            let batch = consumer
                .fetch()
                .max_messages((pending - messages.len()).min(1000))
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| unavailable(&e))?;
            let before = messages.len();
            let mut batch = std::pin::pin!(batch);
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| unavailable(&e))?;
                if let Ok(value) = serde_json::from_slice(&message.payload) {
                    messages.push(value);
                } else {
                    // Count it so the loop ends; unreadable entries are skipped.
                    messages.push(Value::Null);
                }
            }
            if messages.len() == before {
                break;
            }
        }
        messages.retain(|m| !m.is_null());
        let _ = stream.delete_consumer(&consumer.cached_info().name).await;
        Ok(messages)
    }
}

#[async_trait]
impl TranscriptLog for NatsTranscripts {
    async fn append(&self, session_id: &str, message: &Value) -> Result<(), StateError> {
        check_id(session_id)?;
        self.available()?;
        self.publish(subjects::transcript_subject(session_id), message)
            .await
    }

    async fn read(&self, session_id: &str) -> Result<Vec<Value>, StateError> {
        check_id(session_id)?;
        self.available()?;
        tokio::time::timeout(
            READ_TIMEOUT,
            self.read_subject(subjects::transcript_subject(session_id)),
        )
        .await
        .map_err(|_| StateError::Unavailable("transcript read timed out".into()))?
    }

    async fn replace(&self, session_id: &str, messages: &[Value]) -> Result<String, StateError> {
        check_id(session_id)?;
        self.available()?;
        let subject = subjects::transcript_subject(session_id);
        let archive = format!(
            "{}.{session_id}.{}",
            subjects::TRANSCRIPT_ARCHIVE_PREFIX,
            argent_proto::now_ms()
        );
        // Archive, append the new content, then purge all but it: a crash in between
        // leaves duplicates, never a hole.
        for message in self.read_subject(subject.clone()).await? {
            self.publish(archive.clone(), &message).await?;
        }
        for message in messages {
            self.publish(subject.clone(), message).await?;
        }
        let stream = self
            .js
            .get_stream(TRANSCRIPT_STREAM)
            .await
            .map_err(|e| StateError::Unavailable(format!("cannot compact transcript: {e}")))?;
        stream
            .purge()
            .filter(subject)
            .keep(messages.len() as u64)
            .await
            .map_err(|e| StateError::Unavailable(format!("cannot compact transcript: {e}")))?;
        Ok(format!("nats://{TRANSCRIPT_STREAM}/{archive}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn file_log_appends_reads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileTranscripts::open(Some(dir.path())).unwrap();
        assert!(log.read("s1").await.unwrap().is_empty());
        log.append("s1", &json!({"role": "user", "n": 1}))
            .await
            .unwrap();
        log.append("s1", &json!({"role": "assistant", "n": 2}))
            .await
            .unwrap();
        assert_eq!(log.read("s1").await.unwrap().len(), 2);
        let archive = log.replace("s1", &[json!({"n": 2})]).await.unwrap();
        assert_eq!(log.read("s1").await.unwrap(), vec![json!({"n": 2})]);
        assert!(std::fs::read_to_string(archive).unwrap().lines().count() == 2);
        // Reopened: the log is on disk.
        let again = FileTranscripts::open(Some(dir.path())).unwrap();
        assert_eq!(again.read("s1").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn ids_that_are_not_ours_are_refused() {
        let log = FileTranscripts::open(None).unwrap();
        assert!(log.append("../x", &json!({})).await.is_err());
        assert!(log.read("a.b").await.is_err());
    }
}
