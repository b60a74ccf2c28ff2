//! Prometheus' web configuration (exporter-toolkit's format), as a file
//! (`web.config_file`) or inline under `web:`: `basic_auth_users`,
//! `tls_server_config` and `http_server_config`, checked as the toolkit
//! checks them, with what rustls cannot do refused by name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::http::config::{ClientAuth, Secret, TlsServerConfig, TlsVersion};

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTlsServer {
    cert: Option<String>,
    key: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Vec<String>,
}

/// `http_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttpServer {
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// `http_server_config`, resolved.
#[derive(Debug, Clone, Default)]
pub struct HttpServerConfig {
    /// Extra headers on every response (the security headers the toolkit
    /// allows).
    pub headers: Vec<(String, String)>,
}

/// Go's `tls.CipherSuites()` (TLS 1.0–1.2), and whether rustls has it.
const GO_CIPHERS: &[(&str, bool)] = &[
    ("TLS_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", false),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true),
    // TLS 1.3's, which Go (and rustls) always enable.
    ("TLS_AES_128_GCM_SHA256", true),
    ("TLS_AES_256_GCM_SHA384", true),
    ("TLS_CHACHA20_POLY1305_SHA256", true),
];

/// The headers `http_server_config.headers` may set, with the values
/// allowed (empty: any).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn version(text: Option<&str>, default: TlsVersion) -> Result<TlsVersion, String> {
    let Some(v) = text.filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match crate::http::config::tls_version(v) {
        Some(t) if t >= TlsVersion::Tls12 => Ok(t),
        Some(_) => Err(format!(
            "{v} is not supported by mlmon (rustls speaks TLS12 and TLS13)"
        )),
        None => Err(format!("unknown TLS version: {v}")),
    }
}

impl RawTlsServer {
    /// Resolves against `base` (the directory of the file that wrote it);
    /// problems come as (key, why).
    pub(super) fn resolve(self, base: &Path) -> (Option<TlsServerConfig>, Vec<(String, String)>) {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut pem = |inline: Option<String>, file: Option<String>, names: (&str, &str)| {
            let (i, f) = (
                inline.filter(|s| !s.is_empty()),
                file.filter(|s| !s.is_empty()),
            );
            Secret::either(i, f, base, (names.0, names.1)).unwrap_or_else(|e| {
                problems.push((names.1.to_string(), e));
                None
            })
        };
        let cert = pem(self.cert, self.cert_file, ("cert", "cert_file"));
        let key = pem(self.key, self.key_file, ("key", "key_file"));
        let client_ca = pem(
            self.client_ca,
            self.client_ca_file,
            ("client_ca", "client_ca_file"),
        );
        let problem = |problems: &mut Vec<(String, String)>, k: &str, m: String| {
            problems.push((k.to_string(), m))
        };
        let client_auth = match self.client_auth_type.as_deref().unwrap_or("") {
            "" | "NoClientCert" => Some(ClientAuth::NoClientCert),
            "RequestClientCert" => Some(ClientAuth::RequestClientCert),
            "RequireAnyClientCert" | "RequireClientCert" => Some(ClientAuth::RequireAnyClientCert),
            "VerifyClientCertIfGiven" => Some(ClientAuth::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Some(ClientAuth::RequireAndVerifyClientCert),
            other => {
                problem(&mut problems, "client_auth_type", format!("invalid ClientAuth: {other} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"));
                None
            }
        };
        if client_ca.is_some() && client_auth == Some(ClientAuth::NoClientCert) {
            problem(
                &mut problems,
                "client_ca_file",
                "client CA's have been configured without a Client Auth Policy".into(),
            );
        }
        let verifying = matches!(
            client_auth,
            Some(ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert)
        );
        if verifying && client_ca.is_none() {
            problem(
                &mut problems,
                "client_ca_file",
                "verifying client certificates needs client_ca_file or client_ca".into(),
            );
        }
        let sans = self.client_allowed_sans.unwrap_or_default();
        for s in &sans {
            let ok = s.parse::<std::net::IpAddr>().is_ok()
                || rustls::pki_types::DnsName::try_from(s.as_str()).is_ok();
            if !ok {
                problem(&mut problems, "client_allowed_sans", format!("{s:?}: mlmon matches DNS names and IP addresses only (not e-mail or URI SANs)"));
            }
        }
        if !sans.is_empty() && !verifying {
            problem(&mut problems, "client_allowed_sans", "needs client_auth_type VerifyClientCertIfGiven or RequireAndVerifyClientCert (the certificate must be verified before its names mean anything)".into());
        }
        let min_version =
            version(self.min_version.as_deref(), TlsVersion::Tls12).unwrap_or_else(|e| {
                problem(&mut problems, "min_version", e);
                TlsVersion::Tls12
            });
        let max_version =
            version(self.max_version.as_deref(), TlsVersion::Tls13).unwrap_or_else(|e| {
                problem(&mut problems, "max_version", e);
                TlsVersion::Tls13
            });
        if min_version > max_version {
            problem(
                &mut problems,
                "max_version",
                "must be greater than or equal to min_version".into(),
            );
        }
        for c in &self.cipher_suites {
            match GO_CIPHERS.iter().find(|(n, _)| n == c) {
                None => problem(&mut problems, "cipher_suites", format!("unknown cipher: {c}")),
                Some((_, false)) => problem(
                    &mut problems,
                    "cipher_suites",
                    format!("{c} is not supported by mlmon (rustls offers ECDHE with AES-GCM or ChaCha20-Poly1305 only)"),
                ),
                Some(_) => {}
            }
        }
        for c in &self.curve_preferences {
            match c.as_str() {
                "X25519" | "CurveP256" | "CurveP384" => {}
                "CurveP521" => problem(
                    &mut problems,
                    "curve_preferences",
                    "CurveP521 is not supported by mlmon (X25519, CurveP256, CurveP384)".into(),
                ),
                other => problem(
                    &mut problems,
                    "curve_preferences",
                    format!("unknown curve: {other}"),
                ),
            }
        }
        match (&cert, &key) {
            (None, _) if problems.iter().all(|(k, _)| k != "cert_file") => problem(
                &mut problems,
                "cert_file",
                "missing one of cert or cert_file".into(),
            ),
            (_, None) if problems.iter().all(|(k, _)| k != "key_file") => problem(
                &mut problems,
                "key_file",
                "missing one of key or key_file".into(),
            ),
            _ => {}
        }
        let (Some(cert), Some(key), Some(client_auth)) = (cert, key, client_auth) else {
            return (None, problems);
        };
        let config = TlsServerConfig {
            cert,
            key,
            client_auth,
            client_ca,
            client_allowed_sans: sans,
            min_version,
            max_version,
            cipher_suites: self.cipher_suites,
            prefer_server_cipher_suites: self.prefer_server_cipher_suites.unwrap_or(true),
            curve_preferences: self.curve_preferences,
        };
        (Some(config), problems)
    }
}

impl RawHttpServer {
    pub(super) fn resolve(self) -> (HttpServerConfig, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            match HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                None => problems.push((
                    format!("headers.{name}"),
                    format!("HTTP header {name:?} can not be configured (Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"),
                )),
                Some((_, allowed)) if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) => {
                    problems.push((
                        format!("headers.{name}"),
                        format!("invalid value for {name}: {value:?} (one of {})", allowed.join(", ")),
                    ))
                }
                Some(_) if value.is_empty() => {}
                Some((n, _)) => headers.push((n.to_string(), value)),
            }
        }
        // HTTP/2 (`http2`, default true) is not spoken: clients negotiate
        // HTTP/1.1 through ALPN, which every HTTP/2 client falls back to.
        let _ = self.http2;
        (HttpServerConfig { headers }, problems)
    }
}
