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

/// A server that wants a client certificate signed by `argv[4]` and
/// appends every POST's path and body to the file `argv[5]`.
const MUTUAL: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"mtls_demo_up 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        with open(sys.argv[5], "ab") as f:
            f.write(self.path.encode() + b" " + self.rfile.read(n) + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(sys.argv[4])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

/// One `http_config` model everywhere: a scrape job, an Alertmanager of
/// `alerting:` and a webhook receiver reach a server that checks a client
/// certificate and whose own certificate names `metrics.internal`, not
/// the address dialled, through `cert_file`/`key_file` and `server_name`.
#[test]
fn client_certificates_and_server_name_work_for_every_client() {
    if !common::have(&["openssl", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (dir.path().join("server"), dir.path().join("client"));
    std::fs::create_dir_all(&server_dir).unwrap();
    std::fs::create_dir_all(&client_dir).unwrap();
    let (ca, cert, key) = common::certificates(&server_dir, "DNS:metrics.internal");
    let (client_ca, client_cert, client_key) = common::certificates(&client_dir, "DNS:mlmon");
    let posts = dir.path().join("posts.txt");
    let port = free_port();
    let server = Command::new("python3")
        .args(["-c", MUTUAL, &port.to_string()])
        .args([&cert, &key, &client_ca, &posts])
        .spawn()
        .unwrap();
    let _server = Proc(server);
    // Up before mlmon starts: a firing alert is sent again only after the
    // resend delay (a minute), as Prometheus does.
    let up = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < up, "the TLS server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tls = |with_cert: bool, name: bool| {
        let mut t = format!("{{ca_file: {}", ca.display());
        if name {
            t.push_str(", server_name: metrics.internal");
        }
        if with_cert {
            t.push_str(&format!(
                ", cert_file: {}, key_file: {}",
                client_cert.display(),
                client_key.display()
            ));
        }
        t + "}"
    };
    let am = format!(
        "route:\n  receiver: hook\n  group_wait: 0s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: 'https://127.0.0.1:{port}/hook'\n        http_config:\n          tls_config: {}\n",
        tls(true, true)
    );
    let am_path = common::write_file(dir.path(), "alertmanager.yml", &am);
    let job = |name: &str, tls: String| {
        format!("  - job_name: {name}\n    scheme: https\n    tls_config: {tls}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nalertmanager: {}\nalerting:\n  alertmanagers:\n    - scheme: https\n      path_prefix: /external\n      tls_config: {}\n      static_configs:\n        - targets: ['127.0.0.1:{port}']\nscrape_configs:\n{}{}{}",
        am_path.display(),
        tls(true, true),
        job("mutual", tls(true, true)),
        job("nocert", tls(false, true)),
        job("wrongname", tls(true, false)),
    );
    let rules = common::write_file(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: AlwaysOn\n        expr: vector(1)\n",
    );
    let m = Mlmon::start(Some(&format!(
        "{config}rule_files: ['{}']\n",
        rules.display()
    )));
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = |what: &str| {
        std::fs::read_to_string(&posts)
            .unwrap_or_default()
            .contains(what)
    };
    while m.value("mtls_demo_up{job=\"mutual\"}") != Some(1.0)
        || !delivered("/hook {")
        || !delivered("/external/api/v2/alerts [")
    {
        assert!(
            Instant::now() < deadline,
            "scrape, webhook and alertmanager over mutual TLS\nposts: {}\n{}",
            std::fs::read_to_string(&posts).unwrap_or_default(),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let targets: serde_json::Value = m.json("/api/v1/targets");
    let error_of = |job: &str| {
        targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["scrapePool"] == job)
            .map(|t| t["lastError"].as_str().unwrap_or_default().to_string())
            .unwrap()
    };
    assert_eq!(m.value("up{job=\"nocert\"}"), Some(0.0));
    let why = error_of("nocert");
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert_eq!(m.value("up{job=\"wrongname\"}"), Some(0.0));
    let why = error_of("wrongname");
    assert!(why.contains("certificate"), "{why}");
}
