//! HTTPS from `tls_server_config` (Prometheus' web config): rustls'
//! server settings with the certificate and key read at each handshake
//! (parsed again only when their bytes changed, so a certificate rotated on
//! disk is served to the next connection), Go's five client
//! authentication policies, TLS versions, TLS 1.2 cipher suites and curves
//! by Go's names, and `client_allowed_sans` checked after the handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;

use super::config::{ClientAuth, Secret, TlsServerConfig, TlsVersion};
use super::Signatures;

/// What is wrong with a `tls_server_config`: the key and why.
#[derive(Debug)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls_server_config.{}: {}", self.key, self.message)
    }
}

fn err(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

/// A listener's TLS side, built from one `tls_server_config`.
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    allowed_sans: Vec<ServerName<'static>>,
}

/// Loads what `t` names once (certificate, key, client CA), as the
/// configuration is checked.
pub fn check(t: &TlsServerConfig) -> Result<(), TlsError> {
    TlsServer::new(t).map(|_| ())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsServer {
    pub fn new(t: &TlsServerConfig) -> Result<TlsServer, TlsError> {
        let mut provider = (*provider()).clone();
        if !t.cipher_suites.is_empty() {
            // TLS 1.3's suites stay (Go does not let them be chosen); TLS
            // 1.2's are the ones named, in their order.
            let all = provider.cipher_suites.clone();
            let mut suites: Vec<_> = all
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .cloned()
                .collect();
            for name in &t.cipher_suites {
                suites.extend(
                    all.iter()
                        .filter(|s| {
                            s.version() == &rustls::version::TLS12
                                && format!("{:?}", s.suite()) == *name
                        })
                        .cloned(),
                );
            }
            provider.cipher_suites = suites;
        }
        if !t.curve_preferences.is_empty() {
            let all = provider.kx_groups.clone();
            provider.kx_groups = t
                .curve_preferences
                .iter()
                .filter_map(|c| {
                    let want = match c.as_str() {
                        "X25519" => rustls::NamedGroup::X25519,
                        "CurveP256" => rustls::NamedGroup::secp256r1,
                        "CurveP384" => rustls::NamedGroup::secp384r1,
                        _ => return None,
                    };
                    all.iter().find(|g| g.name() == want).copied()
                })
                .collect();
        }
        let provider = Arc::new(provider);
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| t.min_version <= *v && *v <= t.max_version)
        .map(|(_, p)| p)
        .collect();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| err("min_version", e.to_string()))?;
        let builder = match t.client_auth {
            ClientAuth::NoClientCert => builder.with_no_client_auth(),
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
                .with_client_cert_verifier(Arc::new(AnyClientCert {
                    signatures: Signatures(provider.clone()),
                    mandatory: t.client_auth == ClientAuth::RequireAnyClientCert,
                })),
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let mut roots = rustls::RootCertStore::empty();
                let pem = t
                    .client_ca
                    .as_ref()
                    .ok_or_else(|| err("client_ca_file", "is needed to verify clients"))?
                    .bytes()
                    .map_err(|e| err("client_ca_file", e))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| err("client_ca_file", format!("not PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| err("client_ca_file", e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(err("client_ca_file", "holds no certificate"));
                }
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let v = if t.client_auth == ClientAuth::VerifyClientCertIfGiven {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(
                    v.build()
                        .map_err(|e| err("client_ca_file", e.to_string()))?,
                )
            }
        };
        let resolver = Arc::new(CertFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            provider: provider.clone(),
            last: Mutex::new(None),
        });
        // The first load says what is wrong, at check time and on reload.
        resolver.load()?;
        let mut config = builder.with_cert_resolver(resolver);
        config.ignore_client_order = t.prefer_server_cipher_suites;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let allowed_sans = t
            .client_allowed_sans
            .iter()
            .map(|s| {
                ServerName::try_from(s.clone())
                    .map_err(|_| err("client_allowed_sans", format!("{s:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            allowed_sans,
        })
    }

    /// The handshake on `tcp`, within `within`, and the client's
    /// certificate checked against `client_allowed_sans`.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        within: Duration,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let stream = tokio::time::timeout(within, self.acceptor.accept(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        if !self.allowed_sans.is_empty() {
            let (_, conn) = stream.get_ref();
            let cert = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("the client sent no certificate but client_allowed_sans is set")?;
            let cert = webpki::EndEntityCert::try_from(cert)
                .map_err(|e| format!("cannot read the client certificate: {e}"))?;
            if !self
                .allowed_sans
                .iter()
                .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
            {
                return Err("could not find allowed SANs in client cert".into());
            }
        }
        Ok(stream)
    }
}

/// The certificate and key, read at each handshake and parsed again when
/// their bytes changed.
#[derive(Debug)]
struct CertFiles {
    cert: Secret,
    key: Secret,
    provider: Arc<rustls::crypto::CryptoProvider>,
    last: Mutex<Option<Loaded>>,
}

/// The certificate's and key's bytes and what they made.
type Loaded = (Vec<u8>, Vec<u8>, Arc<CertifiedKey>);

impl CertFiles {
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_pem = self.cert.bytes().map_err(|e| err("cert_file", e))?;
        let key_pem = self.key.bytes().map_err(|e| err("key_file", e))?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, k, key)) = last.as_ref() {
            if *c == cert_pem && *k == key_pem {
                return Ok(key.clone());
            }
        }
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("cert_file", format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(err("cert_file", "holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| err("key_file", format!("not a PEM private key: {e}")))?;
        let certified = Arc::new(
            CertifiedKey::from_der(certs, key, &self.provider)
                .map_err(|e| err("key_file", format!("does not go with the certificate: {e}")))?,
        );
        *last = Some((cert_pem, key_pem, certified.clone()));
        Ok(certified)
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.load() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(message = "Cannot serve HTTPS", error = %e);
                // The last good pair keeps serving while a rotation is
                // half written.
                let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                last.as_ref().map(|(_, _, k)| k.clone())
            }
        }
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked
/// for (required by the second) and not verified.
#[derive(Debug)]
struct AnyClientCert {
    signatures: Signatures,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}
