//! Notification integrations, one file each: its section of
//! alertmanager.yml (the raw keys and `parse`, with Alertmanager 0.25's
//! defaults and checks), how it renders a notification from the
//! templates, and how one attempt sends it. Adding one is a file here
//! plus its key in `config::RawReceiver` and its line in
//! `config::integrations` (the registration).

pub mod email;
pub mod slack;
pub mod telegram;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use super::template::Library;
use super::Job;
use crate::http::ClientConfig;

/// One integration of a receiver, configured.
pub trait Integration: Send + Sync + std::fmt::Debug {
    /// Alertmanager's name for its kind (`email`, `slack`, ...), as in the
    /// integration's name `email[0]`.
    fn kind(&self) -> &'static str;

    /// Whether resolved alerts are notified.
    fn send_resolved(&self) -> bool;

    /// Expands the templates for `job`, once, before any attempt.
    fn render(&self, job: &Job, lib: &Library) -> Result<Rendered, String>;

    /// One attempt at delivering what [`Integration::render`] made; what
    /// is worth retrying says so (its retry policy).
    fn send<'a>(&'a self, rendered: &'a Rendered, timeout: Duration) -> Sending<'a>;
}

/// An attempt under way.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// One try's result: `Retry(after)` may succeed later.
#[derive(Debug)]
pub enum Attempt {
    Ok,
    Retry(String, Option<Duration>),
    Fail(String),
}

/// Templates expanded once per job.
pub struct Rendered {
    /// `(subject or title, body)` for the dashboard and the log.
    pub summary: (String, String),
    pub body: Body,
}

/// What is sent.
pub enum Body {
    Email(email::Message),
    /// The JSON body of an HTTP integration.
    Json(Value),
    /// Nothing but the summary (a receiver without integrations logs it).
    Log,
}

impl Rendered {
    fn json(summary: (String, String), body: Value) -> Rendered {
        Rendered {
            summary,
            body: Body::Json(body),
        }
    }
}

/// POSTs the rendered JSON body with Alertmanager's retry rules: network errors,
/// 5xx and 429 (after its `Retry-After`) are worth retrying, other answers
/// fail. Error messages name the host only (Slack and Telegram URLs hold
/// secrets in their paths).
pub(super) async fn post_json(
    url: &Result<String, String>,
    http: &ClientConfig,
    rendered: &Rendered,
    timeout: Duration,
) -> Attempt {
    let Body::Json(body) = &rendered.body else {
        return Attempt::Fail("nothing rendered".into());
    };
    let url = match url {
        Ok(u) => u.trim().to_string(),
        Err(e) => return Attempt::Fail(e.clone()),
    };
    let client = match crate::http::client(http) {
        Ok(c) => c,
        Err(e) => return Attempt::Fail(e),
    };
    let req = client
        .post(&url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let req = match http.authorize(req) {
        Ok(r) => r,
        Err(e) => return Attempt::Fail(e),
    };
    // Where it went, without the secret path of a Slack webhook URL.
    let host = url.split('/').take(3).collect::<Vec<_>>().join("/");
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Retry(
                format!("post to {host}: {}", crate::http::describe(&e, timeout)),
                None,
            )
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Attempt::Ok;
    }
    let retry_after = crate::http::retry_after(&resp);
    let m = format!("{host} answered HTTP {}", status.as_u16());
    if status.as_u16() == 429 {
        Attempt::Retry(m, retry_after.or(Some(Duration::from_secs(1))))
    } else if status.is_server_error() {
        Attempt::Retry(m, None)
    } else {
        Attempt::Fail(m)
    }
}
