//! The evaluator: selectors are loaded once for the whole query (the time
//! window each needs is worked out from the tree first), then the tree is
//! evaluated at each step. Semantics follow Prometheus 2.x: a 5-minute
//! lookback window closed at both ends, range selectors `[t - r, t]`, stale
//! markers end a series, `offset` and `@` move the evaluation time of what
//! they modify, subqueries evaluate their inner expression at steps aligned
//! to multiples of their step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::{
    AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};

use super::value::{Series, VSample, Value};
use super::{aggregate, binary, functions, matchers_of, QueryError, QueryOptions};
use crate::model::{is_stale, Labels, Sample, Timestamp, METRIC_NAME};
use crate::tsdb::Querier;

/// A hash map with a fast hasher for per-step lookups.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Series loaded for one selector node.
type Loaded = Vec<(Arc<Labels>, Vec<Sample>)>;

pub(super) struct Evaluator<'a> {
    q: &'a dyn Querier,
    /// The query's own start and end (for `@ start()` / `@ end()`).
    pub start: Timestamp,
    pub end: Timestamp,
    opts: &'a QueryOptions,
    data: HashMap<usize, Loaded>,
    loaded_samples: usize,
    /// Label sets without `__name__`, by the address of the original (which
    /// is kept alive here, so the address cannot be reused).
    dropped: FastMap<usize, (Arc<Labels>, Arc<Labels>)>,
    /// Group labels per aggregation node and input label set, likewise.
    groups: FastMap<(usize, usize), (Arc<Labels>, Arc<Labels>)>,
    /// Per range selector and series, the window `[lo, hi)` of the last
    /// step: steps move forward, so windows are found by walking on.
    cursors: FastMap<usize, Vec<(usize, usize)>>,
    deadline: Instant,
}

fn key_vs(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

fn at_ms(at: &AtModifier, start: Timestamp, end: Timestamp) -> Timestamp {
    match at {
        AtModifier::Start => start,
        AtModifier::End => end,
        AtModifier::At(st) => match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        },
    }
}

impl<'a> Evaluator<'a> {
    pub fn new(
        q: &'a dyn Querier,
        start: Timestamp,
        end: Timestamp,
        opts: &'a QueryOptions,
    ) -> Self {
        Evaluator {
            q,
            start,
            end,
            opts,
            data: HashMap::new(),
            loaded_samples: 0,
            dropped: FastMap::default(),
            groups: FastMap::default(),
            cursors: FastMap::default(),
            deadline: Instant::now() + opts.timeout,
        }
    }

    /// The time a node modified by `@`/`offset` is evaluated at, for query
    /// time `t`.
    pub fn ref_time_of(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        t: Timestamp,
    ) -> Timestamp {
        self.ref_time(at, offset, t)
    }

    fn ref_time(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        t: Timestamp,
    ) -> Timestamp {
        let base = at.as_ref().map_or(t, |a| at_ms(a, self.start, self.end));
        base - offset_ms(offset)
    }

    /// Loads the data of every selector, for evaluation times in `[a, b]`.
    pub fn prepare(&mut self, e: &Expr, a: Timestamp, b: Timestamp) -> Result<(), QueryError> {
        match e {
            Expr::VectorSelector(vs) => self.load(vs, a, b, self.opts.lookback_ms),
            Expr::MatrixSelector(MatrixSelector { vs, range }) => {
                self.load(vs, a, b, range.as_millis() as i64)
            }
            Expr::Subquery(sq) => {
                let (ra, rb) = self.window(&sq.at, &sq.offset, a, b);
                self.prepare(&sq.expr, ra - sq.range.as_millis() as i64, rb)
            }
            Expr::Aggregate(ag) => {
                if let Some(p) = &ag.param {
                    self.prepare(p, a, b)?;
                }
                self.prepare(&ag.expr, a, b)
            }
            Expr::Unary(u) => self.prepare(&u.expr, a, b),
            Expr::Binary(bin) => {
                self.prepare(&bin.lhs, a, b)?;
                self.prepare(&bin.rhs, a, b)
            }
            Expr::Paren(p) => self.prepare(&p.expr, a, b),
            Expr::Call(c) => c
                .args
                .args
                .iter()
                .try_for_each(|arg| self.prepare(arg, a, b)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Ok(()),
        }
    }

    fn window(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        a: Timestamp,
        b: Timestamp,
    ) -> (Timestamp, Timestamp) {
        let (x, y) = (self.ref_time(at, offset, a), self.ref_time(at, offset, b));
        (x.min(y), x.max(y))
    }

    fn load(
        &mut self,
        vs: &VectorSelector,
        a: Timestamp,
        b: Timestamp,
        back: i64,
    ) -> Result<(), QueryError> {
        let (ra, rb) = self.window(&vs.at, &vs.offset, a, b);
        let (mint, maxt) = (ra - back, rb);
        let key = key_vs(vs);
        let sets = matchers_of(vs)?;
        let mut out: Loaded = Vec::new();
        for set in &sets {
            for s in self.q.select(set, mint, maxt)? {
                if !out.iter().any(|(l, _)| *l == s.labels) {
                    out.push((s.labels, s.samples));
                }
            }
        }
        if sets.len() > 1 {
            out.sort_by(|x, y| x.0.cmp(&y.0));
        }
        self.loaded_samples += out.iter().map(|(_, s)| s.len()).sum::<usize>();
        if self.loaded_samples > self.opts.max_samples {
            return Err(QueryError::TooManySamples(self.opts.max_samples));
        }
        self.data.insert(key, out);
        Ok(())
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(self.opts.timeout));
        }
        Ok(())
    }

    /// Evaluates `e` at time `t`.
    pub fn eval(&mut self, e: &Expr, t: Timestamp) -> Result<Value, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar { t, v: n.val }),
            Expr::StringLiteral(s) => Ok(Value::String { t, s: s.val.clone() }),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant_selector(vs, t))),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_selector(&ms.vs, ms.range.as_millis() as i64, t))),
            Expr::Subquery(sq) => self.subquery(sq, t).map(Value::Matrix),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar { t, v } => Ok(Value::Scalar { t, v: -v }),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter()
                        .map(|s| VSample { labels: drop_name(&s.labels), t: s.t, v: -s.v })
                        .collect(),
                )),
                other => Err(QueryError::BadData(format!("unary expression only allowed on expressions of type scalar or instant vector, got {}", other.type_name()))),
            },
            Expr::Binary(b) => binary::eval(self, b, t),
            Expr::Aggregate(a) => aggregate::eval(self, a, t),
            Expr::Call(c) => functions::eval(self, c, t),
            Expr::Extension(_) => Err(QueryError::Unsupported("extension expressions".into())),
        }
    }

    /// `labels` without `__name__`, computed once per label set and query.
    pub fn drop_name(&mut self, labels: &Arc<Labels>) -> Arc<Labels> {
        let key = Arc::as_ptr(labels) as usize;
        if let Some((_, d)) = self.dropped.get(&key) {
            return d.clone();
        }
        let d = drop_name(labels);
        self.dropped.insert(key, (labels.clone(), d.clone()));
        d
    }

    /// The group labels of `labels` for aggregation node `node`, computed
    /// once per label set and query.
    pub fn group_of(
        &mut self,
        node: usize,
        labels: &Arc<Labels>,
        make: impl FnOnce(&Labels) -> Labels,
    ) -> Arc<Labels> {
        let key = (node, Arc::as_ptr(labels) as usize);
        if let Some((_, g)) = self.groups.get(&key) {
            return g.clone();
        }
        let g = Arc::new(make(labels));
        self.groups.insert(key, (labels.clone(), g.clone()));
        g
    }

    /// Calls `f` with each loaded series' samples in `[rt - range, rt]`
    /// (stale markers left out), borrowing them where possible.
    pub fn for_each_window(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        t: Timestamp,
        mut f: impl FnMut(&Arc<Labels>, &[Sample]),
    ) {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let key = key_vs(vs);
        let Evaluator { data, cursors, .. } = self;
        let Some(series) = data.get(&key) else {
            return;
        };
        let cur = cursors
            .entry(key)
            .or_insert_with(|| vec![(0, 0); series.len()]);
        for ((labels, samples), c) in series.iter().zip(cur.iter_mut()) {
            let lo = seek(samples, c.0, |s| s.t < rt - range);
            let hi = seek(samples, c.1.max(lo), |s| s.t <= rt);
            *c = (lo, hi);
            let window = &samples[lo..hi];
            if window.is_empty() {
                continue;
            }
            if window.iter().any(|s| is_stale(s.v)) {
                let clean: Vec<Sample> =
                    window.iter().filter(|s| !is_stale(s.v)).copied().collect();
                if !clean.is_empty() {
                    f(labels, &clean);
                }
            } else {
                f(labels, window);
            }
        }
    }

    /// An instant selector whose samples keep their own timestamps (for
    /// `timestamp()`).
    pub fn vector_with_sample_times(
        &mut self,
        e: &Expr,
        t: Timestamp,
    ) -> Result<Vec<VSample>, QueryError> {
        match e {
            Expr::VectorSelector(vs) => Ok(self.select_latest(vs, t, true)),
            other => self.vector(other, t),
        }
    }

    fn instant_selector(&self, vs: &VectorSelector, t: Timestamp) -> Vec<VSample> {
        self.select_latest(vs, t, false)
    }

    fn select_latest(&self, vs: &VectorSelector, t: Timestamp, sample_times: bool) -> Vec<VSample> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let lookback = self.opts.lookback_ms;
        let Some(series) = self.data.get(&key_vs(vs)) else {
            return Vec::new();
        };
        series
            .iter()
            .filter_map(|(labels, samples)| {
                let end = samples.partition_point(|s| s.t <= rt);
                let s = *samples[..end].last()?;
                let at = if sample_times { s.t } else { t };
                (s.t >= rt - lookback && !is_stale(s.v)).then(|| VSample {
                    labels: labels.clone(),
                    t: at,
                    v: s.v,
                })
            })
            .collect()
    }

    fn range_selector(&self, vs: &VectorSelector, range: i64, t: Timestamp) -> Vec<Series> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let Some(series) = self.data.get(&key_vs(vs)) else {
            return Vec::new();
        };
        series
            .iter()
            .filter_map(|(labels, samples)| {
                let lo = samples.partition_point(|s| s.t < rt - range);
                let hi = samples.partition_point(|s| s.t <= rt);
                let pts: Vec<Sample> = samples[lo..hi]
                    .iter()
                    .filter(|s| !is_stale(s.v))
                    .copied()
                    .collect();
                (!pts.is_empty()).then(|| Series {
                    labels: labels.clone(),
                    samples: pts,
                })
            })
            .collect()
    }

    /// A subquery evaluates its expression at multiples of its step inside
    /// `[t - range, t]` (after `@`/`offset`), giving a matrix.
    fn subquery(&mut self, sq: &SubqueryExpr, t: Timestamp) -> Result<Vec<Series>, QueryError> {
        let rt = self.ref_time(&sq.at, &sq.offset, t);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map_or(self.opts.default_subquery_step_ms, |d| d.as_millis() as i64)
            .max(1);
        let mut first = (rt - range).div_euclid(step) * step;
        if first < rt - range {
            first += step;
        }
        let mut acc: HashMap<Arc<Labels>, Vec<Sample>> = HashMap::new();
        let mut order: Vec<Arc<Labels>> = Vec::new();
        let mut ts = first;
        let mut points = 0usize;
        while ts <= rt {
            self.check_deadline()?;
            match self.eval(&sq.expr, ts)? {
                Value::Vector(v) => {
                    // Points a subquery holds count against the sample limit.
                    points += v.len();
                    if self.loaded_samples + points > self.opts.max_samples {
                        return Err(QueryError::TooManySamples(self.opts.max_samples));
                    }
                    for s in v {
                        let entry = acc.entry(s.labels.clone()).or_insert_with(|| {
                            order.push(s.labels.clone());
                            Vec::new()
                        });
                        entry.push(Sample { t: ts, v: s.v });
                    }
                }
                Value::Scalar { v, .. } => {
                    let l = Arc::new(Labels::default());
                    let entry = acc.entry(l.clone()).or_insert_with(|| {
                        order.push(l.clone());
                        Vec::new()
                    });
                    entry.push(Sample { t: ts, v });
                }
                other => {
                    return Err(QueryError::BadData(format!(
                        "subquery is only allowed on instant vector, got {}",
                        other.type_name()
                    )))
                }
            }
            ts += step;
        }
        Ok(order
            .into_iter()
            .map(|l| {
                let samples = acc.remove(&l).unwrap_or_default();
                Series { labels: l, samples }
            })
            .collect())
    }

    /// Evaluates to an instant vector or fails with Prometheus' message.
    pub fn vector(&mut self, e: &Expr, t: Timestamp) -> Result<Vec<VSample>, QueryError> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn matrix(&mut self, e: &Expr, t: Timestamp) -> Result<Vec<Series>, QueryError> {
        match self.eval(e, t)? {
            Value::Matrix(m) => Ok(m),
            other => Err(QueryError::BadData(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn scalar(&mut self, e: &Expr, t: Timestamp) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Value::Scalar { v, .. } => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn string(&mut self, e: &Expr, t: Timestamp) -> Result<String, QueryError> {
        match self.eval(e, t)? {
            Value::String { s, .. } => Ok(s),
            other => Err(QueryError::BadData(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}

/// The labels without `__name__`, sharing the original when there is none.
pub(super) fn drop_name(l: &Arc<Labels>) -> Arc<Labels> {
    if l.get(METRIC_NAME).is_some() {
        Arc::new(l.without(METRIC_NAME))
    } else {
        l.clone()
    }
}

/// Fails when two elements of a vector have the same labels, as
/// Prometheus does after functions and operators that drop labels.
pub(super) fn check_unique(v: &[VSample]) -> Result<(), QueryError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen: std::collections::HashSet<&Labels, foldhash::fast::RandomState> =
        std::collections::HashSet::with_capacity_and_hasher(v.len(), Default::default());
    for s in v {
        if !seen.insert(&*s.labels) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// The first index from which `before` is false, starting the search at
/// `from` (the previous answer): a short walk forward when time moved on a
/// little, a binary search otherwise.
fn seek(samples: &[Sample], from: usize, before: impl Fn(&Sample) -> bool) -> usize {
    let from = from.min(samples.len());
    if from > 0 && !before(&samples[from - 1]) {
        // Time went backwards (a subquery or `@`): search from the start.
        return samples[..from].partition_point(&before);
    }
    let mut i = from;
    let walk_end = (from + 16).min(samples.len());
    while i < walk_end {
        if !before(&samples[i]) {
            return i;
        }
        i += 1;
    }
    i + samples[i..].partition_point(&before)
}
