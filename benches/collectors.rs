//! Collector cost benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench collectors` prints the CPU time (user + system, all
//! threads of this process, so the store's commit thread counts) of
//! - one host collection (`host::collect` plus writing it to a store), and
//! - one scrape of a 10,000-series page whose values change every time:
//!   the first scrape (full parse, new series) and the steady state (the
//!   series cache). HTTP is left out; `../shared/bench` W5 measures the
//!   whole path against Prometheus.

use std::time::Instant;

use mlmon::config::{ScrapeConfig, StaticTarget};
use mlmon::expfmt::Format;
use mlmon::ingest::host;
use mlmon::ingest::scrape;
use mlmon::model::PromDuration;
use mlmon::tsdb::{Storage, StorageOptions};

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid out-parameter.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A page like the bench exporter's: 1,000 hosts × 10 series.
fn page(round: u64) -> String {
    let mut out = String::with_capacity(1 << 20);
    out.push_str("# HELP bench_cpu_seconds_total Synthetic CPU seconds.\n# TYPE bench_cpu_seconds_total counter\n");
    for i in 0..10_000u64 {
        let (host, cpu, mode) = (
            i / 10,
            (i % 10) / 2,
            if i % 2 == 0 { "user" } else { "system" },
        );
        let v = (i * 7919 + round * 13) as f64 / 100.0;
        out.push_str(&format!(
            "bench_cpu_seconds_total{{cpu=\"{cpu}\",instance=\"host-{host:05}:9100\",job=\"job-{}\",mode=\"{mode}\",n=\"{i}\"}} {v}\n",
            host % 5
        ));
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path().join("data"))).unwrap();

    // Host collection.
    let runs = 200;
    let (c0, w0) = (cpu_seconds(), Instant::now());
    let mut points = 0;
    for k in 0..runs {
        let snap = host::collect();
        points = snap.points.len();
        let mut app = storage.appender();
        for (labels, v) in snap.labelled(&[("job", "node"), ("instance", "bench")]) {
            app.append(labels, 1_000_000 + k * 1000, v);
        }
        app.commit().unwrap();
    }
    println!(
        "host collection ({points} series): {:.2} ms CPU, {:.2} ms wall per collection over {runs} runs",
        (cpu_seconds() - c0) / runs as f64 * 1000.0,
        w0.elapsed().as_secs_f64() / runs as f64 * 1000.0
    );

    // Scraping 10,000 series.
    let job = ScrapeConfig {
        job_name: "bench".into(),
        interval: PromDuration::from_secs(1),
        timeout: PromDuration::from_secs(1),
        metrics_path: "/metrics".into(),
        scheme: "http".into(),
        params: vec![],
        honor_labels: false,
        honor_timestamps: true,
        sample_limit: 0,
        http: Default::default(),
        targets: vec![StaticTarget {
            address: "127.0.0.1:19200".into(),
            labels: Default::default(),
        }],
        file_sd: vec![],
        relabel: vec![],
        metric_relabel: vec![],
    };
    let target = scrape::targets(&[job]).active.remove(0);
    let pages: Vec<String> = (0..61).map(page).collect();
    let t0 = 2_000_000_000;
    let c0 = cpu_seconds();
    let e = target.ingest(
        &storage,
        Ok((pages[0].clone(), Format::Text)),
        Instant::now(),
        t0,
    );
    assert!(e.is_none(), "{e:?}");
    let first = cpu_seconds() - c0;
    let c0 = cpu_seconds();
    for (k, p) in pages[1..].iter().enumerate() {
        let e = target.ingest(
            &storage,
            Ok((p.clone(), Format::Text)),
            Instant::now(),
            t0 + (k as i64 + 1) * 1000,
        );
        assert!(e.is_none(), "{e:?}");
    }
    let steady = (cpu_seconds() - c0) / 60.0;
    println!(
        "scrape of 10,000 series (parse, labels, store; no HTTP): first {:.1} ms CPU, then {:.1} ms CPU per scrape over 60 scrapes",
        first * 1000.0,
        steady * 1000.0
    );
    storage.close().unwrap();
}
