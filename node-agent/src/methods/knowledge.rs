//! `knowledge.*` (PROTOCOL.md §5.7): params read as upstream reads them (loosely: numbers
//! clamped, unknown options ignored), answers in upstream's shapes. The work is the
//! knowledge service's (`crate::knowledge`).

use serde_json::{json, Map, Value};

use argent_proto::errors::RpcError;

use crate::knowledge::chunk::Windows;
use crate::knowledge::extract::Limits;
use crate::knowledge::index::{Hit, StoredChunk};
use crate::knowledge::records::{Grant, Source, DEFAULT_COLLECTION, VAULT_COLLECTION};
use crate::knowledge::{
    cut, distinct_by_document, excerpt_chars, iso, summary_chars, vault_files, IngestFile,
    IngestOptions, IngestReport, Knowledge, LibraryFilter, SearchRequest,
};

/// `itemExtra` keys the library sets itself (upstream's reserved list).
const RESERVED_EXTRA: &[&str] = &[
    "source",
    "collection",
    "collectiontag",
    "sourcefile",
    "sourcetag",
    "citation",
    "chunkindex",
    "chunktotal",
    "chunkstart",
    "chunkend",
    "ingestversion",
    "ingestedat",
];

/// The parts every knowledge method reads: `sessionKey` (a string) and `options` (an
/// object; anything else reads as `{}`).
struct Call {
    session_key: Option<String>,
    options: Map<String, Value>,
    params: Value,
}

impl Call {
    fn new(params: Value) -> Self {
        Call {
            session_key: params
                .get("sessionKey")
                .and_then(Value::as_str)
                .map(str::to_string),
            options: params
                .get("options")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            params,
        }
    }

    /// `Number(x)` as upstream reads it: a number, or a numeric string; 0 and NaN count
    /// as absent (`Number(x) || default`).
    fn number(&self, key: &str) -> Option<f64> {
        let n = match self.options.get(key)? {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            Value::Bool(true) => 1.0,
            _ => return None,
        };
        (n.is_finite() && n != 0.0).then_some(n)
    }

    fn clamped(&self, key: &str, default: f64, min: f64, max: f64) -> usize {
        self.number(key).unwrap_or(default).clamp(min, max) as usize
    }

    fn text(&self, key: &str) -> Option<String> {
        self.options
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.options.get(key).and_then(Value::as_bool)
    }

    /// `collection`: a string or a list of strings, trimmed, blanks dropped.
    fn collections(&self) -> Vec<String> {
        let list: Vec<&Value> = match self.options.get("collection") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
            None => Vec::new(),
        };
        list.into_iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn filter(&self, exact_allowed: bool) -> LibraryFilter {
        LibraryFilter {
            q: self.text("q").map(|q| q.to_lowercase()),
            collections: self.collections(),
            source_file: self.text("sourceFile").map(|s| s.to_lowercase()),
            source_file_exact: exact_allowed && self.flag("sourceFileExact") == Some(true),
        }
    }
}

async fn actor(k: &Knowledge, call: &Call) -> Result<String, RpcError> {
    let config = k.config().await?;
    Ok(Knowledge::acting_agent(
        &config,
        call.session_key.as_deref(),
    ))
}

fn round3(score: f32) -> f64 {
    (f64::from(score) * 1000.0).round() / 1000.0
}

fn document_fields(c: &StoredChunk) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("documentId".into(), json!(c.document_id));
    out.insert("documentTitle".into(), json!(c.title));
    out.insert("documentType".into(), json!(c.doc_type));
    out.insert("documentLanguage".into(), json!(c.language));
    out.insert("documentCreatedAt".into(), json!(c.created_at));
    out.insert("documentTags".into(), json!(c.tags));
    out
}

fn citation(c: &StoredChunk) -> String {
    crate::knowledge::records::citation(&c.source_file, c.chunk_index as usize)
}

fn search_result(hit: &Hit) -> Value {
    let c = &hit.chunk;
    let mut out = Map::new();
    out.insert("id".into(), json!(c.chunk_id));
    out.insert("score".into(), json!(round3(hit.score)));
    out.insert("summary".into(), json!(cut(&c.text, summary_chars(), true)));
    out.insert("type".into(), json!("knowledge"));
    out.insert("citation".into(), json!(citation(c)));
    out.insert("collection".into(), json!(c.collection));
    out.insert("sourceFile".into(), json!(c.source_file));
    out.insert("chunkIndex".into(), json!(c.chunk_index + 1));
    out.insert("chunkTotal".into(), json!(c.chunk_total));
    out.extend(document_fields(c));
    out.insert("categories".into(), json!([]));
    out.insert("createdAt".into(), json!(iso(c.saved_at_ms)));
    Value::Object(out)
}

fn library_row(c: &StoredChunk, full_text: bool) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(c.chunk_id));
    out.insert("title".into(), json!(c.title));
    out.insert("type".into(), json!("knowledge"));
    out.insert("sourceType".into(), json!("ingested"));
    out.insert("collection".into(), json!(c.collection));
    out.insert("sourceFile".into(), json!(c.source_file));
    out.insert("citation".into(), json!(citation(c)));
    out.insert("chunkIndex".into(), json!(c.chunk_index + 1));
    out.insert("chunkTotal".into(), json!(c.chunk_total));
    out.insert("savedAt".into(), json!(iso(c.saved_at_ms)));
    out.insert(
        "excerpt".into(),
        json!(cut(&c.text, excerpt_chars(), false)),
    );
    if full_text {
        out.insert("fullText".into(), json!(c.text));
    }
    out.extend(document_fields(c));
    Value::Object(out)
}

/// `knowledge.search`.
pub async fn search(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let query = match call.params.get("query") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if query.is_empty() {
        return Err(RpcError::invalid_request("query is required"));
    }
    let agent = actor(k, &call).await?;
    let limit = call.clamped("limit", 12.0, 1.0, 100.0);
    let collections = call.collections();
    let request = SearchRequest {
        query: query.clone(),
        collections: collections.clone(),
        limit,
    };
    let (hits, total) = k.search(&agent, &request).await?;
    let mut out = json!({
        "success": true,
        "query": query,
        "agentId": agent,
        "count": hits.len(),
        "totalMatched": total,
        "limit": limit,
        "includeShared": call.flag("includeShared") == Some(true),
        "ingestedOnly": call.flag("ingestedOnly") != Some(false),
        "aclEnforced": true,
        "results": hits.iter().map(search_result).collect::<Vec<_>>(),
        "index": k.index_status(),
    });
    if !collections.is_empty() {
        let tags: Vec<String> = collections
            .iter()
            .map(|c| crate::knowledge::records::collection_tag(c, ""))
            .filter(|t| !t.is_empty())
            .collect();
        out["collection"] = json!(tags);
    }
    Ok(out)
}

/// The files of an ingest call, each as given (a malformed entry becomes a file that
/// is refused with its reason).
fn files_of(call: &Call, limits: &Limits) -> Result<Vec<IngestFile>, RpcError> {
    let files = match call.params.get("files") {
        Some(Value::Array(files)) if !files.is_empty() => files,
        _ => return Err(RpcError::invalid_request("files[] is required")),
    };
    if files.len() > limits.max_files {
        return Err(RpcError::invalid_request(format!(
            "too many files: {} (limit: {}; knowledge.maxFiles)",
            files.len(),
            limits.max_files
        )));
    }
    Ok(files
        .iter()
        .map(|file| {
            let text = |key: &str| file.get(key).and_then(Value::as_str).map(str::to_string);
            IngestFile {
                file_name: text("fileName")
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| "file".into()),
                mime_type: text("mimeType"),
                content: text("content").unwrap_or_default(),
                refused: None,
            }
        })
        .collect())
}

/// `itemExtra`, sanitised as upstream does: reserved and blank keys dropped, values kept
/// when primitive, arrays of primitives kept when not empty, objects kept.
fn item_extra(call: &Call) -> Map<String, Value> {
    let Some(extra) = call.options.get("itemExtra").and_then(Value::as_object) else {
        return Map::new();
    };
    extra
        .iter()
        .filter_map(|(key, value)| {
            let key = key.trim();
            if key.is_empty() || RESERVED_EXTRA.contains(&key.to_lowercase().as_str()) {
                return None;
            }
            let value = match value {
                Value::Array(items) => {
                    let kept: Vec<Value> = items
                        .iter()
                        .filter(|v| !v.is_array() && !v.is_object())
                        .cloned()
                        .collect();
                    if kept.is_empty() {
                        return None;
                    }
                    Value::Array(kept)
                }
                other => other.clone(),
            };
            Some((key.to_string(), value))
        })
        .collect()
}

fn ingest_options(call: &Call, default_collection: String, source: Source) -> IngestOptions {
    let size = call.number("chunkSize").map(|s| s.max(0.0) as u64);
    let overlap = match call.options.get("overlap") {
        // 0 means no overlap here (upstream reads it as "unset", i.e. 200).
        Some(v) if v.as_f64() == Some(0.0) => Some(0),
        _ => call.number("overlap").map(|o| o.max(0.0) as u64),
    };
    IngestOptions {
        collection: call.text("collection").unwrap_or(default_collection),
        windows: Windows::new(size, overlap),
        item_extra: item_extra(call),
        source,
    }
}

/// `knowledge.ingest`.
pub async fn ingest(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let config = k.config().await?;
    let files = files_of(&call, &Limits::from_config(&config.knowledge()))?;
    let agent = Knowledge::acting_agent(&config, call.session_key.as_deref());
    let options = ingest_options(&call, DEFAULT_COLLECTION.into(), Source::KnowledgeIngest);
    let report = k.ingest(&agent, files, options).await?;
    Ok(serde_json::to_value(report).expect("reports serialize"))
}

/// `knowledge.vault.ingest`: the Markdown files of `memory.vault.path` on this node.
pub async fn vault_ingest(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let config = k.config().await?;
    let vault = config
        .document()
        .pointer("/memory/vault")
        .cloned()
        .unwrap_or(Value::Null);
    let truthy = |v: Option<&Value>| match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Null) | None => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if !truthy(vault.get("enabled")) || vault.pointer("/ingest/enabled") != Some(&Value::Bool(true))
    {
        return Err(RpcError::invalid_request("vault ingest is disabled"));
    }
    let path = vault
        .get("path")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if path.is_empty() {
        return Err(RpcError::invalid_request("memory.vault.path is required"));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let root = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => path.to_string(),
    };
    let root = std::path::absolute(&root).unwrap_or_else(|_| root.clone().into());
    if !root.is_dir() {
        return Err(RpcError::invalid_request("vault path is not a directory"));
    }
    let excludes: Vec<String> = vault
        .pointer("/ingest/excludePaths")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let limit = call.clamped("limitFiles", 250.0, 1.0, 5000.0);
    let (root_for_walk, walk_excludes) = (root.clone(), excludes.clone());
    let found =
        tokio::task::spawn_blocking(move || vault_files(&root_for_walk, &walk_excludes, limit))
            .await
            .map_err(|e| RpcError::unavailable(format!("Error: vault walk failed: {e}")))?;
    let root_path = root.to_string_lossy().to_string();
    if call.flag("dryRun") == Some(true) {
        return Ok(json!({
            "success": true,
            "dryRun": true,
            "rootPath": root_path,
            "count": found.len(),
            "files": found.iter().take(500).map(|(name, _)| name).collect::<Vec<_>>(),
        }));
    }
    let default_collection = vault
        .get("knowledgeCollection")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(VAULT_COLLECTION)
        .to_string();
    let agent = Knowledge::acting_agent(&config, call.session_key.as_deref());
    let options = ingest_options(&call, default_collection, Source::Vault);
    let max_bytes = Limits::from_config(&config.knowledge()).max_file_bytes as u64;
    let mut report: Option<IngestReport> = None;
    // Read and ingested a batch at a time: a vault of thousands of notes is never all in
    // memory at once.
    for batch in found.chunks(VAULT_BATCH) {
        let mut files = Vec::with_capacity(batch.len());
        for (name, path) in batch {
            let size = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
            let (content, refused) = if size > max_bytes {
                let why = format!(
                    "file too large: {size} bytes (limit: {max_bytes}; knowledge.maxFileBytes)"
                );
                (String::new(), Some(why))
            } else {
                match tokio::fs::read(path).await {
                    Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), None),
                    Err(err) => (String::new(), Some(format!("cannot read the file: {err}"))),
                }
            };
            files.push(IngestFile {
                file_name: name.clone(),
                mime_type: Some("text/markdown".into()),
                content,
                refused,
            });
        }
        let part = k.ingest(&agent, files, options.clone()).await?;
        report = Some(match report {
            None => part,
            Some(total) => total.merge(part),
        });
    }
    let mut out = match report {
        Some(report) => serde_json::to_value(report).expect("reports serialize"),
        None => json!({
            "success": true, "collection": options.collection, "agentId": agent,
            "acceptedFiles": 0, "rejectedFiles": 0, "totalChunks": 0, "embeddedChunks": 0,
            "ingested": [], "errors": [],
        }),
    };
    out["rootPath"] = json!(root_path);
    out["source"] = json!("vault");
    Ok(out)
}

/// Vault files read and ingested together.
const VAULT_BATCH: usize = 50;

/// `knowledge.library.list`.
pub async fn library_list(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let agent = actor(k, &call).await?;
    let limit = call.clamped("limit", 500.0, 1.0, 2000.0);
    let filter = call.filter(true);
    let distinct = call.flag("distinctByDocument") == Some(true);
    let scan = match call.options.get("scanLimit").and_then(Value::as_f64) {
        Some(n) if n.is_finite() => n.trunc().clamp(200.0, 50_000.0) as usize,
        _ if filter.source_file.is_some() => (limit * 2).max(800),
        _ if distinct => (limit * 25).max(4000),
        _ => (limit * 4).max(3000),
    }
    .min(50_000);
    let sort = match call.text("sort").as_deref() {
        Some("title") => "title",
        Some("type") => "type",
        _ => "savedAt",
    };
    let ascending = call.text("order").as_deref() == Some("asc");
    let mut rows = k.library(&agent, &filter, scan, false).await?;
    rows.sort_by(|a, b| {
        let order = match sort {
            "title" => a.title.to_lowercase().cmp(&b.title.to_lowercase()),
            "type" => a.doc_type.cmp(&b.doc_type),
            _ => a.saved_at_ms.cmp(&b.saved_at_ms),
        }
        .then_with(|| a.chunk_index.cmp(&b.chunk_index).reverse());
        if ascending {
            order
        } else {
            order.reverse()
        }
    });
    if distinct {
        rows = distinct_by_document(rows);
    }
    let total = rows.len();
    let full_text = call.flag("includeFullText") == Some(true);
    Ok(json!({
        "success": true,
        "agentId": agent,
        "aclEnforced": true,
        "query": filter.q.clone().unwrap_or_default(),
        "sort": sort,
        "order": if ascending { "asc" } else { "desc" },
        "total": total,
        "stats": {"total": total, "ingested": total, "memory": 0},
        "rows": rows.iter().take(limit).map(|r| library_row(r, full_text)).collect::<Vec<_>>(),
    }))
}

/// The chunks a delete or reindex selects: by `ids`, else by the library filter, among
/// the collections the acting agent may write.
async fn select(
    k: &Knowledge,
    call: &Call,
    agent: &str,
    scan: usize,
) -> Result<Vec<StoredChunk>, RpcError> {
    let ids: Vec<String> = call
        .options
        .get("ids")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        return Ok(k.writable_chunks(agent, ids).await?);
    }
    Ok(k.library(agent, &call.filter(false), scan, true).await?)
}

/// `knowledge.library.delete`.
pub async fn library_delete(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let agent = actor(k, &call).await?;
    let limit = call.clamped("limit", 500.0, 1.0, 2000.0);
    let selected = select(k, &call, &agent, (limit * 4).max(3000)).await?;
    let matched = selected.len();
    let limited: Vec<StoredChunk> = selected.into_iter().take(limit).collect();
    if call.flag("dryRun") == Some(true) {
        return Ok(json!({
            "success": true,
            "dryRun": true,
            "matched": matched,
            "selected": limited.len(),
            "ids": limited.iter().map(|c| &c.chunk_id).collect::<Vec<_>>(),
        }));
    }
    let (deleted, failed) = k.delete(&limited).await?;
    Ok(json!({
        "success": true,
        "matched": matched,
        "deleted": deleted,
        "failed": failed.iter().map(|(id, error)| json!({"id": id, "error": error})).collect::<Vec<_>>(),
    }))
}

/// `knowledge.library.reindex`: embeds chunks again (those without a vector unless
/// `onlyMissing: false`).
pub async fn library_reindex(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let agent = actor(k, &call).await?;
    let limit = call.clamped("limit", 1000.0, 1.0, 4000.0);
    let selected = select(k, &call, &agent, (limit * 3).max(4000)).await?;
    let limited: Vec<StoredChunk> = selected.into_iter().take(limit).collect();
    let only_missing = call.flag("onlyMissing") != Some(false);
    let (processed, embedded, skipped, failed) = k.reindex(&limited, only_missing).await?;
    Ok(json!({
        "success": true,
        "processed": processed,
        "embedded": embedded,
        "skipped": skipped,
        "failed": failed.iter().map(|(id, error)| json!({"id": id, "error": error})).collect::<Vec<_>>(),
    }))
}

/// `knowledge.collections.list`.
pub async fn collections_list(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let actor = actor(k, &call).await?;
    let target = call.text("agentId").unwrap_or_else(|| actor.clone());
    let everything = call.flag("includeInaccessible") == Some(true);
    let collections: Vec<Value> = k
        .collections(&target)
        .await?
        .into_iter()
        .filter(|(_, a)| everything || a.can_read || a.can_write || a.is_owner)
        .map(|(c, a)| {
            json!({
                "collectionId": c.collection_id,
                "collection": c.collection,
                "collectionTag": c.collection_tag,
                "ownerAgentId": c.owner_agent_id,
                "canRead": a.can_read,
                "canWrite": a.can_write,
                "isOwner": a.is_owner,
            })
        })
        .collect();
    Ok(json!({
        "success": true,
        "agentId": target,
        "actorAgentId": actor,
        "aclEnforced": true,
        "collections": collections,
    }))
}

/// `knowledge.collections.grant`: only the collection's owner grants.
pub async fn collections_grant(k: &Knowledge, params: Value) -> Result<Value, RpcError> {
    let call = Call::new(params);
    let actor = match call.text("actorAgentId") {
        Some(actor) => actor,
        None => actor(k, &call).await?,
    };
    let Some(collection) = call.text("collection") else {
        return Err(RpcError::invalid_request("collection is required"));
    };
    let Some(target) = call.text("agentId") else {
        return Err(RpcError::invalid_request("agentId is required"));
    };
    let can_read = call.flag("canRead") != Some(false);
    let can_write = call.flag("canWrite") == Some(true);
    let is_owner = call.flag("isOwner") == Some(true);
    let stored = Grant {
        can_read: is_owner || can_read || can_write,
        can_write: is_owner || can_write,
        is_owner,
    };
    let record = k.grant(&actor, &collection, &target, stored).await?;
    Ok(json!({
        "success": true,
        "actorAgentId": actor,
        "targetAgentId": target,
        "collection": record.collection,
        "collectionTag": record.collection_tag,
        "aclEnforced": true,
        "updated": true,
        "granted": {
            "canRead": is_owner || can_read,
            "canWrite": is_owner || can_write,
            "isOwner": is_owner,
        },
    }))
}
