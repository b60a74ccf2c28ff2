//! PromQL test scripts in the format of Prometheus' own
//! `promql/testdata/*.test` files (its `promqltest` package), so cases are
//! data that Prometheus users can read and a real Prometheus can answer:
//!
//! ```text
//! # comment
//! load 5m
//!   http_requests{job="api", instance="0"}  0+10x10
//!   temperature                             1 _ 3 stale 5
//! eval instant at 50m sum by (job) (http_requests)
//!   {job="api"} 100
//! eval_ordered instant at 50m sort(http_requests)
//!   http_requests{job="api", instance="0"} 100
//! eval_fail instant at 0 rate(http_requests)
//! eval range from 0 to 10m step 5m temperature
//!   temperature 1 _ 3
//! clear
//! ```
//!
//! `load` writes each series' values (promtool's expanding notation:
//! `0+10x10`, `1x4`, `_`, `_x3`, `stale`) at multiples of its step from
//! time 0; `clear` starts again from an empty store. An instant `eval`
//! lists the expected samples in any order (`eval_ordered`: in order), a
//! scalar result as a bare number; a range `eval` lists each series with
//! its value at every step (`_` where it has none); `eval_fail` expects an
//! error. Values compare equal within 1e-9 relative, NaN equal to NaN.
//!
//! [`run`] evaluates a script on a scratch store; [`Script::render`]
//! writes it back with other expected results (how the refresher in
//! `tests/promql_cases.rs` records a real Prometheus' answers).

use std::path::Path;

use super::{QueryOptions, Value};
use crate::model::{
    parse_duration, parse_float, stale_nan, write_float, Labels, LabelsBuilder, MatchOp, Sample,
    Timestamp,
};
use crate::tsdb::{Storage, StorageOptions};

/// One value of an input series: a number, a stale marker, or nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    Value(f64),
    Stale,
    Missing,
}

/// Expands promtool's series notation: `a+bxn` (n + 1 values from a, step
/// b), `a-bxn`, `axn`, `_`, `_xn`, `stale`, plain numbers.
pub fn expand_values(text: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        if item == "stale" {
            out.push(Point::Stale);
            continue;
        }
        if item == "_" {
            out.push(Point::Missing);
            continue;
        }
        if let Some(n) = item.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid value {item:?}"))?;
            out.extend(std::iter::repeat_n(Point::Missing, n));
            continue;
        }
        let Some((head, n)) = item.rsplit_once('x') else {
            out.push(Point::Value(number(item)?));
            continue;
        };
        let n: usize = n.parse().map_err(|_| format!("invalid value {item:?}"))?;
        // `a+b`, `a-b` or `a`; the operator is not a leading sign or part
        // of an exponent.
        let b = head.as_bytes();
        let op = (1..b.len())
            .rev()
            .find(|&i| (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E'));
        let (start, step) = match op {
            Some(i) => {
                let step = number(&head[i + 1..])?;
                (number(&head[..i])?, if b[i] == b'-' { -step } else { step })
            }
            None => (number(head)?, 0.0),
        };
        for k in 0..=n {
            out.push(Point::Value(start + step * k as f64));
        }
    }
    Ok(out)
}

fn number(s: &str) -> Result<f64, String> {
    parse_float(s).map_err(|_| format!("invalid value {s:?}"))
}

/// `name{a="b"}` (or `{a="b"}`, `{}`) as a label set.
pub fn series_labels(text: &str) -> Result<Labels, String> {
    if text.trim() == "{}" {
        return Ok(Labels::default());
    }
    let sets = super::parse_selector(text).map_err(|e| format!("{text:?}: {e}"))?;
    let mut b = LabelsBuilder::new();
    for m in sets.first().into_iter().flatten() {
        if m.op != MatchOp::Equal {
            return Err(format!("{text:?}: only = matchers describe a series"));
        }
        b.push(m.name.as_str(), m.value.as_str());
    }
    b.build().map_err(|e| format!("{text:?}: {e}"))
}

/// A series and its values written every `interval` ms from time 0.
pub fn series_samples(
    series: &str,
    values: &str,
    interval: i64,
) -> Result<(Labels, Vec<Sample>), String> {
    let labels = series_labels(series)?;
    let points = expand_values(values).map_err(|e| format!("{series}: {e}"))?;
    let samples = points
        .iter()
        .enumerate()
        .filter_map(|(k, p)| {
            let t = k as i64 * interval;
            match p {
                Point::Value(v) => Some(Sample { t, v: *v }),
                Point::Stale => Some(Sample { t, v: stale_nan() }),
                Point::Missing => None,
            }
        })
        .collect();
    Ok((labels, samples))
}

/// A parsed script: blocks separated by `clear`, and its lines.
#[derive(Debug, Clone)]
pub struct Script {
    pub blocks: Vec<Block>,
    lines: Vec<String>,
}

/// The series loaded since the last `clear`, and the evaluations on them.
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub series: Vec<(Labels, Vec<Sample>)>,
    pub evals: Vec<Eval>,
}

#[derive(Debug, Clone)]
pub struct Eval {
    /// The directive's line (0-based) and the line after its expectations.
    line: usize,
    end: usize,
    pub query: Query,
    pub expr: String,
    pub expect: Outcome,
    /// `eval_ordered`: the samples' order is part of the answer.
    pub ordered: bool,
}

/// When an evaluation happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Query {
    Instant(Timestamp),
    Range {
        start: Timestamp,
        end: Timestamp,
        step: i64,
    },
}

impl Query {
    /// The step times of a range query (one time for an instant one).
    pub fn times(&self) -> Vec<Timestamp> {
        match *self {
            Query::Instant(t) => vec![t],
            Query::Range { start, end, step } => (0..)
                .map(|k| start + k * step)
                .take_while(|t| *t <= end)
                .collect(),
        }
    }
}

/// An answer: what a query gave, or what a script expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scalar(f64),
    /// Instant vector samples, in the order given.
    Vector(Vec<(Labels, f64)>),
    /// Per series, its value at each step of the range (`None`: no point).
    Matrix(Vec<(Labels, Vec<Option<f64>>)>),
    Error(String),
}

fn time(text: &str) -> Result<Timestamp, String> {
    match text {
        "0" => Ok(0),
        _ => parse_duration(text)
            .map(|d| d.millis())
            .map_err(|e| format!("invalid time {text:?}: {e}")),
    }
}

/// Splits `series rest` where the series may hold quoted spaces.
fn split_series(line: &str) -> (&str, &str) {
    let line = line.trim();
    let end = match line.find('{') {
        Some(open) if !line[..open].contains(char::is_whitespace) => {
            let mut quoted = false;
            let mut escaped = false;
            let mut close = line.len();
            for (i, c) in line[open..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        close = open + i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            close
        }
        _ => line.find(char::is_whitespace).unwrap_or(line.len()),
    };
    (&line[..end], line[end..].trim())
}

impl Script {
    /// Parses a script; errors are `line N: why`.
    pub fn parse(text: &str) -> Result<Script, String> {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut blocks = vec![Block::default()];
        let mut i = 0;
        let at = |i: usize, e: String| format!("line {}: {e}", i + 1);
        let is_body = |l: &str| l.starts_with([' ', '\t']) && !l.trim().is_empty();
        while i < lines.len() {
            let line = lines[i].trim();
            if line.is_empty() || line.starts_with('#') {
                i += 1;
                continue;
            }
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            match word {
                "clear" => {
                    blocks.push(Block::default());
                    i += 1;
                }
                "load" => {
                    let step = parse_duration(rest.trim())
                        .map_err(|e| at(i, format!("load step {:?}: {e}", rest.trim())))?
                        .millis();
                    i += 1;
                    while i < lines.len() && is_body(&lines[i]) {
                        let (series, values) = split_series(&lines[i]);
                        let s = series_samples(series, values, step).map_err(|e| at(i, e))?;
                        blocks
                            .last_mut()
                            .unwrap_or_else(|| unreachable!())
                            .series
                            .push(s);
                        i += 1;
                    }
                }
                "eval" | "eval_ordered" | "eval_fail" => {
                    let start = i;
                    let (query, expr) = Self::directive(rest).map_err(|e| at(i, e))?;
                    i += 1;
                    let mut body = Vec::new();
                    while i < lines.len() && is_body(&lines[i]) {
                        body.push((i, lines[i].trim()));
                        i += 1;
                    }
                    let expect = if word == "eval_fail" {
                        Outcome::Error(String::new())
                    } else {
                        expected(&query, &body).map_err(|(l, e)| at(l, e))?
                    };
                    if word == "eval_ordered" && !matches!(query, Query::Instant(_)) {
                        return Err(at(start, "eval_ordered needs an instant query".into()));
                    }
                    blocks
                        .last_mut()
                        .unwrap_or_else(|| unreachable!())
                        .evals
                        .push(Eval {
                            line: start,
                            end: i,
                            query,
                            expr: expr.to_string(),
                            expect,
                            ordered: word == "eval_ordered",
                        });
                }
                _ => return Err(at(i, format!("unknown command {word:?}"))),
            }
        }
        Ok(Script { blocks, lines })
    }

    /// `instant at T EXPR` or `range from T to T step D EXPR`.
    fn directive(rest: &str) -> Result<(Query, &str), String> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let tail = |n: usize| {
            let mut s = rest.trim_start();
            for _ in 0..n {
                s = s
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, r)| r);
            }
            s.trim()
        };
        match words.as_slice() {
            ["instant", "at", t, ..] => Ok((Query::Instant(time(t)?), tail(3))),
            ["range", "from", s, "to", e, "step", d, ..] => {
                let step = time(d)?;
                let (start, end) = (time(s)?, time(e)?);
                if step <= 0 || end < start {
                    return Err("a range needs start ≤ end and a positive step".into());
                }
                Ok((Query::Range { start, end, step }, tail(7)))
            }
            _ => Err(format!(
                "expected `instant at TIME EXPR` or `range from T to T step D EXPR`, got {rest:?}"
            )),
        }
        .and_then(|(q, expr)| {
            if expr.is_empty() {
                Err("no expression".into())
            } else {
                Ok((q, expr))
            }
        })
    }

    /// The script with each evaluation's expectation replaced by the
    /// outcome given for it (blocks, then evaluations, in order); an
    /// error outcome turns the directive into `eval_fail`.
    pub fn render(&self, outcomes: &[Vec<Outcome>]) -> String {
        let mut out = String::new();
        let mut next = 0;
        let evals = self
            .blocks
            .iter()
            .zip(outcomes)
            .flat_map(|(b, o)| b.evals.iter().zip(o));
        for (e, o) in evals {
            for l in &self.lines[next..e.line] {
                out.push_str(l);
                out.push('\n');
            }
            let word = match (o, e.ordered) {
                (Outcome::Error(_), _) => "eval_fail",
                (_, true) => "eval_ordered",
                _ => "eval",
            };
            let q = match e.query {
                Query::Instant(t) => format!("instant at {}", time_text(t)),
                Query::Range { start, end, step } => format!(
                    "range from {} to {} step {}",
                    time_text(start),
                    time_text(end),
                    time_text(step)
                ),
            };
            out.push_str(&format!("{word} {q} {}\n", e.expr));
            out.push_str(&expectation_text(o));
            // Comments and blank lines right after the expectations stay.
            next = e.end;
        }
        for l in &self.lines[next..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

fn time_text(t: Timestamp) -> String {
    match t {
        0 => "0".into(),
        t => crate::model::format_duration(t),
    }
}

fn float_text(v: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, v);
    s
}

fn expectation_text(o: &Outcome) -> String {
    let mut out = String::new();
    match o {
        Outcome::Error(_) => {}
        Outcome::Scalar(v) => out.push_str(&format!("  {}\n", float_text(*v))),
        Outcome::Vector(v) => {
            for (l, x) in v {
                out.push_str(&format!("  {l} {}\n", float_text(*x)));
            }
        }
        Outcome::Matrix(m) => {
            for (l, points) in m {
                let values: Vec<String> = points
                    .iter()
                    .map(|p| p.map_or_else(|| "_".to_string(), float_text))
                    .collect();
                out.push_str(&format!("  {l} {}\n", values.join(" ")));
            }
        }
    }
    out
}

/// The expectation lines of an evaluation.
fn expected(query: &Query, body: &[(usize, &str)]) -> Result<Outcome, (usize, String)> {
    if let Query::Range { .. } = query {
        let steps = query.times().len();
        let mut m = Vec::new();
        for &(i, line) in body {
            let (series, values) = split_series(line);
            let labels = series_labels(series).map_err(|e| (i, e))?;
            let points = expand_values(values).map_err(|e| (i, e))?;
            if points.len() != steps {
                return Err((i, format!("{} values for {steps} steps", points.len())));
            }
            let points = points
                .into_iter()
                .map(|p| match p {
                    Point::Value(v) => Ok(Some(v)),
                    Point::Missing => Ok(None),
                    Point::Stale => Err((i, "a query result has no stale markers".to_string())),
                })
                .collect::<Result<_, _>>()?;
            m.push((labels, points));
        }
        return Ok(Outcome::Matrix(m));
    }
    if let [(i, line)] = body {
        if let Ok(v) = number(line) {
            let _ = i;
            return Ok(Outcome::Scalar(v));
        }
    }
    let mut v = Vec::new();
    for &(i, line) in body {
        let (series, value) = split_series(line);
        let labels = series_labels(series).map_err(|e| (i, e))?;
        v.push((labels, number(value).map_err(|e| (i, e))?));
    }
    Ok(Outcome::Vector(v))
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || a == b
        || ((a - b).abs() <= 1e-9 * a.abs().max(b.abs()) && a.is_finite() && b.is_finite())
}

/// Whether `got` answers `eval` as it expects; `Err` says how it differs.
pub fn check(eval: &Eval, got: &Outcome) -> Result<(), String> {
    let shown = |o: &Outcome| expectation_text(o).trim_end().to_string();
    let differ = || {
        Err(format!(
            "expected:\n{}\ngot:\n{}",
            match &eval.expect {
                Outcome::Error(_) => "  an error".to_string(),
                o => shown(o),
            },
            match got {
                Outcome::Error(e) => format!("  error: {e}"),
                o => shown(o),
            }
        ))
    };
    let ok = match (&eval.expect, got) {
        (Outcome::Error(_), Outcome::Error(_)) => true,
        (Outcome::Scalar(a), Outcome::Scalar(b)) => same_value(*a, *b),
        (Outcome::Vector(a), Outcome::Vector(b)) => {
            // In order, the values must follow each other as expected;
            // samples with equal values may come in any order (Go's sort
            // is not stable).
            let in_order = !eval.ordered
                || (a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x.1, y.1)));
            let mut a: Vec<&(Labels, f64)> = a.iter().collect();
            let mut b: Vec<&(Labels, f64)> = b.iter().collect();
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            in_order
                && a.len() == b.len()
                && a.iter()
                    .zip(&b)
                    .all(|(x, y)| x.0 == y.0 && same_value(x.1, y.1))
        }
        (Outcome::Matrix(a), Outcome::Matrix(b)) => {
            let mut a: Vec<_> = a.iter().collect();
            let mut b: Vec<_> = b.iter().collect();
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            a.len() == b.len()
                && a.iter().zip(&b).all(|(x, y)| {
                    x.0 == y.0
                        && x.1.len() == y.1.len()
                        && x.1.iter().zip(&y.1).all(|(p, q)| match (p, q) {
                            (Some(p), Some(q)) => same_value(*p, *q),
                            (None, None) => true,
                            _ => false,
                        })
                })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        differ()
    }
}

/// mlmon's answer to one evaluation of a script on `storage`.
pub fn evaluate(storage: &Storage, eval: &Eval, opts: &QueryOptions) -> Outcome {
    match eval.query {
        Query::Instant(t) => match super::instant(storage, &eval.expr, t, opts) {
            Ok(Value::Scalar { v, .. }) => Outcome::Scalar(v),
            Ok(Value::Vector(v)) => {
                Outcome::Vector(v.into_iter().map(|s| ((*s.labels).clone(), s.v)).collect())
            }
            Ok(other) => Outcome::Error(format!(
                "a {} result; scripts compare scalars and vectors",
                other.type_name()
            )),
            Err(e) => Outcome::Error(e.to_string()),
        },
        Query::Range { start, end, step } => {
            match super::range(storage, &eval.expr, start, end, step, opts) {
                Ok(series) => {
                    let times = eval.query.times();
                    Outcome::Matrix(
                        series
                            .into_iter()
                            .map(|s| {
                                let points = times
                                    .iter()
                                    .map(|t| s.samples.iter().find(|x| x.t == *t).map(|x| x.v))
                                    .collect();
                                ((*s.labels).clone(), points)
                            })
                            .collect(),
                    )
                }
                Err(e) => Outcome::Error(e.to_string()),
            }
        }
    }
}

/// The query options scripts run with: Prometheus' defaults (a subquery
/// without a step uses the default evaluation interval, one minute).
pub fn options() -> QueryOptions {
    QueryOptions::default()
}

/// Runs a script on scratch stores under `dir` (one per block); the
/// failures, each naming the evaluation's line.
pub fn run(script: &Script, dir: &Path) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for (k, block) in script.blocks.iter().enumerate() {
        let storage = Storage::open(StorageOptions::new(dir.join(format!("block-{k}"))))
            .map_err(|e| e.to_string())?;
        let mut app = storage.appender();
        for (labels, samples) in &block.series {
            app.append_series(labels.clone(), samples.clone());
        }
        app.commit().map_err(|e| e.to_string())?;
        for e in &block.evals {
            let got = evaluate(&storage, e, &options());
            if let Err(why) = check(e, &got) {
                failures.push(format!("line {}: {}\n{why}", e.line + 1, e.expr));
            }
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expanding_notation() {
        use Point::*;
        assert_eq!(
            expand_values("0+10x2 1x1 _ _x2 stale -1-1x1 1e3+1e1x1").unwrap(),
            [
                Value(0.0),
                Value(10.0),
                Value(20.0),
                Value(1.0),
                Value(1.0),
                Missing,
                Missing,
                Missing,
                Stale,
                Value(-1.0),
                Value(-2.0),
                Value(1000.0),
                Value(1010.0)
            ]
        );
        let v = |s: &str| expand_values(s).unwrap();
        assert_eq!(
            v("-2+4x3"),
            vec![Value(-2.0), Value(2.0), Value(6.0), Value(10.0)]
        );
        assert_eq!(v("1-2x2"), vec![Value(1.0), Value(-1.0), Value(-3.0)]);
        assert!(expand_values("1+x").is_err());
    }

    const SCRIPT: &str = "# a comment\nload 1m\n  up{job=\"a b\"} 1 2 3\n  x 5\n\neval instant at 2m up\n  up{job=\"a b\"} 3\n\neval_fail instant at 0 rate(up)\n\nclear\neval range from 0 to 2m step 1m vector(1)\n  {} 1 1 1\n";

    #[test]
    fn a_script_parses_runs_and_renders_back() {
        let s = Script::parse(SCRIPT).unwrap();
        assert_eq!(s.blocks.len(), 2);
        assert_eq!(s.blocks[0].series.len(), 2);
        assert_eq!(s.blocks[0].series[0].0.get("job"), Some("a b"));
        assert_eq!(s.blocks[0].evals.len(), 2);
        assert_eq!(
            s.blocks[1].evals[0].query,
            Query::Range {
                start: 0,
                end: 120_000,
                step: 60_000
            }
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(&s, dir.path()).unwrap(), Vec::<String>::new());
        // Rendering the expectations back gives the same script.
        let outcomes: Vec<Vec<Outcome>> = s
            .blocks
            .iter()
            .map(|b| b.evals.iter().map(|e| e.expect.clone()).collect())
            .collect();
        let again = s.render(&outcomes);
        assert_eq!(again, SCRIPT);
    }

    #[test]
    fn a_wrong_expectation_is_reported_with_its_line() {
        let s = Script::parse("load 1m\n  up 1\neval instant at 0 up\n  up 2\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let failures = run(&s, dir.path()).unwrap();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with("line 3: up"), "{failures:?}");
        assert!(failures[0].contains("up{} 1"), "{failures:?}");
    }

    #[test]
    fn bad_scripts_name_the_line() {
        for (text, line) in [
            ("load 1m\n  up 1+\n", "line 2"),
            ("eval instant at 1q up\n", "line 1"),
            ("frobnicate\n", "line 1"),
            (
                "eval range from 0 to 1m step 1m vector(1)\n  {} 1\n",
                "line 2",
            ),
        ] {
            let e = Script::parse(text).unwrap_err();
            assert!(e.starts_with(line), "{text:?}: {e}");
        }
    }
}
