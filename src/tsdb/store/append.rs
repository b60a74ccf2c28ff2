//! Appends: a batch is validated whole, applied to the heads and logged
//! (acknowledged once the committer synced its record).

use super::*;

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
pub(super) enum SeriesKey<'a> {
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

    /// Room for `series` more series (a request of known size).
    pub fn reserve(&mut self, series: usize) {
        self.batch.reserve(series);
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

/// Appends one (already validated) sample, closing the head chunk first
/// when it is full or spans too long. Returns true when it closed one.
pub(super) fn push_sample(ms: &mut MemSeries, s: Sample, max_samples: usize, seq: u64) -> bool {
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
pub(super) fn close_head(ms: &mut MemSeries, seq: u64) {
    if ms.head.is_empty() {
        return;
    }
    let samples = std::mem::take(&mut ms.head);
    ms.pending.push(Pending { seq, samples });
}

pub(super) fn check_labels(
    labels: &Labels,
    limits: &crate::tsdb::Limits,
) -> Result<(), AppendError> {
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

impl Storage {
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

    pub(super) fn sender(&self) -> Result<Sender<(Op, Reply)>, StorageError> {
        lock(&self.tx)
            .clone()
            .ok_or_else(|| StorageError::new("storage is closed"))
    }

    pub(super) fn append_batch(
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

    pub(super) fn append_inner(
        &self,
        mut batch: Vec<(SeriesKey<'_>, Vec<Sample>)>,
        lenient: bool,
        sync: bool,
    ) -> Result<usize, AppendError> {
        self.check_usable()?;
        self.check_space(DISK_RESERVE)?;
        let sender = self.sender()?;
        let limits = &self.opts.limits;
        let (rx, stored, seq) = {
            let mut st = lock(&self.state);
            // Pass 1: resolve series and merge repeated ones, in order.
            let mut ids: Vec<Option<u64>> = Vec::with_capacity(batch.len());
            let mut first_of: FastMap<u64, usize> =
                FastMap::with_capacity_and_hasher(batch.len(), Default::default());
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
            lock(&self.tap).push(seq, rec.iter().map(|e| (e.id, e.samples)));
            let (reply, rx) = mpsc::sync_channel(1);
            sender
                .send((Op::Append { seq, payload, sync }, reply))
                .map_err(|_| StorageError::new("storage is closed"))?;
            (rx, stored, seq)
        };
        self.wait(rx)?;
        lock(&self.tap).written(seq);
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

    pub(super) fn wait(
        &self,
        rx: mpsc::Receiver<Result<(), StorageError>>,
    ) -> Result<(), StorageError> {
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err(StorageError::new("committer stopped")));
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }
}
