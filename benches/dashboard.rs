//! Dashboard benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench dashboard` prints the server time of
//! - one chart of 24 h × 20 series at one-minute resolution (SVG), and
//! - the whole overview page (`/?range=24h`) over 24 h of node_exporter-like
//!   host data at 15 s (4 hosts: 2 CPUs × 8 modes, memory, 3 filesystems,
//!   2 network devices, load), 96 pipeline runs and a probe's durations:
//!   every query, chart and the HTML.

use std::sync::Arc;
use std::time::Instant;

use mlmon::config::Config;
use mlmon::ingest::artifacts::Artifacts;
use mlmon::ingest::push::PushGroups;
use mlmon::ingest::runs::{self, Run, Stage, StageStatus};
use mlmon::model::{Labels, Sample};
use mlmon::tsdb::{Storage, StorageOptions};
use mlmon::web::chart::{self, Chart, Unit};
use mlmon::web::{render_overview, AppState, Components, WebSettings};

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn chart_bench() {
    let end = 1_800_000_000_000i64;
    let start = end - 86_400_000;
    let series: Vec<(String, Vec<(i64, f64)>)> = (0..20)
        .map(|s| {
            let pts = (0..1440)
                .map(|i| {
                    let t = start + i * 60_000;
                    (t, 50.0 + 30.0 * ((i as f64 / 60.0) + s as f64).sin())
                })
                .collect();
            (format!("series {s}"), pts)
        })
        .collect();
    let c = Chart {
        unit: Unit::Percent,
        series,
        start_ms: start,
        end_ms: end,
        step_ms: 60_000,
        thresholds: vec![chart::Threshold {
            value: 80.0,
            level: "warning",
        }],
        y_range: Some((0.0, 100.0)),
        points: false,
    };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let svg = chart::render(&c, 960, 260);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = svg.len();
    }
    println!(
        "chart 24h x 20 series x 1440 points: p50 {:.2} ms ({} KiB of SVG)",
        p50(times),
        bytes / 1024
    );
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).unwrap()
}

/// A series and its value at step `i`.
type Generated = (Labels, Box<dyn Fn(i64) -> f64>);

fn fill(storage: &Storage) -> usize {
    let now = mlmon::model::now_ms();
    let start = now - 86_400_000;
    let steps = 86_400 / 15;
    let mut series: Vec<Generated> = Vec::new();
    for h in 0..4 {
        let inst: &'static str = Box::leak(format!("host-{h}").into_boxed_str());
        for cpu in ["0", "1"] {
            for (mode, share) in [
                ("idle", 0.6),
                ("user", 0.25),
                ("system", 0.1),
                ("iowait", 0.02),
                ("irq", 0.01),
                ("softirq", 0.01),
                ("nice", 0.005),
                ("steal", 0.005),
            ] {
                series.push((
                    labels(&[
                        ("__name__", "node_cpu_seconds_total"),
                        ("job", "node"),
                        ("instance", inst),
                        ("cpu", cpu),
                        ("mode", mode),
                    ]),
                    Box::new(move |i| i as f64 * 15.0 * share),
                ));
            }
        }
        series.push((
            labels(&[
                ("__name__", "node_memory_MemTotal_bytes"),
                ("job", "node"),
                ("instance", inst),
            ]),
            Box::new(|_| 16e9),
        ));
        series.push((
            labels(&[
                ("__name__", "node_memory_MemAvailable_bytes"),
                ("job", "node"),
                ("instance", inst),
            ]),
            Box::new(|i| 8e9 + 1e9 * ((i as f64) / 200.0).sin()),
        ));
        for mp in ["/", "/data", "/boot"] {
            series.push((
                labels(&[
                    ("__name__", "node_filesystem_size_bytes"),
                    ("job", "node"),
                    ("instance", inst),
                    ("mountpoint", mp),
                ]),
                Box::new(|_| 1e11),
            ));
            series.push((
                labels(&[
                    ("__name__", "node_filesystem_avail_bytes"),
                    ("job", "node"),
                    ("instance", inst),
                    ("mountpoint", mp),
                ]),
                Box::new(|i| 6e10 - i as f64 * 1e5),
            ));
        }
        for dev in ["eth0", "lo"] {
            for dir in ["receive", "transmit"] {
                let name: &'static str =
                    Box::leak(format!("node_network_{dir}_bytes_total").into_boxed_str());
                series.push((
                    labels(&[
                        ("__name__", name),
                        ("job", "node"),
                        ("instance", inst),
                        ("device", dev),
                    ]),
                    Box::new(|i| i as f64 * 15.0 * 2e5),
                ));
            }
        }
        for l in ["node_load1", "node_load5", "node_load15"] {
            series.push((
                labels(&[("__name__", l), ("job", "node"), ("instance", inst)]),
                Box::new(|i| 1.0 + ((i as f64) / 100.0).sin()),
            ));
        }
    }
    series.push((
        labels(&[
            ("__name__", "probe_duration_seconds"),
            ("job", "probe"),
            ("probe", "model-api"),
        ]),
        Box::new(|i| 0.05 + 0.01 * ((i as f64) / 50.0).sin()),
    ));
    for (m, v) in [
        ("ml_model_r2_score", 0.88),
        ("ml_model_rmse", 5.4),
        ("ml_model_mae", 4.3),
    ] {
        series.push((
            labels(&[("__name__", m), ("job", "ml"), ("pipeline", "mathscore")]),
            Box::new(move |_| v),
        ));
    }
    let n = series.len();
    // In time order, an hour at a time, as a live system would have them.
    let chunk = 240;
    let mut i0 = 0;
    while i0 < steps {
        let batch: Vec<(Labels, Vec<Sample>)> = series
            .iter()
            .map(|(l, f)| {
                let samples = (i0..(i0 + chunk).min(steps))
                    .map(|i| Sample {
                        t: start + i * 15_000,
                        v: f(i),
                    })
                    .collect();
                (l.clone(), samples)
            })
            .collect();
        let mut app = storage.appender();
        for (l, s) in batch {
            for x in s {
                app.append(l.clone(), x.t, x.v);
            }
        }
        app.commit().unwrap();
        i0 += chunk;
    }
    for r in 0..96 {
        let finished = now - r * 900_000;
        let run = Run {
            id: format!("mathscore-{finished}"),
            pipeline: "mathscore".into(),
            source: "artifacts".into(),
            started_ms: finished - 120_000,
            finished_ms: finished,
            success: r % 10 != 3,
            exit_code: None,
            command: None,
            stages: [
                ("data_ingestion", StageStatus::Succeeded),
                ("model_evaluation", StageStatus::Succeeded),
            ]
            .iter()
            .map(|(k, s)| {
                (
                    k.to_string(),
                    Stage {
                        status: *s,
                        detail: None,
                        ..Default::default()
                    },
                )
            })
            .collect(),
            metrics: [("test_r2".to_string(), 0.8 + 0.001 * r as f64)].into(),
            report_ms: Some(finished),
            ..Default::default()
        };
        runs::record(storage, &run, &[]).unwrap();
    }
    n
}

fn overview_bench() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).unwrap();
    let n = fill(&storage);
    let config = Config::defaults();
    let settings = WebSettings::new(&config);
    let c = Components::store_only(
        storage.clone(),
        Arc::new(PushGroups::load(config.push.clone(), &storage).unwrap()),
        Arc::new(Artifacts::load(config.artifacts.clone(), &storage).unwrap()),
        &settings,
    );
    let state = AppState::new(c, settings, &config.web.auth);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let html = render_overview(&state, "24h");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = html.len();
    }
    println!(
        "overview page, 24 h of {n} series at 15 s + 96 runs: p50 {:.1} ms ({} KiB of HTML)",
        p50(times),
        size / 1024
    );
}

fn main() {
    chart_bench();
    overview_bench();
}
