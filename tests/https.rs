//! mlmon serving HTTPS from Prometheus' web config, with certificates made
//! by openssl here: TLS 1.2 and 1.3 handshakes, basic auth over TLS, a
//! certificate rotated on disk served to the next connection, security
//! headers, curl, `promtool query instant` and a real Prometheus scraping
//! `/metrics` and `/federate` over https; then, reloaded into mutual TLS,
//! a client without a certificate refused, one with an allowed SAN
//! accepted and one without refused; `mlmon run` reporting over HTTPS with
//! a client certificate and credentials from `--http.config.file`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Proc, Prometheus};

/// bcrypt of "s3cret" (cost 4).
fn hash() -> String {
    bcrypt::hash("s3cret", 4).unwrap()
}

/// A certificate signed by the test CA in `dir` for `san`, named `name`
/// (`name.pem`, `name.key`), with subject `cn`.
fn signed(dir: &Path, name: &str, cn: &str, san: &str) {
    common::sign(dir, &format!("{name}.pem"), &format!("{name}.key"), cn, san);
}

/// `openssl s_client` against `port` with `args`; its output.
fn s_client(port: u16, args: &[&str]) -> String {
    let out = Command::new(common::require("openssl"))
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::require("curl"))
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn mlmon_serves_https_with_prometheus_web_config() {
    if !common::have(&["openssl", "curl", "prometheus", "promtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::certificates(d, "IP:127.0.0.1");
    signed(d, "client", "pipeline", "DNS:pipeline.example");
    signed(d, "stranger", "stranger", "DNS:stranger.example");
    let hash = hash();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  ops: {hash}\n"
        ),
    )
    .unwrap();
    std::fs::write(d.join("mlmon.yml"), "web:\n  config_file: web.yml\n").unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args(["serve", "--config", "mlmon.yml", "--data-dir", "data"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("mlmon.log")).unwrap())
        .spawn()
        .unwrap();
    let _mlmon = Proc(child);
    let log = || std::fs::read_to_string(d.join("mlmon.log")).unwrap_or_default();
    let url = format!("https://127.0.0.1:{port}");
    let ca = d.join("ca.pem").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !curl(&["--cacert", &ca, &format!("{url}/-/ready")]).0 {
        assert!(Instant::now() < deadline, "not ready over https\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Both TLS versions; plain HTTP on the same port gets nowhere.
    let tls12 = s_client(port, &["-tls1_2", "-CAfile", &ca]);
    assert!(tls12.contains("TLSv1.2"), "{tls12}");
    assert!(tls12.contains("Verify return code: 0"), "{tls12}");
    let tls13 = s_client(port, &["-tls1_3", "-CAfile", &ca]);
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{port}/-/ready")]);
    assert!(!ok);

    // Basic auth over TLS, and the configured header.
    let (_, out) = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/api/v1/query?query=1"),
    ]);
    assert_eq!(out, "401");
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "ops:s3cret",
        "-D",
        "-",
        &format!("{url}/api/v1/query?query=1"),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("\"status\":\"success\""), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{out}"
    );

    // promtool (2.42 takes credentials in the URL and trusts the CA
    // through Go's SSL_CERT_FILE).
    let out = Command::new(common::require("promtool"))
        .args([
            "query",
            "instant",
            &format!("https://ops:s3cret@127.0.0.1:{port}"),
            "vector(42)",
        ])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("42"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes /metrics and /federate over https.
    let prom_config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: mlmon\n    scheme: https\n    basic_auth: {{username: ops, password: s3cret}}\n    tls_config: {{ca_file: {ca}}}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n  - job_name: federate\n    scheme: https\n    metrics_path: /federate\n    params: {{'match[]': ['{{__name__=\"mlmon_build_info\"}}']}}\n    honor_labels: true\n    basic_auth: {{username: ops, password: s3cret}}\n    tls_config: {{ca_file: {ca}}}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    );
    let prom = Prometheus::start(&prom_config, &[]);
    let c = common::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = common::json(&c, &format!("{}/api/v1/query?query=up", prom.base));
        let ups: Vec<(String, String)> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["job"].as_str().unwrap_or_default().to_string(),
                    r["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        if ups.len() == 2 && ups.iter().all(|(_, v)| v == "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus cannot scrape over https: {ups:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(prom);

    // A certificate rotated on disk is served to the next connection.
    let before = s_client(port, &["-CAfile", &ca]);
    assert!(before.contains("mlmon test server"), "{before}");
    signed(d, "rotated", "rotated server", "IP:127.0.0.1");
    std::fs::copy(d.join("rotated.key"), d.join("key.pem")).unwrap();
    std::fs::copy(d.join("rotated.pem"), d.join("cert.pem")).unwrap();
    let after = s_client(port, &["-CAfile", &ca]);
    assert!(after.contains("rotated server"), "{after}");

    // Reloaded into mutual TLS with allowed SANs.
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [pipeline.example]\nbasic_auth_users:\n  ops: {hash}\n"
        ),
    )
    .unwrap();
    let client_cert = ["--cert", "client.pem", "--key", "client.key"];
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "ops:s3cret",
        "-XPOST",
        &format!("{url}/-/reload"),
    ]);
    assert!(ok && out.is_empty(), "{out}");
    let in_dir = |args: &[&str]| {
        let out = Command::new(common::require("curl"))
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "-u",
                "ops:s3cret",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let q = format!("{url}/api/v1/query?query=1");
    assert_eq!(
        in_dir(&[&q]),
        "000",
        "no client certificate must be refused"
    );
    assert_eq!(
        in_dir(&[client_cert.as_slice(), &[q.as_str()]].concat()),
        "200"
    );
    assert_eq!(
        in_dir(&["--cert", "stranger.pem", "--key", "stranger.key", &q]),
        "000",
        "a certificate without an allowed SAN must be refused"
    );

    // `mlmon run` over https with a client certificate and credentials.
    std::fs::write(
        d.join("run-http.yml"),
        "basic_auth: {username: ops, password: s3cret}\ntls_config: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mlmon"))
        .args([
            "run",
            "--pipeline",
            "secure",
            "--url",
            &url,
            "--http.config.file",
            "run-http.yml",
            "--",
            "true",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, runs) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "ops:s3cret",
        "--cert",
        &d.join("client.pem").display().to_string(),
        "--key",
        &d.join("client.key").display().to_string(),
        &format!("{url}/api/v1/runs"),
    ]);
    assert!(ok, "{runs}");
    assert!(runs.contains("\"secure\""), "{runs}");
}

/// What the toolkit refuses, mlmon refuses, naming file, line and key
/// (`promtool check web-config` refuses the same files, but for what
/// rustls cannot do, which Go accepts); a good file passes both.
#[test]
fn bad_web_configs_are_refused_with_file_and_line() {
    if !common::have(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::certificates(d, "IP:127.0.0.1");
    let good = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
    // (web config, what mlmon says, promtool refuses it too)
    let cases = [
        ("tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n", "web.yml:2: tls_server_config.cert_file: cannot read", true),
        ("tls_server_config:\n  cert_file: cert.pem\n", "tls_server_config.key_file: missing one of key or key_file", true),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: ca.key\n", "web.yml:3: tls_server_config.key_file: does not go with the certificate", true),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: Sometimes\n", "web.yml:4: tls_server_config.client_auth_type: invalid ClientAuth: Sometimes", true),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS10\n", "web.yml:4: tls_server_config.min_version: TLS10 is not supported", false),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS14\n", "web.yml:4: tls_server_config.min_version: unknown TLS version: TLS14", true),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n", "web.yml:4: tls_server_config.cipher_suites: TLS_RSA_WITH_AES_128_CBC_SHA is not supported", false),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  cipher_suites: [TLS_MADE_UP]\n", "unknown cipher: TLS_MADE_UP", true),
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_ca_file: ca.pem\n", "client CA's have been configured without a Client Auth Policy", true),
        ("http_server_config:\n  headers:\n    Server: mlmon\n", "web.yml:3: http_server_config.headers.Server: HTTP header \"Server\" can not be configured", true),
        ("http_server_config:\n  headers:\n    X-Frame-Options: always\n", "invalid value for X-Frame-Options", true),
        ("tls_server_config:\n  cert_fil: cert.pem\n", "unknown field `cert_fil`", true),
    ];
    let promtool = common::have(&["promtool"]).then(|| common::require("promtool"));
    let promtool_accepts = |promtool: &std::path::PathBuf| {
        Command::new(promtool)
            .args(["check", "web-config", "web.yml"])
            .current_dir(d)
            .output()
            .unwrap()
            .status
            .success()
    };
    std::fs::write(d.join("web.yml"), good).unwrap();
    if let Some(p) = &promtool {
        assert!(promtool_accepts(p));
    }
    std::fs::write(d.join("mlmon.yml"), "web:\n  config_file: web.yml\n").unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .args(["check", "--config", "mlmon.yml"])
            .current_dir(d)
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (web, want, promtool_refuses) in cases {
        std::fs::write(d.join("web.yml"), web).unwrap();
        if let Some(p) = &promtool {
            assert_eq!(!promtool_accepts(p), promtool_refuses, "promtool on {web}");
        }
        let out = check();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{web}: accepted");
        assert!(text.contains(want), "{web}: wanted {want:?} in\n{text}");
    }
}
