//! `remote_write` out to a real receiver (Prometheus 2.42 with its
//! remote-write receiver on, and VictoriaMetrics): every sample mlmon
//! stored arrives with the same value and timestamp — while the receiver
//! is up, after a short outage, after a three-minute outage under
//! continuous ingest, and after mlmon was killed with SIGKILL during an
//! outage and again while catching up. A receiver that refuses a batch
//! (400) gets it dropped and counted.

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
    // The batch goes out in several requests (series spread over
    // shards); the first one is refused and dropped, the rest taken.
    wait("the refused request counted", &|| {
        let (failed, sent) = (
            metric("mlmon_remote_write_samples_failed_total"),
            metric("mlmon_remote_write_samples_sent_total"),
        );
        failed >= 5.0 && failed + sent == 15.0
    });
    let sent_before = metric("mlmon_remote_write_samples_sent_total");
    // The next batch goes through (the sink takes it).
    remote_write(&c, &m.url("/api/v1/write"), &data("accepted", 2, 5));
    wait("the next batch sent", &|| {
        metric("mlmon_remote_write_samples_sent_total") == sent_before + 10.0
    });
    // The status page shows the endpoint and what it did.
    let page = c.get(m.url("/status")).send().unwrap().text().unwrap();
    assert!(
        page.contains("Remote write") && page.contains("strict"),
        "{page}"
    );
    // The first request was refused; it is not sent again.
    let statuses: Vec<u16> = sink.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&400), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 1);
}

/// A receiver in front of `target` that answers `script`'s statuses to the
/// first requests (429 with `Retry-After: 1`) and forwards the others.
fn faulty_proxy(target: String, script: Vec<u16>) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = std::sync::Arc::new(std::sync::Mutex::new(script));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (script, target) = (script.clone(), target.clone());
            std::thread::spawn(move || loop {
                let Some((_, body)) = read_request(&conn) else {
                    return;
                };
                let scripted = {
                    let mut s = script.lock().unwrap();
                    (!s.is_empty()).then(|| s.remove(0))
                };
                let status = match scripted {
                    Some(s) => s,
                    None => client()
                        .post(&target)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(502),
                };
                let extra = if status == 429 {
                    "Retry-After: 1\r\n"
                } else {
                    ""
                };
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}\r\n");
                if conn.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            });
        }
    });
    port
}

#[test]
fn answers_500_and_429_are_retried_until_everything_arrives() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let prom = Prometheus::start(PROM, &["--web.enable-remote-write-receiver"]);
    let proxy = faulty_proxy(
        format!("{}/api/v1/write", prom.base),
        vec![500, 503, 500, 429, 429],
    );
    let m = Mlmon::start(Some(&format!(
        "host: {{interval: 0s}}\nartifacts: {{interval: 0s}}\nremote_write:\n  - url: http://127.0.0.1:{proxy}/api/v1/write\n    name: flaky\n    queue_config: {{min_backoff: 50ms, max_backoff: 400ms, retry_on_http_429: true}}\n"
    )));
    let c = client();
    remote_write(&c, &m.url("/api/v1/write"), &data("flaky", 20, 60));
    wait_same(&m, &prom.base, "flaky", Duration::from_secs(40));
    let text = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
    let retried = text
        .lines()
        .find(|l| l.starts_with("mlmon_remote_write_samples_retried_total{remote_name=\"flaky\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(retried > 0.0, "{text}");
}

#[test]
fn victoria_metrics_receives_the_same_samples() {
    if !common::have(&["victoria-metrics"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("vm.log")).unwrap();
    let child = std::process::Command::new(require("victoria-metrics"))
        .arg(format!(
            "-storageDataPath={}",
            dir.path().join("vm").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    let mut vm = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(
        &format!("{base}/health"),
        Duration::from_secs(30),
        &mut vm.0,
    );
    let m = Mlmon::start(Some(&format!(
        "host: {{interval: 0s}}\nartifacts: {{interval: 0s}}\nremote_write:\n  - url: {base}/api/v1/write\n    name: vm\n"
    )));
    let c = client();
    remote_write(&c, &m.url("/api/v1/write"), &data("vm", 30, 60));
    wait_same(&m, &base, "vm", Duration::from_secs(60));
}

/// A restart that changes an endpoint's `write_relabel_configs` keeps its
/// position: what was stored during the outage goes out relabelled the new
/// way, nothing missing.
#[test]
fn a_restart_with_new_relabelling_keeps_the_position() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let port = free_port();
    let m = Mlmon::start(Some(&config(port)));
    let c = client();
    remote_write(&c, &m.url("/api/v1/write"), &data("relabel", 10, 30));
    std::thread::sleep(Duration::from_secs(1));
    let dir = m.terminate_keeping_dir();
    let relabelled = format!(
        "{}    write_relabel_configs:\n      - target_label: via\n        replacement: new\n",
        config(port)
    );
    let m = Mlmon::start_in(dir, Some(relabelled));
    let prom = Prometheus::start_on(port, PROM, &["--web.enable-remote-write-receiver"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = raw(&c, &prom.base, "relabel");
        let samples: usize = got.iter().map(|s| s.1.len()).sum();
        if samples == 300 {
            assert!(
                got.iter().all(|s| s.0.contains("\"via\":\"new\"")),
                "{got:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{samples} of 300\n{}", m.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The same through a reload: mlmon.yml changes the endpoint's
/// relabelling while the receiver is down; the sender restarts from its
/// durable position, so what was stored before and after the reload all
/// arrives, relabelled the new way.
#[test]
fn a_reload_with_new_relabelling_keeps_the_position() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let port = free_port();
    let m = Mlmon::start(Some(&config(port)));
    let c = client();
    remote_write(&c, &m.url("/api/v1/write"), &data("reloaded", 10, 30));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(
        m.dir.path().join("mlmon.yml"),
        format!(
            "{}    write_relabel_configs:\n      - target_label: via\n        replacement: reload\n",
            config(port)
        ),
    )
    .unwrap();
    let r = c.post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let later: Vec<(Labels, Vec<Sample>)> = data("reloaded", 10, 30)
        .into_iter()
        .map(|(l, s)| (l.with("batch", "after"), s))
        .collect();
    remote_write(&c, &m.url("/api/v1/write"), &later);
    let prom = Prometheus::start_on(port, PROM, &["--web.enable-remote-write-receiver"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = raw(&c, &prom.base, "reloaded");
        let samples: usize = got.iter().map(|s| s.1.len()).sum();
        if samples == 600 {
            assert!(
                got.iter().all(|s| s.0.contains("\"via\":\"reload\"")),
                "{got:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{samples} of 600\n{}", m.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `count_over_time(<selector>[1h])` at `at` per series on a server,
/// sorted.
fn counts(
    c: &reqwest::blocking::Client,
    base: &str,
    selector: &str,
    at: f64,
) -> Vec<(String, String)> {
    let q = format!("count_over_time({selector}[1h])");
    let r: Value = c
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q.as_str()), ("time", &at.to_string())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut out: Vec<(String, String)> = r["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| (s["metric"].to_string(), s["value"][1].to_string()))
        .collect();
    out.sort();
    out
}

/// The samples the endpoint had acknowledged, from mlmon's `/metrics`.
fn sent(m: &Mlmon) -> f64 {
    m.text("/metrics")
        .lines()
        .find(|l| l.starts_with("mlmon_remote_write_samples_sent_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A receiver down for three minutes while data keeps arriving (remote
/// write in every second, the host collector every second), mlmon killed
/// with SIGKILL in the middle of the outage and again while it catches
/// up: the receiver ends with every sample mlmon stored, series by series.
#[test]
fn a_receiver_down_for_minutes_misses_nothing_through_two_kill_9s() {
    if !common::have(&["prometheus"]) {
        return;
    }
    const OUTAGE: u64 = 180;
    const SERIES: usize = 500;
    let port = free_port();
    // Small requests on one shard, so catching up takes long enough to be
    // interrupted.
    let cfg = format!(
        "host: {{interval: 1s}}\nartifacts: {{interval: 0s}}\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    name: receiver\n    queue_config: {{min_backoff: 50ms, max_backoff: 2s, max_shards: 1, max_samples_per_send: 50}}\n"
    );
    let mut m = Mlmon::start(Some(&cfg));
    let c = client();
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            Labels::new([
                ("__name__", "forwarded"),
                ("tag", "minutes"),
                ("i", &i.to_string()),
            ])
            .unwrap()
        })
        .collect();
    let start = Instant::now();
    for tick in 0..OUTAGE {
        let batch = one_sample_each(&labels, |i| i as f64 + tick as f64 * 0.25);
        remote_write(&c, &m.url("/api/v1/write"), &batch);
        if tick == OUTAGE / 2 {
            m.kill();
            m = m.restart();
        }
        if let Some(wait) = Duration::from_secs(tick + 1).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let prom = Prometheus::start_on(port, PROM, &["--web.enable-remote-write-receiver"]);
    // Killed again once the backlog has started to drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent(&m) == 0.0 {
        assert!(Instant::now() < deadline, "nothing sent\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = (SERIES as u64 * OUTAGE) as f64;
    assert!(sent(&m) < total, "caught up before the kill");
    m.kill();
    let m = m.restart();
    wait_same(&m, &prom.base, "minutes", Duration::from_secs(120));
    let stored = raw(&c, &m.url(""), "minutes");
    assert_eq!(stored.len(), SERIES);
    assert_eq!(
        stored.iter().map(|s| s.1.len()).sum::<usize>(),
        SERIES * OUTAGE as usize
    );
    // The host collector's samples too, up to a moment just past.
    let at = (mlmon::model::now_ms() / 1000 - 2) as f64;
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        "the receiver has the host collector's samples",
        Duration::from_secs(60),
        || {
            let want = counts(&c, &m.url(""), "node_load1", at);
            let got = counts(&c, &prom.base, "node_load1", at);
            *last.borrow_mut() = format!("{want:?} vs {got:?}");
            (!want.is_empty() && want == got).then_some(())
        },
        || format!("{}\n{}", last.borrow(), m.log()),
    );
}
