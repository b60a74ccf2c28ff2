//! mlmon's metrics about itself: HTTP requests by handler and code, samples
//! ingested by source, and collector runs and errors. (The process' CPU,
//! memory and file descriptors come from `ingest::host::process_stats`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct HttpMetrics {
    /// (handler, code) → (count, total seconds)
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
    pub samples_remote_write: AtomicU64,
    pub samples_otlp: AtomicU64,
    pub samples_push: AtomicU64,
    pub remote_write_histograms_dropped: AtomicU64,
    /// collector → its runs so far
    collectors: Mutex<BTreeMap<String, CollectorStats>>,
}

/// What a collector (host, artifacts, a scrape job, a probe) has done.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CollectorStats {
    pub runs: u64,
    pub errors: u64,
    pub last_seconds: f64,
    pub last_error: Option<String>,
}

impl HttpMetrics {
    pub fn observe(&self, handler: &str, code: u16, took: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((handler.to_string(), code)).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    pub fn requests(&self) -> Vec<((String, u16), (u64, f64))> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Records one run of `collector`, which took `took` and failed with
    /// `error` (a failed run still counts as a run).
    pub fn collected(&self, collector: &str, took: Duration, error: Option<String>) {
        let mut m = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(collector.to_string()).or_default();
        e.runs += 1;
        e.last_seconds = took.as_secs_f64();
        if error.is_some() {
            e.errors += 1;
        }
        e.last_error = error;
    }

    pub fn collectors(&self) -> Vec<(String, CollectorStats)> {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
