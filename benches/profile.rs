//! Data profiles of a large file: `cargo bench --bench profile` writes a
//! CSV of `PROFILE_MB` (default 1024) megabytes (five numeric and three
//! categorical columns, as the example's data) and profiles it with the
//! default row cap, printing the time and this process' peak RSS, which
//! the row cap bounds whatever the file's size. Asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::time::Instant;

fn main() {
    let mb: u64 = std::env::var("PROFILE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let cap: usize = std::env::var("PROFILE_ROW_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let started = Instant::now();
    {
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        writeln!(
            w,
            "gender,lunch,group,math_score,reading_score,writing_score,age,hours"
        )
        .unwrap();
        let mut rng = common::Rng(9);
        let mut written = 0u64;
        while written < mb << 20 {
            let line = format!(
                "{},{},group {},{},{},{},{:.1},{:.2}\n",
                ["female", "male"][(rng.next() % 2) as usize],
                ["standard", "free/reduced"][(rng.next() % 2) as usize],
                ["A", "B", "C", "D", "E"][(rng.next() % 5) as usize],
                rng.next() % 101,
                rng.next() % 101,
                rng.next() % 101,
                15.0 + rng.unit() * 10.0,
                rng.unit() * 40.0,
            );
            written += line.len() as u64;
            w.write_all(line.as_bytes()).unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "wrote {:.0} MB in {:.1} s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let rss_before = common::proc_number(std::process::id(), "status", "VmHWM:").unwrap_or(0);
    let started = Instant::now();
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let (p, _) = mlmon::ingest::profile::profile_csv("big.csv", f, cap).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let rss = common::proc_number(std::process::id(), "status", "VmHWM:").unwrap_or(0);
    println!(
        "profiled {} rows ({:.0} MB) in {secs:.1} s ({:.0} MB/s), row cap {cap}; peak RSS {:.1} MiB (before: {:.1} MiB)",
        p.rows,
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / secs,
        rss as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}
