//! HTTP probes of a model API with blackbox_exporter's results:
//! `probe_success`, `probe_duration_seconds`, `probe_http_status_code`
//! (0 when no answer came), plus gauges read from fields of a JSON answer.
//! Series carry `job="probe"`, `instance=<url>` and `probe=<name>`.

use std::sync::Mutex;
use std::time::Instant;

use crate::config::ProbeConfig;
use crate::model::{Labels, Timestamp, METRIC_NAME};
use crate::tsdb::Storage;

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status_code: u16,
    pub duration: f64,
    /// Why the probe failed; `None`: success.
    pub error: Option<String>,
    /// Gauges read from the answer: metric name, value.
    pub gauges: Vec<(String, f64)>,
}

/// What `/api/v1/probes` shows of a probe.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProbeStatus {
    pub name: String,
    pub url: String,
    /// "up", "down" or "unknown" (not run yet).
    pub health: &'static str,
    #[serde(rename = "lastError")]
    pub last_error: String,
    #[serde(rename = "lastProbe")]
    pub last_probe_ms: Timestamp,
    #[serde(rename = "lastDuration")]
    pub last_duration: f64,
    #[serde(rename = "statusCode")]
    pub status_code: u16,
}

pub struct Probe {
    pub config: ProbeConfig,
    labels: Labels,
    status: Mutex<ProbeStatus>,
    /// The series the last run wrote, for stale markers when the probe is
    /// removed.
    written: Mutex<Vec<Labels>>,
}

impl Probe {
    pub fn new(config: ProbeConfig) -> Probe {
        let labels = Labels::new([
            ("job", "probe"),
            ("instance", config.url.as_str()),
            ("probe", config.name.as_str()),
        ])
        .unwrap_or_default();
        let status = ProbeStatus {
            name: config.name.clone(),
            url: config.url.clone(),
            health: "unknown",
            ..ProbeStatus::default()
        };
        Probe {
            config,
            labels,
            status: Mutex::new(status),
            written: Mutex::new(Vec::new()),
        }
    }

    pub fn status(&self) -> ProbeStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends the request and judges the answer.
    pub async fn run(&self) -> Outcome {
        let c = &self.config;
        let started = Instant::now();
        let timeout = c.timeout.std();
        let method =
            reqwest::Method::from_bytes(c.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let fail = |code: u16, why: String| Outcome {
            status_code: code,
            duration: started.elapsed().as_secs_f64(),
            error: Some(why),
            gauges: Vec::new(),
        };
        let client = match crate::http::client(&Default::default()) {
            Ok(c) => c,
            Err(e) => return fail(0, e),
        };
        let mut req = client.request(method, &c.url).timeout(timeout);
        if let Some(body) = &c.body {
            req = req.body(body.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return fail(0, crate::http::describe(&e, timeout)),
        };
        let code = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return fail(code, crate::http::describe(&e, timeout)),
        };
        let expected = if c.expected_status.is_empty() {
            (200..300).contains(&code)
        } else {
            c.expected_status.contains(&code)
        };
        let mut outcome = judge(c, &body);
        outcome.status_code = code;
        outcome.duration = started.elapsed().as_secs_f64();
        if !expected && outcome.error.is_none() {
            outcome.error = Some(format!("unexpected HTTP status {code}"));
        }
        outcome
    }

    /// Takes over the status of `old`, the same probe before a reload
    /// changed its settings.
    pub fn adopt(&self, old: &Probe) {
        let mut status = old.status();
        status.url = self.config.url.clone();
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
        let written = std::mem::take(&mut *old.written.lock().unwrap_or_else(|p| p.into_inner()));
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = written;
    }

    /// Ends the probe's series with stale markers at `now` (it was removed).
    pub fn end(&self, storage: &Storage, now: Timestamp) -> Result<(), String> {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        let mut app = storage.appender().lazy_sync();
        for labels in written {
            app.append(labels, now, crate::model::stale_nan());
        }
        app.commit().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Writes the outcome at `now` and keeps it for the status API.
    pub fn record(&self, storage: &Storage, outcome: &Outcome, now: Timestamp) -> Option<String> {
        let mut app = storage.appender().lazy_sync();
        let success = if outcome.error.is_none() { 1.0 } else { 0.0 };
        let mut written = Vec::new();
        for (name, v) in [
            ("probe_success", success),
            ("probe_duration_seconds", outcome.duration),
            ("probe_http_status_code", outcome.status_code as f64),
        ]
        .into_iter()
        .chain(outcome.gauges.iter().map(|(n, v)| (n.as_str(), *v)))
        {
            let labels = self.labels.with(METRIC_NAME, name);
            written.push(labels.clone());
            app.append(labels, now, v);
        }
        let stored = app.commit();
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = written;
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.health = if outcome.error.is_none() {
            "up"
        } else {
            "down"
        };
        st.last_error = outcome.error.clone().unwrap_or_default();
        st.last_probe_ms = now;
        st.last_duration = outcome.duration;
        st.status_code = outcome.status_code;
        match stored {
            Err(e) => Some(format!("cannot store the probe: {e}")),
            Ok(_) => outcome.error.clone(),
        }
    }
}

/// Applies the JSON rules to an answer's body.
pub fn judge(c: &ProbeConfig, body: &[u8]) -> Outcome {
    let mut out = Outcome {
        status_code: 0,
        duration: 0.0,
        error: None,
        gauges: Vec::new(),
    };
    if c.json.is_empty() {
        return out;
    }
    let doc: serde_json::Value = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => {
            out.error = Some(format!("the answer is not JSON: {e}"));
            return out;
        }
    };
    for rule in &c.json {
        let value = rule.field.split('.').try_fold(&doc, |v, key| match v {
            serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?),
            v => v.get(key),
        });
        if let Some(want) = &rule.equals {
            let same = match (value, want) {
                (Some(serde_json::Value::Number(a)), serde_json::Value::Number(b)) => {
                    a.as_f64() == b.as_f64()
                }
                (Some(v), w) => v == w,
                (None, _) => false,
            };
            if !same && out.error.is_none() {
                out.error = Some(match value {
                    Some(v) => format!("field {} is {v}, expected {want}", rule.field),
                    None => format!("field {} is missing, expected {want}", rule.field),
                });
            }
        }
        if let Some(metric) = &rule.metric {
            let number = match value {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                Some(serde_json::Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
                Some(serde_json::Value::String(s)) => crate::model::parse_float(s).ok(),
                _ => None,
            };
            if let Some(v) = number {
                out.gauges.push((metric.clone(), v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JsonRule;
    use crate::model::PromDuration;

    fn config() -> ProbeConfig {
        ProbeConfig {
            name: "api".into(),
            url: "http://127.0.0.1:1/api/health".into(),
            method: "GET".into(),
            body: None,
            interval: PromDuration::from_secs(15),
            timeout: PromDuration::from_secs(5),
            expected_status: vec![],
            json: vec![
                JsonRule {
                    field: "status".into(),
                    equals: Some(serde_json::json!("healthy")),
                    metric: None,
                },
                JsonRule {
                    field: "model_metrics.test_r2".into(),
                    equals: None,
                    metric: Some("ml_model_api_test_r2".into()),
                },
            ],
        }
    }

    #[test]
    fn json_rules_judge_and_extract() {
        let c = config();
        let ok = judge(
            &c,
            br#"{"status": "healthy", "model_metrics": {"test_r2": 0.88}}"#,
        );
        assert_eq!(ok.error, None);
        assert_eq!(ok.gauges, vec![("ml_model_api_test_r2".to_string(), 0.88)]);
        let bad = judge(&c, br#"{"status": "degraded"}"#);
        assert!(bad.error.unwrap().contains("field status is \"degraded\""));
        assert!(judge(&c, b"<html>").error.unwrap().contains("not JSON"));
    }
}
