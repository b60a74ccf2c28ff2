//! The chunk codec: a run of samples of one series in a few bytes.
//!
//! Timestamps are delta-of-delta coded; values are stored as scaled decimal
//! integers (`m / 10^e`, then first or second differences) when every value
//! round-trips exactly that way, which is the common case for exported
//! metrics, and as Gorilla XOR floats otherwise (NaN, stale markers, -0.0,
//! full-precision floats). Integer sequences are bit-packed at the width that
//! makes the chunk smallest, with escapes for outliers. The byte layout is in
//! `docs/format.md`; chunks are encoded once, when the head closes them.

use super::bits::{BitReader, BitWriter};
use crate::model::{get_uvarint, put_uvarint, put_varint, unzigzag, zigzag, Sample, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt chunk: {0}")]
pub struct ChunkError(pub &'static str);

const VALUES_XOR: u8 = 0;
const VALUES_DECIMAL: u8 = 1;
/// Largest decimal exponent tried: 10^e must be exact in an f64.
const MAX_EXP: usize = 18;
/// Most samples one chunk may hold (found by fuzzing: 2^24 let 15 bytes
/// of input take 400 MB and half a second).
pub const MAX_SAMPLES: usize = 1 << 20;
/// Scaled integers must stay exactly representable in an f64.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0; // 2^53

const POW10: [f64; MAX_EXP + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

/// Summary of a chunk read from its header without decoding the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub count: usize,
    pub min_t: Timestamp,
    pub max_t: Timestamp,
}

fn get_varint(b: &mut &[u8]) -> Result<i64, ChunkError> {
    crate::model::get_varint(b).ok_or(ChunkError("truncated varint"))
}

/// Encodes samples (timestamps strictly increasing, at least one sample).
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    assert!(!samples.is_empty(), "a chunk holds at least one sample");
    let mut out = Vec::with_capacity(16 + samples.len() * 2);
    let first = samples[0].t;
    let last = samples[samples.len() - 1].t;
    put_uvarint(&mut out, samples.len() as u64);
    put_varint(&mut out, first);
    put_uvarint(&mut out, (last - first) as u64);
    encode_timestamps(&mut out, samples);
    match decimal_exponent(samples) {
        Some(e) => encode_decimal(&mut out, samples, e),
        None => {
            out.push(VALUES_XOR);
            let mut w = BitWriter::new(out);
            encode_xor(&mut w, samples);
            out = w.finish();
        }
    }
    out
}

/// Reads count and time range from the header.
pub fn meta(mut b: &[u8]) -> Result<ChunkMeta, ChunkError> {
    let count = get_uvarint(&mut b).ok_or(ChunkError("truncated count"))? as usize;
    let min_t = get_varint(&mut b)?;
    let span = get_uvarint(&mut b).ok_or(ChunkError("truncated span"))?;
    let max_t = min_t
        .checked_add(span as i64)
        .ok_or(ChunkError("time span out of range"))?;
    if count == 0 {
        return Err(ChunkError("empty chunk"));
    }
    Ok(ChunkMeta {
        count,
        min_t,
        max_t,
    })
}

/// Decodes every sample of the chunk.
pub fn decode(b: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut out = Vec::new();
    decode_into(b, &mut out)?;
    Ok(out)
}

/// Appends the chunk's samples to `out`.
pub fn decode_into(mut b: &[u8], out: &mut Vec<Sample>) -> Result<(), ChunkError> {
    let m = meta(b)?;
    // Skip the header we just read.
    get_uvarint(&mut b);
    get_varint(&mut b)?;
    get_uvarint(&mut b);
    // A regular, constant chunk needs no bit per sample, so the count
    // alone bounds the work: at most MAX_SAMPLES (a merged block holds
    // about 100,000; 16 MiB of samples decode in milliseconds).
    if m.count > MAX_SAMPLES {
        return Err(ChunkError("sample count out of range"));
    }
    let start = out.len();
    out.reserve(m.count);
    decode_timestamps(&mut b, m, out)?;
    let mode = *b.first().ok_or(ChunkError("missing value mode"))?;
    b = &b[1..];
    match mode {
        VALUES_XOR => decode_xor(b, &mut out[start..]),
        VALUES_DECIMAL => decode_decimal(b, &mut out[start..]),
        _ => Err(ChunkError("unknown value encoding")),
    }
}

// === timestamps ===============================================================

fn encode_timestamps(out: &mut Vec<u8>, samples: &[Sample]) {
    if samples.len() < 2 {
        return;
    }
    let d1 = samples[1].t - samples[0].t;
    put_varint(out, d1);
    let dods: Vec<u64> = samples
        .windows(3)
        .map(|w| zigzag((w[2].t - w[1].t) - (w[1].t - w[0].t)))
        .collect();
    pack_into(out, &dods);
}

fn decode_timestamps(b: &mut &[u8], m: ChunkMeta, out: &mut Vec<Sample>) -> Result<(), ChunkError> {
    out.push(Sample { t: m.min_t, v: 0.0 });
    if m.count < 2 {
        return Ok(());
    }
    let mut delta = get_varint(b)?;
    let mut t = m.min_t.wrapping_add(delta);
    out.push(Sample { t, v: 0.0 });
    let mut dods = Vec::with_capacity(m.count - 2);
    unpack(b, m.count - 2, &mut dods)?;
    for dod in dods {
        delta = delta.wrapping_add(unzigzag(dod));
        t = t.wrapping_add(delta);
        out.push(Sample { t, v: 0.0 });
    }
    if t != m.max_t {
        return Err(ChunkError("timestamps disagree with header"));
    }
    Ok(())
}

// === decimal values =========================================================

/// The smallest `e` such that every value is exactly `m / 10^e` for an
/// integer `|m| < 2^53`, or `None` (NaN, ±Inf, -0.0, long fractions).
fn decimal_exponent(samples: &[Sample]) -> Option<usize> {
    let mut e = 0;
    for s in samples {
        while !round_trips(s.v, e) {
            e += 1;
            if e > MAX_EXP {
                return None;
            }
        }
    }
    // A larger exponent can push an earlier value's mantissa out of range
    // (-457990 fits at 0, not at 18): every value must fit at the last.
    samples.iter().all(|s| round_trips(s.v, e)).then_some(e)
}

fn round_trips(v: f64, e: usize) -> bool {
    let m = (v * POW10[e]).round();
    // Compare through the integer that is stored, so -0.0 (stored as 0) fails.
    m.abs() < MAX_MANTISSA && ((m as i64) as f64 / POW10[e]).to_bits() == v.to_bits()
}

fn encode_decimal(out: &mut Vec<u8>, samples: &[Sample], e: usize) {
    out.push(VALUES_DECIMAL);
    out.push(e as u8);
    let ms: Vec<i64> = samples
        .iter()
        .map(|s| (s.v * POW10[e]).round() as i64)
        .collect();
    put_varint(out, ms[0]);
    if ms.len() < 2 {
        return;
    }
    // Noise around a level packs best as offsets from the smallest value,
    // counters and trends as first or second differences (or steps above
    // the smallest step): take the smallest (a varint costs up to 64 bits
    // more, so order 1 wins ties).
    let base = ms[1..].iter().copied().min().unwrap_or(0);
    let offsets: Vec<u64> = ms[1..].iter().map(|&m| m.abs_diff(base)).collect();
    let d1: Vec<i64> = ms.windows(2).map(|w| w[1] - w[0]).collect();
    let first_order: Vec<u64> = d1.iter().map(|&d| zigzag(d)).collect();
    let second_order: Vec<u64> = d1.windows(2).map(|w| zigzag(w[1] - w[0])).collect();
    // Counters grow by a varying amount: their steps packed as offsets
    // from the smallest step need neither a sign bit nor the range below it.
    let d_min = d1.iter().copied().min().unwrap_or(0);
    let step_offsets: Vec<u64> = d1.iter().map(|&d| d.abs_diff(d_min)).collect();
    let bits = [
        packed_bits(&offsets).0 + 64,
        packed_bits(&first_order).0,
        packed_bits(&second_order).0 + 64,
        packed_bits(&step_offsets).0 + 64,
    ];
    let best = (0..bits.len())
        .min_by_key(|&i| (bits[i], i != 1))
        .unwrap_or(1);
    match best {
        0 => {
            out.push(0);
            put_varint(out, base);
            pack_into(out, &offsets);
        }
        2 => {
            out.push(2);
            put_varint(out, d1[0]);
            pack_into(out, &second_order);
        }
        3 => {
            out.push(3);
            put_varint(out, d_min);
            pack_into(out, &step_offsets);
        }
        _ => {
            out.push(1);
            pack_into(out, &first_order);
        }
    }
}

fn decode_decimal(mut b: &[u8], out: &mut [Sample]) -> Result<(), ChunkError> {
    let e = *b.first().ok_or(ChunkError("missing exponent"))? as usize;
    if e > MAX_EXP {
        return Err(ChunkError("decimal exponent out of range"));
    }
    b = &b[1..];
    let mut m = get_varint(&mut b)?;
    out[0].v = m as f64 / POW10[e];
    if out.len() < 2 {
        return Ok(());
    }
    let order = *b.first().ok_or(ChunkError("missing delta order"))?;
    b = &b[1..];
    let mut deltas = Vec::with_capacity(out.len());
    match order {
        0 => {
            let base = get_varint(&mut b)?;
            unpack(&mut b, out.len() - 1, &mut deltas)?;
            for (s, x) in out[1..].iter_mut().zip(deltas) {
                s.v = base.wrapping_add(x as i64) as f64 / POW10[e];
            }
        }
        1 => {
            unpack(&mut b, out.len() - 1, &mut deltas)?;
            for (s, d) in out[1..].iter_mut().zip(deltas) {
                m = m.wrapping_add(unzigzag(d));
                s.v = m as f64 / POW10[e];
            }
        }
        3 => {
            let d_min = get_varint(&mut b)?;
            unpack(&mut b, out.len() - 1, &mut deltas)?;
            for (s, x) in out[1..].iter_mut().zip(deltas) {
                m = m.wrapping_add(d_min.wrapping_add(x as i64));
                s.v = m as f64 / POW10[e];
            }
        }
        2 => {
            let mut d = get_varint(&mut b)?;
            m = m.wrapping_add(d);
            out[1].v = m as f64 / POW10[e];
            unpack(&mut b, out.len() - 2, &mut deltas)?;
            for (s, dd) in out[2..].iter_mut().zip(deltas) {
                d = d.wrapping_add(unzigzag(dd));
                m = m.wrapping_add(d);
                s.v = m as f64 / POW10[e];
            }
        }
        _ => return Err(ChunkError("unknown delta order")),
    }
    Ok(())
}

// === bit-packed integers ======================================================
//
// Header byte: bits 0..7 = width w (0..=64), bit 7 = exceptions present.
// Without exceptions every value takes exactly w bits. With exceptions each
// value starts with one flag bit: 0 → w bits follow; 1 → 6 bits (n - 1) and
// then n bits. A run of zeros therefore costs nothing at w = 0.

fn bit_len(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// (total bits, best width, exceptions present)
/// How a run of integers is packed, and what it costs in bits (without
/// the header).
#[derive(Debug, Clone, Copy)]
enum Packing {
    /// Each value in `w` bits, or with `exceptions` a flag bit and an
    /// escape for the wider ones.
    Width { w: u32, exceptions: bool },
    /// Values below `radix`, `k` at a time as one number in base `radix`:
    /// log2(radix) bits a value instead of a whole number of bits.
    Radix { radix: u64 },
}

/// Header byte of radix packing (no width is 127).
const RADIX_HEADER: u8 = 0x7f;

fn packed_bits(vals: &[u64]) -> (u64, Packing) {
    let mut hist = [0u64; 65];
    for &v in vals {
        hist[bit_len(v) as usize] += 1;
    }
    let max = (0..=64).rev().find(|&i| hist[i] > 0).unwrap_or(0) as u32;
    let n = vals.len() as u64;
    let mut best = (
        n * max as u64,
        Packing::Width {
            w: max,
            exceptions: false,
        },
    );
    for w in 0..max {
        let mut cost = n * (1 + w as u64);
        for (len, &count) in hist.iter().enumerate().skip(w as usize + 1) {
            cost += count * (6 + len as u64);
        }
        if cost < best.0 {
            best = (
                cost,
                Packing::Width {
                    w,
                    exceptions: true,
                },
            );
        }
    }
    // Radix packing pays when the largest value is well below a power of
    // two (a random walk of ±25 needs 5.67 bits, not 6).
    if (2..=32).contains(&max) {
        let radix = vals.iter().copied().max().unwrap_or(0) + 1;
        let mut varint = Vec::new();
        put_uvarint(&mut varint, radix);
        let cost = radix_bits(radix, vals.len()) + 8 * varint.len() as u64;
        if cost < best.0 {
            best = (cost, Packing::Radix { radix });
        }
    }
    best
}

/// How many values below `radix` one group holds: the most whose product
/// still fits 64 bits.
fn radix_group(radix: u64) -> usize {
    let mut k = 0;
    let mut p: u128 = 1;
    while p * radix as u128 <= 1u128 << 64 {
        p *= radix as u128;
        k += 1;
    }
    k.max(1)
}

/// Bits that hold any number below `radix^k`.
fn radix_group_bits(radix: u64, k: usize) -> u32 {
    let p = (radix as u128).pow(k as u32);
    128 - (p - 1).leading_zeros()
}

fn radix_bits(radix: u64, n: usize) -> u64 {
    let k = radix_group(radix);
    let full = (n / k) as u64 * radix_group_bits(radix, k) as u64;
    let rest = n % k;
    full + if rest > 0 {
        radix_group_bits(radix, rest) as u64
    } else {
        0
    }
}

fn pack_into(out: &mut Vec<u8>, vals: &[u64]) {
    match packed_bits(vals).1 {
        Packing::Width { w, exceptions } => {
            out.push(w as u8 | if exceptions { 0x80 } else { 0 });
            let mut bw = BitWriter::new(std::mem::take(out));
            for &v in vals {
                if exceptions {
                    let len = bit_len(v);
                    if len > w {
                        bw.bit(true);
                        bw.bits((len - 1) as u64, 6);
                        bw.bits(v, len);
                        continue;
                    }
                    bw.bit(false);
                }
                bw.bits(v, w);
            }
            *out = bw.finish();
        }
        Packing::Radix { radix } => {
            out.push(RADIX_HEADER);
            put_uvarint(out, radix);
            let k = radix_group(radix);
            let mut bw = BitWriter::new(std::mem::take(out));
            for group in vals.chunks(k) {
                let mut c: u64 = 0;
                for &v in group.iter().rev() {
                    c = c * radix + v;
                }
                bw.bits(c, radix_group_bits(radix, group.len()));
            }
            *out = bw.finish();
        }
    }
}

/// Division by a divisor fixed for many dividends, by multiplying with its
/// reciprocal: a hardware division per packed value was most of a
/// decode's time.
struct Divisor {
    d: u64,
    /// `floor((2^64 - 1) / d)`: `n * m >> 64` is the quotient or one less.
    m: u64,
}

impl Divisor {
    fn new(d: u64) -> Divisor {
        debug_assert!(d >= 2);
        Divisor { d, m: u64::MAX / d }
    }

    /// `(n / d, n % d)`.
    #[inline]
    fn div_rem(&self, n: u64) -> (u64, u64) {
        let q = ((u128::from(n) * u128::from(self.m)) >> 64) as u64;
        let r = n - q * self.d;
        if r >= self.d {
            (q + 1, r - self.d)
        } else {
            (q, r)
        }
    }
}

fn unpack(b: &mut &[u8], n: usize, out: &mut Vec<u64>) -> Result<(), ChunkError> {
    const SHORT: ChunkError = ChunkError("truncated packed integers");
    let header = *b.first().ok_or(ChunkError("missing packing header"))?;
    if header == RADIX_HEADER {
        let mut rest = &b[1..];
        let radix = get_uvarint(&mut rest).ok_or(SHORT)?;
        if !(3..=1 << 32).contains(&radix) {
            return Err(ChunkError("packing radix out of range"));
        }
        let k = radix_group(radix);
        let div = Divisor::new(radix);
        let mut r = BitReader::new(rest);
        let mut left = n;
        while left > 0 {
            let g = left.min(k);
            let mut c = r.bits(radix_group_bits(radix, g)).ok_or(SHORT)?;
            for _ in 0..g {
                let (q, rem) = div.div_rem(c);
                out.push(rem);
                c = q;
            }
            if c != 0 {
                return Err(ChunkError("radix group out of range"));
            }
            left -= g;
        }
        *b = &rest[r.bytes_used()..];
        return Ok(());
    }
    let w = (header & 0x7f) as u32;
    let exceptions = header & 0x80 != 0;
    if w > 64 {
        return Err(ChunkError("packing width out of range"));
    }
    let body = &b[1..];
    if w == 0 && !exceptions {
        // Regular timestamps and constant steps: all zeros, no bits.
        out.resize(out.len() + n, 0);
        *b = body;
        return Ok(());
    }
    let mut r = BitReader::new(body);
    if !exceptions && w <= 56 {
        // Every value the same width: one bounds check for all of them.
        if !r.has(n as u64 * u64::from(w)) {
            return Err(SHORT);
        }
        out.extend((0..n).map(|_| r.take(w)));
        *b = &body[r.bytes_used()..];
        return Ok(());
    }
    for _ in 0..n {
        let v = if exceptions && r.bit().ok_or(SHORT)? {
            let len = r.bits(6).ok_or(SHORT)? as u32 + 1;
            r.bits(len).ok_or(SHORT)?
        } else {
            r.bits(w).ok_or(SHORT)?
        };
        out.push(v);
    }
    *b = &body[r.bytes_used()..];
    Ok(())
}

// === XOR floats (Gorilla) =====================================================

fn encode_xor(w: &mut BitWriter, samples: &[Sample]) {
    let mut prev = samples[0].v.to_bits();
    w.bits(prev, 64);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for s in &samples[1..] {
        let cur = s.v.to_bits();
        let x = cur ^ prev;
        prev = cur;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.bit(false);
            w.bits(x >> trail, 64 - lead - trail);
        } else {
            lead = l;
            trail = t;
            let sig = 64 - l - t;
            w.bit(true);
            w.bits(l as u64, 5);
            // 64 significant bits are written as 0; 0 cannot occur otherwise.
            w.bits((sig & 63) as u64, 6);
            w.bits(x >> t, sig);
        }
    }
}

fn decode_xor(b: &[u8], out: &mut [Sample]) -> Result<(), ChunkError> {
    const SHORT: ChunkError = ChunkError("truncated XOR values");
    let mut r = BitReader::new(b);
    let mut prev = r.bits(64).ok_or(SHORT)?;
    out[0].v = f64::from_bits(prev);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for s in out[1..].iter_mut() {
        if r.bit().ok_or(SHORT)? {
            if r.bit().ok_or(SHORT)? {
                lead = r.bits(5).ok_or(SHORT)? as u32;
                let mut sig = r.bits(6).ok_or(SHORT)? as u32;
                if sig == 0 {
                    sig = 64;
                }
                if lead + sig > 64 {
                    return Err(ChunkError("XOR window out of range"));
                }
                trail = 64 - lead - sig;
            } else if lead == u32::MAX {
                return Err(ChunkError("XOR window reused before it was set"));
            }
            let sig = 64 - lead - trail;
            let x = r.bits(sig).ok_or(SHORT)?;
            prev ^= if trail >= 64 { 0 } else { x << trail };
        }
        s.v = f64::from_bits(prev);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisor_matches_hardware_division() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for d in (2..300u64).chain([1 << 31, (1 << 32) - 1, 1 << 32, 1_000_003, u64::MAX / 3]) {
            let div = Divisor::new(d);
            for n in [
                0,
                1,
                d - 1,
                d,
                d + 1,
                u64::MAX,
                u64::MAX - 1,
                u64::MAX / d * d,
            ] {
                assert_eq!(div.div_rem(n), (n / d, n % d), "{n} / {d}");
            }
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(div.div_rem(x), (x / d, x % d), "{x} / {d}");
            }
        }
    }

    /// Found by fuzzing (fuzz/regressions/chunk): the exponent the second
    /// value needs overflowed the first value's mantissa, which decoded as
    /// -9.22.
    #[test]
    fn mixed_magnitudes_keep_every_value() {
        let samples = [
            Sample { t: 1, v: -457990.0 },
            Sample {
                t: 2,
                v: -0.001907427078605033,
            },
        ];
        let back = decode(&encode(&samples)).unwrap();
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.v.to_bits(), b.v.to_bits());
        }
    }
    use crate::model::stale_nan;
    use proptest::prelude::*;

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
    }

    fn series(ts: &[i64], vs: &[f64]) -> Vec<Sample> {
        ts.iter().zip(vs).map(|(&t, &v)| Sample { t, v }).collect()
    }

    #[test]
    fn special_values_round_trip() {
        let s = series(
            &[0, 15_000, 30_000, 45_000, 60_000, 75_000, 90_000],
            &[
                1.5,
                f64::NAN,
                stale_nan(),
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
            ],
        );
        assert!(same(&decode(&encode(&s)).unwrap(), &s));
    }

    // Found by the round_trip property: a chunk of only -0.0 and zeros chose
    // decimal mode and came back as +0.0.
    #[test]
    fn negative_zero_keeps_its_sign() {
        let s = series(&[0, 1000, 2000], &[-0.0, 0.0, 0.0]);
        assert!(same(&decode(&encode(&s)).unwrap(), &s));
    }

    #[test]
    fn constant_regular_series_is_tiny() {
        let s: Vec<Sample> = (0..240)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i * 15_000,
                v: 1.0,
            })
            .collect();
        let bytes = encode(&s);
        assert!(bytes.len() <= 24, "{} bytes", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &s));
    }

    #[test]
    fn two_decimal_counter_is_compact() {
        let mut v = 1000.0f64;
        let s: Vec<Sample> = (0..240)
            .map(|i| {
                v = ((v * 100.0).round() + ((i * 37) % 50 + 50) as f64) / 100.0;
                Sample { t: i * 15_000, v }
            })
            .collect();
        let bytes = encode(&s);
        assert!(bytes.len() < 240 * 2, "{} bytes", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &s));
    }

    /// `n` samples 15 s apart whose values are `value(k)` of the `k`-th
    /// draw of a seeded generator (the high 31 bits of an LCG).
    fn drawn(n: i64, seed: u64, mut value: impl FnMut(u64) -> f64) -> Vec<Sample> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                Sample {
                    t: i * 15_000,
                    v: value(x >> 33),
                }
            })
            .collect()
    }

    #[test]
    fn noisy_gauge_packs_as_offsets() {
        // Collector durations: five significant digits of noise (e = 9).
        let s = drawn(1200, 12345, |r| (30_000 + r % 40_000) as f64 / 1e9);
        let bytes = encode(&s);
        // 40,000 values need 16 bits; first differences would need 17.
        assert!(bytes.len() < 1200 * 16 / 8 + 64, "{} bytes", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &s));
    }

    #[test]
    fn counter_steps_pack_above_the_smallest_step() {
        // A counter growing by 1,500..4,500 hundredths per sample: 3,000
        // step values need 12 bits above the smallest step, 14 as signed
        // differences.
        let mut c = 1_000_000i64;
        let s = drawn(240, 99, |r| {
            c += 1_500 + (r % 3_000) as i64;
            c as f64 / 100.0
        });
        let bytes = encode(&s);
        assert!(bytes.len() < 240 * 12 / 8 + 40, "{} bytes", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &s));
    }

    #[test]
    fn a_random_walk_packs_in_fractional_bits() {
        // Steps of -25..=25 hundredths: 51 values, 5.67 bits each.
        let mut c = 5_000i64;
        let s = drawn(2000, 7, |r| {
            c += (r % 51) as i64 - 25;
            c as f64 / 100.0
        });
        let bytes = encode(&s);
        // Under the 6 bits a whole-bit width needs (1,500 bytes).
        assert!(bytes.len() < 2000 * 6 / 8 - 40, "{} bytes", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &s));
        // Radix groups are checked: a group holding more than its values
        // can is an error, not garbage.
        let vals: Vec<u64> = (0..44).map(|i| (i * 37) % 51).collect();
        let mut packed = Vec::new();
        pack_into(&mut packed, &vals);
        assert_eq!(packed[0], RADIX_HEADER);
        let mut got = Vec::new();
        unpack(&mut &packed[..], vals.len(), &mut got).unwrap();
        assert_eq!(got, vals);
        for byte in &mut packed[2..] {
            *byte = 0xff;
        }
        assert!(unpack(&mut &packed[..], vals.len(), &mut Vec::new()).is_err());
    }

    #[test]
    fn meta_reads_header() {
        let s = series(&[10, 20, 35], &[1.0, 2.0, 3.0]);
        let m = meta(&encode(&s)).unwrap();
        assert_eq!((m.count, m.min_t, m.max_t), (3, 10, 35));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[][..], &[5], &[1, 0, 0, 9], &[3, 0, 20, 4, 0xff, 0xff, 1]] {
            let _ = decode(bytes);
        }
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(stale_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (-1_000_000i64..1_000_000).prop_map(|m| m as f64 / 100.0),
            (0u32..5).prop_map(|m| m as f64),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(start in -1i64 << 50..1i64 << 50,
                      steps in prop::collection::vec(1i64..1 << 40, 0..300),
                      vals in prop::collection::vec(arb_value(), 301)) {
            let mut t = start;
            let mut s = vec![Sample { t, v: vals[0] }];
            for (i, d) in steps.iter().enumerate() {
                t += d;
                s.push(Sample { t, v: vals[i + 1] });
            }
            prop_assert!(same(&decode(&encode(&s)).unwrap(), &s));
        }

        #[test]
        fn decimal_runs_round_trip(vals in prop::collection::vec(-10_000_000i64..10_000_000, 1..300), e in 0u32..6) {
            let s: Vec<Sample> = vals.iter().enumerate()
                .map(|(i, &m)| Sample { t: i as i64 * 1000, v: m as f64 / 10f64.powi(e as i32) }).collect();
            prop_assert!(same(&decode(&encode(&s)).unwrap(), &s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
