//! The knowledge library as the agent's tools (upstream's `knowledge_search` and
//! `knowledge_collections_list`, and `knowledge_ingest` for text the agent wrote), acting
//! as the agent whose turn calls them.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{text_arg, Tool};
use crate::knowledge::chunk::Windows;
use crate::knowledge::records::{citation, Source};
use crate::knowledge::{cut, IngestFile, IngestOptions, Knowledge, SearchRequest};
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;

/// Characters of one result the model gets (upstream's summary length).
const RESULT_CHARS: usize = 600;

pub struct Search(pub Arc<Knowledge>);
pub struct CollectionsList(pub Arc<Knowledge>);
pub struct Ingest(pub Arc<Knowledge>);

/// `collection`: a string or a list of strings.
fn collections(args: &Value) -> Vec<String> {
    match args.get("collection") {
        Some(Value::String(one)) if !one.trim().is_empty() => vec![one.trim().to_string()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Tool for Search {
    fn name(&self) -> &'static str {
        "knowledge_search"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Search the knowledge library (ingested documents) by words or meaning. Cite results by their citation (file#chunk-N) in your answer.",
            schema: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "collection": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "limit": {"type": "number", "minimum": 1, "maximum": 100}
                },
                "required": ["query"]
            }),
        }
    }

    async fn run(&self, _rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
        let Some(query) = text_arg(args, "query").filter(|q| !q.trim().is_empty()) else {
            return ToolOutcome::failed("knowledge_search needs {\"query\": \"…\"}");
        };
        let limit = args
            .get("limit")
            .and_then(Value::as_f64)
            .map_or(8, |l| l.clamp(1.0, 100.0) as usize);
        let request = SearchRequest {
            query: query.trim().to_string(),
            collections: collections(args),
            limit,
        };
        match self.0.search(agent_id, &request).await {
            Ok((hits, _)) if hits.is_empty() => {
                ToolOutcome::done(format!("No knowledge found for {query:?}"))
            }
            Ok((hits, _)) => {
                let mut text = format!("Found {} knowledge items:\n", hits.len());
                for (n, hit) in hits.iter().enumerate() {
                    let c = &hit.chunk;
                    text.push_str(&format!(
                        "\n[{}] citation: {} (collection {}, \"{}\")\n{}\n",
                        n + 1,
                        citation(&c.source_file, c.chunk_index as usize),
                        c.collection,
                        c.title,
                        cut(&c.text, RESULT_CHARS, true)
                    ));
                }
                ToolOutcome::done(text)
            }
            Err(err) => ToolOutcome::failed(format!("knowledge search failed: {err}")),
        }
    }
}

#[async_trait]
impl Tool for CollectionsList {
    fn name(&self) -> &'static str {
        "knowledge_collections_list"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "List the knowledge collections you can read or write.",
            schema: json!({"type": "object", "properties": {}}),
        }
    }

    async fn run(&self, _rt: &Runtime, agent_id: &str, _args: &Value) -> ToolOutcome {
        let collections = match self.0.collections(agent_id).await {
            Ok(collections) => collections,
            Err(err) => return ToolOutcome::failed(format!("cannot list collections: {err}")),
        };
        let list: Vec<Value> = collections
            .into_iter()
            .filter(|(_, a)| a.can_read || a.can_write)
            .map(|(c, a)| {
                json!({"collection": c.collection, "owner": c.owner_agent_id, "canRead": a.can_read, "canWrite": a.can_write})
            })
            .collect();
        ToolOutcome::done(Value::Array(list).to_string())
    }
}

#[async_trait]
impl Tool for Ingest {
    fn name(&self) -> &'static str {
        "knowledge_ingest"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Save text you wrote (notes, a summary, a finding) into the knowledge library so it can be searched later. The same title in the same collection replaces the earlier text.",
            schema: json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "text": {"type": "string"},
                    "collection": {"type": "string", "description": "default: your own notes collection"}
                },
                "required": ["title", "text"]
            }),
        }
    }

    async fn run(&self, _rt: &Runtime, agent_id: &str, args: &Value) -> ToolOutcome {
        let (Some(title), Some(text)) = (
            text_arg(args, "title").filter(|t| !t.trim().is_empty()),
            text_arg(args, "text").filter(|t| !t.trim().is_empty()),
        ) else {
            return ToolOutcome::failed(
                "knowledge_ingest needs {\"title\": \"…\", \"text\": \"…\"}",
            );
        };
        let file = IngestFile {
            file_name: format!("{}.md", title.trim()),
            mime_type: Some("text/markdown".into()),
            content: text.to_string(),
            refused: None,
        };
        let mut item_extra = serde_json::Map::new();
        item_extra.insert("docTitle".into(), json!(title.trim()));
        let options = IngestOptions {
            // By default the agent's own notes collection: an agent writing first must not
            // become the owner of the shared `default` collection operators ingest into.
            collection: text_arg(args, "collection")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map_or_else(|| format!("agent-{agent_id}-notes"), str::to_string),
            windows: Windows::default(),
            item_extra,
            source: Source::KnowledgeIngest,
        };
        match self.0.ingest(agent_id, vec![file], options).await {
            Ok(report) if report.accepted_files == 1 => ToolOutcome::done(format!(
                "saved to collection {} as {} chunk(s)",
                report.collection, report.total_chunks
            )),
            Ok(report) => ToolOutcome::failed(format!(
                "not saved: {}",
                report
                    .errors
                    .first()
                    .map_or("unknown reason", |e| e.error.as_str())
            )),
            Err(err) => ToolOutcome::failed(format!("not saved: {err}")),
        }
    }
}
