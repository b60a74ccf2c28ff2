//! `POST /api/v1/otlp/v1/metrics` (Prometheus 3's path) and `/v1/metrics`
//! (the OTLP/HTTP exporter's default): OTLP metrics as protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), gzip or not,
//! translated by `ingest::otlp` and stored in one batch. A body that does
//! not decode is 400 (as Prometheus answers); data points that cannot be
//! stored (delta temporality, exponential histograms) are counted in the
//! answer's `partial_success` with the reason, and the rest is stored; a
//! request none of whose points can be stored is 400 with the reasons.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message;

use super::ingest::decoded_body;
use super::telemetry::HttpMetrics;
use super::{ApiError, AppState};
use crate::ingest::otlp;

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let json = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    {
        Some(c) if c == "application/json" => true,
        Some(c) if c == "application/x-protobuf" || c == "application/protobuf" => false,
        other => {
            return ApiError::UnsupportedMedia(format!(
                "unsupported Content-Type {:?}: OTLP/HTTP sends application/x-protobuf or application/json",
                other.unwrap_or_default()
            ))
            .plain()
        }
    };
    match store(&state, &headers, &body, json).await {
        Ok(answer) => answer,
        Err(e) => e.plain(),
    }
}

async fn store(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    json: bool,
) -> Result<Response, ApiError> {
    let settings = state.settings.get();
    let body = decoded_body(headers, body, settings.max_request_bytes)?;
    let cfg = settings.otlp.clone();
    let storage = state.storage.clone();
    let (stored, rejected, errors) = tokio::task::spawn_blocking(move || {
        let req = if json {
            otlp::decode_json(&body)
        } else {
            otlp::decode_protobuf(&body)
        }
        .map_err(ApiError::BadData)?;
        let t = otlp::translate(&req, &cfg);
        if t.series.is_empty() && t.rejected > 0 {
            return Err(ApiError::BadData(t.errors.join("; ")));
        }
        let mut app = storage.appender();
        for (labels, samples) in t.series {
            app.append_series(labels, samples);
        }
        let stored = app.commit()?;
        Ok((stored, t.rejected, t.errors))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("OTLP ingest failed: {e}")))??;
    HttpMetrics::add(&state.metrics.samples_otlp, stored as u64);
    let answer = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: errors.join("; "),
        }),
    };
    Ok(if json {
        // The proto3 JSON mapping: unset fields left out, int64 as a string.
        let body = match &answer.partial_success {
            None => serde_json::json!({}),
            Some(p) => serde_json::json!({"partialSuccess": {
                "rejectedDataPoints": p.rejected_data_points.to_string(),
                "errorMessage": p.error_message,
            }}),
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response()
    })
}
