//! PromQL functions, one table from name to implementation, each under a
//! `// === name(args) type ===` header like Prometheus' `functions.go`.
//! Results drop the metric name except where Prometheus keeps it
//! (`last_over_time`, `label_replace`, `label_join`, `sort`, `sort_desc`).

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use promql_parser::parser::{Call, Expr, MatrixSelector};
use regex::Regex;

use super::eval::{check_unique, strip_parens, Evaluator};
use super::value::{Series, VSample, Value};
use super::{matchers_of, QueryError};
use crate::model::{is_valid_label_name, Labels, MatchOp, Sample, Timestamp, METRIC_NAME};

pub(super) fn eval(ev: &mut Evaluator, c: &Call, t: Timestamp) -> Result<Value, QueryError> {
    let name = c.func.name;
    let args = &c.args.args;
    if let Some(kernel) = window_kernel(name) {
        let out = over_range(ev, args, t, name, kernel)?;
        check_unique(&out)?;
        return Ok(Value::Vector(out));
    }
    let out = match name {
        // === time() scalar ===
        "time" => {
            return Ok(Value::Scalar {
                t,
                v: t as f64 / 1000.0,
            })
        }
        // === pi() scalar ===
        "pi" => {
            return Ok(Value::Scalar {
                t,
                v: std::f64::consts::PI,
            })
        }
        // === vector(s scalar) vector ===
        "vector" => {
            let v = ev.scalar(&args[0], t)?;
            return Ok(Value::Vector(vec![VSample {
                labels: Arc::new(Labels::default()),
                t,
                v,
            }]));
        }
        // === scalar(v vector) scalar ===
        "scalar" => {
            let v = ev.vector(&args[0], t)?;
            let v = if v.len() == 1 { v[0].v } else { f64::NAN };
            return Ok(Value::Scalar { t, v });
        }
        // === predict_linear(v range-vector, t scalar) vector ===
        "predict_linear" => {
            let d = ev.scalar(&args[1], t)?;
            over_range(ev, args, t, name, |s, _| {
                (s.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(s, t);
                    slope * d + intercept
                })
            })?
        }
        // === holt_winters(v range-vector, sf, tf scalar) vector ===
        "holt_winters" | "double_exponential_smoothing" => {
            let sf = ev.scalar(&args[1], t)?;
            let tf = ev.scalar(&args[2], t)?;
            if sf <= 0.0 || sf >= 1.0 {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(QueryError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            over_range(ev, args, t, name, |s, _| holt_winters(s, sf, tf))?
        }
        // === quantile_over_time(q scalar, v range-vector) vector ===
        "quantile_over_time" => {
            let q = ev.scalar(&args[0], t)?;
            over_range(ev, &args[1..], t, name, |s, _| {
                let mut vals: Vec<f64> = s.iter().map(|x| x.v).collect();
                Some(quantile(q, &mut vals))
            })?
        }
        // === absent(v vector), absent_over_time(v range-vector) vector ===
        "absent" | "absent_over_time" => {
            let present = if name == "absent" {
                !ev.vector(&args[0], t)?.is_empty()
            } else {
                !ev.matrix(&args[0], t)?.is_empty()
            };
            if present {
                return Ok(Value::Vector(Vec::new()));
            }
            return Ok(Value::Vector(vec![VSample {
                labels: Arc::new(absent_labels(&args[0])),
                t,
                v: 1.0,
            }]));
        }
        // === timestamp(v vector) vector ===
        "timestamp" => {
            let v = match strip_parens(&args[0]) {
                // A selector gives its samples' own timestamps.
                Expr::VectorSelector(_) => {
                    ev.vector_with_sample_times(strip_parens(&args[0]), t)?
                }
                other => ev.vector(other, t)?,
            };
            v.into_iter()
                .map(|s| VSample {
                    labels: ev.drop_name(&s.labels),
                    t,
                    v: s.t as f64 / 1000.0,
                })
                .collect()
        }
        "abs" => map_values(ev, args, t, f64::abs)?,
        "ceil" => map_values(ev, args, t, f64::ceil)?,
        "floor" => map_values(ev, args, t, f64::floor)?,
        "sqrt" => map_values(ev, args, t, f64::sqrt)?,
        "exp" => map_values(ev, args, t, f64::exp)?,
        "ln" => map_values(ev, args, t, f64::ln)?,
        "log2" => map_values(ev, args, t, f64::log2)?,
        "log10" => map_values(ev, args, t, f64::log10)?,
        "sin" => map_values(ev, args, t, f64::sin)?,
        "cos" => map_values(ev, args, t, f64::cos)?,
        "tan" => map_values(ev, args, t, f64::tan)?,
        "asin" => map_values(ev, args, t, f64::asin)?,
        "acos" => map_values(ev, args, t, f64::acos)?,
        "atan" => map_values(ev, args, t, f64::atan)?,
        "sinh" => map_values(ev, args, t, f64::sinh)?,
        "cosh" => map_values(ev, args, t, f64::cosh)?,
        "tanh" => map_values(ev, args, t, f64::tanh)?,
        "asinh" => map_values(ev, args, t, f64::asinh)?,
        "acosh" => map_values(ev, args, t, f64::acosh)?,
        "atanh" => map_values(ev, args, t, f64::atanh)?,
        "deg" => map_values(ev, args, t, |v| v * 180.0 / std::f64::consts::PI)?,
        "rad" => map_values(ev, args, t, |v| v * std::f64::consts::PI / 180.0)?,
        "sgn" => map_values(ev, args, t, |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        })?,
        // === round(v vector, to_nearest=1 scalar) vector ===
        "round" => {
            let to = if args.len() > 1 {
                ev.scalar(&args[1], t)?
            } else {
                1.0
            };
            let inv = 1.0 / to;
            map_values(ev, &args[..1], t, |v| (v * inv + 0.5).floor() / inv)?
        }
        // === clamp(v vector, min, max scalar) vector ===
        "clamp" => {
            let lo = ev.scalar(&args[1], t)?;
            let hi = ev.scalar(&args[2], t)?;
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            map_values(ev, &args[..1], t, |v| go_max(lo, go_min(hi, v)))?
        }
        "clamp_min" => {
            let lo = ev.scalar(&args[1], t)?;
            map_values(ev, &args[..1], t, |v| go_max(lo, v))?
        }
        "clamp_max" => {
            let hi = ev.scalar(&args[1], t)?;
            map_values(ev, &args[..1], t, |v| go_min(hi, v))?
        }
        "day_of_month" => date_fn(ev, args, t, |d| d.day() as f64)?,
        "day_of_week" => date_fn(ev, args, t, |d| d.weekday().num_days_from_sunday() as f64)?,
        "day_of_year" => date_fn(ev, args, t, |d| d.ordinal() as f64)?,
        "days_in_month" => date_fn(ev, args, t, |d| days_in_month(d.year(), d.month()) as f64)?,
        "hour" => date_fn(ev, args, t, |d| d.hour() as f64)?,
        "minute" => date_fn(ev, args, t, |d| d.minute() as f64)?,
        "month" => date_fn(ev, args, t, |d| d.month() as f64)?,
        "year" => date_fn(ev, args, t, |d| d.year() as f64)?,
        // === sort(v vector) vector ===
        "sort" | "sort_desc" => {
            let mut v = ev.vector(&args[0], t)?;
            let desc = name == "sort_desc";
            // NaN last in both orders, as Prometheus 2.42 sorts.
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.v.partial_cmp(&a.v).unwrap_or(std::cmp::Ordering::Equal),
                _ => a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal),
            });
            return Ok(Value::Vector(v));
        }
        // === histogram_quantile(q scalar, buckets vector) vector ===
        "histogram_quantile" => {
            let q = ev.scalar(&args[0], t)?;
            let v = ev.vector(&args[1], t)?;
            histogram_quantile(q, v, t)
        }
        // === label_replace(v vector, dst, replacement, src, regex string) vector ===
        "label_replace" => {
            let dst = ev.string(&args[1], t)?;
            let repl = ev.string(&args[2], t)?;
            let src = ev.string(&args[3], t)?;
            let pattern = ev.string(&args[4], t)?;
            let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                QueryError::Execution(format!(
                    "invalid regular expression in label_replace(): {pattern}: {e}"
                ))
            })?;
            if !is_valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let v = ev.vector(&args[0], t)?;
            let mut out = Vec::with_capacity(v.len());
            for s in v {
                let value = s.labels.get(&src).unwrap_or("");
                let labels = match re.captures(value) {
                    Some(caps) => {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        Arc::new(s.labels.with(&dst, &res))
                    }
                    None => s.labels,
                };
                out.push(VSample { labels, ..s });
            }
            check_unique(&out)?;
            return Ok(Value::Vector(out));
        }
        // === label_join(v vector, dst, sep, src... string) vector ===
        "label_join" => {
            let dst = ev.string(&args[1], t)?;
            let sep = ev.string(&args[2], t)?;
            let mut srcs = Vec::new();
            for a in &args[3..] {
                let s = ev.string(a, t)?;
                if !is_valid_label_name(&s) {
                    return Err(QueryError::Execution(format!(
                        "invalid source label name in label_join(): {s}"
                    )));
                }
                srcs.push(s);
            }
            if !is_valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let v = ev.vector(&args[0], t)?;
            let mut out = Vec::with_capacity(v.len());
            for s in v {
                let joined: Vec<&str> =
                    srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let labels = Arc::new(s.labels.with(&dst, &joined.join(&sep)));
                out.push(VSample { labels, ..s });
            }
            check_unique(&out)?;
            return Ok(Value::Vector(out));
        }
        other => return Err(QueryError::Unsupported(format!("function {other}"))),
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// The range and evaluation time of a range-vector argument at query time
/// `t` (the window rate() extrapolates to).
fn window_of(ev: &Evaluator, arg: &Expr, t: Timestamp) -> (i64, Timestamp) {
    match strip_parens(arg) {
        Expr::MatrixSelector(MatrixSelector { vs, range }) => (
            range.as_millis() as i64,
            ev.ref_time_of(&vs.at, &vs.offset, t),
        ),
        Expr::Subquery(sq) => (
            sq.range.as_millis() as i64,
            ev.ref_time_of(&sq.at, &sq.offset, t),
        ),
        _ => (0, t),
    }
}

/// Applies `f(samples, (range start, range end, range))` to every series of
/// the range-vector argument; `None` drops the series. A plain range
/// selector is read in place from the loaded data, without copying.
fn over_range(
    ev: &mut Evaluator,
    args: &[Box<Expr>],
    t: Timestamp,
    name: &str,
    f: impl Fn(&[Sample], (i64, i64, i64)) -> Option<f64>,
) -> Result<Vec<VSample>, QueryError> {
    let (range, rt) = window_of(ev, &args[0], t);
    let keep_name = name == "last_over_time";
    let window = (rt - range, rt, range);
    let mut out = Vec::new();
    if let Expr::MatrixSelector(ms) = strip_parens(&args[0]) {
        let mut results: Vec<(Arc<Labels>, f64)> = Vec::new();
        ev.for_each_window(&ms.vs, range, t, |labels, samples| {
            if let Some(v) = f(samples, window) {
                results.push((labels.clone(), v));
            }
        });
        out.reserve(results.len());
        for (labels, v) in results {
            let labels = if keep_name {
                labels
            } else {
                ev.drop_name(&labels)
            };
            out.push(VSample { labels, t, v });
        }
        return Ok(out);
    }
    let m = ev.matrix(&args[0], t)?;
    out.reserve(m.len());
    for Series { labels, samples } in m {
        if let Some(v) = f(&samples, window) {
            let labels = if keep_name {
                labels
            } else {
                ev.drop_name(&labels)
            };
            out.push(VSample { labels, t, v });
        }
    }
    Ok(out)
}

/// What a range-vector function of one argument computes from one series'
/// samples in a window and the window `(start, end, range)`; `None` leaves
/// the series out.
pub(super) type Kernel = fn(&[Sample], (i64, i64, i64)) -> Option<f64>;

/// The same as [`window_kernel`] for a window where no sample is below the
/// one before it, for the functions that gain from knowing: rate and
/// increase skip their scan for counter resets (it would find none).
pub(super) fn rising_kernel(name: &str) -> Option<Kernel> {
    Some(match name {
        "rate" => |s, r| extrapolated_rate(s, r, true, true, false),
        "increase" => |s, r| extrapolated_rate(s, r, true, false, false),
        _ => return None,
    })
}

/// The functions whose only argument is a range vector, by name.
pub(super) fn window_kernel(name: &str) -> Option<Kernel> {
    Some(match name {
        "rate" => |s, r| extrapolated_rate(s, r, true, true, true),
        "increase" => |s, r| extrapolated_rate(s, r, true, false, true),
        "delta" => |s, r| extrapolated_rate(s, r, false, false, false),
        "irate" => |s, _| instant_delta(s, true),
        "idelta" => |s, _| instant_delta(s, false),
        // === deriv(v range-vector) vector ===
        "deriv" => |s, _| (s.len() >= 2).then(|| linear_regression(s, s[0].t).0),
        // === changes(v range-vector) vector ===
        "changes" => |s, _| {
            Some(
                s.windows(2)
                    .filter(|w| w[0].v != w[1].v && !(w[0].v.is_nan() && w[1].v.is_nan()))
                    .count() as f64,
            )
        },
        // === resets(v range-vector) vector ===
        "resets" => |s, _| Some(s.windows(2).filter(|w| w[1].v < w[0].v).count() as f64),
        "avg_over_time" => |s, _| Some(avg(s)),
        "sum_over_time" => |s, _| Some(kahan_sum(s.iter().map(|x| x.v))),
        "count_over_time" => |s, _| Some(s.len() as f64),
        "min_over_time" => |s, _| {
            Some(s.iter().fold(
                f64::NAN,
                |acc, x| if acc.is_nan() || x.v < acc { x.v } else { acc },
            ))
        },
        "max_over_time" => |s, _| {
            Some(s.iter().fold(
                f64::NAN,
                |acc, x| if acc.is_nan() || x.v > acc { x.v } else { acc },
            ))
        },
        "last_over_time" => |s, _| s.last().map(|x| x.v),
        "present_over_time" => |_, _| Some(1.0),
        "stddev_over_time" => |s, _| Some(variance(s).sqrt()),
        "stdvar_over_time" => |s, _| Some(variance(s)),
        _ => return None,
    })
}

/// Go's `math.Max`: +Inf wins over NaN, NaN over everything else
/// (`clamp` with a NaN bound is NaN, as in Prometheus).
fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN over everything else.
fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else {
        a.min(b)
    }
}

fn map_values(
    ev: &mut Evaluator,
    args: &[Box<Expr>],
    t: Timestamp,
    f: impl Fn(f64) -> f64,
) -> Result<Vec<VSample>, QueryError> {
    let v = ev.vector(&args[0], t)?;
    Ok(v.into_iter()
        .map(|s| VSample {
            labels: ev.drop_name(&s.labels),
            t,
            v: f(s.v),
        })
        .collect())
}

fn date_fn(
    ev: &mut Evaluator,
    args: &[Box<Expr>],
    t: Timestamp,
    f: impl Fn(chrono::DateTime<chrono::Utc>) -> f64,
) -> Result<Vec<VSample>, QueryError> {
    let input = if args.is_empty() {
        vec![VSample {
            labels: Arc::new(Labels::default()),
            t,
            v: t as f64 / 1000.0,
        }]
    } else {
        ev.vector(&args[0], t)?
    };
    Ok(input
        .into_iter()
        .map(|s| {
            let labels = ev.drop_name(&s.labels);
            let v = if s.v.is_nan() || s.v.is_infinite() {
                s.v
            } else {
                match chrono::Utc.timestamp_opt(s.v.floor() as i64, 0).single() {
                    Some(d) => f(d),
                    None => f64::NAN,
                }
            };
            VSample { labels, t, v }
        })
        .collect())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first_next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
    let first = chrono::NaiveDate::from_ymd_opt(year, month, 1);
    match (first, first_next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 0,
    }
}

/// The labels `absent()` reports: the selector's equality matchers, except
/// names that appear in more than one matcher.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match strip_parens(arg) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let Ok(sets) = matchers_of(vs) else {
        return Labels::default();
    };
    let Some(ms) = sets.first() else {
        return Labels::default();
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut repeated: Vec<&str> = Vec::new();
    for m in ms {
        if m.name == METRIC_NAME {
            continue;
        }
        if ms.iter().filter(|x| x.name == m.name).count() > 1 {
            repeated.push(&m.name);
            continue;
        }
        if m.op == MatchOp::Equal {
            pairs.push((&m.name, &m.value));
        }
    }
    pairs.retain(|(n, _)| !repeated.contains(n));
    Labels::new(pairs).unwrap_or_default()
}

/// rate, increase and delta: the change over the range, corrected for
/// counter resets and extrapolated to the range boundaries as Prometheus 2.x
/// does (`extrapolatedRate` in promql/functions.go). `resets: false` skips
/// the scan for resets, for windows known to have none (adding nothing
/// then, it gives the same bits).
fn extrapolated_rate(
    s: &[Sample],
    (range_start, range_end, range): (i64, i64, i64),
    counter: bool,
    rate: bool,
    resets: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut result = last.v - first.v;
    if counter && resets {
        let mut prev = 0.0;
        for x in s {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_step = sampled / (s.len() - 1) as f64;
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_step * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_step / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_step / 2.0
    };
    let mut v = result * (interval / sampled);
    if rate {
        v /= range as f64 / 1000.0;
    }
    Some(v)
}

/// irate and idelta: the last two samples.
fn instant_delta(s: &[Sample], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (prev, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut v = if rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Neumaier's compensated summation step, as Prometheus' `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in vals {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// The mean as current Prometheus computes it (since 2.51): a compensated
/// sum divided by the count, switching to the incremental mean only when
/// the sum overflows. Prometheus 2.42 took the incremental mean all along;
/// the two agree to the last bit or two, and this one needs no division
/// per sample.
fn avg(s: &[Sample]) -> f64 {
    // Kahan-Neumaier step that forgets the compensation at ±Inf.
    let inc = |inc: f64, sum: f64, c: f64| {
        let (t, c) = kahan_inc(inc, sum, c);
        (t, if t.is_infinite() { 0.0 } else { c })
    };
    let (mut sum, mut c, mut mean) = (s[0].v, 0.0f64, 0.0f64);
    let mut incremental = false;
    for (i, x) in s[1..].iter().enumerate() {
        let count = (i + 2) as f64;
        if !incremental {
            let (next, next_c) = inc(x.v, sum, c);
            if !next.is_infinite() {
                (sum, c) = (next, next_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = inc(x.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        let n = s.len() as f64;
        sum / n + c / n
    }
}

fn variance(s: &[Sample]) -> f64 {
    let (mut n, mut mean, mut c_mean, mut aux, mut c_aux) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for x in s {
        n += 1.0;
        let delta = x.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / n, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (x.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / n
}

/// Least-squares slope and intercept, x in seconds from `intercept_time`.
fn linear_regression(s: &[Sample], intercept_time: Timestamp) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = s[0].v;
    let mut const_y = true;
    for (i, x) in s.iter().enumerate() {
        if const_y && i > 0 && x.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let xv = (x.t - intercept_time) as f64 / 1000.0;
        (sx, cx) = kahan_inc(xv, sx, cx);
        (sy, cy) = kahan_inc(x.v, sy, cy);
        (sxy, cxy) = kahan_inc(xv * x.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(xv * xv, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

fn holt_winters(s: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, s[0].v, s[1].v - s[0].v);
    for (i, x) in s.iter().enumerate().skip(1) {
        let xv = sf * x.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = xv + y;
    }
    Some(s1)
}

/// The φ-quantile of `vals` with linear interpolation (Prometheus'
/// `quantile`); sorts `vals`.
pub(super) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

fn histogram_quantile(q: f64, v: Vec<VSample>, t: Timestamp) -> Vec<VSample> {
    // Per group: its labels and (upper bound, count) buckets.
    type Buckets = Vec<(f64, f64)>;
    let mut groups: Vec<(Arc<Labels>, Buckets)> = Vec::new();
    let mut index: super::eval::FastMap<Labels, usize> = Default::default();
    for s in v {
        let Some(le) = s
            .labels
            .get("le")
            .and_then(|le| crate::model::parse_float(le).ok())
        else {
            continue;
        };
        // Grouped with the name (two metrics' buckets stay apart), which
        // the result drops: two metrics with the same other labels make
        // the result fail as not unique, as in Prometheus.
        let key = s.labels.without("le");
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((Arc::new(key.without(METRIC_NAME)), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((le, s.v));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| VSample {
            labels,
            t,
            v: bucket_quantile(q, buckets),
        })
        .collect()
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|x| x.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same bound, then make counts monotonic.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, n) in b {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for x in c.iter_mut() {
        if x.1 < max {
            x.1 = max;
        } else if x.1 > max {
            max = x.1;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c[c.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let idx = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if idx == c.len() - 1 {
        return c[c.len() - 2].0;
    }
    if idx == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let (mut start, end, mut count) = (0.0, c[idx].0, c[idx].1);
    if idx > 0 {
        start = c[idx - 1].0;
        count -= c[idx - 1].1;
        rank -= c[idx - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(points: &[(i64, f64)]) -> Vec<Sample> {
        points.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    fn k(name: &str) -> Kernel {
        window_kernel(name).unwrap()
    }

    /// A 60 s window ending at 60 s.
    const W: (i64, i64, i64) = (0, 60_000, 60_000);

    #[test]
    fn rate_and_increase_extrapolate_to_the_window_as_prometheus() {
        // Samples 15 s apart from 15 s: 45 s covered, extended to the
        // window's start (one step away) and end: 3 × 60 / 45.
        let s = series(&[(15_000, 1.0), (30_000, 2.0), (45_000, 3.0), (60_000, 4.0)]);
        assert_eq!(k("increase")(&s, W), Some(4.0));
        assert_eq!(k("rate")(&s, W), Some(4.0 / 60.0));
        // A counter reset adds the value before it: (4 - 5) + 10 = 9,
        // then extrapolated: 9 × 60 / 45.
        let s = series(&[(15_000, 5.0), (30_000, 10.0), (45_000, 2.0), (60_000, 4.0)]);
        assert_eq!(k("increase")(&s, W), Some(12.0));
        assert_eq!(k("resets")(&s, W), Some(1.0));
        // A counter is not extrapolated below zero: from 1 at a slope of 3
        // per 15 s it reaches 0 5 s before its first sample.
        let s = series(&[(30_000, 1.0), (45_000, 4.0), (60_000, 7.0)]);
        let want = 6.0 * (30.0 + 5.0) / 30.0;
        assert!((k("increase")(&s, W).unwrap() - want).abs() < 1e-12);
        // One sample: no rate.
        assert_eq!(k("rate")(&s[..1], W), None);
    }

    #[test]
    fn delta_is_not_a_counter() {
        let s = series(&[(15_000, 5.0), (30_000, 10.0), (45_000, 2.0), (60_000, 4.0)]);
        assert_eq!(k("delta")(&s, W), Some((4.0 - 5.0) * 60.0 / 45.0));
        assert_eq!(k("idelta")(&s, W), Some(2.0));
        // irate over the last two samples of a counter that reset: the
        // last value itself, per second.
        assert_eq!(k("irate")(&s, W), Some(2.0 / 15.0));
    }

    #[test]
    fn over_time_functions() {
        let s = series(&[
            (0, 2.0),
            (15_000, 4.0),
            (30_000, 4.0),
            (45_000, 5.0),
            (60_000, 7.0),
        ]);
        assert_eq!(k("avg_over_time")(&s, W), Some(4.4));
        assert_eq!(k("sum_over_time")(&s, W), Some(22.0));
        assert_eq!(k("count_over_time")(&s, W), Some(5.0));
        assert_eq!(k("min_over_time")(&s, W), Some(2.0));
        assert_eq!(k("max_over_time")(&s, W), Some(7.0));
        assert_eq!(k("last_over_time")(&s, W), Some(7.0));
        assert_eq!(k("present_over_time")(&s, W), Some(1.0));
        assert_eq!(k("changes")(&s, W), Some(3.0));
        // Population variance: mean 4.4, squares' mean 22 → 22 - 19.36.
        let var = k("stdvar_over_time")(&s, W).unwrap();
        assert!((var - 2.64).abs() < 1e-12, "{var}");
        let sd = k("stddev_over_time")(&s, W).unwrap();
        assert!((sd - 2.64f64.sqrt()).abs() < 1e-12, "{sd}");
        // NaN is the largest for max, skipped unless alone.
        let n = series(&[(0, f64::NAN), (15_000, 1.0)]);
        assert_eq!(k("max_over_time")(&n, W), Some(1.0));
        assert_eq!(k("min_over_time")(&n, W), Some(1.0));
    }

    #[test]
    fn deriv_is_the_least_squares_slope() {
        // y = 3 + 0.5 per second, exactly.
        let s: Vec<Sample> = (0..5)
            .map(|i| Sample {
                t: i * 10_000,
                v: 3.0 + 0.5 * (i * 10) as f64,
            })
            .collect();
        let d = k("deriv")(&s, W).unwrap();
        assert!((d - 0.5).abs() < 1e-12, "{d}");
    }

    #[test]
    fn go_min_and_max_follow_go() {
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_min(f64::NEG_INFINITY, f64::NAN), f64::NEG_INFINITY);
        assert!(go_min(1.0, f64::NAN).is_nan());
        assert!(go_max(0.0, -0.0).is_sign_positive());
        assert!(go_min(0.0, -0.0).is_sign_negative());
    }

    proptest! {
        /// The shortcut for windows without a drop gives what the full
        /// kernel gives.
        #[test]
        fn rising_kernels_agree_with_the_full_ones(
            steps in proptest::collection::vec((1i64..30_000, 0.0f64..100.0), 2..40),
            start in -60_000i64..0,
        ) {
            let mut t = 0;
            let mut v = 0.0;
            let s: Vec<Sample> = steps
                .iter()
                .map(|&(dt, dv)| {
                    t += dt;
                    v += dv;
                    Sample { t, v }
                })
                .collect();
            let end = t + 1;
            let window = (start, end, end - start);
            for name in ["rate", "increase"] {
                let full = window_kernel(name).unwrap()(&s, window);
                let fast = rising_kernel(name).unwrap()(&s, window);
                prop_assert_eq!(full, fast, "{}", name);
            }
        }
    }
}
