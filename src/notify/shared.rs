//! The notifier as the server shares it: a mutex, a wake-up for the
//! dispatcher and the delivery metrics.

use super::*;

/// The notifier as the server shares it: the state machine, a wake-up for
/// the dispatcher when alerts arrive, and delivery metrics.
pub struct Shared {
    pub notifier: std::sync::Mutex<Notifier>,
    pub wake: tokio::sync::Notify,
    pub metrics: send::Metrics,
}

impl Shared {
    pub fn new(notifier: Notifier) -> Shared {
        Shared {
            notifier: std::sync::Mutex::new(notifier),
            wake: tokio::sync::Notify::new(),
            metrics: send::Metrics::default(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Notifier> {
        self.notifier.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a test notification through every integration of `receiver`
    /// (with `alerts`, or a sample alert): each integration's name and how
    /// its delivery went. `None` if there is no such receiver.
    pub async fn test_receiver(
        &self,
        receiver: &str,
        alerts: Vec<Alert>,
        now: Timestamp,
    ) -> Option<Vec<(String, send::Delivery)>> {
        let (jobs, library) = {
            let mut n = self.lock();
            let jobs = n.test_job(receiver, alerts, now).ok()?;
            (jobs, n.library().clone())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut out = Vec::new();
        for job in &jobs {
            let d = send::deliver(job, &library, deadline, &self.metrics).await;
            out.push((job.integration_name(), d));
        }
        Some(out)
    }

    /// What each integration of `receiver` would send for `alerts` (a
    /// sample alert when empty), as [`send::preview`] shows it; the error
    /// if there is no such receiver.
    pub fn preview(
        &self,
        receiver: &str,
        alerts: Vec<Alert>,
        now: Timestamp,
    ) -> Result<Vec<serde_json::Value>, String> {
        let (jobs, library) = {
            let mut n = self.lock();
            let jobs = n.test_job(receiver, alerts, now)?;
            (jobs, n.library().clone())
        };
        Ok(jobs.iter().map(|j| send::preview(j, &library)).collect())
    }

    /// Takes alerts in and wakes the dispatcher.
    pub fn put(&self, alerts: Vec<Incoming>, now: Timestamp) {
        self.lock().put(alerts, now);
        self.wake.notify_one();
    }
}
