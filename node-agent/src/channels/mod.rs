//! Chat channels (PROTOCOL.md §5.9): the agent on Telegram, WhatsApp, Slack, Discord,
//! Signal and signed webhooks, across the cluster.
//!
//! * [`config`] — the accounts of `channels.<id>` / `channels.<id>.accounts.<accountId>`.
//! * [`platform`] — what every platform offers ([`platform::Platform`]); one module each:
//!   [`telegram`], [`whatsapp`], [`slack`], [`discord`], [`signal`], [`webhook`].
//! * [`store`] — the records in the shared state: leases, cursors, status, inbox, sends.
//! * [`inbound`] — an inbound message's way to a turn and its reply.
//! * [`outbound`] — `send`: idempotent across the cluster, mirrored into the transcript.
//! * [`status`] — the `channels.status` answer from the owners' snapshots.
//!
//! **Ownership.** Every node-agent with the `channels` capability runs a supervisor that
//! looks at the configured accounts each second. An account's receiver (Telegram's polling
//! loop, the inbox processor of every account) runs on the one node that holds its lease in
//! `acct.<channel>.<account>`; the holder beats it each second, and a lease not beaten for
//! five seconds is taken by another node (a new epoch: the old holder's writes are fenced).
//! Inbound messages are stored under create-once keys before anything acts on them, so a
//! takeover, a re-fetched update or a retried webhook never starts a second turn.

pub mod config;
pub mod discord;
pub mod inbound;
pub mod outbound;
pub mod platform;
pub mod signal;
pub mod slack;
pub mod status;
pub mod store;
pub mod telegram;
pub mod webhook;
pub mod whatsapp;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use argent_planes::mirror::BucketMirror;
use argent_planes::state::{modify_json, StateError};

use self::config::Account;
use self::platform::{platform, LoopHealth, PollContext, Receiving};
use self::store::{AccountRecord, Fence, Lease, BUCKET};
use crate::runtime::Runtime;
use crate::tts::Speech;

/// How often the supervisor looks at the accounts and beats its leases.
const TICK: Duration = Duration::from_secs(1);
/// How long a receiver runs on while its beats fail (the lease goes stale after 5 s).
const LEASE_KEEP_UNBEATEN: Duration = Duration::from_millis(3_500);

/// An account this node runs.
struct Owned {
    fence: Fence,
    fingerprint: String,
    stop: watch::Sender<bool>,
    health: Arc<LoopHealth>,
    /// The polling loop (polling platforms): one that ended while its lease is held is
    /// restarted, never left for dead behind a beaten lease.
    poller: Option<tokio::task::JoinHandle<()>>,
    /// When a beat last reached the state plane: a node that cannot beat stops its
    /// receiver before a successor may take over, so two never poll at once for long.
    beaten: std::time::Instant,
}

/// The channel service of one node-agent.
pub struct Channels {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) speech: Arc<Speech>,
    pub(crate) http: reqwest::Client,
    /// The messages bucket as last seen (the inboxes).
    mirror: Arc<BucketMirror>,
    owned: Mutex<HashMap<String, Owned>>,
}

impl Channels {
    pub fn start(rt: Arc<Runtime>, speech: Arc<Speech>) -> Arc<Self> {
        // Platforms do not redirect their APIs; a redirect must not carry a token elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // A held stream (signal-cli's events) whose peer vanished breaks instead of
            // waiting forever.
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let channels = Arc::new(Channels {
            mirror: BucketMirror::start(rt.state.clone(), store::MESSAGES),
            rt,
            speech,
            http,
            owned: Mutex::new(HashMap::new()),
        });
        tokio::spawn(supervise(Arc::downgrade(&channels)));
        channels
    }

    pub fn node_id(&self) -> &str {
        &self.rt.node_id
    }

    /// Records under `prefix` that parse as `T`, by key, as last seen.
    pub fn records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Vec<(String, T)> {
        self.mirror.records(prefix)
    }

    /// Resolves when the messages bucket changed (a message stored by any node-agent).
    pub async fn changed(&self) {
        self.mirror.changed().await;
    }

    /// How `account`'s platform is reached from this node.
    pub(crate) fn api<'a>(&'a self, account: &'a Account) -> platform::Api<'a> {
        platform::Api {
            http: &self.http,
            account,
        }
    }

    /// The account's receiver health on this node, when this node runs it.
    pub(crate) fn local_health(&self, key: &str) -> Option<Arc<LoopHealth>> {
        self.owned.lock().get(key).map(|o| o.health.clone())
    }
}

/// What an account's config was when its receiver started: a change restarts it.
pub(crate) fn fingerprint(account: &Account) -> String {
    let body = serde_json::to_vec(&account.settings).unwrap_or_default();
    hex::encode(&Sha256::digest(&body)[..12])
}

async fn supervise(channels: std::sync::Weak<Channels>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(c) = channels.upgrade() else { return };
        if *c.rt.stopping.borrow() {
            c.release_all().await;
            return;
        }
        match c.rt.config.current().await {
            Ok(config) => c.pass(&config).await,
            Err(err) => {
                tracing::debug!(%err, "channels cannot read the config");
                c.keep_owned(None).await;
            }
        }
    }
}

impl Channels {
    /// One supervisor pass: beat what this node runs, stop what it lost or what changed,
    /// take what nobody runs.
    async fn pass(self: &Arc<Self>, config: &argent_proto::config::SharedConfig) {
        let mut wanted: HashMap<String, (Account, String)> = HashMap::new();
        for account in config::accounts(config).into_values().flatten() {
            let p = platform(account.channel);
            let runs = account.enabled()
                && p.missing(&account).is_empty()
                && !matches!(p.receiving(&account), Receiving::No(_));
            if runs {
                let print = fingerprint(&account);
                wanted.insert(account.key(), (account, print));
            }
        }
        let kept = self.keep_owned(Some(&wanted)).await;
        for (key, (account, print)) in wanted {
            if !kept.contains(&key) {
                self.try_take(account, print).await;
            }
        }
    }

    /// Beats the leases this node holds and stops the receivers it should not run: lost
    /// leases, a poller that ended, and (when the config was read: `wanted`) accounts gone
    /// or changed. The accounts still run here.
    async fn keep_owned(
        &self,
        wanted: Option<&HashMap<String, (Account, String)>>,
    ) -> HashSet<String> {
        let owned: Vec<(String, Fence, String, bool)> = self
            .owned
            .lock()
            .iter()
            .map(|(k, o)| {
                let ended = o.poller.as_ref().is_some_and(|p| p.is_finished());
                (k.clone(), o.fence.clone(), o.fingerprint.clone(), ended)
            })
            .collect();
        let mut kept = HashSet::new();
        for (key, fence, print, ended) in owned {
            let still = wanted.is_none_or(|w| w.get(&key).is_some_and(|(_, p)| *p == print));
            if !still || ended {
                if ended {
                    tracing::warn!(account = %key, "channel poller ended; restarting it");
                }
                self.stop_owned(&key, true).await;
                continue;
            }
            if self.beat(&key, &fence).await {
                kept.insert(key);
            } else {
                tracing::warn!(account = %key, "channel lease lost; receiver stopped");
                self.stop_owned(&key, false).await;
            }
        }
        kept
    }

    /// Copies the receiver's health into its record under the lease; `false` when the
    /// lease is no longer this node's.
    async fn beat(&self, key: &str, fence: &Fence) -> bool {
        let Some(health) = self.local_health(key) else {
            return false;
        };
        let h = health.snapshot();
        let written = modify_json(
            self.rt.state.as_ref(),
            BUCKET,
            &store::account_key_of(key),
            |r: Option<AccountRecord>| {
                let Some(mut r) = r.filter(|r| fence.holds(r)) else {
                    return Ok::<_, StateError>(None);
                };
                let now = argent_proto::now_ms();
                if let Some(lease) = r.lease.as_mut() {
                    lease.beat_ms = now;
                }
                let s = &mut r.status;
                s.loop_beat_at = h.beat_at.or(s.loop_beat_at);
                s.connected = h.connected;
                s.last_connected_at = h.last_connected_at.or(s.last_connected_at);
                s.reconnect_attempts = h.reconnect_attempts;
                if let Some((error, at)) = &h.last_error {
                    s.last_error = Some(error.clone());
                    s.last_error_at = Some(*at);
                }
                s.last_inbound_at = s.last_inbound_at.max(h.last_inbound_at);
                s.last_outbound_at = s.last_outbound_at.max(h.last_outbound_at);
                if h.bot.is_some() {
                    s.bot = h.bot.clone();
                }
                Ok(Some((r, ())))
            },
        )
        .await;
        match written {
            Ok(Some(())) => {
                if let Some(o) = self.owned.lock().get_mut(key) {
                    o.beaten = std::time::Instant::now();
                }
                true
            }
            Ok(None) => false,
            // The state plane is away: keep running for a while (a successor cannot take
            // the lease without it either), but stop before the lease could be taken, so
            // that a partitioned node does not poll beside its successor.
            Err(err) => {
                tracing::debug!(account = %key, %err, "channel lease beat failed");
                let beaten = self.owned.lock().get(key).map(|o| o.beaten);
                beaten.is_some_and(|at| at.elapsed() < LEASE_KEEP_UNBEATEN)
            }
        }
    }

    async fn try_take(self: &Arc<Self>, account: Account, print: String) {
        let key = account.key();
        let me = self.node_id().to_string();
        let now = argent_proto::now_ms();
        let taken = modify_json(
            self.rt.state.as_ref(),
            BUCKET,
            &store::account_key(account.channel, &account.id),
            |r: Option<AccountRecord>| {
                let mut r = r.unwrap_or_default();
                if r.logged_out.as_deref() == Some(print.as_str()) {
                    return Ok::<_, StateError>(None);
                }
                if r.lease.as_ref().is_some_and(|l| !l.is_stale(now)) {
                    return Ok(None);
                }
                r.epoch += 1;
                r.lease = Some(Lease {
                    node: me.clone(),
                    epoch: r.epoch,
                    beat_ms: now,
                });
                r.logged_out = None;
                r.status.last_start_at = Some(now);
                r.status.loop_beat_at = None;
                r.status.connected = None;
                r.status.last_error = None;
                r.status.last_error_at = None;
                r.status.reconnect_attempts = 0;
                Ok(Some((r.clone(), r.epoch)))
            },
        )
        .await;
        let epoch = match taken {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(account = %key, %err, "cannot take a channel lease");
                return;
            }
        };
        tracing::info!(account = %key, epoch, "channel receiver starting on this node");
        let fence = Fence { node: me, epoch };
        let (stop, stop_rx) = watch::channel(false);
        let health = Arc::new(LoopHealth::default());
        let inbox = Arc::new(Notify::new());
        let p = platform(account.channel);
        let poller = (p.receiving(&account) == Receiving::Poll).then(|| {
            let ctx = PollContext {
                http: self.http.clone(),
                store: self.rt.state.clone(),
                account: account.clone(),
                fence: fence.clone(),
                health: health.clone(),
                inbox: inbox.clone(),
                stop: stop_rx.clone(),
            };
            tokio::spawn(async move { p.poll(ctx).await })
        });
        self.owned.lock().insert(
            key.clone(),
            Owned {
                fence,
                fingerprint: print,
                stop,
                health: health.clone(),
                poller,
                beaten: std::time::Instant::now(),
            },
        );
        tokio::spawn(inbound::process(
            Arc::downgrade(self),
            account,
            health,
            inbox,
            stop_rx,
        ));
    }

    /// Stops a receiver this node runs; `release` also gives its lease up at once (the
    /// account's config changed or it went away), else a successor waits for it to age.
    async fn stop_owned(&self, key: &str, release: bool) {
        let Some(owned) = self.owned.lock().remove(key) else {
            return;
        };
        let _ = owned.stop.send(true);
        if !release {
            return;
        }
        let released = modify_json(
            self.rt.state.as_ref(),
            BUCKET,
            &store::account_key_of(key),
            |r: Option<AccountRecord>| {
                let Some(mut r) = r.filter(|r| owned.fence.holds(r)) else {
                    return Ok::<_, StateError>(None);
                };
                r.lease = None;
                r.status.last_stop_at = Some(argent_proto::now_ms());
                r.status.connected = None;
                Ok(Some((r, ())))
            },
        )
        .await;
        if let Err(err) = released {
            tracing::debug!(account = %key, %err, "channel lease not released");
        }
    }

    /// A stopping node gives every lease up, so successors start at once.
    async fn release_all(&self) {
        let keys: Vec<String> = self.owned.lock().keys().cloned().collect();
        for key in keys {
            self.stop_owned(&key, true).await;
        }
    }
}
