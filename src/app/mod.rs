//! Wiring: open the store, load push groups, build the router, spawn the
//! background tasks, serve until SIGINT/SIGTERM, then stop the tasks and
//! checkpoint the head. The only module that spawns long-lived tasks; the
//! ones that run from the configuration (and change on reload) belong to
//! the [`supervisor`].

mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::ingest::artifacts::Artifacts;
use crate::ingest::push::PushGroups;
use crate::ingest::{host, probe, scrape};
use crate::live::Live;
use crate::model::now_ms;
use crate::tsdb::{Limits, Storage, StorageOptions};
use crate::web::{router, AppState, Components, HttpMetrics, WebSettings};

/// How often background maintenance looks at the store.
const MAINTENANCE_TICK: Duration = Duration::from_secs(10);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub fn storage_options(config: &Config) -> StorageOptions {
    let s = &config.storage;
    let mut o = StorageOptions::new(&s.path);
    o.retention_ms = s.retention.millis();
    o.retention_bytes = s.retention_size;
    o.limits = Limits {
        max_series: s.max_series,
        max_labels_per_series: s.max_labels_per_series,
        max_label_name_length: s.max_label_name_length,
        max_label_value_length: s.max_label_value_length,
    };
    o
}

/// How `mlmon serve` was started, beyond mlmon.yml.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Command-line settings applied again on each reload.
    pub overrides: crate::config::Overrides,
    /// `--web.enable-lifecycle`: `POST /-/reload` on a non-loopback
    /// listener.
    pub enable_lifecycle: bool,
    /// `--web.enable-admin-api`: snapshots on a non-loopback listener.
    pub enable_admin_api: bool,
    /// `--config.auto-reload-interval`: reload when a file changed.
    pub auto_reload: Option<Duration>,
}

/// Runs the server until a shutdown signal arrives.
pub async fn serve(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    for note in &config.ignored {
        tracing::warn!(message = "Config section ignored", section = %note);
    }
    let settings = WebSettings::new(&config);
    let loaded = tokio::task::spawn_blocking({
        let c = config.clone();
        move || supervisor::Loaded::load(c)
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let components = build(&config, &settings, reload_tx).await?;
    let state = AppState::new(components, settings, &config.web.auth);
    if !config.web.listen.ip().is_loopback() && !config.web.auth.is_enabled() {
        tracing::warn!(
            message = "Listening on a non-loopback address without authentication: push and remote write are refused",
            hint = "configure web.basic_auth_users or web.bearer_tokens in mlmon.yml"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.web.listen))?;
    tracing::info!(message = "Listening", address = %config.web.listen);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = spawn_tasks(&config, &state, stop_rx.clone());
    let alerting = Arc::new(Alerting {
        notify: state.notify.clone(),
        alertmanagers: Live::default(),
    });
    let mut supervisor = supervisor::Supervisor::new(state.clone(), alerting, options);
    supervisor.apply(loaded).await;
    tasks.push(tokio::spawn(supervisor.run(reload_rx, stop_rx)));
    let limits = crate::web::server::ServerLimits {
        max_connections: config.web.max_connections,
        read_timeout: config.web.read_timeout.std(),
    };
    let (storage, tls) = (state.storage.clone(), state.tls.clone());
    let scheme = if tls.get().is_some() { "https" } else { "http" };
    tracing::info!(message = "Serving", scheme, address = %config.web.listen);
    crate::web::server::serve(listener, router(state), limits, tls, shutdown_signal()).await;
    tracing::info!(message = "Shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    tokio::task::spawn_blocking(move || storage.close())
        .await?
        .context("final checkpoint failed")?;
    tracing::info!(message = "Stopped cleanly");
    Ok(())
}

/// Opens the store and loads what lives in it: push groups, runs and the
/// notifier with its durable state. What runs from the configuration
/// (targets, probes, rules, remote write) starts with the supervisor.
async fn build(
    config: &Config,
    settings: &WebSettings,
    reload: tokio::sync::mpsc::Sender<crate::web::ReloadRequest>,
) -> anyhow::Result<Components> {
    let storage = tokio::task::spawn_blocking({
        let opts = storage_options(config);
        move || Storage::open(opts)
    })
    .await?
    .with_context(|| format!("cannot open the store in {}", config.storage.path.display()))?;
    tracing::info!(message = "Store open", path = %storage.path().display(), series = storage.stats().series);
    let push = Arc::new(
        PushGroups::load(config.push.clone(), &storage).context("cannot load push groups")?,
    );
    let artifacts = Arc::new(
        Artifacts::load(config.artifacts.clone(), &storage).context("cannot load pipeline runs")?,
    );
    let notify = load_notifier(config, settings, &storage).await?;
    Ok(Components {
        remote: Vec::new(),
        targets: scrape::Targets::default(),
        probes: Vec::new(),
        rules: Vec::new(),
        notify,
        reload: Some(reload),
        storage,
        push,
        artifacts,
    })
}

/// The notifier on its configuration, with the alerts, silences,
/// notification log and history kept in the store.
async fn load_notifier(
    config: &Config,
    settings: &WebSettings,
    storage: &Arc<Storage>,
) -> anyhow::Result<Arc<crate::notify::Shared>> {
    let am = notifier_config(config)
        .map_err(|e| anyhow::anyhow!("cannot load the notifier configuration:\n{e}"))?;
    let library = crate::notify::Library::load(&am.templates).map_err(anyhow::Error::msg)?;
    let store = Arc::new(KvStore(storage.clone()));
    let (external_url, retention) = (settings.external_url(), config.storage.retention.millis());
    let notifier = tokio::task::spawn_blocking(move || {
        crate::notify::Notifier::new(
            Arc::new(am),
            library,
            &external_url,
            store,
            retention,
            now_ms(),
        )
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot load the notifier's state: {e}"))?;
    Ok(Arc::new(crate::notify::Shared::new(notifier)))
}

/// Starts the long-lived tasks that do not change on reload: the push
/// emitter, store maintenance, the artifacts collector and the notifier's
/// dispatch.
fn spawn_tasks(
    config: &Config,
    state: &AppState,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (storage, metrics, notify) = (&state.storage, &state.metrics, &state.notify);
    vec![
        tokio::spawn(push_task(
            storage.clone(),
            state.push.clone(),
            config.push.interval.std(),
            stop.clone(),
        )),
        tokio::spawn(maintenance_task(storage.clone(), stop.clone())),
        tokio::spawn(collector_loop(
            "artifacts",
            config.artifacts.interval.std(),
            metrics.clone(),
            stop.clone(),
            {
                let (s, a) = (storage.clone(), state.artifacts.clone());
                move || collect_artifacts(&s, &a)
            },
        )),
        tokio::spawn(notify_loop(notify.clone(), stop.clone())),
    ]
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs `run` every `every`, first after `offset`, until `stop`; a run may
/// take up to `every`. A run returns what went wrong, if anything; runs,
/// errors and durations go to `metrics` under `name`, and a change of error
/// is logged (not every repetition).
async fn periodic<F, Fut>(
    name: String,
    every: Duration,
    offset: Duration,
    metrics: Arc<HttpMetrics>,
    mut stop: watch::Receiver<bool>,
    run: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = stop.changed() => return,
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let started = std::time::Instant::now();
        let error = match tokio::time::timeout(every, run()).await {
            Ok(error) => error,
            Err(_) => Some(format!("a run took longer than {every:?}")),
        };
        if error != last_error {
            match &error {
                Some(e) => {
                    tracing::warn!(message = "Collector run incomplete", collector = %name, error = %e)
                }
                None => {
                    tracing::info!(message = "Collector runs complete again", collector = %name)
                }
            }
        }
        metrics.collected(&name, started.elapsed(), error.clone());
        last_error = error;
    }
}

/// Runs a collector's blocking part (parsing, writing the store) off the
/// async threads; a panic there is reported as the run's error.
async fn blocking<F>(what: &str, f: F) -> Option<String>
where
    F: FnOnce() -> Option<String> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Some(format!("{what} failed: {e}")))
}

/// [`periodic`] for a collector that blocks (reads files, writes the store);
/// an interval of zero turns the collector off.
async fn collector_loop<F>(
    name: &'static str,
    every: Duration,
    metrics: Arc<HttpMetrics>,
    stop: watch::Receiver<bool>,
    collect: F,
) where
    F: Fn() -> Option<String> + Clone + Send + 'static,
{
    if every.is_zero() {
        tracing::info!(message = "Collector off", collector = name);
        return;
    }
    periodic(name.into(), every, Duration::ZERO, metrics, stop, || {
        let collect = collect.clone();
        async move { blocking("collector", collect).await }
    })
    .await
}

/// Scrapes `target` every interval of its job, from an offset within the
/// interval that spreads targets out.
async fn scrape_loop(
    storage: Arc<Storage>,
    target: Arc<scrape::Target>,
    metrics: Arc<HttpMetrics>,
    stop: watch::Receiver<bool>,
) {
    let name = format!("scrape/{}", target.job);
    let (every, offset) = (target.config.interval.std(), target.offset());
    periodic(name, every, offset, metrics, stop, || {
        let (storage, target) = (storage.clone(), target.clone());
        async move {
            let started = std::time::Instant::now();
            let now = now_ms();
            let fetched = target.fetch().await;
            blocking("scrape", move || {
                target.ingest(&storage, fetched, started, now)
            })
            .await
        }
    })
    .await
}

/// How often a firing alert is sent again to Alertmanagers (Prometheus'
/// `--rules.alert.resend-delay`).
const RESEND_DELAY_MS: i64 = 60_000;

/// Where rule alerts go: mlmon's notifier, then every Alertmanager of
/// `alerting.alertmanagers`.
struct Alerting {
    notify: Arc<crate::notify::Shared>,
    alertmanagers: Live<Vec<crate::config::AlertmanagerTarget>>,
}

impl crate::rules::AlertSink for Alerting {
    fn send<'a>(
        &'a self,
        alerts: Vec<crate::model::PostableAlert>,
        now: crate::model::Timestamp,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let alertmanagers = self.alertmanagers.get();
            let body =
                (!alertmanagers.is_empty()).then(|| crate::notify::forward::payload(&alerts));
            let notify = self.notify.clone();
            let mut errors: Vec<String> = blocking("notifier", move || {
                notify.put(alerts, now);
                None
            })
            .await
            .into_iter()
            .collect();
            for am in alertmanagers.iter() {
                let body = body.as_ref().unwrap_or(&serde_json::Value::Null);
                let sent = crate::notify::forward::send(&am.url, am.timeout.std(), &am.http, body);
                if let Err(e) = sent.await {
                    errors.push(format!("cannot send alerts: {e}"));
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        })
    }
}

/// Evaluates `group` every interval of its own and hands the alerts due
/// to `sink`.
#[allow(clippy::too_many_arguments)]
async fn rule_loop(
    storage: Arc<Storage>,
    group: Arc<std::sync::Mutex<crate::rules::engine::Group>>,
    opts: crate::promql::QueryOptions,
    ext: Arc<std::collections::BTreeMap<String, String>>,
    external_url: String,
    metrics: Arc<HttpMetrics>,
    sink: Arc<dyn crate::rules::AlertSink>,
    stop: watch::Receiver<bool>,
) {
    let (name, every) = {
        let g = group.lock().unwrap_or_else(|p| p.into_inner());
        (
            format!("rules/{}", g.name),
            Duration::from_millis(g.interval_ms.max(1) as u64),
        )
    };
    let opts = Arc::new(opts);
    periodic(name, every, Duration::ZERO, metrics, stop, || {
        let (storage, group, opts, ext) =
            (storage.clone(), group.clone(), opts.clone(), ext.clone());
        let (sink, external_url) = (sink.clone(), external_url.clone());
        async move {
            let now = now_ms();
            let (g, e) = (group.clone(), ext.clone());
            let error = blocking("rule evaluation", move || {
                let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
                g.eval(&*storage, now, &opts, &e);
                let failed: Vec<String> = g
                    .rules
                    .iter()
                    .filter(|r| r.health == "err")
                    .map(|r| r.last_error.clone())
                    .collect();
                (!failed.is_empty()).then(|| failed.join("; "))
            })
            .await;
            let alerts = group
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .alerts_to_send(now, RESEND_DELAY_MS, &ext, &external_url);
            if alerts.is_empty() {
                return error;
            }
            match sink.send(alerts, now).await {
                Ok(()) => error,
                Err(e) => Some(error.map_or(e.clone(), |x| format!("{x}; {e}"))),
            }
        }
    })
    .await
}

/// Runs `probe` every interval of its own.
async fn probe_loop(
    storage: Arc<Storage>,
    probe: Arc<probe::Probe>,
    metrics: Arc<HttpMetrics>,
    stop: watch::Receiver<bool>,
) {
    let name = format!("probe/{}", probe.config.name);
    let every = probe.config.interval.std();
    periodic(name, every, Duration::ZERO, metrics, stop, || {
        let (storage, probe) = (storage.clone(), probe.clone());
        async move {
            let now = now_ms();
            let outcome = probe.run().await;
            blocking("probe", move || probe.record(&storage, &outcome, now)).await
        }
    })
    .await
}

/// Host metrics as `job="node"`, `instance=<hostname>`.
fn collect_host(
    storage: &Storage,
    remote: &Live<Vec<Arc<crate::remote::Endpoint>>>,
    instance: &str,
) -> Option<String> {
    let snap = host::collect();
    let now = now_ms();
    let mut app = storage.appender().lazy_sync();
    for (labels, v) in snap.labelled(&[("job", "node"), ("instance", instance)]) {
        app.append(labels, now, v);
    }
    own_metrics(&mut app, storage, remote, instance);
    let mut errors = snap.errors;
    if let Err(e) = app.commit() {
        errors.push(format!("cannot store host metrics: {e}"));
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The mlmon figures the shipped rules watch, written as `job="mlmon"`
/// with the host metrics: the store's size and room (disk filling up) and
/// each remote write endpoint's progress (a queue falling behind).
fn own_metrics(
    app: &mut crate::tsdb::Appender<'_>,
    storage: &Storage,
    remote: &Live<Vec<Arc<crate::remote::Endpoint>>>,
    instance: &str,
) {
    let st = storage.stats();
    let base = [("job", "mlmon"), ("instance", instance)];
    let mut put = |name: &str, extra: &[(&str, &str)], v: f64| {
        let pairs = base
            .iter()
            .chain(extra)
            .copied()
            .chain([("__name__", name)]);
        if let Ok(labels) = crate::model::Labels::new(pairs) {
            app.append(labels, now_ms(), v);
        }
    };
    put("mlmon_storage_bytes", &[], st.disk_bytes() as f64);
    if let Some(free) = storage.free_bytes() {
        put("mlmon_storage_filesystem_avail_bytes", &[], free as f64);
    }
    put(
        "mlmon_storage_retention_limit_bytes",
        &[],
        storage.retention_bytes().unwrap_or(0) as f64,
    );
    for (name, _, _, samples) in crate::remote::metrics(&remote.get(), storage) {
        for (remote_name, url, v) in samples {
            put(name, &[("remote_name", &remote_name), ("url", &url)], v);
        }
    }
}

/// One scan of the artifacts directory; unusable files are its errors.
fn collect_artifacts(storage: &Storage, artifacts: &Artifacts) -> Option<String> {
    if let Err(e) = artifacts.scan(storage, now_ms()) {
        return Some(format!("cannot store artifact metrics: {e}"));
    }
    let problems = artifacts.status().problems;
    (!problems.is_empty()).then(|| {
        let list: Vec<String> = problems
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        list.join("; ")
    })
}

/// Writes pushed values every interval and expires groups past their TTL.
async fn push_task(
    storage: Arc<Storage>,
    push: Arc<PushGroups>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut emit = tokio::time::interval(every);
    let mut expire = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = emit.tick() => {
                let (s, p) = (storage.clone(), push.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.emit(&s, now_ms())).await {
                    tracing::warn!(message = "Writing pushed values failed", error = %e);
                }
            }
            _ = expire.tick() => {
                let (s, p) = (storage.clone(), push.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.expire(&s, now_ms())).await {
                    tracing::warn!(message = "Expiring push groups failed", error = %e);
                }
            }
        }
    }
}

/// Runs the store's maintenance ([`Storage::maintain`]: checkpoints by
/// size and age, block merges, compaction when worth it) every tick,
/// retention by age hourly and by size (`storage.retention_size`) at every
/// tick the files are over it.
async fn maintenance_task(storage: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    let mut last_retention: Option<tokio::time::Instant> = None;
    // Logged when it changes, not every tick (a full disk lasts a while).
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let retention_due = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        let s = storage.clone();
        let result =
            tokio::task::spawn_blocking(move || -> Result<(), crate::tsdb::StorageError> {
                let file_before = s.stats().file_bytes;
                let done = s.maintain(now_ms())?;
                if done.merged_parts > 0 {
                    tracing::debug!(message = "Merged parts", parts = done.merged_parts);
                }
                if done.reclaimed_bytes > 0 {
                    // INFO only when a meaningful share of the file came back
                    // (a tenth, and at least 1 MiB).
                    if done.reclaimed_bytes.saturating_mul(10) >= file_before
                        && done.reclaimed_bytes >= 1 << 20
                    {
                        tracing::info!(
                            message = "Database file compacted",
                            reclaimed_bytes = done.reclaimed_bytes,
                            bytes = s.stats().file_bytes
                        );
                    } else {
                        tracing::debug!(
                            message = "Database file compacted",
                            reclaimed_bytes = done.reclaimed_bytes
                        );
                    }
                }
                // Over storage.retention_size: the log goes into parts
                // first, so that the oldest samples can go wherever they are.
                let over_size = s.over_size();
                if over_size {
                    s.checkpoint()?;
                }
                if retention_due || over_size {
                    let (chunks, series) = s.apply_retention(now_ms())?;
                    if chunks + series > 0 || over_size {
                        tracing::info!(
                            message = "Retention applied",
                            by_size = over_size,
                            chunks_deleted = chunks,
                            series_deleted = series,
                            bytes = s.stats().disk_bytes()
                        );
                    }
                }
                Ok(())
            })
            .await;
        let error = match result {
            Ok(Ok(())) => {
                if retention_due {
                    last_retention = Some(tokio::time::Instant::now());
                }
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("maintenance task failed: {e}")),
        };
        if error != last_error {
            match &error {
                Some(e) => tracing::error!(message = "Store maintenance failed", error = %e),
                None => tracing::info!(message = "Store maintenance runs again"),
            }
            last_error = error;
        }
    }
}

/// The notifier's Alertmanager configuration: the file or inline section
/// mlmon.yml names, else the default that logs notifications.
pub fn notifier_config(
    config: &Config,
) -> Result<crate::notify::AmConfig, crate::model::ConfigErrors> {
    use crate::config::NotifierSource;
    use crate::notify::AmConfig;
    match &config.notifier {
        Some(NotifierSource::File(path)) => AmConfig::load(path),
        Some(NotifierSource::Inline {
            text,
            line_offset,
            base,
        }) => {
            let name = config
                .source
                .as_ref()
                .map_or("<config>".to_string(), |p| p.display().to_string());
            AmConfig::parse(text, &name, *line_offset, base)
        }
        None => Ok(AmConfig::default_config()),
    }
}

/// The notifier's durable state lives in the store's key-value table.
struct KvStore(Arc<Storage>);

impl crate::notify::Store for KvStore {
    fn load(&self, namespace: &str) -> Result<crate::notify::Rows, String> {
        self.0.kv_scan(namespace).map_err(|e| e.to_string())
    }

    fn apply(&self, namespace: &str, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
        self.0
            .kv_apply(namespace, changes)
            .map_err(|e| e.to_string())
    }
}

/// Flushes due aggregation groups and delivers their notifications, each
/// in a task of its own, so a receiver that hangs delays nothing else.
async fn notify_loop(notify: Arc<crate::notify::Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let n = notify.clone();
        let (jobs, next) = match tokio::task::spawn_blocking(move || {
            let mut g = n.lock();
            let jobs = g.due(now_ms());
            for e in std::mem::take(&mut g.store_errors) {
                tracing::error!(message = "Notifier state not saved", error = %e);
            }
            (jobs, g.next_due())
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(message = "Notifier task failed", error = %e);
                (Vec::new(), None)
            }
        };
        for job in jobs {
            tokio::spawn(deliver(notify.clone(), job));
        }
        let wait = next.map_or(1000, |t| (t - now_ms()).clamp(10, 1000)) as u64;
        tokio::select! {
            _ = stop.changed() => return,
            _ = notify.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

async fn deliver(notify: Arc<crate::notify::Shared>, job: crate::notify::Job) {
    let library = notify.lock().library().clone();
    let left = (job.deadline_ms - now_ms()).max(1000) as u64;
    let deadline = std::time::Instant::now() + Duration::from_millis(left);
    let d = crate::notify::send::deliver(&job, &library, deadline, &notify.metrics).await;
    match &d.outcome {
        Ok(()) => tracing::info!(
            message = "Notification sent",
            receiver = %job.receiver,
            integration = %job.integration_name(),
            group = %job.group_key,
            alerts = job.data.alerts.len(),
            attempts = d.attempts,
        ),
        Err(e) => tracing::error!(
            message = "Notification failed",
            receiver = %job.receiver,
            integration = %job.integration_name(),
            group = %job.group_key,
            error = %e,
        ),
    }
    let n = notify.clone();
    let _ = tokio::task::spawn_blocking(move || {
        n.lock().complete(&job, &d, now_ms());
        n.wake.notify_one();
    })
    .await;
}
