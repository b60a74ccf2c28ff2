//! Maintenance: checkpoints, merges of parts, series files rewritten,
//! retention and compaction of the data file — driven by size and age.

use super::*;

/// A checkpoint is due once the log holds this much.
pub(super) const MIN_CHECKPOINT_BYTES: u64 = 64 << 10;

/// ... or once records waited this long in the log.
pub(super) const CHECKPOINT_AGE: std::time::Duration = std::time::Duration::from_secs(1800);

/// Compaction runs when at least this much of the file (and a quarter of
/// it) is free; gains below `COMPACT_BIG` at most once per
/// `COMPACT_SMALL_EVERY`.
pub(super) const COMPACT_MIN_FREE: u64 = 16 << 10;

pub(super) const COMPACT_BIG: u64 = 1 << 20;

pub(super) const COMPACT_SMALL_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Series files are rewritten into one when there are more than this.
pub(super) const MAX_SERIES_FILES: usize = 8;

/// What one [`Storage::maintain`] pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Maintenance {
    pub checkpointed: bool,
    /// Parts merged into bigger ones.
    pub merged_parts: usize,
    /// Bytes the data file shrank by (compaction).
    pub reclaimed_bytes: u64,
}

/// Orders parts by day, then by when they were written.
pub(super) fn sort_parts(parts: &mut [Arc<Part>]) {
    parts.sort_by_key(|p| (p.day, p.id));
}

/// Replaces the parts `remove` names by `add` in what readers see next
/// (readers holding the old list keep their open files).
pub(super) fn swap_parts(st: &mut State, remove: &[u64], add: impl IntoIterator<Item = Part>) {
    let mut parts: Vec<Arc<Part>> = st
        .parts
        .iter()
        .filter(|p| !remove.contains(&p.id))
        .cloned()
        .collect();
    parts.extend(add.into_iter().map(Arc::new));
    sort_parts(&mut parts);
    st.parts = Arc::new(parts);
}

/// The parts of one day to merge next, if any: walking from the newest
/// part back, an older part joins while it is at most twice the size of
/// the newer ones together. This keeps a day at O(log n) parts and writes
/// each byte O(log n) times.
pub(super) fn merge_candidate(parts: &[Arc<Part>]) -> Option<Vec<Arc<Part>>> {
    let mut i = 0;
    while i < parts.len() {
        let day = parts[i].day;
        let end = i + parts[i..].iter().take_while(|p| p.day == day).count();
        let mut start = end - 1;
        let mut acc = parts[start].bytes;
        while start > i && parts[start - 1].bytes <= 2 * acc {
            start -= 1;
            acc += parts[start].bytes;
        }
        if end - start >= 2 {
            return Some(parts[start..end].to_vec());
        }
        i = end;
    }
    None
}

impl Storage {
    /// Writes every sample the log holds (heads and closed chunks) and
    /// the new series to the data directory and deletes the log segments
    /// that held them. A head cut by a checkpoint goes on as a new chunk;
    /// merges join the pieces.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let _w = lock(&self.writer);
        self.checkpoint_locked()
    }

    pub(super) fn checkpoint_locked(&self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_space(DISK_RESERVE / 2)?;
        let sender = self.sender()?;
        let (seq, mut job, closed, new_series, rx) = {
            let mut st = lock(&self.state);
            let seq = st.next_seq;
            st.next_seq += 1;
            let new_series = std::mem::take(&mut st.new_series);
            let job = Job {
                checkpoint_seq: Some(seq),
                drop_legacy: st.migrate_from.is_some(),
                ..Job::default()
            };
            let st = &mut *st;
            for (&id, ms) in st.series.iter_mut() {
                if !ms.head.is_empty() {
                    close_head(ms, seq);
                    st.pending_ids.push(id);
                }
            }
            st.pending_ids.sort_unstable();
            st.pending_ids.dedup();
            // Closed chunks' samples by day, each series' in time order.
            let mut closed = SamplesByDay::new();
            for &id in &st.pending_ids {
                let Some(ms) = st.series.get(&id) else {
                    continue;
                };
                let n = ms.pending.iter().map(|p| p.samples.len()).sum();
                // The run of samples in one day (they come in time order).
                let mut run: Option<(i64, Vec<Sample>)> = None;
                for s in ms.pending.iter().flat_map(|p| &p.samples) {
                    let d = part::day_of(s.t);
                    match &mut run {
                        Some((day, samples)) if *day == d => samples.push(*s),
                        _ => {
                            if let Some((day, samples)) = run.take() {
                                closed.entry(day).or_default().push((id, samples));
                            }
                            let mut samples = Vec::with_capacity(n);
                            samples.push(*s);
                            run = Some((d, samples));
                        }
                    }
                }
                if let Some((day, samples)) = run {
                    closed.entry(day).or_default().push((id, samples));
                }
            }
            st.records_bytes = 0;
            st.records_samples = 0;
            st.segment = st.segment.wrapping_add(1).max(1);
            st.last_checkpoint = std::time::Instant::now();
            // Records up to `seq` stay in the older segments.
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((Op::Rotate { first_seq: seq }, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (seq, job, closed, new_series, rx)
        };
        self.wait(rx)?;
        let series_file = if new_series.is_empty() {
            None
        } else {
            Some(
                self.write_series_file(&new_series, &[])
                    .map_err(|e| self.abandon(e, &[], &[]))?,
            )
        };
        job.series_files_add.extend(series_file);
        let mut written = Vec::new();
        for (day, series) in closed {
            let blocks = series.into_iter().map(|(id, samples)| {
                let blocks = samples.chunks(part::BLOCK_SAMPLES).map(chunk::encode);
                Ok((id, blocks.collect()))
            });
            let part = self.write_part(day, blocks);
            match part {
                Ok(Some(p)) => written.push(p),
                Ok(None) => {}
                Err(e) => return Err(self.abandon(e, &written, &job.series_files_add)),
            }
        }
        job.parts_add = written.iter().map(|p| (p.id, p.day)).collect();
        self.commit(&job, &written)?;
        let migrated_from = {
            let mut st = lock(&self.state);
            let migrated_from = st.migrate_from.take();
            st.series_files.extend(job.series_files_add.iter().copied());
            swap_parts(&mut st, &[], written);
            let State {
                series,
                pending_ids,
                ..
            } = &mut *st;
            pending_ids.retain(|id| match series.get_mut(id) {
                Some(ms) => {
                    ms.pending.retain(|p| p.seq > seq);
                    !ms.pending.is_empty()
                }
                None => false,
            });
            migrated_from
        };
        if let Some(from) = migrated_from {
            tracing::info!(
                message = "Storage migrated",
                from_version = from,
                to_version = FORMAT_VERSION
            );
        }
        self.remove_segments_before(seq)?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one part of `day` from series' blocks (ascending ids, each
    /// series' blocks oldest first). `None` when there is nothing to write.
    pub(super) fn write_part(
        &self,
        day: i64,
        series: impl Iterator<Item = Result<(u64, Vec<Vec<u8>>), StorageError>>,
    ) -> Result<Option<Part>, StorageError> {
        let id = {
            let mut st = lock(&self.state);
            st.next_part_id += 1;
            st.next_part_id - 1
        };
        let io = |e: std::io::Error| StorageError::from_io("cannot write a part", &e);
        let mut w = part::Writer::create(&self.parts_dir, id).map_err(io)?;
        let result = (|| {
            for s in series {
                let (sid, blocks) = s?;
                w.add(sid, &blocks).map_err(io)?;
            }
            Ok::<_, StorageError>(())
        })();
        if let Err(e) = result {
            w.abandon();
            return Err(e);
        }
        if w.is_empty() {
            w.abandon();
            return Ok(None);
        }
        w.finish(day).map(Some).map_err(io)
    }

    /// Writes a series file; returns (file id, bytes).
    pub(super) fn write_series_file(
        &self,
        adds: &[(u64, Vec<u8>)],
        deletes: &[u64],
    ) -> Result<(u64, u64), StorageError> {
        let id = {
            let mut st = lock(&self.state);
            st.next_series_file += 1;
            st.next_series_file - 1
        };
        let bytes = seriesfile::write(&self.series_dir, id, adds, deletes)
            .map_err(|e| StorageError::from_io("cannot write a series file", &e))?;
        Ok((id, bytes))
    }

    /// Commits a data-file transaction; on failure the part and series
    /// files written for it are deleted (see [`Storage::abandon`]).
    pub(super) fn commit(&self, job: &Job, parts: &[Part]) -> Result<(), StorageError> {
        committer::write(&self.shared, job)
            .map_err(|e| self.abandon(e, parts, &job.series_files_add))
    }

    /// Gives up a change that failed halfway: deletes the part and series
    /// files written for it, which no transaction lists, and refuses writes
    /// until a restart replays the log (in-memory state such as the closed
    /// chunks and the log segment has already moved on). Returns `e`.
    pub(super) fn abandon(
        &self,
        e: StorageError,
        parts: &[Part],
        series_files: &[(u64, u64)],
    ) -> StorageError {
        for p in parts {
            let _ = std::fs::remove_file(p.path());
        }
        for (id, _) in series_files {
            let _ = std::fs::remove_file(self.series_dir.join(seriesfile::file_name(*id)));
        }
        self.failed.store(true, Ordering::Relaxed);
        e
    }

    /// Rewrites the series files into one when there are more than a few:
    /// every series the files define and that still exists.
    pub(super) fn rewrite_series_files(&self) -> Result<bool, StorageError> {
        let (old, live) = {
            let st = lock(&self.state);
            if st.series_files.len() <= MAX_SERIES_FILES {
                return Ok(false);
            }
            let pending: std::collections::HashSet<u64> =
                st.new_series.iter().map(|(id, _)| *id).collect();
            let live: Vec<(u64, Vec<u8>)> = st
                .series
                .keys()
                .filter(|id| !pending.contains(id))
                .filter_map(|id| Some((*id, st.index.labels(*id)?.encode())))
                .collect();
            (
                st.series_files.iter().map(|f| f.0).collect::<Vec<u64>>(),
                live,
            )
        };
        self.check_space(DISK_RESERVE / 2)?;
        let file = self.write_series_file(&live, &[])?;
        let job = Job {
            series_files_add: vec![file],
            series_files_remove: old.clone(),
            ..Job::default()
        };
        self.commit(&job, &[])?;
        {
            let mut st = lock(&self.state);
            st.series_files.retain(|f| !old.contains(&f.0));
            st.series_files.insert(0, file);
        }
        for f in old {
            let _ = std::fs::remove_file(self.series_dir.join(seriesfile::file_name(f)));
        }
        Ok(true)
    }

    /// One pass of background maintenance at wall-clock time `now`, as the
    /// server runs it every few seconds. A checkpoint is taken when the log
    /// holds 64 KiB, or has held records for 30 minutes; then the parts of
    /// a day are merged when the newest ones add up to half the size of
    /// the one before them; the data file is compacted only when a quarter
    /// of it (and 16 KiB, or 1 MiB within an hour of the last compaction)
    /// is free space. A store that received nothing writes nothing.
    pub fn maintain(&self, now: Timestamp) -> Result<Maintenance, StorageError> {
        let _w = lock(&self.writer);
        let mut report = Maintenance::default();
        let due = {
            let st = lock(&self.state);
            st.records_bytes >= MIN_CHECKPOINT_BYTES
                || st.records_bytes > 0 && st.last_checkpoint.elapsed() >= CHECKPOINT_AGE
        };
        if due {
            self.checkpoint_locked()?;
            report.checkpointed = true;
        }
        let cutoff = now - self.opts.retention_ms;
        loop {
            let parts = lock(&self.state).parts.clone();
            let Some(run) = merge_candidate(&parts) else {
                break;
            };
            report.merged_parts += run.len();
            self.merge_parts(&run, cutoff)?;
        }
        let rewrote = self.rewrite_series_files()?;
        if report.checkpointed || report.merged_parts > 0 || rewrote {
            report.reclaimed_bytes = self.compact_locked(false)?;
        }
        Ok(report)
    }

    /// Replaces `run` (parts of one day, consecutive in write order) by one
    /// part holding the same chunks re-encoded into blocks, without
    /// samples older than `cutoff`.
    /// Returns how many series the run had that the merged part has not.
    pub(super) fn merge_parts(
        &self,
        run: &[Arc<Part>],
        cutoff: Timestamp,
    ) -> Result<usize, StorageError> {
        self.check_usable()?;
        self.check_space(DISK_RESERVE / 2)?;
        let day = run[0].day;
        let mut ids: Vec<u64> = run.iter().flat_map(|p| p.ids()).collect();
        ids.sort_unstable();
        ids.dedup();
        let before = ids.len();
        let series = ids.into_iter().map(|id| {
            let mut chunks = Vec::new();
            for p in run {
                chunks.extend(
                    p.chunks(id)
                        .map_err(|e| StorageError::from_io("cannot read a part", &e))?,
                );
            }
            let blocks = part::reblock(chunks, cutoff)
                .map_err(|e| StorageError::new(format!("series {id}: {e}")))?;
            Ok((id, blocks))
        });
        let merged = self.write_part(day, series)?;
        let dropped = before - merged.as_ref().map_or(0, |p| p.ids().count());
        let job = Job {
            parts_add: merged.iter().map(|p| (p.id, p.day)).collect(),
            parts_remove: run.iter().map(|p| p.id).collect(),
            ..Job::default()
        };
        self.commit(&job, merged.as_slice())?;
        swap_parts(&mut lock(&self.state), &job.parts_remove, merged);
        // Readers still holding the old parts keep their open files.
        for p in run {
            if let Err(e) = std::fs::remove_file(p.path()) {
                tracing::warn!(message = "Cannot delete a merged part", file = %p.path().display(), error = %e);
            }
        }
        Ok(dropped)
    }

    /// Whether the data directory's files take more than
    /// `retention_bytes`.
    pub fn over_size(&self) -> bool {
        self.opts
            .retention_bytes
            .is_some_and(|bound| self.stats().disk_bytes() > bound)
    }

    /// The time before which samples must go for the files to fit in
    /// `retention_bytes` (oldest parts first; the part the bound falls in
    /// is cut in proportion to its time span); `i64::MIN` when they fit.
    fn size_cutoff(&self) -> Timestamp {
        let Some(bound) = self.opts.retention_bytes else {
            return i64::MIN;
        };
        let total = self.stats().disk_bytes();
        if total <= bound {
            return i64::MIN;
        }
        let need = total - bound;
        let mut parts: Vec<Arc<Part>> = lock(&self.state).parts.iter().cloned().collect();
        parts.sort_by_key(|p| (p.max_t, p.min_t));
        let (mut freed, mut cutoff) = (0u64, i64::MIN);
        for p in parts {
            if freed >= need {
                break;
            }
            if freed + p.bytes <= need {
                freed += p.bytes;
                cutoff = cutoff.max(p.max_t.saturating_add(1));
                continue;
            }
            let share = (need - freed) as f64 / p.bytes.max(1) as f64;
            let span = p.max_t.saturating_sub(p.min_t) as f64;
            cutoff = cutoff.max(p.min_t + (share * span).ceil() as i64 + 1);
            break;
        }
        cutoff
    }

    /// Drops the parts whose newest sample is older than `now - retention`
    /// (or than what `retention_bytes` allows, whichever is later),
    /// rewrites those that begin before it without the older samples, and
    /// deletes series left without samples. Returns (sections dropped,
    /// series deleted): a section is one series' chunks in one part.
    pub fn apply_retention(&self, now: Timestamp) -> Result<(usize, usize), StorageError> {
        let _w = lock(&self.writer);
        self.check_usable()?;
        let cutoff = (now - self.opts.retention_ms).max(self.size_cutoff());
        let parts = lock(&self.state).parts.clone();
        let mut dropped_sections = 0;
        let expired: Vec<Arc<Part>> = parts.iter().filter(|p| p.max_t < cutoff).cloned().collect();
        if !expired.is_empty() {
            dropped_sections += expired.iter().map(|p| p.ids().count()).sum::<usize>();
            let job = Job {
                parts_remove: expired.iter().map(|p| p.id).collect(),
                ..Job::default()
            };
            self.commit(&job, &[])?;
            swap_parts(&mut lock(&self.state), &job.parts_remove, None);
            for p in &expired {
                let _ = std::fs::remove_file(p.path());
            }
        }
        for p in parts
            .iter()
            .filter(|p| p.min_t < cutoff && p.max_t >= cutoff)
        {
            dropped_sections += self.merge_parts(std::slice::from_ref(p), cutoff)?;
        }
        let series_deletes: Vec<u64> = {
            let mut st = lock(&self.state);
            let parts = st.parts.clone();
            let ids: Vec<u64> = st
                .series
                .iter()
                .filter(|(id, ms)| {
                    ms.head.is_empty()
                        && ms.pending.is_empty()
                        && !parts.iter().any(|p| p.overlaps(**id, i64::MIN, i64::MAX))
                })
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                st.index.remove(*id);
                st.series.remove(id);
            }
            st.new_series.retain(|(id, _)| !ids.contains(id));
            ids
        };
        if !series_deletes.is_empty() {
            let file = self.write_series_file(&[], &series_deletes)?;
            let job = Job {
                series_files_add: vec![file],
                ..Job::default()
            };
            self.commit(&job, &[])?;
            lock(&self.state).series_files.push(file);
        }
        self.counters
            .retention_chunks
            .fetch_add(dropped_sections as u64, Ordering::Relaxed);
        self.counters
            .retention_series
            .fetch_add(series_deletes.len() as u64, Ordering::Relaxed);
        Ok((dropped_sections, series_deletes.len()))
    }

    /// Compacts the file when a quarter of it (and 16 KiB) is free space,
    /// gains under 1 MiB at most hourly (`at_open`: any gain, and it does
    /// not count as the hour's); skipped while reads are in flight.
    /// Returns the bytes the file shrank by.
    pub(super) fn compact_locked(&self, at_open: bool) -> Result<u64, StorageError> {
        self.check_space(DISK_RESERVE / 2)?;
        let file = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let used = {
            let db = self.db()?;
            let txn = db.begin_write()?;
            let stats = txn.stats()?;
            txn.abort()?;
            stats.allocated_pages() * stats.page_size() as u64
        };
        let free = file.saturating_sub(used);
        // Small gains wait an hour: a small file always has some free pages
        // after a checkpoint, and compacting it each time rewrites it.
        let recent = !at_open
            && lock(&self.state)
                .last_compaction
                .is_some_and(|t| t.elapsed() < COMPACT_SMALL_EVERY);
        if free < COMPACT_MIN_FREE || free < file / 4 || (recent && free < COMPACT_BIG) {
            return Ok(0);
        }
        let mut db = self
            .shared
            .db
            .write()
            .map_err(|_| StorageError::new("lock poisoned"))?;
        let mut compacted = false;
        // Each call moves what it can; a few rounds reach the fixed point.
        for _ in 0..8 {
            match db.compact() {
                Ok(true) => compacted = true,
                Ok(false) => break,
                Err(redb::CompactionError::TransactionInProgress) => break,
                Err(e) => return Err(e.into()),
            }
        }
        drop(db);
        if !at_open {
            lock(&self.state).last_compaction = Some(std::time::Instant::now());
        }
        if !compacted {
            return Ok(0);
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        let after = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(file.saturating_sub(after))
    }
}
