//! The distributed scheduler that runs on every node-agent: cron jobs, agent heartbeats and
//! execution-worker cycles (PROTOCOL.md §5.5, §5.8, §4.2 `cron` / `heartbeat`).
//!
//! Every node mirrors the scheduler bucket (`argent_cron`) through a watch and looks at it
//! five times a second. A due record is claimed with a compare-and-set ([`claim`]), so each
//! occurrence runs on exactly one node; the holder beats the claim while it runs, and a claim
//! left by a dead node is settled by a live one within seconds (marked failed, not re-run).
//!
//! * [`schedule`] — when `at` / `every` / `cron`+tz schedules fire.
//! * [`jobs`] — the cron job record, input normalisation, run history entries.
//! * [`cron`] — claiming and executing cron occurrences.
//! * [`heartbeat`] — the per-agent heartbeat turn and its system-event queue.
//! * [`execution`] — per-agent execution-worker cycles over the agent's task queue.
//! * [`turn`] — agent turns started by the scheduler.

pub mod claim;
pub mod cron;
pub mod execution;
pub mod heartbeat;
pub mod job_store;
pub mod jobs;
pub mod schedule;
pub mod turn;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;

use argent_planes::mirror::BucketMirror;
use argent_planes::state::{modify_json, StateError};
use argent_proto::subjects::BUCKET_CRON;
use serde::{Deserialize, Serialize};

use self::claim::{Claim, Claimable};

use crate::runtime::Runtime;

/// How often each node looks for due records.
const TICK: Duration = Duration::from_millis(200);

/// Where a cron job's result is announced (`delivery: {mode:"announce"}`): the chat
/// channels, which sit above the scheduler and hand themselves in.
#[async_trait::async_trait]
pub trait Announcer: Send + Sync {
    /// Sends `text` where `delivery` (`{channel?, to?, accountId?}`) says, or to the
    /// agent's last chat when it names no target; `Ok(None)` when there is none at all,
    /// else where it went.
    async fn announce(
        &self,
        agent_id: &str,
        delivery: &Value,
        text: &str,
    ) -> Result<Option<String>, String>;
}

pub struct Scheduler {
    pub rt: Arc<Runtime>,
    pub announcer: Arc<dyn Announcer>,
    /// The scheduler bucket as last seen.
    mirror: Arc<BucketMirror>,
    /// Keys this node is working on now (claimed, settling), so it does not start twice.
    busy: Mutex<HashSet<String>>,
}

impl Scheduler {
    pub fn start(rt: Arc<Runtime>, announcer: Arc<dyn Announcer>) -> Arc<Self> {
        let scheduler = Arc::new(Scheduler {
            announcer,
            mirror: BucketMirror::start(rt.state.clone(), BUCKET_CRON),
            busy: Mutex::new(HashSet::new()),
            rt,
        });
        tokio::spawn(tick_loop(Arc::downgrade(&scheduler)));
        scheduler
    }

    /// Records under `prefix` that parse as `T`, by key.
    pub fn records<T: DeserializeOwned>(&self, prefix: &str) -> Vec<(String, T)> {
        self.mirror.records(prefix)
    }

    pub fn record<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.mirror.record(key)
    }

    /// Runs `work` for `key` in the background unless this node already works on it.
    pub fn spawn_for(
        self: &Arc<Self>,
        key: String,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        if !self.busy.lock().insert(key.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            work.await;
            me.busy.lock().remove(&key);
        });
    }

    pub fn node_id(&self) -> &str {
        &self.rt.node_id
    }
}

/// The timing of a periodic per-agent record (heartbeat, execution worker).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    /// The interval `next_due_at_ms` was computed with (a config change reschedules).
    #[serde(default)]
    pub every_ms: Option<u64>,
    #[serde(default)]
    pub next_due_at_ms: Option<u64>,
    #[serde(default)]
    pub last_run_at_ms: Option<u64>,
}

impl Period {
    /// After a run (or a settled one): the next one is an interval from now.
    pub fn ran(&mut self, at_ms: Option<u64>, every_ms: Option<u64>) {
        if at_ms.is_some() {
            self.last_run_at_ms = at_ms;
        }
        self.every_ms = every_ms;
        self.next_due_at_ms = every_ms.map(|e| argent_proto::now_ms() + e);
    }

    pub fn is_due(&self, now_ms: u64) -> bool {
        self.next_due_at_ms.is_some_and(|d| d <= now_ms)
    }
}

/// A claimable record that runs every so often.
pub trait Periodic: Claimable + Default + Clone + Sync + 'static {
    fn period(&self) -> &Period;
    fn period_mut(&mut self) -> &mut Period;
}

/// [`Claimable`] and [`Periodic`] for a record with `claim: Option<Claim>` and
/// `period: Period` fields (the heartbeat's and the execution worker's records).
macro_rules! periodic_record {
    ($record:ty) => {
        impl $crate::scheduler::claim::Claimable for $record {
            fn claim(&self) -> Option<&$crate::scheduler::claim::Claim> {
                self.claim.as_ref()
            }
            fn claim_mut(&mut self) -> &mut Option<$crate::scheduler::claim::Claim> {
                &mut self.claim
            }
        }

        impl $crate::scheduler::Periodic for $record {
            fn period(&self) -> &$crate::scheduler::Period {
                &self.period
            }
            fn period_mut(&mut self) -> &mut $crate::scheduler::Period {
                &mut self.period
            }
        }
    };
}
pub(crate) use periodic_record;

/// What a scheduler pass does with one periodic record.
pub enum Step {
    /// Its holder died: settle the claim.
    SettleDead(Claim),
    /// Running, or not due.
    Nothing,
    Run,
    /// Unknown so far, or its interval changed: schedule it from now.
    Reschedule,
}

/// Decides a pass over a periodic record: `requested` runs it now whatever the schedule.
pub fn step<T: Periodic>(
    record: Option<&T>,
    every_ms: Option<u64>,
    now_ms: u64,
    requested: bool,
) -> Step {
    let Some(record) = record else {
        return Step::Reschedule;
    };
    match record.claim() {
        Some(claim) if claim.is_stale(now_ms) => return Step::SettleDead(claim.clone()),
        Some(_) => return Step::Nothing,
        None => {}
    }
    if requested {
        return Step::Run;
    }
    let period = record.period();
    if period.every_ms != every_ms {
        Step::Reschedule
    } else if every_ms.is_some() && period.is_due(now_ms) {
        Step::Run
    } else {
        Step::Nothing
    }
}

impl Scheduler {
    /// Schedules a periodic record from now (in the background).
    pub fn reschedule<T: Periodic>(self: &Arc<Self>, key: String, every_ms: Option<u64>) {
        let me = self.clone();
        self.spawn_for(key.clone(), async move {
            let rescheduled =
                modify_json(me.rt.state.as_ref(), BUCKET_CRON, &key, |r: Option<T>| {
                    let mut r = r.unwrap_or_default();
                    r.period_mut().ran(None, every_ms);
                    Ok::<_, StateError>(Some((r, ())))
                })
                .await;
            if let Err(err) = rescheduled {
                tracing::warn!(%key, %err, "cannot schedule");
            }
        });
    }
}

async fn tick_loop(scheduler: std::sync::Weak<Scheduler>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(s) = scheduler.upgrade() else { return };
        if *s.rt.stopping.borrow() {
            return;
        }
        let config = match s.rt.config.current().await {
            Ok(config) => config,
            Err(err) => {
                tracing::debug!(%err, "scheduler cannot read the config");
                continue;
            }
        };
        let now = argent_proto::now_ms();
        cron::tick(&s, &config, now);
        heartbeat::tick(&s, &config, now);
        execution::tick(&s, &config, now);
    }
}
