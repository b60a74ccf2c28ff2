//! Storage benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench storage` measures, on realistic counters and gauges
//! (values with two decimals, like node_exporter's CPU seconds):
//! 1. ingest samples/s through the `Appender` (10,000 series);
//! 2. ingest samples/s and server CPU-s per million samples through
//!    `POST /api/v1/write` to a running `mlmon serve` (10,000 series,
//!    batches of 2,000 samples, 4 connections);
//! 3. bytes on disk per sample after 10,000,000 samples;
//! 4. time to read a 24 h range of 1,000 series (selector, 15 s samples).
//!
//! `MLMON_BENCH_QUICK=1` runs a tenth of the work for a smoke test.

use std::sync::Arc;
use std::time::Instant;

use mlmon::ingest::remote_write;
use mlmon::model::{Labels, Matcher, Sample};
use mlmon::tsdb::{Querier, Storage, StorageOptions};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{cpu_seconds, Rng};

/// Series `i`: even ones are CPU-seconds counters, odd ones temperature
/// gauges; values are kept in hundredths so they print with two decimals.
struct Gen {
    labels: Vec<Labels>,
    state: Vec<(Rng, i64)>,
}

impl Gen {
    fn new(series: usize) -> Gen {
        let labels = (0..series)
            .map(|i| {
                let inst = format!("host-{:05}:9100", i / 20);
                let job = format!("job-{}", (i / 20) % 5);
                if i.is_multiple_of(2) {
                    Labels::new([
                        ("__name__", "bench_cpu_seconds_total"),
                        ("cpu", &(i % 20 / 2).to_string()),
                        ("instance", &inst),
                        ("job", &job),
                    ])
                    .unwrap()
                } else {
                    Labels::new([
                        ("__name__", "bench_temperature_celsius"),
                        ("sensor", &(i % 20 / 2).to_string()),
                        ("instance", &inst),
                        ("job", &job),
                    ])
                    .unwrap()
                }
            })
            .collect();
        let state = (0..series)
            .map(|i| {
                (
                    Rng(i as u64 * 7919 + 1),
                    if i.is_multiple_of(2) { 100_000 } else { 5_000 },
                )
            })
            .collect();
        Gen { labels, state }
    }

    fn next(&mut self, i: usize, step_s: f64) -> f64 {
        let (rng, v) = &mut self.state[i];
        if i.is_multiple_of(2) {
            *v += (step_s * 100.0 * (0.5 + rng.unit())).round() as i64;
        } else {
            *v = (*v + (rng.unit() * 50.0 - 25.0).round() as i64).clamp(1000, 10_000);
        }
        *v as f64 / 100.0
    }
}

fn quick() -> bool {
    std::env::var("MLMON_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn scale(n: usize) -> usize {
    if quick() {
        n / 10
    } else {
        n
    }
}

fn open(dir: &std::path::Path) -> Arc<Storage> {
    Storage::open(StorageOptions::new(dir)).unwrap()
}

fn bench_appender() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let series = 10_000;
    let rounds = scale(200);
    let mut g = Gen::new(series);
    let t0 = 1_700_000_000_000i64;
    // 2,000-sample batches, as remote-write senders use.
    let start = Instant::now();
    let mut n = 0usize;
    for r in 0..rounds {
        for chunk in (0..series).collect::<Vec<_>>().chunks(2000) {
            let mut app = s.appender();
            for &i in chunk {
                app.append(g.labels[i].clone(), t0 + r as i64 * 15_000, g.next(i, 15.0));
            }
            n += app.commit().unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("appender ingest: {n} samples, 10,000 series, batches of 2,000: {:.0} samples/s ({secs:.2} s)", n as f64 / secs);
    s.close().unwrap();
}

fn bench_remote_write() {
    let mut m = common::Mlmon::start(None);
    let url = m.url("/api/v1/write");
    // Pre-encode every body so the client's CPU stays out of the figure.
    let series = 10_000;
    let rounds = scale(100);
    let mut g = Gen::new(series);
    let t0 = mlmon::model::now_ms() - 7_200_000;
    let mut bodies = Vec::new();
    for r in 0..rounds {
        for chunk in (0..series).collect::<Vec<_>>().chunks(2000) {
            let batch: Vec<(Labels, Vec<Sample>)> = chunk
                .iter()
                .map(|&i| {
                    (
                        g.labels[i].clone(),
                        vec![Sample {
                            t: t0 + r as i64 * 250,
                            v: g.next(i, 0.25),
                        }],
                    )
                })
                .collect();
            bodies.push(remote_write::encode(&batch));
        }
    }
    let total = rounds * series;
    // Four connections; each takes every fourth body, in order, so every
    // series receives its samples in time order.
    let per_round = series / 2000;
    let cpu0 = cpu_seconds(m.child.id());
    let start = Instant::now();
    let bodies = Arc::new(bodies);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (bodies, url) = (bodies.clone(), url.clone());
            std::thread::spawn(move || {
                let c = common::client();
                for r in 0..bodies.len() / per_round {
                    // One round at a time across workers keeps order per series.
                    for k in (0..per_round).filter(|k| k % 4 == w) {
                        let resp = c
                            .post(&url)
                            .header("Content-Encoding", "snappy")
                            .header("Content-Type", "application/x-protobuf")
                            .body(bodies[r * per_round + k].clone())
                            .send()
                            .unwrap();
                        assert_eq!(
                            resp.status().as_u16(),
                            204,
                            "{}",
                            resp.text().unwrap_or_default()
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(m.child.id()) - cpu0;
    println!(
        "remote_write ingest: {total} samples, 10,000 series, batches of 2,000, 4 connections: {:.0} samples/s, server {:.2} CPU-s per 1M samples ({secs:.2} s)",
        total as f64 / secs,
        cpu / (total as f64 / 1e6)
    );
    m.kill();
}

/// Appends `per_series` samples 15 s apart to each of `series` series, one
/// commit per time step, as a scraper would.
fn load_every_15s(s: &Storage, series: usize, per_series: usize, t0: i64) {
    let mut g = Gen::new(series);
    for r in 0..per_series {
        let mut app = s.appender();
        for i in 0..series {
            app.append(g.labels[i].clone(), t0 + r as i64 * 15_000, g.next(i, 15.0));
        }
        app.commit().unwrap();
    }
}

fn bench_bytes_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let series = 1_000;
    let per_series = scale(10_000);
    let t0 = 1_700_000_000_000i64;
    load_every_15s(&s, series, per_series, t0);
    s.checkpoint().unwrap();
    s.maintain(t0 + per_series as i64 * 15_000).unwrap();
    let st = s.stats();
    let n = (series * per_series) as f64;
    let dir_bytes = common::dir_bytes(dir.path());
    println!(
        "disk: {} samples in {} series: directory {} bytes = {:.3} bytes/sample (parts {:.3})",
        series * per_series,
        series,
        dir_bytes,
        dir_bytes as f64 / n,
        st.chunk_bytes as f64 / n
    );
    s.close().unwrap();
}

fn bench_query() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let series = 1_000;
    let per_series = if quick() { 576 } else { 5_760 }; // 24 h at 15 s
    let t0 = 1_700_000_000_000i64;
    load_every_15s(&s, series, per_series, t0);
    s.checkpoint().unwrap();
    s.maintain(t0 + per_series as i64 * 15_000).unwrap();
    let end = t0 + per_series as i64 * 15_000;
    let matchers = [Matcher::new(mlmon::model::MatchOp::Re, "__name__", "bench_.+").unwrap()];
    let mut times = Vec::new();
    let mut points = 0;
    for _ in 0..10 {
        let start = Instant::now();
        let got = s.select(&matchers, t0, end).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        points = got.iter().map(|x| x.samples.len()).sum::<usize>();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "query: select 1,000 series x 24 h ({points} samples): p50 {:.1} ms, min {:.1} ms, max {:.1} ms over 10 runs",
        times[5], times[0], times[9]
    );
    s.close().unwrap();
}

fn main() {
    // `cargo test --benches` runs this with --test-threads etc.; only run
    // the figures for `cargo bench`.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    bench_appender();
    bench_remote_write();
    bench_bytes_per_sample();
    bench_query();
}
