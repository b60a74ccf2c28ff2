//! The config file `mlmon.yml`, read in two stages: [`raw`] holds serde
//! structs that mirror the file (unknown keys are errors), and
//! [`Config::from_yaml`] validates them into the resolved [`Config`], reporting
//! every problem as `file:line: message`. Top-level keys reuse
//! `prometheus.yml`'s names, so its sections paste in; sections that mlmon
//! does not act on yet are accepted and listed in [`Config::ignored`] for the
//! log, never dropped silently. Validation does no I/O except reading the
//! web-config and token files a config names.

mod probe;
mod raw;
mod web;
pub use crate::http::config::{ClientAuth, TlsServerConfig};
pub use web::HttpServerConfig;
mod remote_write;
mod scrape;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::model::{Labels, PromDuration};

pub use crate::model::{ConfigError, ConfigErrors};
pub use probe::{JsonRule, ProbeConfig};
pub use remote_write::{QueueConfig, RemoteWriteConfig};
pub use scrape::{AlertmanagerTarget, FileSdConfig, ScrapeConfig, StaticTarget};

/// Listen address and data locations used when neither the file nor the
/// command line names them.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8001";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_ARTIFACTS_DIR: &str = "artifacts";
pub const DEFAULT_RULE_FILES: &str = "rules/*.yml";

/// Command-line settings that win over mlmon.yml, applied again on each
/// reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(a) = self.listen {
            c.web.listen = a;
        }
        if let Some(d) = &self.data_dir {
            c.storage.path = d.clone();
        }
        if let Some(d) = &self.artifacts_dir {
            c.artifacts.dir = d.clone();
        }
    }
}

/// `otlp:` in mlmon.yml (Prometheus 3's keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtlpConfig {
    /// Resource attributes copied onto every series of the resource.
    pub promote_resource_attributes: Vec<String>,
    /// `service.name`, `service.namespace` and `service.instance.id` stay
    /// on `target_info` too.
    pub keep_identifying_resource_attributes: bool,
}

/// A resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (`None` for the embedded defaults).
    pub source: Option<PathBuf>,
    pub global: GlobalConfig,
    /// How OTLP metrics are translated (`otlp:`, as in Prometheus 3).
    pub otlp: OtlpConfig,
    /// Rule file globs, relative to the config file's directory.
    pub rule_files: Vec<String>,
    pub storage: StorageConfig,
    pub web: WebConfig,
    pub push: PushConfig,
    pub host: HostConfig,
    pub artifacts: ArtifactsConfig,
    pub query: QueryConfig,
    pub scrape: Vec<ScrapeConfig>,
    pub probes: Vec<ProbeConfig>,
    /// External Alertmanagers (`alerting.alertmanagers`).
    pub alertmanagers: Vec<AlertmanagerTarget>,
    /// Where everything stored is forwarded (`remote_write`).
    pub remote_write: Vec<RemoteWriteConfig>,
    /// The built-in notifier's Alertmanager configuration (`alertmanager:`);
    /// `None`: notifications go to the log.
    pub notifier: Option<NotifierSource>,
    /// Sections accepted but not acted on by this version, with the reason.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GlobalConfig {
    pub scrape_interval: PromDuration,
    pub scrape_timeout: PromDuration,
    pub evaluation_interval: PromDuration,
    pub external_labels: Labels,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub retention: PromDuration,
    /// Bytes every file of the data directory may take together (oldest
    /// data dropped first); `None`: no bound.
    pub retention_size: Option<u64>,
    pub max_series: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted (after decompression for remote write).
    pub max_request_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request (headers: at most 30 s).
    pub read_timeout: PromDuration,
    /// Where users reach mlmon (links in notifications); `None`: the
    /// listen address.
    pub external_url: Option<String>,
    /// Dashboard auto-refresh (0: off).
    pub refresh_interval: PromDuration,
    /// The web-config file read for users and TLS (`web.config_file`).
    pub config_file: Option<PathBuf>,
    /// HTTPS (`tls_server_config`); `None`: plain HTTP.
    pub tls: Option<TlsServerConfig>,
    /// `http_server_config`: extra response headers.
    pub http: HttpServerConfig,
    pub auth: AuthConfig,
}

/// Who may call mutating endpoints. Empty means no authentication.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// user → bcrypt hash, in Prometheus web-config `basic_auth_users` form.
    pub basic_auth_users: Vec<(String, String)>,
    pub bearer_tokens: Vec<String>,
}

impl AuthConfig {
    pub fn is_enabled(&self) -> bool {
        !self.basic_auth_users.is_empty() || !self.bearer_tokens.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// How often the latest pushed values are written to the store.
    pub interval: PromDuration,
    /// Time-to-live of groups matched by no rule (`None`: forever).
    pub default_ttl: Option<PromDuration>,
    pub ttl_rules: Vec<TtlRule>,
}

/// Groups whose grouping key matches every pattern expire after `ttl`.
#[derive(Debug, Clone)]
pub struct TtlRule {
    pub matchers: Vec<(String, Regex)>,
    pub ttl: PromDuration,
}

/// Limits of the PromQL engine, as Prometheus' `--query.*` flags.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub lookback_delta: PromDuration,
    pub max_samples: usize,
    pub timeout: PromDuration,
    /// Queries evaluated at once; more wait for a slot.
    pub max_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub interval: PromDuration,
}

#[derive(Debug, Clone)]
pub struct ArtifactsConfig {
    pub dir: PathBuf,
    pub pipeline: String,
    pub interval: PromDuration,
    /// CSV files profiled for each run, relative to `dir`.
    pub profile: Vec<String>,
    /// Values kept per numeric column of a profile.
    pub profile_row_cap: usize,
}

/// Where the notifier's `alertmanager.yml` comes from; `notify` parses it.
#[derive(Debug, Clone)]
pub enum NotifierSource {
    File(PathBuf),
    /// The `alertmanager:` section of mlmon.yml, dedented; its first line
    /// is line `line_offset + 1` of the file.
    Inline {
        text: String,
        line_offset: usize,
        base: PathBuf,
    },
}

impl Config {
    /// The embedded defaults (no file).
    pub fn defaults() -> Config {
        Config::from_yaml("{}", "<defaults>", None).expect("embedded defaults are valid")
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(&name, &e))?;
        Config::from_yaml(&text, &name, Some(path))
    }

    /// Parses and validates YAML text; `file` names it in errors and `path`
    /// (when it came from disk) anchors relative paths of referenced files.
    pub fn from_yaml(text: &str, file: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = if text.trim().is_empty() {
            raw::RawConfig::default()
        } else {
            crate::model::parse_yaml(text).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    file: file.to_string(),
                    line: e.line,
                    message: e.message,
                }])
            })?
        };
        let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
        let mut v = raw::Validator::new(text, file, base);
        let config = raw.resolve(&mut v, path);
        match (config, v.errors.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err(ConfigErrors(v.errors)),
        }
    }

    /// Reads the configuration again (a reload): the file it came from, or
    /// the defaults, with the command line's `overrides`.
    pub fn reload(source: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let mut c = match source {
            Some(p) => Config::load(p)?,
            None => Config::defaults(),
        };
        overrides.apply(&mut c);
        Ok(c)
    }

    /// Every file the configuration reads (the config file, rule files, the
    /// notifier's file, the web config), for `--config.auto-reload-interval`.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.source.iter().cloned().collect();
        for pattern in self.rule_file_patterns() {
            files.extend(glob::glob(&pattern).into_iter().flatten().flatten());
        }
        if let Some(NotifierSource::File(p)) = &self.notifier {
            files.push(p.clone());
        }
        files.extend(self.web.config_file.iter().cloned());
        files
    }

    /// The rule file globs resolved against the config file's directory.
    pub fn rule_file_patterns(&self) -> Vec<String> {
        let base = self
            .source
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        self.rule_files
            .iter()
            .map(|p| {
                if Path::new(p).is_absolute() || base.as_os_str().is_empty() {
                    p.clone()
                } else {
                    base.join(p).display().to_string()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
