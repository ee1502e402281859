//! The gateway's live connections and event delivery to them (PROTOCOL.md §3.5, §3.6).
//!
//! An event arrives encoded once ([`EncodedEvent`]); delivering it pushes the same bytes to
//! every connection allowed to see it. Pushing never waits: each connection's bounded
//! [`Outbox`] decides to queue, skip or close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use argent_proto::catalog::{
    Audience, Role, SCOPE_ADMIN, SCOPE_APPROVALS, SCOPE_PAIRING, SCOPE_WRITE,
};
use argent_proto::frames::EncodedEvent;
use argent_proto::version::Protocol;

use crate::chat_stream::V4Chat;
use crate::metrics::Metrics;
use crate::subscriptions::Subscriptions;
use crate::ws::outbox::{Outbox, Pushed};

/// What the fan-out needs to know about a connection.
pub struct ConnHandle {
    pub conn_id: String,
    pub role: Role,
    pub protocol: Protocol,
    subscriptions: Arc<Subscriptions>,
    /// The proven device behind the connection, if any (revocation closes it).
    pub device_id: Option<String>,
    admin: bool,
    approvals: bool,
    pairing: bool,
    write: bool,
    pub outbox: Arc<Outbox>,
}

impl ConnHandle {
    pub fn new(
        conn_id: String,
        role: Role,
        protocol: Protocol,
        subscriptions: Arc<Subscriptions>,
        scopes: &[String],
        device_id: Option<String>,
        outbox: Arc<Outbox>,
    ) -> Self {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        ConnHandle {
            conn_id,
            role,
            protocol,
            subscriptions,
            device_id,
            admin: has(SCOPE_ADMIN),
            approvals: has(SCOPE_APPROVALS),
            pairing: has(SCOPE_PAIRING),
            write: has(SCOPE_WRITE),
            outbox,
        }
    }

    /// §3.6 for operators and devices; nodes get only `tick`/`shutdown` by broadcast (§3.5).
    fn may_see(&self, event: &EncodedEvent) -> bool {
        if self.role == Role::Node {
            return event.to_nodes;
        }
        match event.audience {
            Audience::Everyone => true,
            Audience::Approvals => self.admin || self.approvals,
            Audience::Pairing => self.admin || self.pairing,
            Audience::Writers => self.admin || self.write,
            Audience::Targeted | Audience::Subscribers => false,
        }
    }
}

/// Set once the gateway shuts down: connections that register afterwards (their
/// handshake was in flight) are told and closed at once.
struct Closing {
    event: Arc<EncodedEvent>,
    code: u16,
    reason: String,
}

#[derive(Default)]
struct Conns {
    by_key: HashMap<u64, Arc<ConnHandle>>,
    closing: Option<Closing>,
}

pub struct Hub {
    conns: RwLock<Conns>,
    next_key: AtomicU64,
    /// Protocol-4 connections here: without any, the v4-only work on events is skipped.
    v4_conns: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            conns: RwLock::new(Conns::default()),
            next_key: AtomicU64::new(1),
            v4_conns: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Adds an authenticated connection; the key removes it again.
    pub fn register(&self, handle: Arc<ConnHandle>) -> u64 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns.write();
        if let Some(closing) = &conns.closing {
            Self::close_one(&handle, closing);
        }
        if handle.protocol == Protocol::V4 {
            self.v4_conns.fetch_add(1, Ordering::Relaxed);
        }
        conns.by_key.insert(key, handle);
        key
    }

    pub fn unregister(&self, key: u64) {
        let removed = self.conns.write().by_key.remove(&key);
        if removed.is_some_and(|h| h.protocol == Protocol::V4) {
            self.v4_conns.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether any protocol-4 connection is here (they alone get `deltaText` and
    /// subscription events).
    pub fn has_v4_connections(&self) -> bool {
        self.v4_conns.load(Ordering::Relaxed) > 0
    }

    pub fn len(&self) -> usize {
        self.conns.read().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Broadcasts an event to every connection allowed to see it; returns how many got it.
    pub fn deliver(&self, event: &Arc<EncodedEvent>) -> usize {
        self.deliver_chat(event, None)
    }

    /// Broadcasts an event; v4 connections get `v4`'s variant of a `chat` event when given.
    pub fn deliver_chat(&self, event: &Arc<EncodedEvent>, v4: Option<&V4Chat>) -> usize {
        let conns = self.conns.read();
        let mut delivered = 0;
        for conn in conns.by_key.values() {
            if !conn.may_see(event) {
                continue;
            }
            let pushed = match v4 {
                Some(V4Chat::Delta(delta)) if conn.protocol.chat_delta_text() => {
                    conn.outbox.push_v4_delta(delta)
                }
                Some(V4Chat::End(run_id)) if conn.protocol.chat_delta_text() => {
                    conn.outbox.forget_run(run_id);
                    conn.outbox.push_event(event, true)
                }
                _ => conn.outbox.push_event(event, true),
            };
            if pushed == Pushed::Queued {
                delivered += 1;
            }
        }
        self.metrics.events_delivered.inc_by(delivered as u64);
        delivered
    }

    /// Sends a subscription event (`sessions.changed`, `session.message` of `session_key`)
    /// to the connections that subscribed to it; returns how many got it.
    pub fn deliver_subscribed(
        &self,
        event: &Arc<EncodedEvent>,
        session_key: Option<&str>,
    ) -> usize {
        let conns = self.conns.read();
        let mut delivered = 0;
        for conn in conns.by_key.values() {
            let wanted = conn.subscriptions.wants(&event.name, session_key);
            if wanted && conn.outbox.push_event(event, true) == Pushed::Queued {
                delivered += 1;
            }
        }
        self.metrics.events_delivered.inc_by(delivered as u64);
        delivered
    }

    /// Sends a targeted event (no `seq`) to one connection; `false` if it is not here.
    pub fn send_to(&self, conn_id: &str, event: &Arc<EncodedEvent>) -> bool {
        let conns = self.conns.read();
        match conns.by_key.values().find(|c| c.conn_id == conn_id) {
            Some(conn) => conn.outbox.push_event(event, false) == Pushed::Queued,
            None => false,
        }
    }

    /// Closes the connections of a device (all roles, or one), e.g. after its token was
    /// revoked or rotated away or its pairing rejected; returns how many.
    pub fn close_device(
        &self,
        device_id: &str,
        role: Option<&str>,
        code: u16,
        reason: &str,
    ) -> usize {
        let mut closed = 0;
        for conn in self.conns.read().by_key.values() {
            let same_device = conn.device_id.as_deref() == Some(device_id);
            let same_role = role.is_none_or(|r| r == conn.role.as_str());
            if same_device && same_role {
                conn.outbox.close(code, reason);
                closed += 1;
            }
        }
        closed
    }

    /// Closes device connections whose (device, role) has no live token any more; the
    /// backstop for a revocation whose control message this gateway missed.
    pub fn close_revoked(&self, live_roles: &HashMap<String, Vec<String>>) -> usize {
        let mut closed = 0;
        for conn in self.conns.read().by_key.values() {
            let Some(device_id) = &conn.device_id else {
                continue;
            };
            let live = live_roles
                .get(device_id)
                .is_some_and(|roles| roles.iter().any(|r| r == conn.role.as_str()));
            if !live {
                conn.outbox.close(4001, "device removed");
                closed += 1;
            }
        }
        closed
    }

    /// Events were lost before reaching this gateway: every connection's `seq` jumps by
    /// `n`, so each client sees the gap at its next event (§1.5).
    pub fn skip_seq(&self, n: u64) {
        for conn in self.conns.read().by_key.values() {
            conn.outbox.skip_seq(n);
        }
    }

    fn close_one(conn: &ConnHandle, closing: &Closing) {
        if conn.may_see(&closing.event) {
            conn.outbox.push_event(&closing.event, true);
        }
        conn.outbox.close(closing.code, &closing.reason);
    }

    /// Shutdown: sends `event` to every connection, now and any that registers later, and
    /// closes each after what is queued for it.
    pub fn shut_down(&self, event: Arc<EncodedEvent>, code: u16, reason: &str) {
        let mut conns = self.conns.write();
        let closing = Closing {
            event,
            code,
            reason: reason.to_string(),
        };
        for conn in conns.by_key.values() {
            Self::close_one(conn, &closing);
        }
        conns.closing = Some(closing);
    }
}
