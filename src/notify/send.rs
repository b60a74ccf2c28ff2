//! Delivering a [`Job`]: email (lettre; STARTTLS, implicit TLS on port
//! 465, AUTH PLAIN/LOGIN), Slack incoming webhooks and Alertmanager's
//! webhook payload (version 4), with Alertmanager's retry rules: network
//! errors, 5xx and 429 are retried with exponential backoff (429 after its
//! `Retry-After`) until the job's deadline; other answers fail at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Map, Value};

use super::config::{EmailConfig, HttpConfig, Receiver, SlackConfig, WebhookConfig};
use super::template::{Data, Library};
use super::Job;
use crate::model::rfc3339;

/// One try's result: `Retry(after)` may succeed later.
enum Attempt {
    Ok,
    Retry(String, Option<Duration>),
    Fail(String),
}

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

/// Delivers `job` through `receiver`, retrying until `deadline` (an
/// instant derived from the job's deadline by the caller).
pub async fn deliver(
    job: &Job,
    receiver: Option<&Receiver>,
    lib: &Library,
    deadline: Instant,
    metrics: &Metrics,
) -> Delivery {
    let started = Instant::now();
    let rendered = match render(job, receiver, lib) {
        Ok(r) => r,
        Err(e) => {
            metrics.add(job.integration, 3, 1.0);
            metrics.add(job.integration, 4, 1.0);
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
        metrics.add(job.integration, 0, 1.0);
        let a = attempt(job, receiver, &rendered, deadline).await;
        let (message, wait) = match a {
            Attempt::Ok => break Ok(()),
            Attempt::Fail(m) => {
                metrics.add(job.integration, 1, 1.0);
                break Err(m);
            }
            Attempt::Retry(m, after) => {
                metrics.add(job.integration, 1, 1.0);
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
    metrics.add(job.integration, 2, 1.0);
    metrics.add(job.integration, 4, seconds);
    if outcome.is_err() {
        metrics.add(job.integration, 3, 1.0);
    }
    Delivery {
        outcome,
        attempts,
        retried,
        rendered: Some((rendered.summary.0.clone(), rendered.summary.1.clone())),
        seconds,
    }
}

/// Templates expanded once per job, before any attempt.
pub struct Rendered {
    /// `(subject or title, body)` for the dashboard and the log.
    pub summary: (String, String),
    email: Option<RenderedEmail>,
    json: Option<Value>,
}

struct RenderedEmail {
    headers: BTreeMap<String, String>,
    to: String,
    from: String,
    html: Option<String>,
    text: Option<String>,
}

/// Expands the job's templates for its integration.
pub fn render(job: &Job, receiver: Option<&Receiver>, lib: &Library) -> Result<Rendered, String> {
    let d = &job.data;
    match (job.integration, receiver) {
        ("email", Some(r)) => render_email(&r.email[job.index], d, lib),
        ("slack", Some(r)) => {
            let body = slack_payload(&r.slack[job.index], d, lib)?;
            let a = &body["attachments"][0];
            let summary = (
                a["title"].as_str().unwrap_or("").to_string(),
                a["text"].as_str().unwrap_or("").to_string(),
            );
            Ok(Rendered {
                summary,
                email: None,
                json: Some(body),
            })
        }
        ("webhook", Some(r)) => {
            let body = webhook_payload(job, r.webhook[job.index].max_alerts);
            let subject = lib.render("subject", r#"{{ template "__subject" . }}"#, d)?;
            Ok(Rendered {
                summary: (subject, String::new()),
                email: None,
                json: Some(body),
            })
        }
        _ => {
            let subject = lib.render("subject", r#"{{ template "__subject" . }}"#, d)?;
            let body = lib.render("body", r#"{{ template "email.default.text" . }}"#, d)?;
            Ok(Rendered {
                summary: (subject, body),
                email: None,
                json: None,
            })
        }
    }
}

fn render_email(c: &EmailConfig, d: &Data, lib: &Library) -> Result<Rendered, String> {
    let mut headers = BTreeMap::new();
    for (name, text) in &c.headers {
        headers.insert(
            name.clone(),
            lib.render(&format!("headers.{name}"), text, d)?,
        );
    }
    let to = lib.render("to", &c.to, d)?;
    let from = lib.render("from", &c.from, d)?;
    let html = c
        .html
        .as_ref()
        .map(|t| lib.render("html", t, d))
        .transpose()?;
    let text = c
        .text
        .as_ref()
        .map(|t| lib.render("text", t, d))
        .transpose()?;
    let summary = (
        headers.get("Subject").cloned().unwrap_or_default(),
        text.clone().or_else(|| html.clone()).unwrap_or_default(),
    );
    Ok(Rendered {
        summary,
        email: Some(RenderedEmail {
            headers,
            to,
            from,
            html,
            text,
        }),
        json: None,
    })
}

/// What `job` would send, for the template preview: the email's headers
/// and bodies, or the JSON body of a Slack or webhook post; or the error a
/// template raises.
pub fn preview(job: &Job, receiver: Option<&Receiver>, lib: &Library) -> Value {
    let name = job.integration_name();
    match render(job, receiver, lib) {
        Err(e) => json!({"integration": name, "error": e}),
        Ok(r) => match (&r.email, &r.json) {
            (Some(e), _) => json!({
                "integration": name,
                "headers": e.headers,
                "to": e.to,
                "from": e.from,
                "text": e.text,
                "html": e.html,
            }),
            (None, Some(body)) => json!({"integration": name, "body": body}),
            (None, None) => json!({
                "integration": name,
                "subject": r.summary.0,
                "text": r.summary.1,
            }),
        },
    }
}

async fn attempt(
    job: &Job,
    receiver: Option<&Receiver>,
    rendered: &Rendered,
    deadline: Instant,
) -> Attempt {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = left.clamp(Duration::from_secs(1), Duration::from_secs(30));
    match (job.integration, receiver) {
        ("email", Some(r)) => send_email(&r.email[job.index], rendered, timeout).await,
        ("slack", Some(r)) => {
            let c: &SlackConfig = &r.slack[job.index];
            post(&c.api_url.read(), &c.http, rendered.json.as_ref(), timeout).await
        }
        ("webhook", Some(r)) => {
            let c: &WebhookConfig = &r.webhook[job.index];
            post(&c.url.read(), &c.http, rendered.json.as_ref(), timeout).await
        }
        _ => {
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

async fn send_email(c: &EmailConfig, rendered: &Rendered, timeout: Duration) -> Attempt {
    let Some(RenderedEmail {
        headers,
        to,
        from,
        html,
        text,
    }) = &rendered.email
    else {
        return Attempt::Fail("nothing rendered".into());
    };
    let parse = |what: &str, s: &str| -> Result<Mailboxes, String> {
        s.parse::<Mailboxes>()
            .map_err(|e| format!("parse {what} addresses {s:?}: {e}"))
    };
    let (to_list, from_box) = match (parse("to", to), parse("from", from)) {
        (Ok(t), Ok(f)) => (t, f),
        (Err(e), _) | (_, Err(e)) => return Attempt::Fail(e),
    };
    let Some(from_box) = from_box.into_iter().next() else {
        return Attempt::Fail("empty from address".into());
    };
    let mut b = lettre::Message::builder().from(from_box);
    for t in to_list {
        b = b.to(t);
    }
    if let Some(s) = headers.get("Subject") {
        b = b.subject(s.clone());
    }
    let built = match (text, html) {
        (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone())),
        (None, Some(h)) => b.singlepart(SinglePart::html(h.clone())),
        (Some(t), None) => b.singlepart(SinglePart::plain(t.clone())),
        (None, None) => b.singlepart(SinglePart::plain(String::new())),
    };
    let mut msg = match built {
        Ok(m) => m,
        Err(e) => return Attempt::Fail(format!("cannot build the message: {e}")),
    };
    for (name, value) in headers {
        if matches!(name.as_str(), "Subject" | "To" | "From") {
            continue;
        }
        match HeaderName::new_from_ascii(name.clone()) {
            Ok(n) => msg
                .headers_mut()
                .insert_raw(HeaderValue::new(n, value.clone())),
            Err(_) => return Attempt::Fail(format!("invalid header name {name:?}")),
        }
    }
    let host = &c.smarthost.0;
    let port = match super::config::port_number(&c.smarthost.1) {
        Ok(p) => p,
        Err(e) => return Attempt::Fail(format!("smarthost {host}:{}: {e}", c.smarthost.1)),
    };
    // The same `tls_config` as HTTP clients, through lettre's builder
    // (which takes no ready rustls setup).
    let tls_params = || -> Result<TlsParameters, String> {
        use lettre::transport::smtp::client::{Certificate, Identity, TlsVersion};
        let name = c.tls.server_name.clone().unwrap_or_else(|| host.clone());
        let mut p =
            TlsParameters::builder(name).dangerous_accept_invalid_certs(c.tls.insecure_skip_verify);
        if let Some(ca) = &c.tls.ca {
            let pem = ca.bytes().map_err(|e| format!("tls_config: ca: {e}"))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("tls_config: the CA is not PEM: {e}"))?;
            p = p.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&c.tls.cert, &c.tls.key) {
            let cert = cert.bytes().map_err(|e| format!("tls_config: cert: {e}"))?;
            let key = key.bytes().map_err(|e| format!("tls_config: key: {e}"))?;
            let id = Identity::from_pem(&cert, &key)
                .map_err(|e| format!("tls_config: the client certificate and key: {e}"))?;
            p = p.identify_with(id);
        }
        if c.tls.min_version == Some(crate::http::TlsVersion::Tls13) {
            p = p.set_min_tls_version(TlsVersion::Tlsv13);
        }
        p.build_rustls().map_err(|e| format!("TLS setup: {e}"))
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = if port == 465 {
        match tls_params() {
            Ok(p) => Tls::Wrapper(p),
            Err(e) => return Attempt::Fail(e),
        }
    } else if c.require_tls {
        match tls_params() {
            Ok(p) => Tls::Required(p),
            Err(e) => return Attempt::Fail(e),
        }
    } else {
        Tls::None
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(c.hello.clone()));
    if !c.auth_username.is_empty() {
        let password = match c.auth_password.as_ref().map(|s| s.read()).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return Attempt::Fail(e),
        };
        t = t
            .credentials(Credentials::new(c.auth_username.clone(), password))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    let transport = t.build();
    match transport.send(msg).await {
        Ok(_) => Attempt::Ok,
        Err(e) => {
            let mut m = format!("send via {host}:{port}: {e}");
            if let Some(src) = std::error::Error::source(&e) {
                m = format!("{m}: {src}");
            }
            if e.is_permanent() {
                Attempt::Fail(m)
            } else {
                Attempt::Retry(m, None)
            }
        }
    }
}

async fn post(
    url: &Result<String, String>,
    http: &HttpConfig,
    body: Option<&Value>,
    timeout: Duration,
) -> Attempt {
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
        .body(body.map(Value::to_string).unwrap_or_default());
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
    let retry_after = resp
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let m = format!("{host} answered HTTP {}", status.as_u16());
    if status.as_u16() == 429 {
        Attempt::Retry(m, retry_after.or(Some(Duration::from_secs(1))))
    } else if status.is_server_error() {
        Attempt::Retry(m, None)
    } else {
        Attempt::Fail(m)
    }
}

/// Slack's incoming-webhook message with one attachment, empty fields left
/// out as Alertmanager does.
pub fn slack_payload(c: &SlackConfig, d: &Data, lib: &Library) -> Result<Value, String> {
    let r = |name: &str, t: &str| lib.render(name, t, d);
    let mut att = Map::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            att.insert(k.into(), Value::String(v));
        }
    };
    put("title", r("title", &c.title)?);
    put("title_link", r("title_link", &c.title_link)?);
    put("pretext", r("pretext", &c.pretext)?);
    put("text", r("text", &c.text)?);
    put("fallback", r("fallback", &c.fallback)?);
    put("callback_id", r("callback_id", &c.callback_id)?);
    put("color", r("color", &c.color)?);
    put("footer", r("footer", &c.footer)?);
    put("image_url", r("image_url", &c.image_url)?);
    put("thumb_url", r("thumb_url", &c.thumb_url)?);
    let mrkdwn: Vec<String> = if c.mrkdwn_in.is_empty() {
        vec!["fallback".into(), "pretext".into(), "text".into()]
    } else {
        c.mrkdwn_in.clone()
    };
    att.insert("mrkdwn_in".into(), json!(mrkdwn));
    if !c.fields.is_empty() {
        let mut fields = Vec::new();
        for f in &c.fields {
            fields.push(json!({
                "title": r("fields.title", &f.title)?,
                "value": r("fields.value", &f.value)?,
                "short": f.short.unwrap_or(c.short_fields),
            }));
        }
        att.insert("fields".into(), Value::Array(fields));
    }
    if !c.actions.is_empty() {
        let mut actions = Vec::new();
        for a in &c.actions {
            let mut o = Map::new();
            for (k, v) in a {
                o.insert(k.clone(), Value::String(r("actions", v)?));
            }
            actions.push(Value::Object(o));
        }
        att.insert("actions".into(), Value::Array(actions));
    }
    let mut msg = Map::new();
    let mut top = |k: &str, v: String| {
        if !v.is_empty() {
            msg.insert(k.into(), Value::String(v));
        }
    };
    top("channel", r("channel", &c.channel)?);
    top("username", r("username", &c.username)?);
    top("icon_emoji", r("icon_emoji", &c.icon_emoji)?);
    top("icon_url", r("icon_url", &c.icon_url)?);
    if c.link_names {
        msg.insert("link_names".into(), Value::Bool(true));
    }
    msg.insert("attachments".into(), json!([Value::Object(att)]));
    Ok(Value::Object(msg))
}

/// Alertmanager's webhook body, version "4"; with `max_alerts`, the first
/// that many alerts and the count of the others.
pub fn webhook_payload(job: &Job, max_alerts: usize) -> Value {
    let d = &job.data;
    let total = d.alerts.len();
    let keep = if max_alerts > 0 {
        max_alerts.min(total)
    } else {
        total
    };
    let alerts: Vec<Value> = d.alerts[..keep]
        .iter()
        .map(|a| {
            json!({
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": a.ends_at_ms.map_or("0001-01-01T00:00:00Z".to_string(), rfc3339),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "receiver": d.receiver,
        "status": d.status,
        "alerts": alerts,
        "groupLabels": d.group_labels,
        "commonLabels": d.common_labels,
        "commonAnnotations": d.common_annotations,
        "externalURL": d.external_url,
        "version": "4",
        "groupKey": job.group_key,
        "truncatedAlerts": total - keep,
    })
}
