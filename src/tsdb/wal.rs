//! WAL records: one per acknowledged append batch.
//!
//! `uvarint(series count)` then per series `uvarint(id) uvarint(n)` and `n`
//! samples as `varint(t - previous t)` (the first against 0) and the value's
//! eight bytes little-endian. Series definitions are not repeated here: a new
//! series' row is written to the series table in the same transaction.

use crate::model::{get_uvarint, put_uvarint, Sample};

pub(super) fn encode(batch: &[(u64, &[Sample])]) -> Vec<u8> {
    let n: usize = batch.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(4 + batch.len() * 4 + n * 12);
    put_uvarint(&mut out, batch.len() as u64);
    for (id, samples) in batch {
        put_uvarint(&mut out, *id);
        put_uvarint(&mut out, samples.len() as u64);
        let mut prev = 0i64;
        for s in *samples {
            let d = s.t.wrapping_sub(prev);
            put_uvarint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
            prev = s.t;
            out.extend_from_slice(&s.v.to_bits().to_le_bytes());
        }
    }
    out
}

/// Calls `f(series id, sample)` for every sample; `None` if the record is
/// truncated or malformed.
pub(super) fn decode(mut b: &[u8], mut f: impl FnMut(u64, Sample)) -> Option<()> {
    let count = get_uvarint(&mut b)?;
    for _ in 0..count {
        let id = get_uvarint(&mut b)?;
        let n = get_uvarint(&mut b)?;
        let mut t = 0i64;
        for _ in 0..n {
            let z = get_uvarint(&mut b)?;
            t = t.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
            let bytes: [u8; 8] = b.get(..8)?.try_into().ok()?;
            b = &b[8..];
            f(
                id,
                Sample {
                    t,
                    v: f64::from_bits(u64::from_le_bytes(bytes)),
                },
            );
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = [Sample { t: 5, v: 1.5 }, Sample { t: 9, v: f64::NAN }];
        let b = [Sample { t: -3, v: -0.0 }];
        let rec = encode(&[(7, &a), (1 << 40, &b)]);
        let mut got = Vec::new();
        decode(&rec, |id, s| got.push((id, s.t, s.v.to_bits()))).unwrap();
        assert_eq!(
            got,
            [
                (7, 5, 1.5f64.to_bits()),
                (7, 9, f64::NAN.to_bits()),
                (1 << 40, -3, (-0.0f64).to_bits())
            ]
        );
        assert!(decode(&rec[..rec.len() - 1], |_, _| {}).is_none());
    }
}
