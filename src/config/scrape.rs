//! `scrape_configs`, as in prometheus.yml: static targets, their labels,
//! HTTP options, limits and relabeling. Checked as Prometheus checks them
//! when loading; service discovery other than `static_configs` and
//! `file_sd_configs` is refused by name (serde's unknown-field error)
//! rather than silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use super::raw::Validator;
use crate::http::config::{with_http_client_keys, ClientConfig, Problem, RawHttpConfig};
use crate::model::{is_valid_label_name, PromDuration, RelabelAction, RelabelRule};

/// One scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub interval: PromDuration,
    pub timeout: PromDuration,
    pub metrics_path: String,
    pub scheme: String,
    /// URL query parameters, in order.
    pub params: Vec<(String, String)>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// 0: no limit.
    pub sample_limit: usize,
    /// Credentials, `tls_config`, proxy and redirects.
    pub http: ClientConfig,
    pub targets: Vec<StaticTarget>,
    /// `file_sd_configs`: targets read from files, changes picked up while
    /// running.
    pub file_sd: Vec<FileSdConfig>,
    pub relabel: Vec<RelabelRule>,
    pub metric_relabel: Vec<RelabelRule>,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSdConfig {
    /// Paths or globs (a `*` in the last element only), relative to the
    /// config file's directory; `.json`, `.yml` or `.yaml`.
    pub files: Vec<String>,
    pub refresh_interval: PromDuration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticTarget {
    /// `host:port`.
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

with_http_client_keys! {
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScrapeConfig {
    job_name: String,
    scrape_interval: Option<PromDuration>,
    scrape_timeout: Option<PromDuration>,
    metrics_path: Option<String>,
    scheme: Option<String>,
    params: Option<BTreeMap<String, Vec<String>>>,
    honor_labels: Option<bool>,
    honor_timestamps: Option<bool>,
    sample_limit: Option<usize>,
    #[serde(default)]
    static_configs: Vec<RawStaticConfig>,
    #[serde(default)]
    file_sd_configs: Vec<RawFileSd>,
    #[serde(default)]
    relabel_configs: Vec<RawRelabel>,
    #[serde(default)]
    metric_relabel_configs: Vec<RawRelabel>,
    body_size_limit: Option<Value>,
    label_limit: Option<usize>,
    label_name_length_limit: Option<usize>,
    label_value_length_limit: Option<usize>,
    target_limit: Option<usize>,
}
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticConfig {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSd {
    #[serde(default)]
    files: Vec<String>,
    refresh_interval: Option<PromDuration>,
}

/// Whether `name` is a path file discovery reads: a `*` only in the last
/// element, ending in `.json`, `.yml` or `.yaml` (Prometheus' rule).
fn valid_sd_path(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    let dir = &name[..name.len() - last.len()];
    let ext_ok = [".json", ".yml", ".yaml"]
        .iter()
        .any(|e| last.to_ascii_lowercase().ends_with(e));
    !dir.contains('*') && last.matches('*').count() <= 1 && ext_ok
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelabel {
    #[serde(default)]
    source_labels: Vec<String>,
    separator: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<String>,
}

/// The HTTP client settings, checked, with every file they name read once
/// (a scrape job, Alertmanager or remote write endpoint whose files cannot
/// be read is refused at load, not at its first request): the problems as `key: why`.
pub(super) fn resolve_http(raw: RawHttpConfig, base: &Path) -> (ClientConfig, Vec<String>) {
    let (http, mut problems) = raw.resolve(base);
    if problems.is_empty() {
        problems = http.check_files();
    }
    let text = |p: Problem| match p.key.as_str() {
        "" => p.message,
        key => format!("{key}: {}", p.message),
    };
    (http, problems.into_iter().map(text).collect())
}

/// Builds relabel rules; errors name the list and the rule's position.
pub(super) fn relabel_rules(raw: Vec<RawRelabel>, what: &str) -> Result<Vec<RelabelRule>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let action =
                RelabelAction::parse(r.action.as_deref().unwrap_or("replace")).and_then(|a| {
                    RelabelRule::new(
                        r.source_labels,
                        r.separator,
                        r.regex.as_deref(),
                        r.target_label,
                        r.replacement,
                        a,
                    )
                });
            let _ = r.modulus;
            action.map_err(|e| format!("{what} rule {}: {e}", i + 1))
        })
        .collect()
}

/// Checks every job; errors go to `v` with the job's line.
pub(super) fn resolve(
    raw: Vec<RawScrapeConfig>,
    global_interval: PromDuration,
    global_timeout: PromDuration,
    v: &mut Validator,
) -> Vec<ScrapeConfig> {
    let base = v.base.to_path_buf();
    let base = base.as_path();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, mut r) in raw.into_iter().enumerate() {
        let http_keys = r.http_config();
        let job = r.job_name.clone();
        let err = |v: &mut Validator, msg: String| {
            v.error_at_item("scrape_configs", index, &format!("job {job:?}: {msg}"))
        };
        if job.is_empty() {
            err(v, "job_name is empty".into());
            continue;
        }
        if !seen.insert(job.clone()) {
            err(v, "found multiple scrape configs with this job name".into());
            continue;
        }
        let interval = r.scrape_interval.unwrap_or(global_interval);
        // A job's own interval caps the global timeout (Prometheus does the same).
        let timeout = r.scrape_timeout.unwrap_or_else(|| {
            if global_timeout.millis() > interval.millis() {
                interval
            } else {
                global_timeout
            }
        });
        if interval.millis() <= 0 {
            err(v, "scrape_interval must be greater than 0".into());
        }
        if timeout.millis() > interval.millis() {
            err(
                v,
                format!("scrape_timeout {timeout} is greater than scrape_interval {interval}"),
            );
        }
        let scheme = r.scheme.unwrap_or_else(|| "http".into());
        match scheme.as_str() {
            "http" | "https" => {}
            other => err(v, format!("unknown scheme {other:?} (http or https)")),
        }
        let (http, problems) = resolve_http(http_keys, base);
        for p in problems {
            err(v, p);
        }
        let metrics_path = r.metrics_path.unwrap_or_else(|| "/metrics".into());
        if !metrics_path.starts_with('/') {
            err(
                v,
                format!("metrics_path {metrics_path:?} must start with /"),
            );
        }
        let mut targets = Vec::new();
        for sc in r.static_configs {
            for name in sc.labels.keys() {
                if !is_valid_label_name(name) {
                    err(
                        v,
                        format!("static_configs: {name:?} is not a valid label name"),
                    );
                }
            }
            for t in sc.targets {
                if t.is_empty() || t.contains('/') || t.contains(' ') {
                    err(v, format!("target {t:?} is not a valid host:port"));
                    continue;
                }
                targets.push(StaticTarget {
                    address: t,
                    labels: sc.labels.clone(),
                });
            }
        }
        let mut file_sd = Vec::new();
        for sd in r.file_sd_configs {
            if sd.files.is_empty() {
                err(v, "file_sd_configs: no files given".into());
            }
            let mut files = Vec::new();
            for f in sd.files {
                if !valid_sd_path(&f) {
                    err(v, format!("file_sd_configs: path name {f:?} is not valid for file discovery (a * only in the last path element; .json, .yml or .yaml)"));
                    continue;
                }
                files.push(if Path::new(&f).is_absolute() {
                    f
                } else {
                    base.join(&f).display().to_string()
                });
            }
            let refresh_interval = sd.refresh_interval.unwrap_or(PromDuration(300_000));
            if refresh_interval.millis() <= 0 {
                err(
                    v,
                    "file_sd_configs: refresh_interval must be greater than 0".into(),
                );
            }
            file_sd.push(FileSdConfig {
                files,
                refresh_interval,
            });
        }
        let relabel = relabel_rules(r.relabel_configs, "relabel_configs");
        let metric_relabel = relabel_rules(r.metric_relabel_configs, "metric_relabel_configs");
        let (relabel, metric_relabel) = match (relabel, metric_relabel) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                for e in [a.err(), b.err()].into_iter().flatten() {
                    err(v, e);
                }
                continue;
            }
        };
        let params = r
            .params
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |x| (k.clone(), x)))
            .collect();
        let _ = (
            r.body_size_limit,
            r.label_limit,
            r.label_name_length_limit,
            r.label_value_length_limit,
            r.target_limit,
        );
        out.push(ScrapeConfig {
            job_name: job,
            interval,
            timeout,
            metrics_path,
            scheme,
            params,
            honor_labels: r.honor_labels.unwrap_or(false),
            honor_timestamps: r.honor_timestamps.unwrap_or(true),
            sample_limit: r.sample_limit.unwrap_or(0),
            http,
            targets,
            file_sd,
            relabel,
            metric_relabel,
        });
    }
    out
}

/// `alerting.alertmanagers`: external Alertmanagers mlmon also sends its
/// alerts to, as Prometheus does.
#[derive(Debug, Clone)]
pub struct AlertmanagerTarget {
    /// `http://host:port/prefix/api/v2/alerts`.
    pub url: String,
    pub timeout: PromDuration,
    /// Credentials, `tls_config`, proxy and redirects.
    pub http: ClientConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerting {
    #[serde(default)]
    alertmanagers: Vec<RawAlertmanager>,
    #[serde(default)]
    alert_relabel_configs: Vec<RawRelabel>,
}

with_http_client_keys! {
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    #[serde(default)]
    static_configs: Vec<RawStaticConfig>,
    scheme: Option<String>,
    path_prefix: Option<String>,
    timeout: Option<PromDuration>,
    api_version: Option<String>,
}
}

/// Checks `alerting`; errors go to `v`.
pub(super) fn resolve_alerting(raw: RawAlerting, v: &mut Validator) -> Vec<AlertmanagerTarget> {
    let base = v.base.to_path_buf();
    let mut out = Vec::new();
    if !raw.alert_relabel_configs.is_empty() {
        v.error(
            &["alerting", "alert_relabel_configs"],
            "not supported by mlmon",
        );
    }
    for (i, mut am) in raw.alertmanagers.into_iter().enumerate() {
        let http_keys = am.http_config();
        let what = format!("alertmanager {}", i + 1);
        if am.api_version.as_deref().is_some_and(|a| a != "v2") {
            v.error(
                &["alerting", "alertmanagers"],
                format!("{what}: only api_version v2 is supported"),
            );
        }
        let scheme = am.scheme.unwrap_or_else(|| "http".into());
        if !matches!(scheme.as_str(), "http" | "https") {
            v.error(
                &["alerting", "alertmanagers"],
                format!("{what}: unknown scheme {scheme:?}"),
            );
        }
        let prefix = am.path_prefix.unwrap_or_default();
        let prefix = prefix.trim_end_matches('/');
        let (http, problems) = resolve_http(http_keys, &base);
        for p in problems {
            v.error(&["alerting", "alertmanagers"], format!("{what}: {p}"));
        }
        for sc in am.static_configs {
            for t in sc.targets {
                out.push(AlertmanagerTarget {
                    url: format!("{scheme}://{t}{prefix}/api/v2/alerts"),
                    timeout: am.timeout.unwrap_or(PromDuration::from_secs(10)),
                    http: http.clone(),
                });
            }
        }
    }
    out
}
