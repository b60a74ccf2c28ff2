//! Reads: the parts, the closed chunks not yet in a part and the heads,
//! taken under one lock, decoded in parallel; `Querier` for the store.

use super::*;

/// One series' samples in `[mint, maxt]`: its chunks in the parts, then
/// `mem` (what is not yet in a part); `None` when there are none.
pub(super) fn read_series(
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

pub(super) fn union(ix: &Index, selectors: &[Vec<Matcher>]) -> Vec<u64> {
    let mut ids: Vec<u64> = selectors.iter().flat_map(|m| ix.select(m)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Storage {
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

    /// Reads every selected series with samples in `[mint, maxt]` and
    /// passes it to `f` (series decode independently: many are split
    /// across the cores); returns what `f` kept, unordered, and the samples
    /// read, or `None` as soon as more than `max_samples` were read.
    pub(super) fn read_each<R: Send>(
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
    pub(super) fn snapshot(
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
