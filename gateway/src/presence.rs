//! Cluster-wide client presence (PROTOCOL.md §4.2 `presence`, §5.10 `system-presence`).
//!
//! Each gateway writes one record per tracked connection into the presence bucket
//! (`<gatewayId>.<connId>`) and deletes it on disconnect; every gateway watches the bucket,
//! so a client on any gateway is listed everywhere and a disconnect on gateway A reaches
//! clients on gateway B as a `presence` event. The bucket revision is `stateVersion.presence`
//! (never goes backwards). Records of a gateway that died are hidden as soon as it stops
//! heartbeating and collected by the survivors.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use argent_planes::members::GatewayRecord;
use argent_planes::state::StateStore;
use argent_proto::limits::PRESENCE_MAX_ENTRIES;
use argent_proto::subjects::BUCKET_PRESENCE;

/// What is stored per connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Presence key: device id, else instance id, else connection id.
    key: String,
    entry: Value,
    /// For `role:"node"` connections: the node session (id, commands, where it is connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<Value>,
}

struct Row {
    gateway: String,
    key: String,
    ts: u64,
    entry: Value,
    node: Option<Value>,
}

pub struct Presence {
    gateway_id: String,
    state: Arc<dyn StateStore>,
    rows: RwLock<HashMap<String, Row>>,
    version: AtomicU64,
    /// Signalled when a record disappeared (a disconnect): a `presence` event is due.
    disconnects: Notify,
    /// This gateway's own records (re-put periodically, so the bucket's age limit only
    /// collects what dead gateways and disconnects left behind) …
    own: Mutex<HashMap<String, Bytes>>,
    /// … and deletes that failed (NATS away) and are retried.
    failed_deletes: Mutex<HashSet<String>>,
}

/// How often a gateway re-puts its own records (well within the bucket's 10-minute age).
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(120);

fn storage_key(gateway_id: &str, conn_id: &str) -> String {
    format!("{gateway_id}.{conn_id}")
}

impl Presence {
    pub fn new(gateway_id: String, state: Arc<dyn StateStore>) -> Self {
        Presence {
            gateway_id,
            state,
            rows: RwLock::new(HashMap::new()),
            version: AtomicU64::new(1),
            disconnects: Notify::new(),
            own: Mutex::new(HashMap::new()),
            failed_deletes: Mutex::new(HashSet::new()),
        }
    }

    fn insert_row(&self, key: String, record: Record) {
        let gateway = key.split('.').next().unwrap_or_default().to_string();
        let ts = record.entry.get("ts").and_then(Value::as_u64).unwrap_or(0);
        self.rows.write().insert(
            key,
            Row {
                gateway,
                key: record.key,
                ts,
                entry: record.entry,
                node: record.node,
            },
        );
    }

    /// Records a connection (not done for the modes `Protocol::tracks_presence` leaves
    /// out). The row is visible here at once (the new client's own `hello-ok` lists it),
    /// everywhere else through the watch.
    pub async fn add(&self, conn_id: &str, key: String, entry: Value, node: Option<Value>) {
        let record = Record { key, entry, node };
        let value = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
        let storage = storage_key(&self.gateway_id, conn_id);
        self.own.lock().insert(storage.clone(), value.clone());
        match self.state.put(BUCKET_PRESENCE, &storage, value).await {
            Ok(revision) => {
                self.version.fetch_max(revision, Ordering::Relaxed);
                self.insert_row(storage, record);
            }
            Err(err) => tracing::warn!(%err, conn = conn_id, "presence not recorded yet"),
        }
    }

    pub async fn remove(&self, conn_id: &str) {
        let storage = storage_key(&self.gateway_id, conn_id);
        self.own.lock().remove(&storage);
        if let Err(err) = self.state.delete(BUCKET_PRESENCE, &storage).await {
            tracing::warn!(%err, conn = conn_id, "presence not removed yet; will retry");
            self.failed_deletes.lock().insert(storage);
        }
    }

    /// Re-puts this gateway's records and retries failed deletes (every [`REFRESH_EVERY`]).
    pub async fn refresh(&self) {
        let own: Vec<(String, Bytes)> = self
            .own
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in own {
            if let Err(err) = self.state.put(BUCKET_PRESENCE, &key, value).await {
                tracing::debug!(%key, %err, "presence refresh failed");
            }
        }
        let retry: Vec<String> = self.failed_deletes.lock().drain().collect();
        for key in retry {
            if self.state.delete(BUCKET_PRESENCE, &key).await.is_err() {
                self.failed_deletes.lock().insert(key);
            }
        }
    }

    /// Deletes records a previous run of this gateway id left behind (it crashed).
    pub async fn purge_previous_run(&self) {
        let prefix = format!("{}.", self.gateway_id);
        match self.state.keys(BUCKET_PRESENCE, &prefix).await {
            Ok(keys) => {
                for key in keys {
                    if let Err(err) = self.state.delete(BUCKET_PRESENCE, &key).await {
                        tracing::debug!(%key, %err, "leftover presence record not deleted");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list leftover presence records"),
        }
    }

    /// Current `stateVersion.presence`.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Waits for the next disconnect anywhere in the cluster.
    pub async fn disconnected(&self) {
        self.disconnects.notified().await;
    }

    /// Follows the bucket forever (re-watching after failures).
    pub async fn follow(&self) {
        loop {
            match self.state.watch(BUCKET_PRESENCE).await {
                Ok(mut changes) => {
                    // A new watch (first, or after one broke): forget rows whose records
                    // are gone, whatever this gateway missed in between.
                    if let Ok(keys) = self.state.keys(BUCKET_PRESENCE, "").await {
                        let keys: HashSet<String> = keys.into_iter().collect();
                        self.rows.write().retain(|key, _| keys.contains(key));
                    }
                    while let Some(change) = changes.recv().await {
                        self.version.fetch_max(change.revision, Ordering::Relaxed);
                        match change.value.map(|v| serde_json::from_slice::<Record>(&v)) {
                            Some(Ok(record)) => self.insert_row(change.key, record),
                            Some(Err(err)) => {
                                tracing::warn!(key = %change.key, %err, "bad presence record")
                            }
                            None => {
                                if self.rows.write().remove(&change.key).is_some() {
                                    self.disconnects.notify_one();
                                }
                            }
                        }
                    }
                }
                Err(err) => tracing::debug!(%err, "presence watch failed; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// The presence list: gateways first (`reason:"self"`), then clients newest first,
    /// one entry per presence key, at most 200.
    pub fn list(&self, gateways: &[GatewayRecord], self_record: &GatewayRecord) -> Vec<Value> {
        let mut live: Vec<&GatewayRecord> =
            gateways.iter().filter(|g| g.id != self_record.id).collect();
        live.push(self_record);
        let mut out: Vec<Value> = live
            .iter()
            .map(|g| {
                json!({
                    "host": g.host, "version": g.version, "platform": std::env::consts::OS,
                    "mode": "gateway", "reason": "self", "ts": g.heartbeat_at_ms,
                    "instanceId": g.id, "text": format!("Gateway: {} ({})", g.host, g.id),
                })
            })
            .collect();
        let rows = self.rows.read();
        let mut newest: HashMap<&str, &Row> = HashMap::new();
        for row in rows.values() {
            if !live.iter().any(|g| g.id == row.gateway) {
                continue;
            }
            let slot = newest.entry(row.key.as_str()).or_insert(row);
            if row.ts > slot.ts {
                *slot = row;
            }
        }
        // Only the newest that fit are ordered and copied: this runs for every `hello-ok`,
        // and cloning every row before cutting the list made a connect cost a deep copy of
        // all tracked connections.
        let mut clients: Vec<&Row> = newest.into_values().collect();
        let room = PRESENCE_MAX_ENTRIES.saturating_sub(out.len());
        if clients.len() > room {
            clients.select_nth_unstable_by_key(room, |r| std::cmp::Reverse(r.ts));
            clients.truncate(room);
        }
        clients.sort_by_key(|r| std::cmp::Reverse(r.ts));
        out.extend(clients.into_iter().map(|r| r.entry.clone()));
        out
    }

    /// The devices connected now to live gateways anywhere in the cluster, each with the
    /// time its newest connection was made or refreshed.
    pub fn connected_devices(&self, is_live: impl Fn(&str) -> bool) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for row in self.rows.read().values() {
            if row.gateway != self.gateway_id && !is_live(&row.gateway) {
                continue;
            }
            if let Some(device) = row.entry.get("deviceId").and_then(Value::as_str) {
                let seen = out.entry(device.to_string()).or_insert(0);
                *seen = (*seen).max(row.ts);
            }
        }
        out
    }

    /// Node sessions connected to live gateways, anywhere in the cluster.
    pub fn nodes(&self, is_live: impl Fn(&str) -> bool) -> Vec<Value> {
        self.rows
            .read()
            .values()
            .filter(|row| row.gateway == self.gateway_id || is_live(&row.gateway))
            .filter_map(|row| row.node.clone())
            .collect()
    }

    /// Deletes the records of gateways that are not alive (they died without cleaning up).
    pub async fn collect_orphans(&self, is_live: impl Fn(&str) -> bool) {
        let orphans: Vec<String> = self
            .rows
            .read()
            .iter()
            .filter(|(_, row)| row.gateway != self.gateway_id && !is_live(&row.gateway))
            .map(|(key, _)| key.clone())
            .collect();
        for key in orphans {
            if let Err(err) = self.state.delete(BUCKET_PRESENCE, &key).await {
                tracing::debug!(%key, %err, "orphan presence record not collected");
            }
        }
    }
}
