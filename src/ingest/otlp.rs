//! OpenTelemetry metrics (OTLP/HTTP, protobuf or JSON) translated as
//! Prometheus 3 translates them with its default `UnderscoreEscapingWithSuffixes`
//! strategy (prometheus/otlptranslator and Prometheus'
//! `prometheusremotewrite` package):
//!
//! - names: characters outside `[a-zA-Z0-9:]` split the name into tokens
//!   joined by `_`; the unit becomes a suffix (`s` → `seconds`, `By` →
//!   `bytes`, …; `x/y` → `x_per_y`; `{…}` annotations dropped), unless a
//!   token already is it; monotonic sums end in `_total`, gauges with unit
//!   `1` in `_ratio`; a leading digit gets a `_`;
//! - labels: the data point's attributes with invalid characters turned
//!   into `_` (a leading digit gets `key_`; keys that collide join their
//!   values with `;`), `job` from `service.namespace/service.name`,
//!   `instance` from `service.instance.id`, resource attributes named in
//!   `otlp.promote_resource_attributes`; every other resource attribute
//!   goes on `target_info` (value 1);
//! - gauges and sums one sample a point; classic histograms cumulative
//!   `_bucket{le}` with `+Inf`, `_sum`, `_count`; summaries `{quantile}`,
//!   `_sum`, `_count`; a point flagged "no recorded value" a stale marker.
//!
//! Delta temporality and exponential histograms are refused per data point
//! (OTLP's partial success says how many and why), as Prometheus refuses
//! delta without its conversion feature.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    self as metric_data, metric, number_data_point, Metric,
};
use prost::Message;

use crate::config::OtlpConfig;
use crate::model::{stale_nan, write_float, FastMap, Labels, Sample, Timestamp};

/// What a request turned into.
#[derive(Debug, Default)]
pub struct Translated {
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// Data points refused, and why (the first few reasons).
    pub rejected: u64,
    pub errors: Vec<String>,
}

impl Translated {
    fn reject(&mut self, n: usize, why: String) {
        self.rejected += n as u64;
        if self.errors.len() < 8 && !self.errors.contains(&why) {
            self.errors.push(why);
        }
    }
}

/// A protobuf `ExportMetricsServiceRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    ExportMetricsServiceRequest::decode(body).map_err(|e| format!("invalid OTLP protobuf: {e}"))
}

/// An OTLP/JSON request. The spec writes 64-bit integers as strings and
/// allows numbers; enums as integers (names accepted too). Normalised
/// first to what the generated types' serde expects.
pub fn decode_json(body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid OTLP JSON: {e}"))?;
    normalize_json(&mut v);
    serde_json::from_value(v).map_err(|e| format!("invalid OTLP JSON: {e}"))
}

fn normalize_json(v: &mut serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            for (k, item) in map.iter_mut() {
                match (k.as_str(), &*item) {
                    ("timeUnixNano" | "startTimeUnixNano", J::Number(n)) => {
                        *item = J::String(n.to_string());
                    }
                    ("asInt" | "count" | "zeroCount", J::String(s)) => {
                        if let Ok(n) = s.parse::<i64>() {
                            *item = J::from(n);
                        } else if let Ok(n) = s.parse::<u64>() {
                            *item = J::from(n);
                        }
                    }
                    ("bucketCounts", J::Array(_)) => {
                        if let J::Array(a) = item {
                            for c in a.iter_mut() {
                                if let Some(n) = c.as_str().and_then(|s| s.parse::<u64>().ok()) {
                                    *c = J::from(n);
                                }
                            }
                        }
                    }
                    ("aggregationTemporality", J::String(s)) => {
                        let n = match s.as_str() {
                            "AGGREGATION_TEMPORALITY_DELTA" => 1,
                            "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
                            _ => 0,
                        };
                        *item = J::from(n);
                    }
                    _ => normalize_json(item),
                }
            }
        }
        J::Array(a) => a.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Prometheus' unit names for UCUM units.
fn unit_name(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_name(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Invalid characters to `_`, runs of `_` to one, no leading `_`.
fn clean_unit(u: &str) -> String {
    let mapped: String = u
        .chars()
        .map(|c| if valid_name_char(c) { c } else { '_' })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_start_matches('_').to_string()
}

/// How a metric counts for its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    Summary,
}

/// The Prometheus name of an OTLP metric (`normalizeName` with suffixes).
fn metric_name(name: &str, unit: &str, kind: Kind) -> Option<String> {
    let mut tokens: Vec<String> = name
        .split(|c: char| !valid_name_char(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.trim(), None),
    };
    let mut main_suffix = if !main.is_empty() && !main.contains(['{', '}']) {
        clean_unit(unit_name(main))
    } else {
        String::new()
    };
    let mut per_suffix = match per {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            clean_unit(&format!("per_{}", per_unit_name(p)))
        }
        _ => String::new(),
    };
    if tokens.contains(&main_suffix) {
        main_suffix.clear();
    }
    if per_suffix == "per_" {
        per_suffix.clear();
    } else {
        per_suffix = per_suffix.trim_end_matches('_').to_string();
        if tokens.contains(&per_suffix) {
            per_suffix.clear();
        }
    }
    if !per_suffix.is_empty() {
        main_suffix = main_suffix.trim_end_matches('_').to_string();
    }
    if !main_suffix.is_empty() {
        tokens.push(main_suffix);
    }
    if !per_suffix.is_empty() {
        tokens.push(per_suffix);
    }
    if kind == Kind::MonotonicCounter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    (!out.is_empty() && out.chars().any(|c| c != '_')).then_some(out)
}

/// A label name as Prometheus writes an attribute key.
fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out.chars().any(|c| c != '_').then_some(out)
}

/// An attribute's value as a label value (arrays and maps as JSON).
fn value_text(v: &Option<AnyValue>) -> String {
    fn json(v: &Option<AnyValue>) -> serde_json::Value {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            None => serde_json::Value::Null,
            Some(any_value::Value::StringValue(s)) => s.clone().into(),
            Some(any_value::Value::BoolValue(b)) => (*b).into(),
            Some(any_value::Value::IntValue(i)) => (*i).into(),
            Some(any_value::Value::DoubleValue(d)) => serde_json::json!(d),
            Some(any_value::Value::BytesValue(b)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(b).into()
            }
            Some(any_value::Value::ArrayValue(a)) => {
                a.values.iter().map(|x| json(&Some(x.clone()))).collect()
            }
            Some(any_value::Value::KvlistValue(kv)) => kv
                .values
                .iter()
                .map(|p| (p.key.clone(), json(&p.value)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => {
            let mut s = String::new();
            write_float(&mut s, *d);
            s
        }
        _ => json(v).to_string(),
    }
}

/// Attributes as label pairs: names sanitised, colliding keys' values
/// joined with `;` in key order.
fn attribute_labels(attrs: &[KeyValue], out: &mut BTreeMap<String, String>) {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut mine: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let Some(name) = label_name(&kv.key) else {
            continue;
        };
        let value = value_text(&kv.value);
        match mine.get_mut(&name) {
            Some(v) => {
                v.push(';');
                v.push_str(&value);
            }
            None => {
                mine.insert(name, value);
            }
        }
    }
    out.extend(mine);
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE: &str = "service.instance.id";

/// Translates a request; series that fail validation are the caller's
/// (the store refuses them with a reason).
pub fn translate(req: &ExportMetricsServiceRequest, cfg: &OtlpConfig) -> Translated {
    let mut out = Translated::default();
    let mut series: FastMap<Labels, Vec<Sample>> = FastMap::default();
    for rm in &req.resource_metrics {
        let attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let get = |k: &str| {
            attrs
                .iter()
                .find(|a| a.key == k)
                .map(|a| value_text(&a.value))
        };
        // What every series of the resource carries.
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        let promoted: Vec<KeyValue> = attrs
            .iter()
            .filter(|a| cfg.promote_resource_attributes.contains(&a.key))
            .cloned()
            .collect();
        attribute_labels(&promoted, &mut base);
        let job = match (get(SERVICE_NAMESPACE), get(SERVICE_NAME)) {
            (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
            (_, name) => name,
        };
        let instance = get(SERVICE_INSTANCE);
        let mut newest: Option<Timestamp> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                translate_metric(
                    m,
                    &base,
                    &job,
                    &instance,
                    &mut series,
                    &mut out,
                    &mut newest,
                );
            }
        }
        // target_info: the resource's other attributes.
        let identifying = [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE];
        let info: Vec<KeyValue> = attrs
            .iter()
            .filter(|a| {
                cfg.keep_identifying_resource_attributes || !identifying.contains(&a.key.as_str())
            })
            .cloned()
            .collect();
        if let (false, Some(t)) = (info.is_empty(), newest) {
            let mut l = BTreeMap::new();
            attribute_labels(&info, &mut l);
            if let Some(j) = &job {
                l.insert("job".into(), j.clone());
            }
            if let Some(i) = &instance {
                l.insert("instance".into(), i.clone());
            }
            l.insert("__name__".into(), "target_info".into());
            if let Ok(labels) = Labels::new(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                series.entry(labels).or_default().push(Sample { t, v: 1.0 });
            }
        }
    }
    for (labels, mut samples) in series {
        samples.sort_by_key(|s| s.t);
        samples.dedup_by_key(|s| s.t);
        out.series.push((labels, samples));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn translate_metric(
    m: &Metric,
    base: &BTreeMap<String, String>,
    job: &Option<String>,
    instance: &Option<String>,
    series: &mut FastMap<Labels, Vec<Sample>>,
    out: &mut Translated,
    newest: &mut Option<Timestamp>,
) {
    const DELTA: i32 = 1;
    let Some(data) = &m.data else {
        return;
    };
    let kind = match data {
        metric::Data::Gauge(_) => Kind::Gauge,
        metric::Data::Sum(s) if s.is_monotonic => Kind::MonotonicCounter,
        metric::Data::Sum(_) => Kind::NonMonotonicCounter,
        metric::Data::Histogram(_) => Kind::Histogram,
        metric::Data::Summary(_) => Kind::Summary,
        metric::Data::ExponentialHistogram(h) => {
            out.reject(
                h.data_points.len(),
                format!("exponential histogram {:?} is not supported (it would be a native histogram); use explicit bucket boundaries", m.name),
            );
            return;
        }
    };
    let delta = match data {
        metric::Data::Sum(s) => s.aggregation_temporality == DELTA,
        metric::Data::Histogram(h) => h.aggregation_temporality == DELTA,
        _ => false,
    };
    if delta {
        let n = match data {
            metric::Data::Sum(s) => s.data_points.len(),
            metric::Data::Histogram(h) => h.data_points.len(),
            _ => 0,
        };
        out.reject(
            n,
            format!(
                "invalid temporality and type combination for metric {:?}",
                m.name
            ),
        );
        return;
    }
    let Some(name) = metric_name(&m.name, &m.unit, kind) else {
        let n = data_points(data);
        out.reject(n, format!("metric name {:?} normalises to nothing", m.name));
        return;
    };
    let mut add = |attrs: &[KeyValue],
                   suffix: &str,
                   extra: Option<(&str, String)>,
                   t_ns: u64,
                   v: f64,
                   out: &mut Translated| {
        let mut l = base.clone();
        attribute_labels(attrs, &mut l);
        if let Some(j) = job {
            l.insert("job".into(), j.clone());
        }
        if let Some(i) = instance {
            l.insert("instance".into(), i.clone());
        }
        if let Some((k, val)) = extra {
            l.insert(k.into(), val);
        }
        let full = format!("{name}{suffix}");
        l.insert("__name__".into(), full.clone());
        let t = (t_ns / 1_000_000) as Timestamp;
        match Labels::new(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(labels) => {
                *newest = Some(newest.map_or(t, |n: Timestamp| n.max(t)));
                series.entry(labels).or_default().push(Sample { t, v });
            }
            Err(e) => out.reject(1, format!("series of {full}: {e}")),
        }
    };
    const NO_RECORDED_VALUE: u32 = 1;
    let stale = |flags: u32| flags & NO_RECORDED_VALUE != 0;
    match data {
        metric::Data::Gauge(metric_data::Gauge { data_points })
        | metric::Data::Sum(metric_data::Sum { data_points, .. }) => {
            for p in data_points {
                let v = match (stale(p.flags), p.value) {
                    (true, _) => stale_nan(),
                    (_, Some(number_data_point::Value::AsDouble(d))) => d,
                    (_, Some(number_data_point::Value::AsInt(i))) => i as f64,
                    (_, None) => {
                        out.reject(1, format!("a point of {:?} has no value", m.name));
                        continue;
                    }
                };
                add(&p.attributes, "", None, p.time_unix_nano, v, out);
            }
        }
        metric::Data::Histogram(h) => {
            for p in &h.data_points {
                let t = p.time_unix_nano;
                let gone = stale(p.flags);
                let val = |v: f64| if gone { stale_nan() } else { v };
                let mut cumulative = 0u64;
                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                    cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                    let mut le = String::new();
                    write_float(&mut le, *bound);
                    add(
                        &p.attributes,
                        "_bucket",
                        Some(("le", le)),
                        t,
                        val(cumulative as f64),
                        out,
                    );
                }
                add(
                    &p.attributes,
                    "_bucket",
                    Some(("le", "+Inf".into())),
                    t,
                    val(p.count as f64),
                    out,
                );
                if let Some(sum) = p.sum {
                    add(&p.attributes, "_sum", None, t, val(sum), out);
                }
                add(&p.attributes, "_count", None, t, val(p.count as f64), out);
            }
        }
        metric::Data::Summary(s) => {
            for p in &s.data_points {
                let t = p.time_unix_nano;
                let gone = stale(p.flags);
                let val = |v: f64| if gone { stale_nan() } else { v };
                for q in &p.quantile_values {
                    let mut at = String::new();
                    write_float(&mut at, q.quantile);
                    add(
                        &p.attributes,
                        "",
                        Some(("quantile", at)),
                        t,
                        val(q.value),
                        out,
                    );
                }
                add(&p.attributes, "_sum", None, t, val(p.sum), out);
                add(&p.attributes, "_count", None, t, val(p.count as f64), out);
            }
        }
        metric::Data::ExponentialHistogram(_) => {}
    }
}

fn data_points(d: &metric::Data) -> usize {
    match d {
        metric::Data::Gauge(g) => g.data_points.len(),
        metric::Data::Sum(s) => s.data_points.len(),
        metric::Data::Histogram(h) => h.data_points.len(),
        metric::Data::ExponentialHistogram(h) => h.data_points.len(),
        metric::Data::Summary(s) => s.data_points.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from otlptranslator's `metric_namer_test.go` (with suffixes).
    #[test]
    fn names_as_prometheus_builds_them() {
        let cases = [
            (
                "system.io",
                "By",
                Kind::MonotonicCounter,
                "system_io_bytes_total",
            ),
            (
                "http.server.duration",
                "s",
                Kind::Histogram,
                "http_server_duration_seconds",
            ),
            (
                "system.cpu.utilization",
                "1",
                Kind::Gauge,
                "system_cpu_utilization_ratio",
            ),
            (
                "requests",
                "{request}",
                Kind::MonotonicCounter,
                "requests_total",
            ),
            (
                "throughput",
                "By/s",
                Kind::Gauge,
                "throughput_bytes_per_second",
            ),
            (
                "requests_total",
                "",
                Kind::MonotonicCounter,
                "requests_total",
            ),
            ("memory.usage", "bytes", Kind::Gauge, "memory_usage_bytes"),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("queue.size", "1", Kind::NonMonotonicCounter, "queue_size"),
            ("2xx.count", "", Kind::Gauge, "_2xx_count"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            ("speed", "m/h", Kind::Gauge, "speed_meters_per_hour"),
            (
                "total.requests",
                "",
                Kind::MonotonicCounter,
                "requests_total",
            ),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind).as_deref(),
                Some(want),
                "{name} {unit}"
            );
        }
        assert_eq!(metric_name("...", "", Kind::Gauge), None);
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("http.method").as_deref(), Some("http_method"));
        assert_eq!(label_name("2xx").as_deref(), Some("key_2xx"));
        assert_eq!(label_name("__").as_deref(), None);
        assert_eq!(label_name("a__b").as_deref(), Some("a__b"));
    }
}
