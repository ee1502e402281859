//! Where a client really is: the TCP peer, or, when the peer is a trusted proxy
//! (`gateway.trustedProxies` in the config: addresses or CIDR ranges), the address the proxy
//! forwarded (`Forwarded: for=`, else `X-Forwarded-For`, else `X-Real-IP`). The forwarded
//! chain is read from the right, skipping trusted hops, so a client cannot pose as someone
//! else by sending its own header through the proxy. Headers from an untrusted peer are
//! never believed.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// The forwarding headers of an upgrade request.
#[derive(Debug, Clone, Default)]
pub struct ForwardingHeaders {
    pub forwarded: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub x_real_ip: Option<String>,
}

impl ForwardingHeaders {
    pub fn any(&self) -> bool {
        self.forwarded.is_some() || self.x_forwarded_for.is_some() || self.x_real_ip.is_some()
    }

    /// The hops, client first, as the proxies wrote them.
    fn chain(&self) -> Vec<String> {
        if let Some(forwarded) = &self.forwarded {
            // RFC 7239: `for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`.
            return forwarded
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| value.trim().trim_matches('"').to_string())
                    })
                })
                .collect();
        }
        if let Some(list) = &self.x_forwarded_for {
            return list.split(',').map(|hop| hop.trim().to_string()).collect();
        }
        self.x_real_ip
            .iter()
            .map(|ip| ip.trim().to_string())
            .collect()
    }
}

/// An address as a proxy writes it: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

/// `gateway.trustedProxies`, parsed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The ranges in `gateway.trustedProxies`, and what could not be read.
    pub fn from_config(config: &Value) -> (Self, Vec<String>) {
        let mut ranges = Vec::new();
        let mut problems = Vec::new();
        let entries = config["gateway"]["trustedProxies"].as_array();
        for entry in entries.into_iter().flatten() {
            let text = entry.as_str().unwrap_or_default().trim();
            let range = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
            match range {
                Some(range) => ranges.push(range),
                None => problems.push(format!(
                    "gateway.trustedProxies: {entry} is not an address or CIDR range"
                )),
            }
        }
        (TrustedProxies(ranges), problems)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|range| range.contains(&ip))
    }

    /// The client's address behind `peer`: the rightmost forwarded hop that is not a
    /// trusted proxy; `peer` itself when it is not trusted or forwarded nothing readable.
    pub fn client(&self, peer: IpAddr, headers: &ForwardingHeaders) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<Option<IpAddr>> = headers.chain().iter().map(|h| parse_hop(h)).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                // An unreadable hop: nothing left of it can be believed.
                None => return client,
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.trusts(client) {
                        return client;
                    }
                }
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:10.0.0.1` matches `10.0.0.0/8`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let (trusted, problems) =
            TrustedProxies::from_config(&json!({"gateway": {"trustedProxies": list}}));
        assert!(problems.is_empty(), "{problems:?}");
        trusted
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn xff(list: &str) -> ForwardingHeaders {
        ForwardingHeaders {
            x_forwarded_for: Some(list.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("192.0.2.9"), &xff("203.0.113.5")),
            ip("192.0.2.9")
        );
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &xff("203.0.113.5")),
            ip("203.0.113.5")
        );
        assert_eq!(
            trusted.client(ip("::ffff:10.1.2.3"), &xff("203.0.113.5")),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn the_chain_is_read_from_the_right_past_trusted_hops() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // The client claimed 1.1.1.1 itself; the first proxy saw 203.0.113.5.
        let headers = xff("1.1.1.1, 203.0.113.5, 192.168.1.1");
        assert_eq!(trusted.client(ip("10.0.0.2"), &headers), ip("203.0.113.5"));
        let forwarded = ForwardingHeaders {
            forwarded: Some(r#"for=1.1.1.1, for="[2001:db8::7]:4711";proto=https"#.into()),
            x_forwarded_for: Some("9.9.9.9".into()),
            ..Default::default()
        };
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &forwarded),
            ip("2001:db8::7")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &xff("garbage, 10.0.0.3")),
            ip("10.0.0.3"),
            "an unreadable hop ends the walk"
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &ForwardingHeaders::default()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn bad_entries_are_reported() {
        let (trusted, problems) = TrustedProxies::from_config(
            &json!({"gateway": {"trustedProxies": ["10.0.0.0/8", "nope", 5]}}),
        );
        assert!(trusted.trusts(ip("10.9.9.9")));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
