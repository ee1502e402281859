//! Who is on the other end of a connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use argent_proto::catalog::Role;
use argent_proto::connect::ClientInfo;
use argent_proto::version::Protocol;

use crate::subscriptions::Subscriptions;

/// What the HTTP upgrade request said (PROTOCOL.md §2.6, §2.7).
#[derive(Debug, Clone, Default)]
pub struct Upgrade {
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `X-Forwarded-For`, `X-Real-IP` or `X-Forwarded-Host` was present.
    pub forwarded: bool,
    pub user_agent: Option<String>,
}

fn host_name(host_header: &str) -> String {
    let host = host_header.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(name, _)| name.to_string())
        .unwrap_or(host)
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

impl Upgrade {
    /// §2.6: loopback peer, local `Host`, no forwarding headers (no trusted proxies yet).
    pub fn is_local(&self, peer: &SocketAddr) -> bool {
        let loopback = match peer.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        let local_host = self.host.as_deref().map(host_name).is_some_and(|h| {
            h == "localhost" || h == "127.0.0.1" || h == "::1" || h.ends_with(".ts.net")
        });
        loopback && local_host && !self.forwarded
    }

    /// §2.7 browser origin check.
    pub fn origin_allowed(&self, allowed_origins: &[String]) -> bool {
        let Some(origin) = self
            .origin
            .as_deref()
            .map(|o| o.trim().to_ascii_lowercase())
        else {
            return false;
        };
        if origin.is_empty() || origin == "null" {
            return false;
        }
        if allowed_origins
            .iter()
            .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(&origin))
        {
            return true;
        }
        let origin_host = origin.split("://").nth(1).unwrap_or_default();
        let Some(host) = self.host.as_deref().map(|h| h.trim().to_ascii_lowercase()) else {
            return false;
        };
        if origin_host == host {
            return true;
        }
        is_loopback_name(&host_name(origin_host)) && is_loopback_name(&host_name(&host))
    }
}

/// An authenticated connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub conn_id: String,
    /// Negotiated at connect; every v3/v4 difference is keyed on it.
    pub protocol: Protocol,
    pub role: Role,
    /// Effective scopes (§2.4 step 5).
    pub scopes: Vec<String>,
    pub client: ClientInfo,
    pub caps: Vec<String>,
    pub commands: Vec<String>,
    /// Set once device identities are verified (pairing release).
    pub device_id: Option<String>,
    pub peer: SocketAddr,
    pub local: bool,
    /// v4 `sessions.subscribe` / `sessions.messages.subscribe` state (shared with the hub).
    pub subscriptions: Arc<Subscriptions>,
    /// Set when the connection ended, before its presence entry is removed: a request
    /// still running (a `system-event`) must not leave an entry behind. Shared by the
    /// session's clones (the tasks of requests answered later).
    pub closed: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(host: &str, origin: Option<&str>) -> Upgrade {
        Upgrade {
            host: Some(host.into()),
            origin: origin.map(str::to_string),
            forwarded: false,
            user_agent: None,
        }
    }

    #[test]
    fn local_needs_loopback_peer_and_host() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(upgrade("localhost:18789", None).is_local(&peer));
        assert!(upgrade("127.0.0.1:18789", None).is_local(&peer));
        assert!(!upgrade("gw.example.com", None).is_local(&peer));
        let remote: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert!(!upgrade("localhost:18789", None).is_local(&remote));
        let mut fwd = upgrade("localhost", None);
        fwd.forwarded = true;
        assert!(!fwd.is_local(&peer));
    }

    #[test]
    fn origin_rules() {
        assert!(upgrade("localhost:18789", Some("http://localhost:5173")).origin_allowed(&[]));
        assert!(upgrade("gw.lan:18789", Some("http://gw.lan:18789")).origin_allowed(&[]));
        assert!(!upgrade("gw.lan:18789", Some("http://evil.example")).origin_allowed(&[]));
        assert!(upgrade("gw.lan:18789", Some("http://dash.lan:3000"))
            .origin_allowed(&["http://dash.lan:3000".into()]));
        assert!(!upgrade("localhost", None).origin_allowed(&[]));
        assert!(!upgrade("localhost", Some("null")).origin_allowed(&[]));
    }
}
