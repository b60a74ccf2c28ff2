//! `/`: is the pipeline, the model, the model API and the machine healthy,
//! what is alerting, and how did things change. Also `/api/dashboard`, the
//! same facts as JSON.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde_json::json;

use super::*;
use crate::ingest::probe::ProbeStatus;
use crate::ingest::runs::{self, Run, StageStatus};
use crate::rules::engine::AlertState;

/// The pipeline's stages in order, with their display names.
pub(super) const STAGES: [(&str, &str); 5] = [
    ("data_ingestion", "Ingestion"),
    ("data_validation", "Validation"),
    ("data_transformation", "Transformation"),
    ("model_trainer", "Training"),
    ("model_evaluation", "Evaluation"),
];

/// R² against the alert thresholds: ≥ 0.8 good, ≥ 0.7 warning, else
/// critical.
pub(super) fn r2_class(v: f64) -> &'static str {
    if v >= 0.8 {
        "good"
    } else if v >= 0.7 {
        "warn"
    } else {
        "crit"
    }
}

/// An alert as the overview lists it.
pub(super) struct AlertRow {
    pub name: String,
    pub severity: String,
    pub state: &'static str,
    pub summary: String,
    pub since_ms: Timestamp,
    pub labels: Labels,
}

/// Firing and pending alerts of every rule group, firing first.
pub(super) fn rule_alerts(state: &AppState) -> Vec<AlertRow> {
    let mut out = Vec::new();
    for g in state.rules.get().iter() {
        let g = g.lock().unwrap_or_else(|p| p.into_inner());
        for (_, a) in g.active_alerts() {
            out.push(AlertRow {
                name: a.labels.get("alertname").unwrap_or("").to_string(),
                severity: a.labels.get("severity").unwrap_or("").to_string(),
                state: a.state.as_str(),
                summary: a
                    .annotations
                    .get("summary")
                    .or_else(|| a.annotations.get("description"))
                    .cloned()
                    .unwrap_or_default(),
                since_ms: if a.state == AlertState::Firing {
                    a.fired_at_ms.unwrap_or(a.active_at_ms)
                } else {
                    a.active_at_ms
                },
                labels: a.labels.clone(),
            });
        }
    }
    out.sort_by(|a, b| (a.state != "firing", &a.name).cmp(&(b.state != "firing", &b.name)));
    out
}

struct Model {
    pipeline: String,
    r2: Option<f64>,
    rmse: Option<f64>,
    mae: Option<f64>,
}

fn models(state: &AppState) -> Vec<Model> {
    let mut out: Vec<Model> = Vec::new();
    for (metric, which) in [
        ("ml_model_r2_score", 0),
        ("ml_model_rmse", 1),
        ("ml_model_mae", 2),
    ] {
        for (labels, v) in instant(state, metric) {
            let pipeline = labels.get("pipeline").unwrap_or("").to_string();
            let i = match out.iter().position(|m| m.pipeline == pipeline) {
                Some(i) => i,
                None => {
                    out.push(Model {
                        pipeline,
                        r2: None,
                        rmse: None,
                        mae: None,
                    });
                    out.len() - 1
                }
            };
            let slot = match which {
                0 => &mut out[i].r2,
                1 => &mut out[i].rmse,
                _ => &mut out[i].mae,
            };
            *slot = Some(v);
        }
    }
    out.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    out
}

struct Data {
    range: Range,
    models: Vec<Model>,
    runs: Vec<Run>,
    probes: Vec<ProbeStatus>,
    alerts: Vec<AlertRow>,
    charts: Vec<(&'static str, Chart)>,
    errors: Vec<String>,
}

/// The host and model-API charts of the overview.
fn host_charts(
    state: &AppState,
    r: &Range,
    errors: &mut Vec<String>,
) -> Vec<(&'static str, Chart)> {
    let w = r.window();
    let instance = |l: &Labels| l.get("instance").unwrap_or("").to_string();
    let mut run = |expr: String, name: &dyn Fn(&Labels) -> String| {
        range_series(state, &expr, r, name).unwrap_or_else(|e| {
            errors.push(format!("{expr}: {e}"));
            Vec::new()
        })
    };
    let cpu = run(
        format!(
            "100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode=\"idle\"}}[{w}])))"
        ),
        &instance,
    );
    let memory = run(
        "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)".into(),
        &instance,
    );
    let disk = run(
        "100 * (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)".into(),
        &|l| l.get("mountpoint").unwrap_or("").to_string(),
    );
    let mut network = run(
        format!(
            "sum by (instance) (rate(node_network_receive_bytes_total{{device!=\"lo\"}}[{w}]))"
        ),
        &|l| format!("received {}", instance(l)),
    );
    network.extend(run(
        format!(
            "sum by (instance) (rate(node_network_transmit_bytes_total{{device!=\"lo\"}}[{w}]))"
        ),
        &|l| format!("sent {}", instance(l)),
    ));
    let mut load = Vec::new();
    for m in ["node_load1", "node_load5", "node_load15"] {
        load.extend(run(m.into(), &|l| format!("{} {}", &m[5..], instance(l))));
    }
    let probes = run("probe_duration_seconds".into(), &|l| {
        l.get("probe").or(l.get("job")).unwrap_or("").to_string()
    });
    let mut cpu = chart_of(cpu, r, Unit::Percent);
    cpu.thresholds.push(threshold(80.0, "warning"));
    cpu.y_range = Some((0.0, 100.0));
    let mut memory = chart_of(memory, r, Unit::Percent);
    memory.thresholds.push(threshold(90.0, "warning"));
    memory.y_range = Some((0.0, 100.0));
    let mut disk = chart_of(disk, r, Unit::Percent);
    disk.y_range = Some((0.0, 100.0));
    vec![
        ("CPU busy", cpu),
        ("Memory used", memory),
        ("Disk used", disk),
        ("Network", chart_of(network, r, Unit::BytesPerSecond)),
        ("Load average", chart_of(load, r, Unit::Plain)),
        (
            "Model API response time",
            chart_of(probes, r, Unit::Seconds),
        ),
    ]
}

fn gather(state: &AppState, r: Range) -> Data {
    let mut errors = Vec::new();
    let runs = runs::list(&state.storage).unwrap_or_else(|e| {
        errors.push(format!("runs: {e}"));
        Vec::new()
    });
    let charts = host_charts(state, &r, &mut errors);
    Data {
        models: models(state),
        runs,
        probes: state.probes.get().iter().map(|p| p.status()).collect(),
        alerts: rule_alerts(state),
        charts,
        errors,
        range: r,
    }
}

/// Metrics of the runs in the range, oldest first, one series per
/// `(report key, name)`; for R², with the alert thresholds.
fn trend(runs: &[Run], r: &Range, metrics: &[(&str, &str)]) -> Chart {
    let series = metrics
        .iter()
        .map(|(key, name)| {
            let pts: Vec<(Timestamp, f64)> = runs
                .iter()
                .rev()
                .filter(|run| run.finished_ms >= r.start)
                .filter_map(|run| run.metrics.get(*key).map(|v| (run.finished_ms, *v)))
                .collect();
            (name.to_string(), pts)
        })
        .collect();
    let thresholds = if metrics.iter().any(|(k, _)| *k == "test_r2") {
        vec![threshold(0.8, "warning"), threshold(0.7, "critical")]
    } else {
        Vec::new()
    };
    Chart {
        unit: Unit::Plain,
        series,
        start_ms: r.start,
        end_ms: r.end,
        step_ms: r.end - r.start,
        thresholds,
        y_range: None,
        points: true,
    }
}

fn stage_list(run: &Run) -> Markup {
    html! {
        ol.stages aria-label="Stages" {
            @for (key, name) in STAGES {
                @match run.stages.get(key) {
                    Some(s) => {
                        @let class = match s.status {
                            StageStatus::Succeeded => "succeeded",
                            StageStatus::Failed => "failed",
                            StageStatus::Missing => "missing",
                        };
                        li.(class) title=[s.detail.as_deref()] {
                            (name) " "
                            @match s.status {
                                StageStatus::Succeeded => "✓",
                                StageStatus::Failed => "✗ failed",
                                StageStatus::Missing => "–",
                            }
                        }
                    }
                    None => { li.missing { (name) " –" } }
                }
            }
        }
    }
}

fn render(d: &Data) -> Markup {
    let now = now_ms();
    let last = d.runs.first();
    let firing = d.alerts.iter().filter(|a| a.state == "firing").count();
    html! {
        h1 { "Overview" }
        (range_picker("/", &d.range, &[]))
        @for e in &d.errors { p.error role="alert" { (e) } }
        section aria-labelledby="model-h" {
            h2 #model-h { "Model quality" }
            @if d.models.is_empty() {
                p.muted { "No model metrics yet: the pipeline has not written an evaluation report." }
            }
            @for m in &d.models {
                div.cards {
                    @if let Some(r2) = m.r2 {
                        div.card.(r2_class(r2)) {
                            div.label { "R² " @if !m.pipeline.is_empty() { "· " (m.pipeline) } }
                            div.value { (number(r2)) }
                            div.muted { @match r2_class(r2) { "good" => "good (≥ 0.8)", "warn" => "warning (< 0.8)", _ => "critical (< 0.7)" } }
                        }
                    }
                    @if let Some(v) = m.rmse {
                        div.card { div.label { "RMSE" } div.value { (number(v)) } }
                    }
                    @if let Some(v) = m.mae {
                        div.card { div.label { "MAE" } div.value { (number(v)) } }
                    }
                }
            }
        }
        div.grid {
            section.panel { (figure("R² by run", &trend(&d.runs, &d.range, &[("test_r2", "R²")]), PANEL)) }
            section.panel { (figure("RMSE and MAE by run", &trend(&d.runs, &d.range, &[("test_rmse", "RMSE"), ("test_mae", "MAE")]), PANEL)) }
            section.panel aria-labelledby="pipeline-h" {
                h2 #pipeline-h { "Pipeline" }
                @match last {
                    Some(run) => {
                        p {
                            @if run.success { span.badge.good { "succeeded" } } @else { span.badge.crit { "failed" } }
                            " " a href={ "/runs/" (crate::model::percent_encode(&run.id)) } { "last run" } " "
                            (when(run.finished_ms, now))
                            " · took " (duration_text(run.duration_seconds()))
                        }
                        (stage_list(run))
                    }
                    None => p.muted { "No pipeline run recorded yet." },
                }
            }
            section.panel aria-labelledby="api-h" {
                h2 #api-h { "Model API" }
                @if d.probes.is_empty() {
                    p.muted { "No probes configured (see probes: in mlmon.yml)." }
                }
                @for p in &d.probes {
                    p {
                        @match p.health {
                            "up" => span.badge.good { "up" },
                            "down" => span.badge.crit { "down" },
                            _ => span.badge.muted { "unknown" },
                        }
                        " " strong { (p.name) } " "
                        @if p.last_probe_ms > 0 {
                            span.muted { (format!("{:.0} ms", p.last_duration * 1000.0)) " · " (when(p.last_probe_ms, now)) }
                        }
                        @if !p.last_error.is_empty() { br; span.crit { (p.last_error) } }
                    }
                }
            }
            section.panel aria-labelledby="alerts-h" {
                h2 #alerts-h { "Alerts " @if firing > 0 { span.badge.crit { (firing) " firing" } } }
                @if d.alerts.is_empty() { p.good { "Nothing is firing or pending." } }
                ul {
                    @for a in &d.alerts {
                        li {
                            strong.(if a.severity == "critical" { "crit" } else { "warn" }) { (a.name) }
                            " " span.badge { (a.state) } " "
                            @if !a.severity.is_empty() { span.muted { (a.severity) } " " }
                            (when(a.since_ms, now))
                            @if !a.summary.is_empty() { br; (a.summary) }
                        }
                    }
                }
                p { a href="/alerts" { "All alerts and silences" } }
            }
        }
        h2 { "Machine" }
        div.grid {
            @for (title, c) in &d.charts { section.panel { (figure(title, c, PANEL)) } }
        }
    }
}

/// `GET /`
pub async fn page(State(state): State<AppState>, Query(p): QueryMap) -> Response {
    let r = match Range::from_params(&p, "6h", now_ms()) {
        Ok(r) => r,
        Err(e) => return problem(&state, StatusCode::BAD_REQUEST, "Overview", &e),
    };
    let s = state.clone();
    match state
        .queries
        .run(move || {
            let d = gather(&s, r);
            layout(&s, "Overview", "/", true, render(&d))
        })
        .await
    {
        Ok(m) => super::page(m),
        Err(e) => problem(&state, e.status(), "Overview", &e.public_message()),
    }
}

/// Renders the overview for `range` (for the benchmark).
pub fn render_overview(state: &AppState, range: &str) -> String {
    let p: BTreeMap<String, String> = [("range".to_string(), range.to_string())].into();
    let r = Range::from_params(&p, "6h", now_ms()).unwrap_or_else(|e| panic!("{e}"));
    let d = gather(state, r);
    layout(state, "Overview", "/", true, render(&d)).into_string()
}

/// `GET /api/dashboard`: the overview's facts as JSON.
pub async fn json(State(state): State<AppState>) -> Response {
    let s = state.clone();
    let body = state.queries.run(move || {
        let now = now_ms();
        let first = |expr: &str| instant(&s, expr).first().map(|x| x.1);
        let runs = runs::list(&s.storage).unwrap_or_default();
        let last = runs.first();
        let models: Vec<serde_json::Value> = models(&s)
            .iter()
            .map(|m| json!({"pipeline": m.pipeline, "r2_score": m.r2, "rmse": m.rmse, "mae": m.mae}))
            .collect();
        json!({
            "timestamp": crate::model::rfc3339(now),
            "model": models.first().cloned().unwrap_or(json!({})),
            "models": models,
            "pipeline": last.map(|r| json!({
                "id": r.id,
                "pipeline": r.pipeline,
                "success": r.success,
                "last_run": crate::model::rfc3339(r.finished_ms),
                "duration_seconds": r.duration_seconds(),
                "stages": r.stages,
            })),
            "system": {
                "cpu_usage_percent": first("100 * (1 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}[5m])))"),
                "memory_usage_percent": first("100 * (1 - max(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes))"),
                "disk_usage_percent": first("100 * (1 - max(node_filesystem_avail_bytes{mountpoint=\"/\"} / node_filesystem_size_bytes{mountpoint=\"/\"}))"),
                "load1": first("max(node_load1)"),
            },
            "api": s.probes.get().iter().map(|p| serde_json::to_value(p.status()).unwrap_or_default()).collect::<Vec<_>>(),
            "alerts": rule_alerts(&s).iter().map(|a| json!({
                "alertname": a.name,
                "severity": a.severity,
                "state": a.state,
                "summary": a.summary,
                "since": crate::model::rfc3339(a.since_ms),
            })).collect::<Vec<_>>(),
        })
    })
    .await;
    match body {
        Ok(b) => Json(b).into_response(),
        Err(e) => e.into_response(),
    }
}
