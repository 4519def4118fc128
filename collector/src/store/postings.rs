//! The inverted index of one label name: for each value, the series that carry it.
//!
//! Most values of a high-cardinality label (an instance address, a pod name, a request
//! id) belong to a single series, and there are as many of them as there are series, so
//! their cost decides the index's size. Those live as `(value, series)` pairs in one sorted
//! vector, 8 bytes each; values shared by two or more series get a list of their own. A
//! map entry per value (the obvious layout) costs about 40 bytes in B-tree nodes.
//! Property-tested against a plain map of sets.

use std::collections::BTreeMap;

use super::SeriesRef;

/// Series by value id for one label name. Series lists are in increasing order.
#[derive(Debug, Default)]
pub struct ValuePostings {
    /// Values carried by exactly one series: `(value, series)`, sorted by value.
    single: Vec<(u32, SeriesRef)>,
    /// Values carried by two or more series.
    shared: BTreeMap<u32, Vec<SeriesRef>>,
}

impl ValuePostings {
    /// Records that series `r` carries `value`. Series are created in increasing order,
    /// so lists grow at their end.
    ///
    /// A value id new to this label is almost always the newest symbol, so it lands at
    /// the end of `single`; one seen before under another label name is inserted in the
    /// middle, a copy of the vector's tail, paid once per new series.
    pub fn add(&mut self, value: u32, r: SeriesRef) {
        if let Some(list) = self.shared.get_mut(&value) {
            if let Err(i) = list.binary_search(&r) {
                list.insert(i, r);
            }
            return;
        }
        match self.single.binary_search_by_key(&value, |p| p.0) {
            Ok(i) if self.single[i].1 == r => {}
            Ok(i) => {
                let (_, first) = self.single.remove(i);
                self.shared.insert(value, if first < r { vec![first, r] } else { vec![r, first] });
            }
            Err(i) => self.single.insert(i, (value, r)),
        }
    }

    /// Forgets that series `r` carries `value`.
    pub fn remove(&mut self, value: u32, r: SeriesRef) {
        if let Some(list) = self.shared.get_mut(&value) {
            list.retain(|x| *x != r);
            if list.len() == 1 {
                let last = list[0];
                self.shared.remove(&value);
                if let Err(i) = self.single.binary_search_by_key(&value, |p| p.0) {
                    self.single.insert(i, (value, last));
                }
            } else if list.is_empty() {
                self.shared.remove(&value);
            }
            return;
        }
        if let Ok(i) = self.single.binary_search_by_key(&value, |p| p.0)
            && self.single[i].1 == r
        {
            self.single.remove(i);
        }
    }

    /// The series carrying `value`, in increasing order (empty when none do).
    pub fn get(&self, value: u32) -> &[SeriesRef] {
        if let Some(list) = self.shared.get(&value) {
            return list;
        }
        match self.single.binary_search_by_key(&value, |p| p.0) {
            Ok(i) => std::slice::from_ref(&self.single[i].1),
            Err(_) => &[],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.single.is_empty() && self.shared.is_empty()
    }

    /// Every value id in use, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.single.iter().map(|p| p.0).chain(self.shared.keys().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_move_between_single_and_shared() {
        let mut p = ValuePostings::default();
        p.add(7, 1);
        p.add(3, 2);
        assert_eq!(p.get(7), &[1]);
        assert_eq!(p.get(3), &[2]);
        assert!(p.get(5).is_empty());
        p.add(7, 4);
        p.add(7, 3);
        assert_eq!(p.get(7), &[1, 3, 4]);
        p.add(7, 3);
        assert_eq!(p.get(7), &[1, 3, 4], "adding twice keeps one entry");
        p.remove(7, 1);
        p.remove(7, 4);
        assert_eq!(p.get(7), &[3]);
        assert_eq!(p.single, vec![(3, 2), (7, 3)], "a value back to one series is single again");
        let mut values: Vec<u32> = p.values().collect();
        values.sort_unstable();
        assert_eq!(values, vec![3, 7]);
        p.remove(7, 99);
        assert_eq!(p.get(7), &[3], "removing a series that does not carry the value changes nothing");
        p.remove(7, 3);
        p.remove(3, 2);
        assert!(p.is_empty());
    }

    #[test]
    fn agrees_with_a_plain_map() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((any::<bool>(), 0u32..6, 0u32..8), 0..200))| {
            let mut p = ValuePostings::default();
            let mut model: BTreeMap<u32, std::collections::BTreeSet<u32>> = BTreeMap::new();
            for (add, v, r) in ops {
                if add {
                    p.add(v, r);
                    model.entry(v).or_default().insert(r);
                } else {
                    p.remove(v, r);
                    if let Some(set) = model.get_mut(&v) {
                        set.remove(&r);
                        if set.is_empty() {
                            model.remove(&v);
                        }
                    }
                }
                for v in 0..6 {
                    let want: Vec<u32> = model.get(&v).map(|s| s.iter().copied().collect()).unwrap_or_default();
                    prop_assert_eq!(p.get(v), want.as_slice());
                }
                prop_assert_eq!(p.is_empty(), model.is_empty());
            }
        });
    }
}
