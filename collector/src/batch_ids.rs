//! Which batches (`X-Hale-Batch: <source>/<seq>`) a store already holds, exactly, also
//! when they arrive out of order.
//!
//! An agent keeps several log batches in flight; they can be stored in any order, and
//! after a failed request it sends the later ones again. Remembering only the highest
//! sequence number seen would then drop a batch that arrived after a later one. So each
//! source keeps the sequence numbers it has stored as disjoint ranges: usually one, a
//! few while requests overlap or when a batch was refused (a gap that stays).
//!
//! Bounded: at most [`MAX_RANGES`] ranges a source; past that the two oldest merge (the
//! batches of the gap between them count as stored: an agent does not resend that far
//! back). The ids are rebuilt at start from the segments kept: a batch resent after its
//! segment left with retention (days) would be stored again.

use std::collections::HashMap;

/// Ranges a source may keep before its oldest gaps are given up.
pub const MAX_RANGES: usize = 1024;

/// The stored sequence numbers of every source.
#[derive(Debug, Default, Clone)]
pub struct SeenBatches {
    sources: HashMap<String, Vec<(u64, u64)>>,
}

impl SeenBatches {
    /// Whether batch `seq` of `source` is stored.
    pub fn contains(&self, source: &str, seq: u64) -> bool {
        let Some(ranges) = self.sources.get(source) else { return false };
        let at = ranges.partition_point(|(lo, _)| *lo <= seq);
        at > 0 && seq <= ranges[at - 1].1
    }

    /// Records batch `seq` of `source` as stored.
    pub fn insert(&mut self, source: &str, seq: u64) {
        let ranges = match self.sources.get_mut(source) {
            Some(r) => r,
            None => self.sources.entry(source.to_string()).or_default(),
        };
        // The range starting at or before `seq`, and the one after it.
        let at = ranges.partition_point(|(lo, _)| *lo <= seq);
        if at > 0 && seq <= ranges[at - 1].1 {
            return;
        }
        let joins_before = at > 0 && ranges[at - 1].1 + 1 == seq;
        let joins_after = at < ranges.len() && seq + 1 == ranges[at].0;
        match (joins_before, joins_after) {
            (true, true) => {
                ranges[at - 1].1 = ranges[at].1;
                ranges.remove(at);
            }
            (true, false) => ranges[at - 1].1 = seq,
            (false, true) => ranges[at].0 = seq,
            (false, false) => ranges.insert(at, (seq, seq)),
        }
        if ranges.len() > MAX_RANGES {
            ranges[1].0 = ranges[0].0;
            ranges.remove(0);
        }
    }

    /// Sources and their ranges (for tests and telemetry).
    pub fn ranges(&self, source: &str) -> &[(u64, u64)] {
        self.sources.get(source).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_order_batches_are_each_stored_once() {
        let mut seen = SeenBatches::default();
        for seq in [1, 2, 4, 3, 6] {
            assert!(!seen.contains("a", seq));
            seen.insert("a", seq);
            assert!(seen.contains("a", seq));
        }
        assert_eq!(seen.ranges("a"), [(1, 4), (6, 6)]);
        assert!(!seen.contains("a", 5), "a batch that arrived after a later one is still new");
        assert!(!seen.contains("b", 1), "sources are apart");
    }

    #[test]
    fn the_oldest_gaps_are_given_up_past_the_bound() {
        let mut seen = SeenBatches::default();
        for i in 0..=MAX_RANGES as u64 {
            seen.insert("a", 10 + 2 * i);
        }
        assert_eq!(seen.ranges("a").len(), MAX_RANGES);
        assert!(seen.contains("a", 11), "merged");
        assert!(!seen.contains("a", 10 + 2 * MAX_RANGES as u64 - 1), "recent gaps stay");
        assert!(!seen.contains("a", 3), "a batch older than all the others may still come");
    }

    proptest! {
        /// Against a plain set, for sequences whose ranges stay under the bound.
        #[test]
        fn holds_what_a_set_holds(seqs in proptest::collection::vec(1u64..200, 0..300), probe in 1u64..200) {
            let mut seen = SeenBatches::default();
            let mut set = std::collections::BTreeSet::new();
            for seq in seqs {
                prop_assert_eq!(seen.contains("s", seq), set.contains(&seq));
                seen.insert("s", seq);
                set.insert(seq);
            }
            prop_assert_eq!(seen.contains("s", probe), set.contains(&probe));
            let ranges = seen.ranges("s");
            prop_assert!(ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0), "disjoint, apart and ordered: {:?}", ranges);
        }
    }
}
