//! mlmon as an Alertmanager for existing tools: `amtool` (Debian
//! `prometheus-alertmanager`) queries alerts and adds, lists and expires
//! silences; a real Prometheus (Debian `prometheus`) configured with mlmon
//! as its Alertmanager delivers its alerts through mlmon's routing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, require, write_file, HttpSink, Mlmon, Prometheus};
use serde_json::{json, Value};

fn amtool(m: &Mlmon, args: &[&str]) -> (bool, String) {
    let out = Command::new(require("amtool"))
        .arg(format!("--alertmanager.url={}", m.url("")))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), text)
}

fn start(dir: &std::path::Path, am: &str, extra: &str) -> Mlmon {
    let path = write_file(dir, "alertmanager.yml", am);
    Mlmon::start(Some(&format!(
        "alertmanager:\n  config_file: {}\n{extra}",
        path.display()
    )))
}

#[test]
fn amtool_queries_alerts_and_manages_silences() {
    if !common::have(&["amtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = start(
        dir.path(),
        "route:\n  receiver: log\n  group_by: [alertname]\nreceivers:\n  - name: log\n",
        "",
    );
    let r = client()
        .post(m.url("/api/v2/alerts"))
        .json(&json!([
            {"labels": {"alertname": "ModelAccuracyCritical", "severity": "critical"},
             "annotations": {"summary": "R² below 0.7"}},
            {"labels": {"alertname": "HighCPUUsage", "severity": "warning"},
             "annotations": {"summary": "CPU above 80%"}}
        ]))
        .send()
        .unwrap();
    assert!(r.status().is_success());

    let (ok, out) = amtool(&m, &["alert", "query"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ModelAccuracyCritical") && out.contains("R² below 0.7"),
        "{out}"
    );
    assert!(out.contains("HighCPUUsage"), "{out}");
    let (ok, out) = amtool(&m, &["alert", "query", "alertname=HighCPUUsage"]);
    assert!(
        ok && out.contains("HighCPUUsage") && !out.contains("ModelAccuracy"),
        "{out}"
    );

    let (ok, id) = amtool(
        &m,
        &[
            "silence",
            "add",
            "alertname=ModelAccuracyCritical",
            "--comment=retraining the model",
            "--author=alice",
            "--duration=2h",
        ],
    );
    let id = id.trim().to_string();
    assert!(ok && id.len() == 36, "{id}");
    let (ok, out) = amtool(&m, &["silence", "query"]);
    assert!(
        ok && out.contains(&id) && out.contains("alice") && out.contains("retraining"),
        "{out}"
    );
    // Silenced alerts leave the default query and show as suppressed.
    let (_, out) = amtool(&m, &["alert", "query"]);
    assert!(!out.contains("ModelAccuracyCritical"), "{out}");
    let (_, out) = amtool(&m, &["alert", "query", "--silenced"]);
    assert!(
        out.contains("ModelAccuracyCritical") && out.contains("suppressed"),
        "{out}"
    );
    let api = m.json("/api/v2/silences");
    assert_eq!(api[0]["id"], id.as_str());
    assert_eq!(api[0]["status"]["state"], "active");
    assert_eq!(api[0]["createdBy"], "alice");

    let (ok, out) = amtool(&m, &["silence", "expire", &id]);
    assert!(ok, "{out}");
    let (_, out) = amtool(&m, &["silence", "query"]);
    assert!(!out.contains(&id), "{out}");
    let (_, out) = amtool(&m, &["silence", "query", "--expired"]);
    assert!(out.contains(&id), "{out}");
    assert_eq!(
        m.json(&format!("/api/v2/silence/{id}"))["status"]["state"],
        "expired"
    );
    let (_, out) = amtool(&m, &["alert", "query"]);
    assert!(out.contains("ModelAccuracyCritical"), "{out}");

    // Silences are written at once: they survive a crash.
    let (_, id2) = amtool(
        &m,
        &[
            "silence",
            "add",
            "severity=warning",
            "--comment=c",
            "--author=bob",
        ],
    );
    let mut m = m;
    m.kill();
    let m = m.restart();
    let (_, out) = amtool(&m, &["silence", "query"]);
    assert!(out.contains(id2.trim()), "{out}");

    // Bad input gets Alertmanager's reasons, not internal errors.
    let r = client()
        .post(m.url("/api/v2/silences"))
        .json(
            &json!({"matchers": [{"name": "a", "value": ".*", "isRegex": true}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "x", "comment": "y"}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .unwrap()
        .contains("must not match the empty string"));
    let r = client()
        .post(m.url("/api/v2/alerts"))
        .json(&json!([{"labels": {}}]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        client()
            .delete(m.url("/api/v2/silence/nope"))
            .send()
            .unwrap()
            .status(),
        404
    );
    let (ok, out) = amtool(&m, &["config", "show"]);
    assert!(ok && out.contains("receiver: log"), "{out}");
}

#[test]
fn a_real_prometheus_delivers_its_alerts_through_mlmon() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(&[], false);
    let m = start(
        dir.path(),
        &format!(
            "route:\n  receiver: default\n  group_by: [alertname]\n  group_wait: 1s\n  routes:\n    - matchers: ['severity=\"critical\"']\n      receiver: oncall\nreceivers:\n  - name: default\n  - name: oncall\n    webhook_configs:\n      - url: '{}'\n",
            hook.url("/oncall")
        ),
        "",
    );
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: demo\n    rules:\n      - alert: PipelineFailure\n        expr: vector(1)\n        labels:\n          severity: critical\n          component: pipeline\n        annotations:\n          summary: 'ML pipeline failed'\n",
    );
    let _prom = Prometheus::start(
        &format!(
            "global:\n  evaluation_interval: 1s\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\n",
            rules.display(),
            m.port
        ),
        // Its first alert goes out before the Alertmanager is discovered
        // and is dropped; resend soon rather than after a minute.
        &["--rules.alert.resend-delay=1s"],
    );
    let got = hook.wait_accepted(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", m.log());
    let a = &got[0]["alerts"][0];
    assert_eq!(got[0]["receiver"], "oncall");
    assert_eq!(a["labels"]["alertname"], "PipelineFailure");
    assert_eq!(a["annotations"]["summary"], "ML pipeline failed");
    assert!(a["generatorURL"]
        .as_str()
        .unwrap()
        .contains("/graph?g0.expr=vector"));
    // mlmon shows the alert with the receiver its routing chose.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alerts: Value = m.json("/api/v2/alerts?filter=alertname%3D%22PipelineFailure%22");
        if let Some(x) = alerts.as_array().and_then(|a| a.first()) {
            assert_eq!(x["receivers"][0]["name"], "oncall");
            break;
        }
        assert!(Instant::now() < deadline, "alert not listed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
