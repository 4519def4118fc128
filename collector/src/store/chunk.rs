//! Compressed chunks of samples, as in Facebook's Gorilla paper (and Prometheus's XOR
//! chunks), cut at [`MAX_SAMPLES`] (120). Timestamps are delta-of-deltas in 1, 14, 17, 20
//! or 64-bit buckets, so a regular scrape costs about one bit per timestamp. Values are
//! coded the cheapest of four ways: the same bits again (1 bit); an integer delta at a
//! sticky decimal scale (a counter step or a one-decimal gauge costs about ten bits); a
//! new scale and the integer; else Gorilla's XOR with the previous value's bits (NaN,
//! staleness markers, any other float). A format byte leads each chunk, so a checkpoint
//! chunk in another encoding is refused, never misread.
//!
//! Values round-trip bit for bit, so NaN payloads (Prometheus's staleness marker is one)
//! survive; property tests check this over random bits and decimal values. A full chunk
//! is sealed ([`Sealed`]) to its bytes and bounds only, none of the appender's state.

/// A chunk is cut at this many samples; longer chunks compress a little better but make
/// every read decode more.
pub const MAX_SAMPLES: u16 = 120;
/// The first buffer of a new chunk; it doubles from there as samples come.
const NEW_CHUNK_BYTES: usize = 32;

#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `value`, most significant first.
    fn write_bits(&mut self, value: u64, n: u8) {
        for i in (0..n).rev() {
            self.write_bit((value >> i) & 1 == 1);
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    /// The 64 bits from the read position, left-aligned, zeros past the end. Only the
    /// first 57 are sure to be whole (a read starts anywhere in a byte).
    #[inline]
    fn peek(&self) -> u64 {
        let byte = self.pos / 8;
        let word = match self.bytes.get(byte..byte + 8) {
            Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => {
                let mut buf = [0u8; 8];
                let rest = self.bytes.get(byte..).unwrap_or_default();
                buf[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(buf)
            }
        };
        word << (self.pos % 8)
    }

    /// Moves on `n` bits, if there are that many.
    #[inline]
    fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.bytes.len() * 8 {
            return None;
        }
        self.pos += n;
        Some(())
    }

    #[inline]
    fn read_bit(&mut self) -> Option<bool> {
        Some(self.read_bits(1)? == 1)
    }

    /// The next `n` (at most 64) bits, most significant first.
    #[inline]
    fn read_bits(&mut self, n: u8) -> Option<u64> {
        match n {
            0 => Some(0),
            1..=57 => {
                let v = self.peek() >> (64 - n);
                self.skip(usize::from(n))?;
                Some(v)
            }
            58..=64 => {
                let high = self.read_bits(32)?;
                Some(high << (n - 32) | self.read_bits(n - 32)?)
            }
            _ => None,
        }
    }

    /// A prefix code of up to `max` one bits ended by a zero (`0`, `10`, `110`, ...,
    /// or `max` ones with no zero): the number of ones, read in one step.
    #[inline]
    fn read_prefix(&mut self, max: u32) -> Option<u32> {
        let ones = self.peek().leading_ones().min(max);
        let len = if ones < max { ones + 1 } else { ones };
        self.skip(len as usize)?;
        Some(ones)
    }
}

/// Decodes an `n`-bit delta-of-delta bucket. The encoder's ranges are
/// `-(2^(n-1) - 1) ..= 2^(n-1)`, so (as in Prometheus) exactly `2^(n-1)` is positive and
/// only larger values wrap to negative.
fn bucket_value(v: u64, n: u8) -> i64 {
    let v = v as i64;
    if v > 1 << (n - 1) { v - (1 << n) } else { v }
}

/// First byte of every chunk: the encoding below.
const FORMAT: u8 = 1;
/// Values are tried as integers scaled by 10^0 ..= 10^MAX_SCALE.
const MAX_SCALE: u8 = 6;
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Integers beyond this are not exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// `v` as an integer at decimal scale `s`, if dividing it back gives exactly `v`'s bits.
pub(crate) fn scaled(v: f64, s: u8) -> Option<i64> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    let m = (v * POW10[usize::from(s)]).round();
    if m.abs() >= MAX_EXACT {
        return None;
    }
    let m = m as i64;
    (unscale(m, s).to_bits() == v.to_bits()).then_some(m)
}

#[inline]
pub(crate) fn unscale(m: i64, s: u8) -> f64 {
    // Dividing by 1 changes nothing: integers (counters) skip the division.
    if s == 0 { m as f64 } else { m as f64 / POW10[usize::from(s)] }
}

/// The smallest decimal scale that represents `v` exactly, and the integer.
pub(crate) fn minimal_scale(v: f64) -> Option<(u8, i64)> {
    (0..=MAX_SCALE).find_map(|s| scaled(v, s).map(|m| (s, m)))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// What encoder and decoder both know about the previous value.
///
/// Values are coded one of four ways (after the first, which is stored raw):
/// `0` the same bits again; `10` + an integer delta at the current decimal scale (a
/// counter step or a gauge with few decimals costs about ten bits); `110` + a new scale +
/// the integer; `111` + Gorilla's XOR of the bits (any other float, NaN included). The
/// scale sticks while values fit it, so a gauge wandering between 51 and 51.7 stays cheap.
#[derive(Debug, Clone, Copy)]
struct ValueState {
    bits: u64,
    leading: u8,
    trailing: u8,
    scale: Option<u8>,
    int: i64,
}

impl ValueState {
    fn first(bits: u64) -> Self {
        let (scale, int) = match minimal_scale(f64::from_bits(bits)) {
            Some((s, m)) => (Some(s), m),
            None => (None, 0),
        };
        ValueState { bits, leading: 0xff, trailing: 0, scale, int }
    }
}

impl BitWriter {
    /// An unsigned integer in one of five widths.
    fn write_varbits(&mut self, z: u64) {
        match z {
            0..=0x7f => {
                self.write_bit(false);
                self.write_bits(z, 7);
            }
            0x80..=0x3fff => {
                self.write_bits(0b10, 2);
                self.write_bits(z, 14);
            }
            0x4000..=0xff_ffff => {
                self.write_bits(0b110, 3);
                self.write_bits(z, 24);
            }
            0x100_0000..=0xff_ffff_ffff => {
                self.write_bits(0b1110, 4);
                self.write_bits(z, 40);
            }
            _ => {
                self.write_bits(0b1111, 4);
                self.write_bits(z, 64);
            }
        }
    }
}

impl BitReader<'_> {
    fn read_varbits(&mut self) -> Option<u64> {
        const WIDTHS: [u8; 5] = [7, 14, 24, 40, 64];
        let width = WIDTHS[self.read_prefix(4)? as usize];
        self.read_bits(width)
    }
}

/// The state an appender carries between samples.
#[derive(Debug, Clone, Copy)]
struct Tail {
    t: i64,
    delta: i64,
    value: ValueState,
}

/// A chunk being written or already full.
#[derive(Debug, Clone)]
pub struct Chunk {
    bits: BitWriter,
    count: u16,
    tail: Option<Tail>,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk::new()
    }
}

impl Chunk {
    pub fn new() -> Self {
        Chunk { bits: BitWriter::default(), count: 0, tail: None }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= MAX_SAMPLES
    }

    /// Timestamp of the oldest sample (0 when empty).
    pub fn min_t(&self) -> i64 {
        first_timestamp(&self.bits.bytes)
    }

    /// Timestamp of the newest sample (`i64::MIN` when empty).
    pub fn max_t(&self) -> i64 {
        self.tail.map_or(i64::MIN, |t| t.t)
    }

    /// Encoded size.
    pub fn bytes(&self) -> usize {
        self.bits.bytes.len()
    }

    /// Appends a sample. Timestamps must not go backwards (the head keeps out-of-order
    /// samples elsewhere); a sample at an equal timestamp replaces nothing and is refused.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        let bits = v.to_bits();
        let Some(tail) = self.tail else {
            self.bits.write_bits(u64::from(FORMAT), 8);
            self.bits.write_bits(t as u64, 64);
            self.bits.write_bits(bits, 64);
            self.count = 1;
            self.tail = Some(Tail { t, delta: 0, value: ValueState::first(bits) });
            return true;
        };
        if t <= tail.t || self.is_full() {
            return false;
        }
        let delta = t.wrapping_sub(tail.t);
        let dod = delta.wrapping_sub(tail.delta);
        match dod {
            0 => self.bits.write_bit(false),
            -8191..=8192 => {
                self.bits.write_bits(0b10, 2);
                self.bits.write_bits(dod as u64, 14);
            }
            -65535..=65536 => {
                self.bits.write_bits(0b110, 3);
                self.bits.write_bits(dod as u64, 17);
            }
            -524_287..=524_288 => {
                self.bits.write_bits(0b1110, 4);
                self.bits.write_bits(dod as u64, 20);
            }
            _ => {
                self.bits.write_bits(0b1111, 4);
                self.bits.write_bits(dod as u64, 64);
            }
        }
        let value = self.write_value(v, tail.value);
        self.tail = Some(Tail { t, delta, value });
        self.count += 1;
        true
    }

    fn write_value(&mut self, v: f64, prev: ValueState) -> ValueState {
        let bits = v.to_bits();
        if bits == prev.bits {
            self.bits.write_bit(false);
            return prev;
        }
        if let Some(s) = prev.scale
            && let Some(m) = scaled(v, s)
        {
            self.bits.write_bits(0b10, 2);
            self.bits.write_varbits(zigzag(m.wrapping_sub(prev.int)));
            return ValueState { bits, int: m, ..prev };
        }
        if let Some((s, m)) = minimal_scale(v) {
            self.bits.write_bits(0b110, 3);
            self.bits.write_bits(u64::from(s), 3);
            self.bits.write_varbits(zigzag(m));
            return ValueState { bits, scale: Some(s), int: m, ..prev };
        }
        self.bits.write_bits(0b111, 3);
        let xor = bits ^ prev.bits;
        // Five bits hold the leading count, so it is capped at 31.
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        let (leading, trailing) = if prev.leading != 0xff && leading >= prev.leading && trailing >= prev.trailing {
            // Fits in the previous window of meaningful bits.
            self.bits.write_bit(false);
            let significant = 64 - prev.leading - prev.trailing;
            self.bits.write_bits(xor >> prev.trailing, significant);
            (prev.leading, prev.trailing)
        } else {
            self.bits.write_bit(true);
            let significant = 64 - leading - trailing;
            self.bits.write_bits(u64::from(leading), 5);
            // 64 significant bits are written as 0 (six bits hold 0..=63).
            self.bits.write_bits(u64::from(significant) & 0x3f, 6);
            self.bits.write_bits(xor >> trailing, significant);
            (leading, trailing)
        };
        ValueState { bits, leading, trailing, scale: None, int: 0 }
    }

    /// Freezes a chunk that takes no more appends into its bytes and bounds alone.
    pub fn seal(self) -> Sealed {
        let max_t = self.max_t();
        Sealed { bytes: self.bits.bytes.into_boxed_slice(), count: self.count, max_t }
    }

    /// Freezes this chunk's samples into an exact-size copy and starts it again with a
    /// small buffer. The full buffer goes back to the allocator whole, in a size class the
    /// next growing chunk reuses; shrinking it in place instead (`into_boxed_slice`) leaves
    /// odd-sized holes, and keeping it holds a whole chunk's room for one sample.
    pub fn seal_and_clear(&mut self) -> Sealed {
        let sealed = Sealed { bytes: Box::from(&self.bits.bytes[..]), count: self.count, max_t: self.max_t() };
        self.bits.bytes = Vec::with_capacity(NEW_CHUNK_BYTES);
        self.bits.free = 0;
        self.count = 0;
        self.tail = None;
        sealed
    }

    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter { reader: BitReader { bytes: &self.bits.bytes, pos: 0 }, remaining: self.count, state: None }
    }

    /// The encoded bytes and sample count, for checkpoints.
    pub fn encoded(&self) -> (&[u8], u16) {
        (&self.bits.bytes, self.count)
    }

    /// Rebuilds a chunk from `encoded` output. Fails on bytes that do not decode to
    /// `count` samples; a rebuilt chunk can be appended to again.
    pub fn from_encoded(bytes: Vec<u8>, count: u16) -> Option<Self> {
        if count > 0 && bytes.first() != Some(&FORMAT) {
            return None;
        }
        let mut chunk = Chunk { bits: BitWriter { bytes, free: 0 }, count, tail: None };
        let (state, used_bits) = {
            let mut it = chunk.iter();
            let last = it.by_ref().last();
            if it.remaining != 0 || (count > 0 && last.is_none()) {
                return None;
            }
            (it.state, it.reader.pos)
        };
        let free = (chunk.bits.bytes.len() * 8).checked_sub(used_bits)?;
        if free >= 8 {
            return None;
        }
        chunk.bits.free = free as u8;
        chunk.tail = state.map(|s| Tail { t: s.t, delta: s.delta, value: s.value });
        Some(chunk)
    }
}

/// The first sample's timestamp, which every chunk stores whole right after its format
/// byte: kept there rather than in a field, 8 bytes less for every chunk in the head.
fn first_timestamp(bytes: &[u8]) -> i64 {
    bytes.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, i64::from_be_bytes)
}

/// A full chunk, frozen: its exact bytes and its bounds, and none of the appender's
/// state. The head keeps most of its samples in these.
#[derive(Debug, Clone)]
pub struct Sealed {
    bytes: Box<[u8]>,
    count: u16,
    max_t: i64,
}

impl Sealed {
    pub fn samples(&self) -> usize {
        usize::from(self.count)
    }

    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter { reader: BitReader { bytes: &self.bytes, pos: 0 }, remaining: self.count, state: None }
    }
    pub fn min_t(&self) -> i64 {
        first_timestamp(&self.bytes)
    }
    pub fn max_t(&self) -> i64 {
        self.max_t
    }
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn encoded(&self) -> (&[u8], u16) {
        (&self.bytes, self.count)
    }
}

/// The samples of a chunk's encoded bytes (as [`Chunk::encoded`] gives them), read where
/// they lie: an on-disk block's chunks are decoded straight from the bytes read. Bytes
/// that do not decode end the iteration early, never a panic.
pub fn iter_encoded(bytes: &[u8], count: u16) -> ChunkIter<'_> {
    ChunkIter { reader: BitReader { bytes, pos: 0 }, remaining: count, state: None }
}

#[derive(Debug, Clone, Copy)]
struct ReadState {
    t: i64,
    delta: i64,
    value: ValueState,
}

pub struct ChunkIter<'a> {
    reader: BitReader<'a>,
    remaining: u16,
    state: Option<ReadState>,
}

impl ChunkIter<'_> {
    fn read_value(&mut self, prev: ValueState) -> Option<ValueState> {
        let r = &mut self.reader;
        // 0: the same value; 10: an integer delta; 110: a new scale; 111: XOR.
        let kind = r.read_prefix(3)?;
        if kind == 0 {
            return Some(prev);
        }
        if kind == 1 {
            let m = prev.int.wrapping_add(unzigzag(r.read_varbits()?));
            let v = unscale(m, prev.scale?);
            return Some(ValueState { bits: v.to_bits(), int: m, ..prev });
        }
        if kind == 2 {
            let s = r.read_bits(3)? as u8;
            if s > MAX_SCALE {
                return None;
            }
            let m = unzigzag(r.read_varbits()?);
            return Some(ValueState { bits: unscale(m, s).to_bits(), scale: Some(s), int: m, ..prev });
        }
        let (mut leading, mut trailing) = (prev.leading, prev.trailing);
        if r.read_bit()? {
            leading = r.read_bits(5)? as u8;
            let mut significant = r.read_bits(6)? as u8;
            if significant == 0 {
                significant = 64;
            }
            trailing = 64u8.checked_sub(leading + significant)?;
        } else if leading == 0xff {
            return None; // a reuse of a window that was never opened: corrupt
        }
        let significant = 64 - leading - trailing;
        let xor = r.read_bits(significant)? << trailing;
        Some(ValueState { bits: prev.bits ^ xor, leading, trailing, scale: None, int: 0 })
    }

    /// The common sample read from one 64-bit word: on time (delta-of-delta 0) with the
    /// same value, or with an integer delta of up to 14 bits at the current scale. `None`
    /// (nothing read) for anything else, which [`ChunkIter::next_sample`] reads field by
    /// field. Bitstreams are a chain of dependent reads; taking the usual case in one
    /// load halves the cost of a sample.
    #[inline]
    fn regular_sample(&mut self, s: &mut ReadState) -> Option<(i64, f64)> {
        let w = self.reader.peek();
        if w >> 63 != 0 {
            return None; // the timestamp is off the regular step
        }
        let (bits, value) = match (w << 1) >> 62 {
            0b00 | 0b01 => (2, s.value),
            0b10 => {
                let scale = s.value.scale?;
                let x = w << 3;
                let (len, z) = match x >> 62 {
                    0b00 | 0b01 => (1 + 7, (x << 1) >> 57),
                    0b10 => (2 + 14, (x << 2) >> 50),
                    _ => return None,
                };
                let m = s.value.int.wrapping_add(unzigzag(z));
                (3 + len, ValueState { bits: unscale(m, scale).to_bits(), int: m, ..s.value })
            }
            _ => return None,
        };
        self.reader.skip(bits)?;
        s.t = s.t.wrapping_add(s.delta);
        s.value = value;
        Some((s.t, f64::from_bits(value.bits)))
    }

    fn next_sample(&mut self) -> Option<(i64, f64)> {
        let Some(mut s) = self.state else {
            if self.reader.read_bits(8)? != u64::from(FORMAT) {
                return None;
            }
            let t = self.reader.read_bits(64)? as i64;
            let v = self.reader.read_bits(64)?;
            self.state = Some(ReadState { t, delta: 0, value: ValueState::first(v) });
            return Some((t, f64::from_bits(v)));
        };
        if let Some(sample) = self.regular_sample(&mut s) {
            self.state = Some(s);
            return Some(sample);
        }
        let dod = match self.reader.read_prefix(4)? {
            0 => 0,
            1 => bucket_value(self.reader.read_bits(14)?, 14),
            2 => bucket_value(self.reader.read_bits(17)?, 17),
            3 => bucket_value(self.reader.read_bits(20)?, 20),
            _ => self.reader.read_bits(64)? as i64,
        };
        s.delta = s.delta.wrapping_add(dod);
        s.t = s.t.wrapping_add(s.delta);
        s.value = self.read_value(s.value)?;
        self.state = Some(s);
        Some((s.t, f64::from_bits(s.value.bits)))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let sample = self.next_sample()?;
        self.remaining -= 1;
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Prometheus's staleness marker.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn round_trip(samples: &[(i64, f64)]) {
        let mut c = Chunk::new();
        for (t, v) in samples {
            assert!(c.append(*t, *v));
        }
        let back: Vec<(i64, u64)> = c.iter().map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(back, want);
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            assert_eq!((c.min_t(), c.max_t()), (first.0, last.0), "bounds of the open chunk");
            if c.is_full() {
                let sealed = c.clone().seal();
                assert_eq!((sealed.min_t(), sealed.max_t()), (first.0, last.0), "bounds of the sealed chunk");
            }
        }
        let (bytes, count) = c.encoded();
        let mut rebuilt = Chunk::from_encoded(bytes.to_vec(), count).expect("rebuild");
        assert_eq!(rebuilt.min_t(), c.min_t());
        assert_eq!(rebuilt.iter().map(|(t, v)| (t, v.to_bits())).collect::<Vec<_>>(), want);
        if let Some(next) = samples.last().and_then(|(t, _)| t.checked_add(1))
            && !rebuilt.is_full()
        {
            assert!(rebuilt.append(next, 42.0), "a rebuilt chunk takes appends");
            assert_eq!(rebuilt.iter().last(), Some((next, 42.0)));
        }
    }

    #[test]
    fn regular_scrapes_compress_to_a_few_bits() {
        let mut c = Chunk::new();
        let mut v = 1000.0;
        for i in 0..120 {
            v += 1.0;
            assert!(c.append(1_700_000_000_000 + i * 15_000, v));
        }
        assert!(c.bytes() < 120 * 3, "{} bytes for 120 samples", c.bytes());
        assert!(c.is_full());
        assert!(!c.append(1_800_000_000_000, 1.0));
    }

    #[test]
    fn decimal_gauges_and_counters_cost_about_a_byte_and_a_half() {
        let mut c = Chunk::new();
        for k in 0..120i64 {
            assert!(c.append(1_700_000_000_000 + k * 15_000, 50.0 + ((31 + k * 17) % 100) as f64 / 10.0));
        }
        assert!(c.bytes() < 120 * 2, "gauge: {} bytes", c.bytes());
        let mut c = Chunk::new();
        for k in 0..120i64 {
            assert!(c.append(1_700_000_000_000 + k * 15_000, (k * 3) as f64));
        }
        assert!(c.bytes() < 120 * 2, "counter: {} bytes", c.bytes());
        round_trip(&[
            (1, 51.0),
            (2, 51.7),
            (3, 52.0),
            (4, 52.35),
            (5, 1e300),
            (6, 0.1),
            (7, -0.0),
            (8, 0.0),
            (9, 123456.789012),
        ]);
    }

    #[test]
    fn bucket_edges_of_the_timestamp_encoding_round_trip() {
        // Deltas of delta exactly at each bucket's positive and negative edges.
        for edge in [8192i64, 8191, -8191, 65536, -65535, 524_288, -524_287, 524_289, 8193, -8192] {
            // A 10-minute base interval keeps even the most negative edge moving forward.
            let base = 600_000;
            let mut t = 1_000_000_000;
            let mut samples = vec![(t, 1.0)];
            t += base;
            samples.push((t, 2.0));
            let d = base + edge;
            t += d;
            samples.push((t, 3.0));
            t += d;
            samples.push((t, 4.0));
            round_trip(&samples);
        }
    }

    #[test]
    fn special_values_survive_bit_for_bit() {
        round_trip(&[
            (1, 0.0),
            (2, -0.0),
            (3, f64::NAN),
            (4, f64::from_bits(STALE_NAN)),
            (5, f64::INFINITY),
            (6, f64::NEG_INFINITY),
            (7, f64::MIN_POSITIVE),
            (8, f64::MAX),
            (1_000_000_000, 1.5),
            (i64::MAX, 2.5),
        ]);
        round_trip(&[(i64::MIN, 1.0), (0, 1.0)]);
    }

    #[test]
    fn out_of_order_and_duplicate_timestamps_are_refused() {
        let mut c = Chunk::new();
        assert!(c.append(100, 1.0));
        assert!(!c.append(100, 2.0));
        assert!(!c.append(99, 2.0));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(Chunk::from_encoded(vec![0xff; 3], 5).is_none());
        let c = Chunk::from_encoded(vec![], 0).expect("empty is fine");
        assert!(c.is_empty());
    }

    proptest! {
        #[test]
        fn encode_decode_is_identity(
            start in any::<i64>(),
            deltas in proptest::collection::vec(1i64..=i64::MAX / 256, 0..119),
            values in proptest::collection::vec(any::<u64>(), 120),
        ) {
            let mut t = start;
            let mut samples = vec![(t, f64::from_bits(values[0]))];
            for (i, d) in deltas.iter().enumerate() {
                match t.checked_add(*d) {
                    Some(next) => t = next,
                    None => break,
                }
                samples.push((t, f64::from_bits(values[i + 1])));
            }
            round_trip(&samples);
        }

        #[test]
        fn decimal_values_round_trip(
            start in 0i64..2_000_000_000_000,
            ints in proptest::collection::vec(-10_000_000i64..10_000_000, 1..120),
            scales in proptest::collection::vec(0u32..9, 120),
        ) {
            let samples: Vec<(i64, f64)> = ints
                .iter()
                .enumerate()
                .map(|(i, m)| (start + i as i64 * 15_000, *m as f64 / 10f64.powi(scales[i] as i32)))
                .collect();
            round_trip(&samples);
        }

        #[test]
        fn realistic_series_round_trip(
            start in 0i64..2_000_000_000_000,
            jitter in proptest::collection::vec(-500i64..500, 1..120),
            steps in proptest::collection::vec(prop_oneof![Just(0.0), -10.0f64..10.0, Just(f64::NAN)], 120),
        ) {
            let mut t = start;
            let mut v = 0.0f64;
            let mut samples = Vec::new();
            for (i, j) in jitter.iter().enumerate() {
                t += 15_000 + j;
                v += steps[i];
                samples.push((t, v));
            }
            round_trip(&samples);
        }
    }
}
