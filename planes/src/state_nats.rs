//! The cluster state store: JetStream KV buckets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::blobs::{self, Blobs};
use crate::state::{validate_key, Change, Entry, StateError, StateStore, WATCH_CAPACITY};

/// Every operation gives up after this long, so a request never hangs on a lost NATS.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct NatsStore {
    client: async_nats::Client,
    js: jetstream::Context,
    stores: Mutex<HashMap<String, kv::Store>>,
    /// Values over one NATS message, referenced from the key (`crate::blobs`).
    blobs: Arc<Blobs>,
    /// Keys (their blob prefixes) with a sweep of superseded blobs scheduled, and the time
    /// of the latest large write it must cover: one sleeping task per key, however many
    /// writes.
    sweeps: Arc<Mutex<HashMap<String, u64>>>,
}

/// The blobs a large write superseded are deleted this long after it: no reader takes
/// longer between reading a reference and its blob (reads time out sooner), and no write
/// takes longer between storing its blob and referencing it.
const SUPERSEDED_AFTER: Duration = Duration::from_secs(60);
/// Reads of a key whose blob was replaced meanwhile, before giving up.
const READ_ATTEMPTS: usize = 3;

impl NatsStore {
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        NatsStore {
            blobs: Arc::new(Blobs::new(client.clone(), blobs::BLOBS)),
            client,
            js,
            stores: Mutex::new(HashMap::new()),
            sweeps: Arc::default(),
        }
    }

    /// What goes into the key for `value`: the value itself, or — over one NATS message —
    /// a reference to a new blob holding it (and the blob's name).
    async fn stored_form(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
    ) -> Result<(Bytes, Option<String>), StateError> {
        if !blobs::needs_blob(&self.client, &value) {
            return Ok((value, None));
        }
        blobs::check_size(value.len())?;
        let name = blobs::unique_name(&blob_prefix(bucket, key));
        self.blobs.put(&name, &value).await?;
        Ok((blobs::reference(&name), Some(name)))
    }

    /// After a write of `blob` (if any). On success, the blobs it superseded are swept
    /// later. On a refusal the new blob goes — unless the key references it after all (a
    /// `create` whose first attempt landed with its answer lost reads as `Exists` over its
    /// own value). After any other failure the write may have landed, so the blob stays for
    /// the key's next sweep.
    fn settle<T>(
        &self,
        store: &kv::Store,
        bucket: &str,
        key: &str,
        blob: Option<String>,
        result: &Result<T, StateError>,
    ) {
        let Some(name) = blob else { return };
        match result {
            Ok(_) => self.schedule_sweep(store, bucket, key),
            Err(StateError::WrongRevision | StateError::Exists) => {
                let (store, blobs, key) = (store.clone(), self.blobs.clone(), key.to_string());
                tokio::spawn(async move {
                    if let Ok(current) = current_reference(&store, &key).await {
                        if current.as_deref() != Some(name.as_str()) {
                            if let Err(err) = blobs.delete(&name).await {
                                tracing::debug!(%err, "blob of a refused write not deleted");
                            }
                        }
                    }
                });
            }
            Err(_) => {}
        }
    }

    /// Deletes, [`SUPERSEDED_AFTER`] after the key's latest large write, its blobs named
    /// before that write that it no longer references.
    fn schedule_sweep(&self, store: &kv::Store, bucket: &str, key: &str) {
        let prefix = format!("{}/", blob_prefix(bucket, key));
        let written_at = argent_proto::now_ms();
        if let Some(latest) = self.sweeps.lock().get_mut(&prefix) {
            *latest = written_at;
            return;
        }
        self.sweeps.lock().insert(prefix.clone(), written_at);
        let (store, blobs, sweeps, key) = (
            store.clone(),
            self.blobs.clone(),
            self.sweeps.clone(),
            key.to_string(),
        );
        tokio::spawn(async move {
            let mut covered = written_at;
            loop {
                let due = covered + SUPERSEDED_AFTER.as_millis() as u64;
                let wait = due.saturating_sub(argent_proto::now_ms());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                // What the key references now stays, whoever wrote it.
                let Ok(current) = current_reference(&store, &key).await else {
                    sweeps.lock().remove(&prefix);
                    return;
                };
                blobs.sweep(&prefix, current.as_deref(), covered).await;
                let later = {
                    let mut sweeps = sweeps.lock();
                    match sweeps.get(&prefix).copied() {
                        Some(latest) if latest > covered => Some(latest),
                        _ => {
                            sweeps.remove(&prefix);
                            None
                        }
                    }
                };
                match later {
                    Some(latest) => covered = latest,
                    None => return,
                }
            }
        });
    }

    /// The value a stored one stands for: itself, or the blob it references (`None`: the
    /// blob is gone — the key was written again meanwhile).
    async fn resolve(&self, stored: Bytes) -> Result<Option<Bytes>, StateError> {
        match blobs::referenced(&stored) {
            Some(name) => self.blobs.get(name).await,
            None => Ok(Some(stored)),
        }
    }

    fn check_connected(&self) -> Result<(), StateError> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(StateError::Unavailable("NATS is not connected".into()))
        }
    }

    async fn store(&self, bucket: &str) -> Result<kv::Store, StateError> {
        self.check_connected()?;
        if let Some(store) = self.stores.lock().get(bucket) {
            return Ok(store.clone());
        }
        let store = timed(self.js.get_key_value(bucket)).await?;
        self.stores.lock().insert(bucket.to_string(), store.clone());
        Ok(store)
    }
}

/// A NATS operation's own error as a state error. Its request timing out, or JetStream
/// having no responders yet (a server just restarted, a leader being elected), is an outage
/// that passes — `Unavailable`, which clients may retry; anything else is `Failed`. The NATS
/// client reports these only as text.
fn failure(err: &dyn std::fmt::Display) -> StateError {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    if [
        "timed out",
        "timeout",
        "no responders",
        "not connected",
        "disconnected",
    ]
    .iter()
    .any(|transient| lower.contains(transient))
    {
        StateError::Unavailable(text)
    } else {
        StateError::Failed(text)
    }
}

/// Runs one NATS operation with the fail-fast timeout, mapping its error to text.
async fn timed<T, E: std::fmt::Display>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(failure(&err)),
        Err(_) => Err(StateError::Unavailable(
            "NATS did not answer in time".into(),
        )),
    }
}

#[async_trait]
impl StateStore for NatsStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        let mut missing_at = None;
        for _ in 0..READ_ATTEMPTS {
            let entry = timed(store.entry(key)).await?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Ok(None);
            };
            let revision = entry.revision;
            if let Some(value) = self.resolve(entry.value).await? {
                return Ok(Some(Entry { value, revision }));
            }
            // Gone twice at the same revision: not a race with a newer write.
            if missing_at == Some(revision) {
                tracing::error!(%bucket, %key, revision, "stored value refers to a missing blob");
                return Err(StateError::Failed(format!(
                    "{key} (revision {revision}) refers to a large value that is missing"
                )));
            }
            missing_at = Some(revision);
        }
        Err(StateError::Unavailable(format!(
            "{key} keeps changing while its large value is read; retry"
        )))
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        let (value, blob) = self.stored_form(bucket, key, value).await?;
        let result = timed(store.put(key, value)).await;
        self.settle(&store, bucket, key, blob, &result);
        result
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        let (value, blob) = self.stored_form(bucket, key, value).await?;
        let result = match tokio::time::timeout(OP_TIMEOUT, store.create(key, value)).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(err)) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(StateError::Exists)
            }
            Ok(Err(err)) => Err(failure(&err)),
            Err(_) => Err(StateError::Unavailable(
                "NATS did not answer in time".into(),
            )),
        };
        self.settle(&store, bucket, key, blob, &result);
        result
    }

    async fn recreate(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        deleted_at: u64,
    ) -> Result<u64, StateError> {
        // The delete is the key's last message at `deleted_at`: an update expecting that
        // revision succeeds only while it still is.
        self.update(bucket, key, value, deleted_at).await
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        let (value, blob) = self.stored_form(bucket, key, value).await?;
        let result =
            match tokio::time::timeout(OP_TIMEOUT, store.update(key, value, revision)).await {
                Ok(Ok(rev)) => Ok(rev),
                Ok(Err(err)) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Err(StateError::WrongRevision)
                }
                Ok(Err(err)) => Err(failure(&err)),
                Err(_) => Err(StateError::Unavailable(
                    "NATS did not answer in time".into(),
                )),
            };
        self.settle(&store, bucket, key, blob, &result);
        result
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        timed(store.delete(key)).await
    }

    async fn delete_if(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StateError> {
        validate_key(key)?;
        let store = self.store(bucket).await?;
        match tokio::time::timeout(
            OP_TIMEOUT,
            store.delete_expect_revision(key, Some(revision)),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            // JetStream refuses the expected-sequence header with "wrong last sequence".
            Ok(Err(err)) if err.to_string().contains("wrong last sequence") => {
                Err(StateError::WrongRevision)
            }
            Ok(Err(err)) => Err(failure(&err)),
            Err(_) => Err(StateError::Unavailable(
                "NATS did not answer in time".into(),
            )),
        }
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        let store = self.store(bucket).await?;
        let collect = async {
            let mut keys = store.keys().await?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key?;
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
            Ok::<_, async_nats::Error>(out)
        };
        let mut keys = timed(collect).await?;
        keys.sort();
        Ok(keys)
    }

    async fn watch(&self, bucket: &str) -> Result<mpsc::Receiver<Change>, StateError> {
        let store = self.store(bucket).await?;
        let watch = timed(store.watch_with_history(">")).await?;
        Ok(self.forward(bucket, watch))
    }

    async fn watch_after(
        &self,
        bucket: &str,
        after: u64,
    ) -> Result<mpsc::Receiver<Change>, StateError> {
        let store = self.store(bucket).await?;
        // The log from the next revision on: each change in order, deletes included (their
        // markers stay in the bucket's stream).
        let watch = timed(store.watch_all_from_revision(after + 1)).await?;
        Ok(self.forward(bucket, watch))
    }

    async fn last_revision(&self, bucket: &str) -> Result<u64, StateError> {
        self.check_connected()?;
        // Asked of the server each time (`kv::Store::status` answers from a cache taken
        // when the bucket was opened).
        let stream = timed(self.js.get_stream(format!("KV_{bucket}"))).await?;
        Ok(stream.cached_info().state.last_sequence)
    }

    fn is_healthy(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl NatsStore {
    /// Hands a KV watch's entries to a watcher as [`Change`]s, large values read from
    /// their blobs.
    fn forward(&self, bucket: &str, mut watch: kv::Watch) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let bucket = bucket.to_string();
        let blobs = self.blobs.clone();
        tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                let change = match item {
                    Ok(entry) => Change {
                        value: match entry.operation {
                            Operation::Put => match blobs::referenced(&entry.value) {
                                None => Some(entry.value),
                                // A large value, read here so watchers see values only. Gone
                                // already: the key changed again, and that change follows.
                                Some(name) => match blobs.get(name).await {
                                    Ok(Some(value)) => Some(value),
                                    Ok(None) => continue,
                                    // Ended rather than skipped: the watcher watches again
                                    // from a fresh snapshot (as after falling behind).
                                    Err(err) => {
                                        tracing::warn!(%bucket, key = %entry.key, %err, "large value not read; the watch ends");
                                        return;
                                    }
                                },
                            },
                            Operation::Delete | Operation::Purge => None,
                        },
                        key: entry.key,
                        revision: entry.revision,
                    },
                    Err(err) => {
                        tracing::warn!(%bucket, %err, "bucket watch error");
                        continue;
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
            tracing::warn!(%bucket, "bucket watch ended");
        });
        rx
    }
}

/// Where a key's blobs are named: one prefix per key, for [`Blobs::sweep`]. Keys may hold
/// `/`; escaped (`%` is not allowed in keys), so no key's prefix is another key's.
fn blob_prefix(bucket: &str, key: &str) -> String {
    format!("kv/{bucket}/{}", key.replace('/', "%2F"))
}

/// The blob the key references now (`None`: a plain value, or no value).
async fn current_reference(store: &kv::Store, key: &str) -> Result<Option<String>, StateError> {
    let entry = timed(store.entry(key)).await?;
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .and_then(|e| blobs::referenced(&e.value).map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_outages_are_retryable_and_the_rest_is_not() {
        // Seen in the chaos test while a gateway restarted: "timed out" came back as a
        // permanent failure, which clients do not retry.
        for transient in ["timed out", "request timeout", "no responders"] {
            assert!(
                matches!(failure(&transient), StateError::Unavailable(_)),
                "{transient}"
            );
        }
        assert!(matches!(
            failure(&"stream not found"),
            StateError::Failed(_)
        ));
    }
}
