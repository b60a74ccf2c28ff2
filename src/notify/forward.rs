//! Forwarding alerts to external Alertmanagers (`alerting.alertmanagers`)
//! the way Prometheus does: `POST /api/v2/alerts` with each alert's
//! labels, annotations, `startsAt`, `endsAt` and generator URL.

use std::time::Duration;

use crate::http::ClientConfig;
use crate::model::{rfc3339, PostableAlert};

/// The JSON body for a batch of alerts.
pub fn payload(alerts: &[PostableAlert]) -> serde_json::Value {
    let time = |t: Option<i64>| t.map(rfc3339).unwrap_or_default();
    serde_json::Value::Array(
        alerts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": time(a.starts_at_ms),
                    "endsAt": time(a.ends_at_ms),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

/// Posts `body` to the Alertmanager at `url`; the error says why it was
/// refused.
pub async fn send(
    url: &str,
    timeout: Duration,
    http: &ClientConfig,
    body: &serde_json::Value,
) -> Result<(), String> {
    let req = crate::http::client(http)?
        .post(url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let resp = http
        .authorize(req)?
        .send()
        .await
        .map_err(|e| crate::http::describe(&e, timeout))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered HTTP {}", resp.status()))
    }
}
