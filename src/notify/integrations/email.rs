//! Email through SMTP (lettre): STARTTLS (`require_tls`, default on),
//! implicit TLS on port 465, AUTH PLAIN/LOGIN when `auth_username` is set,
//! the same `tls_config` as HTTP clients; the `subject` and `body`
//! extension keys.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{Attempt, Body, Integration, Rendered, Sending};
use crate::http::config::RawTls;
use crate::http::{Secret, TlsConfig};
use crate::notify::config::{canonical_header, host_port, tls, Check, RawGlobal};
use crate::notify::template::{Data, Library};
use crate::notify::Job;

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub send_resolved: bool,
    pub to: String,
    pub from: String,
    pub hello: String,
    /// Host and port (a number or a service name such as `submission`).
    pub smarthost: (String, String),
    pub auth_username: String,
    pub auth_password: Option<Secret>,
    pub auth_identity: String,
    /// Header name (canonical case) → template; `Subject`, `To` and
    /// `From` always present.
    pub headers: BTreeMap<String, String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub require_tls: bool,
    pub tls: TlsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::notify) struct RawEmail {
    send_resolved: Option<bool>,
    to: String,
    from: String,
    hello: String,
    smarthost: String,
    auth_username: String,
    auth_password: String,
    auth_password_file: String,
    auth_secret: String,
    auth_identity: String,
    headers: BTreeMap<String, String>,
    html: Option<String>,
    text: Option<String>,
    require_tls: Option<bool>,
    tls_config: RawTls,
    /// Extension: the Subject header.
    subject: Option<String>,
    /// Extension: the text body.
    body: Option<String>,
}

/// An email rendered: headers (with `Subject`), addresses and bodies.
pub struct Message {
    pub headers: BTreeMap<String, String>,
    pub to: String,
    pub from: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

impl Integration for EmailConfig {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn render(&self, job: &Job, lib: &Library) -> Result<Rendered, String> {
        render(self, &job.data, lib)
    }

    fn send<'a>(&'a self, rendered: &'a Rendered, timeout: Duration) -> Sending<'a> {
        Box::pin(send(self, rendered, timeout))
    }
}

/// An `email_configs` entry, with the global SMTP settings it inherits.
pub(in crate::notify) fn parse(
    e: RawEmail,
    g: &RawGlobal,
    path: &str,
    c: &mut Check,
) -> Option<EmailConfig> {
    let missing_to = e.to.is_empty();
    if missing_to {
        c.error(
            path,
            "missing to address in email config (set to: the address notifications go to)",
        );
    }
    let mut headers = BTreeMap::new();
    for (h, v) in &e.headers {
        let canon = canonical_header(h);
        if headers.insert(canon.clone(), v.clone()).is_some() {
            c.error(
                &format!("{path}.headers"),
                format!("duplicate header {canon:?} in email config"),
            );
        }
    }
    if let Some(subject) = &e.subject {
        if headers.contains_key("Subject") {
            c.error(
                &format!("{path}.subject"),
                "both subject and headers.Subject are set; keep one",
            );
        }
        headers.insert("Subject".into(), subject.clone());
        c.note(
            &format!("{path}.subject"),
            "not an Alertmanager field (amtool refuses it); mlmon accepts it as the Subject header \
             (Alertmanager's spelling: headers: { Subject: ... })",
        );
    }
    if e.body.is_some() {
        if e.text.is_some() {
            c.error(
                &format!("{path}.body"),
                "both body and text are set; keep one",
            );
        }
        c.note(
            &format!("{path}.body"),
            "not an Alertmanager field (amtool refuses it); mlmon accepts it as the text body \
             (Alertmanager's spelling: text: ...)",
        );
    }
    let smarthost_text = if e.smarthost.is_empty() {
        if g.smtp_smarthost.is_empty() {
            c.error(
                path,
                "no global SMTP smarthost set (set global.smtp_smarthost, or smarthost here, to your mail server's host:port)",
            );
            return None;
        }
        g.smtp_smarthost.clone()
    } else {
        e.smarthost.clone()
    };
    let smarthost = match host_port(&smarthost_text) {
        Ok(hp) => hp,
        Err(m) => {
            c.error(&format!("{path}.smarthost"), m);
            return None;
        }
    };
    let from = if e.from.is_empty() {
        if g.smtp_from.is_empty() {
            c.error(
                path,
                "no global SMTP from set (set global.smtp_from, or from here, to the sender address)",
            );
            return None;
        }
        g.smtp_from.clone()
    } else {
        e.from.clone()
    };
    headers
        .entry("Subject".into())
        .or_insert_with(|| r#"{{ template "email.default.subject" . }}"#.into());
    headers.entry("To".into()).or_insert_with(|| e.to.clone());
    headers.entry("From".into()).or_insert_with(|| from.clone());
    let auth_password = if e.auth_password.is_empty() && e.auth_password_file.is_empty() {
        c.secret(&g.smtp_auth_password, &g.smtp_auth_password_file)
    } else {
        c.secret(&e.auth_password, &e.auth_password_file)
    };
    let text = e.body.or(e.text);
    let html = match e.html {
        Some(h) => Some(h).filter(|h| !h.is_empty()),
        // A text body written by the user replaces the default HTML one.
        None if text.is_some() => None,
        None => Some(r#"{{ template "email.default.html" . }}"#.into()),
    };
    let tls = tls(e.tls_config, path, c);
    if missing_to {
        return None;
    }
    Some(EmailConfig {
        send_resolved: e.send_resolved.unwrap_or(false),
        to: e.to,
        from,
        hello: if e.hello.is_empty() {
            g.smtp_hello.clone().unwrap_or_else(|| "localhost".into())
        } else {
            e.hello
        },
        smarthost,
        auth_username: if e.auth_username.is_empty() {
            g.smtp_auth_username.clone()
        } else {
            e.auth_username
        },
        auth_password,
        auth_identity: if e.auth_identity.is_empty() {
            g.smtp_auth_identity.clone()
        } else {
            e.auth_identity
        },
        headers,
        html,
        text,
        require_tls: e.require_tls.or(g.smtp_require_tls).unwrap_or(true),
        tls,
    })
}

fn render(c: &EmailConfig, d: &Data, lib: &Library) -> Result<Rendered, String> {
    let mut headers = BTreeMap::new();
    for (name, text) in &c.headers {
        headers.insert(
            name.clone(),
            lib.render(&format!("headers.{name}"), text, d)?,
        );
    }
    let to = lib.render("to", &c.to, d)?;
    let from = lib.render("from", &c.from, d)?;
    let html = c
        .html
        .as_ref()
        .map(|t| lib.render("html", t, d))
        .transpose()?;
    let text = c
        .text
        .as_ref()
        .map(|t| lib.render("text", t, d))
        .transpose()?;
    let summary = (
        headers.get("Subject").cloned().unwrap_or_default(),
        text.clone().or_else(|| html.clone()).unwrap_or_default(),
    );
    Ok(Rendered {
        summary,
        body: Body::Email(Message {
            headers,
            to,
            from,
            html,
            text,
        }),
    })
}

async fn send(c: &EmailConfig, rendered: &Rendered, timeout: Duration) -> Attempt {
    let Body::Email(Message {
        headers,
        to,
        from,
        html,
        text,
    }) = &rendered.body
    else {
        return Attempt::Fail("nothing rendered".into());
    };
    let parse = |what: &str, s: &str| -> Result<Mailboxes, String> {
        s.parse::<Mailboxes>()
            .map_err(|e| format!("parse {what} addresses {s:?}: {e}"))
    };
    let (to_list, from_box) = match (parse("to", to), parse("from", from)) {
        (Ok(t), Ok(f)) => (t, f),
        (Err(e), _) | (_, Err(e)) => return Attempt::Fail(e),
    };
    let Some(from_box) = from_box.into_iter().next() else {
        return Attempt::Fail("empty from address".into());
    };
    let mut b = lettre::Message::builder().from(from_box);
    for t in to_list {
        b = b.to(t);
    }
    if let Some(s) = headers.get("Subject") {
        b = b.subject(s.clone());
    }
    let built = match (text, html) {
        (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone())),
        (None, Some(h)) => b.singlepart(SinglePart::html(h.clone())),
        (Some(t), None) => b.singlepart(SinglePart::plain(t.clone())),
        (None, None) => b.singlepart(SinglePart::plain(String::new())),
    };
    let mut msg = match built {
        Ok(m) => m,
        Err(e) => return Attempt::Fail(format!("cannot build the message: {e}")),
    };
    for (name, value) in headers {
        if matches!(name.as_str(), "Subject" | "To" | "From") {
            continue;
        }
        match HeaderName::new_from_ascii(name.clone()) {
            Ok(n) => msg
                .headers_mut()
                .insert_raw(HeaderValue::new(n, value.clone())),
            Err(_) => return Attempt::Fail(format!("invalid header name {name:?}")),
        }
    }
    let host = &c.smarthost.0;
    let port = match crate::notify::config::port_number(&c.smarthost.1) {
        Ok(p) => p,
        Err(e) => return Attempt::Fail(format!("smarthost {host}:{}: {e}", c.smarthost.1)),
    };
    // The same `tls_config` as HTTP clients, through lettre's builder
    // (which takes no ready rustls setup).
    let tls_params = || -> Result<TlsParameters, String> {
        use lettre::transport::smtp::client::{Certificate, Identity, TlsVersion};
        let name = c.tls.server_name.clone().unwrap_or_else(|| host.clone());
        let mut p =
            TlsParameters::builder(name).dangerous_accept_invalid_certs(c.tls.insecure_skip_verify);
        if let Some(ca) = &c.tls.ca {
            let pem = ca.bytes().map_err(|e| format!("tls_config: ca: {e}"))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("tls_config: the CA is not PEM: {e}"))?;
            p = p.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&c.tls.cert, &c.tls.key) {
            let cert = cert.bytes().map_err(|e| format!("tls_config: cert: {e}"))?;
            let key = key.bytes().map_err(|e| format!("tls_config: key: {e}"))?;
            let id = Identity::from_pem(&cert, &key)
                .map_err(|e| format!("tls_config: the client certificate and key: {e}"))?;
            p = p.identify_with(id);
        }
        if c.tls.min_version == Some(crate::http::TlsVersion::Tls13) {
            p = p.set_min_tls_version(TlsVersion::Tlsv13);
        }
        p.build_rustls().map_err(|e| format!("TLS setup: {e}"))
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = if port == 465 {
        match tls_params() {
            Ok(p) => Tls::Wrapper(p),
            Err(e) => return Attempt::Fail(e),
        }
    } else if c.require_tls {
        match tls_params() {
            Ok(p) => Tls::Required(p),
            Err(e) => return Attempt::Fail(e),
        }
    } else {
        Tls::None
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(c.hello.clone()));
    if !c.auth_username.is_empty() {
        let password = match c.auth_password.as_ref().map(|s| s.read()).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return Attempt::Fail(e),
        };
        t = t
            .credentials(Credentials::new(c.auth_username.clone(), password))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    let transport = t.build();
    match transport.send(msg).await {
        Ok(_) => Attempt::Ok,
        Err(e) => {
            let mut m = format!("send via {host}:{port}: {e}");
            if let Some(src) = std::error::Error::source(&e) {
                m = format!("{m}: {src}");
            }
            if e.is_permanent() {
                Attempt::Fail(m)
            } else {
                Attempt::Retry(m, None)
            }
        }
    }
}
