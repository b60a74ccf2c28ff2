//! A short soak (about two minutes, on the debug build) in the normal
//! suite: mixed load for a while, then no failed write, no query error and
//! rule groups on schedule. The figures it prints are not asserted; the
//! long soak is `cargo bench --bench soak` (docs/benchmarks.md).

mod common;
#[path = "common/soak.rs"]
mod soak;

use std::time::Duration;

#[test]
fn a_short_soak_keeps_every_write_and_the_rule_schedule() {
    let report = soak::run(soak::SoakOptions {
        duration: Duration::from_secs(100),
        samples_per_sec: 5_000,
        series: 2_000,
        scrape_series: 1_000,
    });
    report.print();
    assert_eq!(report.failed_writes, 0, "writes failed under load");
    assert_eq!(report.query_errors, 0, "queries failed under load");
    assert!(report.refused_as_expected > 0);
    assert!(
        report.samples_written > 100_000,
        "{}",
        report.samples_written
    );
    assert!(
        report.max_rule_lag_s <= report.rule_interval_s,
        "rule evaluation fell {} s behind",
        report.max_rule_lag_s
    );
}
