//! `mlmon test rules FILE…`: rule unit tests in `promtool test rules`
//! format. Input series (with the expanding notation: `0+10x100`, `1x4`,
//! `_`, `_x3`, `stale`) are written at multiples of the test's interval
//! from time 0 into a scratch store; the rule files' groups are evaluated
//! every `evaluation_interval`; `alert_rule_test` compares the firing
//! alerts at `eval_time`, `promql_expr_test` the result of a query.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::engine::{AlertState, Group};
use crate::model::{Labels, PromDuration};
use crate::promql::script::{series_labels, series_samples};
use crate::promql::{self, QueryOptions, Value};
use crate::tsdb::{Storage, StorageOptions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    evaluation_interval: Option<PromDuration>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    interval: Option<PromDuration>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    external_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: PromDuration,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: PromDuration,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: f64,
}

/// A firing alert as the tests compare it: labels and annotations.
type AlertSeen = (BTreeMap<String, String>, BTreeMap<String, String>);

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)`: `6.5E-01`.
fn go_exp_upper(v: f64) -> String {
    match crate::model::special_float(v) {
        Some(special) => special.to_string(),
        None => crate::gotmpl::go_exp(&format!("{v:e}")).replace('e', "E"),
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Runs one test file; `Ok` holds nothing, `Err` the failure report lines.
pub fn run_file(path: &Path) -> Result<(), Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|e| vec![format!("{name}: {e}")])?;
    let _ = &file.group_eval_order;
    let base = path.parent().unwrap_or(Path::new("."));
    let eval_ms = file
        .evaluation_interval
        .map_or(60_000, |d| d.millis())
        .max(1);
    let mut rule_groups = Vec::new();
    for pattern in &file.rule_files {
        let full = base.join(pattern);
        let paths: Vec<PathBuf> = glob::glob(&full.display().to_string())
            .map_err(|e| vec![format!("{name}: rule_files: {e}")])?
            .flatten()
            .collect();
        for p in paths {
            let f = super::load_file(&p)
                .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
            rule_groups.push((p.display().to_string(), f));
        }
    }
    let mut failures = Vec::new();
    for (gi, tg) in file.tests.iter().enumerate() {
        if let Err(mut e) = run_group(tg, &rule_groups, eval_ms, gi) {
            failures.append(&mut e);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn run_group(
    tg: &TestGroup,
    rule_groups: &[(String, super::RuleFile)],
    eval_ms: i64,
    index: usize,
) -> Result<(), Vec<String>> {
    let dir = std::env::temp_dir().join(format!(
        "mlmon-test-rules-{}-{index}-{}",
        std::process::id(),
        crate::model::now_ms()
    ));
    let result = run_group_in(tg, rule_groups, eval_ms, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_group_in(
    tg: &TestGroup,
    rule_groups: &[(String, super::RuleFile)],
    eval_ms: i64,
    dir: &Path,
) -> Result<(), Vec<String>> {
    let fail = |e: String| vec![e];
    let storage =
        Storage::open(StorageOptions::new(dir.to_path_buf())).map_err(|e| fail(e.to_string()))?;
    let interval = tg.interval.map_or(eval_ms, |d| d.millis()).max(1);
    let mut app = storage.appender();
    for s in &tg.input_series {
        let (labels, samples) = series_samples(&s.series, &s.values, interval).map_err(fail)?;
        app.append_series(labels, samples);
    }
    app.commit().map_err(|e| fail(e.to_string()))?;
    let mut groups: Vec<Group> = rule_groups
        .iter()
        .flat_map(|(file, f)| f.groups.iter().map(move |g| Group::new(file, g, eval_ms)))
        .collect();
    let opts = QueryOptions::default();
    let max_t = tg
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.millis())
        .chain(tg.promql_expr_test.iter().map(|e| e.eval_time.millis()))
        .max()
        .unwrap_or(0);
    let _ = &tg.external_url;
    let mut failures = Vec::new();
    // Firing alerts seen at each alert test's time.
    let mut got: BTreeMap<usize, Vec<AlertSeen>> = BTreeMap::new();
    let mut t = 0;
    while t <= max_t {
        for g in &mut groups {
            g.eval(&*storage, t, &opts, &tg.external_labels);
        }
        for (i, at) in tg.alert_rule_test.iter().enumerate() {
            let et = at.eval_time.millis();
            // The last evaluation at or before the test's time.
            if t <= et && et < t + eval_ms {
                let mut list = Vec::new();
                for g in &groups {
                    for (r, a) in g.active_alerts() {
                        if r.rule.alert.as_deref() == Some(at.alertname.as_str())
                            && a.state == AlertState::Firing
                        {
                            let labels = a
                                .labels
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_string()))
                                .collect();
                            list.push((labels, a.annotations.clone()));
                        }
                    }
                }
                got.insert(i, list);
            }
        }
        t += eval_ms;
    }
    for (i, at) in tg.alert_rule_test.iter().enumerate() {
        let mut want: Vec<AlertSeen> = at
            .exp_alerts
            .iter()
            .map(|e| {
                let mut l = e.exp_labels.clone();
                l.insert("alertname".into(), at.alertname.clone());
                (l, e.exp_annotations.clone())
            })
            .collect();
        let mut have = got.remove(&i).unwrap_or_default();
        want.sort();
        have.sort();
        if want != have {
            let show = |v: &[AlertSeen]| {
                let items: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(k, (l, a))| {
                        format!(
                            "\n            {k}:\n              Labels:{}\n              Annotations:{}",
                            labels_text(l),
                            labels_text(a)
                        )
                    })
                    .collect();
                if items.is_empty() {
                    "[]".to_string()
                } else {
                    format!("[{}\n            ]", items.join(""))
                }
            };
            failures.push(format!(
                "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                at.alertname,
                crate::model::format_duration(at.eval_time.millis()),
                show(&want),
                show(&have)
            ));
        }
    }
    for et in &tg.promql_expr_test {
        let t = et.eval_time.millis();
        let got = match promql::instant(storage.as_ref(), &et.expr, t, &opts) {
            Ok(Value::Vector(v)) => v
                .into_iter()
                .map(|s| ((*s.labels).clone(), s.v))
                .collect::<Vec<_>>(),
            Ok(Value::Scalar { v, .. }) => vec![(Labels::default(), v)],
            Ok(other) => {
                failures.push(format!(
                    "    expr: {:?}, time: {}, err: unexpected {} result",
                    et.expr,
                    crate::model::format_duration(t),
                    other.type_name()
                ));
                continue;
            }
            Err(e) => {
                failures.push(format!(
                    "    expr: {:?}, time: {}, err: {e}",
                    et.expr,
                    crate::model::format_duration(t)
                ));
                continue;
            }
        };
        let mut want = Vec::new();
        for s in &et.exp_samples {
            match series_labels(&s.labels) {
                Ok(l) => want.push((l, s.value)),
                Err(e) => failures.push(format!("    expr: {:?}: {e}", et.expr)),
            }
        }
        let same = |a: f64, b: f64| {
            a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        };
        let mut got_sorted = got.clone();
        got_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let equal = got_sorted.len() == want.len()
            && got_sorted
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && same(g.1, w.1));
        if !equal {
            // As promtool prints samples: Prometheus' label set string and
            // Go's `%E` with the shortest digits.
            let show = |v: &[(Labels, f64)]| {
                if v.is_empty() {
                    return "nil".to_string();
                }
                let items: Vec<String> = v
                    .iter()
                    .map(|(l, x)| {
                        let pairs: Vec<String> =
                            l.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
                        format!("{{{}}} {}", pairs.join(", "), go_exp_upper(*x))
                    })
                    .collect();
                items.join(", ")
            };
            failures.push(format!(
                "    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                et.expr,
                crate::model::format_duration(t),
                show(&want),
                show(&got_sorted)
            ));
        }
    }
    let _ = storage.close();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}
