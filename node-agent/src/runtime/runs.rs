//! Run records and session run leases, both in the state plane.
//!
//! * A **run record** (`argent_runs`, key = hash of the run id) is created with a KV
//!   `create` when `chat.send`/`agent` first sees an idempotency key, so it is also the
//!   cluster-wide dedupe cache (§5.0). It carries the request (so any node can execute a
//!   queued run), the status, and the result `agent.wait` answers from.
//! * A **lease** (`argent_leases`, key = hash of the session key) names the node that runs
//!   the session's turns, the active run, the bounded queue behind it, and how far the
//!   active run may number its events (`seq`, claimed in blocks of [`SEQ_BLOCK`]). Every
//!   write is a compare-and-set on the revision. The holder publishes an event only while
//!   its `seq` is claimed **and** its last successful lease write was sent less than
//!   [`CLAIM_VALID_FOR`] ago; otherwise it writes the lease first (which fails once the
//!   lease was taken over). Another node takes a lease over only after seeing it unchanged
//!   for `LEASE_STALE_AFTER` (5 s) from the moment it saw the last write, so a holder that
//!   lost its lease has stopped publishing 3 s before anyone else may start, and the new
//!   holder numbers after the claimed block: per-run `seq` never repeats, and a gap shows
//!   where a dead holder stopped. Claiming in blocks keeps the store off the path of all but
//!   one event in [`SEQ_BLOCK`] (the beat, every second, renews the claim's time).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::ServiceError;
use argent_planes::state::{modify_json, StateError, StateStore};
use argent_proto::subjects::{BUCKET_LEASES, BUCKET_RUNS};

/// How often a holder beats (takeover comes after `LEASE_STALE_AFTER` without a change).
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Event numbers claimed by one lease write.
pub const SEQ_BLOCK: u64 = 64;
/// How long after its last successful lease write a holder may publish without writing
/// again: well under `LEASE_STALE_AFTER`, the least time before another node may take over.
pub const CLAIM_VALID_FOR: Duration = Duration::from_secs(2);
const _: () = assert!(CLAIM_VALID_FOR.as_secs() * 2 < super::LEASE_STALE_AFTER.as_secs());
/// Runs waiting behind the active one, per session (then Agent Busy).
pub const MAX_QUEUE: usize = 8;
/// Finished runs are remembered this long (`agent.wait`, dedupe).
pub const REMEMBER_MS: u64 = 10 * 60 * 1000;

fn hashed(prefix: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("{prefix}{}", hex::encode(&digest[..20]))
}

pub fn run_key(run_id: &str) -> String {
    hashed("r.", run_id)
}

pub fn lease_key(session_key: &str) -> String {
    hashed("l.", session_key)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Ok,
    Error,
    Aborted,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Ok | RunStatus::Error | RunStatus::Aborted)
    }
}

/// What the client asked for; enough for any node to execute the run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub message: String,
    /// The session key as the client wrote it (echoed in `chat` events).
    pub client_session_key: String,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Run timeout; 0 = the default.
    #[serde(default)]
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_system_prompt: Option<String>,
    /// The starting connection, for its tool events (only when it declared `tool-events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_events_to: Option<ConnRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnRef {
    pub gateway_id: String,
    pub conn_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    /// `chat.send` or `agent`.
    pub method: String,
    pub session_key: String,
    pub status: RunStatus,
    pub accepted_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Final assistant text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Set by an abort that may have reached the holder before the run registered there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_requested: Option<String>,
    pub request: RunRequest,
}

impl RunRecord {
    /// `agent.wait` result.
    pub fn wait_result(&self) -> Value {
        let mut out = serde_json::json!({
            "runId": self.run_id,
            "status": if self.status == RunStatus::Error { "error" } else { "ok" },
        });
        if let Some(at) = self.started_at {
            out["startedAt"] = at.into();
        }
        if let Some(at) = self.ended_at {
            out["endedAt"] = at.into();
        }
        if let Some(err) = &self.error {
            out["error"] = err.clone().into();
        }
        if self.status == RunStatus::Aborted {
            out["aborted"] = true.into();
        }
        out
    }
}

/// What [`Runs::create`] found.
pub enum Created {
    /// A new record, at this revision.
    New(u64),
    /// The run id was used before: its record.
    Earlier(Box<RunRecord>),
}

#[derive(Clone)]
pub struct Runs {
    state: Arc<dyn StateStore>,
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("records serialize"))
}

impl Runs {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Runs { state }
    }

    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Creates the record: its revision, or the earlier record when the run id was seen
    /// before (a duplicate).
    pub async fn create(&self, record: &RunRecord) -> Result<Created, ServiceError> {
        let key = run_key(&record.run_id);
        for _ in 0..2 {
            match self.state.create(BUCKET_RUNS, &key, encode(record)).await {
                Ok(revision) => return Ok(Created::New(revision)),
                Err(StateError::Exists) => {
                    if let Some(existing) = self.get(&record.run_id).await? {
                        return Ok(Created::Earlier(Box::new(existing)));
                    }
                    // Removed in between (expired): create again.
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(ServiceError::Contended {
            message: format!("run {} is being replaced; retry", record.run_id),
            retry_after_ms: Some(200),
        })
    }

    /// [`Runs::update`] of a record this node wrote last at `revision`: one write when
    /// nobody changed it since, else read and retried.
    pub async fn update_known(
        &self,
        known: &RunRecord,
        revision: u64,
        mut change: impl FnMut(&mut RunRecord),
    ) -> Result<Option<RunRecord>, ServiceError> {
        let mut next = known.clone();
        change(&mut next);
        let key = run_key(&known.run_id);
        match self
            .state
            .update(BUCKET_RUNS, &key, encode(&next), revision)
            .await
        {
            Ok(_) => Ok(Some(next)),
            Err(StateError::WrongRevision) => self.update(&known.run_id, change).await,
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, ServiceError> {
        let Some(entry) = self.state.get(BUCKET_RUNS, &run_key(run_id)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&entry.value).map(Some).map_err(|e| {
            ServiceError::Unreadable(format!("run record {run_id} is unreadable: {e}"))
        })
    }

    /// Changes a record (read, modify, compare-and-set); `None` when it does not exist.
    pub async fn update(
        &self,
        run_id: &str,
        mut change: impl FnMut(&mut RunRecord),
    ) -> Result<Option<RunRecord>, ServiceError> {
        modify_json(
            self.state.as_ref(),
            BUCKET_RUNS,
            &run_key(run_id),
            |current| {
                Ok::<_, ServiceError>(current.map(|mut record: RunRecord| {
                    change(&mut record);
                    (record.clone(), record)
                }))
            },
        )
        .await
    }

    pub async fn delete(&self, run_id: &str) -> Result<(), ServiceError> {
        self.state
            .delete(BUCKET_RUNS, &run_key(run_id))
            .await
            .map_err(ServiceError::from)
    }

    /// Forgets finished runs older than [`REMEMBER_MS`]; returns how many.
    pub async fn collect_garbage(&self) -> Result<usize, StateError> {
        let now = argent_proto::now_ms();
        let mut removed = 0;
        for key in self.state.keys(BUCKET_RUNS, "r.").await? {
            let Some(entry) = self.state.get(BUCKET_RUNS, &key).await? else {
                continue;
            };
            let expired = match serde_json::from_slice::<RunRecord>(&entry.value) {
                Ok(r) => r
                    .ended_at
                    .is_some_and(|at| now.saturating_sub(at) > REMEMBER_MS),
                Err(_) => true,
            };
            if expired {
                self.state.delete(BUCKET_RUNS, &key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The lease of one session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub session_key: String,
    pub node_id: String,
    /// Fresh for every holder: a CAS that finds another epoch lost the lease.
    pub epoch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    #[serde(default)]
    pub queue: Vec<String>,
    /// The highest per-run `seq` the active run may publish (claimed in blocks); a node
    /// that takes the lease over numbers after it.
    #[serde(default)]
    pub seq: u64,
    /// Heartbeat counter: unchanged for a while means the holder is gone.
    #[serde(default)]
    pub beat: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the session lease was taken over by another node")]
    Lost,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What enqueueing a run did.
pub enum Enqueued {
    /// This node now holds the lease; the run is active: drive it.
    Started(Box<LeaseHandle>),
    /// Behind the active run (position in the queue, from 1).
    Queued(usize),
    /// The queue is full.
    Busy,
}

/// A held lease: its current revision and content.
pub struct LeaseHandle {
    state: Arc<dyn StateStore>,
    key: String,
    revision: u64,
    /// When the last successful write of it was sent.
    written_at: Written,
    pub lease: Lease,
}

/// When a lease write was sent, on two clocks: the monotonic one (immune to clock steps)
/// stops while the host is suspended, the wall clock does not. A claim is fresh only while
/// both say so, so neither a suspend nor a step of the wall clock can stretch it.
#[derive(Clone, Copy)]
struct Written {
    at: Instant,
    wall: std::time::SystemTime,
}

impl Written {
    fn now() -> Self {
        Written {
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
        }
    }

    fn within(&self, limit: Duration) -> bool {
        self.at.elapsed() < limit && self.wall.elapsed().is_ok_and(|d| d < limit)
    }
}

fn decode_lease(value: &[u8]) -> Result<Lease, StateError> {
    serde_json::from_slice(value).map_err(|e| StateError::Failed(format!("unreadable lease: {e}")))
}

pub async fn read_lease(
    state: &dyn StateStore,
    session_key: &str,
) -> Result<Option<(Lease, u64)>, StateError> {
    match state.get(BUCKET_LEASES, &lease_key(session_key)).await? {
        Some(entry) => Ok(Some((decode_lease(&entry.value)?, entry.revision))),
        None => Ok(None),
    }
}

/// What this node's watch of the leases last saw of a session's lease: where to start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// Nothing (recently): try to create it.
    Nothing,
    /// Released at this revision: create it again over the delete.
    Released(u64),
    /// Held: read it and queue behind its run.
    Held,
}

/// Makes `run_id` the session's active run (taking the lease) or queues it. `seen`: what
/// this node's watch knows of the lease, so the common cases take one or two round trips
/// (JetStream's KV `create` costs three over a deleted key and two over a live one).
pub async fn enqueue(
    state: &Arc<dyn StateStore>,
    session_key: &str,
    run_id: &str,
    node_id: &str,
    seen: Seen,
) -> Result<Enqueued, StateError> {
    let key = lease_key(session_key);
    let mut deleted_at = match seen {
        Seen::Released(revision) => Some(revision),
        _ => None,
    };
    let mut try_create = seen != Seen::Held;
    loop {
        if !try_create {
            // A lease is (or was just) held: queue behind it, or take it if it is gone.
            let Some(entry) = state.get(BUCKET_LEASES, &key).await? else {
                try_create = true;
                continue;
            };
            match queue_behind(state, &key, &entry, run_id).await? {
                Some(enqueued) => return Ok(enqueued),
                None => continue,
            }
        }
        // An idle session has no lease: try to take it first (one round trip instead of two).
        let lease = Lease {
            session_key: session_key.to_string(),
            node_id: node_id.to_string(),
            epoch: uuid::Uuid::new_v4().to_string(),
            active: Some(run_id.to_string()),
            queue: Vec::new(),
            seq: SEQ_BLOCK,
            beat: 0,
        };
        let sent = Written::now();
        let created = match deleted_at.take() {
            Some(revision) => match state
                .recreate(BUCKET_LEASES, &key, encode(&lease), revision)
                .await
            {
                // Changed since: take the general way.
                Err(StateError::WrongRevision) => {
                    state.create(BUCKET_LEASES, &key, encode(&lease)).await
                }
                other => other,
            },
            None => state.create(BUCKET_LEASES, &key, encode(&lease)).await,
        };
        match created {
            Ok(revision) => {
                return Ok(Enqueued::Started(Box::new(LeaseHandle {
                    state: state.clone(),
                    key,
                    revision,
                    written_at: sent,
                    lease,
                })))
            }
            Err(StateError::Exists) => try_create = false,
            Err(err) => return Err(err),
        }
    }
}

/// Appends `run_id` to the queue of the lease read as `entry`; `None` when the lease
/// changed meanwhile (read it again).
async fn queue_behind(
    state: &Arc<dyn StateStore>,
    key: &str,
    entry: &argent_planes::state::Entry,
    run_id: &str,
) -> Result<Option<Enqueued>, StateError> {
    let mut lease = decode_lease(&entry.value)?;
    if lease.queue.len() >= MAX_QUEUE {
        return Ok(Some(Enqueued::Busy));
    }
    lease.queue.push(run_id.to_string());
    let position = lease.queue.len();
    match state
        .update(BUCKET_LEASES, key, encode(&lease), entry.revision)
        .await
    {
        Ok(_) => Ok(Some(Enqueued::Queued(position))),
        Err(StateError::WrongRevision) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Removes queued runs of a session (abort); returns the ids removed.
pub async fn dequeue(
    state: &dyn StateStore,
    session_key: &str,
    only: Option<&str>,
) -> Result<Vec<String>, StateError> {
    let key = lease_key(session_key);
    loop {
        let Some(entry) = state.get(BUCKET_LEASES, &key).await? else {
            return Ok(Vec::new());
        };
        let mut lease = decode_lease(&entry.value)?;
        let (removed, kept): (Vec<String>, Vec<String>) = lease
            .queue
            .drain(..)
            .partition(|id| only.is_none_or(|o| o == id));
        if removed.is_empty() {
            return Ok(removed);
        }
        lease.queue = kept;
        match state
            .update(BUCKET_LEASES, &key, encode(&lease), entry.revision)
            .await
        {
            Ok(_) => return Ok(removed),
            Err(StateError::WrongRevision) => continue,
            Err(err) => return Err(err),
        }
    }
}

impl LeaseHandle {
    /// Takes over a lease whose holder stopped beating, if it is still exactly `seen`.
    pub async fn take_over(
        state: &Arc<dyn StateStore>,
        seen: &Lease,
        node_id: &str,
    ) -> Result<Option<LeaseHandle>, StateError> {
        let key = lease_key(&seen.session_key);
        let Some(entry) = state.get(BUCKET_LEASES, &key).await? else {
            return Ok(None);
        };
        let current = decode_lease(&entry.value)?;
        if &current != seen {
            return Ok(None);
        }
        let mut lease = current;
        lease.node_id = node_id.to_string();
        lease.epoch = uuid::Uuid::new_v4().to_string();
        lease.beat = 0;
        let sent = Written::now();
        match state
            .update(BUCKET_LEASES, &key, encode(&lease), entry.revision)
            .await
        {
            Ok(revision) => Ok(Some(LeaseHandle {
                state: state.clone(),
                key,
                revision,
                written_at: sent,
                lease,
            })),
            Err(StateError::WrongRevision) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Compare-and-set of a change; adopts what others changed meanwhile (they may only
    /// append to or remove from the queue) as long as the lease is still ours. Every write
    /// also counts the beat up: a node that saw older content (its watch lagging) must not
    /// take over a lease just written, and `take_over` compares content.
    pub async fn change(&mut self, change: impl Fn(&mut Lease)) -> Result<(), LeaseError> {
        loop {
            let mut next = self.lease.clone();
            change(&mut next);
            next.beat = next.beat.wrapping_add(1);
            let sent = Written::now();
            match self
                .state
                .update(BUCKET_LEASES, &self.key, encode(&next), self.revision)
                .await
            {
                Ok(revision) => {
                    self.revision = revision;
                    self.written_at = sent;
                    self.lease = next;
                    return Ok(());
                }
                Err(StateError::WrongRevision) => {
                    let Some(entry) = self.state.get(BUCKET_LEASES, &self.key).await? else {
                        return Err(LeaseError::Lost);
                    };
                    let current = decode_lease(&entry.value)?;
                    if current.epoch != self.lease.epoch {
                        return Err(LeaseError::Lost);
                    }
                    self.lease = current;
                    self.revision = entry.revision;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    pub async fn beat(&mut self) -> Result<(), LeaseError> {
        self.change(|_| {}).await
    }

    /// Runs `work` while beating every second, so slow work does not look like a dead
    /// holder; `Err(Lost)` as soon as the lease was taken over.
    pub async fn beating<T>(&mut self, work: impl Future<Output = T>) -> Result<T, LeaseError> {
        tokio::pin!(work);
        let mut beat = tokio::time::interval_at(Instant::now() + BEAT_INTERVAL, BEAT_INTERVAL);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = beat.tick() => self.beat().await?,
            }
        }
    }

    /// Makes sure the event numbered `seq` may be published now: claimed, and the lease
    /// written recently enough that nobody can have taken it over (see the module
    /// documentation); else claims the next block, which fails if the lease was lost.
    pub async fn claim_seq(&mut self, seq: u64) -> Result<(), LeaseError> {
        // Cut off from the store, events would wait in the client's buffer and arrive
        // after a takeover: write first (which fails while cut off).
        if seq <= self.lease.seq
            && self.written_at.within(CLAIM_VALID_FOR)
            && self.state.is_healthy()
        {
            return Ok(());
        }
        let until = seq + SEQ_BLOCK - 1;
        self.change(|l| l.seq = l.seq.max(until)).await
    }

    /// The active run ended: the next queued run becomes active (`Some`), or the lease is
    /// released (`None`) — with a conditional delete, so a run queued meanwhile is not lost.
    pub async fn advance(&mut self) -> Result<Option<String>, LeaseError> {
        loop {
            if self.lease.queue.is_empty() {
                match self
                    .state
                    .delete_if(BUCKET_LEASES, &self.key, self.revision)
                    .await
                {
                    Ok(()) => return Ok(None),
                    Err(StateError::WrongRevision) => {
                        self.change(|_| {}).await?;
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            let next = self.lease.queue[0].clone();
            // Only if it is still the head: an abort may have dequeued it meanwhile.
            self.change(|l| {
                if l.queue.first() == Some(&next) {
                    l.queue.remove(0);
                    l.active = Some(next.clone());
                    // The new run numbers from 1, under a fresh claim.
                    l.seq = SEQ_BLOCK;
                }
            })
            .await?;
            if self.lease.active.as_deref() == Some(next.as_str()) {
                return Ok(Some(next));
            }
        }
    }

    /// Gives the lease up (shutdown): released when nothing is queued, else left without
    /// an active run for another node to take over.
    pub async fn hand_back(mut self) -> Result<(), LeaseError> {
        self.change(|l| l.active = None).await?;
        if self.lease.queue.is_empty() {
            match self
                .state
                .delete_if(BUCKET_LEASES, &self.key, self.revision)
                .await
            {
                Ok(()) | Err(StateError::WrongRevision) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argent_planes::state_embedded::EmbeddedStore;

    /// The lease an `enqueue` took (panics when it queued or was refused instead).
    fn taken(enqueued: Enqueued, why: &str) -> LeaseHandle {
        match enqueued {
            Enqueued::Started(lease) => *lease,
            Enqueued::Queued(n) => panic!("{why}: queued at {n} instead of taking the lease"),
            Enqueued::Busy => panic!("{why}: busy instead of taking the lease"),
        }
    }

    async fn started(state: &Arc<dyn StateStore>, node: &str) -> LeaseHandle {
        let enqueued = enqueue(state, "agent:main:s", "r1", node, Seen::Nothing).await;
        taken(enqueued.unwrap(), "the lease was free")
    }

    /// Event numbers cost a lease write once per block while the claim is fresh; an old
    /// claim is renewed by a write first, which fails once another node took the lease.
    #[tokio::test(start_paused = true)]
    async fn claims_are_free_within_a_fresh_block_and_fenced_after_a_takeover() {
        let state: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(None).unwrap());
        let mut lease = started(&state, "node-a").await;
        let created = lease.revision;
        lease.claim_seq(1).await.unwrap();
        lease.claim_seq(SEQ_BLOCK).await.unwrap();
        assert_eq!(lease.revision, created, "no write within the first block");
        lease.claim_seq(SEQ_BLOCK + 1).await.unwrap();
        assert_eq!(
            lease.lease.seq,
            2 * SEQ_BLOCK,
            "one write claims the next block"
        );
        let renewed = lease.revision;
        assert_ne!(renewed, created);
        // Every write changes the content (the beat), even one that claims nothing new:
        // `take_over` compares content.
        let before = lease.lease.clone();
        lease.change(|_| {}).await.unwrap();
        assert_ne!(lease.lease, before);
        let renewed = lease.revision;

        // The claim ages: the next number needs a write even inside the block.
        tokio::time::advance(CLAIM_VALID_FOR).await;
        lease.claim_seq(SEQ_BLOCK + 2).await.unwrap();
        assert_ne!(
            lease.revision, renewed,
            "an aged claim is renewed before use"
        );

        // Another node takes the lease over (in the cluster only after it saw it unchanged
        // for LEASE_STALE_AFTER, i.e. after this claim aged).
        let seen = lease.lease.clone();
        let taken = LeaseHandle::take_over(&state, &seen, "node-b")
            .await
            .unwrap()
            .expect("taken over");
        tokio::time::advance(CLAIM_VALID_FOR).await;
        assert!(matches!(
            lease.claim_seq(SEQ_BLOCK + 3).await,
            Err(LeaseError::Lost)
        ));
        // The new holder numbers after everything the old one may have used.
        assert!(taken.lease.seq >= SEQ_BLOCK + 3);
    }

    /// Whatever this node's watch believes of the lease, `enqueue` ends with the run active
    /// or queued (the watch only picks where to start). The conditional re-creation itself is
    /// JetStream's and is tested there (`jetstream_recreates_a_deleted_key_only_over_that_delete`).
    #[tokio::test]
    async fn enqueue_is_right_whatever_the_watch_believes() {
        let state: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(None).unwrap());
        for seen in [Seen::Nothing, Seen::Released(12345), Seen::Held] {
            let key = format!("agent:main:{seen:?}");
            let first = enqueue(&state, &key, "r1", "node-a", seen).await.unwrap();
            let mut lease = taken(first, &format!("{seen:?}: free, so taken"));
            assert_eq!(lease.lease.active.as_deref(), Some("r1"));
            let second = enqueue(&state, &key, "r2", "node-b", seen).await.unwrap();
            assert!(
                matches!(second, Enqueued::Queued(1)),
                "{seen:?}: held, so queued"
            );
            assert_eq!(lease.advance().await.unwrap().as_deref(), Some("r2"));
            assert!(lease.advance().await.unwrap().is_none(), "released");
            let again = enqueue(&state, &key, "r3", "node-b", seen).await.unwrap();
            assert!(
                matches!(again, Enqueued::Started(_)),
                "{seen:?}: released, so taken"
            );
        }
    }
}
