//! The cluster-shared configuration as this gateway sees it.
//!
//! In the one-process default the config file is the source: its content (minus the
//! gateway's own secrets) is published into the state plane so the embedded node-agent
//! reads the same document. In cluster mode the document in the state plane is the source,
//! and a watch keeps this gateway's copy current.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::Value;

use argent_planes::state::StateStore;
use argent_proto::subjects::{BUCKET_CONFIG, CONFIG_KEY};

use crate::config::Loaded;
use crate::context::Mode;

pub struct SharedConfigView {
    current: Arc<RwLock<Arc<Value>>>,
    /// Generation of the config file last published (one-process default).
    published: AtomicU64,
}

/// The config without what only the gateway may read.
pub fn without_secrets(config: &Value) -> Value {
    let mut shared = config.clone();
    if let Some(gateway) = shared.get_mut("gateway").and_then(Value::as_object_mut) {
        gateway.remove("auth");
        gateway.remove("token");
    }
    shared
}

impl SharedConfigView {
    pub fn new(mode: Mode, state: Arc<dyn StateStore>) -> Self {
        let current = Arc::new(RwLock::new(Arc::new(Value::Object(Default::default()))));
        if let Mode::Cluster { .. } = mode {
            let current = current.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut changes) = state.watch(BUCKET_CONFIG).await {
                        while let Some(change) = changes.recv().await {
                            if change.key != CONFIG_KEY {
                                continue;
                            }
                            let value = change
                                .value
                                .and_then(|v| serde_json::from_slice(&v).ok())
                                .unwrap_or_else(|| Value::Object(Default::default()));
                            *current.write() = Arc::new(value);
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            });
        }
        SharedConfigView {
            current,
            published: AtomicU64::new(0),
        }
    }

    /// The document as last seen.
    pub fn get(&self) -> Arc<Value> {
        self.current.read().clone()
    }

    /// One-process default: adopt the file's content and publish it when it changed.
    pub async fn publish_local(&self, state: &dyn StateStore, file: &Loaded) {
        // Generation 0 is the empty stand-in for an unreadable file: never published.
        if file.generation == 0 || self.published.load(Ordering::Relaxed) == file.generation {
            return;
        }
        let shared = without_secrets(&file.document);
        if *self.get() == shared {
            return;
        }
        *self.current.write() = Arc::new(shared.clone());
        let bytes = Bytes::from(serde_json::to_vec(&shared).expect("JSON values serialize"));
        match state.put(BUCKET_CONFIG, CONFIG_KEY, bytes).await {
            // Remembered only once published, so a failed put is retried next time.
            Ok(_) => self.published.store(file.generation, Ordering::Relaxed),
            Err(err) => tracing::warn!(%err, "could not publish the shared config"),
        }
    }
}
