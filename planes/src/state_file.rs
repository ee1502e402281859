//! The embedded state store: in memory, with durable buckets persisted as one JSON file per
//! bucket under the state dir (written atomically: temp file, fsync, rename). Each bucket has
//! its own lock, and writes to durable buckets run on the blocking pool, so file I/O never
//! holds up the async workers or another bucket.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::cluster::bucket_spec;
use crate::state::{validate_key, Change, Entry, StateError, StateStore, WATCH_CAPACITY};

#[derive(Default, Serialize, Deserialize)]
struct BucketFile {
    revision: u64,
    entries: BTreeMap<String, StoredValue>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredValue {
    revision: u64,
    value: String,
}

struct Bucket {
    data: BucketFile,
    changes: broadcast::Sender<Change>,
    file: Option<PathBuf>,
}

impl Bucket {
    /// Compare-and-set guard: `key` must be at `revision` (0: absent).
    fn expect_revision(&self, key: &str, revision: u64) -> Result<(), StateError> {
        let current = self.data.entries.get(key).map(|v| v.revision).unwrap_or(0);
        if current == revision {
            Ok(())
        } else {
            Err(StateError::WrongRevision)
        }
    }

    fn load(file: Option<PathBuf>) -> Result<Self, StateError> {
        let data = match &file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| StateError::Failed(format!("read {}: {e}", path.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| StateError::Failed(format!("parse {}: {e}", path.display())))?
            }
            _ => BucketFile::default(),
        };
        let (changes, _) = broadcast::channel(WATCH_CAPACITY);
        Ok(Bucket {
            data,
            changes,
            file,
        })
    }

    fn persist(&self) -> Result<(), StateError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text = serde_json::to_string(&self.data).expect("bucket files serialize");
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| StateError::Failed(format!("write {}: {e}", path.display())))
    }

    /// Applies one change; if it cannot be persisted, it is undone and nobody hears of it.
    fn write(&mut self, key: &str, value: Option<Bytes>) -> Result<u64, StateError> {
        let previous = self.data.entries.get(key).cloned();
        let previous_revision = self.data.revision;
        self.data.revision += 1;
        let revision = self.data.revision;
        match &value {
            Some(v) => {
                let text = std::str::from_utf8(v)
                    .map_err(|_| StateError::Failed("values must be UTF-8".into()))?;
                self.data.entries.insert(
                    key.to_string(),
                    StoredValue {
                        revision,
                        value: text.to_string(),
                    },
                );
            }
            None => {
                self.data.entries.remove(key);
            }
        }
        if let Err(err) = self.persist() {
            self.data.revision = previous_revision;
            match previous {
                Some(v) => self.data.entries.insert(key.to_string(), v),
                None => self.data.entries.remove(key),
            };
            return Err(err);
        }
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(Change {
            key: key.to_string(),
            value,
            revision,
        });
        Ok(revision)
    }
}

type SharedBucket = Arc<Mutex<Bucket>>;

/// In-process state store for the one-process default.
pub struct FileStore {
    dir: Option<PathBuf>,
    buckets: Mutex<HashMap<String, SharedBucket>>,
}

impl FileStore {
    /// Durable buckets are persisted under `<dir>/state/`; `None` keeps everything in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self, StateError> {
        let dir = dir.map(|d| d.join("state"));
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| StateError::Failed(format!("create {}: {e}", dir.display())))?;
        }
        Ok(FileStore {
            dir,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The bucket, loaded from its file on first use.
    fn bucket(&self, bucket: &str) -> Result<SharedBucket, StateError> {
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.get(bucket) {
            return Ok(b.clone());
        }
        let durable = bucket_spec(bucket).is_some_and(|spec| spec.durable);
        let file = match (&self.dir, durable) {
            (Some(dir), true) => Some(dir.join(format!("{bucket}.json"))),
            _ => None,
        };
        let b = Arc::new(Mutex::new(Bucket::load(file)?));
        buckets.insert(bucket.to_string(), b.clone());
        Ok(b)
    }

    /// Reads under the bucket's lock (memory only).
    fn read<T>(&self, bucket: &str, f: impl FnOnce(&Bucket) -> T) -> Result<T, StateError> {
        Ok(f(&self.bucket(bucket)?.lock()))
    }

    /// Changes a bucket: on the blocking pool when it is written to disk.
    async fn mutate<T: Send + 'static>(
        &self,
        bucket: &str,
        f: impl FnOnce(&mut Bucket) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let b = self.bucket(bucket)?;
        if b.lock().file.is_none() {
            return f(&mut b.lock());
        }
        tokio::task::spawn_blocking(move || f(&mut b.lock()))
            .await
            .map_err(|e| StateError::Failed(format!("state write task failed: {e}")))?
    }
}

#[async_trait]
impl StateStore for FileStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StateError> {
        validate_key(key)?;
        self.read(bucket, |b| {
            b.data.entries.get(key).map(|v| Entry {
                value: Bytes::from(v.value.clone()),
                revision: v.revision,
            })
        })
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        let key = key.to_string();
        self.mutate(bucket, move |b| b.write(&key, Some(value)))
            .await
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        validate_key(key)?;
        let key = key.to_string();
        self.mutate(bucket, move |b| {
            if b.data.entries.contains_key(&key) {
                return Err(StateError::Exists);
            }
            b.write(&key, Some(value))
        })
        .await
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StateError> {
        validate_key(key)?;
        let key = key.to_string();
        self.mutate(bucket, move |b| {
            b.expect_revision(&key, revision)?;
            b.write(&key, Some(value))
        })
        .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StateError> {
        validate_key(key)?;
        let key = key.to_string();
        self.mutate(bucket, move |b| {
            if b.data.entries.contains_key(&key) {
                b.write(&key, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_if(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StateError> {
        validate_key(key)?;
        let key = key.to_string();
        self.mutate(bucket, move |b| {
            b.expect_revision(&key, revision)?;
            b.write(&key, None).map(|_| ())
        })
        .await
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        self.read(bucket, |b| {
            b.data
                .entries
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    async fn watch(&self, bucket: &str) -> Result<mpsc::Receiver<Change>, StateError> {
        // Snapshot and subscription under one lock, so no change falls between them.
        let (snapshot, mut changes) = self.read(bucket, |b| {
            let snapshot: Vec<Change> = b
                .data
                .entries
                .iter()
                .map(|(k, v)| Change {
                    key: k.clone(),
                    value: Some(Bytes::from(v.value.clone())),
                    revision: v.revision,
                })
                .collect();
            (snapshot, b.changes.subscribe())
        })?;
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let bucket = bucket.to_string();
        tokio::spawn(async move {
            for change in snapshot {
                if tx.send(change).await.is_err() {
                    return;
                }
            }
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                    // Changes were missed: end this watch; the watcher re-watches and gets
                    // a fresh snapshot.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(%bucket, missed = n, "state watcher lagged; ending the watch");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    fn is_healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argent_proto::subjects::{BUCKET_AGENTS, BUCKET_PRESENCE};

    #[tokio::test]
    async fn revisions_create_update_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(Some(dir.path())).unwrap();
        let r1 = store
            .create(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("a"))
            .await
            .unwrap();
        assert_eq!(
            store
                .create(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("b"))
                .await,
            Err(StateError::Exists)
        );
        assert_eq!(
            store
                .update(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("b"), r1 + 7)
                .await,
            Err(StateError::WrongRevision)
        );
        store
            .update(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("b"), r1)
            .await
            .unwrap();
        store
            .put(BUCKET_PRESENCE, "gw.x", Bytes::from("{}"))
            .await
            .unwrap();
        drop(store);

        let reopened = FileStore::open(Some(dir.path())).unwrap();
        let entry = reopened
            .get(BUCKET_AGENTS, "main.SOUL.md")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.value, Bytes::from("b"));
        assert_eq!(
            reopened.get(BUCKET_PRESENCE, "gw.x").await.unwrap(),
            None,
            "not durable"
        );
    }

    #[tokio::test]
    async fn conditional_delete_and_modify_json() {
        use crate::state::modify_json;
        let store = FileStore::open(None).unwrap();
        let bucket = crate::cluster::BUCKETS[0].name;
        let rev = store
            .put(bucket, "k", Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert_eq!(
            store.delete_if(bucket, "k", rev + 1).await,
            Err(StateError::WrongRevision)
        );
        store.delete_if(bucket, "k", rev).await.unwrap();
        assert!(store.get(bucket, "k").await.unwrap().is_none());
        // Created when missing, changed under its revision, or left alone.
        let add = |n: u64| {
            move |current: Option<u64>| {
                let next = current.unwrap_or(0) + n;
                Ok::<_, StateError>(Some((next, next)))
            }
        };
        assert_eq!(modify_json(&store, bucket, "n", add(2)).await, Ok(Some(2)));
        assert_eq!(modify_json(&store, bucket, "n", add(3)).await, Ok(Some(5)));
        let untouched = modify_json(&store, bucket, "n", |_: Option<u64>| {
            Ok::<Option<(u64, ())>, StateError>(None)
        })
        .await;
        assert_eq!(untouched, Ok(None));
        assert_eq!(
            store.get(bucket, "n").await.unwrap().unwrap().value,
            Bytes::from_static(b"5")
        );
    }

    #[tokio::test]
    async fn a_write_that_cannot_be_persisted_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(Some(dir.path())).unwrap();
        store
            .put(BUCKET_AGENTS, "a", Bytes::from("1"))
            .await
            .unwrap();
        // The temp file cannot be created: a directory has its name.
        std::fs::create_dir(dir.path().join("state").join("argent_agents.json.tmp")).unwrap();
        let mut watch = store.watch(BUCKET_AGENTS).await.unwrap();
        assert_eq!(watch.recv().await.unwrap().value, Some(Bytes::from("1")));
        assert!(store
            .put(BUCKET_AGENTS, "a", Bytes::from("2"))
            .await
            .is_err());
        assert!(store
            .put(BUCKET_AGENTS, "b", Bytes::from("3"))
            .await
            .is_err());
        let a = store.get(BUCKET_AGENTS, "a").await.unwrap().unwrap();
        assert_eq!((a.value, a.revision), (Bytes::from("1"), 1));
        assert_eq!(store.get(BUCKET_AGENTS, "b").await.unwrap(), None);
        assert!(
            watch.try_recv().is_err(),
            "watchers hear nothing of undone writes"
        );
    }

    #[tokio::test]
    async fn watch_sees_snapshot_then_changes() {
        let store = FileStore::open(None).unwrap();
        store
            .put(BUCKET_AGENTS, "a", Bytes::from("1"))
            .await
            .unwrap();
        let mut rx = store.watch(BUCKET_AGENTS).await.unwrap();
        store.delete(BUCKET_AGENTS, "a").await.unwrap();
        assert_eq!(rx.recv().await.unwrap().value, Some(Bytes::from("1")));
        let deleted = rx.recv().await.unwrap();
        assert_eq!((deleted.key.as_str(), deleted.value), ("a", None));
    }
}
