//! A state dir written by the former JSON-file store (`fixtures/legacy-state`, made with it:
//! three durable buckets, one key updated, one deleted, one bucket written twice) is imported
//! by the embedded store on its first open, and only then.

use std::path::Path;

use argent_planes::state::{StateError, StateStore};
use argent_planes::state_embedded::EmbeddedStore;
use argent_proto::subjects::{BUCKET_AGENTS, BUCKET_CONFIG, BUCKET_SESSIONS};
use bytes::Bytes;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy-state");
const BUCKETS: [&str; 3] = ["argent_agents", "argent_config", "argent_sessions"];

/// A copy of the fixture's bucket files into `dir/state/`.
fn copy_fixture(dir: &Path) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    for bucket in BUCKETS {
        let name = format!("{bucket}.json");
        std::fs::copy(
            Path::new(FIXTURE).join("state").join(&name),
            state.join(&name),
        )
        .unwrap();
    }
}

async fn value(store: &EmbeddedStore, bucket: &str, key: &str) -> Option<(String, u64)> {
    store
        .get(bucket, key)
        .await
        .unwrap()
        .map(|e| (String::from_utf8(e.value.to_vec()).unwrap(), e.revision))
}

/// Both fixtures hold the same agents and session keys (written the same way by the store
/// of their time): a key updated, one deleted.
async fn assert_the_agents_and_sessions_of_the_fixtures(store: &EmbeddedStore) {
    assert_eq!(
        value(store, BUCKET_AGENTS, "main.SOUL.md").await,
        Some(("be kind, and brief".into(), 3))
    );
    assert_eq!(
        value(store, BUCKET_AGENTS, "main.AGENTS.md").await,
        Some(("# Agents\n\nünïcode ✓".into(), 2))
    );
    assert_eq!(value(store, BUCKET_AGENTS, "scratch.tmp").await, None);
    assert_eq!(
        store.keys(BUCKET_SESSIONS, "agent.main.").await.unwrap(),
        vec!["agent.main.main", "agent.main.work"]
    );
}

#[tokio::test]
async fn the_former_state_files_are_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());

    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_the_agents_and_sessions_of_the_fixtures(&store).await;
    assert_eq!(
        value(&store, BUCKET_SESSIONS, "agent.main.work")
            .await
            .map(|(_, r)| r),
        Some(2)
    );
    assert_eq!(
        value(&store, BUCKET_CONFIG, "argent.json").await,
        Some((r#"{"gateway":{"port":18790}}"#.into(), 2))
    );
    // The agents bucket's counter was 5 (the deleted key took 4 and 5): it continues there.
    assert_eq!(
        store
            .put(BUCKET_AGENTS, "main.TOOLS.md", Bytes::from("t"))
            .await,
        Ok(6)
    );
    // Revisions carried over are the ones compare-and-set works against.
    assert_eq!(
        store
            .update(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("x"), 2)
            .await,
        Err(StateError::WrongRevision)
    );
    assert_eq!(
        store
            .update(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("new soul"), 3)
            .await,
        Ok(7)
    );
    for bucket in BUCKETS {
        let state = dir.path().join("state");
        assert!(!state.join(format!("{bucket}.json")).exists());
        assert!(state.join(format!("{bucket}.json.migrated")).exists());
    }
    drop(store);

    // As if the process had died after the import committed but before the renames: the
    // files are back, and must not be imported over what was written since.
    copy_fixture(dir.path());
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        value(&store, BUCKET_AGENTS, "main.SOUL.md").await,
        Some(("new soul".into(), 7))
    );
    assert_eq!(
        store
            .put(BUCKET_AGENTS, "main.TOOLS.md", Bytes::new())
            .await,
        Ok(8)
    );
    assert!(!dir.path().join("state/argent_agents.json").exists());
    drop(store);

    // And a plain reopen changes nothing.
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        value(&store, BUCKET_AGENTS, "main.SOUL.md").await,
        Some(("new soul".into(), 7))
    );
}

#[tokio::test]
async fn an_unreadable_former_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let broken = dir.path().join("state/argent_sessions.json");
    std::fs::write(&broken, "{\"revision\": 3, \"entries\": {").unwrap();
    let err = match EmbeddedStore::open(Some(dir.path())) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("a broken file was accepted"),
    };
    assert!(err.contains("argent_sessions.json"), "{err}");
    // Nothing was imported (one transaction for all files) and nothing renamed.
    assert!(dir.path().join("state/argent_agents.json").exists());
    std::fs::copy(
        Path::new(FIXTURE).join("state/argent_sessions.json"),
        &broken,
    )
    .unwrap();
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        value(&store, BUCKET_AGENTS, "main.SOUL.md").await,
        Some(("be kind, and brief".into(), 3))
    );
}

#[tokio::test]
async fn a_former_transcript_with_a_torn_last_line_is_imported_without_it() {
    use argent_planes::transcripts::{EmbeddedTranscripts, TranscriptLog};
    let dir = tempfile::tempdir().unwrap();
    let transcripts = dir.path().join("transcripts");
    std::fs::create_dir_all(&transcripts).unwrap();
    // A crash mid-append can cut the last line inside a multi-byte character.
    let mut body = b"{\"role\":\"user\",\"content\":\"caf\xc3\xa9\"}\n".to_vec();
    body.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"caf\xc3");
    std::fs::write(transcripts.join("s1.jsonl"), body).unwrap();
    let log = EmbeddedTranscripts::open(Some(dir.path())).unwrap();
    let messages = log.read("s1").await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "café");
    assert!(transcripts.join("s1.jsonl.migrated").exists());
}

/// `fixtures/redb-state/argent.redb` was written by the redb-based store of the previous
/// release (commit e9f38c7): agents written, updated and deleted, two sessions, a config
/// bucket and one transcript that it had itself imported from the JSON files, and a
/// transcript that was compacted once (archive 1).
const REDB_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/redb-state/argent.redb"
);
const SESSION_ONE: &str = "7c1c6f0e-2b7a-4d0e-9a55-0d7f2a2c1a01";
const SESSION_TWO: &str = "0b6c3f55-8f3e-4b9e-a1c4-3f6f5d1d2e02";
const SESSION_FROM_JSONL: &str = "5d2f1e0a-1111-4222-8333-444455556666";

#[tokio::test]
async fn the_former_redb_store_is_imported_once() {
    use argent_planes::embedded::{EmbeddedDb, REDB_FILE};
    use argent_planes::transcripts::{EmbeddedTranscripts, TranscriptLog};
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join(REDB_FILE);
    std::fs::copy(REDB_FIXTURE, &old).unwrap();

    let db = EmbeddedDb::open(Some(dir.path())).unwrap();
    let store = EmbeddedStore::on(&db).unwrap();
    let log = EmbeddedTranscripts::on(&db);
    assert_the_agents_and_sessions_of_the_fixtures(&store).await;
    assert_eq!(
        value(&store, BUCKET_CONFIG, "argent.json").await,
        Some((r#"{"gateway":{"port":18790}}"#.into(), 2))
    );
    assert_eq!(
        log.read(SESSION_ONE).await.unwrap(),
        vec![
            json!({"role": "system", "content": "summary: greetings"}),
            json!({"role": "user", "content": "café"}),
        ]
    );
    assert_eq!(
        log.read(SESSION_TWO).await.unwrap(),
        vec![json!({"role": "user", "content": "second session"})]
    );
    assert_eq!(
        log.read(SESSION_FROM_JSONL).await.unwrap(),
        vec![json!({"role": "user", "content": "from the jsonl days"})]
    );
    // Counters carry over: the agents bucket was at 5 (the delete), the compacted
    // transcript at archive 1, and appends continue after the last seq.
    assert_eq!(
        store
            .put(BUCKET_AGENTS, "main.TOOLS.md", Bytes::from("t"))
            .await,
        Ok(6)
    );
    let archive = log.replace(SESSION_ONE, &[json!({"n": 1})]).await.unwrap();
    assert!(archive.ends_with(&format!("/{SESSION_ONE}/2")), "{archive}");
    log.append(SESSION_TWO, &json!({"n": 2})).await.unwrap();
    assert_eq!(log.read(SESSION_TWO).await.unwrap().len(), 2);
    let newer = Bytes::from(r#"{"gateway":{"port":18791}}"#);
    assert_eq!(
        store.update(BUCKET_CONFIG, "argent.json", newer, 2).await,
        Ok(3)
    );
    assert!(!old.exists());
    assert!(dir.path().join("argent.redb.migrated").exists());
    drop((store, log, db));

    // A crash between the import and the rename: the old file is still there (as if not
    // renamed), and must not be imported over what was written since; nor may the JSON
    // file it had imported itself.
    std::fs::rename(dir.path().join("argent.redb.migrated"), &old).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("state/argent_config.json"),
        state.join("argent_config.json"),
    )
    .unwrap();
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        value(&store, BUCKET_AGENTS, "main.TOOLS.md").await,
        Some(("t".into(), 6))
    );
    assert_eq!(
        value(&store, BUCKET_CONFIG, "argent.json").await,
        Some((r#"{"gateway":{"port":18791}}"#.into(), 3))
    );
    assert!(!old.exists());
    drop(store);
    let log = EmbeddedTranscripts::open(Some(dir.path())).unwrap();
    assert_eq!(log.read(SESSION_TWO).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_redb_file_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join(argent_planes::embedded::REDB_FILE);
    std::fs::write(&old, b"not a database").unwrap();
    let err = match EmbeddedStore::open(Some(dir.path())) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("a broken file was accepted"),
    };
    assert!(err.contains("argent.redb"), "{err}");
    assert!(
        old.exists(),
        "a file that was not imported is left where it is"
    );
}

#[tokio::test]
async fn a_redb_file_written_after_the_import_is_left_alone() {
    use argent_planes::embedded::REDB_FILE;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join(REDB_FILE);
    std::fs::copy(REDB_FIXTURE, &old).unwrap();
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        store
            .put(BUCKET_AGENTS, "main.SOUL.md", Bytes::from("newer"))
            .await,
        Ok(6)
    );
    drop(store);
    // An older build ran on the state dir after the upgrade and wrote a new argent.redb.
    std::fs::copy(REDB_FIXTURE, &old).unwrap();
    let store = EmbeddedStore::open(Some(dir.path())).unwrap();
    assert_eq!(
        value(&store, BUCKET_AGENTS, "main.SOUL.md").await,
        Some(("newer".into(), 6)),
        "not imported over newer writes"
    );
    assert!(old.exists(), "left where it is");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("argent.redb"))
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the first copy is kept as it was: {names:?}"
    );
}
