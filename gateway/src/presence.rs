//! Cluster-wide client presence (PROTOCOL.md §4.2 `presence`, §5.10 `system-presence`).
//!
//! Each gateway writes one record per tracked connection into the presence bucket
//! (`<gatewayId>.<connId>`) and deletes it on disconnect; every gateway watches the bucket,
//! so a client on any gateway is listed everywhere and a disconnect on gateway A reaches
//! clients on gateway B as a `presence` event. The bucket revision is `stateVersion.presence`
//! (never goes backwards). Records of a gateway that died are hidden as soon as it stops
//! heartbeating and collected by the survivors.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use prometheus_client::metrics::counter::Counter;

use argent_planes::members::GatewayRecord;
use argent_planes::state::{StateError, StateStore};
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
    /// Written by a `system-event`: every gateway sends its clients a `presence` event
    /// (a connect does not, as upstream; a periodic re-put leaves it unset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    announce: bool,
}

/// What a `system-event` changed in its sender's entry.
pub struct Reported {
    /// Which of `host`, `ip`, `version`, `mode`, `reason` changed (upstream's list).
    pub changed: Vec<&'static str>,
    /// The entry as stored now.
    pub entry: Value,
}

struct Row {
    gateway: String,
    key: String,
    ts: u64,
    /// The entry as JSON text, encoded once when the record arrived: lists are put together
    /// from these without serializing again.
    entry: Box<str>,
    device_id: Option<Box<str>>,
    node: Option<Value>,
}

#[derive(Default)]
struct Rows {
    by_storage: HashMap<String, Row>,
    /// `(ts, storage key)` of every row: the newest are found without looking at the rest.
    by_age: BTreeSet<(u64, String)>,
    /// Bumped on every change: the encoded list is rebuilt only when it moved.
    generation: u64,
}

/// The client part of the list, encoded, as built for one generation of the rows and one
/// set of live gateways.
struct EncodedClients {
    generation: u64,
    gateways: u64,
    json: Arc<str>,
}

/// The whole list as sent (gateways first), reused for [`LIST_REUSE_FOR`] while neither
/// the rows nor the live gateways change.
struct EncodedList {
    generation: u64,
    gateways: u64,
    built: Instant,
    json: Arc<str>,
}

/// How long an encoded list is reused when nothing changed but the gateways' own heartbeat
/// time (their entries' `ts`).
const LIST_REUSE_FOR: Duration = Duration::from_secs(1);

pub struct Presence {
    gateway_id: String,
    state: Arc<dyn StateStore>,
    rows: RwLock<Rows>,
    clients: Mutex<Option<EncodedClients>>,
    list: Mutex<Option<EncodedList>>,
    /// Counts encodings of the list (`/metrics`: once per change, not per connection).
    builds: Counter,
    version: AtomicU64,
    /// Signalled when a record disappeared (a disconnect) or a client reported itself
    /// (`system-event`): a `presence` event is due.
    changes: Notify,
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
    pub fn new(gateway_id: String, state: Arc<dyn StateStore>, builds: Counter) -> Self {
        Presence {
            builds,
            gateway_id,
            state,
            rows: RwLock::new(Rows::default()),
            clients: Mutex::new(None),
            list: Mutex::new(None),
            version: AtomicU64::new(1),
            changes: Notify::new(),
            own: Mutex::new(HashMap::new()),
            failed_deletes: Mutex::new(HashSet::new()),
        }
    }

    /// Stores a row; whether its entry is new or changed.
    fn insert_row(&self, key: String, record: &Record) -> bool {
        let gateway = key.split('.').next().unwrap_or_default().to_string();
        let ts = record.entry.get("ts").and_then(Value::as_u64).unwrap_or(0);
        let row = Row {
            gateway,
            key: record.key.clone(),
            ts,
            entry: record.entry.to_string().into_boxed_str(),
            device_id: record
                .entry
                .get("deviceId")
                .and_then(Value::as_str)
                .map(Box::from),
            node: record.node.clone(),
        };
        let mut rows = self.rows.write();
        rows.by_age.insert((ts, key.clone()));
        let changed = match rows.by_storage.insert(key.clone(), row) {
            Some(old) => {
                if old.ts != ts {
                    rows.by_age.remove(&(old.ts, key.clone()));
                }
                old.entry != rows.by_storage[&key].entry
            }
            None => true,
        };
        rows.generation += 1;
        changed
    }

    /// Forgets a row; whether there was one.
    fn remove_row(&self, key: &str) -> bool {
        let mut rows = self.rows.write();
        let Some(old) = rows.by_storage.remove(key) else {
            return false;
        };
        rows.by_age.remove(&(old.ts, key.to_string()));
        rows.generation += 1;
        true
    }

    /// Records a connection (not done for the modes `Protocol::tracks_presence` leaves
    /// out). The row is visible here at once (the new client's own `hello-ok` lists it),
    /// everywhere else through the watch.
    pub async fn add(&self, conn_id: &str, key: String, entry: Value, node: Option<Value>) {
        let record = Record {
            key,
            entry,
            node,
            announce: false,
        };
        if let Err(err) = self.write(conn_id, record).await {
            tracing::warn!(%err, conn = conn_id, "presence not recorded yet");
        }
    }

    /// Stores a record of this gateway's connection (re-put every [`REFRESH_EVERY`] as
    /// long as the connection lives, without the announcement).
    async fn write(&self, conn_id: &str, record: Record) -> Result<(), StateError> {
        let storage = storage_key(&self.gateway_id, conn_id);
        let kept = Record {
            announce: false,
            ..record.clone()
        };
        let kept = Bytes::from(serde_json::to_vec(&kept).expect("records serialize"));
        let value = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
        self.own.lock().insert(storage.clone(), kept);
        let revision = self.state.put(BUCKET_PRESENCE, &storage, value).await?;
        self.version.fetch_max(revision, Ordering::Relaxed);
        self.insert_row(storage, &record);
        // Here at once; the watch's echo of this write finds the row unchanged and stays
        // quiet, while other gateways see a changed entry and announce it.
        if record.announce {
            self.changes.notify_one();
        }
        Ok(())
    }

    /// `system-event`: merges what a client reports about itself into its connection's
    /// entry (`entry` is the connection's own when it has none yet: a CLI is not tracked
    /// on connect) and has every gateway announce the list. The entry lives as long as the
    /// connection, as every entry here does.
    ///
    /// `closed` is the connection's flag, set before its entry is removed: a report that
    /// finds it set writes nothing, and one that raced the removal removes what it wrote.
    pub async fn report(
        &self,
        conn_id: &str,
        closed: &AtomicBool,
        own_entry: impl FnOnce() -> (String, Value),
        merge: impl FnOnce(&mut Value) -> Option<String>,
    ) -> Result<Reported, StateError> {
        if closed.load(Ordering::SeqCst) {
            return Err(StateError::Failed("the connection has closed".into()));
        }
        let storage = storage_key(&self.gateway_id, conn_id);
        let previous = self.rows.read().by_storage.get(&storage).map(|row| {
            let entry: Value = serde_json::from_str(&row.entry).unwrap_or_default();
            (row.key.clone(), entry, row.node.clone())
        });
        let existed = previous.is_some();
        let (key, before, node) = match previous {
            Some(found) => found,
            None => {
                let (key, entry) = own_entry();
                (key, entry, None)
            }
        };
        let mut entry = before.clone();
        let key = merge(&mut entry).unwrap_or(key);
        let changed = ["host", "ip", "version", "mode", "reason"]
            .into_iter()
            .filter(|field| !existed || before.get(*field) != entry.get(*field))
            .collect();
        let record = Record {
            key,
            entry: entry.clone(),
            node,
            announce: true,
        };
        let written = self.write(conn_id, record).await;
        if closed.load(Ordering::SeqCst) {
            self.remove(conn_id).await;
        }
        written?;
        Ok(Reported { changed, entry })
    }

    /// Removes a connection's record, if it has one.
    pub async fn remove(&self, conn_id: &str) {
        let storage = storage_key(&self.gateway_id, conn_id);
        if self.own.lock().remove(&storage).is_none() {
            return;
        }
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

    /// Waits for the next disconnect, or client report, anywhere in the cluster.
    pub async fn changed(&self) {
        self.changes.notified().await;
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
                        let gone: Vec<String> = (self.rows.read().by_storage.keys())
                            .filter(|key| !keys.contains(*key))
                            .cloned()
                            .collect();
                        for key in gone {
                            self.remove_row(&key);
                        }
                    }
                    while let Some(change) = changes.recv().await {
                        self.version.fetch_max(change.revision, Ordering::Relaxed);
                        match change.value.map(|v| serde_json::from_slice::<Record>(&v)) {
                            Some(Ok(record)) => {
                                // Announced where the entry changed: a re-put or a new
                                // watch's replay of what this gateway holds is no news.
                                if self.insert_row(change.key, &record) && record.announce {
                                    self.changes.notify_one();
                                }
                            }
                            Some(Err(err)) => {
                                tracing::warn!(key = %change.key, %err, "bad presence record")
                            }
                            None => {
                                if self.remove_row(&change.key) {
                                    self.changes.notify_one();
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

    /// The presence list as JSON text: gateways first (`reason:"self"`), then clients newest
    /// first, one entry per presence key, at most 200. Encoded once per change and shared by
    /// every `hello-ok`, `presence` event and `system-presence` until the next change: a
    /// connect costs the same with 15,000 connections held as with none.
    pub fn list_json(&self, gateways: &[GatewayRecord], self_record: &GatewayRecord) -> Arc<str> {
        let mut live: Vec<&GatewayRecord> =
            gateways.iter().filter(|g| g.id != self_record.id).collect();
        live.push(self_record);
        let live_key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for g in &live {
                g.id.hash(&mut hasher);
            }
            hasher.finish()
        };
        let generation = self.rows.read().generation;
        if let Some(list) = self.list.lock().as_ref() {
            if list.generation == generation
                && list.gateways == live_key
                && list.built.elapsed() < LIST_REUSE_FOR
            {
                return list.json.clone();
            }
        }
        let clients = self.clients_json(
            &live,
            live_key,
            PRESENCE_MAX_ENTRIES - live.len().min(PRESENCE_MAX_ENTRIES),
        );
        let mut json = String::with_capacity(clients.len() + 256 * live.len() + 2);
        json.push('[');
        for (i, g) in live.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let entry = json!({
                "host": g.host, "version": g.version, "platform": std::env::consts::OS,
                "mode": "gateway", "reason": "self", "ts": g.heartbeat_at_ms,
                "instanceId": g.id, "text": format!("Gateway: {} ({})", g.host, g.id),
            });
            json.push_str(&entry.to_string());
        }
        if !clients.is_empty() {
            json.push(',');
            json.push_str(&clients);
        }
        json.push(']');
        let json: Arc<str> = json.into();
        self.builds.inc();
        *self.list.lock() = Some(EncodedList {
            generation,
            gateways: live_key,
            built: Instant::now(),
            json: json.clone(),
        });
        json
    }

    /// The list as values (`system-presence`).
    pub fn list(&self, gateways: &[GatewayRecord], self_record: &GatewayRecord) -> Vec<Value> {
        serde_json::from_str(&self.list_json(gateways, self_record)).expect("encoded by us")
    }

    /// The clients' entries, comma-separated: the newest row of each presence key on a live
    /// gateway, newest first, at most `room`. Walks the rows from the newest and stops when
    /// the list is full, so its cost does not grow with the number of rows.
    fn clients_json(&self, live: &[&GatewayRecord], live_key: u64, room: usize) -> Arc<str> {
        let rows = self.rows.read();
        if let Some(clients) = self.clients.lock().as_ref() {
            if clients.generation == rows.generation && clients.gateways == live_key {
                return clients.json.clone();
            }
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(room);
        let mut json = String::new();
        for (_, storage) in rows.by_age.iter().rev() {
            if seen.len() >= room {
                break;
            }
            let Some(row) = rows.by_storage.get(storage) else {
                continue;
            };
            if !live.iter().any(|g| g.id == row.gateway) || !seen.insert(row.key.as_str()) {
                continue;
            }
            if !json.is_empty() {
                json.push(',');
            }
            json.push_str(&row.entry);
        }
        let json: Arc<str> = json.into();
        *self.clients.lock() = Some(EncodedClients {
            generation: rows.generation,
            gateways: live_key,
            json: json.clone(),
        });
        json
    }

    /// The devices connected now to live gateways anywhere in the cluster, each with the
    /// time its newest connection was made or refreshed.
    pub fn connected_devices(&self, is_live: impl Fn(&str) -> bool) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for row in self.rows.read().by_storage.values() {
            if row.gateway != self.gateway_id && !is_live(&row.gateway) {
                continue;
            }
            if let Some(device) = &row.device_id {
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
            .by_storage
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
            .by_storage
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
