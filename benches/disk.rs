//! Bytes on disk as a user sees them: `cargo bench --bench disk`, run from
//! the repository root so that mlmon's default collectors (host, and
//! artifacts from `./artifacts`) append as on a real VM. Prints figures,
//! asserts nothing.
//!
//! 1. **load**: the realistic dataset (`DISK_BENCH_DATA`, Prometheus text
//!    with millisecond timestamps, series-major, as `../shared/bench`'s
//!    `realdata.py` writes it; built with that script when the variable is
//!    unset and the script is there) is remote-written once; then the data
//!    directory's size is sampled every 10 s for `DISK_SECONDS` (default
//!    600), with the bytes the process wrote (`/proc/<pid>/io`).
//! 2. **continuous**: a fresh server takes 1,000 series every 15 s for
//!    `DISK_SECONDS`; the directory is sampled every 10 s.
//! 3. **quiet**: collectors off, the dataset loaded, then two minutes of
//!    nothing: bytes written per minute after the first checkpoint.
//!
//! Each prints max and final bytes per sample.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlmon::model::{Labels, Sample};

/// `write_bytes` of `/proc/<pid>/io`: bytes the process caused to be sent
/// to storage.
fn written(pid: u32) -> u64 {
    common::proc_number(pid, "io", "write_bytes:").unwrap_or(0)
}

struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `mlmon serve` from the current directory (the repository root), on
    /// its defaults plus `config`.
    fn start(config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let data = dir.path().join("data");
        let cfg = dir.path().join("mlmon.yml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("mlmon.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        common::wait_ready(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
            &mut child,
        );
        Server {
            child,
            port,
            data,
            _dir: dir,
        }
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    fn metric(&self, name: &str) -> f64 {
        let text = common::client()
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The realistic dataset as (labels, samples) per series.
fn dataset() -> Vec<(Labels, Vec<Sample>)> {
    let path = match std::env::var("DISK_BENCH_DATA") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let script = Path::new("../shared/bench/realdata.py");
            let capture = Path::new("../shared/bench/data/node-capture.txt.xz");
            assert!(
                script.exists() && capture.exists(),
                "set DISK_BENCH_DATA to the realistic dataset (../shared/bench/realdata.py --out-stem X writes X.prom)"
            );
            let stem = std::env::temp_dir().join("mlmon-disk-bench-real");
            // 24 h old, 18 h aligned, as the anchor harness places it.
            let day = 86_400_000;
            let start = (mlmon::model::now_ms() - day) / 64_800_000 * 64_800_000;
            let ok = Command::new("python3")
                .arg(script)
                .arg("--capture")
                .arg(capture)
                .arg("--out-stem")
                .arg(&stem)
                .arg("--start-ms")
                .arg(start.to_string())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "realdata.py failed");
            stem.with_extension("prom")
        }
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let mut last_key = String::new();
    for family in
        mlmon::expfmt::parse(&text, mlmon::expfmt::Format::Text).expect("the dataset parses")
    {
        for s in family.samples {
            let mut pairs = vec![("__name__".to_string(), s.name.clone())];
            pairs.extend(s.labels);
            let key = format!("{pairs:?}");
            let sample = Sample {
                t: s.timestamp_ms.expect("the dataset has timestamps"),
                v: s.value,
            };
            if key == last_key {
                out.last_mut().expect("a series").1.push(sample);
            } else {
                last_key = key;
                let labels = Labels::new(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
                    .expect("valid labels");
                out.push((labels, vec![sample]));
            }
        }
    }
    out
}

fn load(server: &Server, data: &[(Labels, Vec<Sample>)]) -> usize {
    let c = common::client();
    let mut batch: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let mut n = 0;
    let mut total = 0;
    for (labels, samples) in data {
        for part in samples.chunks(5000) {
            batch.push((labels.clone(), part.to_vec()));
            n += part.len();
            if n >= 5000 {
                common::remote_write(&c, &server.write_url(), &batch);
                total += n;
                batch.clear();
                n = 0;
            }
        }
    }
    if !batch.is_empty() {
        common::remote_write(&c, &server.write_url(), &batch);
        total += n;
    }
    total
}

/// Samples the directory every 10 s for `seconds`, calling `tick` every
/// second in between; returns (max, final) bytes.
fn watch(
    server: &Server,
    seconds: u64,
    samples: impl Fn() -> usize,
    tick: impl Fn(),
) -> (u64, u64) {
    let start = Instant::now();
    let pid = server.child.id();
    let mut max = 0;
    let mut last = 0;
    let mut written_before = written(pid);
    println!(
        "  {:>5} {:>10} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "t_s", "dir_bytes", "B/sample", "parts", "series", "wal", "written/10s"
    );
    while start.elapsed() < Duration::from_secs(seconds) {
        // `tick` every second (it keeps its own schedule), a row every 10 s.
        let row = Instant::now();
        while row.elapsed() < Duration::from_secs(10) {
            tick();
            std::thread::sleep(Duration::from_secs(1));
        }
        let bytes = common::dir_bytes(&server.data);
        let w = written(pid);
        max = max.max(bytes);
        last = bytes;
        println!(
            "  {:>5} {:>10} {:>9.3} {:>10} {:>10} {:>10} {:>12}",
            start.elapsed().as_secs(),
            bytes,
            bytes as f64 / samples() as f64,
            server.metric("mlmon_storage_chunk_bytes"),
            server.metric("mlmon_storage_series_bytes"),
            server.metric("mlmon_storage_wal_bytes"),
            w - written_before
        );
        written_before = w;
    }
    (max, last)
}

fn main() {
    let seconds: u64 = std::env::var("DISK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let data = dataset();
    let n: usize = data.iter().map(|d| d.1.len()).sum();

    println!(
        "1. load: {n} samples of {} series, default collectors, {seconds} s",
        data.len()
    );
    let server = Server::start("{}\n");
    let t = Instant::now();
    load(&server, &data);
    println!("  loaded in {:.2} s", t.elapsed().as_secs_f64());
    let (max, last) = watch(&server, seconds, || n, || {});
    println!(
        "  load: max {max} B ({:.3} B/sample), final {last} B ({:.3} B/sample)",
        max as f64 / n as f64,
        last as f64 / n as f64
    );
    drop(server);

    println!("2. continuous: 1,000 series every 15 s, default collectors, {seconds} s");
    let server = Server::start("{}\n");
    let c = common::client();
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let labels: Vec<Labels> = (0..1000)
        .map(|i| {
            Labels::new([
                ("__name__", format!("bench_gauge_{}", i % 10).as_str()),
                ("instance", format!("host-{}:9100", i / 10).as_str()),
                ("job", "bench"),
            ])
            .unwrap()
        })
        .collect();
    let mut rng = common::Rng(7);
    let values: std::sync::Mutex<Vec<f64>> =
        std::sync::Mutex::new((0..1000).map(|_| (rng.unit() * 1000.0).round()).collect());
    let last_send = std::sync::Mutex::new(None::<Instant>);
    let send = || {
        let mut due = last_send.lock().unwrap();
        if due.is_some_and(|t| t.elapsed() < Duration::from_secs(15)) {
            return;
        }
        *due = Some(Instant::now());
        let now = mlmon::model::now_ms();
        let mut v = values.lock().unwrap();
        let batch: Vec<(Labels, Vec<Sample>)> = labels
            .iter()
            .zip(v.iter_mut())
            .enumerate()
            .map(|(i, (l, x))| {
                // Counters for half, slowly moving gauges for the rest.
                *x += if i % 2 == 0 { (i % 7) as f64 } else { 0.0 };
                (l.clone(), vec![Sample { t: now, v: *x }])
            })
            .collect();
        common::remote_write(&c, &server.write_url(), &batch);
        sent.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
    };
    let (max, last) = watch(
        &server,
        seconds,
        || sent.load(std::sync::atomic::Ordering::Relaxed).max(1),
        send,
    );
    // The data encoded: parts and series files (what the log holds is
    // not encoded yet).
    let encoded =
        server.metric("mlmon_storage_chunk_bytes") + server.metric("mlmon_storage_series_bytes");
    println!(
        "  continuous: {} samples sent; max {max} B = {:.2}× the final {last} B; final = {:.2}× the encoded data ({encoded} B: parts, series)",
        sent.load(std::sync::atomic::Ordering::Relaxed),
        max as f64 / last.max(1) as f64,
        last as f64 / encoded
    );
    drop(server);

    println!("3. quiet: collectors off, dataset loaded, then 120 s of nothing");
    let server = Server::start("host:\n  interval: 0s\nartifacts:\n  interval: 0s\n");
    load(&server, &data);
    // The checkpoint after the load.
    std::thread::sleep(Duration::from_secs(25));
    let pid = server.child.id();
    let before = written(pid);
    let size_before = common::dir_bytes(&server.data);
    std::thread::sleep(Duration::from_secs(120));
    let w = written(pid) - before;
    println!(
        "  quiet: {} bytes written in 120 s ({} per minute); directory {size_before} → {} bytes",
        w,
        w / 2,
        common::dir_bytes(&server.data)
    );
}
