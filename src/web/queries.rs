//! Where user queries run: at most `max_concurrency` at once (Prometheus'
//! `--query.max-concurrency`); more wait for a slot up to the query
//! timeout, then get a 503. Each runs on a thread of its own with a large
//! stack and a lower CPU priority (nice +10, inherited by the threads it
//! splits work over), so a saturating query load leaves the cores first
//! to rule evaluation, ingest and notification delivery, which run on the
//! runtime's threads at normal priority.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::ApiError;

/// Stack of a query thread: evaluation recurses once per level of the
/// query (at most `promql::nesting::MAX_DEPTH`), a few frames each.
/// Reserved address space; only what is used is committed.
const STACK_BYTES: usize = 64 << 20;
/// How much nicer query threads are than the rest of mlmon.
const NICENESS: i32 = 10;

pub struct Queries {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
}

impl Queries {
    /// `wait`: how long a query waits for a slot before a 503.
    pub fn new(max_concurrency: usize, wait: Duration) -> Queries {
        Queries {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            max: max_concurrency,
            wait,
        }
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Runs `f` (one query, or a page's queries) when a slot is free.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(ApiError::Unavailable("mlmon is shutting down".into())),
            Err(_) => {
                return Err(ApiError::Unavailable(format!(
                    "too many concurrent queries: all {} slots stayed busy for {:?} (query.max_concurrency)",
                    self.max, self.wait
                )))
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("query".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                lower_priority();
                let _ = tx.send(f());
                drop(permit);
            })
            .map_err(|e| ApiError::Internal(format!("cannot start a query thread: {e}")))?;
        rx.await
            .map_err(|_| ApiError::Internal("a query thread panicked".into()))
    }
}

/// Makes the calling thread nicer (Linux: priority is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority only read their integer arguments.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, NICENESS);
    }
}
