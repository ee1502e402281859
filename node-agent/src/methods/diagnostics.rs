//! `diagnostics.lanes` (protocol 4): the cluster's run queues, for the dashboard's Debug
//! page. Each session runs its turns one at a time behind a lease (`runtime::runs`), so
//! every session with a run active or queued is one lane of concurrency 1, named
//! `session:<key>` as upstream names its per-session lanes; `dynamic` sums them.

use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use crate::runtime::runs::Lease;
use crate::runtime::Runtime;

fn lane(lease: &Lease) -> Value {
    let active = u64::from(lease.active.is_some());
    let queued = lease.queue.len();
    json!({
        "lane": format!("session:{}", lease.session_key),
        "queuedCount": queued,
        "activeCount": active,
        "maxConcurrent": 1,
        "draining": false,
        "generation": 0,
        // Queued runs wait for the active one: the lane's own limit holds them.
        "blockedBy": if queued > 0 && active > 0 { json!("lane") } else { Value::Null },
        "nodeId": lease.node_id,
    })
}

pub async fn lanes(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    // Upstream ignores params; so do we, beyond their being an object.
    Params::new("diagnostics.lanes", params)?;
    let leases: Vec<Lease> = rt
        .live_leases()
        .into_iter()
        .filter(|l| l.active.is_some() || !l.queue.is_empty())
        .collect();
    let active: u64 = leases.iter().map(|l| u64::from(l.active.is_some())).sum();
    let queued: usize = leases.iter().map(|l| l.queue.len()).sum();
    let queued_lanes = leases.iter().filter(|l| !l.queue.is_empty()).count();
    Ok(json!({
        "ts": argent_proto::now_ms(),
        "lanes": leases.iter().map(lane).collect::<Vec<_>>(),
        "dynamic": {
            "laneCount": leases.len(), "activeCount": active,
            "queuedCount": queued, "queuedLaneCount": queued_lanes,
        },
    }))
}
