//! The knowledge library (PROTOCOL.md §5.7): files ingested into collections, searched by
//! agents and operators anywhere in the cluster.
//!
//! * [`extract`] — from an uploaded file to its text; [`chunk`] — the text in windows.
//! * [`records`] — what the state plane keeps (the source of truth): documents with their
//!   chunks, collections with their owner and grants.
//! * [`index`] — this node's full-text (and vector) index of those records;
//!   [`follow`] keeps it current through a watch that resumes from its last commit.
//! * [`embed`] — embeddings from an OpenAI-compatible endpoint, when configured.
//!
//! Consistency: an ingest answers with the bucket revision of its last write; a read on any
//! node first waits (bounded) until its index has applied the bucket's latest revision, so
//! what was acknowledged through one gateway is found through every other.

pub mod chunk;
pub mod embed;
pub mod extract;
pub mod follow;
pub mod index;
pub mod records;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::watch;

use argent_planes::state::{modify_json, StateError, StateStore};
use argent_proto::config::SharedConfig;
use argent_proto::subjects::BUCKET_KNOWLEDGE;

use crate::error::ServiceError;
use crate::shared_config::ConfigSource;

use self::chunk::Windows;
use self::embed::Embedder;
use self::extract::{Extracted, Limits};
use self::index::{Hit, KnowledgeIndex, SearchQuery, StoredChunk};
use self::records::{
    collection_key, collection_tag, doc_key, document_id, encode_vector, same_agent, Access,
    ChunkRecord, CollectionRecord, DocumentRecord, Grant, Source, StoredDocument, Tombstone,
};

/// How long a read waits for this node's index to reach the bucket's latest revision.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// How long a search waits for its query's embedding before it answers by keywords.
const QUERY_EMBED_WAIT: Duration = Duration::from_secs(2);
/// `ingested[]` entries in an ingest answer at most (upstream's).
const MAX_INGESTED_LISTED: usize = 500;
/// `summary` of a search result, characters (upstream's).
const SUMMARY_CHARS: usize = 600;
/// `excerpt` of a library row, characters (upstream's).
const EXCERPT_CHARS: usize = 260;

/// The knowledge service of one node-agent.
pub struct Knowledge {
    state: Arc<dyn StateStore>,
    config: ConfigSource,
    index: Arc<KnowledgeIndex>,
    node_id: String,
    /// The revision the index had when this node started (a restart resumes from it).
    started_from: u64,
    stop: watch::Sender<bool>,
    /// Files being extracted at once (CPU and memory bound: one per core).
    extractions: tokio::sync::Semaphore,
    /// The embeddings endpoint of the config snapshot it was made from (one HTTP client
    /// per configuration, not per call).
    embedder: parking_lot::Mutex<Option<EmbedderOf>>,
}

/// An embeddings endpoint (`None`: not configured) and the config snapshot it is of.
type EmbedderOf = (Arc<SharedConfig>, Option<Arc<Embedder>>);

/// A file of an ingest call.
#[derive(Debug, Clone)]
pub struct IngestFile {
    pub file_name: String,
    pub mime_type: Option<String>,
    pub content: String,
    /// Why the file is refused before it is read (it was too large to load), if it is.
    pub refused: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The collection's name as given (trimmed; the default when empty).
    pub collection: String,
    pub windows: Windows,
    pub item_extra: Map<String, Value>,
    pub source: Source,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub success: bool,
    pub collection: String,
    pub agent_id: String,
    pub accepted_files: usize,
    pub rejected_files: usize,
    pub total_chunks: usize,
    pub embedded_chunks: usize,
    pub ingested: Vec<IngestedChunk>,
    pub errors: Vec<FileError>,
    /// [EXT] The bucket revision of the last write: every index that has applied it
    /// finds what this call ingested.
    pub revision: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestedChunk {
    pub id: String,
    pub file_name: String,
    pub chunk: usize,
    pub total: usize,
    pub citation: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileError {
    pub file_name: String,
    pub error: String,
}

impl IngestReport {
    /// This report and a later one of the same call, as one.
    pub fn merge(mut self, later: IngestReport) -> IngestReport {
        self.accepted_files += later.accepted_files;
        self.rejected_files += later.rejected_files;
        self.total_chunks += later.total_chunks;
        self.embedded_chunks += later.embedded_chunks;
        let room = MAX_INGESTED_LISTED.saturating_sub(self.ingested.len());
        self.ingested.extend(later.ingested.into_iter().take(room));
        self.errors.extend(later.errors);
        self.revision = self.revision.max(later.revision);
        self
    }
}

/// What a search asks.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub collections: Vec<String>,
    pub limit: usize,
}

/// Filters shared by the library's list, delete and reindex.
#[derive(Debug, Clone, Default)]
pub struct LibraryFilter {
    /// Lower-cased substring of the text, title, file, collection or citation.
    pub q: Option<String>,
    /// Collection names or tags.
    pub collections: Vec<String>,
    /// Lower-cased file name, a substring unless `source_file_exact`.
    pub source_file: Option<String>,
    pub source_file_exact: bool,
}

impl Knowledge {
    /// Opens the index kept in `dir` (in memory without one) and starts following the
    /// state plane.
    pub fn start(node_id: &str, state: Arc<dyn StateStore>, dir: Option<&Path>) -> Arc<Self> {
        let index = KnowledgeIndex::open(dir).unwrap_or_else(|err| {
            // The node still serves the library, from an index it builds in memory.
            tracing::error!(%err, "knowledge index cannot be kept on disk; keeping it in memory");
            KnowledgeIndex::open(None).expect("an index in memory opens")
        });
        let index = Arc::new(index);
        let started_from = index.applied();
        let (stop, stop_rx) = watch::channel(false);
        follow::spawn(index.clone(), state.clone(), stop_rx);
        Arc::new(Knowledge {
            config: ConfigSource::new(state.clone()),
            state,
            index,
            node_id: node_id.to_string(),
            started_from,
            stop,
            extractions: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            embedder: parking_lot::Mutex::new(None),
        })
    }

    /// Stops following the state (the node is stopping).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub async fn config(&self) -> Result<Arc<SharedConfig>, ServiceError> {
        Ok(self.config.current().await?)
    }

    /// The embeddings endpoint the current config names, if any (`Err`: misconfigured).
    async fn embedder(&self) -> Result<Option<Arc<Embedder>>, ServiceError> {
        let config = self.config().await?;
        let mut cached = self.embedder.lock();
        if let Some((of, embedder)) = cached.as_ref() {
            if Arc::ptr_eq(of, &config) {
                return Ok(embedder.clone());
            }
        }
        let embedder = Embedder::from_config(&config)
            .map_err(|e| ServiceError::Refused(e.to_string()))?
            .map(Arc::new);
        *cached = Some((config, embedder.clone()));
        Ok(embedder)
    }

    /// What this node's index is at: `{nodeId, revision, startedFrom, chunks}` [EXT].
    pub fn index_status(&self) -> Value {
        serde_json::json!({
            "nodeId": self.node_id,
            "revision": self.index.applied(),
            "startedFrom": self.started_from,
            "chunks": self.index.chunk_count(),
        })
    }

    /// The acting agent of a call: the agent of `sessionKey`, else the default agent.
    pub fn acting_agent(config: &SharedConfig, session_key: Option<&str>) -> String {
        let agents = config.agents();
        match session_key.map(str::trim).filter(|k| !k.is_empty()) {
            Some(key) => {
                let key = argent_proto::session_key::SessionKey::canonical(key, agents);
                argent_proto::session_key::agent_of(key.as_str(), agents).to_string()
            }
            None => agents.default_id.clone(),
        }
    }

    /// Waits until this node's index has applied every write acknowledged so far. An
    /// index still behind after [`CATCH_UP_WAIT`] (catching up, or stuck) does not answer:
    /// a stale answer could miss a document or, worse, honour a revoked grant. The caller
    /// gets a retryable `UNAVAILABLE`, which another node may serve.
    async fn catch_up(&self) -> Result<(), ServiceError> {
        let target = self.state.last_revision(BUCKET_KNOWLEDGE).await?;
        let mut applied = self.index.watch_applied();
        let mut loaded = self.index.watch_collections_loaded();
        let reached = tokio::time::timeout(CATCH_UP_WAIT, async {
            let _ = loaded.wait_for(|l| *l).await;
            let _ = applied.wait_for(|r| *r >= target).await;
        })
        .await;
        if reached.is_err() {
            tracing::warn!(
                target,
                applied = self.index.applied(),
                "knowledge index behind the state; refusing to answer from it"
            );
            return Err(ServiceError::Contended {
                message: format!(
                    "the knowledge index of node {} is catching up ({} of {target}); retry",
                    self.node_id,
                    self.index.applied()
                ),
                retry_after_ms: Some(1000),
            });
        }
        Ok(())
    }

    // ---- collections and access ----

    /// The collection `name` (tag `tag`), created with `actor` as its owner when missing
    /// and `create` is set.
    async fn collection(
        &self,
        name: &str,
        tag: &str,
        actor: &str,
        create: bool,
    ) -> Result<Option<(CollectionRecord, u64)>, ServiceError> {
        let key = collection_key(tag);
        for _ in 0..4 {
            if let Some(entry) = self.state.get(BUCKET_KNOWLEDGE, &key).await? {
                let record: CollectionRecord = serde_json::from_slice(&entry.value)
                    .map_err(|e| ServiceError::Unreadable(format!("collection {tag}: {e}")))?;
                return Ok(Some((record, entry.revision)));
            }
            if !create {
                return Ok(None);
            }
            let record = CollectionRecord::new(name, tag, actor);
            let bytes = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
            match self.state.create(BUCKET_KNOWLEDGE, &key, bytes).await {
                Ok(revision) => return Ok(Some((record, revision))),
                // Someone created it meanwhile: read theirs.
                Err(StateError::Exists) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ServiceError::Contended {
            message: format!("knowledge collection {tag} is changing too fast; retry"),
            retry_after_ms: Some(500),
        })
    }

    /// The tags of the collections `actor` may read, as the index knows them, narrowed to
    /// `wanted` (names or tags) when given: an explicit collection it may not read (or
    /// that does not exist) is refused, as upstream does.
    fn readable(&self, actor: &str, wanted: &[String]) -> Result<HashSet<String>, ServiceError> {
        let known: BTreeMap<String, CollectionRecord> = self
            .index
            .collections()
            .into_iter()
            .map(|c| (c.collection_tag.clone(), c))
            .collect();
        if wanted.is_empty() {
            return Ok(known
                .values()
                .filter(|c| c.access(actor).can_read)
                .map(|c| c.collection_tag.clone())
                .collect());
        }
        let mut tags = HashSet::new();
        for name in wanted {
            let tag = collection_tag(name, "");
            if tag.is_empty() {
                continue;
            }
            match known.get(&tag) {
                Some(c) if c.access(actor).can_read => {
                    tags.insert(tag);
                }
                _ => {
                    return Err(ServiceError::Denied(format!(
                        "No read access to knowledge collection: {tag}"
                    )))
                }
            }
        }
        Ok(tags)
    }

    /// The tags of the collections `actor` may write, among those the index knows.
    fn writable(&self, actor: &str) -> HashSet<String> {
        self.index
            .collections()
            .into_iter()
            .filter(|c| c.access(actor).can_write)
            .map(|c| c.collection_tag)
            .collect()
    }

    // ---- ingest ----

    pub async fn ingest(
        &self,
        actor: &str,
        files: Vec<IngestFile>,
        options: IngestOptions,
    ) -> Result<IngestReport, ServiceError> {
        let config = self.config().await?;
        let limits = Limits::from_config(&config.knowledge());
        let tag = collection_tag(&options.collection, records::DEFAULT_COLLECTION);
        let (collection, _) = self
            .collection(&options.collection, &tag, actor, true)
            .await?
            .expect("created when missing");
        if !collection.access(actor).can_write {
            return Err(ServiceError::Refused(format!(
                "No write access to knowledge collection: {}",
                options.collection
            )));
        }
        let embedder = match self.embedder().await {
            Ok(embedder) => embedder,
            Err(err) => {
                tracing::warn!(%err, "embeddings not available; ingesting for keyword search only");
                None
            }
        };
        let mut report = IngestReport {
            success: true,
            collection: options.collection.clone(),
            agent_id: actor.to_string(),
            accepted_files: 0,
            rejected_files: 0,
            total_chunks: 0,
            embedded_chunks: 0,
            ingested: Vec::new(),
            errors: Vec::new(),
            revision: 0,
        };
        for file in files {
            let file_name = file.file_name.clone();
            let document = match self
                .prepare(
                    actor,
                    &collection,
                    file,
                    &options,
                    &limits,
                    embedder.as_deref(),
                )
                .await
            {
                Ok(document) => document,
                Err(error) => {
                    report.rejected_files += 1;
                    report.errors.push(FileError { file_name, error });
                    continue;
                }
            };
            // `StoredDocument` is untagged: a live document is stored as the record itself.
            let bytes = Bytes::from(serde_json::to_vec(&document).expect("records serialize"));
            // One document is one stored value: one too large for the store is this file's
            // failure, not the call's.
            match self
                .state
                .put(BUCKET_KNOWLEDGE, &document.key(), bytes)
                .await
            {
                Ok(revision) => report.revision = revision,
                Err(StateError::TooLarge { size, limit }) => {
                    report.rejected_files += 1;
                    report.errors.push(FileError {
                        file_name: document.file_name.clone(),
                        error: format!(
                            "document too large to store: {} chunks, {size} bytes (limit: {limit}); split the file",
                            document.chunks.len()
                        ),
                    });
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
            report.accepted_files += 1;
            report.total_chunks += document.chunks.len();
            report.embedded_chunks += document
                .chunks
                .iter()
                .filter(|c| c.vector.is_some())
                .count();
            for chunk in &document.chunks {
                if report.ingested.len() < MAX_INGESTED_LISTED {
                    report.ingested.push(IngestedChunk {
                        id: document.chunk_id(chunk.index),
                        file_name: document.file_name.clone(),
                        chunk: chunk.index + 1,
                        total: document.chunk_total,
                        citation: document.citation(chunk.index),
                    });
                }
            }
        }
        Ok(report)
    }

    /// One file made into a document: extracted (on a blocking thread; a parser that
    /// panics on hostile bytes refuses the file), chunked, embedded when configured.
    async fn prepare(
        &self,
        actor: &str,
        collection: &CollectionRecord,
        file: IngestFile,
        options: &IngestOptions,
        limits: &Limits,
        embedder: Option<&Embedder>,
    ) -> Result<DocumentRecord, String> {
        if let Some(why) = file.refused {
            return Err(why);
        }
        if file.content.trim().is_empty() {
            return Err(format!("empty content ({})", file.file_name));
        }
        let limits_copy = *limits;
        let windows = options.windows;
        let name = file.file_name.clone();
        // Parsers run one per core at most, whatever the number of calls.
        let _permit = self
            .extractions
            .acquire()
            .await
            .map_err(|_| "the node is stopping".to_string())?;
        let (extracted, pieces): (Extracted, _) = tokio::task::spawn_blocking(move || {
            let extracted = extract::extract(
                &file.file_name,
                file.mime_type.as_deref(),
                &file.content,
                &limits_copy,
            )?;
            let pieces = chunk::chunks_with_offsets(&extracted.text, windows);
            Ok::<_, String>((extracted, pieces))
        })
        .await
        .map_err(|_| format!("{name} could not be read (its parser failed on this file)"))??;
        if pieces.is_empty() {
            return Err("no extractable text".into());
        }
        let extra = &options.item_extra;
        let text_of = |key: &str| {
            extra
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let language = text_of("docLanguage")
            .map(|l| l.to_ascii_lowercase())
            .or_else(|| detect_language(&extracted.text));
        let tags = extra
            .get("docTags")
            .or_else(|| extra.get("tags"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let now = argent_proto::now_ms();
        let mut chunks: Vec<ChunkRecord> = pieces
            .into_iter()
            .enumerate()
            .map(|(index, (start, end, text))| ChunkRecord {
                index,
                text,
                start,
                end,
                vector: None,
            })
            .collect();
        let mut embedding_model = None;
        if let Some(embedder) = embedder {
            let inputs: Vec<String> = chunks
                .iter()
                .map(|c| format!("{}\n\n{}", name, c.text))
                .collect();
            match embedder.embed(&inputs).await {
                Ok(vectors) => {
                    for (chunk, vector) in chunks.iter_mut().zip(vectors) {
                        chunk.vector = Some(encode_vector(&vector));
                    }
                    embedding_model = Some(embedder.model.clone());
                }
                // Non-fatal: the document is still found by its words.
                Err(err) => tracing::warn!(file = %name, %err, "chunks not embedded"),
            }
        }
        let stem = Path::new(&name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(&name)
            .to_string();
        Ok(DocumentRecord {
            id: document_id(&collection.collection_tag, &name),
            collection: options.collection.clone(),
            collection_tag: collection.collection_tag.clone(),
            agent_id: actor.to_string(),
            source: options.source,
            title: text_of("docTitle").or(extracted.title).unwrap_or(stem),
            doc_type: text_of("docType").unwrap_or_else(|| extracted.format.name().to_string()),
            language,
            tags,
            created_at: text_of("docCreatedAt").unwrap_or_else(|| iso(now)),
            saved_at_ms: now,
            embedding_model,
            extra: extra.clone(),
            chunk_total: chunks.len(),
            chunks,
            file_name: name,
        })
    }

    // ---- search ----

    pub async fn search(
        &self,
        actor: &str,
        request: &SearchRequest,
    ) -> Result<(Vec<Hit>, usize), ServiceError> {
        self.catch_up().await?;
        let collections = self.readable(actor, &request.collections)?;
        let vector = match self.embedder().await {
            Ok(Some(embedder)) => match tokio::time::timeout(
                QUERY_EMBED_WAIT,
                embedder.embed(std::slice::from_ref(&request.query)),
            )
            .await
            {
                Ok(Ok(mut vectors)) => vectors.pop(),
                // Keyword hits are never lost to a failing or hanging endpoint.
                Ok(Err(err)) => {
                    tracing::warn!(%err, "query not embedded; keyword search only");
                    None
                }
                Err(_) => {
                    tracing::warn!("embeddings endpoint too slow; keyword search only");
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%err, "embeddings not available; keyword search only");
                None
            }
        };
        let index = self.index.clone();
        let text = request.query.clone();
        let limit = request.limit;
        tokio::task::spawn_blocking(move || {
            index.search(&SearchQuery {
                text: &text,
                collections: &collections,
                limit,
                vector,
            })
        })
        .await
        .map_err(|e| ServiceError::Unreadable(format!("knowledge search failed: {e}")))?
        .map_err(|e| ServiceError::Unreadable(e.to_string()))
    }

    // ---- library ----

    /// The rows matching `filter` among the collections `actor` may read (`writable`:
    /// may write), newest first: at most `scan` rows are looked at, filtered as they are
    /// read (what does not match is never kept).
    pub async fn library(
        &self,
        actor: &str,
        filter: &LibraryFilter,
        scan: usize,
        writable: bool,
    ) -> Result<Vec<StoredChunk>, ServiceError> {
        self.catch_up().await?;
        let mut tags = if writable {
            self.writable(actor)
        } else {
            self.readable(actor, &[])?
        };
        if !filter.collections.is_empty() {
            let wanted: HashSet<String> = filter
                .collections
                .iter()
                .map(|c| collection_tag(c, ""))
                .collect();
            tags.retain(|t| wanted.contains(t));
        }
        let index = self.index.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || index.scan(&tags, scan, |row| filter.matches(row)))
            .await
            .map_err(|e| ServiceError::Unreadable(format!("knowledge scan failed: {e}")))?
            .map_err(|e| ServiceError::Unreadable(e.to_string()))
    }

    /// Chunks by id among the collections `actor` may write (others are not there).
    pub async fn writable_chunks(
        &self,
        actor: &str,
        ids: Vec<String>,
    ) -> Result<Vec<StoredChunk>, ServiceError> {
        self.catch_up().await?;
        let tags = self.writable(actor);
        let index = self.index.clone();
        let chunks = tokio::task::spawn_blocking(move || index.chunks_by_id(&ids))
            .await
            .map_err(|e| ServiceError::Unreadable(format!("knowledge lookup failed: {e}")))?
            .map_err(|e| ServiceError::Unreadable(e.to_string()))?;
        Ok(chunks
            .into_iter()
            .filter(|c| tags.contains(&c.collection_tag))
            .collect())
    }

    /// Deletes chunks: a document that loses all its chunks becomes a tombstone. Returns
    /// the ids deleted and those that failed (with why).
    pub async fn delete(
        &self,
        chunks: &[StoredChunk],
    ) -> Result<(usize, Vec<(String, String)>), ServiceError> {
        // Chunks of the version that was listed: a document ingested again since is not
        // touched (its chunk numbers now name other text).
        let mut by_document: BTreeMap<&str, (u64, HashSet<usize>)> = BTreeMap::new();
        for chunk in chunks {
            by_document
                .entry(chunk.doc_id.as_str())
                .or_insert_with(|| (chunk.saved_at_ms, HashSet::new()))
                .1
                .insert(chunk.chunk_index as usize);
        }
        let mut deleted = 0;
        let mut failed = Vec::new();
        for (document, (version, indexes)) in by_document {
            let outcome = modify_json::<StoredDocument, usize, ServiceError>(
                self.state.as_ref(),
                BUCKET_KNOWLEDGE,
                &doc_key(document),
                |current| {
                    let Some(mut doc) = current.and_then(StoredDocument::live) else {
                        return Ok(None);
                    };
                    if doc.saved_at_ms != version {
                        return Err(ServiceError::Refused(
                            "the document was ingested again since it was listed; list it again"
                                .into(),
                        ));
                    }
                    let before = doc.chunks.len();
                    doc.chunks.retain(|c| !indexes.contains(&c.index));
                    let removed = before - doc.chunks.len();
                    let next = if doc.chunks.is_empty() {
                        StoredDocument::Deleted(Tombstone {
                            id: doc.id.clone(),
                            deleted_at_ms: argent_proto::now_ms(),
                        })
                    } else {
                        StoredDocument::Live(Box::new(doc))
                    };
                    Ok(Some((next, removed)))
                },
            )
            .await;
            match outcome {
                Ok(removed) => deleted += removed.unwrap_or(0),
                Err(err) => {
                    for index in indexes {
                        failed.push((records::chunk_id(document, index), err.to_string()));
                    }
                }
            }
        }
        Ok((deleted, failed))
    }

    /// Embeds the given chunks again (`only_missing`: those without a vector). Returns
    /// `(processed, embedded, skipped, failed)`.
    pub async fn reindex(
        &self,
        chunks: &[StoredChunk],
        only_missing: bool,
    ) -> Result<(usize, usize, usize, Vec<(String, String)>), ServiceError> {
        let embedder = self.embedder().await?.ok_or_else(|| {
            ServiceError::Refused(
                "semantic search is not configured: set agents.defaults.memorySearch".into(),
            )
        })?;
        let processed = chunks.len();
        let mut skipped = 0;
        let mut by_document: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for chunk in chunks {
            if only_missing && chunk.has_vector || chunk.text.trim().is_empty() {
                skipped += 1;
            } else {
                by_document
                    .entry(chunk.doc_id.as_str())
                    .or_default()
                    .push(chunk.chunk_index as usize);
            }
        }
        let mut embedded = 0;
        let mut failed = Vec::new();
        for (document, indexes) in by_document {
            let key = doc_key(document);
            let fail = |failed: &mut Vec<(String, String)>, why: String| {
                for index in &indexes {
                    failed.push((records::chunk_id(document, *index), why.clone()));
                }
            };
            let Some(entry) = self.state.get(BUCKET_KNOWLEDGE, &key).await? else {
                fail(&mut failed, "the document was deleted".into());
                continue;
            };
            let Some(doc) = serde_json::from_slice::<StoredDocument>(&entry.value)
                .ok()
                .and_then(StoredDocument::live)
            else {
                fail(&mut failed, "the document was deleted".into());
                continue;
            };
            let inputs: Vec<String> = doc
                .chunks
                .iter()
                .filter(|c| indexes.contains(&c.index))
                .map(|c| c.text.clone())
                .collect();
            let vectors = match embedder.embed(&inputs).await {
                Ok(vectors) => vectors,
                Err(err) => {
                    fail(&mut failed, err.to_string());
                    continue;
                }
            };
            let mut next = doc;
            let mut vectors = vectors.into_iter();
            for chunk in next
                .chunks
                .iter_mut()
                .filter(|c| indexes.contains(&c.index))
            {
                chunk.vector = vectors.next().map(|v| encode_vector(&v));
            }
            next.embedding_model = Some(embedder.model.clone());
            let bytes = Bytes::from(
                serde_json::to_vec(&StoredDocument::Live(Box::new(next)))
                    .expect("records serialize"),
            );
            match self
                .state
                .update(BUCKET_KNOWLEDGE, &key, bytes, entry.revision)
                .await
            {
                Ok(_) => embedded += inputs.len(),
                Err(err) => fail(&mut failed, format!("not saved: {err}")),
            }
        }
        Ok((processed, embedded, skipped, failed))
    }

    // ---- collections ----

    /// Every collection the index knows, with `agent`'s access.
    pub async fn collections(
        &self,
        agent: &str,
    ) -> Result<Vec<(CollectionRecord, Access)>, ServiceError> {
        self.catch_up().await?;
        let mut list: Vec<(CollectionRecord, Access)> = self
            .index
            .collections()
            .into_iter()
            .map(|c| {
                let access = c.access(agent);
                (c, access)
            })
            .collect();
        list.sort_by(|a, b| a.0.collection.cmp(&b.0.collection));
        Ok(list)
    }

    /// Sets `target`'s grant on a collection; only its owner may (the collection is
    /// created, owned by `actor`, when missing, as upstream does).
    pub async fn grant(
        &self,
        actor: &str,
        name: &str,
        target: &str,
        grant: Grant,
    ) -> Result<CollectionRecord, ServiceError> {
        let tag = collection_tag(name, records::DEFAULT_COLLECTION);
        let (record, _) = self
            .collection(name, &tag, actor, true)
            .await?
            .expect("created when missing");
        if !record.access(actor).is_owner {
            return Err(ServiceError::Denied(format!(
                "agent {actor} is not owner of collection {}",
                record.collection
            )));
        }
        let updated = modify_json::<CollectionRecord, CollectionRecord, ServiceError>(
            self.state.as_ref(),
            BUCKET_KNOWLEDGE,
            &collection_key(&tag),
            |current| {
                let Some(mut record) = current else {
                    return Ok(None);
                };
                if !record.access(actor).is_owner {
                    return Err(ServiceError::Denied(format!(
                        "agent {actor} is not owner of collection {}",
                        record.collection
                    )));
                }
                // One grant per agent, whatever the case it was named in.
                let target = target.trim().to_lowercase();
                record
                    .grants
                    .retain(|grantee, _| !same_agent(grantee, &target));
                record.grants.insert(target, grant);
                Ok(Some((record.clone(), record)))
            },
        )
        .await?;
        updated.ok_or_else(|| ServiceError::Unreadable(format!("collection not found: {name}")))
    }
}

impl Drop for Knowledge {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl LibraryFilter {
    fn matches(&self, row: &StoredChunk) -> bool {
        let file = row.source_file.to_lowercase();
        if let Some(wanted) = &self.source_file {
            let ok = if self.source_file_exact {
                &file == wanted
            } else {
                file.contains(wanted.as_str())
            };
            if !ok {
                return false;
            }
        }
        if let Some(q) = &self.q {
            let citation = records::citation(&row.source_file, row.chunk_index as usize);
            let hay = [
                row.text.as_str(),
                row.title.as_str(),
                row.source_file.as_str(),
                row.collection.as_str(),
                citation.as_str(),
            ];
            if !hay.iter().any(|h| h.to_lowercase().contains(q.as_str())) {
                return false;
            }
        }
        true
    }
}

/// The ISO 639-1 code of a text's language when it is clear enough (for stemming).
fn detect_language(text: &str) -> Option<String> {
    let sample: String = text.chars().take(4000).collect();
    let info = whatlang::detect(&sample)?;
    if !info.is_reliable() {
        return None;
    }
    let code = match info.lang() {
        whatlang::Lang::Eng => "en",
        whatlang::Lang::Deu => "de",
        whatlang::Lang::Fra => "fr",
        whatlang::Lang::Spa => "es",
        whatlang::Lang::Ita => "it",
        whatlang::Lang::Por => "pt",
        whatlang::Lang::Nld => "nl",
        whatlang::Lang::Dan => "da",
        whatlang::Lang::Swe => "sv",
        whatlang::Lang::Nob => "no",
        whatlang::Lang::Fin => "fi",
        whatlang::Lang::Hun => "hu",
        whatlang::Lang::Ron => "ro",
        whatlang::Lang::Rus => "ru",
        whatlang::Lang::Ell => "el",
        whatlang::Lang::Tur => "tr",
        whatlang::Lang::Ara => "ar",
        whatlang::Lang::Tam => "ta",
        // Reported as ISO 639-1 only; other languages are not stemmed and read as unknown.
        _ => return None,
    };
    Some(code.to_string())
}

pub use crate::clock::iso;

/// A text cut to `max` characters (plus `...` when cut, as upstream's summaries are).
pub fn cut(text: &str, max: usize, ellipsis: bool) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) if ellipsis => format!("{}...", &text[..at]),
        Some((at, _)) => text[..at].to_string(),
    }
}

/// Upstream's lengths, for the method adapters.
pub const fn summary_chars() -> usize {
    SUMMARY_CHARS
}
pub const fn excerpt_chars() -> usize {
    EXCERPT_CHARS
}

/// The vault's Markdown files (`knowledge.vault.ingest`): relative paths with `/`, in
/// name order, skipping excluded paths, at most `limit`.
pub fn vault_files(root: &Path, excludes: &[String], limit: usize) -> Vec<(String, PathBuf)> {
    let excludes: Vec<String> = excludes
        .iter()
        .map(|e| {
            let e = e.replace('\\', "/");
            let e = e.trim_start_matches("./").trim_start_matches('/');
            let e = e.trim_end_matches("/**").trim_end_matches('/');
            e.to_lowercase()
        })
        .filter(|e| !e.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let relative = relative.to_string_lossy().replace('\\', "/");
            let lower = relative.to_lowercase();
            if excludes
                .iter()
                .any(|e| lower == *e || lower.starts_with(&format!("{e}/")))
            {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && lower.ends_with(".md") {
                out.push((relative, path));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.truncate(limit);
    out
}

/// Rows keyed for `distinctByDocument`: the first row of each document in order.
pub fn distinct_by_document(rows: Vec<StoredChunk>) -> Vec<StoredChunk> {
    let mut seen = HashSet::new();
    rows.into_iter()
        .filter(|r| seen.insert(r.doc_id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argent_planes::state_embedded::EmbeddedStore;

    fn text_file(name: &str, content: &str) -> IngestFile {
        IngestFile {
            file_name: name.into(),
            mime_type: None,
            content: content.into(),
            refused: None,
        }
    }

    fn options(collection: &str) -> IngestOptions {
        IngestOptions {
            collection: collection.into(),
            windows: Windows::default(),
            item_extra: Map::new(),
            source: Source::KnowledgeIngest,
        }
    }

    async fn search(k: &Knowledge, actor: &str, query: &str) -> Vec<String> {
        let request = SearchRequest {
            query: query.into(),
            collections: Vec::new(),
            limit: 10,
        };
        let (hits, _) = k.search(actor, &request).await.unwrap();
        hits.into_iter().map(|h| h.chunk.source_file).collect()
    }

    const LIGHTHOUSE: &str = "The lighthouse keeper lived alone on the rock for many years. \
        He was running the lamp every night and writing letters to his sister. \
        Every winter the harbour froze and the fishing boats stayed home until spring.";

    #[tokio::test(flavor = "multi_thread")]
    async fn ingest_search_delete_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> =
            Arc::new(EmbeddedStore::open(Some(&dir.path().join("state"))).unwrap());
        let index_dir = dir.path().join("index");
        let k = Knowledge::start("n1", state.clone(), Some(&index_dir));
        let report = k
            .ingest(
                "main",
                vec![
                    text_file("keeper.txt", LIGHTHOUSE),
                    text_file("empty.txt", "   "),
                ],
                options("Notes"),
            )
            .await
            .unwrap();
        assert_eq!((report.accepted_files, report.rejected_files), (1, 1));
        assert_eq!(report.errors[0].error, "empty content (empty.txt)");
        assert_eq!(report.ingested[0].citation, "keeper.txt#chunk-1");
        // Read-your-writes (no sleep); words of different sentences (OR); stemming.
        assert_eq!(
            search(&k, "main", "lighthouse harbour").await,
            ["keeper.txt"]
        );
        assert_eq!(search(&k, "main", "runs").await, ["keeper.txt"]);
        assert!(search(&k, "main", "zebra").await.is_empty());
        // Another agent reads nothing it was not granted.
        assert!(search(&k, "ops", "lighthouse").await.is_empty());
        let denied = k
            .search(
                "ops",
                &SearchRequest {
                    query: "lighthouse".into(),
                    collections: vec!["Notes".into()],
                    limit: 5,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            denied,
            ServiceError::Denied("No read access to knowledge collection: notes".into())
        );
        let grant = Grant {
            can_read: true,
            can_write: false,
            is_owner: false,
        };
        assert!(matches!(
            k.grant("ops", "Notes", "ops", grant).await,
            Err(ServiceError::Denied(m)) if m == "agent ops is not owner of collection Notes"
        ));
        k.grant("main", "Notes", "Ops", grant).await.unwrap();
        assert_eq!(search(&k, "ops", "lighthouse").await, ["keeper.txt"]);
        // Revoked under another spelling of the same agent: revoked.
        let none = Grant {
            can_read: false,
            can_write: false,
            is_owner: false,
        };
        k.grant("main", "Notes", "ops", none).await.unwrap();
        assert!(search(&k, "ops", "lighthouse").await.is_empty());
        k.grant("main", "Notes", "ops", grant).await.unwrap();
        assert_eq!(search(&k, "ops", "lighthouse").await, ["keeper.txt"]);

        // The index resumes from its commit: a second service on the same directory
        // starts where the first stopped and sees later writes.
        k.stop();
        drop(k);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let k = Knowledge::start("n1", state.clone(), Some(&index_dir));
        assert!(k.started_from > 0, "rebuilt from zero");
        assert_eq!(search(&k, "main", "lighthouse").await, ["keeper.txt"]);

        // Delete leaves a tombstone that every index applies; re-ingest replaces.
        let rows = k
            .library("main", &LibraryFilter::default(), 100, true)
            .await
            .unwrap();
        let (deleted, failed) = k.delete(&rows).await.unwrap();
        assert_eq!((deleted, failed.len()), (rows.len(), 0));
        assert!(search(&k, "main", "lighthouse").await.is_empty());
        k.ingest(
            "main",
            vec![text_file("keeper.txt", "A note about zebras.")],
            options("Notes"),
        )
        .await
        .unwrap();
        assert_eq!(search(&k, "main", "zebra").await, ["keeper.txt"]);
        assert!(search(&k, "main", "lighthouse").await.is_empty());
        // A fresh node catches up on its own, deletes included.
        let fresh = Knowledge::start("n2", state, None);
        assert_eq!(search(&fresh, "main", "zebra").await, ["keeper.txt"]);
        assert!(search(&fresh, "main", "lighthouse").await.is_empty());
    }
}
