//! Handshake hardening [EXT, invisible to well-behaved clients].
//!
//! * **Failed authentications** are counted per address and per claimed identity (the device
//!   id a `connect` presents). Within a budget (`max_failures` a minute) failures are
//!   answered as they are; past it, every further *failure* is refused as rate-limited, for a
//!   time that doubles with each refusal (1 s up to 5 min) and is answered only after a delay
//!   (up to 2 s). So guessing slows down and stops. A handshake whose credential is valid
//!   is never refused by the limiter: behind a load balancer every client shares one address,
//!   and a stranger's typos must not lock the others out.
//! * **Pending handshakes**: the number of sockets one address may hold before their
//!   handshake completes is capped; excess sockets get HTTP 503 with `Retry-After`, and the
//!   refusals are logged as a periodic summary, not one line each.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use argent_proto::errors::RpcError;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// The first refusal's wait; each further one doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest a refused failure's answer is held back.
pub const MAX_TARPIT: Duration = Duration::from_secs(2);
/// Above this many tracked keys, expired ones are dropped on the next failure.
const PRUNE_ABOVE: usize = 10_000;
/// How often refused sockets are summarized in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Who a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Claimant {
    Address(IpAddr),
    /// The device id a `connect` presented.
    Device(String),
}

impl Claimant {
    fn describe(&self) -> &'static str {
        match self {
            Claimant::Address(_) => "this address",
            Claimant::Device(_) => "this device",
        }
    }
}

#[derive(Debug)]
struct Failures {
    since: Instant,
    count: u32,
    /// Refusals since the budget ran out (the backoff's exponent).
    strikes: u32,
    refused_until: Option<Instant>,
}

impl Failures {
    fn fresh(now: Instant) -> Self {
        Failures {
            since: now,
            count: 0,
            strikes: 0,
            refused_until: None,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= WINDOW
            && self.refused_until.is_none_or(|until| now >= until)
    }
}

/// What the limiter decided about a failed authentication.
pub struct Refusal {
    /// The error to answer instead of the failure's own.
    pub error: RpcError,
    /// How long to hold the answer back.
    pub tarpit: Duration,
}

pub struct AuthLimiter {
    max_failures: u32,
    max_pending: u32,
    failures: Mutex<HashMap<Claimant, Failures>>,
    pending: Arc<Mutex<HashMap<IpAddr, u32>>>,
    refused_sockets: Mutex<RefusedSockets>,
}

/// Sockets refused for too many pending handshakes since the last summary.
struct RefusedSockets {
    count: u64,
    addresses: std::collections::HashSet<IpAddr>,
    since: Instant,
}

/// Holds one pre-handshake slot of an address; released on drop.
pub struct PendingSlot {
    ip: IpAddr,
    pending: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut pending = self.pending.lock();
        if let Some(n) = pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

impl AuthLimiter {
    /// `max_failures` failed handshakes per address (and per device) per minute before
    /// further failures are refused (0: no limit); `max_pending` sockets per address still
    /// in their handshake.
    pub fn new(max_failures: u32, max_pending: u32) -> Self {
        AuthLimiter {
            max_failures,
            max_pending,
            failures: Mutex::new(HashMap::new()),
            pending: Arc::new(Mutex::new(HashMap::new())),
            refused_sockets: Mutex::new(RefusedSockets {
                count: 0,
                addresses: Default::default(),
                since: Instant::now(),
            }),
        }
    }

    /// A pre-handshake slot for `ip`, or `None` when it holds too many already (counted
    /// for the log's summary).
    pub fn pending_slot(&self, ip: IpAddr) -> Option<PendingSlot> {
        let mut pending = self.pending.lock();
        let n = pending.entry(ip).or_insert(0);
        if *n >= self.max_pending {
            drop(pending);
            self.count_refused_socket(ip);
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            ip,
            pending: self.pending.clone(),
        })
    }

    fn count_refused_socket(&self, ip: IpAddr) {
        let mut refused = self.refused_sockets.lock();
        refused.count += 1;
        if refused.addresses.len() < 1000 {
            refused.addresses.insert(ip);
        }
        if refused.since.elapsed() >= SUMMARY_EVERY {
            tracing::warn!(
                refused = refused.count,
                addresses = refused.addresses.len(),
                seconds = refused.since.elapsed().as_secs(),
                "sockets refused (HTTP 503): too many pending handshakes from their address"
            );
            refused.count = 0;
            refused.addresses.clear();
            refused.since = Instant::now();
        }
    }

    /// Counts a failed authentication against each claimant. `None`: answer the failure as
    /// it is. `Some`: the budget of one of them is spent; answer the refusal instead.
    pub fn record_failure(&self, claimants: &[Claimant]) -> Option<Refusal> {
        if self.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, f| !f.expired(now));
        }
        let mut worst: Option<(Duration, &Claimant)> = None;
        for claimant in claimants {
            let entry = failures
                .entry(claimant.clone())
                .or_insert_with(|| Failures::fresh(now));
            if entry.expired(now) {
                *entry = Failures::fresh(now);
            }
            entry.count += 1;
            let refused = entry.refused_until.is_some_and(|until| now < until);
            if entry.count <= self.max_failures && !refused {
                continue;
            }
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32 << entry.strikes.min(16))
                .min(MAX_BACKOFF);
            entry.strikes += 1;
            entry.refused_until = Some(now + backoff);
            if worst.is_none_or(|(longest, _)| backoff > longest) {
                worst = Some((backoff, claimant));
            }
        }
        let (backoff, claimant) = worst?;
        let retry_ms = backoff.as_millis() as u64;
        let error = RpcError::unauthorized(format!(
            "unauthorized: too many failed authentication attempts from {}; retry in {} s",
            claimant.describe(),
            retry_ms.div_ceil(1000)
        ))
        .with_detail("reason", "rate_limited")
        .retryable(Some(retry_ms));
        Some(Refusal {
            error,
            tarpit: backoff.min(MAX_TARPIT),
        })
    }

    /// A valid credential from a device clears that device's failures (not its address's:
    /// an address may be shared with whoever is guessing).
    pub fn record_success(&self, device: Option<&str>) {
        if let Some(device) = device {
            self.failures
                .lock()
                .remove(&Claimant::Device(device.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(ip: &str) -> Claimant {
        Claimant::Address(ip.parse().unwrap())
    }

    #[test]
    fn failures_past_the_budget_are_refused_for_longer_each_time() {
        let limiter = AuthLimiter::new(2, 10);
        let ip = address("10.0.0.1");
        assert!(limiter.record_failure(std::slice::from_ref(&ip)).is_none());
        assert!(limiter.record_failure(std::slice::from_ref(&ip)).is_none());
        let first = limiter
            .record_failure(std::slice::from_ref(&ip))
            .expect("over budget");
        assert!(first.error.message.starts_with(
            "unauthorized: too many failed authentication attempts from this address"
        ));
        assert_eq!(first.error.retryable, Some(true));
        let second = limiter.record_failure(std::slice::from_ref(&ip)).unwrap();
        assert!(second.error.retry_after_ms > first.error.retry_after_ms);
        assert!(second.tarpit <= MAX_TARPIT);
        assert!(
            limiter.record_failure(&[address("10.0.0.2")]).is_none(),
            "per address"
        );
    }

    #[test]
    fn a_device_is_limited_across_addresses_and_cleared_by_a_success() {
        let limiter = AuthLimiter::new(1, 10);
        let device = Claimant::Device("dev-1".into());
        assert!(limiter
            .record_failure(&[address("10.0.0.1"), device.clone()])
            .is_none());
        let refused = limiter
            .record_failure(&[address("10.0.0.2"), device.clone()])
            .expect("the device's budget is spent");
        assert!(refused.error.message.contains("from this device"));
        limiter.record_success(Some("dev-1"));
        assert!(limiter
            .record_failure(&[address("10.0.0.3"), device])
            .is_none());
    }

    #[test]
    fn pending_slots_are_capped_and_released() {
        let limiter = AuthLimiter::new(0, 2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limiter.pending_slot(ip).unwrap();
        let _b = limiter.pending_slot(ip).unwrap();
        assert!(limiter.pending_slot(ip).is_none());
        drop(a);
        assert!(limiter.pending_slot(ip).is_some());
    }
}
