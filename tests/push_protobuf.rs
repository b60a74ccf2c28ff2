//! Pushes in the protobuf delimited format, as Go and Java clients send
//! them, plain and gzip-compressed: the body is built by Google's protobuf
//! library for Python from client_model's `MetricFamily` schema, pushed to
//! the real Pushgateway (Debian's `prometheus-pushgateway`) and to mlmon,
//! and both expose the same series on `/metrics`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, Mlmon, Proc};

/// Writes a delimited stream of MetricFamily messages to stdout: a
/// counter, a labelled gauge, a summary and a histogram.
const ENCODER: &str = r#"
import sys
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.encoder import _VarintBytes
F = descriptor_pb2.FieldDescriptorProto
fdp = descriptor_pb2.FileDescriptorProto(name="metrics.proto", package="io.prometheus.client", syntax="proto2")
def msg(name, fields):
    m = fdp.message_type.add(name=name)
    for fname, num, typ, label, tname in fields:
        f = m.field.add(name=fname, number=num, type=typ, label=label)
        if tname:
            f.type_name = ".io.prometheus.client." + tname
O, R, D, S, U, I, M, E = F.LABEL_OPTIONAL, F.LABEL_REPEATED, F.TYPE_DOUBLE, F.TYPE_STRING, F.TYPE_UINT64, F.TYPE_INT64, F.TYPE_MESSAGE, F.TYPE_ENUM
msg("LabelPair", [("name", 1, S, O, None), ("value", 2, S, O, None)])
msg("Gauge", [("value", 1, D, O, None)])
msg("Counter", [("value", 1, D, O, None)])
msg("Quantile", [("quantile", 1, D, O, None), ("value", 2, D, O, None)])
msg("Summary", [("sample_count", 1, U, O, None), ("sample_sum", 2, D, O, None), ("quantile", 3, M, R, "Quantile")])
msg("Untyped", [("value", 1, D, O, None)])
msg("Bucket", [("cumulative_count", 1, U, O, None), ("upper_bound", 2, D, O, None)])
msg("Histogram", [("sample_count", 1, U, O, None), ("sample_sum", 2, D, O, None), ("bucket", 3, M, R, "Bucket")])
msg("Metric", [("label", 1, M, R, "LabelPair"), ("gauge", 2, M, O, "Gauge"), ("counter", 3, M, O, "Counter"),
               ("summary", 4, M, O, "Summary"), ("untyped", 5, M, O, "Untyped"), ("timestamp_ms", 6, I, O, None),
               ("histogram", 7, M, O, "Histogram")])
e = fdp.enum_type.add(name="MetricType")
for i, n in enumerate(["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM"]):
    e.value.add(name=n, number=i)
msg("MetricFamily", [("name", 1, S, O, None), ("help", 2, S, O, None), ("type", 3, E, O, "MetricType"), ("metric", 4, M, R, "Metric")])
pool = descriptor_pool.DescriptorPool()
pool.Add(fdp)
MF = message_factory.GetMessageClass(pool.FindMessageTypeByName("io.prometheus.client.MetricFamily"))
out = b""
def add(f):
    global out
    b = f.SerializeToString()
    out += _VarintBytes(len(b)) + b
f = MF(name="ml_pipeline_runs_total", help="Pipeline runs.", type=0)
f.metric.add(counter={"value": 7})
add(f)
f = MF(name="ml_model_r2_score", help="R2 on the test split.", type=1)
m = f.metric.add(gauge={"value": 0.87}); m.label.add(name="model", value="enet")
m = f.metric.add(gauge={"value": 0.79}); m.label.add(name="model", value="ridge")
add(f)
f = MF(name="ml_batch_seconds", help="Batch time.", type=2)
m = f.metric.add(summary={"sample_count": 10, "sample_sum": 4.5})
m.summary.quantile.add(quantile=0.5, value=0.4); m.summary.quantile.add(quantile=0.99, value=0.9)
add(f)
f = MF(name="ml_rows_per_batch", help="Rows.", type=4)
m = f.metric.add(histogram={"sample_count": 6, "sample_sum": 1500})
m.histogram.bucket.add(cumulative_count=2, upper_bound=100); m.histogram.bucket.add(cumulative_count=5, upper_bound=500)
add(f)
sys.stdout.buffer.write(out)
"#;

const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The lines of `/metrics` about group `job`, but the push times (which
/// differ).
fn group_lines(url: &str, job: &str) -> Vec<String> {
    let text = client().get(url).send().unwrap().text().unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&format!("job=\"{job}\"")) && !l.starts_with("push_"))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn protobuf_and_gzip_pushes_match_the_pushgateway() {
    if !common::have(&["prometheus-pushgateway", "python3"]) {
        return;
    }
    let body = Command::new("python3")
        .args(["-c", ENCODER])
        .output()
        .unwrap();
    assert!(
        body.status.success(),
        "the protobuf encoder failed: {}",
        String::from_utf8_lossy(&body.stderr)
    );
    let body = body.stdout;
    let gzipped = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let gw = Command::new(common::require("prometheus-pushgateway"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gw = Proc(gw);
    let gw = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client().get(format!("{gw}/-/ready")).send().is_err() {
        assert!(Instant::now() < deadline, "the Pushgateway did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = Mlmon::start(None);
    for (job, payload, gzip) in [("pb", &body, false), ("pbgz", &gzipped, true)] {
        for base in [gw.as_str(), m.url("").as_str()] {
            let mut req = client()
                .put(format!("{base}/metrics/job/{job}"))
                .header("Content-Type", PROTOBUF)
                .body(payload.clone());
            if gzip {
                req = req.header("Content-Encoding", "gzip");
            }
            let r = req.send().unwrap();
            assert!(r.status().is_success(), "{base} {job}: {}", r.status());
        }
        let want = group_lines(&format!("{gw}/metrics"), job);
        assert!(want.len() >= 10, "{want:?}");
        assert_eq!(group_lines(&m.url("/metrics"), job), want, "{job}");
    }
    // The stored series are the same values.
    assert_eq!(
        m.value("ml_model_r2_score{job=\"pbgz\",model=\"ridge\"}"),
        Some(0.79)
    );
    // A truncated body is refused with the message it broke in; nothing
    // of it is kept.
    let r = client()
        .put(m.url("/metrics/job/broken"))
        .header("Content-Type", PROTOBUF)
        .body(body[..body.len() - 5].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("protobuf message 4"));
    assert!(group_lines(&m.url("/metrics"), "broken").is_empty());
}
