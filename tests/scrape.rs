//! Scraping a real exporter (Python's prometheus_client) and one that dies
//! mid-test, through the real binary: `up`, target and static labels,
//! metric relabeling, stale markers, and `/api/v1/targets`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, Mlmon};
use serde_json::Value;

fn start_exporter(port: u16) -> std::process::Child {
    let script = format!(
        "from prometheus_client import start_http_server, Counter, Gauge\n\
         import time\n\
         g = Gauge('ml_requests_in_flight', 'Requests being served.', ['route'])\n\
         g.labels('/api/predict').set(3)\n\
         c = Counter('predictions', 'Predictions made.')\n\
         c.inc(5)\n\
         start_http_server({port}, addr='127.0.0.1')\n\
         time.sleep(600)\n"
    );
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with prometheus_client (scripts/test.sh installs it)")
}

fn wait_for(what: &str, m: &Mlmon, mut ok: impl FnMut() -> bool) {
    common::wait_for(
        what,
        Duration::from_secs(20),
        || ok().then_some(()),
        || m.log(),
    )
}

#[test]
fn scrapes_a_prometheus_client_target_and_marks_a_dead_one() {
    if !common::have(&["python3:prometheus_client"]) {
        return;
    }
    let port = free_port();
    let mut exporter = start_exporter(port);
    let nobody = free_port();
    let config = [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: api",
        "    static_configs:",
        &format!("      - targets: ['127.0.0.1:{port}']"),
        "        labels: {env: test}",
        "    metric_relabel_configs:",
        "      - source_labels: [__name__]",
        "        regex: 'python_gc_.*'",
        "        action: drop",
        "  - job_name: dead",
        "    static_configs:",
        &format!("      - targets: ['127.0.0.1:{nobody}']"),
    ]
    .join("\n");
    let m = Mlmon::start(Some(&config));
    wait_for("the exporter scraped", &m, || {
        m.value("up{job=\"api\"}") == Some(1.0)
    });
    wait_for("the counter", &m, || {
        m.value("predictions_total{job=\"api\",env=\"test\"}") == Some(5.0)
    });
    let gauge = m.query("ml_requests_in_flight");
    assert_eq!(gauge.len(), 1);
    assert_eq!(gauge[0]["metric"]["route"], "/api/predict");
    assert_eq!(gauge[0]["metric"]["instance"], format!("127.0.0.1:{port}"));
    assert!(m.query("{__name__=~\"python_gc_.*\"}").is_empty());
    assert!(
        m.value("scrape_samples_post_metric_relabeling{job=\"api\"}")
            .unwrap()
            > 0.0
    );
    assert!(m.value("scrape_duration_seconds{job=\"api\"}").unwrap() < 1.0);
    wait_for("the dead target down", &m, || {
        m.value("up{job=\"dead\"}") == Some(0.0)
    });

    let targets: Value = m.json("/api/v1/targets");
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 2, "{targets}");
    let api = active.iter().find(|t| t["scrapePool"] == "api").unwrap();
    assert_eq!(api["health"], "up", "{api}");
    assert_eq!(api["labels"]["env"], "test");
    assert_eq!(api["scrapeUrl"], format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(
        api["discoveredLabels"]["__address__"],
        format!("127.0.0.1:{port}")
    );
    let dead = active.iter().find(|t| t["scrapePool"] == "dead").unwrap();
    assert_eq!(dead["health"], "down");
    assert!(!dead["lastError"].as_str().unwrap().is_empty(), "{dead}");

    // The exporter dies: up goes to 0 and its series end with stale markers.
    exporter.kill().unwrap();
    exporter.wait().unwrap();
    wait_for("the dead exporter noticed", &m, || {
        m.value("up{job=\"api\"}") == Some(0.0)
    });
    assert!(
        m.query("predictions_total").is_empty(),
        "{:?}",
        m.query("predictions_total")
    );
    assert!(m.query("ml_requests_in_flight").is_empty());
    // Still there for the past.
    assert_eq!(m.value("max_over_time(predictions_total[1m])"), Some(5.0));
}
