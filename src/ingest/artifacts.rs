//! The ML pipeline's artifacts directory, in the original stack's layout:
//!
//! ```text
//! data_ingestion/                      any non-empty file: ingestion succeeded
//! data_validation/status.txt           "Validation status: True" / "False"
//! data_transformation/, model_trainer/ non-empty: the stage ran
//! model_evaluation/evaluation_report.json   test_r2, test_rmse, test_mae, train_*
//! *.prom                               node_exporter textfile collector files
//! ```
//!
//! Every interval the directory is read and the current values are written:
//! `ml_model_r2_score`, `ml_model_rmse`, `ml_model_mae`,
//! `ml_data_ingestion_success`, `ml_data_validation_success`, and from the
//! newest run `ml_pipeline_success`, `ml_pipeline_duration_seconds`,
//! `ml_pipeline_last_run_timestamp`, all labelled `pipeline`. A new
//! evaluation report is a finished run; a validation status of False newer
//! than the report is a run that failed at validation. A file that does not
//! parse is retried while it changes (the pipeline may still be writing it)
//! and reported as unparsable once it stays the same; its values are then
//! left out, never written as zeros. A missing directory is reported and
//! picked up when it appears.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::profile;
use super::runs::{self, Run, Stage, StageStatus};
use crate::config::ArtifactsConfig;
use crate::expfmt::{self, Format};
use crate::model::{Labels, LabelsBuilder, Timestamp};
use crate::tsdb::{Storage, StorageError};

const STATUS_FILE: &str = "data_validation/status.txt";
const REPORT_FILE: &str = "model_evaluation/evaluation_report.json";

/// What the last scan found, for the status API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub dir: String,
    pub present: bool,
    #[serde(rename = "lastScan")]
    pub last_scan_ms: Timestamp,
    /// Files that could not be used: path → why.
    pub problems: BTreeMap<String, String>,
    /// Files still being written (retried next time).
    pub pending: Vec<String>,
}

/// How a tracked file looked when it last failed to parse.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    len: u64,
    modified: SystemTime,
}

enum Read<T> {
    Missing,
    /// Did not parse, but may still be being written.
    Pending,
    Unparsable(String),
    Ok(T),
}

#[derive(Default)]
struct State {
    /// Files that did not parse: how they looked then, and whether that
    /// was already logged.
    failed: BTreeMap<PathBuf, (Seen, bool)>,
    status: Status,
    /// The newest run of each pipeline, from either source (their
    /// `ml_pipeline_*` values are written at every scan).
    latest: BTreeMap<String, Run>,
    /// The pipeline the artifacts' current values are labelled with: the
    /// one whose run last wrote them (`mlmon run --pipeline NAME` names
    /// it), else the configured one.
    pipeline: String,
    /// Commands `mlmon run` said it started and has not reported yet:
    /// start time → pipeline (in memory only).
    running: BTreeMap<Timestamp, String>,
    /// The newest artifact time already turned into a run (a report's or a
    /// failed validation's).
    seen_ms: Timestamp,
}

pub struct Artifacts {
    config: ArtifactsConfig,
    state: Mutex<State>,
}

/// The evaluation report's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub metrics: BTreeMap<String, f64>,
}

impl Artifacts {
    /// Remembers the newest stored run of the configured pipeline.
    pub fn load(mut config: ArtifactsConfig, storage: &Storage) -> Result<Artifacts, StorageError> {
        // Paths in reports and logs are absolute, whatever the working dir.
        config.dir = std::path::absolute(&config.dir).unwrap_or(config.dir);
        // Newest first.
        let runs: Vec<Run> = runs::list(storage)?;
        let from_artifacts = |r: &&Run| r.report_ms.is_some() || r.source == "artifacts";
        let seen_ms = runs
            .iter()
            .filter(from_artifacts)
            .map(|r| r.report_ms.unwrap_or(r.finished_ms))
            .max()
            .unwrap_or(0);
        let pipeline = runs
            .iter()
            .find(from_artifacts)
            .map_or_else(|| config.pipeline.clone(), |r| r.pipeline.clone());
        let mut latest = BTreeMap::new();
        for r in runs {
            latest.entry(r.pipeline.clone()).or_insert(r);
        }
        Ok(Artifacts {
            state: Mutex::new(State {
                latest,
                seen_ms,
                pipeline,
                ..State::default()
            }),
            config,
        })
    }

    pub fn pipeline(&self) -> &str {
        &self.config.pipeline
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the directory once, records a new run if there is one, and
    /// writes the current values at `now`.
    pub fn scan(&self, storage: &Storage, now: Timestamp) -> Result<(), StorageError> {
        let dir = &self.config.dir;
        let mut st = self.lock();
        st.status = Status {
            dir: dir.display().to_string(),
            present: dir.is_dir(),
            last_scan_ms: now,
            ..Status::default()
        };
        let mut out: Vec<(Labels, f64)> = Vec::new();
        if st.status.present {
            let pipeline = st.pipeline.clone();
            let labels = |name: &str| series(name, &pipeline);
            let validation = self.read(&mut st, &dir.join(STATUS_FILE), parse_status);
            let report = self.read(&mut st, &dir.join(REPORT_FILE), parse_report);
            let ingestion = stage_dir(&dir.join("data_ingestion"));
            if let Some(ok) = ingestion {
                out.push((labels("ml_data_ingestion_success"), flag(ok)));
            }
            if let Read::Ok((ok, _)) = &validation {
                out.push((labels("ml_data_validation_success"), flag(*ok)));
            }
            if let Read::Ok((r, _)) = &report {
                for (metric, field) in [
                    ("ml_model_r2_score", "test_r2"),
                    ("ml_model_rmse", "test_rmse"),
                    ("ml_model_mae", "test_mae"),
                ] {
                    out.push((labels(metric), r.metrics[field]));
                }
            }
            if let Some(mut run) = self.new_run(&st, &validation, &report, ingestion) {
                for (file, why) in self.profile_run(storage, &mut run) {
                    st.status.problems.insert(file, why);
                }
                // Written by a command still running: its pipeline's run
                // (the command's report absorbs it when it ends).
                if let Some((_, name)) = st.running.range(..=run.finished_ms).next_back() {
                    run.id = format!("{name}-{}", run.finished_ms);
                    run.pipeline = name.clone();
                }
                st.seen_ms = run.finished_ms;
                let merged = self.merge_into_command_run(storage, run)?;
                if merged.pipeline != st.pipeline {
                    // The values just read belong to the run's pipeline.
                    for (l, _) in &mut out {
                        *l = l.with("pipeline", &merged.pipeline);
                    }
                    st.pipeline = merged.pipeline.clone();
                }
                st.remember(merged);
            }
            self.textfiles(&mut st, &mut out);
        }
        for run in st.latest.values() {
            out.extend(run_values(run));
        }
        drop(st);
        let mut app = storage.appender().lazy_sync();
        for (labels, v) in out {
            app.append(labels, now, v);
        }
        app.commit().map_err(|e| StorageError::new(e.to_string()))?;
        Ok(())
    }

    /// Notes that `mlmon run` started a command of `pipeline` at
    /// `started_ms`, so that artifacts it writes meanwhile are that
    /// pipeline's.
    pub fn command_started(&self, pipeline: String, started_ms: Timestamp) {
        let mut st = self.lock();
        // Commands whose end was never reported do not pile up.
        while st.running.len() >= 64 {
            st.running.pop_first();
        }
        st.running.insert(started_ms, pipeline);
    }

    /// Records a run `mlmon run` reports, absorbing the artifact run of the
    /// same execution if the collector already recorded it, and writes its
    /// values at once.
    pub fn command_run(&self, storage: &Storage, mut run: Run) -> Result<Run, StorageError> {
        let recorded = runs::list(storage)?;
        // Files older than the end of the previous run that could have
        // written them (this pipeline's, or one made from the artifacts)
        // are that run's, however close the two runs were.
        let previous_end = recorded
            .iter()
            .filter(|r| {
                (r.pipeline == run.pipeline || r.report_ms.is_some() || r.source == "artifacts")
                    && r.finished_ms < run.started_ms
            })
            .map(|r| r.finished_ms)
            .max();
        // The artifact run whose report time falls nearest this command's
        // span, whatever pipeline name the collector gave it: one
        // execution is one run, under the name the command gave.
        let absorbed = recorded
            .into_iter()
            .filter(|r| {
                r.source == "artifacts"
                    && within(r.finished_ms, &run)
                    && previous_end.is_none_or(|p| r.finished_ms > p)
            })
            .min_by_key(|r| distance(r.finished_ms, &run));
        let mut replaces = Vec::new();
        if let Some(a) = &absorbed {
            run.stages = a.stages.clone();
            run.metrics = a.metrics.clone();
            run.report_ms = a.report_ms;
            run.profile = a.profile.clone();
            run.drift = a.drift.clone();
            run.reference = a.reference.clone();
            run.r2_delta = a.r2_delta;
            runs::rename_data(storage, &a.id, &run.id)?;
            runs::stage_timings(&mut run, &STAGES);
            replaces.push(a.id.clone());
        } else if run.stages.is_empty() {
            run.stages = self.stages_written(&run, previous_end);
        }
        let replaces: Vec<&str> = replaces.iter().map(String::as_str).collect();
        runs::record(storage, &run, &replaces)?;
        let mut st = self.lock();
        if st.running.get(&run.started_ms) == Some(&run.pipeline) {
            st.running.remove(&run.started_ms);
        }
        if !replaces.is_empty() && st.pipeline != run.pipeline {
            st.pipeline = run.pipeline.clone();
        }
        for id in &replaces {
            st.latest.retain(|_, l| l.id != *id);
        }
        st.remember(run.clone());
        drop(st);
        let now = crate::model::now_ms();
        let mut app = storage.appender();
        for (labels, v) in run_values(&run) {
            app.append(labels, now, v);
        }
        app.commit().map_err(|e| StorageError::new(e.to_string()))?;
        Ok(run)
    }

    /// Reads and parses `path`, telling a file still being written (retried)
    /// from one that does not parse and stays the same (reported).
    fn read<T>(
        &self,
        st: &mut State,
        path: &Path,
        parse: fn(&str) -> Result<T, String>,
    ) -> Read<(T, SystemTime)> {
        let Ok(meta) = std::fs::metadata(path) else {
            st.failed.remove(path);
            return Read::Missing;
        };
        let seen = Seen {
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()))
            .and_then(|t| parse(&t));
        let name = path.display().to_string();
        match parsed {
            Ok(v) => {
                st.failed.remove(path);
                Read::Ok((v, seen.modified))
            }
            Err(why) => match st.failed.get_mut(path) {
                // Unchanged since it last failed: the writer is done.
                Some((before, logged)) if *before == seen => {
                    if !*logged {
                        tracing::warn!(message = "Artifact cannot be read", path = %name, reason = %why);
                        *logged = true;
                    }
                    st.status.problems.insert(name, why.clone());
                    Read::Unparsable(why)
                }
                _ => {
                    st.failed.insert(path.to_path_buf(), (seen, false));
                    st.status.pending.push(name);
                    Read::Pending
                }
            },
        }
    }

    /// The run the files show, if it is newer than the newest one known.
    fn new_run(
        &self,
        st: &State,
        validation: &Read<(bool, SystemTime)>,
        report: &Read<(Report, SystemTime)>,
        ingestion: Option<bool>,
    ) -> Option<Run> {
        let dir = &self.config.dir;
        let report_ms = match report {
            Read::Ok((_, t)) => Some(ms(*t)),
            _ => None,
        };
        let newer = |t: Timestamp| t > st.seen_ms;
        let mut stages = BTreeMap::new();
        stages.insert(
            "data_ingestion".to_string(),
            stage(ingestion.map(|ok| (ok, None))),
        );
        let finished = match (validation, report) {
            // Validation failed after the last report: the run stopped there.
            (Read::Ok((false, vt)), _) if report_ms.is_none_or(|r| ms(*vt) > r) => {
                let t = ms(*vt);
                if !newer(t) {
                    return None;
                }
                stages.insert(
                    "data_validation".into(),
                    stage(Some((false, Some("Validation status: False".into())))),
                );
                for s in ["data_transformation", "model_trainer", "model_evaluation"] {
                    stages.insert(s.into(), stage(None));
                }
                t
            }
            (validation, Read::Ok((_, rt))) => {
                let t = ms(*rt);
                if !newer(t) {
                    return None;
                }
                let valid = match validation {
                    Read::Ok((ok, _)) => Some((*ok, None)),
                    Read::Unparsable(why) => Some((false, Some(why.clone()))),
                    _ => None,
                };
                stages.insert("data_validation".into(), stage(valid));
                for s in ["data_transformation", "model_trainer"] {
                    stages.insert(
                        s.into(),
                        stage(stage_dir(&dir.join(s)).map(|ok| (ok, None))),
                    );
                }
                stages.insert("model_evaluation".into(), stage(Some((true, None))));
                t
            }
            _ => return None,
        };
        let started = self
            .stage_files()
            .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
            .map(ms)
            .filter(|t| *t <= finished && *t >= finished - 24 * 3_600_000)
            .min()
            .unwrap_or(finished);
        let metrics = match report {
            Read::Ok((r, t)) if ms(*t) == finished => r.metrics.clone(),
            _ => BTreeMap::new(),
        };
        // Each stage's finish: its newest file of this run.
        for key in STAGES {
            let newest = std::fs::read_dir(dir.join(key))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .map(ms)
                .filter(|t| *t <= finished && *t >= started)
                .max();
            if let (Some(s), Some(t)) = (stages.get_mut(key), newest) {
                s.finished_ms = Some(t);
            }
        }
        let success = stages.values().all(|s| s.status == StageStatus::Succeeded);
        let mut run = Run {
            id: format!("{}-{finished}", self.config.pipeline),
            pipeline: self.config.pipeline.clone(),
            source: "artifacts".into(),
            started_ms: started,
            finished_ms: finished,
            success,
            exit_code: None,
            command: None,
            stages,
            report_ms: (!metrics.is_empty()).then_some(finished),
            metrics,
            ..Default::default()
        };
        runs::stage_timings(&mut run, &STAGES);
        Some(run)
    }

    /// Profiles the run's data files (`artifacts.profile`) and compares
    /// them with the reference run: the pipeline's pinned baseline, else
    /// its newest earlier successful run whose data is kept. The
    /// distributions are kept for later runs. Returns the files that could
    /// not be profiled, and why.
    fn profile_run(&self, storage: &Storage, run: &mut Run) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut data = runs::Distributions::new();
        for rel in &self.config.profile {
            let path = self.config.dir.join(rel);
            let Ok(f) = std::fs::File::open(&path) else {
                continue;
            };
            let dataset = Path::new(rel)
                .file_stem()
                .map_or_else(|| rel.clone(), |s| s.to_string_lossy().into_owned());
            let reader = std::io::BufReader::new(f);
            match profile::profile_csv(rel, reader, self.config.profile_row_cap) {
                Ok((p, d)) => {
                    run.profile.insert(dataset.clone(), p);
                    data.insert(dataset, d);
                }
                Err(e) => problems.push((path.display().to_string(), e)),
            }
        }
        if data.is_empty() {
            return problems;
        }
        let earlier = runs::list(storage).unwrap_or_default();
        let reference = runs::baseline(storage, &run.pipeline)
            .ok()
            .flatten()
            .filter(|id| *id != run.id)
            .and_then(|id| earlier.iter().find(|r| r.id == id))
            .or_else(|| {
                earlier.iter().find(|r| {
                    r.pipeline == run.pipeline
                        && r.success
                        && r.finished_ms < run.finished_ms
                        && !r.profile.is_empty()
                })
            });
        if let Some(reference) = reference {
            if let Ok(Some(rd)) = runs::load_data(storage, &reference.id) {
                for (dataset, current) in &data {
                    if let Some(r) = rd.get(dataset) {
                        run.drift
                            .insert(dataset.clone(), profile::drift(r, current));
                    }
                }
                run.reference = Some(reference.id.clone());
                run.r2_delta = match (run.metrics.get("test_r2"), reference.metrics.get("test_r2"))
                {
                    (Some(now), Some(then)) => Some(now - then),
                    _ => None,
                };
            }
        }
        if let Err(e) = runs::save_data(storage, &run.id, &data) {
            problems.push((
                "runs.data".into(),
                format!("cannot keep the run's data: {e}"),
            ));
        }
        problems
    }

    /// What a command run that left no evaluation report did, judged by
    /// which stage directories it wrote to (files modified during the run,
    /// and after `previous_end`, the end of the pipeline's run before):
    /// those stages succeeded; if the command failed, the first stage after
    /// them is where it failed (the rest did not run).
    fn stages_written(
        &self,
        run: &Run,
        previous_end: Option<Timestamp>,
    ) -> BTreeMap<String, Stage> {
        let wrote = |stage: &str| {
            std::fs::read_dir(self.config.dir.join(stage))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .any(|t| within(ms(t), run) && previous_end.is_none_or(|p| ms(t) > p))
        };
        let mut out = BTreeMap::new();
        let mut failed = false;
        for s in STAGES {
            let status = if wrote(s) {
                StageStatus::Succeeded
            } else if !run.success && !failed {
                failed = true;
                StageStatus::Failed
            } else {
                StageStatus::Missing
            };
            if status != StageStatus::Missing || !out.is_empty() {
                let detail = (status == StageStatus::Failed).then(|| {
                    format!(
                        "the command exited {} before this stage wrote anything",
                        run.exit_code.unwrap_or(-1)
                    )
                });
                out.insert(
                    s.to_string(),
                    Stage {
                        status,
                        detail,
                        ..Default::default()
                    },
                );
            }
        }
        // A run that wrote nothing says nothing about stages.
        if out.values().all(|s| s.status != StageStatus::Succeeded) {
            out.clear();
        }
        out
    }

    /// Files the stages write (one level deep), for the run's start time.
    fn stage_files(&self) -> impl Iterator<Item = PathBuf> {
        let dir = self.config.dir.clone();
        STAGES.into_iter().flat_map(move |s| {
            std::fs::read_dir(dir.join(s))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
    }

    /// A run found in the artifacts that a command run reported by `mlmon
    /// run` covers becomes part of that run.
    fn merge_into_command_run(&self, storage: &Storage, run: Run) -> Result<Run, StorageError> {
        let command = runs::list(storage)?
            .into_iter()
            .filter(|r| r.source == "command" && within(run.finished_ms, r))
            .min_by_key(|r| distance(run.finished_ms, r));
        let merged = match command {
            Some(mut c) => {
                runs::rename_data(storage, &run.id, &c.id)?;
                c.stages = run.stages;
                c.metrics = run.metrics;
                c.report_ms = run.report_ms;
                c.profile = run.profile;
                c.drift = run.drift;
                c.reference = run.reference;
                c.r2_delta = run.r2_delta;
                runs::stage_timings(&mut c, &STAGES);
                c
            }
            None => run,
        };
        runs::record(storage, &merged, &[])?;
        Ok(merged)
    }

    /// `*.prom` files at the top of the directory, as node_exporter's
    /// textfile collector reads them (samples with timestamps are refused).
    fn textfiles(&self, st: &mut State, out: &mut Vec<(Labels, f64)>) {
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "prom") && p.is_file())
            .collect();
        paths.sort();
        let mut any_error = false;
        for path in paths {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            match self.read(st, &path, parse_textfile) {
                Read::Ok((samples, modified)) => {
                    out.extend(samples);
                    let l = Labels::new([
                        ("__name__", "node_textfile_mtime_seconds"),
                        ("file", file.as_str()),
                    ])
                    .unwrap_or_default();
                    out.push((l, ms(modified) as f64 / 1000.0));
                }
                Read::Unparsable(_) => any_error = true,
                Read::Missing | Read::Pending => {}
            }
        }
        let l = Labels::new([("__name__", "node_textfile_scrape_error")]).unwrap_or_default();
        out.push((l, flag(any_error)));
    }
}

impl State {
    /// Keeps `run` as its pipeline's newest if it is.
    fn remember(&mut self, run: Run) {
        match self.latest.get(&run.pipeline) {
            Some(l) if l.finished_ms > run.finished_ms && l.id != run.id => {}
            _ => {
                self.latest.insert(run.pipeline.clone(), run);
            }
        }
    }
}

/// A pipeline series: `name{pipeline="…"}`.
fn series(name: &str, pipeline: &str) -> Labels {
    Labels::new([("__name__", name), ("pipeline", pipeline)]).unwrap_or_default()
}

/// A run's `ml_pipeline_*` values, labelled with its pipeline, and its
/// data's profile and drift (`ml_data_*`, `ml_model_r2_delta_vs_baseline`).
fn run_values(run: &Run) -> Vec<(Labels, f64)> {
    let mut out = data_values(run);
    out.extend([
        (
            series("ml_pipeline_success", &run.pipeline),
            flag(run.success),
        ),
        (
            series("ml_pipeline_duration_seconds", &run.pipeline),
            run.duration_seconds(),
        ),
        (
            series("ml_pipeline_last_run_timestamp", &run.pipeline),
            run.finished_ms as f64 / 1000.0,
        ),
    ]);
    out
}

fn data_values(run: &Run) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    let labelled = |name: &str, pairs: &[(&str, &str)]| {
        let mut b = LabelsBuilder::new();
        b.push("__name__", name);
        b.push("pipeline", &run.pipeline);
        for (k, v) in pairs {
            b.push(*k, *v);
        }
        b.build().ok()
    };
    for (dataset, p) in &run.profile {
        out.extend(labelled("ml_data_rows", &[("dataset", dataset)]).map(|l| (l, p.rows as f64)));
        for c in &p.columns {
            let l = labelled(
                "ml_data_missing_ratio",
                &[("dataset", dataset), ("column", &c.name)],
            );
            out.extend(l.map(|l| (l, c.missing_ratio)));
        }
    }
    for (dataset, cols) in &run.drift {
        let changes = cols.iter().filter(|c| c.schema_change.is_some()).count();
        let l = labelled("ml_data_schema_changes", &[("dataset", dataset)]);
        out.extend(l.map(|l| (l, changes as f64)));
        for c in cols {
            let pairs = [("dataset", dataset.as_str()), ("column", c.column.as_str())];
            if let Some(v) = c.psi {
                out.extend(labelled("ml_data_drift_psi", &pairs).map(|l| (l, v)));
            }
            if let Some(v) = c.ks {
                out.extend(labelled("ml_data_drift_ks", &pairs).map(|l| (l, v)));
            }
        }
    }
    if let Some(d) = run.r2_delta {
        out.push((series("ml_model_r2_delta_vs_baseline", &run.pipeline), d));
    }
    for (stage, s) in &run.stages {
        if let Some(secs) = s.seconds {
            let l = labelled("ml_stage_duration_seconds", &[("stage", stage)]);
            out.extend(l.map(|l| (l, secs)));
        }
    }
    out
}

fn within(t: Timestamp, run: &Run) -> bool {
    t >= run.started_ms - 1000 && t <= run.finished_ms + 1000
}

/// How far `t` is from the run's time span (0 inside it).
fn distance(t: Timestamp, run: &Run) -> i64 {
    (run.started_ms - t).max(t - run.finished_ms).max(0)
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn ms(t: SystemTime) -> Timestamp {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Timestamp)
}

/// The stage directories of the original layout, in pipeline order.
const STAGES: [&str; 5] = [
    "data_ingestion",
    "data_validation",
    "data_transformation",
    "model_trainer",
    "model_evaluation",
];

fn stage(result: Option<(bool, Option<String>)>) -> Stage {
    match result {
        Some((ok, detail)) => Stage {
            status: if ok {
                StageStatus::Succeeded
            } else {
                StageStatus::Failed
            },
            detail,
            ..Default::default()
        },
        None => Stage {
            status: StageStatus::Missing,
            detail: None,
            ..Default::default()
        },
    }
}

/// A stage directory: absent → None; holds a non-empty file → succeeded.
fn stage_dir(dir: &Path) -> Option<bool> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0)),
    )
}

/// `Validation status: True` (or False) on the first line; reasons may
/// follow.
pub fn parse_status(text: &str) -> Result<bool, String> {
    let first = text.lines().next().unwrap_or("").trim();
    let value = first
        .strip_prefix("Validation status:")
        .ok_or_else(|| format!("expected \"Validation status: True|False\", found {first:?}"))?;
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "validation status {other:?} is neither True nor False"
        )),
    }
}

/// A JSON object with numeric `test_r2`, `test_rmse` and `test_mae`; every
/// numeric field is kept.
pub fn parse_report(text: &str) -> Result<Report, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let metrics: BTreeMap<String, f64> = obj
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    for field in ["test_r2", "test_rmse", "test_mae"] {
        if !metrics.contains_key(field) {
            return Err(format!("no numeric {field:?}"));
        }
    }
    Ok(Report { metrics })
}

/// A textfile: Prometheus text format without timestamps.
fn parse_textfile(text: &str) -> Result<Vec<(Labels, f64)>, String> {
    let families = expfmt::parse(text, Format::Text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for fam in families {
        for s in fam.samples {
            if s.timestamp_ms.is_some() {
                return Err(format!(
                    "line {}: textfile samples must not have timestamps",
                    s.line
                ));
            }
            let mut b = LabelsBuilder::new();
            b.push("__name__", s.name.as_str());
            for (n, v) in &s.labels {
                b.push(n.as_str(), v.as_str());
            }
            let labels = b.build().map_err(|e| format!("line {}: {e}", s.line))?;
            out.push((labels, s.value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_reads_true_false_and_refuses_the_rest() {
        assert_eq!(parse_status("Validation status: True"), Ok(true));
        assert_eq!(
            parse_status("Validation status: False\nmissing column lunch\n"),
            Ok(false)
        );
        assert!(parse_status("").is_err());
        assert!(parse_status("Validation status: maybe").is_err());
    }

    #[test]
    fn report_needs_the_test_metrics() {
        let r = parse_report(r#"{"test_r2": 0.88, "test_rmse": 5.4, "test_mae": 4.2, "train_r2": 0.87, "model_path": "x"}"#).unwrap();
        assert_eq!(r.metrics["train_r2"], 0.87);
        assert!(!r.metrics.contains_key("model_path"));
        assert!(parse_report(r#"{"test_r2": 0.88}"#)
            .unwrap_err()
            .contains("test_rmse"));
        assert!(parse_report(r#"{"test_r2": 0.8"#).is_err());
    }

    #[test]
    fn a_command_run_right_after_another_does_not_take_its_stage_files() {
        // Run 1 writes every stage; run 2 starts 20 ms after its end (well
        // within the second of slack for coarse file times) and fails
        // after writing the first stage only.
        let dir = tempfile::tempdir().unwrap();
        let storage =
            Storage::open(crate::tsdb::StorageOptions::new(dir.path().join("data"))).unwrap();
        let art = dir.path().join("artifacts");
        let a = Artifacts::load(
            ArtifactsConfig {
                dir: art.clone(),
                pipeline: "p".into(),
                interval: crate::model::PromDuration(0),
                profile: Vec::new(),
                profile_row_cap: 10,
            },
            &storage,
        )
        .unwrap();
        let run = |id: &str, started_ms, finished_ms, success| Run {
            id: id.into(),
            pipeline: "p".into(),
            source: "command".into(),
            started_ms,
            finished_ms,
            success,
            exit_code: Some(i32::from(!success)),
            command: None,
            stages: BTreeMap::new(),
            metrics: BTreeMap::new(),
            report_ms: None,
            ..Default::default()
        };
        let now = crate::model::now_ms;
        let t0 = now();
        for s in STAGES {
            std::fs::create_dir_all(art.join(s)).unwrap();
            std::fs::write(art.join(s).join("out"), "x").unwrap();
        }
        let first = a
            .command_run(&storage, run("r1", t0, now() + 1, true))
            .unwrap();
        assert_eq!(first.stages.len(), 5);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t2 = now();
        std::fs::write(art.join("data_ingestion").join("out"), "y").unwrap();
        let second = a
            .command_run(&storage, run("r2", t2, now() + 1, false))
            .unwrap();
        let status = |s: &str| second.stages.get(s).map(|x| x.status);
        assert_eq!(status("data_ingestion"), Some(StageStatus::Succeeded));
        assert_eq!(status("data_validation"), Some(StageStatus::Failed));
        assert_eq!(status("model_trainer"), Some(StageStatus::Missing));
        storage.close().unwrap();
    }

    #[test]
    fn textfiles_refuse_timestamps() {
        assert_eq!(parse_textfile("a 1\nb{x=\"y\"} 2\n").unwrap().len(), 2);
        assert!(parse_textfile("a 1 1700000000000\n").is_err());
    }
}
