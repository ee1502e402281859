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
}

/// A superseded blob of a key is deleted once it is this old: no write takes longer between
/// storing its blob and referencing it, and no reader takes longer between reading a
/// reference and its blob (a reader whose blob is gone reads the key again).
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

    /// After a write of `blob` (if any): on success the key's older blobs go (in the
    /// background); on a refusal the new blob does. After any other failure the write may
    /// have landed (its answer lost on the way), so the blob stays: the key's next large
    /// write sweeps it if nothing references it.
    fn settle<T>(
        &self,
        bucket: &str,
        key: &str,
        blob: Option<String>,
        result: &Result<T, StateError>,
    ) {
        let Some(name) = blob else { return };
        let refused = matches!(result, Err(StateError::WrongRevision | StateError::Exists));
        if result.is_err() && !refused {
            return;
        }
        let blobs = self.blobs.clone();
        let prefix = blob_prefix(bucket, key);
        tokio::spawn(async move {
            if refused {
                if let Err(err) = blobs.delete(&name).await {
                    tracing::debug!(%err, "blob of a refused write not deleted");
                }
            } else {
                blobs
                    .sweep(&format!("{prefix}/"), &name, SUPERSEDED_AFTER)
                    .await;
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

/// Runs one NATS operation with the fail-fast timeout, mapping its error to text.
async fn timed<T, E: std::fmt::Display>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
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
        for _ in 0..READ_ATTEMPTS {
            let entry = timed(store.entry(key)).await?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Ok(None);
            };
            if let Some(value) = self.resolve(entry.value).await? {
                return Ok(Some(Entry {
                    value,
                    revision: entry.revision,
                }));
            }
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
        self.settle(bucket, key, blob, &result);
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
            Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
            Err(_) => Err(StateError::Unavailable(
                "NATS did not answer in time".into(),
            )),
        };
        self.settle(bucket, key, blob, &result);
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
                Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
                Err(_) => Err(StateError::Unavailable(
                    "NATS did not answer in time".into(),
                )),
            };
        self.settle(bucket, key, blob, &result);
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
            Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
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
        let mut watch = timed(store.watch_with_history(">")).await?;
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
                                    Err(err) => {
                                        tracing::warn!(%bucket, key = %entry.key, %err, "large value not read for a watch");
                                        continue;
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
        Ok(rx)
    }

    fn is_healthy(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Where a key's blobs are named: one prefix per key, for [`Blobs::sweep`].
fn blob_prefix(bucket: &str, key: &str) -> String {
    format!("kv/{bucket}/{key}")
}
