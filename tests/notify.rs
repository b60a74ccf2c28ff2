//! The notifier end to end, with real parts: a real SMTP server (aiosmtpd,
//! STARTTLS and AUTH required), local HTTP servers playing Slack and a
//! webhook receiver, the original stack's alertmanager.yml; then the
//! faults: SMTP down then back, Slack answering 500, a restart during
//! group_wait, a receiver that hangs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, write_file, HttpSink, Mlmon, Proc};
use serde_json::{json, Value};

const SMTP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_server.py");
const SMTP_USER: &str = "your-email@gmail.com";
const SMTP_PASSWORD: &str = "your-app-password";

struct Smtp {
    _proc: Proc,
    out: PathBuf,
}

impl Smtp {
    fn start(port: u16, cert: &Path, key: &Path, out: &Path) -> Smtp {
        std::fs::create_dir_all(out).unwrap();
        let mut child = Command::new("python3")
            .arg(SMTP_SCRIPT)
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(out)
            .arg(SMTP_USER)
            .arg(SMTP_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP server did not start (is aiosmtpd installed?)"
        );
        Smtp {
            _proc: Proc(child),
            out: out.to_path_buf(),
        }
    }

    fn messages(out: &Path) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(out)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn wait(out: &Path, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let m = Smtp::messages(out);
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The original stack's alertmanager.yml as written (with `subject` and
/// `body`; `tests/fixtures/alertmanager/original.yml`), pointed at the local
/// servers, with `timers` for its group timers; the email configs name the
/// test CA, since the SMTP server's certificate is the test's own.
fn original_config(smtp_port: u16, ca: &Path, slack: &str, webhook: &str, timers: &str) -> String {
    let tls = format!(
        "        tls_config:\n          ca_file: '{}'\n",
        ca.display()
    );
    let text = include_str!("fixtures/alertmanager/original.yml")
        .replace("'localhost:587'", &format!("'localhost:{smtp_port}'"))
        .replace("YOUR_SLACK_WEBHOOK_URL", slack)
        .replace("http://localhost:5001/alerts", webhook)
        .replace(
            "  group_wait: 10s\n  group_interval: 10s\n  repeat_interval: 1h\n",
            &format!("{timers}\n"),
        )
        .replace(
            "          Priority: 'high'\n",
            &format!("          Priority: 'high'\n{tls}"),
        )
        .replace("\ninhibit_rules:", &format!("{tls}\ninhibit_rules:"));
    assert_eq!(
        text.matches("ca_file").count(),
        2,
        "the fixture changed:\n{text}"
    );
    text
}

/// One route to one webhook receiver, with `route` (indented route keys,
/// each line ending in a newline) added to the route.
fn hook_config(url: &str, route: &str) -> String {
    format!("route:\n  receiver: hook\n{route}receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{url}'\n")
}

const FAST: &str = "  group_wait: 1s\n  group_interval: 10s\n  repeat_interval: 1h";

fn start_mlmon(dir: &Path, am: &str, extra: &str) -> Mlmon {
    let path = write_file(dir, "alertmanager.yml", am);
    Mlmon::start(Some(&format!("alertmanager: {}\n{extra}", path.display())))
}

/// [`start_mlmon`] with the rule file `rules` loaded.
fn start_with_rules(dir: &Path, am: &str, rules: &str, extra: &str) -> Mlmon {
    let path = write_file(dir, "rules.yml", rules);
    start_mlmon(
        dir,
        am,
        &format!("rule_files: ['{}']\n{extra}", path.display()),
    )
}

fn post_alerts(m: &Mlmon, alerts: Value) {
    let r = client()
        .post(m.url("/api/v2/alerts"))
        .json(&alerts)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
}

fn alert(name: &str, severity: &str, component: &str) -> Value {
    json!({
        "labels": {"alertname": name, "severity": severity, "component": component, "pipeline": "mathscore"},
        "annotations": {
            "summary": format!("{name} for the math-score model"),
            "description": "Model R² score is 0.65, below 0.7",
        },
    })
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[test]
fn the_original_stack_notifies_by_email_slack_and_webhook_with_inhibition() {
    if !common::have(&["openssl", "python3:aiosmtpd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(dir.path(), "DNS:localhost");
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port, &cert, &key, &dir.path().join("mail"));
    let (slack, webhook) = (HttpSink::start(&[], false), HttpSink::start(&[], false));
    let am = original_config(
        smtp_port,
        &ca,
        &slack.url("/services/T0/B0/X"),
        &webhook.url("/alerts"),
        "  group_wait: 10s\n  group_interval: 10s\n  repeat_interval: 1h",
    );
    let m = start_mlmon(dir.path(), &am, "");
    // The same alert name and component at critical and warning: the
    // inhibit rule silences the warning. An info alert goes to the root.
    post_alerts(
        &m,
        json!([
            alert("ModelAccuracyLow", "critical", "model"),
            alert("ModelAccuracyLow", "warning", "model"),
            alert("DataIngestionFailure", "info", "ingestion"),
        ]),
    );
    let alerts = m.json("/api/v2/alerts");
    let warning = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["severity"] == "warning")
        .unwrap();
    assert_eq!(warning["status"]["state"], "suppressed");
    assert_eq!(
        warning["status"]["inhibitedBy"].as_array().unwrap().len(),
        1
    );

    // group_wait is 10 s.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        Smtp::messages(&smtp.out).is_empty(),
        "sent before group_wait"
    );
    let mail = Smtp::wait(&smtp.out, 1, Duration::from_secs(20));
    assert_eq!(mail.len(), 1, "{}", m.log());
    let msg = &mail[0];
    assert_eq!(msg["to"], json!(["admin@yourcompany.com"]));
    assert_eq!(msg["from"], "ml-pipeline@yourcompany.com");
    assert_eq!(msg["tls"], true, "STARTTLS");
    assert_eq!(msg["authenticated"], true, "AUTH");
    let data = msg["data"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(
        header(&data, "Subject"),
        Some("CRITICAL: ML Pipeline Alert - ModelAccuracyLow")
    );
    assert_eq!(header(&data, "Priority"), Some("high"));
    for line in [
        "Alert: ModelAccuracyLow",
        "Severity: critical",
        "Component: model",
        "Summary: ModelAccuracyLow for the math-score model",
    ] {
        assert!(data.contains(line), "{line:?} missing from\n{data}");
    }

    let posts = slack.wait_accepted(1, Duration::from_secs(5));
    assert_eq!(posts.len(), 1);
    let s = &posts[0];
    assert_eq!(s["channel"], "#ml-alerts");
    let att = &s["attachments"][0];
    assert_eq!(att["title"], "CRITICAL ML Pipeline Alert");
    assert_eq!(att["color"], "danger");
    let text = att["text"].as_str().unwrap();
    assert!(text.contains("*Alert:* ModelAccuracyLow"), "{text}");
    assert!(text.contains("*Component:* model"), "{text}");
    assert!(
        text.contains("*Summary:* ModelAccuracyLow for the math-score model"),
        "{text}"
    );

    let hooks = webhook.wait_accepted(1, Duration::from_secs(5));
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h["version"], "4");
    assert_eq!(h["receiver"], "web.hook");
    assert_eq!(h["status"], "firing");
    assert_eq!(
        h["groupKey"],
        r#"{}:{alertname="DataIngestionFailure", component="ingestion"}"#
    );
    assert_eq!(
        h["alerts"][0]["labels"]["alertname"],
        "DataIngestionFailure"
    );
    assert_eq!(h["alerts"][0]["status"], "firing");
    assert_eq!(h["truncatedAlerts"], 0);

    // The warning never went out, and the history says what happened.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        Smtp::messages(&smtp.out).len(),
        1,
        "the inhibited warning was mailed"
    );
    let history = m.json("/api/v1/alerts/history?kind=notification");
    let sent: Vec<String> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["receiver"], e["integration"], e["outcome"]))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|s| s.ends_with("\"sent\"")), "{sent:?}");
    let metrics = m.text("/metrics");
    assert!(
        metrics.contains("mlmon_notifications_total{integration=\"email\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("notification"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Resolving the info alert reaches the webhook (send_resolved: true).
    let mut resolved = alert("DataIngestionFailure", "info", "ingestion");
    resolved["endsAt"] = json!(mlmon::model::rfc3339(mlmon::model::now_ms()));
    post_alerts(&m, json!([resolved]));
    let hooks = webhook.wait_accepted(2, Duration::from_secs(15));
    assert_eq!(hooks.len(), 2, "{}", m.log());
    assert_eq!(hooks[1]["status"], "resolved");
}

#[test]
fn smtp_down_then_back_delivers_once() {
    if !common::have(&["openssl", "python3:aiosmtpd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(dir.path(), "DNS:localhost");
    let smtp_port = free_port();
    let (slack, webhook) = (HttpSink::start(&[], false), HttpSink::start(&[], false));
    let am = original_config(smtp_port, &ca, &slack.url("/s"), &webhook.url("/w"), FAST);
    let m = start_mlmon(dir.path(), &am, "");
    post_alerts(
        &m,
        json!([alert("PipelineFailure", "critical", "pipeline")]),
    );
    // Nothing listens for 3 s: attempts fail and are retried.
    std::thread::sleep(Duration::from_secs(3));
    let out = dir.path().join("mail");
    let _smtp = Smtp::start(smtp_port, &cert, &key, &out);
    let mail = Smtp::wait(&out, 1, Duration::from_secs(20));
    assert_eq!(mail.len(), 1, "{}", m.log());
    // ... and only once, though the group is flushed again meanwhile.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(Smtp::messages(&out).len(), 1);
    let history = m.json("/api/v1/alerts/history?kind=notification");
    let outcomes: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.first(), Some(&"sent"), "{outcomes:?}");
    assert!(
        outcomes.contains(&"retried"),
        "failed attempts are in the history: {outcomes:?}"
    );
    let failed = m.text("/metrics");
    assert!(
        failed.lines().any(|l| l
            .starts_with("mlmon_notifications_failed_total{integration=\"email\"}")
            && !l.ends_with(" 0")),
        "failed attempts are counted"
    );
}

#[test]
fn slack_answering_500_then_200_gets_exactly_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let slack = HttpSink::start(&[500, 429], false);
    let webhook = HttpSink::start(&[], false);
    let am = format!(
        "route:\n  receiver: slack\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 20s\nreceivers:\n  - name: slack\n    slack_configs:\n      - api_url: '{}'\n        channel: '#ml-alerts'\n        send_resolved: true\n  - name: unused\n    webhook_configs:\n      - url: '{}'\n",
        slack.url("/services/T/B/X"),
        webhook.url("/w")
    );
    let m = start_mlmon(dir.path(), &am, "");
    post_alerts(
        &m,
        json!([alert("HighCPUUsage", "warning", "infrastructure")]),
    );
    let accepted = slack.wait_accepted(1, Duration::from_secs(15));
    assert_eq!(accepted.len(), 1, "{}", m.log());
    std::thread::sleep(Duration::from_secs(3));
    let all = slack.requests();
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [500, 429, 200],
        "one message after a 500 and a 429"
    );
    assert!(
        all[2].at.duration_since(all[1].at) >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    // Default Slack message when the config gives no title or text.
    let att = &accepted[0]["attachments"][0];
    assert_eq!(
        att["title"],
        "[FIRING:1] HighCPUUsage (infrastructure mathscore warning)"
    );
    assert!(att["text"]
        .as_str()
        .unwrap()
        .contains("HighCPUUsage for the math-score model"));
    assert_eq!(accepted[0]["username"], "mlmon");
}

#[test]
fn a_restart_during_group_wait_notifies_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = HttpSink::start(&[], false);
    let am = hook_config(
        &webhook.url("/alerts"),
        "  group_wait: 4s\n  group_interval: 5s\n  repeat_interval: 1h\n",
    );
    let mut m = start_mlmon(dir.path(), &am, "");
    post_alerts(
        &m,
        json!([alert("PipelineFailure", "critical", "pipeline")]),
    );
    std::thread::sleep(Duration::from_secs(1));
    m.kill();
    assert!(webhook.requests().is_empty());
    let m = m.restart();
    let got = webhook.wait_accepted(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", m.log());
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(webhook.requests().len(), 1, "sent again after the restart");
    // A second restart after the notification does not resend it.
    let m = m.restart();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(webhook.requests().len(), 1, "{}", m.log());
}

#[test]
fn a_hanging_receiver_never_blocks_rule_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let hang = HttpSink::start(&[], true);
    let am = hook_config(
        &hang.url("/alerts"),
        "  group_wait: 0s\n  group_interval: 30s\n",
    );
    let m = start_with_rules(
        dir.path(),
        &am,
        "groups:\n  - name: always\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels:\n          severity: info\n",
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while hang.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notification attempt\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let evals = |m: &Mlmon| {
        m.json("/api/v1/rules")["data"]["groups"][0]["lastEvaluation"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = evals(&m);
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(
        evals(&m),
        first,
        "rule evaluation stopped while the receiver hangs"
    );
    // The API keeps answering too.
    post_alerts(&m, json!([alert("Other", "info", "x")]));
    assert!(m.json("/api/v2/alerts").as_array().unwrap().len() >= 2);
}

#[test]
fn rule_alerts_flow_through_the_notifier_with_rendered_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = HttpSink::start(&[], false);
    let am = hook_config(
        &webhook.url("/alerts"),
        "  group_by: ['alertname']\n  group_wait: 1s\n  group_interval: 2s\n",
    );
    let m = start_with_rules(
        dir.path(),
        &am,
        "groups:\n  - name: ml\n    interval: 1s\n    rules:\n      - alert: ModelAccuracyCritical\n        expr: ml_model_r2_score < 0.7\n        labels:\n          severity: critical\n          component: model\n        annotations:\n          description: 'Model R² score is {{ $value }}'\n",
        "push:\n  interval: 1s\n",
    );
    m.push("ml", "ml_model_r2_score{pipeline=\"mathscore\"} 0.65\n");
    let got = webhook.wait_accepted(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{}", m.log());
    let a = &got[0]["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "ModelAccuracyCritical");
    assert_eq!(a["annotations"]["description"], "Model R² score is 0.65");
    assert!(a["generatorURL"]
        .as_str()
        .unwrap()
        .contains("/graph?g0.expr="));
    // The model recovers: the resolved notification carries the value at
    // resolution, not the last firing one.
    m.push("ml", "ml_model_r2_score{pipeline=\"mathscore\"} 0.86\n");
    let got = webhook.wait_accepted(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{}", m.log());
    assert_eq!(got[1]["status"], "resolved");
    assert_eq!(
        got[1]["alerts"][0]["annotations"]["description"],
        "Model R² score is 0.86"
    );
    // The history has both state changes and both notifications.
    let h = m.json("/api/v1/alerts/history?alertname=ModelAccuracyCritical");
    let kinds: Vec<&str> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["notification", "resolved", "notification", "firing"]
    );
    let bad = client()
        .get(m.url("/api/v1/alerts/history?kind=nope"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[test]
fn without_receivers_notifications_go_to_the_log_and_the_recent_list() {
    let m = Mlmon::start(None);
    post_alerts(&m, json!([alert("ModelAccuracyLow", "critical", "model")]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let recent = loop {
        let r = m.json("/api/v1/notifications")["data"].clone();
        if !r.as_array().unwrap().is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "nothing logged\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let n = &recent[0];
    assert_eq!(n["receiver"], "log");
    assert_eq!(n["outcome"], "logged");
    assert_eq!(
        n["subject"],
        "[FIRING:1] ModelAccuracyLow model (mathscore critical)"
    );
    assert!(n["body"]
        .as_str()
        .unwrap()
        .contains("alertname = ModelAccuracyLow"));
    assert!(m.log().contains("ModelAccuracyLow"), "{}", m.log());
    // The preview renders the current alerts for the default receiver.
    let p: Value = client()
        .post(m.url("/api/v1/templates/preview"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(p["data"]["receiver"], "log");
    assert_eq!(
        p["data"]["integrations"][0]["subject"],
        "[FIRING:1] ModelAccuracyLow model (mathscore critical)"
    );
}

#[test]
fn receivers_can_be_tested_and_their_templates_previewed() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook) = (HttpSink::start(&[], false), HttpSink::start(&[], false));
    let am = format!(
        "route:\n  receiver: team\n  group_by: [alertname]\nreceivers:\n  - name: team\n    slack_configs:\n      - api_url: '{}'\n        channel: '#ml'\n        title: '{{{{ .CommonLabels.alertname }}}}: {{{{ .Alerts.Firing | len }}}} firing'\n        fields:\n          - title: Severity\n            value: '{{{{ .CommonLabels.severity | toUpper }}}}'\n            short: true\n    webhook_configs:\n      - url: '{}'\n        max_alerts: 1\n",
        slack.url("/s"),
        hook.url("/h")
    );
    let m = start_mlmon(dir.path(), &am, "");
    let r: Value = client()
        .post(m.url("/api/v1/receivers/team/test"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let results = r["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{r}");
    assert!(results.iter().all(|x| x["outcome"] == "sent"), "{r}");
    assert_eq!(
        slack.accepted()[0]["attachments"][0]["title"],
        "TestNotification: 1 firing"
    );
    assert_eq!(
        hook.accepted()[0]["alerts"][0]["labels"]["alertname"],
        "TestNotification"
    );

    let p: Value = client()
        .post(m.url("/api/v1/templates/preview"))
        .json(&json!({
            "receiver": "team",
            "alerts": [
                alert("DataDrift", "warning", "data"),
                {"labels": {"alertname": "DataDrift", "severity": "warning", "component": "api"}},
                {"labels": {"alertname": "DataDrift", "severity": "warning", "component": "x"}},
            ],
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let integrations = p["data"]["integrations"].as_array().unwrap();
    let slack_body = &integrations[0]["body"];
    assert_eq!(slack_body["attachments"][0]["title"], "DataDrift: 3 firing");
    assert_eq!(
        slack_body["attachments"][0]["fields"],
        json!([{"title": "Severity", "value": "WARNING", "short": true}])
    );
    let hook_body = &integrations[1]["body"];
    assert_eq!(hook_body["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(hook_body["truncatedAlerts"], 2);
    // Nothing was sent by the preview.
    assert_eq!(slack.requests().len(), 1);
    let missing = client()
        .post(m.url("/api/v1/receivers/nope/test"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = client()
        .post(m.url("/api/v1/templates/preview"))
        .body("{\"receiver\": \"team\", \"alerts\": [{\"labels\": {}}]}")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[test]
fn default_email_has_alertmanagers_subject_an_html_body_and_every_recipient() {
    if !common::have(&["openssl", "python3:aiosmtpd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(dir.path(), "DNS:localhost");
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port, &cert, &key, &dir.path().join("mail"));
    let secret = write_file(dir.path(), "smtp_password", &format!("{SMTP_PASSWORD}\n"));
    let am = format!(
        "global:\n  smtp_smarthost: 'localhost:{smtp_port}'\n  smtp_from: 'mlmon@example.org'\n  smtp_auth_username: '{SMTP_USER}'\n  smtp_auth_password_file: '{}'\nroute:\n  receiver: mail\n  group_by: [alertname]\n  group_wait: 1s\nreceivers:\n  - name: mail\n    email_configs:\n      - to: 'ops@example.org, ml@example.org'\n        tls_config:\n          ca_file: '{}'\n",
        secret.display(),
        ca.display()
    );
    let m = start_mlmon(dir.path(), &am, "");
    post_alerts(
        &m,
        json!([
            alert("HighMemoryUsage", "warning", "infrastructure"),
            {"labels": {"alertname": "HighMemoryUsage", "severity": "warning", "component": "api"},
             "annotations": {"summary": "Memory above 90% on the API host"}},
        ]),
    );
    let mail = Smtp::wait(&smtp.out, 1, Duration::from_secs(15));
    assert_eq!(mail.len(), 1, "{}", m.log());
    assert_eq!(mail[0]["to"], json!(["ops@example.org", "ml@example.org"]));
    let data = mail[0]["data"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(
        header(&data, "Subject"),
        Some("[FIRING:2] HighMemoryUsage (warning)")
    );
    assert!(data.contains("Content-Type: text/html"), "{data}");
    let html = decode_quoted_printable(&data);
    assert!(html.contains("[2] Firing"), "{html}");
    assert!(html.contains("Memory above 90% on the API host"), "{html}");
}

/// The body of a quoted-printable part, decoded enough to search it.
fn decode_quoted_printable(s: &str) -> String {
    let joined = s.replace("=\n", "");
    let mut out = Vec::new();
    let b = joined.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_notifier_configuration_reloads_on_request_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (HttpSink::start(&[], false), HttpSink::start(&[], false));
    let m = start_mlmon(
        dir.path(),
        &hook_config(&a.url("/a"), "  group_wait: 0s\n"),
        "",
    );
    let am = dir.path().join("alertmanager.yml");
    post_alerts(&m, json!([alert("First", "info", "x")]));
    assert_eq!(a.wait_accepted(1, Duration::from_secs(10)).len(), 1);

    // A broken file is refused with its reason; the running one stays.
    std::fs::write(
        &am,
        "route:\n  receiver: nobody\nreceivers:\n  - name: hook\n",
    )
    .unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().unwrap();
    assert!(
        text.contains("alertmanager.yml:2: route.receiver: undefined receiver \"nobody\""),
        "{text}"
    );
    assert_eq!(m.json("/api/v2/receivers"), json!([{"name": "hook"}]));

    // A good one takes effect; what was sent is not sent again.
    std::fs::write(
        &am,
        format!(
            "route:\n  receiver: other\n  group_by: [alertname]\n  group_wait: 0s\nreceivers:\n  - name: other\n    webhook_configs:\n      - url: '{}'\n",
            b.url("/b")
        ),
    )
    .unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    post_alerts(&m, json!([alert("Second", "info", "x")]));
    let got = b.wait_accepted(2, Duration::from_secs(10));
    let names: Vec<&str> = got
        .iter()
        .map(|g| g["alerts"][0]["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Second"), "{names:?}");
    assert_eq!(a.requests().len(), 1);

    // SIGHUP does the same.
    std::fs::write(
        &am,
        "route:\n  receiver: third\nreceivers:\n  - name: third\n",
    )
    .unwrap();
    m.hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.json("/api/v2/receivers") != json!([{"name": "third"}]) {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Telegram in Alertmanager 0.25's format (`telegram_configs`), against a
/// local sink standing for the Bot API: `sendMessage` under the bot's
/// token, the chat, HTML mode with the alert's data escaped, the default
/// message; resolved alerts too (its default `send_resolved: true`).
#[test]
fn telegram_gets_the_default_message_in_html_mode() {
    let dir = tempfile::tempdir().unwrap();
    let telegram = HttpSink::start(&[], false);
    let token_file = write_file(dir.path(), "token", "123:secret-token\n");
    let am = format!(
        "route:\n  receiver: tg\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\nreceivers:\n  - name: tg\n    telegram_configs:\n      - api_url: '{}'\n        bot_token_file: {}\n        chat_id: -1001234\n",
        telegram.url(""),
        token_file.display()
    );
    let m = start_mlmon(dir.path(), &am, "");
    let mut a = alert("ModelR2Low", "critical", "model");
    a["annotations"]["summary"] = json!("R² < 0.7 & falling <fast>");
    post_alerts(&m, json!([a.clone()]));
    let got = telegram.wait_accepted(1, Duration::from_secs(15));
    let req = &telegram.requests()[0];
    assert_eq!(req.path, "/bot123:secret-token/sendMessage");
    let msg = &got[0];
    assert_eq!(msg["chat_id"], -1001234);
    assert_eq!(msg["parse_mode"], "HTML");
    assert_eq!(msg["disable_notification"], false);
    let text = msg["text"].as_str().unwrap();
    assert!(text.contains("Alerts Firing:"), "{text}");
    assert!(text.contains("alertname = ModelR2Low"), "{text}");
    assert!(
        text.contains("R² &lt; 0.7 &amp; falling &lt;fast&gt;"),
        "{text}"
    );
    // Resolved: a second message.
    a["endsAt"] = json!(mlmon::model::rfc3339(mlmon::model::now_ms() - 1000));
    post_alerts(&m, json!([a]));
    let got = telegram.wait_accepted(2, Duration::from_secs(15));
    assert!(
        got[1]["text"]
            .as_str()
            .unwrap()
            .contains("Alerts Resolved:"),
        "{:?}",
        got[1]
    );
    // `mlmon check` counts it and refuses what Alertmanager refuses.
    let bad = write_file(
        dir.path(),
        "bad.yml",
        "route:\n  receiver: tg\nreceivers:\n  - name: tg\n    telegram_configs:\n      - bot_token: x\n        parse_mode: Bold\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.yml:6"), "{stderr}");
    assert!(stderr.contains("missing chat_id"), "{stderr}");
}
