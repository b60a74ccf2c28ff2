//! `mlmon check` and the real `promtool check rules` make the same
//! accept/reject decision on the shipped rules and on a corpus of broken
//! rule files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{require, write_file};

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
    assert!(REJECTED.len() >= 20);
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ml_pipeline.yml");
    let mut cases: Vec<(std::path::PathBuf, bool)> = vec![(shipped, true)];
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
