//! A real full disk (a small tmpfs) under the embedded store and under the one-process
//! gateway. Writes that cannot be made durable are refused, never acknowledged and then
//! lost; the store says it is unhealthy, the gateway reports it (health's critical alerts,
//! `/readyz`), reads keep working, and once there is space again a restart has every
//! acknowledged write and goes on from there.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the tests say so and pass.

use argent_planes::state::StateStore;
use argent_planes::state_embedded::EmbeddedStore;
use argent_proto::subjects::BUCKET_AGENTS;
use argent_tests::tmpfs::{noise, Tmpfs};
use argent_tests::Gateway;
use bytes::Bytes;
use serde_json::json;

/// 16 KiB of noise, different for every key.
fn value(i: usize) -> Bytes {
    Bytes::from(noise(i as u64, 16 << 10))
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "8m") else {
        return;
    };
    let state_dir = disk.path.join("state");

    let store = EmbeddedStore::open(Some(&state_dir)).unwrap();
    let mut watch = store.watch(BUCKET_AGENTS).await.unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..4_000 {
        match store
            .put(BUCKET_AGENTS, &format!("k{i:05}"), value(i))
            .await
        {
            Ok(revision) => acknowledged.push((i, revision)),
            Err(err) => {
                refused = Some((i, err));
                break;
            }
        }
    }
    let (first_refused, err) = refused.expect("8 MiB never filled up");
    eprintln!("{} writes fitted, then: {err}", acknowledged.len());
    assert!(
        acknowledged.len() > 10,
        "only {} writes fitted",
        acknowledged.len()
    );
    assert!(
        err.to_string().contains(&format!("k{first_refused:05}")),
        "the error names what was not written: {err}"
    );
    assert!(
        !store.is_healthy(),
        "a store that cannot write is unhealthy"
    );
    // Watchers heard of every acknowledged write, in order, and of nothing else.
    for (i, revision) in &acknowledged {
        let change = watch.recv().await.unwrap();
        assert_eq!(
            (change.key.as_str(), change.revision),
            (format!("k{i:05}").as_str(), *revision)
        );
    }
    assert!(
        watch.try_recv().is_err(),
        "watchers hear nothing of a refused write"
    );
    // Later writes are refused too, promptly, and reads still answer.
    let again = store.put(BUCKET_AGENTS, "after", Bytes::from("x")).await;
    assert!(again.is_err(), "{again:?}");
    let (i, revision) = acknowledged[acknowledged.len() / 2];
    let entry = store.get(BUCKET_AGENTS, &format!("k{i:05}")).await.unwrap();
    assert_eq!(
        entry.map(|e| (e.value, e.revision)),
        Some((value(i), revision))
    );
    drop(store);

    // Space again: everything acknowledged is there, nothing refused is, and writes go on.
    disk.resize("256m");
    let store = EmbeddedStore::open(Some(&state_dir)).unwrap();
    for (i, revision) in &acknowledged {
        let entry = store.get(BUCKET_AGENTS, &format!("k{i:05}")).await.unwrap();
        assert_eq!(
            entry.map(|e| (e.value, e.revision)),
            Some((value(*i), *revision)),
            "acknowledged write k{i:05} is lost"
        );
    }
    // The refused write is not there either: its journal append failed part way (a full
    // tmpfs fails the write itself, never a later fsync), and recovery drops a torn tail.
    assert_eq!(
        store
            .get(BUCKET_AGENTS, &format!("k{first_refused:05}"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get(BUCKET_AGENTS, "after").await.unwrap(), None);
    let last = acknowledged.last().unwrap().1;
    let next = store
        .put(BUCKET_AGENTS, "after", Bytes::from("x"))
        .await
        .unwrap();
    assert!(next > last, "revision {next} after {last}");
    assert!(store.is_healthy());
}

#[tokio::test]
async fn the_gateway_reports_a_full_disk_and_keeps_answering_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let gw = Gateway::local()
        .state_dir(&disk.path)
        .start()
        .await
        .unwrap();
    let client = gw.client().await.unwrap();
    assert_eq!(gw.http_get("/readyz").await.unwrap().0, 200);

    let mut written = 0;
    let refused = loop {
        assert!(written < 200, "16 MiB never filled up");
        let content: String = noise(written, 192 << 10)
            .iter()
            .map(|b| char::from(b'a' + b % 26))
            .collect();
        // The same few workspace files again and again: every write is journaled anew.
        let names = ["AGENTS.md", "SOUL.md", "TOOLS.md", "USER.md"];
        let name = names[written as usize % names.len()];
        let params = json!({"agentId": "main", "name": name, "content": content});
        match client.call("agents.files.set", params).await {
            Ok(_) => written += 1,
            Err(err) => break err.to_string(),
        }
    };
    assert!(written > 2, "only {written} files fitted");
    assert!(refused.contains("No space left on device"), "{refused}");

    // Reported: /readyz at once, health within its one-second cache.
    let (status, body) = gw.http_get("/readyz").await.unwrap();
    assert_eq!((status, body.trim()), (503, "state store refuses writes"));
    let mut alerts = Vec::new();
    for _ in 0..30 {
        let health = client.call("health", json!({})).await.unwrap();
        alerts = health["criticalAlerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if alerts.iter().any(|a| a["id"] == "state.store") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        alerts.iter().any(|a| a["id"] == "state.store"),
        "no state.store alert in {alerts:?}"
    );
    // Reads go on.
    let file = client
        .call(
            "agents.files.get",
            json!({"agentId": "main", "name": "SOUL.md"}),
        )
        .await
        .unwrap();
    assert_eq!(
        file["file"]["content"].as_str().map(str::len),
        Some(192 << 10)
    );
}
