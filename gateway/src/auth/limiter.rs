//! Handshake hardening per peer address [EXT, invisible to well-behaved clients]:
//! failed authentications are counted per IP in a sliding minute, and past the limit every
//! handshake from that IP is refused with a clear, retryable error until the minute is over;
//! and the number of sockets one IP may hold before their handshake completes is capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use argent_proto::errors::RpcError;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked addresses, expired ones are dropped on the next failure.
const PRUNE_ABOVE: usize = 10_000;

struct Failures {
    since: Instant,
    count: u32,
}

pub struct AuthLimiter {
    max_failures: u32,
    max_pending: u32,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    pending: Arc<Mutex<HashMap<IpAddr, u32>>>,
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
    /// `max_failures` failed handshakes per address per minute (0: no limit);
    /// `max_pending` sockets per address still in their handshake.
    pub fn new(max_failures: u32, max_pending: u32) -> Self {
        AuthLimiter {
            max_failures,
            max_pending,
            failures: Mutex::new(HashMap::new()),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A pre-handshake slot for `ip`, or `None` when it holds too many already.
    pub fn pending_slot(&self, ip: IpAddr) -> Option<PendingSlot> {
        let mut pending = self.pending.lock();
        let n = pending.entry(ip).or_insert(0);
        if *n >= self.max_pending {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            ip,
            pending: self.pending.clone(),
        })
    }

    /// `Err` with the refusal while `ip` is over its failure budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), RpcError> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let failures = self.failures.lock();
        match failures.get(&ip) {
            Some(f) if f.count >= self.max_failures && f.since.elapsed() < WINDOW => {
                let retry_ms = (WINDOW - f.since.elapsed()).as_millis() as u64;
                Err(RpcError::unauthorized(format!(
                    "unauthorized: too many failed handshakes from this address; retry in {} s",
                    retry_ms.div_ceil(1000)
                ))
                .with_detail("reason", "rate_limited")
                .retryable(Some(retry_ms)))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock();
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, f| f.since.elapsed() < WINDOW);
        }
        let entry = failures.entry(ip).or_insert(Failures {
            since: Instant::now(),
            count: 0,
        });
        if entry.since.elapsed() >= WINDOW {
            *entry = Failures {
                since: Instant::now(),
                count: 0,
            };
        }
        entry.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_budget() {
        let limiter = AuthLimiter::new(2, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check(ip).is_ok());
        limiter.record_failure(ip);
        limiter.record_failure(ip);
        let refused = limiter.check(ip).unwrap_err();
        assert!(refused
            .message
            .starts_with("unauthorized: too many failed handshakes"));
        assert_eq!(refused.retryable, Some(true));
        assert!(limiter.check(other).is_ok(), "per address");
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
