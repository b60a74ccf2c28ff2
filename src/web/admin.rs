//! Prometheus' admin API, the part mlmon has: `POST
//! /api/v1/admin/tsdb/snapshot` writes a consistent copy of the store under
//! `<data dir>/snapshots/<name>` while ingest goes on (usable as a data
//! directory as it is; `mlmon backup` moves it where it is wanted).
//! Served on a loopback listener, else with `--web.enable-admin-api`, as
//! Prometheus gates it.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::api::success;
use super::{ApiError, AppState};

/// `POST /api/v1/admin/tsdb/snapshot` (`skip_head` is accepted and
/// ignored: the head is always in the copy).
pub async fn snapshot(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !state.settings.get().admin {
        return Err(ApiError::Unavailable(
            "admin APIs disabled (start mlmon with --web.enable-admin-api)".into(),
        ));
    }
    let now = chrono::Utc::now();
    let name = format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &crate::token::hex_token()[..16]
    );
    let storage = state.storage.clone();
    let dir = storage.dir().join("snapshots").join(&name);
    let d = dir.clone();
    let stats = tokio::task::spawn_blocking(move || storage.write_snapshot(&d))
        .await
        .map_err(|e| ApiError::Internal(format!("snapshot failed: {e}")))??;
    let path = std::path::absolute(&dir).unwrap_or(dir);
    tracing::info!(message = "Snapshot written", path = %path.display(), bytes = stats.bytes);
    Ok(success(json!({
        "name": name,
        "path": path.display().to_string(),
        "rows": stats.rows,
        "parts": stats.parts,
        "series_files": stats.series_files,
        "log_segments": stats.log_segments,
        "bytes": stats.bytes,
    })))
}
