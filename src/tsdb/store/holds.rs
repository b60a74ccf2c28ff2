//! Holds on the write-ahead log for its readers (remote write out): the
//! segments holding records a reader has not had acknowledged stay, up to
//! the reader's disk budget; each reader's position is a row of `kv`
//! (namespace `tsdb.log_holds`), written when it moves.

use super::*;
use crate::tsdb::tail::{self, Cursor, LogBatch};

pub(super) const NS_HOLDS: &str = "tsdb.log_holds";

/// One reader's hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hold {
    /// The last record the reader had acknowledged.
    acked: u64,
    /// The most log bytes its backlog may keep.
    max_bytes: u64,
    /// Samples deleted unread because the backlog passed `max_bytes`.
    dropped: u64,
}

impl Storage {
    /// The stored positions, holding their segments (with no budget until
    /// their readers register again).
    pub(super) fn load_holds(&self) -> Result<(), StorageError> {
        let mut holds = lock(&self.holds);
        for (k, v) in self.kv_scan(NS_HOLDS)? {
            let (Ok(name), Some(acked)) = (String::from_utf8(k), position(&v)) else {
                continue;
            };
            holds.insert(
                name,
                Hold {
                    acked,
                    max_bytes: u64::MAX,
                    dropped: 0,
                },
            );
        }
        Ok(())
    }

    /// Registers the log reader `name` with a disk budget and returns its
    /// position: the one stored, or the log's end for a new reader (it
    /// forwards what arrives from now on). Readers not registered since
    /// the store opened hold nothing.
    pub fn hold_log(&self, name: &str, max_bytes: u64) -> Result<u64, StorageError> {
        let stored = self
            .kv_scan(NS_HOLDS)?
            .into_iter()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| position(&v));
        let acked = match stored {
            Some(a) => a,
            None => {
                let end = lock(&self.state).next_seq.saturating_sub(1);
                self.kv_put(NS_HOLDS, name.as_bytes(), &end.to_le_bytes())?;
                end
            }
        };
        {
            // Under the state lock: every record from `next_seq` on is kept.
            let st = lock(&self.state);
            lock(&self.tap).start(st.next_seq);
        }
        lock(&self.holds).insert(
            name.to_string(),
            Hold {
                acked,
                max_bytes,
                dropped: 0,
            },
        );
        Ok(acked)
    }

    /// Forgets the stored positions of readers other than `keep` (endpoints
    /// removed from the configuration), so their backlog goes.
    pub fn release_log_holds_except(&self, keep: &[&str]) -> Result<(), StorageError> {
        for (k, _) in self.kv_scan(NS_HOLDS)? {
            if !keep.iter().any(|n| n.as_bytes() == k.as_slice()) {
                self.kv_delete(NS_HOLDS, &k)?;
            }
        }
        let mut holds = lock(&self.holds);
        holds.retain(|n, _| keep.contains(&n.as_str()));
        if holds.is_empty() {
            lock(&self.tap).stop();
        }
        Ok(())
    }

    /// Moves reader `name` past record `seq` (acknowledged by its
    /// receiver), durably.
    pub fn log_acked(&self, name: &str, seq: u64) -> Result<(), StorageError> {
        // The budget may have moved the reader further already.
        let seq = {
            let mut holds = lock(&self.holds);
            let seq = match holds.get_mut(name) {
                Some(h) => {
                    h.acked = h.acked.max(seq);
                    h.acked
                }
                None => seq,
            };
            // What every reader had acknowledged leaves memory.
            if let Some(all) = holds.values().map(|h| h.acked).min() {
                lock(&self.tap).prune(all);
            }
            seq
        };
        self.kv_put(NS_HOLDS, name.as_bytes(), &seq.to_le_bytes())
    }

    /// Samples reader `name` lost to its disk budget since the store opened.
    pub fn log_dropped(&self, name: &str) -> u64 {
        lock(&self.holds).get(name).map_or(0, |h| h.dropped)
    }

    /// The bytes of log kept for reader `name` (its backlog).
    pub fn log_backlog_bytes(&self, name: &str) -> u64 {
        let Some(acked) = lock(&self.holds).get(name).map(|h| h.acked) else {
            return 0;
        };
        let Ok(segments) = wal::segments(&self.wal_dir) else {
            return 0;
        };
        let from = hold_segment(&segments, acked);
        segments
            .iter()
            .filter(|(s, _)| *s >= from)
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Reader `name`'s records after `after` (or after where its disk
    /// budget moved it, if that is later: those records were dropped), up
    /// to about `max_samples` samples: from memory if the reader keeps up,
    /// else from the log's segments (`cursor` keeps where reading them
    /// stopped).
    pub fn read_log(
        &self,
        name: &str,
        cursor: &mut Cursor,
        after: u64,
        max_samples: usize,
    ) -> Result<LogBatch, StorageError> {
        let after = match lock(&self.holds).get(name) {
            Some(h) => after.max(h.acked),
            None => after,
        };
        if let Some(batch) = lock(&self.tap).read(after, max_samples) {
            return Ok(batch);
        }
        tail::read(&self.wal_dir, cursor, after, max_samples)
            .map_err(|e| StorageError::from_io("cannot read the write-ahead log", &e))
    }

    /// The labels of each series in `ids` (`None`: no such series, e.g.
    /// deleted by retention).
    pub fn series_labels(&self, ids: &[u64]) -> Vec<Option<Arc<Labels>>> {
        let st = lock(&self.state);
        ids.iter().map(|id| st.index.labels(*id).cloned()).collect()
    }

    /// The first segment to keep below `first_seq` (the checkpoint's): the
    /// oldest any reader still needs, after each reader's backlog was cut
    /// to its budget (counting what that drops).
    pub(super) fn keep_segments_from(&self, first_seq: u64) -> u64 {
        let mut holds = lock(&self.holds);
        if holds.is_empty() {
            return first_seq;
        }
        let Ok(segments) = wal::segments(&self.wal_dir) else {
            return first_seq;
        };
        let sizes: Vec<(u64, u64)> = segments
            .iter()
            .map(|(s, p)| (*s, std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)))
            .collect();
        let mut keep = first_seq;
        for h in holds.values_mut() {
            let mut from = hold_segment(&segments, h.acked);
            let backlog = |from: u64| {
                sizes
                    .iter()
                    .filter(|(s, _)| *s >= from)
                    .map(|(_, b)| b)
                    .sum::<u64>()
            };
            // Over budget: the oldest segments go, read for what they lose.
            while backlog(from) > h.max_bytes {
                let Some(&(next, _)) = sizes.iter().find(|(s, _)| *s > from) else {
                    break;
                };
                h.dropped += count_in_segment(&self.wal_dir, from, h.acked).unwrap_or(0) as u64;
                h.acked = h.acked.max(next.saturating_sub(1));
                from = next;
            }
            keep = keep.min(from);
        }
        keep
    }
}

fn position(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))
}

/// The segment holding the record after `acked`: the last one starting at
/// or before `acked + 1` (the first one if all start later).
fn hold_segment(segments: &[(u64, std::path::PathBuf)], acked: u64) -> u64 {
    segments
        .iter()
        .rev()
        .find(|(s, _)| *s <= acked + 1)
        .or(segments.first())
        .map_or(u64::MAX, |(s, _)| *s)
}

/// Samples after `acked` in segment `first`.
fn count_in_segment(dir: &std::path::Path, first: u64, acked: u64) -> Option<usize> {
    let path = dir.join(format!("{first:020}"));
    let data = std::fs::read(path).ok()?;
    let mut pos = 0;
    let mut prev = wal::Prev::default();
    let mut n = 0;
    while let Some((seq, payload, size)) = wal::frame(&data[pos..]) {
        let mut here = 0;
        wal::decode(payload, &mut prev, |_, _| {}, |_, _| here += 1)?;
        if seq > acked {
            n += here;
        }
        pos += size;
    }
    Some(n)
}
