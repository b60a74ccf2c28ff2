//! [`Storage`]: open and replay, append, select, checkpoint, retention and
//! compaction. The head and index live under one mutex (`State`); the
//! write-ahead log is written only by the committer thread, the data file
//! by checkpoints, merges and retention (one at a time) and the KV helpers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::committer::{self, Job, Op, Reply, Shared};
use super::index::{FastMap, Index};
use super::schema::{CHUNKS, FORMAT_VERSION, HEAD, KV, LEGACY_WAL, META, SERIES};
use super::{
    chunk, wal, AppendError, Querier, Series, StorageError, StorageOptions, StorageStats,
    CHUNK_SPAN_MS,
};
use crate::model::{Labels, Matcher, Sample, Timestamp, METRIC_NAME};

/// A checkpoint is due once the log holds this much (and as much as the
/// heads encode to).
const MIN_CHECKPOINT_BYTES: u64 = 64 << 10;
/// ... or once records waited this long in the log.
const CHECKPOINT_AGE: std::time::Duration = std::time::Duration::from_secs(1800);
/// Series whose chunks one maintenance pass merges into blocks, at most.
const MERGE_SERIES_PER_PASS: usize = 100_000;
/// Compaction runs when at least this much of the file (and a quarter of
/// it) is free.
const COMPACT_MIN_FREE: u64 = 1 << 20;

/// What [`Storage::open`] found.
struct Loaded {
    /// Log records applied.
    replayed: usize,
    /// The file has format version 1.
    legacy: bool,
    /// The sequence number the log's new segment starts at.
    first_seq: u64,
}

/// What one [`Storage::maintain`] pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Maintenance {
    pub checkpointed: bool,
    /// Chunks merged away and blocks written.
    pub merged_chunks: usize,
    pub blocks: usize,
    /// Bytes the data file shrank by (compaction).
    pub reclaimed_bytes: u64,
}

/// `(key, value)` rows of one KV namespace.
pub type KvRows = Vec<(Vec<u8>, Vec<u8>)>;

/// In-memory samples of one selected series: (id, labels, samples).
type MemSnapshot = (u64, Arc<Labels>, Vec<Sample>);

/// The open store. Share it as `Arc<Storage>`; call [`Storage::close`] to
/// checkpoint the head and stop the committer.
pub struct Storage {
    opts: StorageOptions,
    path: PathBuf,
    wal_dir: PathBuf,
    shared: Arc<Shared>,
    state: Mutex<State>,
    tx: Mutex<Option<Sender<(Op, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held by whatever changes the data file's chunks (checkpoint, merge,
    /// retention, compaction): one at a time.
    writer: Mutex<()>,
    failed: AtomicBool,
    counters: Counters,
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
    /// Series that have closed chunks not yet in the data file.
    pending_ids: Vec<u64>,
    /// Series defined in the log but not yet in the series table.
    new_series: Vec<(u64, Vec<u8>)>,
    next_id: u64,
    next_seq: u64,
    /// Log bytes written since the last checkpoint.
    records_bytes: u64,
    /// Encoded size of the heads at the last checkpoint: a checkpoint
    /// rewrites about this much, so the log may grow as much before one.
    head_bytes: u64,
    last_checkpoint: std::time::Instant,
}

impl Default for State {
    fn default() -> Self {
        State {
            index: Index::default(),
            series: FastMap::default(),
            pending_ids: Vec::new(),
            new_series: Vec::new(),
            next_id: 0,
            next_seq: 1,
            records_bytes: 0,
            head_bytes: 0,
            last_checkpoint: std::time::Instant::now(),
        }
    }
}

/// A closed chunk not yet in the data file: the log sequence number that
/// closed it, its first timestamp and its encoding.
struct Pending {
    seq: u64,
    start: Timestamp,
    bytes: Vec<u8>,
}

struct MemSeries {
    /// Samples of the open chunk, ascending.
    head: Vec<Sample>,
    /// Closed chunks the next checkpoint writes to the data file.
    pending: Vec<Pending>,
    /// The newest sample ever appended (for order and duplicate checks).
    last: Option<Sample>,
    /// The head changed since the last checkpoint.
    dirty: bool,
    /// The head table has a row for this series.
    has_head_row: bool,
    /// Chunks written since the series' closed data was last merged into
    /// blocks (see [`Storage::merge_blocks`]).
    unmerged: u32,
    /// Encoded size of the head row last written.
    head_row_bytes: u32,
}

impl MemSeries {
    fn new() -> Self {
        MemSeries {
            head: Vec::new(),
            pending: Vec::new(),
            last: None,
            dirty: false,
            has_head_row: false,
            unmerged: 0,
            head_row_bytes: 0,
        }
    }
}

/// Buffers samples and writes them as one batch on [`Appender::commit`].
/// Samples of one series may be appended in several calls; they are
/// merged, in call order, when the batch is written.
pub struct Appender<'a> {
    storage: &'a Storage,
    batch: Vec<(SeriesKey<'a>, Vec<Sample>)>,
    sync: bool,
}

/// How a batch names a series: a label set, or label pairs borrowed from a
/// request (an existing series is then found without building a `Labels`).
enum SeriesKey<'a> {
    Labels(Labels),
    Pairs(Vec<(&'a str, &'a str)>),
    /// A series id from [`Storage::series_ids`].
    Id(u64),
}

impl SeriesKey<'_> {
    /// `name{a="1", b="2"}` for error messages.
    fn describe(&self) -> String {
        match self {
            SeriesKey::Labels(l) => l.to_string(),
            SeriesKey::Id(id) => format!("series #{id}"),
            SeriesKey::Pairs(p) => {
                let name = p
                    .iter()
                    .find(|(n, _)| *n == METRIC_NAME)
                    .map_or("", |(_, v)| *v);
                let rest: Vec<String> = p
                    .iter()
                    .filter(|(n, _)| *n != METRIC_NAME)
                    .map(|(n, v)| format!("{n}={v:?}"))
                    .collect();
                format!("{name}{{{}}}", rest.join(", "))
            }
        }
    }

    fn labels(&self) -> Option<&Labels> {
        match self {
            SeriesKey::Labels(l) => Some(l),
            SeriesKey::Pairs(_) | SeriesKey::Id(_) => None,
        }
    }
}

impl<'a> Appender<'a> {
    pub fn append(&mut self, labels: Labels, t: Timestamp, v: f64) {
        let s = Sample { t, v };
        match self.batch.last_mut() {
            Some((SeriesKey::Labels(l), samples)) if *l == labels => samples.push(s),
            _ => self.batch.push((SeriesKey::Labels(labels), vec![s])),
        }
    }

    /// Adds a sample of a series known by its id (see
    /// [`Storage::series_ids`]); an id the store no longer knows fails the
    /// commit with [`AppendError::UnknownSeries`].
    pub fn append_id(&mut self, id: u64, t: Timestamp, v: f64) {
        self.batch.push((SeriesKey::Id(id), vec![Sample { t, v }]));
    }

    /// Adds many samples of one series.
    pub fn append_series(&mut self, labels: Labels, samples: Vec<Sample>) {
        self.batch.push((SeriesKey::Labels(labels), samples));
    }

    /// Adds samples of a series named by label pairs as a client sent them
    /// (any order; validated only if the series is new).
    pub fn append_pairs(&mut self, pairs: Vec<(&'a str, &'a str)>, samples: Vec<Sample>) {
        self.batch.push((SeriesKey::Pairs(pairs), samples));
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Commits without waiting for the disk: the batch is in the log when
    /// the commit returns (a killed process loses nothing) but reaches the
    /// disk with the next synced batch or within a minute, so a power
    /// loss can take the last seconds. For samples mlmon makes itself
    /// (collectors, rules, the push emitter), which nobody waits on and
    /// which would otherwise cost a page write per batch.
    pub fn lazy_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// Writes the batch: all of it, durably, or none of it. Blocks until the
    /// commit is on disk. Returns the number of samples stored (duplicates
    /// of already stored samples are skipped).
    pub fn commit(self) -> Result<usize, AppendError> {
        if self.batch.is_empty() {
            return Ok(0);
        }
        self.storage.append_batch(self.batch, false, self.sync)
    }

    /// Like [`commit`](Self::commit), but samples out of order or with a
    /// duplicate timestamp are left out one by one instead of refusing the
    /// batch, as Prometheus does with a scrape. Returns (stored, left out).
    pub fn commit_lenient(self) -> Result<(usize, usize), AppendError> {
        if self.batch.is_empty() {
            return Ok((0, 0));
        }
        let offered: usize = self.batch.iter().map(|(_, s)| s.len()).sum();
        let stored = self.storage.append_batch(self.batch, true, self.sync)?;
        Ok((stored, offered.saturating_sub(stored)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Opens (or creates) `dir/mlmon.redb` and the write-ahead log in
    /// `dir/wal/`, rebuilds the index, replays the log, checkpoints what was
    /// replayed, then starts the committer thread. A format version 1 file
    /// is migrated in place (its log table replayed, checkpointed and
    /// deleted).
    pub fn open(opts: StorageOptions) -> Result<Arc<Storage>, StorageError> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| {
            StorageError::new(format!(
                "cannot create data directory {}: {e}",
                opts.dir.display()
            ))
        })?;
        let path = opts.dir.join("mlmon.redb");
        let wal_dir = opts.dir.join("wal");
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(&path)
            .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(db),
            chunk_bytes: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
        });
        let storage = Storage {
            opts,
            path,
            wal_dir,
            shared,
            state: Mutex::new(State::default()),
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            writer: Mutex::new(()),
            failed: AtomicBool::new(false),
            counters: Counters::default(),
        };
        let (loaded, wal) = storage.load()?;
        let (tx, rx) = mpsc::channel();
        let shared = storage.shared.clone();
        let handle = std::thread::Builder::new()
            .name("tsdb-committer".into())
            .spawn(move || committer::run(shared, wal, rx))
            .map_err(|e| StorageError::new(format!("cannot start committer thread: {e}")))?;
        *lock(&storage.tx) = Some(tx);
        *lock(&storage.thread) = Some(handle);
        let storage = Arc::new(storage);
        if loaded.replayed > 0 || loaded.legacy {
            tracing::info!(
                message = "Replayed write-ahead log",
                records = loaded.replayed
            );
            storage.checkpoint(None)?;
        } else {
            // Nothing to replay: segments left are already in the file.
            storage.remove_segments_before(loaded.first_seq)?;
        }
        if loaded.legacy {
            storage.finish_migration()?;
        }
        Ok(storage)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Loads series, heads and the log into memory and opens the log for
    /// appending. Chunks closed during replay wait for the checkpoint that
    /// `open` takes right away.
    fn load(&self) -> Result<(Loaded, super::wal::Wal), StorageError> {
        let db = self
            .shared
            .db
            .read()
            .map_err(|_| StorageError::new("lock poisoned"))?;
        // Create every table so readers never meet a missing one.
        let legacy = {
            let txn = db.begin_write()?;
            let legacy;
            {
                let mut meta = txn.open_table(META)?;
                let version = meta.get("format_version")?.map(|v| v.value());
                legacy = match version {
                    None => {
                        meta.insert("format_version", FORMAT_VERSION)?;
                        false
                    }
                    Some(1) => true,
                    Some(v) if v != FORMAT_VERSION => {
                        return Err(StorageError::new(format!(
                            "{} has storage format version {v}, this mlmon reads versions 1 and {FORMAT_VERSION}",
                            self.path.display()
                        )))
                    }
                    Some(_) => false,
                };
                txn.open_table(SERIES)?;
                txn.open_table(CHUNKS)?;
                txn.open_table(HEAD)?;
                txn.open_table(KV)?;
            }
            txn.commit()?;
            legacy
        };
        let txn = db.begin_read()?;
        let series_t = txn.open_table(SERIES)?;
        let chunks_t = txn.open_table(CHUNKS)?;
        let head_t = txn.open_table(HEAD)?;
        let mut st = lock(&self.state);
        for row in series_t.iter()? {
            let (id, bytes) = row?;
            let id = id.value();
            let labels = Labels::decode(bytes.value())
                .ok_or_else(|| StorageError::new(format!("series {id}: corrupt label bytes")))?;
            st.index.insert(id, Arc::new(labels));
            st.series.insert(id, MemSeries::new());
            st.next_id = st.next_id.max(id + 1);
        }
        let stats = chunks_t.stats()?;
        self.shared
            .chunk_bytes
            .store(stats.stored_bytes(), Ordering::Relaxed);
        self.shared.chunks.store(chunks_t.len()?, Ordering::Relaxed);
        for row in head_t.iter()? {
            let (id, value) = row?;
            if let Some(s) = st.series.get_mut(&id.value()) {
                s.head = chunk::decode(value.value()).map_err(|e| {
                    StorageError::new(format!("head of series {}: {e}", id.value()))
                })?;
                s.has_head_row = true;
            }
        }
        // A series' newest sample ends its head, or else its newest chunk.
        // A head row older than the newest chunk was closed into it before
        // a crash left the row behind. Every series gets one merge check
        // after start-up.
        for (&id, ms) in st.series.iter_mut() {
            ms.unmerged = 2;
            let newest = match chunks_t.range((id, i64::MIN)..=(id, i64::MAX))?.next_back() {
                Some(row) => {
                    let samples = chunk::decode(row?.1.value())
                        .map_err(|e| StorageError::new(format!("series {id}: {e}")))?;
                    samples.last().copied()
                }
                None => None,
            };
            if let Some(n) = newest {
                ms.head.retain(|s| s.t > n.t);
            }
            ms.last = ms.head.last().copied().or(newest);
        }
        let checkpoint_seq = txn
            .open_table(META)?
            .get("checkpoint_seq")?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut records: Vec<(u64, Vec<u8>, bool)> = Vec::new();
        if legacy {
            let wal_t = txn.open_table(LEGACY_WAL)?;
            for row in wal_t.iter()? {
                let (seq, value) = row?;
                records.push((seq.value(), value.value().to_vec(), true));
            }
        }
        let (wal, segment_records) =
            super::wal::Wal::open(&self.wal_dir, |max| max.max(checkpoint_seq) + 1)
                .map_err(|e| StorageError::from_io("cannot open the write-ahead log", &e))?;
        let wal_bytes = wal.bytes();
        records.extend(
            segment_records
                .into_iter()
                .map(|r| (r.seq, r.payload, false)),
        );
        let max_seq = records.iter().map(|r| r.0).max().unwrap_or(0);
        st.next_seq = max_seq.max(checkpoint_seq) + 1;
        let first_seq = st.next_seq;
        let mut replayed = 0;
        let max_samples = self.opts.chunk_max_samples;
        for (seq, payload, old) in records {
            if seq <= checkpoint_seq {
                continue;
            }
            let mut defs = Vec::new();
            let mut samples = Vec::new();
            let ok = if old {
                super::wal::decode_samples(&payload, |id, s| samples.push((id, s)))
            } else {
                super::wal::decode(
                    &payload,
                    |id, l| defs.push((id, l.to_vec())),
                    |id, s| samples.push((id, s)),
                )
            };
            if ok.is_none() {
                tracing::warn!(message = "Skipping a corrupt WAL record", seq);
                continue;
            }
            for (id, bytes) in defs {
                if st.series.contains_key(&id) {
                    continue;
                }
                let labels = Labels::decode(&bytes).ok_or_else(|| {
                    StorageError::new(format!("write-ahead log: series {id}: corrupt label bytes"))
                })?;
                st.index.insert(id, Arc::new(labels));
                let mut ms = MemSeries::new();
                ms.unmerged = 2;
                st.series.insert(id, ms);
                st.next_id = st.next_id.max(id + 1);
                st.new_series.push((id, bytes));
            }
            let st = &mut *st;
            for (id, s) in samples {
                if let Some(ms) = st.series.get_mut(&id) {
                    if ms.last.is_none_or(|l| s.t > l.t) && push_sample(ms, s, max_samples, 0) {
                        st.pending_ids.push(id);
                    }
                }
            }
            replayed += 1;
        }
        self.shared.wal_bytes.store(wal_bytes, Ordering::Relaxed);
        Ok((
            Loaded {
                replayed,
                legacy,
                first_seq,
            },
            wal,
        ))
    }

    /// The last step of opening a version 1 file: its log table is in the
    /// file now (the checkpoint `open` took), so it goes.
    fn finish_migration(&self) -> Result<(), StorageError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        txn.delete_table(LEGACY_WAL)?;
        txn.open_table(META)?
            .insert("format_version", FORMAT_VERSION)?;
        txn.commit()?;
        tracing::info!(
            message = "Storage migrated",
            from_version = 1,
            to_version = FORMAT_VERSION
        );
        Ok(())
    }

    /// Deletes log segments older than the one started at `first_seq`.
    fn remove_segments_before(&self, first_seq: u64) -> Result<(), StorageError> {
        let freed = super::wal::remove_before(&self.wal_dir, first_seq)
            .map_err(|e| StorageError::from_io("cannot delete write-ahead log segments", &e))?;
        let w = &self.shared.wal_bytes;
        w.fetch_sub(freed.min(w.load(Ordering::Relaxed)), Ordering::Relaxed);
        Ok(())
    }

    /// The ids of these series, `None` for those not stored, for appending
    /// by id ([`Appender::append_id`]).
    pub fn series_ids(&self, labels: &[&Labels]) -> Vec<Option<u64>> {
        let st = lock(&self.state);
        labels.iter().map(|l| st.index.id_of(l)).collect()
    }

    pub fn appender(&self) -> Appender<'_> {
        Appender {
            storage: self,
            batch: Vec::new(),
            sync: true,
        }
    }

    fn sender(&self) -> Result<Sender<(Op, Reply)>, StorageError> {
        lock(&self.tx)
            .clone()
            .ok_or_else(|| StorageError::new("storage is closed"))
    }

    /// Refuses a write, before it changes anything, when the filesystem
    /// holding the data file has less than [`DISK_RESERVE`] free: a write
    /// that ran out of space halfway would leave redb refusing every later
    /// one until a restart. Reads go on; writes resume once space is freed.
    fn check_space(&self) -> Result<(), StorageError> {
        let Some(free) = free_bytes(&self.opts.dir) else {
            return Ok(());
        };
        if free < DISK_RESERVE {
            return Err(StorageError::disk_full(format!(
                "the disk holding {} is full: {free} bytes free, below the {DISK_RESERVE} bytes kept in reserve; writes resume once space is freed",
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

    fn append_batch(
        &self,
        batch: Vec<(SeriesKey<'_>, Vec<Sample>)>,
        lenient: bool,
        sync: bool,
    ) -> Result<usize, AppendError> {
        let result = self.append_inner(batch, lenient, sync);
        if let Err(e) = &result {
            if !matches!(e, AppendError::Storage(_)) {
                self.counters
                    .batches_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn append_inner(
        &self,
        mut batch: Vec<(SeriesKey<'_>, Vec<Sample>)>,
        lenient: bool,
        sync: bool,
    ) -> Result<usize, AppendError> {
        self.check_usable()?;
        self.check_space()?;
        let sender = self.sender()?;
        let limits = &self.opts.limits;
        let (rx, stored) = {
            let mut st = lock(&self.state);
            // Pass 1: resolve series and merge repeated ones, in order.
            let mut ids: Vec<Option<u64>> = Vec::with_capacity(batch.len());
            let mut first_of: FastMap<u64, usize> = FastMap::default();
            let mut new_first: HashMap<Labels, usize> = HashMap::new();
            let mut new = 0usize;
            for i in 0..batch.len() {
                let mut id = match &batch[i].0 {
                    SeriesKey::Labels(l) => st.index.id_of(l),
                    SeriesKey::Pairs(p) => st.index.id_of_pairs(p),
                    SeriesKey::Id(id) if st.series.contains_key(id) => Some(*id),
                    SeriesKey::Id(id) => return Err(AppendError::UnknownSeries(*id)),
                };
                if id.is_none() {
                    // Unknown as sent: validate and normalize, then look again.
                    if let SeriesKey::Pairs(p) = &batch[i].0 {
                        let labels = Labels::new(p.iter().copied()).map_err(|e| {
                            AppendError::InvalidLabels {
                                labels: batch[i].0.describe(),
                                reason: e.to_string(),
                            }
                        })?;
                        id = st.index.id_of(&labels);
                        batch[i].0 = SeriesKey::Labels(labels);
                    }
                }
                let earlier = match (id, batch[i].0.labels()) {
                    (Some(id), _) => first_of.insert(id, i),
                    (None, Some(l)) => new_first.get(l).copied(),
                    (None, None) => None,
                };
                match earlier {
                    Some(e) => {
                        if let Some(id) = id {
                            first_of.insert(id, e);
                        }
                        let samples = std::mem::take(&mut batch[i].1);
                        batch[e].1.extend(samples);
                    }
                    None if id.is_none() => {
                        if let Some(l) = batch[i].0.labels() {
                            check_labels(l, limits)?;
                            new_first.insert(l.clone(), i);
                            new += 1;
                        }
                    }
                    None => {}
                }
                ids.push(id);
            }
            if new > 0 && st.index.len() + new > limits.max_series {
                return Err(AppendError::TooManySeries {
                    new,
                    existing: st.index.len(),
                    limit: limits.max_series,
                });
            }
            // Pass 2: check order before changing anything. A sample equal
            // to the one before it (same time, same bits) is a retry and is
            // dropped; in lenient mode so is any sample not after the one
            // before it.
            for ((labels, samples), id) in batch.iter_mut().zip(&ids) {
                let stored_last = id.and_then(|id| st.series[&id].last);
                if lenient {
                    let mut prev = stored_last.map(|l| l.t);
                    samples.retain(|s| {
                        let keep = prev.is_none_or(|p| s.t > p);
                        if keep {
                            prev = Some(s.t);
                        }
                        keep
                    });
                    continue;
                }
                let mut last = stored_last;
                let mut repeats = false;
                for s in samples.iter() {
                    if let Some(l) = last {
                        if s.t < l.t {
                            return Err(AppendError::OutOfOrder {
                                labels: labels.describe(),
                                t: s.t,
                                last: l.t,
                            });
                        }
                        if s.t == l.t {
                            if s.v.to_bits() == l.v.to_bits() {
                                repeats = true;
                                continue;
                            }
                            return Err(AppendError::DuplicateTimestamp {
                                labels: labels.describe(),
                                t: s.t,
                            });
                        }
                    }
                    last = Some(*s);
                }
                if repeats {
                    let mut prev = stored_last.map(|l| l.t);
                    samples.retain(|s| {
                        let keep = prev.is_none_or(|p| s.t > p);
                        prev = Some(s.t);
                        keep
                    });
                }
            }
            // Pass 3: apply to the head and build the log record.
            let seq = st.next_seq;
            st.next_seq += 1;
            let mut new_series: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut rec: Vec<(u64, &[Sample])> = Vec::with_capacity(batch.len());
            let mut stored = 0;
            let st = &mut *st;
            for (i, ((key, samples), id)) in batch.iter().zip(ids).enumerate() {
                let id = match (id, key.labels()) {
                    (Some(id), _) => id,
                    // A repeat of a new series, merged into its first entry.
                    (None, Some(labels)) if new_first.get(labels) != Some(&i) => continue,
                    (None, None) => continue,
                    (None, Some(labels)) => {
                        let id = st.next_id;
                        st.next_id += 1;
                        new_series.push((id, labels.encode()));
                        st.index.insert(id, Arc::new(labels.clone()));
                        st.series.insert(id, MemSeries::new());
                        id
                    }
                };
                if samples.is_empty() {
                    continue;
                }
                let ms = st.series.get_mut(&id).expect("series was just resolved");
                let mut closed = false;
                for s in samples {
                    closed |= push_sample(ms, *s, self.opts.chunk_max_samples, seq);
                }
                if closed {
                    st.pending_ids.push(id);
                }
                stored += samples.len();
                rec.push((id, samples));
            }
            if stored == 0 && new_series.is_empty() {
                return Ok(0);
            }
            let payload = wal::encode(&new_series, &rec);
            st.records_bytes += payload.len() as u64;
            st.new_series.extend(new_series);
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((Op::Append { seq, payload, sync }, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (rx, stored)
        };
        self.wait(rx)?;
        self.counters
            .samples_appended
            .fetch_add(stored as u64, Ordering::Relaxed);
        // A burst larger than the log may hold between maintenance passes.
        if lock(&self.state).records_bytes >= self.opts.wal_checkpoint_bytes {
            if let Ok(_w) = self.writer.try_lock() {
                self.checkpoint_locked(None)?;
            }
        }
        Ok(stored)
    }

    fn wait(&self, rx: mpsc::Receiver<Result<(), StorageError>>) -> Result<(), StorageError> {
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err(StorageError::new("committer stopped")));
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Writes the closed chunks, the changed heads and the new series to
    /// the data file and deletes the log segments that held them. With
    /// `close_before = Some(t)`, heads whose first sample is older than `t`
    /// are closed into chunks first, so idle series do not stay heads.
    pub fn checkpoint(&self, close_before: Option<Timestamp>) -> Result<(), StorageError> {
        let _w = lock(&self.writer);
        self.checkpoint_locked(close_before)
    }

    fn checkpoint_locked(&self, close_before: Option<Timestamp>) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_space()?;
        let sender = self.sender()?;
        let (seq, job, rx) = {
            let mut st = lock(&self.state);
            let seq = st.next_seq;
            st.next_seq += 1;
            let mut job = Job {
                checkpoint_seq: Some(seq),
                new_series: std::mem::take(&mut st.new_series),
                ..Job::default()
            };
            let mut head_bytes = 0;
            let st = &mut *st;
            for (&id, ms) in st.series.iter_mut() {
                let old = close_before.is_some_and(|t| ms.head.first().is_some_and(|s| s.t < t));
                if old {
                    close_head(ms, seq);
                    st.pending_ids.push(id);
                }
                if ms.head.is_empty() {
                    if ms.has_head_row {
                        job.head_deletes.push(id);
                        ms.has_head_row = false;
                    }
                } else if ms.dirty {
                    let row = chunk::encode(&ms.head);
                    ms.head_row_bytes = row.len() as u32;
                    job.head_rows.push((id, row));
                    ms.has_head_row = true;
                }
                head_bytes += u64::from(ms.head_row_bytes) * u64::from(!ms.head.is_empty());
                ms.dirty = false;
            }
            st.pending_ids.sort_unstable();
            st.pending_ids.dedup();
            for &id in &st.pending_ids {
                if let Some(ms) = st.series.get(&id) {
                    job.chunks
                        .extend(ms.pending.iter().map(|p| (id, p.start, p.bytes.clone())));
                }
            }
            st.records_bytes = 0;
            st.head_bytes = head_bytes;
            st.last_checkpoint = std::time::Instant::now();
            // Records before `seq` stay in the older segments.
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((Op::Rotate { first_seq: seq }, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (seq, job, rx)
        };
        self.wait(rx)?;
        if let Err(e) = committer::write(&self.shared, &job) {
            self.failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        {
            let mut st = lock(&self.state);
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
        }
        self.remove_segments_before(seq)?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One pass of background maintenance at wall-clock time `now`, as the
    /// server runs it every few seconds. A checkpoint is taken when the log
    /// holds at least as many bytes as the heads encode to (and 64 KiB), or
    /// has held records for 30 minutes, or a head began more than one
    /// chunk span ago (it is closed); blocks are merged for series that
    /// gained chunks; the file is compacted only when a quarter of it (and
    /// 1 MiB) is free space. A store that received nothing writes nothing.
    pub fn maintain(&self, now: Timestamp) -> Result<Maintenance, StorageError> {
        let _w = lock(&self.writer);
        let mut report = Maintenance::default();
        let due = {
            let st = lock(&self.state);
            let old_head = st
                .series
                .values()
                .any(|ms| ms.head.first().is_some_and(|s| s.t < now - CHUNK_SPAN_MS));
            let has_records = st.records_bytes > 0;
            old_head
                || has_records
                    && (st.records_bytes >= st.head_bytes.max(MIN_CHECKPOINT_BYTES)
                        || st.last_checkpoint.elapsed() >= CHECKPOINT_AGE)
        };
        if due {
            self.checkpoint_locked(Some(now - CHUNK_SPAN_MS))?;
            report.checkpointed = true;
        }
        let (merged, blocks) = self.merge_blocks_locked(MERGE_SERIES_PER_PASS)?;
        report.merged_chunks = merged;
        report.blocks = blocks;
        if report.checkpointed || blocks > 0 {
            report.reclaimed_bytes = self.compact_locked()?;
        }
        Ok(report)
    }

    /// Deletes chunks whose newest sample is older than `now - retention`,
    /// and series left without samples.
    pub fn apply_retention(&self, now: Timestamp) -> Result<(usize, usize), StorageError> {
        let _w = lock(&self.writer);
        self.check_usable()?;
        let cutoff = now - self.opts.retention_ms;
        let ids: Vec<u64> = lock(&self.state).index.ids().collect();
        let mut chunk_deletes = Vec::new();
        {
            let db = self.db()?;
            let txn = db.begin_read()?;
            let table = txn.open_table(CHUNKS)?;
            for id in ids {
                for row in table.range((id, i64::MIN)..(id, cutoff))? {
                    let (key, value) = row?;
                    let m =
                        chunk::meta(value.value()).map_err(|e| StorageError::new(e.to_string()))?;
                    if m.max_t < cutoff {
                        chunk_deletes.push(key.value());
                    }
                }
            }
        }
        let deleted: std::collections::HashSet<(u64, i64)> =
            chunk_deletes.iter().copied().collect();
        let mut series_deletes = Vec::new();
        {
            let mut st = lock(&self.state);
            let db = self.db()?;
            let txn = db.begin_read()?;
            let table = txn.open_table(CHUNKS)?;
            let ids: Vec<u64> = st.index.ids().collect();
            for id in ids {
                let ms = &st.series[&id];
                if !ms.head.is_empty() || !ms.pending.is_empty() {
                    continue;
                }
                let mut remaining = false;
                for row in table.range((id, i64::MIN)..=(id, i64::MAX))? {
                    if !deleted.contains(&row?.0.value()) {
                        remaining = true;
                        break;
                    }
                }
                if !remaining {
                    series_deletes.push(id);
                }
            }
            drop(table);
            drop(txn);
            drop(db);
            for id in &series_deletes {
                st.index.remove(*id);
                st.series.remove(id);
            }
            st.new_series.retain(|(id, _)| !series_deletes.contains(id));
        }
        if chunk_deletes.is_empty() && series_deletes.is_empty() {
            return Ok((0, 0));
        }
        let (n_chunks, n_series) = (chunk_deletes.len(), series_deletes.len());
        let job = Job {
            chunk_deletes,
            series_deletes,
            ..Job::default()
        };
        if let Err(e) = committer::write(&self.shared, &job) {
            self.failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        self.counters
            .retention_chunks
            .fetch_add(n_chunks as u64, Ordering::Relaxed);
        self.counters
            .retention_series
            .fetch_add(n_series as u64, Ordering::Relaxed);
        Ok((n_chunks, n_series))
    }

    /// Compacts the file when a quarter of it (and 1 MiB) is free space;
    /// skipped while reads are in flight. Returns the bytes the file shrank
    /// by.
    pub fn compact_if_fragmented(&self) -> Result<u64, StorageError> {
        let _w = lock(&self.writer);
        self.compact_locked()
    }

    fn compact_locked(&self) -> Result<u64, StorageError> {
        self.check_space()?;
        let file = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let used = {
            let db = self.db()?;
            let txn = db.begin_write()?;
            let stats = txn.stats()?;
            txn.abort()?;
            stats.allocated_pages() * stats.page_size() as u64
        };
        let free = file.saturating_sub(used);
        if free < COMPACT_MIN_FREE || free < file / 4 {
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
        if !compacted {
            return Ok(0);
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        let after = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(file.saturating_sub(after))
    }

    /// Re-encodes runs of small closed chunks of a series into blocks of
    /// about 4 KiB (one redb leaf page each), which costs fewer bytes per
    /// sample on disk than many 240-sample chunks in half-full pages. Visits
    /// at most `max_series` series that gained chunks since their last
    /// merge. Returns (chunks merged away, blocks written).
    pub fn merge_blocks(&self, max_series: usize) -> Result<(usize, usize), StorageError> {
        let _w = lock(&self.writer);
        self.merge_blocks_locked(max_series)
    }

    fn merge_blocks_locked(&self, max_series: usize) -> Result<(usize, usize), StorageError> {
        self.check_usable()?;
        let ids: Vec<u64> = {
            let mut st = lock(&self.state);
            let mut ids: Vec<u64> = st
                .series
                .iter()
                .filter(|(_, m)| m.unmerged >= 2)
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                return Ok((0, 0));
            }
            ids.sort_unstable();
            ids.truncate(max_series);
            for id in &ids {
                if let Some(ms) = st.series.get_mut(id) {
                    ms.unmerged = 0;
                }
            }
            ids
        };
        self.check_space()?;
        let mut job = Job::default();
        {
            let db = self.db()?;
            let txn = db.begin_read()?;
            let table = txn.open_table(CHUNKS)?;
            for id in ids {
                // The tail of the series back to its last full block.
                let mut tail: Vec<(i64, Vec<u8>)> = Vec::new();
                for row in table.range((id, i64::MIN)..=(id, i64::MAX))?.rev() {
                    let (key, value) = row?;
                    if value.value().len() >= BLOCK_FULL_BYTES {
                        break;
                    }
                    tail.push((key.value().1, value.value().to_vec()));
                }
                tail.reverse();
                merge_runs(id, &tail, &mut job);
            }
        }
        if job.chunks.is_empty() {
            return Ok((0, 0));
        }
        let (merged, blocks) = (job.chunk_deletes.len() + job.chunks.len(), job.chunks.len());
        if let Err(e) = committer::write(&self.shared, &job) {
            self.failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok((merged, blocks))
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
            self.checkpoint(None)
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
            chunks: self.shared.chunks.load(Ordering::Relaxed),
            chunk_bytes: self.shared.chunk_bytes.load(Ordering::Relaxed),
            file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            samples_appended_total: self.counters.samples_appended.load(Ordering::Relaxed),
            batches_rejected_total: self.counters.batches_rejected.load(Ordering::Relaxed),
            checkpoints_total: self.counters.checkpoints.load(Ordering::Relaxed),
            compactions_total: self.counters.compactions.load(Ordering::Relaxed),
            retention_chunks_deleted_total: self.counters.retention_chunks.load(Ordering::Relaxed),
            retention_series_deleted_total: self.counters.retention_series.load(Ordering::Relaxed),
        }
    }

    /// Samples held: every closed chunk's count (read from its header) plus
    /// the head's. Reads the whole chunk table, so it is for status pages,
    /// not hot paths.
    pub fn sample_count(&self) -> Result<u64, StorageError> {
        let head: u64 = {
            let st = lock(&self.state);
            st.series.values().map(|s| s.head.len() as u64).sum()
        };
        let db = self.db()?;
        let txn = db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut total = head;
        for row in chunks.iter()? {
            let (_, v) = row?;
            if let Ok(m) = chunk::meta(v.value()) {
                total += m.count as u64;
            }
        }
        Ok(total)
    }

    // === small durable state of other components ===========================

    /// Stores `value` under `(namespace, key)`, durably.
    pub fn kv_put(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.kv_write(|t| {
            t.insert((namespace, key), value)?;
            Ok(())
        })
    }

    pub fn kv_delete(&self, namespace: &str, key: &[u8]) -> Result<(), StorageError> {
        self.kv_write(|t| {
            t.remove((namespace, key))?;
            Ok(())
        })
    }

    /// Puts (`Some`) and deletes (`None`) rows of a namespace in one
    /// durable transaction.
    pub fn kv_apply(
        &self,
        namespace: &str,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        self.kv_write(|t| {
            for (k, v) in changes {
                match v {
                    Some(v) => t.insert((namespace, k.as_slice()), v.as_slice())?,
                    None => t.remove((namespace, k.as_slice()))?,
                };
            }
            Ok(())
        })
    }

    /// Every `(key, value)` of a namespace, in key order.
    pub fn kv_scan(&self, namespace: &str) -> Result<KvRows, StorageError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        for row in table.range((namespace, &[][..])..)? {
            let (k, v) = row?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            out.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn kv_write(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &[u8]), &[u8]>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.check_space()?;
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(KV)?;
            f(&mut table)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Snapshot of the head (and not yet committed chunks) of the selected
    /// series, together with a read transaction that sees the file as it was
    /// when the snapshot was taken.
    fn snapshot(
        &self,
        ids: impl FnOnce(&Index) -> Vec<u64>,
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<(Vec<MemSnapshot>, redb::ReadTransaction), StorageError> {
        let db = self.db()?;
        let st = lock(&self.state);
        let txn = db.begin_read()?;
        let ids = ids(&st.index);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(labels), Some(ms)) = (st.index.labels(id), st.series.get(&id)) else {
                continue;
            };
            let mut mem = Vec::new();
            for p in &ms.pending {
                let m = chunk::meta(&p.bytes).map_err(|e| StorageError::new(e.to_string()))?;
                if m.max_t < mint || m.min_t > maxt {
                    continue;
                }
                let samples =
                    chunk::decode(&p.bytes).map_err(|e| StorageError::new(e.to_string()))?;
                mem.extend(samples.into_iter().filter(|s| s.t >= mint && s.t <= maxt));
            }
            mem.extend(ms.head.iter().filter(|s| s.t >= mint && s.t <= maxt));
            out.push((id, labels.clone(), mem));
        }
        Ok((out, txn))
    }
}

/// One series' samples in `[mint, maxt]`: its chunks in the file, then
/// `mem` (what is not yet in the file); `None` when there are none.
fn read_series(
    table: &redb::ReadOnlyTable<(u64, i64), &[u8]>,
    id: u64,
    labels: &Arc<Labels>,
    mem: &[Sample],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Option<Series>, StorageError> {
    let mut samples = Vec::new();
    for row in table.range((id, first_chunk_start(table, id, mint)?)..=(id, maxt))? {
        let (_, value) = row?;
        let bytes = value.value();
        let m =
            chunk::meta(bytes).map_err(|e| StorageError::new(format!("series {labels}: {e}")))?;
        if m.max_t < mint {
            continue;
        }
        let from = samples.len();
        samples.reserve(m.count + mem.len());
        chunk::decode_into(bytes, &mut samples)
            .map_err(|e| StorageError::new(format!("series {labels}: {e}")))?;
        if m.min_t < mint || m.max_t > maxt {
            // Samples are in time order: cut the ends outside the window.
            let lo = from + samples[from..].partition_point(|s| s.t < mint);
            let hi = from + samples[from..].partition_point(|s| s.t <= maxt);
            samples.truncate(hi);
            samples.drain(from..lo);
        }
    }
    let from_file = !samples.is_empty();
    samples.extend_from_slice(mem);
    if samples.is_empty() {
        return Ok(None);
    }
    if from_file && !samples.windows(2).all(|w| w[0].t < w[1].t) {
        // A chunk was both in the file and still pending in memory.
        samples.sort_by_key(|s| s.t);
        samples.dedup_by_key(|s| s.t);
    }
    Ok(Some(Series {
        labels: labels.clone(),
        samples,
    }))
}

impl Querier for Storage {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, StorageError> {
        // No budget: never gives up.
        Ok(self
            .select_within(matchers, mint, maxt, usize::MAX)?
            .unwrap_or_default())
    }

    fn select_within(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        max_samples: usize,
    ) -> Result<Option<Vec<Series>>, StorageError> {
        let (snap, txn) = self.snapshot(|ix| ix.select(matchers), mint, maxt)?;
        // Series decode independently: many are split across the cores,
        // each part reading through its own table handle.
        let read = std::sync::atomic::AtomicUsize::new(0);
        let parts = crate::par::map_parts(&snap, snap.len() >= 64, |part| {
            let table = txn.open_table(CHUNKS)?;
            let mut out = Vec::with_capacity(part.len());
            for (id, labels, mem) in part {
                if let Some(s) = read_series(&table, *id, labels, mem, mint, maxt)? {
                    let n = read
                        .fetch_add(s.samples.len(), Ordering::Relaxed)
                        .saturating_add(s.samples.len());
                    if n > max_samples {
                        return Ok(None);
                    }
                    out.push(s);
                }
            }
            Ok::<_, StorageError>(Some(out))
        });
        let mut out = Vec::with_capacity(snap.len());
        for part in parts {
            match part? {
                Some(p) => out.extend(p),
                None => return Ok(None),
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Some(out))
    }

    fn series(
        &self,
        selectors: &[Vec<Matcher>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Arc<Labels>>, StorageError> {
        let (snap, txn) = self.snapshot(|ix| union(ix, selectors), mint, maxt)?;
        let table = txn.open_table(CHUNKS)?;
        let mut out = Vec::new();
        for (id, labels, mem) in snap {
            let mut found = !mem.is_empty();
            if !found {
                for row in table.range((id, first_chunk_start(&table, id, mint)?)..=(id, maxt))? {
                    let m = chunk::meta(row?.1.value())
                        .map_err(|e| StorageError::new(e.to_string()))?;
                    if m.max_t >= mint {
                        found = true;
                        break;
                    }
                }
            }
            if found {
                out.push(labels);
            }
        }
        out.sort();
        Ok(out)
    }

    fn label_names(&self, selectors: &[Vec<Matcher>]) -> Vec<String> {
        let st = lock(&self.state);
        if selectors.is_empty() {
            return st.index.label_names(None);
        }
        let ids = union(&st.index, selectors);
        st.index.label_names(Some(&ids))
    }

    fn label_values(&self, name: &str, selectors: &[Vec<Matcher>]) -> Vec<String> {
        let st = lock(&self.state);
        if selectors.is_empty() {
            return st.index.label_values(name, None);
        }
        let ids = union(&st.index, selectors);
        st.index.label_values(name, Some(&ids))
    }
}

/// Where a read of `[mint, ..]` starts: the newest chunk that begins at or
/// before `mint` may still hold samples at `mint` (chunks of a series never
/// overlap), so the read starts at its key.
fn first_chunk_start(
    table: &redb::ReadOnlyTable<(u64, i64), &[u8]>,
    id: u64,
    mint: Timestamp,
) -> Result<i64, StorageError> {
    Ok(
        match table.range((id, i64::MIN)..=(id, mint))?.next_back() {
            Some(row) => row?.0.value().1,
            None => mint,
        },
    )
}

/// Merged blocks are at most this big, so one fits a 4 KiB redb leaf page
/// together with its 16-byte key and the page header.
const BLOCK_TARGET_BYTES: usize = 4064;
/// A chunk this big counts as a full block.
const BLOCK_FULL_BYTES: usize = BLOCK_TARGET_BYTES - 512;

fn union(ix: &Index, selectors: &[Vec<Matcher>]) -> Vec<u64> {
    let mut ids: Vec<u64> = selectors.iter().flat_map(|m| ix.select(m)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Groups consecutive chunks greedily while their total size stays under
/// the block target, and turns each group of two or more into one block.
fn merge_runs(id: u64, tail: &[(i64, Vec<u8>)], job: &mut Job) {
    let mut i = 0;
    while i < tail.len() {
        let mut j = i;
        let mut size = 0;
        while j < tail.len() && size + tail[j].1.len() <= BLOCK_TARGET_BYTES {
            size += tail[j].1.len();
            j += 1;
        }
        // Merging removes headers, but a wider packing can make the block
        // bigger than the parts: shrink the group until it fits.
        while j > i + 1 {
            let mut samples = Vec::new();
            let decoded = tail[i..j]
                .iter()
                .try_for_each(|(_, b)| chunk::decode_into(b, &mut samples));
            if let Err(e) = decoded {
                tracing::warn!(message = "Skipping a corrupt chunk while merging blocks", series = id, error = %e);
                break;
            }
            let block = chunk::encode(&samples);
            if block.len() <= BLOCK_TARGET_BYTES && samples.len() <= chunk::MAX_SAMPLES {
                job.chunks.push((id, tail[i].0, block));
                job.chunk_deletes
                    .extend(tail[i + 1..j].iter().map(|(start, _)| (id, *start)));
                break;
            }
            j -= 1;
        }
        i = j.max(i + 1);
    }
}

/// Appends one (already validated) sample, closing the head chunk first
/// when it is full or spans too long. Returns true when it closed one.
fn push_sample(ms: &mut MemSeries, s: Sample, max_samples: usize, seq: u64) -> bool {
    let mut closed = false;
    if let Some(first) = ms.head.first() {
        if ms.head.len() >= max_samples || s.t - first.t >= CHUNK_SPAN_MS {
            close_head(ms, seq);
            closed = true;
        }
    }
    ms.head.push(s);
    ms.last = Some(s);
    ms.dirty = true;
    closed
}

/// Moves the head into a pending chunk for the next checkpoint to write.
fn close_head(ms: &mut MemSeries, seq: u64) {
    if ms.head.is_empty() {
        return;
    }
    let samples = std::mem::take(&mut ms.head);
    ms.pending.push(Pending {
        seq,
        start: samples[0].t,
        bytes: chunk::encode(&samples),
    });
    ms.unmerged += 1;
    ms.dirty = false;
}

fn check_labels(labels: &Labels, limits: &super::Limits) -> Result<(), AppendError> {
    if labels.metric_name().is_none() {
        return Err(AppendError::NoMetricName {
            labels: labels.to_string(),
        });
    }
    if labels.len() > limits.max_labels_per_series {
        return Err(AppendError::TooManyLabels {
            labels: labels.to_string(),
            count: labels.len(),
            limit: limits.max_labels_per_series,
        });
    }
    for (n, v) in labels.iter() {
        let (len, limit) = if n.len() > limits.max_label_name_length {
            (n.len(), limits.max_label_name_length)
        } else if v.len() > limits.max_label_value_length && n != METRIC_NAME {
            (v.len(), limits.max_label_value_length)
        } else {
            continue;
        };
        return Err(AppendError::LabelTooLong {
            labels: labels.to_string(),
            name: n.to_string(),
            len,
            limit,
        });
    }
    Ok(())
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
