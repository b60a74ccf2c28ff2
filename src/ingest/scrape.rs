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

use crate::config::ScrapeConfig;
use crate::expfmt::{self, Format};
use crate::model::{
    percent_encode, relabel, stale_nan, FastMap, FastSet, Labels, LabelsBuilder, Timestamp,
    METRIC_NAME,
};
use crate::tsdb::{AppendError, Storage};

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
    /// Series by their text in the page (`name{a="1"}`), as Prometheus'
    /// scrape cache: a page whose series are all known is read without
    /// building a label set, and written by series id.
    cache: FastMap<String, Entry>,
    /// Scrapes so far; entries remember the last one that saw them.
    epoch: u64,
}

struct Entry {
    /// After the target's labels and metric relabeling; `None`: dropped.
    labels: Option<Labels>,
    /// The store's id of the series, once it has one.
    id: Option<u64>,
    /// The last scrape that saw it, and the one before.
    seen: u64,
    prev: u64,
}

impl Entry {
    fn mark(&mut self, epoch: u64) {
        self.prev = self.seen;
        self.seen = epoch;
    }
}

/// Takes back what scrape `epoch` marked as seen (it failed).
fn unmark(cache: &mut FastMap<String, Entry>, epoch: u64) {
    for e in cache.values_mut().filter(|e| e.seen == epoch) {
        e.seen = e.prev;
    }
}

/// How a kept sample names its series.
enum Series {
    Id(u64),
    New(Labels),
}

impl Entry {
    fn series(&self) -> Option<Series> {
        let labels = self.labels.as_ref()?;
        Some(match self.id {
            Some(id) => Series::Id(id),
            None => Series::New(labels.clone()),
        })
    }
}

/// The series every scrape writes about itself.
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Cache entries not seen for this many scrapes are forgotten.
const FORGET_AFTER: u64 = 10;

/// A page's samples in order: line number, labels after relabeling
/// (`None`: dropped), timestamp, value.
type Parsed = Vec<(usize, Option<Labels>, Timestamp, f64)>;

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
                        .map(|k| format!("{}={}", percent_encode(k), percent_encode(v)))
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
                    cache: FastMap::default(),
                    epoch: 0,
                }),
            }));
        }
    }
    Targets { active, dropped }
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

    /// Takes over the series cache and status of `old`, the same target
    /// before a reload changed its job's settings (as Prometheus hands a
    /// scrape loop's cache to its successor, without stale markers).
    pub fn adopt(&self, old: &Target) {
        let mut from = old.lock();
        let mut to = self.lock();
        to.status = from.status.clone();
        to.cache = std::mem::take(&mut from.cache);
        to.epoch = from.epoch;
    }

    /// Ends every series the last scrape wrote, the report series included,
    /// with stale markers at `now` (the target was removed).
    pub fn end(&self, storage: &Storage, now: Timestamp) -> Result<(), String> {
        let st = self.lock();
        let mut app = storage.appender().lazy_sync();
        for e in st.cache.values().filter(|e| e.seen == st.epoch) {
            match (&e.id, &e.labels) {
                (Some(id), Some(_)) => app.append_id(*id, now, stale_nan()),
                (None, Some(l)) => app.append(l.clone(), now, stale_nan()),
                _ => {}
            }
        }
        if st.epoch > 0 {
            for name in REPORT_SERIES {
                app.append(self.labels.with(METRIC_NAME, name), now, stale_nan());
            }
        }
        app.commit_lenient().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Fetches the target's page (within the job's timeout).
    pub async fn fetch(&self) -> Result<(String, Format), String> {
        let timeout = self.config.timeout.std();
        let client = crate::http::client(&self.config.http)?;
        let req = client
            .get(&self.url)
            .timeout(timeout)
            .header("Accept", ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            );
        let resp = self
            .config
            .http
            .authorize(req)?
            .send()
            .await
            .map_err(|e| crate::http::describe(&e, timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        let format = expfmt::format_of(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp
            .bytes()
            .await
            .map_err(|e| crate::http::describe(&e, timeout))?;
        let body =
            String::from_utf8(body.into()).map_err(|_| "the page is not UTF-8 text".to_string())?;
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
        let mut st = self.lock();
        st.epoch += 1;
        let epoch = st.epoch;
        // What this scrape keeps: the series by id, or by labels until the
        // store has given it an id.
        let mut keep: Vec<(Series, Timestamp, f64)> = Vec::new();
        let mut scraped = 0;
        let mut added = 0;
        let mut error = None;
        match fetched {
            Ok((body, format)) => {
                let fast = fast_path(
                    &mut st.cache,
                    &body,
                    format,
                    epoch,
                    now,
                    self.config.honor_timestamps,
                );
                let result = match fast {
                    Some(r) => Ok(r),
                    None => {
                        unmark(&mut st.cache, epoch);
                        self.slow_path(&mut st.cache, &body, format, epoch, now)
                            .map(|(r, new)| {
                                added = new;
                                r
                            })
                    }
                };
                match result {
                    Ok((n, samples)) => {
                        scraped = n;
                        let limit = self.config.sample_limit;
                        if limit > 0 && samples.len() > limit {
                            error = Some(format!(
                                "sample limit exceeded: {} samples, the limit is {limit}",
                                samples.len()
                            ));
                            unmark(&mut st.cache, epoch);
                        } else {
                            keep = samples;
                        }
                    }
                    Err(e) => error = Some(e),
                }
            }
            Err(e) => error = Some(e),
        }
        // Series gone since the last scrape end with a stale marker.
        let mut stale: Vec<(Option<u64>, Labels)> = Vec::new();
        st.cache.retain(|_, e| {
            if e.seen + 1 == epoch {
                if let Some(l) = &e.labels {
                    stale.push((e.id, l.clone()));
                }
            }
            e.seen + FORGET_AFTER >= epoch
        });
        let duration = started.elapsed().as_secs_f64();
        let post_relabel = keep.len();
        let report = REPORT_SERIES.into_iter().zip([
            if error.is_none() { 1.0 } else { 0.0 },
            duration,
            scraped as f64,
            post_relabel as f64,
            added as f64,
        ]);
        let mut app = storage.appender().lazy_sync();
        for (series, t, v) in &keep {
            match series {
                Series::Id(id) => app.append_id(*id, *t, *v),
                Series::New(labels) => app.append(labels.clone(), *t, *v),
            }
        }
        for (id, labels) in &stale {
            match id {
                Some(id) => app.append_id(*id, now, stale_nan()),
                None => app.append(labels.clone(), now, stale_nan()),
            }
        }
        for (name, v) in report {
            app.append(self.labels.with(METRIC_NAME, name), now, v);
        }
        let stored = app.commit_lenient();
        if let Err(AppendError::UnknownSeries(_)) = stored {
            // The store dropped a series (retention): the next scrape writes
            // by labels and learns the ids again.
            for e in st.cache.values_mut() {
                e.id = None;
            }
        }
        // Ids for series written for the first time.
        let missing: Vec<&Labels> = keep
            .iter()
            .filter_map(|(s, ..)| match s {
                Series::New(l) => Some(l),
                Series::Id(_) => None,
            })
            .collect();
        if !missing.is_empty() {
            let ids: FastMap<&Labels, u64> = missing
                .iter()
                .copied()
                .zip(storage.series_ids(&missing))
                .filter_map(|(l, id)| Some((l, id?)))
                .collect();
            for e in st.cache.values_mut().filter(|e| e.id.is_none()) {
                e.id = e.labels.as_ref().and_then(|l| ids.get(l).copied());
            }
        }
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

    /// Parses the page in full, fills the cache from it, and returns the
    /// samples to keep and how many series are new to the cache.
    #[allow(clippy::type_complexity)]
    fn slow_path(
        &self,
        cache: &mut FastMap<String, Entry>,
        body: &str,
        format: Format,
        epoch: u64,
        now: Timestamp,
    ) -> Result<((usize, Vec<(Series, Timestamp, f64)>), usize), String> {
        let parsed = self.samples(body, format, now)?;
        let lines: Vec<&str> = body.lines().collect();
        let mut keep = Vec::new();
        let mut added = 0;
        for (line, labels, t, v) in &parsed {
            // Parsed sample lines are numbered from 1.
            let Some(Ok((series, ..))) = line
                .checked_sub(1)
                .and_then(|i| lines.get(i))
                .and_then(|l| expfmt::split_sample(l, format))
            else {
                continue;
            };
            let entry = cache.entry(series.to_string()).or_insert_with(|| {
                if labels.is_some() {
                    added += 1;
                }
                Entry {
                    labels: labels.clone(),
                    id: None,
                    seen: 0,
                    prev: 0,
                }
            });
            if entry.seen == epoch {
                // The same line twice: the first counts.
                continue;
            }
            if entry.labels != *labels {
                entry.labels = labels.clone();
                entry.id = None;
            }
            entry.mark(epoch);
            if let Some(series) = entry.series() {
                keep.push((series, *t, *v));
            }
        }
        Ok(((parsed.len(), keep), added))
    }

    /// The page's samples with their final labels, in order. Fails as
    /// Prometheus fails a whole scrape, on a parse error.
    fn samples(&self, body: &str, format: Format, now: Timestamp) -> Result<Parsed, String> {
        let families = expfmt::parse(body, format).map_err(|e| format!("parse error: {e}"))?;
        let c = &self.config;
        let mut out = Vec::new();
        let mut seen: FastSet<Labels> = Default::default();
        for fam in &families {
            for s in &fam.samples {
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
                let t = match s.timestamp_ms {
                    Some(t) if c.honor_timestamps => t,
                    _ => now,
                };
                // Prometheus keeps the first of duplicate series.
                let labels = relabel(&labels, &c.metric_relabel).filter(|l| seen.insert(l.clone()));
                out.push((s.line, labels, t, s.value));
            }
        }
        Ok(out)
    }
}

/// Reads a page whose series are all in the cache without building label
/// sets; `None` when a line is new or malformed (the full parse then takes
/// over and says what is wrong).
#[allow(clippy::type_complexity)]
fn fast_path(
    cache: &mut FastMap<String, Entry>,
    body: &str,
    format: Format,
    epoch: u64,
    now: Timestamp,
    honor_timestamps: bool,
) -> Option<(usize, Vec<(Series, Timestamp, f64)>)> {
    if cache.is_empty() {
        return None;
    }
    let mut keep = Vec::new();
    let mut scraped = 0;
    for line in body.lines() {
        let Some(split) = expfmt::split_sample(line, format) else {
            continue;
        };
        let (series, v, ts) = split.ok()?;
        let entry = cache.get_mut(series)?;
        scraped += 1;
        if entry.seen == epoch {
            continue;
        }
        entry.mark(epoch);
        if let Some(series) = entry.series() {
            let t = match ts {
                Some(t) if honor_timestamps => t,
                _ => now,
            };
            keep.push((series, t, v));
        }
    }
    Some((scraped, keep))
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
            http: Default::default(),
            targets: vec![StaticTarget {
                address: "localhost:8000".into(),
                labels: [("env".to_string(), "prod".to_string())].into(),
            }],
            file_sd: vec![],
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
        let s = t[0].samples(page, Format::Text, 42).unwrap();
        assert_eq!(s.len(), 3);
        // go_* dropped by metric relabeling, the duplicate series too.
        let kept: Vec<_> = s.iter().filter(|x| x.1.is_some()).collect();
        assert_eq!(kept.len(), 1);
        let (_, l, ts, v) = kept[0];
        let l = l.as_ref().unwrap();
        assert_eq!(l.get("job"), Some("api"));
        assert_eq!(l.get("exported_job"), Some("mine"));
        assert_eq!((*ts, *v), (1700000000000, 5.0));
        let t = targets(&[job(true, 0)]).active;
        let s = t[0].samples(page, Format::Text, 42).unwrap();
        assert_eq!(s[0].1.as_ref().unwrap().get("job"), Some("mine"));
    }

    #[test]
    fn known_pages_take_the_fast_path_and_new_series_the_full_parse() {
        let t = targets(&[job(false, 0)]).active;
        let mut cache = FastMap::default();
        let page = "a{x=\"1\"} 1\nb 2\n";
        assert!(fast_path(&mut cache, page, Format::Text, 1, 0, true).is_none());
        let ((n, keep), added) = t[0]
            .slow_path(&mut cache, page, Format::Text, 1, 0)
            .unwrap();
        assert_eq!((n, keep.len(), added), (2, 2, 2));
        let (n, keep) = fast_path(
            &mut cache,
            "a{x=\"1\"} 3\nb 4 99\n",
            Format::Text,
            2,
            5,
            true,
        )
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!((keep[0].1, keep[0].2), (5, 3.0));
        assert_eq!((keep[1].1, keep[1].2), (99, 4.0));
        assert!(fast_path(&mut cache, "c 1\n", Format::Text, 3, 0, true).is_none());
        assert!(fast_path(&mut cache, "b x\n", Format::Text, 3, 0, true).is_none());
    }
}
