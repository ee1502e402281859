//! Liveness of cluster members (node-agents, gateways).
//!
//! Every member re-puts its record into its bucket each heartbeat and deletes it on a clean
//! shutdown. [`Members`] watches the bucket and keeps, per key, the record and the local
//! instant it was last written; a record not rewritten within `stale_after` is dead for
//! routing, whatever the clocks of the hosts say.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::StateStore;

/// This host's name, as members report it (`HOSTNAME`, else `/etc/hostname`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// How often members rewrite their record.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A record not rewritten for this long is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// A dead record is forgotten after this long (it stays listed as stale until then).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A node-agent's registration in the node registry bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: String,
    /// gRPC endpoint (`http://host:port`), or `inproc://<id>` for the embedded node.
    pub address: String,
    pub capabilities: Vec<String>,
    pub version: String,
    pub host: String,
    /// Calls being executed right now.
    pub in_flight: u64,
    /// Joined by pairing: gateways route to it only while its pairing is valid. `false`: a
    /// trusted node started with the cluster secret.
    #[serde(default)]
    pub paired: bool,
    pub started_at_ms: u64,
    pub heartbeat_at_ms: u64,
}

/// A gateway's registration in the gateway bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    pub id: String,
    pub host: String,
    pub version: String,
    /// Where clients reach it (`ws://host:port`).
    pub url: String,
    pub connections: u64,
    pub draining: bool,
    pub started_at_ms: u64,
    pub heartbeat_at_ms: u64,
}

struct Seen<T> {
    record: T,
    at: Instant,
}

/// The live members of one bucket, kept current by a watch.
pub struct Members<T> {
    seen: Arc<RwLock<HashMap<String, Seen<T>>>>,
    /// Keys deleted recently: the revision of the delete, and when it was seen.
    deleted: Arc<RwLock<HashMap<String, (u64, Instant)>>>,
    stale_after: Duration,
}

impl<T> Clone for Members<T> {
    fn clone(&self) -> Self {
        Members {
            seen: self.seen.clone(),
            deleted: self.deleted.clone(),
            stale_after: self.stale_after,
        }
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Members<T> {
    /// Starts watching `bucket`; the watch is re-established whenever it breaks.
    pub fn watch(store: Arc<dyn StateStore>, bucket: &'static str, stale_after: Duration) -> Self {
        let members = Members {
            seen: Arc::new(RwLock::new(HashMap::new())),
            deleted: Arc::new(RwLock::new(HashMap::new())),
            stale_after,
        };
        let seen = members.seen.clone();
        let deleted = members.deleted.clone();
        tokio::spawn(async move {
            // Records the server expired produce no watch event: forget them here.
            let mut sweep = tokio::time::interval(FORGET_AFTER);
            loop {
                match store.watch(bucket).await {
                    Ok(mut changes) => loop {
                        let change = tokio::select! {
                            change = changes.recv() => change,
                            _ = sweep.tick() => {
                                seen.write().retain(|_, s| s.at.elapsed() < FORGET_AFTER);
                                deleted.write().retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
                                continue;
                            }
                        };
                        let Some(change) = change else { break };
                        if change.value.is_some() {
                            deleted.write().remove(&change.key);
                        } else {
                            deleted
                                .write()
                                .insert(change.key.clone(), (change.revision, Instant::now()));
                        }
                        {
                            let mut seen = seen.write();
                            match change.value.map(|v| serde_json::from_slice::<T>(&v)) {
                                Some(Ok(record)) => {
                                    seen.insert(
                                        change.key,
                                        Seen {
                                            record,
                                            at: Instant::now(),
                                        },
                                    );
                                }
                                Some(Err(err)) => {
                                    tracing::warn!(%bucket, key = %change.key, %err, "unreadable member record");
                                }
                                None => {
                                    seen.remove(&change.key);
                                }
                            }
                        }
                    },
                    Err(err) => tracing::debug!(%bucket, %err, "member watch failed; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        members
    }

    /// Records rewritten within `stale_after`, sorted by key.
    pub fn live(&self) -> Vec<T> {
        let now = Instant::now();
        let seen = self.seen.read();
        let mut live: Vec<(&String, &Seen<T>)> = seen
            .iter()
            .filter(|(_, s)| now.duration_since(s.at) <= self.stale_after)
            .collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        live.into_iter().map(|(_, s)| s.record.clone()).collect()
    }

    /// The revision at which `key` was deleted, when that is the last change seen of it
    /// (within the last minute): a writer can create it again with one conditional write
    /// ([`StateStore::recreate`]).
    pub fn deleted_at(&self, key: &str) -> Option<u64> {
        self.deleted.read().get(key).map(|(revision, _)| *revision)
    }

    /// The last record seen under `key`, live or not.
    pub fn get(&self, key: &str) -> Option<T> {
        self.seen.read().get(key).map(|s| s.record.clone())
    }

    /// Keys seen once but not rewritten within `stale_after`.
    pub fn stale_keys(&self) -> Vec<String> {
        let now = Instant::now();
        self.seen
            .read()
            .iter()
            .filter(|(_, s)| now.duration_since(s.at) > self.stale_after)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Stops routing to `key` until its next heartbeat (a call to it just failed).
    pub fn suspect(&self, key: &str) {
        if let Some(s) = self.seen.write().get_mut(key) {
            s.at = Instant::now() - self.stale_after - Duration::from_millis(1);
        }
    }

    pub fn is_live(&self, key: &str) -> bool {
        self.seen
            .read()
            .get(key)
            .is_some_and(|s| s.at.elapsed() <= self.stale_after)
    }
}

/// Keeps a member's record fresh until `stop` flips to true, then deletes it.
pub fn spawn_heartbeat(
    store: Arc<dyn StateStore>,
    bucket: &'static str,
    key: String,
    mut record: impl FnMut() -> Bytes + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(err) = store.put(bucket, &key, record()).await {
                        tracing::debug!(%bucket, %key, %err, "heartbeat not written");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        if let Err(err) = store.delete(bucket, &key).await {
            tracing::warn!(%bucket, %key, %err, "could not deregister");
        }
    })
}
