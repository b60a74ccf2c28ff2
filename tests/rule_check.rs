//! `mlmon check` and the real `promtool check rules` make the same
//! accept/reject decision on the shipped rules and on a corpus of broken
//! rule files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{require, write_file};

/// The original stack's `alert_rules.yml`, as it was shipped there.
const ORIGINAL: &str = r#"groups:
  - name: ml_pipeline_alerts
    rules:
      # Model Performance Alerts
      - alert: ModelAccuracyDrop
        expr: ml_model_r2_score < 0.8
        for: 5m
        labels:
          severity: warning
          component: model
        annotations:
          summary: "Model accuracy has dropped below 80%"
          description: "Model R² score is {{ $value }}, which is below the threshold of 0.8"

      - alert: ModelAccuracyCritical
        expr: ml_model_r2_score < 0.7
        for: 2m
        labels:
          severity: critical
          component: model
        annotations:
          summary: "Model accuracy critically low"
          description: "Model R² score is {{ $value }}, which is critically low"

      # Data Quality Alerts
      - alert: DataIngestionFailure
        expr: ml_data_ingestion_success == 0
        for: 1m
        labels:
          severity: critical
          component: data_ingestion
        annotations:
          summary: "Data ingestion has failed"
          description: "Data ingestion pipeline has failed to process data"

      - alert: DataValidationFailure
        expr: ml_data_validation_success == 0
        for: 1m
        labels:
          severity: warning
          component: data_validation
        annotations:
          summary: "Data validation has failed"
          description: "Data validation checks have failed"

      # Pipeline Health Alerts
      - alert: PipelineExecutionTime
        expr: ml_pipeline_duration_seconds > 300
        for: 5m
        labels:
          severity: warning
          component: pipeline
        annotations:
          summary: "Pipeline execution time is high"
          description: "Pipeline took {{ $value }} seconds to complete, which is above normal"

      - alert: PipelineFailure
        expr: ml_pipeline_success == 0
        for: 1m
        labels:
          severity: critical
          component: pipeline
        annotations:
          summary: "ML Pipeline has failed"
          description: "The ML pipeline execution has failed"

      # System Resource Alerts
      - alert: HighMemoryUsage
        expr: (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes) / node_memory_MemTotal_bytes > 0.9
        for: 5m
        labels:
          severity: warning
          component: system
        annotations:
          summary: "High memory usage detected"
          description: "Memory usage is above 90%"

      - alert: HighCPUUsage
        expr: 100 - (avg by(instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) * 100) > 80
        for: 5m
        labels:
          severity: warning
          component: system
        annotations:
          summary: "High CPU usage detected"
          description: "CPU usage is above 80%"
"#;

/// Valid files: the shipped rules and a few edge cases promtool accepts.
const ACCEPTED: &[&str] = &[
    "groups:\n  - name: g\n    interval: 0s\n    rules:\n      - record: a\n        expr: up\n",
    "groups:\n  - name: g\n    limit: -1\n    rules:\n      - record: a\n        expr: up\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '\"foo\"'\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 5m\n        keep_firing_for: 10m\n        labels: {severity: '{{ $labels.job | toUpper }}'}\n        annotations: {d: '{{ $value | humanizePercentage }} {{ printf \"%.2f\" $value }}'}\n",
    "groups: []\n",
];

/// Broken files, each wrong in one way.
const REJECTED: &[&str] = &[
    // PromQL that does not parse.
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'up =='\n",
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: 'sum(rate(x[5m])'\n",
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: 'rate(x)'\n",
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: 'foo bar'\n",
    // Missing or conflicting fields.
    "groups:\n  - name: g\n    rules:\n      - alert: A\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: a\n        expr: up\n",
    "groups:\n  - name: g\n    rules:\n      - expr: up\n",
    "groups:\n  - name: ''\n    rules:\n      - record: a\n        expr: up\n",
    // Group names must be distinct.
    "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
    // Names and labels.
    "groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {bad-name: x}\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {__name__: x}\n",
    // Fields recording rules may not have.
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n        annotations: {d: x}\n",
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n        for: 5m\n",
    "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n        keep_firing_for: 5m\n",
    // Unknown keys anywhere.
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        fo: 5m\n",
    "groups:\n  - name: g\n    intervl: 1m\n    rules: []\n",
    "grups:\n  - name: g\n    rules: []\n",
    // Bad values and YAML.
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5x\n",
    "groups:\n  - name: g\n    rules: {alert: A}\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: [up\n",
    // Templates that do not parse.
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations: {d: '{{ nosuch }}'}\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations: {d: '{{ $value '}\n",
    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {x: '{{ end }}'}\n",
];

fn promtool_accepts(file: &Path) -> bool {
    Command::new(require("promtool"))
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

fn mlmon_accepts(dir: &Path, file: &Path) -> (bool, String) {
    let cfg = write_file(
        dir,
        "mlmon.yml",
        &format!("rule_files: ['{}']\n", file.display()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(["check", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mlmon_check_decides_as_promtool_does() {
    if !common::have(&["promtool"]) {
        return;
    }
    assert!(REJECTED.len() >= 20);
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ml_pipeline.yml");
    let original = write_file(dir.path(), "alert_rules.yml", ORIGINAL);
    let mut cases: Vec<(std::path::PathBuf, bool)> = vec![(shipped, true), (original, true)];
    for (i, text) in ACCEPTED.iter().enumerate() {
        cases.push((write_file(dir.path(), &format!("ok{i}.yml"), text), true));
    }
    for (i, text) in REJECTED.iter().enumerate() {
        cases.push((write_file(dir.path(), &format!("bad{i}.yml"), text), false));
    }
    let mut problems = Vec::new();
    for (file, want) in &cases {
        let promtool = promtool_accepts(file);
        let (mlmon, why) = mlmon_accepts(dir.path(), file);
        let text = std::fs::read_to_string(file).unwrap();
        if promtool != *want {
            problems.push(format!(
                "promtool accepts={promtool}, expected {want}:\n{text}"
            ));
        }
        if mlmon != promtool {
            problems.push(format!(
                "mlmon accepts={mlmon}, promtool accepts={promtool}:\n{text}{why}"
            ));
        }
        if !mlmon && !why.contains(&file.display().to_string()) {
            problems.push(format!("the error does not name the file: {why}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
}
