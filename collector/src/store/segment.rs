//! How a block stores a series' samples: in columns, compressed with zstd.
//!
//! The head's Gorilla chunks are built to take one sample at a time and be read soon;
//! on disk, where a series' samples of a whole block are known at once, columns of
//! byte-aligned integers squeezed by an entropy coder take far less room. A segment holds
//! up to [`MAX_SEGMENT`] samples of one series:
//!
//! - timestamps: the first, then the first delta, then delta-of-deltas, each a zigzag
//!   varint (a regular scrape is a run of zero bytes);
//! - values, when they are decimals at one scale `s` (counters, gauges with a few
//!   decimals): the integers `v·10^s` as zigzag varint deltas, with the few that are not
//!   (a staleness NaN, an odd float) listed apart with their bits; otherwise each value's
//!   bits XORed with the previous one's, 8 bytes little-endian;
//!
//! and the whole is one zstd frame. Values come back bit for bit, as the head's chunks
//! give them (the decimal check is the same one: dividing back must give the same bits).

use prost::encoding::{decode_varint, encode_varint};

use super::chunk::{minimal_scale, scaled, unscale};

/// Samples per segment: a day at 15 s fits in one; the sample count is a `u16` in the
/// block's chunk metas.
pub const MAX_SEGMENT: usize = 8192;
const FORMAT: u8 = 1;
const DECIMAL: u8 = 0;
const XOR: u8 = 1;
/// zstd's default level: fast enough for the persist pass, close to the best ratio on
/// these columns.
const LEVEL: i32 = 3;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes time-ordered samples (at most [`MAX_SEGMENT`]; more are an error of the caller
/// and are cut) as one compressed segment.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let samples = &samples[..samples.len().min(MAX_SEGMENT)];
    let mut raw = Vec::with_capacity(samples.len() * 3 + 16);
    raw.push(FORMAT);
    encode_varint(samples.len() as u64, &mut raw);
    let (mut prev_t, mut prev_delta) = (0i64, 0i64);
    for (k, (t, _)) in samples.iter().enumerate() {
        let field = match k {
            0 => *t,
            1 => t.wrapping_sub(prev_t),
            _ => t.wrapping_sub(prev_t).wrapping_sub(prev_delta),
        };
        if k > 0 {
            prev_delta = t.wrapping_sub(prev_t);
        }
        prev_t = *t;
        encode_varint(zigzag(field), &mut raw);
    }
    // The scale that makes most values integers; the rest are exceptions.
    let scale = samples.iter().filter_map(|(_, v)| minimal_scale(*v).map(|(s, _)| s)).max();
    let ints: Option<(u8, Vec<Option<i64>>)> = scale.map(|s| (s, samples.iter().map(|(_, v)| scaled(*v, s)).collect()));
    match ints {
        Some((s, ints)) if ints.iter().filter(|m| m.is_none()).count() * 4 <= samples.len() => {
            raw.push(DECIMAL);
            raw.push(s);
            let exceptions: Vec<usize> = (0..ints.len()).filter(|i| ints[*i].is_none()).collect();
            encode_varint(exceptions.len() as u64, &mut raw);
            let mut last = 0;
            for i in &exceptions {
                encode_varint((i - last) as u64, &mut raw);
                raw.extend_from_slice(&samples[*i].1.to_bits().to_le_bytes());
                last = *i;
            }
            let mut prev = 0i64;
            for m in ints {
                // An exception repeats the integer before it: a zero delta.
                let m = m.unwrap_or(prev);
                encode_varint(zigzag(m.wrapping_sub(prev)), &mut raw);
                prev = m;
            }
        }
        _ => {
            raw.push(XOR);
            let mut prev = 0u64;
            for (_, v) in samples {
                raw.extend_from_slice(&(v.to_bits() ^ prev).to_le_bytes());
                prev = v.to_bits();
            }
        }
    }
    zstd::bulk::compress(&raw, LEVEL).unwrap_or_default()
}

/// Appends the samples of a segment to `out`; `None` (and nothing appended) for bytes
/// that are not a whole segment of `count` samples.
pub fn decode(bytes: &[u8], count: u16, out: &mut Vec<(i64, f64)>) -> Option<()> {
    let count = usize::from(count);
    // The raw size is bounded by the count: refuse a frame claiming more (a decompression
    // bomb in a damaged file), before allocating it.
    let limit = 32 + count * 32;
    let raw = zstd::bulk::decompress(bytes, limit).ok()?;
    let mut buf = raw.as_slice();
    let byte = |buf: &mut &[u8]| -> Option<u8> {
        let (first, rest) = buf.split_first()?;
        *buf = rest;
        Some(*first)
    };
    if byte(&mut buf)? != FORMAT {
        return None;
    }
    let n = decode_varint(&mut buf).ok()? as usize;
    if n != count {
        return None;
    }
    let mut times = Vec::with_capacity(n);
    let (mut t, mut delta) = (0i64, 0i64);
    for k in 0..n {
        let field = unzigzag(decode_varint(&mut buf).ok()?);
        match k {
            0 => t = field,
            1 => {
                delta = field;
                t = t.wrapping_add(delta);
            }
            _ => {
                delta = delta.wrapping_add(field);
                t = t.wrapping_add(delta);
            }
        }
        times.push(t);
    }
    let start = out.len();
    match byte(&mut buf)? {
        DECIMAL => {
            let s = byte(&mut buf)?;
            if s > 6 {
                return None;
            }
            let exceptions = decode_varint(&mut buf).ok()? as usize;
            if exceptions > n {
                return None;
            }
            let mut special = Vec::with_capacity(exceptions);
            let mut at = 0usize;
            for _ in 0..exceptions {
                at = at.checked_add(decode_varint(&mut buf).ok()? as usize)?;
                let (bits, rest) = buf.split_first_chunk::<8>()?;
                buf = rest;
                special.push((at, f64::from_bits(u64::from_le_bytes(*bits))));
            }
            let mut m = 0i64;
            let mut next = special.iter().peekable();
            for (k, t) in times.iter().enumerate() {
                m = m.wrapping_add(unzigzag(decode_varint(&mut buf).ok()?));
                let v = match next.peek() {
                    Some((i, v)) if *i == k => {
                        next.next();
                        *v
                    }
                    _ => unscale(m, s),
                };
                out.push((*t, v));
            }
        }
        XOR => {
            let mut prev = 0u64;
            for t in &times {
                let (bits, rest) = buf.split_first_chunk::<8>()?;
                buf = rest;
                prev ^= u64::from_le_bytes(*bits);
                out.push((*t, f64::from_bits(prev)));
            }
        }
        _ => return None,
    }
    if !buf.is_empty() {
        out.truncate(start);
        return None;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, f64)]) -> usize {
        let bytes = encode(samples);
        let mut back = Vec::new();
        decode(&bytes, samples.len() as u16, &mut back).expect("decodes");
        let bits = |s: &[(i64, f64)]| s.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(samples));
        bytes.len()
    }

    #[test]
    fn counters_and_gauges_cost_well_under_a_byte_a_sample() {
        let mut counter = Vec::new();
        let mut gauge = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut total = 0.0;
        for k in 0..5760i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            total += (x % 40 + 1) as f64;
            counter.push((k * 15_000, total));
            gauge.push((
                k * 15_000,
                (((50.0 + 10.0 * (k as f64 / 900.0).sin()) * 10.0).round() + (x % 21) as f64) / 10.0,
            ));
        }
        let c = round_trip(&counter);
        let g = round_trip(&gauge);
        assert!(c < 5760 * 9 / 10, "counter: {c} bytes for 5760 samples");
        assert!(g < 5760 * 9 / 10, "gauge: {g} bytes for 5760 samples");
    }

    #[test]
    fn staleness_markers_and_odd_floats_come_back_bit_for_bit() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut s: Vec<(i64, f64)> = (0..100).map(|k| (k * 1000, k as f64 * 0.5)).collect();
        s[10].1 = stale;
        s[50].1 = -0.0;
        s[99].1 = f64::INFINITY;
        round_trip(&s);
        // Mostly odd floats: the XOR column.
        let odd: Vec<(i64, f64)> = (0..100).map(|k| (k * 1000 + k % 3, (k as f64).sqrt())).collect();
        round_trip(&odd);
        round_trip(&[]);
        round_trip(&[(-5, 1e300)]);
    }

    #[test]
    fn damaged_or_mislabelled_segments_do_not_decode() {
        let s: Vec<(i64, f64)> = (0..50).map(|k| (k * 1000, k as f64)).collect();
        let bytes = encode(&s);
        let mut out = Vec::new();
        assert!(decode(&bytes, 49, &mut out).is_none(), "wrong count");
        assert!(decode(&bytes[..bytes.len() - 3], 50, &mut out).is_none(), "cut short");
        assert!(decode(b"garbage", 50, &mut out).is_none());
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(mut s in proptest::collection::vec((any::<i64>(), any::<u64>()), 0..300)) {
            s.sort_by_key(|x| x.0);
            s.dedup_by_key(|x| x.0);
            let samples: Vec<(i64, f64)> = s.into_iter().map(|(t, b)| (t, f64::from_bits(b))).collect();
            round_trip(&samples);
        }

        #[test]
        fn decimal_samples_round_trip(s in proptest::collection::vec((0i64..100_000, -1_000_000i64..1_000_000, 0u8..4), 0..300)) {
            let mut t = 0;
            let samples: Vec<(i64, f64)> = s.into_iter().map(|(dt, m, scale)| { t += dt; (t, unscale(m, scale)) }).collect();
            round_trip(&samples);
        }
    }
}
