//! Aggregation operators with `by`/`without`: sum, avg, min, max, count,
//! group, stddev, stdvar, topk, bottomk, quantile, count_values. Arithmetic
//! follows Prometheus 2.x (incremental mean, Welford variance) so results
//! agree to the last bits.

use std::sync::Arc;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::Evaluator;
use super::functions::quantile;
use super::value::{VSample, Value};
use super::QueryError;
use crate::model::{is_valid_label_name, Labels, Timestamp, METRIC_NAME};

/// The labels of the group a sample belongs to.
pub(super) fn group_labels(l: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => {
            let pairs: Vec<(&str, &str)> = l
                .iter()
                .filter(|(n, _)| by.labels.iter().any(|b| b == n))
                .collect();
            Labels::new(pairs).unwrap_or_default()
        }
        Some(LabelModifier::Exclude(without)) => {
            let pairs: Vec<(&str, &str)> = l
                .iter()
                .filter(|(n, _)| *n != METRIC_NAME && !without.labels.iter().any(|b| b == n))
                .collect();
            Labels::new(pairs).unwrap_or_default()
        }
        None => Labels::default(),
    }
}

struct Group {
    labels: Arc<Labels>,
    members: Vec<VSample>,
}

pub(super) fn eval(
    ev: &mut Evaluator,
    a: &AggregateExpr,
    t: Timestamp,
) -> Result<Value, QueryError> {
    let op = a.op.to_string();
    let param = match &a.param {
        Some(p) => Some(ev.eval(p, t)?),
        None => None,
    };
    let input = ev.vector(&a.expr, t)?;
    let modifier = a.modifier.as_ref();
    // Groups in order of first appearance.
    let mut groups: Vec<Group> = Vec::new();
    let count_values_label = if op == "count_values" {
        match &param {
            Some(Value::String { s, .. }) if is_valid_label_name(s) => Some(s.clone()),
            Some(Value::String { s, .. }) => {
                return Err(QueryError::Execution(format!("invalid label name {s:?}")))
            }
            _ => {
                return Err(QueryError::BadData(
                    "count_values needs a string parameter".into(),
                ))
            }
        }
    } else {
        None
    };
    let node = a as *const AggregateExpr as usize;
    match &count_values_label {
        Some(label) => {
            // The group depends on the value: found by content each step.
            let mut index: super::eval::FastMap<Labels, usize> = Default::default();
            for s in input {
                let text = crate::model::special_float(s.v)
                    .map_or_else(|| format!("{}", s.v), str::to_string);
                let gl = group_labels(&s.labels, modifier).with(label, &text);
                let i = *index.entry(gl).or_insert_with_key(|gl| {
                    groups.push(Group {
                        labels: Arc::new(gl.clone()),
                        members: Vec::new(),
                    });
                    groups.len() - 1
                });
                groups[i].members.push(s);
            }
        }
        None => {
            let table = ev.group_table(node);
            // Position in `groups` by group number; u32::MAX: not yet seen.
            let mut slot: Vec<u32> = Vec::new();
            for s in input {
                let id = table.id(&s.labels, |l| group_labels(l, modifier));
                if id >= slot.len() {
                    slot.resize(id + 1, u32::MAX);
                }
                if slot[id] == u32::MAX {
                    slot[id] = groups.len() as u32;
                    groups.push(Group {
                        labels: table.labels(id).clone(),
                        members: Vec::new(),
                    });
                }
                groups[slot[id] as usize].members.push(s);
            }
        }
    }
    let scalar_param = |name: &str| -> Result<f64, QueryError> {
        match &param {
            Some(Value::Scalar { v, .. }) => Ok(*v),
            _ => Err(QueryError::BadData(format!(
                "{name} needs a scalar parameter"
            ))),
        }
    };
    let mut out = Vec::new();
    match op.as_str() {
        "topk" | "bottomk" => {
            let k = scalar_param(&op)?;
            if k.is_nan() {
                return Err(QueryError::Execution(format!(
                    "Parameter value is NaN for {op}"
                )));
            }
            let k = if k < 1.0 { 0 } else { k.min(1e9) as usize };
            let top = op == "topk";
            for g in groups {
                out.extend(
                    select_k(g.members, k, top)
                        .into_iter()
                        .map(|s| VSample { t, ..s }),
                );
            }
            return Ok(Value::Vector(out));
        }
        "quantile" => {
            let q = scalar_param("quantile")?;
            for g in groups {
                let mut vals: Vec<f64> = g.members.iter().map(|s| s.v).collect();
                out.push(VSample {
                    labels: g.labels,
                    t,
                    v: quantile(q, &mut vals),
                });
            }
            return Ok(Value::Vector(out));
        }
        _ => {}
    }
    let Some(fold) = Fold::of(&op) else {
        return Err(QueryError::Unsupported(format!("aggregation {op}")));
    };
    for g in groups {
        let mut acc = Acc::default();
        for s in &g.members {
            acc.add(fold, s.v);
        }
        out.push(VSample {
            labels: g.labels,
            t,
            v: acc.value(fold),
        });
    }
    Ok(Value::Vector(out))
}

/// The aggregations that fold a group's values one at a time.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Fold {
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
    Stddev,
    Stdvar,
}

impl Fold {
    pub fn of(op: &str) -> Option<Fold> {
        Some(match op {
            "sum" => Fold::Sum,
            "avg" => Fold::Avg,
            "count" | "count_values" => Fold::Count,
            "group" => Fold::Group,
            "min" => Fold::Min,
            "max" => Fold::Max,
            "stddev" => Fold::Stddev,
            "stdvar" => Fold::Stdvar,
            _ => return None,
        })
    }
}

/// A fold in progress, in Prometheus' arithmetic: sums in input order,
/// the incremental mean, Welford's variance.
#[derive(Clone, Copy, Default)]
pub(super) struct Acc {
    n: f64,
    a: f64,
    b: f64,
}

impl Acc {
    pub fn add(&mut self, f: Fold, x: f64) {
        self.n += 1.0;
        let first = self.n == 1.0;
        match f {
            Fold::Sum if first => self.a = x,
            Fold::Sum => self.a += x,
            Fold::Count | Fold::Group => {}
            Fold::Min => {
                if first || self.a.is_nan() || x < self.a {
                    self.a = x
                }
            }
            Fold::Max => {
                if first || self.a.is_nan() || x > self.a {
                    self.a = x
                }
            }
            Fold::Avg => {
                let (mean, n) = (self.a, self.n);
                if mean.is_infinite() {
                    if x.is_infinite() && (mean > 0.0) == (x > 0.0) {
                        return;
                    }
                    if !x.is_infinite() && !x.is_nan() {
                        return;
                    }
                }
                self.a += x / n - mean / n;
            }
            Fold::Stddev | Fold::Stdvar => {
                let delta = x - self.a;
                self.a += delta / self.n;
                self.b += delta * (x - self.a);
            }
        }
    }

    pub fn value(&self, f: Fold) -> f64 {
        match f {
            Fold::Sum | Fold::Min | Fold::Max | Fold::Avg => self.a,
            Fold::Count => self.n,
            Fold::Group => 1.0,
            Fold::Stdvar => self.b / self.n,
            Fold::Stddev => (self.b / self.n).sqrt(),
        }
    }
}

/// topk/bottomk as Prometheus computes them: a heap of size k (min-heap for
/// topk) that an element replaces only when strictly better, so ties keep
/// the same series Prometheus keeps; the result is sorted best first.
fn select_k(members: Vec<VSample>, k: usize, top: bool) -> Vec<VSample> {
    // "a is lower in the heap order": NaN first, then by value.
    let less = |a: &VSample, b: &VSample| -> bool {
        if a.v.is_nan() {
            return true;
        }
        if top {
            a.v < b.v
        } else {
            a.v > b.v
        }
    };
    let mut h: Vec<VSample> = Vec::with_capacity(k.min(members.len()));
    for s in members {
        if h.len() < k {
            h.push(s);
            heap_up(&mut h, less);
        } else if k > 0 {
            let better = if top { h[0].v < s.v } else { h[0].v > s.v };
            if better || (h[0].v.is_nan() && !s.v.is_nan()) {
                h[0] = s;
                if k > 1 {
                    heap_down(&mut h, 0, less);
                }
            }
        }
    }
    h.sort_by(|a, b| {
        if less(a, b) {
            std::cmp::Ordering::Greater
        } else if less(b, a) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Equal
        }
    });
    h
}

/// Go's `container/heap` up and down moves, for identical tie-breaking.
fn heap_up(h: &mut [VSample], less: impl Fn(&VSample, &VSample) -> bool) {
    let mut j = h.len() - 1;
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

fn heap_down(h: &mut [VSample], i0: usize, less: impl Fn(&VSample, &VSample) -> bool) {
    let n = h.len();
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(&h[j1 + 1], &h[j1]) {
            j = j1 + 1;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
}
