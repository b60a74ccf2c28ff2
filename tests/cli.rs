//! The command line: `mlmon check` accepts a pasted prometheus.yml and its
//! rule files and rejects broken ones with file:line: reason; `version`;
//! SIGTERM stops the server cleanly with the head checkpointed.

mod common;

use std::process::Command;

use common::*;

fn mlmon(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RULES: &str = r#"groups:
  - name: ml_pipeline_alerts
    rules:
      - alert: ModelAccuracyDrop
        expr: ml_model_r2_score < 0.8
        for: 5m
        labels:
          severity: warning
        annotations:
          description: "Model R² score is {{ $value }}"
      - alert: HighCPUUsage
        expr: 100 - (avg by(instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) * 100) > 80
        for: 5m
"#;

const CONFIG: &str = r#"global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
  - "alert_rules.yml"
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['alertmanager:9093']
scrape_configs:
  - job_name: 'ml-pipeline'
    static_configs:
      - targets: ['host.docker.internal:8000']
"#;

#[test]
fn check_accepts_a_prometheus_config_and_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "alert_rules.yml", RULES);
    let cfg = write_file(dir.path(), "mlmon.yml", CONFIG);
    let (code, out, err) = mlmon(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 rule files, 2 rules"), "{out}");
    assert!(out.contains("1 scrape jobs, 1 targets"), "{out}");
    assert!(!out.contains("note:"), "nothing is ignored: {out}");
}

#[test]
fn check_rejects_broken_files_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "alert_rules.yml", &RULES.replace("< 0.8", "< "));
    let cfg = write_file(dir.path(), "mlmon.yml", CONFIG);
    let (code, _, err) = mlmon(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "alert_rules.yml:4: group \"ml_pipeline_alerts\": rule 1 (alert \"ModelAccuracyDrop\")"
        ),
        "{err}"
    );

    let cfg = write_file(
        dir.path(),
        "bad.yml",
        "global:\n  scrape_interval: 15s\n  scrape_intervall: 5s\n",
    );
    let (code, _, err) = mlmon(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yml:3: ") && err.contains("scrape_intervall"),
        "{err}"
    );

    let (code, _, err) = mlmon(&["check", "--config", "missing.yml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("missing.yml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = mlmon(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = mlmon(&["version"], dir.path());
    assert_eq!(
        (code, out.trim()),
        (0, format!("mlmon {}", env!("CARGO_PKG_VERSION")).as_str())
    );
}

#[test]
fn serve_refuses_a_bad_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "mlmon.yml", "web:\n  listen: nowhere\n");
    let (code, _, err) = mlmon(&["serve", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("mlmon.yml:2: web.listen"), "{err}");
}

#[test]
fn sigterm_checkpoints_and_exits_cleanly() {
    let mut m = Mlmon::start(None);
    let c = client();
    let r = c
        .put(m.url("/metrics/job/j"))
        .body("kept 1\n")
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let status = m.terminate();
    assert!(status.success(), "{status}: {}", m.log());
    assert!(m.log().contains("Stopped cleanly"), "{}", m.log());
    let m = m.restart();
    let v = json(&c, &m.url("/api/v1/query?query=kept"));
    assert_eq!(v["data"]["result"][0]["value"][1], "1");
    assert!(
        !m.log().contains("Replayed"),
        "a clean stop leaves no WAL to replay: {}",
        m.log()
    );
}

#[test]
fn init_writes_a_starter_that_check_refuses_until_filled() {
    if !common::have(&["amtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = mlmon(&["init", "site"], dir.path());
    assert_eq!(code, 0, "{out}");
    let site = dir.path().join("site");
    for f in ["mlmon.yml", "alertmanager.yml", "rules/ml_pipeline.yml"] {
        assert!(site.join(f).exists(), "{f} not written");
    }
    // Never overwrites.
    let (code, _, err) = mlmon(&["init", "site"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("not overwriting"), "{err}");

    let (code, _, err) = mlmon(&["check", "--config", "site/mlmon.yml"], dir.path());
    assert_ne!(code, 0);
    for wanted in [
        "alertmanager.yml:26: receivers[0].email_configs[0]: missing to address",
        "no global SMTP smarthost set (set global.smtp_smarthost",
        "receivers[1].slack_configs[0].api_url: \"YOUR_SLACK_WEBHOOK_URL\" looks like a placeholder",
    ] {
        assert!(err.contains(wanted), "{wanted:?} not in\n{err}");
    }

    let am = site.join("alertmanager.yml");
    let filled = std::fs::read_to_string(&am)
        .unwrap()
        .replace(
            "smtp_smarthost: ''",
            "smtp_smarthost: 'smtp.example.org:587'",
        )
        .replace("smtp_from: ''", "smtp_from: 'mlmon@example.org'")
        .replace(
            "to: ''         # FILL IN: where warnings go",
            "to: 'team@example.org'",
        )
        .replace(
            "to: ''         # FILL IN: where critical alerts go",
            "to: 'oncall@example.org'",
        )
        .replace(
            "YOUR_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        );
    std::fs::write(&am, filled).unwrap();
    let (code, out, err) = mlmon(&["check", "--config", "site/mlmon.yml"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("notifier: 2 receivers (2 email, 1 slack, 0 webhook)"),
        "{out}"
    );
    // Alertmanager itself accepts the filled file.
    let ok = Command::new(require("amtool"))
        .arg("check-config")
        .arg(&am)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

/// `host.interval: 0` and `artifacts.interval: 0` switch those collectors
/// off: no host series, no collector runs; a negative interval is an error.
#[test]
fn collectors_can_be_switched_off() {
    let m = common::Mlmon::start(Some("host: {interval: 0}\nartifacts: {interval: 0}\n"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(m.query("node_load1").is_empty(), "the host collector ran");
    let metrics = common::client()
        .get(m.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!metrics.contains("collector=\"host\""), "{metrics}");
    assert!(!metrics.contains("collector=\"artifacts\""));
    let dir = tempfile::tempdir().unwrap();
    let p = common::write_file(dir.path(), "mlmon.yml", "host:\n  interval: -1s\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("mlmon.yml:2") && text.contains("host"),
        "{text}"
    );
}
