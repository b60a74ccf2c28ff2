//! The PromQL engine over the store's [`Querier`], on `promql-parser`'s AST.
//!
//! [`instant`] and [`range`] parse a query, load every selector's data once
//! (`eval::Evaluator::prepare`), then evaluate the tree at each step
//! (`eval`), with the operators in `binary`, the aggregations in
//! `aggregate` and the function table in `functions`. Semantics are
//! Prometheus 2.x's; a differential test suite (`tests/promql_diff.rs`)
//! runs the same queries on a real Prometheus. Time is always an argument:
//! nothing here reads the clock, except the query deadline.

mod aggregate;
mod binary;
mod eval;
mod functions;
pub mod nesting;
pub mod script;
mod value;

use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};

pub use value::{Series, VSample, Value};

use crate::model::{Labels, MatchOp, Matcher, Sample, Timestamp, METRIC_NAME};
use crate::tsdb::{Querier, StorageError};

/// How far back an instant selector looks for the latest sample.
pub const LOOKBACK_MS: i64 = 5 * 60_000;
/// Most points one series may have in a range query result.
pub const MAX_POINTS: i64 = 11_000;

/// Limits and defaults of one query.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub lookback_ms: i64,
    /// Most samples loaded into memory for one query.
    pub max_samples: usize,
    pub timeout: Duration,
    /// Step of subqueries that give none (Prometheus: the global
    /// evaluation interval).
    pub default_subquery_step_ms: i64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            lookback_ms: LOOKBACK_MS,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse (message from the parser, with position).
    #[error("{0}")]
    Parse(String),
    /// Well-formed PromQL this engine does not evaluate.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Bad parameters or argument types.
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (Prometheus' `execution` errors).
    #[error("{0}")]
    Execution(String),
    #[error(
        "query processing would load too many samples into memory in query execution (limit {0})"
    )]
    TooManySamples(usize),
    #[error("query timed out in expression evaluation (timeout {0:?})")]
    Timeout(Duration),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Parses a selector (for `match[]` parameters): a vector selector, each
/// `or` alternative as its own matcher list.
pub fn parse_selector(text: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match parse(text)? {
        Expr::VectorSelector(vs) => matchers_of(&vs),
        _ => Err(QueryError::BadData(format!(
            "{text:?} is not a series selector like name{{label=\"value\"}}"
        ))),
    }
}

fn convert(m: &promql_parser::label::Matcher) -> Result<Matcher, QueryError> {
    let op = match m.op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::Re,
        PMatchOp::NotRe(_) => MatchOp::NotRe,
    };
    Matcher::new(op, &m.name, &m.value).map_err(|e| QueryError::Parse(e.to_string()))
}

/// The matcher sets of a selector (one per `or` alternative), with the
/// metric name as a matcher.
fn matchers_of(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let base: Vec<Matcher> = vs
        .matchers
        .matchers
        .iter()
        .map(convert)
        .collect::<Result<_, _>>()?;
    let mut sets = if vs.matchers.or_matchers.is_empty() {
        vec![base]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|alt| alt.iter().map(convert).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(name) = &vs.name {
        for set in &mut sets {
            if !set.iter().any(|m| m.name == METRIC_NAME) {
                set.push(Matcher::equal(METRIC_NAME, name));
            }
        }
    }
    if sets.iter().any(|s| s.iter().all(|m| m.matches_empty())) {
        return Err(QueryError::Parse(
            "vector selector must contain at least one non-empty matcher".into(),
        ));
    }
    Ok(sets)
}

/// Parses a query, refusing one nested deeper than
/// [`nesting::MAX_DEPTH`] before anything recurses over it.
pub fn parse(text: &str) -> Result<Expr, QueryError> {
    let too_deep = |levels: usize| {
        QueryError::Parse(format!(
            "query is nested too deeply: {levels} levels, at most {}",
            nesting::MAX_DEPTH
        ))
    };
    let levels = nesting::scan(text);
    if levels > nesting::MAX_DEPTH {
        return Err(too_deep(levels));
    }
    // Prometheus 2.x's `holt_winters`, which the parser knows only by its
    // 3.x name `double_exponential_smoothing`.
    static EXTRA: std::sync::Once = std::sync::Once::new();
    EXTRA.call_once(|| {
        use parser::value::ValueType as T;
        let f = parser::Function::new(
            "holt_winters",
            vec![T::Matrix, T::Scalar, T::Scalar],
            0,
            T::Vector,
            false,
        );
        if let Err(e) = parser::register_extra_functions(vec![f]) {
            tracing::warn!(message = "Could not register holt_winters", error = %e);
        }
    });
    let expr = parser::parse(text).map_err(QueryError::Parse)?;
    match nesting::depth(&expr) {
        levels if levels > nesting::MAX_DEPTH => Err(too_deep(levels)),
        _ => Ok(expr),
    }
}

/// Evaluates a query at one time.
pub fn instant(
    q: &dyn Querier,
    text: &str,
    t: Timestamp,
    opts: &QueryOptions,
) -> Result<Value, QueryError> {
    let expr = parse(text)?;
    let mut ev = eval::Evaluator::new(q, t, t, opts);
    ev.prepare(&expr, t, t)?;
    let v = ev.eval(&expr, t)?;
    if let Value::Vector(ref vec) = v {
        eval::check_unique(vec)?;
    }
    Ok(v)
}

/// An instant query whose result is an instant vector, as `(labels,
/// value)` pairs; a scalar becomes one sample without labels, as in
/// Prometheus' rules. Other results are an error naming their type.
pub fn instant_vector(
    q: &dyn Querier,
    text: &str,
    t: Timestamp,
    opts: &QueryOptions,
) -> Result<Vec<(Labels, f64)>, String> {
    match instant(q, text, t, opts).map_err(|e| e.to_string())? {
        Value::Vector(v) => Ok(v.into_iter().map(|s| ((*s.labels).clone(), s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
        other => Err(format!(
            "rule result is a {}, not a vector or scalar",
            other.type_name()
        )),
    }
}

/// Evaluates a query at every step from `start` to `end`; the result is a
/// matrix sorted by labels.
pub fn range(
    q: &dyn Querier,
    text: &str,
    start: Timestamp,
    end: Timestamp,
    step: i64,
    opts: &QueryOptions,
) -> Result<Vec<Series>, QueryError> {
    if end < start {
        return Err(QueryError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    if step <= 0 {
        return Err(QueryError::BadData("zero or negative query resolution step widths are not accepted. Try a positive integer".into()));
    }
    if (end - start) / step + 1 > MAX_POINTS {
        return Err(QueryError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let expr = parse(text)?;
    match expr.value_type() {
        parser::value::ValueType::Vector | parser::value::ValueType::Scalar => {}
        other => {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                match other {
                    parser::value::ValueType::Matrix => "range vector",
                    _ => "string",
                }
            )))
        }
    }
    let mut ev = eval::Evaluator::new(q, start, end, opts);
    ev.set_grid(step);
    ev.prepare(&expr, start, end)?;
    // Points per result series; found by the labels' address first (stable
    // across steps for cached label sets), by content otherwise.
    let mut acc: Vec<Series> = Vec::new();
    let mut by_labels: eval::FastMap<Arc<Labels>, usize> = Default::default();
    let mut by_ptr: eval::FastMap<usize, (Arc<Labels>, usize)> = Default::default();
    let mut slot = |labels: Arc<Labels>, acc: &mut Vec<Series>| -> usize {
        let ptr = Arc::as_ptr(&labels) as usize;
        if let Some((_, i)) = by_ptr.get(&ptr) {
            return *i;
        }
        let i = match by_labels.get(&labels) {
            Some(&i) => i,
            None => {
                acc.push(Series {
                    labels: labels.clone(),
                    samples: Vec::new(),
                });
                by_labels.insert(labels.clone(), acc.len() - 1);
                acc.len() - 1
            }
        };
        by_ptr.insert(ptr, (labels, i));
        i
    };
    let mut points = 0usize;
    let mut t = start;
    while t <= end {
        ev.check_deadline()?;
        match ev.eval(&expr, t)? {
            Value::Vector(v) => {
                eval::check_unique(&v)?;
                points += v.len();
                for s in v {
                    let i = slot(s.labels, &mut acc);
                    acc[i].samples.push(Sample { t, v: s.v });
                }
            }
            Value::Scalar { v, .. } => {
                points += 1;
                let i = slot(Arc::new(Labels::default()), &mut acc);
                acc[i].samples.push(Sample { t, v });
            }
            other => {
                return Err(QueryError::BadData(format!(
                    "range query must evaluate to a vector or scalar, got {}",
                    other.type_name()
                )))
            }
        }
        if points > opts.max_samples {
            return Err(QueryError::TooManySamples(opts.max_samples));
        }
        t += step;
    }
    acc.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(acc)
}
