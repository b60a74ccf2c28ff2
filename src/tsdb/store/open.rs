//! Opening a store: the data file (migrating versions 1 and 2), the parts
//! and series files it lists, then the log replayed on top.

use super::*;

/// What [`Storage::open`] found.
pub(super) struct Loaded {
    /// Log records applied.
    replayed: usize,
    /// The file's format version, when older than the current one.
    migrate_from: Option<u64>,
    /// The sequence number the log's new segment starts at.
    first_seq: u64,
}

/// Moves the lists of a version 1 to 3 file (its `meta`, `parts` and
/// `series_files` tables) into `kv` and deletes the tables.
pub(super) fn move_lists(
    txn: &redb::WriteTransaction,
    kv: &mut KvTable,
) -> Result<(), StorageError> {
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

/// Deletes the files in `dir` that `leftover` picks: written before a
/// crash by a checkpoint or rewrite that never committed.
pub(super) fn remove_leftovers(
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
            holds: Mutex::default(),
            tap: Mutex::default(),
        };
        let (loaded, wal) = storage.load()?;
        // Readers' positions hold their segments from the first deletion on.
        storage.load_holds()?;
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

    /// Loads series, heads and the log into memory and opens the log for
    /// appending. Chunks closed during replay wait for the checkpoint that
    /// `open` takes right away.
    pub(super) fn load(&self) -> Result<(Loaded, super::wal::Wal), StorageError> {
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
    pub(super) fn remove_segments_before(&self, first_seq: u64) -> Result<(), StorageError> {
        let first_seq = self.keep_segments_from(first_seq);
        let freed = super::wal::remove_before(&self.wal_dir, first_seq)
            .map_err(|e| StorageError::from_io("cannot delete write-ahead log segments", &e))?;
        let w = &self.shared.wal_bytes;
        w.fetch_sub(freed.min(w.load(Ordering::Relaxed)), Ordering::Relaxed);
        Ok(())
    }
}
