//! Sending alerts to external Alertmanagers (`alerting.alertmanagers`) the
//! way Prometheus does: `POST /api/v2/alerts` with the alerts' labels
//! (external labels added), annotations, `startsAt`, `endsAt` and a
//! generator URL.

use std::collections::BTreeMap;

use super::engine::Outgoing;
use crate::config::AlertmanagerTarget;
use crate::model::{percent_encode, rfc3339};

/// The JSON body for a batch of alerts.
pub fn payload(
    alerts: &[Outgoing],
    external_labels: &BTreeMap<String, String>,
    external_url: &str,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut labels: BTreeMap<String, String> = external_labels.clone();
            for (n, v) in a.labels.iter() {
                labels.insert(n.to_string(), v.to_string());
            }
            serde_json::json!({
                "labels": labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": rfc3339(a.ends_at_ms),
                "generatorURL": generator_url(external_url, &a.expr),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

/// The same alerts for mlmon's own notifier.
pub fn incoming(
    alerts: &[Outgoing],
    external_labels: &BTreeMap<String, String>,
    external_url: &str,
) -> Vec<crate::notify::Incoming> {
    alerts
        .iter()
        .map(|a| {
            let mut labels = external_labels.clone();
            for (n, v) in a.labels.iter() {
                labels.insert(n.to_string(), v.to_string());
            }
            crate::notify::Incoming {
                labels,
                annotations: a.annotations.clone(),
                starts_at_ms: Some(a.starts_at_ms),
                ends_at_ms: Some(a.ends_at_ms),
                generator_url: generator_url(external_url, &a.expr),
            }
        })
        .collect()
}

fn generator_url(external_url: &str, expr: &str) -> String {
    format!(
        "{external_url}/graph?g0.expr={}&g0.tab=1",
        percent_encode(expr)
    )
}

/// Posts `body` to one Alertmanager; the error says why it was refused.
pub async fn send(am: &AlertmanagerTarget, body: &serde_json::Value) -> Result<(), String> {
    let req = crate::http::client(&am.http)?
        .post(&am.url)
        .timeout(am.timeout.std())
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let resp = am
        .http
        .authorize(req)?
        .send()
        .await
        .map_err(|e| crate::http::describe(&e, am.timeout.std()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered HTTP {}", am.url, resp.status()))
    }
}
