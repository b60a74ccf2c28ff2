//! The shared vocabulary: [`Labels`], [`Sample`], [`Matcher`], timestamps and
//! Prometheus durations. No I/O, no async; every other module speaks in these
//! types, so a series' identity is always one sorted, validated label set.

mod bytes;
mod duration;
mod labels;
mod matcher;
mod relabel;
mod yaml_lines;

pub use bytes::parse_bytes;
pub use duration::{format_duration, parse_duration, DurationError, PromDuration};
pub use labels::{
    get_uvarint, get_varint, is_valid_label_name, is_valid_metric_name, put_uvarint, put_varint,
    unzigzag, zigzag, LabelError, Labels, LabelsBuilder, METRIC_NAME,
};
pub use matcher::{parse_matchers, MatchOp, Matcher, MatcherError};
pub use relabel::{relabel, RelabelAction, RelabelRule};
pub use yaml_lines::{
    parse_yaml, redact_secrets, ConfigError, ConfigErrors, YamlError, YamlLines, MAX_YAML_DEPTH,
};

/// Hash maps and sets with a fast (not DoS-resistant) hasher, for lookups
/// on data mlmon already holds.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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

/// Appends `v` as Go's `strconv.FormatFloat(v, 'f', -1, 64)` spells it
/// (what Prometheus' JSON API writes): the shortest digits that parse back
/// to `v`, never an exponent, no fraction for integers; `NaN`, `+Inf`,
/// `-Inf` as [`special_float`].
pub fn write_float(out: &mut String, v: f64) {
    if let Some(special) = special_float(v) {
        out.push_str(special);
        return;
    }
    // zmij picks Go's digits (ties to even, where `Display` rounds up) and
    // is several times faster; its exponent form is spelled out here.
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(v);
    let Some((mantissa, exp)) = s.split_once('e') else {
        out.push_str(s.strip_suffix(".0").unwrap_or(s));
        return;
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    // Digits before the decimal point.
    let point = int.len() as i64 + exp.parse::<i64>().unwrap_or(0);
    out.push_str(sign);
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        let (a, b) = digits.split_at(point as usize);
        out.push_str(a);
        out.push('.');
        out.push_str(b);
    }
}

/// A millisecond timestamp as RFC 3339 in UTC with milliseconds, as
/// Prometheus' and Alertmanager's APIs write times; 0 is Go's zero time
/// (`0001-01-01T00:00:00Z`), which they use for "never".
pub fn rfc3339(ms: Timestamp) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `s` with every byte but unreserved URL characters percent-encoded.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Appends a millisecond timestamp as seconds, as Prometheus' JSON API
/// writes it (`1795478400`, `1795478400.5`).
pub fn write_seconds(out: &mut String, t: Timestamp) {
    use std::fmt::Write;
    let (sign, abs) = if t < 0 {
        ("-", t.unsigned_abs())
    } else {
        ("", t as u64)
    };
    let _ = write!(out, "{sign}{}", abs / 1000);
    let ms = abs % 1000;
    if ms != 0 {
        let frac = format!("{ms:03}");
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn float(v: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, v);
        s
    }

    #[test]
    fn floats_are_spelled_like_go() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1e21), "1000000000000000000000");
        assert_eq!(float(1.5e-7), "0.00000015");
        assert_eq!(float(-1.25e-20), "-0.0000000000000000000125");
        assert_eq!(float(1.5e300).len(), 301);
        // A tie: Go (and Prometheus) round to even, Rust's Display up.
        assert_eq!(
            float(f64::from_bits(14018953943667992128)),
            "-4031007284364.7812"
        );
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        write_seconds(&mut s, -1500);
        assert_eq!(s, "-1.5");
    }

    proptest! {
        #[test]
        fn write_float_is_shortest_plain_and_exact(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            let s = float(v);
            prop_assert!(!s.contains('e'), "{}", s);
            prop_assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits());
            // As many significant digits as the shortest round trip needs.
            let sig = |t: &str| t.trim_start_matches('-').replace('.', "").trim_matches('0').len();
            prop_assert_eq!(sig(&s), sig(&format!("{v}")));
        }

        #[test]
        fn write_seconds_matches_float_division(t in -(1i64 << 50)..(1i64 << 50)) {
            let mut s = String::new();
            write_seconds(&mut s, t);
            prop_assert_eq!(s, format!("{}", t as f64 / 1000.0));
        }
    }
}

/// An alert as Prometheus posts it to Alertmanager (`POST /api/v2/alerts`):
/// the rule engine's output, the notifier's input, and what mlmon
/// forwards to `alerting.alertmanagers`. Times are optional, as in the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostableAlert {
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub starts_at_ms: Option<Timestamp>,
    pub ends_at_ms: Option<Timestamp>,
    pub generator_url: String,
}
