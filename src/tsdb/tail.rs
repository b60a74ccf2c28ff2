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

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::index::FastMap;
use super::wal::{self, Prev};
use crate::model::{Labels, Sample};

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
}

/// Records read from the log.
#[derive(Debug, Default)]
pub struct LogBatch {
    /// Per series (in the order first met), its samples in log order.
    pub series: Vec<(Arc<Labels>, Vec<Sample>)>,
    /// Samples in `series`.
    pub samples: usize,
    /// The sequence number of the last record in the batch (0: none).
    pub last_seq: u64,
    /// Samples of series whose labels are no longer known (deleted by
    /// retention before they were forwarded).
    pub unknown: usize,
}

/// Reads the records after `after` from the segments in `dir`, whole, until
/// `max_samples` were read or the log's end; `labels` names a series the
/// records do not define. A record not fully written yet ends the batch.
pub(super) fn read(
    dir: &Path,
    cursor: &mut Cursor,
    after: u64,
    max_samples: usize,
    labels: &dyn Fn(u64) -> Option<Arc<Labels>>,
) -> std::io::Result<LogBatch> {
    let segments = wal::segments(dir)?;
    let mut out = LogBatch::default();
    // Where each series is in `out.series`.
    let mut at: FastMap<u64, usize> = FastMap::default();
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
            ..Cursor::default()
        };
    }
    while let Some(current) = cursor.segment {
        let Some((_, path)) = segments.iter().find(|(s, _)| *s == current) else {
            // Deleted under us (the budget): start again where the log is.
            cursor.segment = None;
            break;
        };
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut data = vec![0; (len.saturating_sub(cursor.offset)) as usize];
        file.read_exact_at(&mut data, cursor.offset)?;
        let mut pos = 0;
        while let Some((seq, payload, size)) = wal::frame(&data[pos..]) {
            let mut defs: Vec<(u64, Arc<Labels>)> = Vec::new();
            let mut samples: Vec<(u64, Sample)> = Vec::new();
            let ok = wal::decode(
                payload,
                &mut cursor.prev,
                |id, l| {
                    if let Some(l) = Labels::decode(l) {
                        defs.push((id, Arc::new(l)));
                    }
                },
                |id, s| samples.push((id, s)),
            );
            if ok.is_none() {
                // A record that does not decode ends its segment (as replay
                // decides).
                pos = data.len();
                break;
            }
            for (id, l) in defs {
                cursor.defined.insert(id, l);
            }
            pos += size;
            if seq <= after {
                continue;
            }
            for (id, s) in samples {
                if let Some(&i) = at.get(&id) {
                    out.series[i].1.push(s);
                    out.samples += 1;
                    continue;
                }
                match cursor.defined.get(&id).cloned().or_else(|| labels(id)) {
                    Some(l) => {
                        at.insert(id, out.series.len());
                        out.series.push((l, vec![s]));
                        out.samples += 1;
                    }
                    None => out.unknown += 1,
                }
            }
            out.last_seq = seq;
            if out.samples >= max_samples {
                break;
            }
        }
        cursor.offset += pos as u64;
        if out.samples >= max_samples {
            break;
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
    Ok(out)
}
