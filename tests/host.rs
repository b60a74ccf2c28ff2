//! The host collector against a real `prometheus-node-exporter` (Debian) on
//! the same machine: the same families, the same label sets, values within
//! a tolerance that allows for the moment between the two readings. Then
//! `mlmon serve` stores them, and the original stack's alert expressions
//! evaluate on them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{client, free_port, require, wait_ready, Mlmon, Proc};
use mlmon::expfmt::{self, Format};
use mlmon::ingest::host;

type Family = BTreeMap<Vec<(String, String)>, f64>;

fn node_exporter_families() -> BTreeMap<String, Family> {
    let bin = require("prometheus-node-exporter");
    let port = free_port();
    let mut child = Command::new(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args([
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.filesystem",
            "--collector.netdev",
            "--collector.loadavg",
            "--collector.stat",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_ready(&url, Duration::from_secs(20), &mut child);
    let _proc = Proc(child);
    let body = client().get(&url).send().unwrap().text().unwrap();
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for fam in expfmt::parse(&body, Format::Text).unwrap() {
        for s in fam.samples {
            if !s.name.starts_with("node_")
                || s.name.starts_with("node_scrape_")
                || s.name.starts_with("node_exporter_")
            {
                continue;
            }
            let mut labels = s.labels.clone();
            labels.sort();
            out.entry(s.name.clone())
                .or_default()
                .insert(labels, s.value);
        }
    }
    out
}

fn ours() -> BTreeMap<String, Family> {
    let snap = host::collect();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for (name, labels, v) in snap.points {
        let mut labels: Vec<(String, String)> = labels
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        labels.sort();
        out.entry(name).or_default().insert(labels, v);
    }
    out
}

/// How far apart two readings of `name` a moment apart may be.
fn close(name: &str, theirs: f64, ours: f64) -> bool {
    let diff = (theirs - ours).abs();
    let rel = diff / theirs.abs().max(ours.abs()).max(1e-300);
    match name {
        "node_boot_time_seconds" => diff <= 1.0,
        "node_filesystem_size_bytes" | "node_filesystem_files" | "node_filesystem_readonly" => {
            diff == 0.0
        }
        n if n.starts_with("node_load") => diff <= 1.0,
        n if n.starts_with("node_cpu") => diff <= 5.0 || rel <= 0.01,
        n if n.starts_with("node_procs") => diff <= 10.0,
        n if n.starts_with("node_memory_") => diff <= 256.0 * 1024.0 * 1024.0 || rel <= 0.1,
        n if n.starts_with("node_network_") => diff <= 1e7 || rel <= 0.05,
        _ => diff <= 1e6 || rel <= 0.05,
    }
}

#[test]
fn host_metrics_match_node_exporter() {
    if !common::have(&["prometheus-node-exporter"]) {
        return;
    }
    let theirs = node_exporter_families();
    let ours = ours();
    assert!(theirs.contains_key("node_cpu_seconds_total"), "{theirs:?}");
    let mut problems = Vec::new();
    for (name, fam) in &theirs {
        let Some(mine) = ours.get(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        let want: BTreeSet<_> = fam.keys().collect();
        let got: BTreeSet<_> = mine.keys().collect();
        if want != got {
            problems.push(format!(
                "{name}: label sets {got:?}, node_exporter {want:?}"
            ));
            continue;
        }
        for (labels, v) in fam {
            if !close(name, *v, mine[labels]) {
                problems.push(format!(
                    "{name}{labels:?}: {} here, {v} from node_exporter",
                    mine[labels]
                ));
            }
        }
    }
    for name in ours.keys() {
        if name.starts_with("node_") && !theirs.contains_key(name) {
            problems.push(format!("{name}: node_exporter has no such family"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The process itself, as client libraries name it.
    let rss = ours["process_resident_memory_bytes"]
        .values()
        .next()
        .copied()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
}

#[test]
fn served_host_metrics_answer_the_original_alert_expressions() {
    let m = Mlmon::start(Some("host:\n  interval: 1s\n"));
    let c = client();
    let query = |q: &str| -> serde_json::Value {
        c.get(m.url("/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = query("count(rate(node_cpu_seconds_total{job=\"node\",mode=\"idle\"}[5m]))");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CPU rate: {v}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The original stack's two host alerts, without their thresholds.
    let mem = query("(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes) / node_memory_MemTotal_bytes");
    let ratio: f64 = mem["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..1.0).contains(&ratio), "{mem}");
    let cpu =
        query("100 - (avg by(instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m])) * 100)");
    let busy: f64 = cpu["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..=100.0).contains(&busy), "{cpu}");
    assert_eq!(
        cpu["data"]["result"][0]["metric"]["instance"],
        host::hostname()
    );
    let own = query("process_resident_memory_bytes{job=\"mlmon\"}");
    assert_eq!(own["data"]["result"].as_array().unwrap().len(), 1, "{own}");
    // The collector reports its runs.
    let metrics = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("mlmon_collector_runs_total{collector=\"host\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mlmon_collector_errors_total{collector=\"host\"} 0"),
        "{metrics}"
    );
}
