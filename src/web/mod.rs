//! The HTTP layer: [`router`] builds every route from an [`AppState`]. Only
//! this module knows HTTP, JSON and (later) HTML. Errors leave through one
//! type, [`ApiError`], which maps to Prometheus' error JSON (or plain text on
//! the ingest endpoints, like the tools they replace) and never shows
//! internal error text to clients. Mutating endpoints sit behind [`auth`].

mod alertmanager;
mod api;
mod auth;
pub mod chart;
mod exposition;
mod ingest;
mod pages;
mod queries;
pub mod server;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Form, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::config::{AuthConfig, Config};
use crate::ingest::artifacts::Artifacts;
use crate::ingest::probe::Probe;
use crate::ingest::push::PushGroups;
use crate::ingest::scrape::Targets;
use crate::tsdb::Storage;

pub use auth::Auth;
pub use pages::render_overview;
pub use telemetry::HttpMetrics;

/// What the handlers share. Collaborators are behind `Arc`s; the state is
/// cheap to clone per request.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub push: Arc<PushGroups>,
    pub artifacts: Arc<Artifacts>,
    /// Scrape targets, active and dropped by relabeling.
    pub targets: Arc<Targets>,
    pub probes: Arc<Vec<Arc<Probe>>>,
    /// Rule groups, each evaluated by its own task.
    pub rules: Arc<Vec<std::sync::Mutex<crate::rules::engine::Group>>>,
    pub notify: Arc<crate::notify::Shared>,
    /// Where `POST /-/reload` asks for a reload (`None`: not served).
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    /// `remote_write` endpoints.
    pub remote: Arc<Vec<Arc<crate::remote::Endpoint>>>,
    pub settings: Arc<WebSettings>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<HttpMetrics>,
    /// Where user queries run (concurrency limit, priority).
    pub queries: Arc<queries::Queries>,
}

/// The parts of the config the handlers need at request time.
/// A reload request and where its outcome goes.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

#[derive(Debug, Clone)]
pub struct WebSettings {
    pub listen: SocketAddr,
    pub max_request_bytes: usize,
    external_url: Option<String>,
    /// Dashboard auto-refresh in seconds (0: off).
    pub refresh_secs: u64,
    /// The config file, for the status page.
    pub config_file: Option<std::path::PathBuf>,
    pub retention: crate::model::PromDuration,
    pub external_labels: crate::model::Labels,
    pub query: crate::promql::QueryOptions,
    /// Queries evaluated at once.
    pub max_concurrent_queries: usize,
    pub started: std::time::SystemTime,
}

impl WebSettings {
    /// When the server started, in Unix milliseconds.
    pub fn started_ms(&self) -> crate::model::Timestamp {
        self.started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// The URL links in notifications point to.
    pub fn external_url(&self) -> String {
        self.external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    pub fn new(config: &Config) -> Self {
        let q = &config.query;
        WebSettings {
            listen: config.web.listen,
            max_request_bytes: config.web.max_request_bytes,
            external_url: config.web.external_url.clone(),
            refresh_secs: (config.web.refresh_interval.millis().max(0) / 1000) as u64,
            config_file: config.source.clone(),
            retention: config.storage.retention,
            external_labels: config.global.external_labels.clone(),
            query: crate::promql::QueryOptions {
                lookback_ms: q.lookback_delta.millis(),
                max_samples: q.max_samples,
                timeout: q.timeout.std(),
                default_subquery_step_ms: config.global.evaluation_interval.millis(),
            },
            max_concurrent_queries: q.max_concurrency,
            started: std::time::SystemTime::now(),
        }
    }
}

/// What the handlers serve, built by `app` (or, for tests and benchmarks,
/// [`Components::store_only`]).
pub struct Components {
    pub storage: Arc<Storage>,
    pub push: Arc<PushGroups>,
    pub artifacts: Arc<Artifacts>,
    pub targets: Arc<Targets>,
    pub probes: Arc<Vec<Arc<Probe>>>,
    pub rules: Arc<Vec<std::sync::Mutex<crate::rules::engine::Group>>>,
    pub notify: Arc<crate::notify::Shared>,
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    pub remote: Arc<Vec<Arc<crate::remote::Endpoint>>>,
}

impl Components {
    /// The store and what lives in it, with no targets, probes or rules, a
    /// notifier without receivers or durable state, and no reload.
    pub fn store_only(
        storage: Arc<Storage>,
        push: Arc<PushGroups>,
        artifacts: Arc<Artifacts>,
        settings: &WebSettings,
    ) -> Components {
        let notifier = crate::notify::Notifier::standalone(&settings.external_url());
        Components {
            storage,
            push,
            artifacts,
            targets: Arc::default(),
            probes: Arc::default(),
            rules: Arc::default(),
            notify: Arc::new(crate::notify::Shared::new(notifier)),
            reload: None,
            remote: Arc::default(),
        }
    }
}

impl AppState {
    pub fn new(c: Components, settings: WebSettings, auth: &AuthConfig) -> Self {
        let loopback = settings.listen.ip().is_loopback();
        let queries = Arc::new(queries::Queries::new(
            settings.max_concurrent_queries,
            settings.query.timeout,
        ));
        AppState {
            storage: c.storage,
            push: c.push,
            artifacts: c.artifacts,
            targets: c.targets,
            probes: c.probes,
            rules: c.rules,
            notify: c.notify,
            reload: c.reload,
            remote: c.remote,
            settings: Arc::new(settings),
            auth: Arc::new(Auth::new(auth.clone(), loopback)),
            metrics: Arc::new(HttpMetrics::default()),
            queries,
        }
    }
}

/// Every route of mlmon.
pub fn router(state: AppState) -> Router {
    let authed = || middleware::from_fn_with_state(state.clone(), auth::require);
    let mutating = Router::new()
        .route("/api/v1/write", post(ingest::remote_write))
        .route(
            "/api/v1/receivers/{name}/test",
            post(alertmanager::test_receiver),
        )
        .route("/-/reload", post(alertmanager::reload))
        .route(
            "/metrics/{*grouping}",
            put(ingest::push_put)
                .post(ingest::push_post)
                .delete(ingest::push_delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require));
    Router::new()
        .route("/metrics", get(exposition::metrics))
        .route("/federate", get(exposition::federate))
        .route("/api/v1/query", get(api::query).post(api::query))
        .route(
            "/api/v1/query_range",
            get(api::query_range).post(api::query_range),
        )
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route(
            "/api/v1/format_query",
            get(api::format_query).post(api::format_query),
        )
        .route("/api/v1/metadata", get(exposition::metadata))
        .route(
            "/api/v1/runs",
            get(api::runs).merge(
                post(api::record_run)
                    .route_layer(middleware::from_fn_with_state(state.clone(), auth::require)),
            ),
        )
        .route("/api/v1/artifacts", get(api::artifacts))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/probes", get(api::probes))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/alerts/history", get(alertmanager::history))
        .route("/api/v1/notifications", get(alertmanager::recent))
        .route("/api/v1/templates/preview", post(alertmanager::preview))
        .route(
            "/api/v2/alerts",
            get(alertmanager::get_alerts)
                .merge(post(alertmanager::post_alerts).route_layer(authed())),
        )
        .route(
            "/api/v2/silences",
            get(alertmanager::get_silences)
                .merge(post(alertmanager::post_silence).route_layer(authed())),
        )
        .route(
            "/api/v2/silence/{id}",
            get(alertmanager::get_silence)
                .merge(axum::routing::delete(alertmanager::delete_silence).route_layer(authed())),
        )
        .route("/api/v2/status", get(alertmanager::status))
        .route("/api/v2/receivers", get(alertmanager::receivers))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .route("/health", get(api::health))
        .route("/api/health", get(api::health))
        .route("/ml-metrics", get(exposition::ml_metrics))
        .merge(mutating)
        .merge(pages::routes(&state))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(state.settings.max_request_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts requests by route and status code, and logs internal errors once.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .observe(&handler, resp.status().as_u16(), start.elapsed());
    resp
}

/// Query-string or form parameters with repeated keys kept (`match[]`). A
/// malformed encoding is Prometheus' `bad_data` error, not axum's text.
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Form::<Vec<(String, String)>>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Params(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(e.body_text()))
            }
            Err(e) => Err(ApiError::BadData(format!(
                "invalid parameters: {}",
                e.body_text()
            ))),
        }
    }
}

/// The one error type of the HTTP layer.
#[derive(Debug)]
pub enum ApiError {
    /// 400, Prometheus' `bad_data`.
    BadData(String),
    /// 422, Prometheus' `execution`.
    Execution(String),
    /// 401 with a Basic challenge.
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 413.
    TooLarge(String),
    /// 415.
    UnsupportedMedia(String),
    NotFound,
    /// 503, Prometheus' `timeout`/`execution` for stopped queries.
    Unavailable(String),
    /// 507: the disk holding the data file is full.
    DiskFull(String),
    /// 500; the text is logged, never sent.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadData(m) => (StatusCode::BAD_REQUEST, "bad_data", m.clone()),
            ApiError::Execution(m) => (StatusCode::UNPROCESSABLE_ENTITY, "execution", m.clone()),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication required".into(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "bad_data", m.clone()),
            ApiError::UnsupportedMedia(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_data", m.clone())
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "timeout", m.clone()),
            ApiError::DiskFull(m) => (StatusCode::INSUFFICIENT_STORAGE, "unavailable", m.clone()),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the details are in mlmon's log".into(),
            ),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// What a client is told (internal details are logged instead).
    pub fn public_message(&self) -> String {
        self.log();
        self.parts().2
    }

    fn log(&self) {
        if let ApiError::Internal(cause) = self {
            tracing::error!(message = "Request failed", error = %cause);
        }
    }

    /// The same error as plain text, as the Pushgateway and remote-write
    /// receivers answer.
    pub fn plain(self) -> Response {
        self.log();
        let (status, _, msg) = self.parts();
        let mut resp = (status, format!("{msg}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mlmon\""),
            );
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let (status, kind, msg) = self.parts();
        let body = serde_json::json!({"status": "error", "errorType": kind, "error": msg});
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mlmon\""),
            );
        }
        resp
    }
}

impl From<crate::tsdb::StorageError> for ApiError {
    fn from(e: crate::tsdb::StorageError) -> Self {
        if e.is_disk_full() {
            return ApiError::DiskFull(e.message);
        }
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::promql::QueryError> for ApiError {
    fn from(e: crate::promql::QueryError) -> Self {
        use crate::promql::QueryError as Q;
        match e {
            Q::Parse(m) => ApiError::BadData(m),
            Q::BadData(m) => ApiError::BadData(m),
            Q::Unsupported(m) => ApiError::BadData(format!("unsupported: {m}")),
            Q::Execution(m) => ApiError::Execution(m),
            e @ Q::TooManySamples(_) => ApiError::Execution(e.to_string()),
            e @ Q::Timeout(_) => ApiError::Unavailable(e.to_string()),
            Q::Storage(s) => ApiError::Internal(s.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("worker task failed: {e}"))
    }
}
