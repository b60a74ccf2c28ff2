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
    g.eval(&*s, t0, &opts, &ext);
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
    g.eval(&*s, t0 + 2 * MIN - 1000, &opts, &ext);
    assert_eq!(
        state(&g, "ModelAccuracyCritical"),
        Some(AlertState::Pending)
    );
    g.eval(&*s, t0 + 2 * MIN, &opts, &ext);
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
    g.eval(&*s, t0 + 3 * MIN, &opts, &ext);
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
            g.eval(&*s, t0 + k * MIN, &opts, &ext);
        }
        assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Pending));
        s.close().unwrap();
    }
    // Down for 30 s; then a new process, a new group.
    let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
    let mut g = group();
    let back = t0 + 4 * MIN + 30_000;
    write(&s, back, 0.75);
    g.eval(&*s, back, &opts, &ext);
    assert_eq!(state(&g, "ModelAccuracyDrop"), Some(AlertState::Pending));
    // 4 of its 5 minutes were spent before: it fires a minute later, not 5.
    write(&s, back + MIN, 0.75);
    g.eval(&*s, back + MIN, &opts, &ext);
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
        let v: serde_json::Value = m.json("/api/v1/alerts");
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
    let v: serde_json::Value = m.json("/api/v1/rules");
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

/// One of the shipped alerts: the series that trigger it (value when bad,
/// value when good, at time t), its `for`, and a piece of its description.
struct Case {
    alert: &'static str,
    for_min: i64,
    write: fn(&Storage, Timestamp, bool),
    description: &'static str,
}

fn gauge(s: &Storage, name: &str, extra: &[(&str, &str)], t: Timestamp, v: f64) {
    let mut pairs = vec![("__name__", name)];
    pairs.extend_from_slice(extra);
    let mut app = s.appender();
    app.append(Labels::new(pairs).unwrap(), t, v);
    app.commit().unwrap();
}

const P: &[(&str, &str)] = &[("pipeline", "mathscore")];
const H: &[(&str, &str)] = &[("instance", "vm-1:9100"), ("job", "node")];

fn cases() -> Vec<Case> {
    vec![
        Case {
            alert: "ModelAccuracyDrop",
            for_min: 5,
            write: |s, t, bad| gauge(s, "ml_model_r2_score", P, t, if bad { 0.75 } else { 0.86 }),
            description: "R² = 0.75; the warning threshold is 0.8",
        },
        Case {
            alert: "ModelAccuracyCritical",
            for_min: 2,
            write: |s, t, bad| gauge(s, "ml_model_r2_score", P, t, if bad { 0.65 } else { 0.86 }),
            description: "R² = 0.65; below 0.7",
        },
        Case {
            alert: "DataIngestionFailure",
            for_min: 1,
            write: |s, t, bad| {
                gauge(
                    s,
                    "ml_data_ingestion_success",
                    P,
                    t,
                    if bad { 0.0 } else { 1.0 },
                )
            },
            description: "produced no data",
        },
        Case {
            alert: "DataValidationFailure",
            for_min: 1,
            write: |s, t, bad| {
                gauge(
                    s,
                    "ml_data_validation_success",
                    P,
                    t,
                    if bad { 0.0 } else { 1.0 },
                )
            },
            description: "status.txt says False",
        },
        Case {
            alert: "PipelineExecutionTime",
            for_min: 5,
            write: |s, t, bad| {
                gauge(
                    s,
                    "ml_pipeline_duration_seconds",
                    P,
                    t,
                    if bad { 425.0 } else { 120.0 },
                )
            },
            description: "The last run took 7m 5s",
        },
        Case {
            alert: "PipelineFailure",
            for_min: 1,
            write: |s, t, bad| gauge(s, "ml_pipeline_success", P, t, if bad { 0.0 } else { 1.0 }),
            description: "did not complete every stage",
        },
        Case {
            alert: "HighMemoryUsage",
            for_min: 5,
            write: |s, t, bad| {
                gauge(s, "node_memory_MemTotal_bytes", H, t, 1000.0);
                gauge(
                    s,
                    "node_memory_MemAvailable_bytes",
                    H,
                    t,
                    if bad { 50.0 } else { 500.0 },
                );
            },
            description: "95% of memory is in use",
        },
        Case {
            alert: "HighCPUUsage",
            for_min: 5,
            // The idle counter grows 0.1 s per second when busy (90 %
            // busy), 0.9 s per second when not.
            write: |s, t, bad| {
                let idle = (t / 1000) as f64 * if bad { 0.1 } else { 0.9 };
                let mut l = vec![("cpu", "0"), ("mode", "idle")];
                l.extend_from_slice(H);
                gauge(s, "node_cpu_seconds_total", &l, t, idle);
            },
            description: "CPU is 90.0% busy",
        },
    ]
}

#[test]
fn each_original_alert_pends_fires_and_resolves_on_time() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ml_pipeline.yml");
    let file = mlmon::rules::load_file(&path).unwrap();
    let opts = QueryOptions::default();
    let ext = BTreeMap::new();
    let step = 15_000;
    for c in cases() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
        let mut g = Group::new("ml_pipeline.yml", &file.groups[0], step);
        let alert = |g: &Group| -> Option<(AlertState, String)> {
            let r = g
                .rules
                .iter()
                .find(|r| r.rule.alert.as_deref() == Some(c.alert))?;
            let a = r.alerts.values().next()?;
            Some((a.state, a.annotations["description"].clone()))
        };
        let t0: Timestamp = 1_800_000_000_000;
        // Healthy history (the CPU counter needs a window of samples).
        let mut t = t0 - 10 * MIN;
        while t < t0 {
            (c.write)(&s, t, false);
            t += step;
        }
        // Bad from t0: pending at once, firing after `for`.
        let fire_at = t0 + c.for_min * MIN;
        let mut seen_pending = None;
        // (A rate over 5 minutes turns bad up to 5 minutes after its input.)
        while t <= fire_at + 10 * MIN {
            (c.write)(&s, t, true);
            g.eval(&*s, t, &opts, &ext);
            match alert(&g) {
                Some((AlertState::Pending, _)) if seen_pending.is_none() => seen_pending = Some(t),
                Some((AlertState::Firing, d)) => {
                    let since = seen_pending
                        .unwrap_or_else(|| panic!("{}: fired without pending", c.alert));
                    assert_eq!(
                        t - since,
                        c.for_min * MIN,
                        "{}: pending at {since}, firing at {t}",
                        c.alert
                    );
                    assert!(d.contains(c.description), "{}: {d}", c.alert);
                    break;
                }
                _ => {}
            }
            t += step;
        }
        assert_eq!(
            alert(&g).map(|a| a.0),
            Some(AlertState::Firing),
            "{}",
            c.alert
        );
        // Gauges turn bad at once; the CPU alert's 5-minute rate later.
        let gauge_alert = c.alert != "HighCPUUsage";
        if gauge_alert {
            assert_eq!(seen_pending, Some(t0), "{}", c.alert);
        }
        let first_healthy = t + step;
        // Healthy again: resolved at the first evaluation that sees it
        // (the CPU rate needs its 5-minute window to move past the busy
        // samples).
        let mut resolved = None;
        for _ in 0..40 {
            t += step;
            (c.write)(&s, t, false);
            g.eval(&*s, t, &opts, &ext);
            if alert(&g).map(|a| a.0) == Some(AlertState::Inactive) {
                resolved = Some(t);
                break;
            }
        }
        assert!(resolved.is_some(), "{}: never resolved", c.alert);
        if gauge_alert {
            assert_eq!(resolved, Some(first_healthy), "{}", c.alert);
        }
        s.close().unwrap();
    }
}

/// The restart acceptance at a tenth of its scale (the controlled-clock
/// test above runs it at full scale): `for: 30s`, pending 24 s, restart,
/// firing about 6 s later instead of 30.
#[test]
fn a_restarted_server_fires_when_the_rest_of_for_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: ml_pipeline_duration_seconds > 300\n        for: 30s\n",
    )
    .unwrap();
    let config = format!(
        "push:\n  interval: 1s\nrule_files: ['{}']\n",
        rules.display()
    );
    let m = common::Mlmon::start(Some(&config));
    let push = |m: &common::Mlmon| m.push("ml", "ml_pipeline_duration_seconds 425\n");
    push(&m);
    let state = |m: &common::Mlmon| -> Option<String> {
        let v: serde_json::Value = common::client()
            .get(m.url("/api/v1/alerts"))
            .send()
            .ok()?
            .json()
            .ok()?;
        Some(v["data"]["alerts"][0]["state"].as_str()?.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&m).as_deref() != Some("pending") {
        assert!(Instant::now() < deadline, "not pending\n{}", m.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pending_since = Instant::now();
    std::thread::sleep(Duration::from_secs(24));
    assert_eq!(state(&m).as_deref(), Some("pending"));
    let m = m.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    loop {
        match state(&m).as_deref() {
            Some("firing") => break,
            _ => {
                assert!(Instant::now() < deadline, "never fired\n{}", m.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let after = restarted.elapsed();
    // 30 s of `for`, 24+ of them spent before the restart.
    assert!(
        after < Duration::from_secs(15),
        "fired {after:?} after the restart ({:?} after it went pending)",
        pending_since.elapsed()
    );
    assert!(
        pending_since.elapsed() >= Duration::from_secs(29),
        "{:?}",
        pending_since.elapsed()
    );
}

#[test]
fn a_template_error_shows_in_health_and_annotation_and_evaluation_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(StorageOptions::new(dir.path().join("d"))).unwrap();
    let file: RuleFile = serde_yaml::from_str(
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: vector(1)\n        annotations: {d: '{{ humanize \"not a number\" }}'}\n      - record: still_evaluated\n        expr: vector(2)\n",
    )
    .unwrap();
    let mut g = Group::new("r.yml", &file.groups[0], 15_000);
    let t: Timestamp = 1_800_000_000_000;
    g.eval(&*s, t, &QueryOptions::default(), &BTreeMap::new());
    let r = &g.rules[0];
    assert_eq!(r.health, "err");
    assert!(r.last_error.contains("not a number"), "{}", r.last_error);
    let a = r.alerts.values().next().unwrap();
    assert_eq!(a.state, AlertState::Firing);
    assert!(
        a.annotations["d"].starts_with("<error expanding template: "),
        "{:?}",
        a.annotations
    );
    assert_eq!(g.rules[1].health, "ok");
    s.close().unwrap();
}
