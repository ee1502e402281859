//! Exactly-once claims of scheduled occurrences.
//!
//! A record due to run (a cron job, an agent's heartbeat, an execution-worker cycle) is
//! claimed by writing a [`Claim`] into it with a compare-and-set on its revision: of all the
//! node-agents that see it due, exactly one write succeeds, and only that node runs the
//! occurrence. The holder beats the claim every second; a claim whose beat is older than
//! [`CLAIM_STALE`] belongs to a dead node, and any live node settles it (the owner of the
//! record decides how: marked as failed, never run a second time).

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use argent_planes::state::{modify_json, StateError, StateStore};

/// How often a holder refreshes its claim.
pub const BEAT: Duration = Duration::from_secs(1);
/// A claim not refreshed for this long belongs to a node that died.
pub const CLAIM_STALE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub node: String,
    /// The occurrence being run (its due time), or the time of a manual run.
    pub occurrence_ms: u64,
    pub started_at_ms: u64,
    pub beat_ms: u64,
}

impl Claim {
    pub fn new(node: &str, occurrence_ms: u64) -> Self {
        let now = argent_proto::now_ms();
        Claim {
            node: node.to_string(),
            occurrence_ms,
            started_at_ms: now,
            beat_ms: now,
        }
    }

    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.beat_ms) > CLAIM_STALE.as_millis() as u64
    }

    /// The same claim (the beat aside).
    pub fn same(&self, other: &Claim) -> bool {
        self.node == other.node
            && self.occurrence_ms == other.occurrence_ms
            && self.started_at_ms == other.started_at_ms
    }
}

/// A record that can carry a claim.
pub trait Claimable: Serialize + DeserializeOwned + Send {
    fn claim(&self) -> Option<&Claim>;
    fn claim_mut(&mut self) -> &mut Option<Claim>;

    /// Held by `claim` (and not settled by someone else meanwhile).
    fn held_by(&self, claim: &Claim) -> bool {
        self.claim().is_some_and(|c| c.same(claim))
    }
}

/// Refreshes `claim` in the record; `false` when the record no longer holds it.
async fn beat<T: Claimable>(
    store: &dyn StateStore,
    bucket: &str,
    key: &str,
    claim: &Claim,
) -> Result<bool, StateError> {
    let held = modify_json(store, bucket, key, |record: Option<T>| {
        let Some(mut record) = record.filter(|r| r.held_by(claim)) else {
            return Ok::<_, StateError>(None);
        };
        if let Some(c) = record.claim_mut() {
            c.beat_ms = argent_proto::now_ms();
        }
        Ok(Some((record, ())))
    })
    .await?;
    Ok(held.is_some())
}

/// Runs `work` while beating `claim` every second.
pub async fn while_beating<T: Claimable, R>(
    store: &dyn StateStore,
    bucket: &str,
    key: &str,
    claim: &Claim,
    work: impl Future<Output = R>,
) -> R {
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval(BEAT);
    ticker.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => match beat::<T>(store, bucket, key, claim).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(%key, "claim taken from this node while running"),
                Err(err) => tracing::warn!(%key, %err, "claim beat failed"),
            },
        }
    }
}

/// Applies `settle` to the record if it still holds `claim`, clearing the claim; `None`
/// when someone else settled it meanwhile.
pub async fn release<T: Claimable>(
    store: &dyn StateStore,
    bucket: &str,
    key: &str,
    claim: &Claim,
    mut settle: impl FnMut(&mut T),
) -> Result<Option<()>, StateError> {
    modify_json(store, bucket, key, |record: Option<T>| {
        let Some(mut record) = record.filter(|r| r.held_by(claim)) else {
            return Ok::<_, StateError>(None);
        };
        *record.claim_mut() = None;
        settle(&mut record);
        Ok(Some((record, ())))
    })
    .await
}
