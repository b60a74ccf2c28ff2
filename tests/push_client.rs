//! Python's `prometheus_client` against mlmon's push API: `push_to_gateway`
//! (PUT), `pushadd_to_gateway` (POST) and `delete_from_gateway` (DELETE)
//! behave as against a Pushgateway, including base64-encoded grouping
//! values for labels that contain a slash.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, pushadd_to_gateway, delete_from_gateway
gw, step = sys.argv[1], sys.argv[2]
key = {"instance": "vm/1"}
r1 = CollectorRegistry()
Gauge("ml_model_r2_score", "R2 on the test split", ["model"], registry=r1).labels("enet").set(0.87)
Counter("ml_runs", "Pipeline runs", registry=r1).inc(3)
r2 = CollectorRegistry()
Gauge("ml_model_rmse", "RMSE on the test split", registry=r2).set(5.25)
if step == "push":
    push_to_gateway(gw, job="ml-pipeline", registry=r1, grouping_key=key)
elif step == "pushadd":
    pushadd_to_gateway(gw, job="ml-pipeline", registry=r2, grouping_key=key)
elif step == "replace":
    push_to_gateway(gw, job="ml-pipeline", registry=r2, grouping_key=key)
elif step == "delete":
    delete_from_gateway(gw, job="ml-pipeline", grouping_key=key)
"#;

fn run(gw: &str, step: &str) {
    let out = Command::new("python3")
        .args(["-c", SCRIPT, gw, step])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client {step} failed (install it with scripts/test.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pushed_lines(c: &reqwest::blocking::Client, m: &Mlmon) -> Vec<String> {
    let text = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.contains("job=\"ml-pipeline\"") && !l.starts_with("push_"))
        .map(String::from)
        .collect()
}

#[test]
fn prometheus_client_push_pushadd_delete() {
    if !common::have(&["python3:prometheus_client"]) {
        return;
    }
    let m = Mlmon::start(None);
    let c = client();
    let gw = format!("127.0.0.1:{}", m.port);

    run(&gw, "push");
    let lines = pushed_lines(&c, &m);
    assert!(
        lines.contains(
            &"ml_model_r2_score{instance=\"vm/1\",job=\"ml-pipeline\",model=\"enet\"} 0.87"
                .to_string()
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"ml_runs_total{instance=\"vm/1\",job=\"ml-pipeline\"} 3".to_string()),
        "{lines:#?}"
    );

    run(&gw, "pushadd");
    let lines = pushed_lines(&c, &m);
    assert!(
        lines.iter().any(|l| l.starts_with("ml_model_r2_score{")),
        "POST keeps other families: {lines:#?}"
    );
    assert!(
        lines.contains(&"ml_model_rmse{instance=\"vm/1\",job=\"ml-pipeline\"} 5.25".to_string()),
        "{lines:#?}"
    );

    run(&gw, "replace");
    let lines = pushed_lines(&c, &m);
    assert!(
        !lines.iter().any(|l| l.starts_with("ml_model_r2_score{")),
        "PUT replaces the group: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ml_model_rmse{")),
        "{lines:#?}"
    );
    let v = json(&c, &m.url("/api/v1/query?query=ml_model_rmse"));
    assert_eq!(v["data"]["result"][0]["metric"]["instance"], "vm/1");
    assert_eq!(v["data"]["result"][0]["value"][1], "5.25");

    run(&gw, "delete");
    assert!(pushed_lines(&c, &m).is_empty());
    let v = json(&c, &m.url("/api/v1/query?query=ml_model_rmse"));
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "deleted series are stale"
    );
}
