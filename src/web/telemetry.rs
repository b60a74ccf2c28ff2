//! mlmon's metrics about itself: HTTP requests by handler and code, samples
//! ingested by source, and the process' CPU, memory and file descriptors
//! (read from procfs, so `process_*` mean what client libraries mean).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct HttpMetrics {
    /// (handler, code) → (count, total seconds)
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
    pub samples_remote_write: AtomicU64,
    pub samples_push: AtomicU64,
    pub remote_write_histograms_dropped: AtomicU64,
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

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Figures about this process, from /proc/self.
#[derive(Debug, Default, Clone)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

pub fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    // SAFETY: sysconf and getrlimit only read process-wide values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
            p.cpu_seconds = (num(11) + num(12)) / ticks;
            p.virtual_bytes = num(20);
            p.resident_bytes = num(21) * page;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("btime ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                })
                .unwrap_or(0.0);
            p.start_time_seconds = boot + num(19) / ticks;
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .unwrap_or(0.0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        p.max_fds = lim.rlim_cur as f64;
    }
    p
}
