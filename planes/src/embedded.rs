//! The embedded database: one [redb](https://www.redb.org) file per state dir
//! (`<state dir>/argent.redb`), shared by the state store ([`crate::state_embedded`]) and the
//! transcript log ([`crate::transcripts::EmbeddedTranscripts`]): redb locks its file, so both
//! must use one handle, [`EmbeddedDb`].
//!
//! Every write goes through one writer thread per database, which applies everything queued
//! in one write transaction and commits it once, fsynced (group commit, ADR 14): a write
//! costs its own record plus a share of one commit, not a rewrite of its bucket or file.
//! Reads take a redb read transaction and never wait for the writer.
//!
//! On first open, what the former file-based stores left in the state dir is imported:
//! `state/<bucket>.json` (renamed `.json.migrated`) and `transcripts/<session>.jsonl`
//! (renamed `.jsonl.migrated`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, TableError,
    WriteTransaction,
};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cluster::bucket_spec;
use crate::state::{Change, StateError, WATCH_CAPACITY};

/// The database file in the state dir.
pub const DB_FILE: &str = "argent.redb";

/// A bucket's table (`kv/<bucket>`): key → (revision, value).
pub(crate) type BucketTable<'a> = TableDefinition<'a, &'static str, (u64, &'static [u8])>;
/// Each bucket's counter: the revision of its latest write.
const REVISIONS: TableDefinition<&str, u64> = TableDefinition::new("meta/revisions");
/// Buckets imported from the former JSON files, with the counter they had there.
const MIGRATED: TableDefinition<&str, u64> = TableDefinition::new("meta/migrated");
/// Transcripts: (session id, seq from 1) → message (JSON).
const TX_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("tx/log");
/// Archived transcripts: (session id, archive number, seq) → message.
const TX_ARCHIVE: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("tx/archive");
/// The last archive number of each session.
const TX_ARCHIVES: TableDefinition<&str, u64> = TableDefinition::new("tx/archives");
/// Sessions imported from the former JSON-lines files, with their message count.
const TX_MIGRATED: TableDefinition<&str, u64> = TableDefinition::new("meta/migrated-transcripts");

/// Writes waiting for the writer. Callers wait (asynchronously) when it is full.
const QUEUE_CAPACITY: usize = 1024;
/// At most this many writes share a transaction, which bounds how long the first of them
/// waits for the commit.
const MAX_BATCH: usize = 256;
/// redb's page cache for a database that lives in memory anyway: the pages are already in
/// the backend, so a large cache would only hold them twice.
const MEMORY_CACHE_BYTES: usize = 16 << 20;

pub(crate) fn table_name(bucket: &str) -> String {
    format!("kv/{bucket}")
}

pub(crate) fn failed(what: impl std::fmt::Display, err: impl std::fmt::Display) -> StateError {
    StateError::Failed(format!("{what}: {err}"))
}

/// What a state write requires of the key's current revision.
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
    /// Appends a message to a session's transcript; answered with its seq.
    Append { session: String, message: Vec<u8> },
    /// Archives a session's transcript and makes `messages` its content, in one
    /// transaction; answered with the archive number.
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

/// One redb database with its writer thread.
pub(crate) struct Engine {
    name: &'static str,
    pub(crate) db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    pub(crate) watchers: Arc<Watchers>,
    healthy: Arc<AtomicBool>,
    counters: Arc<Counters>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    pub(crate) fn start(name: &'static str, db: Database) -> Result<Arc<Self>, StateError> {
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let watchers = Arc::new(Watchers::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            name,
            db: db.clone(),
            queue,
            watchers: watchers.clone(),
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
    /// Waits for the writer to finish its batch and let go of the database, so the file is
    /// unlocked (and may be opened again) once the last user is dropped.
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
    db: Arc<Database>,
    queue: mpsc::Receiver<Job>,
    watchers: Arc<Watchers>,
    healthy: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

/// What one write of a batch came to, before the commit: its answer, and the change to
/// publish.
type Outcome = Result<(u64, Option<(String, Change)>), StateError>;

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // No waiting for more writes to arrive: an fsync here costs ~0.1 ms, and while one
        // batch commits the next one queues up by itself.
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
        match apply(&self.db, &ops) {
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
                // Published before anyone is answered, so a caller that watches after its
                // write returned cannot see the write twice or miss it.
                self.watchers.publish(changes);
                for (reply, answer) in replies {
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                // Nothing of the batch is stored; nobody hears of it. redb refuses further
                // writes after an I/O error until the database is opened again.
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(database = self.name, %err, writes = batch.len(), "commit failed");
                for job in batch.drain(..) {
                    let target = job.op.target();
                    let _ = job.reply.send(Err(StateError::Failed(format!(
                        "{target} not written: {err}"
                    ))));
                }
            }
        }
    }
}

/// The table of `slot`, opened in `txn` on first use.
fn opened<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<&'s mut Table<'t, K, V>, StateError> {
    if slot.is_none() {
        *slot = Some(
            txn.open_table(table)
                .map_err(|e| StateError::Failed(e.to_string()))?,
        );
    }
    slot.as_mut()
        .ok_or_else(|| StateError::Failed(format!("table {table} did not open")))
}

/// Applies every write in order in one write transaction and commits it. A write whose
/// condition fails gets its own error and changes nothing; an error of the database fails
/// the whole batch.
fn apply(db: &Database, ops: &[&Op]) -> Result<Vec<Outcome>, StateError> {
    let storage = |e: &dyn std::fmt::Display| StateError::Failed(e.to_string());
    let mut txn = db.begin_write().map_err(|e| storage(&e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| storage(&e))?;
    let mut outcomes = Vec::with_capacity(ops.len());
    {
        let mut revisions = None;
        // The open table and the counter of each bucket this batch touches.
        let mut buckets = HashMap::new();
        let (mut log, mut archive, mut archives) = (None, None, None);
        for op in ops {
            let outcome = match op {
                Op::State {
                    bucket,
                    key,
                    value,
                    condition,
                } => {
                    let (table, counter) = match buckets.entry(bucket.as_str()) {
                        std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                        std::collections::hash_map::Entry::Vacant(vacant) => {
                            let table = txn
                                .open_table(BucketTable::new(&table_name(bucket)))
                                .map_err(|e| storage(&e))?;
                            let counter = opened(&mut revisions, &txn, REVISIONS)?
                                .get(bucket.as_str())
                                .map_err(|e| storage(&e))?
                                .map(|g| g.value())
                                .unwrap_or(0);
                            vacant.insert((table, counter))
                        }
                    };
                    let current = table
                        .get(key.as_str())
                        .map_err(|e| storage(&e))?
                        .map(|g| g.value().0);
                    let allowed = match *condition {
                        Condition::Any => Ok(true),
                        Condition::Absent if current.is_some() => Err(StateError::Exists),
                        Condition::Absent => Ok(true),
                        Condition::Revision(revision) if current.unwrap_or(0) != revision => {
                            Err(StateError::WrongRevision)
                        }
                        Condition::Revision(_) => Ok(true),
                        Condition::Present => Ok(current.is_some()),
                    };
                    match allowed {
                        Err(err) => Err(err),
                        Ok(false) => Ok((0, None)),
                        Ok(true) => {
                            *counter += 1;
                            let revision = *counter;
                            match value {
                                Some(value) => table.insert(key.as_str(), (revision, &value[..])),
                                None => table.remove(key.as_str()),
                            }
                            .map_err(|e| storage(&e))?;
                            let change = Change {
                                key: key.clone(),
                                value: value.clone(),
                                revision,
                            };
                            Ok((revision, Some((bucket.clone(), change))))
                        }
                    }
                }
                Op::Append { session, message } => {
                    let log = opened(&mut log, &txn, TX_LOG)?;
                    let seq = last_seq(log, session).map_err(|e| storage(&e))? + 1;
                    log.insert((session.as_str(), seq), message.as_slice())
                        .map_err(|e| storage(&e))?;
                    Ok((seq, None))
                }
                Op::Replace { session, messages } => {
                    let log = opened(&mut log, &txn, TX_LOG)?;
                    let archive = opened(&mut archive, &txn, TX_ARCHIVE)?;
                    let archives = opened(&mut archives, &txn, TX_ARCHIVES)?;
                    let number = archives
                        .get(session.as_str())
                        .map_err(|e| storage(&e))?
                        .map(|g| g.value())
                        .unwrap_or(0)
                        + 1;
                    let s = session.as_str();
                    let mut old = Vec::new();
                    for item in log.range((s, 0)..=(s, u64::MAX)).map_err(|e| storage(&e))? {
                        let (key, message) = item.map_err(|e| storage(&e))?;
                        old.push((key.value().1, message.value().to_vec()));
                    }
                    for (seq, message) in &old {
                        archive
                            .insert((s, number, *seq), message.as_slice())
                            .map_err(|e| storage(&e))?;
                        log.remove((s, *seq)).map_err(|e| storage(&e))?;
                    }
                    for (seq, message) in (1..).zip(messages) {
                        log.insert((s, seq), message.as_slice())
                            .map_err(|e| storage(&e))?;
                    }
                    archives.insert(s, number).map_err(|e| storage(&e))?;
                    Ok((number, None))
                }
            };
            outcomes.push(outcome);
        }
        for (bucket, (_, counter)) in buckets {
            opened(&mut revisions, &txn, REVISIONS)?
                .insert(bucket, counter)
                .map_err(|e| storage(&e))?;
        }
    }
    txn.commit().map_err(|e| storage(&e))?;
    Ok(outcomes)
}

/// The seq of a session's last message (0: none).
fn last_seq(
    log: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    session: &str,
) -> Result<u64, redb::StorageError> {
    Ok(log
        .range((session, 0)..=(session, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(key, _)| key.value().1)
        .unwrap_or(0))
}

/// Every message of a session's transcript, oldest first.
pub(crate) fn read_transcript(db: &Database, session: &str) -> Result<Vec<Vec<u8>>, StateError> {
    let read_failed =
        |e: &dyn std::fmt::Display| failed(format_args!("cannot read transcript {session}"), e);
    let txn = db.begin_read().map_err(|e| read_failed(&e))?;
    let log = match txn.open_table(TX_LOG) {
        Ok(log) => log,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_failed(&e)),
    };
    let mut messages = Vec::new();
    for item in log
        .range((session, 0)..=(session, u64::MAX))
        .map_err(|e| read_failed(&e))?
    {
        let (_, message) = item.map_err(|e| read_failed(&e))?;
        messages.push(message.value().to_vec());
    }
    Ok(messages)
}

/// The current entries of a bucket and its counter, from one read transaction.
pub(crate) fn snapshot(db: &Database, bucket: &str) -> Result<(Vec<Change>, u64), StateError> {
    let read_failed = |e: &dyn std::fmt::Display| failed(format_args!("cannot read {bucket}"), e);
    let txn = db.begin_read().map_err(|e| read_failed(&e))?;
    let counter = match txn.open_table(REVISIONS) {
        Ok(revisions) => revisions
            .get(bucket)
            .map_err(|e| read_failed(&e))?
            .map(|g| g.value())
            .unwrap_or(0),
        Err(TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(read_failed(&e)),
    };
    let table = match txn.open_table(BucketTable::new(&table_name(bucket))) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), counter)),
        Err(e) => return Err(read_failed(&e)),
    };
    let mut changes = Vec::new();
    for item in table.iter().map_err(|e| read_failed(&e))? {
        let (key, value) = item.map_err(|e| read_failed(&e))?;
        let (revision, value) = value.value();
        changes.push(Change {
            key: key.value().to_string(),
            value: Some(Bytes::copy_from_slice(value)),
            revision,
        });
    }
    Ok((changes, counter))
}

/// The database of a state dir (or of memory), shared by the state store and the
/// transcript log.
#[derive(Clone)]
pub struct EmbeddedDb {
    pub(crate) durable: Arc<Engine>,
    /// Where archives of replaced transcripts are, for humans.
    pub(crate) location: String,
}

impl EmbeddedDb {
    /// Opens (or creates) `<dir>/argent.redb`, importing what the former file-based stores
    /// left in `dir`; `None` keeps everything in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self, StateError> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| failed(format_args!("create {}", dir.display()), e))?;
                let path = dir.join(DB_FILE);
                let db = Database::create(&path)
                    .map_err(|e| failed(format_args!("open {}", path.display()), e))?;
                migrate_legacy_state(&db, &dir.join("state"))?;
                migrate_legacy_transcripts(&db, &dir.join("transcripts"))?;
                Self::on(db, path.display().to_string())
            }
            None => Self::on(memory_db()?, "memory".into()),
        }
    }

    pub(crate) fn on(db: Database, location: String) -> Result<Self, StateError> {
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

pub(crate) fn memory_db() -> Result<Database, StateError> {
    Database::builder()
        .set_cache_size(MEMORY_CACHE_BYTES)
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| failed("cannot create an in-memory database", e))
}

/// The files of `dir` whose names end in `suffix`, with the rest of their names, sorted.
fn legacy_files(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf)>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(format_args!("list {}", dir.display()), e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| failed(format_args!("list {}", dir.display()), e))?
            .path();
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(suffix))
            .map(str::to_string);
        if let Some(stem) = stem {
            files.push((stem, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Renames imported files so that they are never imported again (the import itself is
/// also marked in the database, for a crash between its commit and these renames).
fn mark_imported(files: &[(String, PathBuf)], suffix: &str) -> Result<(), StateError> {
    for (_, path) in files {
        let mut done = path.clone().into_os_string();
        done.push(suffix);
        std::fs::rename(path, &done)
            .map_err(|e| failed(format_args!("rename {}", path.display()), e))?;
    }
    Ok(())
}

/// A bucket file of the former store.
#[derive(Deserialize)]
struct LegacyBucket {
    revision: u64,
    entries: std::collections::BTreeMap<String, LegacyValue>,
}

#[derive(Deserialize)]
struct LegacyValue {
    revision: u64,
    value: String,
}

/// Imports `<state>/<bucket>.json` files of the former store, all in one transaction
/// (keeping each key's revision and the bucket's counter), then renames each to
/// `<bucket>.json.migrated`.
fn migrate_legacy_state(db: &Database, state: &Path) -> Result<(), StateError> {
    let mut files = legacy_files(state, ".json")?;
    files.retain(|(bucket, path)| {
        let durable = bucket_spec(bucket).is_some_and(|spec| spec.durable);
        if !durable {
            tracing::warn!(file = %path.display(), "not a durable bucket; left alone");
        }
        durable
    });
    if files.is_empty() {
        return Ok(());
    }
    let write_failed =
        |e: &dyn std::fmt::Display| failed("cannot import the former state files", e);
    let txn = db.begin_write().map_err(|e| write_failed(&e))?;
    {
        let mut migrated = txn.open_table(MIGRATED).map_err(|e| write_failed(&e))?;
        let mut revisions = txn.open_table(REVISIONS).map_err(|e| write_failed(&e))?;
        for (bucket, path) in &files {
            let bucket = bucket.as_str();
            if migrated
                .get(bucket)
                .map_err(|e| write_failed(&e))?
                .is_some()
            {
                continue;
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| failed(format_args!("read {}", path.display()), e))?;
            let file: LegacyBucket = serde_json::from_str(&text)
                .map_err(|e| failed(format_args!("parse {}", path.display()), e))?;
            let mut table = txn
                .open_table(BucketTable::new(&table_name(bucket)))
                .map_err(|e| write_failed(&e))?;
            for (key, entry) in &file.entries {
                table
                    .insert(key.as_str(), (entry.revision, entry.value.as_bytes()))
                    .map_err(|e| write_failed(&e))?;
            }
            let counter = revisions
                .get(bucket)
                .map_err(|e| write_failed(&e))?
                .map(|g| g.value())
                .unwrap_or(0)
                .max(file.revision);
            revisions
                .insert(bucket, counter)
                .map_err(|e| write_failed(&e))?;
            migrated
                .insert(bucket, file.revision)
                .map_err(|e| write_failed(&e))?;
            tracing::info!(%bucket, keys = file.entries.len(), revision = file.revision, "imported a former state file");
        }
    }
    txn.commit().map_err(|e| write_failed(&e))?;
    mark_imported(&files, ".migrated")
}

/// Imports `<transcripts>/<session>.jsonl` files of the former transcript log, all in one
/// transaction, then renames each to `<session>.jsonl.migrated`. Archives (`.jsonl.bak.*`)
/// stay where they are.
fn migrate_legacy_transcripts(db: &Database, dir: &Path) -> Result<(), StateError> {
    let mut files = legacy_files(dir, ".jsonl")?;
    files.retain(|(session, path)| {
        let ours = crate::transcripts::check_id(session).is_ok();
        if !ours {
            tracing::warn!(file = %path.display(), "not a session id; left alone");
        }
        ours
    });
    if files.is_empty() {
        return Ok(());
    }
    let write_failed =
        |e: &dyn std::fmt::Display| failed("cannot import the former transcript files", e);
    let txn = db.begin_write().map_err(|e| write_failed(&e))?;
    {
        let mut migrated = txn.open_table(TX_MIGRATED).map_err(|e| write_failed(&e))?;
        let mut log = txn.open_table(TX_LOG).map_err(|e| write_failed(&e))?;
        for (session, path) in &files {
            let session = session.as_str();
            if migrated
                .get(session)
                .map_err(|e| write_failed(&e))?
                .is_some()
            {
                continue;
            }
            let bytes = std::fs::read(path)
                .map_err(|e| failed(format_args!("read {}", path.display()), e))?;
            let mut seq = last_seq(&log, session).map_err(|e| write_failed(&e))?;
            // As the former reader did: a line that is not JSON (a torn last line after a
            // crash mid-append, possibly cut inside a UTF-8 character) is skipped.
            for line in bytes.split(|b| *b == b'\n') {
                if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
                    continue;
                }
                seq += 1;
                log.insert((session, seq), line)
                    .map_err(|e| write_failed(&e))?;
            }
            migrated
                .insert(session, seq)
                .map_err(|e| write_failed(&e))?;
        }
        tracing::info!(sessions = files.len(), "imported former transcript files");
    }
    txn.commit().map_err(|e| write_failed(&e))?;
    mark_imported(&files, ".migrated")
}

#[cfg(test)]
pub(crate) mod tests {
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
        let db = memory_db().unwrap();
        let ops = [
            state("k", Some("1"), Condition::Absent),
            state("k", Some("x"), Condition::Revision(7)),
            state("j", Some("2"), Condition::Any),
            Op::Append {
                session: "s1".into(),
                message: b"{}".to_vec(),
            },
            state("k", Some("y"), Condition::Absent),
            state("k", Some("3"), Condition::Revision(1)),
            state("gone", None, Condition::Present),
            state("j", None, Condition::Revision(2)),
        ];
        let outcomes: Vec<_> = apply(&db, &ops.iter().collect::<Vec<_>>())
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
        let (changes, counter) = snapshot(&db, BUCKET_AGENTS).unwrap();
        assert_eq!(counter, 4);
        assert_eq!(
            changes,
            vec![Change {
                key: "k".into(),
                value: Some(Bytes::from("3")),
                revision: 3
            }]
        );
        assert_eq!(read_transcript(&db, "s1").unwrap(), vec![b"{}".to_vec()]);
    }
}
