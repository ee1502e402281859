//! `channels.status` (PROTOCOL.md §5.9) from the receivers' snapshots in the shared state:
//! any node answers the same, whichever node runs the account. `running` means the
//! account's lease is beaten and its receiving loop showed life recently — a loop that
//! stalled or died reads `running: false` however the platform answers a probe.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Map, Value};

use super::config::{self, Account, ChannelId};
use super::platform::{platform, ChannelError, Receiving};
use super::store::{self, AccountRecord, BUCKET};
use super::Channels;

/// A receiving loop silent for this long is not running (a Telegram poll is held 25 s).
const LOOP_SILENT_MS: u64 = 60_000;

/// The default of `timeoutMs` for probes.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `running` as the snapshot shows it.
pub fn running(record: &AccountRecord, now_ms: u64) -> bool {
    record.lease.as_ref().is_some_and(|l| !l.is_stale(now_ms))
        && record
            .status
            .loop_beat_at
            .is_some_and(|at| now_ms.saturating_sub(at) <= LOOP_SILENT_MS)
}

async fn snapshot(
    c: &Channels,
    account: &Account,
    probe: Option<Duration>,
) -> Result<Value, ChannelError> {
    let record: AccountRecord = match c
        .rt
        .state
        .get(BUCKET, &store::account_key(account.channel, &account.id))
        .await?
    {
        Some(entry) => serde_json::from_slice(&entry.value).unwrap_or_default(),
        None => AccountRecord::default(),
    };
    let p = platform(account.channel);
    let missing = p.missing(account);
    let now = argent_proto::now_ms();
    let s = &record.status;
    let mut out = Map::new();
    out.insert("accountId".into(), json!(account.id));
    if let Some(name) = account.name() {
        out.insert("name".into(), json!(name));
    }
    out.insert("enabled".into(), json!(account.enabled()));
    out.insert("configured".into(), json!(missing.is_empty()));
    if !missing.is_empty() {
        out.insert("missing".into(), json!(missing));
    }
    out.insert("running".into(), json!(running(&record, now)));
    let fields = [
        ("connected", json!(s.connected)),
        ("lastConnectedAt", json!(s.last_connected_at)),
        ("lastError", json!(s.last_error)),
        ("lastErrorAt", json!(s.last_error_at)),
        ("lastStartAt", json!(s.last_start_at)),
        ("lastStopAt", json!(s.last_stop_at)),
        ("lastInboundAt", json!(s.last_inbound_at)),
        ("lastOutboundAt", json!(s.last_outbound_at)),
        ("lastLoopAt", json!(s.loop_beat_at)),
        ("bot", json!(s.bot)),
    ];
    for (name, value) in fields {
        if !value.is_null() {
            out.insert(name.into(), value);
        }
    }
    out.insert("reconnectAttempts".into(), json!(s.reconnect_attempts));
    out.insert("dmPolicy".into(), json!(account.dm_policy().as_str()));
    out.insert("allowFrom".into(), json!(account.allow_from()));
    if let Some(lease) = record.lease.as_ref().filter(|l| !l.is_stale(now)) {
        out.insert(
            "receiver".into(),
            json!({"nodeId": lease.node, "epoch": lease.epoch}),
        );
    }
    if record.logged_out.is_some() {
        out.insert("loggedOut".into(), json!(true));
    }
    match p.receiving(account) {
        Receiving::No(why) => {
            out.insert("inbound".into(), json!(false));
            out.insert("inboundUnavailable".into(), json!(why));
        }
        Receiving::Webhook => {
            out.insert(
                "webhookPath".into(),
                json!(format!(
                    "/channels/{}/{}/webhook",
                    account.channel.as_str(),
                    account.id
                )),
            );
        }
        Receiving::Poll => {}
    }
    out.extend(p.status_fields(account));
    if let Some(timeout) = probe.filter(|_| missing.is_empty()) {
        let probed = p.probe(c.api(account), timeout).await;
        out.insert("lastProbeAt".into(), json!(argent_proto::now_ms()));
        out.insert(
            "probe".into(),
            match probed {
                Ok(result) => result,
                Err(err) => json!({"ok": false, "error": err.to_string()}),
            },
        );
    }
    Ok(Value::Object(out))
}

/// The whole answer; `probe` asks every configured account's platform (concurrently,
/// each within `timeout`).
pub async fn status(c: &Channels, probe: Option<Duration>) -> Result<Value, ChannelError> {
    let config = c.rt.config.current().await?;
    let mut all = config::accounts(&config);
    let mut accounts_out = Map::new();
    let mut summaries = Map::new();
    let mut defaults = Map::new();
    for channel in ChannelId::ALL {
        let list = all.remove(&channel).unwrap_or_default();
        let snapshots = join_all(list.iter().map(|a| snapshot(c, a, probe))).await;
        let snapshots = snapshots.into_iter().collect::<Result<Vec<_>, _>>()?;
        let default = config::default_account_id(&config, channel, &list)
            .unwrap_or_else(|| config::DEFAULT_ACCOUNT.to_string());
        let first = snapshots
            .iter()
            .find(|s| s["accountId"] == json!(default))
            .cloned();
        let mut summary = json!({
            "configured": snapshots.iter().any(|s| s["configured"] == json!(true)),
            "running": snapshots.iter().any(|s| s["running"] == json!(true)),
            "accounts": snapshots.len(),
        });
        if let Some(Value::Object(first)) = first {
            for key in [
                "lastError",
                "lastStartAt",
                "lastInboundAt",
                "lastOutboundAt",
                "mode",
                "tokenSource",
                "probe",
                "lastProbeAt",
                "bot",
            ] {
                if let Some(v) = first.get(key) {
                    summary[key] = v.clone();
                }
            }
        }
        let id = channel.as_str();
        summaries.insert(id.into(), summary);
        accounts_out.insert(id.into(), Value::Array(snapshots));
        defaults.insert(id.into(), json!(default));
    }
    let ids: Vec<&str> = ChannelId::ALL.iter().map(|c| c.as_str()).collect();
    let labels: Map<String, Value> = ChannelId::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), json!(c.label())))
        .collect();
    let details: Map<String, Value> = ChannelId::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), json!(c.detail_label())))
        .collect();
    let meta: Vec<Value> = ChannelId::ALL
        .iter()
        .map(|c| json!({"id": c.as_str(), "label": c.label(), "detailLabel": c.detail_label()}))
        .collect();
    Ok(json!({
        "ts": argent_proto::now_ms(),
        "channelOrder": ids,
        "channelLabels": labels,
        "channelDetailLabels": details,
        "channelMeta": meta,
        "channels": summaries,
        "channelAccounts": accounts_out,
        "channelDefaultAccountId": defaults,
    }))
}
