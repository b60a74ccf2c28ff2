//! The Prometheus HTTP API read endpoints, in Prometheus' JSON shapes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::{ApiError, AppState, Params};
use crate::ingest::runs::{self, Run};
use crate::model::{is_valid_label_name, now_ms, Labels, Matcher, Timestamp};
use crate::promql::{self, parse_selector, Value};
use crate::tsdb::Querier;

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Unix seconds (fractions allowed) or RFC 3339, as Prometheus accepts.
pub(super) fn parse_time(name: &str, s: &str) -> Result<Timestamp, ApiError> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e13 {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| {
            ApiError::BadData(format!(
                "invalid parameter \"{name}\": cannot parse \"{s}\" to a valid timestamp"
            ))
        })
}

/// A step as seconds (`15`, `0.5`) or a duration (`15s`).
fn parse_step(s: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    crate::model::parse_duration(s)
        .map(|d| d.millis())
        .map_err(|_| {
            ApiError::BadData(format!(
                "invalid parameter \"step\": cannot parse \"{s}\" to a valid duration"
            ))
        })
}

fn time_param(
    params: &[(String, String)],
    name: &str,
    default: Timestamp,
) -> Result<Timestamp, ApiError> {
    param(params, name).map_or(Ok(default), |s| parse_time(name, s))
}

fn selectors(params: &[(String, String)]) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in params {
        if k == "match[]" {
            out.extend(parse_selector(v)?);
        }
    }
    Ok(out)
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as Prometheus writes values.
fn metric(labels: &Labels) -> Json_ {
    let mut m = Map::new();
    for (n, v) in labels.iter() {
        m.insert(n.to_string(), Json_::String(v.to_string()));
    }
    Json_::Object(m)
}

pub(super) fn success(data: Json_) -> Json<Json_> {
    Json(json!({"status": "success", "data": data}))
}

/// Query results are written straight into the response text: building a
/// `serde_json::Value` per point costs more than evaluating the query.
fn write_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn write_metric(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, n);
        out.push(':');
        write_json_str(out, v);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    crate::model::write_seconds(out, t);
    out.push_str(",\"");
    crate::model::write_float(out, v);
    out.push_str("\"]");
}

fn write_matrix(out: &mut String, items: &[promql::Series]) {
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_metric(out, &s.labels);
        out.push_str(",\"values\":[");
        for (k, p) in s.samples.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            write_point(out, p.t, p.v);
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(out, *t, *v);
            out.push('}');
        }
        Value::String { t, s } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            crate::model::write_seconds(out, *t);
            out.push(',');
            write_json_str(out, s);
            out.push_str("]}");
        }
        Value::Vector(items) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_metric(out, &s.labels);
                out.push_str(",\"value\":");
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(items) => write_matrix(out, items),
    }
}

/// `{"status":"success","data":…}` around pre-written data.
fn success_raw(data: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut body = String::with_capacity(data.len() + 32);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(&data);
    body.push('}');
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn query_text(params: &[(String, String)]) -> Result<String, ApiError> {
    param(params, "query")
        .map(str::to_string)
        .ok_or_else(|| ApiError::BadData("invalid parameter \"query\": missing".into()))
}

/// Parse errors name the parameter, as Prometheus' do.
fn query_error(e: promql::QueryError) -> ApiError {
    match e {
        promql::QueryError::Parse(m) => {
            ApiError::BadData(format!("invalid parameter \"query\": {m}"))
        }
        e => e.into(),
    }
}

pub async fn query(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<axum::response::Response, ApiError> {
    let text = query_text(&params)?;
    let t = time_param(&params, "time", now_ms())?;
    let storage = state.storage.clone();
    let opts = state.settings.get().query.clone();
    let data = state
        .queries
        .run(move || -> Result<String, ApiError> {
            let v = promql::instant(storage.as_ref(), &text, t, &opts).map_err(query_error)?;
            let mut out = String::new();
            write_value(&mut out, &v);
            Ok(out)
        })
        .await??;
    Ok(success_raw(data))
}

pub async fn query_range(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<axum::response::Response, ApiError> {
    let text = query_text(&params)?;
    let start = parse_time(
        "start",
        param(&params, "start")
            .ok_or_else(|| ApiError::BadData("invalid parameter \"start\": missing".into()))?,
    )?;
    let end = parse_time(
        "end",
        param(&params, "end")
            .ok_or_else(|| ApiError::BadData("invalid parameter \"end\": missing".into()))?,
    )?;
    let step = parse_step(
        param(&params, "step")
            .ok_or_else(|| ApiError::BadData("invalid parameter \"step\": missing".into()))?,
    )?;
    let storage = state.storage.clone();
    let opts = state.settings.get().query.clone();
    let data = state
        .queries
        .run(move || -> Result<String, ApiError> {
            let v = promql::range(storage.as_ref(), &text, start, end, step, &opts)
                .map_err(query_error)?;
            let mut out = String::with_capacity(
                64 + v.iter().map(|s| 64 + s.samples.len() * 32).sum::<usize>(),
            );
            write_matrix(&mut out, &v);
            Ok(out)
        })
        .await??;
    Ok(success_raw(data))
}

/// `limit` of the metadata endpoints (Prometheus 3): at most that many
/// results, 0 or absent for all.
fn limit_param(params: &[(String, String)]) -> Result<Option<usize>, ApiError> {
    match param(params, "limit") {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n < 0 => Err(ApiError::BadData("limit must be non-negative".into())),
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n as usize)),
            Err(_) => Err(ApiError::BadData(format!(
                "invalid parameter \"limit\": {s:?} is not a number"
            ))),
        },
    }
}

/// A list answer cut at `limit`, with Prometheus' warning when cut.
fn limited(mut items: Vec<Json_>, limit: Option<usize>) -> Json<Json_> {
    match limit {
        Some(n) if items.len() > n => {
            items.truncate(n);
            Json(json!({"status": "success", "data": items,
                "warnings": ["results truncated due to limit"]}))
        }
        _ => success(Json_::Array(items)),
    }
}

/// The series `match[]` (or every series) selects with samples between
/// `start` and `end`.
async fn series_in_range(
    state: &AppState,
    mut sel: Vec<Vec<Matcher>>,
    start: Timestamp,
    end: Timestamp,
) -> Result<Vec<Arc<Labels>>, ApiError> {
    if sel.is_empty() {
        sel = parse_selector("{__name__=~\".+\"}")?;
    }
    let storage = state.storage.clone();
    Ok(tokio::task::spawn_blocking(move || storage.series(&sel, start, end)).await??)
}

/// Whether the request names a time range (`start` or `end`): then the
/// metadata endpoints answer from the series with samples in it, as
/// Prometheus does, instead of every series in the index.
fn time_range(params: &[(String, String)]) -> Result<Option<(Timestamp, Timestamp)>, ApiError> {
    if param(params, "start").is_none() && param(params, "end").is_none() {
        return Ok(None);
    }
    Ok(Some((
        time_param(params, "start", i64::MIN / 2)?,
        time_param(params, "end", i64::MAX / 2)?,
    )))
}

pub async fn series(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let sel = selectors(&params)?;
    if sel.is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let limit = limit_param(&params)?;
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    let found = series_in_range(&state, sel, start, end).await?;
    Ok(limited(found.iter().map(|l| metric(l)).collect(), limit))
}

pub async fn labels(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let sel = selectors(&params)?;
    let limit = limit_param(&params)?;
    let names: Vec<String> = match time_range(&params)? {
        None => state.storage.label_names(&sel),
        Some((start, end)) => {
            let mut names = std::collections::BTreeSet::new();
            for l in series_in_range(&state, sel, start, end).await? {
                names.extend(l.iter().map(|(n, _)| n.to_string()));
            }
            names.into_iter().collect()
        }
    };
    Ok(limited(
        names.into_iter().map(Json_::String).collect(),
        limit,
    ))
}

pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    if !is_valid_label_name(&name) {
        return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
    }
    let sel = selectors(&params)?;
    let limit = limit_param(&params)?;
    let values: Vec<String> = match time_range(&params)? {
        None => state.storage.label_values(&name, &sel),
        Some((start, end)) => {
            let mut values = std::collections::BTreeSet::new();
            for l in series_in_range(&state, sel, start, end).await? {
                values.extend(l.get(&name).map(str::to_string));
            }
            values.into_iter().collect()
        }
    };
    Ok(limited(
        values.into_iter().map(Json_::String).collect(),
        limit,
    ))
}

/// `/api/v1/query_exemplars`: mlmon keeps no exemplars, so the answer is
/// Prometheus' for a store without any: an empty list (after the query and
/// times were checked as Prometheus checks them).
pub async fn query_exemplars(Params(params): Params) -> Result<Json<Json_>, ApiError> {
    let text = query_text(&params)?;
    promql::parse(&text).map_err(query_error)?;
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    if end < start {
        return Err(ApiError::BadData(
            "end timestamp must not be before start timestamp".into(),
        ));
    }
    Ok(success(Json_::Array(Vec::new())))
}

/// Prometheus' `/api/v1/format_query`: the query, parsed and pretty-printed.
pub async fn format_query(Params(params): Params) -> Result<Json<Json_>, ApiError> {
    let text = query_text(&params)?;
    let expr = promql::parse(&text).map_err(query_error)?;
    Ok(success(Json_::String(expr.prettify())))
}

pub async fn buildinfo() -> Json<Json_> {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("MLMON_GIT_REVISION").unwrap_or("unknown"),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// The original stack's Flask `/health`.
pub async fn health() -> Json<Json_> {
    Json(json!({"status": "healthy", "timestamp": chrono::Utc::now().to_rfc3339()}))
}

/// A count parameter: absent → `default`; at most `max`.
pub(super) fn count_param(
    params: &[(String, String)],
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match param(params, name) {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                ApiError::BadData(format!(
                    "invalid parameter \"{name}\": {s:?} is not a count from 0 to {max}"
                ))
            }),
    }
}

fn run_json(run: &Run) -> Json_ {
    let mut v = serde_json::to_value(run).unwrap_or(Json_::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("duration_seconds".into(), json!(run.duration_seconds()));
    }
    v
}

/// `GET /api/v1/runs?limit=20&offset=0[&pipeline=…]`: pipeline runs,
/// newest first, a page at a time, with the total count.
pub async fn runs(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let limit = count_param(&params, "limit", 20, 1000)?;
    let offset = count_param(&params, "offset", 0, usize::MAX)?;
    let pipeline = param(&params, "pipeline").map(str::to_string);
    let storage = state.storage.clone();
    let all = tokio::task::spawn_blocking(move || runs::list(&storage)).await??;
    let all: Vec<Run> = all
        .into_iter()
        .filter(|r| pipeline.as_ref().is_none_or(|p| &r.pipeline == p))
        .collect();
    let page: Vec<Json_> = all.iter().skip(offset).take(limit).map(run_json).collect();
    Ok(success(json!({"runs": page, "total": all.len()})))
}

/// `GET /api/v1/runs/<id>`: one run with its data profile (`profile`) and
/// drift against its reference run (`drift`, `reference`, `r2_delta`).
pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let (storage, wanted) = (state.storage.clone(), id.clone());
    let run = tokio::task::spawn_blocking(move || runs::get(&storage, &wanted))
        .await??
        .ok_or(ApiError::NotFound)?;
    let baseline = {
        let (storage, pipeline) = (state.storage.clone(), run.pipeline.clone());
        tokio::task::spawn_blocking(move || runs::baseline(&storage, &pipeline)).await??
    };
    let mut v = run_json(&run);
    v["baseline"] = json!(baseline.as_deref() == Some(id.as_str()));
    Ok(success(v))
}

/// `POST /api/v1/runs/<id>/baseline`: the run becomes its pipeline's
/// baseline, the reference later runs' drift is computed against.
pub async fn pin_baseline(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let storage = state.storage.clone();
    let pinned = tokio::task::spawn_blocking(move || runs::pin_baseline(&storage, &id))
        .await
        .map_err(|e| ApiError::Internal(format!("pinning failed: {e}")))?
        .map_err(|e| match e {
            runs::PinError::NotFound => ApiError::NotFound,
            runs::PinError::NotKept(_) => ApiError::BadData(e.to_string()),
            runs::PinError::Storage(s) => s.into(),
        })?;
    Ok(success(
        json!({"pipeline": pinned.pipeline, "baseline": pinned.id}),
    ))
}

/// What `mlmon run` reports about a command it runs: at its start
/// (`finished` and `exit_code` left out) and at its end.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRun {
    pipeline: Option<String>,
    /// Unix seconds.
    started: f64,
    finished: Option<f64>,
    exit_code: Option<i32>,
    command: Option<String>,
}

/// `POST /api/v1/runs` (JSON, from `mlmon run`): a command started (202),
/// or records a command's run.
pub async fn record_run(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Json_>, ApiError> {
    let c: CommandRun = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadData(format!("invalid run: {e}")))?;
    let pipeline = c
        .pipeline
        .unwrap_or_else(|| state.artifacts.pipeline().to_string());
    if pipeline.is_empty() {
        return Err(ApiError::BadData("invalid run: empty pipeline name".into()));
    }
    let seconds = |t: f64| (0.0..1e11).contains(&t);
    let (finished, exit_code) = match (c.finished, c.exit_code) {
        (None, None) if seconds(c.started) => {
            let started_ms = (c.started * 1000.0).round() as Timestamp;
            state.artifacts.command_started(pipeline, started_ms);
            return Ok(success(json!({"started": c.started})));
        }
        (Some(f), Some(code)) if seconds(c.started) && seconds(f) && c.started <= f => (f, code),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ApiError::BadData(
                "invalid run: finished and exit_code come together (neither: the command started)"
                    .into(),
            ))
        }
        _ => {
            return Err(ApiError::BadData(
                "invalid run: started and finished must be Unix seconds, started first".into(),
            ))
        }
    };
    let started_ms = (c.started * 1000.0).round() as Timestamp;
    let run = Run {
        id: format!("{pipeline}-{started_ms}"),
        pipeline,
        source: "command".into(),
        started_ms,
        finished_ms: (finished * 1000.0).round() as Timestamp,
        success: exit_code == 0,
        exit_code: Some(exit_code),
        command: c.command,
        stages: Default::default(),
        metrics: Default::default(),
        report_ms: None,
        ..Default::default()
    };
    let (storage, artifacts) = (state.storage.clone(), state.artifacts.clone());
    let run = tokio::task::spawn_blocking(move || artifacts.command_run(&storage, run)).await??;
    Ok(success(run_json(&run)))
}

/// `GET /api/v1/artifacts`: what the artifacts collector last found.
pub async fn artifacts(State(state): State<AppState>) -> Json<Json_> {
    success(serde_json::to_value(state.artifacts.status()).unwrap_or(Json_::Null))
}

/// `GET /api/v1/targets[?state=active|dropped|any]`, in Prometheus' shape.
pub async fn targets(State(state): State<AppState>, Params(params): Params) -> Json<Json_> {
    let which = param(&params, "state").unwrap_or("any");
    let (active, dropped) = (&state.targets.get().active, &state.targets.get().dropped);
    let active: Vec<Json_> = if which == "dropped" {
        Vec::new()
    } else {
        active
            .iter()
            .map(|t| {
                let st = t.status();
                let last = crate::model::rfc3339(st.last_scrape_ms);
                json!({
                    "discoveredLabels": t.discovered,
                    "labels": metric(&t.labels),
                    "scrapePool": t.job,
                    "scrapeUrl": t.url,
                    "globalUrl": t.url,
                    "lastError": st.last_error,
                    "lastScrape": last,
                    "lastScrapeDuration": st.last_duration,
                    "health": st.health.as_str(),
                    "scrapeInterval": t.config.interval.to_string(),
                    "scrapeTimeout": t.config.timeout.to_string(),
                })
            })
            .collect()
    };
    let dropped: Vec<Json_> = if which == "active" {
        Vec::new()
    } else {
        dropped
            .iter()
            .map(|d| json!({"discoveredLabels": d}))
            .collect()
    };
    success(json!({"activeTargets": active, "droppedTargets": dropped}))
}

/// `GET /api/v1/probes`: each probe's last result.
pub async fn probes(State(state): State<AppState>) -> Json<Json_> {
    let list: Vec<Json_> = state
        .probes
        .get()
        .iter()
        .map(|p| serde_json::to_value(p.status()).unwrap_or(Json_::Null))
        .collect();
    success(Json_::Array(list))
}

fn alert_json(a: &crate::rules::engine::Alert) -> Json_ {
    let mut value = String::new();
    crate::model::write_float(&mut value, a.value);
    json!({
        "labels": metric(&a.labels),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": crate::model::rfc3339(a.active_at_ms),
        "value": value,
    })
}

/// `GET /api/v1/rules[?type=alert|record]`, in Prometheus' shape.
pub async fn rules(State(state): State<AppState>, Params(params): Params) -> Json<Json_> {
    let only = param(&params, "type").map(str::to_string);
    let groups: Vec<Json_> = state
        .rules
        .get()
        .iter()
        .map(|g| {
            let g = g.lock().unwrap_or_else(|p| p.into_inner());
            let rules: Vec<Json_> = g
                .rules
                .iter()
                .filter(|r| match only.as_deref() {
                    Some("alert") => r.rule.alert.is_some(),
                    Some("record") => r.rule.record.is_some(),
                    _ => true,
                })
                .map(|r| {
                    let mut j = json!({
                        "query": r.rule.expr,
                        "labels": r.rule.labels,
                        "health": r.health,
                        "evaluationTime": r.eval_seconds,
                        "lastEvaluation": crate::model::rfc3339(r.last_eval_ms),
                    });
                    if !r.last_error.is_empty() {
                        j["lastError"] = json!(r.last_error);
                    }
                    match (&r.rule.alert, &r.rule.record) {
                        (Some(name), _) => {
                            let alerts: Vec<Json_> = r
                                .alerts
                                .values()
                                .filter(|a| a.state != crate::rules::engine::AlertState::Inactive)
                                .map(alert_json)
                                .collect();
                            let state = r
                                .alerts
                                .values()
                                .map(|a| a.state)
                                .max_by_key(|s| *s as u8)
                                .map_or("inactive", |s| s.as_str());
                            j["name"] = json!(name);
                            j["type"] = json!("alerting");
                            j["state"] = json!(state);
                            j["duration"] =
                                json!(r.rule.for_.map_or(0.0, |d| d.millis() as f64 / 1000.0));
                            j["keepFiringFor"] = json!(r
                                .rule
                                .keep_firing_for
                                .map_or(0.0, |d| d.millis() as f64 / 1000.0));
                            j["annotations"] = json!(r.rule.annotations);
                            j["alerts"] = json!(alerts);
                        }
                        (None, name) => {
                            j["name"] = json!(name);
                            j["type"] = json!("recording");
                        }
                    }
                    j
                })
                .collect();
            json!({
                "name": g.name,
                "file": g.file,
                "interval": g.interval_ms as f64 / 1000.0,
                "limit": g.limit,
                "rules": rules,
                "evaluationTime": g.eval_seconds,
                "lastEvaluation": crate::model::rfc3339(g.last_eval_ms),
            })
        })
        .collect();
    success(json!({ "groups": groups }))
}

/// `GET /api/v1/alerts`: pending and firing alerts, in Prometheus' shape.
pub async fn alerts(State(state): State<AppState>) -> Json<Json_> {
    let mut alerts = Vec::new();
    for g in state.rules.get().iter() {
        let g = g.lock().unwrap_or_else(|p| p.into_inner());
        alerts.extend(g.active_alerts().map(|(_, a)| alert_json(a)));
    }
    success(json!({ "alerts": alerts }))
}
