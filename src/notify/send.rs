//! Delivering a [`Job`] through its integration (`integrations`), with
//! Alertmanager's retry rules: what an attempt says is worth retrying
//! (network errors, 5xx, 429 after its `Retry-After`) is retried with
//! exponential backoff until the job's deadline; other answers fail at
//! once. A job carries its integration, so a reload between `due` and
//! delivery changes nothing for it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::integrations::{Attempt, Body, Rendered};
use super::template::Library;
use super::Job;

/// What a delivery left: the outcome and, for the dashboard, the subject
/// (or title) and body it rendered.
pub struct Delivery {
    pub outcome: Result<(), String>,
    pub attempts: u32,
    /// When and why each attempt before the last failed.
    pub retried: Vec<(crate::model::Timestamp, String)>,
    pub rendered: Option<(String, String)>,
    pub seconds: f64,
}

impl Delivery {
    /// A delivery that ended with `outcome` at its first attempt.
    pub fn with_outcome(outcome: Result<(), String>) -> Delivery {
        Delivery {
            outcome,
            attempts: 1,
            retried: Vec::new(),
            rendered: None,
            seconds: 0.0,
        }
    }
}

/// Counters per integration, for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// integration → (attempts, failed attempts, notifications, failed
    /// notifications, latency sum seconds).
    by_integration: Mutex<BTreeMap<String, [f64; 5]>>,
}

impl Metrics {
    fn add(&self, integration: &str, i: usize, v: f64) {
        let mut m = self
            .by_integration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(integration.to_string()).or_default()[i] += v;
    }

    /// `(integration, attempts, failed attempts, notifications, failed
    /// notifications, latency seconds sum)`.
    pub fn snapshot(&self) -> Vec<(String, [f64; 5])> {
        let m = self
            .by_integration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Delivers `job`, retrying until `deadline` (an instant derived from the
/// job's deadline by the caller).
pub async fn deliver(job: &Job, lib: &Library, deadline: Instant, metrics: &Metrics) -> Delivery {
    let started = Instant::now();
    let kind = job.kind();
    let rendered = match render(job, lib) {
        Ok(r) => r,
        Err(e) => {
            metrics.add(kind, 3, 1.0);
            metrics.add(kind, 4, 1.0);
            return Delivery {
                attempts: 0,
                ..Delivery::with_outcome(Err(e))
            };
        }
    };
    let mut backoff = Duration::from_millis(500);
    let mut attempts = 0;
    let mut retried = Vec::new();
    let outcome = loop {
        attempts += 1;
        metrics.add(kind, 0, 1.0);
        let a = attempt(job, &rendered, deadline).await;
        let (message, wait) = match a {
            Attempt::Ok => break Ok(()),
            Attempt::Fail(m) => {
                metrics.add(kind, 1, 1.0);
                break Err(m);
            }
            Attempt::Retry(m, after) => {
                metrics.add(kind, 1, 1.0);
                (m, after.unwrap_or(backoff))
            }
        };
        if Instant::now() + wait >= deadline {
            break Err(format!("{message} (gave up after {attempts} attempts)"));
        }
        retried.push((crate::model::now_ms(), message.clone()));
        tracing::debug!(message = "notification attempt failed; retrying", receiver = %job.receiver, integration = %job.integration_name(), error = %message);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    let seconds = started.elapsed().as_secs_f64();
    metrics.add(kind, 2, 1.0);
    metrics.add(kind, 4, seconds);
    if outcome.is_err() {
        metrics.add(kind, 3, 1.0);
    }
    Delivery {
        outcome,
        attempts,
        retried,
        rendered: Some((rendered.summary.0.clone(), rendered.summary.1.clone())),
        seconds,
    }
}

/// Expands the job's templates for its integration (a receiver without
/// any logs the subject and the default text).
pub fn render(job: &Job, lib: &Library) -> Result<Rendered, String> {
    match &job.integration {
        Some(i) => i.render(job, lib),
        None => {
            let d = &job.data;
            let subject = lib.render("subject", r#"{{ template "__subject" . }}"#, d)?;
            let body = lib.render("body", r#"{{ template "email.default.text" . }}"#, d)?;
            Ok(Rendered {
                summary: (subject, body),
                body: Body::Log,
            })
        }
    }
}

/// What `job` would send, for the template preview: the email's headers
/// and bodies, or the JSON body of an HTTP integration; or the error a
/// template raises.
pub fn preview(job: &Job, lib: &Library) -> Value {
    let name = job.integration_name();
    match render(job, lib) {
        Err(e) => json!({"integration": name, "error": e}),
        Ok(r) => match &r.body {
            Body::Email(e) => json!({
                "integration": name,
                "headers": e.headers,
                "to": e.to,
                "from": e.from,
                "text": e.text,
                "html": e.html,
            }),
            Body::Json(body) => json!({"integration": name, "body": body}),
            Body::Log => json!({
                "integration": name,
                "subject": r.summary.0,
                "text": r.summary.1,
            }),
        },
    }
}

async fn attempt(job: &Job, rendered: &Rendered, deadline: Instant) -> Attempt {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = left.clamp(Duration::from_secs(1), Duration::from_secs(30));
    match &job.integration {
        Some(i) => i.send(rendered, timeout).await,
        None => {
            tracing::info!(
                message = "notification (no integration configured for this receiver)",
                receiver = %job.receiver,
                subject = %rendered.summary.0,
                alerts = job.data.alerts.len(),
            );
            Attempt::Ok
        }
    }
}
