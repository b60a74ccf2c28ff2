//! Drift statistics against a reference computation: CSVs with known
//! distributions are written by numpy, and scipy's `ks_2samp` gives the KS
//! statistic while numpy computes PSI from its formula with mlmon's stated
//! bin convention (the reference's deciles by `np.percentile`'s default
//! linear interpolation as inner edges, `searchsorted(..., side="right")`,
//! proportions floored at 1e-6); mlmon's values equal them within 1e-9.
//! Categorical drift, missing-ratio changes and schema changes are found.

mod common;

use std::process::Command;

use mlmon::ingest::profile::{drift, profile_csv};
use serde_json::Value;

const REFERENCE: &str = r#"
import sys, json
import numpy as np
from scipy.stats import ks_2samp
d = sys.argv[1]
rng = np.random.default_rng(42)
def write(path, num, cat, score, missing_every):
    with open(path, "w") as f:
        f.write("age,gender,score\n")
        for i, (x, c, s) in enumerate(zip(num, cat, score)):
            xs = "" if missing_every and i % missing_every == 0 else repr(float(x))
            f.write(f"{xs},{c},{s}\n")
ref_num = rng.normal(30, 5, 4000)
cur_num = rng.normal(33, 7, 3000)
ref_cat = rng.choice(["female", "male"], 4000, p=[0.5, 0.5])
cur_cat = rng.choice(["female", "male", "other"], 3000, p=[0.3, 0.6, 0.1])
ref_score = rng.integers(0, 100, 4000)
cur_score = rng.integers(0, 100, 3000)
write(f"{d}/ref.csv", ref_num, ref_cat, ref_score, 0)
write(f"{d}/cur.csv", cur_num, cur_cat, cur_score, 10)
# What mlmon reads: the missing ages are not values.
cur_vals = np.array([x for i, x in enumerate(cur_num) if i % 10 != 0])
ref_vals = np.array([float(repr(float(x))) for x in ref_num])
cur_vals = np.array([float(repr(float(x))) for x in cur_vals])
def psi(e, a):
    e = np.maximum(e, 1e-6); a = np.maximum(a, 1e-6)
    return float(np.sum((a - e) * np.log(a / e)))
def psi_num(r, c):
    edges = np.percentile(r, [10, 20, 30, 40, 50, 60, 70, 80, 90])
    bins = lambda x: np.bincount(np.searchsorted(edges, x, side="right"), minlength=10) / len(x)
    return psi(bins(r), bins(c))
def psi_cat(r, c):
    keys = sorted(set(r) | set(c))
    e = np.array([np.sum(r == k) for k in keys]) / len(r)
    a = np.array([np.sum(c == k) for k in keys]) / len(c)
    return psi(e, a)
print(json.dumps({
    "age_ks": float(ks_2samp(ref_vals, cur_vals).statistic),
    "age_psi": psi_num(ref_vals, cur_vals),
    "score_ks": float(ks_2samp(ref_score.astype(float), cur_score.astype(float)).statistic),
    "score_psi": psi_num(ref_score.astype(float), cur_score.astype(float)),
    "gender_psi": psi_cat(ref_cat, cur_cat),
}))
"#;

#[test]
fn psi_and_ks_equal_numpy_and_scipy() {
    if !common::have(&["python3:scipy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-c", REFERENCE])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = |name: &str| {
        let f = std::fs::File::open(dir.path().join(name)).unwrap();
        profile_csv(name, f, 100_000).unwrap()
    };
    let (_, reference) = read("ref.csv");
    let (profile, current) = read("cur.csv");
    assert_eq!(profile.rows, 3000);
    assert!((profile.columns[0].missing_ratio - 0.1).abs() < 1e-12);
    let d = drift(&reference, &current);
    let col = |n: &str| d.iter().find(|c| c.column == n).unwrap();
    let close = |got: Option<f64>, key: &str| {
        let w = want[key].as_f64().unwrap();
        let g = got.unwrap();
        assert!((g - w).abs() < 1e-9, "{key}: mlmon {g}, reference {w}");
    };
    close(col("age").ks, "age_ks");
    close(col("age").psi, "age_psi");
    close(col("score").ks, "score_ks");
    close(col("score").psi, "score_psi");
    close(col("gender").psi, "gender_psi");
    assert_eq!(col("gender").new_categories, vec!["other".to_string()]);
    assert!((col("age").missing_ratio_change - 0.1).abs() < 1e-12);
    // Most severe first: age and gender drifted, score did not.
    assert_eq!(d.last().unwrap().column, "score");
    assert!(col("score").psi.unwrap() < 0.1);
    assert!(col("age").psi.unwrap() > 0.25);
}

/// A file far larger than the row cap is profiled in bounded memory: the
/// sample holds `row_cap` values a column whatever the file's size.
#[test]
fn a_large_file_costs_the_row_cap() {
    let mut csv = String::from("x,y\n");
    for i in 0..200_000 {
        csv.push_str(&format!("{},{}\n", i % 1000, ["a", "b"][i % 2]));
    }
    let (p, d) = profile_csv("big.csv", csv.as_bytes(), 5_000).unwrap();
    assert_eq!(p.rows, 200_000);
    assert!(!p.exact);
    assert_eq!(d.samples["x"].len(), 5_000);
    assert!((p.columns[0].mean.unwrap() - 499.5).abs() < 1e-9);
    let median = p.columns[0].quantiles[10];
    assert!((median - 500.0).abs() < 30.0, "{median}");
}

fn write(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A CSV of students: `age` around `mean`, `gender` drawn with `p_female`,
/// `score` uniform; the age column named `age_name`.
fn students(n: usize, mean: f64, p_female: f64, age_name: &str, seed: u64) -> String {
    let mut rng = common::Rng(seed);
    let mut out = format!("{age_name},gender,score\n");
    for _ in 0..n {
        let age = mean + (rng.unit() - 0.5) * 10.0;
        let g = if rng.unit() < p_female {
            "female"
        } else {
            "male"
        };
        out.push_str(&format!("{age:.2},{g},{}\n", (rng.unit() * 100.0) as u32));
    }
    out
}

/// One whole run in the artifacts directory with `raw.csv` as given.
fn pipeline_run(root: &std::path::Path, raw: &str, r2: f64) {
    write(root, "data_ingestion/raw.csv", raw);
    write(
        root,
        "data_validation/status.txt",
        "Validation status: True",
    );
    write(root, "data_transformation/preprocessor.json", "{}");
    write(root, "model_trainer/model.json", "{}");
    std::thread::sleep(std::time::Duration::from_millis(50));
    write(
        root,
        "model_evaluation/evaluation_report.json",
        &format!(
            r#"{{"train_rmse": 5.3, "test_rmse": 5.4, "train_mae": 4.2, "test_mae": 4.1, "train_r2": 0.87, "test_r2": {r2}}}"#
        ),
    );
}

/// Through the artifacts collector: a healthy run, pinned as baseline; a
/// drifted run carries its profile and drift (API and `ml_data_*`
/// series), and the shipped rules fire; a renamed column is a schema
/// change.
#[test]
fn runs_carry_profiles_and_drift_against_their_baseline() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ml_pipeline.yml");
    let config = format!(
        "global: {{evaluation_interval: 1s}}\nartifacts: {{dir: {}, pipeline: mathscore, interval: 1s}}\nrule_files: ['{}']\nhost: {{interval: 0s}}\n",
        art.display(),
        rules.display()
    );
    let m = common::Mlmon::start_in(dir, Some(config));
    let runs = || -> Vec<Value> {
        m.json("/api/v1/runs")["data"]["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let wait_runs = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = runs();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} runs of {n}\n{}",
                r.len(),
                m.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    pipeline_run(&art, &students(2000, 30.0, 0.5, "age", 1), 0.90);
    let first = wait_runs(1)[0]["id"].as_str().unwrap().to_string();
    let run: Value = m.json(&format!("/api/v1/runs/{first}"));
    assert_eq!(run["data"]["profile"]["raw"]["rows"], 2000, "{run}");
    assert_eq!(
        run["data"]["profile"]["raw"]["columns"][0]["kind"],
        "numeric"
    );
    let r = common::client()
        .post(m.url(&format!("/api/v1/runs/{first}/baseline")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    // A drifted run: ages up, more women, R² down.
    std::thread::sleep(Duration::from_millis(1100));
    pipeline_run(&art, &students(2000, 40.0, 0.8, "age", 2), 0.80);
    let second = wait_runs(2)[0]["id"].as_str().unwrap().to_string();
    let run: Value = m.json(&format!("/api/v1/runs/{second}"));
    let data = &run["data"];
    assert_eq!(data["reference"], first.as_str(), "{data}");
    assert!((data["r2_delta"].as_f64().unwrap() + 0.1).abs() < 1e-9);
    let drift = data["drift"]["raw"].as_array().unwrap();
    assert_eq!(drift[0]["column"], "age", "most severe first: {drift:?}");
    assert!(drift[0]["psi"].as_f64().unwrap() > 0.25);
    assert!(drift[0]["ks"].as_f64().unwrap() > 0.5);
    let alerts = std::cell::RefCell::new(String::new());
    common::wait_for(
        "no drift alert",
        Duration::from_secs(20),
        || {
            let a = m.json("/api/v1/alerts").to_string();
            let both = a.contains("DataDriftCritical") && a.contains("ModelR2DroppedVsBaseline");
            *alerts.borrow_mut() = a;
            both.then_some(())
        },
        || format!("{}\n{}", alerts.borrow(), m.log()),
    );
    let psi = m
        .value("ml_data_drift_psi{pipeline=\"mathscore\",dataset=\"raw\",column=\"age\"}")
        .unwrap();
    assert!((psi - drift[0]["psi"].as_f64().unwrap()).abs() < 1e-9);
    // The run page lists the drifted columns, most severe first, and the
    // compare page shows both runs.
    let page = m.text(&format!("/runs/{second}"));
    let drift_at = page.find("Data drift").expect("a drift section");
    let age_at = page[drift_at..]
        .find("<td>age</td>")
        .expect("age in the drift table");
    assert!(
        page[drift_at + age_at..].contains("class=\"crit\""),
        "{page}"
    );
    assert!(page.contains("<svg class=\"spark\""), "distribution charts");
    let compare = common::client()
        .get(m.url("/runs/compare"))
        .query(&[("a", first.as_str()), ("b", second.as_str())])
        .send()
        .unwrap();
    assert_eq!(compare.status(), 200);
    let compare = compare.text().unwrap();
    assert!(compare.contains(&first) && compare.contains(&second));
    assert!(compare.contains("Drift of the second against the first"));

    // A renamed column: a schema change against the baseline.
    std::thread::sleep(Duration::from_millis(1100));
    pipeline_run(&art, &students(2000, 30.0, 0.5, "age_years", 3), 0.90);
    let third = wait_runs(3)[0]["id"].as_str().unwrap().to_string();
    let run: Value = m.json(&format!("/api/v1/runs/{third}"));
    let changes: Vec<(String, String)> = run["data"]["drift"]["raw"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            Some((
                c["column"].as_str()?.to_string(),
                c["schema_change"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert!(
        changes.contains(&("age".into(), "removed".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("age_years".into(), "added".into())),
        "{changes:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m
        .json("/api/v1/alerts")
        .to_string()
        .contains("DataSchemaChanged")
    {
        assert!(Instant::now() < deadline, "no schema alert\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}
