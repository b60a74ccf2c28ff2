//! Differential PromQL tests: the same generated data is remote-written to a
//! real Prometheus (Debian package `prometheus`, remote-write receiver on)
//! and to mlmon, then every query of the corpus runs on both, as instant
//! queries at several times and as a range query, and the answers must be
//! the same: same label sets, values equal within 1e-9 relative (or both
//! NaN), the same errors, and the same order where Prometheus defines one
//! (`sort`, `sort_desc`).

mod common;

use std::collections::BTreeMap;

use common::*;
use mlmon::model::{stale_nan, Labels, Sample};
use serde_json::Value;

const STEP: i64 = 15_000;
const POINTS: i64 = 240; // one hour

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).unwrap()
}

/// Every series with its samples, in time order.
fn dataset(t0: i64) -> Vec<(Labels, Vec<Sample>)> {
    let mut rng = Rng(42);
    let mut out = Vec::new();
    let ts = |i: i64| t0 + i * STEP;
    // Counters with resets.
    for job in ["api", "web", "batch"] {
        for inst in ["a:1", "b:1"] {
            for code in ["200", "500"] {
                let mut v = (rng.unit() * 100.0).floor();
                let reset_at = (rng.next() % POINTS as u64) as i64;
                let samples = (0..POINTS)
                    .map(|i| {
                        if i == reset_at && code == "500" {
                            v = 0.0;
                        } else {
                            v += (rng.unit() * 10.0).floor();
                        }
                        Sample { t: ts(i), v }
                    })
                    .collect();
                out.push((
                    l(&[
                        ("__name__", "http_requests_total"),
                        ("job", job),
                        ("instance", inst),
                        ("code", code),
                    ]),
                    samples,
                ));
            }
        }
    }
    // Gauges, also negative, with fractions.
    for (i, sensor) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        let mut v = 20.0 - i as f64 * 15.0;
        let samples = (0..POINTS)
            .map(|k| {
                v += (rng.unit() - 0.5) * 3.0;
                Sample {
                    t: ts(k),
                    v: (v * 100.0).round() / 100.0,
                }
            })
            .collect();
        let job = if i % 2 == 0 { "api" } else { "web" };
        out.push((
            l(&[
                ("__name__", "temperature_celsius"),
                ("job", job),
                ("sensor", sensor),
            ]),
            samples,
        ));
    }
    // Classic histograms.
    for job in ["api", "web"] {
        let bounds = ["0.1", "0.5", "1", "+Inf"];
        let mut counts = [0.0f64; 4];
        let mut sum = 0.0;
        let mut series: Vec<Vec<Sample>> = vec![Vec::new(); 6];
        for k in 0..POINTS {
            for _ in 0..5 {
                let x = rng.unit() * 1.5;
                sum += x;
                for (b, bound) in [0.1, 0.5, 1.0, f64::INFINITY].iter().enumerate() {
                    if x <= *bound {
                        counts[b] += 1.0;
                    }
                }
            }
            for b in 0..4 {
                series[b].push(Sample {
                    t: ts(k),
                    v: counts[b],
                });
            }
            series[4].push(Sample {
                t: ts(k),
                v: (sum * 1000.0).round() / 1000.0,
            });
            series[5].push(Sample {
                t: ts(k),
                v: counts[3],
            });
        }
        for (b, bound) in bounds.iter().enumerate() {
            out.push((
                l(&[
                    ("__name__", "request_duration_seconds_bucket"),
                    ("job", job),
                    ("le", bound),
                ]),
                series[b].clone(),
            ));
        }
        out.push((
            l(&[("__name__", "request_duration_seconds_sum"), ("job", job)]),
            series[4].clone(),
        ));
        out.push((
            l(&[("__name__", "request_duration_seconds_count"), ("job", job)]),
            series[5].clone(),
        ));
    }
    // Node-exporter-like series for the original stack's alert expressions.
    for inst in ["node-1:9100", "node-2:9100"] {
        for cpu in ["0", "1"] {
            for (mode, rate) in [("idle", 0.6), ("user", 0.3), ("system", 0.1)] {
                let mut v = 1000.0;
                let samples = (0..POINTS)
                    .map(|k| {
                        v += 15.0 * rate * (0.5 + rng.unit());
                        Sample {
                            t: ts(k),
                            v: (v * 100.0).round() / 100.0,
                        }
                    })
                    .collect();
                out.push((
                    l(&[
                        ("__name__", "node_cpu_seconds_total"),
                        ("instance", inst),
                        ("cpu", cpu),
                        ("mode", mode),
                    ]),
                    samples,
                ));
            }
        }
        let total = 8.0e9;
        out.push((
            l(&[
                ("__name__", "node_memory_MemTotal_bytes"),
                ("instance", inst),
            ]),
            (0..POINTS).map(|k| Sample { t: ts(k), v: total }).collect(),
        ));
        let avail: Vec<Sample> = (0..POINTS)
            .map(|k| Sample {
                t: ts(k),
                v: (total * (0.05 + 0.5 * rng.unit())).round(),
            })
            .collect();
        out.push((
            l(&[
                ("__name__", "node_memory_MemAvailable_bytes"),
                ("instance", inst),
            ]),
            avail,
        ));
    }
    // ML pipeline gauges that change between runs.
    for pipeline in ["train", "nightly"] {
        let mut r2 = 0.9;
        let samples = (0..POINTS)
            .map(|k| {
                if k % 40 == 0 {
                    r2 = (0.6 + rng.unit() * 0.35 * 1000.0).round() / 1000.0;
                }
                Sample { t: ts(k), v: r2 }
            })
            .collect();
        out.push((
            l(&[("__name__", "ml_model_r2_score"), ("pipeline", pipeline)]),
            samples,
        ));
        let ok: Vec<Sample> = (0..POINTS)
            .map(|k| Sample {
                t: ts(k),
                v: if (k / 40) % 3 == 2 { 0.0 } else { 1.0 },
            })
            .collect();
        out.push((
            l(&[("__name__", "ml_pipeline_success"), ("pipeline", pipeline)]),
            ok,
        ));
    }
    // A series that starts late, one that stops early with a stale marker.
    out.push((
        l(&[("__name__", "late_series"), ("job", "api")]),
        (80..POINTS)
            .map(|k| Sample {
                t: ts(k),
                v: k as f64,
            })
            .collect(),
    ));
    let mut early: Vec<Sample> = (0..120)
        .map(|k| Sample {
            t: ts(k),
            v: k as f64 * 2.0,
        })
        .collect();
    early.push(Sample {
        t: ts(120),
        v: stale_nan(),
    });
    out.push((l(&[("__name__", "early_series"), ("job", "web")]), early));
    out
}

/// Sends the dataset in time order, in slices of 20 steps.
fn send(c: &reqwest::blocking::Client, url: &str, data: &[(Labels, Vec<Sample>)], t0: i64) {
    for k in (0..=POINTS).step_by(20) {
        let (lo, hi) = (t0 + k * STEP, t0 + (k + 20) * STEP);
        let batch: Vec<(Labels, Vec<Sample>)> = data
            .iter()
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.iter()
                        .filter(|x| x.t >= lo && x.t < hi)
                        .copied()
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if batch.is_empty() {
            continue;
        }
        common::remote_write(c, url, &batch);
    }
}

/// The query corpus.
fn corpus() -> Vec<String> {
    let mut q: Vec<String> = [
        // Selectors.
        "http_requests_total",
        "http_requests_total{job=\"api\"}",
        "http_requests_total{job=~\"a.*|web\",code!=\"500\"}",
        "http_requests_total{code!~\"2..\"}",
        "{__name__=~\"node_memory_.*\"}",
        "http_requests_total offset 10m",
        "temperature_celsius offset -5m",
        "late_series",
        "early_series",
        "http_requests_total @ end()",
        "temperature_celsius @ start()",
        // The original stack's alert expressions, verbatim.
        "ml_model_r2_score < 0.8",
        "ml_model_r2_score < 0.7",
        "ml_pipeline_success == 0",
        "100 - (avg by(instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m])) * 100) > 80",
        "100 - (avg by(instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m])) * 100)",
        "(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes) / node_memory_MemTotal_bytes > 0.9",
        "(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes) / node_memory_MemTotal_bytes",
        // Counter functions.
        "rate(http_requests_total[5m])",
        "rate(http_requests_total[1m])",
        "rate(http_requests_total[10m] offset 5m)",
        "irate(http_requests_total[5m])",
        "increase(http_requests_total[10m])",
        "delta(temperature_celsius[10m])",
        "idelta(temperature_celsius[5m])",
        "resets(http_requests_total[30m])",
        "changes(ml_model_r2_score[30m])",
        "deriv(temperature_celsius[10m])",
        "predict_linear(temperature_celsius[10m], 600)",
        "holt_winters(temperature_celsius[10m], 0.5, 0.5)",
        "rate(late_series[5m])",
        "rate(early_series[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum by (job, code) (increase(http_requests_total[5m]))",
        "sum without (instance) (rate(http_requests_total[5m]))",
        "sum(rate(http_requests_total[5m]))",
        "sum by (job) (rate(http_requests_total[5m] @ end()))",
        "avg by (job) (avg_over_time(temperature_celsius[10m]))",
        "stddev by (job) (rate(http_requests_total[5m]))",
        "stdvar without (instance) (irate(http_requests_total[5m]))",
        "min by (code) (increase(http_requests_total[10m]))",
        "max without (instance, code) (rate(http_requests_total[5m]))",
        "count by (job) (rate(http_requests_total[5m]))",
        "group by (job) (changes(temperature_celsius[10m]))",
        "sum(sum by (job, instance) (rate(http_requests_total[5m])))",
        "topk(2, sum by (instance) (rate(http_requests_total[5m])))",
        "sum by (job) (rate(early_series[5m]))",
        "last_over_time(early_series[10m])",
        // Over-time functions.
        "avg_over_time(temperature_celsius[10m])",
        "sum_over_time(temperature_celsius[5m])",
        "count_over_time(http_requests_total[5m])",
        "min_over_time(temperature_celsius[15m])",
        "max_over_time(temperature_celsius[15m])",
        "last_over_time(temperature_celsius[10m])",
        "present_over_time(late_series[10m])",
        "stddev_over_time(temperature_celsius[10m])",
        "stdvar_over_time(temperature_celsius[10m])",
        "quantile_over_time(0.9, temperature_celsius[10m])",
        "quantile_over_time(0.5, http_requests_total[5m])",
        "absent_over_time(late_series[5m])",
        "absent_over_time(nonexistent{job=\"x\"}[5m])",
        "avg_over_time(ml_model_r2_score[1h])",
        // Aggregations.
        "sum(http_requests_total)",
        "sum by (job) (http_requests_total)",
        "avg by (job) (temperature_celsius)",
        "min(temperature_celsius)",
        "max by (job) (temperature_celsius)",
        "count(http_requests_total)",
        "count by (code) (http_requests_total)",
        "group by (job) (http_requests_total)",
        "stddev(temperature_celsius)",
        "stdvar by (job) (temperature_celsius)",
        // Ties in topk/bottomk are broken by storage order in Prometheus
        // (creation order in its head, label order in compacted blocks), so
        // the corpus asks for them on values that do not tie.
        "topk(3, node_cpu_seconds_total)",
        "bottomk(2, temperature_celsius)",
        "topk by (job) (1, http_requests_total)",
        "quantile(0.5, temperature_celsius)",
        "quantile by (job) (0.9, http_requests_total)",
        "count_values(\"value\", ml_pipeline_success)",
        "count_values by (pipeline) (\"v\", ml_pipeline_success)",
        "sum without (code) (http_requests_total)",
        "avg(node_memory_MemAvailable_bytes)",
        // Binary operators.
        "http_requests_total * 2",
        "2 * http_requests_total",
        "http_requests_total / 3",
        "http_requests_total % 7",
        "temperature_celsius ^ 2",
        "-temperature_celsius",
        "temperature_celsius > 0",
        "temperature_celsius > bool 0",
        "0 < temperature_celsius",
        "1 + 2 * 3",
        "2 ^ 3 ^ 2",
        "10 > bool 5",
        "temperature_celsius == bool temperature_celsius",
        "http_requests_total{code=\"200\"} + on(job, instance) http_requests_total{code=\"500\"}",
        "http_requests_total{code=\"200\"} / ignoring(code) http_requests_total{code=\"500\"}",
        "http_requests_total > on(job, instance, code) group_left() (http_requests_total - 5)",
        "http_requests_total / on(job) group_left sum by (job) (http_requests_total)",
        "sum by (job) (http_requests_total) / on(job) group_right http_requests_total",
        "http_requests_total and http_requests_total{code=\"200\"}",
        "http_requests_total or temperature_celsius",
        "http_requests_total unless http_requests_total{job=\"api\"}",
        "http_requests_total and on(job) temperature_celsius",
        "http_requests_total + temperature_celsius",
        "http_requests_total + on(job) temperature_celsius",
        "node_memory_MemTotal_bytes - on(instance) node_memory_MemAvailable_bytes",
        "atan2(temperature_celsius, 2)",
        // Functions on instant vectors.
        "abs(temperature_celsius)",
        "ceil(temperature_celsius)",
        "floor(temperature_celsius)",
        "round(temperature_celsius)",
        "round(temperature_celsius, 0.5)",
        "sqrt(abs(temperature_celsius))",
        "exp(temperature_celsius / 10)",
        "ln(abs(temperature_celsius))",
        "log2(http_requests_total)",
        "log10(http_requests_total)",
        "sgn(temperature_celsius)",
        "clamp(temperature_celsius, -5, 5)",
        "clamp_min(temperature_celsius, 0)",
        "clamp_max(temperature_celsius, 10)",
        "clamp(temperature_celsius, 5, -5)",
        "sin(temperature_celsius)",
        "cos(temperature_celsius)",
        "deg(temperature_celsius)",
        "rad(temperature_celsius)",
        "sort(temperature_celsius)",
        "sort_desc(temperature_celsius)",
        "sort(rate(http_requests_total[5m]))",
        "timestamp(temperature_celsius)",
        "timestamp(temperature_celsius + 1)",
        "time()",
        "vector(1)",
        "vector(time())",
        "scalar(sum(http_requests_total))",
        "scalar(http_requests_total)",
        "absent(nonexistent)",
        "absent(nonexistent{job=\"x\", env=~\"p.*\"})",
        "absent(http_requests_total)",
        "label_replace(temperature_celsius, \"where\", \"$1\", \"sensor\", \"s(.*)\")",
        "label_replace(temperature_celsius, \"job\", \"x-$1\", \"job\", \"(a.*)\")",
        "label_join(http_requests_total, \"both\", \"/\", \"job\", \"code\")",
        "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, request_duration_seconds_bucket)",
        "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
        "day_of_month()",
        "day_of_week()",
        "day_of_year()",
        "days_in_month()",
        "hour()",
        "minute()",
        "month()",
        "year()",
        "hour(vector(1700000000))",
        "pi()",
        // Subqueries.
        "max_over_time(rate(http_requests_total[5m])[30m:1m])",
        "avg_over_time(temperature_celsius[20m:2m])",
        "rate(http_requests_total[10m:30s])",
        "min_over_time(sum by (job) (http_requests_total)[15m:])",
        // Errors both sides must report.
        "http_requests_total + on(job) http_requests_total",
        "sum(",
        "rate(http_requests_total)",
        "label_replace(temperature_celsius, \"1bad\", \"\", \"sensor\", \".*\")",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every over-time and counter function on every numeric family.
    for f in [
        "rate",
        "increase",
        "delta",
        "avg_over_time",
        "max_over_time",
        "changes",
        "deriv",
        "count_over_time",
    ] {
        for m in [
            "http_requests_total",
            "temperature_celsius",
            "node_cpu_seconds_total",
            "ml_model_r2_score",
            "late_series",
        ] {
            q.push(format!("{f}({m}[3m])"));
        }
    }
    for agg in ["sum", "avg", "min", "max", "count", "stddev"] {
        for by in ["", " by (instance)", " without (cpu)"] {
            q.push(format!("{agg}{by} (rate(node_cpu_seconds_total[5m]))"));
        }
    }
    q
}

fn get(c: &reqwest::blocking::Client, url: &str, params: &[(&str, String)]) -> Value {
    let r = c.get(url).query(params).send().unwrap();
    r.json().unwrap_or(Value::Null)
}

fn num(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or("x");
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Compares two successful results; `ordered` keeps result order.
fn same(want: &Value, got: &Value, ordered: bool) -> Result<(), String> {
    if want["resultType"] != got["resultType"] {
        return Err(format!(
            "result type {} vs {}",
            want["resultType"], got["resultType"]
        ));
    }
    let point_eq =
        |a: &Value, b: &Value| a[0].as_f64() == b[0].as_f64() && close(num(&a[1]), num(&b[1]));
    match want["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            if point_eq(&want["result"], &got["result"]) || want["result"] == got["result"] {
                Ok(())
            } else {
                Err(format!("{} vs {}", want["result"], got["result"]))
            }
        }
        _ => {
            let to_map = |v: &Value| -> Vec<(String, Value)> {
                let mut items: Vec<(String, Value)> = v["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| {
                        let m: BTreeMap<String, String> =
                            serde_json::from_value(r["metric"].clone()).unwrap_or_default();
                        (format!("{m:?}"), r)
                    })
                    .collect();
                if !ordered {
                    items.sort_by(|a, b| a.0.cmp(&b.0));
                }
                items
            };
            let (w, g) = (to_map(want), to_map(got));
            if w.len() != g.len() {
                return Err(format!(
                    "{} series vs {}: {:?} vs {:?}",
                    w.len(),
                    g.len(),
                    w.iter().map(|x| &x.0).collect::<Vec<_>>(),
                    g.iter().map(|x| &x.0).collect::<Vec<_>>()
                ));
            }
            for ((wk, wv), (gk, gv)) in w.iter().zip(&g) {
                if wk != gk {
                    return Err(format!("labels {wk} vs {gk}"));
                }
                if let Some(wp) = wv.get("value") {
                    if !point_eq(wp, &gv["value"]) {
                        return Err(format!("{wk}: {wp} vs {}", gv["value"]));
                    }
                } else {
                    let (wp, gp) = (
                        wv["values"].as_array().cloned().unwrap_or_default(),
                        gv["values"].as_array().cloned().unwrap_or_default(),
                    );
                    if wp.len() != gp.len() {
                        return Err(format!("{wk}: {} points vs {}", wp.len(), gp.len()));
                    }
                    for (a, b) in wp.iter().zip(&gp) {
                        if !point_eq(a, b) {
                            return Err(format!("{wk}: {a} vs {b}"));
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[test]
fn promql_answers_match_prometheus() {
    if !common::have(&["prometheus"]) {
        return;
    }
    // Subqueries without a step use the evaluation interval, as in Prometheus.
    let m = Mlmon::start(Some("global:\n  evaluation_interval: 1m\n"));
    let prom = Prometheus::start(
        "global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    let base = prom.base.clone();

    let c = client();
    let now = mlmon::model::now_ms();
    let t0 = (now - 2 * 3_600_000) / 60_000 * 60_000;
    let data = dataset(t0);
    send(&c, &format!("{base}/api/v1/write"), &data, t0);
    send(&c, &m.url("/api/v1/write"), &data, t0);

    let secs = |t: i64| format!("{:.3}", t as f64 / 1000.0);
    let instants = [
        t0 + 10 * 60_000 + 7_000,
        t0 + 30 * 60_000,
        t0 + 59 * 60_000 + 45_000,
        t0 + 62 * 60_000,
    ];
    let queries = corpus();
    let mut failures = Vec::new();
    let mut runs = 0;
    for q in &queries {
        let ordered = q.starts_with("sort");
        let mut cases: Vec<(String, Vec<(&str, String)>)> = instants
            .iter()
            .map(|t| {
                (
                    "/api/v1/query".to_string(),
                    vec![("query", q.clone()), ("time", secs(*t))],
                )
            })
            .collect();
        cases.push((
            "/api/v1/query_range".to_string(),
            vec![
                ("query", q.clone()),
                ("start", secs(t0)),
                ("end", secs(t0 + 65 * 60_000)),
                ("step", "60".into()),
            ],
        ));
        cases.push((
            "/api/v1/query_range".to_string(),
            vec![
                ("query", q.clone()),
                ("start", secs(t0 + 3_000)),
                ("end", secs(t0 + 20 * 60_000)),
                ("step", "37".into()),
            ],
        ));
        for (path, params) in cases {
            runs += 1;
            let want = get(&c, &format!("{base}{path}"), &params);
            let got = get(&c, &m.url(&path), &params);
            let verdict = match (want["status"].as_str(), got["status"].as_str()) {
                (Some("success"), Some("success")) => same(
                    &want["data"],
                    &got["data"],
                    ordered && path.ends_with("query"),
                ),
                (Some("error"), Some("error")) if want["errorType"] == got["errorType"] => Ok(()),
                _ => Err(format!("prometheus {} vs mlmon {}", want, got)),
            };
            if let Err(e) = verdict {
                failures.push(format!("{q} {path} {params:?}: {e}"));
            }
        }
    }
    assert!(
        queries.len() >= 200,
        "the corpus has {} queries",
        queries.len()
    );
    let distinct: std::collections::BTreeSet<String> = failures
        .iter()
        .map(|f| f.split(" /api").next().unwrap().to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {runs} query runs differ from Prometheus ({} queries):\n{}\n\nfirst failures:\n{}",
        failures.len(),
        distinct.len(),
        distinct.iter().cloned().collect::<Vec<_>>().join("\n"),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "{} queries, {runs} runs: all equal to Prometheus",
        queries.len()
    );
}
