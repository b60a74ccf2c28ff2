//! A series' identity: label pairs sorted by name, names unique, the metric
//! name stored under `__name__` like every other label.

use std::fmt;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A sorted, duplicate-free set of label pairs. Empty values are dropped on
/// construction: in Prometheus an empty label value means "no such label".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Vec<(String, String)>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error("label {0:?} appears more than once")]
    Duplicate(String),
    #[error("missing metric name (__name__)")]
    MissingName,
    #[error("label value of {0:?} is not valid UTF-8")]
    InvalidUtf8(String),
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

impl Labels {
    /// Builds a label set from pairs in any order, validating names and
    /// rejecting duplicates. Empty values are dropped.
    pub fn new<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Labels, LabelError> {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        for w in v.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(LabelError::Duplicate(w[0].0.clone()));
            }
        }
        for (n, val) in &v {
            if n == METRIC_NAME {
                if !is_valid_metric_name(val) {
                    return Err(LabelError::InvalidMetricName(val.clone()));
                }
            } else if !is_valid_label_name(n) {
                return Err(LabelError::InvalidName(n.clone()));
            }
        }
        Ok(Labels(v))
    }

    /// Label pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v = self.0.clone();
        match v.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                v.remove(i);
            }
            Ok(i) => v[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => v.insert(i, (name.to_string(), value.to_string())),
        }
        Labels(v)
    }

    /// A copy without `name`.
    pub fn without(&self, name: &str) -> Labels {
        self.with(name, "")
    }

    /// The canonical byte form stored in the series table:
    /// for each pair `uvarint(len) name uvarint(len) value`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
        for (n, v) in &self.0 {
            put_uvarint(&mut out, n.len() as u64);
            out.extend_from_slice(n.as_bytes());
            put_uvarint(&mut out, v.len() as u64);
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Inverse of [`Labels::encode`]; `None` on malformed bytes.
    pub fn decode(mut b: &[u8]) -> Option<Labels> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let n = take_str(&mut b)?;
            let val = take_str(&mut b)?;
            v.push((n, val));
        }
        Some(Labels(v))
    }
}

fn take_str(b: &mut &[u8]) -> Option<String> {
    let len = get_uvarint(b)? as usize;
    if b.len() < len {
        return None;
    }
    let s = std::str::from_utf8(&b[..len]).ok()?.to_string();
    *b = &b[len..];
    Some(s)
}

/// LEB128 unsigned varint, as protobuf and Prometheus' index use.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_uvarint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte < 0x80 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

/// Signed integers mapped to unsigned so small magnitudes stay small
/// (0, -1, 1, -2 → 0, 1, 2, 3), as protobuf's `sint64`.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A zigzag-encoded LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

pub fn get_varint(b: &mut &[u8]) -> Option<i64> {
    get_uvarint(b).map(unzigzag)
}

/// Collects pairs without validation for code that builds label sets from
/// already-valid parts (e.g. adding a grouping label to valid labels).
#[derive(Default)]
pub struct LabelsBuilder(Vec<(String, String)>);

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((name.into(), value.into()));
        self
    }
    pub fn build(self) -> Result<Labels, LabelError> {
        Labels::new(self.0)
    }
}

/// Prometheus' notation: `name{a="1", b="2"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_drops_empty_and_validates() {
        let l = Labels::new([("job", "a"), ("__name__", "up"), ("x", "")]).unwrap();
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [("__name__", "up"), ("job", "a")]
        );
        assert!(matches!(
            Labels::new([("a-b", "1")]),
            Err(LabelError::InvalidName(_))
        ));
        assert!(matches!(
            Labels::new([("a", "1"), ("a", "2")]),
            Err(LabelError::Duplicate(_))
        ));
        assert!(matches!(
            Labels::new([("__name__", "1up")]),
            Err(LabelError::InvalidMetricName(_))
        ));
    }

    #[test]
    fn encode_round_trips() {
        let l = Labels::new([("__name__", "up"), ("job", "ünïcode"), ("i", "")]).unwrap();
        assert_eq!(Labels::decode(&l.encode()).unwrap(), l);
        assert_eq!(l.to_string(), "up{job=\"ünïcode\"}");
    }

    #[test]
    fn with_and_without() {
        let l = Labels::new([("__name__", "up"), ("job", "a")]).unwrap();
        assert_eq!(l.with("instance", "x").get("instance"), Some("x"));
        assert_eq!(l.without("job").get("job"), None);
    }
}
