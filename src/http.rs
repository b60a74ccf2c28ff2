//! The HTTP client every outgoing request uses (scrapes, probes,
//! Alertmanagers, notifications, `mlmon run`): rustls with ring, the
//! system's roots plus configured CAs, credentials (`ScrapeAuth`), and
//! errors worded without the client's internals.

use std::time::Duration;

/// `tls_config` for https targets.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM certificates trusted besides the system's roots (`ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

/// Credentials sent with a request (`basic_auth`, `authorization`).
#[derive(Clone)]
pub enum ScrapeAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

/// Secrets stay out of logs and `mlmon check` output.
impl std::fmt::Debug for ScrapeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeAuth::Basic { username, .. } => write!(f, "Basic({username}, <secret>)"),
            ScrapeAuth::Bearer(_) => write!(f, "Bearer(<secret>)"),
        }
    }
}

impl ScrapeAuth {
    /// `req` with these credentials.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            ScrapeAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
            ScrapeAuth::Bearer(token) => req.bearer_auth(token),
        }
    }
}

/// An HTTP client with mlmon's user agent, trusting the system's roots plus
/// `tls.ca_pem` (or anything, with `insecure_skip_verify`).
pub fn client(tls: &TlsConfig) -> Result<reqwest::Client, String> {
    // rustls needs a process-wide crypto provider; the first install wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("mlmon/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(pem) = &tls.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("tls_config: the CA file is not PEM: {e}"))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A fetch error as Prometheus words it, without the client's internals.
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("context deadline exceeded (timeout {timeout:?})")
    } else if e.is_connect() {
        // The innermost cause says what happened ("Connection refused",
        // "invalid peer certificate: UnknownIssuer", ...).
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("connect: {cause}")
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".into()
    } else {
        "the request failed".into()
    }
}
