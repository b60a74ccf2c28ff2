//! Reading the write-ahead log behind the committer, for forwarding
//! (remote write out): every sample the store acknowledged or collected is
//! in a log record before anything else sees it, so a reader that follows
//! the log and keeps its own position forwards everything, across
//! restarts, without a second copy of the data.
//!
//! A reader ([`Cursor`]) names what it has had acknowledged by a record
//! sequence number; the store keeps the log segments holding later records
//! (a *hold*, persisted in the data file) until the reader moves past
//! them, or until they pass the reader's disk budget, when the oldest are
//! deleted anyway and the samples lost counted.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::index::FastMap;
use super::wal::{self, Prev};
use crate::model::{Labels, Sample};

/// Bytes of a segment read at once: a reader far behind does not read
/// the rest of a long segment for every batch (a record longer than this
/// is read whole).
const WINDOW: usize = if cfg!(test) { 64 } else { 4 << 20 };

/// Where a reader is in the log.
#[derive(Default)]
pub struct Cursor {
    /// The segment being read (its first sequence number) and the offset of
    /// the next record in it.
    segment: Option<u64>,
    offset: u64,
    /// The segment's value references, for decoding.
    prev: Prev,
    /// Series defined in the records read, by id.
    defined: FastMap<u64, Arc<Labels>>,
    /// The bytes read last, and where each series is in the batch being
    /// read (both kept to be reused).
    buf: Vec<u8>,
    at: FastMap<u64, usize>,
}

/// One series' samples in a [`LogBatch`].
#[derive(Debug)]
pub struct LogSeries {
    /// The store's id of the series: the same series for as long as the
    /// process runs.
    pub id: u64,
    /// Its labels if the log defines them; else the index has them
    /// ([`Storage::series_labels`](super::Storage::series_labels)), unless
    /// retention deleted the series before it was read.
    pub labels: Option<Arc<Labels>>,
    /// Its samples in log order.
    pub samples: Vec<Sample>,
}

/// Records read from the log.
#[derive(Debug, Default)]
pub struct LogBatch {
    /// Per series (in the order first met), its samples in log order.
    pub series: Vec<LogSeries>,
    /// Samples in `series`.
    pub samples: usize,
    /// The sequence number of the last record in the batch (0: none).
    pub last_seq: u64,
}

/// The most bytes of samples and series references the [`Tap`] keeps.
const TAP_BYTES: usize = 16 << 20;

/// The newest log records, kept in memory while a reader is registered: a
/// reader that keeps up reads them here instead of reading and decoding
/// what was just written. A record is served only once it is in the log
/// (`written`), so a reader sees nothing the log has not; the oldest go
/// when every reader has had them acknowledged or past [`TAP_BYTES`],
/// and a reader behind what the tap holds reads the segments.
#[derive(Default)]
pub(super) struct Tap {
    active: bool,
    /// Every record from this sequence number on is here (or not written
    /// yet).
    from: u64,
    /// Every record up to this one is written to the log.
    written: u64,
    records: VecDeque<TapRecord>,
    bytes: usize,
}

/// One record's samples: per series its id and where its samples end.
struct TapRecord {
    seq: u64,
    series: Vec<(u64, usize)>,
    samples: Vec<Sample>,
}

impl TapRecord {
    fn bytes(&self) -> usize {
        self.samples.len() * std::mem::size_of::<Sample>()
            + self.series.len() * std::mem::size_of::<(u64, usize)>()
    }
}

impl Tap {
    /// Keeps the records from `next_seq` on (called under the store's
    /// state lock, which orders records).
    pub(super) fn start(&mut self, next_seq: u64) {
        if !self.active {
            *self = Tap {
                active: true,
                from: next_seq,
                written: next_seq.saturating_sub(1),
                ..Tap::default()
            };
        }
    }

    /// Keeps nothing any more (no reader left).
    pub(super) fn stop(&mut self) {
        *self = Tap::default();
    }

    /// Keeps record `seq` (in sequence order, under the state lock).
    pub(super) fn push<'a>(&mut self, seq: u64, series: impl Iterator<Item = (u64, &'a [Sample])>) {
        if !self.active {
            return;
        }
        let mut r = TapRecord {
            seq,
            series: Vec::new(),
            samples: Vec::new(),
        };
        for (id, samples) in series {
            r.samples.extend_from_slice(samples);
            r.series.push((id, r.samples.len()));
        }
        self.bytes += r.bytes();
        self.records.push_back(r);
        while self.bytes > TAP_BYTES {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(old) = self.records.pop_front() {
            self.bytes -= old.bytes();
            self.from = old.seq + 1;
        }
    }

    /// Record `seq`, and so every one before it, is in the log.
    pub(super) fn written(&mut self, seq: u64) {
        self.written = self.written.max(seq);
    }

    /// Forgets the records up to `acked` (every reader had them
    /// acknowledged).
    pub(super) fn prune(&mut self, acked: u64) {
        while self.records.front().is_some_and(|r| r.seq <= acked) {
            self.pop();
        }
    }

    /// The records after `after`, as [`read`] would give them (labels left
    /// to the index), if the tap holds every one of them.
    pub(super) fn read(&self, after: u64, max_samples: usize) -> Option<LogBatch> {
        if !self.active || self.from > after.saturating_add(1) {
            return None;
        }
        let mut out = LogBatch::default();
        let mut at: FastMap<u64, usize> = FastMap::default();
        let start = self.records.partition_point(|r| r.seq <= after);
        for r in self.records.range(start..) {
            if r.seq > self.written {
                break;
            }
            let mut begin = 0;
            for &(id, end) in &r.series {
                let samples = &r.samples[begin..end];
                begin = end;
                let i = *at.entry(id).or_insert_with(|| {
                    out.series.push(LogSeries {
                        id,
                        labels: None,
                        samples: Vec::with_capacity(samples.len() * 4),
                    });
                    out.series.len() - 1
                });
                out.series[i].samples.extend_from_slice(samples);
                out.samples += samples.len();
            }
            out.last_seq = r.seq;
            if out.samples >= max_samples {
                break;
            }
        }
        Some(out)
    }
}

/// Reads from `offset` of `file` (`avail` bytes written there) at most
/// [`WINDOW`] bytes, or the first record whole if it is longer.
fn read_window(file: &File, offset: u64, avail: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut n = avail.min(WINDOW);
    loop {
        buf.resize(n, 0);
        file.read_exact_at(buf, offset)?;
        match wal::framed_len(buf) {
            Some(need) if need > n && need <= avail => n = need,
            _ => return Ok(()),
        }
    }
}

/// Reads the records after `after` from the segments in `dir`, whole, until
/// `max_samples` were read or the log's end. A record not fully written
/// yet ends the batch.
pub(super) fn read(
    dir: &Path,
    cursor: &mut Cursor,
    after: u64,
    max_samples: usize,
) -> std::io::Result<LogBatch> {
    let segments = wal::segments(dir)?;
    let mut out = LogBatch::default();
    // The segment holding `after + 1`: the last one starting at or before it.
    let want = segments
        .iter()
        .rev()
        .find(|(first, _)| *first <= after + 1)
        .or(segments.first())
        .map(|(first, _)| *first);
    let Some(want) = want else {
        return Ok(out);
    };
    if cursor.segment.is_none_or(|s| s < want) {
        *cursor = Cursor {
            segment: Some(want),
            defined: std::mem::take(&mut cursor.defined),
            buf: std::mem::take(&mut cursor.buf),
            at: std::mem::take(&mut cursor.at),
            ..Cursor::default()
        };
    }
    let mut data = std::mem::take(&mut cursor.buf);
    // Where each series is in `out.series`.
    let mut at = std::mem::take(&mut cursor.at);
    at.clear();
    let mut defs: Vec<(u64, Arc<Labels>)> = Vec::new();
    // Series of the batch a record added to: where, and how many samples
    // they had before it.
    let mut touched: Vec<(usize, usize)> = Vec::new();
    while let Some(current) = cursor.segment {
        let Some((_, path)) = segments.iter().find(|(s, _)| *s == current) else {
            // Deleted under us (the budget): start again where the log is.
            cursor.segment = None;
            break;
        };
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let avail = len.saturating_sub(cursor.offset) as usize;
        read_window(&file, cursor.offset, avail, &mut data)?;
        let mut pos = 0;
        let mut ends_segment = false;
        while let Some((seq, payload, size)) = wal::frame(&data[pos..]) {
            // Samples go straight into the batch; a record that does not
            // decode is taken back out.
            let (series_before, samples_before) = (out.series.len(), out.samples);
            touched.clear();
            let wanted = seq > after;
            // A record holds each series' samples together: look a series
            // up once per run of its samples.
            let mut last: Option<(u64, usize)> = None;
            let ok = wal::decode(
                payload,
                &mut cursor.prev,
                |id, l| {
                    if let Some(l) = Labels::decode(l) {
                        defs.push((id, Arc::new(l)));
                    }
                },
                |id, s| {
                    if !wanted {
                        return;
                    }
                    let i = match last {
                        Some((l, i)) if l == id => i,
                        _ => match at.get(&id) {
                            Some(&i) => {
                                touched.push((i, out.series[i].samples.len()));
                                i
                            }
                            None => {
                                at.insert(id, out.series.len());
                                out.series.push(LogSeries {
                                    id,
                                    labels: None,
                                    // A batch holds a few records of each
                                    // series, usually.
                                    samples: Vec::with_capacity(4),
                                });
                                out.series.len() - 1
                            }
                        },
                    };
                    out.series[i].samples.push(s);
                    out.samples += 1;
                    last = Some((id, i));
                },
            );
            if ok.is_none() {
                for x in out.series.drain(series_before..) {
                    at.remove(&x.id);
                }
                for &(i, len) in &touched {
                    out.series[i].samples.truncate(len);
                }
                out.samples = samples_before;
                defs.clear();
                // A record that does not decode ends its segment (as replay
                // decides).
                ends_segment = true;
                break;
            }
            for (id, l) in defs.drain(..) {
                cursor.defined.insert(id, l);
            }
            for x in &mut out.series[series_before..] {
                x.labels = cursor.defined.get(&x.id).cloned();
            }
            pos += size;
            if !wanted {
                continue;
            }
            out.last_seq = seq;
            if out.samples >= max_samples {
                break;
            }
        }
        cursor.offset = if ends_segment {
            len
        } else {
            cursor.offset + pos as u64
        };
        if out.samples >= max_samples {
            break;
        }
        // More of this segment than the window held: read on.
        if !ends_segment && pos > 0 && data.len() < avail {
            continue;
        }
        // At the end of what this segment holds: go on with the next one if
        // there is one (the committer writes only to the newest, so this
        // one is complete, and a record that does not check ends it, as
        // replay decides), else wait for more.
        match segments.iter().find(|(s, _)| *s > current) {
            Some((next, _)) => {
                cursor.segment = Some(*next);
                cursor.offset = 0;
                cursor.prev = Prev::default();
                // Series defined before are in the index by now.
                cursor.defined = FastMap::default();
            }
            None => break,
        }
    }
    if data.capacity() > 2 * WINDOW {
        data = Vec::new();
    }
    cursor.buf = data;
    cursor.at = at;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{Storage, StorageOptions};

    fn tap_samples(b: &LogBatch) -> Vec<(u64, i64)> {
        b.series
            .iter()
            .flat_map(|x| x.samples.iter().map(move |s| (x.id, s.t)))
            .collect()
    }

    /// The tap serves only written records, everything after a position
    /// it holds whole, and nothing (`None`: read the segments) once the
    /// records after a position are gone from it.
    #[test]
    fn the_tap_serves_written_records_it_holds_whole() {
        let mut tap = Tap::default();
        let smp = |t| [Sample { t, v: 1.0 }];
        tap.push(1, [(7, &smp(1)[..])].into_iter());
        assert!(tap.records.is_empty(), "inactive: keeps nothing");
        tap.start(5);
        assert!(tap.read(3, 100).is_none(), "record 4 is not here");
        tap.push(5, [(7, &smp(5)[..]), (8, &smp(5)[..])].into_iter());
        tap.push(7, [(7, &smp(7)[..])].into_iter());
        let b = tap.read(4, 100).unwrap();
        assert_eq!(b.last_seq, 0, "nothing written yet");
        tap.written(5);
        let b = tap.read(4, 100).unwrap();
        assert_eq!((b.last_seq, tap_samples(&b)), (5, vec![(7, 5), (8, 5)]));
        tap.written(7);
        let b = tap.read(4, 100).unwrap();
        assert_eq!(b.last_seq, 7);
        assert_eq!(tap_samples(&b), [(7, 5), (7, 7), (8, 5)]);
        // Whole records up to the limit.
        assert_eq!(tap.read(4, 1).unwrap().last_seq, 5);
        // From a gap (6 was never a record) on.
        assert_eq!(tap_samples(&tap.read(6, 100).unwrap()), [(7, 7)]);
        tap.prune(5);
        assert!(tap.read(4, 100).is_none(), "record 5 is gone");
        assert_eq!(tap.read(5, 100).unwrap().last_seq, 7);
        // Past its size the oldest go.
        let many = vec![Sample { t: 9, v: 0.0 }; TAP_BYTES / 16 - 2];
        tap.push(9, [(7, &many[..])].into_iter());
        tap.written(9);
        assert!(tap.read(5, 100).is_none());
        assert_eq!(tap.read(8, 100).unwrap().last_seq, 9);
        tap.stop();
        assert!(tap.read(8, 100).is_none());
    }

    /// A registered reader that keeps up is served from memory: with the
    /// segment files gone it still gets every sample, in order.
    #[test]
    fn a_reader_that_keeps_up_reads_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(StorageOptions::new(dir.path())).unwrap();
        let start = s.hold_log("r", u64::MAX).unwrap();
        let l = Labels::new([("__name__", "m")]).unwrap();
        for t in 0..5 {
            let mut app = s.appender();
            app.append(l.clone(), t, t as f64);
            app.commit().unwrap();
        }
        for (_, path) in wal::segments(&dir.path().join("wal")).unwrap() {
            std::fs::remove_file(path).unwrap();
        }
        let b = s.read_log("r", &mut Cursor::default(), start, 100).unwrap();
        assert_eq!(b.series.len(), 1);
        let ts: Vec<i64> = b.series[0].samples.iter().map(|x| x.t).collect();
        assert_eq!(ts, [0, 1, 2, 3, 4]);
        assert_eq!(s.series_labels(&[b.series[0].id]), [Some(Arc::new(l))]);
    }

    /// A record that frames but does not decode ends its segment: what it
    /// added to the batch is taken back, the records before it stay, and
    /// reading goes on in the next segment.
    #[test]
    fn a_record_that_does_not_decode_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = wal::Wal::open(dir.path(), |m| m + 1).unwrap();
        let a = Labels::new([("__name__", "a")]).unwrap();
        let b = Labels::new([("__name__", "b")]).unwrap();
        let smp = |t: i64| [Sample { t, v: t as f64 }];
        fn entry(id: u64, samples: &[Sample], prev: Option<u64>) -> wal::Entry<'_> {
            wal::Entry { id, samples, prev }
        }
        let (s10, s20, s30) = (smp(10), smp(20), smp(30));
        let first = wal::encode(&[(1, a.encode())], &[entry(1, &s10, None)]);
        let mut second = wal::encode(
            &[(2, b.encode())],
            &[entry(1, &s20, Some(10f64.to_bits())), entry(2, &s20, None)],
        );
        second.truncate(second.len() - 2);
        w.append([(1, &first[..]), (2, &second[..])].into_iter(), true)
            .unwrap();
        w.rotate(3).unwrap();
        let third = wal::encode(&[], &[entry(1, &s30, None)]);
        w.append([(3, &third[..])].into_iter(), true).unwrap();
        let mut cursor = Cursor::default();
        let got = read(dir.path(), &mut cursor, 0, 1000).unwrap();
        let ids: Vec<(u64, Vec<i64>)> = got
            .series
            .iter()
            .map(|x| (x.id, x.samples.iter().map(|s| s.t).collect()))
            .collect();
        assert_eq!(ids, [(1, vec![10, 30])]);
        assert_eq!(got.samples, 2);
        assert_eq!(got.last_seq, 3);
        assert_eq!(got.series[0].labels.as_deref(), Some(&a));
    }

    /// With a window of a few dozen bytes, records longer than it, several
    /// in one window, and batches ending mid-segment all read back once
    /// and in order, across a checkpoint's new segment.
    #[test]
    fn a_reader_reads_a_segment_window_by_window() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(StorageOptions::new(dir.path())).unwrap();
        let start = s.hold_log("r", u64::MAX).unwrap();
        let mut want = Vec::new();
        for k in 0..40i64 {
            let mut app = s.appender();
            // A few series, the first records defining them (long), later
            // ones a sample or two (short).
            for j in 0..(1 + k % 3) {
                let l = Labels::new([("__name__", "m"), ("j", &j.to_string())]).unwrap();
                app.append(l, k, (k * 10 + j) as f64);
                want.push((j.to_string(), k));
            }
            app.commit().unwrap();
            if k == 25 {
                s.checkpoint().unwrap();
            }
        }
        // After a restart nothing is in memory: the segments are read.
        s.close().unwrap();
        drop(s);
        let s = Storage::open(StorageOptions::new(dir.path())).unwrap();
        assert_eq!(s.hold_log("r", u64::MAX).unwrap(), start);
        let mut got = Vec::new();
        let (mut cursor, mut after) = (Cursor::default(), start);
        loop {
            let b = s.read_log("r", &mut cursor, after, 2).unwrap();
            if b.last_seq == 0 {
                break;
            }
            let ids: Vec<u64> = b.series.iter().map(|x| x.id).collect();
            for (x, indexed) in b.series.into_iter().zip(s.series_labels(&ids)) {
                let l = x.labels.or(indexed).unwrap();
                for smp in x.samples {
                    got.push((l.get("j").unwrap().to_string(), smp.t));
                }
            }
            after = b.last_seq;
        }
        // Each series' samples in order, none twice.
        for j in ["0", "1", "2"] {
            let ts: Vec<i64> = got.iter().filter(|(x, _)| x == j).map(|x| x.1).collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "{j}: {ts:?}");
        }
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}
