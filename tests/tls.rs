//! https targets: a self-signed server (openssl + Python's ssl module) is
//! scraped and probed when its CA is configured, and reported down with
//! the certificate problem when it is not.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Mlmon, Proc};

const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = b'{"status": "healthy"}' if self.path == "/health" else b"tls_demo_up 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

#[test]
fn https_targets_need_their_ca() {
    if !common::have(&["openssl", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(dir.path(), "IP:127.0.0.1");
    let port = free_port();
    let server = Command::new("python3")
        .args(["-c", SERVER, &port.to_string()])
        .arg(&cert)
        .arg(&key)
        .spawn()
        .unwrap();
    let _server = Proc(server);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: trusted\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n  - job_name: untrusted\n    scheme: https\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        ca = ca.display()
    );
    let m = Mlmon::start(Some(&config));
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.value("tls_demo_up{job=\"trusted\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "no https scrape\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.value("up{job=\"untrusted\"}"), Some(0.0));
    let targets: serde_json::Value = m.json("/api/v1/targets");
    let untrusted = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scrapePool"] == "untrusted")
        .cloned()
        .unwrap();
    let why = untrusted["lastError"].as_str().unwrap();
    assert!(why.contains("certificate"), "{why}");
}
