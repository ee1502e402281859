//! A node-agent's local knowledge index (tantivy): one index document per chunk, built
//! from the state plane's records and kept current by [`super::follow`]. It is a cache:
//! it can always be rebuilt from the state, and it records in each commit the revision
//! of the bucket it reflects, so a restart resumes from there instead of rebuilding.
//!
//! Ranking: BM25 over the chunk text analysed in the document's language (stemming and
//! stop words for the 18 languages tantivy stems; a text of unknown language as English;
//! a known language tantivy does not stem lower-cased only), plus the
//! title (boosted), plus each query phrase (boosted, a little slop). Every query word
//! counts and none is required (OR); a chunk's score is then scaled by the share of the
//! query's words it contains, so chunks matching more words rank first. With vectors,
//! the keyword and vector rankings are fused by reciprocal rank (keyword hits always stay
//! candidates).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use parking_lot::{Mutex, RwLock};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, STORED, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{DocAddress, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::watch;

use super::records::{CollectionRecord, DocumentRecord};

/// Bumped when the schema or the analysis changes: an index of another version is rebuilt.
const SCHEMA_VERSION: u32 = 2;
/// Memory of the index writer (tantivy splits it across its threads).
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// Boosts: a query word in the title; the query's words as a phrase.
const TITLE_BOOST: f32 = 2.0;
const PHRASE_BOOST: f32 = 1.5;
const PHRASE_SLOP: u32 = 2;
/// Reciprocal-rank fusion constant (the usual 60).
const RRF_K: f32 = 60.0;

/// The languages tantivy stems, by ISO 639-1 code.
pub const LANGUAGES: &[(&str, Language)] = &[
    ("ar", Language::Arabic),
    ("da", Language::Danish),
    ("nl", Language::Dutch),
    ("en", Language::English),
    ("fi", Language::Finnish),
    ("fr", Language::French),
    ("de", Language::German),
    ("el", Language::Greek),
    ("hu", Language::Hungarian),
    ("it", Language::Italian),
    ("no", Language::Norwegian),
    ("pt", Language::Portuguese),
    ("ro", Language::Romanian),
    ("ru", Language::Russian),
    ("es", Language::Spanish),
    ("sv", Language::Swedish),
    ("ta", Language::Tamil),
    ("tr", Language::Turkish),
];

/// How a text whose language is unknown is analysed.
const UNKNOWN_LANGUAGE_ANALYSIS: &str = "en";

/// The analyzer of texts in no stemmed language, and of titles.
const PLAIN: &str = "argent_plain";

#[derive(Debug, thiserror::Error)]
#[error("knowledge index: {0}")]
pub struct IndexError(String);

impl From<tantivy::TantivyError> for IndexError {
    fn from(err: tantivy::TantivyError) -> Self {
        IndexError(err.to_string())
    }
}

struct Fields {
    chunk_id: Field,
    doc_id: Field,
    document_id: Field,
    collection: Field,
    collection_tag: Field,
    agent_id: Field,
    source: Field,
    source_file: Field,
    title: Field,
    title_text: Field,
    doc_type: Field,
    language: Field,
    tags: Field,
    created_at: Field,
    saved_at: Field,
    chunk_index: Field,
    chunk_total: Field,
    text: Field,
    vector: Field,
    /// The chunk text analysed for its language: `(code, field)`, and the plain one.
    bodies: Vec<(&'static str, Field)>,
    body_plain: Field,
}

fn analyzed(tokenizer: &str) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let keyword = STRING | STORED;
    let fields = Fields {
        chunk_id: b.add_text_field("chunk_id", keyword.clone()),
        doc_id: b.add_text_field("doc_id", keyword.clone()),
        document_id: b.add_text_field("document_id", STORED),
        collection: b.add_text_field("collection", STORED),
        collection_tag: b.add_text_field("collection_tag", keyword.clone()),
        agent_id: b.add_text_field("agent_id", STORED),
        source: b.add_text_field("source", STORED),
        source_file: b.add_text_field("source_file", STORED),
        title: b.add_text_field("title", STORED),
        title_text: b.add_text_field("title_text", analyzed(PLAIN)),
        doc_type: b.add_text_field("doc_type", STORED),
        language: b.add_text_field("language", keyword.clone()),
        tags: b.add_text_field("tags", STORED),
        created_at: b.add_text_field("created_at", STORED),
        saved_at: b.add_u64_field("saved_at", STORED | FAST),
        chunk_index: b.add_u64_field("chunk_index", STORED),
        chunk_total: b.add_u64_field("chunk_total", STORED),
        text: b.add_text_field("text", STORED),
        vector: b.add_bytes_field("vector", STORED),
        bodies: LANGUAGES
            .iter()
            .map(|(code, _)| {
                (
                    *code,
                    b.add_text_field(&format!("body_{code}"), analyzed(&tokenizer_name(code))),
                )
            })
            .collect(),
        body_plain: b.add_text_field("body_plain", analyzed(PLAIN)),
    };
    (b.build(), fields)
}

fn tokenizer_name(code: &str) -> String {
    format!("argent_{code}")
}

fn register_tokenizers(index: &tantivy::Index) {
    let manager = index.tokenizers();
    manager.register(
        PLAIN,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .build(),
    );
    for (code, language) in LANGUAGES {
        let base = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .dynamic();
        let analyzer = match StopWordFilter::new(*language) {
            Some(stop) => base
                .filter_dynamic(stop)
                .filter_dynamic(Stemmer::new(*language))
                .build(),
            None => base.filter_dynamic(Stemmer::new(*language)).build(),
        };
        manager.register(&tokenizer_name(code), analyzer);
    }
}

/// A chunk as the index stores it (what results and library rows are made of).
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub chunk_id: String,
    pub doc_id: String,
    /// `documentId` as clients see it (their `docId`, else `doc_id`).
    pub document_id: String,
    pub collection: String,
    pub collection_tag: String,
    pub agent_id: String,
    pub source: String,
    pub source_file: String,
    pub title: String,
    pub doc_type: String,
    pub language: Option<String>,
    pub tags: Vec<String>,
    pub created_at: String,
    pub saved_at_ms: u64,
    pub chunk_index: u64,
    pub chunk_total: u64,
    pub text: String,
    pub has_vector: bool,
}

/// One search hit.
#[derive(Debug, Clone)]
pub struct Hit {
    pub chunk: StoredChunk,
    pub score: f32,
}

/// What a search asks of the index.
pub struct SearchQuery<'a> {
    pub text: &'a str,
    /// The collection tags it may return (already filtered by access).
    pub collections: &'a HashSet<String>,
    pub limit: usize,
    /// The query's embedding, for the vector ranking.
    pub vector: Option<Vec<f32>>,
}

/// What a batch of changes does besides the staged index documents, applied only once
/// the batch commits (so memory never runs ahead of the committed index).
#[derive(Default)]
pub struct Batch {
    vectors: Vec<(String, Option<DocVectors>)>,
    collections: Vec<(String, Option<CollectionRecord>)>,
    last_key: Option<String>,
}

impl Batch {
    /// The batch ends with the change of `key`.
    pub fn ends_with(&mut self, key: &str) {
        self.last_key = Some(key.to_string());
    }

    pub fn put_collection(&mut self, record: CollectionRecord) {
        self.collections
            .push((record.collection_tag.clone(), Some(record)));
    }

    pub fn remove_collection(&mut self, tag: &str) {
        self.collections.push((tag.to_string(), None));
    }
}

/// The vectors of one document's chunks (normalised), by chunk index.
struct DocVectors {
    collection_tag: String,
    chunks: Vec<(u64, Vec<f32>)>,
}

pub struct KnowledgeIndex {
    index: tantivy::Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// The bucket revision the committed index reflects.
    applied: watch::Sender<u64>,
    /// The key of the last change it applied (see [`CommitPayload::last_key`]).
    last_key: Mutex<Option<String>>,
    vectors: RwLock<HashMap<String, DocVectors>>,
    /// The collections and their grants, as of `applied`.
    collections: RwLock<BTreeMap<String, CollectionRecord>>,
    /// Whether `collections` was loaded from the state (they are not in the index's
    /// commits: a started node reads them before it answers).
    collections_loaded: watch::Sender<bool>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CommitPayload {
    revision: u64,
    schema: u32,
    /// The key of the last change applied: still there at a revision not below
    /// `revision` when the bucket is the one the index was built from.
    #[serde(default)]
    last_key: Option<String>,
}

impl KnowledgeIndex {
    /// Opens the index kept in `dir` (created when missing; rebuilt from zero when it was
    /// written by another schema version or cannot be read), or one in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self, IndexError> {
        let (schema, fields) = schema();
        let index = match dir {
            None => tantivy::Index::create_in_ram(schema.clone()),
            Some(dir) => match open_dir(dir, &schema) {
                Ok(index) => index,
                // Its files are unreadable or of another schema: a cache, rebuilt from the
                // state. Any other failure (permissions, disk, a lock) is the caller's to
                // see, and the files are left alone.
                Err(
                    err @ (tantivy::TantivyError::DataCorruption(_)
                    | tantivy::TantivyError::SchemaError(_)
                    | tantivy::TantivyError::IncompatibleIndex(_)),
                ) => {
                    tracing::warn!(dir = %dir.display(), %err, "knowledge index unusable; rebuilding it from the shared state");
                    let _ = std::fs::remove_dir_all(dir);
                    open_dir(dir, &schema)?
                }
                Err(err) => return Err(err.into()),
            },
        };
        register_tokenizers(&index);
        let (revision, last_key) = match index.load_metas()?.payload {
            Some(payload) => match serde_json::from_str::<CommitPayload>(&payload) {
                Ok(p) if p.schema == SCHEMA_VERSION => (p.revision, p.last_key),
                _ => {
                    // Another version's index: start over (and say so).
                    tracing::info!("knowledge index of another version; rebuilding it");
                    let mut writer: IndexWriter = index.writer(WRITER_MEMORY)?;
                    writer.delete_all_documents()?;
                    writer.commit()?;
                    (0, None)
                }
            },
            None => (0, None),
        };
        let writer = index.writer(WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let this = KnowledgeIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            applied: watch::channel(revision).0,
            last_key: Mutex::new(last_key),
            vectors: RwLock::new(HashMap::new()),
            collections: RwLock::new(BTreeMap::new()),
            collections_loaded: watch::channel(false).0,
        };
        this.load_vectors()?;
        Ok(this)
    }

    /// The revision of the bucket this index reflects.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The field a text in `language` is analysed in: its stemmed field; English's when
    /// the language is unknown (short texts are not detected reliably, and most are
    /// English; stemming another language's words as English costs little); no stemming
    /// for a known language tantivy does not stem.
    fn body_field(&self, language: Option<&str>) -> Field {
        let f = &self.fields;
        let code = language.unwrap_or(UNKNOWN_LANGUAGE_ANALYSIS);
        f.bodies
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(f.body_plain, |(_, field)| *field)
    }

    /// Chunks in the committed index.
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The vectors stored with the chunks, loaded once at open (they live in memory for
    /// the vector ranking).
    fn load_vectors(&self) -> Result<(), IndexError> {
        let searcher = self.reader.searcher();
        let mut vectors = self.vectors.write();
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(64)
                .map_err(|e| IndexError(e.to_string()))?;
            for doc in segment.doc_ids_alive() {
                let stored: TantivyDocument = store.get(doc)?;
                let Some(bytes) = stored
                    .get_first(self.fields.vector)
                    .and_then(|v| v.as_bytes().map(<[u8]>::to_vec))
                else {
                    continue;
                };
                let text = |f| {
                    stored
                        .get_first(f)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                let index = stored
                    .get_first(self.fields.chunk_index)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let entry = vectors
                    .entry(text(self.fields.doc_id))
                    .or_insert_with(|| DocVectors {
                        collection_tag: text(self.fields.collection_tag),
                        chunks: Vec::new(),
                    });
                entry.chunks.push((index, floats(&bytes)));
            }
        }
        Ok(())
    }

    /// Replaces the collections known to the index (on a fresh watch).
    pub fn set_collections(&self, collections: Vec<CollectionRecord>) {
        *self.collections.write() = collections
            .into_iter()
            .map(|c| (c.collection_tag.clone(), c))
            .collect();
        self.collections_loaded.send_replace(true);
    }

    pub fn watch_collections_loaded(&self) -> watch::Receiver<bool> {
        self.collections_loaded.subscribe()
    }

    pub fn collections(&self) -> Vec<CollectionRecord> {
        self.collections.read().values().cloned().collect()
    }

    /// Stages a document (its chunks replace the ones it had); its vectors go into
    /// `batch`, shown to searches when the batch commits. Blocking.
    pub fn put_document(&self, doc: &DocumentRecord, batch: &mut Batch) -> Result<(), IndexError> {
        let f = &self.fields;
        let writer = self.writer.lock();
        writer.delete_term(Term::from_field_text(f.doc_id, &doc.id));
        let language_field = self.body_field(doc.language.as_deref());
        let mut vectors = Vec::new();
        for chunk in &doc.chunks {
            let mut d = TantivyDocument::new();
            d.add_text(f.chunk_id, doc.chunk_id(chunk.index));
            d.add_text(f.doc_id, &doc.id);
            d.add_text(f.document_id, doc.display_id());
            d.add_text(f.collection, &doc.collection);
            d.add_text(f.collection_tag, &doc.collection_tag);
            d.add_text(f.agent_id, &doc.agent_id);
            d.add_text(f.source, doc.source.as_str());
            d.add_text(f.source_file, &doc.file_name);
            d.add_text(f.title, &doc.title);
            d.add_text(f.title_text, &doc.title);
            d.add_text(f.doc_type, &doc.doc_type);
            if let Some(language) = &doc.language {
                d.add_text(f.language, language);
            }
            for tag in &doc.tags {
                d.add_text(f.tags, tag);
            }
            d.add_text(f.created_at, &doc.created_at);
            d.add_u64(f.saved_at, doc.saved_at_ms);
            d.add_u64(f.chunk_index, chunk.index as u64);
            d.add_u64(f.chunk_total, doc.chunk_total as u64);
            d.add_text(f.text, &chunk.text);
            d.add_text(language_field, &chunk.text);
            if let Some(vector) = chunk
                .vector
                .as_deref()
                .and_then(super::records::decode_vector)
            {
                let vector = normalised(vector);
                d.add_bytes(f.vector, &bytes_of(&vector));
                vectors.push((chunk.index as u64, vector));
            }
            writer.add_document(d)?;
        }
        let vectors = (!vectors.is_empty()).then(|| DocVectors {
            collection_tag: doc.collection_tag.clone(),
            chunks: vectors,
        });
        batch.vectors.push((doc.id.clone(), vectors));
        Ok(())
    }

    /// Stages the removal of a document. Blocking.
    pub fn delete_document(&self, document_id: &str, batch: &mut Batch) {
        self.writer
            .lock()
            .delete_term(Term::from_field_text(self.fields.doc_id, document_id));
        batch.vectors.push((document_id.to_string(), None));
    }

    /// Drops what was staged since the last commit (a batch that failed half-way), so
    /// the next attempt starts from the committed index. A writer that cannot roll back
    /// is replaced. Blocking.
    pub fn rollback(&self) {
        let mut writer = self.writer.lock();
        if let Err(err) = writer.rollback() {
            tracing::warn!(%err, "knowledge index rollback failed; opening a new writer");
            match self.index.writer(WRITER_MEMORY) {
                Ok(fresh) => *writer = fresh,
                Err(err) => tracing::error!(%err, "knowledge index writer cannot be reopened"),
            }
        }
    }

    /// Commits what was staged as the state of `revision`, then shows it (and `batch`'s
    /// vectors and collections) to searches. Blocking.
    pub fn commit(&self, revision: u64, batch: Batch) -> Result<(), IndexError> {
        let last_key = batch
            .last_key
            .clone()
            .or_else(|| self.last_key.lock().clone());
        let payload = serde_json::to_string(&CommitPayload {
            revision,
            schema: SCHEMA_VERSION,
            last_key: last_key.clone(),
        })
        .expect("payload serializes");
        {
            let mut writer = self.writer.lock();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        {
            let mut vectors = self.vectors.write();
            for (id, change) in batch.vectors {
                match change {
                    Some(doc) => vectors.insert(id, doc),
                    None => vectors.remove(&id),
                };
            }
        }
        {
            let mut collections = self.collections.write();
            for (tag, change) in batch.collections {
                match change {
                    Some(record) => collections.insert(tag, record),
                    None => collections.remove(&tag),
                };
            }
        }
        *self.last_key.lock() = last_key;
        self.applied.send_replace(revision);
        Ok(())
    }

    /// The key of the last change the committed index applied.
    pub fn last_key(&self) -> Option<String> {
        self.last_key.lock().clone()
    }

    /// Empties the index (its state revision back to 0). Blocking.
    pub fn clear(&self) -> Result<(), IndexError> {
        self.writer.lock().delete_all_documents()?;
        *self.last_key.lock() = None;
        self.commit(0, Batch::default())?;
        self.vectors.write().clear();
        Ok(())
    }

    /// Keyword (and vector) search. Blocking.
    pub fn search(&self, query: &SearchQuery) -> Result<(Vec<Hit>, usize), IndexError> {
        if query.collections.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let searcher = self.reader.searcher();
        let candidates = (query.limit * 4).max(50);
        let filter = self.collection_filter(query.collections);
        let (keyword, words) = self.keyword_query(&searcher, query.text)?;
        let mut total = 0;
        let mut ranked: Vec<Hit> = Vec::new();
        if let Some(keyword) = keyword {
            let combined = BooleanQuery::new(vec![
                (Occur::Must, filter.box_clone()),
                (Occur::Must, keyword),
            ]);
            let (count, top) = searcher.search(
                &combined,
                &(Count, TopDocs::with_limit(candidates).order_by_score()),
            )?;
            total = count;
            for (score, address) in top {
                let chunk = self.stored(&searcher, address)?;
                let coverage = self.coverage(&chunk, &words);
                ranked.push(Hit {
                    score: score * (0.5 + 0.5 * coverage),
                    chunk,
                });
            }
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        let Some(vector) = &query.vector else {
            ranked.truncate(query.limit);
            return Ok((ranked, total));
        };
        let semantic = self.nearest(vector, query.collections, candidates);
        let mut fused: HashMap<String, (f32, Option<StoredChunk>)> = HashMap::new();
        for (rank, hit) in ranked.into_iter().enumerate() {
            let entry = fused
                .entry(hit.chunk.chunk_id.clone())
                .or_insert((0.0, None));
            entry.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
            entry.1 = Some(hit.chunk);
        }
        for (rank, (doc_id, index, _similarity)) in semantic.iter().enumerate() {
            let id = super::records::chunk_id(doc_id, *index as usize);
            let entry = fused.entry(id).or_insert((0.0, None));
            entry.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        total = total.max(fused.len());
        let mut order: Vec<(String, f32, Option<StoredChunk>)> =
            fused.into_iter().map(|(id, (s, c))| (id, s, c)).collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut hits = Vec::new();
        for (id, score, chunk) in order.into_iter().take(query.limit) {
            let chunk = match chunk {
                Some(chunk) => chunk,
                None => match self.chunk_by_id(&searcher, &id)? {
                    Some(chunk) => chunk,
                    None => continue,
                },
            };
            hits.push(Hit { chunk, score });
        }
        Ok((hits, total))
    }

    /// The library's rows: of the newest `scan` chunks of the given collections, those
    /// `keep` accepts (filtered as they are read, so memory holds only those). Blocking.
    pub fn scan(
        &self,
        collections: &HashSet<String>,
        scan: usize,
        keep: impl Fn(&StoredChunk) -> bool,
    ) -> Result<Vec<StoredChunk>, IndexError> {
        if collections.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
            (Occur::Must, self.collection_filter(collections)),
        ]);
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(scan.max(1)).order_by_u64_field("saved_at", Order::Desc),
        )?;
        let mut rows = Vec::new();
        for (_, address) in top {
            let row = self.stored(&searcher, address)?;
            if keep(&row) {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn collection_filter(&self, collections: &HashSet<String>) -> Box<dyn Query> {
        let any: Vec<(Occur, Box<dyn Query>)> = collections
            .iter()
            .map(|tag| {
                let term = Term::from_field_text(self.fields.collection_tag, tag);
                (
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>,
                )
            })
            .collect();
        Box::new(ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), 0.0))
    }

    /// The query's words analysed for each language present in the index, as one OR query
    /// with title and phrase boosts; `None` when no word remains (stop words only). Also
    /// the analysed words per body field, for the coverage of a hit.
    #[allow(clippy::type_complexity)]
    fn keyword_query(
        &self,
        searcher: &tantivy::Searcher,
        text: &str,
    ) -> Result<(Option<Box<dyn Query>>, HashMap<Field, Vec<String>>), IndexError> {
        let f = &self.fields;
        let mut fields = vec![f.body_plain];
        for (code, field) in &f.bodies {
            if *code == UNKNOWN_LANGUAGE_ANALYSIS
                || searcher.doc_freq(&Term::from_field_text(f.language, code))? > 0
            {
                fields.push(*field);
            }
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut words = HashMap::new();
        for field in fields {
            let tokens = self.tokens(field, text)?;
            let mut distinct: Vec<String> = Vec::new();
            for (_, token) in &tokens {
                if !distinct.contains(token) {
                    distinct.push(token.clone());
                    let term = Term::from_field_text(field, token);
                    clauses.push((
                        Occur::Should,
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    ));
                }
            }
            if tokens.len() >= 2 {
                let terms = tokens
                    .iter()
                    .map(|(position, token)| (*position, Term::from_field_text(field, token)))
                    .collect();
                let phrase = PhraseQuery::new_with_offset_and_slop(terms, PHRASE_SLOP);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(phrase), PHRASE_BOOST)),
                ));
            }
            words.insert(field, distinct);
        }
        for (_, token) in self.tokens(f.title_text, text)? {
            let term = Term::from_field_text(f.title_text, &token);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    TITLE_BOOST,
                )),
            ));
        }
        if clauses.is_empty() {
            return Ok((None, words));
        }
        Ok((Some(Box::new(BooleanQuery::new(clauses))), words))
    }

    /// `(position, text)` of the tokens `field`'s analyzer makes of `text`.
    fn tokens(&self, field: Field, text: &str) -> Result<Vec<(usize, String)>, IndexError> {
        let mut analyzer = self.index.tokenizer_for_field(field)?;
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            out.push((token.position, token.text.clone()));
        }
        Ok(out)
    }

    /// The share of the query's words (as analysed for the chunk's language) in the chunk.
    fn coverage(&self, chunk: &StoredChunk, words: &HashMap<Field, Vec<String>>) -> f32 {
        let field = self.body_field(chunk.language.as_deref());
        let Some(wanted) = words.get(&field).filter(|w| !w.is_empty()) else {
            return 1.0;
        };
        let Ok(present) = self.tokens(field, &format!("{}\n{}", chunk.title, chunk.text)) else {
            return 1.0;
        };
        let present: HashSet<&str> = present.iter().map(|(_, t)| t.as_str()).collect();
        let found = wanted
            .iter()
            .filter(|w| present.contains(String::as_str(w)))
            .count();
        found as f32 / wanted.len() as f32
    }

    /// The `limit` chunks nearest to `vector` (cosine; vectors are normalised), among the
    /// collections given: `(document id, chunk index, similarity)`.
    fn nearest(
        &self,
        vector: &[f32],
        collections: &HashSet<String>,
        limit: usize,
    ) -> Vec<(String, u64, f32)> {
        let query = normalised(vector.to_vec());
        let vectors = self.vectors.read();
        // Scored without allocating; only the winners' ids are copied.
        let mut scored: Vec<(&str, u64, f32)> = Vec::new();
        for (doc_id, doc) in vectors.iter() {
            if !collections.contains(&doc.collection_tag) {
                continue;
            }
            for (index, v) in &doc.chunks {
                if v.len() == query.len() {
                    let similarity: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
                    scored.push((doc_id.as_str(), *index, similarity));
                }
            }
        }
        let by_similarity = |a: &(&str, u64, f32), b: &(&str, u64, f32)| b.2.total_cmp(&a.2);
        if scored.len() > limit {
            scored.select_nth_unstable_by(limit, by_similarity);
            scored.truncate(limit);
        }
        scored.sort_by(by_similarity);
        scored
            .into_iter()
            .map(|(id, index, similarity)| (id.to_string(), index, similarity))
            .collect()
    }

    fn chunk_by_id(
        &self,
        searcher: &tantivy::Searcher,
        id: &str,
    ) -> Result<Option<StoredChunk>, IndexError> {
        let term = Term::from_field_text(self.fields.chunk_id, id);
        let top = searcher.search(
            &TermQuery::new(term, IndexRecordOption::Basic),
            &TopDocs::with_limit(1).order_by_score(),
        )?;
        match top.first() {
            Some((_, address)) => Ok(Some(self.stored(searcher, *address)?)),
            None => Ok(None),
        }
    }

    /// Chunks by id (those that exist). Blocking.
    pub fn chunks_by_id(&self, ids: &[String]) -> Result<Vec<StoredChunk>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for id in ids {
            if let Some(chunk) = self.chunk_by_id(&searcher, id)? {
                out.push(chunk);
            }
        }
        Ok(out)
    }

    fn stored(
        &self,
        searcher: &tantivy::Searcher,
        address: DocAddress,
    ) -> Result<StoredChunk, IndexError> {
        let f = &self.fields;
        let doc: TantivyDocument = searcher.doc(address)?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let number = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(StoredChunk {
            chunk_id: text(f.chunk_id),
            doc_id: text(f.doc_id),
            document_id: text(f.document_id),
            collection: text(f.collection),
            collection_tag: text(f.collection_tag),
            agent_id: text(f.agent_id),
            source: text(f.source),
            source_file: text(f.source_file),
            title: text(f.title),
            doc_type: text(f.doc_type),
            language: doc
                .get_first(f.language)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            tags: doc
                .get_all(f.tags)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            created_at: text(f.created_at),
            saved_at_ms: number(f.saved_at),
            chunk_index: number(f.chunk_index),
            chunk_total: number(f.chunk_total),
            text: text(f.text),
            has_vector: doc.get_first(f.vector).is_some(),
        })
    }
}

fn open_dir(dir: &Path, schema: &Schema) -> tantivy::Result<tantivy::Index> {
    std::fs::create_dir_all(dir)?;
    let directory = tantivy::directory::MmapDirectory::open(dir)?;
    tantivy::Index::open_or_create(directory, schema.clone())
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
