//! A bounded soak: a running mlmon under mixed load for a fixed time —
//! remote write at a set rate, a 1,000-series scrape target, pushes, rule
//! groups, dashboard and query traffic with pathological queries — with
//! RSS, p99 remote-write latency, rule evaluation lag, failed writes and
//! query errors printed every 10 s and summed up at the end. The RSS
//! includes the queries' working sets: the over-limit query loads up to
//! `query.max_samples` (50M samples, about 800 MB) before it is refused.
//! Loopback
//! only; it stops by itself. `tests/soak.rs` runs it briefly on the debug
//! build; `cargo bench --bench soak` runs it for real (`SOAK_SECONDS`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{client, write_file, Mlmon};
use mlmon::model::{Labels, Sample};

pub struct SoakOptions {
    pub duration: Duration,
    /// Remote-written samples per second (spread over `series` series).
    pub samples_per_sec: u64,
    pub series: usize,
    /// Series on the scrape target.
    pub scrape_series: usize,
}

/// What a soak saw.
pub struct SoakReport {
    /// (seconds since start, RSS in bytes), every 10 s.
    pub rss: Vec<(f64, u64)>,
    pub samples_written: u64,
    pub failed_writes: u64,
    pub p99_write_ms: f64,
    /// Worst delay of a rule group's evaluation beyond its interval.
    pub max_rule_lag_s: f64,
    /// Interval of the rule groups.
    pub rule_interval_s: f64,
    pub queries: u64,
    /// Queries answered 5xx (but 503, "too many queries") or not at all.
    pub query_errors: u64,
    /// Pathological queries refused with 4xx, as they should be.
    pub refused_as_expected: u64,
}

impl SoakReport {
    /// RSS growth over the last half of the run, in percent of the RSS at
    /// its middle.
    pub fn rss_growth_last_half(&self) -> f64 {
        let end = self.rss.last().map_or(0.0, |r| r.0);
        let half: Vec<u64> = self
            .rss
            .iter()
            .filter(|r| r.0 >= end / 2.0)
            .map(|r| r.1)
            .collect();
        let (Some(first), Some(max)) = (half.first(), half.iter().max()) else {
            return 0.0;
        };
        (*max as f64 - *first as f64) / *first as f64 * 100.0
    }

    pub fn print(&self) {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        println!("soak summary");
        println!(
            "  RSS: start {:.1} MiB, end {:.1} MiB, max {:.1} MiB; growth over the last half {:+.1} %",
            mb(self.rss.first().map_or(0, |r| r.1)),
            mb(self.rss.last().map_or(0, |r| r.1)),
            mb(self.rss.iter().map(|r| r.1).max().unwrap_or(0)),
            self.rss_growth_last_half()
        );
        println!(
            "  remote write: {} samples, {} failed writes, p99 latency {:.1} ms",
            self.samples_written, self.failed_writes, self.p99_write_ms
        );
        println!(
            "  rule evaluation lag: worst {:.2} s beyond the {:.0} s interval",
            self.max_rule_lag_s, self.rule_interval_s
        );
        println!(
            "  queries: {} answered or refused, {} errors, {} pathological queries refused with 4xx",
            self.queries, self.query_errors, self.refused_as_expected
        );
    }
}

fn rss_bytes(pid: u32) -> u64 {
    crate::common::proc_number(pid, "status", "VmRSS:").map_or(0, |kb| kb * 1024)
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}

/// A scrape target with `n` series whose values change on every scrape.
fn scrape_target(n: usize, stop: Arc<AtomicBool>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut scrapes = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok((conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            scrapes += 1;
            let mut page = String::with_capacity(n * 48);
            page.push_str("# TYPE soak_scraped_total counter\n");
            for i in 0..n {
                page.push_str(&format!(
                    "soak_scraped_total{{shard=\"{}\",i=\"{i}\"}} {}\n",
                    i % 10,
                    scrapes * (i as u64 % 7 + 1)
                ));
            }
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

const RULE_INTERVAL_S: f64 = 2.0;

/// Runs the soak and returns what it saw; prints a line every 10 s.
pub fn run(o: SoakOptions) -> SoakReport {
    let stop = Arc::new(AtomicBool::new(false));
    let target = scrape_target(o.scrape_series, stop.clone());
    let files = tempfile::tempdir().unwrap();
    let rules = write_file(
        files.path(),
        "soak.yml",
        "groups:\n\
         - name: soak-records\n  interval: 2s\n  rules:\n\
         \x20 - record: job:soak_metric:rate1m\n    expr: sum by (job) (rate(soak_metric[1m]))\n\
         \x20 - record: soak:scraped:rate1m\n    expr: sum by (shard) (rate(soak_scraped_total[1m]))\n\
         - name: soak-alerts\n  interval: 2s\n  rules:\n\
         \x20 - alert: SoakHigh\n    expr: job:soak_metric:rate1m > 0\n    for: 10s\n\
         \x20 - alert: SoakNeverFires\n    expr: absent(up)\n",
    );
    let m = Mlmon::start(Some(&format!(
        "rule_files: ['{}']\nscrape_configs:\n- job_name: soak\n  scrape_interval: 5s\n  static_configs:\n  - targets: ['127.0.0.1:{target}']\n",
        rules.display()
    )));
    let pid = m.child.id();
    let started = Instant::now();
    let deadline = started + o.duration;
    let written = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let all_latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let queries = Arc::new(AtomicU64::new(0));
    let query_errors = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // Remote write: two connections, batches of 1,000 samples, paced.
    let writers = 2u64;
    for w in 0..writers {
        let (url, written, failed) = (m.url("/api/v1/write"), written.clone(), failed.clone());
        let (latencies, all) = (latencies.clone(), all_latencies.clone());
        let rate = o.samples_per_sec / writers;
        let series = o.series / writers as usize;
        threads.push(std::thread::spawn(move || {
            let c = client();
            let labels: Vec<Labels> = (0..series)
                .map(|i| {
                    Labels::new([
                        ("__name__", "soak_metric".to_string()),
                        ("job", format!("job-{}", i % 5)),
                        ("instance", format!("w{w}-{}", i / 10)),
                        ("i", i.to_string()),
                    ])
                    .unwrap()
                })
                .collect();
            let batch_size = 1000.min(series);
            let mut next = 0usize;
            let mut sent = 0u64;
            let begin = Instant::now();
            while Instant::now() < deadline {
                // Pace to the rate: wait until this batch is due.
                let due = begin + Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t = mlmon::model::now_ms();
                let batch: Vec<(Labels, Vec<Sample>)> = (0..batch_size)
                    .map(|k| {
                        let i = (next + k) % series;
                        (
                            labels[i].clone(),
                            vec![Sample {
                                t,
                                v: (t / 1000 % 1000) as f64 + i as f64,
                            }],
                        )
                    })
                    .collect();
                next = (next + batch_size) % series;
                let t0 = Instant::now();
                let ok = c
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .body(mlmon::ingest::remote_write::encode(&batch))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                latencies.lock().unwrap().push(ms);
                all.lock().unwrap().push(ms);
                sent += batch_size as u64;
                if ok {
                    written.fetch_add(batch_size as u64, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Pushes: a group a second.
    {
        let (url, failed) = (m.url("/metrics/job/soak/instance/"), failed.clone());
        threads.push(std::thread::spawn(move || {
            let c = client();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let body: String = (0..20)
                    .map(|i| format!("soak_pushed{{i=\"{i}\"}} {k}\n"))
                    .collect();
                let ok = c
                    .put(format!("{url}{}", k % 10))
                    .body(body)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    // Queries and pages, with pathological ones among them.
    let deep = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
    let nested = format!(
        "{}job:soak_metric:rate1m{}",
        "max_over_time(".repeat(40),
        "[1m:1m])".repeat(40)
    );
    for q in 0..2 {
        let (base, queries, errors, refused) = (
            m.url(""),
            queries.clone(),
            query_errors.clone(),
            refused.clone(),
        );
        let (deep, nested) = (deep.clone(), nested.clone());
        threads.push(std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(150))
                .build()
                .unwrap();
            let mut k = q;
            while Instant::now() < deadline {
                let now = mlmon::model::now_ms() as f64 / 1000.0;
                let (start, end) = (format!("{}", now - 1800.0), format!("{now}"));
                let range = |expr: &str| {
                    c.get(format!("{base}/api/v1/query_range")).query(&[
                        ("query", expr),
                        ("start", &start),
                        ("end", &end),
                        ("step", "15"),
                    ])
                };
                let instant = |expr: &str| {
                    c.get(format!("{base}/api/v1/query"))
                        .query(&[("query", expr)])
                };
                // What a dashboard asks (recorded series over time, the
                // latest raw values, pages), and what nobody should: deep
                // nesting and a query over more samples than its limit,
                // both refused with a 4xx.
                let (req, pathological) = match k % 10 {
                    0 => (range("job:soak_metric:rate1m"), false),
                    1 => (instant("topk(5, soak_metric{job=\"job-1\"})"), false),
                    2 => (c.get(format!("{base}/")), false),
                    3 => (
                        c.get(format!("{base}/graph"))
                            .query(&[("expr", "sum by (shard) (rate(soak_scraped_total[1m]))")]),
                        false,
                    ),
                    4 => (instant(&deep), true),
                    5 => (instant(&nested), false),
                    6 => (
                        instant("count_values(\"v\", job:soak_metric:rate1m)"),
                        false,
                    ),
                    7 => (
                        range("histogram_quantile(0.9, sum by (le) (rate(nope_bucket[5m])))"),
                        false,
                    ),
                    8 => (instant("sum(rate(soak_metric[2h]))"), true),
                    _ => (instant("soak_metric{instance=~\"w0-.*5\"}"), false),
                };
                k += 1;
                queries.fetch_add(1, Ordering::Relaxed);
                match req.send() {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) if r.status().as_u16() == 503 => {}
                    Ok(r) if r.status().is_client_error() && pathological => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("query {}: {}", (k - 1) % 10, r.status());
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("query {}: {e}", (k - 1) % 10);
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Monitor: rule lag every second, a report line every 10 s.
    let mut rss = Vec::new();
    let mut max_lag: f64 = 0.0;
    let mut next_report = started;
    let c = client();
    while Instant::now() < deadline {
        if let Ok(v) = c
            .get(m.url("/api/v1/rules"))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
        {
            let now = mlmon::model::now_ms() as f64 / 1000.0;
            for g in v["data"]["groups"].as_array().into_iter().flatten() {
                if let Some(t) = g["lastEvaluation"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    let age = now - t.timestamp_millis() as f64 / 1000.0;
                    // Only once the group has run: before, its time is zero.
                    if t.timestamp() > 0 && started.elapsed() > Duration::from_secs(5) {
                        max_lag = max_lag.max(age - RULE_INTERVAL_S);
                    }
                }
            }
        }
        if Instant::now() >= next_report {
            let at = started.elapsed().as_secs_f64();
            let r = rss_bytes(pid);
            rss.push((at, r));
            let mut window = std::mem::take(&mut *latencies.lock().unwrap());
            println!(
                "t={at:>5.0}s rss={:>6.1} MiB written={} failed_writes={} p99_write={:.1} ms rule_lag_max={:.2} s queries={} query_errors={}",
                r as f64 / (1 << 20) as f64,
                written.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                p99(&mut window),
                max_lag.max(0.0),
                queries.load(Ordering::Relaxed),
                query_errors.load(Ordering::Relaxed),
            );
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    rss.push((started.elapsed().as_secs_f64(), rss_bytes(pid)));
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = std::mem::take(&mut *all_latencies.lock().unwrap());
    SoakReport {
        rss,
        samples_written: written.load(Ordering::Relaxed),
        failed_writes: failed.load(Ordering::Relaxed),
        p99_write_ms: p99(&mut all),
        max_rule_lag_s: max_lag.max(0.0),
        rule_interval_s: RULE_INTERVAL_S,
        queries: queries.load(Ordering::Relaxed),
        query_errors: query_errors.load(Ordering::Relaxed),
        refused_as_expected: refused.load(Ordering::Relaxed),
    }
}
