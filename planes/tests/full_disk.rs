//! A real full disk under the embedded store: its state dir on a small tmpfs. Writes that
//! cannot be made durable are refused (never acknowledged and then lost), the store says it
//! is unhealthy, reads keep working, and once there is space again a reopened store has
//! every acknowledged write and goes on from there.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use argent_planes::state::StateStore;
use argent_planes::state_embedded::EmbeddedStore;
use argent_proto::subjects::BUCKET_AGENTS;
use bytes::Bytes;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs(at.to_path_buf())),
            _ => None,
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {} failed", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// 16 KiB of noise, different for every key: nothing a compressing journal could shrink.
fn value(i: usize) -> Bytes {
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::with_capacity(16 << 10);
    while bytes.len() < 16 << 10 {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        bytes.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    Bytes::from(bytes)
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_loses_no_acknowledged_one() {
    if !running_as_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "8m").expect("mount a tmpfs as root");
    let state_dir = disk.0.join("state");

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
