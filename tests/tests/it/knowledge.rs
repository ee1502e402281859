//! The knowledge library (`knowledge.*`, PROTOCOL.md §5.7) on real processes: files ingested
//! through one gateway are found through another at once (read-your-writes), PDF, DOCX,
//! Markdown and text are read, search stems English and counts every word; collections are
//! private to their owner until granted; delete and re-ingest replace documents whole;
//! semantic search through an embeddings double, and keyword search when it fails;
//! node-agents resume their index after a restart and a new one catches up alone; a
//! node-agent killed mid-ingest leaves no half document; the one-process default serves it
//! too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use argent_client::{Client, ClientError};
use argent_tests::call_error;
use argent_tests::documents::{docx, pdf_with_pages};
use argent_tests::embeddings_double::EmbeddingsDouble;
use argent_tests::{eventually, Gateway, Nats, Node};

use crate::chat_cluster::{gateway, publish_config, wait_nodes};

const PDF_MIME: &str = "application/pdf";
const DOCX_MIME: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A client whose calls may take long (an ingest of megabytes, a failover).
async fn patient_client(gw: &Gateway) -> Client {
    gw.client_with(|o| o.timeout = Duration::from_secs(120))
        .await
        .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn file(name: &str, mime: &str, content: &str) -> Value {
    json!({"fileName": name, "mimeType": mime, "content": content})
}

fn with_session(mut params: Value, session: Option<&str>) -> Value {
    if let Some(key) = session {
        params["sessionKey"] = json!(key);
    }
    params
}

async fn try_ingest(
    client: &Client,
    files: Vec<Value>,
    options: Value,
    session: Option<&str>,
) -> Result<Value, ClientError> {
    let params = with_session(json!({"files": files, "options": options}), session);
    client.call("knowledge.ingest", params).await
}

/// Ingests and prints how long it took.
async fn ingest(
    client: &Client,
    files: Vec<Value>,
    options: Value,
    session: Option<&str>,
) -> Value {
    let started = Instant::now();
    let answer = try_ingest(client, files, options, session)
        .await
        .unwrap_or_else(|e| panic!("knowledge.ingest failed: {e}"));
    eprintln!(
        "knowledge.ingest: {} file(s) accepted, {} chunk(s), {} embedded, in {:?}",
        answer["acceptedFiles"],
        answer["totalChunks"],
        answer["embeddedChunks"],
        started.elapsed()
    );
    assert_eq!(answer["success"], true, "{answer}");
    answer
}

async fn try_search(
    client: &Client,
    query: &str,
    options: Value,
    session: Option<&str>,
) -> Result<Value, ClientError> {
    let params = with_session(json!({"query": query, "options": options}), session);
    client.call("knowledge.search", params).await
}

async fn search(client: &Client, query: &str) -> Value {
    try_search(client, query, json!({}), None)
        .await
        .unwrap_or_else(|e| panic!("knowledge.search {query:?} failed: {e}"))
}

async fn library(client: &Client, options: Value, session: Option<&str>) -> Value {
    let params = with_session(json!({"options": options}), session);
    client
        .call("knowledge.library.list", params)
        .await
        .unwrap_or_else(|e| panic!("knowledge.library.list failed: {e}"))
}

fn results(answer: &Value) -> &Vec<Value> {
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results[] in {answer}"))
}

fn rows(answer: &Value) -> &Vec<Value> {
    answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows[] in {answer}"))
}

/// The `sourceFile` of every result, best first.
fn result_files(answer: &Value) -> Vec<String> {
    results(answer)
        .iter()
        .map(|r| r["sourceFile"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `ingested[]` entries of one file.
fn ingested_of<'a>(answer: &'a Value, file_name: &str) -> Vec<&'a Value> {
    answer["ingested"]
        .as_array()
        .expect("ingested[]")
        .iter()
        .filter(|c| c["fileName"] == file_name)
        .collect()
}

fn ids_of(entries: &[&Value]) -> BTreeSet<String> {
    entries
        .iter()
        .map(|c| c["id"].as_str().expect("an id").to_string())
        .collect()
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Waits until `client`'s gateway lists the node `id`.
async fn wait_node(client: &Client, id: &str) {
    let listed = eventually(Duration::from_secs(15), || async {
        let status = client.call("status", json!({})).await.ok()?;
        let nodes = status["cluster"]["nodes"].as_array()?.clone();
        nodes.iter().any(|n| n["id"] == id).then_some(())
    })
    .await;
    assert!(listed.is_some(), "node {id} did not register");
}

// ---------------------------------------------------------------------------------------------
// A. Formats, read-your-writes across gateways, BM25 with OR semantics, stemming

const NOTES: &str = "The lighthouse keeper lived alone on the northern cape for eleven years. \
He kept a careful log of every ship that passed the point, and he wrote to his sister once a month. \
Every winter the harbour froze, and the fishing boats stayed tied to the quay until the spring thaw. \
The villagers brought him bread, lamp oil and news from the mainland whenever the weather allowed.";

const GUIDE: &str = "# Field guide to the coastal trail\n\n\
Most visitors walk the coastal trail in about four hours, but the local club has been running \
a faster route along the cliffs since the spring. The route climbs past the old quarry, crosses \
two wooden bridges and ends at the bakery in the square. Bring water, a warm jacket and sturdy \
boots, because the path is steep and the wind off the sea is strong in the afternoon.\n";

fn survey_pages() -> Vec<String> {
    (1..=7)
        .map(|page| {
            let find = if page == 6 {
                " The rarest find of the season was a thin vein of zanzibarite near the dry \
                 riverbed, the first one reported in this valley."
            } else {
                " Nothing unusual was found on this stretch of the ridge."
            };
            format!(
                "Page {page} of the annual geology survey. The survey team measured the layers \
                 of sandstone and shale along the eastern ridge and recorded every sample in \
                 the field notebook.{find}"
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_through_one_gateway_is_found_through_another() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _nodes = [
        Node::start(&nats, "node-1").await.unwrap(),
        Node::start(&nats, "node-2").await.unwrap(),
    ];
    let on_a = patient_client(&a).await;
    let on_b = patient_client(&b).await;
    wait_nodes(&on_a, 2).await;
    wait_nodes(&on_b, 2).await;

    let pages = survey_pages();
    let page_refs: Vec<&str> = pages.iter().map(String::as_str).collect();
    let pdf = pdf_with_pages(&page_refs);
    let word = docx(&[
        "Museum acquisitions report",
        "The natural history wing received a cast of a quetzalcoatlus skeleton, one of the \
         largest flying animals ever known.",
        "The cast will hang above the main staircase from next autumn.",
    ]);
    let names = ["notes.txt", "guide.md", "survey.pdf", "museum.docx"];
    let ingested = ingest(
        &on_a,
        vec![
            file("notes.txt", "text/plain", NOTES),
            file("guide.md", "text/markdown", GUIDE),
            file("survey.pdf", PDF_MIME, &b64(&pdf)),
            file("museum.docx", DOCX_MIME, &b64(&word)),
        ],
        json!({}),
        None,
    )
    .await;
    assert_eq!(ingested["acceptedFiles"], 4, "{ingested}");
    assert_eq!(ingested["rejectedFiles"], 0, "{ingested}");
    assert_eq!(ingested["errors"], json!([]));
    assert_eq!(ingested["collection"], "default");
    assert_eq!(ingested["agentId"], "main");
    let total = number(&ingested["totalChunks"]);
    assert!(total >= 4, "{ingested}");
    let entries = ingested["ingested"].as_array().unwrap();
    assert_eq!(entries.len() as u64, total);
    let revision = number(&ingested["revision"]);
    assert!(revision > 0, "{ingested}");
    // Citations `<file>#chunk-N` (N from 1), ids `<documentId>-N`.
    for entry in entries {
        let (name, chunk) = (entry["fileName"].as_str().unwrap(), number(&entry["chunk"]));
        assert_eq!(
            entry["citation"],
            format!("{name}#chunk-{chunk}"),
            "{entry}"
        );
        assert!((1..=number(&entry["total"])).contains(&chunk), "{entry}");
        let id = entry["id"].as_str().unwrap();
        assert!(
            id.starts_with("kd") && id.ends_with(&format!("-{chunk}")),
            "{id}"
        );
    }
    for name in names {
        let first = ingested_of(&ingested, name);
        assert!(
            first
                .iter()
                .any(|c| c["citation"] == format!("{name}#chunk-1")),
            "{name} has no first chunk: {ingested}"
        );
    }
    let citation_of: BTreeMap<String, String> = entries
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["citation"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    // Through B at once, without waiting: what A acknowledged is found.
    let started = Instant::now();
    let found = search(&on_b, "zanzibarite").await;
    eprintln!("first search through B answered in {:?}", started.elapsed());
    assert!(
        number(&found["index"]["revision"]) >= revision,
        "the answering index had not applied the ingest: {found}"
    );
    let hits = results(&found);
    assert!(!hits.is_empty(), "page 6 of the PDF not found: {found}");
    assert_eq!(result_files(&found), vec!["survey.pdf"; hits.len()]);
    // Whichever node-agent answers (the ingest ran on one of them), it has applied the
    // ingest before answering: searches through a fresh client on B until both nodes
    // answered, none of them ever without the PDF.
    let fresh = patient_client(&b).await;
    let mut answered_by = BTreeSet::new();
    for _ in 0..16 {
        let found = search(&fresh, "zanzibarite").await;
        assert!(number(&found["index"]["revision"]) >= revision, "{found}");
        assert_eq!(
            result_files(&found).first().map(String::as_str),
            Some("survey.pdf"),
            "{found}"
        );
        answered_by.insert(found["index"]["nodeId"].as_str().unwrap().to_string());
        if answered_by.len() == 2 {
            break;
        }
    }
    assert_eq!(
        answered_by.len(),
        2,
        "searches never reached both node-agents"
    );
    let top = &hits[0];
    assert_eq!(top["documentType"], "pdf");
    assert_eq!(
        top["citation"].as_str().unwrap(),
        citation_of[top["id"].as_str().unwrap()]
    );
    assert!(top["citation"]
        .as_str()
        .unwrap()
        .starts_with("survey.pdf#chunk-"));
    // The text of page 6 (past the first four pages) was extracted.
    let listed = library(
        &on_b,
        json!({"q": "zanzibarite", "includeFullText": true}),
        None,
    )
    .await;
    assert!(!rows(&listed).is_empty(), "{listed}");
    for row in rows(&listed) {
        assert_eq!(row["sourceFile"], "survey.pdf");
        assert!(row["fullText"].as_str().unwrap().contains("zanzibarite"));
    }

    let found = search(&on_b, "quetzalcoatlus").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("museum.docx"),
        "{found}"
    );
    let top = &results(&found)[0];
    assert_eq!(top["documentType"], "docx");
    assert_eq!(
        top["citation"].as_str().unwrap(),
        citation_of[top["id"].as_str().unwrap()]
    );

    // Words of different sentences: every word counts, none is required.
    let notes_ids = ids_of(&ingested_of(&ingested, "notes.txt"));
    let found = search(&on_b, "lighthouse harbour").await;
    let top = &results(&found)[0];
    assert_eq!(top["sourceFile"], "notes.txt", "{found}");
    assert!(notes_ids.contains(top["id"].as_str().unwrap()), "{found}");
    assert_eq!(top["citation"], "notes.txt#chunk-1");
    // OR: a query with a word found nowhere still finds the chunk with the other one.
    let found = search(&on_b, "lighthouse xylophonist").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("notes.txt"),
        "{found}"
    );

    // English stemming: "runs" finds "running" (the guide is English, and long enough).
    assert!(!GUIDE.contains("runs"));
    let found = search(&on_b, "runs").await;
    assert_eq!(result_files(&found), vec!["guide.md"], "{found}");
    let top = &results(&found)[0];
    assert_eq!(top["documentLanguage"], "en");
    assert_eq!(top["documentTitle"], "Field guide to the coastal trail");
    assert_eq!(top["citation"], "guide.md#chunk-1");

    // A file that cannot be read is refused on its own; the others of the call are kept.
    let mixed = ingest(
        &on_a,
        vec![
            file("bad.pdf", PDF_MIME, &b64(b"not a pdf")),
            file(
                "extra.txt",
                "text/plain",
                "The ferry timetable changes in October, when the morning crossing moves to \
                 half past seven and the evening crossing is cancelled until the spring.",
            ),
        ],
        json!({}),
        None,
    )
    .await;
    assert_eq!(mixed["acceptedFiles"], 1, "{mixed}");
    assert_eq!(mixed["rejectedFiles"], 1, "{mixed}");
    let errors = mixed["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{mixed}");
    assert_eq!(errors[0]["fileName"], "bad.pdf");
    let why = errors[0]["error"].as_str().unwrap();
    assert!(why.contains("could not be read"), "{why}");
    assert!(ingested_of(&mixed, "bad.pdf").is_empty());
    assert!(!ingested_of(&mixed, "extra.txt").is_empty());
    let found = search(&on_b, "timetable").await;
    assert_eq!(result_files(&found), vec!["extra.txt"], "{found}");
    let listed = library(&on_b, json!({"sourceFile": "bad.pdf"}), None).await;
    assert_eq!(listed["total"], 0, "{listed}");
}

// ---------------------------------------------------------------------------------------------
// B. Collections: owned by their first writer, private until granted

#[tokio::test(flavor = "multi_thread")]
async fn collections_are_private_until_granted() {
    const OPS: Option<&str> = Some("agent:ops:main");
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let _node = Node::start(&nats, "node-1").await.unwrap();
    let client = patient_client(&gw).await;
    wait_nodes(&client, 1).await;

    let secret = ingest(
        &client,
        vec![file(
            "secret-plan.md",
            "text/markdown",
            "The falconridge acquisition closes in the third quarter; the board approved the \
             budget in March.",
        )],
        json!({"collection": "Private Notes"}),
        None,
    )
    .await;
    assert_eq!(secret["agentId"], "main");
    assert_eq!(secret["collection"], "Private Notes");
    let runbook = ingest(
        &client,
        vec![file(
            "ops-runbook.txt",
            "text/plain",
            "Rotate the falconridge credentials every quarter and page the on-call engineer \
             when the rotation fails.",
        )],
        json!({"collection": "Ops Runbook"}),
        OPS,
    )
    .await;
    assert_eq!(runbook["agentId"], "ops");

    // Ops may not read main's collection, by name…
    let denied = call_error(
        try_search(
            &client,
            "falconridge",
            json!({"collection": "Private Notes"}),
            OPS,
        )
        .await,
    );
    assert_eq!(denied.code, "INVALID_REQUEST");
    assert_eq!(
        denied.message,
        "No read access to knowledge collection: private-notes"
    );
    // … nor find its chunks among everything it searches.
    let theirs = try_search(&client, "falconridge", json!({}), OPS)
        .await
        .unwrap();
    assert_eq!(theirs["agentId"], "ops");
    assert_eq!(result_files(&theirs), vec!["ops-runbook.txt"], "{theirs}");
    // The same holds the other way round.
    let mine = search(&client, "falconridge").await;
    assert_eq!(result_files(&mine), vec!["secret-plan.md"], "{mine}");
    // Nor delete them: only collections one may write are looked at.
    let deleted = client
        .call(
            "knowledge.library.delete",
            json!({"sessionKey": "agent:ops:main", "options": {"sourceFile": "secret-plan.md"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (deleted["matched"].clone(), deleted["deleted"].clone()),
        (json!(0), json!(0))
    );

    // Only the owner grants.
    let grant = json!({"collection": "Private Notes", "agentId": "ops"});
    let refused = call_error(
        client
            .call(
                "knowledge.collections.grant",
                json!({"sessionKey": "agent:ops:main", "options": grant}),
            )
            .await,
    );
    assert_eq!(refused.code, "INVALID_REQUEST");
    assert_eq!(
        refused.message,
        "agent ops is not owner of collection Private Notes"
    );
    let granted = client
        .call("knowledge.collections.grant", json!({"options": grant}))
        .await
        .unwrap();
    assert_eq!(granted["actorAgentId"], "main");
    assert_eq!(granted["targetAgentId"], "ops");
    assert_eq!(granted["collectionTag"], "private-notes");
    assert_eq!(
        granted["granted"],
        json!({"canRead": true, "canWrite": false, "isOwner": false})
    );

    // Now ops reads it: by name, and among everything.
    let read = try_search(
        &client,
        "falconridge",
        json!({"collection": "Private Notes"}),
        OPS,
    )
    .await
    .unwrap();
    assert_eq!(result_files(&read), vec!["secret-plan.md"], "{read}");
    assert_eq!(read["collection"], json!(["private-notes"]));
    let everything = try_search(&client, "falconridge", json!({}), OPS)
        .await
        .unwrap();
    let files: BTreeSet<String> = result_files(&everything).into_iter().collect();
    assert_eq!(
        files,
        BTreeSet::from(["ops-runbook.txt".to_string(), "secret-plan.md".to_string()])
    );
    let collections = client
        .call(
            "knowledge.collections.list",
            json!({"sessionKey": "agent:ops:main", "options": {}}),
        )
        .await
        .unwrap();
    assert_eq!(collections["agentId"], "ops");
    let listed = collections["collections"].as_array().unwrap();
    let private = listed
        .iter()
        .find(|c| c["collection"] == "Private Notes")
        .unwrap_or_else(|| panic!("Private Notes not listed for ops: {collections}"));
    assert_eq!(private["collectionTag"], "private-notes");
    assert_eq!(private["ownerAgentId"], "main");
    assert_eq!(private["canRead"], true);
    assert_eq!(private["canWrite"], false);
    assert_eq!(private["isOwner"], false);
    let own = listed
        .iter()
        .find(|c| c["collection"] == "Ops Runbook")
        .unwrap_or_else(|| panic!("Ops Runbook not listed for ops: {collections}"));
    assert_eq!(own["isOwner"], true);

    // Reading is not writing.
    let refused = call_error(
        try_ingest(
            &client,
            vec![file("intrusion.txt", "text/plain", "ops was here")],
            json!({"collection": "Private Notes"}),
            OPS,
        )
        .await,
    );
    assert_eq!(refused.code, "UNAVAILABLE");
    assert_eq!(
        refused.message,
        "Error: No write access to knowledge collection: Private Notes"
    );
    let listed = library(&client, json!({"sourceFile": "intrusion.txt"}), None).await;
    assert_eq!(listed["total"], 0, "{listed}");
}

// ---------------------------------------------------------------------------------------------
// C. Delete, then re-ingest: documents are replaced whole

fn handbook(term: &str, sentences: usize) -> String {
    (1..=sentences)
        .map(|i| {
            format!(
                "Section {i} of the kitchen handbook explains how the team prepares the \
                 {term} for the breakfast service, how long it keeps in the cold room and who \
                 checks the labels before the doors open."
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_and_reingest() {
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let _node = Node::start(&nats, "node-1").await.unwrap();
    let client = patient_client(&gw).await;
    wait_nodes(&client, 1).await;
    // Small windows, so that the handbook is several chunks.
    let small = json!({"chunkSize": 300, "overlap": 0});

    let first = ingest(
        &client,
        vec![
            file("handbook.txt", "text/plain", &handbook("marmalade", 6)),
            file("appendix.txt", "text/plain", &handbook("quince", 1)),
        ],
        small.clone(),
        None,
    )
    .await;
    let old_chunks = ingested_of(&first, "handbook.txt");
    assert!(old_chunks.len() > 1, "{first}");
    let found = search(&client, "marmalade").await;
    assert!(!results(&found).is_empty(), "{found}");
    assert!(
        result_files(&found).iter().all(|f| f == "handbook.txt"),
        "{found}"
    );

    let deleted = client
        .call(
            "knowledge.library.delete",
            json!({"options": {"sourceFile": "handbook.txt"}}),
        )
        .await
        .unwrap();
    assert_eq!(deleted["matched"], old_chunks.len(), "{deleted}");
    assert_eq!(deleted["deleted"], old_chunks.len(), "{deleted}");
    assert_eq!(deleted["failed"], json!([]));
    let found = search(&client, "marmalade").await;
    assert_eq!(found["count"], 0, "{found}");
    assert!(results(&found).is_empty(), "{found}");
    let listed = library(
        &client,
        json!({"sourceFile": "handbook.txt", "sourceFileExact": true}),
        None,
    )
    .await;
    assert_eq!(listed["total"], 0, "{listed}");
    // The other file is untouched.
    let found = search(&client, "quince").await;
    assert_eq!(result_files(&found), vec!["appendix.txt"], "{found}");

    // The same file name again, with other content.
    let second = ingest(
        &client,
        vec![file(
            "handbook.txt",
            "text/plain",
            &handbook("tangerine", 4),
        )],
        small.clone(),
        None,
    )
    .await;
    let new_chunks = ingested_of(&second, "handbook.txt");
    assert!(new_chunks.len() > 1, "{second}");
    assert_eq!(number(&second["totalChunks"]) as usize, new_chunks.len());
    let found = search(&client, "marmalade").await;
    assert!(
        results(&found).is_empty(),
        "the deleted text is back: {found}"
    );
    let found = search(&client, "tangerine").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("handbook.txt"),
        "{found}"
    );
    let listed = library(
        &client,
        json!({"sourceFile": "handbook.txt", "sourceFileExact": true, "includeFullText": true}),
        None,
    )
    .await;
    assert_eq!(listed["total"], new_chunks.len(), "{listed}");
    let listed_ids: BTreeSet<String> = rows(&listed)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_ids, ids_of(&new_chunks));
    for row in rows(&listed) {
        assert_eq!(row["chunkTotal"], new_chunks.len(), "{row}");
        assert!(
            !row["fullText"].as_str().unwrap().contains("marmalade"),
            "{row}"
        );
    }

    // Re-ingesting over a live document replaces it whole: a shorter version leaves none of
    // the longer one's chunks behind.
    let third = ingest(
        &client,
        vec![file(
            "handbook.txt",
            "text/plain",
            "The apricot jam is made on Mondays.",
        )],
        small,
        None,
    )
    .await;
    assert_eq!(third["totalChunks"], 1, "{third}");
    let listed = library(
        &client,
        json!({"sourceFile": "handbook.txt", "sourceFileExact": true}),
        None,
    )
    .await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(rows(&listed)[0]["chunkTotal"], 1);
    assert_eq!(rows(&listed)[0]["citation"], "handbook.txt#chunk-1");
    let found = search(&client, "tangerine").await;
    assert!(results(&found).is_empty(), "{found}");
    let found = search(&client, "apricot").await;
    assert_eq!(result_files(&found), vec!["handbook.txt"], "{found}");
}

// ---------------------------------------------------------------------------------------------
// D. Semantic search through an OpenAI-compatible embeddings endpoint

const CARS: &str = "Buying a used car takes patience. Check the vehicle history, look under \
the hood at the engine, and take the sedan for a long drive on the highway before you pay. A \
good mechanic can tell you whether it was serviced on schedule and whether the tyres and brakes \
need work soon.";

const DOCTORS: &str = "A visit to the clinic starts at the front desk. The doctor reviews your \
medical history, listens to your heart and lungs, and may ask a physician colleague for a second \
opinion. Patients should bring a list of their medicines and any recent results to every \
appointment.";

const BOATS: &str = "A small boat needs regular care. Scrape the hull every spring, check the \
sails for tears and keep the ropes dry. The chandler in town sells varnish, rope and spare parts \
for every kind of ship.";

#[tokio::test(flavor = "multi_thread")]
async fn semantic_search_with_an_embeddings_double() {
    let double = EmbeddingsDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let _node = Node::start(&nats, "node-1").await.unwrap();
    let client = patient_client(&gw).await;
    wait_nodes(&client, 1).await;
    publish_config(
        &nats,
        &json!({"agents": {"defaults": {"memorySearch": {
            "provider": "openai",
            "model": "test-embed",
            "remote": {"baseUrl": double.base_url(), "apiKey": "k"},
        }}}}),
    )
    .await;
    for text in [CARS, DOCTORS, BOATS] {
        assert!(!text.to_lowercase().contains("automobile"));
        assert!(!text.to_lowercase().contains("vessel"));
    }

    let ingested = ingest(
        &client,
        vec![
            file("cars.txt", "text/plain", CARS),
            file("doctors.txt", "text/plain", DOCTORS),
        ],
        json!({}),
        None,
    )
    .await;
    let total = number(&ingested["totalChunks"]);
    assert!(total >= 2, "{ingested}");
    assert_eq!(number(&ingested["embeddedChunks"]), total, "{ingested}");
    let requests = double.requests();
    assert!(!requests.is_empty(), "the endpoint was not called");
    let first = &requests[0];
    assert_eq!(first.auth.as_deref(), Some("Bearer k"));
    assert_eq!(first.body["model"], "test-embed");
    assert!(first.body["input"].is_array(), "{}", first.body);

    // A word in neither file, a concept of one of them.
    let found = search(&client, "automobile").await;
    eprintln!("semantic: automobile -> {:?}", result_files(&found));
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("cars.txt"),
        "{found}"
    );
    let found = search(&client, "physicians").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("doctors.txt"),
        "{found}"
    );

    // The endpoint fails: keyword search still answers, ingest still succeeds (unembedded).
    double.set_failing(true);
    let found = search(&client, "engine").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("cars.txt"),
        "{found}"
    );
    let found = search(&client, "automobile").await;
    assert!(
        results(&found).is_empty(),
        "without vectors no file has the word: {found}"
    );
    let boats = ingest(
        &client,
        vec![file("boats.txt", "text/plain", BOATS)],
        json!({}),
        None,
    )
    .await;
    assert_eq!(boats["acceptedFiles"], 1, "{boats}");
    assert_eq!(boats["embeddedChunks"], 0, "{boats}");
    let boat_chunks = number(&boats["totalChunks"]);
    assert!(boat_chunks >= 1);
    assert!(double.requests().iter().any(|r| r.failed));
    let found = search(&client, "chandler").await;
    assert_eq!(result_files(&found), vec!["boats.txt"], "{found}");

    // Back up: a reindex embeds what was missed, and the concept finds it.
    double.set_failing(false);
    let reindexed = client
        .call("knowledge.library.reindex", json!({"options": {}}))
        .await
        .unwrap();
    assert_eq!(reindexed["embedded"], boat_chunks, "{reindexed}");
    assert_eq!(reindexed["skipped"], total, "{reindexed}");
    assert_eq!(reindexed["failed"], json!([]));
    let found = search(&client, "vessel").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("boats.txt"),
        "{found}"
    );
}

// ---------------------------------------------------------------------------------------------
// E. A restarted node-agent resumes its index; a new one catches up alone

const RESUME_TERMS: [&str; 5] = ["obsidian", "tamarind", "zeppelin", "quokka", "marigold"];
const RESUME_QUERIES: [&str; 6] = [
    "obsidian",
    "tamarind",
    "zeppelin",
    "quokka",
    "marigold",
    "inventory",
];

/// What a node answers, as comparable values: per query, the ids found (sorted); and every
/// chunk id of the library.
async fn fingerprint(client: &Client) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut answers = Vec::new();
    for query in RESUME_QUERIES {
        let found = search(client, query).await;
        let mut ids: Vec<String> = results(&found)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        answers.push((query.to_string(), ids));
    }
    let listed = library(client, json!({"limit": 2000}), None).await;
    let mut all: Vec<String> = rows(&listed)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    (answers, all)
}

#[tokio::test(flavor = "multi_thread")]
async fn node_agents_resume_and_catch_up() {
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let state = tempfile::tempdir().unwrap();
    let mut first = Node::start_in(&nats, "node-1", state.path(), &[], &[])
        .await
        .unwrap();
    let client = patient_client(&gw).await;
    wait_nodes(&client, 1).await;

    for pair in RESUME_TERMS.chunks(2) {
        let files = pair
            .iter()
            .map(|term| {
                file(
                    &format!("{term}.txt"),
                    "text/plain",
                    &format!(
                        "The {term} collection fills three cases in the east hall of the museum. \
                         Each piece has a printed label, and the inventory lists where and when \
                         it was found and who gave it to the museum."
                    ),
                )
            })
            .collect();
        ingest(&client, files, json!({}), None).await;
    }
    let before = search(&client, "inventory").await;
    assert_eq!(before["index"]["nodeId"], "node-1");
    assert_eq!(results(&before).len(), RESUME_TERMS.len(), "{before}");
    let revision = number(&before["index"]["revision"]);
    let chunks = number(&before["index"]["chunks"]);
    assert!(
        revision > 0 && chunks >= RESUME_TERMS.len() as u64,
        "{before}"
    );
    for term in RESUME_TERMS {
        let found = search(&client, term).await;
        assert_eq!(result_files(&found), vec![format!("{term}.txt")], "{found}");
    }
    let expected = fingerprint(&client).await;

    // SIGTERM, and the same node again on the same state dir.
    let status = first.proc.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    let mut restarted = Node::start_in(&nats, "node-1", state.path(), &[], &[])
        .await
        .unwrap();
    let started = Instant::now();
    let resumed = eventually(Duration::from_secs(20), || async {
        try_search(&client, "inventory", json!({}), None).await.ok()
    })
    .await
    .expect("the restarted node-agent answers");
    eprintln!(
        "restarted node-agent answered after {:?}: {}",
        started.elapsed(),
        resumed["index"]
    );
    assert_eq!(resumed["index"]["nodeId"], "node-1");
    // It resumed from its committed index instead of rebuilding it.
    assert_eq!(
        number(&resumed["index"]["startedFrom"]),
        revision,
        "{resumed}"
    );
    assert_eq!(number(&resumed["index"]["revision"]), revision, "{resumed}");
    assert_eq!(number(&resumed["index"]["chunks"]), chunks, "{resumed}");
    assert_eq!(fingerprint(&client).await, expected);

    // A new node-agent with an empty state dir builds its index from the shared state alone.
    let _fresh = Node::start(&nats, "node-2").await.unwrap();
    wait_node(&client, "node-2").await;
    restarted.proc.kill();
    let started = Instant::now();
    let caught_up = eventually(Duration::from_secs(20), || async {
        let found = try_search(&client, "inventory", json!({}), None)
            .await
            .ok()?;
        (found["index"]["nodeId"] == "node-2").then_some(found)
    })
    .await
    .expect("the new node-agent answers");
    eprintln!(
        "new node-agent answered after {:?}: {}",
        started.elapsed(),
        caught_up["index"]
    );
    assert_eq!(number(&caught_up["index"]["startedFrom"]), 0, "{caught_up}");
    assert_eq!(
        number(&caught_up["index"]["revision"]),
        revision,
        "{caught_up}"
    );
    assert_eq!(number(&caught_up["index"]["chunks"]), chunks, "{caught_up}");
    assert_eq!(fingerprint(&client).await, expected);
}

// ---------------------------------------------------------------------------------------------
// F. A node-agent killed mid-ingest

/// About `bytes` of English-looking text, different for each `index`, with the marker
/// `bulkmarker<index>` and many `granite`s.
fn bulk_text(index: usize, bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "granite", "river", "valley", "survey", "layer", "sample", "north", "ridge", "quarry",
        "stone", "winter", "field", "report", "measure", "depth", "mineral", "clay", "sand",
        "water", "team", "season", "slope", "map", "record", "camp", "trail", "bridge", "forest",
        "meadow", "cliff", "the", "and", "of", "with", "near", "under",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (index as u64 + 1);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = format!("Bulk file {index} bulkmarker{index}.\n\n");
    let mut sentences = 0;
    while out.len() < bytes {
        let length = 6 + (next() % 10) as usize;
        for position in 0..length {
            let word = WORDS[(next() % WORDS.len() as u64) as usize];
            if position == 0 {
                out.push_str(&word[..1].to_ascii_uppercase());
                out.push_str(&word[1..]);
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push_str(". ");
        sentences += 1;
        if sentences % 12 == 0 {
            out.push_str("\n\n");
        }
    }
    out.truncate(bytes);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_leaves_no_half_document() {
    const FILES: usize = 40;
    const FILE_BYTES: usize = 200_000;
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let mut nodes = [
        Node::start(&nats, "node-1").await.unwrap(),
        Node::start(&nats, "node-2").await.unwrap(),
    ];
    let observer = patient_client(&gw).await;
    wait_nodes(&observer, 2).await;

    let files: Vec<Value> = (0..FILES)
        .map(|i| {
            file(
                &format!("bulk-{i:02}.txt"),
                "text/plain",
                &bulk_text(i, FILE_BYTES),
            )
        })
        .collect();
    let loader = patient_client(&gw).await;
    // A knowledge call is routed by its request id, and a new client's first request is
    // `r1`: kill the node-agent that call goes to (had the routing changed, the other one
    // dies, which must not matter either).
    let victim_id = argent_tests::route_owner("knowledge", "r1", &["node-1", "node-2"]);
    let started = Instant::now();
    let load = tokio::spawn(async move {
        let answer = try_ingest(&loader, files, json!({"chunkSize": 12000}), None).await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let victim = nodes.iter().position(|n| n.id == victim_id).unwrap();
    nodes[victim].proc.kill();
    let killed_at = started.elapsed();
    let survivor = nodes[1 - victim].id.clone();
    eprintln!("killed {victim_id} {killed_at:?} after the ingest started");
    let (answer, took) = load.await.unwrap();
    assert!(
        took > killed_at,
        "the ingest ended ({took:?}) before the kill ({killed_at:?}): nothing was tested"
    );
    match &answer {
        Ok(report) => eprintln!(
            "the ingest answered after {took:?}: {} file(s), {} chunk(s)",
            report["acceptedFiles"], report["totalChunks"]
        ),
        Err(e) => eprintln!("the ingest failed after {took:?}: {e}"),
    }
    if let Ok(report) = &answer {
        // An answer means one node-agent did the whole call.
        assert_eq!(report["acceptedFiles"], FILES, "{}", report["errors"]);
        assert_eq!(report["rejectedFiles"], 0);
    }

    // The survivor answers through the gateway (once the dead node is out of the way), and
    // has indexed what the acknowledged ingest wrote (indexing 8 MB may take longer than
    // the bounded wait of one read).
    let acknowledged = answer
        .as_ref()
        .map_or(0, |report| number(&report["revision"]));
    let found = eventually(Duration::from_secs(60), || async {
        let found = try_search(&observer, "granite", json!({"limit": 100}), None)
            .await
            .ok()?;
        (found["index"]["nodeId"] == survivor.as_str()
            && number(&found["index"]["revision"]) >= acknowledged)
            .then_some(found)
    })
    .await
    .expect("the surviving node-agent answers searches");
    eprintln!("the survivor answers: {}", found["index"]);
    if answer.is_ok() {
        assert!(!results(&found).is_empty(), "{}", found["index"]);
    }

    // Every document that is visible has all its chunks.
    let (documents, chunks) = assert_whole_documents(&observer).await;
    eprintln!(
        "after the kill: {documents} whole document(s), {chunks} chunk(s), answered by {survivor}"
    );
    if answer.is_ok() {
        assert_eq!(documents, FILES);
    }
}

/// Checks that every document `knowledge.library.list` shows has all its chunks (as many
/// rows as its `chunkTotal`, numbered 1..=chunkTotal); returns the numbers of documents
/// and chunks.
async fn assert_whole_documents(client: &Client) -> (usize, u64) {
    let listed = library(
        client,
        json!({"distinctByDocument": true, "limit": 2000, "scanLimit": 50000}),
        None,
    )
    .await;
    let documents = rows(&listed);
    let names: BTreeSet<String> = documents
        .iter()
        .map(|d| d["sourceFile"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), documents.len(), "one row per document");
    let mut chunks = 0;
    for document in documents {
        let name = document["sourceFile"].as_str().unwrap();
        assert!(name.starts_with("bulk-"), "{document}");
        let total = number(&document["chunkTotal"]);
        assert!(total >= 1, "{document}");
        let of_file = library(
            client,
            json!({"sourceFile": name, "sourceFileExact": true, "limit": 2000, "scanLimit": 50000}),
            None,
        )
        .await;
        assert_eq!(number(&of_file["total"]), total, "{name}: half a document");
        let indexes: BTreeSet<u64> = rows(&of_file)
            .iter()
            .map(|r| number(&r["chunkIndex"]))
            .collect();
        assert_eq!(indexes, (1..=total).collect::<BTreeSet<u64>>(), "{name}");
        chunks += total;
    }
    (documents.len(), chunks)
}

// ---------------------------------------------------------------------------------------------
// G. The one-process default

#[tokio::test(flavor = "multi_thread")]
async fn one_process_default_serves_the_library() {
    let state = tempfile::tempdir().unwrap();
    let mut gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let client = patient_client(&gw).await;
    let pages = survey_pages();
    let page_refs: Vec<&str> = pages.iter().map(String::as_str).collect();
    let ingested = ingest(
        &client,
        vec![
            file("guide.md", "text/markdown", GUIDE),
            file("survey.pdf", PDF_MIME, &b64(&pdf_with_pages(&page_refs))),
        ],
        json!({"collection": "Local Docs"}),
        None,
    )
    .await;
    assert_eq!(ingested["acceptedFiles"], 2, "{ingested}");
    assert_eq!(ingested["collection"], "Local Docs");

    let found = search(&client, "zanzibarite").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("survey.pdf"),
        "{found}"
    );
    assert_eq!(results(&found)[0]["collection"], "Local Docs");
    assert!(
        found["index"]["nodeId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{found}"
    );
    let found = search(&client, "runs").await;
    assert_eq!(result_files(&found), vec!["guide.md"], "{found}");
    let collections = client
        .call("knowledge.collections.list", json!({}))
        .await
        .unwrap();
    let local = collections["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collectionTag"] == "local-docs")
        .unwrap_or_else(|| panic!("{collections}"))
        .clone();
    assert_eq!(local["ownerAgentId"], "main");
    assert_eq!(local["isOwner"], true);

    // Kept across a restart of the process.
    let status = gw.proc.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    let gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let client = patient_client(&gw).await;
    let found = search(&client, "zanzibarite").await;
    assert_eq!(
        result_files(&found).first().map(String::as_str),
        Some("survey.pdf"),
        "{found}"
    );
}

/// Runs the `argent` CLI against a gateway; returns (success, stdout, stderr).
async fn argent_cli(gw: &Gateway, args: Vec<String>) -> (bool, String, String) {
    let (url, state_dir) = (gw.ws.clone(), gw.state_dir.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(argent_tests::bin_dir().join("argent"))
            .args(&args)
            .arg("--url")
            .arg(&url)
            .arg("--state-dir")
            .arg(&state_dir)
            .env_remove("ARGENT_GATEWAY_TOKEN")
            .output()
            .expect("argent runs")
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_ingests_searches_and_lists() {
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let guide = files.path().join("guide.md");
    std::fs::write(&guide, GUIDE).unwrap();
    let report = files.path().join("report.docx");
    std::fs::write(
        &report,
        docx(&[
            "Quarterly report",
            "Revenue from the orchard cooperative doubled.",
        ]),
    )
    .unwrap();
    let unreadable = files.path().join("broken.pdf");
    std::fs::write(&unreadable, b"not a pdf at all").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    let (ok, stdout, stderr) = argent_cli(
        &gw,
        vec![
            "knowledge".into(),
            "ingest".into(),
            path(&guide),
            path(&report),
            path(&unreadable),
            "--collection".into(),
            "Team Docs".into(),
        ],
    )
    .await;
    // One file was refused: the command says which and why, and fails.
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("[1/3] guide.md:") && stderr.contains("chunks"),
        "{stderr}"
    );
    assert!(stderr.contains("[2/3] report.docx:"), "{stderr}");
    assert!(stderr.contains("[3/3] broken.pdf: rejected:"), "{stderr}");
    assert!(
        stdout.contains("ingested 2 file(s) into collection \"Team Docs\"")
            && stdout.contains("1 rejected"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = argent_cli(
        &gw,
        vec![
            "knowledge".into(),
            "search".into(),
            "orchard".into(),
            "revenue".into(),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("1. report.docx#chunk-1"), "{stdout}");
    assert!(stdout.contains("collection Team Docs"), "{stdout}");

    let (ok, stdout, stderr) = argent_cli(
        &gw,
        vec![
            "knowledge".into(),
            "list".into(),
            "--collection".into(),
            "Team Docs".into(),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("guide.md")
            && stdout.contains("report.docx")
            && stdout.contains("2 document(s)"),
        "{stdout}"
    );
}

/// The final text of an `agent` run of `message`, in a session of its own (the double
/// answers a turn whose history holds a tool result with that result).
async fn agent_says(client: &Client, id: &str, message: &str) -> String {
    let params =
        json!({"message": message, "idempotencyKey": id, "sessionKey": format!("agent:main:{id}")});
    let (_, last) = client.request_twice("agent", params).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    done.payload.unwrap()["result"]["payloads"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The agent's `knowledge_search` tool finds what was ingested and hands the model the
/// citation; `knowledge_ingest` saves what the agent wrote, searchable at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_searches_and_saves_through_its_tools() {
    let double = argent_tests::model_double::ModelDouble::start().await;
    let gw = crate::chat_local::local_gateway(&crate::chat_local::model_config(&double)).await;
    let client = patient_client(&gw).await;
    let pages = survey_pages();
    let page_refs: Vec<&str> = pages.iter().map(String::as_str).collect();
    ingest(
        &client,
        vec![file(
            "survey.pdf",
            PDF_MIME,
            &b64(&pdf_with_pages(&page_refs)),
        )],
        json!({}),
        None,
    )
    .await;

    let text = agent_says(
        &client,
        "k-1",
        r#"what was rare? [[call:knowledge_search:{"query":"zanzibarite"}]]"#,
    )
    .await;
    assert!(
        text.starts_with("tool said: Found 1 knowledge items")
            && text.contains("citation: survey.pdf#chunk-"),
        "{text}"
    );

    let text = agent_says(
        &client,
        "k-2",
        r#"remember this [[call:knowledge_ingest:{"title":"Tide table","text":"High tide at the quay is at 06:40 on Sunday.","collection":"Agent Notes"}]]"#,
    )
    .await;
    assert!(text.contains("saved to collection Agent Notes"), "{text}");
    let found = search(&client, "tide quay").await;
    assert_eq!(result_files(&found), vec!["Tide table.md"], "{found}");
    assert_eq!(results(&found)[0]["documentTitle"], "Tide table");
}
