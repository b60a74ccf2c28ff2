//! Webhooks with Alertmanager's version-4 payload and `max_alerts`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{post_json, Integration, Rendered, Sending};
use crate::http::config::RawHttpConfig as RawHttp;
use crate::http::{ClientConfig as HttpConfig, Secret};
use crate::model::rfc3339;
use crate::notify::config::{http_config, url_problem, Check};
use crate::notify::template::Library;
use crate::notify::Job;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub send_resolved: bool,
    pub url: Secret,
    pub http: HttpConfig,
    pub max_alerts: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::notify) struct RawWebhook {
    send_resolved: Option<bool>,
    http_config: Option<RawHttp>,
    url: Option<String>,
    url_file: Option<String>,
    max_alerts: u64,
}

impl Integration for WebhookConfig {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn render(&self, job: &Job, lib: &Library) -> Result<Rendered, String> {
        let body = payload(job, self.max_alerts);
        let subject = lib.render("subject", r#"{{ template "__subject" . }}"#, &job.data)?;
        Ok(Rendered::json((subject, String::new()), body))
    }

    fn send<'a>(&'a self, rendered: &'a Rendered, timeout: Duration) -> Sending<'a> {
        Box::pin(async move { post_json(&self.url.read(), &self.http, rendered, timeout).await })
    }
}

/// A `webhook_configs` entry; `http_config` defaults to the global one.
pub(in crate::notify) fn parse(
    w: RawWebhook,
    global_http: &HttpConfig,
    path: &str,
    c: &mut Check,
) -> Option<WebhookConfig> {
    let url = match (&w.url, &w.url_file) {
        (Some(_), Some(_)) => {
            c.error(path, "at most one of url & url_file must be configured");
            return None;
        }
        (Some(u), None) => {
            if let Some(p) = url_problem(u) {
                c.error(&format!("{path}.url"), p);
                return None;
            }
            Secret::Inline(u.clone())
        }
        (None, Some(f)) => Secret::File(c.path(f)),
        (None, None) => {
            c.error(path, "missing URL in webhook config");
            return None;
        }
    };
    let http = w
        .http_config
        .map(|h| http_config(h, &format!("{path}.http_config"), c))
        .unwrap_or_else(|| global_http.clone());
    Some(WebhookConfig {
        send_resolved: w.send_resolved.unwrap_or(true),
        url,
        http,
        max_alerts: w.max_alerts as usize,
    })
}
/// Alertmanager's webhook body, version "4"; with `max_alerts`, the first
/// that many alerts and the count of the others.
pub fn payload(job: &Job, max_alerts: usize) -> Value {
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
