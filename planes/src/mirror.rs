//! A bucket kept in memory, equal to the state plane's through a watch: for services that
//! look at every record of a bucket many times a second (the scheduler's due records, the
//! channels' inboxes) without asking the store each time. It lags the store by a watch
//! delivery, so a decision taken on it is confirmed by a compare-and-set on the record.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::state::StateStore;

pub struct BucketMirror {
    records: RwLock<BTreeMap<String, Value>>,
    changed: tokio::sync::Notify,
}

impl BucketMirror {
    /// Starts following `bucket`; the follower ends once the mirror is dropped.
    pub fn start(state: Arc<dyn StateStore>, bucket: &'static str) -> Arc<Self> {
        let mirror = Arc::new(BucketMirror {
            records: RwLock::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
        });
        tokio::spawn(follow(Arc::downgrade(&mirror), state, bucket));
        mirror
    }

    /// Records under `prefix` that parse as `T`, by key.
    pub fn records<T: DeserializeOwned>(&self, prefix: &str) -> Vec<(String, T)> {
        self.records
            .read()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| Some((k.clone(), T::deserialize(v).ok()?)))
            .collect()
    }

    /// Resolves at the next change the mirror applies (a waiter that starts waiting after
    /// a change sees the one after it: look at the records again on a timer too).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn record<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.records
            .read()
            .get(key)
            .and_then(|v| T::deserialize(v).ok())
    }
}

async fn follow(mirror: Weak<BucketMirror>, state: Arc<dyn StateStore>, bucket: &'static str) {
    loop {
        if mirror.strong_count() == 0 {
            return;
        }
        match state.watch(bucket).await {
            Ok(mut changes) => {
                // A fresh watch replays every record: start from an empty view.
                if let Some(m) = mirror.upgrade() {
                    m.records.write().clear();
                }
                while let Some(change) = changes.recv().await {
                    let Some(m) = mirror.upgrade() else { return };
                    {
                        let mut records = m.records.write();
                        match change.value.and_then(|v| serde_json::from_slice(&v).ok()) {
                            Some(value) => records.insert(change.key, value),
                            None => records.remove(&change.key),
                        };
                    }
                    m.changed.notify_waiters();
                }
            }
            Err(err) => tracing::debug!(%bucket, %err, "bucket watch failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
