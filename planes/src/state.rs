//! The state plane: buckets of keys with revisions, optimistic updates and watches.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// A stored value and its revision (monotonic per bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Bytes,
    pub revision: u64,
}

/// One change seen by a watcher: `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error("key already exists")]
    Exists,
    #[error("key was changed by someone else (wrong revision)")]
    WrongRevision,
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store failed: {0}")]
    Failed(String),
    /// A value the store cannot hold: the caller's to shrink (never worth a retry).
    #[error("{size} bytes is over the limit of {limit} bytes for one stored value")]
    TooLarge { size: usize, limit: usize },
}

/// Watcher channel capacity. A watch that cannot keep up ends; the watcher watches again
/// and starts from a fresh snapshot.
pub const WATCH_CAPACITY: usize = 1024;

/// Per-bucket key-value state. Keys use `[A-Za-z0-9_=./-]`.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StateError>;
    /// Writes unconditionally; returns the new revision.
    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError>;
    /// Writes only if the key does not exist ([`StateError::Exists`] otherwise).
    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError>;
    /// Creates a key again over its delete at `deleted_at` (a revision a watch reported):
    /// written only if nothing changed the key since ([`StateError::WrongRevision`]
    /// otherwise; then use [`StateStore::create`]). On JetStream one round trip, where
    /// `create` over a deleted key takes three.
    async fn recreate(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        deleted_at: u64,
    ) -> Result<u64, StateError> {
        let _ = deleted_at;
        self.create(bucket, key, value).await
    }
    /// Writes only if the key is still at `revision` ([`StateError::WrongRevision`]).
    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StateError>;
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StateError>;
    /// Deletes `key` only if its current revision is `revision` (else `WrongRevision`).
    async fn delete_if(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StateError>;
    /// Keys starting with `prefix`, sorted.
    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StateError>;
    /// The current value of every key (as puts), then every later change. The channel
    /// closes when the watch broke or fell behind: watch again for a fresh snapshot.
    async fn watch(&self, bucket: &str) -> Result<mpsc::Receiver<Change>, StateError>;
    /// Changes of revisions above `after` in revision order, then every later change, for
    /// a watcher that resumes where it stopped (the knowledge index). JetStream replays the
    /// bucket's log from there, deletes included. The embedded store keeps no log of
    /// deletes: it replays the current value of every key written after `after`, so a
    /// resuming watcher that must see deletes writes tombstones instead. The channel closes
    /// like [`StateStore::watch`]'s.
    async fn watch_after(
        &self,
        bucket: &str,
        after: u64,
    ) -> Result<mpsc::Receiver<Change>, StateError>;
    /// The revision of the bucket's latest change, deletes included (0: never written). A
    /// watcher that has applied this revision has seen every write acknowledged before.
    async fn last_revision(&self, bucket: &str) -> Result<u64, StateError>;
    /// False while the backing service is unreachable.
    fn is_healthy(&self) -> bool;
}

/// How often a read-modify-write is tried while others keep writing the same key.
const MODIFY_ATTEMPTS: usize = 16;

/// Read-modify-write of one JSON record under its revision, retried when someone else wrote
/// in between. `change` gets the current record (`None` when absent) and returns the record
/// to write with a result, `Ok(None)` to write nothing, or an error that stops it. A missing
/// record is written with `create`, so two writers never both create it.
pub async fn modify_json<T, R, E>(
    store: &dyn StateStore,
    bucket: &str,
    key: &str,
    mut change: impl FnMut(Option<T>) -> Result<Option<(T, R)>, E>,
) -> Result<Option<R>, E>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    E: From<StateError>,
{
    for _ in 0..MODIFY_ATTEMPTS {
        let current = store.get(bucket, key).await?;
        let revision = current.as_ref().map(|e| e.revision);
        let record = current
            .map(|e| serde_json::from_slice::<T>(&e.value))
            .transpose()
            .map_err(|err| StateError::Failed(format!("{bucket}/{key} is unreadable: {err}")))?;
        let Some((next, out)) = change(record)? else {
            return Ok(None);
        };
        let bytes = Bytes::from(serde_json::to_vec(&next).expect("records serialize"));
        let written = match revision {
            Some(revision) => store.update(bucket, key, bytes, revision).await,
            None => store.create(bucket, key, bytes).await,
        };
        match written {
            Ok(_) => return Ok(Some(out)),
            Err(StateError::WrongRevision | StateError::Exists) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(StateError::Unavailable(format!("{bucket}/{key} is changing too fast; retry")).into())
}

/// Every record under `prefix` that parses as `T`, with its key, in key order. Unreadable
/// records are skipped (and logged), so one bad record does not hide the others.
pub async fn list_json<T: serde::de::DeserializeOwned>(
    store: &dyn StateStore,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, T)>, StateError> {
    let mut out = Vec::new();
    for key in store.keys(bucket, prefix).await? {
        let Some(entry) = store.get(bucket, &key).await? else {
            continue;
        };
        match serde_json::from_slice::<T>(&entry.value) {
            Ok(record) => out.push((key, record)),
            Err(err) => tracing::warn!(%bucket, %key, %err, "unreadable record skipped"),
        }
    }
    Ok(out)
}

/// Checks a key against the characters JetStream KV accepts, so both stores agree.
pub fn validate_key(key: &str) -> Result<(), StateError> {
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_jetstream_rules() {
        assert!(validate_key("main.AGENTS.md").is_ok());
        assert!(validate_key("gw-1.abc").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a b").is_err());
        assert!(validate_key("a..b").is_err());
        assert!(validate_key(".a").is_err());
    }
}
