//! The cluster-shared configuration document (`argent.json`, kept in the state plane under
//! `argent_config/argent.json`) as this node-agent reads it: one [`SharedConfig`] snapshot
//! per stored revision. Every read asks the state plane for the current revision (so a
//! method sees a `config.set` that completed before it was called, on any gateway), but the
//! document is parsed and validated only when that revision changed.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use argent_planes::state::{StateError, StateStore};
use argent_proto::config::SharedConfig;
use argent_proto::subjects::{BUCKET_CONFIG, CONFIG_KEY};

pub struct ConfigSource {
    state: Arc<dyn StateStore>,
    /// The last snapshot and the revision it was parsed from (0: no document stored).
    cache: Mutex<(u64, Arc<SharedConfig>)>,
}

impl ConfigSource {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        ConfigSource {
            state,
            cache: Mutex::new((0, Arc::new(SharedConfig::default()))),
        }
    }

    /// The current snapshot; `{}` when no config was published yet.
    pub async fn current(&self) -> Result<Arc<SharedConfig>, StateError> {
        let entry = self.state.get(BUCKET_CONFIG, CONFIG_KEY).await?;
        let revision = entry.as_ref().map_or(0, |e| e.revision);
        {
            let cache = self.cache.lock();
            if cache.0 == revision {
                return Ok(cache.1.clone());
            }
        }
        let snapshot = Arc::new(match entry {
            Some(entry) => SharedConfig::from_document(parse(&entry.value)?),
            None => SharedConfig::default(),
        });
        if !snapshot.problems().is_empty() {
            tracing::warn!(revision, problems = ?snapshot.problems(), "the shared config does not validate; its settings read as defaults");
        }
        let mut cache = self.cache.lock();
        // Two callers may parse at once; the newer revision stays.
        if revision >= cache.0 {
            *cache = (revision, snapshot.clone());
        }
        Ok(snapshot)
    }
}

fn parse(raw: &[u8]) -> Result<Value, StateError> {
    let raw = std::str::from_utf8(raw)
        .map_err(|e| StateError::Failed(format!("shared config is not UTF-8: {e}")))?;
    argent_proto::config::parse(raw)
        .map_err(|e| StateError::Failed(format!("shared config is not valid JSON5: {e}")))
}
