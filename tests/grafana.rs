//! The calls Grafana's Prometheus data source makes (grafana/grafana,
//! `packages/grafana-prometheus`: the health check and queries in
//! `datasource.ts`, the metric and label browsers in `resource_clients.ts`
//! with `limit=40000` and the dashboard's time range, exemplars, metadata,
//! `format_query`), replayed against mlmon and against a real Prometheus
//! 2.42 holding the same samples: the answers are the same JSON.

mod common;

use common::{client, free_port, Mlmon, Prometheus};
use mlmon::model::{Labels, Sample};
use serde_json::Value;

/// Grafana's `DEFAULT_SERIES_LIMIT`.
const LIMIT: &str = "40000";

fn data(now_s: i64) -> Vec<(Labels, Vec<Sample>)> {
    let series = [
        vec![("__name__", "up"), ("job", "api"), ("instance", "a:9100")],
        vec![("__name__", "up"), ("job", "api"), ("instance", "b:9100")],
        vec![
            ("__name__", "ml_model_r2_score"),
            ("job", "ml"),
            ("model", "enet"),
        ],
        vec![
            ("__name__", "stage_seconds_bucket"),
            ("job", "ml"),
            ("le", "+Inf"),
        ],
    ];
    series
        .iter()
        .enumerate()
        .map(|(i, pairs)| {
            let samples = (0..40)
                .map(|k| Sample {
                    t: (now_s - 600 + k * 15) * 1000,
                    v: (i as f64) + k as f64 / 8.0,
                })
                .collect();
            (Labels::new(pairs.iter().copied()).unwrap(), samples)
        })
        .collect()
}

/// (method, path, parameters) as Grafana sends them; `{start}`, `{end}`
/// and `{now}` are the dashboard's range in seconds.
type Call = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

fn calls() -> Vec<Call> {
    vec![
        // Health check (datasource.ts: `1+1` instant query, POST form).
        (
            "POST",
            "/api/v1/query",
            vec![("query", "1+1"), ("time", "{now}")],
        ),
        // A panel: range query by POST form (the default httpMethod) and GET.
        (
            "POST",
            "/api/v1/query_range",
            vec![
                ("query", "up"),
                ("start", "{start}"),
                ("end", "{end}"),
                ("step", "15"),
            ],
        ),
        (
            "GET",
            "/api/v1/query_range",
            vec![
                ("query", "sum by (job) (up)"),
                ("start", "{start}"),
                ("end", "{end}"),
                ("step", "60"),
            ],
        ),
        (
            "GET",
            "/api/v1/query",
            vec![("query", "ml_model_r2_score"), ("time", "{now}")],
        ),
        // Metric browser: metric names, label keys, label values.
        (
            "GET",
            "/api/v1/label/__name__/values",
            vec![("start", "{start}"), ("end", "{end}"), ("limit", LIMIT)],
        ),
        (
            "GET",
            "/api/v1/labels",
            vec![("limit", LIMIT), ("start", "{start}"), ("end", "{end}")],
        ),
        (
            "GET",
            "/api/v1/labels",
            vec![
                ("limit", LIMIT),
                ("start", "{start}"),
                ("end", "{end}"),
                ("match[]", "up"),
            ],
        ),
        (
            "POST",
            "/api/v1/labels",
            vec![
                ("start", "{start}"),
                ("end", "{end}"),
                ("match[]", "{job=\"ml\"}"),
            ],
        ),
        (
            "GET",
            "/api/v1/label/job/values",
            vec![
                ("limit", LIMIT),
                ("start", "{start}"),
                ("end", "{end}"),
                ("match[]", "up"),
            ],
        ),
        (
            "GET",
            "/api/v1/label/instance/values",
            vec![("start", "{start}"), ("end", "{end}")],
        ),
        // SeriesApiClient.querySeries: everything, then one metric.
        (
            "GET",
            "/api/v1/series",
            vec![
                ("start", "{start}"),
                ("end", "{end}"),
                ("match[]", "{__name__!=\"\"}"),
                ("limit", LIMIT),
            ],
        ),
        (
            "GET",
            "/api/v1/series",
            vec![
                ("start", "{start}"),
                ("end", "{end}"),
                ("match[]", "{__name__=\"up\",job!=\"\"}"),
                ("limit", LIMIT),
            ],
        ),
        // A range before any data: empty answers.
        (
            "GET",
            "/api/v1/labels",
            vec![("start", "1000"), ("end", "2000")],
        ),
        (
            "GET",
            "/api/v1/series",
            vec![("start", "1000"), ("end", "2000"), ("match[]", "up")],
        ),
        // Exemplars for a panel (none kept).
        (
            "POST",
            "/api/v1/query_exemplars",
            vec![("query", "up"), ("start", "{start}"), ("end", "{end}")],
        ),
        // The query editor's "format query".
        (
            "GET",
            "/api/v1/format_query",
            vec![("query", "sum(rate(up[5m]))by(job)")],
        ),
        // Errors come as Prometheus words them.
        ("GET", "/api/v1/query", vec![("query", "sum(")]),
        ("GET", "/api/v1/labels", vec![("limit", "-1")]),
    ]
}

fn send(base: &str, method: &str, path: &str, params: &[(String, String)]) -> (u16, Value) {
    let c = client();
    let url = format!("{base}{path}");
    let r = match method {
        "GET" => c.get(&url).query(params).send(),
        _ => c.post(&url).form(params).send(),
    }
    .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn grafanas_calls_answer_as_prometheus_does() {
    if !common::have(&["prometheus"]) {
        return;
    }
    let now = mlmon::model::now_ms() / 1000;
    let m = Mlmon::start(Some("host: {interval: 0s}\nartifacts: {interval: 0s}\n"));
    let prom = Prometheus::start_on(
        free_port(),
        "global: {}\n",
        &["--web.enable-remote-write-receiver"],
    );
    let c = client();
    let batch = data(now);
    common::remote_write(&c, &m.url("/api/v1/write"), &batch);
    common::remote_write(&c, &format!("{}/api/v1/write", prom.base), &batch);
    let (start, end, now_s) = (
        (now - 900).to_string(),
        (now + 60).to_string(),
        now.to_string(),
    );
    let mut answered = 0;
    for (method, path, params) in calls() {
        let params: Vec<(String, String)> = params
            .into_iter()
            .map(|(k, v)| {
                let v = v
                    .replace("{start}", &start)
                    .replace("{end}", &end)
                    .replace("{now}", &now_s);
                (k.to_string(), v)
            })
            .collect();
        let ours = send(&m.url(""), method, path, &params);
        let theirs = send(&prom.base, method, path, &params);
        // Prometheus 2.42 does not know `limit` and refuses nothing for it;
        // mlmon follows Prometheus 3 there.
        if params.iter().any(|(k, v)| k == "limit" && v == "-1") {
            assert_eq!(ours.0, 400, "{path}: {ours:?}");
            assert_eq!(ours.1["errorType"], "bad_data");
            continue;
        }
        assert_eq!(
            ours.0, theirs.0,
            "{method} {path} {params:?}: {ours:?} vs {theirs:?}"
        );
        if theirs.0 == 400 {
            assert_eq!(ours.1["errorType"], theirs.1["errorType"], "{path}");
            continue;
        }
        assert_eq!(ours.1, theirs.1, "{method} {path} {params:?}");
        let data = &ours.1["data"];
        if data.as_array().is_some_and(|a| !a.is_empty())
            || data["result"].as_array().is_some_and(|a| !a.is_empty())
            || data.is_string()
            || data["resultType"] == "scalar"
        {
            answered += 1;
        }
    }
    assert!(answered >= 13, "only {answered} calls answered with data");
    // buildinfo has Prometheus' fields (Grafana reads `version` for
    // features); mlmon's own version.
    let (status, info) = send(&m.url(""), "GET", "/api/v1/status/buildinfo", &[]);
    assert_eq!(status, 200);
    for key in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(info["data"].get(key).is_some(), "{key}: {info}");
    }
    // `limit` cuts the list and says so (Prometheus 3).
    let (_, cut) = send(
        &m.url(""),
        "GET",
        "/api/v1/series",
        &[
            ("match[]".into(), "up".into()),
            ("limit".into(), "1".into()),
        ],
    );
    assert_eq!(cut["data"].as_array().unwrap().len(), 1, "{cut}");
    assert_eq!(cut["warnings"][0], "results truncated due to limit");
    // Metadata answers in Prometheus' shape.
    let (status, meta) = send(&m.url(""), "GET", "/api/v1/metadata", &[]);
    assert_eq!(status, 200);
    assert!(meta["data"].is_object(), "{meta}");
}
