//! Pushgateway-compatible metric groups.
//!
//! A group is named by its grouping key (`job` plus the labels of the URL
//! path). `PUT` replaces a group, `POST` replaces only the families it names,
//! `DELETE` removes it. The last push of every group is kept in the store's
//! KV table, so it survives a restart, and its values are written to the
//! store at push time and then every `push.interval`, so queries see them
//! like scraped Pushgateway metrics. Unlike the Pushgateway, a group may
//! have a time-to-live (per request or by a config rule on the grouping
//! key); when it runs out the group is removed and its series get stale
//! markers, so a pipeline that stopped reporting stops looking healthy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use crate::config::PushConfig;
use crate::expfmt::{self, Format, MetricFamily, MetricType, ParsedSample};
use crate::model::{stale_nan, Labels, Timestamp, METRIC_NAME};
use crate::tsdb::{AppendError, Storage, StorageError};

const KV_NAMESPACE: &str = "push";
pub const PUSH_TIME: &str = "push_time_seconds";
pub const PUSH_FAILURE_TIME: &str = "push_failure_time_seconds";
const PUSH_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway succeeded.";
const PUSH_FAILURE_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway failed.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMethod {
    /// Replace the whole group.
    Put,
    /// Replace only the families named in the body.
    Post,
}

/// One push as it arrived.
pub struct PushRequest {
    pub key: Labels,
    pub method: PushMethod,
    pub body: PushBody,
    /// A time-to-live asked for by the client.
    pub ttl_ms: Option<i64>,
}

/// A push's metrics: text to parse (0.0.4 or OpenMetrics), or families
/// already decoded (the protobuf format).
pub enum PushBody {
    Text(String, Format),
    Families(Vec<MetricFamily>),
}

/// Why a push was refused (all are the client's fault but `Storage`).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid grouping key: {0}")]
    GroupingKey(String),
    #[error("text format parsing error in line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("pushed metrics are invalid or inconsistent with existing metrics: {0}")]
    Inconsistent(String),
    #[error("invalid time-to-live: {0}")]
    Ttl(String),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Clone)]
struct Group {
    families: Vec<MetricFamily>,
    push_time: f64,
    failure_time: f64,
    /// Absolute expiry in ms, renewed by each successful push.
    expires_ms: Option<Timestamp>,
    ttl_ms: Option<i64>,
}

/// All groups; shared by the HTTP handlers and the emitter task.
pub struct PushGroups {
    cfg: PushConfig,
    groups: Mutex<BTreeMap<Labels, Group>>,
    /// Timestamp of the last write to the store, so each write is newer.
    last_emit: Mutex<Timestamp>,
}

/// Parses the path after `/metrics/` (`job/<job>{/<label>/<value>}`, names
/// may carry `@base64`) into the grouping key. Segments are percent-decoded
/// here, after splitting, so `%2F` stays inside a value.
pub fn grouping_key(path: &str) -> Result<Labels, PushError> {
    let err = |m: String| PushError::GroupingKey(m);
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if segments.len() < 2 || !segments.len().is_multiple_of(2) {
        return Err(err(
            "the path must be /metrics/job/<job>{/<label>/<value>}".into()
        ));
    }
    let mut pairs = Vec::new();
    let mut seen = HashSet::new();
    for pair in segments.chunks(2) {
        let raw_name = percent_decode(pair[0])
            .ok_or_else(|| err(format!("bad percent-encoding in {:?}", pair[0])))?;
        let (name, b64) = match raw_name.strip_suffix("@base64") {
            Some(n) => (n.to_string(), true),
            None => (raw_name, false),
        };
        let value = if b64 {
            decode_base64(pair[1])
                .ok_or_else(|| err(format!("value of {name:?} is not valid URL-safe base64")))?
        } else {
            percent_decode(pair[1])
                .ok_or_else(|| err(format!("bad percent-encoding in {:?}", pair[1])))?
        };
        if !crate::model::is_valid_label_name(&name) || name.starts_with("__") {
            return Err(err(format!("{name:?} is not a valid label name")));
        }
        if !seen.insert(name.clone()) {
            return Err(err(format!("label {name:?} appears more than once")));
        }
        pairs.push((name, value));
    }
    if pairs[0].0 != "job" {
        return Err(err("the path must start with /metrics/job/".into()));
    }
    if pairs[0].1.is_empty() {
        return Err(err("the job name must not be empty".into()));
    }
    Labels::new(pairs).map_err(|e| err(e.to_string()))
}

fn decode_base64(s: &str) -> Option<String> {
    use base64::Engine;
    let trimmed = s.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The labels of a pushed sample: its own, overwritten by the grouping key.
fn series_labels(key: &Labels, s: &ParsedSample) -> Labels {
    let mut pairs: Vec<(&str, &str)> = s
        .labels
        .iter()
        .filter(|(n, _)| key.get(n).is_none())
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    pairs.extend(key.iter());
    pairs.push((METRIC_NAME, &s.name));
    Labels::new(pairs).expect("parsed names are valid and grouping labels win over duplicates")
}

impl PushGroups {
    /// Loads the groups kept in the store.
    pub fn load(cfg: PushConfig, storage: &Storage) -> Result<PushGroups, StorageError> {
        let mut groups = BTreeMap::new();
        for (key, value) in storage.kv_scan(KV_NAMESPACE)? {
            let Some(labels) = Labels::decode(&key) else {
                tracing::warn!(message = "Skipping a push group with a corrupt key");
                continue;
            };
            match decode_group(&value) {
                Some(g) => {
                    groups.insert(labels, g);
                }
                None => tracing::warn!(message = "Skipping a corrupt push group", group = %labels),
            }
        }
        Ok(PushGroups {
            cfg,
            groups: Mutex::new(groups),
            last_emit: Mutex::new(i64::MIN),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Labels, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TTL a group gets: the request's, else the first matching rule's,
    /// else the default.
    fn ttl_for(&self, key: &Labels, requested: Option<i64>) -> Option<i64> {
        requested.or_else(|| {
            self.cfg
                .ttl_rules
                .iter()
                .find(|r| {
                    r.matchers
                        .iter()
                        .all(|(n, re)| re.is_match(key.get(n).unwrap_or("")))
                })
                .map(|r| r.ttl.millis())
                .or(self.cfg.default_ttl.map(|d| d.millis()))
        })
    }

    /// Applies a push. `reserved` lists family names (with their types) that
    /// belong to mlmon itself. On success the new values (and stale markers
    /// for series the push removed) are written to the store at `now`.
    pub fn push(
        &self,
        storage: &Storage,
        req: PushRequest,
        reserved: &HashMap<String, MetricType>,
        now: Timestamp,
    ) -> Result<(), PushError> {
        let PushRequest {
            key,
            method,
            body,
            ttl_ms,
        } = req;
        let families = match body {
            PushBody::Text(text, format) => {
                expfmt::parse(&text, format).map_err(|e| PushError::Parse {
                    line: e.line,
                    reason: e.reason,
                })?
            }
            PushBody::Families(f) => f,
        };
        let mut groups = self.lock();
        let old = groups.get(&key).cloned();
        let checked = self.check(&groups, &key, &families, reserved);
        if let Err(e) = checked {
            if let Some(g) = groups.get_mut(&key) {
                g.failure_time = now as f64 / 1000.0;
                let g = g.clone();
                drop(groups);
                storage.kv_put(KV_NAMESPACE, &key.encode(), &encode_group(&g))?;
            }
            return Err(e);
        }
        let mut merged = match (method, &old) {
            (PushMethod::Post, Some(g)) => {
                let names: HashSet<&str> = families.iter().map(|f| f.name.as_str()).collect();
                let mut keep: Vec<MetricFamily> = g
                    .families
                    .iter()
                    .filter(|f| !names.contains(f.name.as_str()))
                    .cloned()
                    .collect();
                keep.extend(families);
                keep
            }
            _ => families,
        };
        merged.retain(|f| !f.samples.is_empty() || f.help.is_some());
        let ttl = self.ttl_for(&key, ttl_ms);
        let group = Group {
            families: merged,
            push_time: now as f64 / 1000.0,
            failure_time: old.as_ref().map_or(0.0, |g| g.failure_time),
            expires_ms: ttl.map(|t| now + t),
            ttl_ms: ttl,
        };
        // Stale markers for series the new push no longer has.
        let new_series: HashSet<Labels> = group_samples(&key, &group)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let gone: Vec<Labels> = old
            .as_ref()
            .map(|g| {
                group_samples(&key, g)
                    .into_iter()
                    .map(|(l, _)| l)
                    .filter(|l| !new_series.contains(l))
                    .collect()
            })
            .unwrap_or_default();
        let mut samples = group_samples(&key, &group);
        samples.extend(gone.into_iter().map(|l| (l, stale_nan())));
        drop(groups);
        // Samples first: a refused push (a full disk) leaves no group behind
        // that a restart would bring back.
        self.write(storage, samples, now, true)?;
        storage.kv_put(KV_NAMESPACE, &key.encode(), &encode_group(&group))?;
        self.lock().insert(key.clone(), group);
        Ok(())
    }

    /// Removes a group; its series get stale markers. A missing group is
    /// not an error.
    pub fn delete(&self, storage: &Storage, key: &Labels, now: Timestamp) -> Result<(), PushError> {
        let removed = self.lock().remove(key);
        if let Some(g) = removed {
            storage.kv_delete(KV_NAMESPACE, &key.encode())?;
            let stale = group_samples(key, &g)
                .into_iter()
                .map(|(l, _)| (l, stale_nan()))
                .collect();
            self.write(storage, stale, now, true)?;
        }
        Ok(())
    }

    /// Removes groups whose time-to-live ran out, writing stale markers.
    /// Returns how many expired.
    pub fn expire(&self, storage: &Storage, now: Timestamp) -> Result<usize, PushError> {
        let expired: Vec<(Labels, Group)> = {
            let mut groups = self.lock();
            let keys: Vec<Labels> = groups
                .iter()
                .filter(|(_, g)| g.expires_ms.is_some_and(|e| e <= now))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| groups.remove(&k).map(|g| (k, g)))
                .collect()
        };
        let mut stale = Vec::new();
        for (key, g) in &expired {
            tracing::info!(message = "Push group expired", group = %key, ttl_ms = g.ttl_ms.unwrap_or(0));
            storage.kv_delete(KV_NAMESPACE, &key.encode())?;
            stale.extend(
                group_samples(key, g)
                    .into_iter()
                    .map(|(l, _)| (l, stale_nan())),
            );
        }
        self.write(storage, stale, now, false)?;
        Ok(expired.len())
    }

    /// Writes the current value of every pushed series at `now`.
    pub fn emit(&self, storage: &Storage, now: Timestamp) -> Result<(), PushError> {
        let samples: Vec<(Labels, f64)> = self
            .lock()
            .iter()
            .flat_map(|(k, g)| group_samples(k, g))
            .collect();
        self.write(storage, samples, now, false)
    }

    /// Writes samples at `now` (or just after the last write); `sync` for
    /// a client's request, which waits for the disk.
    fn write(
        &self,
        storage: &Storage,
        samples: Vec<(Labels, f64)>,
        now: Timestamp,
        sync: bool,
    ) -> Result<(), PushError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut last = self.last_emit.lock().unwrap_or_else(|p| p.into_inner());
        let t = now.max(last.saturating_add(1));
        let mut app = storage.appender();
        if !sync {
            app = app.lazy_sync();
        }
        for (labels, v) in samples {
            app.append(labels, t, v);
        }
        app.commit()?;
        *last = t;
        Ok(())
    }

    /// The families of all groups merged by name, with grouping labels
    /// applied (and `instance=""` where the group has no instance, as the
    /// Pushgateway exposes them) and `push_time_seconds` /
    /// `push_failure_time_seconds`, for `/metrics`. Families come sorted
    /// by name.
    pub fn families(&self) -> Vec<MetricFamily> {
        let groups = self.lock();
        let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for (key, g) in groups.iter() {
            for fam in g.families.iter().chain(meta_families(key, g).iter()) {
                let entry = by_name
                    .entry(fam.name.clone())
                    .or_insert_with(|| MetricFamily {
                        samples: Vec::new(),
                        ..fam.clone()
                    });
                for s in &fam.samples {
                    let labels = series_labels(key, s);
                    let mut pairs: Vec<(String, String)> = labels
                        .iter()
                        .filter(|(n, _)| *n != METRIC_NAME)
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect();
                    // As the Pushgateway exposes them: an empty `instance`
                    // when the group has none, so a scrape with
                    // `honor_labels: true` does not put the exporter's own.
                    if labels.get("instance").is_none() {
                        pairs.push(("instance".into(), String::new()));
                        pairs.sort();
                    }
                    entry.samples.push(ParsedSample {
                        name: s.name.clone(),
                        labels: pairs,
                        value: s.value,
                        timestamp_ms: None,
                        line: 0,
                    });
                }
            }
        }
        by_name.into_values().collect()
    }

    /// Number of groups (for `/metrics`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a push against the Pushgateway's rules: no timestamps, no
    /// reserved names, types and help consistent with other groups, no
    /// series that another group already exposes.
    fn check(
        &self,
        groups: &BTreeMap<Labels, Group>,
        key: &Labels,
        families: &[MetricFamily],
        reserved: &HashMap<String, MetricType>,
    ) -> Result<(), PushError> {
        let bad = |m: String| Err(PushError::Inconsistent(m));
        let mut series = HashSet::new();
        for fam in families {
            if fam.name == PUSH_TIME || fam.name == PUSH_FAILURE_TIME {
                return bad(format!(
                    "metric name {:?} is reserved for the push API",
                    fam.name
                ));
            }
            if let Some(t) = reserved.get(&fam.name) {
                if *t != fam.typ {
                    return bad(format!(
                        "metric {:?} is mlmon's own {} metric",
                        fam.name,
                        t.text_name()
                    ));
                }
            }
            for s in &fam.samples {
                if s.timestamp_ms.is_some() {
                    return bad(format!(
                        "line {}: pushed metrics must not have timestamps",
                        s.line
                    ));
                }
                if !series.insert(series_labels(key, s)) {
                    return bad(format!(
                        "line {}: {} was pushed more than once",
                        s.line,
                        series_labels(key, s)
                    ));
                }
            }
            for (other_key, g) in groups.iter().filter(|(k, _)| *k != key) {
                for other in g.families.iter().filter(|f| f.name == fam.name) {
                    if other.typ != fam.typ {
                        return bad(format!(
                            "metric {:?} is a {} here but a {} in group {other_key}",
                            fam.name,
                            fam.typ.text_name(),
                            other.typ.text_name()
                        ));
                    }
                    if other.help != fam.help {
                        return bad(format!(
                            "metric {:?} has help {:?} but group {other_key} has {:?}",
                            fam.name, fam.help, other.help
                        ));
                    }
                    for s in &other.samples {
                        let l = series_labels(other_key, s);
                        if series.contains(&l) {
                            return bad(format!("{l} is already pushed by group {other_key}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The push_time_seconds and push_failure_time_seconds families of a group.
fn meta_families(_key: &Labels, g: &Group) -> [MetricFamily; 2] {
    let fam = |name: &str, help: &str, v: f64| MetricFamily {
        name: name.into(),
        help: Some(help.into()),
        typ: MetricType::Gauge,
        unit: None,
        samples: vec![ParsedSample {
            name: name.into(),
            labels: vec![],
            value: v,
            timestamp_ms: None,
            line: 0,
        }],
    };
    [
        fam(PUSH_TIME, PUSH_TIME_HELP, g.push_time),
        fam(PUSH_FAILURE_TIME, PUSH_FAILURE_HELP, g.failure_time),
    ]
}

/// Every series of a group with its value, grouping labels applied.
fn group_samples(key: &Labels, g: &Group) -> Vec<(Labels, f64)> {
    g.families
        .iter()
        .chain(meta_families(key, g).iter())
        .flat_map(|f| f.samples.iter().map(|s| (series_labels(key, s), s.value)))
        .collect()
}

/// `mlmon-push v1 <push_time> <failure_time> <ttl_ms|-> <expires_ms|->`
/// followed by the families in text format.
fn encode_group(g: &Group) -> Vec<u8> {
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = format!(
        "mlmon-push v1 {} {} {} {}\n",
        expfmt::format_value(g.push_time),
        expfmt::format_value(g.failure_time),
        opt(g.ttl_ms),
        opt(g.expires_ms)
    );
    expfmt::write_families(&mut out, &g.families, Format::Text);
    out.into_bytes()
}

fn decode_group(b: &[u8]) -> Option<Group> {
    let s = std::str::from_utf8(b).ok()?;
    let (header, body) = s.split_once('\n')?;
    let f: Vec<&str> = header.split(' ').collect();
    if f.len() != 6 || f[0] != "mlmon-push" || f[1] != "v1" {
        return None;
    }
    let opt = |v: &str| {
        if v == "-" {
            Some(None)
        } else {
            v.parse().ok().map(Some)
        }
    };
    Some(Group {
        push_time: crate::model::parse_float(f[2]).ok()?,
        failure_time: crate::model::parse_float(f[3]).ok()?,
        ttl_ms: opt(f[4])?,
        expires_ms: opt(f[5])?,
        families: expfmt::parse(body, Format::Text).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keys_from_paths() {
        let k = grouping_key("job/batch/instance/host-1").unwrap();
        assert_eq!(k.to_string(), "{instance=\"host-1\", job=\"batch\"}");
        let k = grouping_key("job/directory_cleaner/path@base64/L3Zhci90bXA").unwrap();
        assert_eq!(k.get("path"), Some("/var/tmp"));
        let k = grouping_key("job@base64/YS9i/x/%CE%A0").unwrap();
        assert_eq!((k.get("job"), k.get("x")), (Some("a/b"), Some("Π")));
        let k = grouping_key("job/e/first@base64/=").unwrap();
        assert_eq!(k.get("first"), None);
        for bad in [
            "job",
            "job/a/b",
            "job//",
            "instance/x",
            "job/a/bad-name/1",
            "job/a/job/b",
            "job/a/x@base64/%%%",
        ] {
            assert!(grouping_key(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_paths_never_panic(path in "[a-z@%/=0-9A-F_.-]{0,40}") {
            let _ = grouping_key(&path);
        }
    }

    #[test]
    fn group_encoding_round_trips() {
        let g = Group {
            families: expfmt::parse("# TYPE a gauge\na{x=\"1\"} 2.5\n", Format::Text).unwrap(),
            push_time: 1.7e9,
            failure_time: 0.0,
            ttl_ms: Some(60_000),
            expires_ms: None,
        };
        let back = decode_group(&encode_group(&g)).unwrap();
        assert_eq!(back.families[0].samples[0].value, 2.5);
        assert_eq!(
            (back.push_time, back.ttl_ms, back.expires_ms),
            (1.7e9, Some(60_000), None)
        );
    }
}
