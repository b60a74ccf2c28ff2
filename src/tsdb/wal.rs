//! The write-ahead log: segment files beside the data file, one record per
//! acknowledged append batch.
//!
//! `<dir>/wal/<first seq, 20 digits>` holds records framed as
//! `u32 LE payload length | u32 LE CRC-32 of seq and payload | u64 LE seq |
//! payload`. The committer appends records and `fdatasync`s once per group
//! commit; a checkpoint starts a new segment ([`Wal::rotate`]) and, once the
//! data file holds everything the older segments hold, deletes them
//! ([`remove_before`]). The log's size therefore follows what arrived since
//! the last checkpoint, never the history of bursts.
//!
//! Payload (format version 3; `docs/format.md` has the layout): the new
//! series' definitions, then per series its samples, timestamps as deltas
//! from the record's first one and values XORed with the series' previous
//! value in the same segment, so a record of a collection (one timestamp,
//! values that rarely change) takes a few bytes per sample. A value refers
//! only to records earlier in its own segment: a corrupt record ends its
//! segment, so nothing is ever decoded against a lost value. A new series
//! is defined in the record that first uses it; the series table learns it
//! at the next checkpoint. Versions 1 and 2 wrote times against 0 and raw
//! values ([`decode_v2`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::model::{get_uvarint, get_varint, put_uvarint, put_varint, Sample};

/// Bytes before a record's payload: length, CRC, sequence number.
const FRAME_BYTES: usize = 16;
/// A payload longer than this is taken for corruption on replay.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// One series' samples in a record, with the value its previous sample
/// in the current segment had (`None`: not logged in this segment yet).
pub(super) struct Entry<'a> {
    pub id: u64,
    pub samples: &'a [Sample],
    pub prev: Option<u64>,
}

/// Per segment, while replaying: each series' last value bits, the
/// reference of its next value.
pub(super) type Prev = super::index::FastMap<u64, u64>;

pub(super) fn encode(new_series: &[(u64, Vec<u8>)], batch: &[Entry<'_>]) -> Vec<u8> {
    let n: usize = batch.iter().map(|e| e.samples.len()).sum();
    let mut out = Vec::with_capacity(16 + batch.len() * 3 + n * 6);
    put_uvarint(&mut out, new_series.len() as u64);
    for (id, labels) in new_series {
        put_uvarint(&mut out, *id);
        put_uvarint(&mut out, labels.len() as u64);
        out.extend_from_slice(labels);
    }
    put_uvarint(&mut out, batch.len() as u64);
    let Some(base) = batch.iter().find_map(|e| e.samples.first()).map(|s| s.t) else {
        return out;
    };
    put_varint(&mut out, base);
    let mut prev_id = 0u64;
    for e in batch {
        put_varint(&mut out, e.id.wrapping_sub(prev_id) as i64);
        prev_id = e.id;
        put_uvarint(&mut out, e.samples.len() as u64);
        let mut t = base;
        let mut v = e.prev.unwrap_or(0);
        for s in e.samples {
            put_varint(&mut out, s.t.wrapping_sub(t));
            t = s.t;
            put_xor(&mut out, s.v.to_bits() ^ v);
            v = s.v.to_bits();
        }
    }
    out
}

/// Calls `series(id, labels)` for every series a version 3 record
/// defines, then `sample(id, sample)` for every sample, resolving values
/// against `prev` (the segment's state, updated); `None` if the record is
/// truncated or malformed.
pub(super) fn decode(
    mut b: &[u8],
    prev: &mut Prev,
    mut series: impl FnMut(u64, &[u8]),
    mut sample: impl FnMut(u64, Sample),
) -> Option<()> {
    b = definitions(b, &mut series)?;
    let count = get_uvarint(&mut b)?;
    if count == 0 {
        return b.is_empty().then_some(());
    }
    let base = get_varint(&mut b)?;
    let mut id = 0u64;
    for _ in 0..count {
        id = id.wrapping_add(get_varint(&mut b)? as u64);
        let n = get_uvarint(&mut b)?;
        if n == 0 {
            continue;
        }
        let mut t = base;
        let slot = prev.entry(id).or_insert(0);
        let mut v = *slot;
        for _ in 0..n {
            t = t.wrapping_add(get_varint(&mut b)?);
            v ^= get_xor(&mut b)?;
            sample(
                id,
                Sample {
                    t,
                    v: f64::from_bits(v),
                },
            );
        }
        *slot = v;
    }
    b.is_empty().then_some(())
}

/// Version 2's record: definitions, then samples as version 1 wrote them.
pub(super) fn decode_v2(
    b: &[u8],
    mut series: impl FnMut(u64, &[u8]),
    sample: impl FnMut(u64, Sample),
) -> Option<()> {
    decode_samples(definitions(b, &mut series)?, sample)
}

/// Reads the new series' definitions; returns the rest.
fn definitions<'b>(mut b: &'b [u8], series: &mut impl FnMut(u64, &[u8])) -> Option<&'b [u8]> {
    let count = get_uvarint(&mut b)?;
    for _ in 0..count {
        let id = get_uvarint(&mut b)?;
        let len = usize::try_from(get_uvarint(&mut b)?).ok()?;
        let labels = b.get(..len)?;
        b = &b[len..];
        series(id, labels);
    }
    Some(b)
}

/// A XOR of two values: `0` for none, else `0x80 | leading zero bytes << 3
/// | trailing zero bytes` and the bytes between, most significant first.
fn put_xor(out: &mut Vec<u8>, x: u64) {
    if x == 0 {
        out.push(0);
        return;
    }
    let lead = (x.leading_zeros() / 8).min(7);
    let trail = (x.trailing_zeros() / 8).min(7 - lead);
    out.push(0x80 | (lead as u8) << 3 | trail as u8);
    let bytes = x.to_be_bytes();
    out.extend_from_slice(&bytes[lead as usize..8 - trail as usize]);
}

fn get_xor(b: &mut &[u8]) -> Option<u64> {
    let (&head, rest) = b.split_first()?;
    if head == 0 {
        *b = rest;
        return Some(0);
    }
    if head & 0x80 == 0 {
        return None;
    }
    let lead = usize::from(head >> 3 & 7);
    let trail = usize::from(head & 7);
    let len = 8usize.checked_sub(lead + trail).filter(|&l| l > 0)?;
    let mid = rest.get(..len)?;
    let mut bytes = [0u8; 8];
    bytes[lead..lead + len].copy_from_slice(mid);
    *b = &rest[len..];
    Some(u64::from_be_bytes(bytes))
}

/// Decodes the samples part of a record (all of a version 1 record).
pub(super) fn decode_samples(mut b: &[u8], mut f: impl FnMut(u64, Sample)) -> Option<()> {
    let count = get_uvarint(&mut b)?;
    for _ in 0..count {
        let id = get_uvarint(&mut b)?;
        let n = get_uvarint(&mut b)?;
        let mut t = 0i64;
        for _ in 0..n {
            t = t.wrapping_add(get_varint(&mut b)?);
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
    b.is_empty().then_some(())
}

/// The open segment records are appended to. Only the committer thread
/// holds it.
pub(super) struct Wal {
    dir: PathBuf,
    file: File,
    /// Bytes of the segments found at open.
    bytes: u64,
    buf: Vec<u8>,
}

/// One replayed record.
pub(super) struct Record {
    /// The segment's first sequence number (its name).
    pub segment: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}"))
}

/// Segments in `dir`, oldest first, as (first seq, path). Other files are
/// left alone.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the log in `dir` (created if missing), reads every intact
    /// record in order, and starts a new segment at `next_seq` for what
    /// comes next. A torn or corrupt record ends its segment: it was never
    /// acknowledged if it is the newest one, and is reported otherwise.
    pub fn open(dir: &Path, next_seq: impl FnOnce(u64) -> u64) -> io::Result<(Wal, Vec<Record>)> {
        fs::create_dir_all(dir)?;
        let mut records = Vec::new();
        let mut bytes = 0;
        let segs = segments(dir)?;
        let last = segs.len().saturating_sub(1);
        for (i, (segment, path)) in segs.iter().enumerate() {
            let mut data = Vec::new();
            File::open(path)?.read_to_end(&mut data)?;
            let good = read_records(*segment, &data, &mut records);
            if good < data.len() {
                if i == last {
                    tracing::info!(
                        message = "Dropping an unfinished record at the end of the write-ahead log",
                        segment = %path.display(),
                        bytes = data.len() - good
                    );
                } else {
                    tracing::warn!(
                        message = "Skipping a corrupt write-ahead log record and the rest of its segment",
                        segment = %path.display(),
                        offset = good
                    );
                }
            }
            bytes += data.len() as u64;
        }
        let max_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
        let first = next_seq(max_seq);
        let path = segment_path(dir, first);
        // A segment of that name can only be an empty leftover.
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(dir)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                file,
                bytes,
                buf: Vec::new(),
            },
            records,
        ))
    }

    /// Appends records, with `sync` made durable with one `fdatasync`;
    /// returns the bytes written. On failure nothing of this call counts as
    /// written.
    pub fn append<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a [u8])>,
        sync: bool,
    ) -> io::Result<u64> {
        self.buf.clear();
        for (seq, payload) in records {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(payload);
            let len = u32::try_from(payload.len()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "WAL record over 4 GiB")
            })?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.extend_from_slice(payload);
        }
        if self.buf.is_empty() {
            return Ok(0);
        }
        let before = self.file.metadata()?.len();
        let result = self.file.write_all(&self.buf).and_then(|()| {
            if sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Leave no partial record behind (best effort: the disk may be
            // full or failing).
            let _ = self.file.set_len(before);
            return Err(e);
        }
        Ok(self.buf.len() as u64)
    }

    /// Makes every record written so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Starts a new segment whose records all have sequence numbers of at
    /// least `first_seq`. The old segments stay until [`remove_before`].
    pub fn rotate(&mut self, first_seq: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(&self.dir, first_seq))?;
        sync_dir(&self.dir)?;
        self.file = file;
        Ok(())
    }

    /// Bytes of the segments found at open.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Deletes the segments that start before `first_seq` (the segment
/// started by the rotation at `first_seq` and later ones stay). Returns
/// the bytes freed.
pub(super) fn remove_before(dir: &Path, first_seq: u64) -> io::Result<u64> {
    let mut freed = 0;
    for (seq, path) in segments(dir)? {
        if seq >= first_seq {
            break;
        }
        freed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path)?;
    }
    if freed > 0 {
        sync_dir(dir)?;
    }
    Ok(freed)
}

/// The size with its frame of the record whose frame starts `data`
/// (`None`: not a whole frame header, or a length taken for corruption).
pub(super) fn framed_len(data: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    (len <= MAX_RECORD_BYTES).then_some(FRAME_BYTES + len)
}

/// The record framed at the start of `data`, if it is whole and checks:
/// its sequence number, payload and size with the frame.
pub(super) fn frame(data: &[u8]) -> Option<(u64, &[u8], usize)> {
    let frame = data.get(..FRAME_BYTES)?;
    let len = u32::from_le_bytes(frame[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(frame[4..8].try_into().ok()?);
    let seq_bytes = &frame[8..16];
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = data.get(FRAME_BYTES..FRAME_BYTES + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(seq_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return None;
    }
    let seq = u64::from_le_bytes(seq_bytes.try_into().ok()?);
    Some((seq, payload, FRAME_BYTES + len))
}

/// Reads framed records from `data` into `out`; returns how many bytes
/// were intact.
fn read_records(segment: u64, data: &[u8], out: &mut Vec<Record>) -> usize {
    let mut pos = 0;
    while let Some((seq, payload, size)) = frame(&data[pos..]) {
        out.push(Record {
            segment,
            seq,
            payload: payload.to_vec(),
        });
        pos += size;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (definitions, samples as (id, t, value bits)).
    type Decoded = (Vec<(u64, Vec<u8>)>, Vec<(u64, i64, u64)>);

    fn decoded(rec: &[u8], prev: &mut Prev) -> Option<Decoded> {
        let mut defs = Vec::new();
        let mut got = Vec::new();
        decode(
            rec,
            prev,
            |id, l| defs.push((id, l.to_vec())),
            |id, s| got.push((id, s.t, s.v.to_bits())),
        )?;
        Some((defs, got))
    }

    #[test]
    fn round_trip() {
        let a = [Sample { t: 5, v: 1.5 }, Sample { t: 9, v: f64::NAN }];
        let b = [Sample { t: -3, v: -0.0 }];
        let batch = [
            Entry {
                id: 7,
                samples: &a,
                prev: None,
            },
            Entry {
                id: 1 << 40,
                samples: &b,
                prev: None,
            },
            Entry {
                id: 3,
                samples: &[],
                prev: None,
            },
        ];
        let rec = encode(&[(7, b"\x01a\x01b".to_vec())], &batch);
        let mut prev = Prev::default();
        let (defs, got) = decoded(&rec, &mut prev).unwrap();
        assert_eq!(defs, [(7, b"\x01a\x01b".to_vec())]);
        assert_eq!(
            got,
            [
                (7, 5, 1.5f64.to_bits()),
                (7, 9, f64::NAN.to_bits()),
                (1 << 40, -3, (-0.0f64).to_bits())
            ]
        );
        for cut in 0..rec.len() {
            assert!(
                decoded(&rec[..cut], &mut Prev::default()).is_none(),
                "{cut}"
            );
        }
        // Definitions alone.
        let rec = encode(&[(1, b"x".to_vec())], &[]);
        assert_eq!(decoded(&rec, &mut prev).unwrap().0, [(1, b"x".to_vec())]);
    }

    #[test]
    fn values_refer_to_the_series_previous_one_in_the_segment() {
        let mut prev = Prev::default();
        let mut state = Prev::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut total = 0;
        for round in 0..200i64 {
            let samples: Vec<Vec<Sample>> = (0..20u64)
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let v = match i % 4 {
                        0 => 42.0,
                        1 => (round * 15) as f64,
                        2 => f64::from_bits(rng),
                        _ => round as f64 * 0.1,
                    };
                    vec![Sample {
                        t: 1_700_000_000_000 + round * 15_000,
                        v,
                    }]
                })
                .collect();
            let batch: Vec<Entry> = samples
                .iter()
                .enumerate()
                .map(|(i, s)| Entry {
                    id: i as u64,
                    samples: s,
                    prev: state.get(&(i as u64)).copied(),
                })
                .collect();
            let rec = encode(&[], &batch);
            total += rec.len();
            let (_, got) = decoded(&rec, &mut prev).unwrap();
            let want: Vec<(u64, i64, u64)> = samples
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64, s[0].t, s[0].v.to_bits()))
                .collect();
            assert_eq!(got, want, "round {round}");
            for (i, s) in samples.iter().enumerate() {
                state.insert(i as u64, s[0].v.to_bits());
            }
        }
        // Per sample: id, count and time a byte each; the value 1 byte for
        // constants, a few for steady changes, 9 for random bits (version
        // 2 took 16 or more for each).
        assert!(total < 200 * 20 * 9, "{total} bytes");
    }

    #[test]
    fn xor_forms() {
        for x in [
            1u64,
            1 << 63,
            u64::MAX,
            0x00ff_0000_0000_0000,
            0x0000_0000_0000_ff00,
        ] {
            let mut out = Vec::new();
            put_xor(&mut out, x);
            let mut b = &out[..];
            assert_eq!(get_xor(&mut b), Some(x));
            assert!(b.is_empty());
        }
        // A malformed header (no bytes between) is refused.
        assert_eq!(get_xor(&mut &[0x80 | 4 << 3 | 4][..]), None);
        assert_eq!(get_xor(&mut &[0x01][..]), None);
    }

    #[test]
    fn segments_survive_a_torn_tail_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, recs) = Wal::open(dir.path(), |m| m + 1).unwrap();
        assert!(recs.is_empty());
        wal.append([(1, &b"one"[..]), (2, &b"two"[..])].into_iter(), true)
            .unwrap();
        wal.rotate(3).unwrap();
        wal.append([(3, &b"three"[..])].into_iter(), false).unwrap();
        drop(wal);
        // A torn record at the end of the newest segment.
        let newest = segment_path(dir.path(), 3);
        let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (wal, recs) = Wal::open(dir.path(), |m| m + 1).unwrap();
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(recs[2].payload, b"three");
        drop(wal);
        // Everything before the segment started at 3 goes.
        assert!(remove_before(dir.path(), 3).unwrap() > 0);
        let (_, recs) = Wal::open(dir.path(), |m| m + 1).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_flipped_bit_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), |m| m + 1).unwrap();
        wal.append([(1, &b"aaaa"[..]), (2, &b"bbbb"[..])].into_iter(), true)
            .unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 2] ^= 1;
        fs::write(&path, data).unwrap();
        let (_, recs) = Wal::open(dir.path(), |m| m + 1).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
    }
}
