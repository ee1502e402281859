//! Timestamps as the protocol writes them: ISO-8601 UTC with milliseconds, the form cron
//! schedules and knowledge records share.

use chrono::DateTime;

/// Parses an ISO-8601 timestamp (with offset or `Z`) into epoch milliseconds.
pub fn parse_iso(text: &str) -> Result<u64, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| format!("\"{text}\" is not an ISO-8601 timestamp: {e}"))
}

/// Epoch milliseconds as an ISO-8601 UTC timestamp (`2026-12-07T20:30:00.000Z`).
pub fn iso(ms: u64) -> String {
    DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_iso(&iso(1_765_139_400_123)).unwrap(),
            1_765_139_400_123
        );
        assert!(parse_iso("yesterday").is_err());
    }
}
