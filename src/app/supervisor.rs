//! What runs from the configuration, and reloading it: [`Loaded`] is
//! everything a configuration names (mlmon.yml, rule files, the notifier's
//! configuration and templates), read and checked before any of it
//! applies, so a bad file changes nothing. [`Supervisor::apply`] turns it
//! into running tasks, one per rule group, scrape target, probe, remote
//! write endpoint and the host collector, each keyed by what it is and
//! fingerprinted by its settings: an unchanged one keeps running untouched,
//! a changed one is stopped and restarted with the state of its
//! predecessor (alerts matched by rule name and labels, a target's series
//! cache), a removed one is stopped and its series end with stale markers.
//! The first configuration starts the same way, from nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{collect_host, Alerting, ServeOptions};
use crate::config::Config;
use crate::ingest::{host, probe, scrape};
use crate::model::{now_ms, Labels};
use crate::rules::engine::Group;
use crate::tsdb::Storage;
use crate::web::{AppState, ReloadRequest, ReloadStatus, WebSettings};

/// A configuration with everything it names, read and checked.
pub(super) struct Loaded {
    pub config: Config,
    /// Rule groups by key (file and name), with their fingerprints.
    rules: Vec<(String, String, Group)>,
    notifier: (Arc<crate::notify::AmConfig>, crate::notify::Library),
    tls: Option<Arc<crate::http::tls_server::TlsServer>>,
}

impl Loaded {
    /// Reads every file `config` names. Blocking.
    pub fn load(config: Config) -> Result<Loaded, String> {
        let am = super::notifier_config(&config).map_err(|e| e.to_string())?;
        for note in &am.notes {
            tracing::warn!(message = "Notifier configuration", note = %note);
        }
        let library = crate::notify::Library::load(&am.templates)?;
        let settings = WebSettings::new(&config);
        let mut rules = Vec::new();
        for pattern in config.rule_file_patterns() {
            for path in glob::glob(&pattern).into_iter().flatten().flatten() {
                let file = crate::rules::load_file(&path)
                    .map_err(|errors| format!("cannot load rules:\n{errors}"))?;
                let name = path.display().to_string();
                for g in &file.groups {
                    let group = Group::new(&name, g, config.global.evaluation_interval.millis());
                    let key = format!("{name};{}", g.name);
                    // What the group's task depends on besides the group.
                    let fingerprint = format!(
                        "{g:?} {} {:?} {:?} {}",
                        group.interval_ms,
                        settings.external_labels,
                        settings.query,
                        settings.external_url()
                    );
                    rules.push((key, fingerprint, group));
                }
            }
        }
        let tls = match &config.web.tls {
            Some(t) => Some(Arc::new(
                crate::http::tls_server::TlsServer::new(t).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        Ok(Loaded {
            config,
            rules,
            notifier: (Arc::new(am), library),
            tls,
        })
    }
}

struct Running {
    fingerprint: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The tasks that run from the configuration, and the one running now.
pub(super) struct Supervisor {
    state: AppState,
    alerting: Arc<Alerting>,
    options: ServeOptions,
    /// The configuration running (`None` before the first apply).
    config: Option<Config>,
    tasks: BTreeMap<String, Running>,
    /// Targets found by `file_sd_configs`, by job, and a signal when they
    /// change.
    discovered: Arc<Mutex<BTreeMap<String, Vec<crate::config::StaticTarget>>>>,
    rediscovered: Arc<tokio::sync::Notify>,
}

impl Supervisor {
    pub fn new(state: AppState, alerting: Arc<Alerting>, options: ServeOptions) -> Supervisor {
        Supervisor {
            state,
            alerting,
            options,
            config: None,
            tasks: BTreeMap::new(),
            discovered: Arc::default(),
            rediscovered: Arc::default(),
        }
    }

    fn unchanged(&self, key: &str, fingerprint: &str) -> bool {
        self.tasks
            .get(key)
            .is_some_and(|r| r.fingerprint == fingerprint)
    }

    fn start<F, Fut>(&mut self, key: String, fingerprint: String, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(task(rx));
        self.tasks.insert(
            key,
            Running {
                fingerprint,
                stop,
                handle,
            },
        );
    }

    /// Stops the task under `key` and waits until its current run is done.
    async fn stop(&mut self, key: &str) {
        if let Some(r) = self.tasks.remove(key) {
            let _ = r.stop.send(true);
            let _ = r.handle.await;
        }
    }

    /// Stops every task whose key starts with `prefix` and is not in `keep`.
    async fn stop_others(&mut self, prefix: &str, keep: &std::collections::BTreeSet<String>) {
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|k| k.starts_with(prefix) && !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.stop(&k).await;
        }
    }

    /// Stops everything (shutdown).
    pub async fn stop_all(&mut self) {
        let keys: Vec<String> = self.tasks.keys().cloned().collect();
        for k in keys {
            self.stop(&k).await;
        }
    }

    /// Makes `loaded` the running configuration.
    pub async fn apply(&mut self, loaded: Loaded) {
        let Loaded {
            config,
            rules,
            notifier,
            tls,
        } = loaded;
        let state = self.state.clone();
        let now = now_ms();
        if let Some(old) = &self.config {
            for section in needs_restart(old, &config) {
                tracing::warn!(
                    message = "Setting changed; it applies at the next start",
                    setting = section
                );
            }
            let notify = state.notify.clone();
            let (am, library) = notifier;
            let _ = tokio::task::spawn_blocking(move || {
                notify.lock().reload(am, library, now);
                notify.wake.notify_one();
            })
            .await;
        }
        // Settings the handlers read; the listener and start time stay.
        let old_settings = state.settings.get();
        let mut settings = WebSettings::new(&config);
        settings.listen = old_settings.listen;
        settings.started = old_settings.started;
        settings.lifecycle = self.options.enable_lifecycle || settings.listen.ip().is_loopback();
        settings.admin = self.options.enable_admin_api || settings.listen.ip().is_loopback();
        state.settings.set(settings);
        let settings = state.settings.get();
        state.auth.set(config.web.auth.clone());
        state.tls.set(tls);
        self.alerting
            .alertmanagers
            .set(config.alertmanagers.clone());

        self.apply_rules(rules, &settings).await;
        self.apply_discovery(&config).await;
        self.apply_targets(&config, now).await;
        self.apply_probes(&config, now).await;
        self.apply_remote(&config).await;

        let fingerprint = format!("{:?}", config.host);
        if !self.unchanged("host", &fingerprint) {
            self.stop("host").await;
            let (s, r, m, every) = (
                state.storage.clone(),
                state.remote.clone(),
                state.metrics.clone(),
                config.host.interval.std(),
            );
            self.start("host".into(), fingerprint, move |stop| {
                super::collector_loop("host", every, m, stop, {
                    let instance = host::hostname();
                    move || collect_host(&s, &r, &instance)
                })
            });
        }
        self.config = Some(config);
    }

    async fn apply_rules(&mut self, loaded: Vec<(String, String, Group)>, settings: &WebSettings) {
        let state = self.state.clone();
        let old: BTreeMap<String, Arc<Mutex<Group>>> = state
            .rules
            .get()
            .iter()
            .map(|g| {
                let k = {
                    let g = g.lock().unwrap_or_else(|p| p.into_inner());
                    format!("{};{}", g.file, g.name)
                };
                (format!("rules/{k}"), g.clone())
            })
            .collect();
        let mut groups = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        let mut stale: Vec<Labels> = Vec::new();
        let ext: Arc<BTreeMap<String, String>> = Arc::new(
            settings
                .external_labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
        for (key, fingerprint, mut group) in loaded {
            let key = format!("rules/{key}");
            keep.insert(key.clone());
            if let Some(running) = old.get(&key).filter(|_| self.unchanged(&key, &fingerprint)) {
                groups.push(running.clone());
                continue;
            }
            self.stop(&key).await;
            if let Some(prev) = old.get(&key) {
                let prev = prev.lock().unwrap_or_else(|p| p.into_inner()).clone();
                stale.extend(group.adopt(prev));
            }
            let group = Arc::new(Mutex::new(group));
            groups.push(group.clone());
            let (s, m, sink) = (
                state.storage.clone(),
                state.metrics.clone(),
                self.alerting.clone() as Arc<dyn crate::rules::AlertSink>,
            );
            let (opts, ext, url) = (settings.query.clone(), ext.clone(), settings.external_url());
            self.start(key, fingerprint, move |stop| {
                super::rule_loop(s, group, opts, ext, url, m, sink, stop)
            });
        }
        for (key, g) in &old {
            if !keep.contains(key) {
                stale.extend(g.lock().unwrap_or_else(|p| p.into_inner()).written());
            }
        }
        self.stop_others("rules/", &keep).await;
        state.rules.set(groups);
        end_series(&state.storage, stale).await;
    }

    /// One task per job with `file_sd_configs`, polling its files.
    async fn apply_discovery(&mut self, config: &Config) {
        let mut keep = std::collections::BTreeSet::new();
        for job in config.scrape.iter().filter(|j| !j.file_sd.is_empty()) {
            let key = format!("sd/{}", job.job_name);
            keep.insert(key.clone());
            let fingerprint = format!("{:?}", job.file_sd);
            if self.unchanged(&key, &fingerprint) {
                continue;
            }
            self.stop(&key).await;
            let (name, sd) = (job.job_name.clone(), job.file_sd.clone());
            let (found, signal) = (self.discovered.clone(), self.rediscovered.clone());
            self.start(key, fingerprint, move |stop| {
                discover(name, sd, found, signal, stop)
            });
        }
        self.stop_others("sd/", &keep).await;
        let jobs: std::collections::BTreeSet<&str> = config
            .scrape
            .iter()
            .filter(|j| !j.file_sd.is_empty())
            .map(|j| j.job_name.as_str())
            .collect();
        self.discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|job, _| jobs.contains(job.as_str()));
    }

    async fn apply_targets(&mut self, config: &Config, now: crate::model::Timestamp) {
        let state = self.state.clone();
        let old: BTreeMap<String, Arc<scrape::Target>> = state
            .targets
            .get()
            .active
            .iter()
            .map(|t| (target_key(t), t.clone()))
            .collect();
        let jobs: Vec<crate::config::ScrapeConfig> = {
            let found = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
            config
                .scrape
                .iter()
                .map(|j| {
                    let mut j = j.clone();
                    j.targets
                        .extend(found.get(&j.job_name).cloned().unwrap_or_default());
                    j
                })
                .collect()
        };
        let mut targets = scrape::targets(&jobs);
        let mut keep = std::collections::BTreeSet::new();
        for t in targets.active.iter_mut() {
            let key = target_key(t);
            keep.insert(key.clone());
            // The job's settings but not its list of targets.
            let fingerprint = format!(
                "{:?}",
                crate::config::ScrapeConfig {
                    targets: Vec::new(),
                    ..(*t.config).clone()
                }
            );
            if let Some(running) = old.get(&key).filter(|_| self.unchanged(&key, &fingerprint)) {
                *t = running.clone();
                continue;
            }
            self.stop(&key).await;
            if let Some(prev) = old.get(&key) {
                t.adopt(prev);
            }
            let (s, m, target) = (state.storage.clone(), state.metrics.clone(), t.clone());
            self.start(key, fingerprint, move |stop| {
                super::scrape_loop(s, target, m, stop)
            });
        }
        self.stop_others("scrape/", &keep).await;
        for (key, t) in old {
            if !keep.contains(&key) {
                let (s, t2) = (state.storage.clone(), t.clone());
                let ended = tokio::task::spawn_blocking(move || t2.end(&s, now)).await;
                if let Ok(Err(e)) = ended {
                    tracing::warn!(message = "Stale markers for a removed target not written", target = %t.url, error = %e);
                }
            }
        }
        state.targets.set(targets);
    }

    async fn apply_probes(&mut self, config: &Config, now: crate::model::Timestamp) {
        let state = self.state.clone();
        let old: BTreeMap<String, Arc<probe::Probe>> = state
            .probes
            .get()
            .iter()
            .map(|p| (format!("probe/{}", p.config.name), p.clone()))
            .collect();
        let mut probes = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        for c in &config.probes {
            let key = format!("probe/{}", c.name);
            keep.insert(key.clone());
            let fingerprint = format!("{c:?}");
            if let Some(running) = old.get(&key).filter(|_| self.unchanged(&key, &fingerprint)) {
                probes.push(running.clone());
                continue;
            }
            self.stop(&key).await;
            let p = Arc::new(probe::Probe::new(c.clone()));
            if let Some(prev) = old.get(&key) {
                p.adopt(prev);
            }
            probes.push(p.clone());
            let (s, m) = (state.storage.clone(), state.metrics.clone());
            self.start(key, fingerprint, move |stop| {
                super::probe_loop(s, p, m, stop)
            });
        }
        self.stop_others("probe/", &keep).await;
        for (key, p) in old {
            if !keep.contains(&key) {
                let s = state.storage.clone();
                let _ = tokio::task::spawn_blocking(move || p.end(&s, now)).await;
            }
        }
        state.probes.set(probes);
    }

    async fn apply_remote(&mut self, config: &Config) {
        let state = self.state.clone();
        let old: BTreeMap<String, Arc<crate::remote::Endpoint>> = state
            .remote
            .get()
            .iter()
            .map(|e| (format!("remote/{}", e.config.name), e.clone()))
            .collect();
        let mut endpoints = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        let ext = config.global.external_labels.clone();
        for c in &config.remote_write {
            let key = format!("remote/{}", c.name);
            keep.insert(key.clone());
            let fingerprint = format!("{c:?} {ext:?}");
            if let Some(running) = old.get(&key).filter(|_| self.unchanged(&key, &fingerprint)) {
                endpoints.push(running.clone());
                continue;
            }
            // The old sender stops before the new one reads the log from
            // the position it left.
            self.stop(&key).await;
            let ep = Arc::new(crate::remote::Endpoint::new(c.clone()));
            if let Some(prev) = old.get(&key) {
                ep.adopt(prev);
            }
            endpoints.push(ep.clone());
            let (s, ext) = (state.storage.clone(), ext.clone());
            self.start(key, fingerprint, move |stop| {
                crate::remote::run(s, ep, ext, stop)
            });
        }
        self.stop_others("remote/", &keep).await;
        state.remote.set(endpoints);
        // Endpoints no longer configured keep no backlog.
        let names: Vec<String> = config.remote_write.iter().map(|r| r.name.clone()).collect();
        let s = state.storage.clone();
        let released = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            s.release_log_holds_except(&names)
        })
        .await;
        if let Ok(Err(e)) = released {
            tracing::error!(message = "Cannot update the remote write positions", error = %e);
        }
    }

    /// Reloads on SIGHUP, on `POST /-/reload` (whose caller hears how it
    /// went) and, with `--config.auto-reload-interval`, when a file the
    /// configuration reads changed; stops every task when `stop` fires.
    pub async fn run(
        mut self,
        mut requests: tokio::sync::mpsc::Receiver<ReloadRequest>,
        mut stop: watch::Receiver<bool>,
    ) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let every = self
            .options
            .auto_reload
            .unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        let mut checksum = self.checksum().await;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let reply = tokio::select! {
                _ = stop.changed() => break,
                _ = hangup => None,
                r = requests.recv() => match r {
                    Some(r) => Some(r),
                    None => break,
                },
                _ = self.rediscovered.notified() => {
                    if let Some(config) = self.config.clone() {
                        self.apply_targets(&config, now_ms()).await;
                    }
                    continue;
                }
                _ = tick.tick(), if self.options.auto_reload.is_some() => {
                    let now = self.checksum().await;
                    if now == checksum {
                        continue;
                    }
                    tracing::info!(message = "A configuration file changed; reloading");
                    None
                }
            };
            let result = self.reload().await;
            checksum = self.checksum().await;
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        self.stop_all().await;
    }

    /// Reads the configuration again and applies it, or keeps the running
    /// one and says why.
    async fn reload(&mut self) -> Result<(), String> {
        let source = self.config.as_ref().and_then(|c| c.source.clone());
        let overrides = self.options.overrides.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config =
                Config::reload(source.as_deref(), &overrides).map_err(|e| e.to_string())?;
            Loaded::load(config)
        })
        .await
        .unwrap_or_else(|e| Err(format!("reload failed: {e}")));
        let reloads = self.state.reloads.clone();
        match loaded {
            Ok(loaded) => {
                self.apply(loaded).await;
                reloads.set(ReloadStatus {
                    ok: true,
                    success_ms: now_ms(),
                    error: None,
                });
                tracing::info!(message = "Configuration reloaded");
                Ok(())
            }
            Err(e) => {
                let last = reloads.get().success_ms;
                reloads.set(ReloadStatus {
                    ok: false,
                    success_ms: last,
                    error: Some(e.clone()),
                });
                tracing::error!(message = "Reload failed; the running configuration stays", error = %e);
                Err(e)
            }
        }
    }

    /// A digest of every file the running configuration reads.
    async fn checksum(&self) -> u64 {
        let files = self.config.as_ref().map(Config::files).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for f in files {
                f.hash(&mut h);
                std::fs::read(&f).ok().hash(&mut h);
            }
            h.finish()
        })
        .await
        .unwrap_or(0)
    }
}

/// Polls a job's discovery files every second; when the targets change,
/// records them under `job` and signals the supervisor.
async fn discover(
    job: String,
    configs: Vec<crate::config::FileSdConfig>,
    found: Arc<Mutex<BTreeMap<String, Vec<crate::config::StaticTarget>>>>,
    signal: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let sd = Arc::new(Mutex::new(crate::ingest::discovery::FileSd::new(configs)));
    let mut errors = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let s = sd.clone();
        let Ok((changed, targets, now_errors)) = tokio::task::spawn_blocking(move || {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            let changed = s.poll();
            (changed, s.targets(), s.errors.clone())
        })
        .await
        else {
            continue;
        };
        if now_errors != errors {
            for (file, why) in &now_errors {
                tracing::warn!(message = "Discovery file not used; its last targets stay", job = %job, file = %file.display(), error = %why);
            }
            errors = now_errors;
        }
        if changed {
            tracing::info!(message = "Discovered targets changed", job = %job, targets = targets.len());
            found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.clone(), targets);
            signal.notify_one();
        }
    }
}

/// A target's identity: its job, URL and labels (as Prometheus' target
/// hash).
fn target_key(t: &scrape::Target) -> String {
    format!("scrape/{}/{}/{}", t.job, t.url, t.labels)
}

/// Settings a running server cannot change, named when a reload changed
/// them.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    if !same(&old.storage, &new.storage) {
        out.push("storage");
    }
    if old.web.listen != new.web.listen {
        out.push("web.listen");
    }
    if old.web.max_connections != new.web.max_connections
        || old.web.read_timeout.millis() != new.web.read_timeout.millis()
        || old.web.max_request_bytes != new.web.max_request_bytes
    {
        out.push("web.max_connections, web.read_timeout, web.max_request_bytes");
    }
    if !same(&old.artifacts, &new.artifacts) {
        out.push("artifacts");
    }
    if !same(&old.push, &new.push) {
        out.push("push");
    }
    out
}

/// Ends `series` with stale markers now.
async fn end_series(storage: &Arc<Storage>, series: Vec<Labels>) {
    if series.is_empty() {
        return;
    }
    let s = storage.clone();
    let written = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let mut app = s.appender().lazy_sync();
        for l in series {
            app.append(l, now, crate::model::stale_nan());
        }
        app.commit_lenient().map(|_| ())
    })
    .await;
    if let Ok(Err(e)) = written {
        tracing::warn!(message = "Stale markers for removed rules not written", error = %e);
    }
}
