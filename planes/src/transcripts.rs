//! The transcript plane: the durable, append-only message log of each chat session.
//!
//! Embedded: a keyspace of the state dir's fjall database keyed by (session id, seq); the former
//! JSON-lines files (`<state dir>/transcripts/*.jsonl`) are imported on first open. Cluster:
//! one JetStream stream, one subject per session (`argent.tx.<sessionId>`), so any
//! node-agent can continue any session and nothing is lost when a node or gateway dies.
//! Compaction archives the full log first (`argent.txa.<sessionId>.<ms>`, or an archive
//! number in the database), then replaces it: embedded in one transaction; on JetStream in
//! an order where a crash can duplicate but never lose messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use argent_proto::subjects;

use crate::blobs::{self, Blobs};
use crate::embedded::{read_transcript, EmbeddedDb, Engine, Op};
use crate::state::StateError;

/// Where a session's log ends: a number that changes with every write to the log and never
/// comes back to an earlier value (on JetStream the stream sequence of its last message, 0
/// for none; embedded, the replacements so far above the last message's seq). A reader that
/// remembers it can append on the condition that nobody wrote since
/// ([`TranscriptLog::append_after`]), which is what lets a node keep a session's log in
/// memory without ever serving a stale one.
pub type LogEnd = u64;

#[async_trait]
pub trait TranscriptLog: Send + Sync {
    /// Appends one message (a JSON object) to the session's log, only if the log still ends
    /// at `after` when given; the log's new end. See the two below.
    async fn append_if(
        &self,
        session_id: &str,
        message: &Value,
        after: Option<LogEnd>,
    ) -> Result<LogEnd, StateError>;
    /// Appends one message (a JSON object) to the session's log; the log's new end.
    async fn append(&self, session_id: &str, message: &Value) -> Result<LogEnd, StateError> {
        self.append_if(session_id, message, None).await
    }
    /// Appends only if the log still ends at `end`, i.e. nobody wrote to it since the
    /// caller read or appended there ([`StateError::WrongRevision`] otherwise, and nothing is
    /// written); the log's new end.
    async fn append_after(
        &self,
        session_id: &str,
        message: &Value,
        end: LogEnd,
    ) -> Result<LogEnd, StateError> {
        self.append_if(session_id, message, Some(end)).await
    }
    /// Every message of the session, oldest first; empty for an unknown session.
    async fn read(&self, session_id: &str) -> Result<Vec<Value>, StateError> {
        Ok(self.read_to_end(session_id).await?.0)
    }
    /// [`TranscriptLog::read`], and where the log ended for this read.
    async fn read_to_end(&self, session_id: &str) -> Result<(Vec<Value>, LogEnd), StateError>;
    /// The largest message (encoded) the log can hold, when it has a limit (JetStream:
    /// `blobs::MAX_BLOB_BYTES`), so a request can be refused before it is accepted.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
    /// Archives the whole log, then makes `messages` its content; returns where the
    /// archive is.
    async fn replace(&self, session_id: &str, messages: &[Value]) -> Result<String, StateError>;
}

/// Session ids are ours (UUIDs), but they become database keys and NATS subjects: refuse anything
/// else.
pub(crate) fn check_id(session_id: &str) -> Result<(), StateError> {
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

/// Transcripts in the state dir's database (the one-process default): appends are
/// group-committed with the state store's writes.
pub struct EmbeddedTranscripts {
    engine: Arc<Engine>,
    location: String,
}

impl EmbeddedTranscripts {
    /// The transcript log of `<state dir>/argent.fjall`, or in a temporary directory. A
    /// process that also has the embedded state store must open both on one [`EmbeddedDb`]
    /// (fjall locks its directory): use [`EmbeddedTranscripts::on`].
    pub fn open(state_dir: Option<&std::path::Path>) -> Result<Self, StateError> {
        Ok(Self::on(&EmbeddedDb::open(state_dir)?))
    }

    pub fn on(db: &EmbeddedDb) -> Self {
        EmbeddedTranscripts {
            engine: db.durable.clone(),
            location: db.location.clone(),
        }
    }
}

#[async_trait]
impl TranscriptLog for EmbeddedTranscripts {
    async fn append_if(
        &self,
        session_id: &str,
        message: &Value,
        after: Option<LogEnd>,
    ) -> Result<LogEnd, StateError> {
        check_id(session_id)?;
        let op = Op::Append {
            session: session_id.to_string(),
            message: encode(message),
            after,
        };
        self.engine.submit(op).await
    }

    async fn read_to_end(&self, session_id: &str) -> Result<(Vec<Value>, LogEnd), StateError> {
        check_id(session_id)?;
        let db = self.engine.db.clone();
        let session = session_id.to_string();
        // A long transcript is megabytes: read and parse it off the async workers.
        tokio::task::spawn_blocking(move || {
            let (messages, end) = read_transcript(&db, &session)?;
            let messages = messages
                .iter()
                .filter_map(|m| match serde_json::from_slice(m) {
                    Ok(message) => Some(message),
                    Err(err) => {
                        tracing::warn!(%session, %err, "unreadable transcript message skipped");
                        None
                    }
                })
                .collect();
            Ok((messages, end))
        })
        .await
        .map_err(|e| StateError::Failed(format!("transcript read of {session_id} failed: {e}")))?
    }

    async fn replace(&self, session_id: &str, messages: &[Value]) -> Result<String, StateError> {
        check_id(session_id)?;
        let op = Op::Replace {
            session: session_id.to_string(),
            messages: messages.iter().map(encode).collect(),
        };
        let number = self.engine.submit(op).await?;
        Ok(format!(
            "{}#tx/archive/{session_id}/{number}",
            self.location
        ))
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

/// Transcripts in JetStream (cluster mode). An entry over one NATS message is stored as a
/// blob (`crate::blobs`) and its message carries only the blob's name, in a header.
pub struct NatsTranscripts {
    client: async_nats::Client,
    js: jetstream::Context,
    blobs: Blobs,
}

/// One read of a session's log.
struct Read {
    messages: Vec<Value>,
    /// The stream sequence of the last message (0: none); `None` when fewer messages
    /// arrived than the consumer had pending when it was created (purged meanwhile).
    end: Option<LogEnd>,
    /// The blobs its large entries are stored in.
    blobs: Vec<String>,
}

const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of a log that keeps changing meanwhile, before the last one is answered.
const READ_ATTEMPTS: usize = 3;

fn cannot_read(e: &dyn std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("cannot read transcript: {e}"))
}
/// Reading a whole (long) transcript may take longer than one operation.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl NatsTranscripts {
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        NatsTranscripts {
            blobs: Blobs::new(client.clone(), blobs::BLOBS),
            client,
            js,
        }
    }

    fn available(&self) -> Result<(), StateError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(StateError::Unavailable("NATS is not connected".into())),
        }
    }

    /// Publishes one message (on the condition that the subject's last message is `after`,
    /// when given); the stream sequence it was stored at.
    async fn publish(
        &self,
        subject: String,
        message: &Value,
        after: Option<LogEnd>,
    ) -> Result<LogEnd, StateError> {
        let failed = |e: &dyn std::fmt::Display| {
            StateError::Unavailable(format!("transcript append failed: {e}"))
        };
        let payload = encode(message);
        blobs::check_size(payload.len())?;
        let mut publish = jetstream::message::PublishMessage::build();
        let blob = if payload.len() > blobs::inline_limit(&self.client) {
            let name = blobs::unique_name(&format!("tx/{subject}"));
            self.blobs.put(&name, &payload).await?;
            publish = publish.header(blobs::HEADER_BLOB, name.as_str());
            Some(name)
        } else {
            publish = publish.payload(Bytes::from(payload));
            None
        };
        if let Some(end) = after {
            publish = publish.expected_last_subject_sequence(end);
        }
        let appended = async {
            let ack = self
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| failed(&e))?;
            let ack = tokio::time::timeout(OP_TIMEOUT, ack).await.map_err(|_| {
                StateError::Unavailable("transcript append not acknowledged".into())
            })?;
            match ack {
                Ok(ack) => Ok(ack.sequence),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    Err(StateError::WrongRevision)
                }
                Err(e) => Err(failed(&e)),
            }
        }
        .await;
        if let (Err(StateError::WrongRevision), Some(name)) = (&appended, blob) {
            // Refused, so surely not appended. (After any other failure the append may have
            // landed with its answer lost: the blob stays.)
            if let Err(err) = self.blobs.delete(&name).await {
                tracing::debug!(%err, "blob of a refused append not deleted");
            }
        }
        appended
    }

    /// Every message on `subject`, and where the log ends. The read is a snapshot: the
    /// subject's last sequence is asked before and compared with the last message read, and
    /// the read is repeated when the log changed meanwhile (a compaction purging while a
    /// consumer reads could otherwise yield old messages followed by new ones). A log that
    /// keeps changing is answered with the end from before the last read, which can never be
    /// the log's end again: a conditional append after it is refused.
    async fn read_subject(&self, subject: String) -> Result<(Vec<Value>, LogEnd), StateError> {
        self.read_subject_with_blobs(subject)
            .await
            .map(|(read, end)| (read.messages, end))
    }

    /// [`NatsTranscripts::read_subject`], with the names of the blobs read.
    async fn read_subject_with_blobs(&self, subject: String) -> Result<(Read, LogEnd), StateError> {
        let stream = self
            .js
            .get_stream(TRANSCRIPT_STREAM)
            .await
            .map_err(|e| cannot_read(&e))?;
        let mut attempt = 0;
        loop {
            let before = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => message.sequence,
                Err(e)
                    if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    0
                }
                Err(e) => return Err(cannot_read(&e)),
            };
            let read = self.read_once(&stream, &subject).await?;
            attempt += 1;
            if read.end == Some(before) || attempt == READ_ATTEMPTS {
                return Ok((read, before));
            }
        }
    }

    /// One pass of [`NatsTranscripts::read_subject`]: the messages a consumer delivers, and
    /// the stream sequence of the last one (0: none) — `None` when fewer arrived than the
    /// consumer had pending when it was created (the log was purged meanwhile).
    async fn read_once(
        &self,
        stream: &jetstream::stream::Stream,
        subject: &str,
    ) -> Result<Read, StateError> {
        let unavailable = |e: &dyn std::fmt::Display| cannot_read(e);
        let mut blob_names = Vec::new();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: subject.to_string(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = Vec::with_capacity(pending);
        let mut end = 0;
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
                if let Ok(info) = message.info() {
                    end = info.stream_sequence;
                }
                let blob = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(blobs::HEADER_BLOB))
                    .map(|name| name.as_str().to_string());
                let payload = match blob {
                    None => Some(message.payload.clone()),
                    // A large entry; gone only if its append was never acknowledged.
                    Some(name) => {
                        let blob = self.blobs.get(&name).await?;
                        blob_names.push(name);
                        blob
                    }
                };
                match payload.and_then(|p| serde_json::from_slice(&p).ok()) {
                    Some(value) => messages.push(value),
                    // Count it so the loop ends; unreadable entries are skipped.
                    None => messages.push(Value::Null),
                }
            }
            if messages.len() == before {
                break;
            }
        }
        let complete = messages.len() == pending;
        messages.retain(|m| !m.is_null());
        // Not waited for: the consumer also goes away by itself once inactive.
        let (stream, name) = (stream.clone(), consumer.cached_info().name.clone());
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        Ok(Read {
            messages,
            end: complete.then_some(end),
            blobs: blob_names,
        })
    }
}

#[async_trait]
impl TranscriptLog for NatsTranscripts {
    fn max_message_bytes(&self) -> Option<usize> {
        Some(blobs::MAX_BLOB_BYTES)
    }

    async fn append_if(
        &self,
        session_id: &str,
        message: &Value,
        after: Option<LogEnd>,
    ) -> Result<LogEnd, StateError> {
        check_id(session_id)?;
        self.available()?;
        self.publish(subjects::transcript_subject(session_id), message, after)
            .await
    }

    async fn read_to_end(&self, session_id: &str) -> Result<(Vec<Value>, LogEnd), StateError> {
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
        let (old, _) = self.read_subject_with_blobs(subject.clone()).await?;
        for message in &old.messages {
            self.publish(archive.clone(), message, None).await?;
        }
        for message in messages {
            self.publish(subject.clone(), message, None).await?;
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
        // The purged entries' blobs (their copies in the archive and the new log have their
        // own).
        for name in old.blobs {
            if let Err(err) = self.blobs.delete(&name).await {
                tracing::debug!(%err, "blob of a purged transcript entry not deleted");
            }
        }
        Ok(format!("nats://{TRANSCRIPT_STREAM}/{archive}"))
    }
}

/// What every [`TranscriptLog`] must do with conditional appends, as one check that the
/// embedded log's unit tests and the JetStream log's integration tests both run.
#[doc(hidden)]
pub mod conformance {
    use super::*;
    use serde_json::json;

    fn expect(ok: bool, what: &str) -> Result<(), String> {
        ok.then_some(()).ok_or_else(|| what.to_string())
    }

    async fn refused(
        log: &dyn TranscriptLog,
        session: &str,
        end: LogEnd,
        what: &str,
    ) -> Result<(), String> {
        let appended = log.append_after(session, &json!({"n": 0}), end).await;
        expect(appended == Err(StateError::WrongRevision), what)
    }

    /// Runs on a session id nobody wrote to; `Err` says which rule failed.
    pub async fn conditional_appends(log: &dyn TranscriptLog, session: &str) -> Result<(), String> {
        let failed = |e: StateError| e.to_string();
        let (messages, empty) = log.read_to_end(session).await.map_err(failed)?;
        expect(messages.is_empty(), "a new log is empty")?;
        let first = log
            .append_after(session, &json!({"n": 1}), empty)
            .await
            .map_err(failed)?;
        expect(first != empty, "an append moves the end")?;
        let second = log
            .append(session, &json!({"n": 2}))
            .await
            .map_err(failed)?;
        refused(
            log,
            session,
            first,
            "an append after a stale end is refused",
        )
        .await?;
        let (messages, end) = log.read_to_end(session).await.map_err(failed)?;
        expect(
            messages == [json!({"n": 1}), json!({"n": 2})] && end == second,
            "a refused append writes nothing; a read ends where the last append did",
        )?;
        // Replaced by as many messages as before: the end still moves (no ABA).
        log.replace(session, &[json!({"r": 1}), json!({"r": 2})])
            .await
            .map_err(failed)?;
        let what = "an append after the end before a replacement is refused";
        refused(log, session, second, what).await?;
        let (_, replaced) = log.read_to_end(session).await.map_err(failed)?;
        let third = log
            .append_after(session, &json!({"n": 3}), replaced)
            .await
            .map_err(failed)?;
        let (messages, end) = log.read_to_end(session).await.map_err(failed)?;
        expect(
            messages == [json!({"r": 1}), json!({"r": 2}), json!({"n": 3})] && end == third,
            "an append at the current end is written",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn embedded_appends_on_condition() {
        let db = EmbeddedDb::open(None).unwrap();
        let log = EmbeddedTranscripts::on(&db);
        conformance::conditional_appends(&log, "fresh")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn embedded_log_appends_reads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(Some(dir.path())).unwrap();
        let log = EmbeddedTranscripts::on(&db);
        assert!(log.read("s1").await.unwrap().is_empty());
        log.append("s1", &json!({"role": "user", "n": 1}))
            .await
            .unwrap();
        log.append("s1", &json!({"role": "assistant", "n": 2}))
            .await
            .unwrap();
        log.append("s2", &json!({"other": true})).await.unwrap();
        assert_eq!(log.read("s1").await.unwrap().len(), 2);
        let archive = log.replace("s1", &[json!({"n": 2})]).await.unwrap();
        assert!(archive.ends_with("#tx/archive/s1/1"), "{archive}");
        assert_eq!(log.read("s1").await.unwrap(), vec![json!({"n": 2})]);
        log.append("s1", &json!({"n": 3})).await.unwrap();
        let second = log.replace("s1", &[]).await.unwrap();
        assert!(second.ends_with("#tx/archive/s1/2"), "{second}");
        assert!(log.read("s1").await.unwrap().is_empty());
        log.append("s1", &json!({"n": 4})).await.unwrap();
        assert_eq!(log.read("s2").await.unwrap(), vec![json!({"other": true})]);
        // The state store shares the database (and its file lock).
        let store = crate::state_embedded::EmbeddedStore::on(&db).unwrap();
        crate::state::StateStore::put(&store, "argent_sessions", "k", "v".into())
            .await
            .unwrap();
        drop((log, store, db));
        // Reopened: the log is on disk.
        let again = EmbeddedTranscripts::open(Some(dir.path())).unwrap();
        assert_eq!(again.read("s1").await.unwrap(), vec![json!({"n": 4})]);
    }

    #[tokio::test]
    async fn former_jsonl_files_are_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("transcripts");
        std::fs::create_dir_all(&files).unwrap();
        let session = "7c1c6f0e-2b7a-4d0e-9a55-0d7f2a2c1a01";
        let text = "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"assistant\",\"content\":\"hello\"}\n{\"role\":\"us";
        std::fs::write(files.join(format!("{session}.jsonl")), text).unwrap();
        std::fs::write(
            files.join(format!("{session}.jsonl.bak.1764000000000")),
            "{}\n",
        )
        .unwrap();
        let log = EmbeddedTranscripts::open(Some(dir.path())).unwrap();
        let expected = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
        ];
        assert_eq!(
            log.read(session).await.unwrap(),
            expected,
            "the torn line is skipped"
        );
        assert!(files.join(format!("{session}.jsonl.migrated")).exists());
        assert!(files
            .join(format!("{session}.jsonl.bak.1764000000000"))
            .exists());
        log.append(session, &json!({"n": 3})).await.unwrap();
        drop(log);
        // A crash between the import and the rename: the file is back, and not imported again.
        std::fs::write(files.join(format!("{session}.jsonl")), text).unwrap();
        let log = EmbeddedTranscripts::open(Some(dir.path())).unwrap();
        assert_eq!(log.read(session).await.unwrap().len(), 3);
        assert!(!files.join(format!("{session}.jsonl")).exists());
    }

    #[tokio::test]
    async fn ids_that_are_not_ours_are_refused() {
        let log = EmbeddedTranscripts::open(None).unwrap();
        assert!(log.append("../x", &json!({})).await.is_err());
        assert!(log.read("a.b").await.is_err());
    }
}
