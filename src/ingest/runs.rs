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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Succeeded,
    Failed,
    /// The stage left nothing behind.
    #[default]
    Missing,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the stage's last file was written (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Timestamp>,
    /// From the end of the stage before (or the run's start) to this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// One pipeline run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Profiles of the run's data files, by dataset (`raw`, `train`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, super::profile::Profile>,
    /// Drift of each dataset against the reference run, most severe first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<String, Vec<super::profile::ColumnDrift>>,
    /// The run the drift and `r2_delta` compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `test_r2` minus the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2_delta: Option<f64>,
}

impl Run {
    pub fn duration_seconds(&self) -> f64 {
        (self.finished_ms - self.started_ms).max(0) as f64 / 1000.0
    }
}

/// A run's data distributions (what drift is computed from), by dataset.
const NS_DATA: &str = "runs.data";
/// The baseline run pinned for a pipeline.
const NS_BASELINE: &str = "runs.baseline";
/// Distributions kept besides the baselines': the newest runs'.
const KEEP_DATA: usize = 5;

pub type Distributions = BTreeMap<String, super::profile::Distribution>;

/// Stores a run's distributions, keeping only the newest few and the
/// baselines'.
pub fn save_data(
    storage: &Storage,
    run_id: &str,
    data: &Distributions,
) -> Result<(), StorageError> {
    let value = serde_json::to_vec(data).map_err(|e| StorageError::new(e.to_string()))?;
    let key = format!("{:020}-{run_id}", crate::model::now_ms());
    storage.kv_put(NS_DATA, key.as_bytes(), &value)?;
    let pinned: Vec<String> = storage
        .kv_scan(NS_BASELINE)?
        .into_iter()
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        .collect();
    let rows = storage.kv_scan(NS_DATA)?;
    let n = rows.len();
    for (i, (k, _)) in rows.into_iter().enumerate() {
        let id = data_key_id(&k);
        if i + KEEP_DATA < n && !pinned.contains(&id) {
            storage.kv_delete(NS_DATA, &k)?;
        }
    }
    Ok(())
}

fn data_key_id(k: &[u8]) -> String {
    String::from_utf8_lossy(k)
        .split_once('-')
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

/// A run's distributions, if still kept.
pub fn load_data(storage: &Storage, run_id: &str) -> Result<Option<Distributions>, StorageError> {
    for (k, v) in storage.kv_scan(NS_DATA)?.into_iter().rev() {
        if data_key_id(&k) == run_id {
            return Ok(serde_json::from_slice(&v).ok());
        }
    }
    Ok(None)
}

/// Moves a run's distributions to another id (a command run absorbed it).
pub fn rename_data(storage: &Storage, from: &str, to: &str) -> Result<(), StorageError> {
    if from == to {
        return Ok(());
    }
    if let Some(d) = load_data(storage, from)? {
        save_data(storage, to, &d)?;
    }
    Ok(())
}

/// Why a run could not become its pipeline's baseline.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("no run has this id")]
    NotFound,
    #[error("run {0} has no data profile kept (its data files were not found, or it is older than the newest runs whose data is kept)")]
    NotKept(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The run with this id.
pub fn get(storage: &Storage, id: &str) -> Result<Option<Run>, StorageError> {
    Ok(list(storage)?.into_iter().find(|r| r.id == id))
}

/// Pins run `id` as its pipeline's baseline (the reference later runs'
/// drift is computed against); its distributions must still be kept.
pub fn pin_baseline(storage: &Storage, id: &str) -> Result<Run, PinError> {
    let run = get(storage, id)?.ok_or(PinError::NotFound)?;
    if load_data(storage, &run.id)?.is_none() {
        return Err(PinError::NotKept(run.id));
    }
    storage.kv_put(NS_BASELINE, run.pipeline.as_bytes(), run.id.as_bytes())?;
    Ok(run)
}

/// The run `pipeline` pinned as its baseline.
pub fn baseline(storage: &Storage, pipeline: &str) -> Result<Option<String>, StorageError> {
    Ok(storage
        .kv_scan(NS_BASELINE)?
        .into_iter()
        .find(|(k, _)| k.as_slice() == pipeline.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
}

/// Fills each stage's `seconds` from the stages' finish times, in
/// pipeline order, the first from the run's start (the wall clock of
/// `mlmon run`, or the oldest artifact).
pub fn stage_timings(run: &mut Run, order: &[&str]) {
    let mut previous = run.started_ms;
    for key in order {
        if let Some(s) = run.stages.get_mut(*key) {
            if let Some(f) = s.finished_ms {
                s.seconds = Some((f - previous).max(0) as f64 / 1000.0);
                previous = f;
            }
        }
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
