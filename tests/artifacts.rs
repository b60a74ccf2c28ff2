//! The artifacts collector and `mlmon run` against the real binary and a
//! real directory in the original stack's layout: a good run, a run that
//! fails validation, a report caught mid-write, a directory that appears
//! late, and a command that exits 3.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{client, free_port, Mlmon};
use serde_json::Value;

const CONFIG: &str = "artifacts:\n  dir: arts\n  pipeline: mathscore\n  interval: 1s\n";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn report(r2: f64) -> String {
    format!(
        r#"{{"train_rmse": 5.3, "test_rmse": 5.4, "train_mae": 4.2, "test_mae": 4.1, "train_r2": 0.87, "test_r2": {r2}, "model_path": "artifacts/model_trainer/model.pkl"}}"#
    )
}

/// A whole successful run, as the original pipeline leaves it.
fn good_run(root: &Path, r2: f64) {
    write(root, "data_ingestion/train.csv", "a,b\n1,2\n");
    write(root, "data_ingestion/test.csv", "a,b\n3,4\n");
    write(
        root,
        "data_validation/status.txt",
        "Validation status: True",
    );
    write(root, "data_transformation/preprocessor.json", "{}");
    write(root, "model_trainer/model.json", "{}");
    // File times are what tell runs apart.
    std::thread::sleep(Duration::from_millis(20));
    write(root, "model_evaluation/evaluation_report.json", &report(r2));
}

fn get(m: &Mlmon, path: &str, query: &[(&str, &str)]) -> Value {
    client()
        .get(m.url(path))
        .query(query)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn wait_for<T>(what: &str, m: &Mlmon, f: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, Duration::from_secs(15), f, || m.log())
}

fn runs(m: &Mlmon) -> Vec<Value> {
    get(m, "/api/v1/runs", &[])["data"]["runs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn runs_metrics_and_failures_come_from_the_directory() {
    let m = Mlmon::start(Some(CONFIG));
    let root = m.dir.path().join("arts");
    // The directory does not exist yet: reported, not an error.
    let status = wait_for("a first scan", &m, || {
        let s = get(&m, "/api/v1/artifacts", &[]);
        (s["data"]["lastScan"].as_i64()? > 0).then_some(s)
    });
    assert_eq!(status["data"]["present"], false, "{status}");

    good_run(&root, 0.88);
    let r2 = wait_for("R² from the report", &m, || {
        m.value("ml_model_r2_score{pipeline=\"mathscore\"}")
    });
    assert_eq!(r2, 0.88);
    assert_eq!(m.value("ml_model_rmse"), Some(5.4));
    assert_eq!(m.value("ml_model_mae"), Some(4.1));
    assert_eq!(m.value("ml_data_validation_success"), Some(1.0));
    assert_eq!(m.value("ml_data_ingestion_success"), Some(1.0));
    let first = wait_for("a recorded run", &m, || runs(&m).first().cloned());
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(first["metrics"]["test_r2"], 0.88);
    assert_eq!(first["stages"]["model_trainer"]["status"], "succeeded");
    assert_eq!(m.value("ml_pipeline_success"), Some(1.0));

    // Validation fails on the next run: seen within an interval or two.
    std::thread::sleep(Duration::from_millis(20));
    write(
        &root,
        "data_validation/status.txt",
        "Validation status: False\ncolumn lunch: unknown value \"n/a\"\n",
    );
    wait_for("validation failure", &m, || {
        (m.value("ml_data_validation_success") == Some(0.0)).then_some(())
    });
    // The original alert expression sees it.
    let alert = get(
        &m,
        "/api/v1/query",
        &[("query", "ml_data_validation_success == 0")],
    );
    assert_eq!(alert["data"]["result"].as_array().unwrap().len(), 1);
    let failed = wait_for("a failed run", &m, || {
        let r = runs(&m);
        (r.len() == 2).then(|| r[0].clone())
    });
    assert_eq!(failed["success"], false, "{failed}");
    assert_eq!(failed["stages"]["data_validation"]["status"], "failed");
    assert_eq!(failed["stages"]["model_evaluation"]["status"], "missing");
    wait_for("pipeline failure", &m, || {
        (m.value("ml_pipeline_success") == Some(0.0)).then_some(())
    });

    // The next run's report is caught half-written: retried, not a failure.
    write(
        &root,
        "data_validation/status.txt",
        "Validation status: True",
    );
    std::thread::sleep(Duration::from_millis(20));
    let half = r#"{"train_rmse": 5.3, "test_rmse": 5.4, "test_r2": 0.7"#;
    write(&root, "model_evaluation/evaluation_report.json", half);
    let report_path = std::path::absolute(root.join("model_evaluation/evaluation_report.json"))
        .unwrap()
        .display()
        .to_string();
    let seen = wait_for("the half-written report noticed", &m, || {
        let s = get(&m, "/api/v1/artifacts", &[])["data"].clone();
        let pending = s["pending"].as_array()?.iter().any(|p| p == &report_path);
        let problem = s["problems"].get(&report_path).is_some();
        (pending || problem).then_some(if pending { "pending" } else { "problem" })
    });
    assert_eq!(seen, "pending");
    // It stays broken: now it is reported, and R² is not made up.
    let why = wait_for("the broken report reported", &m, || {
        get(&m, "/api/v1/artifacts", &[])["data"]["problems"][&report_path]
            .as_str()
            .map(str::to_string)
    });
    assert!(why.contains("not JSON"), "{why}");
    assert_ne!(m.value("ml_model_r2_score"), Some(0.0));
    assert_eq!(runs(&m).len(), 2);
    // Finished: a new run with the new figures.
    write(
        &root,
        "model_evaluation/evaluation_report.json",
        &report(0.65),
    );
    wait_for("R² of the third run", &m, || {
        (m.value("ml_model_r2_score") == Some(0.65)).then_some(())
    });
    let third = wait_for("a third run", &m, || {
        let r = runs(&m);
        (r.len() == 3).then(|| r[0].clone())
    });
    assert_eq!(third["metrics"]["test_r2"], 0.65);
    assert_eq!(third["success"], true);

    // Paging, newest first.
    let page = get(&m, "/api/v1/runs", &[("limit", "1"), ("offset", "1")]);
    assert_eq!(page["data"]["total"], 3);
    assert_eq!(page["data"]["runs"][0]["success"], false);
    let bad = client()
        .get(m.url("/api/v1/runs"))
        .query(&[("limit", "x")])
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Runs survive a restart, and the same report is not a new run.
    let m = m.restart();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(runs(&m).len(), 3);
}

#[test]
fn textfiles_are_read_like_node_exporter() {
    let m = Mlmon::start(Some(CONFIG));
    let root = m.dir.path().join("arts");
    write(
        &root,
        "batch.prom",
        "# TYPE batch_rows gauge\nbatch_rows{table=\"students\"} 1000\n",
    );
    write(&root, "bad.prom", "with_ts 1 1700000000000\n");
    wait_for("textfile samples", &m, || {
        m.value("batch_rows{table=\"students\"}")
    });
    wait_for("the bad textfile reported", &m, || {
        (m.value("node_textfile_scrape_error") == Some(1.0)).then_some(())
    });
    assert!(
        m.value("node_textfile_mtime_seconds{file=\"batch.prom\"}")
            .unwrap()
            > 1.7e9
    );
}

fn mlmon_run(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(["run", "--url", url, "--pipeline", "mathscore", "--"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mlmon_run_records_the_command_and_keeps_its_exit_code() {
    let m = Mlmon::start(Some(CONFIG));
    let (code, _) = mlmon_run(&m.url(""), &["sh", "-c", "sleep 0.2; exit 3"]);
    assert_eq!(code, 3);
    let r = runs(&m);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["exit_code"], 3);
    assert_eq!(r[0]["success"], false);
    assert_eq!(r[0]["source"], "command");
    assert!(r[0]["duration_seconds"].as_f64().unwrap() >= 0.2, "{r:?}");
    assert_eq!(
        m.value("ml_pipeline_success{pipeline=\"mathscore\"}"),
        Some(0.0)
    );
    assert!(m.value("ml_pipeline_duration_seconds").unwrap() >= 0.2);

    // A run whose command writes the artifacts: one run, with both views.
    let root = m.dir.path().join("arts").display().to_string();
    let script = format!(
        "mkdir -p {root}/data_ingestion {root}/data_validation {root}/model_evaluation && \
         echo a > {root}/data_ingestion/train.csv && \
         printf 'Validation status: True' > {root}/data_validation/status.txt && \
         printf '{}' > {root}/model_evaluation/evaluation_report.json",
        report(0.9)
    );
    let (code, _) = mlmon_run(&m.url(""), &["sh", "-c", &script]);
    assert_eq!(code, 0);
    let merged = wait_for("the command run completed by its artifacts", &m, || {
        let r = runs(&m);
        (r.len() == 2 && r[0]["metrics"]["test_r2"] == 0.9).then(|| r[0].clone())
    });
    assert_eq!(merged["source"], "command", "{merged}");
    assert_eq!(merged["success"], true);

    // Back-to-back runs (a fast pipeline): the report goes to the run that
    // wrote it, not to the one that started right after.
    let script = format!(
        "printf '{}' > {root}/model_evaluation/evaluation_report.json",
        report(0.35)
    );
    let (code, _) = mlmon_run(&m.url(""), &["sh", "-c", &script]);
    assert_eq!(code, 0);
    let (code, _) = mlmon_run(&m.url(""), &["sh", "-c", "exit 1"]);
    assert_eq!(code, 1);
    let r = wait_for("the report of the third run", &m, || {
        let r = runs(&m);
        (r.len() == 4 && r[1]["metrics"]["test_r2"] == 0.35).then_some(r)
    });
    assert_eq!(r[0]["success"], false);
    assert!(r[0]["metrics"]["test_r2"].is_null(), "{r:#?}");

    // No mlmon there: a warning, and still the command's exit code.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, stderr) = mlmon_run(&nobody, &["sh", "-c", "echo hi; exit 4"]);
    assert_eq!(code, 4);
    assert!(
        stderr.contains("warning: the run was not recorded"),
        "{stderr}"
    );
    let (code, stderr) = mlmon_run(&nobody, &["/nonexistent/pipeline"]);
    assert_eq!(code, 127);
    assert!(stderr.contains("cannot start"), "{stderr}");
}

/// `mlmon run --pipeline NAME` where the collector's pipeline is another
/// (here the default): one execution is one run, under the name given,
/// with the artifacts' figures merged in and its series labelled with it.
#[test]
fn a_named_command_run_is_one_run_under_its_name() {
    let m = Mlmon::start(Some("artifacts:\n  dir: arts\n  interval: 1s\n"));
    let root = m.dir.path().join("arts");
    let run_named = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .args(["run", "--url", &m.url(""), "--pipeline", "math", "--"])
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
            .unwrap()
    };
    assert_eq!(run_named(&["sh", "-c", "exit 2"]), 2);
    assert_eq!(m.value("ml_pipeline_success{pipeline=\"math\"}"), Some(0.0));

    let dir = root.display().to_string();
    let script = format!(
        "mkdir -p {dir}/data_ingestion {dir}/data_validation {dir}/model_evaluation && \
         echo a > {dir}/data_ingestion/train.csv && \
         printf 'Validation status: True' > {dir}/data_validation/status.txt && \
         sleep 1.5 && printf '{}' > {dir}/model_evaluation/evaluation_report.json && sleep 1.5",
        report(0.91)
    );
    assert_eq!(run_named(&["sh", "-c", &script]), 0);
    let r = wait_for("the named run with the report's figures", &m, || {
        let r = runs(&m);
        (r[0]["metrics"]["test_r2"] == 0.91).then_some(r)
    });
    // Give the collector a few more scans: it must not add a run of its own.
    std::thread::sleep(Duration::from_secs(3));
    let r2 = runs(&m);
    assert_eq!(r2.len(), 2, "{r2:#?}");
    assert_eq!(r.len(), 2, "{r:#?}");
    for run in &r2 {
        assert_eq!(run["pipeline"], "math", "{run}");
        assert_eq!(run["source"], "command", "{run}");
    }
    assert_eq!(m.value("ml_pipeline_success{pipeline=\"math\"}"), Some(1.0));
    assert_eq!(m.value("ml_model_r2_score{pipeline=\"math\"}"), Some(0.91));
    assert_eq!(
        m.query("ml_pipeline_success{pipeline=\"default\"}").len(),
        0
    );
}
