//! Choosing a node-agent for a call: rendezvous (highest-random-weight) hashing of the
//! routing key over the live nodes with the capability. One key keeps landing on the same
//! node while that node lives; when it dies only its keys move.

use argent_planes::members::NodeRecord;

/// FNV-1a 64 followed by a finalizer: stable across builds and hosts, so every gateway of a
/// rolling upgrade ranks nodes identically.
fn score(key: &str, node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(node_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finalizer spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The nodes with `capability`, best first for `key`.
pub fn rank<'a>(nodes: &'a [NodeRecord], capability: &str, key: &str) -> Vec<&'a NodeRecord> {
    let mut ranked: Vec<(u64, &NodeRecord)> = nodes
        .iter()
        .filter(|n| n.capabilities.iter().any(|c| c == capability))
        .map(|n| (score(key, &n.id), n))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    ranked.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, caps: &[&str]) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            address: format!("http://{id}"),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            version: "t".into(),
            host: "h".into(),
            in_flight: 0,
            paired: false,
            started_at_ms: 0,
            heartbeat_at_ms: 0,
        }
    }

    #[test]
    fn filters_by_capability_and_is_stable() {
        let nodes = vec![
            node("a", &["agents"]),
            node("b", &["agents"]),
            node("c", &["cron"]),
        ];
        let first = rank(&nodes, "agents", "agent:main:main");
        assert_eq!(first.len(), 2);
        assert_eq!(rank(&nodes, "agents", "agent:main:main")[0].id, first[0].id);
    }

    #[test]
    fn removing_a_node_only_moves_its_keys() {
        let nodes: Vec<NodeRecord> = (0..5)
            .map(|i| node(&format!("n{i}"), &["agents"]))
            .collect();
        let keys: Vec<String> = (0..500).map(|i| format!("session-{i}")).collect();
        let before: Vec<String> = keys
            .iter()
            .map(|k| rank(&nodes, "agents", k)[0].id.clone())
            .collect();
        let survivors: Vec<NodeRecord> = nodes.iter().filter(|n| n.id != "n2").cloned().collect();
        for (key, owner) in keys.iter().zip(&before) {
            let now = &rank(&survivors, "agents", key)[0].id;
            if owner != "n2" {
                assert_eq!(now, owner, "key {key} moved although its node lives");
            }
        }
        // Keys spread over all nodes.
        for n in &nodes {
            let share = before.iter().filter(|o| **o == n.id).count();
            assert!(share > 50, "{} got only {share} of 500 keys", n.id);
        }
    }
}
