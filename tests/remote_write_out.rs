//! `remote_write` out to a real receiver (Prometheus 2.42 with its
//! remote-write receiver on): every sample mlmon stored arrives with the
//! same value and timestamp — while the receiver is up, after an outage,
//! and after mlmon was killed with SIGKILL during the outage. A receiver
//! that refuses a batch (400) gets it dropped and counted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mlmon::model::{Labels, Sample};
use serde_json::Value;

const PROM: &str = "global: {}\n";

fn config(port: u16) -> String {
    format!(
        "host: {{interval: 0s}}\nartifacts: {{interval: 0s}}\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    name: receiver\n    queue_config: {{min_backoff: 50ms, max_backoff: 500ms}}\n"
    )
}

/// `n` series of `points` samples each, one second apart, ending now.
fn data(tag: &str, n: usize, points: i64) -> Vec<(Labels, Vec<Sample>)> {
    let now = mlmon::model::now_ms() / 1000 * 1000;
    (0..n)
        .map(|i| {
            let labels = Labels::new([
                ("__name__", "forwarded"),
                ("tag", tag),
                ("i", &i.to_string()),
            ])
            .unwrap();
            let samples = (0..points)
                .map(|k| Sample {
                    t: now - (points - k) * 1000,
                    v: (i as f64) * 1000.0 + k as f64 * 0.5,
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

/// Every raw sample of `forwarded{tag=...}` on a server, by series.
fn raw(c: &reqwest::blocking::Client, base: &str, tag: &str) -> Vec<(String, Vec<(f64, String)>)> {
    let q = format!("forwarded{{tag=\"{tag}\"}}[1h]");
    let r: Value = c
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut out: Vec<(String, Vec<(f64, String)>)> = r["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect();
            (s["metric"].to_string(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits until the receiver has exactly what mlmon has for `tag`.
fn wait_same(m: &Mlmon, base: &str, tag: &str, within: Duration) {
    let c = client();
    let deadline = Instant::now() + within;
    loop {
        let want = raw(&c, &m.url(""), tag);
        let got = raw(&c, base, tag);
        if !want.is_empty() && want == got {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "receiver differs for {tag}: mlmon has {} series ({} samples), receiver {} series ({} samples)\n{}",
            want.len(),
            want.iter().map(|s| s.1.len()).sum::<usize>(),
            got.len(),
            got.iter().map(|s| s.1.len()).sum::<usize>(),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn everything_stored_arrives_through_outages_and_kill_9() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let port = free_port();
    let prom = Prometheus::start_on(port, PROM, &["--web.enable-remote-write-receiver"]);
    let m = Mlmon::start(Some(&config(port)));
    let c = client();
    let write = format!("{}/api/v1/write", m.url(""));
    remote_write(&c, &write, &data("up", 50, 120));
    wait_same(&m, &prom.base, "up", Duration::from_secs(30));

    // The receiver goes away; mlmon goes on taking data, is killed, and
    // comes back before the receiver does.
    drop(prom);
    remote_write(&c, &write, &data("outage", 40, 60));
    std::thread::sleep(Duration::from_secs(2));
    let mut m = m;
    m.kill();
    let m = m.restart();
    remote_write(&c, &m.url("/api/v1/write"), &data("after_restart", 30, 30));
    std::thread::sleep(Duration::from_secs(2));
    let prom = Prometheus::start_on(port, PROM, &["--web.enable-remote-write-receiver"]);
    for tag in ["up", "outage", "after_restart"] {
        wait_same(&m, &prom.base, tag, Duration::from_secs(60));
    }
    let text = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        text.contains("mlmon_remote_write_samples_sent_total{remote_name=\"receiver\""),
        "{text}"
    );
}

#[test]
fn a_refused_batch_is_dropped_and_counted() {
    let sink = HttpSink::start(&[400], false);
    let m = Mlmon::start(Some(&format!(
        "host: {{interval: 0s}}\nartifacts: {{interval: 0s}}\nremote_write:\n  - url: {}\n    name: strict\n",
        sink.url("/write")
    )));
    let c = client();
    let metric = |name: &str| -> f64 {
        let text = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
        let prefix = format!("{name}{{remote_name=\"strict\"");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}\n{}", m.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    remote_write(&c, &m.url("/api/v1/write"), &data("refused", 3, 5));
    wait("the refused batch counted", &|| {
        metric("mlmon_remote_write_samples_failed_total") == 15.0
    });
    // The next batch goes through (the sink takes it).
    remote_write(&c, &m.url("/api/v1/write"), &data("accepted", 2, 5));
    wait("the next batch sent", &|| {
        metric("mlmon_remote_write_samples_sent_total") == 10.0
    });
    // The first request was refused; it is not sent again.
    let statuses: Vec<u16> = sink.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&400), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 1);
}
