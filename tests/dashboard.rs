//! The dashboard in a real browser (headless Chromium, Debian `chromium`)
//! against a running mlmon fed with a realistic story: a healthy run, a
//! run that failed validation, a run whose R² dropped below 0.7 (so
//! ModelAccuracyCritical fires), a CPU spike on a training VM, and a label
//! value that tries to inject a script. Every page must load without
//! console errors and show the texts that matter; screenshots at 1280 and
//! 375 px are saved under `target/test-artifacts/dashboard/`. Silences are
//! created and expired through the page's forms.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{browse, client, remote_write, text, write_file, Mlmon};
use mlmon::model::{Labels, Sample};
use serde_json::Value;

const XSS: &str = "<script>alert(1)</script>";

const RULES: &str = r#"groups:
  - name: ml
    interval: 1s
    rules:
      - alert: ModelAccuracyCritical
        expr: ml_model_r2_score < 0.7
        labels:
          severity: critical
          component: model
        annotations:
          summary: "Model R² below 0.7 for pipeline {{ $labels.pipeline }}"
          description: "R² = {{ $value }}"
      - alert: HighCPUUsage
        expr: 100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))) > 80
        labels:
          severity: warning
          component: infrastructure
        annotations:
          summary: "CPU above 80% on {{ $labels.instance }}"
"#;

fn report(dir: &Path, r2: f64) {
    write_file(
        &dir.join("model_evaluation"),
        "evaluation_report.json",
        &format!(
            r#"{{"train_r2": 0.87, "test_r2": {r2}, "train_rmse": 5.3, "test_rmse": 5.4, "train_mae": 4.2, "test_mae": 4.3}}"#
        ),
    );
}

fn validation(dir: &Path, ok: bool) {
    write_file(
        &dir.join("data_validation"),
        "status.txt",
        &format!("Validation status: {}", if ok { "True" } else { "False" }),
    );
}

fn wait_runs(m: &Mlmon, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = m.json("/api/v1/runs");
        if r["data"]["total"].as_u64() == Some(n as u64) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{} runs, not {n}\n{}",
            r["data"]["total"],
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A training VM's CPU over the last hour: idle, then busy for 15 minutes.
fn cpu_spike(m: &Mlmon) {
    let now = mlmon::model::now_ms();
    let start = now - 3_600_000;
    let mut batch = Vec::new();
    for (mode, busy_share) in [("idle", 0.0), ("user", 1.0)] {
        let labels = Labels::new([
            ("__name__", "node_cpu_seconds_total"),
            ("job", "node"),
            ("instance", "vm-train"),
            ("cpu", "0"),
            ("mode", mode),
        ])
        .unwrap();
        let mut value = 1000.0;
        let mut samples = Vec::new();
        let mut t = start;
        while t <= now {
            let spike = t >= now - 15 * 60_000;
            // Per 15 s: idle 14 s normally, 0.5 s during the spike.
            let idle = if spike { 0.5 } else { 14.0 };
            value += if busy_share == 0.0 { idle } else { 15.0 - idle };
            samples.push(Sample { t, v: value });
            t += 15_000;
        }
        batch.push((labels, samples));
    }
    remote_write(&client(), &m.url("/api/v1/write"), &batch);
}

fn scenario() -> (Mlmon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    write_file(dir.path(), "rules.yml", RULES);
    for stage in ["data_ingestion", "data_transformation", "model_trainer"] {
        write_file(&art.join(stage), "done.txt", "ok");
    }
    validation(&art, true);
    report(&art, 0.88);
    let m = Mlmon::start(Some(&format!(
        "rule_files: ['{}']\nartifacts:\n  dir: {}\n  pipeline: mathscore\n  interval: 1s\npush:\n  interval: 1s\n",
        dir.path().join("rules.yml").display(),
        art.display()
    )));
    wait_runs(&m, 1);
    std::thread::sleep(Duration::from_millis(1100));
    validation(&art, false);
    wait_runs(&m, 2);
    std::thread::sleep(Duration::from_millis(1100));
    validation(&art, true);
    report(&art, 0.65);
    wait_runs(&m, 3);
    cpu_spike(&m);
    // A hostile label value, pushed by a client.
    m.push(
        "evil",
        &format!(
            "ml_model_r2_score{{pipeline=\"{}\"}} 0.5\n",
            XSS.replace('"', "\\\"")
        ),
    );
    // Wait until the critical alert fires for both pipelines.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = m.json("/api/v1/alerts");
        let firing = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["state"] == "firing" && a["labels"]["alertname"] == "ModelAccuracyCritical"
            })
            .count();
        if firing == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "alerts: {alerts}\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    (m, dir)
}

#[test]
fn every_page_loads_cleanly_and_shows_what_matters() {
    if !common::have(&["chromium"]) {
        return;
    }
    let (m, _dir) = scenario();
    let out = common::test_artifacts("dashboard");
    let pages: [(&str, &str, &[&str]); 8] = [
        (
            "overview",
            "/",
            &[
                "0.65",
                "critical (< 0.7)",
                "ModelAccuracyCritical",
                "CPU busy",
                "Evaluation ✓",
                "vm-train",
            ],
        ),
        (
            "runs",
            "/runs",
            &["failed at Validation", "0.65", "0.88", "mathscore"],
        ),
        (
            "alerts",
            "/alerts",
            &[
                "ModelAccuracyCritical",
                "Model R² below 0.7 for pipeline mathscore",
                "Silence…",
                "Receivers",
            ],
        ),
        (
            "graph",
            "/graph?expr=ml_model_r2_score&range=1h",
            &["ml_model_r2_score", "0.65"],
        ),
        ("rules", "/rules", &["ModelAccuracyCritical", "ok"]),
        ("targets", "/targets", &["Scrape targets", "Probes"]),
        (
            "status",
            "/status",
            &["Series", "Bytes per sample", "Retention"],
        ),
        ("graph-error", "/graph?expr=rate(", &["parse error"]),
    ];
    for (name, path, wanted) in pages {
        let (dom, console) = browse(&m.url(path), 1280, None);
        assert!(console.is_empty(), "{path}: console messages: {console:#?}");
        let t = text(&dom);
        for w in wanted {
            assert!(t.contains(w), "{path}: {w:?} not shown in\n{t}");
        }
        assert!(dom.contains("<title>"), "{path}: no title");
        // The hostile label is text wherever it shows, never markup.
        assert!(
            !dom.contains(XSS),
            "{path}: the label value was injected as markup"
        );
        if ["overview", "alerts", "graph"].contains(&name) {
            assert!(
                t.contains(XSS),
                "{path}: the label value is not shown as text"
            );
        }
        if ["overview", "runs", "alerts", "graph"].contains(&name) {
            for width in [1280, 375] {
                let shot = out.join(format!("{name}-{width}.png"));
                let _ = std::fs::remove_file(&shot);
                let (_, console) = browse(&m.url(path), width, Some(&shot));
                assert!(console.is_empty(), "{path} at {width}px: {console:#?}");
                assert!(
                    std::fs::metadata(&shot).is_ok_and(|f| f.len() > 10_000),
                    "{}",
                    shot.display()
                );
            }
        }
    }
    // The run detail page names the failed stage.
    let runs = m.json("/api/v1/runs");
    let failed = runs["data"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["success"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (dom, console) = browse(&m.url(&format!("/runs/{failed}")), 1280, None);
    assert!(console.is_empty(), "{console:#?}");
    let t = text(&dom);
    assert!(t.contains("Validation failed"), "{t}");
    // The original stack's JSON endpoints.
    let d = m.json("/api/dashboard");
    assert_eq!(d["pipeline"]["success"], true);
    assert!(d["alerts"].as_array().unwrap().len() >= 2);
    assert_eq!(m.json("/api/status")["status"], "healthy");
}

/// The `name="value"` attributes of the first `<form … action="ACTION…">`.
fn form_fields(html: &str, action_prefix: &str) -> (String, Vec<(String, String)>) {
    let start = html
        .find(&format!("action=\"{action_prefix}"))
        .unwrap_or_else(|| panic!("no form posting to {action_prefix}"));
    let action_end = html[start + 8..].find('"').unwrap() + start + 8;
    let action = html[start + 8..action_end].to_string();
    let end = html[start..].find("</form>").unwrap() + start;
    let form = &html[start..end];
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let attr = |n: &str| {
            input.find(&format!(" {n}=\"")).map(|p| {
                let v = &input[p + n.len() + 3..];
                v[..v.find('"').unwrap()]
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&")
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            fields.push((n, v));
        }
    }
    (action, fields)
}

#[test]
fn silences_are_created_and_expired_through_the_page() {
    if !common::have(&["chromium"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Mlmon::start(None);
    let _ = dir;
    let r = client()
        .post(m.url("/api/v2/alerts"))
        .json(&serde_json::json!([{"labels": {"alertname": "HighCPUUsage", "severity": "warning", "instance": "vm-train"}}]))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let page = client().get(m.url("/alerts")).send().unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .expect("a CSRF cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().unwrap();
    let (action, mut fields) = form_fields(&html, "/alerts/silences");
    assert!(
        fields
            .iter()
            .any(|(k, v)| k == "matcher" && v == "alertname=HighCPUUsage"),
        "{fields:?}"
    );
    // Submits a form as the browser would: its fields and the cookie, no
    // redirect followed.
    let no_redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let submit = |action: &str, fields: &[(String, String)]| {
        no_redirect
            .post(m.url(action))
            .header("Cookie", &cookie)
            .form(fields)
            .send()
            .unwrap()
    };
    // Without the page's token the form is refused.
    let forged: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k != "csrf")
        .cloned()
        .collect();
    assert_eq!(submit(&action, &forged).status(), 403);
    fields.push(("duration".into(), "2h".into()));
    fields.push(("created_by".into(), "alice".into()));
    fields.push(("comment".into(), "retraining".into()));
    let r = submit(&action, &fields);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    let silences = m.json("/api/v2/silences");
    let s = &silences[0];
    assert_eq!(s["status"]["state"], "active");
    assert_eq!(s["createdBy"], "alice");
    assert!(s["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "instance" && x["value"] == "vm-train"));
    let id = s["id"].as_str().unwrap().to_string();

    let html = client()
        .get(m.url("/alerts"))
        .header("Cookie", &cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(html.contains("silenced"), "the alert shows as silenced");
    let (action, fields) = form_fields(&html, &format!("/alerts/silences/{id}/expire"));
    assert_eq!(submit(&action, &fields).status(), 303);
    assert_eq!(
        m.json(&format!("/api/v2/silence/{id}"))["status"]["state"],
        "expired"
    );

    // The receiver's test button sends through it and says how it went.
    let (action, fields) = form_fields(&html, "/alerts/receivers/log/test");
    let r = submit(&action, &fields);
    assert!(r.status().is_success());
    let t = text(&r.text().unwrap());
    assert!(t.contains("log[0]: sent"), "{t}");
    let preview = m.text("/alerts/receivers/log/preview");
    assert!(
        text(&preview).contains("[FIRING:1] HighCPUUsage"),
        "{preview}"
    );
}
