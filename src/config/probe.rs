//! `probes:`: HTTP checks of a model API, as the original stack's
//! "monitoring deployment" did them, with blackbox_exporter's results.
//!
//! ```yaml
//! probes:
//!   - name: model-api
//!     url: http://127.0.0.1:5000/api/health
//!     interval: 15s                 # default global.scrape_interval
//!     timeout: 5s                   # default the smaller of 10s and interval
//!     method: GET                   # or POST (with body), HEAD
//!     expected_status: [200]        # default: any 2xx
//!     json:
//!       - field: status             # dotted path into the JSON answer
//!         equals: healthy           # the probe fails otherwise
//!       - field: model_metrics.test_r2
//!         metric: ml_model_api_test_r2   # written as a gauge
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;

use super::raw::Validator;
use crate::model::{is_valid_metric_name, PromDuration};

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub name: String,
    pub url: String,
    pub method: String,
    pub body: Option<String>,
    pub interval: PromDuration,
    pub timeout: PromDuration,
    /// Empty: any 2xx.
    pub expected_status: Vec<u16>,
    pub json: Vec<JsonRule>,
}

/// A field of the JSON answer: compared, or written as a gauge.
#[derive(Debug, Clone)]
pub struct JsonRule {
    pub field: String,
    pub equals: Option<serde_json::Value>,
    pub metric: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    name: String,
    url: String,
    method: Option<String>,
    body: Option<String>,
    interval: Option<PromDuration>,
    timeout: Option<PromDuration>,
    #[serde(default)]
    expected_status: Vec<u16>,
    #[serde(default)]
    json: Vec<RawJsonRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonRule {
    field: String,
    equals: Option<serde_json::Value>,
    metric: Option<String>,
}

pub(super) fn resolve(
    raw: Vec<RawProbe>,
    global_interval: PromDuration,
    v: &mut Validator,
) -> Vec<ProbeConfig> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let name = r.name.clone();
        let err = |v: &mut Validator, msg: String| {
            v.error_at_item("probes", index, &format!("probe {name:?}: {msg}"))
        };
        if name.is_empty() || !seen.insert(name.clone()) {
            err(v, "names must be present and distinct".into());
            continue;
        }
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            err(
                v,
                format!("url {:?} must start with http:// or https://", r.url),
            );
        }
        let method = r
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST" | "HEAD") {
            err(v, format!("method {method:?} is not GET, POST or HEAD"));
        }
        let interval = r.interval.unwrap_or(global_interval);
        let timeout = r.timeout.unwrap_or(if interval.millis() < 10_000 {
            interval
        } else {
            PromDuration::from_secs(10)
        });
        if interval.millis() <= 0 || timeout.millis() <= 0 {
            err(v, "interval and timeout must be greater than 0".into());
        }
        if timeout.millis() > interval.millis() {
            err(
                v,
                format!("timeout {timeout} is greater than interval {interval}"),
            );
        }
        if let Some(bad) = r.expected_status.iter().find(|s| !(100..=599).contains(*s)) {
            err(v, format!("expected_status {bad} is not an HTTP status"));
        }
        let mut json = Vec::new();
        for (i, j) in r.json.into_iter().enumerate() {
            if j.field.is_empty() {
                err(v, format!("json rule {}: field is empty", i + 1));
            }
            if j.equals.is_none() && j.metric.is_none() {
                err(v, format!("json rule {}: needs equals or metric", i + 1));
            }
            if let Some(m) = &j.metric {
                if !is_valid_metric_name(m) {
                    err(
                        v,
                        format!("json rule {}: {m:?} is not a valid metric name", i + 1),
                    );
                }
            }
            json.push(JsonRule {
                field: j.field,
                equals: j.equals,
                metric: j.metric,
            });
        }
        out.push(ProbeConfig {
            name,
            url: r.url,
            method,
            body: r.body,
            interval,
            timeout,
            expected_status: r.expected_status,
            json,
        });
    }
    out
}
