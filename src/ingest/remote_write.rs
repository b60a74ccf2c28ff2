//! Prometheus remote_write 1.0: a snappy-compressed (block format) protobuf
//! `WriteRequest`, decoded into label sets and samples. The request is
//! checked whole before anything is stored: a bad label anywhere refuses it.

use prost::Message;

use crate::model::{Labels, Sample};

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
    /// Native histograms (field 4) are not stored by mlmon; counted.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Why a remote-write body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid snappy (block format): {0}")]
    Snappy(String),
    #[error("decompressed body would be {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not a valid remote-write protobuf WriteRequest: {0}")]
    Protobuf(String),
}

/// Label pairs borrowed from a request body, in the order sent.
pub type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// How a request names a series.
#[derive(Debug)]
pub enum SeriesLabels<'a> {
    /// The bytes of the series' `Label` fields as sent, one after the
    /// other: the same label set sent the same way has the same bytes, so
    /// the store finds a series it has seen without decoding them
    /// ([`label_pairs`] decodes them when it has not).
    Encoded(&'a [u8]),
    /// Pairs decoded at once (the `Label` fields were not contiguous).
    Pairs(Pairs<'a>),
}

/// What one request carried: each series' labels, borrowed from the
/// decompressed body, and samples.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub series: Vec<(SeriesLabels<'a>, Vec<Sample>)>,
    pub samples: usize,
    pub histograms_dropped: usize,
}

/// Undoes the snappy block compression, refusing bodies that would
/// decompress to more than `max_decoded` bytes before allocating them.
pub fn decompress(body: &[u8], max_decoded: usize) -> Result<Vec<u8>, DecodeError> {
    let size = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if size > max_decoded {
        return Err(DecodeError::TooLarge {
            size,
            limit: max_decoded,
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))
}

/// Parses a `WriteRequest` without copying strings. Unknown fields are
/// skipped as protobuf requires; a known field with the wrong wire type, a
/// truncated message or invalid UTF-8 refuses the request.
pub fn parse(buf: &[u8]) -> Result<Request<'_>, DecodeError> {
    let mut out = Request::default();
    let mut r = Wire(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => {
                let index = out.series.len();
                let (labels, samples, histograms) =
                    time_series(r.bytes()?).map_err(|e| match e {
                        DecodeError::Protobuf(m) => {
                            DecodeError::Protobuf(format!("time series {index}: {m}"))
                        }
                        other => other,
                    })?;
                out.histograms_dropped += histograms;
                if !samples.is_empty() {
                    out.samples += samples.len();
                    out.series.push((labels, samples));
                }
            }
            (1, _) => return Err(wrong_type("WriteRequest.timeseries")),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

type SeriesParts<'a> = (SeriesLabels<'a>, Vec<Sample>, usize);

fn time_series(buf: &[u8]) -> Result<SeriesParts<'_>, DecodeError> {
    // A sample takes at least 12 bytes (timestamps in milliseconds since
    // 1970 take 6): room for as many as the message could hold, less its
    // labels' share.
    let (mut samples, mut histograms) = (Vec::with_capacity(buf.len() / 24 + 1), 0);
    // The span of the `Label` fields while they are contiguous.
    let mut span: Option<(usize, usize)> = None;
    let mut contiguous = true;
    let mut r = Wire(buf);
    let offset = |r: &Wire| buf.len() - r.0.len();
    loop {
        let start = offset(&r);
        let Some((field, wire)) = r.key()? else {
            break;
        };
        match (field, wire) {
            (1, LEN) => {
                r.bytes()?;
                let end = offset(&r);
                span = match span {
                    None => Some((start, end)),
                    Some((s, e)) => {
                        contiguous &= e == start;
                        Some((s, end))
                    }
                };
            }
            (2, LEN) => samples.push(sample(r.bytes()?)?),
            (4, LEN) => {
                r.bytes()?;
                histograms += 1;
            }
            (1 | 2 | 4, _) => return Err(wrong_type("TimeSeries field")),
            _ => r.skip(wire)?,
        }
    }
    let labels = match span {
        Some((s, e)) if contiguous => SeriesLabels::Encoded(&buf[s..e]),
        None => SeriesLabels::Pairs(Vec::new()),
        Some(_) => SeriesLabels::Pairs(labels_in(buf, true)?),
    };
    Ok((labels, samples, histograms))
}

/// Decodes [`SeriesLabels::Encoded`] bytes into pairs, in the order sent.
pub fn label_pairs(encoded: &[u8]) -> Result<Pairs<'_>, DecodeError> {
    labels_in(encoded, false)
}

/// The `Label` fields of a `TimeSeries` message, decoded in order; other
/// fields are skipped with `others`, else refused.
fn labels_in(buf: &[u8], others: bool) -> Result<Pairs<'_>, DecodeError> {
    let mut pairs = Vec::with_capacity(8);
    let mut r = Wire(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => pairs.push(label(r.bytes()?)?),
            _ if others => r.skip(wire)?,
            _ => return Err(wrong_type("TimeSeries.labels")),
        }
    }
    Ok(pairs)
}

fn label(buf: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (mut name, mut value) = ("", "");
    let mut r = Wire(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => name = utf8(r.bytes()?, "label name")?,
            (2, LEN) => value = utf8(r.bytes()?, "label value")?,
            (1 | 2, _) => return Err(wrong_type("Label field")),
            _ => r.skip(wire)?,
        }
    }
    Ok((name, value))
}

fn sample(buf: &[u8]) -> Result<Sample, DecodeError> {
    let (mut v, mut t) = (0.0, 0i64);
    let mut r = Wire(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, I64) => v = f64::from_bits(r.fixed64()?),
            (2, VARINT) => t = r.varint()? as i64,
            (1, _) => return Err(wrong_type("Sample.value (a double)")),
            (2, _) => return Err(wrong_type("Sample.timestamp (an int64 varint)")),
            _ => r.skip(wire)?,
        }
    }
    Ok(Sample { t, v })
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| DecodeError::Protobuf(format!("{what} is not valid UTF-8")))
}

fn wrong_type(what: &str) -> DecodeError {
    DecodeError::Protobuf(format!("{what} has the wrong wire type"))
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// A protobuf wire-format reader over a byte slice.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn truncated() -> DecodeError {
        DecodeError::Protobuf("message is truncated".into())
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Keys and most lengths are one byte.
        if let Some((&b, rest)) = self.0.split_first() {
            if b < 0x80 {
                self.0 = rest;
                return Ok(u64::from(b));
            }
        }
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or_else(Self::truncated)?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Protobuf(
            "varint is longer than 10 bytes".into(),
        ))
    }

    /// The next field number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        if k >> 3 == 0 {
            return Err(DecodeError::Protobuf("field number 0".into()));
        }
        Ok(Some((k >> 3, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(Self::truncated());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| Self::truncated())?;
        self.take(n)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("took 8 bytes")))
    }

    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            other => Err(DecodeError::Protobuf(format!(
                "unsupported wire type {other}"
            ))),
        }
    }
}

/// Encodes a request as a client would (tests, benchmarks).
pub fn encode(series: &[(Labels, Vec<Sample>)]) -> Vec<u8> {
    compress(&encode_request(series))
}

/// Snappy block compression of a request body, as remote write sends it.
pub fn compress(request: &[u8]) -> Vec<u8> {
    // An encoder keeps its 32 KiB hash table between calls: one per thread.
    thread_local! {
        static ENCODER: std::cell::RefCell<snap::raw::Encoder> =
            std::cell::RefCell::new(snap::raw::Encoder::new());
    }
    ENCODER
        .with(|e| e.borrow_mut().compress_vec(request))
        .expect("snappy compression of an in-memory buffer")
}

/// The protobuf `WriteRequest` of `series`, byte for byte what prost
/// writes (fields in tag order, default values left out).
fn encode_request(series: &[(Labels, Vec<Sample>)]) -> Vec<u8> {
    let labels: Vec<Vec<u8>> = series.iter().map(|(l, _)| encode_labels(l)).collect();
    let mut out = Vec::new();
    for ((_, samples), l) in series.iter().zip(&labels) {
        put_series(&mut out, l, samples);
    }
    out
}

/// The `labels` fields of a `TimeSeries` (each a nested `Label`), written
/// straight from the borrowed labels: what a forwarder keeps per series,
/// so the labels are encoded once, not once per request.
pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    use prost::encoding::{encode_varint, encoded_len_varint};
    fn string_field(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            1 + encoded_len_varint(s.len() as u64) + s.len()
        }
    }
    fn put_string(out: &mut Vec<u8>, tag: u8, s: &str) {
        if !s.is_empty() {
            out.push(tag << 3 | 2);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
    }
    let mut out = Vec::new();
    for (n, v) in labels.iter() {
        out.push(1 << 3 | 2);
        encode_varint((string_field(n) + string_field(v)) as u64, &mut out);
        put_string(&mut out, 1, n);
        put_string(&mut out, 2, v);
    }
    out
}

/// Appends one `TimeSeries` (field 1 of `WriteRequest`) of labels encoded
/// by [`encode_labels`] and `samples`.
pub fn put_series(out: &mut Vec<u8>, labels: &[u8], samples: &[Sample]) {
    use prost::encoding::{encode_varint, encoded_len_varint};
    fn sample_len(s: &Sample) -> usize {
        (if s.v != 0.0 { 9 } else { 0 })
            + (if s.t != 0 {
                1 + encoded_len_varint(s.t as u64)
            } else {
                0
            })
    }
    // Each sample: tag, one length byte, its fields.
    let len = labels.len() + samples.iter().map(|s| 2 + sample_len(s)).sum::<usize>();
    out.reserve(1 + encoded_len_varint(len as u64) + len);
    out.push(1 << 3 | 2);
    encode_varint(len as u64, out);
    out.extend_from_slice(labels);
    for s in samples {
        // Tag, length (one byte: at most 20), value, timestamp.
        let mut b = [0u8; 22];
        let mut n = 2;
        if s.v != 0.0 {
            b[n] = 1 << 3 | 1;
            b[n + 1..n + 9].copy_from_slice(&s.v.to_le_bytes());
            n += 9;
        }
        if s.t != 0 {
            b[n] = 2 << 3;
            n += 1;
            let mut t = s.t as u64;
            while t >= 0x80 {
                b[n] = t as u8 | 0x80;
                t >>= 7;
                n += 1;
            }
            b[n] = t as u8;
            n += 1;
        }
        b[0] = 2 << 3 | 2;
        b[1] = (n - 2) as u8;
        out.extend_from_slice(&b[..n]);
    }
}

/// The same request through prost's structs (the reference the direct
/// encoder is tested against).
#[cfg(test)]
fn encode_request_with_prost(series: &[(Labels, Vec<Sample>)]) -> Vec<u8> {
    WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.into(),
                        value: v.into(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|s| ProtoSample {
                        value: s.v,
                        timestamp: s.t,
                    })
                    .collect(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_encoder_writes_what_prost_writes() {
        let l = |pairs: &[(&str, &str)]| Labels::new(pairs.iter().copied()).unwrap();
        let series = vec![
            (
                l(&[("__name__", "up"), ("job", "a"), ("instance", "h:1")]),
                vec![
                    Sample {
                        t: 1_700_000_000_000,
                        v: 1.0,
                    },
                    Sample { t: 0, v: 0.0 },
                    Sample { t: -5, v: -0.0 },
                    Sample { t: 7, v: f64::NAN },
                    Sample {
                        t: 8,
                        v: crate::model::stale_nan(),
                    },
                ],
            ),
            (l(&[("__name__", "x".repeat(300).as_str())]), vec![]),
            (
                l(&[("__name__", "u"), ("k", "é€")]),
                vec![Sample {
                    t: i64::MAX,
                    v: f64::INFINITY,
                }],
            ),
        ];
        assert_eq!(encode_request(&series), encode_request_with_prost(&series));
        assert_eq!(encode_request(&[]), encode_request_with_prost(&[]));
    }

    type Owned = Vec<(Vec<(String, String)>, Vec<Sample>)>;

    fn decode(body: &[u8], max: usize) -> Result<Owned, DecodeError> {
        let raw = decompress(body, max)?;
        let req = parse(&raw)?;
        req.series
            .into_iter()
            .map(|(l, s)| {
                let pairs = match l {
                    SeriesLabels::Encoded(b) => label_pairs(b)?,
                    SeriesLabels::Pairs(p) => p,
                };
                Ok((
                    pairs
                        .into_iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    s,
                ))
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let l = Labels::new([("__name__", "up"), ("job", "a")]).unwrap();
        let body = encode(&[(l, vec![Sample { t: -1, v: 2.0 }])]);
        let d = decode(&body, 1 << 20).unwrap();
        assert_eq!(
            d[0].0,
            [
                ("__name__".to_string(), "up".to_string()),
                ("job".into(), "a".into())
            ]
        );
        assert_eq!(d[0].1, [Sample { t: -1, v: 2.0 }]);
    }

    #[test]
    fn skips_unknown_fields_and_counts_histograms() {
        let ts = TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "h".into(),
            }],
            samples: vec![],
            histograms: vec![vec![1, 2, 3]],
        };
        let req = WriteRequest {
            timeseries: vec![ts],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "h".into(),
                help: "x".into(),
                unit: String::new(),
            }],
        };
        let raw = req.encode_to_vec();
        let parsed = parse(&raw).unwrap();
        assert_eq!((parsed.series.len(), parsed.histograms_dropped), (0, 1));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
            let _ = decompress(&bytes, 1 << 20);
        }
    }

    #[test]
    fn refuses_bad_bodies() {
        assert!(matches!(
            decode(b"garbage", 1 << 20),
            Err(DecodeError::Snappy(_))
        ));
        let l = Labels::new([("__name__", "up")]).unwrap();
        let body = encode(&[(l, vec![Sample { t: 1, v: 2.0 }; 100])]);
        assert!(matches!(
            decode(&body, 10),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&body[..body.len() / 2], 1 << 20),
            Err(DecodeError::Snappy(_))
        ));
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&not_proto, 1 << 20),
            Err(DecodeError::Protobuf(_))
        ));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        for cut in 1..raw.len() {
            assert!(
                parse(&raw[..cut]).is_err(),
                "a body cut at {cut} must not parse"
            );
        }
    }
}
