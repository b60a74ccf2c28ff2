//! The Prometheus HTTP API read endpoints, in Prometheus' JSON shapes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::{ApiError, AppState, Params};
use crate::model::{is_valid_label_name, now_ms, Labels, Matcher, Sample, Timestamp};
use crate::promql::{self, parse_selector, Value};
use crate::tsdb::Querier;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
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
fn value_string(v: f64) -> String {
    match crate::model::special_float(v) {
        Some(special) => special.into(),
        None => format!("{v}"),
    }
}

fn point(s: &Sample) -> Json_ {
    json!([s.t as f64 / 1000.0, value_string(s.v)])
}

fn metric(labels: &Labels) -> Json_ {
    let mut m = Map::new();
    for (n, v) in labels.iter() {
        m.insert(n.to_string(), Json_::String(v.to_string()));
    }
    Json_::Object(m)
}

fn success(data: Json_) -> Json<Json_> {
    Json(json!({"status": "success", "data": data}))
}

fn point_at(t: i64, v: f64) -> Json_ {
    json!([t as f64 / 1000.0, value_string(v)])
}

fn matrix(items: &[promql::Series]) -> Json_ {
    json!({
        "resultType": "matrix",
        "result": items.iter().map(|s| json!({"metric": metric(&s.labels), "values": s.samples.iter().map(point).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}

fn render(v: Value) -> Json_ {
    match v {
        Value::Scalar { t, v } => json!({"resultType": "scalar", "result": point_at(t, v)}),
        Value::String { t, s } => json!({"resultType": "string", "result": [t as f64 / 1000.0, s]}),
        Value::Vector(items) => json!({
            "resultType": "vector",
            "result": items.iter().map(|s| json!({"metric": metric(&s.labels), "value": point_at(s.t, s.v)})).collect::<Vec<_>>(),
        }),
        Value::Matrix(items) => matrix(&items),
    }
}

fn query_text(params: &[(String, String)]) -> Result<String, ApiError> {
    param(params, "query")
        .map(str::to_string)
        .ok_or_else(|| ApiError::BadData("invalid parameter \"query\": missing".into()))
}

pub async fn query(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let text = query_text(&params)?;
    let t = time_param(&params, "time", now_ms())?;
    let storage = state.storage.clone();
    let opts = state.settings.query.clone();
    let v = tokio::task::spawn_blocking(move || promql::instant(storage.as_ref(), &text, t, &opts))
        .await??;
    Ok(success(render(v)))
}

pub async fn query_range(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
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
    let opts = state.settings.query.clone();
    let v = tokio::task::spawn_blocking(move || {
        promql::range(storage.as_ref(), &text, start, end, step, &opts)
    })
    .await??;
    Ok(success(matrix(&v)))
}

pub async fn series(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let sel = selectors(&params)?;
    if sel.is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    let storage = state.storage.clone();
    let found: Vec<Arc<Labels>> =
        tokio::task::spawn_blocking(move || storage.series(&sel, start, end)).await??;
    Ok(success(Json_::Array(
        found.iter().map(|l| metric(l)).collect(),
    )))
}

pub async fn labels(
    State(state): State<AppState>,
    Params(params): Params,
) -> Result<Json<Json_>, ApiError> {
    let sel = selectors(&params)?;
    Ok(success(json!(state.storage.label_names(&sel))))
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
    Ok(success(json!(state.storage.label_values(&name, &sel))))
}

/// Prometheus' `/api/v1/format_query`: the query, parsed and pretty-printed.
pub async fn format_query(Params(params): Params) -> Result<Json<Json_>, ApiError> {
    let text = query_text(&params)?;
    let expr = promql_parser::parser::parse(&text).map_err(ApiError::BadData)?;
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
