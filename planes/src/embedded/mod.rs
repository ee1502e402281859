//! The embedded database: one [fjall](https://docs.rs/fjall) database (an LSM tree with a
//! journal) per state dir (`<state dir>/argent.fjall`), shared by the state store
//! ([`crate::state_embedded`]) and the transcript log
//! ([`crate::transcripts::EmbeddedTranscripts`]): fjall locks its directory, so both must
//! use one handle, [`EmbeddedDb`].
//!
//! Every write goes through one writer thread per database, which checks everything queued
//! in order (later writes of a batch see earlier ones), applies it in one atomic write batch
//! and fsyncs the journal once (group commit, ADR 14): a write costs its own record in a
//! sequential journal plus a share of one fsync. Then it updates the [`Index`] of committed
//! state entries, which state reads use; transcripts are read from fjall. Readers never wait
//! for the writer's I/O.
//!
//! On first open, what former releases left in the state dir is imported ([`import`]): the
//! redb file of the first embedded store, and the JSON files of the file-based stores.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::state::{Change, StateError, WATCH_CAPACITY};

mod import;
mod index;

pub use import::REDB_FILE;
pub(crate) use index::Index;

/// The database directory in the state dir.
pub const DB_FILE: &str = "argent.fjall";

/// Writes waiting for the writer. Callers wait (asynchronously) when it is full.
const QUEUE_CAPACITY: usize = 1024;
/// At most this many writes share a batch, which bounds how long the first of them waits
/// for the fsync.
const MAX_BATCH: usize = 256;

pub(crate) fn failed(what: impl std::fmt::Display, err: impl std::fmt::Display) -> StateError {
    StateError::Failed(format!("{what}: {err}"))
}

/// An error of fjall, in words: an I/O error as the operating system said it ("No space left
/// on device (os error 28)").
fn storage(e: fjall::Error) -> StateError {
    StateError::Failed(match e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => io.to_string(),
        // fjall refuses every write after a journal write or fsync failed, since what is on
        // disk is no longer known; reopening (a restart) recovers what was acknowledged.
        fjall::Error::Poisoned => "the database refuses writes since an earlier write failed \
            (disk full or I/O error); restart once the disk is fixed"
            .to_string(),
        other => other.to_string(),
    })
}

/// The keyspaces of a database. Keys are bytes; a name and what follows it are separated by
/// a 0 byte (bucket names, state keys and session ids never hold one), numbers are 8 bytes
/// big-endian, so that byte order is the order of the parts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Space {
    /// `bucket 0 key` → revision ++ value.
    Kv,
    /// `rev 0 bucket` → the bucket's counter; `migrated 0 bucket` → the counter a former
    /// JSON file had; `tx-migrated 0 session` → the message count of a former JSON-lines file.
    Meta,
    /// `session 0 seq` → message (JSON); seq from 1.
    TxLog,
    /// `session 0 archive number seq` → message.
    TxArchive,
    /// `session` → the last archive number.
    TxArchives,
}

const SPACES: [(Space, &str); 5] = [
    (Space::Kv, "kv"),
    (Space::Meta, "meta"),
    (Space::TxLog, "tx_log"),
    (Space::TxArchive, "tx_archive"),
    (Space::TxArchives, "tx_archives"),
];

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

fn kv_key(bucket: &str, key: &str) -> Vec<u8> {
    joined(&[bucket.as_bytes(), key.as_bytes()])
}

fn meta_key(kind: &str, name: &str) -> Vec<u8> {
    joined(&[kind.as_bytes(), name.as_bytes()])
}

fn log_key(session: &str, seq: u64) -> Vec<u8> {
    let mut key = joined(&[session.as_bytes(), b""]);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> u64 {
    let tail = &key[key.len().saturating_sub(8)..];
    let mut bytes = [0u8; 8];
    bytes[8 - tail.len()..].copy_from_slice(tail);
    u64::from_be_bytes(bytes)
}

fn number(value: &[u8]) -> u64 {
    seq_of(value)
}

/// Where a session's log ends, as one number that changes with every append and every
/// replacement and never comes back: the archive count (replacements so far) above the last
/// message's seq (which restarts at 1 after a replacement).
pub(crate) fn log_end(archives: u64, last_seq: u64) -> u64 {
    (archives << 40) | last_seq
}

/// A stored entry: its revision and value.
fn decode_entry(stored: &[u8]) -> Option<(u64, Bytes)> {
    (stored.len() >= 8).then(|| (seq_of(&stored[..8]), Bytes::copy_from_slice(&stored[8..])))
}

fn encode_entry(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(8 + value.len());
    stored.extend_from_slice(&revision.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

/// One fjall database with its keyspaces.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) db: Database,
    spaces: Vec<Keyspace>,
    /// fsync the journal before a batch is answered.
    durable: bool,
}

impl Store {
    fn open(path: &Path, durable: bool, temporary: bool) -> Result<Self, StateError> {
        let mut builder = Database::builder(path).temporary(temporary);
        if !durable {
            builder = builder.worker_threads(1);
        }
        let db = builder
            .open()
            .map_err(|e| failed(format_args!("open {}", path.display()), e))?;
        let mut spaces = Vec::new();
        for (_, name) in SPACES {
            spaces.push(
                db.keyspace(name, KeyspaceCreateOptions::default)
                    .map_err(|e| failed(format_args!("open keyspace {name}"), e))?,
            );
        }
        Ok(Store {
            db,
            spaces,
            durable,
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }
}

/// A database in a fresh temporary directory, removed when it is dropped and never
/// fsynced: for buckets a restart forgets, and for a store without a state dir.
pub(crate) fn temporary_db() -> Result<Store, StateError> {
    let path = std::env::temp_dir().join(format!("argent-db-{}", uuid::Uuid::new_v4()));
    Store::open(&path, false, true)
}

/// What one write requires of the key's current revision.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Condition {
    Any,
    /// `create`: the key must not exist.
    Absent,
    /// `update`/`delete_if`: the key must be at this revision (0: absent).
    Revision(u64),
    /// `delete`: nothing to do (and no revision used) when the key is missing.
    Present,
}

/// One write for the writer thread.
pub(crate) enum Op {
    /// Answered with the new revision (0 when a `Present` condition found nothing).
    State {
        bucket: String,
        key: String,
        /// `None` deletes.
        value: Option<Bytes>,
        condition: Condition,
    },
    /// Appends a message to a session's transcript (only if the log still ends at `after`,
    /// when given: [`StateError::WrongRevision`] otherwise); answered with the log's new
    /// end ([`log_end`]).
    Append {
        session: String,
        message: Vec<u8>,
        after: Option<u64>,
    },
    /// Archives a session's transcript and makes `messages` its content, in one
    /// batch; answered with the archive number.
    Replace {
        session: String,
        messages: Vec<Vec<u8>>,
    },
}

impl Op {
    /// What the op writes, for errors.
    fn target(&self) -> String {
        match self {
            Op::State { bucket, key, .. } => format!("{bucket}/{key}"),
            Op::Append { session, .. } | Op::Replace { session, .. } => {
                format!("transcript {session}")
            }
        }
    }
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<u64, StateError>>,
}

/// The broadcast of committed state changes, per bucket.
#[derive(Default)]
pub(crate) struct Watchers {
    buckets: Mutex<HashMap<String, broadcast::Sender<Change>>>,
}

impl Watchers {
    pub(crate) fn subscribe(&self, bucket: &str) -> broadcast::Receiver<Change> {
        self.buckets
            .lock()
            .entry(bucket.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, changes: Vec<(String, Change)>) {
        if changes.is_empty() {
            return;
        }
        let buckets = self.buckets.lock();
        for (bucket, change) in changes {
            if let Some(sender) = buckets.get(&bucket) {
                // No receiver is fine: nobody is watching.
                let _ = sender.send(change);
            }
        }
    }
}

/// Counts for benchmarks and tests: how well writes share commits.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

/// One database with its writer thread.
pub(crate) struct Engine {
    name: &'static str,
    pub(crate) db: Store,
    jobs: mpsc::Sender<Job>,
    pub(crate) watchers: Arc<Watchers>,
    /// The committed state entries, for reads.
    pub(crate) index: Arc<Index>,
    healthy: Arc<AtomicBool>,
    counters: Arc<Counters>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    pub(crate) fn start(name: &'static str, db: Store) -> Result<Arc<Self>, StateError> {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let watchers = Arc::new(Watchers::default());
        let index = Arc::new(Index::load(&db)?);
        let healthy = Arc::new(AtomicBool::new(true));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            name,
            db: db.clone(),
            queue,
            watchers: watchers.clone(),
            index: index.clone(),
            healthy: healthy.clone(),
            counters: counters.clone(),
        };
        let writer = std::thread::Builder::new()
            .name(format!("db-writer-{name}"))
            .spawn(move || writer.run())
            .map_err(|e| failed(format_args!("cannot start the {name} database writer"), e))?;
        Ok(Arc::new(Engine {
            name,
            db,
            jobs,
            watchers,
            index,
            healthy,
            counters,
            writer: Some(writer),
        }))
    }

    /// Queues `op` for the writer and waits for its commit.
    pub(crate) async fn submit(&self, op: Op) -> Result<u64, StateError> {
        let (reply, answer) = oneshot::channel();
        let stopped =
            || StateError::Unavailable(format!("the {} database writer stopped", self.name));
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// False after a failed commit, and when the writer thread is gone (it ended or
    /// panicked): no write can succeed then.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.jobs.is_closed()
    }

    fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Engine {
    /// Waits for the writer to finish its batch and let go of the database, so the
    /// directory is unlocked (and may be opened again) once the last user is dropped.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread of one database.
struct Writer {
    name: &'static str,
    db: Store,
    queue: mpsc::Receiver<Job>,
    watchers: Arc<Watchers>,
    index: Arc<Index>,
    healthy: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

/// What one write of a batch came to, before the commit: its answer, and the change to
/// publish.
type Outcome = Result<(u64, Option<(String, Change)>), StateError>;

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // No waiting for more writes to arrive: while one batch is fsynced the next one
        // queues up by itself.
        while let Some(first) = self.queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
    }

    fn commit(&self, batch: &mut Vec<Job>) {
        let ops: Vec<&Op> = batch.iter().map(|job| &job.op).collect();
        let result = apply(&self.db, &self.index, &ops);
        match result {
            Ok(outcomes) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .writes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let mut changes = Vec::new();
                let mut replies = Vec::with_capacity(batch.len());
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let answer = outcome.map(|(answer, change)| {
                        changes.extend(change);
                        answer
                    });
                    replies.push((job.reply, answer));
                }
                // In the index before watchers hear of it (a watch's snapshot comes from the
                // index: a change in both is recognised by its revision), and published
                // before anyone is answered, so a caller that watches after its write
                // returned cannot see the write twice or miss it.
                self.index.apply(&changes);
                self.watchers.publish(changes);
                for (reply, answer) in replies {
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                // Nothing of the batch is applied (fjall writes the journal, and fsyncs it,
                // before it applies a batch to its memtables); nobody hears of it.
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(database = self.name, %err, writes = batch.len(), "commit failed");
                for job in batch.drain(..) {
                    let target = job.op.target();
                    let _ = job.reply.send(Err(StateError::Failed(format!(
                        "{target} not written: {}",
                        detail(&err)
                    ))));
                }
            }
        }
    }
}

/// What went wrong, without the "state store failed" of the error's own message (the
/// caller's error says that once).
fn detail(err: &StateError) -> String {
    match err {
        StateError::Failed(detail) | StateError::Unavailable(detail) => detail.clone(),
        other => other.to_string(),
    }
}

/// A stored key and value.
type Pair = (Vec<u8>, Vec<u8>);

/// A batch's writes so far, over what is stored: what later writes of the batch read.
struct Overlay<'a> {
    db: &'a Store,
    /// Per keyspace (by [`Space`] index): key → new value, or `None` when removed.
    pending: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; SPACES.len()],
}

impl<'a> Overlay<'a> {
    fn new(db: &'a Store) -> Self {
        Overlay {
            db,
            pending: Default::default(),
        }
    }

    /// What an earlier write of this batch left at `key`: `Some(None)` if it removed it,
    /// `None` if none touched it.
    fn pending(&self, space: Space, key: &[u8]) -> Option<Option<&Vec<u8>>> {
        self.pending[space as usize]
            .get(key)
            .map(|value| value.as_ref())
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(pending) = self.pending(space, key) {
            return Ok(pending.cloned());
        }
        Ok(self
            .db
            .space(space)
            .get(key)
            .map_err(storage)?
            .map(|v| v.to_vec()))
    }

    fn insert(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.pending[space as usize].insert(key, Some(value));
    }

    fn remove(&mut self, space: Space, key: Vec<u8>) {
        self.pending[space as usize].insert(key, None);
    }

    fn pending_under<'s>(
        &'s self,
        space: Space,
        prefix: &'s [u8],
    ) -> impl Iterator<Item = (&'s Vec<u8>, &'s Option<Vec<u8>>)> + 's {
        self.pending[space as usize]
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Every entry under `prefix`, in key order.
    fn scan(&self, space: Space, prefix: &[u8]) -> Result<Vec<Pair>, StateError> {
        let mut merged = BTreeMap::new();
        for item in self.db.space(space).prefix(prefix) {
            let (key, value) = item.into_inner().map_err(storage)?;
            merged.insert(key.to_vec(), Some(value.to_vec()));
        }
        for (key, value) in self.pending_under(space, prefix) {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// The last key under `prefix`.
    fn last_key(&self, space: Space, prefix: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if self.pending_under(space, prefix).next().is_none() {
            return match self.db.space(space).prefix(prefix).next_back() {
                Some(item) => Ok(Some(item.key().map_err(storage)?.to_vec())),
                None => Ok(None),
            };
        }
        Ok(self.scan(space, prefix)?.pop().map(|(k, _)| k))
    }

    fn counter(&self, kind: &str, name: &str) -> Result<u64, StateError> {
        Ok(self
            .get(Space::Meta, &meta_key(kind, name))?
            .map(|v| number(&v))
            .unwrap_or(0))
    }

    /// Writes everything in one atomic batch, fsynced when the database is durable.
    fn commit(self) -> Result<(), StateError> {
        let mut batch = self.db.db.batch().durability(if self.db.durable {
            Some(PersistMode::SyncData)
        } else {
            None
        });
        for (keyspace, pending) in self.db.spaces.iter().zip(self.pending) {
            for (key, value) in pending {
                match value {
                    Some(value) => batch.insert(keyspace, key, value),
                    None => batch.remove(keyspace, key),
                }
            }
        }
        batch.commit().map_err(storage)
    }
}

/// Applies every write in order in one batch and commits it. A write whose condition fails
/// gets its own error and changes nothing; an error of the database fails the whole batch.
/// Conditions are checked against the index (what is committed) and the batch's earlier
/// writes.
fn apply(db: &Store, index: &Index, ops: &[&Op]) -> Result<Vec<Outcome>, StateError> {
    let mut overlay = Overlay::new(db);
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            Op::State {
                bucket,
                key,
                value,
                condition,
            } => {
                let stored_key = kv_key(bucket, key);
                let current = match overlay.pending(Space::Kv, &stored_key) {
                    Some(pending) => pending.and_then(|v| decode_entry(v)).map(|(r, _)| r),
                    None => index.revision(bucket, key),
                };
                let refused = match (*condition, current) {
                    (Condition::Any, _) => None,
                    (Condition::Absent, None) => None,
                    (Condition::Absent, Some(_)) => Some(StateError::Exists),
                    (Condition::Revision(0), None) => None,
                    (Condition::Revision(want), Some(have)) if want == have => None,
                    (Condition::Revision(_), _) => Some(StateError::WrongRevision),
                    (Condition::Present, _) => None,
                };
                if let Some(err) = refused {
                    Err(err)
                } else if matches!(condition, Condition::Present) && current.is_none() {
                    Ok((0, None))
                } else {
                    let counter_key = meta_key("rev", bucket);
                    let revision = match overlay.pending(Space::Meta, &counter_key) {
                        Some(pending) => pending.map_or(0, |v| number(v)),
                        None => index.counter(bucket),
                    } + 1;
                    overlay.insert(Space::Meta, counter_key, revision.to_be_bytes().to_vec());
                    match value {
                        Some(value) => {
                            overlay.insert(Space::Kv, stored_key, encode_entry(revision, value))
                        }
                        None => overlay.remove(Space::Kv, stored_key),
                    }
                    let change = Change {
                        key: key.clone(),
                        value: value.clone(),
                        revision,
                    };
                    Ok((revision, Some((bucket.clone(), change))))
                }
            }
            Op::Append {
                session,
                message,
                after,
            } => {
                let prefix = log_key(session, 0);
                let prefix = &prefix[..prefix.len() - 8];
                let last = overlay
                    .last_key(Space::TxLog, prefix)?
                    .map(|k| seq_of(&k))
                    .unwrap_or(0);
                let archives = overlay
                    .get(Space::TxArchives, session.as_bytes())?
                    .map(|v| self::number(&v))
                    .unwrap_or(0);
                if after.is_some_and(|end| end != log_end(archives, last)) {
                    Err(StateError::WrongRevision)
                } else {
                    overlay.insert(Space::TxLog, log_key(session, last + 1), message.clone());
                    Ok((log_end(archives, last + 1), None))
                }
            }
            Op::Replace { session, messages } => {
                let s = session.as_str();
                let number = overlay
                    .get(Space::TxArchives, s.as_bytes())?
                    .map(|v| self::number(&v))
                    .unwrap_or(0)
                    + 1;
                let prefix = log_key(s, 0);
                let prefix = &prefix[..prefix.len() - 8];
                for (key, message) in overlay.scan(Space::TxLog, prefix)? {
                    let seq = seq_of(&key);
                    let mut archived = log_key(s, number);
                    archived.extend_from_slice(&seq.to_be_bytes());
                    overlay.insert(Space::TxArchive, archived, message);
                    overlay.remove(Space::TxLog, key);
                }
                for (seq, message) in (1..).zip(messages) {
                    overlay.insert(Space::TxLog, log_key(s, seq), message.clone());
                }
                overlay.insert(
                    Space::TxArchives,
                    s.as_bytes().to_vec(),
                    number.to_be_bytes().to_vec(),
                );
                Ok((number, None))
            }
        };
        outcomes.push(outcome);
    }
    overlay.commit()?;
    Ok(outcomes)
}

/// Every message of a session's transcript, oldest first, and where the log ends
/// ([`log_end`]).
pub(crate) fn read_transcript(
    db: &Store,
    session: &str,
) -> Result<(Vec<Vec<u8>>, u64), StateError> {
    let cannot = |e| failed(format_args!("cannot read transcript {session}"), e);
    // The archive count first: a replacement between the two reads then makes the end
    // older than the log, so a conditional append refuses (never the other way round).
    let archives = db
        .space(Space::TxArchives)
        .get(session.as_bytes())
        .map_err(storage)?
        .map_or(0, |v| number(&v));
    let prefix = log_key(session, 0);
    let prefix = &prefix[..prefix.len() - 8];
    let mut messages = Vec::new();
    let mut last = 0;
    for item in db.space(Space::TxLog).prefix(prefix) {
        let (key, message) = item.into_inner().map_err(cannot)?;
        last = seq_of(&key);
        messages.push(message.to_vec());
    }
    Ok((messages, log_end(archives, last)))
}

/// The database of a state dir (or of a temporary directory), shared by the state store
/// and the transcript log.
#[derive(Clone)]
pub struct EmbeddedDb {
    pub(crate) durable: Arc<Engine>,
    /// Where archives of replaced transcripts are, for humans.
    pub(crate) location: String,
}

impl EmbeddedDb {
    /// Opens (or creates) `<dir>/argent.fjall`, importing what former releases left in
    /// `dir`; `None` keeps everything in a temporary directory removed on drop.
    pub fn open(dir: Option<&Path>) -> Result<Self, StateError> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| failed(format_args!("create {}", dir.display()), e))?;
                let path = dir.join(DB_FILE);
                let db = Store::open(&path, true, false)?;
                import::import_former_stores(&db, dir)?;
                Self::on(db, path.display().to_string())
            }
            None => Self::on(temporary_db()?, "memory".into()),
        }
    }

    pub(crate) fn on(db: Store, location: String) -> Result<Self, StateError> {
        Ok(EmbeddedDb {
            durable: Engine::start("durable", db)?,
            location,
        })
    }

    /// Writes and commits so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.durable.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argent_proto::subjects::BUCKET_AGENTS;

    fn state(key: &str, value: Option<&'static str>, condition: Condition) -> Op {
        Op::State {
            bucket: BUCKET_AGENTS.to_string(),
            key: key.to_string(),
            value: value.map(Bytes::from),
            condition,
        }
    }

    #[test]
    fn a_failed_condition_fails_only_its_own_write_of_a_batch() {
        let db = temporary_db().unwrap();
        let ops = [
            state("k", Some("1"), Condition::Absent),
            state("k", Some("x"), Condition::Revision(7)),
            state("j", Some("2"), Condition::Any),
            Op::Append {
                session: "s1".into(),
                message: b"{}".to_vec(),
                after: None,
            },
            state("k", Some("y"), Condition::Absent),
            state("k", Some("3"), Condition::Revision(1)),
            state("gone", None, Condition::Present),
            state("j", None, Condition::Revision(2)),
        ];
        let outcomes: Vec<_> = apply(&db, &Index::default(), &ops.iter().collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|o| o.map(|(answer, _)| answer))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                Ok(1),
                Err(StateError::WrongRevision),
                Ok(2),
                Ok(1),
                Err(StateError::Exists),
                Ok(3),
                Ok(0),
                Ok(4),
            ]
        );
        // As stored: an index loaded from the database.
        let (changes, counter) = Index::load(&db).unwrap().snapshot(BUCKET_AGENTS);
        assert_eq!(counter, 4);
        assert_eq!(
            changes,
            vec![Change {
                key: "k".into(),
                value: Some(Bytes::from("3")),
                revision: 3
            }]
        );
        assert_eq!(read_transcript(&db, "s1").unwrap().0, vec![b"{}".to_vec()]);
    }
}
