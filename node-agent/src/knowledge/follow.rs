//! Keeps a node's [`KnowledgeIndex`] current with the state plane: a watch of the
//! knowledge bucket from the revision the index last committed, each batch of changes
//! applied on a blocking thread and committed with its revision. A restart resumes from
//! the committed revision (no rebuild); a new node starts from 0 and catches up alone; a
//! watch that ends is started again from where the index is.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use argent_planes::state::{list_json, Change, StateStore};
use argent_proto::subjects::BUCKET_KNOWLEDGE;

use super::index::{Batch, KnowledgeIndex};
use super::records::{CollectionRecord, StoredDocument, COLLECTION_PREFIX, DOC_PREFIX};

/// Changes applied per commit at most (a catch-up commits every this many).
const BATCH_CHANGES: usize = 512;
/// Bytes of document values per commit at most.
const BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Pause before watching again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Follows the bucket until `stop` turns true.
pub fn spawn(
    index: Arc<KnowledgeIndex>,
    state: Arc<dyn StateStore>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                result = follow(&index, state.as_ref()) => result,
                _ = stop.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => tracing::info!("knowledge watch ended; watching again"),
                Err(err) => {
                    tracing::warn!(%err, "knowledge index cannot follow the state; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_AFTER) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

async fn follow(index: &Arc<KnowledgeIndex>, state: &dyn StateStore) -> Result<(), String> {
    let latest = state
        .last_revision(BUCKET_KNOWLEDGE)
        .await
        .map_err(|e| e.to_string())?;
    if index.applied() > 0 && !same_bucket(index, state, latest).await? {
        // The cluster's state was replaced (a new bucket): what the index holds belongs
        // to a state that no longer exists.
        tracing::warn!(
            latest,
            applied = index.applied(),
            "knowledge bucket is not the one the index was built from; rebuilding"
        );
        blocking(index, |index| index.clear()).await?;
    }
    let from = index.applied();
    let mut changes = state
        .watch_after(BUCKET_KNOWLEDGE, from)
        .await
        .map_err(|e| e.to_string())?;
    // Collections are few and small: the whole set, then their changes from the watch
    // (a collection changed after `from` is also replayed, which is harmless).
    let collections = list_json::<CollectionRecord>(state, BUCKET_KNOWLEDGE, COLLECTION_PREFIX)
        .await
        .map_err(|e| e.to_string())?;
    index.set_collections(collections.into_iter().map(|(_, c)| c).collect());
    tracing::info!(from, latest, "knowledge index following the state");
    loop {
        let Some(batch) = next_batch(&mut changes).await else {
            return Ok(());
        };
        let revision = batch.last().map_or(0, |c| c.revision);
        let count = batch.len();
        blocking(index, move |index| {
            let mut staged = Batch::default();
            if let Some(last) = batch.last() {
                staged.ends_with(&last.key);
            }
            let applied = batch
                .iter()
                .try_for_each(|change| apply(index, change, &mut staged))
                .and_then(|()| index.commit(revision, staged));
            if applied.is_err() {
                // Start the next attempt (after a re-watch) from the committed index.
                index.rollback();
            }
            applied
        })
        .await?;
        tracing::debug!(count, revision, "knowledge changes indexed");
    }
}

/// Whether the bucket is the one the index was built from: not behind it, and still
/// holding the last key the index applied at a revision not below it (keys are never
/// deleted: documents leave tombstones, collections stay).
async fn same_bucket(
    index: &KnowledgeIndex,
    state: &dyn StateStore,
    latest: u64,
) -> Result<bool, String> {
    if latest < index.applied() {
        return Ok(false);
    }
    let Some(key) = index.last_key() else {
        return Ok(true);
    };
    let entry = state
        .get(BUCKET_KNOWLEDGE, &key)
        .await
        .map_err(|e| e.to_string())?;
    Ok(entry.is_some_and(|e| e.revision >= index.applied()))
}

/// The next changes: at least one (waiting for it), then whatever is already there.
async fn next_batch(changes: &mut mpsc::Receiver<Change>) -> Option<Vec<Change>> {
    let first = changes.recv().await?;
    let mut bytes = first.value.as_ref().map_or(0, |v| v.len());
    let mut batch = vec![first];
    while batch.len() < BATCH_CHANGES && bytes < BATCH_BYTES {
        match changes.try_recv() {
            Ok(change) => {
                bytes += change.value.as_ref().map_or(0, |v| v.len());
                batch.push(change);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

fn apply(
    index: &KnowledgeIndex,
    change: &Change,
    batch: &mut Batch,
) -> Result<(), super::index::IndexError> {
    if let Some(tag) = change.key.strip_prefix(COLLECTION_PREFIX) {
        match change
            .value
            .as_ref()
            .and_then(|v| serde_json::from_slice::<CollectionRecord>(v).ok())
        {
            Some(record) => batch.put_collection(record),
            None => batch.remove_collection(tag),
        }
    } else if let Some(id) = change.key.strip_prefix(DOC_PREFIX) {
        let stored = change
            .value
            .as_ref()
            .map(|v| serde_json::from_slice::<StoredDocument>(v));
        match stored {
            Some(Ok(StoredDocument::Live(doc))) => index.put_document(&doc, batch)?,
            Some(Ok(StoredDocument::Deleted(_))) | None => index.delete_document(id, batch),
            Some(Err(err)) => {
                tracing::warn!(key = %change.key, %err, "unreadable knowledge document skipped");
            }
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    index: &Arc<KnowledgeIndex>,
    work: impl FnOnce(&KnowledgeIndex) -> Result<T, super::index::IndexError> + Send + 'static,
) -> Result<T, String> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || work(&index))
        .await
        .map_err(|e| format!("knowledge index task failed: {e}"))?
        .map_err(|e| e.to_string())
}
