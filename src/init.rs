//! `mlmon init [DIR]`: a commented starter configuration — `mlmon.yml`,
//! the ML pipeline rule file and an `alertmanager.yml` with an email and a
//! Slack receiver — which `mlmon check` refuses, saying what to fill in,
//! until the marked values are filled. Existing files are never
//! overwritten.

use std::path::{Path, PathBuf};

const MLMON_YML: &str = r#"# mlmon configuration. Every key is optional; `mlmon check` validates this
# file together with the rule files and the alertmanager.yml it names.
web:
  listen: 127.0.0.1:8001
  # The URL people open mlmon at, for links in notifications:
  # external_url: https://mlmon.example.org
storage:
  path: data
  retention: 15d
# The pipeline's artifacts directory (data_ingestion/, data_validation/,
# model_evaluation/evaluation_report.json, ...).
artifacts:
  dir: artifacts
  pipeline: default
rule_files:
  - rules/*.yml
# Where notifications go: Alertmanager's format, in its own file.
alertmanager:
  config_file: alertmanager.yml
# Scrape a model API's /metrics (prometheus.yml's format):
# scrape_configs:
#   - job_name: model-api
#     static_configs:
#       - targets: ['127.0.0.1:5000']
# Probe its health endpoint:
# probes:
#   - name: model-api
#     url: http://127.0.0.1:5000/api/health
"#;

const ALERTMANAGER_YML: &str = r#"# Notifications, in Alertmanager's format (Alertmanager loads this file
# too). Fill in every value marked FILL IN; `mlmon check` says what is
# still missing. Secrets stay out of this file: the SMTP password is read
# from secrets/smtp_password, the Slack URL may be read from a file with
# api_url_file.
global:
  smtp_smarthost: ''   # FILL IN: your mail server as host:port, e.g. smtp.example.org:587
  smtp_from: ''        # FILL IN: the sender address
  smtp_auth_username: ''   # your SMTP login, if the server needs one
  smtp_auth_password_file: secrets/smtp_password
  resolve_timeout: 5m

route:
  group_by: ['alertname', 'component']
  group_wait: 10s
  group_interval: 10s
  repeat_interval: 1h
  receiver: team
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall

receivers:
  - name: team
    email_configs:
      - to: ''         # FILL IN: where warnings go
  - name: oncall
    email_configs:
      - to: ''         # FILL IN: where critical alerts go
    slack_configs:
      # FILL IN: the Slack incoming-webhook URL (or api_url_file: a file holding it)
      - api_url: 'YOUR_SLACK_WEBHOOK_URL'
        channel: '#ml-alerts'
        send_resolved: true

# A critical alert silences the warning of the same alert and component.
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: ['alertname', 'component']
"#;

const RULES: &str = include_str!("../rules/ml_pipeline.yml");

/// Writes the starter files into `dir`; the paths written, or why not.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let files = [
        (dir.join("mlmon.yml"), MLMON_YML),
        (dir.join("alertmanager.yml"), ALERTMANAGER_YML),
        (dir.join("rules").join("ml_pipeline.yml"), RULES),
    ];
    let existing: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(format!(
            "not overwriting {}; remove them or choose another directory",
            existing.join(", ")
        ));
    }
    let mut written = Vec::new();
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path.clone());
    }
    Ok(written)
}
