//! The PromQL cases in `tests/promql/*.test` (Prometheus' test script
//! format, see `mlmon::promql::script`), run on mlmon on every `cargo
//! test`; no Prometheus needed.
//!
//! Their expected values come from a real Prometheus (the Debian package,
//! 2.42): `MLMON_PROMQL_REFRESH=1 cargo test --test promql_cases` loads
//! each block into a fresh Prometheus by remote write, asks it every
//! evaluation and writes its answers into the files (check the diff).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mlmon::model::Labels;
use mlmon::promql::script::{Block, Outcome, Query, Script};
use serde_json::Value;

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    files
}

#[test]
fn promql_cases_answer_as_prometheus_recorded() {
    let refresh = std::env::var_os("MLMON_PROMQL_REFRESH").is_some();
    let files = files();
    assert!(!files.is_empty(), "no tests/promql/*.test files");
    let mut failures = Vec::new();
    let mut evals = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let script = Script::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if refresh {
            let outcomes: Vec<Vec<Outcome>> =
                script.blocks.iter().map(prometheus_answers).collect();
            let again = script.render(&outcomes);
            if again != text {
                std::fs::write(path, again).unwrap();
                eprintln!("{}: refreshed from Prometheus", path.display());
            }
            continue;
        }
        evals += script.blocks.iter().map(|b| b.evals.len()).sum::<usize>();
        let dir = tempfile::tempdir().unwrap();
        for f in mlmon::promql::script::run(&script, dir.path()).unwrap() {
            failures.push(format!("{}:{f}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {evals} evaluations differ from what Prometheus answered:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A real Prometheus' answers to one block's evaluations.
fn prometheus_answers(block: &Block) -> Vec<Outcome> {
    let prom = Prometheus::start("global: {}\n", &["--web.enable-remote-write-receiver"]);
    let c = client();
    let batch: Vec<_> = block
        .series
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .cloned()
        .collect();
    if !batch.is_empty() {
        remote_write(&c, &format!("{}/api/v1/write", prom.base), &batch);
    }
    let secs = |t: i64| format!("{:.3}", t as f64 / 1000.0);
    block
        .evals
        .iter()
        .map(|e| {
            let (path, params) = match e.query {
                Query::Instant(t) => ("query", vec![("query", e.expr.clone()), ("time", secs(t))]),
                Query::Range { start, end, step } => (
                    "query_range",
                    vec![
                        ("query", e.expr.clone()),
                        ("start", secs(start)),
                        ("end", secs(end)),
                        ("step", secs(step)),
                    ],
                ),
            };
            let r: Value = c
                .get(format!("{}/api/v1/{path}", prom.base))
                .query(&params)
                .send()
                .unwrap()
                .json()
                .unwrap();
            if r["status"] != "success" {
                return Outcome::Error(r["error"].as_str().unwrap_or_default().to_string());
            }
            let data = &r["data"];
            let result = &data["result"];
            match data["resultType"].as_str() {
                Some("scalar") => Outcome::Scalar(num(&result[1])),
                Some("vector") => Outcome::Vector(
                    result
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| (labels(&s["metric"]), num(&s["value"][1])))
                        .collect(),
                ),
                Some("matrix") => {
                    let times = e.query.times();
                    Outcome::Matrix(
                        result
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| {
                                let values = s["values"].as_array().unwrap();
                                let points = times
                                    .iter()
                                    .map(|t| {
                                        values
                                            .iter()
                                            .find(|p| {
                                                (p[0].as_f64().unwrap() * 1000.0).round() as i64
                                                    == *t
                                            })
                                            .map(|p| num(&p[1]))
                                    })
                                    .collect();
                                (labels(&s["metric"]), points)
                            })
                            .collect(),
                    )
                }
                other => Outcome::Error(format!("a {other:?} result")),
            }
        })
        .collect()
}

fn num(v: &Value) -> f64 {
    mlmon::model::parse_float(v.as_str().unwrap()).unwrap()
}

fn labels(m: &Value) -> Labels {
    Labels::new(
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
    )
    .unwrap()
}
