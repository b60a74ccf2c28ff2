//! Binary operators: arithmetic, comparison (filtering or `bool`), set
//! operators, and vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`) with Prometheus' error cases.

use promql_parser::label::Labels as ModLabels;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{Evaluator, FastMap, FastSet};
use super::value::{VSample, Value};
use super::QueryError;
use crate::model::{Labels, Timestamp, METRIC_NAME};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            _ => return None,
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// Whether the result loses the metric name: arithmetic and `bool`
    /// comparisons do; `atan2` keeps it (Prometheus 2.42; later versions
    /// drop it too), filters keep it.
    fn drops_name(self, return_bool: bool) -> bool {
        match self {
            Op::Atan2 => false,
            _ if self.is_comparison() => return_bool,
            _ => true,
        }
    }
}

/// Applies an arithmetic or comparison operator. For comparisons the
/// result is (lhs, keep?).
fn apply(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (l, true),
    }
}

/// What a result element becomes: arithmetic keeps its value; a comparison
/// gives 1/0 with `bool`, else keeps `filter_value` or drops the element
/// (`None`).
fn outcome(op: Op, value: f64, keep: bool, return_bool: bool, filter_value: f64) -> Option<f64> {
    if !op.is_comparison() {
        Some(value)
    } else if return_bool {
        Some(if keep { 1.0 } else { 0.0 })
    } else {
        keep.then_some(filter_value)
    }
}

pub(super) fn eval(ev: &mut Evaluator, b: &BinaryExpr, t: Timestamp) -> Result<Value, QueryError> {
    let op_text = b.op.to_string();
    let op = Op::parse(&op_text)
        .ok_or_else(|| QueryError::Unsupported(format!("binary operator {op_text}")))?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar { v: l, .. }, Value::Scalar { v: r, .. }) => {
            let (v, keep) = apply(op, l, r);
            let v = if op.is_comparison() {
                if keep {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            };
            Ok(Value::Scalar { t, v })
        }
        (Value::Vector(l), Value::Scalar { v: r, .. }) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            l,
            r,
            false,
            return_bool,
        ))),
        (Value::Scalar { v: l, .. }, Value::Vector(r)) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            r,
            l,
            true,
            return_bool,
        ))),
        (Value::Vector(l), Value::Vector(r)) => {
            let m = b.modifier.as_ref();
            let card = m.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
            let matching = m.and_then(|m| m.matching.as_ref());
            match op {
                Op::And => Ok(Value::Vector(and_unless(l, r, matching, true))),
                Op::Unless => Ok(Value::Vector(and_unless(l, r, matching, false))),
                Op::Or => Ok(Value::Vector(or(l, r, matching))),
                _ => {
                    let node = b as *const BinaryExpr as usize;
                    vector_vector(ev, node, op, l, r, card, matching, return_bool)
                        .map(Value::Vector)
                }
            }
        }
        (l, r) => Err(QueryError::BadData(format!(
            "binary operator {op_text} is not defined between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    ev: &mut Evaluator,
    op: Op,
    v: Vec<VSample>,
    s: f64,
    swapped: bool,
    return_bool: bool,
) -> Vec<VSample> {
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let (l, r) = if swapped { (s, e.v) } else { (e.v, s) };
        let (value, keep) = apply(op, l, r);
        // A filter keeps the vector's own value, even with the scalar on the left.
        let Some(value) = outcome(op, value, keep, return_bool, e.v) else {
            continue;
        };
        let labels = if op.drops_name(return_bool) {
            ev.drop_name(&e.labels)
        } else {
            e.labels
        };
        out.push(VSample {
            labels,
            t: e.t,
            v: value,
        });
    }
    out
}

/// The key a sample is matched on, borrowed from its labels.
type Signature<'a> = Vec<(&'a str, &'a str)>;

fn signature<'a>(l: &'a Labels, matching: Option<&'a LabelModifier>) -> Signature<'a> {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .map(|n| (n.as_str(), l.get(n).unwrap_or("")))
            .collect(),
        Some(LabelModifier::Exclude(ign)) => l
            .iter()
            .filter(|(n, _)| *n != METRIC_NAME && !ign.labels.iter().any(|x| x == n))
            .collect(),
        None => l.iter().filter(|(n, _)| *n != METRIC_NAME).collect(),
    }
}

fn and_unless(
    l: Vec<VSample>,
    r: Vec<VSample>,
    matching: Option<&LabelModifier>,
    and: bool,
) -> Vec<VSample> {
    let keys: FastSet<Signature> = r.iter().map(|s| signature(&s.labels, matching)).collect();
    let keep: Vec<bool> = l
        .iter()
        .map(|s| keys.contains(&signature(&s.labels, matching)) == and)
        .collect();
    l.into_iter()
        .zip(keep)
        .filter_map(|(s, keep)| keep.then_some(s))
        .collect()
}

fn or(l: Vec<VSample>, r: Vec<VSample>, matching: Option<&LabelModifier>) -> Vec<VSample> {
    let keys: FastSet<Signature> = l.iter().map(|s| signature(&s.labels, matching)).collect();
    let add: Vec<bool> = r
        .iter()
        .map(|s| !keys.contains(&signature(&s.labels, matching)))
        .collect();
    drop(keys);
    let mut out = l;
    out.extend(
        r.into_iter()
            .zip(add)
            .filter_map(|(s, add)| add.then_some(s)),
    );
    out
}

fn describe(sig: &[(&str, &str)]) -> String {
    let inner: Vec<String> = sig.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ev: &mut Evaluator,
    node: usize,
    op: Op,
    lhs: Vec<VSample>,
    rhs: Vec<VSample>,
    card: &VectorMatchCardinality,
    matching: Option<&LabelModifier>,
    return_bool: bool,
) -> Result<Vec<VSample>, QueryError> {
    // The "one" side is indexed by signature; group_right swaps the roles.
    let (many, one, swapped, include) = match card {
        VectorMatchCardinality::OneToMany(inc) => (rhs, lhs, true, Some(inc)),
        VectorMatchCardinality::ManyToOne(inc) => (lhs, rhs, false, Some(inc)),
        _ => (lhs, rhs, false, None),
    };
    let mut index: FastMap<Signature, usize> = FastMap::default();
    index.reserve(one.len());
    for (i, s) in one.iter().enumerate() {
        let sig = signature(&s.labels, matching);
        if let Some(&first) = index.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                describe(&sig),
                one[first].labels,
                s.labels
            )));
        }
        index.insert(sig, i);
    }
    let one_to_one = include.is_none();
    let mut matched = vec![false; one.len()];
    // (many, one) pairs that give a result, then the results.
    let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
    for (i, m) in many.iter().enumerate() {
        let Some(&j) = index.get(&signature(&m.labels, matching)) else {
            continue;
        };
        if one_to_one && std::mem::replace(&mut matched[j], true) {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        let (l, r) = if swapped {
            (one[j].v, m.v)
        } else {
            (m.v, one[j].v)
        };
        let (value, keep) = apply(op, l, r);
        if let Some(value) = outcome(op, value, keep, return_bool, value) {
            pairs.push((i, j, value));
        }
    }
    drop(index);
    let mut out = Vec::with_capacity(pairs.len());
    for (i, j, value) in pairs {
        let (m, o) = (&many[i], &one[j]);
        let labels = ev.derived(node, &m.labels, Some(&o.labels), |many| {
            result_labels(many, &o.labels, op, return_bool, matching, include)
        });
        out.push(VSample {
            labels,
            t: m.t,
            v: value,
        });
    }
    let mut seen: FastSet<&Labels> = FastSet::default();
    if !out.iter().all(|s| seen.insert(&*s.labels)) {
        return Err(QueryError::Execution(
            "multiple matches for labels: grouping labels must ensure unique matches".into(),
        ));
    }
    drop(seen);
    Ok(out)
}

fn result_labels(
    many: &Labels,
    one: &Labels,
    op: Op,
    return_bool: bool,
    matching: Option<&LabelModifier>,
    include: Option<&ModLabels>,
) -> Labels {
    let drop = op.drops_name(return_bool);
    let mut l: Labels = many.clone();
    if drop {
        l = l.without(METRIC_NAME);
    }
    match include {
        None => match matching {
            Some(LabelModifier::Include(on)) => {
                let keep: Vec<(String, String)> = l
                    .iter()
                    .filter(|(n, _)| on.labels.iter().any(|x| x == n))
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                l = Labels::new(keep).unwrap_or_default();
            }
            Some(LabelModifier::Exclude(ign)) => {
                for n in &ign.labels {
                    l = l.without(n);
                }
            }
            None => {}
        },
        Some(inc) => {
            for n in &inc.labels {
                l = l.with(n, one.get(n).unwrap_or(""));
            }
        }
    }
    l
}
