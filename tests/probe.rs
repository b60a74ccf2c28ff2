//! Probes against a local HTTP server that answers healthy, unhealthy,
//! 500, invalid JSON, and hangs past the timeout.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, Mlmon, Proc};
use serde_json::Value;

const SERVER: &str = r#"
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())
    def do_GET(self):
        if self.path == "/healthy":
            self.answer(200, json.dumps({"status": "healthy", "model_metrics": {"test_r2": 0.88}}))
        elif self.path == "/unhealthy":
            self.answer(200, json.dumps({"status": "degraded", "model_metrics": {"test_r2": 0.61}}))
        elif self.path == "/error":
            self.answer(500, json.dumps({"status": "healthy"}))
        elif self.path == "/badjson":
            self.answer(200, "<html>oops</html>")
        elif self.path == "/hang":
            time.sleep(5)
            self.answer(200, json.dumps({"status": "healthy"}))
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn probes_judge_status_json_and_timeouts() {
    if !common::have(&["python3"]) {
        return;
    }
    let port = free_port();
    let server = Command::new("python3")
        .args(["-c", SERVER, &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = server;
    common::wait_ready(
        &format!("http://127.0.0.1:{port}/healthy"),
        Duration::from_secs(20),
        &mut server,
    );
    let _server = Proc(server);
    let probe = |name: &str, path: &str| {
        format!(
            "  - name: {name}\n    url: http://127.0.0.1:{port}{path}\n    interval: 1s\n    timeout: 800ms\n    json:\n      - field: status\n        equals: healthy\n      - field: model_metrics.test_r2\n        metric: ml_model_api_test_r2\n"
        )
    };
    let config = format!(
        "probes:\n{}{}{}{}{}",
        probe("healthy", "/healthy"),
        probe("unhealthy", "/unhealthy"),
        probe("error", "/error"),
        probe("badjson", "/badjson"),
        probe("hang", "/hang"),
    );
    let m = Mlmon::start(Some(&config));
    let success = |name: &str| m.value(&format!("probe_success{{probe=\"{name}\"}}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ["healthy", "unhealthy", "error", "badjson", "hang"]
        .iter()
        .any(|p| success(p).is_none())
    {
        assert!(
            Instant::now() < deadline,
            "probes did not all run\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(success("healthy"), Some(1.0));
    assert_eq!(
        m.value("ml_model_api_test_r2{probe=\"healthy\"}"),
        Some(0.88)
    );
    assert_eq!(
        m.value("probe_http_status_code{probe=\"healthy\"}"),
        Some(200.0)
    );
    assert!(
        m.value("probe_duration_seconds{probe=\"healthy\"}")
            .unwrap()
            < 0.8
    );
    assert_eq!(success("unhealthy"), Some(0.0));
    // The gauge is read even when the check fails.
    assert_eq!(
        m.value("ml_model_api_test_r2{probe=\"unhealthy\"}"),
        Some(0.61)
    );
    assert_eq!(success("error"), Some(0.0));
    assert_eq!(
        m.value("probe_http_status_code{probe=\"error\"}"),
        Some(500.0)
    );
    assert_eq!(success("badjson"), Some(0.0));
    assert_eq!(success("hang"), Some(0.0));
    assert_eq!(m.value("probe_http_status_code{probe=\"hang\"}"), Some(0.0));
    // The alert the shipped rules will use.
    let down: Value = client()
        .get(m.url("/api/v1/query"))
        .query(&[("query", "probe_success == 0")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(down["data"]["result"].as_array().unwrap().len(), 4);

    let status: Value = m.json("/api/v1/probes");
    let by_name = |n: &str| {
        status["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("healthy")["health"], "up");
    let reasons: Vec<String> = ["unhealthy", "error", "badjson", "hang"]
        .iter()
        .map(|n| by_name(n)["lastError"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons[0].contains("degraded"), "{reasons:?}");
    assert!(reasons[1].contains("500"), "{reasons:?}");
    assert!(reasons[2].contains("not JSON"), "{reasons:?}");
    assert!(reasons[3].contains("deadline"), "{reasons:?}");
}
