//! The state buckets of a database in memory: every committed entry with its revision, and
//! each bucket's counter. The writer thread updates it after each commit (before watchers
//! and callers hear of the batch); everyone else reads it and never touches the database.
//!
//! Why: a point read of the LSM tree looks through its memtables and tables, ~4–5 µs of CPU
//! on this machine, against ~1 µs for a map; and a write's condition is checked against
//! the map instead of the tree too. The database stays the only durable copy: the index
//! is rebuilt from it on open. It costs the memory of the state (not of transcripts): for
//! 100,000 session entries of 200 bytes, ~30 MB — what the file store before it held too.
//!
//! Each bucket has its own lock, so a long read of one bucket (a watch's snapshot clones
//! every entry) delays only that bucket's readers and the writer, never other buckets'
//! readers. The outer lock is taken for writing only when a bucket appears.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::RwLock;

use super::{decode_entry, number, storage, Space, Store};
use crate::state::{Change, StateError};

#[derive(Default)]
struct Bucket {
    entries: BTreeMap<String, (u64, Bytes)>,
    /// The revision of the bucket's latest write (deletes included).
    counter: u64,
}

#[derive(Default)]
pub(crate) struct Index {
    buckets: RwLock<HashMap<String, RwLock<Bucket>>>,
}

impl Index {
    /// Everything `db` holds in its state keyspace, and the bucket counters.
    pub(crate) fn load(db: &Store) -> Result<Self, StateError> {
        let mut buckets: HashMap<String, Bucket> = HashMap::new();
        for item in db.space(Space::Kv).iter() {
            let (key, stored) = item.into_inner().map_err(storage)?;
            let Some((bucket, key)) = split(&key) else {
                continue;
            };
            let Some(entry) = decode_entry(&stored) else {
                continue;
            };
            buckets
                .entry(bucket)
                .or_default()
                .entries
                .insert(key, entry);
        }
        for item in db.space(Space::Meta).prefix(b"rev\0") {
            let (key, counter) = item.into_inner().map_err(storage)?;
            if let Some((_, bucket)) = split(&key) {
                buckets.entry(bucket).or_default().counter = number(&counter);
            }
        }
        // A counter is never below a revision it gave out (a former store's file could
        // say otherwise); the next write must not reuse one.
        for bucket in buckets.values_mut() {
            let highest = bucket.entries.values().map(|(revision, _)| *revision).max();
            bucket.counter = bucket.counter.max(highest.unwrap_or(0));
        }
        let buckets = buckets
            .into_iter()
            .map(|(name, bucket)| (name, RwLock::new(bucket)))
            .collect();
        Ok(Index {
            buckets: RwLock::new(buckets),
        })
    }

    /// A key's value and revision.
    pub(crate) fn get(&self, bucket: &str, key: &str) -> Option<(u64, Bytes)> {
        let buckets = self.buckets.read();
        let entry = buckets.get(bucket)?.read().entries.get(key).cloned();
        entry
    }

    /// A key's revision.
    pub(crate) fn revision(&self, bucket: &str, key: &str) -> Option<u64> {
        let buckets = self.buckets.read();
        let revision = buckets
            .get(bucket)?
            .read()
            .entries
            .get(key)
            .map(|(r, _)| *r);
        revision
    }

    /// The bucket's counter (0: never written).
    pub(crate) fn counter(&self, bucket: &str) -> u64 {
        self.buckets
            .read()
            .get(bucket)
            .map_or(0, |b| b.read().counter)
    }

    /// The keys starting with `prefix`, sorted.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let buckets = self.buckets.read();
        let Some(bucket) = buckets.get(bucket) else {
            return Vec::new();
        };
        let bucket = bucket.read();
        bucket
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Every entry of the bucket and its counter, as of one moment.
    pub(crate) fn snapshot(&self, bucket: &str) -> (Vec<Change>, u64) {
        let buckets = self.buckets.read();
        let Some(bucket) = buckets.get(bucket) else {
            return (Vec::new(), 0);
        };
        let bucket = bucket.read();
        let changes = bucket
            .entries
            .iter()
            .map(|(key, (revision, value))| Change {
                key: key.clone(),
                value: Some(value.clone()),
                revision: *revision,
            })
            .collect();
        (changes, bucket.counter)
    }

    /// Takes in the changes of a committed batch, in their order.
    pub(crate) fn apply(&self, changes: &[(String, Change)]) {
        if changes.is_empty() {
            return;
        }
        let fresh: Vec<&String> = {
            let buckets = self.buckets.read();
            changes
                .iter()
                .map(|(bucket, _)| bucket)
                .filter(|bucket| !buckets.contains_key(bucket.as_str()))
                .collect()
        };
        if !fresh.is_empty() {
            let mut buckets = self.buckets.write();
            for bucket in fresh {
                buckets.entry(bucket.clone()).or_default();
            }
        }
        let buckets = self.buckets.read();
        for (bucket, change) in changes {
            let Some(bucket) = buckets.get(bucket.as_str()) else {
                continue;
            };
            let mut bucket = bucket.write();
            match &change.value {
                Some(value) => {
                    bucket
                        .entries
                        .insert(change.key.clone(), (change.revision, value.clone()));
                }
                None => {
                    bucket.entries.remove(&change.key);
                }
            }
            bucket.counter = bucket.counter.max(change.revision);
        }
    }
}

/// `bucket 0 key` → (bucket, key).
fn split(stored: &[u8]) -> Option<(String, String)> {
    let at = stored.iter().position(|b| *b == 0)?;
    let bucket = std::str::from_utf8(&stored[..at]).ok()?;
    let key = std::str::from_utf8(&stored[at + 1..]).ok()?;
    Some((bucket.to_string(), key.to_string()))
}
