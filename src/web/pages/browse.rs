//! The pages behind the overview: pipeline runs (list and detail), rules,
//! scrape targets and probes, status (build, configuration with secrets
//! redacted, storage figures), the PromQL explorer, and `/api/status`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::html;
use serde_json::json;

use super::overview::{r2_class, STAGES};
use super::*;
use crate::ingest::runs::{self, StageStatus};

const PAGE_SIZE: usize = 20;

fn metric_cell(v: Option<&f64>, r2: bool) -> Markup {
    html! {
        @match v {
            Some(v) if r2 => td.(r2_class(*v)) { (number(*v)) },
            Some(v) => td { (number(*v)) },
            None => td.muted { "—" },
        }
    }
}

/// `GET /runs?page=N`
pub async fn runs(State(state): State<AppState>, Query(p): QueryMap) -> Response {
    let page_no: usize = match p.get("page").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return problem(
                &state,
                StatusCode::BAD_REQUEST,
                "Runs",
                "page: must be a number from 1",
            )
        }
    };
    let storage = state.storage.clone();
    let all = match tokio::task::spawn_blocking(move || runs::list(&storage)).await {
        Ok(Ok(r)) => r,
        _ => {
            return problem(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runs",
                "cannot read the runs; the details are in mlmon's log",
            )
        }
    };
    let now = now_ms();
    let pages = all.len().div_ceil(PAGE_SIZE).max(1);
    let shown: Vec<_> = all
        .iter()
        .skip((page_no - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let body = html! {
        h1 { "Pipeline runs" }
        @if all.is_empty() { p.muted { "No runs recorded yet." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Finished" } th { "Pipeline" } th { "Status" } th { "Duration" } th { "R²" } th { "RMSE" } th { "MAE" } } }
                tbody { @for r in &shown {
                    tr {
                        td { a href={ "/runs/" (crate::model::percent_encode(&r.id)) } { (local_time(r.finished_ms)) } br; span.muted { (ago(r.finished_ms, now)) } }
                        td { (r.pipeline) }
                        td {
                            @if r.success { span.good { "succeeded" } } @else {
                                span.crit { "failed" }
                                @for (key, name) in STAGES {
                                    @if r.stages.get(key).is_some_and(|s| s.status == StageStatus::Failed) { " at " (name) }
                                }
                                @if let Some(c) = r.exit_code { @if c != 0 { " (exit " (c) ")" } }
                            }
                        }
                        td { (duration_text(r.duration_seconds())) }
                        (metric_cell(r.metrics.get("test_r2"), true))
                        (metric_cell(r.metrics.get("test_rmse"), false))
                        (metric_cell(r.metrics.get("test_mae"), false))
                    }
                } }
            } }
            nav aria-label="Pages" {
                @if page_no > 1 { a href={ "/runs?page=" (page_no - 1) } { "← newer" } " " }
                "page " (page_no) " of " (pages)
                @if page_no < pages { " " a href={ "/runs?page=" (page_no + 1) } { "older →" } }
            }
        }
    };
    super::page(layout(&state, "Runs", "/runs", true, body))
}

/// `GET /runs/{id}`
pub async fn run(State(state): State<AppState>, csrf: Csrf, Path(id): Path<String>) -> Response {
    let storage = state.storage.clone();
    let all = tokio::task::spawn_blocking(move || runs::list(&storage))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let Some(r) = all.iter().find(|r| r.id == id).cloned() else {
        return problem(
            &state,
            StatusCode::NOT_FOUND,
            "Run not found",
            "No run has this id; it may be older than the retention.",
        );
    };
    let reference = r
        .reference
        .as_ref()
        .and_then(|id| all.iter().find(|x| &x.id == id));
    let baseline = {
        let (storage, pipeline) = (state.storage.clone(), r.pipeline.clone());
        tokio::task::spawn_blocking(move || runs::baseline(&storage, &pipeline))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    };
    let now = now_ms();
    let body = html! {
        h1 { "Run " (r.id) }
        p {
            @if r.success { span.badge.good { "succeeded" } } @else { span.badge.crit { "failed" } }
            " pipeline " strong { (r.pipeline) } " · started " (local_time(r.started_ms))
            " · finished " (when(r.finished_ms, now)) " · took " (duration_text(r.duration_seconds()))
        }
        @if let Some(c) = &r.command { p { "Command: " code { (c) } @if let Some(x) = r.exit_code { " exited " (x) } } }
        h2 { "Stages" }
        div.table-wrap { table {
            thead { tr { th { "Stage" } th { "Result" } th { "Finished" } th { "Took" } th { "Detail" } } }
            tbody { @for (key, name) in STAGES {
                tr {
                    td { (name) }
                    @match r.stages.get(key) {
                        Some(s) => {
                            @match s.status {
                                StageStatus::Succeeded => td.good { "succeeded" },
                                StageStatus::Failed => td.crit { "failed" },
                                StageStatus::Missing => td.muted { "left nothing" },
                            }
                            td { @match s.finished_ms { Some(t) => (local_time(t)), None => "—" } }
                            td { @match s.seconds { Some(x) => (duration_text(x)), None => "—" } }
                            td { (s.detail.clone().unwrap_or_default()) }
                        }
                        None => { td.muted { "—" } td {} td {} td {} }
                    }
                }
            } }
        } }
        h2 { "Metrics" }
        @if r.metrics.is_empty() { p.muted { "This run left no evaluation report." } }
        div.table-wrap { table { tbody { @for (k, v) in &r.metrics {
            tr { th { (k) } (metric_cell(Some(v), k.ends_with("r2"))) }
        } } } }
        (super::data::sections(&r, reference, baseline.as_deref() == Some(r.id.as_str()), &csrf))
        p { a href="/runs" { "All runs" } }
    };
    csrf.apply(super::page(layout(
        &state,
        &format!("Run {}", r.id),
        "/runs",
        false,
        body,
    )))
}

/// `GET /rules`
pub async fn rules(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let body = html! {
        h1 { "Rules" }
        @if state.rules.get().is_empty() { p.muted { "No rule files loaded (rule_files in mlmon.yml)." } }
        @for g in state.rules.get().iter() {
            @let g = g.lock().unwrap_or_else(|p| p.into_inner());
            section.panel style="margin-bottom:1rem" {
                h2 { (g.name) }
                p.muted { (g.file) " · every " (duration_text(g.interval_ms as f64 / 1000.0))
                    @if g.last_eval_ms > 0 { " · evaluated " (when(g.last_eval_ms, now)) " in " (format!("{:.1} ms", g.eval_seconds * 1000.0)) } }
                div.table-wrap { table {
                    thead { tr { th { "Rule" } th { "Expression" } th { "Health" } th { "Alerts" } } }
                    tbody { @for r in &g.rules {
                        tr {
                            td { @if let Some(a) = &r.rule.alert { "alert: " strong { (a) } } @else if let Some(n) = &r.rule.record { "record: " strong { (n) } } }
                            td { code { (r.rule.expr) } }
                            td {
                                @match r.health { "ok" => span.good { "ok" }, "err" => span.crit { "error" }, _ => span.muted { "not evaluated" } }
                                @if !r.last_error.is_empty() { br; span.crit { (r.last_error) } }
                            }
                            td { (r.alerts.values().filter(|a| a.state != crate::rules::engine::AlertState::Inactive).count()) }
                        }
                    } }
                } }
            }
        }
    };
    super::page(layout(&state, "Rules", "/rules", true, body))
}

/// `GET /targets`: scrape targets and probes.
pub async fn targets(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let body = html! {
        h1 { "Targets" }
        h2 { "Scrape targets" }
        @if state.targets.get().active.is_empty() { p.muted { "No scrape_configs." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Endpoint" } th { "Job" } th { "Health" } th { "Last scrape" } th { "Error" } } }
                tbody { @for t in &state.targets.get().active {
                    @let st = t.status();
                    tr {
                        td { code { (t.url) } }
                        td { (t.job) }
                        td { @match st.health.as_str() { "up" => span.good { "up" }, "down" => span.crit { "down" }, other => span.muted { (other) } } }
                        td { @if st.last_scrape_ms > 0 { (when(st.last_scrape_ms, now)) " · " (format!("{:.0} ms", st.last_duration * 1000.0)) } }
                        td.crit { (st.last_error) }
                    }
                } }
            } }
        }
        h2 { "Probes" }
        @if state.probes.get().is_empty() { p.muted { "No probes." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Probe" } th { "URL" } th { "Health" } th { "Last probe" } th { "Error" } } }
                tbody { @for p in state.probes.get().iter() {
                    @let st = p.status();
                    tr {
                        td { (st.name) }
                        td { code { (st.url) } }
                        td { @match st.health { "up" => span.good { "up" }, "down" => span.crit { "down" }, _ => span.muted { "unknown" } } }
                        td { @if st.last_probe_ms > 0 { (when(st.last_probe_ms, now)) " · HTTP " (st.status_code) " · " (format!("{:.0} ms", st.last_duration * 1000.0)) } }
                        td.crit { (st.last_error) }
                    }
                } }
            } }
        }
    };
    super::page(layout(&state, "Targets", "/targets", true, body))
}

/// mlmon.yml as written, with secret values replaced.
fn redacted_config(state: &AppState) -> Option<String> {
    let path = state.settings.get().config_file.clone()?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(crate::model::redact_secrets(&text))
}

/// How long the disk lasts at the rate samples arrived since the start:
/// until `storage.retention_size` starts dropping the oldest data, or
/// until the filesystem is full.
fn projection(
    state: &AppState,
    st: &crate::tsdb::StorageStats,
    samples: Option<u64>,
    now: crate::model::Timestamp,
) -> String {
    let uptime_s = ((now - state.settings.get().started_ms()) as f64 / 1000.0).max(1.0);
    let per_sample = match samples {
        Some(n) if n > 0 => st.disk_bytes() as f64 / n as f64,
        _ => return "—".into(),
    };
    let per_day = st.samples_appended_total as f64 / uptime_s * 86_400.0 * per_sample;
    if per_day <= 0.0 {
        return "no samples arriving".into();
    }
    let used = st.disk_bytes() as f64;
    match (state.storage.retention_bytes(), state.storage.free_bytes()) {
        (Some(bound), _) => format!(
            "{:.1} days until retention_size is reached, then about {:.1} days kept ({} a day)",
            ((bound as f64 - used) / per_day).max(0.0),
            bound as f64 / per_day,
            chart::Unit::Bytes.format(per_day)
        ),
        (None, Some(free)) => format!(
            "{:.1} days until the disk is full ({} a day)",
            free as f64 / per_day,
            chart::Unit::Bytes.format(per_day)
        ),
        (None, None) => format!("{} a day", chart::Unit::Bytes.format(per_day)),
    }
}

/// `GET /status`
pub async fn status(State(state): State<AppState>) -> Response {
    let s = state.clone();
    let samples = tokio::task::spawn_blocking(move || s.storage.sample_count().ok())
        .await
        .ok()
        .flatten();
    let st = state.storage.stats();
    let started = state.settings.get().started_ms();
    let now = now_ms();
    let (receivers, am_config) = {
        let n = state.notify.lock();
        (n.config().receivers.len(), n.config().redacted())
    };
    let reloads = state.reloads.get();
    let body = html! {
        h1 { "Status" }
        @if let Some(e) = &reloads.error {
            section.panel.error {
                h2 { "The last reload failed; the configuration loaded " (ago(reloads.success_ms, now)) " keeps running" }
                pre { (e) }
            }
        }
        div.grid {
            section.panel {
                h2 { "Build and runtime" }
                table { tbody {
                    tr { th { "Version" } td { (env!("CARGO_PKG_VERSION")) } }
                    tr { th { "Started" } td { (local_time(started)) " (" (ago(started, now)) ")" } }
                    tr { th { "Listening on" } td { (state.settings.get().listen) } }
                    tr { th { "Config file" } td { @match &state.settings.get().config_file { Some(p) => code { (p.display()) }, None => "built-in defaults" } } }
                    tr { th { "Configuration loaded" } td { (local_time(reloads.success_ms)) " (" (ago(reloads.success_ms, now)) ")" @if !reloads.ok { " · last reload failed" } } }
                    tr { th { "Rule groups" } td { (state.rules.get().len()) } }
                    tr { th { "Receivers" } td { (receivers) } }
                } }
            }
            section.panel {
                h2 { "Storage" }
                table { tbody {
                    tr { th { "Series" } td { (st.series) } }
                    tr { th { "Samples" } td { @match samples { Some(n) => (n), None => "—" } } }
                    tr { th { "Chunk bytes per sample" } td { @match samples { Some(n) if n > 0 => (format!("{:.2}", st.chunk_bytes as f64 / n.saturating_sub(st.head_samples as u64).max(1) as f64)), _ => "—" } " (closed chunks)" } }
                    tr { th { "Data file" } td { (chart::Unit::Bytes.format(st.file_bytes as f64)) } }
                    tr { th { "Chunks" } td { (st.chunks) " · " (chart::Unit::Bytes.format(st.chunk_bytes as f64)) } }
                    tr { th { "Head samples" } td { (st.head_samples) } }
                    tr { th { "WAL" } td { (chart::Unit::Bytes.format(st.wal_bytes as f64)) } }
                    tr { th { "Disk used" } td { (chart::Unit::Bytes.format(st.disk_bytes() as f64)) @if let Some(b) = state.storage.retention_bytes() { " of " (chart::Unit::Bytes.format(b as f64)) " (retention_size)" } } }
                    tr { th { "Bytes per sample" } td { @match samples { Some(n) if n > 0 => (format!("{:.2}", st.disk_bytes() as f64 / n as f64)), _ => "—" } " (all files)" } }
                    tr { th { "Projected" } td { (projection(&state, &st, samples, now)) } }
                    tr { th { "Retention" } td { (state.settings.get().retention) } }
                } }
            }
        }
        @if !state.remote.get().is_empty() {
            h2 { "Remote write" }
            table {
                thead { tr { th { "Endpoint" } th { "Sent" } th { "Refused" } th { "Dropped" } th { "Backlog" } th { "Newest sent" } th { "Last error" } } }
                tbody {
                    @for ep in state.remote.get().iter() {
                        @let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                        @let newest = crate::remote::highest_sent(ep);
                        tr {
                            td { (ep.config.name) " " code { (ep.config.url) } }
                            td { (load(&ep.sent)) }
                            td { (load(&ep.failed)) }
                            td { (load(&ep.dropped) + state.storage.log_dropped(&ep.config.name)) }
                            td { (chart::Unit::Bytes.format(state.storage.log_backlog_bytes(&ep.config.name) as f64)) }
                            td { @if newest > 0 { (local_time(newest)) " (" (ago(newest, now)) ")" } @else { "—" } }
                            td { (ep.last_error.lock().map(|e| e.clone()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        h2 { "Configuration" }
        @match redacted_config(&state) {
            Some(t) => pre { (t) },
            None => p.muted { "Running on built-in defaults." },
        }
        h2 { "Notifier configuration" }
        pre { (am_config) }
    };
    super::page(layout(&state, "Status", "/status", false, body))
}

/// `GET /api/status`: the original stack's status JSON.
pub async fn status_json(State(state): State<AppState>) -> Response {
    let st = state.storage.stats();
    let uptime = state
        .settings
        .get()
        .started
        .elapsed()
        .map_or(0.0, |d| d.as_secs_f64());
    let firing = super::overview::rule_alerts(&state)
        .iter()
        .filter(|a| a.state == "firing")
        .count();
    Json(json!({
        "status": "healthy",
        "timestamp": crate::model::rfc3339(now_ms()),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "series": st.series,
        "firing_alerts": firing,
        "rule_groups": state.rules.get().len(),
        "scrape_targets": state.targets.get().active.len(),
        "probes": state.probes.get().len(),
    }))
    .into_response()
}

/// `GET /graph?expr=…&range=…`: a chart and the current values.
pub async fn graph(State(state): State<AppState>, Query(p): QueryMap) -> Response {
    let expr = p.get("expr").cloned().unwrap_or_default();
    let r = Range::from_params(&p, "1h", now_ms());
    let s = state.clone();
    let e = expr.clone();
    let result = state
        .queries
        .run(move || {
            let r = r?;
            if e.trim().is_empty() {
                return Ok((r, None, Vec::new()));
            }
            let series = range_series(&s, &e, &r, &|l: &Labels| {
                let mut t = String::new();
                for (n, v) in l.iter() {
                    if !t.is_empty() {
                        t.push_str(", ");
                    }
                    t.push_str(&format!("{n}=\"{v}\""));
                }
                if t.is_empty() {
                    "{}".into()
                } else {
                    t
                }
            })?;
            let now = crate::promql::instant(&*s.storage, &e, now_ms(), &s.settings.get().query)
                .map_err(|e| e.to_string())?;
            let rows: Vec<(String, String)> = match now {
                crate::promql::Value::Vector(v) => v
                    .iter()
                    .map(|x| (format!("{}", LabelsText(&x.labels)), number(x.v)))
                    .collect(),
                crate::promql::Value::Scalar { v, .. } => vec![("scalar".into(), number(v))],
                crate::promql::Value::String { s, .. } => vec![("string".into(), s)],
                crate::promql::Value::Matrix(m) => m
                    .iter()
                    .map(|x| {
                        (
                            format!("{}", LabelsText(&x.labels)),
                            format!("{} samples", x.samples.len()),
                        )
                    })
                    .collect(),
            };
            Ok::<_, String>((r, Some(series), rows))
        })
        .await;
    let (range, series, rows, error) = match result {
        Ok(Ok((r, s, rows))) => (Some(r), s, rows, None),
        Ok(Err(e)) => (None, None, Vec::new(), Some(e)),
        Err(e) => (None, None, Vec::new(), Some(e.public_message())),
    };
    let picker_range = range.clone().unwrap_or_else(|| {
        Range::from_params(&BTreeMap::new(), "1h", now_ms()).expect("1h is valid")
    });
    let body = html! {
        h1 { "Graph" }
        form method="get" action="/graph" {
            label for="expr" { "PromQL expression" }
            textarea #expr name="expr" rows="3" spellcheck="false" { (expr) }
            @if let Some(r) = range.as_ref().and_then(|r| r.preset) { input type="hidden" name="range" value=(r); }
            div.row { button type="submit" { "Run query" } }
        }
        (range_picker("/graph", &picker_range, &[("expr", expr.as_str())]))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if let (Some(series), Some(r)) = (series, range.as_ref()) {
            section.panel { (figure(&expr, &chart_of(series, r, Unit::Plain), WIDE)) }
            h2 { "Now" }
            @if rows.is_empty() { p.muted { "Empty result." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th { "Series" } th { "Value" } } }
                    tbody { @for (l, v) in &rows { tr { td { code { (l) } } td { (v) } } } }
                } }
            }
        }
    };
    super::page(layout(&state, "Graph", "/graph", false, body))
}

/// Labels as PromQL writes them: `name{a="b"}`.
struct LabelsText<'a>(&'a Labels);

impl std::fmt::Display for LabelsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.metric_name().unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for (n, v) in self
            .0
            .iter()
            .filter(|(n, _)| *n != crate::model::METRIC_NAME)
        {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        write!(f, "}}")
    }
}
