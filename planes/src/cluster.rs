//! Connecting to NATS and declaring the JetStream buckets the cluster uses.
//!
//! Buckets are created as their backing streams (`KV_<bucket>`) explicitly rather than with
//! `create_key_value`, so the same code works on NATS 2.9 (Debian) and ≥ 2.11.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argent_proto::subjects;
use async_nats::jetstream::{self, stream};

/// How a bucket is declared.
#[derive(Debug, Clone, Copy)]
pub struct BucketSpec {
    pub name: &'static str,
    /// Kept across restarts by the embedded store (cluster buckets are always on disk).
    pub durable: bool,
    /// Entries older than this are dropped by the server (zero: never).
    pub max_age: Duration,
}

/// Every bucket of the cluster.
pub const BUCKETS: &[BucketSpec] = &[
    BucketSpec {
        name: subjects::BUCKET_CONFIG,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_AUTH,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_AGENTS,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_RUNS,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_LEASES,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_SESSIONS,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_CRON,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_TASKS,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_KNOWLEDGE,
        durable: true,
        max_age: Duration::ZERO,
    },
    BucketSpec {
        name: subjects::BUCKET_CHANNELS,
        durable: true,
        max_age: Duration::ZERO,
    },
    // Messages age out after 8 days (platforms retry webhooks for up to 7): the age limit,
    // not a sweeper, collects ended records and the delete markers of removed ones.
    BucketSpec {
        name: subjects::BUCKET_CHANNEL_MESSAGES,
        durable: true,
        max_age: Duration::from_secs(8 * 24 * 3600),
    },
    // Pending exec approvals: short-lived; the age limit collects what a gateway that died
    // mid-wait left behind (requests wait one hour at most).
    BucketSpec {
        name: subjects::BUCKET_APPROVALS,
        durable: false,
        max_age: Duration::from_secs(7200),
    },
    // Liveness records are re-put every heartbeat; the age limit only collects records of
    // members that died without deregistering.
    BucketSpec {
        name: subjects::BUCKET_NODES,
        durable: false,
        max_age: Duration::from_secs(60),
    },
    BucketSpec {
        name: subjects::BUCKET_GATEWAYS,
        durable: false,
        max_age: Duration::from_secs(60),
    },
    // Gateways re-put their live records every few minutes; the age limit collects the
    // delete markers every disconnect leaves, and records of gateways that died.
    BucketSpec {
        name: subjects::BUCKET_PRESENCE,
        durable: false,
        max_age: Duration::from_secs(600),
    },
];

pub fn bucket_spec(name: &str) -> Option<&'static BucketSpec> {
    BUCKETS.iter().find(|b| b.name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot declare bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
}

/// Options for joining the cluster.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub url: String,
    /// Name shown in NATS monitoring (e.g. `argent-gateway gw-1`).
    pub name: String,
    /// JetStream replicas for buckets this process creates.
    pub replicas: usize,
}

/// A NATS connection and the count of messages it dropped for slow subscriptions.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    /// One per message the client dropped because a subscription's queue was full.
    pub dropped: Arc<AtomicU64>,
}

/// Connects to NATS. The client reconnects by itself forever; callers check
/// [`async_nats::Client::connection_state`] to fail fast while it is away.
pub async fn connect(options: &NatsOptions) -> Result<Nats, ClusterError> {
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let client = async_nats::ConnectOptions::new()
        .name(&options.name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(3)))
        .max_reconnects(None)
        .event_callback(move |event| {
            let counter = counter.clone();
            async move {
                if let async_nats::Event::SlowConsumer(_) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::info!(%event, "nats connection event");
                }
            }
        })
        .connect(&options.url)
        .await
        .map_err(|source| ClusterError::Connect {
            url: options.url.clone(),
            source,
        })?;
    Ok(Nats { client, dropped })
}

/// Declares every bucket of [`BUCKETS`] and the object store buckets of large payloads
/// ([`crate::blobs`]) (idempotent; safe from every process at once).
pub async fn ensure_buckets(js: &jetstream::Context, replicas: usize) -> Result<(), ClusterError> {
    for spec in BUCKETS {
        let config = stream::Config {
            name: format!("KV_{}", spec.name),
            subjects: vec![format!("$KV.{}.>", spec.name)],
            max_messages_per_subject: 1,
            max_age: spec.max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(60).min(if spec.max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                spec.max_age
            }),
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|err| ClusterError::Bucket {
                bucket: spec.name.to_string(),
                message: err.to_string(),
            })?;
    }
    crate::blobs::ensure_buckets(js, replicas)
        .await
        .map_err(|message| ClusterError::Bucket {
            bucket: "object store".to_string(),
            message,
        })
}
