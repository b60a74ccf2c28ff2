//! `GET /metrics` (mlmon's own metrics plus everything pushed, in text 0.0.4
//! or OpenMetrics by content negotiation) and `GET /federate` (the latest
//! sample of every matching series, as Prometheus federates).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Params};
use crate::expfmt::{self, Format, MetricFamily, MetricType, ParsedSample};
use crate::ingest::host::process_stats;
use crate::model::{is_stale, now_ms, METRIC_NAME};
use crate::promql::{parse_selector, LOOKBACK_MS};
use crate::tsdb::Querier;

const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

fn content_type(f: Format) -> &'static str {
    match f {
        Format::Text => TEXT_TYPE,
        Format::OpenMetrics => OPENMETRICS_TYPE,
    }
}

/// A family with unlabelled or labelled samples, for mlmon's own metrics.
struct Fam(MetricFamily);

impl Fam {
    fn new(name: &str, typ: MetricType, help: &str) -> Fam {
        Fam(MetricFamily {
            name: name.into(),
            help: Some(help.into()),
            typ,
            unit: None,
            samples: Vec::new(),
        })
    }
    fn sample(mut self, labels: &[(&str, &str)], v: f64) -> Fam {
        self.0.samples.push(ParsedSample {
            name: self.0.name.clone(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value: v,
            timestamp_ms: None,
            line: 0,
        });
        self
    }
    fn value(self, v: f64) -> Fam {
        self.sample(&[], v)
    }
}

/// mlmon's own metric families, current values.
fn own_families(state: &AppState) -> Vec<MetricFamily> {
    use MetricType::{Counter, Gauge};
    let s = state.storage.stats();
    let p = process_stats();
    let m = &state.metrics;
    let load =
        |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let mut requests = Fam::new(
        "mlmon_http_requests_total",
        Counter,
        "HTTP requests answered, by route and status code.",
    );
    let mut durations = Fam::new(
        "mlmon_http_request_duration_seconds_total",
        Counter,
        "Time spent answering HTTP requests, by route and status code.",
    );
    for ((handler, code), (count, secs)) in m.requests() {
        let code = code.to_string();
        let labels = [("code", code.as_str()), ("handler", handler.as_str())];
        requests = requests.sample(&labels, count as f64);
        durations = durations.sample(&labels, secs);
    }
    let mut runs = Fam::new(
        "mlmon_collector_runs_total",
        Counter,
        "Runs of each collector.",
    );
    let mut errors = Fam::new(
        "mlmon_collector_errors_total",
        Counter,
        "Collector runs that failed, in whole or in part.",
    );
    let mut took = Fam::new(
        "mlmon_collector_duration_seconds",
        Gauge,
        "How long each collector's last run took.",
    );
    for (name, c) in m.collectors() {
        let labels = [("collector", name.as_str())];
        runs = runs.sample(&labels, c.runs as f64);
        errors = errors.sample(&labels, c.errors as f64);
        took = took.sample(&labels, c.last_seconds);
    }
    let mut attempts = Fam::new(
        "mlmon_notifications_total",
        Counter,
        "Notification attempts (each retry counts), by integration.",
    );
    let mut failed = Fam::new(
        "mlmon_notifications_failed_total",
        Counter,
        "Notification attempts that failed, by integration.",
    );
    let mut delivered = Fam::new(
        "mlmon_notification_deliveries_total",
        Counter,
        "Notifications delivered or given up on, by integration and outcome.",
    );
    let mut latency_sum = Fam::new(
        "mlmon_notification_latency_seconds_total",
        Counter,
        "Time from the first attempt to the end of a delivery, summed, by integration.",
    );
    for (integration, v) in state.notify.metrics.snapshot() {
        let labels = [("integration", integration.as_str())];
        attempts = attempts.sample(&labels, v[0]);
        failed = failed.sample(&labels, v[1]);
        delivered = delivered
            .sample(
                &[("integration", integration.as_str()), ("outcome", "sent")],
                v[2] - v[3],
            )
            .sample(
                &[("integration", integration.as_str()), ("outcome", "failed")],
                v[3],
            );
        latency_sum = latency_sum.sample(&labels, v[4]);
    }
    let mut remote = Vec::new();
    for (name, help, counter, samples) in
        crate::remote::metrics(&state.remote.get(), &state.storage)
    {
        let mut f = Fam::new(name, if counter { Counter } else { Gauge }, help);
        for (remote_name, url, v) in samples {
            f = f.sample(
                &[("remote_name", remote_name.as_str()), ("url", url.as_str())],
                v,
            );
        }
        remote.push(f);
    }
    let reloads = state.reloads.get();
    let mut families = vec![
        Fam::new(
            "mlmon_config_last_reload_successful",
            Gauge,
            "Whether the last configuration reload attempt was successful.",
        )
        .value(if reloads.ok { 1.0 } else { 0.0 }),
        Fam::new(
            "mlmon_config_last_reload_success_timestamp_seconds",
            Gauge,
            "Timestamp of the last successful configuration reload.",
        )
        .value(reloads.success_ms as f64 / 1000.0),
        runs,
        errors,
        took,
        attempts,
        failed,
        delivered,
        latency_sum,
        Fam::new(
            "mlmon_build_info",
            Gauge,
            "A metric with a constant '1' value labelled by the version of mlmon.",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0),
        Fam::new(
            "mlmon_samples_ingested_total",
            Counter,
            "Samples accepted, by source.",
        )
        .sample(&[("source", "push")], load(&m.samples_push))
        .sample(&[("source", "remote_write")], load(&m.samples_remote_write))
        .sample(&[("source", "otlp")], load(&m.samples_otlp)),
        Fam::new(
            "mlmon_remote_write_histograms_dropped_total",
            Counter,
            "Native histogram samples received by remote write and not stored.",
        )
        .value(load(&m.remote_write_histograms_dropped)),
        Fam::new("mlmon_push_groups", Gauge, "Push groups currently held.")
            .value(state.push.len() as f64),
        Fam::new(
            "mlmon_engine_queries",
            Gauge,
            "User queries running now (Prometheus: prometheus_engine_queries).",
        )
        .value(state.queries.running() as f64),
        Fam::new(
            "mlmon_engine_queries_concurrent_max",
            Gauge,
            "Most user queries run at once (query.max_concurrency).",
        )
        .value(state.settings.get().max_concurrent_queries as f64),
        Fam::new("mlmon_storage_series", Gauge, "Series in the store.").value(s.series as f64),
        Fam::new(
            "mlmon_storage_head_samples",
            Gauge,
            "Samples in open head chunks.",
        )
        .value(s.head_samples as f64),
        Fam::new(
            "mlmon_storage_wal_bytes",
            Gauge,
            "Bytes of the write-ahead log's segment files.",
        )
        .value(s.wal_bytes as f64),
        Fam::new("mlmon_storage_parts", Gauge, "Part files of closed chunks.")
            .value(s.parts as f64),
        Fam::new(
            "mlmon_storage_chunks",
            Gauge,
            "Closed chunks in part files.",
        )
        .value(s.chunks as f64),
        Fam::new(
            "mlmon_storage_chunk_bytes",
            Gauge,
            "Bytes of the part files: closed chunks and their index.",
        )
        .value(s.chunk_bytes as f64),
        Fam::new(
            "mlmon_storage_series_bytes",
            Gauge,
            "Bytes of the series files (label sets).",
        )
        .value(s.series_bytes as f64),
        Fam::new(
            "mlmon_storage_file_bytes",
            Gauge,
            "Size of the database file.",
        )
        .value(s.file_bytes as f64),
        Fam::new(
            "mlmon_storage_bytes",
            Gauge,
            "Bytes of every file of the data directory: data file, parts, series files, log.",
        )
        .value(s.disk_bytes() as f64),
        Fam::new(
            "mlmon_storage_retention_limit_bytes",
            Gauge,
            "storage.retention_size (0: no bound).",
        )
        .value(state.storage.retention_bytes().unwrap_or(0) as f64),
        Fam::new(
            "mlmon_storage_filesystem_avail_bytes",
            Gauge,
            "Bytes free for mlmon on the filesystem holding the data directory.",
        )
        .value(state.storage.free_bytes().unwrap_or(0) as f64),
        Fam::new(
            "mlmon_storage_samples_appended_total",
            Counter,
            "Samples written to the store.",
        )
        .value(s.samples_appended_total as f64),
        Fam::new(
            "mlmon_storage_batches_rejected_total",
            Counter,
            "Append batches refused for limits, order or duplicates.",
        )
        .value(s.batches_rejected_total as f64),
        Fam::new(
            "mlmon_storage_checkpoints_total",
            Counter,
            "Head checkpoints taken.",
        )
        .value(s.checkpoints_total as f64),
        Fam::new(
            "mlmon_storage_compactions_total",
            Counter,
            "Compactions of the database file.",
        )
        .value(s.compactions_total as f64),
        Fam::new(
            "mlmon_storage_retention_deleted_chunks_total",
            Counter,
            "Chunks deleted by retention.",
        )
        .value(s.retention_chunks_deleted_total as f64),
        Fam::new(
            "mlmon_storage_retention_deleted_series_total",
            Counter,
            "Series deleted by retention.",
        )
        .value(s.retention_series_deleted_total as f64),
        requests,
        durations,
        Fam::new(
            "process_cpu_seconds_total",
            Counter,
            "Total user and system CPU time spent in seconds.",
        )
        .value(p.cpu_seconds),
        Fam::new(
            "process_resident_memory_bytes",
            Gauge,
            "Resident memory size in bytes.",
        )
        .value(p.resident_bytes),
        Fam::new(
            "process_virtual_memory_bytes",
            Gauge,
            "Virtual memory size in bytes.",
        )
        .value(p.virtual_bytes),
        Fam::new(
            "process_start_time_seconds",
            Gauge,
            "Start time of the process since unix epoch in seconds.",
        )
        .value(p.start_time_seconds),
        Fam::new(
            "process_open_fds",
            Gauge,
            "Number of open file descriptors.",
        )
        .value(p.open_fds),
        Fam::new(
            "process_max_fds",
            Gauge,
            "Maximum number of open file descriptors.",
        )
        .value(p.max_fds),
    ];
    families.extend(remote);
    families.into_iter().map(|f| f.0).collect()
}

/// Names and types of mlmon's own families; pushes may not redefine them.
pub fn reserved_names(state: &AppState) -> HashMap<String, MetricType> {
    own_families(state)
        .into_iter()
        .map(|f| (f.name, f.typ))
        .collect()
}

/// Prometheus' `/api/v1/metadata`: type, help and unit of the metric
/// families mlmon knows (its own and everything pushed), `metric` and
/// `limit` as in Prometheus.
pub async fn metadata(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let only = params
        .iter()
        .find(|(k, _)| k == "metric")
        .map(|(_, v)| v.clone());
    let limit = match params.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => Some(v.parse::<i64>().map_err(|_| {
            ApiError::BadData(format!(
                "invalid parameter \"limit\": {v:?} is not a number"
            ))
        })?),
        None => None,
    };
    let mut out = serde_json::Map::new();
    for fam in own_families(&state)
        .into_iter()
        .chain(state.push.families())
    {
        if only.as_ref().is_some_and(|m| *m != fam.name) || out.contains_key(&fam.name) {
            continue;
        }
        if limit.is_some_and(|l| l >= 0 && out.len() as i64 >= l) {
            break;
        }
        let entry = serde_json::json!([{
            "type": match fam.typ { MetricType::Untyped => "unknown", t => t.text_name() },
            "help": fam.help.clone().unwrap_or_default(),
            "unit": fam.unit.clone().unwrap_or_default(),
        }]);
        out.insert(fam.name.clone(), entry);
    }
    Ok(axum::Json(
        serde_json::json!({"status": "success", "data": out}),
    ))
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = negotiate(&headers);
    let mut families = own_families(&state);
    let own: HashMap<String, usize> = families
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    for fam in state.push.families() {
        match own.get(&fam.name) {
            Some(&i) => families[i].samples.extend(fam.samples),
            None => families.push(fam),
        }
    }
    let mut out = String::with_capacity(8192);
    expfmt::write_families(&mut out, &families, format);
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    ([(header::CONTENT_TYPE, content_type(format))], out).into_response()
}

/// `GET /ml-metrics`: the latest value of every `ml_*` series, as the
/// original stack's custom metrics endpoint served them.
pub async fn ml_metrics(state: State<AppState>) -> Result<Response, ApiError> {
    federate(
        state,
        Params(vec![("match[]".into(), "{__name__=~\"ml_.+\"}".into())]),
    )
    .await
}

pub async fn federate(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let mut selectors = Vec::new();
    for (k, v) in &params {
        if k == "match[]" {
            selectors.extend(parse_selector(v)?);
        }
    }
    let now = now_ms();
    let storage = state.storage.clone();
    let external = state.settings.get().external_labels.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let mut latest = Vec::new();
        for set in &selectors {
            for s in storage.select(set, now - LOOKBACK_MS, now)? {
                if let Some(last) = s.samples.last().filter(|x| !is_stale(x.v)) {
                    latest.push((s.labels.clone(), *last));
                }
            }
        }
        latest.sort_by(|a, b| (a.0.metric_name(), &a.0).cmp(&(b.0.metric_name(), &b.0)));
        latest.dedup_by(|a, b| a.0 == b.0);
        let mut out = String::new();
        let mut current: Option<String> = None;
        for (labels, s) in latest {
            let name = labels.metric_name().unwrap_or("").to_string();
            if current.as_deref() != Some(name.as_str()) {
                expfmt::write_header(&mut out, &name, None, MetricType::Untyped, Format::Text);
                current = Some(name.clone());
            }
            let mut l = (*labels).clone();
            for (n, v) in external.iter() {
                if l.get(n).is_none() {
                    l = l.with(n, v);
                }
            }
            let pairs = l.iter().filter(|(n, _)| *n != METRIC_NAME);
            expfmt::write_sample(&mut out, &name, pairs, s.v, Some(s.t), Format::Text);
        }
        Ok(out)
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, TEXT_TYPE)], body).into_response())
}
