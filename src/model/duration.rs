//! Prometheus duration syntax: `1y2w3d4h5m6s7ms`, units in descending order,
//! each at most once, as `model.ParseDuration` in Prometheus' common library.

use std::fmt;

/// A duration parsed from Prometheus syntax, kept in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub i64);

impl PromDuration {
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }
    pub fn from_secs(s: i64) -> Self {
        PromDuration(s * 1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a valid duration string: {input:?} ({reason}); use units ms, s, m, h, d, w, y as in 1h30m"
)]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses `1h30m`, `15s`, `500ms`, `0`. Units must come in descending order.
pub fn parse_duration(input: &str) -> Result<PromDuration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    if input == "0" {
        return Ok(PromDuration(0));
    }
    if input.is_empty() {
        return Err(err("empty"));
    }
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    let mut last_unit = usize::MAX;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err("expected a number"));
        }
        let n: i64 = input[start..i]
            .parse()
            .map_err(|_| err("number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &input[ustart..i];
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(err(if unit.is_empty() {
                "missing unit"
            } else {
                "unknown unit"
            }));
        };
        if last_unit != usize::MAX && pos <= last_unit {
            return Err(err("units must appear once, in descending order"));
        }
        last_unit = pos;
        total = n
            .checked_mul(UNITS[pos].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("duration out of range"))?;
    }
    Ok(PromDuration(total))
}

/// Formats milliseconds the way Prometheus prints durations (`1h30m`, `0s`).
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms;
    if rest < 0 {
        out.push('-');
        rest = -rest;
    }
    for (unit, size) in UNITS {
        if rest >= size {
            out.push_str(&format!("{}{}", rest / size, unit));
            rest %= size;
        }
    }
    out
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PromDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("15s").unwrap().0, 15_000);
        assert_eq!(parse_duration("1h30m").unwrap().0, 5_400_000);
        assert_eq!(parse_duration("500ms").unwrap().0, 500);
        assert_eq!(parse_duration("1d").unwrap().0, 86_400_000);
        assert_eq!(parse_duration("0").unwrap().0, 0);
        assert_eq!(parse_duration("2w1d").unwrap().0, 15 * 86_400_000);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "5", "m", "1x", "30m1h", "1s1s", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["15s", "1h30m", "500ms", "1d", "2w", "1y"] {
            assert_eq!(format_duration(parse_duration(s).unwrap().0), s);
        }
    }
}
