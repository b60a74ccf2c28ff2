//! `mlmon check` on Alertmanager configurations makes the decisions
//! `amtool check-config` (Debian `prometheus-alertmanager`, 0.25) makes,
//! file by file, and names file, line and field when it refuses; its one
//! documented extension (`subject`/`body` under `email_configs`) is
//! accepted with a note where amtool refuses.

mod common;

use std::path::Path;
use std::process::Command;

use common::{require, write_file};

const ORIGINAL: &str = include_str!("fixtures/alertmanager/original.yml");

const ROUTE: &str = "route:\n  receiver: a\nreceivers:\n  - name: a\n";

/// `(name, accepted by both, yaml)`.
fn cases() -> Vec<(&'static str, bool, String)> {
    let r = |s: &str| s.to_string();
    vec![
        ("minimal", true, r(ROUTE)),
        (
            "full",
            true,
            r(r#"global:
  resolve_timeout: 2m
  smtp_smarthost: 'smtp.example.org:587'
  smtp_from: 'alerts@example.org'
  smtp_auth_username: 'alerts'
  smtp_auth_password_file: '/run/secrets/smtp'
  smtp_require_tls: true
  slack_api_url: 'https://hooks.slack.com/services/T/B/X'
templates: ['ok*.tmpl']
route:
  receiver: team
  group_by: ['alertname', 'component']
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"', 'component=~"model|pipeline"']
      receiver: oncall
      continue: true
      routes:
        - match_re: {instance: 'db-.*'}
          receiver: team
          group_by: ['...']
    - match: {severity: warning}
      receiver: team
      mute_time_intervals: [nights]
receivers:
  - name: team
    email_configs:
      - to: 'team@example.org, lead@example.org'
        headers: {Subject: 'x', Reply-To: 'ops@example.org'}
        html: '{{ template "email.default.html" . }}'
        text: 'plain'
        send_resolved: true
        tls_config: {insecure_skip_verify: true}
  - name: oncall
    slack_configs:
      - channel: '#oncall'
        fields:
          - {title: Severity, value: '{{ .CommonLabels.severity }}', short: true}
        actions:
          - {type: button, text: Runbook, url: 'https://runbooks/x'}
    webhook_configs:
      - url: 'http://127.0.0.1:5001/hook'
        max_alerts: 10
        http_config:
          basic_auth: {username: u, password: p}
    pagerduty_configs:
      - routing_key: abc
time_intervals:
  - name: nights
    time_intervals:
      - times: [{start_time: '22:00', end_time: '24:00'}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: ['alertname']
  - source_match: {severity: critical}
    target_match_re: {severity: 'info|warning'}
"#),
        ),
        ("no route", false, r("receivers:\n  - name: a\n")),
        ("empty", false, r("")),
        ("root without receiver", false, r("route:\n  group_wait: 1s\nreceivers:\n  - name: a\n")),
        ("undefined receiver", false, r("route:\n  receiver: b\nreceivers:\n  - name: a\n")),
        (
            "undefined receiver in a child",
            false,
            r("route:\n  receiver: a\n  routes:\n    - receiver: nope\nreceivers:\n  - name: a\n"),
        ),
        ("duplicate receiver", false, r("route:\n  receiver: a\nreceivers:\n  - name: a\n  - name: a\n")),
        ("receiver without name", false, r("route:\n  receiver: a\nreceivers:\n  - name: a\n  - webhook_configs: []\n")),
        ("continue on root", false, r("route:\n  receiver: a\n  continue: true\nreceivers:\n  - name: a\n")),
        ("matchers on root", false, r("route:\n  receiver: a\n  match: {x: y}\nreceivers:\n  - name: a\n")),
        ("unknown field", false, r("route:\n  receiver: a\n  group_wiat: 1s\nreceivers:\n  - name: a\n")),
        ("bad duration", false, r("route:\n  receiver: a\n  group_wait: soon\nreceivers:\n  - name: a\n")),
        ("zero group_interval", false, r("route:\n  receiver: a\n  group_interval: 0s\nreceivers:\n  - name: a\n")),
        ("zero repeat_interval", false, r("route:\n  receiver: a\n  repeat_interval: 0s\nreceivers:\n  - name: a\n")),
        ("duplicate group_by", false, r("route:\n  receiver: a\n  group_by: [x, x]\nreceivers:\n  - name: a\n")),
        ("wildcard and labels", false, r("route:\n  receiver: a\n  group_by: ['...', x]\nreceivers:\n  - name: a\n")),
        ("bad group_by label", false, r("route:\n  receiver: a\n  group_by: ['a-b']\nreceivers:\n  - name: a\n")),
        (
            "bad matcher",
            false,
            r("route:\n  receiver: a\n  routes:\n    - matchers: ['severity=~\"(\"']\n      receiver: a\nreceivers:\n  - name: a\n"),
        ),
        (
            "bad match_re",
            false,
            r("route:\n  receiver: a\n  routes:\n    - match_re: {x: '('}\n      receiver: a\nreceivers:\n  - name: a\n"),
        ),
        (
            "bad label in match",
            false,
            r("route:\n  receiver: a\n  routes:\n    - match: {'a-b': x}\n      receiver: a\nreceivers:\n  - name: a\n"),
        ),
        (
            "undefined time interval",
            false,
            r("route:\n  receiver: a\n  routes:\n    - receiver: a\n      mute_time_intervals: [never]\nreceivers:\n  - name: a\n"),
        ),
        (
            "email without to",
            false,
            r("global:\n  smtp_smarthost: 'h:25'\n  smtp_from: 'a@b'\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - send_resolved: true\n"),
        ),
        (
            "email without smarthost",
            false,
            r("global:\n  smtp_from: 'a@b'\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - to: x@y\n"),
        ),
        (
            "email without from",
            false,
            r("global:\n  smtp_smarthost: 'h:25'\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - to: x@y\n"),
        ),
        (
            "smarthost without port",
            false,
            r("global:\n  smtp_smarthost: 'h'\n  smtp_from: 'a@b'\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - to: x@y\n"),
        ),
        (
            "duplicate header",
            false,
            r("global:\n  smtp_smarthost: 'h:25'\n  smtp_from: 'a@b'\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - to: x@y\n        headers: {subject: a, Subject: b}\n"),
        ),
        (
            "slack without url",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    slack_configs:\n      - channel: '#x'\n"),
        ),
        (
            "slack url and url file",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    slack_configs:\n      - api_url: 'https://h/x'\n        api_url_file: f\n"),
        ),
        (
            "slack field without value",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    slack_configs:\n      - api_url: 'https://h/x'\n        fields: [{title: t}]\n"),
        ),
        (
            "webhook without url",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - send_resolved: true\n"),
        ),
        (
            "webhook bad scheme",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: 'ftp://h/x'\n"),
        ),
        (
            "webhook without host",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: 'http:///x'\n"),
        ),
        (
            "inhibit bad matcher",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\ninhibit_rules:\n  - source_matchers: ['a']\n"),
        ),
        (
            "two auth methods",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: 'http://h/x'\n        http_config:\n          basic_auth: {username: u}\n          bearer_token: t\n"),
        ),
        (
            "bad time interval",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\ntime_intervals:\n  - name: x\n    time_intervals:\n      - weekdays: ['funday']\n"),
        ),
        (
            "bad time range",
            false,
            r("route:\n  receiver: a\nreceivers:\n  - name: a\ntime_intervals:\n  - name: x\n    time_intervals:\n      - times: [{start_time: '10:00', end_time: '09:00'}]\n"),
        ),
        (
            "time intervals",
            true,
            r("route:\n  receiver: a\n  routes:\n    - receiver: a\n      active_time_intervals: [work]\nreceivers:\n  - name: a\ntime_intervals:\n  - name: work\n    time_intervals:\n      - times: [{start_time: '09:00', end_time: '17:00'}]\n        weekdays: ['monday:friday']\n        days_of_month: ['1:-1', 3]\n        months: ['january:march', '12']\n        years: ['2024:2030']\n        location: 'Europe/Berlin'\n"),
        ),
        ("broken template file", false, r("templates: ['broken.tmpl']\nroute:\n  receiver: a\nreceivers:\n  - name: a\n")),
    ]
}

fn amtool_accepts(path: &Path) -> bool {
    Command::new(require("amtool"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

/// `mlmon check --as KIND FILE`.
fn mlmon_check_as(kind: &str, path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(["check", "--as", kind])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `mlmon check FILE`, which tells an alertmanager.yml by its keys.
fn mlmon_check_detected(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn mlmon_check_decides_as_amtool_check_config() {
    if !common::have(&["amtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "ok.tmpl",
        "{{ define \"x\" }}{{ .Status }}{{ end }}",
    );
    write_file(dir.path(), "broken.tmpl", "{{ define \"x\" }}{{ .Status }}");
    let mut disagreements = Vec::new();
    for (name, accepted, yaml) in cases() {
        let path = write_file(
            dir.path(),
            &format!("{}.yml", name.replace(' ', "_")),
            &yaml,
        );
        let am = amtool_accepts(&path);
        let (ml, stdout, stderr) = mlmon_check_as("alertmanager", &path);
        assert_eq!(am, accepted, "amtool on {name:?}: the expectation is wrong");
        if ml != am {
            disagreements.push(format!("{name}: amtool {am}, mlmon {ml}\n{stdout}{stderr}"));
        }
        if !ml && !yaml.is_empty() && name != "no route" {
            // Refusals name the file and a line.
            let first = stderr.lines().next().unwrap_or("");
            let prefix = format!("{}:", path.display());
            assert!(
                first.starts_with(&prefix)
                    && first[prefix.len()..]
                        .split(':')
                        .next()
                        .unwrap()
                        .parse::<usize>()
                        .is_ok(),
                "{name}: no file:line in {stderr:?}"
            );
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn the_original_file_is_refused_for_its_placeholder_and_loads_once_filled() {
    if !common::have(&["amtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let original = write_file(dir.path(), "alertmanager.yml", ORIGINAL);
    assert!(!amtool_accepts(&original));
    let (ok, _, stderr) = mlmon_check_detected(&original);
    assert!(!ok);
    let first = stderr.lines().next().unwrap();
    let expected = format!(
        "{}:44: receivers[1].slack_configs[0].api_url: ",
        original.display()
    );
    assert!(first.starts_with(&expected), "{first}");
    assert!(first.contains("looks like a placeholder"), "{first}");
    assert!(first.contains("YOUR_SLACK_WEBHOOK_URL"), "{first}");

    // With a real URL, amtool still refuses `subject` and `body`; mlmon
    // accepts them as its documented extension and says so.
    let filled = write_file(
        dir.path(),
        "filled.yml",
        &ORIGINAL.replace(
            "YOUR_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        ),
    );
    assert!(!amtool_accepts(&filled));
    let (ok, stdout, stderr) = mlmon_check_detected(&filled);
    assert!(ok, "{stderr}");
    let notes: Vec<&str> = stdout.lines().filter(|l| l.contains("note:")).collect();
    assert_eq!(notes.len(), 4, "{stdout}");
    assert!(
        notes[0].starts_with(&format!(
            "{}:30: note: receivers[1].email_configs[0].subject",
            filled.display()
        )),
        "{}",
        notes[0]
    );
    assert!(
        stdout.contains("3 receivers (2 email, 1 slack, 1 webhook), 1 inhibit rules"),
        "{stdout}"
    );
    // Without the extension keys, both accept it.
    let plain: String = ORIGINAL
        .replace(
            "YOUR_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        )
        .lines()
        .filter(|l| !l.trim_start().starts_with("subject:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("        body: |", "        text: |");
    let plain = write_file(dir.path(), "plain.yml", &plain);
    assert!(amtool_accepts(&plain));
    assert!(mlmon_check_detected(&plain).0);
}

#[test]
fn inline_sections_report_lines_of_mlmon_yml() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "mlmon.yml",
        "rule_files: []\nalertmanager:\n  route:\n    receiver: a\n  receivers:\n    - name: a\n      webhook_configs:\n        - url: 'CHANGE_ME'\n",
    );
    let (ok, _, stderr) = mlmon_check_as("mlmon", &cfg);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!(
            "{}:8: receivers[0].webhook_configs[0].url: ",
            cfg.display()
        )),
        "{stderr}"
    );
}
