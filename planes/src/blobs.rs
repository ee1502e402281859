//! Payloads larger than one NATS message: kept in the JetStream object store (which splits
//! them into chunks) and referenced by name from the KV value, transcript entry or event
//! that would have carried them.
//!
//! NATS refuses a message over the servers' `max_payload` (1 MiB unless configured), while a
//! client may send 10 MiB frames: a workspace file, a chat attachment, the `chat` event
//! that carries it. Under the limit nothing changes (one message, as before); over it the
//! payload goes here first and the message carries only its name. So the cluster accepts
//! what the one-process default accepts, whatever `max_payload` the servers have.
//!
//! Two buckets: [`BLOBS`] for stored state and transcripts (kept until the value that
//! references it is replaced), and [`EVENT_BLOBS`] for events, which JetStream deletes by
//! itself after [`EVENT_BLOB_MAX_AGE`] (an event is delivered within seconds, or lost).

use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use argent_proto::limits::MAX_PAYLOAD;

use crate::state::StateError;

/// The object store bucket of large KV values and transcript entries.
pub const BLOBS: &str = "argent_blobs";
/// The object store bucket of large events.
pub const EVENT_BLOBS: &str = "argent_event_blobs";
/// How long a large event's payload stays readable.
pub const EVENT_BLOB_MAX_AGE: Duration = Duration::from_secs(600);
/// The largest payload stored at all: two client frames' worth (an entry may wrap a frame
/// in an envelope). Over it, `StateError::TooLarge` — the caller's to shrink.
pub const MAX_BLOB_BYTES: usize = 2 * MAX_PAYLOAD;
/// The NATS header naming a message's payload in [`EVENT_BLOBS`] or [`BLOBS`].
pub const HEADER_BLOB: &str = "Argent-Blob";
/// Writing or reading one blob gives up after this long (it takes several messages).
const BLOB_TIMEOUT: Duration = Duration::from_secs(30);
/// A KV value is a reference when it starts with these bytes (no JSON text can: it starts
/// with a NUL). A value that itself starts so is always stored as a blob, so a stored value
/// with this prefix is never anything but a reference.
const REFERENCE_MAGIC: &[u8] = b"\0argent-blob\0";

/// Room left in a NATS message for the subject, headers and JSON envelope around a value.
const HEADROOM: usize = 4 * 1024;

/// The largest payload that goes inline in one NATS message: the connected server's
/// `max_payload` less room for headers.
pub fn inline_limit(client: &async_nats::Client) -> usize {
    match client.server_info().max_payload {
        // Not connected yet: unknown, so inline (the client queues it as before).
        0 => usize::MAX,
        max_payload => max_payload.saturating_sub(HEADROOM),
    }
}

/// `Err(TooLarge)` for a payload over [`MAX_BLOB_BYTES`], before anything is sent.
pub fn check_size(size: usize) -> Result<(), StateError> {
    if size > MAX_BLOB_BYTES {
        return Err(StateError::TooLarge {
            size,
            limit: MAX_BLOB_BYTES,
        });
    }
    Ok(())
}

/// The KV value that stands for the blob `name`.
pub fn reference(name: &str) -> Bytes {
    let mut value = Vec::with_capacity(REFERENCE_MAGIC.len() + name.len());
    value.extend_from_slice(REFERENCE_MAGIC);
    value.extend_from_slice(name.as_bytes());
    Bytes::from(value)
}

/// The blob a KV value stands for, if it is a reference.
pub fn referenced(value: &[u8]) -> Option<&str> {
    value
        .strip_prefix(REFERENCE_MAGIC)
        .and_then(|name| std::str::from_utf8(name).ok())
}

/// Whether `value` must be stored as a blob rather than inline.
pub fn needs_blob(client: &async_nats::Client, value: &[u8]) -> bool {
    value.len() > inline_limit(client) || value.starts_with(REFERENCE_MAGIC)
}

/// A unique blob name under `prefix`: `<prefix>/<ms since the epoch>-<uuid>` (the time
/// lets [`Blobs::sweep`] spare young blobs without a clock type from the NATS client).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}/{}-{}",
        argent_proto::now_ms(),
        uuid::Uuid::new_v4().simple()
    )
}

/// When a blob named by [`unique_name`] was named.
fn named_at_ms(name: &str) -> Option<u64> {
    let last = name.rsplit('/').next()?;
    last.split('-').next()?.parse().ok()
}

/// One object store bucket, opened on first use (declared by `cluster::ensure_buckets`).
pub struct Blobs {
    js: jetstream::Context,
    bucket: &'static str,
    store: OnceCell<object_store::ObjectStore>,
}

impl Blobs {
    pub fn new(client: async_nats::Client, bucket: &'static str) -> Self {
        Blobs {
            js: jetstream::new(client),
            bucket,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&object_store::ObjectStore, StateError> {
        self.store
            .get_or_try_init(|| async {
                timed("open", self.js.get_object_store(self.bucket)).await
            })
            .await
    }

    /// Stores `bytes` as `name`.
    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        check_size(bytes.len())?;
        let store = self.store().await?;
        let mut reader = bytes;
        timed("write", store.put(name, &mut reader)).await?;
        Ok(())
    }

    /// The blob `name`; `None` when there is none (deleted after its value was replaced).
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, StateError> {
        let store = self.store().await?;
        let read = async {
            let mut object = match store.get(name).await {
                Ok(object) => object,
                Err(err) if err.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err.to_string()),
            };
            let mut bytes = Vec::with_capacity(object.info().size);
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|err| err.to_string())?;
            Ok(Some(Bytes::from(bytes)))
        };
        match tokio::time::timeout(BLOB_TIMEOUT, read).await {
            Ok(Ok(blob)) => Ok(blob),
            Ok(Err(err)) => Err(StateError::Unavailable(format!(
                "cannot read blob {name} of {}: {err}",
                self.bucket
            ))),
            Err(_) => Err(timeout_error("read", self.bucket)),
        }
    }

    /// Deletes the blob `name` (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<(), StateError> {
        let store = self.store().await?;
        match tokio::time::timeout(BLOB_TIMEOUT, store.delete(name)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) if err.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Ok(Err(err)) => Err(StateError::Unavailable(format!(
                "cannot delete blob {name} of {}: {err}",
                self.bucket
            ))),
            Err(_) => Err(timeout_error("delete", self.bucket)),
        }
    }

    /// Deletes, best effort, the blobs under `prefix` named before `named_before_ms` but
    /// `keep`: the values of one key that later writes superseded.
    pub async fn sweep(&self, prefix: &str, keep: Option<&str>, named_before_ms: u64) {
        let Ok(store) = self.store().await else {
            return;
        };
        let Ok(Ok(mut list)) = tokio::time::timeout(BLOB_TIMEOUT, store.list()).await else {
            return;
        };
        let mut stale = Vec::new();
        while let Ok(Some(Ok(info))) = tokio::time::timeout(BLOB_TIMEOUT, list.next()).await {
            let superseded = named_at_ms(&info.name).is_some_and(|at| at < named_before_ms);
            if info.name.starts_with(prefix)
                && Some(info.name.as_str()) != keep
                && superseded
                && !info.deleted
            {
                stale.push(info.name);
            }
        }
        for name in stale {
            if let Err(err) = self.delete(&name).await {
                tracing::debug!(%err, "superseded blob not deleted");
            }
        }
    }
}

fn timeout_error(what: &str, bucket: &str) -> StateError {
    StateError::Unavailable(format!("blob {what} in {bucket} timed out"))
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(BLOB_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(StateError::Unavailable(format!(
            "blob {what} failed: {err}"
        ))),
        Err(_) => Err(StateError::Unavailable(format!("blob {what} timed out"))),
    }
}

/// Declares the two object store buckets (idempotent; safe from every process at once).
pub async fn ensure_buckets(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    for (bucket, max_age) in [(BLOBS, Duration::ZERO), (EVENT_BLOBS, EVENT_BLOB_MAX_AGE)] {
        // The stream `create_object_store` would declare, declared idempotently.
        let config = jetstream::stream::Config {
            name: format!("OBJ_{bucket}"),
            subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
            max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            // Reads go through the stream's leader: a follower answering a direct get could
            // miss a blob whose write was just acknowledged, and "not found" means "replaced"
            // to the readers.
            allow_direct: false,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|err| format!("object store {bucket}: {err}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_json_is_never_one() {
        let value = reference("kv/argent_agents/main.SOUL.md/abc");
        assert_eq!(
            referenced(&value),
            Some("kv/argent_agents/main.SOUL.md/abc")
        );
        assert_eq!(referenced(br#"{"a":1}"#), None);
        assert_eq!(referenced(b""), None);
    }

    #[test]
    fn names_carry_their_time() {
        let name = unique_name("kv/argent_agents/main.SOUL.md");
        let at = named_at_ms(&name).unwrap();
        assert!(at.abs_diff(argent_proto::now_ms()) < 60_000);
        assert!(name.starts_with("kv/argent_agents/main.SOUL.md/"));
    }
}
