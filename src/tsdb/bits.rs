//! Bit-level writer and reader for the chunk codec (most significant bit
//! first, like Prometheus' `bstream`). The reader never panics: running out of
//! bits is `None`.

#[derive(Default)]
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 = need a new byte).
    free: u32,
}

impl BitWriter {
    pub(super) fn new(bytes: Vec<u8>) -> Self {
        BitWriter { bytes, free: 0 }
    }

    pub(super) fn bit(&mut self, b: bool) {
        self.bits(b as u64, 1);
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), most significant first.
    pub(super) fn bits(&mut self, v: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let chunk = ((v >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (self.free - take);
            self.free -= take;
            n -= take;
        }
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

pub(super) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize, // in bits
}

impl<'a> BitReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    #[inline]
    pub(super) fn bit(&mut self) -> Option<bool> {
        self.bits(1).map(|b| b == 1)
    }

    #[inline(always)]
    pub(super) fn bits(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if self.pos + n as usize > self.bytes.len() * 8 {
            return None;
        }
        if n > 56 {
            let hi = self.take(n - 32);
            return Some(hi << 32 | self.take(32));
        }
        Some(self.take(n))
    }

    /// True when `n` more bits are there.
    pub(super) fn has(&self, n: u64) -> bool {
        (self.pos as u64).saturating_add(n) <= self.bytes.len() as u64 * 8
    }

    /// The next `n` bits, 1 ≤ n ≤ 56, known to be there ([`Self::has`]).
    #[inline(always)]
    pub(super) fn take(&mut self, n: u32) -> u64 {
        // The 8 bytes from the current one hold the next 57 bits or more.
        let rest = &self.bytes[self.pos / 8..];
        let word = match rest.first_chunk::<8>() {
            Some(w) => u64::from_be_bytes(*w),
            None => {
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(w)
            }
        };
        let off = self.pos % 8;
        self.pos += n as usize;
        (word << off) >> (64 - n)
    }

    pub(super) fn bytes_used(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_mixed_widths() {
        let mut w = BitWriter::default();
        let items = [
            (1u64, 1u32),
            (0x3ff, 10),
            (u64::MAX, 64),
            (5, 3),
            (0, 0),
            (0xabcdef, 24),
        ];
        for (v, n) in items {
            w.bits(v, n);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for (v, n) in items {
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            assert_eq!(r.bits(n), Some(v & mask));
        }
        assert_eq!(r.bits(8), None);
    }
}
