//! The in-memory inverted index: `(label name, label value) → sorted series
//! ids`, plus the label set → id map. Rebuilt from the series table at
//! start-up; changed only under the store's state lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::model::{Labels, MatchOp, Matcher};

/// A hash map with a fast, seeded hasher for the hot paths.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Label pairs borrowed from a request, in the order sent. It hashes exactly
/// like `Labels` with the same pairs in the same order (both hash as a
/// slice of string pairs), so an existing series is found without building
/// a `Labels`.
#[derive(Hash)]
pub(super) struct PairsRef<'a>(pub &'a [(&'a str, &'a str)]);

impl hashbrown::Equivalent<Arc<Labels>> for PairsRef<'_> {
    fn equivalent(&self, key: &Arc<Labels>) -> bool {
        key.len() == self.0.len() && key.iter().zip(self.0).all(|(a, b)| a == *b)
    }
}

/// The encoded label sets [`Index::id_of_encoded`] remembers, in bytes.
const MAX_ENCODED_BYTES: usize = 32 << 20;

#[derive(Default)]
pub(super) struct Index {
    by_labels: hashbrown::HashMap<Arc<Labels>, u64, foldhash::fast::RandomState>,
    /// Label sets as a client encoded them (remote write's `Label`
    /// fields) → id: found by hashing one byte string, without decoding.
    by_encoded: FastMap<Box<[u8]>, u64>,
    encoded_bytes: usize,
    by_id: FastMap<u64, Arc<Labels>>,
    /// name → value → ids (ascending)
    postings: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
}

impl Index {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn id_of(&self, labels: &Labels) -> Option<u64> {
        self.by_labels.get(labels).copied()
    }

    /// The id of the series with exactly these pairs, in this order.
    pub(super) fn id_of_pairs(&self, pairs: &[(&str, &str)]) -> Option<u64> {
        self.by_labels.get(&PairsRef(pairs)).copied()
    }

    /// The id a label set encoded this way was last resolved to.
    pub(super) fn id_of_encoded(&self, encoded: &[u8]) -> Option<u64> {
        self.by_encoded.get(encoded).copied()
    }

    /// Remembers that `encoded` names series `id` (until the cache is
    /// full, or a series is removed).
    pub(super) fn remember_encoded(&mut self, encoded: &[u8], id: u64) {
        if self.encoded_bytes + encoded.len() > MAX_ENCODED_BYTES {
            return;
        }
        if self.by_encoded.insert(encoded.into(), id).is_none() {
            self.encoded_bytes += encoded.len();
        }
    }

    pub(super) fn labels(&self, id: u64) -> Option<&Arc<Labels>> {
        self.by_id.get(&id)
    }

    pub(super) fn insert(&mut self, id: u64, labels: Arc<Labels>) {
        for (n, v) in labels.iter() {
            let list = self
                .postings
                .entry(n.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default();
            match list.last() {
                Some(&last) if last > id => {
                    let pos = list.partition_point(|&x| x < id);
                    list.insert(pos, id);
                }
                _ => list.push(id),
            }
        }
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(id, labels);
    }

    pub(super) fn remove(&mut self, id: u64) {
        let Some(labels) = self.by_id.remove(&id) else {
            return;
        };
        self.by_encoded.clear();
        self.encoded_bytes = 0;
        self.by_labels.remove(&labels);
        for (n, v) in labels.iter() {
            if let Some(values) = self.postings.get_mut(n) {
                if let Some(list) = values.get_mut(v) {
                    if let Ok(pos) = list.binary_search(&id) {
                        list.remove(pos);
                    }
                    if list.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(n);
                }
            }
        }
    }

    /// Ids of the series matching every matcher, ascending.
    pub(super) fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        // Start from the smallest candidate set any positive matcher gives,
        // then check every matcher against the series' labels.
        let mut best: Option<Vec<u64>> = None;
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let ids = self.postings_for(m);
            if best.as_ref().is_none_or(|b| ids.len() < b.len()) {
                best = Some(ids);
            }
        }
        let candidates = best.unwrap_or_else(|| {
            let mut all: Vec<u64> = self.by_id.keys().copied().collect();
            all.sort_unstable();
            all
        });
        candidates
            .into_iter()
            .filter(|id| {
                let labels = &self.by_id[id];
                matchers
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            })
            .collect()
    }

    fn postings_for(&self, m: &Matcher) -> Vec<u64> {
        let Some(values) = self.postings.get(&m.name) else {
            return Vec::new();
        };
        if m.op == MatchOp::Equal {
            return values.get(&m.value).cloned().unwrap_or_default();
        }
        let mut out: Vec<u64> = values
            .iter()
            .filter(|(v, _)| m.matches(v))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }

    /// Label names of the given series (all series when `ids` is `None`).
    pub(super) fn label_names(&self, ids: Option<&[u64]>) -> Vec<String> {
        match ids {
            None => self.postings.keys().cloned().collect(),
            Some(ids) => {
                let mut names: Vec<String> = ids
                    .iter()
                    .filter_map(|id| self.by_id.get(id))
                    .flat_map(|l| l.iter().map(|(n, _)| n.to_string()))
                    .collect();
                names.sort();
                names.dedup();
                names
            }
        }
    }

    /// Values of label `name` among the given series (all when `None`).
    pub(super) fn label_values(&self, name: &str, ids: Option<&[u64]>) -> Vec<String> {
        match ids {
            None => self
                .postings
                .get(name)
                .map(|v| v.keys().cloned().collect())
                .unwrap_or_default(),
            Some(ids) => {
                let mut vals: Vec<String> = ids
                    .iter()
                    .filter_map(|id| self.by_id.get(id)?.get(name).map(str::to_string))
                    .collect();
                vals.sort();
                vals.dedup();
                vals
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(Labels::new(pairs.iter().copied()).unwrap())
    }

    #[test]
    fn select_intersects_and_handles_empty_matchers() {
        let mut ix = Index::default();
        ix.insert(1, l(&[("__name__", "up"), ("job", "a")]));
        ix.insert(2, l(&[("__name__", "up"), ("job", "b"), ("env", "prod")]));
        ix.insert(3, l(&[("__name__", "down"), ("job", "a")]));
        let eq = |n: &str, v: &str| Matcher::equal(n, v);
        assert_eq!(ix.select(&[eq("__name__", "up")]), [1, 2]);
        assert_eq!(ix.select(&[eq("__name__", "up"), eq("env", "")]), [1]);
        let re = Matcher::new(MatchOp::Re, "job", "a|b").unwrap();
        assert_eq!(ix.select(&[re]), [1, 2, 3]);
        let ne = Matcher::new(MatchOp::NotEqual, "job", "a").unwrap();
        assert_eq!(ix.select(&[eq("__name__", "up"), ne]), [2]);
        assert_eq!(
            ix.id_of_pairs(&[("__name__", "up"), ("env", "prod"), ("job", "b")]),
            Some(2)
        );
        assert_eq!(
            ix.id_of_pairs(&[("__name__", "up"), ("job", "b"), ("env", "prod")]),
            None
        );
        assert_eq!(ix.id_of_pairs(&[("__name__", "up")]), None);
        ix.remove(2);
        assert_eq!(ix.select(&[eq("__name__", "up")]), [1]);
        assert_eq!(ix.label_values("job", None), ["a"]);
    }
}
