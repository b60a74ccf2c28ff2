//! Query benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench query` starts a real Prometheus (remote-write
//! receiver on) and `mlmon serve` on free ports, remote-writes the same
//! 1,000 counter series × 24 h at 15 s (5.76M samples) to both, then times
//! `sum by (job) (rate(x[5m]))` over the 24 h at step 60 s on each, 10 runs
//! after one warm-up, and prints p50 and the slowest run.

use std::time::{Duration, Instant};

use mlmon::model::{Labels, Sample};

#[path = "../tests/common/mod.rs"]
mod common;

const SERIES: usize = 1_000;
const STEP_MS: i64 = 15_000;
const POINTS: i64 = 24 * 3600 * 1000 / STEP_MS;

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
        common::remote_write(c, url, &batch);
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
    let prom = common::Prometheus::start(
        "global:\n  scrape_interval: 15s\n",
        &["--web.enable-remote-write-receiver"],
    );
    let m = common::Mlmon::start(None);
    let prom_base = prom.base.clone();
    let mlmon_base = m.url("");
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
