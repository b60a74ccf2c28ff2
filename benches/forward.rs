//! Remote write out, side by side: `cargo bench --bench forward`, run from
//! the repository root (mlmon's default collectors on, as on a VM), runs
//! mlmon, Prometheus (its remote-write receiver on, `remote_write` to the
//! receiver) and vmagent as forwarders, each in front of a VictoriaMetrics
//! receiver of its own, on the same load. Prints figures, asserts nothing.
//!
//! 1. **steady**: the receiver is up; `FORWARD_SERIES` (default 2,000)
//!    series × `FORWARD_POINTS` (default 300) samples are remote-written
//!    to the forwarder; CPU seconds (user + system) the forwarder spent
//!    until the receiver had them all, per million samples.
//! 2. **catch-up**: the receiver is down while the same load arrives (as
//!    during an outage), then starts; seconds until it has everything,
//!    samples per second, and the forwarder's peak RSS.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, remote_write, require, wait_ready, Proc};
use mlmon::model::{Labels, Sample};

use common::{cpu_seconds, env_number as env};

fn peak_rss_mib(pid: u32) -> f64 {
    common::proc_number(pid, "status", "VmHWM:").unwrap_or(0) as f64 / 1024.0
}

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
                "sum(count_over_time(bench_forward[30m]))".to_string(),
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
            std::fs::write(&cfg, format!("remote_write:\n  - url: {url}\n")).unwrap();
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
    let labels: Vec<Labels> = (0..series)
        .map(|i| {
            Labels::new([
                ("__name__", "bench_forward"),
                ("job", "bench"),
                ("instance", &format!("host-{}", i % 50)),
                ("series", &i.to_string()),
            ])
            .unwrap()
        })
        .collect();
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

fn main() {
    for tool in ["victoria-metrics", "vmagent", "prometheus"] {
        require(tool);
    }
    let series = env("FORWARD_SERIES", 2000);
    let points = env("FORWARD_POINTS", 300);
    let total = series * points;
    println!("load: {series} series × {points} samples = {total} samples");
    println!("| forwarder | steady CPU-s per 1M | catch-up seconds | catch-up samples/s | peak RSS during catch-up (MiB) |");
    println!("|---|---|---|---|---|");
    for kind in ["mlmon", "prometheus", "vmagent"] {
        // Steady.
        let dir = tempfile::tempdir().unwrap();
        let (rport, fport) = (free_port(), free_port());
        let _r = receiver(rport, &dir.path().join("receiver"));
        let f = forwarder(kind, fport, rport, &dir.path().join("fwd"));
        std::thread::sleep(Duration::from_secs(2));
        let before = cpu_seconds(f.0.id());
        send_load(fport, series, points);
        let steady = wait_all(rport, total, Duration::from_secs(600));
        let cpu = cpu_seconds(f.0.id()) - before;
        drop(f);
        // Catch-up.
        let dir2 = tempfile::tempdir().unwrap();
        let (rport, fport) = (free_port(), free_port());
        let f = forwarder(kind, fport, rport, &dir2.path().join("fwd"));
        send_load(fport, series, points);
        std::thread::sleep(Duration::from_secs(5));
        let _r = receiver(rport, &dir2.path().join("receiver"));
        let caught = wait_all(rport, total, Duration::from_secs(900));
        let rss = peak_rss_mib(f.0.id());
        let fmt = |d: Option<Duration>| {
            d.map_or("did not finish".into(), |d| {
                format!("{:.1}", d.as_secs_f64())
            })
        };
        println!(
            "| {kind} | {} | {} | {} | {rss:.0} |",
            if steady.is_some() {
                format!("{:.2}", cpu / (total as f64 / 1e6))
            } else {
                "did not finish".into()
            },
            fmt(caught),
            caught.map_or("-".into(), |d| format!(
                "{:.0}",
                total as f64 / d.as_secs_f64()
            )),
        );
    }
}
