//! The wall clock, read one way everywhere: [`now_ms`], milliseconds since the Unix epoch,
//! the unit every file and API in Hale uses.

/// Milliseconds since the Unix epoch, the unit every timestamp in Hale's files and APIs
/// uses. A clock set before 1970 reads as 0 rather than failing: callers compare and
/// subtract times, and a panic in a background loop would be worse than a wrong age.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T12:00:00.5+02:00`) in ms since
/// the epoch; `None` when it is not one. Every offset is taken (Prometheus's API and
/// Alertmanager's do), not only UTC.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_time_after_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn rfc3339_takes_any_offset() {
        let utc = super::parse_rfc3339("2026-12-06T10:00:00Z");
        assert_eq!(utc, Some(1_796_551_200_000));
        assert_eq!(super::parse_rfc3339("2026-12-06T12:00:00+02:00"), utc);
        assert_eq!(super::parse_rfc3339("2026-12-06T10:00:00.250Z"), utc.map(|t| t + 250));
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
