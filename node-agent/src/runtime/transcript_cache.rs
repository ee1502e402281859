//! The logs of the sessions this node runs turns for, kept in memory between turns, so a
//! turn does not read its whole transcript back from the store before asking the model.
//!
//! Never stale by construction: every write this node makes to a cached log is an append on
//! the condition that the log still ends where the cache says
//! ([`TranscriptLog::append_after`]). When someone else wrote meanwhile (`chat.inject` on
//! another node, a compaction, a turn a takeover ran elsewhere) the append is refused, the
//! entry is dropped and the log is read again. Reads that are not followed by a write of
//! ours (`chat.history`, …) do not use the cache: they could not tell it is behind.
//!
//! Bounded: at most [`MAX_BYTES`] in all (least recently used logs leave first), and a log
//! larger than [`MAX_ENTRY_BYTES`] is not kept.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use argent_planes::state::StateError;
use argent_planes::transcripts::{LogEnd, TranscriptLog};

/// Memory all cached logs may take together (estimated from their text).
pub const MAX_BYTES: usize = 32 << 20;
/// A log larger than this is read from the store each turn instead.
pub const MAX_ENTRY_BYTES: usize = 4 << 20;

struct Cached {
    messages: Arc<Vec<Value>>,
    end: LogEnd,
    bytes: usize,
    /// When it was last used (a counter), for eviction.
    used: u64,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<String, Cached>,
    bytes: usize,
    clock: u64,
}

impl Inner {
    fn remove(&mut self, session_id: &str) -> Option<Cached> {
        let cached = self.logs.remove(session_id)?;
        self.bytes -= cached.bytes;
        Some(cached)
    }

    fn insert(&mut self, session_id: &str, messages: Arc<Vec<Value>>, end: LogEnd, bytes: usize) {
        self.remove(session_id);
        if bytes > MAX_ENTRY_BYTES {
            return;
        }
        while self.bytes + bytes > MAX_BYTES {
            let Some(oldest) = self
                .logs
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.clock += 1;
        self.bytes += bytes;
        let used = self.clock;
        self.logs.insert(
            session_id.to_string(),
            Cached {
                messages,
                end,
                bytes,
                used,
            },
        );
    }
}

/// What a conditional append to a cached log did.
enum Known {
    /// Not cached, or the log moved on without us: nothing was written.
    Unknown,
    /// Written, but the cached log was replaced meanwhile: read it again.
    Appended,
    /// Written; the whole log after it.
    Current(Arc<Vec<Value>>),
}

/// See the module documentation.
pub struct TranscriptCache {
    log: Arc<dyn TranscriptLog>,
    inner: Mutex<Inner>,
}

impl TranscriptCache {
    pub fn new(log: Arc<dyn TranscriptLog>) -> Self {
        TranscriptCache {
            log,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A session this node just created has an empty log: known without reading it.
    pub fn know_empty(&self, session_id: &str) {
        self.inner
            .lock()
            .insert(session_id, Arc::new(Vec::new()), 0, 0);
    }

    /// Forgets a session's log (it was replaced or is no longer ours).
    pub fn forget(&self, session_id: &str) {
        self.inner.lock().remove(session_id);
    }

    /// Appends `message` and answers the whole log after it: from memory when nobody else
    /// wrote since this node last did, else read back from the store.
    pub async fn append_and_read(
        &self,
        session_id: &str,
        message: &Value,
    ) -> Result<Arc<Vec<Value>>, StateError> {
        match self.append_known(session_id, message).await? {
            Known::Current(messages) => return Ok(messages),
            Known::Appended => {}
            Known::Unknown => {
                self.log.append(session_id, message).await?;
            }
        }
        let (messages, end) = self.log.read_to_end(session_id).await?;
        let bytes = messages.iter().map(approximate_size).sum();
        let messages = Arc::new(messages);
        self.inner
            .lock()
            .insert(session_id, messages.clone(), end, bytes);
        Ok(messages)
    }

    /// Appends `message` (keeping the cached log current when there is one).
    pub async fn append(&self, session_id: &str, message: &Value) -> Result<(), StateError> {
        if let Known::Unknown = self.append_known(session_id, message).await? {
            self.log.append(session_id, message).await?;
        }
        Ok(())
    }

    /// The conditional append to a cached log.
    async fn append_known(&self, session_id: &str, message: &Value) -> Result<Known, StateError> {
        let Some(end) = self.inner.lock().logs.get(session_id).map(|c| c.end) else {
            return Ok(Known::Unknown);
        };
        let appended = self.log.append_after(session_id, message, end).await;
        let mut inner = self.inner.lock();
        // Taken out whatever happened: it is put back only when it is current.
        let cached = inner.remove(session_id);
        match appended {
            Ok(new_end) => {
                let Some(mut cached) = cached.filter(|c| c.end == end) else {
                    // Replaced meanwhile by another task of ours: read it again.
                    return Ok(Known::Appended);
                };
                Arc::make_mut(&mut cached.messages).push(message.clone());
                let bytes = cached.bytes + approximate_size(message);
                let messages = cached.messages.clone();
                inner.insert(session_id, cached.messages, new_end, bytes);
                Ok(Known::Current(messages))
            }
            Err(StateError::WrongRevision) => {
                tracing::debug!(
                    session = session_id,
                    "transcript written elsewhere since this node last did; reading it again"
                );
                Ok(Known::Unknown)
            }
            Err(err) => Err(err),
        }
    }

    /// Bytes the cached logs take (estimated), for tests and metrics.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

/// Roughly what a message takes in memory: its text plus a little per value.
fn approximate_size(value: &Value) -> usize {
    16 + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(approximate_size).sum(),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| k.len() + approximate_size(v))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use argent_planes::transcripts::EmbeddedTranscripts;
    use async_trait::async_trait;
    use serde_json::json;

    /// The embedded log, counting whole-log reads.
    struct Counting {
        log: EmbeddedTranscripts,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl TranscriptLog for Counting {
        async fn append_if(
            &self,
            id: &str,
            message: &Value,
            after: Option<LogEnd>,
        ) -> Result<LogEnd, StateError> {
            self.log.append_if(id, message, after).await
        }
        async fn read_to_end(&self, id: &str) -> Result<(Vec<Value>, LogEnd), StateError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.log.read_to_end(id).await
        }
        async fn replace(&self, id: &str, messages: &[Value]) -> Result<String, StateError> {
            self.log.replace(id, messages).await
        }
    }

    #[tokio::test]
    async fn a_cached_log_is_read_once_and_never_served_stale() {
        let db = argent_planes::embedded::EmbeddedDb::open(None).unwrap();
        let log = Arc::new(Counting {
            log: EmbeddedTranscripts::on(&db),
            reads: AtomicUsize::new(0),
        });
        let cache = TranscriptCache::new(log.clone());
        let reads = || log.reads.load(Ordering::Relaxed);
        log.append("s", &json!({"n": 0})).await.unwrap();

        let first = cache.append_and_read("s", &json!({"n": 1})).await.unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(reads(), 1, "not cached yet: read");
        cache.append("s", &json!({"n": 2})).await.unwrap();
        let third = cache.append_and_read("s", &json!({"n": 3})).await.unwrap();
        assert_eq!(third.len(), 4);
        assert_eq!(reads(), 1, "cached: no read");

        // Written by someone else: the next append notices and reads the log again.
        log.append("s", &json!({"other": true})).await.unwrap();
        let after = cache.append_and_read("s", &json!({"n": 4})).await.unwrap();
        assert_eq!(reads(), 2);
        assert_eq!(
            after.as_slice(),
            log.read("s").await.unwrap().as_slice(),
            "exactly what the store holds"
        );
        assert_eq!(after.len(), 6);

        // A new session's log is known to be empty; a log too large is not kept.
        cache.know_empty("new");
        assert_eq!(
            cache
                .append_and_read("new", &json!({"n": 1}))
                .await
                .unwrap()
                .len(),
            1
        );
        let big = json!({"text": "x".repeat(MAX_ENTRY_BYTES)});
        let before = reads();
        cache.append_and_read("big", &big).await.unwrap();
        cache
            .append_and_read("big", &json!({"n": 2}))
            .await
            .unwrap();
        assert_eq!(reads(), before + 2, "too large to keep: read each time");
        assert!(cache.bytes() < MAX_ENTRY_BYTES);
    }
}
