//! `argent knowledge ingest FILE… | search QUERY | list`: the knowledge library from the
//! command line (`knowledge.ingest`, `knowledge.search`, `knowledge.library.list`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use argent_client::Client;

use super::call::report;
use super::ConnectArgs;

/// One file is sent per request; a frame holds 10 MiB, so base64 content stays below it.
const MAX_SENT_BYTES: u64 = 7 * 1024 * 1024;
/// Extracting and embedding a large file takes a while.
const INGEST_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Args, Debug)]
pub struct KnowledgeArgs {
    #[command(subcommand)]
    pub command: KnowledgeCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum KnowledgeCommand {
    /// Ingest files (text, Markdown, HTML, PDF, DOCX, XLSX) into a collection.
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Collection (default `default`).
        #[arg(long)]
        collection: Option<String>,
        /// Characters per chunk (300..12000, default 1800).
        #[arg(long)]
        chunk_size: Option<u64>,
        /// Characters shared by consecutive chunks (default 200).
        #[arg(long)]
        overlap: Option<u64>,
        /// Act as the agent of this session key (default: the default agent).
        #[arg(long)]
        session_key: Option<String>,
    },
    /// Search the library: every word counts, none is required.
    Search {
        #[arg(required = true)]
        query: Vec<String>,
        /// Only these collections (repeatable).
        #[arg(long)]
        collection: Vec<String>,
        #[arg(long, default_value_t = 12)]
        limit: u64,
        #[arg(long)]
        session_key: Option<String>,
        /// Print the method's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the library's documents.
    List {
        #[arg(long)]
        collection: Option<String>,
        /// Only documents whose text, title or file contains this.
        #[arg(long)]
        q: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long)]
        session_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: KnowledgeArgs) -> ExitCode {
    let mut options = args.connect.options();
    if matches!(args.command, KnowledgeCommand::Ingest { .. }) {
        options.timeout = options.timeout.max(INGEST_TIMEOUT);
    }
    let client = match Client::connect(&options).await {
        Ok(client) => client,
        Err(err) => {
            report(&err);
            return ExitCode::from(1);
        }
    };
    let code = match args.command {
        KnowledgeCommand::Ingest {
            files,
            collection,
            chunk_size,
            overlap,
            session_key,
        } => {
            let mut options = json!({});
            if let Some(c) = collection {
                options["collection"] = json!(c);
            }
            if let Some(n) = chunk_size {
                options["chunkSize"] = json!(n);
            }
            if let Some(n) = overlap {
                options["overlap"] = json!(n);
            }
            ingest(&client, &files, options, session_key).await
        }
        KnowledgeCommand::Search {
            query,
            collection,
            limit,
            session_key,
            json,
        } => {
            let mut params = json!({"query": query.join(" "), "options": {"limit": limit}});
            if !collection.is_empty() {
                params["options"]["collection"] = json!(collection);
            }
            if let Some(key) = session_key {
                params["sessionKey"] = json!(key);
            }
            match client.call("knowledge.search", params).await {
                Ok(answer) if json => print_json(&answer),
                Ok(answer) => print_results(&answer),
                Err(err) => {
                    report(&err);
                    ExitCode::from(1)
                }
            }
        }
        KnowledgeCommand::List {
            collection,
            q,
            limit,
            session_key,
            json,
        } => {
            let mut params = json!({"options": {"limit": limit, "distinctByDocument": true}});
            if let Some(c) = collection {
                params["options"]["collection"] = json!(c);
            }
            if let Some(q) = q {
                params["options"]["q"] = json!(q);
            }
            if let Some(key) = session_key {
                params["sessionKey"] = json!(key);
            }
            match client.call("knowledge.library.list", params).await {
                Ok(answer) if json => print_json(&answer),
                Ok(answer) => print_rows(&answer),
                Err(err) => {
                    report(&err);
                    ExitCode::from(1)
                }
            }
        }
    };
    client.close().await;
    code
}

/// How a file is sent: plain text for text formats that are UTF-8, base64 otherwise.
fn content_of(path: &std::path::Path, bytes: Vec<u8>) -> (String, Option<&'static str>) {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = match extension.as_str() {
        "pdf" => Some("application/pdf"),
        "docx" => Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        "xlsx" => Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        "md" | "markdown" => Some("text/markdown"),
        "html" | "htm" => Some("text/html"),
        _ => None,
    };
    let binary = matches!(extension.as_str(), "pdf" | "docx" | "xlsx" | "xlsm");
    match (binary, String::from_utf8(bytes)) {
        (false, Ok(text)) => (text, mime.or(Some("text/plain"))),
        (_, Ok(text)) => (
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            mime,
        ),
        (_, Err(err)) => (
            base64::engine::general_purpose::STANDARD.encode(err.into_bytes()),
            mime.or(Some("application/octet-stream")),
        ),
    }
}

async fn ingest(
    client: &Client,
    files: &[PathBuf],
    options: Value,
    session_key: Option<String>,
) -> ExitCode {
    let (mut accepted, mut rejected, mut chunks, mut embedded) = (0, 0, 0, 0);
    let mut collection = String::new();
    for (n, path) in files.iter().enumerate() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let progress = format!("[{}/{}] {name}", n + 1, files.len());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_SENT_BYTES {
            eprintln!("{progress}: skipped: {size} bytes is more than one request carries ({MAX_SENT_BYTES})");
            rejected += 1;
            continue;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("{progress}: cannot read: {err}");
                rejected += 1;
                continue;
            }
        };
        let (content, mime) = content_of(path, bytes);
        let mut params = json!({
            "files": [{"fileName": name, "mimeType": mime, "content": content}],
            "options": options,
        });
        if let Some(key) = &session_key {
            params["sessionKey"] = json!(key);
        }
        match client.call("knowledge.ingest", params).await {
            Ok(answer) => {
                collection = answer["collection"].as_str().unwrap_or("").to_string();
                let got = answer["totalChunks"].as_u64().unwrap_or(0);
                if answer["acceptedFiles"].as_u64() == Some(1) {
                    accepted += 1;
                    chunks += got;
                    embedded += answer["embeddedChunks"].as_u64().unwrap_or(0);
                    eprintln!("{progress}: {got} chunks");
                } else {
                    rejected += 1;
                    let why = answer["errors"][0]["error"].as_str().unwrap_or("rejected");
                    eprintln!("{progress}: rejected: {why}");
                }
            }
            Err(err) => {
                eprintln!("{progress}: failed:");
                report(&err);
                rejected += 1;
            }
        }
    }
    println!(
        "ingested {accepted} file(s) into collection {collection:?}: {chunks} chunks ({embedded} embedded), {rejected} rejected"
    );
    if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_json(answer: &Value) -> ExitCode {
    let text = serde_json::to_string_pretty(answer).expect("JSON values serialize");
    let _ = writeln!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

fn print_results(answer: &Value) -> ExitCode {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout();
    if results.is_empty() {
        let _ = writeln!(out, "no results");
        return ExitCode::SUCCESS;
    }
    for (n, r) in results.iter().enumerate() {
        let summary: String = r["summary"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(240)
            .collect();
        let _ = writeln!(
            out,
            "{}. {}  (score {}, collection {})\n   {}",
            n + 1,
            r["citation"].as_str().unwrap_or(""),
            r["score"],
            r["collection"].as_str().unwrap_or(""),
            summary
        );
    }
    ExitCode::SUCCESS
}

fn print_rows(answer: &Value) -> ExitCode {
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout();
    for r in &rows {
        let _ = writeln!(
            out,
            "{}  {}  ({} chunks, collection {}, saved {})",
            r["title"].as_str().unwrap_or(""),
            r["sourceFile"].as_str().unwrap_or(""),
            r["chunkTotal"],
            r["collection"].as_str().unwrap_or(""),
            r["savedAt"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out, "{} document(s)", rows.len());
    ExitCode::SUCCESS
}
