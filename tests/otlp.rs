//! OpenTelemetry metrics from the real Python SDK (PyPI
//! `opentelemetry-sdk` + `opentelemetry-exporter-otlp-proto-http`): sent by
//! its OTLP/HTTP exporter (protobuf, gzip) and as OTLP/JSON built from the
//! same data, they land as the series Prometheus 3's translation gives.
//! The expected series are written here from Prometheus' rules (each case
//! says which). Bad bodies get clear 4xx answers and store nothing.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{client, Mlmon};
use serde_json::{json, Value};

/// Records one of each instrument under a resource, then sends it with the
/// exporter (`sys.argv[2]` = "export") or prints the OTLP/JSON of it
/// ("json").
const SDK: &str = r#"
import sys, json
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from google.protobuf import json_format

url, mode, run = sys.argv[1], sys.argv[2], sys.argv[3]
resource = Resource.create({
    "service.name": "trainer", "service.namespace": "ml", "service.instance.id": "vm-" + run,
    "deployment.environment": "prod", "host.name": "gpu1",
})
if mode == "export":
    exporter = OTLPMetricExporter(endpoint=url, compression=Compression.Gzip)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
else:
    reader = InMemoryMetricReader()
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("pipeline", "1.0")
meter.create_counter("pipeline.rows.processed", unit="{row}").add(1200, {"stage": "ingest"})
meter.create_counter("data.read", unit="By").add(2048, {"http.method": "GET"})
q = meter.create_up_down_counter("queue.depth", unit="{item}")
q.add(5); q.add(-2)
meter.create_gauge("model.r2", unit="1").set(0.87, {"model": "enet"})
h = meter.create_histogram("stage.duration", unit="s")
for v in (0.5, 2.0, 7.0):
    h.record(v, {"stage": "train"})
if mode == "export":
    assert provider.force_flush(), "export failed"
else:
    data = reader.get_metrics_data()
    print(json_format.MessageToJson(encode_metrics(data), use_integers_for_enums=True))
provider.shutdown()
"#;

fn sdk(url: &str, mode: &str, run: &str) -> String {
    common::run_ok(Command::new("python3").args(["-c", SDK, url, mode, run]))
}

/// Every series of `instance`, as `name{labels}` (without job and
/// instance) → value.
fn stored(m: &Mlmon, instance: &str) -> BTreeMap<String, String> {
    let q = format!("{{instance=\"{instance}\"}}");
    let mut out = BTreeMap::new();
    for r in m.query(&q) {
        let metric = r["metric"].as_object().unwrap();
        assert_eq!(metric["job"], "ml/trainer", "{r}");
        let name = metric["__name__"].as_str().unwrap();
        let labels: Vec<String> = metric
            .iter()
            .filter(|(k, _)| !["__name__", "job", "instance"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        out.insert(
            format!("{name}{{{}}}", labels.join(",")),
            r["value"][1].as_str().unwrap().to_string(),
        );
    }
    out
}

/// What Prometheus 3 stores for the SDK's data (UnderscoreEscapingWithSuffixes,
/// `promote_resource_attributes: [deployment.environment]`).
fn expected() -> BTreeMap<String, String> {
    let env = "deployment_environment=prod";
    let mut want: BTreeMap<String, String> = [
        // Monotonic sum: `{row}` is an annotation (dropped), `_total` added.
        (format!("pipeline_rows_processed_total{{{env},stage=ingest}}"), "1200"),
        // `By` → `bytes`; the attribute's `.` becomes `_`.
        (format!("data_read_bytes_total{{{env},http_method=GET}}"), "2048"),
        // Non-monotonic sum: a gauge, no `_total`, annotation unit dropped.
        (format!("queue_depth{{{env}}}"), "3"),
        // Gauge with unit `1`: `_ratio`.
        (format!("model_r2_ratio{{{env},model=enet}}"), "0.87"),
        // Histogram, unit `s` → `_seconds`: cumulative buckets with the
        // SDK's default boundaries, `+Inf`, `_sum`, `_count`.
        (format!("stage_duration_seconds_sum{{{env},stage=train}}"), "9.5"),
        (format!("stage_duration_seconds_count{{{env},stage=train}}"), "3"),
        // The resource's other attributes on `target_info` (the promoted
        // one too; the identifying ones are job and instance).
        (format!("target_info{{{env},host_name=gpu1,telemetry_sdk_language=python,telemetry_sdk_name=opentelemetry}}"), "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let bounds = [
        "0", "5", "10", "25", "50", "75", "100", "250", "500", "750", "1000", "2500", "5000",
        "7500", "10000", "+Inf",
    ];
    for le in bounds {
        let n = match le {
            "0" => "0",
            "5" => "2",
            _ => "3",
        };
        want.insert(
            format!("stage_duration_seconds_bucket{{{env},le={le},stage=train}}"),
            n.to_string(),
        );
    }
    want
}

/// `target_info` carries every resource attribute but the identifying
/// ones; the SDK adds `telemetry.sdk.*`, whose version changes: compare
/// without it.
fn without_sdk_version(mut m: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let keys: Vec<String> = m
        .keys()
        .filter(|k| k.starts_with("target_info"))
        .cloned()
        .collect();
    for k in keys {
        let v = m.remove(&k).unwrap();
        let cleaned: Vec<&str> = k
            .trim_start_matches("target_info{")
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.starts_with("telemetry_sdk_version="))
            .collect();
        m.insert(format!("target_info{{{}}}", cleaned.join(",")), v);
    }
    m
}

#[test]
fn the_python_sdk_lands_as_prometheus_3_translates_it() {
    if !common::have(&["python3"]) {
        return;
    }
    let ok = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .status()
        .unwrap()
        .success();
    if !ok {
        assert!(
            std::env::var_os("MLMON_REQUIRE_PEERS").is_none(),
            "the OpenTelemetry SDK is missing (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: the OpenTelemetry SDK is not installed");
        return;
    }
    let m = Mlmon::start(Some(
        "otlp:\n  promote_resource_attributes: [deployment.environment]\n",
    ));
    // The exporter: protobuf, gzip, to its default path.
    sdk(&m.url("/v1/metrics"), "export", "1");
    let want = without_sdk_version(expected());
    assert_eq!(without_sdk_version(stored(&m, "vm-1")), want);

    // The same data as OTLP/JSON to Prometheus' path.
    let body = sdk("", "json", "2");
    let r = client()
        .post(m.url("/api/v1/otlp/v1/metrics"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap(), json!({}), "no partial success");
    assert_eq!(without_sdk_version(stored(&m, "vm-2")), want);
}

fn post_json(m: &Mlmon, body: &Value) -> (u16, String) {
    let r = client()
        .post(m.url("/api/v1/otlp/v1/metrics"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn sum(name: &str, temporality: u8, value: &str) -> Value {
    json!({"name": name, "sum": {"aggregationTemporality": temporality, "isMonotonic": true,
        "dataPoints": [{"timeUnixNano": (mlmon::model::now_ms() * 1_000_000).to_string(), "asInt": value}]}})
}

fn request(metrics: Vec<Value>) -> Value {
    json!({"resourceMetrics": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bad"}}]},
        "scopeMetrics": [{"metrics": metrics}]}]})
}

#[test]
fn bad_otlp_bodies_get_clear_answers_and_store_nothing() {
    let m = Mlmon::start(None);
    // Malformed: 400, as Prometheus answers.
    for (ct, body) in [
        (
            "application/x-protobuf",
            b"\xff\xff\xff not protobuf".to_vec(),
        ),
        ("application/json", b"{\"resourceMetrics\": [".to_vec()),
    ] {
        let r = client()
            .post(m.url("/api/v1/otlp/v1/metrics"))
            .header("Content-Type", ct)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{ct}");
        assert!(r.text().unwrap().contains("invalid OTLP"), "{ct}");
    }
    // An unknown media type: 415.
    let r = client()
        .post(m.url("/v1/metrics"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);

    // Delta temporality only: 400 with Prometheus' reason, nothing stored.
    let (status, text) = post_json(&m, &request(vec![sum("jobs.done", 1, "4")]));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("invalid temporality and type combination for metric \"jobs.done\""),
        "{text}"
    );
    assert!(m.query("jobs_done_total").is_empty());

    // Delta beside cumulative: the cumulative one is stored, the answer's
    // partial success counts and explains the other.
    let (status, text) = post_json(
        &m,
        &request(vec![sum("jobs.done", 1, "4"), sum("jobs.started", 2, "9")]),
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    // int64 in the proto3 JSON mapping: a string.
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], json!("1"), "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("jobs.done"));
    assert_eq!(m.value("jobs_started_total{job=\"bad\"}"), Some(9.0));
    assert!(m.query("jobs_done_total").is_empty());

    // 50 MB: refused by size before it is read whole.
    let big = vec![b'x'; 50 << 20];
    let r = client()
        .post(m.url("/v1/metrics"))
        .header("Content-Type", "application/x-protobuf")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    // A gzip bomb: refused once it decompresses past the limit.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 40 << 20]).unwrap();
        e.finish().unwrap()
    };
    let r = client()
        .post(m.url("/v1/metrics"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
}
