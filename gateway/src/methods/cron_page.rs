//! `cron.list` for protocol-4 clients (PROTOCOL-v4.md §9): the node-agent's job list, cut
//! into a page with the pagination metadata the OpenClaw CLI requires.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

/// Upstream's page size bounds.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 200;

/// The params forwarded to the node-agent (it filters by `includeDisabled` only).
pub fn node_params(params: &Value) -> Value {
    let enabled = params.get("enabled").and_then(Value::as_str);
    let include_disabled = match enabled {
        Some("all" | "disabled") => true,
        Some(_) => false,
        None => params.get("includeDisabled").and_then(Value::as_bool) == Some(true),
    };
    json!({"includeDisabled": include_disabled})
}

/// Pages the node's `{jobs}` answer: `offset`, `limit` (1–200), `query` (name or id
/// contains, case-insensitive), `enabled:"disabled"` (only disabled jobs).
pub fn page(params: &Value, node_answer: &str) -> Result<Value, RpcError> {
    let p = Params::new("cron.list", params.clone())?;
    let offset = p.optional_u64("offset", 0)?.unwrap_or(0);
    let limit = p.optional_u64("limit", 1)?.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(p.invalid(format!("at /limit: must be <= {MAX_LIMIT}")));
    }
    let query = p.optional_str("query")?.map(|q| q.to_lowercase());
    let only_disabled = p.optional_str("enabled")?.as_deref() == Some("disabled");
    let answer: Value = serde_json::from_str(node_answer)
        .map_err(|e| RpcError::unavailable(format!("unreadable cron.list answer: {e}")))?;
    let all = answer["jobs"].as_array().cloned().unwrap_or_default();
    // The revision names this exact list, so a client can tell pages of one snapshot.
    let mut ids: Vec<&str> = all.iter().filter_map(|j| j["id"].as_str()).collect();
    ids.sort_unstable();
    let revision = hex::encode(&Sha256::digest(ids.join("\n").as_bytes())[..8]);
    let matches = |job: &Value| {
        let text = |k: &str| job[k].as_str().unwrap_or_default().to_lowercase();
        let wanted = query
            .as_deref()
            .is_none_or(|q| text("name").contains(q) || text("id").contains(q));
        wanted && (!only_disabled || job["enabled"] == false)
    };
    let mut jobs: Vec<Value> = all.into_iter().filter(matches).collect();
    // A stable order (the node's follows the next run time, which moves as jobs run), so
    // offsets mean the same thing from one page to the next.
    jobs.sort_by_key(|j| {
        (
            j["createdAtMs"].as_u64(),
            j["id"].as_str().map(str::to_string),
        )
    });
    let total = jobs.len() as u64;
    let page: Vec<Value> = jobs
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    let end = offset + page.len() as u64;
    let has_more = end < total;
    Ok(json!({
        "jobs": page,
        "snapshotRevision": revision,
        "total": total,
        "offset": offset,
        "limit": limit,
        "hasMore": has_more,
        "nextOffset": if has_more { json!(end) } else { Value::Null },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> String {
        let jobs: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("j{i}"), "name": format!("job {i}"), "enabled": i % 2 == 0}))
            .collect();
        json!({ "jobs": jobs }).to_string()
    }

    #[test]
    fn pages_carry_the_metadata() {
        let first = page(&json!({"limit": 2}), &answer(5)).unwrap();
        assert_eq!(first["jobs"].as_array().unwrap().len(), 2);
        assert_eq!(
            (first["total"].as_u64(), first["hasMore"].as_bool()),
            (Some(5), Some(true))
        );
        assert_eq!(first["nextOffset"], 2);
        assert!(!first["snapshotRevision"].as_str().unwrap().is_empty());
        let last = page(&json!({"limit": 2, "offset": 4}), &answer(5)).unwrap();
        assert_eq!(last["jobs"][0]["id"], "j4");
        assert_eq!(
            (last["hasMore"].as_bool(), last["nextOffset"].is_null()),
            (Some(false), true)
        );
        assert_eq!(first["snapshotRevision"], last["snapshotRevision"]);
        let found = page(&json!({"query": "JOB 3"}), &answer(5)).unwrap();
        assert_eq!(found["total"], 1);
        assert!(page(&json!({"limit": 500}), &answer(1)).is_err());
        assert_eq!(
            node_params(&json!({"enabled": "all"})),
            json!({"includeDisabled": true})
        );
    }
}
