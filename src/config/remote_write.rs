//! `remote_write`, as in prometheus.yml: where mlmon forwards everything
//! it stores (Prometheus remote write 1.0), each endpoint with its own
//! queue. Prometheus' keys load verbatim; `queue_config.max_disk_bytes`
//! is mlmon's own (the disk the endpoint's backlog may hold).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_yaml::Value;

use super::raw::Validator;
use super::scrape::{relabel_rules, resolve_http, RawRelabel};
use crate::http::config::{with_http_client_keys, ClientConfig};
use crate::model::{PromDuration, RelabelRule};

/// One endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// `name`, or a stable one made from the URL: it keys the endpoint's
    /// position in the data file, so it must not change between restarts.
    pub name: String,
    pub url: String,
    pub timeout: PromDuration,
    pub headers: Vec<(String, String)>,
    pub relabel: Vec<RelabelRule>,
    pub http: ClientConfig,
    pub queue: QueueConfig,
}

/// `queue_config`, with Prometheus' defaults.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub capacity: usize,
    pub min_shards: usize,
    pub max_shards: usize,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: PromDuration,
    pub min_backoff: PromDuration,
    pub max_backoff: PromDuration,
    pub retry_on_http_429: bool,
    /// 0: no age limit.
    pub sample_age_limit: PromDuration,
    /// mlmon: the most log the endpoint's backlog may keep on disk;
    /// beyond it the oldest unsent data is dropped (and counted).
    pub max_disk_bytes: u64,
}

with_http_client_keys! {
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemoteWrite {
    url: String,
    name: Option<String>,
    remote_timeout: Option<PromDuration>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    write_relabel_configs: Vec<RawRelabel>,
    #[serde(default)]
    queue_config: RawQueue,
    metadata_config: Option<RawMetadata>,
    send_exemplars: Option<bool>,
    send_native_histograms: Option<bool>,
    sigv4: Option<Value>,
    azuread: Option<Value>,
}
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQueue {
    capacity: Option<usize>,
    min_shards: Option<usize>,
    max_shards: Option<usize>,
    max_samples_per_send: Option<usize>,
    batch_send_deadline: Option<PromDuration>,
    min_backoff: Option<PromDuration>,
    max_backoff: Option<PromDuration>,
    retry_on_http_429: Option<bool>,
    sample_age_limit: Option<PromDuration>,
    max_disk_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetadata {
    send: Option<bool>,
    send_interval: Option<PromDuration>,
    max_samples_per_send: Option<usize>,
}

/// The default disk budget of one endpoint's backlog.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 512 << 20;

/// Checks every endpoint; errors go to `v` at the endpoint's line.
pub(super) fn resolve(raw: Vec<RawRemoteWrite>, v: &mut Validator) -> Vec<RemoteWriteConfig> {
    let base = v.base.to_path_buf();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, mut r) in raw.into_iter().enumerate() {
        let err = |v: &mut Validator, msg: String| {
            v.error_at_item("remote_write", i, &format!("endpoint {}: {msg}", i + 1))
        };
        if !(r.url.starts_with("http://") || r.url.starts_with("https://"))
            || reqwest::Url::parse(&r.url).is_err()
        {
            err(v, format!("url {:?} is not an http(s) URL", r.url));
            continue;
        }
        // Prometheus names an unnamed queue by a hash of its config; the
        // URL is what identifies the receiver, and keeps the position.
        let name = r.name.clone().unwrap_or_else(|| {
            // FNV-1a of the URL.
            let h = r.url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{h:016x}")[..6].to_string()
        });
        if !names.insert(name.clone()) {
            err(
                v,
                format!("found multiple remote write configs with the name {name:?}"),
            );
            continue;
        }
        if r.sigv4.is_some() || r.azuread.is_some() {
            err(
                v,
                "sigv4 and azuread authentication are not supported by mlmon".into(),
            );
        }
        if r.send_native_histograms == Some(true) {
            err(
                v,
                "send_native_histograms: mlmon stores no native histograms".into(),
            );
        }
        let _ = r.send_exemplars;
        if let Some(m) = &r.metadata_config {
            if m.send == Some(true) {
                err(
                    v,
                    "metadata_config.send: mlmon keeps no metric metadata to send; set send: false"
                        .into(),
                );
            }
            let _ = (m.send_interval, m.max_samples_per_send);
        }
        let (http, problems) = resolve_http(r.http_config(), &base);
        for p in problems {
            err(v, p);
        }
        let relabel = match relabel_rules(r.write_relabel_configs, "write_relabel_configs") {
            Ok(rules) => rules,
            Err(e) => {
                err(v, e);
                continue;
            }
        };
        for (h, value) in &r.headers {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                err(v, format!("headers: {h:?} is not a valid HTTP header"));
                continue;
            }
            let lower = h.to_ascii_lowercase();
            if [
                "authorization",
                "host",
                "content-encoding",
                "content-type",
                "x-prometheus-remote-write-version",
                "user-agent",
                "connection",
                "keep-alive",
                "proxy-authenticate",
                "proxy-authorization",
                "www-authenticate",
                "retry-after",
            ]
            .contains(&lower.as_str())
            {
                err(
                    v,
                    format!("{h} is a reserved header. It must not be changed"),
                );
            }
        }
        let q = r.queue_config;
        let d = |x: Option<PromDuration>, ms: i64| x.unwrap_or(PromDuration(ms));
        // The defaults of Prometheus since 2.44 (prometheus#12203; 2.42 had
        // 2500, 200 and 500): larger requests cost less per sample.
        let queue = QueueConfig {
            capacity: q.capacity.unwrap_or(10_000),
            min_shards: q.min_shards.unwrap_or(1),
            max_shards: q.max_shards.unwrap_or(50),
            max_samples_per_send: q.max_samples_per_send.unwrap_or(2000).max(1),
            batch_send_deadline: d(q.batch_send_deadline, 5_000),
            min_backoff: d(q.min_backoff, 30),
            max_backoff: d(q.max_backoff, 5_000),
            retry_on_http_429: q.retry_on_http_429.unwrap_or(false),
            sample_age_limit: d(q.sample_age_limit, 0),
            max_disk_bytes: q.max_disk_bytes.unwrap_or(DEFAULT_MAX_DISK_BYTES),
        };
        if queue.min_shards > queue.max_shards || queue.max_shards == 0 {
            err(
                v,
                "queue_config: min_shards must be at most max_shards, which must be positive"
                    .into(),
            );
        }
        if queue.min_backoff.millis() <= 0 || queue.max_backoff < queue.min_backoff {
            err(
                v,
                "queue_config: min_backoff must be positive and at most max_backoff".into(),
            );
        }
        out.push(RemoteWriteConfig {
            name,
            url: r.url,
            timeout: r.remote_timeout.unwrap_or(PromDuration(30_000)),
            headers: r.headers.into_iter().collect(),
            relabel,
            http,
            queue,
        });
    }
    out
}
