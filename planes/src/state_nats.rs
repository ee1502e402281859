//! The cluster state store: JetStream KV buckets.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::state::{validate_key, Change, Entry, StateError, StateStore, WATCH_CAPACITY};

/// Every operation gives up after this long, so a request never hangs on a lost NATS.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct NatsStore {
    client: async_nats::Client,
    js: jetstream::Context,
    stores: Mutex<HashMap<String, kv::Store>>,
}

/// Room left in a NATS message for the subject, headers and JSON envelope around a value.
const HEADROOM: usize = 4 * 1024;

/// The largest value one NATS message carries with room to spare: the connected server's
/// `max_payload` less [`HEADROOM`].
pub fn value_limit(client: &async_nats::Client) -> usize {
    client.server_info().max_payload.saturating_sub(HEADROOM)
}

/// `Err(TooLarge)` for a value over [`value_limit`], before anything is sent.
pub fn check_size(client: &async_nats::Client, size: usize) -> Result<(), StateError> {
    let limit = value_limit(client);
    if limit > 0 && size > limit {
        return Err(StateError::TooLarge { size, limit });
    }
    Ok(())
}

impl NatsStore {
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        NatsStore {
            client,
            js,
            stores: Mutex::new(HashMap::new()),
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
        let entry = timed(store.entry(key)).await?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => Some(Entry {
                value: e.value,
                revision: e.revision,
            }),
            _ => None,
        }))
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        check_size(&self.client, value.len())?;
        let store = self.store(bucket).await?;
        timed(store.put(key, value)).await
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        check_size(&self.client, value.len())?;
        let store = self.store(bucket).await?;
        match tokio::time::timeout(OP_TIMEOUT, store.create(key, value)).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(err)) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(StateError::Exists)
            }
            Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
            Err(_) => Err(StateError::Unavailable(
                "NATS did not answer in time".into(),
            )),
        }
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
        check_size(&self.client, value.len())?;
        let store = self.store(bucket).await?;
        match tokio::time::timeout(OP_TIMEOUT, store.update(key, value, revision)).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(err)) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(StateError::WrongRevision)
            }
            Ok(Err(err)) => Err(StateError::Failed(err.to_string())),
            Err(_) => Err(StateError::Unavailable(
                "NATS did not answer in time".into(),
            )),
        }
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
        tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                let change = match item {
                    Ok(entry) => Change {
                        value: match entry.operation {
                            Operation::Put => Some(entry.value),
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
