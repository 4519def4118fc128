//! The in-memory head: every series with its chunks, an inverted index from label pairs to
//! series, and a small out-of-order buffer per series.
//!
//! Label strings are interned in the symbol table (`symbols`) and a series holds their
//! ids, so a label value shared by ten thousand series is stored once; a series costs its
//! label ids, its chunks and a few words. Series by label set live in a hashbrown
//! `HashTable` of bare references hashed through the series' own labels: 4 bytes a
//! series, and no second copy of any label.
//!
//! Each series has sealed chunks, one open chunk, and an out-of-order buffer for samples
//! up to [`OUT_OF_ORDER_WINDOW_MS`] (5 minutes) behind its newest (a retried batch racing
//! a newer one); older samples are refused. Selection starts from the postings of the
//! equality matchers (intersected), then filters by `!=`, `=~` and `!~`. Retention drops
//! whole chunks and forgets a series left empty; its slot stays, since references are
//! positions.

use crate::shared_str::SharedStr;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use std::sync::Arc;

use super::SeriesRef;
use super::block::{self, Block};
use super::chunk::{Chunk, Sealed};
use super::postings::ValuePostings;
use super::symbols::Symbols;

/// A series' labels, sorted by name, `__name__` included.
/// A selected series' labels, sorted by name; names and values shared (cheap to clone).
pub type Labels = Vec<(SharedStr, SharedStr)>;

/// Samples may arrive this far behind a series' newest sample (for example, a retried
/// batch racing a newer one); older ones are refused.
pub const OUT_OF_ORDER_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Older than the out-of-order window allows.
    TooOld,
    /// Same timestamp as a stored sample, other value.
    Duplicate,
}

/// A label matcher, as PromQL writes them.
#[derive(Debug, Clone)]
pub enum Matcher {
    Eq(String, String),
    Ne(String, String),
    Re(String, regex::Regex),
    Nre(String, regex::Regex),
}

impl Matcher {
    /// A regex matcher, anchored at both ends as PromQL's are.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, regex::Error> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(if negate { Matcher::Nre(name.into(), re) } else { Matcher::Re(name.into(), re) })
    }

    pub fn name(&self) -> &str {
        match self {
            Matcher::Eq(n, _) | Matcher::Ne(n, _) | Matcher::Re(n, _) | Matcher::Nre(n, _) => n,
        }
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Eq(_, v) => value == v,
            Matcher::Ne(_, v) => value != v,
            Matcher::Re(_, re) => re.is_match(value),
            Matcher::Nre(_, re) => !re.is_match(value),
        }
    }
}

struct MemSeries {
    /// Label name and value ids in the symbol table, sorted by name.
    labels: Box<[(u32, u32)]>,
    /// Full chunks, oldest first.
    closed: Vec<Sealed>,
    head: Chunk,
    /// Samples that arrived behind `head`'s newest, sorted by time. Boxed: most series
    /// never have any, and an empty box costs one pointer instead of a vector's three words.
    #[allow(clippy::box_collection)] // the point is the one-word `None`
    out_of_order: Option<Box<Vec<(i64, f64)>>>,
    /// The newest sample of this series already in an on-disk block (`i64::MIN`: none).
    /// Live samples at or before it are refused as too old: what is on disk is final.
    on_disk_until: i64,
}

impl MemSeries {
    fn max_t(&self) -> i64 {
        let head = self.head.max_t();
        if head != i64::MIN {
            return head;
        }
        self.closed.last().map_or(i64::MIN, Sealed::max_t)
    }

    /// `window`: refuse samples further behind than [`OUT_OF_ORDER_WINDOW_MS`] (live
    /// ingest); replay passes false, since it only brings back what was accepted.
    fn append(&mut self, t: i64, v: f64, window: bool) -> Result<(), Rejected> {
        if window && t <= self.on_disk_until {
            return Err(Rejected::TooOld);
        }
        let max_t = self.max_t();
        if t > max_t {
            if self.head.is_full() {
                // Grow by one: a series' list of full chunks is long-lived, slack is not free.
                self.closed.reserve_exact(1);
                self.closed.push(self.head.seal_and_clear());
            }
            self.head.append(t, v);
            return Ok(());
        }
        if t == max_t {
            let last = self.head.iter().last().or_else(|| self.closed.last().and_then(|c| c.iter().last()));
            return match last {
                Some((_, old)) if old.to_bits() == v.to_bits() => Ok(()),
                _ => Err(Rejected::Duplicate),
            };
        }
        if window && t < max_t.saturating_sub(OUT_OF_ORDER_WINDOW_MS) {
            return Err(Rejected::TooOld);
        }
        let found = self.ooo().binary_search_by_key(&t, |s| s.0);
        match found {
            Ok(i) if self.ooo()[i].1.to_bits() == v.to_bits() => Ok(()),
            Ok(_) => Err(Rejected::Duplicate),
            Err(i) => {
                if self.samples_between(t, t).next().is_some() {
                    return Err(Rejected::Duplicate);
                }
                self.out_of_order.get_or_insert_with(Default::default).insert(i, (t, v));
                Ok(())
            }
        }
    }

    /// In-order samples in `[mint, maxt]` (without the out-of-order buffer).
    fn samples_between(&self, mint: i64, maxt: i64) -> impl Iterator<Item = (i64, f64)> + '_ {
        let closed = self.closed.iter().filter(move |c| c.max_t() >= mint && c.min_t() <= maxt).flat_map(Sealed::iter);
        let head = std::iter::once(&self.head)
            .filter(move |c| !c.is_empty() && c.max_t() >= mint && c.min_t() <= maxt)
            .flat_map(Chunk::iter);
        closed.chain(head).filter(move |(t, _)| *t >= mint && *t <= maxt)
    }

    fn ooo(&self) -> &[(i64, f64)] {
        self.out_of_order.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Copies of what may hold samples in `[mint, maxt]`: cheap (bytes, not decoding), so
    /// the head's lock is held only for this; decoding happens after it is released.
    fn raw(&self, mint: i64, maxt: i64) -> RawSeries {
        RawSeries {
            labels: Vec::new(),
            on_disk: Vec::new(),
            sealed: self.closed.iter().filter(|c| c.max_t() >= mint && c.min_t() <= maxt).cloned().collect(),
            head: (!self.head.is_empty() && self.head.max_t() >= mint && self.head.min_t() <= maxt)
                .then(|| self.head.clone()),
            out_of_order: self.ooo().iter().copied().filter(|(t, _)| *t >= mint && *t <= maxt).collect(),
        }
    }

    /// Whether any sample may lie in `[mint, maxt]`, from chunk bounds alone.
    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.closed.iter().any(|c| c.max_t() >= mint && c.min_t() <= maxt)
            || (!self.head.is_empty() && self.head.max_t() >= mint && self.head.min_t() <= maxt)
            || self.ooo().iter().any(|(t, _)| *t >= mint && *t <= maxt)
    }

    fn bytes(&self) -> usize {
        self.closed.iter().map(Sealed::bytes).sum::<usize>() + self.head.bytes() + self.ooo().len() * 16
    }
}

/// Series by reference, in fixed-size blocks: appending never copies the table and leaves
/// at most one block partly unused, where a vector's doubling wastes a third on average.
#[derive(Default)]
struct SeriesTable {
    blocks: Vec<Vec<MemSeries>>,
    len: usize,
}

const BLOCK: usize = 4096;

impl SeriesTable {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, s: MemSeries) {
        if self.blocks.last().is_none_or(|b| b.len() == BLOCK) {
            // The first block grows as needed, so a small head stays small.
            let cap = if self.blocks.is_empty() { 0 } else { BLOCK };
            self.blocks.push(Vec::with_capacity(cap));
        }
        if let Some(block) = self.blocks.last_mut() {
            block.push(s);
            self.len += 1;
        }
    }

    fn get(&self, i: usize) -> Option<&MemSeries> {
        self.blocks.get(i / BLOCK)?.get(i % BLOCK)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut MemSeries> {
        self.blocks.get_mut(i / BLOCK)?.get_mut(i % BLOCK)
    }

    fn iter(&self) -> impl Iterator<Item = &MemSeries> {
        self.blocks.iter().flatten()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut MemSeries> {
        self.blocks.iter_mut().flatten()
    }
}

impl std::ops::Index<usize> for SeriesTable {
    type Output = MemSeries;
    fn index(&self, i: usize) -> &MemSeries {
        &self.blocks[i / BLOCK][i % BLOCK]
    }
}

/// A selected series' chunks, copied out of the head, not yet decoded, and where its
/// samples lie in on-disk blocks, not yet read.
pub struct RawSeries {
    pub labels: Labels,
    /// Blocks holding the series in the range (oldest first), with its position in each.
    on_disk: Vec<(Arc<Block>, usize)>,
    sealed: Vec<Sealed>,
    head: Option<Chunk>,
    out_of_order: Vec<(i64, f64)>,
}

impl RawSeries {
    /// How many samples the copied chunks hold, and about how many the blocks do.
    pub fn samples(&self) -> usize {
        let on_disk: u64 = self.on_disk.iter().map(|(b, _)| b.meta().samples / b.meta().series.max(1)).sum();
        self.sealed.iter().map(Sealed::samples).sum::<usize>()
            + self.head.as_ref().map_or(0, Chunk::len)
            + self.out_of_order.len()
            + on_disk as usize
    }

    /// The samples in `[mint, maxt]`, in time order, each timestamp once; `None` when
    /// there are none. Blocks are read here, with the head's lock long released. A sample
    /// both on disk and in the head (a block written again after a crash, or compacted
    /// twice) is one sample. A block that fails its checksums is reported and skipped:
    /// the rest of the answer stands.
    pub fn decode(&self, mint: i64, maxt: i64) -> Option<SeriesData> {
        let in_range = move |(t, _): &(i64, f64)| *t >= mint && *t <= maxt;
        let mut samples: Vec<(i64, f64)> = Vec::with_capacity(self.samples());
        for (block, position) in &self.on_disk {
            if let Err(e) = block.read_samples(*position, mint, maxt, &mut samples) {
                tracing::error!(block = block.name(), error = %e, "a block could not be read; its samples are left out");
            }
        }
        samples.extend(self.sealed.iter().flat_map(Sealed::iter).filter(in_range));
        if let Some(head) = &self.head {
            samples.extend(head.iter().filter(in_range));
        }
        samples.extend(self.out_of_order.iter().copied());
        if !samples.is_sorted_by(|a, b| a.0 < b.0) {
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
        }
        (!samples.is_empty()).then(|| SeriesData { labels: self.labels.clone(), samples })
    }
}

/// One selected series and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

#[derive(Default)]
pub struct Head {
    series: SeriesTable,
    /// Series by label set: bare references, hashed through the series' own labels, so
    /// the table costs 4 bytes a series and holds no second copy of any label.
    by_labels: hashbrown::HashTable<SeriesRef>,
    label_hasher: std::hash::RandomState,
    /// name → value id → series, each list in increasing order. Values are keyed by their
    /// symbol id (4 bytes, not a 16-byte string handle): most label values are unique to
    /// one series, so this map has about one entry per series per unique label.
    postings: BTreeMap<Box<str>, ValuePostings>,
    /// Every label string once, by id.
    symbols: Symbols,
    samples_appended: u64,
    /// The newest timestamp appended to any series: where the head window ends.
    newest: i64,
    /// Series removed by retention (their slots stay empty).
    removed: usize,
}

fn hash_labels<'a>(hasher: &impl BuildHasher, labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = hasher.build_hasher();
    for (n, v) in labels {
        n.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

fn same(symbols: &Symbols, a: &[(u32, u32)], b: &[(&str, &str)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((an, av), (bn, bv))| symbols.resolve(*an) == *bn && symbols.resolve(*av) == *bv)
}

impl Head {
    fn intern(&mut self, s: &str) -> u32 {
        self.symbols.intern(s)
    }

    /// The id of a string, if it is a symbol.
    fn symbol(&self, s: &str) -> Option<u32> {
        self.symbols.get(s)
    }

    /// A series' labels as strings.
    fn resolve(&self, ids: &[(u32, u32)]) -> Labels {
        self.resolve_with(ids, &mut HashMap::new())
    }

    /// [`Head::resolve`] with one `SharedStr` per symbol across many series (`cache`): a
    /// selection's label names and most of its values are the same few symbols.
    fn resolve_with(&self, ids: &[(u32, u32)], cache: &mut HashMap<u32, SharedStr>) -> Labels {
        let mut text = |id: u32| cache.entry(id).or_insert_with(|| SharedStr::from(self.symbols.resolve(id))).clone();
        ids.iter().map(|&(n, v)| (text(n), text(v))).collect()
    }

    /// The series with exactly these labels (sorted by name), created if new. Returns
    /// the reference and whether it was created.
    pub fn get_or_create(&mut self, labels: &[(&str, &str)]) -> (SeriesRef, bool) {
        let hash = hash_labels(&self.label_hasher, labels.iter().copied());
        if let Some(r) = self.by_labels.find(hash, |r| same(&self.symbols, &self.series[*r as usize].labels, labels)) {
            return (*r, false);
        }
        let r = self.series.len() as SeriesRef;
        let interned: Box<[(u32, u32)]> = labels.iter().map(|(n, v)| (self.intern(n), self.intern(v))).collect();
        for (n, v) in interned.iter() {
            let n = self.symbols.resolve(*n);
            match self.postings.get_mut(n) {
                Some(values) => values.add(*v, r),
                None => self.postings.entry(n.into()).or_default().add(*v, r),
            }
        }
        self.series.push(MemSeries {
            labels: interned,
            closed: Vec::new(),
            head: Chunk::new(),
            out_of_order: None,
            on_disk_until: i64::MIN,
        });
        let (series, symbols, hasher) = (&self.series, &self.symbols, &self.label_hasher);
        self.by_labels.insert_unique(hash, r, |r| {
            hash_labels(
                hasher,
                series[*r as usize].labels.iter().map(|(n, v)| (symbols.resolve(*n), symbols.resolve(*v))),
            )
        });
        (r, true)
    }

    /// Puts back a series read from a checkpoint or the WAL at the reference it was
    /// logged with, so references stay what they were across restarts (the WAL's
    /// forwarders read old segments through the head: see `forward`). Empty labels are
    /// a removed series' slot. A series logged again under a new reference (removed, then
    /// back) leaves its older slot empty.
    pub fn restore_series(&mut self, r: SeriesRef, labels: &[(&str, &str)]) -> SeriesRef {
        while self.series.len() < r as usize {
            self.push_removed();
        }
        if labels.is_empty() {
            match self.series.get(r as usize) {
                None => self.push_removed(),
                Some(s) if !s.labels.is_empty() => self.remove_series(r),
                Some(_) => {}
            }
            return r;
        }
        let hash = hash_labels(&self.label_hasher, labels.iter().copied());
        let existing = self.by_labels.find(hash, |x| same(&self.symbols, &self.series[*x as usize].labels, labels));
        match existing.copied() {
            Some(found) if found == r => return r,
            Some(found) => self.remove_series(found),
            None => {}
        }
        // At the end: `r` itself. (A slot already taken by other labels would mean the log
        // disagrees with the head it built; the series then gets a fresh reference.)
        self.get_or_create(labels).0
    }

    /// An empty slot: a removed series' reference, kept so later references keep theirs.
    fn push_removed(&mut self) {
        self.series.push(MemSeries {
            labels: Box::new([]),
            closed: Vec::new(),
            head: Chunk::new(),
            out_of_order: None,
            on_disk_until: i64::MIN,
        });
        self.removed += 1;
    }

    pub fn append(&mut self, r: SeriesRef, t: i64, v: f64) -> Result<(), Rejected> {
        let series = self.series.get_mut(r as usize).ok_or(Rejected::TooOld)?;
        series.append(t, v, true)?;
        self.samples_appended += 1;
        self.newest = self.newest.max(t);
        Ok(())
    }

    /// Puts back a sample from the WAL or a checkpoint, without the out-of-order window.
    pub fn restore_sample(&mut self, r: SeriesRef, t: i64, v: f64) -> Result<(), Rejected> {
        let series = self.series.get_mut(r as usize).ok_or(Rejected::TooOld)?;
        series.append(t, v, false)?;
        self.samples_appended += 1;
        self.newest = self.newest.max(t);
        Ok(())
    }

    /// A series' labels; `None` for a reference never given or a removed series'.
    pub fn labels(&self, r: SeriesRef) -> Option<Labels> {
        self.series.get(r as usize).filter(|s| !s.labels.is_empty()).map(|s| self.resolve(&s.labels))
    }

    /// Live series (removed ones not counted).
    pub fn num_series(&self) -> usize {
        self.series.len() - self.removed
    }

    pub fn samples_appended(&self) -> u64 {
        self.samples_appended
    }

    /// Bytes of encoded samples held.
    pub fn chunk_bytes(&self) -> usize {
        self.series.iter().map(MemSeries::bytes).sum()
    }

    /// Series matching every matcher, in reference order.
    pub fn select_refs(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        // Start from the most selective non-empty equality; otherwise from everything.
        let mut candidates: Option<Vec<SeriesRef>> = None;
        for m in matchers {
            if let Matcher::Eq(n, v) = m
                && !v.is_empty()
            {
                let list = self
                    .postings
                    .get(n.as_str())
                    .zip(self.symbol(v))
                    .map(|(vals, id)| vals.get(id).to_vec())
                    .unwrap_or_default();
                candidates = Some(match candidates {
                    None => list,
                    Some(c) => intersect(&c, &list),
                });
            }
        }
        let candidates = candidates.unwrap_or_else(|| (0..self.series.len() as SeriesRef).collect());
        candidates
            .into_iter()
            .filter(|r| {
                let labels = &self.series[*r as usize].labels;
                // A removed series has no labels and matches nothing.
                !labels.is_empty()
                    && matchers.iter().all(|m| {
                        let value = labels
                            .iter()
                            .find(|(n, _)| self.symbols.resolve(*n) == m.name())
                            .map_or("", |(_, v)| self.symbols.resolve(*v));
                        m.matches(value)
                    })
            })
            .collect()
    }

    /// Matching series with their samples in `[mint, maxt]`; series without samples in
    /// the range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        self.select_raw(matchers, mint, maxt, &[]).into_iter().filter_map(|r| r.decode(mint, maxt)).collect()
    }

    /// Matching series' chunks overlapping `[mint, maxt]`, copied but not decoded, with
    /// the places in `blocks` (oldest first) that hold more of them.
    pub fn select_raw(&self, matchers: &[Matcher], mint: i64, maxt: i64, blocks: &[Arc<Block>]) -> Vec<RawSeries> {
        let mut symbols = HashMap::new();
        let blocks: Vec<&Arc<Block>> = blocks.iter().filter(|b| b.overlaps(mint, maxt)).collect();
        self.select_refs(matchers)
            .into_iter()
            .filter_map(|r| {
                let s = &self.series[r as usize];
                let on_disk: Vec<(Arc<Block>, usize)> =
                    blocks.iter().filter_map(|b| b.position(r).map(|p| (Arc::clone(b), p))).collect();
                if on_disk.is_empty() && !s.overlaps(mint, maxt) {
                    return None;
                }
                Some(RawSeries { labels: self.resolve_with(&s.labels, &mut symbols), on_disk, ..s.raw(mint, maxt) })
            })
            .collect()
    }

    /// The newest timestamp appended to any series (0 for an empty head).
    pub fn newest(&self) -> i64 {
        self.newest
    }

    /// The starts of the aligned ranges (`width` wide, ending at or before `upto`) that
    /// hold samples ready to go to a block: full chunks, and out-of-order samples the
    /// window no longer lets anything join.
    pub fn persistable_ranges(&self, upto: i64, width: i64) -> std::collections::BTreeSet<i64> {
        let mut starts = std::collections::BTreeSet::new();
        let start_of = |t: i64| t.div_euclid(width) * width;
        for s in self.series.iter().filter(|s| !s.labels.is_empty()) {
            for c in s.closed.iter().take_while(|c| c.max_t() < upto) {
                starts.insert(start_of(c.max_t()));
            }
            let settled = s.max_t().saturating_sub(OUT_OF_ORDER_WINDOW_MS).min(upto);
            for (t, _) in s.ooo().iter().take_while(|(t, _)| *t < settled) {
                starts.insert(start_of(*t));
            }
        }
        starts.retain(|start| start.saturating_add(width) <= upto);
        starts
    }

    /// What of the range `[start, end)` goes to a block, per series in reference order:
    /// the full chunks whose newest sample is in it, and the settled out-of-order samples
    /// in it.
    pub fn collect_persistable(&self, (start, end): (i64, i64)) -> Vec<block::SeriesData> {
        let mut out = Vec::new();
        for (r, s) in self.series.iter().enumerate() {
            if s.labels.is_empty() {
                continue;
            }
            let chunks: Vec<block::ChunkData> = s
                .closed
                .iter()
                .filter(|c| c.max_t() >= start && c.max_t() < end)
                .map(|c| {
                    let (bytes, count) = c.encoded();
                    block::ChunkData { bytes: bytes.to_vec(), count, min_t: c.min_t(), max_t: c.max_t() }
                })
                .collect();
            let settled = s.max_t().saturating_sub(OUT_OF_ORDER_WINDOW_MS).min(end);
            let late: Vec<(i64, f64)> = s.ooo().iter().copied().filter(|(t, _)| *t >= start && *t < settled).collect();
            if chunks.is_empty() && late.is_empty() {
                continue;
            }
            out.push(block::SeriesData {
                r: r as SeriesRef,
                labels: self.label_strings(&s.labels),
                chunks,
                samples: late,
            });
        }
        out
    }

    /// Forgets what `written` put on disk: those full chunks and out-of-order samples
    /// leave the head, and each series remembers how far its disk data reaches.
    pub fn forget_persisted(&mut self, written: &[block::SeriesData]) {
        for w in written {
            let Some(s) = self.series.get_mut(w.r as usize) else { continue };
            let bounds: std::collections::HashSet<(i64, i64, u16)> =
                w.chunks.iter().map(|c| (c.min_t, c.max_t, c.count)).collect();
            s.closed.retain(|c| !bounds.contains(&(c.min_t(), c.max_t(), c.samples() as u16)));
            if let Some(ooo) = s.out_of_order.as_mut() {
                ooo.retain(|(t, _)| w.samples.binary_search_by_key(t, |x| x.0).is_err());
                if ooo.is_empty() {
                    s.out_of_order = None;
                }
            }
            let newest =
                w.chunks.iter().map(|c| c.max_t).chain(w.samples.last().map(|x| x.0)).max().unwrap_or(i64::MIN);
            s.on_disk_until = s.on_disk_until.max(newest);
        }
    }

    /// At open, for a series a block holds up to `newest`: what the head holds of it that
    /// is on disk already (replayed from the WAL after a crash) goes, and later samples
    /// only are accepted.
    pub fn trim_on_disk(&mut self, r: SeriesRef, newest: i64) {
        let Some(s) = self.series.get_mut(r as usize) else { return };
        s.on_disk_until = s.on_disk_until.max(newest);
        s.closed.retain(|c| c.max_t() > newest);
        if let Some(ooo) = s.out_of_order.as_mut() {
            ooo.retain(|(t, _)| *t > newest);
            if ooo.is_empty() {
                s.out_of_order = None;
            }
        }
    }

    /// The head's reference for a series a block lists as `r` with `labels`: `r` itself
    /// when the head agrees (the usual case: references are stable), else the head's
    /// series with those labels, else the series is brought back (at `r` when that slot
    /// is free). A series brought back comes with the WAL record that makes it durable.
    pub fn resolve_listed(
        &mut self,
        r: SeriesRef,
        labels: &[(String, String)],
    ) -> (SeriesRef, Option<super::wal::Record>) {
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if let Some(s) = self.series.get(r as usize)
            && same(&self.symbols, &s.labels, &pairs)
        {
            return (r, None);
        }
        let hash = hash_labels(&self.label_hasher, pairs.iter().copied());
        if let Some(found) =
            self.by_labels.find(hash, |x| same(&self.symbols, &self.series[*x as usize].labels, &pairs))
        {
            return (*found, None);
        }
        let free = self.series.get(r as usize).is_none_or(|s| s.labels.is_empty());
        let got = if free { self.restore_series(r, &pairs) } else { self.get_or_create(&pairs).0 };
        (got, Some(super::wal::Record::Series { r: got, labels: labels.to_vec() }))
    }

    fn label_strings(&self, ids: &[(u32, u32)]) -> Vec<(String, String)> {
        ids.iter().map(|(n, v)| (self.symbols.resolve(*n).to_string(), self.symbols.resolve(*v).to_string())).collect()
    }

    /// Puts back a chunk read from a checkpoint: full chunks in order, then the open one.
    pub fn restore_chunk(&mut self, r: SeriesRef, chunk: Chunk) {
        if let Some(s) = self.series.get_mut(r as usize) {
            self.samples_appended += chunk.len() as u64;
            self.newest = self.newest.max(chunk.max_t());
            if chunk.is_full() {
                s.closed.reserve_exact(1);
                s.closed.push(chunk.seal());
            } else {
                s.head = chunk;
            }
        }
    }

    /// Everything in the head as records: per series its labels, chunks and out-of-order
    /// samples, in reference order (so refs come back the same).
    pub fn snapshot(&self) -> Vec<super::wal::Record> {
        use super::wal::Record;
        let mut out = Vec::with_capacity(self.series.len() * 3);
        for (r, s) in self.series.iter().enumerate() {
            let r = r as SeriesRef;
            if s.labels.is_empty() {
                // A removed series' slot: kept, so the references after it stay theirs.
                out.push(Record::Series { r, labels: Vec::new() });
                continue;
            }
            out.push(Record::Series {
                r,
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| (self.symbols.resolve(*n).to_string(), self.symbols.resolve(*v).to_string()))
                    .collect(),
            });
            let encoded = s.closed.iter().map(Sealed::encoded).chain((!s.head.is_empty()).then(|| s.head.encoded()));
            for (bytes, count) in encoded {
                out.push(Record::Chunk { r, count, bytes: bytes.to_vec() });
            }
            if !s.ooo().is_empty() {
                out.push(Record::Samples(s.ooo().iter().map(|(t, v)| (r, *t, *v)).collect()));
            }
        }
        out
    }

    /// Drops full chunks whose newest sample is older than `min_t`, and out-of-order
    /// samples older than it; a series left with nothing is forgotten unless `held` says
    /// a block still holds it. Returns the bytes freed.
    pub fn drop_before(&mut self, min_t: i64, held: impl Fn(SeriesRef) -> bool) -> usize {
        let mut freed = 0;
        let mut emptied = Vec::new();
        for (r, s) in self.series.iter_mut().enumerate() {
            if s.labels.is_empty() {
                continue; // already removed
            }
            let keep_from = s.closed.iter().position(|c| c.max_t() >= min_t).unwrap_or(s.closed.len());
            freed += s.closed.drain(..keep_from).map(|c| c.bytes()).sum::<usize>();
            if let Some(ooo) = s.out_of_order.as_mut() {
                ooo.retain(|(t, _)| *t >= min_t);
                if ooo.is_empty() {
                    s.out_of_order = None;
                }
            }
            // A series whose newest sample is older than the cutoff is gone entirely.
            if s.closed.is_empty() && s.out_of_order.is_none() && (s.head.is_empty() || s.head.max_t() < min_t) {
                freed += s.head.bytes();
                if held(r as SeriesRef) {
                    // Its samples live on in blocks: the series (labels, index) stays.
                    if !s.head.is_empty() {
                        s.head = Chunk::new();
                    }
                } else {
                    emptied.push(r as SeriesRef);
                }
            }
        }
        for r in emptied {
            self.remove_series(r);
        }
        freed
    }

    /// Forgets a series: its chunks, its labels and its index entries. Its slot stays
    /// (references are positions) but holds nothing; a series with the same labels later
    /// gets a new slot.
    fn remove_series(&mut self, r: SeriesRef) {
        let Some(s) = self.series.get_mut(r as usize) else { return };
        let ids = std::mem::take(&mut s.labels);
        s.closed = Vec::new();
        s.head = Chunk::new();
        s.out_of_order = None;
        let pairs: Labels = self.resolve(&ids);
        let hash = hash_labels(&self.label_hasher, pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if let Ok(entry) = self.by_labels.find_entry(hash, |x| *x == r) {
            entry.remove();
        }
        let pairs = pairs.into_iter().zip(ids.iter()).map(|((n, _), (_, v))| (n, *v));
        for (n, v) in pairs {
            if let Some(values) = self.postings.get_mut(n.as_str()) {
                values.remove(v, r);
                if values.is_empty() {
                    self.postings.remove(n.as_str());
                }
            }
        }
        self.removed += 1;
    }

    /// The time before which full chunks must go to bring the head under `max_bytes`
    /// (`None` when it already fits).
    pub fn cutoff_for_size(&self, max_bytes: usize) -> Option<i64> {
        let total = self.chunk_bytes();
        if total <= max_bytes {
            return None;
        }
        let mut closed: Vec<(i64, usize)> =
            self.series.iter().flat_map(|s| s.closed.iter().map(|c| (c.max_t(), c.bytes()))).collect();
        closed.sort_unstable();
        let mut over = total - max_bytes;
        for (max_t, bytes) in closed {
            if over <= bytes {
                return Some(max_t.saturating_add(1));
            }
            over -= bytes;
        }
        Some(i64::MAX)
    }

    /// Labels of matching series with samples in `[mint, maxt]` (in the head, or in a
    /// block overlapping the range), without decoding any.
    pub fn series_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64, blocks: &[Arc<Block>]) -> Vec<Labels> {
        let blocks: Vec<&Arc<Block>> = blocks.iter().filter(|b| b.overlaps(mint, maxt)).collect();
        self.select_refs(matchers)
            .into_iter()
            .filter(|r| {
                self.series[*r as usize].overlaps(mint, maxt) || blocks.iter().any(|b| b.position(*r).is_some())
            })
            .map(|r| self.resolve(&self.series[r as usize].labels))
            .collect()
    }

    /// Label names in use, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.keys().map(|k| k.to_string()).collect()
    }

    /// Values of one label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .postings
            .get(name)
            .map(|vals| vals.values().map(|id| self.symbols.resolve(id).to_string()).collect())
            .unwrap_or_default();
        values.sort_unstable();
        values
    }
}

fn intersect(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(n: &str, v: &str) -> Matcher {
        Matcher::Eq(n.into(), v.into())
    }

    fn head_with_series() -> Head {
        let mut h = Head::default();
        for (job, inst) in [("api", "a"), ("api", "b"), ("db", "a")] {
            let (r, created) = h.get_or_create(&[("__name__", "up"), ("instance", inst), ("job", job)]);
            assert!(created);
            h.append(r, 1000, 1.0).expect("append");
        }
        h
    }

    #[test]
    fn series_are_deduplicated_and_labels_interned() {
        let mut h = head_with_series();
        let (r, created) = h.get_or_create(&[("__name__", "up"), ("instance", "a"), ("job", "api")]);
        assert!(!created);
        assert_eq!(r, 0);
        assert_eq!(h.num_series(), 3);
        let a = h.series[0].labels[0].1;
        let b = h.series[1].labels[0].1;
        assert_eq!(a, b, "the string \"up\" is stored once");
    }

    #[test]
    fn series_beyond_the_first_block_are_found() {
        let mut h = Head::default();
        for i in 0..(BLOCK + 10) {
            let v = i.to_string();
            let (r, _) = h.get_or_create(&[("__name__", "m"), ("i", &v)]);
            h.append(r, 1, i as f64).expect("append");
        }
        let r = h.select_refs(&[Matcher::Eq("i".into(), (BLOCK + 5).to_string())]);
        assert_eq!(r, [(BLOCK + 5) as SeriesRef]);
        assert_eq!(
            h.select(&[Matcher::Eq("i".into(), (BLOCK + 5).to_string())], 0, 10)[0].samples,
            [(1, (BLOCK + 5) as f64)]
        );
        assert_eq!(h.num_series(), BLOCK + 10);
    }

    #[test]
    fn series_labels_respect_the_time_range_without_decoding() {
        let h = head_with_series();
        assert_eq!(h.series_labels(&[eq("job", "api")], 0, 2000, &[]).len(), 2);
        assert!(h.series_labels(&[eq("job", "api")], 5000, 6000, &[]).is_empty(), "no samples in range");
    }

    #[test]
    fn retention_forgets_series_whose_samples_are_all_gone() {
        let mut h = Head::default();
        let (old, _) = h.get_or_create(&[("__name__", "m"), ("pod", "gone")]);
        h.append(old, 1_000, 1.0).expect("append");
        let (live, _) = h.get_or_create(&[("__name__", "m"), ("pod", "here")]);
        h.append(live, 1_000, 1.0).expect("append");
        h.append(live, 90_000, 2.0).expect("append");
        h.drop_before(60_000, |_| false);
        assert_eq!(h.num_series(), 1);
        assert_eq!(h.label_values("pod"), ["here"], "the index forgot it");
        assert_eq!(h.select_refs(&[Matcher::Ne("pod".into(), "x".into())]), [live]);
        // The snapshot keeps the removed series' slot (empty), so references stay theirs.
        let series: Vec<bool> = h
            .snapshot()
            .into_iter()
            .filter_map(|r| match r {
                super::super::wal::Record::Series { labels, .. } => Some(labels.is_empty()),
                _ => None,
            })
            .collect();
        assert_eq!(series, [true, false]);
        // The same labels again make a new, working series.
        let (again, created) = h.get_or_create(&[("__name__", "m"), ("pod", "gone")]);
        assert!(created && again != old);
        h.append(again, 100_000, 3.0).expect("append");
        assert_eq!(h.select(&[eq("pod", "gone")], 0, i64::MAX)[0].samples, [(100_000, 3.0)]);
    }

    #[test]
    fn many_series_found_again_and_removed() {
        let mut h = Head::default();
        let labels = |i: usize| [("__name__".to_string(), format!("m{}", i % 7)), ("id".to_string(), i.to_string())];
        let refs: Vec<SeriesRef> = (0..5_000)
            .map(|i| {
                let l = labels(i);
                let (r, created) = h.get_or_create(&[(&l[0].0, &l[0].1), (&l[1].0, &l[1].1)]);
                assert!(created);
                r
            })
            .collect();
        for (i, r) in refs.iter().enumerate() {
            let l = labels(i);
            assert_eq!(h.get_or_create(&[(&l[0].0, &l[0].1), (&l[1].0, &l[1].1)]), (*r, false));
        }
        h.remove_series(refs[42]);
        let l = labels(42);
        let (again, created) = h.get_or_create(&[(&l[0].0, &l[0].1), (&l[1].0, &l[1].1)]);
        assert!(created && again != refs[42], "a removed series is no longer found");
        assert_eq!(h.get_or_create(&[(&l[0].0, &l[0].1), (&l[1].0, &l[1].1)]), (again, false));
    }

    #[test]
    fn all_four_matchers_select() {
        let h = head_with_series();
        let names = |ms: &[Matcher]| h.select_refs(ms);
        assert_eq!(names(&[eq("job", "api")]), [0, 1]);
        assert_eq!(names(&[eq("job", "api"), eq("instance", "b")]), [1]);
        assert_eq!(names(&[Matcher::Ne("job".into(), "api".into())]), [2]);
        assert_eq!(names(&[Matcher::regex("job", "a.*", false).expect("re")]), [0, 1]);
        assert_eq!(names(&[Matcher::regex("job", "a", false).expect("re")]), Vec::<u32>::new(), "anchored");
        assert_eq!(names(&[eq("__name__", "up"), Matcher::regex("instance", "a", true).expect("re")]), [1]);
        assert_eq!(names(&[eq("missing", "")]), [0, 1, 2], "empty matches an absent label");
        assert_eq!(h.label_values("job"), ["api", "db"]);
        assert_eq!(h.label_names(), ["__name__", "instance", "job"]);
    }

    #[test]
    fn label_values_sort_by_string_not_by_symbol_id() {
        let mut h = Head::default();
        h.get_or_create(&[("__name__", "up"), ("job", "zeta")]);
        h.get_or_create(&[("__name__", "up"), ("job", "alpha")]);
        h.get_or_create(&[("__name__", "up"), ("job", "mid")]);
        assert_eq!(h.label_values("job"), ["alpha", "mid", "zeta"]);
        assert_eq!(h.select_refs(&[eq("job", "alpha")]), [1]);
        assert_eq!(h.select_refs(&[eq("job", "up")]), Vec::<u32>::new(), "a symbol, but not a value of job");
        assert_eq!(h.select_refs(&[eq("job", "nowhere")]), Vec::<u32>::new());
    }

    #[test]
    fn appends_roll_chunks_accept_a_small_window_and_refuse_the_rest() {
        let mut h = Head::default();
        let (r, _) = h.get_or_create(&[("__name__", "x")]);
        for i in 0..300 {
            h.append(r, i * 1000, i as f64).expect("in order");
        }
        assert_eq!(h.series[0].closed.len(), 2);
        assert_eq!(h.append(r, 299_000, 299.0), Ok(()), "same sample again is fine");
        assert_eq!(h.append(r, 299_000, 1.0), Err(Rejected::Duplicate));
        assert_eq!(h.append(r, 299_000 - OUT_OF_ORDER_WINDOW_MS - 1, 1.0), Err(Rejected::TooOld));
        assert_eq!(h.append(r, 298_500, 7.0), Ok(()), "inside the window");
        assert_eq!(h.append(r, 298_000, 3.0), Err(Rejected::Duplicate), "an in-order sample is there");
        let data = h.select(&[eq("__name__", "x")], 297_000, 299_000);
        assert_eq!(data[0].samples, vec![(297_000, 297.0), (298_000, 298.0), (298_500, 7.0), (299_000, 299.0)]);
        assert!(h.select(&[eq("__name__", "x")], 400_000, 500_000).is_empty());
        // Every sample comes back across the two sealed chunks and the reused head.
        let all = h.select(&[eq("__name__", "x")], 0, 300_000).remove(0).samples;
        assert_eq!(all.len(), 301);
        assert!(all.iter().filter(|(t, _)| t % 1000 == 0).all(|(t, v)| *v == (t / 1000) as f64));
    }
}
