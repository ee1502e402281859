//! The event plane: broadcast events between instances.
//!
//! An event is published once by whoever produced it and reaches every gateway (including
//! the publisher's own), which delivers it to the connections allowed to see it. The payload
//! is JSON text, serialized once by the producer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};

use argent_proto::subjects;

use crate::blobs::{self, Blobs};

/// One broadcast event.
#[derive(Debug, Clone)]
pub struct BusEvent {
    pub name: String,
    /// The event payload as JSON text.
    pub payload: Bytes,
    /// Overrides the catalog's drop-if-slow rule (a `chat` delta is droppable).
    pub droppable: Option<bool>,
    /// Trace context of the producer (`traceparent`, …).
    pub trace: HashMap<String, String>,
}

impl BusEvent {
    pub fn new(name: &str, payload: &serde_json::Value) -> Self {
        BusEvent {
            name: name.to_string(),
            payload: Bytes::from(serde_json::to_vec(payload).expect("JSON values serialize")),
            droppable: None,
            trace: crate::trace::current_context_headers()
                .into_iter()
                .collect(),
        }
    }
}

/// What a subscriber receives: an event, or word that `n` events were lost before it (the
/// gateway then advances every connection's `seq` so clients see the gap).
#[derive(Debug, Clone)]
pub enum BusMessage {
    Event(BusEvent),
    Lost(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// Capacity of a subscriber's queue; a gateway that falls this far behind loses events
/// (counted and logged) rather than blocking the producer.
pub const SUBSCRIBER_CAPACITY: usize = 8192;

#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;
    /// Events whose name starts with `prefix` (which ends with `.`, or is empty for all).
    async fn subscribe_prefix(
        &self,
        prefix: &'static str,
    ) -> Result<mpsc::Receiver<BusMessage>, BusError>;

    /// Every event.
    async fn subscribe(&self) -> Result<mpsc::Receiver<BusMessage>, BusError> {
        self.subscribe_prefix("").await
    }
}

/// In-process bus for the one-process default.
pub struct LocalBus {
    tx: broadcast::Sender<BusEvent>,
}

impl LocalBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        LocalBus { tx }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        // No subscriber yet is not an error: nobody is listening.
        let _ = self.tx.send(event);
        Ok(())
    }

    async fn subscribe_prefix(
        &self,
        prefix: &'static str,
    ) -> Result<mpsc::Receiver<BusMessage>, BusError> {
        let mut rx = self.tx.subscribe();
        let (tx, out) = mpsc::channel(SUBSCRIBER_CAPACITY);
        tokio::spawn(async move {
            loop {
                let message = match rx.recv().await {
                    Ok(event) if !event.name.starts_with(prefix) => continue,
                    Ok(event) => BusMessage::Event(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event subscriber lagged");
                        BusMessage::Lost(n)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}

const HEADER_DROPPABLE: &str = "Argent-Droppable";

/// Cluster bus on NATS core subjects `argent.evt.<event>`. An event over one NATS message
/// goes to the object store first (`crate::blobs`); its message carries the blob's name.
pub struct NatsBus {
    client: async_nats::Client,
    /// Messages the client dropped for slow subscriptions (counted as lost events).
    dropped: Arc<AtomicU64>,
    blobs: Arc<Blobs>,
}

impl NatsBus {
    pub fn new(nats: &crate::cluster::Nats) -> Self {
        NatsBus {
            client: nats.client.clone(),
            dropped: nats.dropped.clone(),
            blobs: Arc::new(Blobs::new(nats.client.clone(), blobs::EVENT_BLOBS)),
        }
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &event.trace {
            headers.insert(k.as_str(), v.as_str());
        }
        if let Some(droppable) = event.droppable {
            headers.insert(HEADER_DROPPABLE, if droppable { "1" } else { "0" });
        }
        let mut payload = event.payload;
        if payload.len() > blobs::inline_limit(&self.client) {
            let name = blobs::unique_name(&format!("evt/{}", event.name));
            self.blobs
                .put(&name, &payload)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            headers.insert(blobs::HEADER_BLOB, name.as_str());
            payload = Bytes::new();
        }
        self.client
            .publish_with_headers(subjects::event_subject(&event.name), headers, payload)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn subscribe_prefix(
        &self,
        prefix: &'static str,
    ) -> Result<mpsc::Receiver<BusMessage>, BusError> {
        let subject = if prefix.is_empty() {
            subjects::EVENT_WILDCARD.to_string()
        } else {
            format!("{}.{prefix}>", subjects::EVENT_PREFIX)
        };
        let mut sub = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let (tx, out) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let prefix = format!("{}.", subjects::EVENT_PREFIX);
        let dropped = self.dropped.clone();
        let blobs = self.blobs.clone();
        let mut reported = dropped.load(Ordering::Relaxed);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = dropped.load(Ordering::Relaxed);
                if now > reported {
                    if tx.send(BusMessage::Lost(now - reported)).await.is_err() {
                        return;
                    }
                    reported = now;
                }
                let Some(name) = msg.subject.as_str().strip_prefix(&prefix) else {
                    continue;
                };
                let mut trace = HashMap::new();
                let mut droppable = None;
                let mut blob = None;
                if let Some(headers) = &msg.headers {
                    for (k, values) in headers.iter() {
                        let Some(v) = values.first() else { continue };
                        let k: &str = k.as_ref();
                        if k == HEADER_DROPPABLE {
                            droppable = Some(v.as_str() == "1");
                        } else if k == blobs::HEADER_BLOB {
                            blob = Some(v.to_string());
                        } else {
                            trace.insert(k.to_string(), v.to_string());
                        }
                    }
                }
                let payload = match blob {
                    None => msg.payload,
                    // Read before the events after it are delivered: order is kept.
                    Some(blob) => match blobs.get(&blob).await {
                        Ok(Some(payload)) => payload,
                        outcome => {
                            tracing::warn!(
                                event = name,
                                ?outcome,
                                "large event not readable; counted as lost"
                            );
                            if tx.send(BusMessage::Lost(1)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    },
                };
                let event = BusEvent {
                    name: name.to_string(),
                    payload,
                    droppable,
                    trace,
                };
                if tx.send(BusMessage::Event(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}
