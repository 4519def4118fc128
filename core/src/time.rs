//! The wall clock, read one way everywhere: [`now_ms`], milliseconds since the Unix epoch,
//! the unit every file and API in Hale uses.

/// Milliseconds since the Unix epoch, the unit every timestamp in Hale's files and APIs
/// uses. A clock set before 1970 reads as 0 rather than failing: callers compare and
/// subtract times, and a panic in a background loop would be worse than a wrong age.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_time_after_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
