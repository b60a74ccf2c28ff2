//! The HTTP layer: [`router`] builds every route from an [`AppState`]. Only
//! this module knows HTTP, JSON and (later) HTML. Errors leave through one
//! type, [`ApiError`], which maps to Prometheus' error JSON (or plain text on
//! the ingest endpoints, like the tools they replace) and never shows
//! internal error text to clients. Mutating endpoints sit behind [`auth`].

mod admin;
mod alertmanager;
mod api;
mod auth;
pub mod chart;
mod exposition;
mod ingest;
mod otlp;
mod pages;
mod queries;
pub mod server;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Form, FromRequest, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;

use crate::config::{AuthConfig, Config};
use crate::ingest::artifacts::Artifacts;
use crate::ingest::probe::Probe;
use crate::ingest::push::PushGroups;
use crate::ingest::scrape::Targets;
use crate::live::Live;
use crate::tsdb::Storage;

pub use auth::{Access, Auth};
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
    pub targets: Arc<Live<Targets>>,
    pub probes: Arc<Live<Vec<Arc<Probe>>>>,
    /// Rule groups, each evaluated by its own task.
    pub rules: Arc<Live<RuleGroups>>,
    pub notify: Arc<crate::notify::Shared>,
    /// Where `POST /-/reload` asks for a reload (`None`: not served).
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    /// How the last reload went.
    pub reloads: Arc<Live<ReloadStatus>>,
    /// `remote_write` endpoints.
    pub remote: Arc<Live<Vec<Arc<crate::remote::Endpoint>>>>,
    pub settings: Arc<Live<WebSettings>>,
    /// HTTPS, when the web config asks for it (replaced on reload).
    pub tls: Arc<Live<Option<Arc<crate::http::tls_server::TlsServer>>>>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<HttpMetrics>,
    /// Where user queries run (concurrency limit, priority).
    pub queries: Arc<queries::Queries>,
}

/// A reload request and where its outcome goes.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The rule groups, each shared with the task evaluating it.
pub type RuleGroups = Vec<Arc<std::sync::Mutex<crate::rules::engine::Group>>>;

/// How the configuration was last (re)loaded, for `/metrics` and the status
/// page.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// The last reload succeeded (or none was tried since the start).
    pub ok: bool,
    /// When the configuration now running was loaded, in Unix ms.
    pub success_ms: crate::model::Timestamp,
    /// Why the last reload failed.
    pub error: Option<String>,
}

/// The parts of the config the handlers need at request time.
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
    /// `POST /-/reload` is served: on a loopback listener, else with
    /// `--web.enable-lifecycle` (as Prometheus gates it).
    pub lifecycle: bool,
    /// The admin API (snapshots) is served: on a loopback listener, else
    /// with `--web.enable-admin-api`.
    pub admin: bool,
    /// How OTLP metrics are translated.
    pub otlp: crate::config::OtlpConfig,
    /// Headers added to every response (`http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
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
            lifecycle: config.web.listen.ip().is_loopback(),
            admin: config.web.listen.ip().is_loopback(),
            otlp: config.otlp.clone(),
            headers: config
                .web
                .http
                .headers
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
        }
    }
}

/// What the handlers serve, built by `app` (or, for tests and benchmarks,
/// [`Components::store_only`]).
pub struct Components {
    pub storage: Arc<Storage>,
    pub push: Arc<PushGroups>,
    pub artifacts: Arc<Artifacts>,
    pub targets: Targets,
    pub probes: Vec<Arc<Probe>>,
    pub rules: RuleGroups,
    pub notify: Arc<crate::notify::Shared>,
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    pub remote: Vec<Arc<crate::remote::Endpoint>>,
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
            targets: Targets::default(),
            probes: Vec::new(),
            rules: Vec::new(),
            notify: Arc::new(crate::notify::Shared::new(notifier)),
            reload: None,
            remote: Vec::new(),
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
            targets: Arc::new(Live::new(c.targets)),
            probes: Arc::new(Live::new(c.probes)),
            rules: Arc::new(Live::new(c.rules)),
            notify: c.notify,
            reload: c.reload,
            reloads: Arc::new(Live::new(ReloadStatus {
                ok: true,
                success_ms: crate::model::now_ms(),
                error: None,
            })),
            remote: Arc::new(Live::new(c.remote)),
            settings: Arc::new(Live::new(settings)),
            tls: Arc::default(),
            auth: Arc::new(Auth::new(auth.clone(), loopback)),
            metrics: Arc::new(HttpMetrics::default()),
            queries,
        }
    }
}

/// One route: a method on a path and who may call it.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// The router as it is built: every route goes through [`Table::add`],
/// which puts its [`Access`] in front of it and lists it (tests walk the
/// list, so no route escapes authentication by being forgotten).
pub(crate) struct Table {
    state: AppState,
    routes: Vec<(&'static str, MethodRouter<AppState>)>,
    info: Vec<RouteInfo>,
}

impl Table {
    pub(crate) fn add<H, T>(
        &mut self,
        access: Access,
        method: Method,
        path: &'static str,
        handler: H,
    ) -> &mut Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        let guard = middleware::from_fn_with_state((self.state.clone(), access), auth::require);
        let route = axum::routing::on(filter, handler).route_layer(guard);
        match self.routes.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(route),
            None => self.routes.push((path, route)),
        }
        self.info.push(RouteInfo {
            method,
            path,
            access,
        });
        self
    }
}

/// Every route of mlmon, and the list of them with their access.
pub fn routes(state: AppState) -> (Router, Vec<RouteInfo>) {
    use Access::{Open, Read, Write};
    use Method as M;
    let mut t = Table {
        state: state.clone(),
        routes: Vec::new(),
        info: Vec::new(),
    };
    t.add(Read, M::GET, "/metrics", exposition::metrics)
        .add(Read, M::GET, "/federate", exposition::federate)
        .add(Read, M::GET, "/api/v1/query", api::query)
        .add(Read, M::POST, "/api/v1/query", api::query)
        .add(Read, M::GET, "/api/v1/query_range", api::query_range)
        .add(Read, M::POST, "/api/v1/query_range", api::query_range)
        .add(Read, M::GET, "/api/v1/series", api::series)
        .add(Read, M::POST, "/api/v1/series", api::series)
        .add(Read, M::GET, "/api/v1/labels", api::labels)
        .add(Read, M::POST, "/api/v1/labels", api::labels)
        .add(
            Read,
            M::GET,
            "/api/v1/label/{name}/values",
            api::label_values,
        )
        .add(Read, M::GET, "/api/v1/status/buildinfo", api::buildinfo)
        .add(
            Read,
            M::GET,
            "/api/v1/query_exemplars",
            api::query_exemplars,
        )
        .add(
            Read,
            M::POST,
            "/api/v1/query_exemplars",
            api::query_exemplars,
        )
        .add(Read, M::GET, "/api/v1/format_query", api::format_query)
        .add(Read, M::POST, "/api/v1/format_query", api::format_query)
        .add(Read, M::GET, "/api/v1/metadata", exposition::metadata)
        .add(Read, M::GET, "/api/v1/runs", api::runs)
        .add(Write, M::POST, "/api/v1/runs", api::record_run)
        .add(Read, M::GET, "/api/v1/runs/{id}", api::run)
        .add(
            Write,
            M::POST,
            "/api/v1/runs/{id}/baseline",
            api::pin_baseline,
        )
        .add(Read, M::GET, "/api/v1/artifacts", api::artifacts)
        .add(Read, M::GET, "/api/v1/targets", api::targets)
        .add(Read, M::GET, "/api/v1/probes", api::probes)
        .add(Read, M::GET, "/api/v1/rules", api::rules)
        .add(Read, M::GET, "/api/v1/alerts", api::alerts)
        .add(
            Read,
            M::GET,
            "/api/v1/alerts/history",
            alertmanager::history,
        )
        .add(Read, M::GET, "/api/v1/notifications", alertmanager::recent)
        .add(
            Read,
            M::POST,
            "/api/v1/templates/preview",
            alertmanager::preview,
        )
        .add(Read, M::GET, "/api/v2/alerts", alertmanager::get_alerts)
        .add(Write, M::POST, "/api/v2/alerts", alertmanager::post_alerts)
        .add(Read, M::GET, "/api/v2/silences", alertmanager::get_silences)
        .add(
            Write,
            M::POST,
            "/api/v2/silences",
            alertmanager::post_silence,
        )
        .add(
            Read,
            M::GET,
            "/api/v2/silence/{id}",
            alertmanager::get_silence,
        )
        .add(
            Write,
            M::DELETE,
            "/api/v2/silence/{id}",
            alertmanager::delete_silence,
        )
        .add(Read, M::GET, "/api/v2/status", alertmanager::status)
        .add(Read, M::GET, "/api/v2/receivers", alertmanager::receivers)
        .add(Open, M::GET, "/-/healthy", || async { "Healthy\n" })
        .add(Open, M::GET, "/-/ready", || async { "Ready\n" })
        .add(Read, M::GET, "/health", api::health)
        .add(Read, M::GET, "/api/health", api::health)
        .add(Read, M::GET, "/ml-metrics", exposition::ml_metrics)
        .add(Write, M::POST, "/api/v1/write", ingest::remote_write)
        .add(Write, M::POST, "/api/v1/otlp/v1/metrics", otlp::metrics)
        .add(Write, M::POST, "/v1/metrics", otlp::metrics)
        .add(
            Write,
            M::POST,
            "/api/v1/receivers/{name}/test",
            alertmanager::test_receiver,
        )
        .add(Write, M::POST, "/-/reload", alertmanager::reload)
        .add(
            Write,
            M::POST,
            "/api/v1/admin/tsdb/snapshot",
            admin::snapshot,
        )
        .add(Write, M::PUT, "/metrics/{*grouping}", ingest::push_put)
        .add(Write, M::POST, "/metrics/{*grouping}", ingest::push_post)
        .add(
            Write,
            M::DELETE,
            "/metrics/{*grouping}",
            ingest::push_delete,
        );
    pages::routes(&mut t);
    let mut router = Router::new();
    for (path, route) in t.routes {
        router = router.route(path, route);
    }
    let router = router
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(
            state.settings.get().max_request_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    (router, t.info)
}

/// Every route of mlmon.
pub fn router(state: AppState) -> Router {
    routes(state).0
}

/// Counts requests by route and status code, and adds the configured
/// response headers.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let mut resp = next.run(req).await;
    state
        .metrics
        .observe(&handler, resp.status().as_u16(), start.elapsed());
    for (name, value) in &state.settings.get().headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
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
