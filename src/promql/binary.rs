//! Binary operators: arithmetic, comparison (filtering or `bool`), set
//! operators, and vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`) with Prometheus' error cases.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::label::Labels as ModLabels;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{drop_name, Evaluator};
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
        (Value::Vector(l), Value::Scalar { v: r, .. }) => {
            Ok(Value::Vector(vector_scalar(op, l, r, false, return_bool)))
        }
        (Value::Scalar { v: l, .. }, Value::Vector(r)) => {
            Ok(Value::Vector(vector_scalar(op, r, l, true, return_bool)))
        }
        (Value::Vector(l), Value::Vector(r)) => {
            let m = b.modifier.as_ref();
            let card = m.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
            let matching = m.and_then(|m| m.matching.as_ref());
            match op {
                Op::And => Ok(Value::Vector(and_unless(l, r, matching, true))),
                Op::Unless => Ok(Value::Vector(and_unless(l, r, matching, false))),
                Op::Or => Ok(Value::Vector(or(l, r, matching))),
                _ => vector_vector(op, l, r, card, matching, return_bool).map(Value::Vector),
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
        let labels = if !op.is_comparison() || return_bool {
            drop_name(&e.labels)
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

/// The key a sample is matched on.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .map(|n| (n.clone(), l.get(n).unwrap_or("").to_string()))
            .collect(),
        Some(LabelModifier::Exclude(ign)) => l
            .iter()
            .filter(|(n, _)| *n != METRIC_NAME && !ign.labels.iter().any(|x| x == n))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        None => l
            .iter()
            .filter(|(n, _)| *n != METRIC_NAME)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

fn and_unless(
    l: Vec<VSample>,
    r: Vec<VSample>,
    matching: Option<&LabelModifier>,
    and: bool,
) -> Vec<VSample> {
    let keys: HashSet<Vec<(String, String)>> =
        r.iter().map(|s| signature(&s.labels, matching)).collect();
    l.into_iter()
        .filter(|s| keys.contains(&signature(&s.labels, matching)) == and)
        .collect()
}

fn or(l: Vec<VSample>, r: Vec<VSample>, matching: Option<&LabelModifier>) -> Vec<VSample> {
    let keys: HashSet<Vec<(String, String)>> =
        l.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out = l;
    out.extend(
        r.into_iter()
            .filter(|s| !keys.contains(&signature(&s.labels, matching))),
    );
    out
}

fn describe(sig: &[(String, String)]) -> String {
    let inner: Vec<String> = sig.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn vector_vector(
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
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::with_capacity(one.len());
    for (i, s) in one.iter().enumerate() {
        let sig = signature(&s.labels, matching);
        if index.insert(sig.clone(), i).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                describe(&sig),
                one[index[&sig]].labels,
                s.labels
            )));
        }
    }
    let one_to_one = include.is_none();
    let mut matched_once: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut seen_result: HashSet<Arc<Labels>> = HashSet::new();
    for (i, m) in many.iter().enumerate() {
        let sig = signature(&m.labels, matching);
        let Some(&j) = index.get(&sig) else { continue };
        let o = &one[j];
        if one_to_one && matched_once.insert(j, i).is_some() {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        let (l, r) = if swapped { (o.v, m.v) } else { (m.v, o.v) };
        let (value, keep) = apply(op, l, r);
        let Some(value) = outcome(op, value, keep, return_bool, value) else {
            continue;
        };
        let labels = result_labels(&m.labels, &o.labels, op, return_bool, matching, include);
        if !seen_result.insert(labels.clone()) {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(VSample {
            labels,
            t: m.t,
            v: value,
        });
    }
    Ok(out)
}

fn result_labels(
    many: &Arc<Labels>,
    one: &Arc<Labels>,
    op: Op,
    return_bool: bool,
    matching: Option<&LabelModifier>,
    include: Option<&ModLabels>,
) -> Arc<Labels> {
    let drop = !op.is_comparison() || return_bool;
    let mut l: Labels = (**many).clone();
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
    Arc::new(l)
}
