//! The long soak: `cargo bench --bench soak` runs mlmon (release build,
//! from the repository root) under mixed load — remote write at 100,000
//! samples/s over 10,000 series, a 1,000-series scrape every 5 s, pushes,
//! two rule groups every 2 s, dashboard and query traffic with
//! pathological queries — for `SOAK_SECONDS` (default 900), printing RSS,
//! p99 remote-write latency, rule evaluation lag and errors every 10 s and
//! a summary at the end. Loopback only; it stops by itself. Targets: RSS
//! flat after warm-up (growth over the last half ≤ 10 %), zero failed
//! writes, rule lag ≤ one interval.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/soak.rs"]
mod soak;

use std::time::Duration;

fn main() {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let rate = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    println!("soak: {seconds} s at {rate} samples/s");
    let report = soak::run(soak::SoakOptions {
        duration: Duration::from_secs(seconds),
        samples_per_sec: rate,
        series: 10_000,
        scrape_series: 1_000,
    });
    report.print();
    let ok = report.failed_writes == 0
        && report.query_errors == 0
        && report.max_rule_lag_s <= report.rule_interval_s
        && report.rss_growth_last_half() <= 10.0;
    println!("targets {}", if ok { "met" } else { "MISSED" });
}
