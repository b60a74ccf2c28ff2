//! Pipeline runs, kept in the store's KV table so they survive restarts:
//! one per new evaluation report the artifacts collector finds, and one
//! per command `mlmon run` reports (which the artifacts of that run then
//! complete with stage results and model metrics).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::tsdb::{Storage, StorageError};

const KV_NAMESPACE: &str = "runs";

/// How a stage of the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Succeeded,
    Failed,
    /// The stage left nothing behind.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub pipeline: String,
    /// "artifacts" (found in the artifacts directory) or "command" (reported
    /// by `mlmon run`).
    pub source: String,
    /// Unix milliseconds; for artifact runs, the oldest stage file's time.
    pub started_ms: Timestamp,
    pub finished_ms: Timestamp,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Stage name → result, for the stages the artifacts show.
    #[serde(default)]
    pub stages: BTreeMap<String, Stage>,
    /// `test_r2`, `test_rmse`, `train_mae`, ... from the evaluation report.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// When the evaluation report this run's metrics come from was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_ms: Option<Timestamp>,
}

impl Run {
    pub fn duration_seconds(&self) -> f64 {
        (self.finished_ms - self.started_ms).max(0) as f64 / 1000.0
    }
}

/// Runs sort by when they finished; the id breaks ties.
fn key(run: &Run) -> Vec<u8> {
    let mut k = (run.finished_ms as u64 ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(run.id.as_bytes());
    k
}

/// Stores `run`, replacing the runs whose ids are in `replaces` or equal
/// its own (which may have had another finish time).
pub fn record(storage: &Storage, run: &Run, replaces: &[&str]) -> Result<(), StorageError> {
    for (k, old) in storage.kv_scan(KV_NAMESPACE)? {
        if serde_json::from_slice::<Run>(&old)
            .is_ok_and(|o| o.id == run.id || replaces.contains(&o.id.as_str()))
        {
            storage.kv_delete(KV_NAMESPACE, &k)?;
        }
    }
    let value = serde_json::to_vec(run).map_err(|e| StorageError::new(e.to_string()))?;
    storage.kv_put(KV_NAMESPACE, &key(run), &value)
}

/// Runs, newest first; rows that do not decode are skipped (and logged).
pub fn list(storage: &Storage) -> Result<Vec<Run>, StorageError> {
    let mut out = Vec::new();
    for (k, v) in storage.kv_scan(KV_NAMESPACE)?.into_iter().rev() {
        match serde_json::from_slice::<Run>(&v) {
            Ok(run) => out.push(run),
            Err(e) => {
                tracing::warn!(message = "Unreadable run record skipped", key = ?k, error = %e)
            }
        }
    }
    Ok(out)
}
