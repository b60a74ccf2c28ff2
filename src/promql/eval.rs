//! The evaluator: selectors are loaded once for the whole query (the time
//! window each needs is worked out from the tree first), then the tree is
//! evaluated at each step. Semantics follow Prometheus 2.x: a 5-minute
//! lookback window closed at both ends, range selectors `[t - r, t]`, stale
//! markers end a series, `offset` and `@` move the evaluation time of what
//! they modify, subqueries evaluate their inner expression at steps aligned
//! to multiples of their step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::{
    AggregateExpr, AtModifier, Call, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};

use super::value::{Series, VSample, Value};
use super::{aggregate, binary, functions, matchers_of, QueryError, QueryOptions};
use crate::model::{is_stale, Labels, Sample, Timestamp, METRIC_NAME};
use crate::tsdb::{Grid, Querier};

pub(super) use crate::model::{FastMap, FastSet};

/// Series loaded for one selector node.
type Loaded = Vec<(Arc<Labels>, Vec<Sample>)>;

/// See [`Evaluator::grid_call`].
struct GridCall<'e> {
    vs: &'e VectorSelector,
    range: i64,
    step: i64,
    steps: usize,
    kernel: functions::Kernel,
    rising: Option<functions::Kernel>,
    keep_name: bool,
}

pub(super) struct Evaluator<'a> {
    q: &'a dyn Querier,
    /// The query's own start and end (for `@ start()` / `@ end()`).
    pub start: Timestamp,
    pub end: Timestamp,
    opts: &'a QueryOptions,
    data: HashMap<usize, Loaded>,
    loaded_samples: usize,
    /// Label sets derived from one or two others, by deriving node and the
    /// addresses of the inputs (which are kept alive here, so an address
    /// cannot be reused): label sets are stable across steps.
    derived: FastMap<(usize, usize, usize), Derived>,
    /// Groups of each aggregation node, stable across steps.
    groups: FastMap<usize, GroupTable>,
    /// Per range selector and series, the window `[lo, hi)` of the last
    /// step: steps move forward, so windows are found by walking on.
    cursors: FastMap<usize, Vec<(usize, usize)>>,
    /// For range queries, the step between `start` and `end`.
    grid_step: Option<i64>,
    /// Range-vector functions of a selector evaluated at every step of a
    /// range query at once, series by series, by call node.
    computed: FastMap<usize, Computed>,
    computed_cells: usize,
    /// Per subquery node, its inner expression's value at each step time
    /// already evaluated: overlapping windows (successive steps, nested
    /// subqueries) evaluate each inner step once, so nesting costs time
    /// linear in its depth instead of exponential.
    subquery_steps: FastMap<usize, std::collections::BTreeMap<Timestamp, Value>>,
    /// Samples kept in `subquery_steps` so far, against [`MEMO_SAMPLES`].
    memo_samples: usize,
    deadline: Instant,
}

/// Most samples one query keeps for reuse in subquery memos (about 40
/// MB); past it inner steps are evaluated again instead (the memo only
/// saves work, it never changes an answer).
const MEMO_SAMPLES: usize = 1 << 20;

struct Derived {
    _inputs: (Arc<Labels>, Option<Arc<Labels>>),
    labels: Arc<Labels>,
}

/// The groups of one aggregation node, numbered in order of first sight;
/// the number of an input label set is worked out once per query.
#[derive(Default)]
pub(super) struct GroupTable {
    /// By the address of the input labels (kept alive here, so the address
    /// cannot be reused).
    by_input: FastMap<usize, (Arc<Labels>, usize)>,
    by_labels: FastMap<Arc<Labels>, usize>,
    labels: Vec<Arc<Labels>>,
}

impl GroupTable {
    /// The number of the group of `input`, whose labels `make` gives.
    pub fn id(&mut self, input: &Arc<Labels>, make: impl FnOnce(&Labels) -> Labels) -> usize {
        let ptr = Arc::as_ptr(input) as usize;
        if let Some((_, id)) = self.by_input.get(&ptr) {
            return *id;
        }
        let labels = Arc::new(make(input));
        let id = match self.by_labels.get(&labels) {
            Some(&id) => id,
            None => {
                self.labels.push(labels.clone());
                self.by_labels.insert(labels, self.labels.len() - 1);
                self.labels.len() - 1
            }
        };
        self.by_input.insert(ptr, (input.clone(), id));
        id
    }

    pub fn labels(&self, id: usize) -> &Arc<Labels> {
        &self.labels[id]
    }
}

/// One node's results at every step of a range query.
struct Computed {
    /// Result labels, value at each step, and which steps have a value.
    series: Vec<(Arc<Labels>, Vec<f64>, Vec<u64>)>,
    /// No two result label sets are equal, so no step needs the check.
    unique: bool,
    /// For aggregations: the input node and each group's input series, to
    /// list groups at a step in order of first appearance, as evaluating
    /// that step alone would.
    members: Option<(usize, Vec<Vec<usize>>)>,
}

fn has_bit(bits: &[u64], k: usize) -> bool {
    bits[k / 64] & (1 << (k % 64)) != 0
}

/// At most this many step × series cells are computed ahead per query, 8
/// bytes each (an aggregation's cells count three times, for its folds);
/// nodes beyond it are evaluated step by step.
const COMPUTE_CELLS: usize = 1 << 22;

/// Takes `cells` from a query's budget `used` for results computed ahead.
fn reserve_cells(used: &mut usize, cells: usize) -> bool {
    let total = used.saturating_add(cells);
    if total > COMPUTE_CELLS {
        return false;
    }
    *used = total;
    true
}

fn key_expr(e: &Expr) -> usize {
    e as *const Expr as usize
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
            derived: FastMap::default(),
            groups: FastMap::default(),
            cursors: FastMap::default(),
            grid_step: None,
            computed: FastMap::default(),
            computed_cells: 0,
            subquery_steps: FastMap::default(),
            memo_samples: 0,
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

    /// Makes this the evaluator of a range query with steps `step` apart.
    pub fn set_grid(&mut self, step: i64) {
        self.grid_step = Some(step);
    }

    /// Loads the data of every selector, for evaluation times in `[a, b]`.
    pub fn prepare(&mut self, e: &Expr, a: Timestamp, b: Timestamp) -> Result<(), QueryError> {
        self.prepare_node(e, a, b, true)
    }

    /// `on_grid`: `e` is evaluated at the query's own steps (it is not
    /// inside a subquery).
    fn prepare_node(
        &mut self,
        e: &Expr,
        a: Timestamp,
        b: Timestamp,
        on_grid: bool,
    ) -> Result<(), QueryError> {
        match e {
            Expr::VectorSelector(vs) => self.load(vs, a, b, self.opts.lookback_ms),
            Expr::MatrixSelector(MatrixSelector { vs, range }) => {
                self.load(vs, a, b, range.as_millis() as i64)
            }
            Expr::Subquery(sq) => {
                let (ra, rb) = self.window(&sq.at, &sq.offset, a, b);
                self.prepare_node(&sq.expr, ra - sq.range.as_millis() as i64, rb, false)
            }
            Expr::Aggregate(ag) => {
                if let Some(p) = &ag.param {
                    self.prepare_node(p, a, b, on_grid)?;
                }
                self.prepare_node(&ag.expr, a, b, on_grid)?;
                if on_grid {
                    self.compute_aggregate(e, ag);
                }
                Ok(())
            }
            Expr::Unary(u) => self.prepare_node(&u.expr, a, b, on_grid),
            Expr::Binary(bin) => {
                self.prepare_node(&bin.lhs, a, b, on_grid)?;
                self.prepare_node(&bin.rhs, a, b, on_grid)
            }
            Expr::Paren(p) => self.prepare_node(&p.expr, a, b, on_grid),
            Expr::Call(c) => {
                if on_grid && self.compute_call(e, c, a, b)? {
                    return Ok(());
                }
                for arg in &c.args.args {
                    self.prepare_node(arg, a, b, on_grid)?;
                }
                Ok(())
            }
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
            // Loading stops as soon as the query's sample limit is passed.
            let budget = self.opts.max_samples.saturating_sub(self.loaded_samples);
            let Some(selected) = self.q.select_within(set, mint, maxt, budget)? else {
                return Err(QueryError::TooManySamples(self.opts.max_samples));
            };
            out.extend(selected.into_iter().map(|s| (s.labels, s.samples)));
        }
        if sets.len() > 1 {
            // A series several sets select counts once.
            out.sort_by(|x, y| x.0.cmp(&y.0));
            out.dedup_by(|x, y| x.0 == y.0);
        }
        self.loaded_samples += out.iter().map(|(_, s)| s.len()).sum::<usize>();
        if self.loaded_samples > self.opts.max_samples {
            return Err(QueryError::TooManySamples(self.opts.max_samples));
        }
        self.data.insert(key, out);
        Ok(())
    }

    /// A range-vector function of one selector, in a range query: what
    /// [`Self::compute_call`] can evaluate at every step ahead.
    fn grid_call<'e>(&self, c: &'e Call) -> Option<GridCall<'e>> {
        let step = self.grid_step?;
        let kernel = functions::window_kernel(c.func.name)?;
        let [arg] = c.args.args.as_slice() else {
            return None;
        };
        let Expr::MatrixSelector(MatrixSelector { vs, range }) = strip_parens(arg) else {
            return None;
        };
        Some(GridCall {
            vs,
            range: range.as_millis() as i64,
            step,
            steps: ((self.end - self.start) / step + 1) as usize,
            kernel,
            rising: functions::rising_kernel(c.func.name),
            keep_name: c.func.name == "last_over_time",
        })
    }

    /// One series' samples → its values at every step (`None`: at none),
    /// or `None` once the query's deadline passed (`late` set).
    fn grid_fn<'s>(
        &self,
        g: &GridCall,
        late: &'s AtomicBool,
    ) -> impl Fn(&[Sample]) -> Option<Grid> + Sync + 's {
        let fixed = g.vs.at.as_ref().map(|at| at_ms(at, self.start, self.end));
        let offset = offset_ms(&g.vs.offset);
        let (start, deadline) = (self.start, self.deadline);
        let (step, steps, range, kernel, rising) = (g.step, g.steps, g.range, g.kernel, g.rising);
        move |samples: &[Sample]| {
            if Instant::now() > deadline {
                late.store(true, Ordering::Relaxed);
                return None;
            }
            let rt = |k: usize| fixed.unwrap_or(start + k as i64 * step) - offset;
            let (values, present) = on_grid(samples, steps, rt, range, kernel, rising);
            present.iter().any(|&w| w != 0).then_some((values, present))
        }
    }

    /// Evaluates a range-vector function of one selector at every step of
    /// a range query ahead, series by series, reading each series and
    /// reducing it at once (so the selector's samples are never all held):
    /// each series' windows are found by walking forward once, and no step
    /// pays for lookups by label set. `false` when the call does not
    /// qualify or its result would pass the query's cell budget: the
    /// selector is then loaded and evaluated as usual.
    fn compute_call(
        &mut self,
        e: &Expr,
        c: &Call,
        a: Timestamp,
        b: Timestamp,
    ) -> Result<bool, QueryError> {
        let Some(g) = self.grid_call(c) else {
            return Ok(false);
        };
        let sets = matchers_of(g.vs)?;
        let (ra, rb) = self.window(&g.vs.at, &g.vs.offset, a, b);
        let late = AtomicBool::new(false);
        let reduce = self.grid_fn(&g, &late);
        let mut read = 0usize;
        let mut all: Vec<(Arc<Labels>, Grid)> = Vec::new();
        for set in &sets {
            let budget = self
                .opts
                .max_samples
                .saturating_sub(self.loaded_samples + read);
            let Some(r) = self
                .q
                .select_reduce(set, ra - g.range, rb, budget, &reduce)?
            else {
                return Err(QueryError::TooManySamples(self.opts.max_samples));
            };
            read += r.samples;
            all.extend(r.series);
        }
        if sets.len() > 1 {
            // A series several sets select counts once.
            all.sort_by(|x, y| x.0.cmp(&y.0));
            all.dedup_by(|x, y| x.0 == y.0);
        }
        if late.load(Ordering::Relaxed) {
            return Err(QueryError::Timeout(self.opts.timeout));
        }
        if !reserve_cells(&mut self.computed_cells, all.len().saturating_mul(g.steps)) {
            return Ok(false);
        }
        self.loaded_samples += read;
        let series = all
            .into_iter()
            .map(|(labels, (values, present))| {
                let labels = if g.keep_name {
                    labels
                } else {
                    drop_name(&labels)
                };
                (labels, values, present)
            })
            .collect();
        self.insert_computed(e, series);
        Ok(true)
    }

    /// Range-vector results by call node, with whether their label sets
    /// are unique.
    fn insert_computed(&mut self, e: &Expr, series: Vec<(Arc<Labels>, Vec<f64>, Vec<u64>)>) {
        let mut seen: FastSet<&Labels> = FastSet::default();
        let unique = series.iter().all(|(l, _, _)| seen.insert(&**l));
        drop(seen);
        let computed = Computed {
            series,
            unique,
            members: None,
        };
        self.computed.insert(key_expr(e), computed);
    }

    /// Folds an aggregation without parameter over a function computed
    /// ahead, for every step at once: each input series is put in its group
    /// once, then its values are added to the group's cell of each step.
    fn compute_aggregate(&mut self, e: &Expr, ag: &AggregateExpr) {
        let Some(fold) = aggregate::Fold::of(&ag.op.to_string()) else {
            return;
        };
        let (Some(step), None) = (self.grid_step, &ag.param) else {
            return;
        };
        let input_key = key_expr(strip_parens(&ag.expr));
        let Some(input) = self.computed.get(&input_key) else {
            return;
        };
        let steps = ((self.end - self.start) / step + 1) as usize;
        let mut index: FastMap<Labels, usize> = FastMap::default();
        let mut groups: Vec<Arc<Labels>> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, (labels, _, _)) in input.series.iter().enumerate() {
            let gl = aggregate::group_labels(labels, ag.modifier.as_ref());
            let g = *index.entry(gl).or_insert_with_key(|gl| {
                groups.push(Arc::new(gl.clone()));
                members.push(Vec::new());
                groups.len() - 1
            });
            members[g].push(i);
        }
        let cells = groups.len().saturating_mul(steps).saturating_mul(3);
        if !reserve_cells(&mut self.computed_cells, cells) {
            return;
        }
        let mut series = Vec::with_capacity(groups.len());
        for (labels, of) in groups.into_iter().zip(&members) {
            let mut acc = vec![aggregate::Acc::default(); steps];
            let mut present = vec![0u64; steps.div_ceil(64)];
            for &i in of {
                let (_, values, bits) = &input.series[i];
                for (w, (&word, seen)) in bits.iter().zip(present.iter_mut()).enumerate() {
                    *seen |= word;
                    let mut word = word;
                    while word != 0 {
                        let k = w * 64 + word.trailing_zeros() as usize;
                        acc[k].add(fold, values[k]);
                        word &= word - 1;
                    }
                }
            }
            let values = acc.iter().map(|a| a.value(fold)).collect();
            series.push((labels, values, present));
        }
        let computed = Computed {
            series,
            unique: true,
            members: Some((input_key, members)),
        };
        self.computed.insert(key_expr(e), computed);
    }

    /// The result of node `e` at step time `t`, if it was computed ahead.
    fn computed_at(&self, e: &Expr, t: Timestamp) -> Result<Option<Vec<VSample>>, QueryError> {
        let (Some(step), Some(comp)) = (self.grid_step, self.computed.get(&key_expr(e))) else {
            return Ok(None);
        };
        if t < self.start || t > self.end || (t - self.start) % step != 0 {
            return Ok(None);
        }
        let k = ((t - self.start) / step) as usize;
        let sample = |i: usize| {
            let (labels, values, _) = &comp.series[i];
            VSample {
                labels: labels.clone(),
                t,
                v: values[k],
            }
        };
        let present = (0..comp.series.len()).filter(|&i| has_bit(&comp.series[i].2, k));
        let out: Vec<VSample> = match &comp.members {
            None => present.map(sample).collect(),
            Some((input, members)) => {
                let input = &self.computed[input].series;
                let mut order: Vec<(usize, usize)> = present
                    .filter_map(|g| {
                        let first = members[g].iter().find(|&&i| has_bit(&input[i].2, k))?;
                        Some((*first, g))
                    })
                    .collect();
                order.sort_unstable();
                order.into_iter().map(|(_, g)| sample(g)).collect()
            }
        };
        if !comp.unique {
            check_unique(&out)?;
        }
        Ok(Some(out))
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(self.opts.timeout));
        }
        Ok(())
    }

    /// Evaluates `e` at time `t`.
    pub fn eval(&mut self, e: &Expr, t: Timestamp) -> Result<Value, QueryError> {
        if !self.computed.is_empty() {
            if let Some(v) = self.computed_at(e, t)? {
                return Ok(Value::Vector(v));
            }
        }
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
                        .map(|s| VSample { labels: self.drop_name(&s.labels), t: s.t, v: -s.v })
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
        if labels.get(METRIC_NAME).is_none() {
            return labels.clone();
        }
        self.derived(0, labels, None, |l| l.without(METRIC_NAME))
    }

    /// The labels node `node` derives from `a` (and `b`), computed once per
    /// pair of label sets and query.
    pub fn derived(
        &mut self,
        node: usize,
        a: &Arc<Labels>,
        b: Option<&Arc<Labels>>,
        make: impl FnOnce(&Labels) -> Labels,
    ) -> Arc<Labels> {
        let key = (
            node,
            Arc::as_ptr(a) as usize,
            b.map_or(0, |b| Arc::as_ptr(b) as usize),
        );
        if let Some(d) = self.derived.get(&key) {
            return d.labels.clone();
        }
        let labels = Arc::new(make(a));
        let inputs = (a.clone(), b.cloned());
        self.derived.insert(
            key,
            Derived {
                _inputs: inputs,
                labels: labels.clone(),
            },
        );
        labels
    }

    /// The groups of aggregation node `node`.
    pub fn group_table(&mut self, node: usize) -> &mut GroupTable {
        self.groups.entry(node).or_default()
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
        let key = sq as *const SubqueryExpr as usize;
        let mut memo = self.subquery_steps.remove(&key).unwrap_or_default();
        // Steps before this window are not asked for again while time
        // moves forward.
        memo = memo.split_off(&first);
        let result = self.subquery_steps_in(sq, first, rt, step, &mut memo);
        self.subquery_steps.insert(key, memo);
        result
    }

    fn subquery_steps_in(
        &mut self,
        sq: &SubqueryExpr,
        first: Timestamp,
        rt: Timestamp,
        step: i64,
        memo: &mut std::collections::BTreeMap<Timestamp, Value>,
    ) -> Result<Vec<Series>, QueryError> {
        let mut acc: HashMap<Arc<Labels>, Vec<Sample>> = HashMap::new();
        let mut order: Vec<Arc<Labels>> = Vec::new();
        let mut ts = first;
        let mut points = 0usize;
        while ts <= rt {
            self.check_deadline()?;
            let value = match memo.get(&ts) {
                Some(v) => v.clone(),
                None => {
                    let v = self.eval(&sq.expr, ts)?;
                    let size = match &v {
                        Value::Vector(v) => v.len(),
                        _ => 1,
                    };
                    if self.memo_samples + size <= MEMO_SAMPLES {
                        self.memo_samples += size;
                        memo.insert(ts, v.clone());
                    }
                    v
                }
            };
            match value {
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

pub(super) fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        e => e,
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
    let mut seen: FastSet<&Labels> = FastSet::default();
    seen.reserve(v.len());
    for s in v {
        if !seen.insert(&*s.labels) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// A window function of one series at every step: values, and a bit per
/// step that has one. `rt(k)` is the window end of step `k`. `rising` is
/// the kernel's shortcut for windows where no sample is below the one
/// before it (no counter reset to look for).
fn on_grid(
    samples: &[Sample],
    steps: usize,
    rt: impl Fn(usize) -> Timestamp,
    range: i64,
    kernel: functions::Kernel,
    rising: Option<functions::Kernel>,
) -> (Vec<f64>, Vec<u64>) {
    // drops[i]: samples up to i that are below the one before them, when
    // the kernel has a shortcut (in the same pass as the stale check).
    let mut drops: Vec<u32> = Vec::with_capacity(if rising.is_some() { samples.len() } else { 0 });
    let has_stale = if rising.is_some() {
        let (mut n, mut prev, mut stale) = (0u32, f64::NAN, false);
        for s in samples {
            stale |= is_stale(s.v);
            n += u32::from(s.v < prev);
            prev = s.v;
            drops.push(n);
        }
        stale
    } else {
        samples.iter().any(|s| is_stale(s.v))
    };
    let rising = rising.filter(|_| !has_stale);
    let mut clean: Vec<Sample> = Vec::new();
    let mut values = vec![0.0; steps];
    let mut present = vec![0u64; steps.div_ceil(64)];
    let (mut lo, mut hi) = (0, 0);
    for (k, value) in values.iter_mut().enumerate() {
        let rt = rt(k);
        lo = seek(samples, lo, |s| s.t < rt - range);
        hi = seek(samples, hi.max(lo), |s| s.t <= rt);
        let mut window = &samples[lo..hi];
        if has_stale {
            clean.clear();
            clean.extend(window.iter().filter(|s| !is_stale(s.v)));
            window = &clean;
        }
        if window.is_empty() {
            continue;
        }
        let kernel = match rising {
            Some(r) if drops[hi - 1] == drops[lo] => r,
            _ => kernel,
        };
        if let Some(v) = kernel(window, (rt - range, rt, range)) {
            *value = v;
            present[k / 64] |= 1 << (k % 64);
        }
    }
    (values, present)
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
