//! Rule evaluation with a controlled clock: the original stack's R² alerts
//! go pending, fire, resolve at the expected times with their annotations
//! rendered; recording rules write back; a restart restores pending time.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mlmon::model::{Labels, Timestamp};
use mlmon::promql::QueryOptions;
use mlmon::rules::engine::{AlertState, Group};
use mlmon::rules::RuleFile;
use mlmon::tsdb::{Storage, StorageOptions};

const RULES: &str = r#"
groups:
  - name: ml_pipeline_alerts
    rules:
      - alert: ModelAccuracyCritical
        expr: ml_model_r2_score < 0.7
        for: 2m
        labels:
          severity: critical
          component: model
        annotations:
          summary: "Model accuracy critically low"
          description: "Model R² score is {{ $value }}, which is critically low"
      - alert: ModelAccuracyDrop
        expr: ml_model_r2_score < 0.8
        for: 5m
        labels: {severity: warning}
        annotations:
          description: "R² {{ $value | humanizePercentage }} on {{ $labels.pipeline }}"
      - record: pipeline:ml_model_r2_score:min
        expr: min by (pipeline) (ml_model_r2_score)
"#;

const MIN: i64 = 60_000;

fn write(s: &Storage, t: Timestamp, v: f64) {
    let mut app = s.appender();
    app.append(
        Labels::new([("__name__", "ml_model_r2_score"), ("pipeline", "mathscore")]).unwrap(),
        t,
        v,
    );
    app.commit().unwrap();
}

fn group() -> Group {
    let file: RuleFile = serde_yaml::from_str(RULES).unwrap();
    Group::new("rules.yml", &file.groups[0], 15_000)
}

fn state(g: &Group, alert: &str) -> Option<AlertState> {
    g.rules
        .iter()
        .find(|r| r.rule.alert.as_deref() == Some(alert))?
        .alerts
        .values()
        .next()
        .map(|a| a.state)
}

#[test]
fn alerts_go_pending_fire_and_resolve_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
    let opts = QueryOptions::default();
    let ext = BTreeMap::new();
    let mut g = group();
    let t0: Timestamp = 1_800_000_000_000;
    write(&s, t0, 0.65);
    g.eval(&s, t0, &opts, &ext);
    assert_eq!(
        state(&g, "ModelAccuracyCritical"),
        Some(AlertState::Pending)
    );
    let a = g.rules[0].alerts.values().next().unwrap();
    assert_eq!(
        a.annotations["description"],
        "Model R² score is 0.65, which is critically low"
    );
    assert_eq!(a.labels.get("severity"), Some("critical"));
    assert_eq!(a.labels.get("alertname"), Some("ModelAccuracyCritical"));
    assert_eq!(
        g.rules[1].alerts.values().next().unwrap().annotations["description"],
        "R² 65% on mathscore"
    );
    // Recording rule written back.
    assert_eq!(g.rules[2].health, "ok");
    // Still pending just before 2m, firing at 2m.
    write(&s, t0 + 2 * MIN - 1000, 0.65);
    g.eval(&s, t0 + 2 * MIN - 1000, &opts, &ext);
    assert_eq!(
        state(&g, "ModelAccuracyCritical"),
        Some(AlertState::Pending)
    );
    g.eval(&s, t0 + 2 * MIN, &opts, &ext);
    assert_eq!(state(&g, "ModelAccuracyCritical"), Some(AlertState::Firing));
    assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Pending));
    // ALERTS as Prometheus writes them.
    let v = mlmon::promql::instant(
        s.as_ref(),
        "ALERTS{alertname=\"ModelAccuracyCritical\", alertstate=\"firing\"}",
        t0 + 2 * MIN,
        &opts,
    )
    .unwrap();
    assert!(
        matches!(v, mlmon::promql::Value::Vector(ref x) if x.len() == 1),
        "{v:?}"
    );
    // The model recovers: resolved, kept as inactive.
    write(&s, t0 + 3 * MIN, 0.9);
    g.eval(&s, t0 + 3 * MIN, &opts, &ext);
    assert_eq!(
        state(&g, "ModelAccuracyCritical"),
        Some(AlertState::Inactive)
    );
    let a = g.rules[0].alerts.values().next().unwrap();
    assert_eq!(a.resolved_at_ms, Some(t0 + 3 * MIN));
    // The pending warning is dropped, not resolved.
    assert_eq!(state(&g, "ModelAccuracyDrop"), None);
    s.close().unwrap();
}

#[test]
fn a_restart_keeps_the_time_already_spent_pending() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueryOptions::default();
    let ext = BTreeMap::new();
    let t0: Timestamp = 1_800_000_000_000;
    {
        let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
        let mut g = group();
        for k in 0..=4 {
            write(&s, t0 + k * MIN, 0.75);
            g.eval(&s, t0 + k * MIN, &opts, &ext);
        }
        assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Pending));
        s.close().unwrap();
    }
    // Down for 30 s; then a new process, a new group.
    let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
    let mut g = group();
    let back = t0 + 4 * MIN + 30_000;
    write(&s, back, 0.75);
    g.eval(&s, back, &opts, &ext);
    assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Pending));
    // 4 of its 5 minutes were spent before: it fires a minute later, not 5.
    write(&s, back + MIN, 0.75);
    g.eval(&s, back + MIN, &opts, &ext);
    assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Firing));
    s.close().unwrap();
}

#[test]
fn the_server_evaluates_rule_files_and_serves_rules_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alert_rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: AlwaysOn\n        expr: vector(0.65)\n        labels: {severity: warning}\n        annotations: {description: 'value {{ $value }}'}\n      - record: answer\n        expr: vector(42)\n",
    )
    .unwrap();
    let m = common::Mlmon::start(Some(&format!("rule_files: ['{}']\n", rules.display())));
    let deadline = Instant::now() + Duration::from_secs(15);
    let alerts = loop {
        let v: serde_json::Value = common::client()
            .get(m.url("/api/v1/alerts"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let a = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
        if !a.is_empty() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["labels"]["alertname"], "AlwaysOn");
    assert_eq!(alerts[0]["annotations"]["description"], "value 0.65");
    assert_eq!(alerts[0]["value"], "0.65");
    let v: serde_json::Value = common::client()
        .get(m.url("/api/v1/rules"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let g = &v["data"]["groups"][0];
    assert_eq!(g["name"], "g");
    assert_eq!(g["rules"][0]["type"], "alerting");
    assert_eq!(g["rules"][0]["state"], "firing");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][1]["type"], "recording");
    assert_eq!(m.value("answer"), Some(42.0));
    assert_eq!(
        m.value("ALERTS{alertname=\"AlwaysOn\",alertstate=\"firing\"}"),
        Some(1.0)
    );
}
