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

/// A checkpoint is due once the log holds this much.
const MIN_CHECKPOINT_BYTES: u64 = 64 << 10;
/// ... or once records waited this long in the log.
const CHECKPOINT_AGE: std::time::Duration = std::time::Duration::from_secs(1800);
/// Compaction runs when at least this much of the file (and a quarter of
/// it) is free; gains below `COMPACT_BIG` at most once per
/// `COMPACT_SMALL_EVERY`.
const COMPACT_MIN_FREE: u64 = 16 << 10;
const COMPACT_BIG: u64 = 1 << 20;
const COMPACT_SMALL_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// Series files are rewritten into one when there are more than this.
const MAX_SERIES_FILES: usize = 8;

/// What [`Storage::open`] found.
struct Loaded {
    /// Log records applied.
    replayed: usize,
    /// The file's format version, when older than the current one.
    migrate_from: Option<u64>,
    /// The sequence number the log's new segment starts at.
    first_seq: u64,
}

/// What one [`Storage::maintain`] pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Maintenance {
    pub checkpointed: bool,
    /// Parts merged into bigger ones.
    pub merged_parts: usize,
    /// Bytes the data file shrank by (compaction).
    pub reclaimed_bytes: u64,
}

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

/// Buffers samples and writes them as one batch on [`Appender::commit`].
/// Samples of one series may be appended in several calls; they are
/// merged, in call order, when the batch is written.
pub struct Appender<'a> {
    storage: &'a Storage,
    batch: Vec<(SeriesKey<'a>, Vec<Sample>)>,
    sync: bool,
}

/// Decodes a label set a client encoded into pairs (in the order sent), or
/// says why it cannot.
pub type LabelDecoder = for<'b> fn(&'b [u8]) -> Result<Vec<(&'b str, &'b str)>, String>;

/// How a batch names a series: a label set, or label pairs borrowed from a
/// request (an existing series is then found without building a `Labels`).
enum SeriesKey<'a> {
    Labels(Labels),
    Pairs(Vec<(&'a str, &'a str)>),
    /// A label set as a client encoded it: found by its bytes when they
    /// were seen before, else decoded.
    Encoded(&'a [u8], LabelDecoder),
    /// A series id from [`Storage::series_ids`].
    Id(u64),
}

impl SeriesKey<'_> {
    /// `name{a="1", b="2"}` for error messages.
    fn describe(&self) -> String {
        match self {
            SeriesKey::Labels(l) => l.to_string(),
            SeriesKey::Id(id) => format!("series #{id}"),
            SeriesKey::Encoded(bytes, decode) => match decode(bytes) {
                Ok(pairs) => SeriesKey::Pairs(pairs).describe(),
                Err(_) => "with undecodable labels".into(),
            },
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
            SeriesKey::Pairs(_) | SeriesKey::Id(_) | SeriesKey::Encoded(..) => None,
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

    /// Adds samples of a series named by its labels as a client encoded
    /// them: a series whose encoding the store has seen is found by its
    /// bytes alone; otherwise `decode` gives the pairs (validated if the
    /// series is new) or the reason the batch is refused.
    pub fn append_encoded(
        &mut self,
        encoded: &'a [u8],
        decode: LabelDecoder,
        samples: Vec<Sample>,
    ) {
        self.batch
            .push((SeriesKey::Encoded(encoded, decode), samples));
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
        let parts_dir = opts.dir.join("parts");
        let series_dir = opts.dir.join("series");
        for d in [&parts_dir, &series_dir] {
            std::fs::create_dir_all(d).map_err(|e| {
                StorageError::new(format!("cannot create directory {}: {e}", d.display()))
            })?;
        }
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(&path)
            .map_err(|e| StorageError::new(format!("cannot open {}: {e}", path.display())))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(db),
            wal_bytes: AtomicU64::new(0),
        });
        let storage = Storage {
            opts,
            path,
            wal_dir,
            parts_dir,
            series_dir,
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
        if loaded.replayed > 0 || loaded.migrate_from.is_some() {
            tracing::info!(
                message = "Replayed write-ahead log",
                records = loaded.replayed
            );
            storage.checkpoint()?;
        } else {
            // Nothing to replay: segments left are already in the file.
            storage.remove_segments_before(loaded.first_seq)?;
        }
        // A new file starts with redb's preallocated pages (72 KiB), an
        // old one may have free pages from before the stop: give them back
        // before anything runs (cheap while the file is small).
        {
            let _w = lock(&storage.writer);
            storage.compact_locked(true)?;
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
        // The one table, created so readers never meet it missing; files
        // of versions 1 to 3 have their lists moved into it first.
        let version = {
            let txn = db.begin_write()?;
            let version;
            {
                let mut kv = txn.open_table(KV)?;
                if txn.list_tables()?.any(|t| t.name() == LEGACY_META.name()) {
                    move_lists(&txn, &mut kv)?;
                }
                let stored = get_u64(&kv, NS_META, b"format_version")?;
                version = match stored {
                    None => {
                        put_u64(&mut kv, NS_META, b"format_version", FORMAT_VERSION)?;
                        FORMAT_VERSION
                    }
                    Some(v) if (1..=FORMAT_VERSION).contains(&v) => v,
                    Some(v) => {
                        return Err(StorageError::new(format!(
                            "{} has storage format version {v}, this mlmon reads versions 1 to {FORMAT_VERSION}",
                            self.path.display()
                        )))
                    }
                };
            }
            txn.commit()?;
            version
        };
        // Version 1 kept series, chunks and the log in tables.
        let legacy = version == 1;
        let txn = db.begin_read()?;
        let kv = txn.open_table(KV)?;
        let mut st = lock(&self.state);
        st.migrate_from = (version < FORMAT_VERSION).then_some(version);
        // Series: a version 1 file's table (written to a series file by the
        // migration's checkpoint), else the series files in order.
        let mut defined: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut listed_files = std::collections::HashSet::new();
        if legacy {
            for row in txn.open_table(LEGACY_SERIES)?.iter()? {
                let (id, bytes) = row?;
                defined.push((id.value(), bytes.value().to_vec()));
            }
            st.new_series = defined.clone();
        } else {
            for (file, bytes) in scan_ids(&kv, NS_SERIES_FILES)? {
                let contents = seriesfile::read(&self.series_dir, file).map_err(|e| {
                    StorageError::from_io(
                        &format!("cannot read series file {file} that the data file lists"),
                        &e,
                    )
                })?;
                let deleted: std::collections::HashSet<u64> =
                    contents.deletes.iter().copied().collect();
                defined.retain(|(id, _)| !deleted.contains(id));
                defined.extend(contents.adds);
                listed_files.insert(file);
                st.series_files.push((file, bytes));
                st.next_series_file = st.next_series_file.max(file + 1);
            }
        }
        for (id, bytes) in defined {
            let labels = Labels::decode(&bytes)
                .ok_or_else(|| StorageError::new(format!("series {id}: corrupt label bytes")))?;
            st.index.insert(id, Arc::new(labels));
            st.series.insert(id, MemSeries::new());
            st.next_id = st.next_id.max(id + 1);
        }
        remove_leftovers(&self.series_dir, |name| {
            match seriesfile::id_of_file(name) {
                Some(id) => !listed_files.contains(&id),
                None => name.ends_with(".series.tmp"),
            }
        })?;
        // The parts the file lists; other part files are left over from a
        // crash before their checkpoint or merge committed.
        let mut listed = std::collections::HashSet::new();
        let mut parts = Vec::new();
        for (id, day) in scan_ids(&kv, NS_PARTS)? {
            let part = Part::open(&self.parts_dir, id, day as i64).map_err(|e| {
                StorageError::from_io(
                    &format!("cannot open part {id} that the data file lists"),
                    &e,
                )
            })?;
            listed.insert(id);
            st.next_part_id = st.next_part_id.max(id + 1);
            parts.push(Arc::new(part));
        }
        sort_parts(&mut parts);
        remove_leftovers(&self.parts_dir, |name| match part::id_of_file(name) {
            Some(id) => !listed.contains(&id),
            None => name.ends_with(".part.tmp"),
        })?;
        // Versions 1 and 2 kept the open heads in a table.
        if version < 3 {
            for row in txn.open_table(LEGACY_HEAD)?.iter()? {
                let (id, value) = row?;
                if let Some(s) = st.series.get_mut(&id.value()) {
                    s.head = chunk::decode(value.value()).map_err(|e| {
                        StorageError::new(format!("head of series {}: {e}", id.value()))
                    })?;
                }
            }
        }
        // A version 1 file's chunks become pending chunks, which the
        // checkpoint `open` takes writes into parts.
        if legacy {
            let chunks_t = txn.open_table(LEGACY_CHUNKS)?;
            for row in chunks_t.iter()? {
                let (key, value) = row?;
                let (id, start) = key.value();
                if let Some(ms) = st.series.get_mut(&id) {
                    let samples = chunk::decode(value.value()).map_err(|e| {
                        StorageError::new(format!("series {id}, chunk at {start}: {e}"))
                    })?;
                    ms.pending.push(Pending { seq: 0, samples });
                    st.pending_ids.push(id);
                }
            }
        }
        // A series' newest sample ends its head, or else its newest chunk.
        let st = &mut *st;
        let mut newest: FastMap<u64, Sample> = FastMap::default();
        for (&id, ms) in st.series.iter() {
            if let Some(s) = ms.pending.last().and_then(|p| p.samples.last()) {
                newest.insert(id, *s);
            }
        }
        for p in parts.iter().rev() {
            for id in p.ids() {
                if newest.contains_key(&id) || !st.series.contains_key(&id) {
                    continue;
                }
                let chunks = p
                    .chunks(id)
                    .map_err(|e| StorageError::from_io("cannot read a part", &e))?;
                if let Some(c) = chunks.last() {
                    let samples = chunk::decode(c)
                        .map_err(|e| StorageError::new(format!("series {id}: {e}")))?;
                    if let Some(s) = samples.last() {
                        newest.insert(id, *s);
                    }
                }
            }
        }
        for (id, ms) in st.series.iter_mut() {
            let n = newest.get(id).copied();
            if let Some(n) = n {
                ms.head.retain(|s| s.t > n.t);
            }
            ms.last = ms.head.last().copied().or(n);
        }
        st.parts = Arc::new(parts);
        let checkpoint_seq = get_u64(&kv, NS_META, b"checkpoint_seq")?.unwrap_or(0);
        // (segment, seq, payload); a version 1 file's log table is
        // segment `None`.
        let mut records: Vec<(Option<u64>, u64, Vec<u8>)> = Vec::new();
        if legacy {
            let wal_t = txn.open_table(LEGACY_WAL)?;
            for row in wal_t.iter()? {
                let (seq, value) = row?;
                records.push((None, seq.value(), value.value().to_vec()));
            }
        }
        let (wal, segment_records) =
            super::wal::Wal::open(&self.wal_dir, |max| max.max(checkpoint_seq) + 1)
                .map_err(|e| StorageError::from_io("cannot open the write-ahead log", &e))?;
        let wal_bytes = wal.bytes();
        records.extend(
            segment_records
                .into_iter()
                .map(|r| (Some(r.segment), r.seq, r.payload)),
        );
        let max_seq = records.iter().map(|r| r.1).max().unwrap_or(0);
        st.next_seq = max_seq.max(checkpoint_seq) + 1;
        let first_seq = st.next_seq;
        let mut replayed = 0;
        let max_samples = self.opts.chunk_max_samples;
        // Version 3 records' values refer to earlier ones in their segment.
        let mut prev = wal::Prev::default();
        let mut segment = None;
        let mut skip_segment = false;
        for (seg, seq, payload) in records {
            if seg != segment {
                segment = seg;
                prev.clear();
                skip_segment = false;
            }
            if skip_segment {
                continue;
            }
            let mut defs = Vec::new();
            let mut samples = Vec::new();
            let ok = match seg {
                None => wal::decode_samples(&payload, |id, s| samples.push((id, s))),
                Some(_) if version < 3 => wal::decode_v2(
                    &payload,
                    |id, l| defs.push((id, l.to_vec())),
                    |id, s| samples.push((id, s)),
                ),
                Some(_) => wal::decode(
                    &payload,
                    &mut prev,
                    |id, l| defs.push((id, l.to_vec())),
                    |id, s| samples.push((id, s)),
                ),
            };
            if ok.is_none() {
                // Later records of the segment may refer to this one.
                tracing::warn!(
                    message = "Skipping a malformed WAL record and the rest of its segment",
                    seq
                );
                skip_segment = true;
                continue;
            }
            if seq <= checkpoint_seq {
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
                st.series.insert(id, MemSeries::new());
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
                migrate_from: (version < FORMAT_VERSION).then_some(version),
                first_seq,
            },
            wal,
        ))
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
        self.check_space(DISK_RESERVE)?;
        let sender = self.sender()?;
        let limits = &self.opts.limits;
        let (rx, stored) = {
            let mut st = lock(&self.state);
            // Pass 1: resolve series and merge repeated ones, in order.
            let mut ids: Vec<Option<u64>> = Vec::with_capacity(batch.len());
            let mut first_of: FastMap<u64, usize> = FastMap::default();
            let mut new_first: HashMap<Labels, usize> = HashMap::new();
            let mut new = 0usize;
            // Encodings decoded in this batch, remembered once resolved.
            let mut encodings: Vec<(usize, &[u8])> = Vec::new();
            for i in 0..batch.len() {
                let mut id = match batch[i].0 {
                    SeriesKey::Labels(ref l) => st.index.id_of(l),
                    SeriesKey::Pairs(ref p) => st.index.id_of_pairs(p),
                    SeriesKey::Encoded(bytes, decode) => match st.index.id_of_encoded(bytes) {
                        Some(id) => Some(id),
                        // An encoding not seen yet: named by its pairs from here on.
                        None => {
                            let pairs =
                                decode(bytes).map_err(|reason| AppendError::InvalidLabels {
                                    labels: format!("number {i} of the batch"),
                                    reason,
                                })?;
                            let id = st.index.id_of_pairs(&pairs);
                            batch[i].0 = SeriesKey::Pairs(pairs);
                            encodings.push((i, bytes));
                            id
                        }
                    },
                    SeriesKey::Id(id) if st.series.contains_key(&id) => Some(id),
                    SeriesKey::Id(id) => return Err(AppendError::UnknownSeries(id)),
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
            let mut rec: Vec<wal::Entry> = Vec::with_capacity(batch.len());
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
                let prev = ms
                    .last
                    .filter(|_| ms.logged_in == st.segment)
                    .map(|l| l.v.to_bits());
                ms.logged_in = st.segment;
                let mut closed = false;
                for s in samples {
                    closed |= push_sample(ms, *s, self.opts.chunk_max_samples, seq);
                }
                if closed {
                    st.pending_ids.push(id);
                }
                stored += samples.len();
                rec.push(wal::Entry { id, samples, prev });
            }
            for (i, bytes) in encodings {
                let id = match &batch[i].0 {
                    SeriesKey::Labels(l) => st.index.id_of(l),
                    SeriesKey::Pairs(p) => st.index.id_of_pairs(p),
                    SeriesKey::Encoded(..) | SeriesKey::Id(_) => None,
                };
                if let Some(id) = id {
                    st.index.remember_encoded(bytes, id);
                }
            }
            if stored == 0 && new_series.is_empty() {
                return Ok(0);
            }
            let payload = wal::encode(&new_series, &rec);
            st.records_bytes += payload.len() as u64;
            st.records_samples += stored;
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
        if lock(&self.state).records_samples >= self.opts.checkpoint_samples {
            if let Ok(_w) = self.writer.try_lock() {
                self.checkpoint_locked()?;
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

    /// Writes every sample the log holds (heads and closed chunks) and
    /// the new series to the data directory and deletes the log segments
    /// that held them. A head cut by a checkpoint goes on as a new chunk;
    /// merges join the pieces.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let _w = lock(&self.writer);
        self.checkpoint_locked()
    }

    fn checkpoint_locked(&self) -> Result<(), StorageError> {
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
                for s in ms.pending.iter().flat_map(|p| &p.samples) {
                    let day = closed.entry(part::day_of(s.t)).or_default();
                    match day.last_mut() {
                        Some((last, samples)) if *last == id => samples.push(*s),
                        _ => day.push((id, vec![*s])),
                    }
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
    fn write_part(
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
    fn write_series_file(
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
    fn commit(&self, job: &Job, parts: &[Part]) -> Result<(), StorageError> {
        committer::write(&self.shared, job)
            .map_err(|e| self.abandon(e, parts, &job.series_files_add))
    }

    /// Gives up a change that failed halfway: deletes the part and series
    /// files written for it, which no transaction lists, and refuses writes
    /// until a restart replays the log (in-memory state such as the closed
    /// chunks and the log segment has already moved on). Returns `e`.
    fn abandon(
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
    fn rewrite_series_files(&self) -> Result<bool, StorageError> {
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
    fn merge_parts(&self, run: &[Arc<Part>], cutoff: Timestamp) -> Result<usize, StorageError> {
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

    /// Drops the parts whose newest sample is older than `now - retention`,
    /// rewrites those that begin before it without the older samples, and
    /// deletes series left without samples. Returns (sections dropped,
    /// series deleted): a section is one series' chunks in one part.
    pub fn apply_retention(&self, now: Timestamp) -> Result<(usize, usize), StorageError> {
        let _w = lock(&self.writer);
        self.check_usable()?;
        let cutoff = now - self.opts.retention_ms;
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
    fn compact_locked(&self, at_open: bool) -> Result<u64, StorageError> {
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

    /// Samples held: the parts' counts (from their indexes), the pending
    /// chunks' and the heads'.
    pub fn sample_count(&self) -> Result<u64, StorageError> {
        let st = lock(&self.state);
        let mut total: u64 = st.parts.iter().map(|p| p.samples).sum();
        for ms in st.series.values() {
            total += ms.head.len() as u64;
            total += ms
                .pending
                .iter()
                .map(|p| p.samples.len() as u64)
                .sum::<u64>();
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
        scan_namespace(&txn.open_table(KV)?, namespace)
    }

    fn kv_write(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &[u8]), &[u8]>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.check_space(DISK_RESERVE / 2)?;
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(KV)?;
            f(&mut table)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads every selected series with samples in `[mint, maxt]` and
    /// passes it to `f` (series decode independently: many are split
    /// across the cores); returns what `f` kept, unordered, and the samples
    /// read, or `None` as soon as more than `max_samples` were read.
    fn read_each<R: Send>(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        max_samples: usize,
        f: impl Fn(Series) -> Option<R> + Sync,
    ) -> Result<Option<(Vec<R>, usize)>, StorageError> {
        let (snap, parts) = self.snapshot(|ix| ix.select(matchers), mint, maxt)?;
        let read = std::sync::atomic::AtomicUsize::new(0);
        let results = crate::par::map_parts(&snap, snap.len() >= 64, |group| {
            let mut out = Vec::with_capacity(group.len());
            for (id, labels, mem) in group {
                if let Some(s) = read_series(&parts, *id, labels, mem, mint, maxt)? {
                    let n = read
                        .fetch_add(s.samples.len(), Ordering::Relaxed)
                        .saturating_add(s.samples.len());
                    if n > max_samples {
                        return Ok(None);
                    }
                    out.extend(f(s));
                }
            }
            Ok::<_, StorageError>(Some(out))
        });
        let mut out = Vec::with_capacity(snap.len());
        for group in results {
            match group? {
                Some(p) => out.extend(p),
                None => return Ok(None),
            }
        }
        Ok(Some((out, read.into_inner())))
    }

    /// Snapshot of the head (and not yet committed chunks) of the selected
    /// series, together with a read transaction that sees the file as it was
    /// when the snapshot was taken.
    fn snapshot(
        &self,
        ids: impl FnOnce(&Index) -> Vec<u64>,
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<(Vec<MemSnapshot>, Parts), StorageError> {
        let st = lock(&self.state);
        let ids = ids(&st.index);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(labels), Some(ms)) = (st.index.labels(id), st.series.get(&id)) else {
                continue;
            };
            let mut mem = Vec::new();
            for p in &ms.pending {
                mem.extend(p.samples.iter().filter(|s| s.t >= mint && s.t <= maxt));
            }
            mem.extend(ms.head.iter().filter(|s| s.t >= mint && s.t <= maxt));
            out.push((id, labels.clone(), mem));
        }
        Ok((out, st.parts.clone()))
    }
}

/// Moves the lists of a version 1 to 3 file (its `meta`, `parts` and
/// `series_files` tables) into `kv` and deletes the tables.
fn move_lists(txn: &redb::WriteTransaction, kv: &mut KvTable) -> Result<(), StorageError> {
    for row in txn.open_table(LEGACY_META)?.iter()? {
        let (name, v) = row?;
        put_u64(kv, NS_META, name.value().as_bytes(), v.value())?;
    }
    for row in txn.open_table(LEGACY_PARTS)?.iter()? {
        let (id, day) = row?;
        put_u64(kv, NS_PARTS, &id_key(id.value()), day.value() as u64)?;
    }
    for row in txn.open_table(LEGACY_SERIES_FILES)?.iter()? {
        let (id, bytes) = row?;
        put_u64(kv, NS_SERIES_FILES, &id_key(id.value()), bytes.value())?;
    }
    txn.delete_table(LEGACY_META)?;
    txn.delete_table(LEGACY_PARTS)?;
    txn.delete_table(LEGACY_SERIES_FILES)?;
    Ok(())
}

/// One series' samples in `[mint, maxt]`: its chunks in the parts, then
/// `mem` (what is not yet in a part); `None` when there are none.
fn read_series(
    parts: &[Arc<Part>],
    id: u64,
    labels: &Arc<Labels>,
    mem: &[Sample],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Option<Series>, StorageError> {
    let parts: Vec<&Arc<Part>> = parts
        .iter()
        .filter(|p| p.max_t >= mint && p.min_t <= maxt)
        .collect();
    // One allocation: growing it part by part copied every sample again.
    let capacity = parts
        .iter()
        .map(|p| p.samples_of(id, mint, maxt))
        .sum::<usize>()
        + mem.len();
    let mut samples = Vec::with_capacity(capacity);
    for p in parts {
        p.read(id, mint, maxt, &mut samples)
            .map_err(|e| StorageError::from_io(&format!("series {labels}"), &e))?;
    }
    let from_parts = !samples.is_empty();
    samples.extend_from_slice(mem);
    if samples.is_empty() {
        return Ok(None);
    }
    if from_parts && !samples.windows(2).all(|w| w[0].t < w[1].t) {
        // A chunk was both in a part and still pending in memory.
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
        let Some((mut out, _)) = self.read_each(matchers, mint, maxt, max_samples, Some)? else {
            return Ok(None);
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Some(out))
    }

    fn select_reduce(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        max_samples: usize,
        f: &(dyn Fn(&[Sample]) -> Option<Grid> + Sync),
    ) -> Result<Option<Reduced>, StorageError> {
        let reduce = |s: Series| Some((s.labels, f(&s.samples)?));
        let Some((mut series, samples)) =
            self.read_each(matchers, mint, maxt, max_samples, reduce)?
        else {
            return Ok(None);
        };
        series.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(Reduced { series, samples }))
    }

    fn series(
        &self,
        selectors: &[Vec<Matcher>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Arc<Labels>>, StorageError> {
        let (snap, parts) = self.snapshot(|ix| union(ix, selectors), mint, maxt)?;
        let mut out = Vec::new();
        for (id, labels, mem) in snap {
            let found = !mem.is_empty() || parts.iter().any(|p| p.overlaps(id, mint, maxt));
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

fn union(ix: &Index, selectors: &[Vec<Matcher>]) -> Vec<u64> {
    let mut ids: Vec<u64> = selectors.iter().flat_map(|m| ix.select(m)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Deletes the files in `dir` that `leftover` picks: written before a
/// crash by a checkpoint or rewrite that never committed.
fn remove_leftovers(
    dir: &std::path::Path,
    leftover: impl Fn(&str) -> bool,
) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StorageError::from_io(&format!("cannot list {}", dir.display()), &e))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if leftover(&name) {
            tracing::info!(message = "Removing a file left over from a crash", file = %entry.path().display());
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Orders parts by day, then by when they were written.
fn sort_parts(parts: &mut [Arc<Part>]) {
    parts.sort_by_key(|p| (p.day, p.id));
}

/// Replaces the parts `remove` names by `add` in what readers see next
/// (readers holding the old list keep their open files).
fn swap_parts(st: &mut State, remove: &[u64], add: impl IntoIterator<Item = Part>) {
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
fn merge_candidate(parts: &[Arc<Part>]) -> Option<Vec<Arc<Part>>> {
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
    closed
}

/// Moves the head into a pending chunk for the next checkpoint to write.
fn close_head(ms: &mut MemSeries, seq: u64) {
    if ms.head.is_empty() {
        return;
    }
    let samples = std::mem::take(&mut ms.head);
    ms.pending.push(Pending { seq, samples });
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
