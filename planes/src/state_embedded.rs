//! The embedded state store: every bucket a key range of the state dir's fjall database
//! ([`crate::embedded::EmbeddedDb`], `<state dir>/argent.fjall`). Durable buckets live there;
//! the others (presence, liveness, approvals) in a second database in a temporary directory,
//! never fsynced and removed on drop, so a restart forgets them as before. Without a state
//! dir both are temporary.
//!
//! Writes are group-committed by the database's writer thread; reads come from the
//! database's index of committed entries ([`crate::embedded::Index`]) on the caller's
//! thread and never wait for the writer.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::cluster::bucket_spec;
use crate::embedded::{temporary_db, CommitStats, Condition, EmbeddedDb, Engine, Op};
use crate::state::{validate_key, Change, Entry, StateError, StateStore, WATCH_CAPACITY};

/// The embedded state store (the one-process default).
pub struct EmbeddedStore {
    db: EmbeddedDb,
    volatile: Arc<Engine>,
}

impl EmbeddedStore {
    /// Durable buckets are kept in `<dir>/argent.fjall` (importing what an earlier build
    /// left in `dir` on first open); `None` keeps everything in a temporary directory that
    /// is removed on drop.
    pub fn open(dir: Option<&std::path::Path>) -> Result<Self, StateError> {
        Self::on(&EmbeddedDb::open(dir)?)
    }

    /// The store on an open database (which the transcript log may share).
    pub fn on(db: &EmbeddedDb) -> Result<Self, StateError> {
        Ok(EmbeddedStore {
            db: db.clone(),
            volatile: Engine::start("volatile", temporary_db()?)?,
        })
    }

    /// Writes and commits of the durable database so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.db.commit_stats()
    }

    fn engine(&self, bucket: &str) -> &Engine {
        if bucket_spec(bucket).is_some_and(|spec| spec.durable) {
            &self.db.durable
        } else {
            &self.volatile
        }
    }

    async fn write(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Bytes>,
        condition: Condition,
    ) -> Result<u64, StateError> {
        validate_key(key)?;
        let op = Op::State {
            bucket: bucket.to_string(),
            key: key.to_string(),
            value,
            condition,
        };
        self.engine(bucket).submit(op).await
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StateError> {
        validate_key(key)?;
        let entry = self.engine(bucket).index.get(bucket, key);
        Ok(entry.map(|(revision, value)| Entry { value, revision }))
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        self.write(bucket, key, Some(value), Condition::Any).await
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StateError> {
        self.write(bucket, key, Some(value), Condition::Absent)
            .await
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StateError> {
        self.write(bucket, key, Some(value), Condition::Revision(revision))
            .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StateError> {
        self.write(bucket, key, None, Condition::Present)
            .await
            .map(|_| ())
    }

    async fn delete_if(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StateError> {
        self.write(bucket, key, None, Condition::Revision(revision))
            .await
            .map(|_| ())
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        Ok(self.engine(bucket).index.keys(bucket, prefix))
    }

    async fn watch(&self, bucket: &str) -> Result<mpsc::Receiver<Change>, StateError> {
        self.watch_from(bucket, None).await
    }

    async fn watch_after(
        &self,
        bucket: &str,
        after: u64,
    ) -> Result<mpsc::Receiver<Change>, StateError> {
        self.watch_from(bucket, Some(after)).await
    }

    async fn last_revision(&self, bucket: &str) -> Result<u64, StateError> {
        Ok(self.engine(bucket).index.counter(bucket))
    }

    fn is_healthy(&self) -> bool {
        self.db.durable.is_healthy() && self.volatile.is_healthy()
    }
}

impl EmbeddedStore {
    /// The snapshot (in key order), or with `after` the values written after it (in
    /// revision order), then every later change.
    async fn watch_from(
        &self,
        bucket: &str,
        after: Option<u64>,
    ) -> Result<mpsc::Receiver<Change>, StateError> {
        let engine = self.engine(bucket);
        // Subscribed before the snapshot is read: a change committed after the snapshot is
        // in the subscription; one committed before it may be in both, and is recognised by
        // its revision (not above the snapshot's counter) and dropped. No gap, no duplicate.
        let mut changes = engine.watchers.subscribe(bucket);
        // Cloning a large bucket takes milliseconds: not on an async worker.
        let (index, name) = (engine.index.clone(), bucket.to_string());
        let (mut snapshot, upto) = tokio::task::spawn_blocking(move || index.snapshot(&name))
            .await
            .map_err(|e| StateError::Failed(format!("watch {bucket}: {e}")))?;
        if let Some(after) = after {
            // A resuming watcher counts what it applied by revision: replay in that order.
            snapshot.retain(|c| c.revision > after);
            snapshot.sort_by_key(|c| c.revision);
        }
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
                    Ok(change) if change.revision <= upto => continue,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::modify_json;
    use argent_proto::subjects::{BUCKET_AGENTS, BUCKET_PRESENCE, BUCKET_SESSIONS};
    use std::collections::BTreeSet;

    #[tokio::test]
    async fn revisions_create_update_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(Some(dir.path())).unwrap();
        let r1 = store
            .create(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("a"))
            .await
            .unwrap();
        assert_eq!(r1, 1, "the first write of a bucket");
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
        assert_eq!(
            store.put(BUCKET_AGENTS, "a b", Bytes::new()).await,
            Err(StateError::InvalidKey("a b".into()))
        );
        drop(store);

        let reopened = EmbeddedStore::open(Some(dir.path())).unwrap();
        let entry = reopened
            .get(BUCKET_AGENTS, "main.SOUL.md")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((entry.value, entry.revision), (Bytes::from("b"), 2));
        assert_eq!(
            reopened.get(BUCKET_PRESENCE, "gw.x").await.unwrap(),
            None,
            "not durable"
        );
    }

    #[tokio::test]
    async fn conditional_delete_and_modify_json() {
        let store = EmbeddedStore::open(None).unwrap();
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
        store.delete(bucket, "k").await.unwrap();
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
    async fn keys_are_sorted_and_filtered_by_prefix() {
        let store = EmbeddedStore::open(None).unwrap();
        for key in ["b.2", "a.1", "b.1", "c", "b"] {
            store.put(BUCKET_AGENTS, key, Bytes::new()).await.unwrap();
        }
        assert_eq!(
            store.keys(BUCKET_AGENTS, "b.").await.unwrap(),
            vec!["b.1", "b.2"]
        );
        assert_eq!(store.keys(BUCKET_AGENTS, "").await.unwrap().len(), 5);
        assert!(store.keys(BUCKET_SESSIONS, "").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_commits_and_each_get_their_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(Some(dir.path())).unwrap());
        let contested = store
            .put(BUCKET_SESSIONS, "contested", Bytes::from("0"))
            .await
            .unwrap();
        let (writers, each) = (32, 40);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                // Every writer tries the same compare-and-set once, amid its other writes.
                let won = store
                    .update(
                        BUCKET_SESSIONS,
                        "contested",
                        Bytes::from(format!("{w}")),
                        contested,
                    )
                    .await;
                for n in 0..each {
                    let key = format!("w{w}.{n}");
                    revisions.push(
                        store
                            .put(BUCKET_SESSIONS, &key, Bytes::from(key.clone()))
                            .await
                            .unwrap(),
                    );
                }
                (won, revisions)
            }));
        }
        let mut revisions = BTreeSet::new();
        let mut winners = 0;
        for task in tasks {
            let (won, mine) = task.await.unwrap();
            match won {
                Ok(revision) => {
                    winners += 1;
                    revisions.insert(revision);
                }
                Err(err) => assert_eq!(err, StateError::WrongRevision),
            }
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "one writer's revisions rise"
            );
            revisions.extend(mine);
        }
        assert_eq!(winners, 1, "exactly one compare-and-set wins");
        let total = (writers * each + 1) as u64;
        assert_eq!(
            revisions,
            (2..=total + 1).collect::<BTreeSet<u64>>(),
            "every write has its own revision, none skipped"
        );
        let stats = store.commit_stats();
        assert!(
            stats.commits < stats.writes,
            "writes shared commits: {stats:?}"
        );
        for w in 0..writers {
            let key = format!("w{w}.{}", each - 1);
            assert_eq!(
                store
                    .get(BUCKET_SESSIONS, &key)
                    .await
                    .unwrap()
                    .unwrap()
                    .value,
                Bytes::from(key)
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_watch_started_amid_writers_sees_each_write_once() {
        let store = Arc::new(EmbeddedStore::open(None).unwrap());
        let (writers, each) = (4, 300);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..each {
                    // A fresh key per write: the snapshot then holds one entry per write
                    // committed before it, and every write is seen exactly once.
                    store
                        .put(BUCKET_AGENTS, &format!("w{w}.{n}"), Bytes::from("v"))
                        .await
                        .unwrap();
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        // Let the writers get going, then watch while they write.
        while store.keys(BUCKET_AGENTS, "").await.unwrap().len() < 100 {
            tokio::task::yield_now().await;
        }
        let mut watch = store.watch(BUCKET_AGENTS).await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let total = (writers * each) as u64;
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let change = tokio::time::timeout(std::time::Duration::from_secs(5), watch.recv())
                .await
                .expect("a change is missing")
                .expect("the watch ended");
            seen.push(change.revision);
        }
        assert!(
            watch.try_recv().is_err(),
            "nothing more than each write once"
        );
        let distinct: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(distinct, (1..=total).collect(), "no gap, no duplicate");
    }

    #[tokio::test]
    async fn a_watch_sees_the_snapshot_then_changes() {
        let store = EmbeddedStore::open(None).unwrap();
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

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_ended() {
        let store = EmbeddedStore::open(None).unwrap();
        let mut rx = store.watch(BUCKET_PRESENCE).await.unwrap();
        // Nobody reads while more than the channel and the broadcast can hold are written.
        for n in 0..(3 * WATCH_CAPACITY) {
            store
                .put(BUCKET_PRESENCE, &format!("k{n}"), Bytes::new())
                .await
                .unwrap();
        }
        let mut received = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await
        {
            received += 1;
        }
        assert!(
            received < 3 * WATCH_CAPACITY,
            "the watch ended early: {received}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(Some(dir.path())).unwrap());
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    let key = format!("s{w}.{n}");
                    store
                        .put(BUCKET_SESSIONS, &key, Bytes::from(format!("{w}/{n}")))
                        .await
                        .unwrap();
                    if n % 5 == 0 {
                        store.delete(BUCKET_SESSIONS, &key).await.unwrap();
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let last = store
            .put(BUCKET_SESSIONS, "last", Bytes::new())
            .await
            .unwrap();
        drop(store);

        let store = EmbeddedStore::open(Some(dir.path())).unwrap();
        let keys = store.keys(BUCKET_SESSIONS, "s").await.unwrap();
        assert_eq!(keys.len(), 8 * 20);
        let entry = store.get(BUCKET_SESSIONS, "s3.7").await.unwrap().unwrap();
        assert_eq!(entry.value, Bytes::from("3/7"));
        assert_eq!(store.get(BUCKET_SESSIONS, "s3.5").await.unwrap(), None);
        assert_eq!(
            store.put(BUCKET_SESSIONS, "next", Bytes::new()).await,
            Ok(last + 1),
            "the bucket's counter continues"
        );
    }
}
