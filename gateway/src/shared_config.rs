//! The cluster-shared configuration as this gateway sees it, and where `config.*` reads and
//! writes it.
//!
//! In the one-process default the config file is the source: its content (minus the
//! gateway's own secrets) is published into the state plane so the embedded node-agent
//! reads the same document. In cluster mode the raw text in the state plane
//! (`argent_config/argent.json`) is the source, and a watch keeps this gateway's copy
//! current; writes are compare-and-set on the key's revision, so concurrent writers through
//! different gateways cannot both win.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::Value;

use argent_planes::state::{StateError, StateStore};
use argent_proto::config::SharedConfig;
use argent_proto::subjects::{BUCKET_CONFIG, CONFIG_KEY};

use crate::config::{ConfigFile, Loaded, Mode};

pub struct SharedConfigView {
    mode: Mode,
    state: Arc<dyn StateStore>,
    /// The config file (one-process default: the document's source).
    file: Arc<ConfigFile>,
    /// Parsed and validated once per change of the document.
    current: Arc<RwLock<Arc<SharedConfig>>>,
    /// Generation of the config file last published (one-process default).
    published: AtomicU64,
    /// Serializes read-check-write of the config file (one-process default; in a cluster
    /// the state plane's revision check does this across gateways).
    file_writes: tokio::sync::Mutex<()>,
}

/// The stored config document as `config.*` sees it.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it lives: the file path, or `nats://argent_config/argent.json`.
    pub path: String,
    /// The raw text; `None` when no config exists yet.
    pub raw: Option<String>,
    /// State-plane revision the text was read at (cluster mode).
    revision: Option<u64>,
}

impl Document {
    /// `hash` of §5.3: SHA-256 of the raw text (of `""` when missing).
    pub fn hash(&self) -> String {
        argent_proto::config::hash(self.raw.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else wrote since `base` was read.
    #[error("config changed since last load; re-run config.get and retry")]
    Changed,
    #[error("cannot write the config: {0}")]
    Failed(String),
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
    pub fn new(mode: Mode, state: Arc<dyn StateStore>, file: Arc<ConfigFile>) -> Self {
        let current = Arc::new(RwLock::new(Arc::new(SharedConfig::default())));
        if let Mode::Cluster { .. } = mode {
            let (current, state) = (current.clone(), state.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(mut changes) = state.watch(BUCKET_CONFIG).await {
                        while let Some(change) = changes.recv().await {
                            if change.key != CONFIG_KEY {
                                continue;
                            }
                            let value = change
                                .value
                                .as_deref()
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|raw| argent_proto::config::parse(raw).ok())
                                .unwrap_or_else(|| Value::Object(Default::default()));
                            *current.write() = Arc::new(SharedConfig::from_document(value));
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            });
        }
        SharedConfigView {
            mode,
            state,
            file,
            current,
            published: AtomicU64::new(0),
            file_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the stored document (the file, or the state-plane key in a cluster).
    pub async fn read(&self) -> Result<Document, WriteError> {
        match self.mode {
            Mode::Local => {
                let path = self.file.path();
                let raw = match tokio::fs::read_to_string(path).await {
                    Ok(raw) => Some(raw),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(WriteError::Failed(format!("{}: {e}", path.display()))),
                };
                Ok(Document {
                    path: path.display().to_string(),
                    raw,
                    revision: None,
                })
            }
            Mode::Cluster { .. } => {
                let entry = self
                    .state
                    .get(BUCKET_CONFIG, CONFIG_KEY)
                    .await
                    .map_err(|e| WriteError::Failed(e.to_string()))?;
                Ok(Document {
                    path: format!("nats://{BUCKET_CONFIG}/{CONFIG_KEY}"),
                    raw: entry
                        .as_ref()
                        .map(|e| String::from_utf8_lossy(&e.value).into_owned()),
                    revision: entry.map(|e| e.revision),
                })
            }
        }
    }

    /// Replaces the document read as `base` by `raw`, unless it changed since; every
    /// gateway and node-agent picks the new one up through its watch.
    pub async fn write(&self, base: &Document, raw: String) -> Result<(), WriteError> {
        match self.mode {
            Mode::Local => {
                let _one_writer = self.file_writes.lock().await;
                if self.read().await?.raw != base.raw {
                    return Err(WriteError::Changed);
                }
                crate::config::write_private(self.file.path(), &raw)
                    .map_err(|e| WriteError::Failed(e.to_string()))?;
                let loaded = self
                    .file
                    .load_shared()
                    .map_err(|e| WriteError::Failed(e.to_string()))?;
                self.publish_local(&loaded).await;
                Ok(())
            }
            Mode::Cluster { .. } => {
                let bytes = Bytes::from(raw);
                let written = match base.revision {
                    Some(revision) => {
                        self.state
                            .update(BUCKET_CONFIG, CONFIG_KEY, bytes, revision)
                            .await
                    }
                    None => self.state.create(BUCKET_CONFIG, CONFIG_KEY, bytes).await,
                };
                match written {
                    Ok(_) => Ok(()),
                    Err(StateError::WrongRevision | StateError::Exists) => Err(WriteError::Changed),
                    Err(e) => Err(WriteError::Failed(e.to_string())),
                }
            }
        }
    }

    /// Cluster mode, first start: stores the seed document unless one exists (a `create`,
    /// so gateways starting together agree on one).
    pub async fn seed(state: &dyn StateStore, raw: &str) -> Result<bool, String> {
        argent_proto::config::parse(raw)
            .map_err(|e| format!("the seed config is not valid JSON5: {e}"))?;
        match state
            .create(BUCKET_CONFIG, CONFIG_KEY, Bytes::from(raw.to_string()))
            .await
        {
            Ok(_) => Ok(true),
            Err(StateError::Exists) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The config as last seen.
    pub fn get(&self) -> Arc<SharedConfig> {
        self.current.read().clone()
    }

    /// One-process default: adopt the file's content and publish it when it changed.
    pub async fn publish_local(&self, file: &Loaded) {
        // Generation 0 is the empty stand-in for an unreadable file: never published.
        if file.generation == 0 || self.published.load(Ordering::Relaxed) == file.generation {
            return;
        }
        let shared = without_secrets(&file.document);
        if self.get().document() == &shared {
            return;
        }
        *self.current.write() = Arc::new(SharedConfig::from_document(shared.clone()));
        let bytes = Bytes::from(serde_json::to_vec(&shared).expect("JSON values serialize"));
        match self.state.put(BUCKET_CONFIG, CONFIG_KEY, bytes).await {
            // Remembered only once published, so a failed put is retried next time.
            Ok(_) => self.published.store(file.generation, Ordering::Relaxed),
            Err(err) => tracing::warn!(%err, "could not publish the shared config"),
        }
    }
}
