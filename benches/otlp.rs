//! OTLP ingest: `cargo bench --bench otlp`, run from the repository root
//! (mlmon's default collectors on, as on a VM). Sends `OTLP_SERIES`
//! (default 10,000) series × `OTLP_EXPORTS` (default 100) exports, as an
//! SDK exports them (every series' current point in one request: half
//! cumulative counters, half gauges, each with three attributes under one
//! resource), as protobuf to `/v1/metrics`; then the same samples by
//! remote write for comparison. Prints mlmon's CPU seconds (user + system)
//! per million data points and the rate; asserts nothing. (Debian's
//! Prometheus 2.42 has no OTLP receiver to compare with.)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{client, Mlmon};
use mlmon::model::{Labels, Sample};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use common::{cpu_seconds, env_number as env};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

/// One export: every series' point at `t_ns`, 100 series per metric.
fn export(series: usize, t_ns: u64, step: u64) -> Vec<u8> {
    let metrics: Vec<Metric> = (0..series / 100)
        .map(|m| {
            let points: Vec<NumberDataPoint> = (0..100)
                .map(|i| NumberDataPoint {
                    attributes: vec![
                        kv("stage", ["ingest", "train", "evaluate"][i % 3]),
                        kv("worker", &format!("w{i}")),
                        kv("host.name", "gpu1"),
                    ],
                    time_unix_nano: t_ns,
                    value: Some(number_data_point::Value::AsDouble(
                        (step * 10 + i as u64) as f64 * 1.5,
                    )),
                    ..Default::default()
                })
                .collect();
            let data = if m % 2 == 0 {
                metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(Gauge {
                    data_points: points,
                })
            };
            Metric {
                name: format!("pipeline.metric.{m}"),
                unit: "s".into(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "trainer"),
                    kv("service.instance.id", "vm-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn main() {
    let series = env("OTLP_SERIES", 10_000).max(100) / 100 * 100;
    let exports = env("OTLP_EXPORTS", 100);
    let m = Mlmon::start_in_repository(Some("web: {max_request_bytes: 268435456}\n"));
    let c = client();
    let pid = m.child.id();
    let t0 = (mlmon::model::now_ms() as u64 - exports as u64 * 15_000) * 1_000_000;
    let bodies: Vec<Vec<u8>> = (0..exports)
        .map(|k| export(series, t0 + k as u64 * 15_000_000_000, k as u64))
        .collect();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    for b in &bodies {
        let r = c
            .post(m.url("/v1/metrics"))
            .header("Content-Type", "application/x-protobuf")
            .body(b.clone())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0);
    let points = (series * exports) as f64;
    println!(
        "otlp: {series} series x {exports} exports = {points} points in {wall:.2} s ({:.0}/s); mlmon CPU {cpu:.2} s = {:.3} CPU-s per 1M points",
        points / wall,
        cpu / points * 1e6
    );

    // The same samples by remote write, for comparison (other series).
    let batches: Vec<Vec<(Labels, Vec<Sample>)>> = (0..exports)
        .map(|k| {
            (0..series)
                .map(|i| {
                    let name = format!("rw_metric_{}", i / 100);
                    let worker = format!("w{}", i % 100);
                    let l = Labels::new([
                        ("__name__", name.as_str()),
                        ("job", "trainer"),
                        ("instance", "vm-1"),
                        ("stage", ["ingest", "train", "evaluate"][i % 3]),
                        ("worker", worker.as_str()),
                        ("host_name", "gpu1"),
                    ])
                    .unwrap();
                    let s = Sample {
                        t: (t0 / 1_000_000) as i64 + k as i64 * 15_000,
                        v: (k * 10 + i) as f64 * 1.5,
                    };
                    (l, vec![s])
                })
                .collect()
        })
        .collect();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    for b in &batches {
        common::remote_write(&c, &m.url("/api/v1/write"), b);
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0);
    println!(
        "remote write, same samples: {wall:.2} s ({:.0}/s); mlmon CPU {cpu:.2} s = {:.3} CPU-s per 1M samples",
        points / wall,
        cpu / points * 1e6
    );
}
