//! The whole story with the reference model app (examples/math_score) and
//! a real mlmon: a healthy run, a drifted run, a run failing at training,
//! each through `mlmon run`; the prediction API probed and scraped;
//! drifted requests to it. Then: three runs with the right statuses and
//! metrics, ModelAccuracyCritical, PipelineFailure and FeatureDriftCritical
//! fire (the shipped rules, with `for` shortened), and the notifications
//! reach a local receiver. Also: bad requests get 422s with field-level
//! reasons and never reach the model; under a bounded load the API keeps
//! serving and its /metrics counts match the requests sent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{client, free_port, write_file, HttpSink, Mlmon, Proc};
use serde_json::{json, Value};

/// The example's binary, built by `cargo test` beside the test binaries.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join("math_score");
    assert!(
        p.exists(),
        "{} not built (cargo test builds examples)",
        p.display()
    );
    p
}

/// The shipped rule files with every `for:` set to 0s, so the test does not
/// wait minutes; the expressions, labels and annotations are the shipped
/// ones.
fn rules(dir: &Path) -> PathBuf {
    let out = dir.join("rules");
    for f in ["ml_pipeline.yml", "math_score.yml"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").join(f))
                .unwrap();
        let fast: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("for:") {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}for: 0s\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        write_file(&out, f, &fast);
    }
    out
}

fn mlmon_run(m: &Mlmon, args: &[&str]) -> i32 {
    let status = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(["run", "--pipeline", "mathscore", "--url", &m.url(""), "--"])
        .arg(example())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// `mlmon run` of the example's pipeline writing to `art`, with `args`.
fn pipeline(m: &Mlmon, art: &Path, args: &[&str]) -> i32 {
    let art = art.to_str().unwrap();
    let mut all = vec!["pipeline", "--artifacts", art];
    all.extend_from_slice(args);
    mlmon_run(m, &all)
}

/// Waits until alert `name` fires.
fn wait_firing(m: &Mlmon, name: &str) {
    wait_for(
        &format!("{name} did not fire"),
        Duration::from_secs(20),
        || firing(m).iter().any(|a| a == name),
        || m.log(),
    );
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    common::wait_for(what, within, || f().then_some(()), log)
}

fn firing(m: &Mlmon) -> Vec<String> {
    m.json("/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect()
}

fn start_api(art: &Path, port: u16, rate: &str) -> Proc {
    let child: Child = Command::new(example())
        .args(["serve", "--artifacts"])
        .arg(art)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate-limit",
            rate,
            "--drift-window",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let url = format!("http://127.0.0.1:{port}/api/health");
    wait_for(
        "the API did not start",
        Duration::from_secs(20),
        || client().get(&url).send().is_ok(),
        String::new,
    );
    p
}

fn request(reading: f64, writing: f64) -> Value {
    json!({
        "gender": "female",
        "race_ethnicity": "group C",
        "parental_level_of_education": "bachelor's degree",
        "lunch": "standard",
        "test_preparation_course": "none",
        "reading_score": reading,
        "writing_score": writing,
    })
}

/// The value of `name` (exact label text) in a metrics page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    let rules = rules(dir.path());
    let hook = HttpSink::start(&[], false);
    let api_port = free_port();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{rules}/*.yml']
artifacts:
  dir: {art}
  pipeline: mathscore
  interval: 1s
scrape_configs:
  - job_name: model-api
    static_configs:
      - targets: ['127.0.0.1:{api_port}']
probes:
  - name: model-api
    url: http://127.0.0.1:{api_port}/api/health
    interval: 1s
alertmanager:
  route:
    receiver: hook
    group_by: [alertname]
    group_wait: 0s
    group_interval: 1s
  receivers:
    - name: hook
      webhook_configs:
        - url: '{hook}'
"#,
        rules = rules.display(),
        art = art.display(),
        hook = hook.url("/alerts"),
    );
    let m = Mlmon::start(Some(&config));
    let runs = |m: &Mlmon| {
        m.json("/api/v1/runs?limit=10")["data"]["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };

    // 1. A healthy run.
    assert_eq!(pipeline(&m, &art, &["--seed", "1"]), 0);
    wait_for(
        "no healthy run",
        Duration::from_secs(20),
        || {
            runs(&m)
                .first()
                .is_some_and(|r| r["metrics"]["test_r2"].is_number())
        },
        || m.log(),
    );
    let r2 = runs(&m)[0]["metrics"]["test_r2"].as_f64().unwrap();
    assert!((0.85..0.92).contains(&r2), "healthy R² {r2}");
    // The healthy run becomes the pipeline's baseline.
    let healthy = runs(&m)[0]["id"].as_str().unwrap().to_string();
    let pinned = client()
        .post(m.url(&format!("/api/v1/runs/{healthy}/baseline")))
        .send()
        .unwrap();
    assert_eq!(pinned.status(), 200, "{}", pinned.text().unwrap());

    // The API, probed and scraped.
    let _api = start_api(&art, api_port, "5000");
    wait_for(
        "the probe never succeeded",
        Duration::from_secs(20),
        || m.value("probe_success{probe=\"model-api\"}") == Some(1.0),
        || m.log(),
    );

    // 2. A drifted run: R² falls below 0.7.
    assert_eq!(pipeline(&m, &art, &["--drift", "0.5", "--seed", "2"]), 0);
    wait_for(
        "no drifted run",
        Duration::from_secs(20),
        || runs(&m).len() == 2 && runs(&m)[0]["metrics"]["test_r2"].is_number(),
        || m.log(),
    );
    let drifted = runs(&m)[0]["metrics"]["test_r2"].as_f64().unwrap();
    assert!(drifted < 0.7, "drifted R² {drifted}");
    wait_firing(&m, "ModelAccuracyCritical");

    // Why: the drifted run's data against the healthy run (its
    // reference): the scores the drift shifted lead the drift table, the
    // drift alert fires, and R² fell against the reference.
    let healthy_id = healthy.clone();
    let drifted_id = runs(&m)[0]["id"].as_str().unwrap().to_string();
    let detail = m.json(&format!("/api/v1/runs/{healthy_id}"));
    assert_eq!(detail["data"]["baseline"], true);
    // The drift alerts' link leads to the newest run.
    let latest = client()
        .get(m.url("/runs/latest?pipeline=mathscore"))
        .send()
        .unwrap();
    assert!(
        latest.url().path().ends_with(&drifted_id),
        "{}",
        latest.url()
    );
    let detail = m.json(&format!("/api/v1/runs/{drifted_id}"));
    assert_eq!(detail["data"]["reference"], healthy_id.as_str(), "{detail}");
    assert!(detail["data"]["r2_delta"].as_f64().unwrap() < -0.05);
    let top: Vec<&str> = detail["data"]["drift"]["raw"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"reading_score") && top.contains(&"writing_score"),
        "{top:?}"
    );
    wait_firing(&m, "DataDriftCritical");
    wait_firing(&m, "ModelR2DroppedVsBaseline");
    if common::have(&["chromium"]) {
        let out = common::test_artifacts("math_score");
        let (dom, console) = common::browse(&m.url(&format!("/runs/{drifted_id}")), 1280, None);
        assert!(console.is_empty(), "{console:?}");
        let t = common::text(&dom);
        let drift_at = t.find("Data drift").expect("a drift section");
        assert!(t[drift_at..].contains("reading_score"), "{t}");
        let compare = format!("/runs/compare?a={healthy_id}&b={drifted_id}");
        let (dom, _) = common::browse(&m.url(&compare), 1280, None);
        assert!(common::text(&dom).contains("Drift of the second against the first"));
        common::browse(
            &m.url(&format!("/runs/{drifted_id}")),
            1280,
            Some(&out.join("drifted-run.png")),
        );
        common::browse(&m.url(&compare), 1280, Some(&out.join("compare.png")));
        assert!(out.join("drifted-run.png").exists() && out.join("compare.png").exists());
    }

    // 3. A run that fails at training.
    assert_eq!(
        pipeline(&m, &art, &["--fail-stage", "training", "--seed", "3"]),
        1
    );
    wait_for(
        "no failed run",
        Duration::from_secs(20),
        || runs(&m).len() == 3,
        || m.log(),
    );
    let all = runs(&m);
    let statuses: Vec<bool> = all
        .iter()
        .map(|r| r["success"].as_bool().unwrap())
        .collect();
    assert_eq!(statuses, [false, true, true], "{all:#?}");
    assert_eq!(all[0]["exit_code"], 1);
    // The stages it got through, and where it stopped.
    assert_eq!(
        all[0]["stages"]["data_transformation"]["status"], "succeeded",
        "{:#}",
        all[0]
    );
    assert_eq!(
        all[0]["stages"]["model_trainer"]["status"], "failed",
        "{:#}",
        all[0]
    );
    assert_eq!(
        all[0]["stages"]["model_evaluation"]["status"], "missing",
        "{:#}",
        all[0]
    );
    wait_firing(&m, "PipelineFailure");

    // 4. Drifted requests to the API: the drift score crosses 0.3.
    let predict = format!("http://127.0.0.1:{api_port}/api/predict");
    for i in 0..60 {
        let r = client()
            .post(&predict)
            .json(&request(20.0 + (i % 10) as f64, 25.0 + (i % 7) as f64))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_firing(&m, "FeatureDriftCritical");
    let psi = m.value("max(ml_feature_drift_psi)").unwrap();
    assert!(psi > 0.3, "PSI {psi}");

    // 5. Every one of them was delivered to the receiver.
    wait_for(
        "notifications missing",
        Duration::from_secs(20),
        || {
            let names: Vec<String> = hook
                .accepted()
                .iter()
                .map(|n| {
                    n["groupLabels"]["alertname"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            [
                "ModelAccuracyCritical",
                "PipelineFailure",
                "FeatureDriftCritical",
            ]
            .iter()
            .all(|w| names.iter().any(|n| n == w))
        },
        || format!("{:#?}\n{}", hook.accepted(), m.log()),
    );
}

#[test]
fn bad_requests_get_field_reasons_and_the_api_keeps_count_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    let status = Command::new(example())
        .args(["pipeline", "--artifacts"])
        .arg(&art)
        .args(["--rows", "300"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let port = free_port();
    let _api = start_api(&art, port, "5000");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            {
                let mut r = request(70.0, 70.0);
                r.as_object_mut().unwrap().remove("lunch");
                r
            },
            "lunch",
            "missing",
        ),
        (
            {
                let mut r = request(70.0, 70.0);
                r["reading_score"] = json!("seventy");
                r
            },
            "reading_score",
            "must be a number",
        ),
        (request(70.0, 140.0), "writing_score", "outside 0–100"),
        (
            {
                let mut r = request(70.0, 70.0);
                r["race_ethnicity"] = json!("group Z");
                r
            },
            "race_ethnicity",
            "unknown category",
        ),
        (
            {
                let mut r = request(70.0, 70.0);
                r["age"] = json!(17);
                r
            },
            "age",
            "unknown field",
        ),
    ];
    for (body, field, reason) in &cases {
        let r = client()
            .post(url("/api/predict"))
            .json(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().unwrap();
        let details = v["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == *field && d["reason"].as_str().unwrap().contains(reason)),
            "{v}"
        );
    }
    let r = client()
        .post(url("/api/predict"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);

    // Bounded load: 4 clients × 100 requests.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let u = url("/api/predict");
            std::thread::spawn(move || {
                let c = client();
                for i in 0..100 {
                    let r = c
                        .post(&u)
                        .json(&request(50.0 + (i % 40) as f64, 48.0 + (t * 5) as f64))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().unwrap();
                    assert!((0.0..=100.0).contains(&v["math_score"].as_f64().unwrap()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let page = client()
        .get(url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric(
            &page,
            "http_requests_total{route=\"/api/predict\",status=\"200\"}"
        ),
        400.0,
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            "http_requests_total{route=\"/api/predict\",status=\"422\"}"
        ),
        6.0,
        "{page}"
    );
    // Only valid requests reached the model.
    assert_eq!(
        metric(&page, "ml_prediction_math_score_count"),
        400.0,
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            "http_request_duration_seconds_count{route=\"/api/predict\"}"
        ),
        406.0,
        "{page}"
    );
    let info: Value = client()
        .get(url("/api/model-info"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["model_type"], "ElasticNet");
    assert_eq!(info["alpha"], 0.001);
    assert_eq!(info["l1_ratio"], 0.5);

    // A client over its rate is told to slow down.
    let slow_port = free_port();
    let _slow = start_api(&art, slow_port, "1");
    let codes: Vec<u16> = (0..6)
        .map(|_| {
            client()
                .post(format!("http://127.0.0.1:{slow_port}/api/predict"))
                .json(&request(60.0, 60.0))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
}
