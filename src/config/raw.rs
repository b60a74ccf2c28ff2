//! Stage one: serde structs that mirror the file, key for key. Every struct
//! denies unknown keys; defaults are documented on each field. Stage two,
//! [`RawConfig::resolve`], checks values and collects every error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use serde_yaml::Value;

use super::*;
use crate::model::{is_valid_label_name, ConfigError, Labels, PromDuration, YamlLines};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    global: RawGlobal,
    /// Default `["rules/*.yml"]`.
    rule_files: Option<Vec<String>>,
    scrape_configs: Option<Vec<super::scrape::RawScrapeConfig>>,
    // Accepted as in prometheus.yml; acted on by later versions.
    scrape_config_files: Option<Value>,
    remote_write: Option<Vec<super::remote_write::RawRemoteWrite>>,
    remote_read: Option<Value>,
    alerting: Option<super::scrape::RawAlerting>,
    tracing: Option<Value>,
    alertmanager: Option<Value>,
    probes: Option<Vec<super::probe::RawProbe>>,
    storage: RawStorage,
    web: RawWeb,
    push: RawPush,
    host: RawHost,
    artifacts: RawArtifacts,
    query: RawQuery,
    otlp: RawOtlp,
}

/// Prometheus 3's `otlp:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOtlp {
    promote_resource_attributes: Vec<String>,
    keep_identifying_resource_attributes: bool,
    translation_strategy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQuery {
    /// Default 5m.
    lookback_delta: Option<PromDuration>,
    /// Default 50,000,000.
    max_samples: Option<usize>,
    /// Default 2m.
    timeout: Option<PromDuration>,
    /// Queries evaluated at once (Prometheus' `--query.max-concurrency`);
    /// more wait for a slot until their timeout. Default 20.
    max_concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGlobal {
    /// Default 15s.
    scrape_interval: Option<PromDuration>,
    /// Default 10s.
    scrape_timeout: Option<PromDuration>,
    /// Default 15s.
    evaluation_interval: Option<PromDuration>,
    external_labels: BTreeMap<String, String>,
    // prometheus.yml keys mlmon does not use yet.
    query_log_file: Option<Value>,
    body_size_limit: Option<Value>,
    sample_limit: Option<Value>,
    label_limit: Option<Value>,
    label_name_length_limit: Option<Value>,
    label_value_length_limit: Option<Value>,
    target_limit: Option<Value>,
    keep_dropped_targets: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    /// Default `data`.
    path: Option<PathBuf>,
    /// Default 15d.
    retention: Option<PromDuration>,
    /// Prometheus' `--storage.tsdb.retention.size` (`512MB`, `2GB`); none
    /// by default.
    retention_size: Option<String>,
    /// Default 1,000,000.
    max_series: Option<usize>,
    /// Default 64.
    max_labels_per_series: Option<usize>,
    /// Default 256.
    max_label_name_length: Option<usize>,
    /// Default 4096.
    max_label_value_length: Option<usize>,
    // prometheus.yml's storage section.
    tsdb: Option<Value>,
    exemplars: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeb {
    /// Default 127.0.0.1:8001.
    listen: Option<String>,
    /// Default 32 MiB.
    max_request_bytes: Option<usize>,
    /// Connections served at once (Prometheus' `--web.max-connections`);
    /// more wait in the listen queue. Default 512.
    max_connections: Option<usize>,
    /// Longest a client may take to send a whole request (Prometheus'
    /// `--web.read-timeout`). Default 5m.
    read_timeout: Option<PromDuration>,
    /// The URL users reach mlmon at, for links in notifications (default:
    /// http://<listen>).
    external_url: Option<String>,
    /// How often dashboard pages refresh themselves; 0 turns it off.
    /// Default 30s.
    refresh_interval: Option<PromDuration>,
    /// A Prometheus web-config file (`basic_auth_users`, ...).
    config_file: Option<PathBuf>,
    /// The same keys as a web-config file, inline.
    basic_auth_users: BTreeMap<String, String>,
    tls_server_config: Option<super::web::RawTlsServer>,
    http_server_config: Option<super::web::RawHttpServer>,
    /// Bearer tokens accepted like the users.
    bearer_tokens: Vec<String>,
    /// A file with one bearer token per line.
    bearer_token_file: Option<PathBuf>,
}

/// Prometheus' web-config file format (exporter-toolkit).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebConfigFile {
    basic_auth_users: BTreeMap<String, String>,
    tls_server_config: Option<super::web::RawTlsServer>,
    http_server_config: Option<super::web::RawHttpServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPush {
    /// How often pushed values are written to the store; default 15 s.
    interval: Option<PromDuration>,
    /// Time-to-live of groups no rule matches; default: forever.
    default_ttl: Option<PromDuration>,
    ttl: Vec<RawTtlRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTtlRule {
    /// grouping label → regular expression (anchored).
    #[serde(rename = "match")]
    matchers: BTreeMap<String, String>,
    ttl: PromDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHost {
    /// Default 15s.
    interval: Option<PromDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawArtifacts {
    /// Default `artifacts`.
    dir: Option<PathBuf>,
    /// Value of the `pipeline` label; default `default`.
    pipeline: Option<String>,
    /// Default 5s.
    interval: Option<PromDuration>,
    /// CSV files (relative to the directory) profiled for each run; default
    /// `data_ingestion/{raw,train,test}.csv`.
    profile: Option<Vec<String>>,
    /// Values kept per numeric column to profile and compare (a reservoir
    /// sample); default 10,000.
    profile_row_cap: Option<usize>,
}

/// Collects errors with file and line (the one YAML locator,
/// `YamlLines`, as for rule files and alertmanager.yml).
pub(super) struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    lines: YamlLines,
    pub base: &'a Path,
    pub errors: Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    pub fn new(text: &'a str, file: &'a str, base: &'a Path) -> Self {
        Validator {
            text,
            file,
            lines: YamlLines::new(text, 0),
            base,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &[&str], message: impl Into<String>) {
        let path = path.join(".");
        let line = self.lines.line(&path);
        let message = format!("{path}: {}", message.into());
        self.errors.push(ConfigError::new(self.file, line, message));
    }

    /// An error about item `index` of list `list` (e.g. the third scrape
    /// config), at that item's line.
    pub fn error_at_item(&mut self, list: &str, index: usize, message: &str) {
        let line = self.lines.line(&format!("{list}[{index}]"));
        let message = format!("{list}: {message}");
        self.errors.push(ConfigError::new(self.file, line, message));
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

fn dur(d: Option<PromDuration>, default_secs: i64) -> PromDuration {
    d.unwrap_or(PromDuration::from_secs(default_secs))
}

impl RawConfig {
    pub fn resolve(mut self, v: &mut Validator, path: Option<&Path>) -> Option<Config> {
        let mut ignored = Vec::new();
        let mut ignore = |name: &str, present: bool, why: &str| {
            if present {
                ignored.push(format!("{name}: {why}"));
            }
        };
        let later = "accepted, not acted on by this version of mlmon";
        ignore(
            "scrape_config_files",
            self.scrape_config_files.is_some(),
            later,
        );
        ignore(
            "remote_read",
            self.remote_read.as_ref().is_some_and(|s| !is_empty(s)),
            "mlmon does not read from remote storage",
        );
        ignore(
            "tracing",
            self.tracing.is_some(),
            "mlmon does not export traces",
        );
        ignore(
            "storage.tsdb",
            self.storage.tsdb.is_some(),
            "Prometheus TSDB options do not apply to mlmon's store",
        );
        ignore(
            "storage.exemplars",
            self.storage.exemplars.is_some(),
            "mlmon does not store exemplars",
        );
        let g = &self.global;
        for (name, present) in [
            ("query_log_file", g.query_log_file.is_some()),
            ("body_size_limit", g.body_size_limit.is_some()),
            ("sample_limit", g.sample_limit.is_some()),
            ("label_limit", g.label_limit.is_some()),
            (
                "label_name_length_limit",
                g.label_name_length_limit.is_some(),
            ),
            (
                "label_value_length_limit",
                g.label_value_length_limit.is_some(),
            ),
            ("target_limit", g.target_limit.is_some()),
            ("keep_dropped_targets", g.keep_dropped_targets.is_some()),
        ] {
            ignore(&format!("global.{name}"), present, later);
        }

        let global = self.resolve_global(v);
        let otlp = self.resolve_otlp(v);
        let scrape = super::scrape::resolve(
            self.scrape_configs.take().unwrap_or_default(),
            global.scrape_interval,
            global.scrape_timeout,
            v,
        );
        let alertmanagers =
            super::scrape::resolve_alerting(self.alerting.take().unwrap_or_default(), v);
        let probes = super::probe::resolve(
            self.probes.take().unwrap_or_default(),
            global.scrape_interval,
            v,
        );
        let notifier = self
            .alertmanager
            .take()
            .and_then(|a| notifier_source(&a, v));
        let storage = self.resolve_storage(v);
        let web = self.web.resolve(v);
        let push = self.push.resolve(v);
        let host = HostConfig {
            interval: dur(self.host.interval, 15),
        };
        if host.interval.millis() < 0 {
            v.error(
                &["host", "interval"],
                "must not be negative (0 turns the host collector off)",
            );
        }
        let remote_write =
            super::remote_write::resolve(self.remote_write.take().unwrap_or_default(), v);
        let artifacts = ArtifactsConfig {
            dir: self
                .artifacts
                .dir
                .unwrap_or_else(|| DEFAULT_ARTIFACTS_DIR.into()),
            pipeline: self.artifacts.pipeline.unwrap_or_else(|| "default".into()),
            interval: dur(self.artifacts.interval, 5),
            profile: self.artifacts.profile.unwrap_or_else(|| {
                ["raw", "train", "test"]
                    .iter()
                    .map(|d| format!("data_ingestion/{d}.csv"))
                    .collect()
            }),
            profile_row_cap: self.artifacts.profile_row_cap.unwrap_or(10_000),
        };
        if artifacts.profile_row_cap == 0 {
            v.error(&["artifacts", "profile_row_cap"], "must be greater than 0");
        }
        if artifacts.interval.millis() < 0 {
            v.error(
                &["artifacts", "interval"],
                "must not be negative (0 turns the artifacts collector off)",
            );
        }
        let query = QueryConfig {
            lookback_delta: dur(self.query.lookback_delta, 300),
            max_samples: self.query.max_samples.unwrap_or(50_000_000),
            timeout: dur(self.query.timeout, 120),
            max_concurrency: self.query.max_concurrency.unwrap_or(20),
        };
        for (key, ok) in [
            ("lookback_delta", query.lookback_delta.millis() > 0),
            ("max_samples", query.max_samples > 0),
            ("timeout", query.timeout.millis() > 0),
            ("max_concurrency", query.max_concurrency > 0),
        ] {
            if !ok {
                v.error(&["query", key], "must be greater than 0");
            }
        }
        let rule_files = self
            .rule_files
            .unwrap_or_else(|| vec![DEFAULT_RULE_FILES.into()]);
        for (i, pattern) in rule_files.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(pattern) {
                v.error(
                    &["rule_files"],
                    format!("item {}: invalid pattern {pattern:?}: {e}", i + 1),
                );
            }
        }
        Some(Config {
            source: path.map(Path::to_path_buf),
            otlp,
            global,
            rule_files,
            storage,
            web: web?,
            push,
            host,
            artifacts,
            query,
            scrape,
            probes,
            alertmanagers,
            remote_write,
            notifier,
            ignored,
        })
    }

    fn resolve_otlp(&self, v: &mut Validator) -> super::OtlpConfig {
        let o = &self.otlp;
        match o.translation_strategy.as_deref() {
            None | Some("UnderscoreEscapingWithSuffixes") => {}
            Some(other) => v.error(
                &["otlp", "translation_strategy"],
                format!("{other:?} is not supported: mlmon stores names as Prometheus' default UnderscoreEscapingWithSuffixes writes them"),
            ),
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &o.promote_resource_attributes {
            if a.trim().is_empty() {
                v.error(
                    &["otlp", "promote_resource_attributes"],
                    "empty attribute name",
                );
            } else if !seen.insert(a.trim()) {
                v.error(
                    &["otlp", "promote_resource_attributes"],
                    format!("duplicated promoted OTel resource attribute {a:?}"),
                );
            }
        }
        super::OtlpConfig {
            promote_resource_attributes: o
                .promote_resource_attributes
                .iter()
                .map(|a| a.trim().to_string())
                .collect(),
            keep_identifying_resource_attributes: o.keep_identifying_resource_attributes,
        }
    }

    fn resolve_global(&self, v: &mut Validator) -> GlobalConfig {
        let g = &self.global;
        // Prometheus' defaults: one minute for both intervals.
        let scrape_interval = dur(g.scrape_interval, 60);
        let scrape_timeout = dur(g.scrape_timeout, 10).min(scrape_interval);
        if let Some(t) = g.scrape_timeout {
            if t > scrape_interval {
                v.error(
                    &["global", "scrape_timeout"],
                    format!("{t} is greater than scrape_interval {scrape_interval}"),
                );
            }
        }
        for (key, d) in [
            ("scrape_interval", scrape_interval),
            ("evaluation_interval", dur(g.evaluation_interval, 60)),
        ] {
            if d.millis() <= 0 {
                v.error(&["global", key], "must be greater than 0");
            }
        }
        let mut pairs = Vec::new();
        for (name, value) in &g.external_labels {
            if !is_valid_label_name(name) || name.starts_with("__") {
                v.error(
                    &["global", "external_labels"],
                    format!("{name:?} is not a valid label name"),
                );
            } else {
                pairs.push((name.clone(), value.clone()));
            }
        }
        GlobalConfig {
            scrape_interval,
            scrape_timeout,
            evaluation_interval: dur(g.evaluation_interval, 60),
            external_labels: Labels::new(pairs).unwrap_or_default(),
        }
    }

    fn resolve_storage(&self, v: &mut Validator) -> StorageConfig {
        let s = &self.storage;
        let retention = dur(s.retention, 15 * 86_400);
        if retention.millis() <= 0 {
            v.error(&["storage", "retention"], "must be greater than 0");
        }
        let retention_size = match s.retention_size.as_deref().map(crate::model::parse_bytes) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) if n < 1 << 20 => {
                v.error(
                    &["storage", "retention_size"],
                    "must be at least 1MB (or 0: no bound)",
                );
                None
            }
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                v.error(&["storage", "retention_size"], e);
                None
            }
        };
        let c = StorageConfig {
            path: s.path.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            retention,
            retention_size,
            max_series: s.max_series.unwrap_or(1_000_000),
            max_labels_per_series: s.max_labels_per_series.unwrap_or(64),
            max_label_name_length: s.max_label_name_length.unwrap_or(256),
            max_label_value_length: s.max_label_value_length.unwrap_or(4096),
        };
        for (key, n) in [
            ("max_series", c.max_series),
            ("max_labels_per_series", c.max_labels_per_series),
            ("max_label_name_length", c.max_label_name_length),
            ("max_label_value_length", c.max_label_value_length),
        ] {
            if n == 0 {
                v.error(&["storage", key], "must be greater than 0");
            }
        }
        c
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

impl RawWeb {
    fn resolve(self, v: &mut Validator) -> Option<WebConfig> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: Option<SocketAddr> = match listen_text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                v.error(
                    &["web", "listen"],
                    format!("{listen_text:?} is not an address like 127.0.0.1:8001"),
                );
                None
            }
        };
        let mut users: BTreeMap<String, String> = self.basic_auth_users;
        let mut tls = None;
        let mut http = super::HttpServerConfig::default();
        // The inline keys, then the file's (which win, as the file is what
        // Prometheus reads).
        if let Some(t) = self.tls_server_config {
            let (t, problems) = t.resolve(v.base);
            for (k, why) in problems {
                v.error(&["web", "tls_server_config", &k], why);
            }
            // The certificate, key and CA must load now, as the toolkit
            // checks them before serving.
            if let Some(Err(e)) = t.as_ref().map(crate::http::tls_server::check) {
                v.error(&["web", "tls_server_config", e.key], e.message);
            }
            tls = t;
        }
        if let Some(h) = self.http_server_config {
            let (h, problems) = h.resolve();
            for (k, why) in problems {
                v.error(&["web", "http_server_config", &k], why);
            }
            http = h;
        }
        let config_file = self.config_file.as_ref().map(|f| v.relative(f));
        if let Some(path) = &config_file {
            match std::fs::read_to_string(path) {
                Err(e) => v.error(
                    &["web", "config_file"],
                    format!("cannot read {}: {e}", path.display()),
                ),
                Ok(text) => {
                    let name = path.display().to_string();
                    match crate::model::parse_yaml::<RawWebConfigFile>(&text) {
                        Err(e) => {
                            let e = ConfigError::new(&name, e.line, e.message);
                            v.error(&["web", "config_file"], e.to_string());
                        }
                        Ok(wc) => {
                            // Errors inside the file name its own lines;
                            // its relative paths are relative to it.
                            let base = path.parent().unwrap_or(Path::new(""));
                            let mut fv = Validator::new(&text, &name, base);
                            if let Some(t) = wc.tls_server_config {
                                let (t, problems) = t.resolve(base);
                                for (k, why) in problems {
                                    fv.error(&["tls_server_config", &k], why);
                                }
                                if let Some(Err(e)) = t.as_ref().map(crate::http::tls_server::check)
                                {
                                    fv.error(&["tls_server_config", e.key], e.message);
                                }
                                tls = t.or(tls);
                            }
                            if let Some(h) = wc.http_server_config {
                                let (h, problems) = h.resolve();
                                for (k, why) in problems {
                                    fv.error(&["http_server_config", &k], why);
                                }
                                http = h;
                            }
                            v.errors.extend(fv.errors);
                            users.extend(wc.basic_auth_users);
                        }
                    }
                }
            }
        }
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                v.error(&["web", "basic_auth_users"], format!("user {user:?}: the password must be a bcrypt hash ($2y$...), as in Prometheus' web-config"));
            }
        }
        let mut tokens = self.bearer_tokens;
        if let Some(file) = &self.bearer_token_file {
            let path = v.relative(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => tokens.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                ),
                Err(e) => v.error(
                    &["web", "bearer_token_file"],
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        if tokens.iter().any(|t| t.len() < 16) {
            v.error(
                &["web", "bearer_tokens"],
                "bearer tokens must be at least 16 characters",
            );
        }
        let max_request_bytes = self.max_request_bytes.unwrap_or(32 << 20);
        if max_request_bytes < 1024 {
            v.error(&["web", "max_request_bytes"], "must be at least 1024");
        }
        let max_connections = self.max_connections.unwrap_or(512);
        if max_connections == 0 {
            v.error(&["web", "max_connections"], "must be greater than 0");
        }
        let read_timeout = self.read_timeout.unwrap_or(PromDuration(300_000));
        if read_timeout.millis() <= 0 {
            v.error(&["web", "read_timeout"], "must be greater than 0");
        }
        let external_url = self
            .external_url
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &external_url {
            let ok = ["http://", "https://"]
                .iter()
                .any(|p| u.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
            if !ok {
                v.error(
                    &["web", "external_url"],
                    format!("{u:?} is not an http(s) URL"),
                );
            }
        }
        let refresh_interval = dur(self.refresh_interval, 30);
        if refresh_interval.millis() < 0 {
            v.error(&["web", "refresh_interval"], "must not be negative");
        }
        Some(WebConfig {
            listen: listen?,
            max_request_bytes,
            max_connections,
            read_timeout,
            external_url,
            refresh_interval,
            config_file,
            tls,
            http,
            auth: AuthConfig {
                basic_auth_users: users.into_iter().collect(),
                bearer_tokens: tokens,
            },
        })
    }
}

impl RawPush {
    fn resolve(self, v: &mut Validator) -> PushConfig {
        let interval = dur(self.interval, 15);
        if interval.millis() <= 0 {
            v.error(&["push", "interval"], "must be greater than 0");
        }
        let mut ttl_rules = Vec::new();
        for (i, rule) in self.ttl.into_iter().enumerate() {
            let mut matchers = Vec::new();
            for (name, pattern) in rule.matchers {
                match Regex::new(&format!("^(?:{pattern})$")) {
                    Ok(re) => matchers.push((name, re)),
                    Err(e) => v.error(
                        &["push", "ttl"],
                        format!(
                            "rule {}: label {name:?}: invalid regular expression: {e}",
                            i + 1
                        ),
                    ),
                }
            }
            if rule.ttl.millis() <= 0 {
                v.error(
                    &["push", "ttl"],
                    format!("rule {}: ttl must be greater than 0", i + 1),
                );
            }
            ttl_rules.push(TtlRule {
                matchers,
                ttl: rule.ttl,
            });
        }
        if let Some(d) = self.default_ttl {
            if d.millis() <= 0 {
                v.error(
                    &["push", "default_ttl"],
                    "must be greater than 0 (leave it out for no expiry)",
                );
            }
        }
        PushConfig {
            interval,
            default_ttl: self.default_ttl,
            ttl_rules,
        }
    }
}

/// `alertmanager:` either names a file (`alertmanager.yml`, or
/// `config_file: alertmanager.yml`) or
/// holds Alertmanager's keys inline; inline text is cut out of the file as
/// written, so messages about it carry the file's own line numbers.
fn notifier_source(value: &Value, v: &mut Validator) -> Option<NotifierSource> {
    if let Value::String(path) = value {
        return Some(NotifierSource::File(v.relative(Path::new(path))));
    }
    let Value::Mapping(m) = value else {
        v.error(
            &["alertmanager"],
            "must be a path, `config_file: PATH`, or Alertmanager's keys",
        );
        return None;
    };
    if let Some(f) = m.get("config_file") {
        if m.len() > 1 {
            v.error(
                &["alertmanager", "config_file"],
                "config_file cannot be combined with inline Alertmanager keys",
            );
            return None;
        }
        let Some(f) = f.as_str() else {
            v.error(&["alertmanager", "config_file"], "must be a path");
            return None;
        };
        return Some(NotifierSource::File(v.relative(Path::new(f))));
    }
    let start = v.lines.line("alertmanager")?;
    let lines: Vec<&str> = v
        .text
        .lines()
        .skip(start)
        .take_while(|l| l.trim().is_empty() || l.starts_with([' ', '\t']) || l.starts_with('#'))
        .collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let text: Vec<&str> = lines
        .iter()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect();
    Some(NotifierSource::Inline {
        text: text.join("\n"),
        line_offset: start,
        base: v.base.to_path_buf(),
    })
}
