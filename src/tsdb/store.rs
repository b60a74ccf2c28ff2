//! [`Storage`]: open and replay, append, select, checkpoint, retention and
//! compaction. The head and index live under one mutex (`State`); the file
//! is written only by the committer thread (and by the small KV helpers).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::committer::{self, Job, Reply, Shared};
use super::index::{FastMap, Index};
use super::schema::{CHUNKS, FORMAT_VERSION, HEAD, KV, META, SERIES, WAL};
use super::{
    chunk, wal, AppendError, Querier, Series, StorageError, StorageOptions, StorageStats,
    CHUNK_SPAN_MS,
};
use crate::model::{Labels, Matcher, Sample, Timestamp, METRIC_NAME};

/// `(key, value)` rows of one KV namespace.
pub type KvRows = Vec<(Vec<u8>, Vec<u8>)>;

/// In-memory samples of one selected series: (id, labels, samples).
type MemSnapshot = (u64, Arc<Labels>, Vec<Sample>);

/// The open store. Share it as `Arc<Storage>`; call [`Storage::close`] to
/// checkpoint the head and stop the committer.
pub struct Storage {
    opts: StorageOptions,
    path: PathBuf,
    shared: Arc<Shared>,
    state: Mutex<State>,
    tx: Mutex<Option<Sender<(Job, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
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

#[derive(Default)]
struct State {
    index: Index,
    series: FastMap<u64, MemSeries>,
    /// Series that have closed chunks not yet known to be in the file.
    pending_ids: Vec<u64>,
    next_id: u64,
    next_seq: u64,
    wal_bytes: u64,
    /// Set when a write has happened since the last checkpoint.
    dirty: bool,
}

struct MemSeries {
    /// Samples of the open chunk, ascending.
    head: Vec<Sample>,
    /// Closed chunks handed to the committer but maybe not yet in the file.
    pending: Vec<(u64, Vec<Sample>)>,
    /// The newest sample ever appended (for order and duplicate checks).
    last: Option<Sample>,
    /// The head changed since the last checkpoint.
    dirty: bool,
    /// The head table has a row for this series.
    has_head_row: bool,
    /// Chunks written since the series' closed data was last merged into
    /// blocks (see [`Storage::merge_blocks`]).
    unmerged: u32,
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
        }
    }
}

/// Buffers samples and writes them as one batch on [`Appender::commit`].
/// Samples of one series may be appended in several calls; they are
/// merged, in call order, when the batch is written.
pub struct Appender<'a> {
    storage: &'a Storage,
    batch: Vec<(SeriesKey<'a>, Vec<Sample>)>,
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

    /// Writes the batch: all of it, durably, or none of it. Blocks until the
    /// commit is on disk. Returns the number of samples stored (duplicates
    /// of already stored samples are skipped).
    pub fn commit(self) -> Result<usize, AppendError> {
        if self.batch.is_empty() {
            return Ok(0);
        }
        self.storage.append_batch(self.batch, false)
    }

    /// Like [`commit`](Self::commit), but samples out of order or with a
    /// duplicate timestamp are left out one by one instead of refusing the
    /// batch, as Prometheus does with a scrape. Returns (stored, left out).
    pub fn commit_lenient(self) -> Result<(usize, usize), AppendError> {
        if self.batch.is_empty() {
            return Ok((0, 0));
        }
        let offered: usize = self.batch.iter().map(|(_, s)| s.len()).sum();
        let stored = self.storage.append_batch(self.batch, true)?;
        Ok((stored, offered.saturating_sub(stored)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Opens (or creates) `dir/mlmon.redb`, rebuilds the index and replays the
    /// WAL, then starts the committer thread.
    pub fn open(opts: StorageOptions) -> Result<Arc<Storage>, StorageError> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| {
            StorageError::new(format!(
                "cannot create data directory {}: {e}",
                opts.dir.display()
            ))
        })?;
        let path = opts.dir.join("mlmon.redb");
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(&path)
            .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(db),
            committed_seq: AtomicU64::new(0),
            chunk_bytes: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
        });
        let storage = Storage {
            opts,
            path,
            shared,
            state: Mutex::new(State::default()),
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            failed: AtomicBool::new(false),
            counters: Counters::default(),
        };
        let replay = storage.load()?;
        let (tx, rx) = mpsc::channel();
        let shared = storage.shared.clone();
        let handle = std::thread::Builder::new()
            .name("tsdb-committer".into())
            .spawn(move || committer::run(shared, rx))
            .map_err(|e| StorageError::new(format!("cannot start committer thread: {e}")))?;
        *lock(&storage.tx) = Some(tx);
        *lock(&storage.thread) = Some(handle);
        let storage = Arc::new(storage);
        if replay > 0 {
            tracing::info!(message = "Replayed write-ahead log", records = replay);
            storage.checkpoint(None)?;
        }
        Ok(storage)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Loads series, heads and the WAL into memory. Returns the number of WAL
    /// records replayed; their closed chunks are left for the first
    /// checkpoint, which `open` takes right away.
    fn load(&self) -> Result<usize, StorageError> {
        let db = self
            .shared
            .db
            .read()
            .map_err(|_| StorageError::new("lock poisoned"))?;
        // Create every table so readers never meet a missing one.
        {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let version = meta.get("format_version")?.map(|v| v.value());
                match version {
                    None => {
                        meta.insert("format_version", FORMAT_VERSION)?;
                    }
                    Some(v) if v != FORMAT_VERSION => {
                        return Err(StorageError::new(format!(
                            "{} has storage format version {v}, this mlmon reads version {FORMAT_VERSION}",
                            self.path.display()
                        )))
                    }
                    Some(_) => {}
                }
                txn.open_table(SERIES)?;
                txn.open_table(CHUNKS)?;
                txn.open_table(HEAD)?;
                txn.open_table(WAL)?;
                txn.open_table(KV)?;
            }
            txn.commit()?;
        }
        let txn = db.begin_read()?;
        let series_t = txn.open_table(SERIES)?;
        let chunks_t = txn.open_table(CHUNKS)?;
        let head_t = txn.open_table(HEAD)?;
        let wal_t = txn.open_table(WAL)?;
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
                s.last = s.head.last().copied();
                s.has_head_row = true;
            }
        }
        // Series without a head row: their newest sample ends their newest
        // chunk. Every series gets one merge check after start-up.
        for (&id, ms) in st.series.iter_mut() {
            ms.unmerged = 2;
            if ms.last.is_some() {
                continue;
            }
            if let Some(row) = chunks_t.range((id, i64::MIN)..=(id, i64::MAX))?.next_back() {
                let samples = chunk::decode(row?.1.value())
                    .map_err(|e| StorageError::new(format!("series {id}: {e}")))?;
                ms.last = samples.last().copied();
            }
        }
        let mut replayed = 0;
        let mut job = Job::default();
        let max_samples = self.opts.chunk_max_samples;
        for row in wal_t.iter()? {
            let (seq, value) = row?;
            st.next_seq = st.next_seq.max(seq.value() + 1);
            let mut samples = Vec::new();
            if wal::decode(value.value(), |id, s| samples.push((id, s))).is_none() {
                tracing::warn!(message = "Skipping a corrupt WAL record", seq = seq.value());
                continue;
            }
            for (id, s) in samples {
                if let Some(ms) = st.series.get_mut(&id) {
                    if ms.last.is_none_or(|l| s.t > l.t) {
                        push_sample(id, ms, s, max_samples, u64::MAX, &mut job);
                    }
                }
            }
            replayed += 1;
        }
        st.wal_bytes = 0;
        let checkpoint_seq = txn
            .open_table(META)?
            .get("checkpoint_seq")?
            .map(|v| v.value())
            .unwrap_or(0);
        st.next_seq = st.next_seq.max(checkpoint_seq + 1);
        // Chunks closed during replay stay pending (seq u64::MAX) until the
        // first checkpoint writes them.
        st.dirty = replayed > 0;
        st.pending_ids.extend(job.chunks.iter().map(|c| c.0));
        Ok(replayed)
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
        }
    }

    fn sender(&self) -> Result<Sender<(Job, Reply)>, StorageError> {
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
    ) -> Result<usize, AppendError> {
        let result = self.append_inner(batch, lenient);
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
            // Pass 3: apply to the head and build the WAL record.
            let seq = st.next_seq;
            st.next_seq += 1;
            purge_pending(&mut st, self.shared.committed_seq.load(Ordering::SeqCst));
            let mut job = Job {
                seq,
                ..Job::default()
            };
            let mut rec: Vec<(u64, &[Sample])> = Vec::with_capacity(batch.len());
            let mut stored = 0;
            for (i, ((key, samples), id)) in batch.iter().zip(ids).enumerate() {
                let id = match (id, key.labels()) {
                    (Some(id), _) => id,
                    // A repeat of a new series, merged into its first entry.
                    (None, Some(labels)) if new_first.get(labels) != Some(&i) => continue,
                    (None, None) => continue,
                    (None, Some(labels)) => {
                        let id = st.next_id;
                        st.next_id += 1;
                        job.new_series.push((id, labels.encode()));
                        st.index.insert(id, Arc::new(labels.clone()));
                        st.series.insert(id, MemSeries::new());
                        id
                    }
                };
                if samples.is_empty() {
                    continue;
                }
                let ms = st.series.get_mut(&id).expect("series was just resolved");
                for s in samples {
                    push_sample(id, ms, *s, self.opts.chunk_max_samples, seq, &mut job);
                }
                stored += samples.len();
                rec.push((id, samples));
            }
            if stored == 0 && job.new_series.is_empty() {
                return Ok(0);
            }
            st.pending_ids.extend(job.chunks.iter().map(|c| c.0));
            let bytes = wal::encode(&rec);
            st.wal_bytes += bytes.len() as u64;
            st.dirty = true;
            job.wal = Some(bytes);
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((job, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (rx, stored)
        };
        self.wait(rx)?;
        self.counters
            .samples_appended
            .fetch_add(stored as u64, Ordering::Relaxed);
        if lock(&self.state).wal_bytes >= self.opts.wal_checkpoint_bytes {
            self.checkpoint(None)?;
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

    /// Writes every changed head to the head table and drops the WAL. With
    /// `close_before = Some(t)`, heads whose first sample is older than `t`
    /// are closed into chunks first, so idle series do not hold the WAL.
    pub fn checkpoint(&self, close_before: Option<Timestamp>) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_space()?;
        let sender = self.sender()?;
        let rx = {
            let mut st = lock(&self.state);
            let seq = st.next_seq;
            st.next_seq += 1;
            let mut job = Job {
                seq,
                wal_truncate: Some(seq),
                ..Job::default()
            };
            let st = &mut *st;
            for (&id, ms) in st.series.iter_mut() {
                // Chunks closed during WAL replay are written now.
                for (pseq, samples) in ms.pending.iter_mut() {
                    if *pseq == u64::MAX {
                        job.chunks.push((id, samples[0].t, chunk::encode(samples)));
                        *pseq = seq;
                    }
                }
                let old = close_before.is_some_and(|t| ms.head.first().is_some_and(|s| s.t < t));
                if old {
                    close_head(id, ms, seq, &mut job);
                } else if ms.dirty && !ms.head.is_empty() {
                    job.head_rows.push((id, chunk::encode(&ms.head)));
                    ms.has_head_row = true;
                }
                ms.dirty = false;
            }
            st.wal_bytes = 0;
            st.dirty = false;
            st.pending_ids.extend(job.chunks.iter().map(|c| c.0));
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((job, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            rx
        };
        self.wait(rx)?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// True when samples arrived since the last checkpoint.
    pub fn has_unflushed_writes(&self) -> bool {
        lock(&self.state).dirty
    }

    /// Deletes chunks whose newest sample is older than `now - retention`,
    /// and series left without samples.
    pub fn apply_retention(&self, now: Timestamp) -> Result<(usize, usize), StorageError> {
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
        let sender = self.sender()?;
        let (rx, n_chunks, n_series) = {
            let mut st = lock(&self.state);
            let seq = st.next_seq;
            st.next_seq += 1;
            purge_pending(&mut st, self.shared.committed_seq.load(Ordering::SeqCst));
            let mut series_deletes = Vec::new();
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
            if chunk_deletes.is_empty() && series_deletes.is_empty() {
                return Ok((0, 0));
            }
            let (nc, ns) = (chunk_deletes.len(), series_deletes.len());
            let job = Job {
                seq,
                chunk_deletes,
                series_deletes,
                ..Job::default()
            };
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((job, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (rx, nc, ns)
        };
        self.wait(rx)?;
        self.counters
            .retention_chunks
            .fetch_add(n_chunks as u64, Ordering::Relaxed);
        self.counters
            .retention_series
            .fetch_add(n_series as u64, Ordering::Relaxed);
        Ok((n_chunks, n_series))
    }

    /// Compacts the file when much of it is free space; skipped while reads
    /// are in flight. Returns true when the file was compacted.
    pub fn compact_if_fragmented(&self) -> Result<bool, StorageError> {
        self.check_space()?;
        let file = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let used = {
            let db = self.db()?;
            let txn = db.begin_write()?;
            let stats = txn.stats()?;
            txn.abort()?;
            stats.allocated_pages() * stats.page_size() as u64
        };
        // Worth it when at least a quarter of the file (and 256 KiB) is free.
        let free = file.saturating_sub(used);
        if free < (256 << 10) || free < file / 4 {
            return Ok(false);
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
        if compacted {
            self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(compacted)
    }

    /// Re-encodes runs of small closed chunks of a series into blocks of
    /// about 4 KiB (one redb leaf page each), which costs fewer bytes per
    /// sample on disk than many 240-sample chunks in half-full pages. Visits
    /// at most `max_series` series that gained chunks since their last
    /// merge. Returns (chunks merged away, blocks written).
    pub fn merge_blocks(&self, max_series: usize) -> Result<(usize, usize), StorageError> {
        self.check_usable()?;
        self.check_space()?;
        let ids: Vec<u64> = {
            let mut st = lock(&self.state);
            let mut ids: Vec<u64> = st
                .series
                .iter()
                .filter(|(_, m)| m.unmerged >= 2)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids.truncate(max_series);
            for id in &ids {
                if let Some(ms) = st.series.get_mut(id) {
                    ms.unmerged = 0;
                }
            }
            ids
        };
        if ids.is_empty() {
            return Ok((0, 0));
        }
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
        let sender = self.sender()?;
        let rx = {
            let mut st = lock(&self.state);
            job.seq = st.next_seq;
            st.next_seq += 1;
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((job, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            rx
        };
        self.wait(rx)?;
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
            wal_bytes: st.wal_bytes,
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
        let mut st = lock(&self.state);
        let committed = self.shared.committed_seq.load(Ordering::SeqCst);
        let txn = db.begin_read()?;
        purge_pending(&mut st, committed);
        let ids = ids(&st.index);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(labels), Some(ms)) = (st.index.labels(id), st.series.get(&id)) else {
                continue;
            };
            let mut mem = Vec::new();
            for (_, samples) in &ms.pending {
                mem.extend(samples.iter().filter(|s| s.t >= mint && s.t <= maxt));
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

/// Drops pending chunks that are known to be in the file.
fn purge_pending(st: &mut State, committed: u64) {
    let State {
        series,
        pending_ids,
        ..
    } = st;
    pending_ids.sort_unstable();
    pending_ids.dedup();
    pending_ids.retain(|id| match series.get_mut(id) {
        Some(ms) => {
            ms.pending.retain(|(seq, _)| *seq > committed);
            !ms.pending.is_empty()
        }
        None => false,
    });
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
/// when it is full or spans too long.
fn push_sample(
    id: u64,
    ms: &mut MemSeries,
    s: Sample,
    max_samples: usize,
    seq: u64,
    job: &mut Job,
) {
    if let Some(first) = ms.head.first() {
        if ms.head.len() >= max_samples || s.t - first.t >= CHUNK_SPAN_MS {
            close_head(id, ms, seq, job);
        }
    }
    ms.head.push(s);
    ms.last = Some(s);
    ms.dirty = true;
}

fn close_head(id: u64, ms: &mut MemSeries, seq: u64, job: &mut Job) {
    if ms.head.is_empty() {
        return;
    }
    let samples = std::mem::take(&mut ms.head);
    job.chunks.push((id, samples[0].t, chunk::encode(&samples)));
    ms.pending.push((seq, samples));
    ms.unmerged += 1;
    if ms.has_head_row {
        job.head_deletes.push(id);
        ms.has_head_row = false;
    }
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
