//! A real Alertmanager (Debian `prometheus-alertmanager`) configured in
//! `alerting.alertmanagers` receives mlmon's firing alert, then its
//! resolution.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, require, wait_ready, write_file, Mlmon, Proc};
use serde_json::Value;

fn am_alerts(base: &str) -> Vec<Value> {
    client()
        .get(format!("{base}/api/v2/alerts"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn push_r2(m: &Mlmon, v: f64) {
    m.push(
        "ml",
        &format!("ml_model_r2_score{{pipeline=\"mathscore\"}} {v}\n"),
    );
}

#[test]
fn a_real_alertmanager_gets_firing_and_resolved_alerts() {
    if !common::have(&["prometheus-alertmanager"]) {
        return;
    }
    let bin = require("prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "am.yml",
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    );
    let port = free_port();
    let mut child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let am = format!("http://127.0.0.1:{port}");
    wait_ready(
        &format!("{am}/-/ready"),
        Duration::from_secs(30),
        &mut child,
    );
    let _am = Proc(child);

    let rules = write_file(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: model\n    interval: 1s\n    rules:\n      - alert: ModelAccuracyCritical\n        expr: ml_model_r2_score < 0.7\n        labels: {severity: critical}\n        annotations: {description: 'R² is {{ $value }}'}\n",
    );
    let config = format!(
        "global:\n  external_labels: {{site: lab}}\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{port}']\n",
        rules.display()
    );
    let m = Mlmon::start(Some(&config));
    push_r2(&m, 0.65);
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        if let Some(a) = am_alerts(&am)
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "ModelAccuracyCritical")
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert in Alertmanager\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["pipeline"], "mathscore");
    assert_eq!(alert["labels"]["site"], "lab", "external labels: {alert}");
    assert_eq!(alert["annotations"]["description"], "R² is 0.65");

    // The model recovers: the resolution reaches Alertmanager well before
    // the firing alert's own endsAt (4 resend delays) would.
    push_r2(&m, 0.9);
    let deadline = Instant::now() + Duration::from_secs(20);
    while am_alerts(&am)
        .iter()
        .any(|a| a["labels"]["alertname"] == "ModelAccuracyCritical")
    {
        assert!(
            Instant::now() < deadline,
            "not resolved in Alertmanager\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
