//! Timestamps are RFC 3339 UTC strings with milliseconds, as stored and as served.

/// The current time, e.g. `2026-11-23T19:20:51.123Z`.
pub fn now() -> String {
    format(chrono::Utc::now())
}

/// Formats a UTC time the way VoltRun stores and serves it.
pub fn format(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `now` plus a number of seconds.
pub fn in_seconds(secs: i64) -> String {
    format(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}
