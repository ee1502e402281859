//! What a protocol-4 connection subscribed to (PROTOCOL-v4.md §9): `sessions.changed` for the
//! session list, and `session.message` for chosen sessions. Checked by the hub for every
//! such event; bounded per connection.

use parking_lot::Mutex;

use argent_proto::errors::RpcError;

/// Sessions one connection may follow message by message.
pub const MAX_MESSAGE_SUBSCRIPTIONS: usize = 100;

#[derive(Debug, Default)]
pub struct Subscriptions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: bool,
    /// Canonical session keys.
    messages: Vec<String>,
}

impl Subscriptions {
    pub fn set_sessions(&self, on: bool) {
        self.inner.lock().sessions = on;
    }

    /// Follows the messages of `key` (canonical); refused past the bound.
    pub fn add_messages(&self, key: &str) -> Result<(), RpcError> {
        let mut inner = self.inner.lock();
        if inner.messages.iter().any(|k| k == key) {
            return Ok(());
        }
        if inner.messages.len() >= MAX_MESSAGE_SUBSCRIPTIONS {
            return Err(RpcError::bad_params(format!(
                "too many message subscriptions on this connection (at most {MAX_MESSAGE_SUBSCRIPTIONS}); unsubscribe first"
            )));
        }
        inner.messages.push(key.to_string());
        Ok(())
    }

    /// Stops following `key`; whether it was followed.
    pub fn remove_messages(&self, key: &str) -> bool {
        let mut inner = self.inner.lock();
        let before = inner.messages.len();
        inner.messages.retain(|k| k != key);
        inner.messages.len() != before
    }

    /// Whether the connection wants `event` (about `session_key`).
    pub fn wants(&self, event: &str, session_key: Option<&str>) -> bool {
        let inner = self.inner.lock();
        match event {
            "sessions.changed" => inner.sessions,
            "session.message" => session_key.is_some_and(|k| inner.messages.iter().any(|m| m == k)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_filter_events() {
        let subs = Subscriptions::default();
        assert!(!subs.wants("sessions.changed", None));
        subs.set_sessions(true);
        assert!(subs.wants("sessions.changed", Some("agent:main:x")));
        subs.add_messages("agent:main:main").unwrap();
        assert!(subs.wants("session.message", Some("agent:main:main")));
        assert!(!subs.wants("session.message", Some("agent:main:other")));
        assert!(subs.remove_messages("agent:main:main"));
        assert!(!subs.wants("session.message", Some("agent:main:main")));
        for i in 0..MAX_MESSAGE_SUBSCRIPTIONS {
            subs.add_messages(&format!("k{i}")).unwrap();
        }
        assert!(subs.add_messages("one-more").is_err());
    }
}
