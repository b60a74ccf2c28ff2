//! `mlmon test rules` against the real `promtool test rules`: every test
//! file of the corpus passes under both, and each deliberately wrong
//! expectation fails under both, with the same report.

mod common;

use std::path::Path;
use std::process::Command;

use common::{require, write_file};

/// A test file for the shipped rules: `{cases}` is replaced by one test
/// group's alert and expression tests.
const GOOD: &[&str] = &[
    // Model quality: pending at 2m, firing after `for: 2m`, annotations.
    r#"
    input_series:
      - series: 'ml_model_r2_score{pipeline="mathscore"}'
        values: '0.9 0.9 0.65x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelAccuracyCritical
      - eval_time: 4m
        alertname: ModelAccuracyCritical
        exp_alerts:
          - exp_labels: {severity: critical, component: model, pipeline: mathscore}
            exp_annotations:
              summary: "Model R² below 0.7 for pipeline mathscore"
              description: "The latest evaluation gives R² = 0.65; below 0.7 the model should not serve."
      - eval_time: 6m
        alertname: ModelAccuracyDrop
      - eval_time: 7m
        alertname: ModelAccuracyDrop
        exp_alerts:
          - exp_labels: {severity: warning, component: model, pipeline: mathscore}
            exp_annotations:
              summary: "Model R² below 0.8 for pipeline mathscore"
              description: "The latest evaluation gives R² = 0.65; the warning threshold is 0.8."
    promql_expr_test:
      - expr: ml_model_r2_score < 0.7
        eval_time: 5m
        exp_samples:
          - labels: 'ml_model_r2_score{pipeline="mathscore"}'
            value: 0.65
"#,
    // Pipeline stages, a stale marker ending the failure.
    r#"
    input_series:
      - series: 'ml_pipeline_success{pipeline="p"}'
        values: '1 1 0 0 0 stale'
      - series: 'ml_data_validation_success{pipeline="p"}'
        values: '0x5'
      - series: 'ml_pipeline_duration_seconds{pipeline="p"}'
        values: '100+100x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: PipelineFailure
        exp_alerts:
          - exp_labels: {severity: critical, component: pipeline, pipeline: p}
            exp_annotations:
              summary: "Pipeline p failed"
              description: "The last run did not complete every stage; see /api/v1/runs."
      - eval_time: 6m
        alertname: PipelineFailure
      - eval_time: 1m
        alertname: DataValidationFailure
        exp_alerts:
          - exp_labels: {severity: warning, component: data_validation, pipeline: p}
            exp_annotations:
              summary: "Data validation failed for pipeline p"
              description: "data_validation/status.txt says False; see its reasons before retraining."
      - eval_time: 7m
        alertname: PipelineExecutionTime
      - eval_time: 8m
        alertname: PipelineExecutionTime
        exp_alerts:
          - exp_labels: {severity: warning, component: pipeline, pipeline: p}
            exp_annotations:
              summary: "Pipeline p ran long"
              description: "The last run took 15m 0s, more than 5 minutes."
"#,
    // The host: memory over 90 % for 5 minutes.
    r#"
    input_series:
      - series: 'node_memory_MemTotal_bytes{instance="vm:9100",job="node"}'
        values: '1000x10'
      - series: 'node_memory_MemAvailable_bytes{instance="vm:9100",job="node"}'
        values: '50x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: HighMemoryUsage
      - eval_time: 5m
        alertname: HighMemoryUsage
        exp_alerts:
          - exp_labels: {severity: warning, component: system, instance: "vm:9100", job: node}
            exp_annotations:
              summary: "Memory almost full on vm:9100"
              description: "95% of memory is in use (threshold 90%)."
"#,
    // Ingestion fails; the CPU is busy (a rate over 5 minutes).
    r#"
    input_series:
      - series: 'ml_data_ingestion_success{pipeline="p"}'
        values: '1 0x5'
      - series: 'node_cpu_seconds_total{cpu="0",mode="idle",instance="vm:9100",job="node"}'
        values: '0+6x30'
    alert_rule_test:
      - eval_time: 2m
        alertname: DataIngestionFailure
        exp_alerts:
          - exp_labels: {severity: critical, component: data_ingestion, pipeline: p}
            exp_annotations:
              summary: "Data ingestion failed for pipeline p"
              description: "The last run's ingestion stage produced no data."
      - eval_time: 15m
        alertname: HighCPUUsage
        exp_alerts:
          - exp_labels: {severity: warning, component: system, instance: "vm:9100"}
            exp_annotations:
              summary: "CPU busy on vm:9100"
              description: "CPU is 90.0% busy (threshold 80%)."
"#,
    // A recording rule and keep_firing_for (extra.yml).
    r#"
    input_series:
      - series: 'errors_total{job="api"}'
        values: '0 10 20 30 30 30 30 30 30 30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ErrorsRising
        exp_alerts:
          - exp_labels: {job: api}
            exp_annotations: {summary: "api: 166.7m errors/s"}
      - eval_time: 6m
        alertname: ErrorsRising
        exp_alerts:
          - exp_labels: {job: api}
            exp_annotations: {summary: "api: 83.33m errors/s"}
      - eval_time: 8m
        alertname: ErrorsRising
    promql_expr_test:
      - expr: job:errors:rate2m
        eval_time: 3m
        exp_samples:
          - labels: 'job:errors:rate2m{job="api"}'
            value: 0.16666666666666666
"#,
];

/// Rules the shipped file has no example of.
const EXTRA_RULES: &str = r#"
groups:
  - name: extra
    rules:
      - record: job:errors:rate2m
        expr: sum by (job) (rate(errors_total[2m]))
      - alert: ErrorsRising
        expr: job:errors:rate2m > 0
        keep_firing_for: 3m
        annotations:
          summary: "{{ $labels.job }}: {{ $value | humanize }} errors/s"
"#;

/// Wrong expectations, each of which must fail.
const BAD: &[&str] = &[
    // Firing one minute too early.
    r#"
    input_series:
      - series: 'ml_model_r2_score{pipeline="m"}'
        values: '0.65x10'
    alert_rule_test:
      - eval_time: 1m
        alertname: ModelAccuracyCritical
        exp_alerts:
          - exp_labels: {severity: critical, component: model, pipeline: m}
"#,
    // A wrong value in the description.
    r#"
    input_series:
      - series: 'ml_model_r2_score{pipeline="m"}'
        values: '0.65x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelAccuracyCritical
        exp_alerts:
          - exp_labels: {severity: critical, component: model, pipeline: m}
            exp_annotations:
              summary: "Model R² below 0.7 for pipeline m"
              description: "The latest evaluation gives R² = 0.66; below 0.7 the model should not serve."
"#,
    // A wrong label.
    r#"
    input_series:
      - series: 'ml_pipeline_success{pipeline="p"}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 2m
        alertname: PipelineFailure
        exp_alerts:
          - exp_labels: {severity: warning, component: pipeline, pipeline: p}
            exp_annotations:
              summary: "Pipeline p failed"
              description: "The last run did not complete every stage; see /api/v1/runs."
"#,
    // A wrong query result.
    r#"
    input_series:
      - series: 'ml_model_r2_score{pipeline="m"}'
        values: '0.65x10'
    promql_expr_test:
      - expr: ml_model_r2_score
        eval_time: 2m
        exp_samples:
          - labels: 'ml_model_r2_score{pipeline="m"}'
            value: 0.7
"#,
];

fn file(group: &str) -> String {
    format!(
        "rule_files: [ml_pipeline.yml, extra.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m{group}"
    )
}

fn run(tool: &Path, args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .current_dir(file.parent().unwrap())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn mlmon_test_rules_agrees_with_promtool() {
    if !common::have(&["promtool"]) {
        return;
    }
    let promtool = require("promtool");
    let mlmon = Path::new(env!("CARGO_BIN_EXE_mlmon"));
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ml_pipeline.yml"),
    )
    .unwrap();
    write_file(dir.path(), "ml_pipeline.yml", &rules);
    write_file(dir.path(), "extra.yml", EXTRA_RULES);
    let mut problems = Vec::new();
    for (i, (group, want)) in GOOD
        .iter()
        .map(|g| (g, true))
        .chain(BAD.iter().map(|g| (g, false)))
        .enumerate()
    {
        let f = write_file(dir.path(), &format!("t{i}.yml"), &file(group));
        let (p_ok, p_out) = run(&promtool, &["test", "rules"], &f);
        let (m_ok, m_out) = run(mlmon, &["test", "rules"], &f);
        if p_ok != want {
            problems.push(format!(
                "case {i}: promtool passed={p_ok}, expected {want}:\n{p_out}"
            ));
        }
        if m_ok != p_ok {
            problems.push(format!("case {i}: mlmon passed={m_ok}, promtool passed={p_ok}:\n{m_out}\n--- promtool:\n{p_out}"));
        }
        if !want && m_out.trim() != p_out.trim() {
            problems.push(format!(
                "case {i}: reports differ:\n{m_out}\n--- promtool:\n{p_out}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n======\n"));
}
