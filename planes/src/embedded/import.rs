//! Imports what former releases left in a state dir, on the first open of the database:
//!
//! * `argent.redb`, the first embedded store (redb): every table, in batches, then the file
//!   is renamed `argent.redb.migrated`;
//! * `state/<bucket>.json` of the file store (renamed `.json.migrated`);
//! * `transcripts/<session>.jsonl` of the file transcript log (renamed `.jsonl.migrated`).
//!
//! Each import is marked in the database before its files are renamed, so a crash between
//! the two never imports the same thing twice over newer writes.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};
use serde::Deserialize;

use super::{
    encode_entry, failed, kv_key, log_key, meta_key, seq_of, Overlay, Space, StateError, Store,
};
use crate::cluster::bucket_spec;

/// Everything a former release may have left in `dir`, oldest format last: the redb file
/// already holds what its own first open imported from the JSON files.
pub(super) fn import_former_stores(db: &Store, dir: &Path) -> Result<(), StateError> {
    import_redb(db, dir)?;
    migrate_legacy_state(db, &dir.join("state"))?;
    migrate_legacy_transcripts(db, &dir.join("transcripts"))
}

/// The file of the redb-based store.
pub const REDB_FILE: &str = "argent.redb";
/// Its tables, as it defined them (a different type would not open).
type RedbBucket<'a> = TableDefinition<'a, &'static str, (u64, &'static [u8])>;
const REDB_REVISIONS: TableDefinition<&str, u64> = TableDefinition::new("meta/revisions");
const REDB_MIGRATED: TableDefinition<&str, u64> = TableDefinition::new("meta/migrated");
const REDB_TX_MIGRATED: TableDefinition<&str, u64> =
    TableDefinition::new("meta/migrated-transcripts");
const REDB_TX_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("tx/log");
const REDB_TX_ARCHIVE: TableDefinition<(&str, u64, u64), &[u8]> =
    TableDefinition::new("tx/archive");
const REDB_TX_ARCHIVES: TableDefinition<&str, u64> = TableDefinition::new("tx/archives");
/// A write batch of the import holds at most this many entries, or bytes: bounds the
/// memory a large file needs (transcripts can hold large messages).
const IMPORT_BATCH: usize = 10_000;
const IMPORT_BATCH_BYTES: usize = 32 << 20;

/// Writes of an import, committed in bounded batches. Every write sets a key to a value read
/// from the old store, so a batch written again is the same batch.
struct Importer<'a> {
    db: &'a Store,
    overlay: Overlay<'a>,
    pending: usize,
    pending_bytes: usize,
    total: usize,
}

impl<'a> Importer<'a> {
    fn new(db: &'a Store) -> Self {
        Importer {
            db,
            overlay: Overlay::new(db),
            pending: 0,
            pending_bytes: 0,
            total: 0,
        }
    }

    fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.pending_bytes += key.len() + value.len();
        self.overlay.insert(space, key, value);
        self.pending += 1;
        self.total += 1;
        if self.pending >= IMPORT_BATCH || self.pending_bytes >= IMPORT_BATCH_BYTES {
            std::mem::replace(&mut self.overlay, Overlay::new(self.db)).commit()?;
            self.pending = 0;
            self.pending_bytes = 0;
        }
        Ok(())
    }

    fn finish(self) -> Result<usize, StateError> {
        self.overlay.commit()?;
        Ok(self.total)
    }
}

/// Copies every table of `<dir>/argent.redb` into the database, then renames the file.
fn import_redb(db: &Store, dir: &Path) -> Result<(), StateError> {
    let path = dir.join(REDB_FILE);
    if !path.exists() {
        return Ok(());
    }
    let marker = meta_key("imported", REDB_FILE);
    let fail = |e: &dyn std::fmt::Display| failed(format_args!("import {}", path.display()), e);
    let imported = Overlay::new(db).get(Space::Meta, &marker)?.is_some();
    let mut renamed = path.clone().into_os_string();
    renamed.push(".migrated");
    if imported && Path::new(&renamed).exists() {
        // Imported and renamed before: this file was written since, by an older build run
        // on this state dir after the upgrade. Importing it would overwrite newer writes:
        // it is left alone, and said so at every start.
        tracing::warn!(
            file = %path.display(),
            "an argent.redb was already imported into this state dir; this one (written \
             since by an older build?) is not imported and is left where it is"
        );
        return Ok(());
    }
    if !imported {
        let old = redb::Database::open(&path).map_err(|e| fail(&e))?;
        let txn = old.begin_read().map_err(|e| fail(&e))?;
        let mut import = Importer::new(db);
        let tables = txn.list_tables().map_err(|e| fail(&e))?;
        for table in tables {
            let Some(bucket) = table.name().strip_prefix("kv/") else {
                continue;
            };
            let definition = RedbBucket::new(table.name());
            let entries = txn.open_table(definition).map_err(|e| fail(&e))?;
            for item in entries.iter().map_err(|e| fail(&e))? {
                let (key, value) = item.map_err(|e| fail(&e))?;
                let (revision, value) = value.value();
                import.put(
                    Space::Kv,
                    kv_key(bucket, key.value()),
                    encode_entry(revision, value),
                )?;
            }
        }
        for (definition, kind) in [
            (REDB_REVISIONS, "rev"),
            (REDB_MIGRATED, "migrated"),
            (REDB_TX_MIGRATED, "tx-migrated"),
        ] {
            let Some(counters) = open_if_there(&txn, definition).map_err(|e| fail(&e))? else {
                continue;
            };
            for item in counters.iter().map_err(|e| fail(&e))? {
                let (name, counter) = item.map_err(|e| fail(&e))?;
                let counter = counter.value().to_be_bytes().to_vec();
                import.put(Space::Meta, meta_key(kind, name.value()), counter)?;
            }
        }
        if let Some(log) = open_if_there(&txn, REDB_TX_LOG).map_err(|e| fail(&e))? {
            for item in log.iter().map_err(|e| fail(&e))? {
                let (key, message) = item.map_err(|e| fail(&e))?;
                let (session, seq) = key.value();
                let message = message.value().to_vec();
                import.put(Space::TxLog, log_key(session, seq), message)?;
            }
        }
        if let Some(archive) = open_if_there(&txn, REDB_TX_ARCHIVE).map_err(|e| fail(&e))? {
            for item in archive.iter().map_err(|e| fail(&e))? {
                let (key, message) = item.map_err(|e| fail(&e))?;
                let (session, number, seq) = key.value();
                let mut archived = log_key(session, number);
                archived.extend_from_slice(&seq.to_be_bytes());
                import.put(Space::TxArchive, archived, message.value().to_vec())?;
            }
        }
        if let Some(archives) = open_if_there(&txn, REDB_TX_ARCHIVES).map_err(|e| fail(&e))? {
            for item in archives.iter().map_err(|e| fail(&e))? {
                let (session, number) = item.map_err(|e| fail(&e))?;
                let number = number.value().to_be_bytes().to_vec();
                import.put(
                    Space::TxArchives,
                    session.value().as_bytes().to_vec(),
                    number,
                )?;
            }
        }
        // Last, in the last batch: the import is done.
        import.put(Space::Meta, marker, Vec::new())?;
        let entries = import.finish()?;
        tracing::info!(file = %path.display(), entries, "imported the former redb store");
    }
    if Path::new(&renamed).exists() {
        // Never overwrite the copy of an earlier import.
        renamed.push(format!(".{}", argent_proto::now_ms()));
    }
    std::fs::rename(&path, &renamed)
        .map_err(|e| failed(format_args!("rename {}", path.display()), e))
}

/// A table of the old file, or `None` when that release never created it.
fn open_if_there<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    definition: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, TableError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The files of `dir` whose names end in `suffix`, with the rest of their names, sorted;
/// those whose name `keep` refuses are left alone, with a warning saying `why`.
fn legacy_files(
    dir: &Path,
    suffix: &str,
    keep: impl Fn(&str) -> bool,
    why: &str,
) -> Result<Vec<(String, PathBuf)>, StateError> {
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
    files.retain(|(name, path)| {
        let kept = keep(name);
        if !kept {
            tracing::warn!(file = %path.display(), "{why}; left alone");
        }
        kept
    });
    files.sort();
    Ok(files)
}

/// Whether an import of `name` is recorded under `kind` (a crash came between the import
/// and the rename of its file).
fn imported_before(overlay: &Overlay, kind: &str, name: &str) -> Result<bool, StateError> {
    Ok(overlay.get(Space::Meta, &meta_key(kind, name))?.is_some())
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

/// Imports `<state>/<bucket>.json` files of the former store, all in one batch (keeping
/// each key's revision and the bucket's counter), then renames each to
/// `<bucket>.json.migrated`.
fn migrate_legacy_state(db: &Store, state: &Path) -> Result<(), StateError> {
    let durable = |bucket: &str| bucket_spec(bucket).is_some_and(|spec| spec.durable);
    let files = legacy_files(state, ".json", durable, "not a durable bucket")?;
    if files.is_empty() {
        return Ok(());
    }
    let write_failed =
        |e: &dyn std::fmt::Display| failed("cannot import the former state files", e);
    let mut overlay = Overlay::new(db);
    for (bucket, path) in &files {
        let bucket = bucket.as_str();
        if imported_before(&overlay, "migrated", bucket)? {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed(format_args!("read {}", path.display()), e))?;
        let file: LegacyBucket = serde_json::from_str(&text)
            .map_err(|e| failed(format_args!("parse {}", path.display()), e))?;
        for (key, entry) in &file.entries {
            overlay.insert(
                Space::Kv,
                kv_key(bucket, key),
                encode_entry(entry.revision, entry.value.as_bytes()),
            );
        }
        let counter = overlay
            .counter("rev", bucket)
            .map_err(|e| write_failed(&e))?
            .max(file.revision);
        overlay.insert(
            Space::Meta,
            meta_key("rev", bucket),
            counter.to_be_bytes().to_vec(),
        );
        overlay.insert(
            Space::Meta,
            meta_key("migrated", bucket),
            file.revision.to_be_bytes().to_vec(),
        );
        tracing::info!(%bucket, keys = file.entries.len(), revision = file.revision, "imported a former state file");
    }
    overlay.commit().map_err(|e| write_failed(&e))?;
    mark_imported(&files, ".migrated")
}

/// Imports `<transcripts>/<session>.jsonl` files of the former transcript log, all in one
/// batch, then renames each to `<session>.jsonl.migrated`. Archives (`.jsonl.bak.*`)
/// stay where they are.
fn migrate_legacy_transcripts(db: &Store, dir: &Path) -> Result<(), StateError> {
    let ours = |session: &str| crate::transcripts::check_id(session).is_ok();
    let files = legacy_files(dir, ".jsonl", ours, "not a session id")?;
    if files.is_empty() {
        return Ok(());
    }
    let write_failed =
        |e: &dyn std::fmt::Display| failed("cannot import the former transcript files", e);
    let mut overlay = Overlay::new(db);
    for (session, path) in &files {
        let session = session.as_str();
        if imported_before(&overlay, "tx-migrated", session)? {
            continue;
        }
        let bytes =
            std::fs::read(path).map_err(|e| failed(format_args!("read {}", path.display()), e))?;
        let prefix = log_key(session, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut seq = overlay
            .last_key(Space::TxLog, prefix)
            .map_err(|e| write_failed(&e))?
            .map(|k| seq_of(&k))
            .unwrap_or(0);
        // As the former reader did: a line that is not JSON (a torn last line after a
        // crash mid-append, possibly cut inside a UTF-8 character) is skipped.
        for line in bytes.split(|b| *b == b'\n') {
            if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
                continue;
            }
            seq += 1;
            overlay.insert(Space::TxLog, log_key(session, seq), line.to_vec());
        }
        overlay.insert(
            Space::Meta,
            meta_key("tx-migrated", session),
            seq.to_be_bytes().to_vec(),
        );
    }
    tracing::info!(sessions = files.len(), "imported former transcript files");
    overlay.commit().map_err(|e| write_failed(&e))?;
    mark_imported(&files, ".migrated")
}
