//! `usage.cost`: tokens and cost per day, summed from the usage (and `provider/model`) every
//! assistant message records in its session's transcript. Prices come from the shared
//! config (`models.providers.<p>.models[].cost`, USD per million tokens: `input`,
//! `output`); a message whose model has no price counts in `missingCostEntries`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

use argent_proto::errors::RpcError;
use argent_proto::params::Params;

use super::shared_config;
use crate::runtime::Runtime;
use argent_proto::config::SharedConfig;

const DEFAULT_DAYS: u64 = 30;
const MAX_DAYS: u64 = 366;

#[derive(Default, Clone, Copy)]
struct Day {
    input: u64,
    output: u64,
    cost: f64,
    messages: u64,
    missing_cost: u64,
}

impl Day {
    fn add(&mut self, other: &Day) {
        self.input += other.input;
        self.output += other.output;
        self.cost += other.cost;
        self.messages += other.messages;
        self.missing_cost += other.missing_cost;
    }

    fn to_value(self, date: Option<&str>) -> Value {
        let mut out = json!({
            "input": self.input, "output": self.output, "cacheRead": 0, "cacheWrite": 0,
            "totalTokens": self.input + self.output,
            "totalCost": (self.cost * 1e6).round() / 1e6,
            "messages": self.messages,
            "missingCostEntries": self.missing_cost,
        });
        if let Some(date) = date {
            out["date"] = json!(date);
        }
        out
    }
}

/// USD per million input / output tokens of `provider/model`, when configured.
fn price(config: &SharedConfig, provider: &str, model: &str) -> Option<(f64, f64)> {
    let models = config.providers()?.get(provider)?.models.as_ref()?;
    let cost = models.iter().find(|m| m.id == model)?.cost.as_ref()?;
    Some((cost.input?, cost.output?))
}

pub async fn cost(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    let p = Params::new("usage.cost", params)?.only(&["days", "startDate", "endDate"])?;
    let days = p.optional_u64("days", 1)?.unwrap_or(DEFAULT_DAYS);
    if days > MAX_DAYS {
        return Err(p.invalid(format!("at /days: must be <= {MAX_DAYS}")));
    }
    let date = |key: &str| -> Result<Option<NaiveDate>, RpcError> {
        p.optional_str(key)?
            .map(|d| {
                NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .map_err(|_| p.invalid(format!("at /{key}: must be a date YYYY-MM-DD")))
            })
            .transpose()
    };
    let today = Utc::now().date_naive();
    let last_day = date("endDate")?.unwrap_or(today);
    let first_day = date("startDate")?.unwrap_or(last_day - Duration::days(days as i64 - 1));
    let config = shared_config(rt).await?;
    let mut daily: BTreeMap<String, Day> = BTreeMap::new();
    for session in rt.sessions.list().await? {
        let transcript = rt.transcript(&session.session_id).await?;
        for message in transcript.iter().filter(|m| m["role"] == "assistant") {
            let Some(usage) = message.get("usage") else {
                continue;
            };
            let at = message["timestamp"]
                .as_i64()
                .and_then(DateTime::from_timestamp_millis);
            let in_range = |d: &NaiveDate| (first_day..=last_day).contains(d);
            let Some(date) = at.map(|at| at.date_naive()).filter(in_range) else {
                continue;
            };
            let (input, output) = (
                usage["input"].as_u64().unwrap_or(0),
                usage["output"].as_u64().unwrap_or(0),
            );
            let model = message["model"].as_str().unwrap_or_default();
            let prices = model
                .split_once('/')
                .and_then(|(provider, model)| price(&config, provider, model));
            let entry = daily.entry(date.to_string()).or_default();
            entry.input += input;
            entry.output += output;
            entry.messages += 1;
            match prices {
                Some((per_in, per_out)) => {
                    entry.cost += (input as f64 * per_in + output as f64 * per_out) / 1e6
                }
                None => entry.missing_cost += 1,
            }
        }
    }
    let mut totals = Day::default();
    let rows: Vec<Value> = daily
        .iter()
        .map(|(date, day)| {
            totals.add(day);
            day.to_value(Some(date))
        })
        .collect();
    Ok(json!({
        "updatedAt": argent_proto::now_ms(),
        "days": (last_day - first_day).num_days() + 1,
        "startDate": first_day.to_string(),
        "endDate": last_day.to_string(),
        "daily": rows,
        "totals": totals.to_value(None),
    }))
}
