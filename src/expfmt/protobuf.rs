//! The Prometheus protobuf exposition format, as Go clients push it to a
//! Pushgateway: `application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`, a stream
//! of length-prefixed `MetricFamily` messages (client_model's
//! `metrics.proto`, declared here with prost for the fields that carry
//! classic samples). Decoded into the same families the text parser
//! gives, so pushes go through one set of checks: counters and gauges as
//! one sample, summaries as quantiles plus `_sum` and `_count`, classic
//! histograms as cumulative `_bucket{le}` (with `+Inf`) plus `_sum` and
//! `_count`. Native histograms (no classic buckets) are refused by name.

use prost::Message;

use super::{MetricFamily, MetricType, ParseError, ParsedSample};

/// The `Content-Type` value of the delimited protobuf format.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether a `Content-Type` names the protobuf format (delimited, the
/// one clients push).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .trim_start()
        .starts_with("application/vnd.google.protobuf")
}

#[derive(Clone, PartialEq, Message)]
struct PbFamily {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    help: Option<String>,
    #[prost(int32, optional, tag = "3")]
    r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    metric: Vec<PbMetric>,
    #[prost(string, optional, tag = "5")]
    unit: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PbMetric {
    #[prost(message, repeated, tag = "1")]
    label: Vec<PbLabel>,
    #[prost(message, optional, tag = "2")]
    gauge: Option<PbValue>,
    #[prost(message, optional, tag = "3")]
    counter: Option<PbValue>,
    #[prost(message, optional, tag = "4")]
    summary: Option<PbSummary>,
    #[prost(message, optional, tag = "5")]
    untyped: Option<PbValue>,
    #[prost(int64, optional, tag = "6")]
    timestamp_ms: Option<i64>,
    #[prost(message, optional, tag = "7")]
    histogram: Option<PbHistogram>,
}

#[derive(Clone, PartialEq, Message)]
struct PbLabel {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// `Gauge`, `Counter` and `Untyped` all keep their value in field 1.
#[derive(Clone, PartialEq, Message)]
struct PbValue {
    #[prost(double, optional, tag = "1")]
    value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
struct PbSummary {
    #[prost(uint64, optional, tag = "1")]
    sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    quantile: Vec<PbQuantile>,
}

#[derive(Clone, PartialEq, Message)]
struct PbQuantile {
    #[prost(double, optional, tag = "1")]
    quantile: Option<f64>,
    #[prost(double, optional, tag = "2")]
    value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
struct PbHistogram {
    #[prost(uint64, optional, tag = "1")]
    sample_count: Option<u64>,
    #[prost(double, optional, tag = "4")]
    sample_count_float: Option<f64>,
    #[prost(double, optional, tag = "2")]
    sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    bucket: Vec<PbBucket>,
    /// Native histograms: the schema and their spans.
    #[prost(sint32, optional, tag = "5")]
    schema: Option<i32>,
    #[prost(message, repeated, tag = "12")]
    positive_span: Vec<PbSpan>,
    #[prost(message, repeated, tag = "9")]
    negative_span: Vec<PbSpan>,
}

#[derive(Clone, PartialEq, Message)]
struct PbSpan {
    #[prost(sint32, optional, tag = "1")]
    offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    length: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct PbBucket {
    #[prost(uint64, optional, tag = "1")]
    cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "4")]
    cumulative_count_float: Option<f64>,
    #[prost(double, optional, tag = "2")]
    upper_bound: Option<f64>,
}

/// Decodes a stream of length-delimited `MetricFamily` messages. Errors
/// name the message (1-based, in `line`) and why.
pub fn parse_delimited(mut body: &[u8]) -> Result<Vec<MetricFamily>, ParseError> {
    let mut out = Vec::new();
    let mut n = 0;
    while !body.is_empty() {
        n += 1;
        let err = |reason: String| ParseError {
            line: n,
            reason: format!("protobuf message {n}: {reason}"),
        };
        let f = PbFamily::decode_length_delimited(&mut body)
            .map_err(|e| err(format!("not a MetricFamily: {e}")))?;
        out.push(family(f).map_err(err)?);
    }
    Ok(out)
}

/// A label value for a float, as the text format writes it.
fn float_text(v: f64) -> String {
    let mut s = String::new();
    crate::model::write_float(&mut s, v);
    s
}

fn family(f: PbFamily) -> Result<MetricFamily, String> {
    let name = f
        .name
        .filter(|n| !n.is_empty())
        .ok_or("a family without a name")?;
    let typ = match f.r#type.unwrap_or(0) {
        0 => MetricType::Counter,
        1 => MetricType::Gauge,
        2 => MetricType::Summary,
        3 => MetricType::Untyped,
        4 => MetricType::Histogram,
        5 => MetricType::GaugeHistogram,
        t => return Err(format!("family {name}: unknown metric type {t}")),
    };
    let mut samples = Vec::new();
    for m in f.metric {
        let labels: Vec<(String, String)> = m
            .label
            .into_iter()
            .map(|l| (l.name.unwrap_or_default(), l.value.unwrap_or_default()))
            .collect();
        let ts = m.timestamp_ms;
        let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
            let mut l = labels.clone();
            if let Some((k, v)) = extra {
                l.push((k.to_string(), v));
            }
            samples.push(ParsedSample {
                name: format!("{name}{suffix}"),
                labels: l,
                value,
                timestamp_ms: ts,
                line: 0,
            });
        };
        let value = |v: Option<PbValue>, what: &str| {
            v.and_then(|v| v.value)
                .ok_or_else(|| format!("family {name}: a {what} metric without its value"))
        };
        match typ {
            MetricType::Counter => push("", None, value(m.counter, "counter")?),
            MetricType::Gauge => push("", None, value(m.gauge, "gauge")?),
            MetricType::Untyped => push("", None, value(m.untyped, "untyped")?),
            MetricType::Summary => {
                let s = m.summary.ok_or_else(|| {
                    format!("family {name}: a summary metric without its summary")
                })?;
                for q in s.quantile {
                    let at = float_text(q.quantile.unwrap_or(0.0));
                    push("", Some(("quantile", at)), q.value.unwrap_or(0.0));
                }
                push("_sum", None, s.sample_sum.unwrap_or(0.0));
                push("_count", None, s.sample_count.unwrap_or(0) as f64);
            }
            MetricType::Histogram | MetricType::GaugeHistogram => {
                let h = m.histogram.ok_or_else(|| {
                    format!("family {name}: a histogram metric without its histogram")
                })?;
                let native = h.schema.is_some()
                    || !h.positive_span.is_empty()
                    || !h.negative_span.is_empty();
                if h.bucket.is_empty() && native {
                    return Err(format!(
                        "family {name}: native histograms are not supported; push classic buckets"
                    ));
                }
                let count = h
                    .sample_count_float
                    .unwrap_or(h.sample_count.unwrap_or(0) as f64);
                let mut inf = false;
                for b in h.bucket {
                    let le = b.upper_bound.unwrap_or(f64::INFINITY);
                    inf |= le == f64::INFINITY;
                    let c = b
                        .cumulative_count_float
                        .unwrap_or(b.cumulative_count.unwrap_or(0) as f64);
                    push("_bucket", Some(("le", float_text(le))), c);
                }
                if !inf {
                    push("_bucket", Some(("le", "+Inf".to_string())), count);
                }
                let (sum, cnt) = if typ == MetricType::GaugeHistogram {
                    ("_gsum", "_gcount")
                } else {
                    ("_sum", "_count")
                };
                push(sum, None, h.sample_sum.unwrap_or(0.0));
                push(cnt, None, count);
            }
            MetricType::Info | MetricType::StateSet => unreachable!("not protobuf types"),
        }
    }
    Ok(MetricFamily {
        name,
        help: f.help,
        typ,
        unit: f.unit.filter(|u| !u.is_empty()),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delimited(families: &[PbFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in families {
            f.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn families_become_the_text_parsers_samples() {
        let body = delimited(&[
            PbFamily {
                name: Some("jobs_total".into()),
                help: Some("Jobs.".into()),
                r#type: Some(0),
                metric: vec![PbMetric {
                    label: vec![PbLabel {
                        name: Some("stage".into()),
                        value: Some("train".into()),
                    }],
                    counter: Some(PbValue { value: Some(3.0) }),
                    ..Default::default()
                }],
                unit: None,
            },
            PbFamily {
                name: Some("latency_seconds".into()),
                help: None,
                r#type: Some(4),
                metric: vec![PbMetric {
                    histogram: Some(PbHistogram {
                        sample_count: Some(4),
                        sample_sum: Some(2.5),
                        bucket: vec![PbBucket {
                            cumulative_count: Some(3),
                            upper_bound: Some(0.5),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                unit: None,
            },
        ]);
        let f = parse_delimited(&body).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].samples[0].name, "jobs_total");
        assert_eq!(
            f[0].samples[0].labels,
            vec![("stage".into(), "train".into())]
        );
        let names: Vec<(String, f64)> = f[1]
            .samples
            .iter()
            .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
            .collect();
        assert_eq!(
            names,
            vec![
                ("latency_seconds_bucket[(\"le\", \"0.5\")]".to_string(), 3.0),
                (
                    "latency_seconds_bucket[(\"le\", \"+Inf\")]".to_string(),
                    4.0
                ),
                ("latency_seconds_sum[]".to_string(), 2.5),
                ("latency_seconds_count[]".to_string(), 4.0),
            ]
        );
        let err = parse_delimited(&body[..body.len() - 3]).unwrap_err();
        assert!(err.reason.contains("protobuf message 2"), "{err}");
    }
}
