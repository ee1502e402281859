//! When a schedule fires (PROTOCOL.md §5.5): `at` (one shot), `every` (fixed interval from
//! an anchor) and `cron` (5- or 6-field expression, in an IANA zone; `croner` + `chrono-tz`).
//! Expressions without a zone are evaluated in UTC, so every node-agent agrees whatever its
//! local zone is.

use chrono::TimeZone;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Schedule {
    At(u64),
    Every { every_ms: u64, anchor_ms: u64 },
    Cron { cron: Box<Cron>, tz: chrono_tz::Tz },
}

pub use crate::clock::{iso, parse_iso};

impl Schedule {
    /// Reads a normalised schedule object; `default_anchor_ms` anchors `every` schedules
    /// without `anchorMs`.
    pub fn from_value(value: &Value, default_anchor_ms: u64) -> Result<Self, String> {
        match value.get("kind").and_then(Value::as_str) {
            Some("at") => {
                let at = value
                    .get("at")
                    .and_then(Value::as_str)
                    .ok_or("schedule.at must be an ISO-8601 string")?;
                Ok(Schedule::At(parse_iso(at)?))
            }
            Some("every") => {
                let every_ms = value
                    .get("everyMs")
                    .and_then(Value::as_u64)
                    .filter(|ms| *ms >= 1)
                    .ok_or("schedule.everyMs must be an integer >= 1")?;
                let anchor_ms = match value.get("anchorMs") {
                    None | Some(Value::Null) => default_anchor_ms,
                    Some(v) => v
                        .as_u64()
                        .ok_or("schedule.anchorMs must be an integer >= 0")?,
                };
                Ok(Schedule::Every {
                    every_ms,
                    anchor_ms,
                })
            }
            Some("cron") => {
                let expr = value
                    .get("expr")
                    .and_then(Value::as_str)
                    .ok_or("schedule.expr must be a cron expression")?;
                let fields = expr.split_whitespace().count();
                if !(5..=6).contains(&fields) {
                    return Err(format!(
                        "schedule.expr \"{expr}\" must have 5 or 6 fields, not {fields}"
                    ));
                }
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| format!("schedule.expr \"{expr}\": {e}"))?;
                let tz = match value.get("tz").and_then(Value::as_str) {
                    None | Some("") => chrono_tz::UTC,
                    Some(name) => name
                        .parse::<chrono_tz::Tz>()
                        .map_err(|_| format!("schedule.tz \"{name}\" is not an IANA time zone"))?,
                };
                Ok(Schedule::Cron {
                    cron: Box::new(cron),
                    tz,
                })
            }
            Some(other) => Err(format!("unknown schedule kind \"{other}\"")),
            None => Err("schedule.kind is required (at, every or cron)".into()),
        }
    }

    /// The first firing time strictly after `after_ms` (`None`: never again).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Schedule::At(at) => (*at > after_ms).then_some(*at),
            Schedule::Every {
                every_ms,
                anchor_ms,
            } => {
                if after_ms < *anchor_ms {
                    return Some(*anchor_ms);
                }
                // Checked: an `everyMs` near u64::MAX would otherwise wrap to a time in the
                // past and fire on every tick. Past the end of time: never.
                let periods = (after_ms - anchor_ms) / every_ms + 1;
                periods
                    .checked_mul(*every_ms)
                    .and_then(|offset| anchor_ms.checked_add(offset))
            }
            Schedule::Cron { cron, tz } => {
                let start = tz.timestamp_millis_opt(after_ms as i64).single()?;
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|t| t.timestamp_millis().max(0) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::from_value(&json!({"kind": "cron", "expr": expr, "tz": tz}), 0).unwrap()
    }

    fn at(text: &str) -> u64 {
        parse_iso(text).unwrap()
    }

    #[test]
    fn every_is_aligned_to_its_anchor() {
        let s = Schedule::from_value(
            &json!({"kind": "every", "everyMs": 1000, "anchorMs": 500}),
            0,
        )
        .unwrap();
        assert_eq!(s.next_after(0), Some(500));
        assert_eq!(s.next_after(500), Some(1500));
        assert_eq!(s.next_after(1499), Some(1500));
    }

    #[test]
    fn an_interval_past_the_end_of_time_never_comes() {
        // `cron.add` accepts any `everyMs` >= 1: the next run overflowed u64 (a panic with
        // overflow checks, a run at a wrapped time in the past without).
        let s = Schedule::from_value(
            &json!({"kind": "every", "everyMs": u64::MAX, "anchorMs": 1}),
            0,
        )
        .unwrap();
        assert_eq!(s.next_after(0), Some(1));
        assert_eq!(s.next_after(10), None);
    }

    #[test]
    fn cron_in_a_zone_follows_daylight_saving() {
        // 09:00 in New York: 14:00 UTC in winter, 13:00 UTC once DST starts (8 March 2026).
        let s = cron("0 9 * * *", "America/New_York");
        assert_eq!(
            iso(s.next_after(at("2026-03-07T15:00:00Z")).unwrap()),
            "2026-03-08T13:00:00.000Z"
        );
        assert_eq!(
            iso(s.next_after(at("2026-03-06T15:00:00Z")).unwrap()),
            "2026-03-07T14:00:00.000Z"
        );
        // Back to 14:00 UTC after DST ends (1 November 2026).
        assert_eq!(
            iso(s.next_after(at("2026-10-31T14:00:00Z")).unwrap()),
            "2026-11-01T14:00:00.000Z"
        );
        // 02:30 does not exist on 8 March in New York: that day is skipped, never run twice.
        let s = cron("30 2 * * *", "America/New_York");
        let first = s.next_after(at("2026-03-07T12:00:00Z")).unwrap();
        let second = s.next_after(first).unwrap();
        assert!(
            second - first >= 23 * 3_600_000,
            "{} then {}",
            iso(first),
            iso(second)
        );
        // Six fields: seconds first; no zone: UTC.
        let s = cron("*/10 * * * * *", "");
        assert_eq!(
            iso(s.next_after(at("2026-01-01T00:00:01Z")).unwrap()),
            "2026-01-01T00:00:10.000Z"
        );
        // Berlin, weekdays at 08:15.
        let s = cron("15 8 * * 1-5", "Europe/Berlin");
        assert_eq!(
            iso(s.next_after(at("2026-11-27T08:00:00Z")).unwrap()),
            "2026-11-30T07:15:00.000Z"
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        let err = |v: Value| Schedule::from_value(&v, 0).unwrap_err();
        assert!(err(json!({"kind": "cron", "expr": "* * *"})).contains("5 or 6 fields"));
        assert!(
            err(json!({"kind": "cron", "expr": "* * * * *", "tz": "Mars/Base"})).contains("IANA")
        );
        assert!(err(json!({"kind": "every", "everyMs": 0})).contains("everyMs"));
        assert!(err(json!({"kind": "at", "at": "tomorrow"})).contains("ISO-8601"));
        assert!(err(json!({"kind": "cron", "expr": "61 * * * *"})).contains("61"));
    }
}
