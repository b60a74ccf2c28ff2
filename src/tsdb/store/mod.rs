//! [`Storage`]: its state and life cycle here; `open` (open and replay),
//! `append`, `read`, `maintain` (checkpoints, merges, retention,
//! compaction) and `kv` (other components' rows) each add their part of
//! it. The head and index live under one mutex (`State`); the write-ahead
//! log is written only by the committer thread, the data file by
//! checkpoints, merges and retention (one at a time) and the KV helpers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

use super::committer::{self, Job, Op, Reply, Shared};
use super::index::{FastMap, Index};
use super::part::{self, Part};
use super::schema::{
    get_u64, id_key, put_u64, scan_ids, scan_namespace, KvRows, KvTable, FORMAT_VERSION, KV,
    LEGACY_CHUNKS, LEGACY_HEAD, LEGACY_META, LEGACY_PARTS, LEGACY_SERIES, LEGACY_SERIES_FILES,
    LEGACY_WAL, NS_META, NS_PARTS, NS_SERIES_FILES,
};
use super::seriesfile;
use super::{
    chunk, wal, AppendError, Grid, Querier, Reduced, Series, StorageError, StorageOptions,
    StorageStats, CHUNK_SPAN_MS,
};
use crate::model::{Labels, Matcher, Sample, Timestamp, METRIC_NAME};

mod append;
mod holds;
mod kv;
mod maintain;
mod open;
mod read;
mod snapshot;
pub use snapshot::SnapshotStats;

use append::{close_head, push_sample};
pub use append::{Appender, LabelDecoder};
use maintain::sort_parts;
pub use maintain::Maintenance;

/// In-memory samples of one selected series: (id, labels, samples).
type MemSnapshot = (u64, Arc<Labels>, Vec<Sample>);

/// The parts as of one moment (a reader keeps them open while it reads).
type Parts = Arc<Vec<Arc<Part>>>;

/// Samples to write, by day: each series' (ascending ids) oldest first.
type SamplesByDay = std::collections::BTreeMap<i64, Vec<(u64, Vec<Sample>)>>;

/// The open store. Share it as `Arc<Storage>`; call [`Storage::close`] to
/// checkpoint the head and stop the committer.
pub struct Storage {
    opts: StorageOptions,
    path: PathBuf,
    wal_dir: PathBuf,
    parts_dir: PathBuf,
    series_dir: PathBuf,
    shared: Arc<Shared>,
    state: Mutex<State>,
    tx: Mutex<Option<Sender<(Op, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held by whatever changes the data file's chunks (checkpoint, merge,
    /// retention, compaction): one at a time.
    writer: Mutex<()>,
    failed: AtomicBool,
    counters: Counters,
    /// Log readers' positions and budgets (`holds`).
    holds: Mutex<std::collections::BTreeMap<String, holds::Hold>>,
    /// The newest log records, for readers that keep up (`tail::Tap`;
    /// locked after `state` and `holds`, never before).
    tap: Mutex<super::tail::Tap>,
}

#[derive(Default)]
struct Counters {
    samples_appended: AtomicU64,
    batches_rejected: AtomicU64,
    checkpoints: AtomicU64,
    compactions: AtomicU64,
    retention_chunks: AtomicU64,
    retention_series: AtomicU64,
}

struct State {
    index: Index,
    series: FastMap<u64, MemSeries>,
    /// The parts, by day and then in the order they were written (which is
    /// time order for every series).
    parts: Parts,
    next_part_id: u64,
    /// The series files that count, in the order they apply: (id, bytes).
    series_files: Vec<(u64, u64)>,
    next_series_file: u64,
    /// The file's older format version, until the first checkpoint.
    migrate_from: Option<u64>,
    /// Series that have closed chunks not yet in the data file.
    pending_ids: Vec<u64>,
    /// Series defined in the log but not yet in the series table.
    new_series: Vec<(u64, Vec<u8>)>,
    next_id: u64,
    next_seq: u64,
    /// Log bytes written since the last checkpoint.
    records_bytes: u64,
    /// Samples appended since the last checkpoint: held in memory.
    records_samples: usize,
    /// Counts log segments: a series whose `logged_in` is this one has
    /// its `last` value in the current segment (the reference of the next).
    segment: u32,
    last_checkpoint: std::time::Instant,
    last_compaction: Option<std::time::Instant>,
}

impl Default for State {
    fn default() -> Self {
        State {
            index: Index::default(),
            series: FastMap::default(),
            parts: Arc::new(Vec::new()),
            next_part_id: 1,
            series_files: Vec::new(),
            next_series_file: 1,
            migrate_from: None,
            pending_ids: Vec::new(),
            new_series: Vec::new(),
            next_id: 0,
            next_seq: 1,
            records_bytes: 0,
            records_samples: 0,
            segment: 1,
            last_checkpoint: std::time::Instant::now(),
            last_compaction: None,
        }
    }
}

/// A closed chunk not yet in a part: the log sequence number that closed
/// it and its samples (encoded once, into blocks, by the checkpoint).
struct Pending {
    seq: u64,
    samples: Vec<Sample>,
}

/// One series' samples not yet in a part (those in the log).
struct MemSeries {
    /// Samples of the open chunk, ascending.
    head: Vec<Sample>,
    /// Closed chunks the next checkpoint writes to a part.
    pending: Vec<Pending>,
    /// The newest sample ever appended (for order and duplicate checks).
    last: Option<Sample>,
    /// The log segment (`State::segment`) that holds `last`; 0: none.
    logged_in: u32,
}

impl MemSeries {
    fn new() -> Self {
        MemSeries {
            head: Vec::new(),
            pending: Vec::new(),
            last: None,
            logged_in: 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.opts.dir
    }

    /// Free bytes on the filesystem holding the data directory.
    pub fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.opts.dir)
    }

    /// `storage.retention_size`, if set.
    pub fn retention_bytes(&self) -> Option<u64> {
        self.opts.retention_bytes
    }

    /// Refuses a write, before it changes anything, when the filesystem
    /// holding the data file has less than `reserve` free: a write that ran
    /// out of space halfway would leave redb refusing every later one until
    /// a restart. New samples need [`DISK_RESERVE`]; the store's own
    /// bookkeeping (checkpoints, merges, component state) half of it, so
    /// what was accepted can always be completed and a checkpoint can
    /// still free the log. Reads go on; writes resume once space is freed.
    fn check_space(&self, reserve: u64) -> Result<(), StorageError> {
        let Some(free) = free_bytes(&self.opts.dir) else {
            return Ok(());
        };
        if free < reserve {
            return Err(StorageError::disk_full(format!(
                "the disk holding {} is full: {free} bytes free, below the {reserve} bytes kept in reserve; writes resume once space is freed",
                self.opts.dir.display()
            )));
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StorageError::new(
                "an earlier commit failed; restart mlmon to replay the write-ahead log",
            ));
        }
        Ok(())
    }

    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Database>, StorageError> {
        self.shared
            .db
            .read()
            .map_err(|_| StorageError::new("lock poisoned"))
    }

    /// Checkpoints the head, stops the committer and closes the file once
    /// the last `Arc` is dropped. Later writes fail.
    pub fn close(&self) -> Result<(), StorageError> {
        let result = if self.failed.load(Ordering::Relaxed) {
            Ok(())
        } else {
            self.checkpoint()
        };
        self.stop_committer();
        result
    }

    /// Stops without a checkpoint, as a crash would: what was acknowledged is
    /// in the WAL, the head is not. For tests of replay.
    pub fn close_without_checkpoint(&self) {
        self.stop_committer();
    }

    fn stop_committer(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    pub fn stats(&self) -> StorageStats {
        let st = lock(&self.state);
        StorageStats {
            series: st.index.len(),
            head_samples: st.series.values().map(|s| s.head.len()).sum(),
            wal_bytes: self.shared.wal_bytes.load(Ordering::Relaxed),
            series_bytes: st.series_files.iter().map(|f| f.1).sum(),
            chunks: st.parts.iter().map(|p| p.chunks).sum(),
            chunk_bytes: st.parts.iter().map(|p| p.bytes).sum(),
            parts: st.parts.len(),
            file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            samples_appended_total: self.counters.samples_appended.load(Ordering::Relaxed),
            batches_rejected_total: self.counters.batches_rejected.load(Ordering::Relaxed),
            checkpoints_total: self.counters.checkpoints.load(Ordering::Relaxed),
            compactions_total: self.counters.compactions.load(Ordering::Relaxed),
            retention_chunks_deleted_total: self.counters.retention_chunks.load(Ordering::Relaxed),
            retention_series_deleted_total: self.counters.retention_series.load(Ordering::Relaxed),
        }
    }
}

/// Space kept free on the data file's filesystem (redb grows its file in
/// steps; a commit must never meet a full disk).
pub const DISK_RESERVE: u64 = 8 << 20;

/// Bytes available to mlmon on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by
    // statvfs before it is read, only on success.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
