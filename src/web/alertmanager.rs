//! Alertmanager's API v2 (the subset `amtool` and Prometheus use: alerts,
//! silences, status, receivers) and the notifier's own endpoints: alert
//! history, test notifications, template previews, recent notifications.
//! Errors of the v2 API are a JSON string, as Alertmanager answers.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{count_param, param, parse_time, success};
use super::{ApiError, AppState, Params};
use crate::model::{is_valid_label_name, now_ms, parse_matchers, rfc3339, Matcher, Timestamp};
use crate::notify::{fingerprint_hex, Alert, Incoming, Silence, SilenceError, SilenceMatcher};

/// An Alertmanager API v2 error: status and a JSON string.
pub struct V2Error(StatusCode, String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(Value::String(self.1))).into_response()
    }
}

fn bad(m: impl Into<String>) -> V2Error {
    V2Error(StatusCode::BAD_REQUEST, m.into())
}

impl From<tokio::task::JoinError> for V2Error {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(message = "Request failed", error = %e);
        V2Error(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

fn flag(p: &Params, name: &str, default: bool) -> Result<bool, V2Error> {
    match param(&p.0, name) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(bad(format!(
            "{name} in query should be a boolean, got {v:?}"
        ))),
    }
}

/// `filter` parameters: one matcher each (`alertname="X"`).
fn filters(p: &Params) -> Result<Vec<Matcher>, V2Error> {
    let mut out = Vec::new();
    for (k, v) in &p.0 {
        if k == "filter" {
            out.extend(parse_matchers(v).map_err(|e| bad(format!("bad matcher format: {e}")))?);
        }
    }
    Ok(out)
}

fn matches_all(ms: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    ms.iter()
        .all(|m| m.matches(labels.get(&m.name).map(String::as_str).unwrap_or("")))
}

/// `GET /api/v2/alerts`
pub async fn get_alerts(State(state): State<AppState>, p: Params) -> Result<Json<Value>, V2Error> {
    let (active, silenced, inhibited) = (
        flag(&p, "active", true)?,
        flag(&p, "silenced", true)?,
        flag(&p, "inhibited", true)?,
    );
    let filter = filters(&p)?;
    let receiver = match param(&p.0, "receiver") {
        Some(r) => Some(
            regex::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| bad(format!("failed to parse receiver param: {e}")))?,
        ),
        None => None,
    };
    let now = now_ms();
    let n = state.notify.lock();
    let mut out = Vec::new();
    for (fp, a, receivers, st) in n.alerts(now) {
        if a.resolved(now) || !matches_all(&filter, &a.labels) {
            continue;
        }
        if let Some(re) = &receiver {
            if !receivers.iter().any(|r| re.is_match(r)) {
                continue;
            }
        }
        let keep = match st.state {
            "active" => active,
            _ => {
                (silenced || st.silenced_by.is_empty()) && (inhibited || st.inhibited_by.is_empty())
            }
        };
        if keep {
            out.push(alert_json(fp, a, &receivers, &st));
        }
    }
    Ok(Json(Value::Array(out)))
}

fn alert_json(fp: u64, a: &Alert, receivers: &[String], st: &crate::notify::AlertStatus) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": rfc3339(a.ends_at_ms),
        "updatedAt": rfc3339(a.updated_at_ms),
        "generatorURL": a.generator_url,
        "fingerprint": fingerprint_hex(fp),
        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": st.state,
            "silencedBy": st.silenced_by,
            "inhibitedBy": st.inhibited_by,
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(default, rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

fn time_field(name: &str, v: &Option<String>) -> Result<Option<Timestamp>, String> {
    match v.as_deref() {
        None | Some("") | Some("0001-01-01T00:00:00Z") | Some("0001-01-01T00:00:00.000Z") => {
            Ok(None)
        }
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| Some(d.timestamp_millis()))
            .map_err(|_| format!("{name}: {s:?} is not an RFC 3339 time")),
    }
}

/// Postable alerts → the notifier's, each checked as Alertmanager does.
fn incoming(body: &[u8]) -> Result<Vec<Incoming>, String> {
    let alerts: Vec<PostableAlert> =
        serde_json::from_slice(body).map_err(|e| format!("invalid alerts: {e}"))?;
    let mut out = Vec::new();
    for (i, a) in alerts.into_iter().enumerate() {
        let at = |m: String| format!("alert {}: {m}", i + 1);
        if a.labels.is_empty() {
            return Err(at("at least one label pair required".into()));
        }
        for (k, v) in &a.labels {
            if !is_valid_label_name(k) {
                return Err(at(format!("invalid label set: invalid name {k:?}")));
            }
            if v.is_empty() {
                return Err(at(format!("invalid label set: empty value for {k:?}")));
            }
        }
        let starts = time_field("startsAt", &a.starts_at).map_err(at)?;
        let ends = time_field("endsAt", &a.ends_at).map_err(at)?;
        if let (Some(s), Some(e)) = (starts, ends) {
            if e < s {
                return Err(at("start time must be before end time".into()));
            }
        }
        out.push(Incoming {
            labels: a.labels,
            annotations: a.annotations,
            starts_at_ms: starts,
            ends_at_ms: ends,
            generator_url: a.generator_url.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `POST /api/v2/alerts`
pub async fn post_alerts(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, V2Error> {
    let alerts = incoming(&body).map_err(bad)?;
    let notify = state.notify.clone();
    tokio::task::spawn_blocking(move || notify.put(alerts, now_ms())).await?;
    Ok(StatusCode::OK.into_response())
}

fn silence_json(s: &Silence, now: Timestamp) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now)},
        "updatedAt": rfc3339(s.updated_at_ms),
        "matchers": s.matchers,
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// `GET /api/v2/silences`: active first, then pending, then expired.
pub async fn get_silences(
    State(state): State<AppState>,
    p: Params,
) -> Result<Json<Value>, V2Error> {
    let filter = filters(&p)?;
    let now = now_ms();
    let n = state.notify.lock();
    let mut list: Vec<&Silence> = n
        .silences()
        .filter(|s| {
            filter.iter().all(|f| {
                s.matchers.iter().any(|m| {
                    m.name == f.name
                        && m.value == f.value
                        && m.is_regex
                            == matches!(
                                f.op,
                                crate::model::MatchOp::Re | crate::model::MatchOp::NotRe
                            )
                })
            })
        })
        .collect();
    let rank = |s: &Silence| match s.state(now) {
        "active" => 0,
        "pending" => 1,
        _ => 2,
    };
    list.sort_by_key(|s| (rank(s), s.ends_at_ms));
    Ok(Json(Value::Array(
        list.into_iter().map(|s| silence_json(s, now)).collect(),
    )))
}

#[derive(Deserialize)]
struct PostableSilence {
    #[serde(default)]
    id: String,
    matchers: Vec<SilenceMatcher>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "createdBy")]
    created_by: String,
    comment: String,
}

/// Parses a postable silence (shared with the dashboard's form).
pub fn parse_silence(body: &[u8]) -> Result<Silence, String> {
    let p: PostableSilence =
        serde_json::from_slice(body).map_err(|e| format!("invalid silence: {e}"))?;
    let t = |name: &str, s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|_| format!("{name}: {s:?} is not an RFC 3339 time"))
    };
    Ok(Silence {
        id: p.id,
        matchers: p.matchers,
        starts_at_ms: t("startsAt", &p.starts_at)?,
        ends_at_ms: t("endsAt", &p.ends_at)?,
        updated_at_ms: 0,
        created_by: p.created_by,
        comment: p.comment,
    })
}

/// `POST /api/v2/silences`
pub async fn post_silence(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, V2Error> {
    let s = parse_silence(&body).map_err(bad)?;
    let notify = state.notify.clone();
    let r = tokio::task::spawn_blocking(move || {
        let id = notify.lock().set_silence(s, now_ms());
        notify.wake.notify_one();
        id
    })
    .await?;
    match r {
        Ok(id) => Ok(Json(json!({"silenceID": id}))),
        Err(e @ SilenceError::NotFound(_)) => Err(V2Error(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// `GET /api/v2/silence/{id}`
pub async fn get_silence(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let n = state.notify.lock();
    match n.silence(&id) {
        Some(s) => Ok(Json(silence_json(s, now_ms()))),
        None => Err(V2Error(
            StatusCode::NOT_FOUND,
            format!("silence {id} not found"),
        )),
    }
}

/// `DELETE /api/v2/silence/{id}`
pub async fn delete_silence(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, V2Error> {
    let notify = state.notify.clone();
    let r =
        tokio::task::spawn_blocking(move || notify.lock().expire_silence(&id, now_ms())).await?;
    match r {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e @ SilenceError::NotFound(_)) => Err(V2Error(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// `GET /api/v2/receivers`
pub async fn receivers(State(state): State<AppState>) -> Json<Value> {
    let n = state.notify.lock();
    Json(Value::Array(
        n.config()
            .receivers
            .iter()
            .map(|r| json!({"name": r.name}))
            .collect(),
    ))
}

/// `GET /api/v2/status`
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let n = state.notify.lock();
    let started = state.settings.get().started_ms();
    Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": n.config().redacted()},
        "uptime": rfc3339(started),
        "versionInfo": {
            "branch": "",
            "buildDate": "",
            "buildUser": "",
            "goVersion": "",
            "revision": "",
            "version": concat!("mlmon-", env!("CARGO_PKG_VERSION")),
        },
    }))
}

// ---- mlmon's own endpoints (Prometheus-style envelopes) ----

/// `GET /api/v1/alerts/history?alertname=&severity=&receiver=&kind=&start=&end=&limit=`
pub async fn history(State(state): State<AppState>, p: Params) -> Result<Json<Value>, ApiError> {
    let limit = count_param(&p.0, "limit", 500, 100_000)?;
    let param = |n: &str| param(&p.0, n).filter(|v| !v.is_empty()).map(str::to_string);
    let start = param("start")
        .map(|s| parse_time("start", &s))
        .transpose()?;
    let end = param("end").map(|s| parse_time("end", &s)).transpose()?;
    let kind = param("kind");
    if let Some(k) = &kind {
        if !["firing", "resolved", "notification"].contains(&k.as_str()) {
            return Err(ApiError::BadData(format!(
                "invalid parameter \"kind\": {k:?} (firing, resolved or notification)"
            )));
        }
    }
    let (alertname, severity, receiver) =
        (param("alertname"), param("severity"), param("receiver"));
    let n = state.notify.lock();
    let events = n.history(
        |e| {
            start.is_none_or(|s| e.at_ms >= s)
                && end.is_none_or(|t| e.at_ms <= t)
                && kind.as_ref().is_none_or(|k| &e.kind == k)
                && alertname.as_ref().is_none_or(|a| &e.alertname == a)
                && severity
                    .as_ref()
                    .is_none_or(|s| e.labels.get("severity") == Some(s))
                && receiver.as_ref().is_none_or(|r| &e.receiver == r)
        },
        limit,
    );
    let list: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("at_ms");
                o.insert("time".into(), json!(rfc3339(e.at_ms)));
            }
            v
        })
        .collect();
    Ok(success(Value::Array(list)))
}

/// `GET /api/v1/notifications`: the latest notifications (sent, failed or
/// logged), newest first.
pub async fn recent(State(state): State<AppState>) -> Json<Value> {
    let n = state.notify.lock();
    let list: Vec<Value> = n
        .recent()
        .map(|r| {
            json!({
                "time": rfc3339(r.at_ms),
                "receiver": r.receiver,
                "integration": r.integration,
                "outcome": r.outcome,
                "subject": r.subject,
                "body": r.body,
            })
        })
        .collect();
    success(Value::Array(list))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    #[serde(default)]
    receiver: Option<String>,
    /// Alerts to render (postable form); default: the alerts firing now
    /// for that receiver, else a sample alert.
    #[serde(default)]
    alerts: Option<Value>,
}

impl PreviewRequest {
    /// An empty body means the defaults.
    fn parse(body: &[u8], what: &str) -> Result<PreviewRequest, ApiError> {
        if body.is_empty() {
            return Ok(PreviewRequest::default());
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadData(format!("invalid {what} request: {e}")))
    }
}

fn preview_alerts(
    state: &AppState,
    req: &PreviewRequest,
    receiver: &str,
    now: Timestamp,
) -> Result<Vec<Alert>, ApiError> {
    if let Some(a) = &req.alerts {
        let list = incoming(a.to_string().as_bytes()).map_err(ApiError::BadData)?;
        return Ok(list
            .into_iter()
            .map(|i| Alert {
                labels: i.labels,
                annotations: i.annotations,
                starts_at_ms: i.starts_at_ms.unwrap_or(now),
                ends_at_ms: i.ends_at_ms.unwrap_or(now + 300_000),
                updated_at_ms: now,
                generator_url: i.generator_url,
                timeout: i.ends_at_ms.is_none(),
                resolution_recorded: false,
            })
            .collect());
    }
    Ok(state.notify.lock().firing_for(receiver, now))
}

/// `POST /api/v1/templates/preview` with `{"receiver": NAME, "alerts": [...]}`:
/// what each of the receiver's integrations would send.
pub async fn preview(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = PreviewRequest::parse(&body, "preview")?;
    let now = now_ms();
    let receiver = match &req.receiver {
        Some(r) => r.clone(),
        None => state.notify.lock().config().route.receiver.clone(),
    };
    let alerts = preview_alerts(&state, &req, &receiver, now)?;
    let out = state
        .notify
        .preview(&receiver, alerts, now)
        .map_err(ApiError::BadData)?;
    Ok(success(json!({"receiver": receiver, "integrations": out})))
}

/// `POST /api/v1/receivers/{name}/test`: sends a test notification through
/// every integration of the receiver and says how each went.
pub async fn test_receiver(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = PreviewRequest::parse(&body, "test")?;
    let now = now_ms();
    let alerts = match &req.alerts {
        Some(_) => preview_alerts(&state, &req, &name, now)?,
        None => Vec::new(),
    };
    let Some(deliveries) = state.notify.test_receiver(&name, alerts, now).await else {
        return Err(ApiError::NotFound);
    };
    let mut results = Vec::new();
    for (integration, d) in deliveries {
        results.push(json!({
            "integration": integration,
            "outcome": if d.outcome.is_ok() { "sent" } else { "failed" },
            "error": d.outcome.err().unwrap_or_default(),
            "attempts": d.attempts,
        }));
    }
    Ok(success(json!({"receiver": name, "results": results})))
}

/// `POST /-/reload`: reloads the whole configuration (Alertmanager's and
/// Prometheus' endpoint); 500 with the reason if a file is bad, 403 unless
/// the lifecycle API is on.
pub async fn reload(State(state): State<AppState>) -> Response {
    if !state.settings.get().lifecycle {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (start mlmon with --web.enable-lifecycle).\n",
        )
            .into_response();
    }
    let Some(tx) = state.reload.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reload is not available\n").into_response();
    };
    let (reply, result) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match result.await {
        Ok(Ok(())) => (StatusCode::OK, "").into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
