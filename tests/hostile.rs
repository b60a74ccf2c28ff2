//! Hostile input against a running mlmon: every deeply nested form gets a
//! 4xx naming the limit, and the server keeps serving afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{client, Mlmon};

/// `mlmon check FILE`: its exit code and everything it printed.
fn check(file: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .arg("check")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn nest(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// Deep PromQL in every form the issue names, by the query API (GET and
/// POST), range queries and the dashboard's graph page.
#[test]
fn deep_queries_are_refused_and_the_server_survives() {
    let m = Mlmon::start(None);
    m.push("deep", "x 1\n");
    let c = client();
    let subqueries = nest("max_over_time(", "x", "[1m:1m])", 2000);
    let cases: Vec<(&str, String)> = vec![
        ("parens", nest("(", "1", ")", 3000)),
        ("sum", nest("sum(", "x", ")", 3000)),
        ("abs", nest("abs(", "x", ")", 3000)),
        ("unary", format!("{}1", "-".repeat(5000))),
        ("binary chain", vec!["1"; 5000].join(" + ")),
        ("or chain", vec!["x"; 3000].join(" or ")),
        ("subqueries", subqueries),
        ("braces", nest("{", "", "}", 3000)),
        ("just past the limit", nest("(", "1", ")", 257)),
    ];
    for (what, q) in &cases {
        for resp in [
            c.get(m.url("/api/v1/query")).query(&[("query", q)]).send(),
            c.post(m.url("/api/v1/query")).form(&[("query", q)]).send(),
            c.post(m.url("/api/v1/query_range"))
                .form(&[
                    ("query", q.as_str()),
                    ("start", "0"),
                    ("end", "600"),
                    ("step", "60"),
                ])
                .send(),
        ] {
            let r = resp.unwrap_or_else(|e| panic!("{what}: the server went away: {e}"));
            assert_eq!(r.status(), 400, "{what}");
            let body: serde_json::Value = r.json().unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("nested too deeply") && error.contains("at most 256"),
                "{what}: {error}"
            );
        }
        let r = c.get(m.url("/graph")).query(&[("expr", q)]).send();
        let r = r.unwrap_or_else(|e| panic!("{what} on /graph: the server went away: {e}"));
        assert!(
            r.status().is_client_error() || r.status().is_success(),
            "{what}: {}",
            r.status()
        );
        assert!(
            r.text().unwrap().contains("nested too deeply"),
            "{what} on /graph"
        );
    }
    // At the limit, queries still work.
    let at_limit = nest("(", "x", ")", 255);
    assert_eq!(m.value(&at_limit), Some(1.0));
    assert_eq!(m.value("x"), Some(1.0), "the server keeps answering");
}

/// Nested subqueries cost time linear in their depth: 50 levels answer
/// at once (Prometheus: 0.04 s), where each level used to double the work.
#[test]
fn nested_subqueries_take_linear_time() {
    let m = Mlmon::start(None);
    m.push("deep", "x 1\n");
    let q = nest("max_over_time(", "x", "[1m:1m])", 50);
    let started = Instant::now();
    // Evaluated a minute after the push, so every level's window holds
    // the sample.
    let t = format!("{:.3}", mlmon::model::now_ms() as f64 / 1000.0 + 65.0);
    let r = client()
        .get(m.url("/api/v1/query"))
        .query(&[("query", q.as_str()), ("time", t.as_str())])
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1");
    // Not a timing assertion on the happy path: a regression to
    // exponential time would take hours, not seconds.
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Templates nested thousands deep: `mlmon check` refuses the rule file
/// naming it, and a notification template fails cleanly when rendered.
#[test]
fn deep_templates_are_refused() {
    let deep = nest("{{if true}}", "x", "{{end}}", 5000);
    let dir = tempfile::tempdir().unwrap();
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am,
        format!(
            "route:\n  receiver: team\nreceivers:\n- name: team\n  slack_configs:\n  - api_url: http://127.0.0.1:9/\n    channel: '#x'\n    title: '{deep}'\n"
        ),
    )
    .unwrap();
    let m = Mlmon::start(Some(&format!("alertmanager: {}\n", am.display())));
    let r = client()
        .post(m.url("/api/v1/templates/preview"))
        .header("Content-Type", "application/json")
        .body(r#"{"receiver": "team"}"#)
        .send()
        .expect("the server answers");
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.as_u16() < 500, "{status}: {text}");
    assert!(text.contains("nested too deeply"), "{text}");
    // Alerts whose annotations look like deep templates are data.
    let body = serde_json::json!({"receiver": "team", "alerts": [{"labels": {"alertname": "A"}, "annotations": {"summary": deep}}]});
    let r = client()
        .post(m.url("/api/v1/templates/preview"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .expect("the server answers");
    assert!(r.status().as_u16() < 500, "{}", r.status());
    let rules = dir.path().join("deep.yml");
    std::fs::write(
        &rules,
        format!(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    annotations:\n      summary: '{deep}'\n"
        ),
    )
    .unwrap();
    let (code, text) = check(&rules);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nested too deeply"), "{text}");
    assert!(text.contains("deep.yml"));
    // And a deep PromQL expression in a rule file.
    std::fs::write(
        &rules,
        format!(
            "groups:\n- name: g\n  rules:\n  - record: r\n    expr: '{}'\n",
            nest("(", "1", ")", 3000)
        ),
    )
    .unwrap();
    let (code, text) = check(&rules);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("nested too deeply") && text.contains("deep.yml"),
        "{text}"
    );
    assert_eq!(
        m.value("vector(1)"),
        Some(1.0),
        "the server keeps answering"
    );
}

/// Deep YAML and JSON: configs, silences, alerts and runs.
#[test]
fn deep_yaml_and_json_are_refused() {
    let m = Mlmon::start(None);
    let c = client();
    let deep_json = nest("[", "1", "]", 100_000);
    let deep_object = nest("{\"a\":", "1", "}", 100_000);
    for path in ["/api/v2/silences", "/api/v2/alerts", "/api/v1/runs"] {
        for body in [&deep_json, &deep_object] {
            let r = c
                .post(m.url(path))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .unwrap_or_else(|e| panic!("{path}: the server went away: {e}"));
            assert!(r.status().is_client_error(), "{path}: {}", r.status());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "mlmon.yml",
            format!("web: {}", nest("[", "1", "]", 100_000)),
        ),
        (
            "rules.yml",
            format!("groups: {}", nest("{a: ", "1", "}", 100_000)),
        ),
        (
            "alertmanager.yml",
            format!("route: {}", nest("[", "1", "]", 100_000)),
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (code, text) = check(&p);
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
    }
    assert_eq!(
        m.value("vector(1)"),
        Some(1.0),
        "the server keeps answering"
    );
}

/// Label matchers with regular expressions nested thousands deep: the
/// regex engine's own nesting limit refuses them with a 400 naming the
/// expression, in queries, silences and Alertmanager filters.
#[test]
fn deep_matchers_are_refused() {
    let m = Mlmon::start(None);
    let c = client();
    let deep = nest("(", "a", ")", 3000);
    for q in [
        format!("x{{a=~\"{deep}\"}}"),
        format!("{{__name__=~\"{deep}\"}}"),
    ] {
        let r = c
            .get(m.url("/api/v1/query"))
            .query(&[("query", &q)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().unwrap().contains("regex"));
    }
    let silence = serde_json::json!({
        "matchers": [{"name": "a", "value": deep, "isRegex": true}],
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z",
        "createdBy": "x", "comment": "y",
    });
    let r = c
        .post(m.url("/api/v2/silences"))
        .json(&silence)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    for filter in [format!("{{a=~\"{deep}\"}}"), "{".repeat(3000)] {
        let r = c
            .get(m.url("/api/v2/alerts"))
            .query(&[("filter", &filter)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    assert_eq!(
        m.value("vector(1)"),
        Some(1.0),
        "the server keeps answering"
    );
}
