//! Prometheus' HTTP client settings (prometheus/common's
//! `HTTPClientConfig`): the keys of `http_config:` in alertmanager.yml and
//! the same keys written inline in a scrape job or an entry of
//! `alerting.alertmanagers`. Read here once for every client mlmon has:
//! [`RawHttpConfig`] as written, [`RawHttpConfig::resolve`] into a
//! [`ClientConfig`] with the problems named by the key they concern.
//!
//! Secrets and certificates written as files are read when they are used
//! (a rotated token or certificate is picked up without a reload), as
//! Prometheus does; [`ClientConfig::check_files`] reads them once for
//! callers that refuse a configuration whose files cannot be read.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret (or certificate) written inline or in a file read when it is
/// used.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

/// Secrets stay out of logs and `mlmon check` output. An inline one shows
/// as a digest keyed by a random key of this process (so a reload can tell
/// a changed secret from the same one by comparing `Debug` output, while
/// the text reveals nothing of the value).
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        match self {
            Secret::Inline(s) => write!(
                f,
                "<secret {:016x}>",
                KEY.get_or_init(std::hash::RandomState::new).hash_one(s)
            ),
            Secret::File(p) => write!(f, "<secret in {}>", p.display()),
        }
    }
}

impl Secret {
    /// The value or the file's text without surrounding whitespace.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    }

    /// The value or the file's bytes as they are (certificates, keys).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone().into_bytes()),
            Secret::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
        }
    }

    /// `inline` or `file` (relative to `base`); both set is an error naming
    /// the two keys, `names`.
    pub fn either(
        inline: Option<String>,
        file: Option<String>,
        base: &Path,
        names: (&str, &str),
    ) -> Result<Option<Secret>, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!(
                "at most one of {} & {} must be configured",
                names.0, names.1
            )),
            (Some(s), None) => Ok(Some(Secret::Inline(s))),
            (None, Some(f)) => Ok(Some(Secret::File(base.join(f)))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBasicAuth {
    username: Option<String>,
    username_file: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<String>,
}

/// `tls_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    ca: Option<String>,
    ca_file: Option<String>,
    cert: Option<String>,
    cert_file: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
    server_name: Option<String>,
    insecure_skip_verify: bool,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// The HTTP client keys as written. Where they sit inline beside other
/// keys (a scrape job, an alertmanager, a remote write endpoint), the
/// enclosing struct is declared with [`with_http_client_keys!`] (serde
/// cannot flatten into a struct that refuses unknown keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpConfig {
    pub basic_auth: Option<RawBasicAuth>,
    pub authorization: Option<RawAuthorization>,
    pub oauth2: Option<serde_yaml::Value>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<String>,
    pub tls_config: Option<RawTls>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: Option<bool>,
    pub proxy_connect_header: Option<serde_yaml::Value>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
}

/// Declares a serde struct whose own fields are followed by Prometheus'
/// HTTP client keys, written inline as prometheus.yml writes them, with
/// `http_config(&mut self)` taking those keys out as a [`RawHttpConfig`].
macro_rules! with_http_client_keys {
    (
        $(#[$sm:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$sm])*
        $vis struct $name {
            $($(#[$fm])* $field: $ty,)*
            basic_auth: Option<$crate::http::config::RawBasicAuth>,
            authorization: Option<$crate::http::config::RawAuthorization>,
            oauth2: Option<serde_yaml::Value>,
            bearer_token: Option<String>,
            bearer_token_file: Option<String>,
            tls_config: Option<$crate::http::config::RawTls>,
            proxy_url: Option<String>,
            no_proxy: Option<String>,
            proxy_from_environment: Option<bool>,
            proxy_connect_header: Option<serde_yaml::Value>,
            follow_redirects: Option<bool>,
            enable_http2: Option<bool>,
        }

        impl $name {
            /// The HTTP client keys written inline, taken out.
            fn http_config(&mut self) -> $crate::http::config::RawHttpConfig {
                $crate::http::config::RawHttpConfig {
                    basic_auth: self.basic_auth.take(),
                    authorization: self.authorization.take(),
                    oauth2: self.oauth2.take(),
                    bearer_token: self.bearer_token.take(),
                    bearer_token_file: self.bearer_token_file.take(),
                    tls_config: self.tls_config.take(),
                    proxy_url: self.proxy_url.take(),
                    no_proxy: self.no_proxy.take(),
                    proxy_from_environment: self.proxy_from_environment.take(),
                    proxy_connect_header: self.proxy_connect_header.take(),
                    follow_redirects: self.follow_redirects.take(),
                    enable_http2: self.enable_http2.take(),
                }
            }
        }
    };
}
pub(crate) use with_http_client_keys;

/// Credentials sent with every request.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Basic {
        username: Secret,
        password: Secret,
    },
    /// `Authorization: <kind> <credentials>` (`bearer_token` is `Bearer`).
    Authorization {
        kind: String,
        credentials: Secret,
    },
}

/// TLS versions a `tls_config` can name (rustls speaks 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

/// `tls_config`, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// PEM certificates trusted besides the system's roots.
    pub ca: Option<Secret>,
    /// A client certificate and its key (PEM), both or neither.
    pub cert: Option<Secret>,
    pub key: Option<Secret>,
    /// The name the server's certificate must have (default: the URL's
    /// host); also the SNI name.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

/// Go's `tls.ClientAuthType`, as `client_auth_type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// `tls_server_config`, resolved: mlmon serves HTTPS.
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    /// PEM certificate chain and key; files are read at each handshake, so
    /// a rotated certificate is served to the next connection.
    pub cert: Secret,
    pub key: Secret,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Secret>,
    /// DNS names or IP addresses one of which a client certificate must
    /// carry.
    pub client_allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by Go's names, in preference order (empty: rustls'
    /// defaults).
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// `X25519`, `CurveP256`, `CurveP384` in preference order.
    pub curve_preferences: Vec<String>,
}

/// Which proxy requests go through.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Proxy {
    /// Direct (Prometheus ignores `HTTP_PROXY` unless told otherwise).
    #[default]
    None,
    Url {
        url: String,
        no_proxy: Option<String>,
    },
    /// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` from the environment.
    Environment,
}

/// A client's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub auth: Option<Auth>,
    pub tls: TlsConfig,
    pub proxy: Proxy,
    pub follow_redirects: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            auth: None,
            tls: TlsConfig::default(),
            proxy: Proxy::None,
            follow_redirects: true,
        }
    }
}

/// What is wrong with one key: `key` is its path inside the HTTP settings
/// (`tls_config.cert_file`, or empty for the settings as a whole).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: key.to_string(),
        message: message.into(),
    }
}

/// An HTTP client configuration file, as promtool's and amtool's
/// `--http.config.file` (for mlmon's own clients: `mlmon run`); relative
/// paths in it are relative to it. Errors name the file, line and key.
pub fn load_file(path: &Path) -> Result<ClientConfig, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    let raw: RawHttpConfig = crate::model::parse_yaml(&text)
        .map_err(|e| crate::model::ConfigError::new(&name, e.line, e.message).to_string())?;
    let (config, mut problems) = raw.resolve(path.parent().unwrap_or(Path::new("")));
    if problems.is_empty() {
        problems = config.check_files();
    }
    if problems.is_empty() {
        return Ok(config);
    }
    let lines = crate::model::YamlLines::new(&text, 0);
    let errors: Vec<String> = problems
        .into_iter()
        .map(|p| {
            let line = lines.line(&p.key);
            let key = if p.key.is_empty() {
                String::new()
            } else {
                format!("{}: ", p.key)
            };
            crate::model::ConfigError::new(&name, line, format!("{key}{}", p.message)).to_string()
        })
        .collect();
    Err(errors.join("\n"))
}

impl RawHttpConfig {
    /// Checks the settings as Prometheus does and resolves file names
    /// against `base` (the configuration file's directory).
    pub fn resolve(self, base: &Path) -> (ClientConfig, Vec<Problem>) {
        let mut problems = Vec::new();
        let set = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
            self.oauth2.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set > 1 {
            problems.push(problem(
                "",
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file, authorization must be configured",
            ));
        }
        if self.oauth2.is_some() {
            problems.push(problem(
                "oauth2",
                "OAuth 2.0 client credentials are not supported by mlmon; use authorization or basic_auth",
            ));
        }
        let mut auth = None;
        if let Some(b) = self.basic_auth {
            let names = ("basic_auth username", "username_file");
            let username =
                Secret::either(b.username, b.username_file, base, names).unwrap_or_else(|e| {
                    problems.push(problem("basic_auth", e));
                    None
                });
            let names = ("basic_auth password", "password_file");
            let password =
                Secret::either(b.password, b.password_file, base, names).unwrap_or_else(|e| {
                    problems.push(problem("basic_auth", e));
                    None
                });
            auth = Some(Auth::Basic {
                username: username.unwrap_or(Secret::Inline(String::new())),
                password: password.unwrap_or(Secret::Inline(String::new())),
            });
        }
        if let Some(a) = self.authorization {
            let kind = a.kind.unwrap_or_else(|| "Bearer".into());
            if kind.eq_ignore_ascii_case("basic") {
                problems.push(problem(
                    "authorization.type",
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
                ));
            }
            let names = ("authorization credentials", "credentials_file");
            let credentials = Secret::either(a.credentials, a.credentials_file, base, names)
                .unwrap_or_else(|e| {
                    problems.push(problem("authorization", e));
                    None
                });
            auth = Some(Auth::Authorization {
                kind,
                credentials: credentials.unwrap_or(Secret::Inline(String::new())),
            });
        }
        let names = ("bearer_token", "bearer_token_file");
        match Secret::either(self.bearer_token, self.bearer_token_file, base, names) {
            Ok(Some(token)) if auth.is_none() => {
                auth = Some(Auth::Authorization {
                    kind: "Bearer".into(),
                    credentials: token,
                })
            }
            Ok(_) => {}
            Err(e) => problems.push(problem("", e)),
        }
        let tls = match self.tls_config {
            Some(t) => {
                let (tls, p) = t.resolve(base);
                problems.extend(p.into_iter().map(|p| Problem {
                    key: format!(
                        "tls_config{}{}",
                        if p.key.is_empty() { "" } else { "." },
                        p.key
                    ),
                    message: p.message,
                }));
                tls
            }
            None => TlsConfig::default(),
        };
        let proxy = match (self.proxy_url, self.proxy_from_environment.unwrap_or(false)) {
            (Some(_), true) => {
                problems.push(problem(
                    "proxy_from_environment",
                    "if proxy_from_environment is configured, proxy_url must not be configured",
                ));
                Proxy::None
            }
            (Some(url), false) => {
                if reqwest::Proxy::all(&url).is_err()
                    || !["http://", "https://"].iter().any(|s| url.starts_with(s))
                {
                    problems.push(problem(
                        "proxy_url",
                        format!("{url:?} is not an http:// or https:// proxy URL"),
                    ));
                }
                Proxy::Url {
                    url,
                    no_proxy: self.no_proxy,
                }
            }
            (None, from_env) => {
                if self.no_proxy.is_some() {
                    problems.push(problem(
                        "no_proxy",
                        "if no_proxy is configured, proxy_url must also be configured",
                    ));
                }
                if from_env {
                    Proxy::Environment
                } else {
                    Proxy::None
                }
            }
        };
        if self.proxy_connect_header.is_some() {
            problems.push(problem(
                "proxy_connect_header",
                "headers for the proxy's CONNECT are not supported by mlmon",
            ));
        }
        // mlmon's clients speak HTTP/1.1; asking for HTTP/2 changes nothing
        // a server can tell.
        let _ = self.enable_http2;
        let config = ClientConfig {
            auth,
            tls,
            proxy,
            follow_redirects: self.follow_redirects.unwrap_or(true),
        };
        (config, problems)
    }
}

/// A TLS version as Prometheus' configurations name it (`TLS10` …
/// `TLS13`).
pub fn tls_version(text: &str) -> Option<TlsVersion> {
    match text {
        "TLS10" => Some(TlsVersion::Tls10),
        "TLS11" => Some(TlsVersion::Tls11),
        "TLS12" => Some(TlsVersion::Tls12),
        "TLS13" => Some(TlsVersion::Tls13),
        _ => None,
    }
}

fn version(text: &str, key: &str, problems: &mut Vec<Problem>) -> Option<TlsVersion> {
    let v = tls_version(text);
    if v.is_none() {
        problems.push(problem(
            key,
            format!("unknown TLS version {text:?} (TLS10, TLS11, TLS12 or TLS13)"),
        ));
    }
    v
}

impl RawTls {
    /// Checks a `tls_config` (also the one of an email receiver); keys in
    /// problems are inside it (`min_version`, or empty).
    pub fn resolve(self, base: &Path) -> (TlsConfig, Vec<Problem>) {
        let mut problems = Vec::new();
        let tls = resolve_tls(self, base, &mut problems);
        (tls, problems)
    }
}

fn resolve_tls(t: RawTls, base: &Path, problems: &mut Vec<Problem>) -> TlsConfig {
    let mut pem = |inline, file, names| {
        Secret::either(inline, file, base, names).unwrap_or_else(|e| {
            problems.push(problem("", e));
            None
        })
    };
    let ca = pem(t.ca, t.ca_file, ("ca", "ca_file"));
    let cert = pem(t.cert, t.cert_file, ("cert", "cert_file"));
    let key = pem(t.key, t.key_file, ("key", "key_file"));
    match (&cert, &key) {
        (Some(_), None) => problems.push(problem(
            "",
            "exactly one of key or key_file must be configured when a client certificate is configured",
        )),
        (None, Some(_)) => problems.push(problem(
            "",
            "exactly one of cert or cert_file must be configured when a client key is configured",
        )),
        _ => {}
    }
    let min_version = t
        .min_version
        .as_deref()
        .and_then(|v| version(v, "min_version", problems));
    let max_version = t
        .max_version
        .as_deref()
        .and_then(|v| version(v, "max_version", problems));
    if max_version.is_some_and(|v| v < TlsVersion::Tls12) {
        problems.push(problem(
            "max_version",
            "mlmon speaks TLS 1.2 and 1.3 only; max_version must be TLS12 or TLS13",
        ));
    }
    if let (Some(lo), Some(hi)) = (min_version, max_version) {
        if lo > hi {
            problems.push(problem(
                "",
                "max_version must be greater than or equal to min_version",
            ));
        }
    }
    TlsConfig {
        ca,
        cert,
        key,
        server_name: t.server_name.filter(|s| !s.is_empty()),
        insecure_skip_verify: t.insecure_skip_verify,
        min_version,
        max_version,
    }
}

impl ClientConfig {
    /// Reads every file the settings name, and builds the TLS setup once;
    /// what cannot be read or used, by key.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut read = |key: &str, s: &Secret| {
            if let Err(e) = s.bytes() {
                problems.push(problem(key, e));
            }
        };
        match &self.auth {
            Some(Auth::Basic { username, password }) => {
                read("basic_auth", username);
                read("basic_auth", password);
            }
            Some(Auth::Authorization { credentials, .. }) => read("authorization", credentials),
            None => {}
        }
        for s in [&self.tls.ca, &self.tls.cert, &self.tls.key]
            .into_iter()
            .flatten()
        {
            read("tls_config", s);
        }
        if problems.is_empty() {
            if let Err(e) = super::tls_client_config(&self.tls) {
                problems.push(problem("tls_config", e));
            }
        }
        problems
    }

    /// `req` with these settings' credentials (files read now).
    pub fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        Ok(match &self.auth {
            None => req,
            Some(Auth::Basic { username, password }) => {
                req.basic_auth(username.read()?, Some(password.read()?))
            }
            Some(Auth::Authorization { kind, credentials }) => {
                req.header("Authorization", format!("{kind} {}", credentials.read()?))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> (ClientConfig, Vec<Problem>) {
        let raw: RawHttpConfig = serde_yaml::from_str(yaml).unwrap();
        raw.resolve(Path::new("/etc/mlmon"))
    }

    #[test]
    fn every_key_resolves() {
        let (c, p) = resolve(
            "basic_auth: {username: u, password_file: pw}\ntls_config: {ca_file: ca.pem, cert_file: c.pem, key_file: /k.pem, server_name: db, min_version: TLS13}\nproxy_url: http://proxy:3128\nno_proxy: localhost\nfollow_redirects: false\nenable_http2: true\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.auth,
            Some(Auth::Basic {
                username: Secret::Inline("u".into()),
                password: Secret::File("/etc/mlmon/pw".into())
            })
        );
        assert_eq!(c.tls.ca, Some(Secret::File("/etc/mlmon/ca.pem".into())));
        assert_eq!(c.tls.key, Some(Secret::File("/k.pem".into())));
        assert_eq!(c.tls.server_name.as_deref(), Some("db"));
        assert_eq!(c.tls.min_version, Some(TlsVersion::Tls13));
        assert_eq!(
            c.proxy,
            Proxy::Url {
                url: "http://proxy:3128".into(),
                no_proxy: Some("localhost".into())
            }
        );
        assert!(!c.follow_redirects);
        let (c, p) = resolve("bearer_token: t\n");
        assert!(p.is_empty());
        assert_eq!(
            c.auth,
            Some(Auth::Authorization {
                kind: "Bearer".into(),
                credentials: Secret::Inline("t".into())
            })
        );
    }

    #[test]
    fn what_prometheus_refuses_is_refused_by_key() {
        for (yaml, key, words) in [
            (
                "basic_auth: {username: u}\nbearer_token: t\n",
                "",
                "at most one of basic_auth",
            ),
            (
                "authorization: {type: Basic, credentials: x}\n",
                "authorization.type",
                "basic_auth",
            ),
            (
                "authorization: {credentials: x, credentials_file: y}\n",
                "authorization",
                "credentials_file",
            ),
            ("oauth2: {client_id: x}\n", "oauth2", "not supported"),
            ("tls_config: {cert_file: c.pem}\n", "tls_config", "key_file"),
            (
                "tls_config: {ca: x, ca_file: y}\n",
                "tls_config",
                "ca & ca_file",
            ),
            (
                "tls_config: {min_version: TLS14}\n",
                "tls_config.min_version",
                "TLS14",
            ),
            (
                "tls_config: {max_version: TLS11}\n",
                "tls_config.max_version",
                "TLS 1.2",
            ),
            ("proxy_url: ftp://x\n", "proxy_url", "http://"),
            ("no_proxy: x\n", "no_proxy", "proxy_url"),
            (
                "proxy_url: http://x\nproxy_from_environment: true\n",
                "proxy_from_environment",
                "proxy_url",
            ),
        ] {
            let (_, p) = resolve(yaml);
            assert!(
                p.iter().any(|p| p.key == key && p.message.contains(words)),
                "{yaml}: {p:?}"
            );
        }
    }

    #[test]
    fn unreadable_files_are_found_by_check_files() {
        let (c, p) = resolve(
            "authorization: {credentials_file: missing}\ntls_config: {ca_file: nope.pem}\n",
        );
        assert!(p.is_empty());
        let p = c.check_files();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].message.contains("/etc/mlmon/missing"), "{p:?}");
    }
}
