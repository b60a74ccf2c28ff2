//! Query evaluation over the store's [`Querier`]. This version answers
//! selectors: instant vector selectors (`name{label=~"..."}`, with `offset`
//! and `@`) at one time or over a range of steps, and range vector selectors
//! (`name[5m]`) at one time, with Prometheus 2.x semantics: a 5-minute
//! lookback window closed at both ends, stale markers ending a series, and
//! the 11,000-points-per-series limit. Time is always an argument; nothing
//! here reads the clock.

use std::sync::Arc;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::model::{is_stale, Labels, MatchOp, Matcher, Sample, Timestamp, METRIC_NAME};
use crate::tsdb::{Querier, StorageError};

/// How far back an instant selector looks for the latest sample.
pub const LOOKBACK_MS: i64 = 5 * 60_000;
/// Most points one series may have in a range query result.
pub const MAX_POINTS: i64 = 11_000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse (message from the parser, with position).
    #[error("{0}")]
    Parse(String),
    /// Well-formed PromQL this version cannot evaluate.
    #[error("{0}")]
    Unsupported(String),
    /// Bad parameters (step, range).
    #[error("{0}")]
    BadData(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Series with their samples, sorted by labels.
pub type Matrix = Vec<(Arc<Labels>, Vec<Sample>)>;

/// A query result.
#[derive(Debug, Clone)]
pub enum Value {
    Vector(Vec<(Arc<Labels>, Sample)>),
    Matrix(Matrix),
}

/// Parses a selector (for `match[]` parameters): a vector selector, each
/// `or` alternative as its own matcher list.
pub fn parse_selector(text: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match parser::parse(text).map_err(QueryError::Parse)? {
        Expr::VectorSelector(vs) => matcher_sets(&vs),
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

fn matcher_sets(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
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

fn select(
    q: &dyn Querier,
    sets: &[Vec<Matcher>],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Matrix, QueryError> {
    let mut out: Matrix = Vec::new();
    for set in sets {
        for s in q.select(set, mint, maxt)? {
            if !out.iter().any(|(l, _)| *l == s.labels) {
                out.push((s.labels, s.samples));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// The time a selector is evaluated at for query time `t` in `[start, end]`.
fn ref_time(vs: &VectorSelector, t: Timestamp, start: Timestamp, end: Timestamp) -> Timestamp {
    let base = match &vs.at {
        Some(AtModifier::Start) => start,
        Some(AtModifier::End) => end,
        Some(AtModifier::At(st)) => match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        },
        None => t,
    };
    base - offset_ms(&vs.offset)
}

/// The newest non-stale sample in `[t - lookback, t]`, if the newest sample
/// there is not a stale marker.
fn latest(samples: &[Sample], t: Timestamp) -> Option<Sample> {
    let end = samples.partition_point(|s| s.t <= t);
    let s = *samples[..end].last()?;
    (s.t >= t - LOOKBACK_MS && !is_stale(s.v)).then_some(s)
}

fn parse_expr(text: &str) -> Result<Expr, QueryError> {
    let expr = parser::parse(text).map_err(QueryError::Parse)?;
    Ok(match expr {
        Expr::Paren(p) => *p.expr,
        e => e,
    })
}

fn unsupported() -> QueryError {
    QueryError::Unsupported(
        "this version of mlmon evaluates selectors only (name{label=\"value\"}, name[5m], with offset and @)".into(),
    )
}

/// Evaluates a query at one time.
pub fn instant(q: &dyn Querier, text: &str, t: Timestamp) -> Result<Value, QueryError> {
    match parse_expr(text)? {
        Expr::VectorSelector(vs) => {
            let rt = ref_time(&vs, t, t, t);
            let series = select(q, &matcher_sets(&vs)?, rt - LOOKBACK_MS, rt)?;
            Ok(Value::Vector(
                series
                    .into_iter()
                    .filter_map(|(l, s)| latest(&s, rt).map(|x| (l, Sample { t, v: x.v })))
                    .collect(),
            ))
        }
        Expr::MatrixSelector(ms) => {
            let rt = ref_time(&ms.vs, t, t, t);
            let range = ms.range.as_millis() as i64;
            let series = select(q, &matcher_sets(&ms.vs)?, rt - range, rt)?;
            Ok(Value::Matrix(
                series
                    .into_iter()
                    .map(|(l, s)| {
                        (
                            l,
                            s.into_iter().filter(|x| !is_stale(x.v)).collect::<Vec<_>>(),
                        )
                    })
                    .filter(|(_, s)| !s.is_empty())
                    .collect(),
            ))
        }
        _ => Err(unsupported()),
    }
}

/// Evaluates a query at every step from `start` to `end`.
pub fn range(
    q: &dyn Querier,
    text: &str,
    start: Timestamp,
    end: Timestamp,
    step: i64,
) -> Result<Value, QueryError> {
    if end < start {
        return Err(QueryError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    if step <= 0 {
        return Err(QueryError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end - start) / step + 1 > MAX_POINTS {
        return Err(QueryError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let vs = match parse_expr(text)? {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(_) => {
            return Err(QueryError::BadData(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
            ))
        }
        _ => return Err(unsupported()),
    };
    let first = ref_time(&vs, start, start, end);
    let last = ref_time(&vs, end, start, end);
    let (lo, hi) = (first.min(last), first.max(last));
    let series = select(q, &matcher_sets(&vs)?, lo - LOOKBACK_MS, hi)?;
    let mut out = Vec::new();
    for (labels, samples) in series {
        let mut points = Vec::new();
        let mut t = start;
        while t <= end {
            if let Some(s) = latest(&samples, ref_time(&vs, t, start, end)) {
                points.push(Sample { t, v: s.v });
            }
            t += step;
        }
        if !points.is_empty() {
            out.push((labels, points));
        }
    }
    Ok(Value::Matrix(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_honours_lookback_and_staleness() {
        let s = [
            Sample { t: 0, v: 1.0 },
            Sample { t: 10_000, v: 2.0 },
            Sample {
                t: 20_000,
                v: crate::model::stale_nan(),
            },
        ];
        assert_eq!(latest(&s, 15_000).unwrap().v, 2.0);
        assert!(latest(&s, 25_000).is_none());
        assert_eq!(latest(&s[..1], LOOKBACK_MS).unwrap().v, 1.0);
        assert!(latest(&s[..1], LOOKBACK_MS + 1).is_none());
    }

    #[test]
    fn selectors_parse_into_matcher_sets() {
        let sets = parse_selector("up{job=~\"a|b\"}").unwrap();
        assert_eq!(sets.len(), 1);
        assert!(sets[0]
            .iter()
            .any(|m| m.name == "__name__" && m.value == "up"));
        assert!(parse_selector("{job=\"\"}").is_err());
        assert!(parse_selector("sum(up)").is_err());
        assert!(parse_selector("up{").is_err());
    }
}
