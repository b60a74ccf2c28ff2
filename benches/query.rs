//! Query benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench query` starts a real Prometheus (remote-write
//! receiver on) and `mlmon serve` on free ports, remote-writes the same
//! 1,000 counter series × 24 h at 15 s (5.76M samples) to both, then times
//! `sum by (job) (rate(x[5m]))` over the 24 h at step 60 s on each, 10 runs
//! after one warm-up, and prints p50 and the slowest run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlmon::ingest::remote_write;
use mlmon::model::{Labels, Sample};

const SERIES: usize = 1_000;
const STEP_MS: i64 = 15_000;
const POINTS: i64 = 24 * 3600 * 1000 / STEP_MS;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(c: &reqwest::blocking::Client, url: &str) {
    let start = Instant::now();
    while !c
        .get(url)
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
    {
        assert!(start.elapsed() < Duration::from_secs(60), "{url} not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counter values in hundredths, growing by 0.5–1.5 × 15 s per step.
fn value(series: usize, k: i64) -> f64 {
    let mut x = (series as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (k as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    let inc = 750 + (x % 1500) as i64;
    (1000 * 100 + k * 1500 + inc) as f64 / 100.0
}

fn send(c: &reqwest::blocking::Client, url: &str, t0: i64) {
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            Labels::new([
                ("__name__", "bench_cpu_seconds_total".to_string()),
                ("instance", format!("host-{i:04}:9100")),
                ("job", format!("job-{}", i % 5)),
            ])
            .unwrap()
        })
        .collect();
    // Time-ordered slices of 20 steps, so Prometheus' head accepts them.
    for k0 in (0..POINTS).step_by(20) {
        let batch: Vec<(Labels, Vec<Sample>)> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l.clone(),
                    (k0..(k0 + 20).min(POINTS))
                        .map(|k| Sample {
                            t: t0 + k * STEP_MS,
                            v: value(i, k),
                        })
                        .collect(),
                )
            })
            .collect();
        let r = c
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(remote_write::encode(&batch))
            .send()
            .unwrap();
        assert!(
            r.status().is_success(),
            "{url}: {}",
            r.text().unwrap_or_default()
        );
    }
}

fn time_query(
    c: &reqwest::blocking::Client,
    base: &str,
    start: f64,
    end: f64,
) -> (f64, f64, usize) {
    let q = "sum by (job) (rate(bench_cpu_seconds_total[5m]))";
    let run = || -> (f64, usize) {
        let t = Instant::now();
        let v: serde_json::Value = c
            .get(format!("{base}/api/v1/query_range"))
            .query(&[
                ("query", q.to_string()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", "60".into()),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let points = v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        (t.elapsed().as_secs_f64() * 1000.0, points)
    };
    run();
    let mut times = Vec::new();
    let mut points = 0;
    for _ in 0..10 {
        let (ms, p) = run();
        times.push(ms);
        points = p;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[5], times[9], points)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prom").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is not installed (scripts/test.sh installs it)");
    let _prom = Proc(prom);
    let mlmon_port = free_port();
    let mlmon = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{mlmon_port}"),
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path().join("mlmon"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _mlmon = Proc(mlmon);
    let prom_base = format!("http://127.0.0.1:{prom_port}");
    let mlmon_base = format!("http://127.0.0.1:{mlmon_port}");
    wait_ready(&c, &format!("{prom_base}/-/ready"));
    wait_ready(&c, &format!("{mlmon_base}/-/ready"));
    let t0 = (mlmon::model::now_ms() - 25 * 3_600_000) / 60_000 * 60_000;
    for (name, base) in [("prometheus", &prom_base), ("mlmon", &mlmon_base)] {
        let t = Instant::now();
        send(&c, &format!("{base}/api/v1/write"), t0);
        println!(
            "{name}: loaded {} samples in {:.1} s",
            SERIES as i64 * POINTS,
            t.elapsed().as_secs_f64()
        );
    }
    let (start, end) = (t0 as f64 / 1000.0, (t0 + POINTS * STEP_MS) as f64 / 1000.0);
    for (name, base) in [("prometheus", &prom_base), ("mlmon", &mlmon_base)] {
        let (p50, max, points) = time_query(&c, base, start, end);
        println!("{name}: sum by (job) (rate(bench_cpu_seconds_total[5m])), 1,000 series x 24 h, step 60 s: p50 {p50:.1} ms, slowest {max:.1} ms over 10 runs ({points} points)");
    }
}
