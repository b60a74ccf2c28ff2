//! Helpers for tests that run the real `mlmon` binary and real peers
//! (Prometheus, promtool, Python's prometheus_client) on free loopback
//! ports. Every process started here is killed when its handle drops.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of `tool`; panics with a pointer to the README's test command
/// when it is missing (tests check `have` first).
pub fn require(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!(
            "{tool} is not installed; run the test suite with scripts/test.sh, which installs it"
        )
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Whether every peer a test needs is installed: a program on `PATH`
/// (`promtool`, `chromium`, ...) or a Python module (`python3:aiosmtpd`).
/// When one is missing the test says on the terminal that it was skipped
/// and should return; with `MLMON_REQUIRE_PEERS` set (scripts/test.sh and
/// so CI set it, after installing them) a missing peer fails the test.
pub fn have(peers: &[&str]) -> bool {
    let missing: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| match p.split_once(':') {
            Some((python, module)) => !Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => which(p).is_none(),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(
        std::env::var_os("MLMON_REQUIRE_PEERS").is_none(),
        "{test}: {} not installed (MLMON_REQUIRE_PEERS is set)",
        missing.join(", ")
    );
    // Past the test harness' capture, so it shows in `cargo test`'s output.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {} not installed (scripts/test.sh installs it)",
        missing.join(", ")
    );
    false
}

pub fn client() -> reqwest::blocking::Client {
    // mlmon's TLS stack (rustls) needs its crypto provider in this process too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `url` until it answers 200 or the deadline passes.
pub fn wait_ready(url: &str, within: Duration, child: &mut Child) {
    let c = client();
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited before it was ready: {status}");
        }
        if c.get(url)
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} not ready within {within:?}");
}

/// A running `mlmon serve` on a free port with its own data directory.
pub struct Mlmon {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: Option<String>,
}

impl Mlmon {
    pub fn start(config: Option<&str>) -> Mlmon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config.map(str::to_string))
    }

    /// Starts in `dir` (its `data` subdirectory holds the store).
    pub fn start_in(dir: tempfile::TempDir, config: Option<String>) -> Mlmon {
        let cwd = dir.path().to_path_buf();
        Self::spawn(dir, config, &cwd)
    }

    /// Starts with the repository root as its working directory, as a
    /// user runs it there (benchmarks: the default collectors find what
    /// they find on this machine); data and log in a temporary directory.
    pub fn start_in_repository(config: Option<&str>) -> Mlmon {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn(
            dir,
            config.map(str::to_string),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
    }

    fn spawn(dir: tempfile::TempDir, config: Option<String>, cwd: &Path) -> Mlmon {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlmon"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("mlmon.log")).unwrap(),
            ));
        if let Some(c) = &config {
            let p = dir.path().join("mlmon.yml");
            std::fs::write(&p, c).unwrap();
            cmd.arg("--config").arg(p);
        }
        let mut child = cmd.spawn().unwrap();
        wait_ready(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
            &mut child,
        );
        Mlmon {
            child,
            port,
            dir,
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// GET `path` as JSON (asserting a 2xx answer).
    pub fn json(&self, path: &str) -> serde_json::Value {
        json(&client(), &self.url(path))
    }

    /// GET `path` as text, whatever the status.
    pub fn text(&self, path: &str) -> String {
        client().get(self.url(path)).send().unwrap().text().unwrap()
    }

    /// SIGHUP: reload the configuration.
    pub fn hup(&self) {
        Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// The result list of an instant query at now.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = client()
            .get(self.url("/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of the first result of an instant query, if any.
    pub fn value(&self, q: &str) -> Option<f64> {
        self.query(q).first()?["value"][1].as_str()?.parse().ok()
    }

    /// Pushes `text` (exposition format) as the group `job`, as a
    /// Pushgateway client does, asserting it was accepted.
    pub fn push(&self, job: &str, text: &str) {
        let r = client()
            .put(self.url(&format!("/metrics/job/{job}")))
            .body(text.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "push: {}", r.status());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mlmon.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), 15);
        self.child.wait().unwrap()
    }

    /// Stops with SIGTERM and hands over the directory (its data), to
    /// start again with another configuration.
    pub fn terminate_keeping_dir(mut self) -> tempfile::TempDir {
        self.terminate();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Starts again on the same data directory (after kill or terminate).
    pub fn restart(self) -> Mlmon {
        let mut this = self;
        let _ = this.child.kill();
        let _ = this.child.wait();
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().unwrap());
        let config = this.config.take();
        drop(this);
        Self::start_in(dir, config)
    }
}

impl Drop for Mlmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// A real Prometheus (Debian package `prometheus`) on a free port, with
/// `config` as its prometheus.yml and its data in a temporary directory.
pub struct Prometheus {
    pub base: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(config: &str, extra_args: &[&str]) -> Prometheus {
        Prometheus::start_on(free_port(), config, extra_args)
    }

    /// [`Prometheus::start`] listening on `port`.
    pub fn start_on(port: u16, config: &str, extra_args: &[&str]) -> Prometheus {
        let prometheus = require("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_file(dir.path(), "prometheus.yml", config);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut child = Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(
            &format!("{base}/-/ready"),
            Duration::from_secs(60),
            &mut child,
        );
        Prometheus {
            base,
            _proc: Proc(child),
            _dir: dir,
        }
    }
}

/// A child process killed on drop (Prometheus, ...).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

pub fn json(c: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    let resp = c.get(url).send().unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    assert!(status.is_success(), "{url}: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Writes `dir/name` (creating `dir` if needed).
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small deterministic generator (splitmix64) for test and bench data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends `batch` with Prometheus remote write 1.0 to `url` (mlmon or a
/// real Prometheus) and asserts it was accepted.
/// Runs `cmd`, fails with its output unless it succeeds; its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms until it gives a value; fails with `what` and
/// `log()` (the server's log, usually) after `within`.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
    log: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sample of each series, stamped now, valued `value(i)` for the
/// `i`th: what a scrape of them all would store.
pub fn one_sample_each(
    labels: &[mlmon::model::Labels],
    value: impl Fn(usize) -> f64,
) -> Vec<(mlmon::model::Labels, Vec<mlmon::model::Sample>)> {
    let t = mlmon::model::now_ms();
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), vec![mlmon::model::Sample { t, v: value(i) }]))
        .collect()
}

pub fn remote_write(
    c: &reqwest::blocking::Client,
    url: &str,
    batch: &[(mlmon::model::Labels, Vec<mlmon::model::Sample>)],
) {
    let r = c
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(mlmon::ingest::remote_write::encode(batch))
        .send()
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{url}: {status}: {}",
        r.text().unwrap_or_default()
    );
}

/// A test CA and a server certificate it signs for `san` (e.g.
/// `IP:127.0.0.1` or `DNS:localhost`), made with openssl in `dir`:
/// `(ca.pem, cert.pem, key.pem)`.
pub fn certificates(dir: &Path, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mlmon test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    sign(dir, "cert.pem", "key.pem", "mlmon test server", san);
    let d = |f: &str| dir.join(f);
    (d("ca.pem"), d("cert.pem"), d("key.pem"))
}

/// A certificate `cert` with its key `key` (files in `dir`) for subject
/// `cn` and `san`, signed by the CA [`certificates`] made there.
pub fn sign(dir: &Path, cert: &str, key: &str, cn: &str, san: &str) {
    let ext = format!("{cert}.cnf");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    let csr = format!("{cert}.csr");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            cert,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new(require("openssl"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl {args:?}");
}

/// One request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
    pub at: Instant,
}

/// A local HTTP server playing Slack or a webhook receiver: records every
/// POST and answers with the scripted statuses in turn (429 with
/// `Retry-After: 1`), then 200; with `hang`, it never answers.
pub struct HttpSink {
    pub port: u16,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

/// The next HTTP/1.1 request on `conn`: its path and body (`None` when
/// the connection ends).
pub fn read_request(conn: &std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

impl HttpSink {
    pub fn start(script: &[u16], hang: bool) -> HttpSink {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = std::sync::Arc::new(std::sync::Mutex::new(script.to_vec()));
        let rec = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (rec, script) = (rec.clone(), script.clone());
                std::thread::spawn(move || loop {
                    let Some((path, body)) = read_request(&conn) else {
                        return;
                    };
                    if hang {
                        rec.lock().unwrap().push(Received {
                            path,
                            body: String::from_utf8_lossy(&body).into(),
                            status: 0,
                            at: Instant::now(),
                        });
                        std::thread::sleep(Duration::from_secs(3600));
                        return;
                    }
                    let status = {
                        let mut s = script.lock().unwrap();
                        if s.is_empty() {
                            200
                        } else {
                            s.remove(0)
                        }
                    };
                    rec.lock().unwrap().push(Received {
                        path,
                        body: String::from_utf8_lossy(&body).into(),
                        status,
                        at: Instant::now(),
                    });
                    let extra = if status == 429 {
                        "Retry-After: 1\r\n"
                    } else {
                        ""
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{extra}Content-Type: text/plain\r\n\r\nok"
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                });
            }
        });
        HttpSink { port, received }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Bodies of the requests answered 2xx, as JSON.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// Waits until `n` requests were accepted.
    pub fn wait_accepted(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.accepted();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Bytes of every file under `dir`, as a user's `du -sb` sees the data but
/// without directory entries (the anchor harness counts files the same way).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The first number after `key` in `/proc/<pid>/<file>`: e.g. `status`,
/// `VmRSS:` (kB) or `io`, `write_bytes:` (bytes).
pub fn proc_number(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `target/test-artifacts/<name>`: screenshots and other files a test
/// leaves for people to look at.
pub fn test_artifacts(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `url` in headless Chromium: the DOM after scripts ran, and the
/// console messages it logged.
pub fn browse(url: &str, width: u32, screenshot: Option<&Path>) -> (String, Vec<String>) {
    let chromium = require("chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={width},2400"));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The visible text of a DOM dump (tags removed, entities decoded).
pub fn text(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(user + system)` CPU seconds a process has used (benchmarks).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// A number from the environment, or `default` (benchmark sizes).
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
