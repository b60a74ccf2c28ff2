//! The shared vocabulary: [`Labels`], [`Sample`], [`Matcher`], timestamps and
//! Prometheus durations. No I/O, no async; every other module speaks in these
//! types, so a series' identity is always one sorted, validated label set.

mod duration;
mod labels;
mod matcher;

pub use duration::{format_duration, parse_duration, DurationError, PromDuration};
pub use labels::{
    get_uvarint, is_valid_label_name, is_valid_metric_name, put_uvarint, LabelError, Labels,
    LabelsBuilder, METRIC_NAME,
};
pub use matcher::{MatchOp, Matcher, MatcherError};

/// Milliseconds since the Unix epoch, as in Prometheus.
pub type Timestamp = i64;

/// One value of one series at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: Timestamp,
    pub v: f64,
}

/// The bit pattern Prometheus writes to mark a series as stale
/// (`value.StaleNaN`): a NaN that no arithmetic produces.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is exactly the stale marker (not any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// How Prometheus spells the floats that have no digits: `NaN`, `+Inf`,
/// `-Inf`.
pub fn special_float(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// Parses a sample value in the spellings exporters use (Go's
/// `strconv.ParseFloat`): decimals, exponents, `NaN`, `+Inf`, `-Inf`.
pub fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Ok(f64::INFINITY),
        "-Inf" | "-inf" => return Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => return Ok(f64::NAN),
        "" => return Err("missing value".into()),
        _ => {}
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        if let Ok(v) = s.parse::<f64>() {
            return Ok(v);
        }
    }
    Err(format!(
        "invalid value {s:?}: expected a number, NaN, +Inf or -Inf"
    ))
}

/// The current wall-clock time in milliseconds. Only the edges (ingest, web,
/// app) call this; the store and the engines take time as an argument.
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
