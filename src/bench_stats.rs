//! The figures every benchmark prints: quantiles of its trials (nearest rank).

/// The index of quantile `q` (0 to 1) in `len` sorted values (at least one).
pub fn rank(len: usize, q: f64) -> usize {
    ((len as f64 * q).ceil() as usize).clamp(1, len) - 1
}

/// `<what> over N trials: p50 …, p90 …, p99 …, max …` of seconds; nothing when no trial ran.
pub fn print_summary(what: &str, mut seconds: Vec<f64>) {
    if seconds.is_empty() {
        return;
    }
    seconds.sort_by(f64::total_cmp);
    let pick = |q: f64| seconds[rank(seconds.len(), q)];
    println!(
        "{what} over {} trials: p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s",
        seconds.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        seconds.last().copied().unwrap_or(0.0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_nearest_rank_quantiles() {
        assert_eq!([rank(1, 0.5), rank(1, 0.99)], [0, 0]);
        assert_eq!([rank(10, 0.5), rank(10, 0.9), rank(10, 0.99), rank(10, 0.0)], [4, 8, 9, 0]);
        assert_eq!(rank(100, 0.99), 98);
    }
}
