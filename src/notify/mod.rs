//! The notifier: Alertmanager's job inside mlmon. Alerts arrive from the
//! rule engine and from `POST /api/v2/alerts`; each is routed through the
//! tree of `alertmanager.yml` into aggregation groups (per route and group
//! labels) whose `group_wait` / `group_interval` / `repeat_interval` timers
//! decide when a notification is due; inhibited and silenced alerts are
//! dropped; a notification log says what each integration last sent, so
//! nothing is sent twice, across restarts too.
//!
//! [`Notifier`] is a state machine with no clock and no I/O of its own:
//! callers pass the time, collect due [`Job`]s, deliver them ([`send`]) and
//! report back with [`Notifier::complete`]. Its durable state (alerts,
//! silences, notification log, history) goes through the small [`Store`]
//! trait, which `app` implements on the TSDB's key-value table.

pub mod config;
pub mod forward;
pub mod integrations;
pub mod send;
pub mod silence;
pub mod template;
pub mod timeinterval;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use integrations::Integration;

use serde::{Deserialize, Serialize};

pub use config::{AmConfig, GroupBy, Receiver, Route};
pub use silence::{Silence, SilenceError, SilenceMatcher};
pub use template::{AlertData, Data, Library};

use crate::model::Timestamp;

/// `(key, value)` rows of one namespace.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Durable rows by namespace: what the notifier needs from storage.
pub trait Store: Send + Sync {
    fn load(&self, namespace: &str) -> Result<Rows, String>;
    /// Puts (`Some`) and deletes (`None`), in one durable write.
    fn apply(&self, namespace: &str, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String>;
}

/// A [`Store`] that keeps nothing across restarts (tests, `mlmon check`).
#[derive(Default)]
#[allow(clippy::type_complexity)]
pub struct MemoryStore(std::sync::Mutex<BTreeMap<(String, Vec<u8>), Vec<u8>>>);

impl Store for MemoryStore {
    fn load(&self, namespace: &str) -> Result<Rows, String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, namespace: &str, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in changes {
            let key = (namespace.to_string(), k.clone());
            match v {
                Some(v) => m.insert(key, v.clone()),
                None => m.remove(&key),
            };
        }
        Ok(())
    }
}

const NS_ALERTS: &str = "notify_alerts";
const NS_SILENCES: &str = "notify_silences";
const NS_NFLOG: &str = "notify_log";
const NS_HISTORY: &str = "notify_history";
/// How long notification log entries are kept (Alertmanager: 120h).
const NFLOG_RETENTION_MS: i64 = 5 * 86_400_000;
/// Most history events kept in memory (older ones stay on disk until
/// retention drops them).
const HISTORY_IN_MEMORY: usize = 20_000;
const RECENT: usize = 100;

/// An alert as the notifier keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: Timestamp,
    pub ends_at_ms: Timestamp,
    pub updated_at_ms: Timestamp,
    pub generator_url: String,
    /// `ends_at` was not given: it is `resolve_timeout` after the update.
    pub timeout: bool,
    /// Its resolution is in the history already.
    #[serde(default)]
    pub resolution_recorded: bool,
}

impl Alert {
    pub fn resolved(&self, now: Timestamp) -> bool {
        self.ends_at_ms <= now
    }

    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }
}

/// An alert as a client posts it (times optional).
pub use crate::model::PostableAlert as Incoming;

/// Prometheus' label-set fingerprint (FNV-1a over sorted names and values),
/// so fingerprints match Alertmanager's.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> u64 {
    let mut h: u64 = 14695981039346656037;
    let mut add = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(1099511628211);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    h
}

pub fn fingerprint_hex(fp: u64) -> String {
    format!("{fp:016x}")
}

/// What the notification log remembers of the last notification of one
/// integration for one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogEntry {
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
    at_ms: Timestamp,
}

struct Group {
    /// Alertmanager's group key.
    key: String,
    route: Route,
    labels: BTreeMap<String, String>,
    alerts: BTreeSet<u64>,
    next_flush_ms: Timestamp,
    has_flushed: bool,
    /// Jobs of the current flush not yet completed.
    in_flight: usize,
    /// Resolved alerts of the current flush (with their update time), removed
    /// from the group if every job succeeds.
    flushed_resolved: Vec<(u64, Timestamp)>,
    flush_failed: bool,
}

/// A notification due: one integration of one receiver, for one group.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    /// Alertmanager's group key (`{}/{severity="critical"}:{alertname="X"}`).
    pub group_key: String,
    group_id: String,
    pub receiver: String,
    /// What delivers it (`None`: a receiver without integrations, whose
    /// notifications go to the log); kept with the job so a reload before
    /// delivery changes nothing for it.
    pub integration: Option<Arc<dyn Integration>>,
    /// Its index among the receiver's integrations of its kind.
    pub index: usize,
    pub data: Data,
    /// Give up retrying at this time (the group's next flush).
    pub deadline_ms: Timestamp,
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
}

impl Job {
    /// `email`, `slack`, ..., or `log`.
    pub fn kind(&self) -> &'static str {
        self.integration.as_ref().map_or("log", |i| i.kind())
    }

    pub fn integration_name(&self) -> String {
        format!("{}[{}]", self.kind(), self.index)
    }

    fn log_key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.group_key,
            self.receiver,
            self.integration_name()
        )
    }
}

/// One entry of the alert history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: Timestamp,
    /// "firing", "resolved" or "notification".
    pub kind: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub integration: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_key: String,
    /// Notifications: "sent", "failed", "logged", or "retried" for an
    /// attempt that failed before the last one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Notifications: how many alerts (firing + resolved) it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<usize>,
}

/// A delivered (or logged) notification, for the dashboard.
#[derive(Debug, Clone)]
pub struct Recent {
    pub at_ms: Timestamp,
    pub receiver: String,
    pub integration: String,
    pub outcome: String,
    pub subject: String,
    pub body: String,
}

/// How an alert stands for the API.
#[derive(Debug, Clone)]
pub struct AlertStatus {
    pub state: &'static str,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
}

pub struct Notifier {
    config: Arc<AmConfig>,
    library: Library,
    external_url: String,
    store: Arc<dyn Store>,
    alerts: BTreeMap<u64, Alert>,
    groups: BTreeMap<String, Group>,
    silences: BTreeMap<String, silence::Compiled>,
    nflog: HashMap<String, LogEntry>,
    history: VecDeque<(Vec<u8>, HistoryEvent)>,
    history_retention_ms: i64,
    history_seq: u32,
    recent: VecDeque<Recent>,
    next_job: u64,
    /// Errors writing the store, for the log (the notifier keeps working
    /// from memory).
    pub store_errors: Vec<String>,
}

impl Notifier {
    fn empty(
        config: Arc<AmConfig>,
        library: Library,
        external_url: &str,
        store: Arc<dyn Store>,
        history_retention_ms: i64,
    ) -> Notifier {
        Notifier {
            config,
            library,
            external_url: external_url.trim_end_matches('/').to_string(),
            store,
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            nflog: HashMap::new(),
            history: VecDeque::new(),
            history_retention_ms,
            history_seq: 0,
            recent: VecDeque::new(),
            next_job: 1,
            store_errors: Vec::new(),
        }
    }

    /// A notifier on Alertmanager's default configuration (one receiver
    /// without integrations) with nothing durable: what a router built
    /// outside `app` (tests, benchmarks, fuzzing) serves.
    pub fn standalone(external_url: &str) -> Notifier {
        Notifier::empty(
            Arc::new(AmConfig::default_config()),
            Library::default(),
            external_url,
            Arc::new(MemoryStore::default()),
            0,
        )
    }

    /// A notifier over `config`, with the alerts, silences, notification
    /// log and history `store` kept from earlier runs.
    pub fn new(
        config: Arc<AmConfig>,
        library: Library,
        external_url: &str,
        store: Arc<dyn Store>,
        history_retention_ms: i64,
        now: Timestamp,
    ) -> Result<Notifier, String> {
        let mut n = Notifier::empty(config, library, external_url, store, history_retention_ms);
        for (_, v) in n.store.load(NS_SILENCES)? {
            if let Ok(s) = serde_json::from_slice::<Silence>(&v) {
                if let Ok(matchers) = s.validate() {
                    n.silences.insert(
                        s.id.clone(),
                        silence::Compiled {
                            silence: s,
                            matchers,
                        },
                    );
                }
            }
        }
        for (k, v) in n.store.load(NS_NFLOG)? {
            if let (Ok(k), Ok(e)) = (String::from_utf8(k), serde_json::from_slice(&v)) {
                n.nflog.insert(k, e);
            }
        }
        let mut stale = Vec::new();
        for (k, v) in n.store.load(NS_HISTORY)? {
            match serde_json::from_slice::<HistoryEvent>(&v) {
                Ok(e) if e.at_ms >= now - history_retention_ms => n.history.push_back((k, e)),
                _ => stale.push((k, None)),
            }
        }
        while n.history.len() > HISTORY_IN_MEMORY {
            n.history.pop_front();
        }
        n.write(NS_HISTORY, stale);
        let alerts: Vec<Alert> = n
            .store
            .load(NS_ALERTS)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        for a in alerts {
            let fp = a.fingerprint();
            n.alerts.insert(fp, a);
            n.route(fp, now);
        }
        Ok(n)
    }

    /// Applies a new configuration as Alertmanager does on reload: the
    /// routing tree and aggregation groups are rebuilt from the alerts held;
    /// the notification log keeps what was sent, so nothing is sent again.
    pub fn reload(&mut self, config: Arc<AmConfig>, library: Library, now: Timestamp) {
        self.config = config;
        self.library = library;
        self.groups.clear();
        let fps: Vec<u64> = self.alerts.keys().copied().collect();
        for fp in fps {
            self.route(fp, now);
        }
    }

    pub fn config(&self) -> &AmConfig {
        &self.config
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    pub fn external_url(&self) -> &str {
        &self.external_url
    }

    fn write(&mut self, namespace: &str, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply(namespace, &changes) {
            self.store_errors
                .push(format!("cannot store {namespace}: {e}"));
        }
    }

    fn save_alerts(&mut self, fps: &[u64]) {
        let changes = fps
            .iter()
            .map(|fp| {
                let v = self
                    .alerts
                    .get(fp)
                    .map(|a| serde_json::to_vec(a).unwrap_or_default());
                (fp.to_be_bytes().to_vec(), v)
            })
            .collect();
        self.write(NS_ALERTS, changes);
    }

    fn record(&mut self, event: HistoryEvent) {
        let mut key = (event.at_ms as u64).to_be_bytes().to_vec();
        self.history_seq = self.history_seq.wrapping_add(1);
        key.extend_from_slice(&self.history_seq.to_be_bytes());
        let value = serde_json::to_vec(&event).unwrap_or_default();
        self.write(NS_HISTORY, vec![(key.clone(), Some(value))]);
        self.history.push_back((key, event));
        if self.history.len() > HISTORY_IN_MEMORY {
            self.history.pop_front();
        }
    }

    fn alert_event(&self, kind: &str, fp: u64, at_ms: Timestamp) -> HistoryEvent {
        let labels = self
            .alerts
            .get(&fp)
            .map(|a| a.labels.clone())
            .unwrap_or_default();
        HistoryEvent {
            at_ms,
            kind: kind.to_string(),
            alertname: labels.get("alertname").cloned().unwrap_or_default(),
            labels,
            fingerprint: fingerprint_hex(fp),
            receiver: String::new(),
            integration: String::new(),
            group_key: String::new(),
            outcome: String::new(),
            error: String::new(),
            alerts: None,
        }
    }

    /// Takes alerts in, as Alertmanager's `POST /api/v2/alerts` does:
    /// missing `ends_at` means `resolve_timeout` from now; an alert that
    /// resolved and fires again starts a new incident.
    pub fn put(&mut self, incoming: Vec<Incoming>, now: Timestamp) {
        let mut changed = Vec::new();
        for inc in incoming {
            let starts = inc.starts_at_ms.unwrap_or(now);
            let (ends, timeout) = match inc.ends_at_ms {
                Some(e) => (e, false),
                None => (now + self.config.resolve_timeout_ms, true),
            };
            let mut a = Alert {
                labels: inc.labels,
                annotations: inc.annotations,
                starts_at_ms: starts,
                ends_at_ms: ends.max(starts),
                updated_at_ms: now,
                generator_url: inc.generator_url,
                timeout,
                resolution_recorded: false,
            };
            let fp = a.fingerprint();
            let was_firing = match self.alerts.get(&fp) {
                Some(old) => {
                    let new_incident = old.resolved(now) && a.starts_at_ms > old.ends_at_ms;
                    if !new_incident {
                        a.starts_at_ms = a.starts_at_ms.min(old.starts_at_ms);
                        a.resolution_recorded = old.resolution_recorded && a.resolved(now);
                    }
                    !old.resolved(now) && !new_incident
                }
                None => false,
            };
            let firing = !a.resolved(now);
            self.alerts.insert(fp, a);
            if firing && !was_firing {
                let e = self.alert_event("firing", fp, now);
                self.record(e);
            }
            self.route(fp, now);
            changed.push(fp);
        }
        self.sweep(now);
        self.save_alerts(&changed);
    }

    /// The routes an alert with `labels` goes to (Alertmanager's tree walk).
    pub fn matching_routes<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
        fn walk<'a>(r: &'a Route, l: &BTreeMap<String, String>, out: &mut Vec<&'a Route>) -> bool {
            let ok = r
                .matchers
                .iter()
                .all(|m| m.matches(l.get(&m.name).map(String::as_str).unwrap_or("")));
            if !ok {
                return false;
            }
            let before = out.len();
            for c in &r.routes {
                if walk(c, l, out) && !c.continue_matching {
                    break;
                }
            }
            if out.len() == before {
                out.push(r);
            }
            true
        }
        let mut out = Vec::new();
        walk(&self.config.route, labels, &mut out);
        out
    }

    fn route(&mut self, fp: u64, now: Timestamp) {
        let Some(alert) = self.alerts.get(&fp) else {
            return;
        };
        let routes: Vec<Route> = self
            .matching_routes(&alert.labels)
            .into_iter()
            .cloned()
            .collect();
        let starts = alert.starts_at_ms;
        for r in routes {
            let labels: BTreeMap<String, String> = match &r.group_by {
                GroupBy::All => alert.labels.clone(),
                GroupBy::Labels(names) => names
                    .iter()
                    .filter_map(|n| alert.labels.get(n).map(|v| (n.clone(), v.clone())))
                    .collect(),
            };
            let key = group_key(&r, &labels);
            let id = format!("{}|{key}", r.id);
            let g = self.groups.entry(id).or_insert_with(|| Group {
                key,
                next_flush_ms: now + r.group_wait_ms,
                route: r.clone(),
                labels,
                alerts: BTreeSet::new(),
                has_flushed: false,
                in_flight: 0,
                flushed_resolved: Vec::new(),
                flush_failed: false,
            });
            g.alerts.insert(fp);
            if !g.has_flushed && starts + r.group_wait_ms < now {
                g.next_flush_ms = g.next_flush_ms.min(now);
            }
        }
    }

    /// Records resolutions, drops what is past retention.
    fn sweep(&mut self, now: Timestamp) {
        let newly: Vec<u64> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.resolved(now) && !a.resolution_recorded)
            .map(|(fp, _)| *fp)
            .collect();
        for fp in &newly {
            let at = self.alerts[fp].ends_at_ms;
            let e = self.alert_event("resolved", *fp, at);
            self.record(e);
            if let Some(a) = self.alerts.get_mut(fp) {
                a.resolution_recorded = true;
            }
        }
        self.save_alerts(&newly);
        let cutoff = now - self.history_retention_ms;
        let mut old = Vec::new();
        while self.history.front().is_some_and(|(_, e)| e.at_ms < cutoff) {
            if let Some((k, _)) = self.history.pop_front() {
                old.push((k, None));
            }
        }
        self.write(NS_HISTORY, old);
        let expired: Vec<String> = self
            .silences
            .values()
            .filter(|s| s.silence.ends_at_ms + silence::RETENTION_MS < now)
            .map(|s| s.silence.id.clone())
            .collect();
        for id in &expired {
            self.silences.remove(id);
        }
        self.write(
            NS_SILENCES,
            expired
                .into_iter()
                .map(|id| (id.into_bytes(), None))
                .collect(),
        );
        let stale: Vec<String> = self
            .nflog
            .iter()
            .filter(|(_, e)| e.at_ms + NFLOG_RETENTION_MS < now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &stale {
            self.nflog.remove(k);
        }
        self.write(
            NS_NFLOG,
            stale.into_iter().map(|k| (k.into_bytes(), None)).collect(),
        );
    }

    /// Whether `labels` are silenced or inhibited at `now`, and by what.
    pub fn status(&self, labels: &BTreeMap<String, String>, now: Timestamp) -> AlertStatus {
        let silenced_by: Vec<String> = self
            .silences
            .values()
            .filter(|s| s.mutes(labels, now))
            .map(|s| s.silence.id.clone())
            .collect();
        let inhibited_by = self.inhibited_by(labels, now);
        let state = if silenced_by.is_empty() && inhibited_by.is_empty() {
            "active"
        } else {
            "suppressed"
        };
        AlertStatus {
            state,
            silenced_by,
            inhibited_by,
        }
    }

    fn inhibited_by(&self, labels: &BTreeMap<String, String>, now: Timestamp) -> Vec<String> {
        let get = |l: &BTreeMap<String, String>, n: &str| l.get(n).cloned().unwrap_or_default();
        let matches = |ms: &[crate::model::Matcher], l: &BTreeMap<String, String>| {
            ms.iter()
                .all(|m| m.matches(l.get(&m.name).map(String::as_str).unwrap_or("")))
        };
        let mut out = Vec::new();
        for rule in &self.config.inhibit_rules {
            if !matches(&rule.target, labels) {
                continue;
            }
            for (fp, src) in &self.alerts {
                if src.resolved(now) || src.labels == *labels || !matches(&rule.source, &src.labels)
                {
                    continue;
                }
                if rule
                    .equal
                    .iter()
                    .all(|n| get(&src.labels, n) == get(labels, n))
                {
                    out.push(fingerprint_hex(*fp));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Whether the route's time intervals mute it at `now`: inside one of
    /// its `mute_time_intervals`, or outside all its `active_time_intervals`.
    fn muted_by_time(&self, route: &Route, now: Timestamp) -> bool {
        let inside = |names: &[String]| {
            names.iter().any(|n| {
                self.config
                    .time_intervals
                    .get(n)
                    .is_some_and(|list| list.iter().any(|t| t.contains(now)))
            })
        };
        inside(&route.mute_time_intervals)
            || (!route.active_time_intervals.is_empty() && !inside(&route.active_time_intervals))
    }

    /// The earliest time a group is due, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.groups
            .values()
            .filter(|g| g.in_flight == 0)
            .map(|g| g.next_flush_ms)
            .min()
    }

    /// Flushes every group that is due at `now` and returns the
    /// notifications to deliver. Notifications that only need the log
    /// updated (resolved alerts for an integration without
    /// `send_resolved`) are settled here.
    pub fn due(&mut self, now: Timestamp) -> Vec<Job> {
        self.sweep(now);
        let keys: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.in_flight == 0 && g.next_flush_ms <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut jobs = Vec::new();
        let mut log_writes = Vec::new();
        for gid in keys {
            let Some(g) = self.groups.get(&gid) else {
                continue;
            };
            let key = g.key.clone();
            let route = g.route.clone();
            let group_labels = g.labels.clone();
            let members: Vec<u64> = g.alerts.iter().copied().collect();
            let mut firing = BTreeSet::new();
            let mut resolved = BTreeSet::new();
            let mut alerts = Vec::new();
            let mut flushed_resolved = Vec::new();
            for fp in &members {
                let Some(a) = self.alerts.get(fp) else {
                    continue;
                };
                let is_resolved = a.resolved(now);
                if is_resolved {
                    flushed_resolved.push((*fp, a.updated_at_ms));
                }
                let st = self.status(&a.labels, now);
                if st.state != "active" {
                    continue;
                }
                if is_resolved {
                    resolved.insert(*fp);
                } else {
                    firing.insert(*fp);
                }
                alerts.push((*fp, a.clone()));
            }
            let receiver = self.config.receiver(&route.receiver).cloned();
            let muted_now = self.muted_by_time(&route, now);
            let integrations: Vec<(Option<Arc<dyn Integration>>, usize)> = match &receiver {
                _ if muted_now => Vec::new(),
                Some(r) if !r.integrations.is_empty() => {
                    r.indexed().into_iter().map(|(i, n)| (Some(i), n)).collect()
                }
                _ => vec![(None, 0)],
            };
            let mut group_jobs = 0;
            for (integration, index) in integrations {
                let send_resolved = integration.as_ref().is_none_or(|i| i.send_resolved());
                let kind = integration.as_ref().map_or("log", |i| i.kind());
                let log_key = format!("{key}|{}|{kind}[{index}]", route.receiver);
                let entry = self.nflog.get(&log_key);
                if !needs_update(
                    entry,
                    &firing,
                    &resolved,
                    send_resolved,
                    route.repeat_interval_ms,
                    now,
                ) {
                    continue;
                }
                let sent: Vec<&(u64, Alert)> = alerts
                    .iter()
                    .filter(|(fp, _)| send_resolved || firing.contains(fp))
                    .collect();
                if sent.is_empty() {
                    // Nothing to send, but remember that it was all resolved.
                    let e = LogEntry {
                        firing: firing.clone(),
                        resolved: resolved.clone(),
                        at_ms: now,
                    };
                    log_writes.push((
                        log_key.clone().into_bytes(),
                        Some(serde_json::to_vec(&e).unwrap_or_default()),
                    ));
                    self.nflog.insert(log_key, e);
                    continue;
                }
                let data = Data::new(
                    &route.receiver,
                    group_labels.clone(),
                    sent.iter()
                        .map(|(fp, a)| self.alert_data(*fp, a, now))
                        .collect(),
                    &self.external_url,
                );
                let id = self.next_job;
                self.next_job += 1;
                group_jobs += 1;
                jobs.push(Job {
                    id,
                    group_key: key.clone(),
                    group_id: gid.clone(),
                    receiver: route.receiver.clone(),
                    integration,
                    index,
                    data,
                    deadline_ms: now + route.group_interval_ms,
                    firing: firing.clone(),
                    resolved: resolved.clone(),
                });
            }
            let g = self.groups.get_mut(&gid).expect("group exists");
            g.has_flushed = true;
            g.next_flush_ms = now + route.group_interval_ms;
            g.in_flight = group_jobs;
            g.flush_failed = false;
            g.flushed_resolved = flushed_resolved;
            if group_jobs == 0 {
                self.finish_flush(&gid);
            }
        }
        self.write(NS_NFLOG, log_writes);
        jobs
    }

    fn alert_data(&self, fp: u64, a: &Alert, now: Timestamp) -> AlertData {
        let resolved = a.resolved(now);
        AlertData {
            status: if resolved { "resolved" } else { "firing" },
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at_ms: a.starts_at_ms,
            ends_at_ms: (resolved || !a.timeout).then_some(a.ends_at_ms),
            generator_url: a.generator_url.clone(),
            fingerprint: fingerprint_hex(fp),
        }
    }

    /// Removes the resolved alerts a finished flush delivered (unless they
    /// changed meanwhile) and the group once it is empty.
    fn finish_flush(&mut self, id: &str) {
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        if g.flush_failed {
            return;
        }
        let done = std::mem::take(&mut g.flushed_resolved);
        for (fp, updated) in done {
            if self
                .alerts
                .get(&fp)
                .is_some_and(|a| a.updated_at_ms == updated)
            {
                g.alerts.remove(&fp);
            }
        }
        if g.alerts.is_empty() {
            self.groups.remove(id);
        }
        // Alerts in no group any more and resolved are done with.
        let in_groups: BTreeSet<u64> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.iter().copied())
            .collect();
        let gone: Vec<u64> = self
            .alerts
            .iter()
            .filter(|(fp, a)| !in_groups.contains(fp) && a.resolution_recorded)
            .map(|(fp, _)| *fp)
            .collect();
        for fp in &gone {
            self.alerts.remove(fp);
        }
        self.save_alerts(&gone);
    }

    /// Reports how a job ended: on success the notification log remembers
    /// what was sent; on failure the next flush tries again. Every attempt
    /// goes into the history.
    pub fn complete(&mut self, job: &Job, delivery: &send::Delivery, now: Timestamp) {
        let outcome = &delivery.outcome;
        let (status, error) = match outcome {
            Ok(()) if job.integration.is_none() => ("logged", String::new()),
            Ok(()) => ("sent", String::new()),
            Err(e) => ("failed", e.clone()),
        };
        if outcome.is_ok() {
            let e = LogEntry {
                firing: job.firing.clone(),
                resolved: job.resolved.clone(),
                at_ms: now,
            };
            let k = job.log_key();
            self.write(
                NS_NFLOG,
                vec![(
                    k.clone().into_bytes(),
                    Some(serde_json::to_vec(&e).unwrap_or_default()),
                )],
            );
            self.nflog.insert(k, e);
        }
        let event = |at_ms: Timestamp, outcome: &str, error: &str| HistoryEvent {
            at_ms,
            kind: "notification".into(),
            alertname: job
                .data
                .group_labels
                .get("alertname")
                .or_else(|| job.data.common_labels.get("alertname"))
                .cloned()
                .unwrap_or_default(),
            labels: job.data.group_labels.clone(),
            fingerprint: String::new(),
            receiver: job.receiver.clone(),
            integration: job.integration_name(),
            group_key: job.group_key.clone(),
            outcome: outcome.into(),
            error: error.into(),
            alerts: Some(job.data.alerts.len()),
        };
        for (at, e) in &delivery.retried {
            self.record(event(*at, "retried", e));
        }
        self.record(event(now, status, &error));
        let (subject, body) = delivery.rendered.clone().unwrap_or_default();
        self.recent.push_front(Recent {
            at_ms: now,
            receiver: job.receiver.clone(),
            integration: job.integration_name(),
            outcome: status.into(),
            subject,
            body,
        });
        self.recent.truncate(RECENT);
        if let Some(g) = self.groups.get_mut(&job.group_id) {
            g.in_flight = g.in_flight.saturating_sub(1);
            g.flush_failed |= outcome.is_err();
            if g.in_flight == 0 {
                let id = job.group_id.clone();
                self.finish_flush(&id);
            }
        }
    }

    // ---- what the API shows ----

    /// Every alert the notifier holds, with its receivers and status.
    pub fn alerts(&self, now: Timestamp) -> Vec<(u64, &Alert, Vec<String>, AlertStatus)> {
        self.alerts
            .iter()
            .map(|(fp, a)| {
                let mut receivers: Vec<String> = self
                    .matching_routes(&a.labels)
                    .iter()
                    .map(|r| r.receiver.clone())
                    .collect();
                receivers.dedup();
                (*fp, a, receivers, self.status(&a.labels, now))
            })
            .collect()
    }

    /// The alerts firing now that route to `receiver`.
    pub fn firing_for(&self, receiver: &str, now: Timestamp) -> Vec<Alert> {
        self.alerts(now)
            .into_iter()
            .filter(|(_, a, receivers, _)| {
                !a.resolved(now) && receivers.iter().any(|r| r == receiver)
            })
            .map(|(_, a, _, _)| a.clone())
            .collect()
    }

    /// Groups as `(group labels, receiver, alert fingerprints)`.
    pub fn groups(&self) -> Vec<(BTreeMap<String, String>, String, Vec<u64>)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.labels.clone(),
                    g.route.receiver.clone(),
                    g.alerts.iter().copied().collect(),
                )
            })
            .collect()
    }

    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.values().map(|c| &c.silence)
    }

    pub fn silence(&self, id: &str) -> Option<&Silence> {
        self.silences.get(id).map(|c| &c.silence)
    }

    /// Creates a silence (empty `id`) or updates one, as Alertmanager does:
    /// a change to an active silence's matchers or start expires it and
    /// creates a new one. Returns the id.
    pub fn set_silence(&mut self, mut s: Silence, now: Timestamp) -> Result<String, SilenceError> {
        let matchers = s.validate().map_err(SilenceError::Invalid)?;
        if s.ends_at_ms <= now {
            return Err(SilenceError::Invalid(
                "end time can't be in the past".into(),
            ));
        }
        if !s.id.is_empty() {
            let Some(old) = self.silences.get(&s.id).map(|c| c.silence.clone()) else {
                return Err(SilenceError::NotFound(s.id));
            };
            let same_scope = old.matchers == s.matchers && old.starts_at_ms == s.starts_at_ms;
            match old.state(now) {
                "expired" => s.id = String::new(),
                "active" if !same_scope => {
                    self.expire_silence(&old.id, now)?;
                    s.id = String::new();
                }
                _ => {}
            }
        }
        if s.id.is_empty() {
            s.id = crate::token::uuid_v4();
            if s.starts_at_ms < now {
                s.starts_at_ms = now;
            }
        }
        s.updated_at_ms = now;
        let id = s.id.clone();
        self.write(
            NS_SILENCES,
            vec![(
                id.clone().into_bytes(),
                Some(serde_json::to_vec(&s).unwrap_or_default()),
            )],
        );
        self.silences.insert(
            id.clone(),
            silence::Compiled {
                silence: s,
                matchers,
            },
        );
        Ok(id)
    }

    /// Expires a silence now; an error if it does not exist or has
    /// expired already.
    pub fn expire_silence(&mut self, id: &str, now: Timestamp) -> Result<(), SilenceError> {
        let Some(c) = self.silences.get_mut(id) else {
            return Err(SilenceError::NotFound(id.to_string()));
        };
        match c.silence.state(now) {
            "expired" => return Err(SilenceError::Expired(id.to_string())),
            "pending" => {
                c.silence.starts_at_ms = now;
                c.silence.ends_at_ms = now;
            }
            _ => c.silence.ends_at_ms = now,
        }
        c.silence.updated_at_ms = now;
        let v = serde_json::to_vec(&c.silence).unwrap_or_default();
        self.write(NS_SILENCES, vec![(id.as_bytes().to_vec(), Some(v))]);
        Ok(())
    }

    /// History events, newest first, that pass `keep`.
    pub fn history(&self, keep: impl Fn(&HistoryEvent) -> bool, limit: usize) -> Vec<HistoryEvent> {
        self.history
            .iter()
            .rev()
            .map(|(_, e)| e)
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn recent(&self) -> impl Iterator<Item = &Recent> {
        self.recent.iter()
    }

    /// A job for a test notification through `receiver`, with `alerts` (a
    /// sample alert when empty); not part of any group and not logged.
    pub fn test_job(
        &mut self,
        receiver: &str,
        alerts: Vec<Alert>,
        now: Timestamp,
    ) -> Result<Vec<Job>, String> {
        let r = self
            .config
            .receiver(receiver)
            .ok_or_else(|| format!("no receiver named {receiver:?}"))?
            .clone();
        let data = self.sample_data(receiver, alerts, now);
        let mut integrations: Vec<(Option<Arc<dyn Integration>>, usize)> =
            r.indexed().into_iter().map(|(i, n)| (Some(i), n)).collect();
        if integrations.is_empty() {
            integrations.push((None, 0));
        }
        Ok(integrations
            .into_iter()
            .map(|(integration, index)| {
                let id = self.next_job;
                self.next_job += 1;
                Job {
                    id,
                    group_key: format!("test:{receiver}"),
                    group_id: String::new(),
                    receiver: receiver.to_string(),
                    integration,
                    index,
                    data: data.clone(),
                    deadline_ms: now + 30_000,
                    firing: BTreeSet::new(),
                    resolved: BTreeSet::new(),
                }
            })
            .collect())
    }

    /// Template data for `alerts`, or for a sample critical alert.
    pub fn sample_data(&self, receiver: &str, alerts: Vec<Alert>, now: Timestamp) -> Data {
        let alerts = if alerts.is_empty() {
            vec![Alert {
                labels: [
                    ("alertname", "TestNotification"),
                    ("severity", "critical"),
                    ("component", "model"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                annotations: [
                    ("summary", "Test notification from mlmon"),
                    ("description", "If you can read this, the receiver works."),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                starts_at_ms: now,
                ends_at_ms: now + 300_000,
                updated_at_ms: now,
                generator_url: format!("{}/alerts", self.external_url),
                timeout: true,
                resolution_recorded: false,
            }]
        } else {
            alerts
        };
        let group_by = match self.config.route.group_by.clone() {
            GroupBy::All => alerts[0].labels.keys().cloned().collect(),
            GroupBy::Labels(l) => l,
        };
        let group_labels = group_by
            .iter()
            .filter_map(|n| alerts[0].labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        let data = alerts
            .iter()
            .map(|a| self.alert_data(a.fingerprint(), a, now))
            .collect();
        Data::new(receiver, group_labels, data, &self.external_url)
    }
}

/// Alertmanager's dedup decision (`DedupStage.needsUpdate`).
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat_ms: i64,
    now: Timestamp,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at_ms + repeat_ms <= now
}

/// Alertmanager's group key: the route's key and the group labels.
fn group_key(route: &Route, labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}:{{{}}}", route.key, l.join(", "))
}

/// The notifier as the server shares it: the state machine, a wake-up for
/// the dispatcher when alerts arrive, and delivery metrics.
pub struct Shared {
    pub notifier: std::sync::Mutex<Notifier>,
    pub wake: tokio::sync::Notify,
    pub metrics: send::Metrics,
}

impl Shared {
    pub fn new(notifier: Notifier) -> Shared {
        Shared {
            notifier: std::sync::Mutex::new(notifier),
            wake: tokio::sync::Notify::new(),
            metrics: send::Metrics::default(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Notifier> {
        self.notifier.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a test notification through every integration of `receiver`
    /// (with `alerts`, or a sample alert): each integration's name and how
    /// its delivery went. `None` if there is no such receiver.
    pub async fn test_receiver(
        &self,
        receiver: &str,
        alerts: Vec<Alert>,
        now: Timestamp,
    ) -> Option<Vec<(String, send::Delivery)>> {
        let (jobs, library) = {
            let mut n = self.lock();
            let jobs = n.test_job(receiver, alerts, now).ok()?;
            (jobs, n.library().clone())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut out = Vec::new();
        for job in &jobs {
            let d = send::deliver(job, &library, deadline, &self.metrics).await;
            out.push((job.integration_name(), d));
        }
        Some(out)
    }

    /// What each integration of `receiver` would send for `alerts` (a
    /// sample alert when empty), as [`send::preview`] shows it; the error
    /// if there is no such receiver.
    pub fn preview(
        &self,
        receiver: &str,
        alerts: Vec<Alert>,
        now: Timestamp,
    ) -> Result<Vec<serde_json::Value>, String> {
        let (jobs, library) = {
            let mut n = self.lock();
            let jobs = n.test_job(receiver, alerts, now)?;
            (jobs, n.library().clone())
        };
        Ok(jobs.iter().map(|j| send::preview(j, &library)).collect())
    }

    /// Takes alerts in and wakes the dispatcher.
    pub fn put(&self, alerts: Vec<Incoming>, now: Timestamp) {
        self.lock().put(alerts, now);
        self.wake.notify_one();
    }
}
