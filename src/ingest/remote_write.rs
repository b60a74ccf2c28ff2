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
    #[error("time series {index}: {reason}")]
    Series { index: usize, reason: String },
}

/// What one request carried.
#[derive(Debug, Default)]
pub struct Decoded {
    pub series: Vec<(Labels, Vec<Sample>)>,
    pub samples: usize,
    pub histograms_dropped: usize,
}

/// Decompresses and decodes a request body, refusing it whole on any error.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<Decoded, DecodeError> {
    let size = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if size > max_decoded {
        return Err(DecodeError::TooLarge {
            size,
            limit: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    let req =
        WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let mut out = Decoded::default();
    for (index, ts) in req.timeseries.into_iter().enumerate() {
        let err = |reason: String| DecodeError::Series { index, reason };
        if ts.labels.is_empty() {
            return Err(err("no labels".into()));
        }
        let labels = Labels::new(ts.labels.into_iter().map(|l| (l.name, l.value)))
            .map_err(|e| err(e.to_string()))?;
        if labels.metric_name().is_none() {
            return Err(err(format!("{labels} has no metric name (__name__)")));
        }
        out.histograms_dropped += ts.histograms.len();
        if ts.samples.is_empty() {
            continue;
        }
        out.samples += ts.samples.len();
        let samples = ts
            .samples
            .into_iter()
            .map(|s| Sample {
                t: s.timestamp,
                v: s.value,
            })
            .collect();
        out.series.push((labels, samples));
    }
    Ok(out)
}

/// Encodes a request as a client would (tests, benchmarks, forwarding).
pub fn encode(series: &[(Labels, Vec<Sample>)]) -> Vec<u8> {
    let req = WriteRequest {
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
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compression of an in-memory buffer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let l = Labels::new([("__name__", "up"), ("job", "a")]).unwrap();
        let body = encode(&[(l.clone(), vec![Sample { t: 1, v: 2.0 }])]);
        let d = decode(&body, 1 << 20).unwrap();
        assert_eq!(d.series, vec![(l, vec![Sample { t: 1, v: 2.0 }])]);
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
        let bad = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "ok".into(),
                    },
                    Label {
                        name: "bad-name".into(),
                        value: "x".into(),
                    },
                ],
                samples: vec![ProtoSample {
                    value: 1.0,
                    timestamp: 1,
                }],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&bad.encode_to_vec())
            .unwrap();
        let e = decode(&body, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("bad-name"), "{e}");
    }
}
