//! What a session's transcript says about usage: tokens and cost (priced from the shared
//! config), message and tool counts, per day, per model. Read by `usage.cost` and
//! `sessions.usage`; nothing is stored beside the transcript, so the figures cannot drift
//! from the conversation they describe.
//!
//! An assistant message carries `usage: {input, output}` and `model: "provider/model"` when
//! the provider reported usage (`runtime::run`); prices are USD per million tokens under
//! `models.providers.<p>.models[].cost`. A metered message whose model has no price counts
//! in `missingCostEntries`, never as free.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use argent_proto::config::SharedConfig;

/// The calendar a timestamp's day is counted in.
#[derive(Debug, Clone, Copy)]
pub enum Calendar {
    Offset(FixedOffset),
    Zone(Tz),
}

impl Calendar {
    pub fn utc() -> Self {
        Calendar::Offset(FixedOffset::east_opt(0).expect("zero offset"))
    }

    pub fn day_of(&self, at_ms: i64) -> Option<NaiveDate> {
        let at = DateTime::<Utc>::from_timestamp_millis(at_ms)?;
        Some(match self {
            Calendar::Offset(offset) => at.with_timezone(offset).date_naive(),
            Calendar::Zone(zone) => at.with_timezone(zone).date_naive(),
        })
    }
}

/// An inclusive window of days in a calendar.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub calendar: Calendar,
}

impl Window {
    /// The day `at_ms` falls on, when it is inside the window.
    pub fn day(&self, at_ms: i64) -> Option<NaiveDate> {
        self.calendar
            .day_of(at_ms)
            .filter(|d| (self.first..=self.last).contains(d))
    }
}

/// Token and cost totals, in upstream's `CostUsageTotals` shape (cache fields stay zero: no
/// provider here reports cache usage).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Totals {
    pub input: u64,
    pub output: u64,
    pub input_cost: f64,
    pub output_cost: f64,
    pub missing_cost_entries: u64,
    /// Assistant messages that reported usage.
    pub metered: u64,
}

fn money(usd: f64) -> f64 {
    (usd * 1e6).round() / 1e6
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.input += other.input;
        self.output += other.output;
        self.input_cost += other.input_cost;
        self.output_cost += other.output_cost;
        self.missing_cost_entries += other.missing_cost_entries;
        self.metered += other.metered;
    }

    pub fn tokens(&self) -> u64 {
        self.input + self.output
    }

    pub fn cost(&self) -> f64 {
        self.input_cost + self.output_cost
    }

    pub fn to_value(&self) -> Value {
        json!({
            "input": self.input, "output": self.output, "cacheRead": 0, "cacheWrite": 0,
            "totalTokens": self.tokens(), "totalCost": money(self.cost()),
            "inputCost": money(self.input_cost), "outputCost": money(self.output_cost),
            "cacheReadCost": 0, "cacheWriteCost": 0,
            "missingCostEntries": self.missing_cost_entries,
        })
    }
}

/// Messages by kind, in upstream's `messageCounts` shape.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    pub total: u64,
    pub user: u64,
    pub assistant: u64,
    pub tool_calls: u64,
    pub tool_results: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.user += other.user;
        self.assistant += other.assistant;
        self.tool_calls += other.tool_calls;
        self.tool_results += other.tool_results;
        self.errors += other.errors;
    }

    pub fn to_value(&self) -> Value {
        json!({
            "total": self.total, "user": self.user, "assistant": self.assistant,
            "toolCalls": self.tool_calls, "toolResults": self.tool_results, "errors": self.errors,
        })
    }
}

/// `provider/model` split for grouping; a model without provider is `unknown`.
pub type ModelId = (String, String);

/// Uses of one model: how many metered messages, and their totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct ModelUse {
    pub count: u64,
    pub totals: Totals,
}

/// One session's usage inside a window.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub totals: Totals,
    pub counts: Counts,
    pub first_activity: Option<i64>,
    pub last_activity: Option<i64>,
    pub daily: BTreeMap<NaiveDate, (Totals, Counts)>,
    pub models: BTreeMap<ModelId, ModelUse>,
    pub daily_models: BTreeMap<(NaiveDate, ModelId), ModelUse>,
    pub tools: BTreeMap<String, u64>,
}

/// USD per million input / output tokens of `provider/model`, when configured.
pub fn price(config: &SharedConfig, provider: &str, model: &str) -> Option<(f64, f64)> {
    let models = config.providers()?.get(provider)?.models.as_ref()?;
    let cost = models.iter().find(|m| m.id == model)?.cost.as_ref()?;
    Some((cost.input?, cost.output?))
}

fn model_id(reference: &str) -> ModelId {
    match reference.split_once('/') {
        Some((provider, model)) => (provider.to_string(), model.to_string()),
        None => ("unknown".to_string(), reference.to_string()),
    }
}

/// Upstream counts these assistant stop reasons as errors.
fn ended_in_error(message: &Value) -> bool {
    message["aborted"] == true
        || matches!(
            message["stopReason"].as_str(),
            Some("error" | "aborted" | "timeout")
        )
}

impl Tally {
    /// The usage of the messages of `transcript` that fall inside `window`.
    pub fn of(transcript: &[Value], window: &Window, config: &SharedConfig) -> Tally {
        let mut tally = Tally::default();
        for message in transcript {
            let Some(at) = message["timestamp"].as_i64() else {
                continue;
            };
            let Some(day) = window.day(at) else {
                continue;
            };
            tally.first_activity = Some(tally.first_activity.map_or(at, |f| f.min(at)));
            tally.last_activity = Some(tally.last_activity.map_or(at, |l| l.max(at)));
            let mut counts = Counts {
                total: 1,
                ..Counts::default()
            };
            let mut totals = Totals::default();
            match message["role"].as_str() {
                Some("user") => counts.user = 1,
                Some("assistant") => {
                    counts.assistant = 1;
                    counts.errors = u64::from(ended_in_error(message));
                    let calls = message["content"].as_array().into_iter().flatten();
                    for call in calls.filter(|part| part["type"] == "toolCall") {
                        counts.tool_calls += 1;
                        let name = call["name"].as_str().unwrap_or("unknown");
                        *tally.tools.entry(name.to_string()).or_default() += 1;
                    }
                    if let Some(usage) = message.get("usage") {
                        totals = metered(message, usage, config);
                        let id = model_id(message["model"].as_str().unwrap_or("unknown"));
                        for slot in [
                            tally.models.entry(id.clone()).or_default(),
                            tally.daily_models.entry((day, id)).or_default(),
                        ] {
                            slot.count += 1;
                            slot.totals.add(&totals);
                        }
                    }
                }
                Some("toolResult") => {
                    counts.tool_results = 1;
                    counts.errors = u64::from(message["isError"] == true);
                }
                // Compaction summaries and injected notes are not conversation turns.
                _ => continue,
            }
            tally.totals.add(&totals);
            tally.counts.add(&counts);
            let (day_totals, day_counts) = tally.daily.entry(day).or_default();
            day_totals.add(&totals);
            day_counts.add(&counts);
        }
        tally
    }
}

fn metered(message: &Value, usage: &Value, config: &SharedConfig) -> Totals {
    let (input, output) = (
        usage["input"].as_u64().unwrap_or(0),
        usage["output"].as_u64().unwrap_or(0),
    );
    let prices = message["model"]
        .as_str()
        .and_then(|m| m.split_once('/'))
        .and_then(|(provider, model)| price(config, provider, model));
    let mut totals = Totals {
        input,
        output,
        metered: 1,
        ..Totals::default()
    };
    match prices {
        Some((per_input, per_output)) => {
            totals.input_cost = input as f64 * per_input / 1e6;
            totals.output_cost = output as f64 * per_output / 1e6;
        }
        None => totals.missing_cost_entries = 1,
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SharedConfig {
        SharedConfig::from_document(json!({"models": {"providers": {"p": {
            "baseUrl": "http://127.0.0.1:1", "models": [
                {"id": "priced", "cost": {"input": 2.0, "output": 10.0}},
                {"id": "free-text"}
            ]
        }}}}))
    }

    #[test]
    fn a_transcript_counts_messages_tools_and_priced_tokens_per_day() {
        let day1 = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
        let day2 = day1 + 86_400_000;
        let transcript = vec![
            json!({"role": "user", "timestamp": day1 + 1}),
            json!({"role": "assistant", "timestamp": day1 + 2, "content": [
                {"type": "toolCall", "name": "web_fetch"}, {"type": "toolCall", "name": "web_fetch"}]}),
            json!({"role": "toolResult", "timestamp": day1 + 3, "isError": true}),
            json!({"role": "toolResult", "timestamp": day1 + 4}),
            json!({"role": "assistant", "timestamp": day1 + 5, "model": "p/priced",
                   "usage": {"input": 1000, "output": 100}}),
            json!({"role": "system", "timestamp": day1 + 6}),
            json!({"role": "user", "timestamp": day2}),
            json!({"role": "assistant", "timestamp": day2 + 1, "model": "p/free-text",
                   "usage": {"input": 10, "output": 1}, "aborted": true}),
            json!({"role": "user", "timestamp": day2 + 86_400_000}),
        ];
        let first = Calendar::utc().day_of(day1).unwrap();
        let window = Window {
            first,
            last: first.succ_opt().unwrap(),
            calendar: Calendar::utc(),
        };
        let tally = Tally::of(&transcript, &window, &config());
        assert_eq!(
            tally.counts,
            Counts {
                total: 7,
                user: 2,
                assistant: 3,
                tool_calls: 2,
                tool_results: 2,
                errors: 2
            }
        );
        assert_eq!((tally.totals.input, tally.totals.output), (1010, 101));
        assert_eq!(tally.totals.missing_cost_entries, 1);
        assert!((tally.totals.cost() - (1000.0 * 2.0 + 100.0 * 10.0) / 1e6).abs() < 1e-12);
        assert_eq!(tally.tools["web_fetch"], 2);
        assert_eq!(tally.daily.len(), 2);
        assert_eq!(tally.models.len(), 2);
        assert_eq!(
            (tally.first_activity, tally.last_activity),
            (Some(day1 + 1), Some(day2 + 1))
        );
        // 15:00 UTC is the next calendar day in UTC+10.
        let east = Calendar::Offset(FixedOffset::east_opt(10 * 3600).unwrap());
        assert_eq!(east.day_of(day1 + 15 * 3_600_000), first.succ_opt());
        assert_eq!(Calendar::utc().day_of(day1 + 15 * 3_600_000), Some(first));
    }
}
