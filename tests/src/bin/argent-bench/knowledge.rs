//! `knowledge`: the knowledge library at scale. A generated English-like corpus (50 MB,
//! 100 files; `--quick`: 5 MB) is ingested through a gateway into one node-agent in
//! chunks of ~500 characters (~100,000 chunks), with embeddings from the double; then
//! keyword and hybrid search latency through the gateway, the index size on disk, the
//! node's memory, and how long a fresh node-agent takes to catch up on its own.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::embeddings_double::{EmbeddingsDouble, DIMENSIONS};
use argent_tests::{Gateway, Nats, Node};

use super::{cpu_seconds, dir_bytes, percentiles, set_config, Settings};

/// Files sent per ingest call (each ~500 KB: a call stays well under a 10 MiB frame).
const FILES_PER_CALL: usize = 8;
const FILE_BYTES: usize = 500_000;
const CHUNK_SIZE: u64 = 500;
const QUERIES: usize = 400;

/// A deterministic pseudo-random generator (xorshift), so every run ingests the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A Zipf-like draw in `0..n`: small numbers (common words) far more often.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

/// 6,000 made-up words of 2–4 syllables.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ter", "san", "vel", "dor", "qui", "ne", "ra", "tho", "bel", "cu", "sti",
        "mar", "en", "po", "lia", "gor", "fen", "wy", "zu", "har", "ost",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < 6000 {
        let n = 2 + (rng.next() % 3) as usize;
        let word: String = (0..n)
            .map(|_| SYLLABLES[(rng.next() % SYLLABLES.len() as u64) as usize])
            .collect();
        words.insert(word);
    }
    words.into_iter().collect()
}

fn document(rng: &mut Rng, words: &[String], bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 200);
    while text.len() < bytes {
        let length = 8 + (rng.next() % 13) as usize;
        for i in 0..length {
            let word = &words[rng.zipf(words.len())];
            if i == 0 {
                let mut chars = word.chars();
                text.extend(chars.next().map(|c| c.to_ascii_uppercase()));
                text.push_str(chars.as_str());
            } else {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push_str(". ");
        if rng.next().is_multiple_of(8) {
            text.push_str("\n\n");
        }
    }
    text
}

/// Latencies of `QUERIES` searches of 2–3 corpus words (OR semantics: each matches).
async fn search_latency(
    client: &Client,
    words: &[String],
    queries: usize,
) -> anyhow::Result<Value> {
    let mut rng = Rng(42);
    let mut samples = Vec::with_capacity(queries);
    let mut empty = 0;
    for _ in 0..queries {
        let n = 2 + (rng.next() % 2) as usize;
        // Words from the middle of the frequency range: neither stop-word-like nor absent.
        let query: Vec<&str> = (0..n)
            .map(|_| words[50 + rng.zipf(2000)].as_str())
            .collect();
        let started = Instant::now();
        let answer = client
            .call(
                "knowledge.search",
                json!({"query": query.join(" "), "options": {"limit": 12}}),
            )
            .await?;
        samples.push(started.elapsed().as_nanos() as u64);
        if answer["count"].as_u64() == Some(0) {
            empty += 1;
        }
    }
    let mut out = percentiles(&mut samples);
    out["empty_answers"] = json!(empty);
    Ok(out)
}

pub async fn bench(settings: &Settings) -> anyhow::Result<Value> {
    let nats = Nats::start().await?;
    let double = EmbeddingsDouble::start().await;
    let gateway = Gateway::cluster(&nats)
        .args(&["--gateway-id", "bench-knowledge"])
        .start()
        .await?;
    let state_a = tempfile::tempdir()?;
    let mut node_a = Node::start_in(&nats, "bench-knowledge-a", state_a.path(), &[], &[]).await?;
    let mut options = gateway.options();
    options.timeout = Duration::from_secs(600);
    let client = Client::connect(&options).await?;
    argent_tests::eventually(Duration::from_secs(20), || async {
        client
            .call("knowledge.collections.list", json!({}))
            .await
            .ok()
    })
    .await
    .context("no node-agent serves the library")?;
    set_config(
        &client,
        json!({"agents": {"defaults": {"memorySearch": {
            "provider": "openai", "model": "bench-embed",
            "remote": {"baseUrl": double.base_url(), "apiKey": "bench"}}}}}),
    )
    .await?;

    // Ingest.
    let words = vocabulary();
    let files = settings.count(100, 10);
    let mut rng = Rng(7);
    let corpus: Vec<(String, String)> = (0..files)
        .map(|i| {
            (
                format!("doc-{i:03}.txt"),
                document(&mut rng, &words, FILE_BYTES),
            )
        })
        .collect();
    let corpus_bytes: usize = corpus.iter().map(|(_, t)| t.len()).sum();
    let cpu_before = cpu_seconds(node_a.proc.pid())?;
    let started = Instant::now();
    let (mut chunks, mut embedded, mut revision) = (0u64, 0u64, 0u64);
    for batch in corpus.chunks(FILES_PER_CALL) {
        let files: Vec<Value> = batch
            .iter()
            .map(
                |(name, text)| json!({"fileName": name, "mimeType": "text/plain", "content": text}),
            )
            .collect();
        let answer = client
            .call(
                "knowledge.ingest",
                json!({"files": files, "options": {"chunkSize": CHUNK_SIZE, "overlap": 0}}),
            )
            .await?;
        anyhow::ensure!(answer["rejectedFiles"] == 0, "rejected: {answer}");
        chunks += answer["totalChunks"].as_u64().unwrap_or(0);
        embedded += answer["embeddedChunks"].as_u64().unwrap_or(0);
        revision = answer["revision"].as_u64().unwrap_or(revision);
    }
    let acknowledged_secs = started.elapsed().as_secs_f64();
    // Searchable: the first search waits for the index to apply the last write.
    let first = client
        .call("knowledge.search", json!({"query": words[100]}))
        .await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let ingest_cpu = cpu_seconds(node_a.proc.pid())? - cpu_before;
    anyhow::ensure!(
        first["index"]["revision"].as_u64() >= Some(revision),
        "index behind: {first}"
    );

    let queries = settings.count(QUERIES, 50);
    let cpu_before = cpu_seconds(node_a.proc.pid())?;
    let hybrid = search_latency(&client, &words, queries).await?;
    let hybrid_cpu_ms = (cpu_seconds(node_a.proc.pid())? - cpu_before) * 1000.0 / queries as f64;
    set_config(
        &client,
        json!({"agents": {"defaults": {"memorySearch": {"enabled": false}}}}),
    )
    .await?;
    let cpu_before = cpu_seconds(node_a.proc.pid())?;
    let keyword = search_latency(&client, &words, queries).await?;
    let keyword_cpu_ms = (cpu_seconds(node_a.proc.pid())? - cpu_before) * 1000.0 / queries as f64;
    let index_bytes = dir_bytes(&state_a.path().join("knowledge-index"))?;
    let rss_a = node_a.proc.rss_kib()?;

    // A fresh node-agent catches up alone; the first one is gone.
    let state_b = tempfile::tempdir()?;
    node_a.proc.kill();
    let started = Instant::now();
    let _node_b = Node::start_in(&nats, "bench-knowledge-b", state_b.path(), &[], &[]).await?;
    let caught_up = argent_tests::eventually(Duration::from_secs(600), || async {
        let answer = client
            .call("knowledge.search", json!({"query": words[100]}))
            .await
            .ok()?;
        (answer["index"]["nodeId"] == "bench-knowledge-b"
            && answer["index"]["revision"].as_u64() >= Some(revision))
        .then_some(())
    })
    .await;
    let catch_up_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(caught_up.is_some(), "the fresh node never caught up");
    client.close().await;
    Ok(json!({
        "corpus_bytes": corpus_bytes,
        "files": files,
        "chunks": chunks,
        "embedded_chunks": embedded,
        "embedding_dimensions": DIMENSIONS,
        "ingest_acknowledged_seconds": acknowledged_secs,
        "ingest_searchable_seconds": ingest_secs,
        "ingest_chunks_per_second": chunks as f64 / ingest_secs,
        "ingest_mb_per_second": corpus_bytes as f64 / 1e6 / ingest_secs,
        "node_cpu_ms_per_chunk_ingested": ingest_cpu * 1000.0 / chunks.max(1) as f64,
        "search_keyword": keyword,
        "search_keyword_node_cpu_ms_per_query": keyword_cpu_ms,
        "search_hybrid": hybrid,
        "search_hybrid_node_cpu_ms_per_query": hybrid_cpu_ms,
        "index_bytes_on_disk": index_bytes,
        "index_bytes_per_chunk": index_bytes as f64 / chunks.max(1) as f64,
        "node_rss_kib_after_ingest": rss_a,
        "fresh_node_catch_up_seconds": catch_up_secs,
        "fresh_node_chunks_per_second": chunks as f64 / catch_up_secs,
    }))
}
