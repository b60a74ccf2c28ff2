//! Write endpoints: `POST /api/v1/write` (remote write) and the
//! Pushgateway-compatible `PUT/POST/DELETE /metrics/job/...`. Errors are
//! plain text like the receivers they replace; a refused request stores
//! nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::exposition::reserved_names;
use super::telemetry::HttpMetrics;
use super::{ApiError, AppState};
use crate::expfmt::{self, MetricType};
use crate::ingest::push::{grouping_key, PushBody, PushError, PushMethod, PushRequest};
use crate::ingest::remote_write::{self, DecodeError, SeriesLabels};
use crate::model::{now_ms, parse_duration};
use crate::tsdb::AppendError;

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Storage(s) => s.into(),
            other => ApiError::BadData(other.to_string()),
        }
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Append(a) => a.into(),
            PushError::Storage(s) => s.into(),
            other => ApiError::BadData(other.to_string()),
        }
    }
}

/// A body as sent (`Content-Encoding` none or `identity`) or gunzipped
/// (`gzip`); other encodings are 415.
pub(super) fn decoded_body(
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    match content_encoding(headers) {
        None => Ok(body.to_vec()),
        Some(enc) if enc.eq_ignore_ascii_case("identity") => Ok(body.to_vec()),
        Some(enc) if enc.eq_ignore_ascii_case("gzip") => gunzip(body, max),
        Some(enc) => Err(ApiError::UnsupportedMedia(format!(
            "unsupported Content-Encoding {enc:?} (gzip or none)"
        ))),
    }
}

/// A gzip body, refused past `max` bytes decompressed (a small body
/// cannot blow up into a large one).
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadData(format!("the gzip body cannot be decompressed: {e}")))?;
    if out.len() > max {
        return Err(ApiError::TooLarge(format!(
            "the body decompresses to more than {max} bytes (web.max_request_bytes)"
        )));
    }
    Ok(out)
}

fn content_encoding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
}

pub async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write(state, headers, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.plain(),
    }
}

async fn write(state: AppState, headers: HeaderMap, body: Bytes) -> Result<(), ApiError> {
    if let Some(enc) = content_encoding(&headers) {
        if !enc.eq_ignore_ascii_case("snappy") {
            return Err(ApiError::UnsupportedMedia(format!(
                "unsupported Content-Encoding {enc:?}: remote write bodies are snappy-compressed"
            )));
        }
    }
    let max = state.settings.get().max_request_bytes;
    let refused = |e: DecodeError| match e {
        DecodeError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
        other => ApiError::BadData(other.to_string()),
    };
    let raw = remote_write::decompress(&body, max).map_err(refused)?;
    let storage = state.storage.clone();
    let metrics = state.metrics.clone();
    // Parsing borrows from `raw`, so it runs where the append does.
    let stored = tokio::task::spawn_blocking(move || -> Result<usize, ApiError> {
        let req = remote_write::parse(&raw).map_err(refused)?;
        HttpMetrics::add(
            &metrics.remote_write_histograms_dropped,
            req.histograms_dropped as u64,
        );
        let mut app = storage.appender();
        app.reserve(req.series.len());
        for (labels, samples) in req.series {
            match labels {
                SeriesLabels::Encoded(bytes) => app.append_encoded(bytes, decode_labels, samples),
                SeriesLabels::Pairs(pairs) => app.append_pairs(pairs, samples),
            }
        }
        Ok(app.commit()?)
    })
    .await??;
    HttpMetrics::add(&state.metrics.samples_remote_write, stored as u64);
    Ok(())
}

/// Decodes a remote-write series' label fields for the store, which asks
/// only for series it has not seen sent that way.
fn decode_labels(bytes: &[u8]) -> Result<Vec<(&str, &str)>, String> {
    remote_write::label_pairs(bytes).map_err(|e| e.to_string())
}

fn reserved(state: &AppState) -> &'static HashMap<String, MetricType> {
    static RESERVED: OnceLock<HashMap<String, MetricType>> = OnceLock::new();
    RESERVED.get_or_init(|| reserved_names(state))
}

/// The grouping part of `/metrics/job/...`, taken from the raw path so that
/// percent-encoded slashes stay inside values.
fn grouping_path(uri: &OriginalUri) -> &str {
    uri.0.path().strip_prefix("/metrics/").unwrap_or("")
}

pub async fn push_put(
    state: State<AppState>,
    uri: OriginalUri,
    q: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    push(state, uri, q, headers, body, PushMethod::Put).await
}

pub async fn push_post(
    state: State<AppState>,
    uri: OriginalUri,
    q: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    push(state, uri, q, headers, body, PushMethod::Post).await
}

async fn push(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
    method: PushMethod,
) -> Response {
    match push_inner(&state, &uri, &query, &headers, body, method).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.plain(),
    }
}

async fn push_inner(
    state: &AppState,
    uri: &OriginalUri,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Bytes,
    method: PushMethod,
) -> Result<(), ApiError> {
    let key = grouping_key(grouping_path(uri))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body = decoded_body(headers, &body, state.settings.get().max_request_bytes)?;
    let (body, samples) = match content_type {
        Some(ct) if expfmt::protobuf::is_protobuf(ct) => {
            if !ct.contains("encoding=delimited") {
                return Err(ApiError::UnsupportedMedia(format!(
                    "unsupported protobuf Content-Type {ct:?}; send {}",
                    expfmt::protobuf::CONTENT_TYPE
                )));
            }
            let families = expfmt::protobuf::parse_delimited(&body)
                .map_err(|e| ApiError::BadData(e.reason))?;
            let n = families.iter().map(|f| f.samples.len()).sum();
            (PushBody::Families(families), n)
        }
        _ => {
            let text = String::from_utf8(body)
                .map_err(|e| ApiError::BadData(format!("body is not valid UTF-8: {e}")))?;
            let n = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count();
            (PushBody::Text(text, expfmt::format_of(content_type)), n)
        }
    };
    let ttl_text = query
        .iter()
        .find(|(k, _)| k == "ttl")
        .map(|(_, v)| v.clone())
        .or_else(|| {
            headers
                .get("mlmon-push-ttl")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    let ttl = match ttl_text {
        None => None,
        Some(t) => {
            let d = parse_duration(&t)
                .map_err(|e| ApiError::BadData(format!("invalid time-to-live: {e}")))?;
            if d.millis() <= 0 {
                return Err(ApiError::BadData(
                    "invalid time-to-live: must be greater than 0".into(),
                ));
            }
            Some(d.millis())
        }
    };
    let reserved = reserved(state);
    let (storage, groups) = (state.storage.clone(), state.push.clone());
    let req = PushRequest {
        key,
        method,
        body,
        ttl_ms: ttl,
    };
    tokio::task::spawn_blocking(move || groups.push(&storage, req, reserved, now_ms())).await??;
    HttpMetrics::add(&state.metrics.samples_push, samples as u64);
    Ok(())
}

pub async fn push_delete(State(state): State<AppState>, uri: OriginalUri) -> Response {
    let result = async {
        let key = grouping_key(grouping_path(&uri))?;
        let (storage, groups) = (state.storage.clone(), state.push.clone());
        tokio::task::spawn_blocking(move || groups.delete(&storage, &key, now_ms())).await??;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.plain(),
    }
}
