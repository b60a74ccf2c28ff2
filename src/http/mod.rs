//! The HTTP client every outgoing request uses (scrapes, probes,
//! Alertmanagers, notifications, `mlmon run`), built from Prometheus'
//! HTTP client settings (`config`: auth, `tls_config`, proxy, redirects):
//! rustls with ring, the system's roots plus configured CAs, client
//! certificates, `server_name`; and errors worded without the client's
//! internals. The server side of TLS (HTTPS for mlmon's own listener) is
//! [`tls_server`], so that every rustls setup is in this one module.

pub mod config;
pub mod tls_server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use config::{Auth, ClientConfig, Proxy, Secret, TlsConfig, TlsVersion};

/// How long a client (and the certificates it read) is reused before its
/// files are read again, so rotated certificates are picked up.
const CLIENT_REUSE: Duration = Duration::from_secs(300);

/// The HTTP client for `config`'s TLS, proxy and redirect settings (its
/// credentials go on each request: [`ClientConfig::authorize`]), with
/// mlmon's user agent. Clients are shared by every caller with the same
/// settings and rebuilt after five minutes.
pub fn client(config: &ClientConfig) -> Result<reqwest::Client, String> {
    type Key = (TlsConfig, Proxy, bool);
    static CLIENTS: Mutex<Vec<(Key, Instant, reqwest::Client)>> = Mutex::new(Vec::new());
    let key = (
        config.tls.clone(),
        config.proxy.clone(),
        config.follow_redirects,
    );
    let mut cache = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|(_, built, _)| built.elapsed() < CLIENT_REUSE);
    if let Some((_, _, c)) = cache.iter().find(|(k, _, _)| *k == key) {
        return Ok(c.clone());
    }
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("mlmon/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls_client_config(&config.tls)?);
    if !config.follow_redirects {
        b = b.redirect(reqwest::redirect::Policy::none());
    }
    b = match &config.proxy {
        Proxy::None => b.no_proxy(),
        Proxy::Environment => b,
        Proxy::Url { url, no_proxy } => {
            let mut p = reqwest::Proxy::all(url)
                .map_err(|_| format!("proxy_url {url:?} is not a proxy URL"))?;
            if let Some(n) = no_proxy {
                p = p.no_proxy(reqwest::NoProxy::from_string(n));
            }
            b.proxy(p)
        }
    };
    let c = b
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    cache.push((key, Instant::now(), c.clone()));
    Ok(c)
}

/// POSTs `body` (JSON) to `url` with `config`'s credentials and TLS
/// settings, from a thread that is not async (mlmon's own commands:
/// `mlmon run`, `mlmon backup`); the answer's body, or why it failed
/// (with the server's text for an HTTP error).
pub fn post_blocking(
    config: &ClientConfig,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<String, String> {
    let client = client(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let req = client
            .post(url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        let resp = config
            .authorize(req)?
            .send()
            .await
            .map_err(|e| describe(&e, timeout))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("HTTP {status}: {}", text.trim()))
        }
    })
}

/// rustls' settings for `tls`: the system's roots plus `ca` (or no
/// verification, with `insecure_skip_verify`), the certificate's name
/// checked against `server_name` when given, a client certificate, and
/// the TLS versions allowed. Also used for SMTP.
pub fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // rustls needs a process-wide crypto provider; the first install wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let low = tls.min_version.unwrap_or(TlsVersion::Tls12);
    let high = tls.max_version.unwrap_or(TlsVersion::Tls13);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| low <= *v && *v <= high)
    .map(|(_, p)| p)
    .collect();
    if versions.is_empty() {
        return Err("tls_config: no TLS version mlmon speaks (1.2, 1.3) is allowed".into());
    }
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AnyCertificate(Signatures(provider.clone())))
    } else {
        let mut extra = Vec::new();
        if let Some(ca) = &tls.ca {
            let pem = ca.bytes().map_err(|e| format!("tls_config: ca: {e}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                extra.push(cert.map_err(|e| format!("tls_config: the CA is not PEM: {e}"))?);
            }
            if extra.is_empty() {
                return Err("tls_config: the CA holds no PEM certificate".into());
            }
        }
        let roots =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| format!("tls_config: cannot load the trusted certificates: {e}"))?;
        match &tls.server_name {
            Some(name) => Arc::new(Named {
                inner: Arc::new(roots),
                name: ServerName::try_from(name.clone())
                    .map_err(|_| format!("tls_config: server_name {name:?} is not a host name"))?,
            }),
            None => Arc::new(roots),
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let cert_pem = cert.bytes().map_err(|e| format!("tls_config: cert: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_config: the client certificate is not PEM: {e}"))?;
            let key_pem = key.bytes().map_err(|e| format!("tls_config: key: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("tls_config: the client key is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls_config: the client certificate and key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The handshake signatures a verifier checks with a provider's
/// algorithms; also what a verifier that accepts any certificate still
/// checks (the peer must hold the certificate's key). Shared by the
/// client's `insecure_skip_verify` and the server's
/// `RequestClientCert`/`RequireAnyClientCert`.
#[derive(Debug, Clone)]
pub(crate) struct Signatures(pub Arc<rustls::crypto::CryptoProvider>);

impl Signatures {
    pub fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// is still signed with it.
#[derive(Debug)]
struct AnyCertificate(Signatures);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// `server_name`: the certificate must be valid for this name, whatever
/// host the URL names.
#[derive(Debug)]
struct Named {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The wait a `Retry-After` header asks for (in seconds; HTTP dates are
/// not followed).
pub fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A fetch error as Prometheus words it, without the client's internals:
/// the innermost cause says what happened ("Connection refused",
/// "invalid peer certificate: UnknownIssuer", "received fatal alert:
/// CertificateRequired", ...).
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        format!("context deadline exceeded (timeout {timeout:?})")
    } else if e.is_connect() {
        format!("connect: {cause}")
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".into()
    } else if std::ptr::addr_eq(cause, e) {
        "the request failed".into()
    } else {
        format!("the request failed: {cause}")
    }
}
