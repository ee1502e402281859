//! What the knowledge library keeps in the state plane (bucket `argent_knowledge`), the
//! source of truth every node's index is built from:
//! * `doc.<documentId>` — one document and all its chunks (with their vectors), written in
//!   one put, so a reader never sees half of a document and re-ingesting replaces it whole;
//! * `col.<collectionTag>` — a collection: its owner and per-agent grants.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const DOC_PREFIX: &str = "doc.";
pub const COLLECTION_PREFIX: &str = "col.";

/// The collection of an ingest that names none (upstream's).
pub const DEFAULT_COLLECTION: &str = "default";
/// The collection of a vault ingest that names none (upstream's).
pub const VAULT_COLLECTION: &str = "vault-knowledge";

/// Where the document came from (`extra.source` upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    KnowledgeIngest,
    Vault,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::KnowledgeIngest => "knowledge_ingest",
            Source::Vault => "vault",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRecord {
    pub id: String,
    /// The collection's name as given at ingest (case kept) and its tag.
    pub collection: String,
    pub collection_tag: String,
    /// The agent that ingested it.
    pub agent_id: String,
    pub source: Source,
    pub file_name: String,
    pub title: String,
    pub doc_type: String,
    /// ISO 639-1 code when known (given, or detected); decides stemming and stop words.
    pub language: Option<String>,
    pub tags: Vec<String>,
    /// `documentCreatedAt`: as given in `itemExtra.docCreatedAt`, else the ingest time.
    pub created_at: String,
    /// When this version was ingested (ms since the epoch).
    pub saved_at_ms: u64,
    /// The embeddings model of the chunks' vectors, when they have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// The caller's `itemExtra`, sanitised, kept for the record.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Chunks the document was cut into (`chunkTotal`), whatever was deleted since.
    pub chunk_total: usize,
    pub chunks: Vec<ChunkRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRecord {
    /// Its number in the document from 0 (kept when other chunks are deleted).
    pub index: usize,
    pub text: String,
    /// Character offsets in the extracted text.
    pub start: usize,
    pub end: usize,
    /// Little-endian `f32`s, base64 (a third of the JSON size of a number list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
}

impl DocumentRecord {
    pub fn key(&self) -> String {
        doc_key(&self.id)
    }

    pub fn citation(&self, index: usize) -> String {
        citation(&self.file_name, index)
    }

    /// The id of chunk `index` (what results and `knowledge.library.delete` use).
    pub fn chunk_id(&self, index: usize) -> String {
        chunk_id(&self.id, index)
    }

    /// `documentId` as clients see it: the caller's `itemExtra.docId` when it gave one
    /// (the dashboard keys its documents by it), else the library's own id.
    pub fn display_id(&self) -> &str {
        self.extra
            .get("docId")
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .unwrap_or(&self.id)
    }
}

/// What a `doc.` key holds. A deleted document leaves a tombstone rather than no key, so
/// that every store replays its deletion to an index resuming after it (the embedded store
/// replays current values only) and the bucket's latest revision is always one an index
/// sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredDocument {
    Live(Box<DocumentRecord>),
    Deleted(Tombstone),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    pub id: String,
    pub deleted_at_ms: u64,
}

impl StoredDocument {
    pub fn live(self) -> Option<DocumentRecord> {
        match self {
            StoredDocument::Live(doc) => Some(*doc),
            StoredDocument::Deleted(_) => None,
        }
    }
}

/// `<file>#chunk-N`, N from 1 (upstream's citation), of the chunk numbered `index` from 0.
pub fn citation(file_name: &str, index: usize) -> String {
    format!("{file_name}#chunk-{}", index + 1)
}

pub fn doc_key(document_id: &str) -> String {
    format!("{DOC_PREFIX}{document_id}")
}

pub fn chunk_id(document_id: &str, index: usize) -> String {
    format!("{document_id}-{}", index + 1)
}

/// The id of the document a file becomes in a collection: the same file (name) in the same
/// collection is the same document, so ingesting it again replaces it.
pub fn document_id(collection_tag: &str, file_name: &str) -> String {
    let digest = Sha256::digest(format!("{collection_tag}\0{file_name}").as_bytes());
    format!("kd{}", &hex::encode(digest)[..30])
}

pub fn encode_vector(vector: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for value in vector {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_vector(encoded: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Upstream's tag rule: lower case, runs outside `[a-z0-9._-]` become `-`, no `-` at
/// either end; empty becomes `fallback`.
pub fn collection_tag(name: &str, fallback: &str) -> String {
    let lower = name.trim().to_lowercase();
    let mut tag = String::with_capacity(lower.len());
    let mut in_run = false;
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
            tag.push(c);
            in_run = false;
        } else if !in_run {
            tag.push('-');
            in_run = true;
        }
    }
    // A tag is a key of the state store: no leading or trailing dot, no `..`.
    let mut tag = tag.to_string();
    while tag.contains("..") {
        tag = tag.replace("..", ".");
    }
    let tag = tag.trim_matches(|c| c == '-' || c == '.').to_string();
    if tag.is_empty() {
        fallback.to_string()
    } else {
        tag
    }
}

/// The grant of every agent (`agentId: "*"`).
pub const EVERY_AGENT: &str = "*";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionRecord {
    pub collection_id: String,
    /// The latest name it was written under (case kept).
    pub collection: String,
    pub collection_tag: String,
    pub owner_agent_id: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub can_read: bool,
    pub can_write: bool,
    #[serde(default)]
    pub is_owner: bool,
}

/// What one agent may do with one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    pub can_read: bool,
    pub can_write: bool,
    pub is_owner: bool,
}

impl CollectionRecord {
    pub fn new(name: &str, tag: &str, owner: &str) -> Self {
        CollectionRecord {
            collection_id: uuid::Uuid::new_v4().to_string(),
            collection: name.to_string(),
            collection_tag: tag.to_string(),
            owner_agent_id: owner.to_string(),
            created_at_ms: argent_proto::now_ms(),
            grants: BTreeMap::new(),
        }
    }

    /// The owner may do everything; others what their grant (or the grant to every
    /// agent) allows; an owner grant counts as ownership.
    pub fn access(&self, agent_id: &str) -> Access {
        if same_agent(&self.owner_agent_id, agent_id) {
            return Access {
                can_read: true,
                can_write: true,
                is_owner: true,
            };
        }
        let mut access = Access::default();
        for (grantee, grant) in &self.grants {
            if grantee == EVERY_AGENT || same_agent(grantee, agent_id) {
                access.can_read |= grant.can_read || grant.can_write || grant.is_owner;
                access.can_write |= grant.can_write || grant.is_owner;
                access.is_owner |= grant.is_owner;
            }
        }
        access
    }
}

pub fn collection_key(tag: &str) -> String {
    format!("{COLLECTION_PREFIX}{tag}")
}

/// Agent ids compare case-insensitively.
pub fn same_agent(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_upstream() {
        assert_eq!(
            collection_tag("  My Docs!! 2024 ", "default"),
            "my-docs-2024"
        );
        assert_eq!(collection_tag("--", "default"), "default");
        assert_eq!(collection_tag("a.b_c-d", ""), "a.b_c-d");
        assert_eq!(collection_tag("Ünïcode", "x"), "n-code");
        assert_eq!(collection_tag("..a..b.", "x"), "a.b");
        assert_eq!(collection_tag("a...b", "x"), "a.b");
        assert_eq!(collection_tag(".-x", "y"), "x");
    }

    #[test]
    fn ids_are_stable_and_round_trip() {
        let id = document_id("default", "a.md");
        assert_eq!(id, document_id("default", "a.md"));
        assert_ne!(id, document_id("other", "a.md"));
        assert_eq!(chunk_id(&id, 4), format!("{id}-5"));
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(decode_vector(&encode_vector(&v)), Some(v));
    }

    #[test]
    fn access_from_owner_and_grants() {
        let mut c = CollectionRecord::new("Docs", "docs", "main");
        assert!(c.access("MAIN").is_owner);
        assert_eq!(c.access("ops"), Access::default());
        c.grants.insert(
            "ops".into(),
            Grant {
                can_read: false,
                can_write: true,
                is_owner: false,
            },
        );
        assert_eq!(
            c.access("ops"),
            Access {
                can_read: true,
                can_write: true,
                is_owner: false
            }
        );
        c.grants.insert(
            EVERY_AGENT.into(),
            Grant {
                can_read: true,
                can_write: false,
                is_owner: false,
            },
        );
        assert!(c.access("anyone").can_read && !c.access("anyone").can_write);
    }
}
