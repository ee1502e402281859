//! Runtime stability figures for `diagnostics.stability` (PROTOCOL-v4.md §9): how late the
//! event loop wakes up, and a bounded log of stability events (event-loop stalls, events
//! lost before delivery, slow consumers closed).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Events kept; older ones count as `dropped`.
pub const CAPACITY: usize = 500;
/// How often the event loop is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// A wake-up this much later than asked is recorded as a stall.
const STALL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Log {
    events: VecDeque<Value>,
    last_seq: u64,
    dropped: u64,
    last_lag_ms: f64,
    max_lag_ms: f64,
    probes: u64,
    slow_consumers_seen: u64,
}

pub struct Stability {
    log: Mutex<Log>,
    /// Queue figures and slow-consumer closes come from the gateway's metrics.
    metrics: Arc<Metrics>,
}

impl Stability {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Stability {
            log: Mutex::default(),
            metrics,
        }
    }

    /// Appends a stability event of `kind` with `fields`.
    pub fn record(&self, kind: &str, fields: Value) {
        let mut log = self.log.lock();
        log.last_seq += 1;
        let mut event = json!({"seq": log.last_seq, "ts": argent_proto::now_ms(), "type": kind});
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        if log.events.len() == CAPACITY {
            log.events.pop_front();
            log.dropped += 1;
        }
        log.events.push_back(event);
    }

    fn probe(&self, lag: Duration) {
        let lag_ms = lag.as_secs_f64() * 1000.0;
        {
            let mut log = self.log.lock();
            log.probes += 1;
            log.last_lag_ms = lag_ms;
            log.max_lag_ms = log.max_lag_ms.max(lag_ms);
        }
        if lag >= STALL {
            self.record("event-loop.stall", json!({"lagMs": lag_ms.round()}));
        }
    }

    /// The `diagnostics.stability` answer: events after `since_seq` (of `kind` when given),
    /// the newest `limit` of them, and the live figures (`connections` held now).
    pub fn report(
        &self,
        connections: usize,
        limit: usize,
        kind: Option<&str>,
        since_seq: u64,
    ) -> Value {
        let log = self.log.lock();
        let matching: Vec<&Value> = log
            .events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap_or(0) > since_seq)
            .filter(|e| kind.is_none_or(|k| e["type"] == k))
            .collect();
        let events: Vec<&Value> = matching[matching.len().saturating_sub(limit)..].to_vec();
        let metrics = &self.metrics;
        let mut report = json!({
            "generatedAt": argent_proto::now_ms(),
            "capacity": CAPACITY,
            "count": log.events.len(),
            "dropped": log.dropped,
            "lastSeq": log.last_seq,
            "events": events,
            "eventLoop": {
                "probeIntervalMs": PROBE_EVERY.as_millis() as u64,
                "lagMs": log.last_lag_ms,
                "maxLagMs": log.max_lag_ms,
                "probes": log.probes,
            },
            "queues": {
                "connections": connections,
                "outboundQueueBytes": metrics.outbound_queue_bytes.get(),
                "eventsDelivered": metrics.events_delivered.get(),
                "eventsDropped": metrics.events_dropped.get(),
                "slowConsumersClosed": metrics.slow_consumers.get(),
            },
        });
        // Absent, never `null`, while the log is empty.
        if let Some(first) = log.events.front() {
            report["firstSeq"] = first["seq"].clone();
        }
        report
    }
}

/// Probes the event loop for as long as the gateway runs; also turns new slow-consumer
/// closes into stability events.
pub async fn monitor(stability: Arc<Stability>) {
    let mut expected = Instant::now() + PROBE_EVERY;
    loop {
        tokio::time::sleep_until(expected).await;
        let now = Instant::now();
        stability.probe(now.saturating_duration_since(expected));
        expected = now + PROBE_EVERY;
        let closed = stability.metrics.slow_consumers.get();
        let new = {
            let mut log = stability.log.lock();
            let new = closed.saturating_sub(log.slow_consumers_seen);
            log.slow_consumers_seen = closed;
            new
        };
        if new > 0 {
            stability.record("slow-consumer.closed", json!({"connections": new}));
        }
    }
}
