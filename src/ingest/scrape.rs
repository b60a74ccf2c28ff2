//! Scraping `scrape_configs` targets as Prometheus does: target labels from
//! `static_configs` through `relabel_configs`; each scrape fetched with the
//! job's timeout and auth, parsed as Prometheus text or OpenMetrics (by
//! Content-Type), merged with the target labels (`honor_labels`),
//! rewritten by `metric_relabel_configs`, limited by `sample_limit`, and
//! written with `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling` and `scrape_series_added`.
//! Series that disappear from a target, or all of them when it fails, get
//! stale markers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::text::{self, Format};
use crate::config::{ScrapeAuth, ScrapeConfig};
use crate::model::{relabel, stale_nan, Labels, LabelsBuilder, Timestamp, METRIC_NAME};
use crate::tsdb::Storage;

const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What `/api/v1/targets` shows of a target.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub health: Health,
    pub last_error: String,
    pub last_scrape_ms: Timestamp,
    pub last_duration: f64,
}

struct State {
    status: TargetStatus,
    /// Series written by the last successful scrape.
    previous: Vec<Labels>,
}

/// A scrape's sample count before relabeling, and its samples after.
type Scraped = (usize, Vec<(Labels, Timestamp, f64)>);

/// The targets of all jobs.
#[derive(Default)]
pub struct Targets {
    pub active: Vec<Arc<Target>>,
    /// Discovered labels of targets `relabel_configs` dropped.
    pub dropped: Vec<BTreeMap<String, String>>,
}

/// One target of one job.
pub struct Target {
    pub job: String,
    pub url: String,
    /// Labels every sample of the target gets (`job`, `instance`, ...).
    pub labels: Labels,
    /// The labels before relabeling, as Prometheus shows them.
    pub discovered: BTreeMap<String, String>,
    pub config: Arc<ScrapeConfig>,
    state: Mutex<State>,
}

/// Targets as configured, and the ones `relabel_configs` dropped.
pub fn targets(configs: &[ScrapeConfig]) -> Targets {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for c in configs {
        let config = Arc::new(c.clone());
        for t in &c.targets {
            let mut discovered: BTreeMap<String, String> = t.labels.clone();
            discovered.insert("__address__".into(), t.address.clone());
            discovered.insert("__scheme__".into(), c.scheme.clone());
            discovered.insert("__metrics_path__".into(), c.metrics_path.clone());
            discovered.insert("__scrape_interval__".into(), c.interval.to_string());
            discovered.insert("__scrape_timeout__".into(), c.timeout.to_string());
            discovered.insert("job".into(), c.job_name.clone());
            for (k, v) in &c.params {
                discovered
                    .entry(format!("__param_{k}"))
                    .or_insert_with(|| v.clone());
            }
            let Ok(start) = Labels::new(discovered.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            else {
                dropped.push(discovered);
                continue;
            };
            let Some(l) = relabel(&start, &c.relabel) else {
                dropped.push(discovered);
                continue;
            };
            let Some(address) = l.get("__address__").map(str::to_string) else {
                dropped.push(discovered);
                continue;
            };
            let scheme = l.get("__scheme__").unwrap_or("http");
            let path = l.get("__metrics_path__").unwrap_or("/metrics");
            let query: Vec<String> = l
                .iter()
                .filter_map(|(n, v)| {
                    n.strip_prefix("__param_")
                        .map(|k| format!("{}={}", enc(k), enc(v)))
                })
                .collect();
            let mut url = format!("{scheme}://{address}{path}");
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query.join("&"));
            }
            let mut b = LabelsBuilder::new();
            for (n, v) in l.iter().filter(|(n, _)| !n.starts_with("__")) {
                b.push(n, v);
            }
            if l.get("instance").is_none() {
                b.push("instance", address.as_str());
            }
            let Ok(labels) = b.build() else {
                dropped.push(discovered);
                continue;
            };
            active.push(Arc::new(Target {
                job: c.job_name.clone(),
                url,
                labels,
                discovered,
                config: config.clone(),
                state: Mutex::new(State {
                    status: TargetStatus {
                        health: Health::Unknown,
                        last_error: String::new(),
                        last_scrape_ms: 0,
                        last_duration: 0.0,
                    },
                    previous: Vec::new(),
                }),
            }));
        }
    }
    Targets { active, dropped }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Target {
    pub fn status(&self) -> TargetStatus {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A time in `[0, interval)` derived from the URL, so targets of a job
    /// do not all scrape at once (Prometheus spreads them the same way).
    pub fn offset(&self) -> Duration {
        let interval = self.config.interval.millis().max(1) as u64;
        let h = self.url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Duration::from_millis(h % interval)
    }

    /// Fetches the target's page (within the job's timeout).
    pub async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Format), String> {
        let timeout = self.config.timeout.std();
        let mut req = client
            .get(&self.url)
            .timeout(timeout)
            .header("Accept", ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            );
        match &self.config.auth {
            Some(ScrapeAuth::Basic { username, password }) => {
                req = req.basic_auth(username, Some(password))
            }
            Some(ScrapeAuth::Bearer(token)) => req = req.bearer_auth(token),
            None => {}
        }
        let resp = req.send().await.map_err(|e| describe(&e, timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        let format = text::format_of(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp.text().await.map_err(|e| describe(&e, timeout))?;
        Ok((body, format))
    }

    /// Writes what a scrape at `now` got (or why it failed), with the report
    /// series and stale markers. Returns the scrape's error, if any.
    pub fn ingest(
        &self,
        storage: &Storage,
        fetched: Result<(String, Format), String>,
        started: Instant,
        now: Timestamp,
    ) -> Option<String> {
        let parsed = fetched.and_then(|(body, format)| self.samples(&body, format, now));
        let duration = started.elapsed().as_secs_f64();
        let mut st = self.lock();
        let mut app = storage.appender();
        let (error, scraped, current) = match parsed {
            Ok((scraped, samples)) => {
                let current: Vec<Labels> = samples.iter().map(|(l, _, _)| l.clone()).collect();
                for (labels, t, v) in samples {
                    app.append(labels, t, v);
                }
                (None, scraped, current)
            }
            Err(e) => (Some(e), 0, Vec::new()),
        };
        // Series gone since the last scrape end here.
        let kept: crate::model::FastSet<&Labels> = current.iter().collect();
        let added = current.len() - st.previous.iter().filter(|l| kept.contains(l)).count();
        for gone in st.previous.iter().filter(|l| !kept.contains(l)) {
            app.append(gone.clone(), now, stale_nan());
        }
        drop(kept);
        let post_relabel = current.len();
        for (name, v) in [
            ("up", if error.is_none() { 1.0 } else { 0.0 }),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", post_relabel as f64),
            ("scrape_series_added", added as f64),
        ] {
            app.append(self.labels.with(METRIC_NAME, name), now, v);
        }
        let stored = app.commit_lenient();
        st.previous = current;
        let error = match (error, stored) {
            (Some(e), _) => Some(e),
            (None, Err(e)) => Some(format!("cannot store the scrape: {e}")),
            (None, Ok(_)) => None,
        };
        st.status = TargetStatus {
            health: if error.is_none() {
                Health::Up
            } else {
                Health::Down
            },
            last_error: error.clone().unwrap_or_default(),
            last_scrape_ms: now,
            last_duration: duration,
        };
        error
    }

    /// The scrape's samples with their final labels: (samples in the page,
    /// samples kept). Fails as Prometheus fails a whole scrape: on a parse
    /// error or over `sample_limit`.
    fn samples(&self, body: &str, format: Format, now: Timestamp) -> Result<Scraped, String> {
        let families = text::parse(body, format).map_err(|e| format!("parse error: {e}"))?;
        let c = &self.config;
        let mut scraped = 0;
        let mut out = Vec::new();
        let mut seen: crate::model::FastSet<Labels> = Default::default();
        for fam in &families {
            for s in &fam.samples {
                scraped += 1;
                let mut b = LabelsBuilder::new();
                b.push(METRIC_NAME, s.name.as_str());
                for (n, v) in &s.labels {
                    let clash = self.labels.get(n).is_some();
                    if clash && !c.honor_labels {
                        // The target's label wins; the scraped one is kept
                        // as exported_<name>.
                        let mut name = format!("exported_{n}");
                        while self.labels.get(&name).is_some()
                            || s.labels.iter().any(|(o, _)| *o == name)
                        {
                            name = format!("exported_{name}");
                        }
                        b.push(name, v.as_str());
                    } else if !(clash && v.is_empty()) {
                        b.push(n.as_str(), v.as_str());
                    }
                }
                for (n, v) in self.labels.iter() {
                    if c.honor_labels && s.labels.iter().any(|(o, _)| o == n) {
                        continue;
                    }
                    b.push(n, v);
                }
                let labels = b.build().map_err(|e| format!("line {}: {e}", s.line))?;
                let Some(labels) = relabel(&labels, &c.metric_relabel) else {
                    continue;
                };
                if !seen.insert(labels.clone()) {
                    // Prometheus keeps the first of duplicate series.
                    continue;
                }
                let t = match s.timestamp_ms {
                    Some(t) if c.honor_timestamps => t,
                    _ => now,
                };
                out.push((labels, t, s.value));
            }
        }
        if c.sample_limit > 0 && out.len() > c.sample_limit {
            return Err(format!(
                "sample limit exceeded: {} samples, the limit is {}",
                out.len(),
                c.sample_limit
            ));
        }
        Ok((scraped, out))
    }
}

/// A fetch error as Prometheus words it, without the client's internals.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("context deadline exceeded (timeout {timeout:?})")
    } else if e.is_connect() {
        "connection refused or host unreachable".into()
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticTarget;
    use crate::model::{PromDuration, RelabelAction, RelabelRule};

    fn job(honor_labels: bool, sample_limit: usize) -> ScrapeConfig {
        ScrapeConfig {
            job_name: "api".into(),
            interval: PromDuration::from_secs(15),
            timeout: PromDuration::from_secs(10),
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: vec![("module".into(), "http 2xx".into())],
            honor_labels,
            honor_timestamps: true,
            sample_limit,
            auth: None,
            targets: vec![StaticTarget {
                address: "localhost:8000".into(),
                labels: [("env".to_string(), "prod".to_string())].into(),
            }],
            relabel: vec![],
            metric_relabel: vec![RelabelRule::new(
                vec!["__name__".into()],
                None,
                Some("go_.*"),
                None,
                None,
                RelabelAction::Drop,
            )
            .unwrap()],
        }
    }

    #[test]
    fn targets_get_job_instance_and_static_labels() {
        let Targets { active: t, dropped } = targets(&[job(false, 0)]);
        assert!(dropped.is_empty());
        assert_eq!(t[0].url, "http://localhost:8000/metrics?module=http%202xx");
        assert_eq!(
            t[0].labels.to_string(),
            "{env=\"prod\", instance=\"localhost:8000\", job=\"api\"}"
        );
    }

    #[test]
    fn scraped_labels_merge_as_in_prometheus() {
        let t = targets(&[job(false, 0)]).active;
        let page = "# TYPE requests counter\nrequests_total{job=\"mine\",code=\"200\"} 5 1700000000000\ngo_goroutines 7\nrequests_total{job=\"mine\",code=\"200\"} 6\n";
        let (scraped, s) = t[0].samples(page, Format::Text, 42).unwrap();
        assert_eq!(scraped, 3);
        // go_* dropped by metric relabeling, the duplicate series too.
        assert_eq!(s.len(), 1);
        let (l, ts, v) = &s[0];
        assert_eq!(l.get("job"), Some("api"));
        assert_eq!(l.get("exported_job"), Some("mine"));
        assert_eq!((*ts, *v), (1700000000000, 5.0));
        let t = targets(&[job(true, 0)]).active;
        let (_, s) = t[0].samples(page, Format::Text, 42).unwrap();
        assert_eq!(s[0].0.get("job"), Some("mine"));
        let t = targets(&[job(false, 1)]).active;
        let e = t[0].samples("a 1\nb 2\n", Format::Text, 42).unwrap_err();
        assert!(e.contains("sample limit exceeded"), "{e}");
    }
}
