//! mlmon against a real Prometheus (Debian package `prometheus`) and
//! `promtool`: Prometheus scrapes `/metrics` and `/federate` with no scrape
//! errors, `promtool check metrics` has nothing to say about `/metrics`, and
//! Prometheus' own remote_write lands samples that mlmon returns exactly as
//! Prometheus stores them.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn push_sample_data(c: &reqwest::blocking::Client, m: &Mlmon) {
    let body = "# HELP ml_model_r2_score R2 of the model on the test split.\n# TYPE ml_model_r2_score gauge\nml_model_r2_score{model=\"enet\"} 0.87\n\
                # HELP ml_pipeline_runs_total Pipeline runs.\n# TYPE ml_pipeline_runs_total counter\nml_pipeline_runs_total 3\n\
                # HELP ml_stage_duration_seconds Stage durations.\n# TYPE ml_stage_duration_seconds histogram\n\
                ml_stage_duration_seconds_bucket{le=\"1\"} 1\nml_stage_duration_seconds_bucket{le=\"+Inf\"} 2\n\
                ml_stage_duration_seconds_sum 3.5\nml_stage_duration_seconds_count 2\n";
    let r = c
        .put(m.url("/metrics/job/ml-pipeline/instance/vm-1"))
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
}

#[test]
fn promtool_check_metrics_reports_nothing() {
    if !common::have(&["promtool"]) {
        return;
    }
    let promtool = require("promtool");
    let m = Mlmon::start(None);
    let c = client();
    push_sample_data(&c, &m);
    // promtool reads the text format (0.0.4); the OpenMetrics rendering is
    // covered by Prometheus scraping it in the next test.
    let text = c
        .get(m.url("/metrics"))
        .header("Accept", "text/plain")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

fn prometheus_query(c: &reqwest::blocking::Client, base: &str, q: &str) -> serde_json::Value {
    let v: serde_json::Value = c
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].clone()
}

#[test]
fn prometheus_scrapes_and_remote_writes_without_errors() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let scraped = Mlmon::start(None);
    let receiver = Mlmon::start(None);
    let c = client();
    push_sample_data(&c, &scraped);

    let config = format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mlmon
    static_configs: [{{targets: ['127.0.0.1:{p}']}}]
  - job_name: federate
    metrics_path: /federate
    honor_labels: true
    params:
      'match[]': ['{{job=~".+"}}']
    static_configs: [{{targets: ['127.0.0.1:{p}']}}]
remote_write:
  - url: http://127.0.0.1:{r}/api/v1/write
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}
"#,
        p = scraped.port,
        r = receiver.port
    );
    let prom = Prometheus::start(&config, &[]);
    let base = prom.base.clone();

    // Wait for several scrapes of both jobs.
    let start = Instant::now();
    loop {
        let r = prometheus_query(&c, &base, "count_over_time(up[1m])");
        let enough = r.as_array().unwrap().len() == 2
            && r.as_array()
                .unwrap()
                .iter()
                .all(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 5.0);
        if enough {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus did not scrape: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = json(&c, &format!("{base}/api/v1/targets"));
    for t in targets["data"]["activeTargets"].as_array().unwrap() {
        assert_eq!(t["health"], "up", "{t}");
        assert_eq!(t["lastError"], "", "{t}");
    }
    for q in [
        "min_over_time(up[1m])",
        "min_over_time(scrape_samples_scraped[1m])",
    ] {
        for s in prometheus_query(&c, &base, q).as_array().unwrap() {
            assert!(
                s["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 1.0,
                "{q}: {s}"
            );
        }
    }
    // Prometheus' own counters of rejected scraped samples.
    let own = c
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_exceeded_sample_limit_total",
        "prometheus_target_scrapes_exemplar_out_of_order_total",
    ] {
        let line = own
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(line, format!("{name} 0"));
    }
    let federated = prometheus_query(&c, &base, "ml_model_r2_score{job=\"ml-pipeline\"}");
    assert_eq!(
        federated[0]["metric"]["job"], "ml-pipeline",
        "honor_labels keeps the pushed job: {federated}"
    );
    assert_eq!(federated[0]["value"][1], "0.87");

    // Remote write: what Prometheus stored up to `t` is exactly what mlmon has.
    std::thread::sleep(Duration::from_secs(1));
    let t = mlmon::model::now_ms() as f64 / 1000.0 - 1.0;
    std::thread::sleep(Duration::from_secs(4));
    let q = "{__name__=~\"up|scrape_duration_seconds|mlmon_storage_series\"}[1m]";
    let at = format!("{t:.3}");
    let want: serde_json::Value = c
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q), ("time", &at)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let got: serde_json::Value = c
        .get(receiver.url("/api/v1/query"))
        .query(&[("query", q), ("time", &at)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let want = &want["data"]["result"];
    let got = &got["data"]["result"];
    assert!(want.as_array().unwrap().len() >= 5, "{want}");
    assert_eq!(got, want, "mlmon's copy differs from Prometheus' own");
}
