//! Usage reports read from the transcripts (`runtime::accounting`):
//! * `usage.cost` — tokens and cost per day;
//! * `sessions.usage` (protocol 4) — per session and in aggregate (by model, provider,
//!   agent, channel, day, tool), in upstream's shape, for the dashboard's Usage page.
//!
//! Dates follow upstream's rules: `startDate`/`endDate` (together) or a `range`/`days`
//! ending today, default 30 days; days counted in UTC, in a given `utcOffset` or IANA
//! `timeZone` (`mode: "specific"`), or in the node's local time (`mode: "gateway"`).

use std::collections::BTreeMap;

use chrono::{Duration, FixedOffset, Local, NaiveDate, Offset, Utc};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::session_key::{agent_of, SessionKey};

use super::shared_config;
use crate::runtime::accounting::{Calendar, Counts, ModelId, ModelUse, Tally, Totals, Window};
use crate::runtime::sessions::SessionEntry;
use crate::runtime::Runtime;

const DEFAULT_DAYS: u64 = 30;
const MAX_DAYS: u64 = 366;
/// `range: "all"` starts here: before any transcript this system wrote.
const EPOCH_DAY: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
/// Sessions of which `sessions.usage` lists rows, unless `limit` says otherwise.
const DEFAULT_SESSION_ROWS: u64 = 50;
/// No creator is recorded for sessions here: they all count under upstream's unknown key.
const UNKNOWN_CREATOR: &str = r#"["unknown"]"#;

fn date_param(p: &Params, key: &str) -> Result<Option<NaiveDate>, RpcError> {
    p.optional_str(key)?
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|_| p.invalid(format!("at /{key}: must be a date YYYY-MM-DD")))
        })
        .transpose()
}

/// `UTC+H`, `UTC-HH:MM`…, within UTC-12:00..UTC+14:00.
fn utc_offset(text: &str) -> Option<FixedOffset> {
    let rest = text.trim().strip_prefix("UTC")?;
    let sign = match rest.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let (hours, minutes) = match rest[1..].split_once(':') {
        Some((h, m)) if m.len() == 2 => (h, m.parse::<i32>().ok().filter(|m| *m < 60)?),
        Some(_) => return None,
        None => (&rest[1..], 0),
    };
    if hours.is_empty() || hours.len() > 2 || !hours.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let total = sign * (hours.parse::<i32>().ok()? * 60 + minutes);
    if !(-720..=840).contains(&total) {
        return None;
    }
    FixedOffset::east_opt(total * 60)
}

/// The calendar days are counted in (`mode`, `utcOffset`, `timeZone`).
fn calendar(p: &Params) -> Result<Calendar, RpcError> {
    match p.optional_str("mode")?.as_deref() {
        Some("gateway") => Ok(Calendar::Offset(Local::now().offset().fix())),
        Some("specific") => {
            let offset = p.optional_str("utcOffset")?;
            let parsed_offset = offset.as_deref().and_then(utc_offset);
            if let Some(zone) = p.optional_str("timeZone")? {
                return match (zone.trim().parse::<chrono_tz::Tz>(), parsed_offset) {
                    (Ok(zone), _) => Ok(Calendar::Zone(zone)),
                    (Err(_), Some(offset)) => Ok(Calendar::Offset(offset)),
                    (Err(_), None) => {
                        Err(p.invalid("invalid timeZone: expected a valid IANA time zone"))
                    }
                };
            }
            match (offset, parsed_offset) {
                (_, Some(offset)) => Ok(Calendar::Offset(offset)),
                (Some(text), None) if !text.trim().is_empty() => {
                    Err(p.invalid("invalid utcOffset: expected UTC-12:00 through UTC+14:00"))
                }
                _ => Ok(Calendar::utc()),
            }
        }
        Some("utc") | None => Ok(Calendar::utc()),
        Some(other) => Err(p.invalid(format!(
            "at /mode: must be one of utc, gateway, specific (got {other:?})"
        ))),
    }
}

/// The days a report covers.
fn window(p: &Params) -> Result<Window, RpcError> {
    let calendar = calendar(p)?;
    let today = calendar
        .day_of(argent_proto::now_ms() as i64)
        .unwrap_or_else(|| Utc::now().date_naive());
    let (first, last) = match (date_param(p, "startDate")?, date_param(p, "endDate")?) {
        (Some(first), Some(last)) if first > last => {
            return Err(p.invalid("startDate must not be after endDate"))
        }
        (Some(first), Some(last)) => (first, last),
        (None, None) => {
            let days = match p.optional_str("range")?.as_deref() {
                Some("all") => {
                    return Ok(Window {
                        first: EPOCH_DAY,
                        last: today,
                        calendar,
                    })
                }
                Some("7d") => 7,
                Some("30d") => 30,
                Some("90d") => 90,
                Some("1y") => 365,
                Some(other) => {
                    return Err(p.invalid(format!(
                        "at /range: must be one of 7d, 30d, 90d, 1y, all (got {other:?})"
                    )))
                }
                None => p.optional_u64("days", 1)?.unwrap_or(DEFAULT_DAYS),
            };
            if days > MAX_DAYS {
                return Err(p.invalid(format!("at /days: must be <= {MAX_DAYS}")));
            }
            (today - Duration::days(days as i64 - 1), today)
        }
        _ => return Err(p.invalid("startDate and endDate must be provided together")),
    };
    Ok(Window {
        first,
        last,
        calendar,
    })
}

/// Transcripts read at once for a report.
const READ_AHEAD: usize = 4;
/// The furthest a calendar day starts before the UTC one (UTC+14).
const EARLIEST_OFFSET_MS: i64 = 14 * 3_600_000;

/// The sessions a report covers and what their transcripts say in its window. A session
/// last written before the window began has nothing in it and is not read.
async fn tallies(
    rt: &Runtime,
    window: &Window,
    keep: impl Fn(&SessionEntry) -> bool,
) -> Result<Vec<(SessionEntry, Tally)>, RpcError> {
    let config = shared_config(rt).await?;
    let window_start = window
        .first
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
        - EARLIEST_OFFSET_MS;
    let sessions: Vec<SessionEntry> = rt
        .sessions
        .list()
        .await?
        .into_iter()
        .filter(|s| keep(s) && s.updated_at as i64 >= window_start)
        .collect();
    let config = &config;
    futures_util::stream::iter(sessions)
        .map(|session| async move {
            let transcript = rt.transcript(&session.session_id).await?;
            let tally = Tally::of(&transcript, window, config);
            Ok::<_, RpcError>((session, tally))
        })
        .buffered(READ_AHEAD)
        .try_collect()
        .await
}

pub async fn cost(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("usage.cost", params)?.only(&["days", "startDate", "endDate"])?;
    let window = window(&p)?;
    let mut daily: BTreeMap<NaiveDate, Totals> = BTreeMap::new();
    for (_, tally) in tallies(rt, &window, |_| true).await? {
        for (day, (totals, _)) in tally.daily {
            daily.entry(day).or_default().add(&totals);
        }
    }
    let mut totals = Totals::default();
    let rows: Vec<Value> = daily
        .iter()
        .filter(|(_, day)| day.metered > 0)
        .map(|(date, day)| {
            totals.add(day);
            cost_row(day, Some(date))
        })
        .collect();
    Ok(json!({
        "updatedAt": argent_proto::now_ms(),
        "days": (window.last - window.first).num_days() + 1,
        "startDate": window.first.to_string(),
        "endDate": window.last.to_string(),
        "daily": rows,
        "totals": cost_row(&totals, None),
    }))
}

/// A `usage.cost` row: the totals plus the number of metered messages.
fn cost_row(totals: &Totals, date: Option<&NaiveDate>) -> Value {
    let mut row = totals.to_value();
    row["messages"] = json!(totals.metered);
    if let Some(date) = date {
        row["date"] = json!(date.to_string());
    }
    row
}

const SESSIONS_USAGE_KEYS: [&str; 14] = [
    "key",
    "agentId",
    "agentScope",
    "creatorKey",
    "startDate",
    "endDate",
    "mode",
    "range",
    "groupBy",
    "includeHistorical",
    "utcOffset",
    "timeZone",
    "limit",
    "includeContextWeight",
];

/// `sessions.usage` (protocol 4).
pub async fn sessions_usage(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("sessions.usage", params)?.only(&SESSIONS_USAGE_KEYS)?;
    let window = window(&p)?;
    let limit = p.optional_u64("limit", 1)?.unwrap_or(DEFAULT_SESSION_ROWS) as usize;
    let all_agents = match p.optional_str("agentScope")?.as_deref() {
        Some("all") => true,
        None => false,
        Some(other) => {
            return Err(p.invalid(format!("at /agentScope: must be \"all\" (got {other:?})")))
        }
    };
    let (key, agent_id) = (p.optional_str("key")?, p.optional_str("agentId")?);
    if all_agents && (key.is_some() || agent_id.is_some()) {
        return Err(p.invalid("agentScope=all cannot be combined with key or agentId"));
    }
    // A creator other than the unknown one selects nothing: none is recorded here.
    let creator = p.optional_str("creatorKey")?;
    let any_creator = creator.as_deref().is_none_or(|c| c == UNKNOWN_CREATOR);
    let config = shared_config(rt).await?;
    let agents = config.agents();
    let key = key.map(|k| match &agent_id {
        Some(agent) => SessionKey::for_agent(Some(&k), agent, agents).into_string(),
        None => SessionKey::canonical(&k, agents).into_string(),
    });
    let agent = agent_id.unwrap_or_else(|| agents.default_id.clone());
    let mut sessions = tallies(rt, &window, |s| {
        any_creator
            && match &key {
                Some(key) => &s.key == key,
                None => all_agents || agent_of(&s.key, agents) == agent,
            }
    })
    .await?;
    // Sessions active in the window, most recent first.
    sessions.retain(|(_, tally)| tally.counts.total > 0);
    sessions.sort_by_key(|(_, tally)| std::cmp::Reverse(tally.last_activity));
    let mut report = Report::default();
    let rows: Vec<Value> = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, (entry, tally))| {
            let agent = agent_of(&entry.key, agents);
            report.add(agent, entry.channel.as_deref(), tally);
            (i < limit).then(|| session_row(entry, agent, tally))
        })
        .collect();
    let creators = if sessions.is_empty() {
        json!([])
    } else {
        json!([{"key": UNKNOWN_CREATOR}])
    };
    Ok(json!({
        "updatedAt": argent_proto::now_ms(),
        "startDate": window.first.to_string(),
        "endDate": window.last.to_string(),
        "sessions": rows,
        "totals": report.totals.to_value(),
        "aggregates": report.finish(),
        "creatorOptions": creators,
    }))
}

fn model_uses(uses: impl IntoIterator<Item = (ModelId, ModelUse)>, with_model: bool) -> Vec<Value> {
    let mut rows: Vec<(f64, u64, Value)> = uses
        .into_iter()
        .map(|((provider, model), used)| {
            let mut row = json!({"provider": provider, "count": used.count, "totals": used.totals.to_value()});
            if with_model {
                row["model"] = json!(model);
            }
            (used.totals.cost(), used.totals.tokens(), row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    rows.into_iter().map(|(_, _, row)| row).collect()
}

fn tool_usage(tools: &BTreeMap<String, u64>) -> Value {
    let mut rows: Vec<(&String, &u64)> = tools.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    json!({
        "totalCalls": tools.values().sum::<u64>(),
        "uniqueTools": tools.len(),
        "tools": rows.iter().map(|(name, count)| json!({"name": name, "count": count})).collect::<Vec<_>>(),
    })
}

fn daily_models(tally: &BTreeMap<(NaiveDate, ModelId), ModelUse>) -> Vec<Value> {
    tally
        .iter()
        .map(|((date, (provider, model)), used)| {
            json!({"date": date.to_string(), "provider": provider, "model": model,
                   "tokens": used.totals.tokens(), "cost": used.totals.cost(), "count": used.count})
        })
        .collect()
}

/// One session's `usage` (upstream's session cost summary).
fn session_summary(entry: &SessionEntry, tally: &Tally) -> Value {
    let mut usage = tally.totals.to_value();
    let fields = json!({
        "sessionId": entry.session_id,
        "firstActivity": tally.first_activity,
        "lastActivity": tally.last_activity,
        "durationMs": tally.first_activity.zip(tally.last_activity).map(|(f, l)| l - f),
        "activityDates": tally.daily.keys().map(NaiveDate::to_string).collect::<Vec<_>>(),
        "dailyBreakdown": tally.daily.iter().map(|(date, (totals, _))| {
            let mut row = totals.to_value();
            row["date"] = json!(date.to_string());
            row["tokens"] = json!(totals.tokens());
            row["cost"] = json!(totals.cost());
            row
        }).collect::<Vec<_>>(),
        "dailyMessageCounts": tally.daily.iter().map(|(date, (_, counts))| {
            let mut row = counts.to_value();
            row["date"] = json!(date.to_string());
            row
        }).collect::<Vec<_>>(),
        "dailyModelUsage": daily_models(&tally.daily_models),
        "messageCounts": tally.counts.to_value(),
        "toolUsage": tool_usage(&tally.tools),
        "modelUsage": model_uses(tally.models.clone(), true),
    });
    for (name, value) in fields.as_object().expect("an object") {
        if !value.is_null() {
            usage[name] = value.clone();
        }
    }
    usage
}

fn session_row(entry: &SessionEntry, agent: &str, tally: &Tally) -> Value {
    let mut row = json!({
        "key": entry.key, "sessionId": entry.session_id, "scope": "instance",
        "updatedAt": entry.updated_at, "agentId": agent, "creatorKey": UNKNOWN_CREATOR,
        "usage": session_summary(entry, tally), "hasContextWeight": false,
    });
    for (name, value) in [
        ("label", &entry.label),
        ("channel", &entry.channel),
        ("modelProvider", &entry.model_provider),
        ("model", &entry.model),
    ] {
        if let Some(value) = value {
            row[name] = json!(value);
        }
    }
    row
}

/// The aggregates over every selected session (upstream's usage aggregate accumulator).
#[derive(Default)]
struct Report {
    totals: Totals,
    counts: Counts,
    sessions: u64,
    longest_ms: i64,
    tools: BTreeMap<String, u64>,
    models: BTreeMap<ModelId, ModelUse>,
    providers: BTreeMap<ModelId, ModelUse>,
    agents: BTreeMap<String, Totals>,
    channels: BTreeMap<String, Totals>,
    daily: BTreeMap<NaiveDate, (Totals, Counts)>,
    daily_models: BTreeMap<(NaiveDate, ModelId), ModelUse>,
}

fn merge<K: Ord + Clone>(into: &mut BTreeMap<K, ModelUse>, key: K, used: &ModelUse) {
    let slot = into.entry(key).or_default();
    slot.count += used.count;
    slot.totals.add(&used.totals);
}

impl Report {
    fn add(&mut self, agent: &str, channel: Option<&str>, tally: &Tally) {
        self.totals.add(&tally.totals);
        self.counts.add(&tally.counts);
        self.sessions += 1;
        if let Some((first, last)) = tally.first_activity.zip(tally.last_activity) {
            self.longest_ms = self.longest_ms.max(last - first);
        }
        for (name, count) in &tally.tools {
            *self.tools.entry(name.clone()).or_default() += count;
        }
        for (id, used) in &tally.models {
            merge(&mut self.models, id.clone(), used);
            merge(&mut self.providers, (id.0.clone(), String::new()), used);
        }
        for (key, used) in &tally.daily_models {
            merge(&mut self.daily_models, key.clone(), used);
        }
        self.agents
            .entry(agent.to_string())
            .or_default()
            .add(&tally.totals);
        if let Some(channel) = channel {
            self.channels
                .entry(channel.to_string())
                .or_default()
                .add(&tally.totals);
        }
        for (day, (totals, counts)) in &tally.daily {
            let slot = self.daily.entry(*day).or_default();
            slot.0.add(totals);
            slot.1.add(counts);
        }
    }

    fn finish(self) -> Value {
        let grouped = |name: &str, groups: BTreeMap<String, Totals>| -> Vec<Value> {
            let mut rows: Vec<(f64, Value)> = groups
                .into_iter()
                .map(|(key, totals)| {
                    (
                        totals.cost(),
                        json!({name: key, "totals": totals.to_value()}),
                    )
                })
                .collect();
            rows.sort_by(|a, b| b.0.total_cmp(&a.0));
            rows.into_iter().map(|(_, row)| row).collect()
        };
        let mut aggregates = json!({
            "sessionCount": self.sessions,
            "messages": self.counts.to_value(),
            "tools": tool_usage(&self.tools),
            "byModel": model_uses(self.models, true),
            "byProvider": model_uses(self.providers, false),
            "byAgent": grouped("agentId", self.agents),
            "byChannel": grouped("channel", self.channels),
            "byCreator": if self.sessions == 0 { json!([]) } else { json!([{
                "key": UNKNOWN_CREATOR, "totals": self.totals.to_value(), "sessionCount": self.sessions,
                "daily": self.daily.iter().map(|(date, (totals, _))| {
                    let mut row = totals.to_value();
                    row["date"] = json!(date.to_string());
                    row
                }).collect::<Vec<_>>(),
                "sessionActivity": [],
            }]) },
            "costDaily": self.daily.iter().map(|(date, (totals, _))| {
                let mut row = totals.to_value();
                row["date"] = json!(date.to_string());
                row
            }).collect::<Vec<_>>(),
            "dailyLatency": [],
            "modelDaily": daily_models(&self.daily_models),
            "daily": self.daily.iter().map(|(date, (totals, counts))| json!({
                "date": date.to_string(), "tokens": totals.tokens(), "cost": totals.cost(),
                "messages": counts.total, "toolCalls": counts.tool_calls, "errors": counts.errors,
            })).collect::<Vec<_>>(),
        });
        if self.longest_ms > 0 {
            aggregates["longestSessionDurationMs"] = json!(self.longest_ms);
        }
        aggregates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets_parse_as_upstream_writes_them() {
        let minutes = |text| utc_offset(text).map(|o| o.local_minus_utc() / 60);
        assert_eq!(minutes("UTC+2"), Some(120));
        assert_eq!(minutes("UTC-05:30"), Some(-330));
        assert_eq!(minutes("UTC+14:00"), Some(840));
        for bad in [
            "UTC+15", "UTC", "GMT+1", "UTC+1:5", "UTC+123", "UTC+1:60", "UTC++5",
        ] {
            assert_eq!(minutes(bad), None, "{bad}");
        }
    }
}
