//! Remote write out, side by side: `cargo bench --bench forward`, run from
//! the repository root (mlmon's default collectors on, as on a VM), runs
//! mlmon, Prometheus (its remote-write receiver on, `remote_write` to the
//! receiver, with the queue defaults of Prometheus 2.44+, which are
//! mlmon's) and vmagent as forwarders, each in front of a VictoriaMetrics
//! receiver of its own, on the same load. Prints figures, asserts nothing.
//!
//! 1. **steady**, one forwarder at a time: the receiver is up;
//!    `FORWARD_SERIES` (default 10,000) series × `FORWARD_POINTS` (default
//!    500) samples are remote-written to the forwarder, once as a *burst*
//!    (requests of 10 samples per series, as fast as the forwarder takes
//!    them) and once *paced* at `FORWARD_RATE` samples per second (default
//!    100,000: one sample per series per request, stamped with the time);
//!    CPU seconds (user + system) the forwarder spent until the receiver
//!    had them all, per million samples.
//! 2. **outage**, all forwarders at once: their receivers are down for
//!    `FORWARD_OUTAGE` seconds (default 600) while every second one sample
//!    of each of the `FORWARD_SERIES` series arrives, stamped with the
//!    time, as scrapes would; then, one forwarder after the other, its
//!    receiver starts: seconds until the receiver has the whole backlog,
//!    samples per second, the forwarder's CPU seconds per million while
//!    draining, and its largest RSS while draining (sampled every 100 ms)
//!    and before (while the backlog built up).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, remote_write, require, wait_ready, Proc};
use mlmon::model::{Labels, Sample};

use common::{cpu_seconds, env_number as env};

/// A VictoriaMetrics receiver on `port`, data in `dir`.
fn receiver(port: u16, dir: &Path) -> Proc {
    let mut child = Command::new(require("victoria-metrics"))
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(30),
        &mut child,
    );
    Proc(child)
}

/// Samples of the load the receiver has.
fn received(port: u16) -> usize {
    let r: serde_json::Value = match client()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[
            (
                "query",
                "sum(count_over_time(bench_forward[1d]))".to_string(),
            ),
            // The load's last samples are a little ahead of now.
            ("time", format!("{}", mlmon::model::now_ms() / 1000 + 120)),
        ])
        .send()
        .and_then(|r| r.json())
    {
        Ok(v) => v,
        Err(_) => return 0,
    };
    r["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A forwarder listening for remote write on `port`, sending to the
/// receiver on `to`.
fn forwarder(kind: &str, port: u16, to: u16, dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("http://127.0.0.1:{to}/api/v1/write");
    let (mut child, ready) = match kind {
        "mlmon" => {
            let cfg = dir.join("mlmon.yml");
            std::fs::write(
                &cfg,
                // The default collectors stay on, as on a real VM.
                format!("remote_write:\n  - url: {url}\n    name: bench\n"),
            )
            .unwrap();
            let c = Command::new(env!("CARGO_BIN_EXE_mlmon"))
                .arg("serve")
                .arg("--config")
                .arg(&cfg)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.join("data"))
                // The artifacts collector reads `./artifacts` there.
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (c, "/-/ready")
        }
        "prometheus" => {
            let cfg = dir.join("prometheus.yml");
            // Prometheus 2.44's queue defaults (mlmon's), not 2.42's
            // smaller requests.
            std::fs::write(
                &cfg,
                format!("remote_write:\n  - url: {url}\n    queue_config: {{capacity: 10000, max_shards: 50, max_samples_per_send: 2000}}\n"),
            )
            .unwrap();
            let c = Command::new(require("prometheus"))
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (c, "/-/ready")
        }
        _ => {
            let c = Command::new(require("vmagent"))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-remoteWrite.url={url}"))
                .arg(format!(
                    "-remoteWrite.tmpDataPath={}",
                    dir.join("queue").display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (c, "/health")
        }
    };
    wait_ready(
        &format!("http://127.0.0.1:{port}{ready}"),
        Duration::from_secs(60),
        &mut child,
    );
    Proc(child)
}

/// The load: `series` × `points` samples, 1 ms apart from now (Prometheus
/// forwards only samples newer than its log reader's start, so the load
/// cannot be in the past).
fn send_load(port: u16, series: usize, points: usize) {
    let c = client();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let now = mlmon::model::now_ms();
    let labels = load_labels(series);
    for chunk in (0..points).collect::<Vec<_>>().chunks(10) {
        let batch: Vec<(Labels, Vec<Sample>)> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let samples = chunk
                    .iter()
                    .map(|&k| Sample {
                        t: now + k as i64,
                        v: (i * 7 + k) as f64 * 0.25,
                    })
                    .collect();
                (l.clone(), samples)
            })
            .collect();
        remote_write(&c, &url, &batch);
    }
}

/// The same load at `rate` samples per second: one sample of every
/// series per request, stamped with the time it is sent.
fn send_paced(port: u16, series: usize, points: usize, rate: usize) {
    let c = client();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let labels = load_labels(series);
    let every = Duration::from_secs_f64(series as f64 / rate as f64);
    let start = Instant::now();
    for k in 0..points {
        let batch = common::one_sample_each(&labels, |i| (i * 7 + k) as f64 * 0.25);
        remote_write(&c, &url, &batch);
        if let Some(wait) = (every * (k as u32 + 1)).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

fn wait_all(port: u16, total: usize, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if received(port) >= total {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn rss_mib(pid: u32) -> f64 {
    common::proc_number(pid, "status", "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// The labels of the load's series.
fn load_labels(series: usize) -> Vec<Labels> {
    (0..series)
        .map(|i| {
            Labels::new([
                ("__name__", "bench_forward"),
                ("job", "bench"),
                ("instance", &format!("host-{}", i % 50)),
                ("series", &i.to_string()),
            ])
            .unwrap()
        })
        .collect()
}

fn main() {
    for tool in ["victoria-metrics", "vmagent", "prometheus"] {
        require(tool);
    }
    let series = env("FORWARD_SERIES", 10_000);
    let points = env("FORWARD_POINTS", 500);
    let outage = env("FORWARD_OUTAGE", 600);
    let kinds = std::env::var("FORWARD_KINDS").unwrap_or("mlmon,prometheus,vmagent".into());
    let kinds: Vec<&str> = kinds.split(',').collect();
    let total = series * points;
    let rate = env("FORWARD_RATE", 100_000);
    println!(
        "steady: {series} series × {points} samples = {total} samples, receiver up; burst: as fast as the forwarder takes them; paced: {rate} samples/s"
    );
    println!("| forwarder | burst CPU-s per 1M | paced CPU-s per 1M |");
    println!("|---|---|---|");
    for kind in &kinds {
        let mut cells = Vec::new();
        for paced in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (rport, fport) = (free_port(), free_port());
            let _r = receiver(rport, &dir.path().join("receiver"));
            let f = forwarder(kind, fport, rport, &dir.path().join("fwd"));
            std::thread::sleep(Duration::from_secs(2));
            let before = cpu_seconds(f.0.id());
            if paced {
                send_paced(fport, series, points, rate);
            } else {
                send_load(fport, series, points);
            }
            let done = wait_all(rport, total, Duration::from_secs(600));
            let cpu = cpu_seconds(f.0.id()) - before;
            cells.push(match done {
                Some(_) => format!("{:.3}", cpu / (total as f64 / 1e6)),
                None => "did not finish".into(),
            });
        }
        println!("| {kind} | {} | {} |", cells[0], cells[1]);
    }

    // The outage: every forwarder takes the same load, receivers down.
    let dir = tempfile::tempdir().unwrap();
    let rports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    let forwarders: Vec<(&str, Proc, u16)> = kinds
        .iter()
        .zip(&rports)
        .map(|(kind, rport)| {
            let fport = free_port();
            let f = forwarder(kind, fport, *rport, &dir.path().join(kind));
            (*kind, f, fport)
        })
        .collect();
    let labels = load_labels(series);
    let c = client();
    let start = Instant::now();
    let mut sent = 0;
    let mut before_peak = vec![0f64; forwarders.len()];
    for tick in 0..outage {
        let batch = common::one_sample_each(&labels, |i| (i * 7 + tick) as f64 * 0.25);
        for (k, (_, f, fport)) in forwarders.iter().enumerate() {
            remote_write(
                &c,
                &format!("http://127.0.0.1:{fport}/api/v1/write"),
                &batch,
            );
            before_peak[k] = before_peak[k].max(rss_mib(f.0.id()));
        }
        sent += series;
        let next = Duration::from_secs(tick as u64 + 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    println!();
    println!(
        "outage: receivers down {outage} s while {series} series × 1 sample/s arrive = {sent} samples; then each receiver starts in turn"
    );
    println!("| forwarder | drain seconds | drain samples/s | drain CPU-s per 1M | peak RSS while draining (MiB) | peak RSS during the outage (MiB) |");
    println!("|---|---|---|---|---|---|");
    for (k, (kind, f, _)) in forwarders.iter().enumerate() {
        let pid = f.0.id();
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let _r = receiver(rports[k], &dir.path().join(format!("receiver-{kind}")));
        let mut peak = 0f64;
        let mut done = None;
        let mut polls = 0;
        while t0.elapsed() < Duration::from_secs(1800) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(100));
            polls += 1;
            if polls % 5 == 0 && received(rports[k]) >= sent {
                done = Some(t0.elapsed());
                break;
            }
        }
        let cpu = cpu_seconds(pid) - cpu0;
        match done {
            Some(d) => println!(
                "| {kind} | {:.1} | {:.0} | {:.2} | {peak:.0} | {:.0} |",
                d.as_secs_f64(),
                sent as f64 / d.as_secs_f64(),
                cpu / (sent as f64 / 1e6),
                before_peak[k],
            ),
            None => println!(
                "| {kind} | did not finish | - | - | {peak:.0} | {:.0} |",
                before_peak[k]
            ),
        }
    }
}
