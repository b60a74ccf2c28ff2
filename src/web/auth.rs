//! Who may call which route ([`Access`]): once authentication is
//! configured (HTTP basic auth against bcrypt hashes in Prometheus'
//! web-config format, or bearer tokens), every route but the health checks
//! needs it, as with Prometheus' web config. Tokens are compared in
//! constant time; bcrypt results are cached so a client repeating its
//! password does not pay the hash each time. With no auth configured,
//! reading is open and writing answers only on a loopback listener. The
//! users and tokens are replaced on reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::{ApiError, AppState};
use crate::config::AuthConfig;
use crate::live::Live;

const CACHE_LIMIT: usize = 1024;

pub struct Auth {
    cfg: Live<AuthConfig>,
    loopback: bool,
    cache: Mutex<HashMap<(String, String), bool>>,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health checks load balancers call.
    Open,
    /// With credentials once authentication is configured.
    Read,
    /// As `Read`; with no authentication configured, only through a
    /// loopback listener.
    Write,
}

/// True when `a == b`, taking the same time for every `b` of a given length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

enum Credentials {
    Basic(String, String),
    Bearer(String),
}

fn credentials(req: &Request) -> Option<Credentials> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, pass) = text.split_once(':')?;
            Some(Credentials::Basic(user.to_string(), pass.to_string()))
        }
        "bearer" => Some(Credentials::Bearer(rest.trim().to_string())),
        _ => None,
    }
}

impl Auth {
    pub fn new(cfg: AuthConfig, loopback: bool) -> Self {
        Auth {
            cfg: Live::new(cfg),
            loopback,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The users and tokens now configured.
    pub fn config(&self) -> Arc<AuthConfig> {
        self.cfg.get()
    }

    /// Replaces the users and tokens (a reload); cached checks are dropped.
    pub fn set(&self, cfg: AuthConfig) {
        self.cfg.set(cfg);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn verify_basic(&self, user: &str, pass: &str) -> bool {
        let key = (user.to_string(), pass.to_string());
        if let Some(&ok) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return ok;
        }
        // Hash even for unknown users so timing does not reveal user names.
        const DUMMY: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
        let cfg = self.config();
        let (known, hash) = match cfg.basic_auth_users.iter().find(|(u, _)| u == user) {
            Some((_, h)) => (true, h.as_str()),
            None => (false, DUMMY),
        };
        let ok = known && bcrypt::verify(pass, hash).unwrap_or(false);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }

    fn verify_bearer(&self, token: &str) -> bool {
        self.config().bearer_tokens.iter().fold(false, |ok, t| {
            ok | constant_time_eq(t.as_bytes(), token.as_bytes())
        })
    }
}

/// Middleware enforcing a route's [`Access`].
pub async fn require(
    State((state, access)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    let auth = state.auth.clone();
    if access == Access::Open {
        return next.run(req).await;
    }
    if !auth.config().is_enabled() {
        if access == Access::Read || auth.loopback {
            return next.run(req).await;
        }
        tracing::warn!(
            message = "Refused a mutating request: mlmon listens on a non-loopback address without authentication",
            path = %req.uri().path(),
            hint = "set web.basic_auth_users, web.config_file or web.bearer_tokens in mlmon.yml, or listen on 127.0.0.1"
        );
        return ApiError::Forbidden(
            "mutating endpoints are disabled: mlmon listens on a non-loopback address and no authentication is configured (see web.basic_auth_users or web.bearer_tokens)".into(),
        )
        .plain();
    }
    let ok = match credentials(&req) {
        Some(Credentials::Bearer(t)) => auth.verify_bearer(&t),
        Some(Credentials::Basic(u, p)) => {
            let a = auth.clone();
            tokio::task::spawn_blocking(move || a.verify_basic(&u, &p))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        ApiError::Unauthorized.plain().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let a = Auth::new(
            AuthConfig {
                basic_auth_users: vec![("u".into(), hash)],
                bearer_tokens: vec![],
            },
            true,
        );
        assert!(a.verify_basic("u", "pw"));
        assert!(a.verify_basic("u", "pw"));
        assert!(!a.verify_basic("u", "nope"));
        assert!(!a.verify_basic("x", "pw"));
    }
}
