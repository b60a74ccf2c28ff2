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
mod dispatch;
pub mod forward;
mod history;
pub mod integrations;
mod nflog;
pub mod send;
mod shared;
pub mod silence;
mod store;
pub mod template;
pub mod timeinterval;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use integrations::Integration;

use serde::{Deserialize, Serialize};

pub use config::{AmConfig, GroupBy, Receiver, Route};
use dispatch::Group;
pub use dispatch::Job;
pub use history::{HistoryEvent, Recent};
use history::{HISTORY_IN_MEMORY, RECENT};
use nflog::{needs_update, LogEntry, NFLOG_RETENTION_MS};
pub use shared::Shared;
pub use silence::{Silence, SilenceError, SilenceMatcher};
pub use store::{MemoryStore, Rows, Store};
use store::{NS_ALERTS, NS_HISTORY, NS_NFLOG, NS_SILENCES};
pub use template::{AlertData, Data, Library};

use crate::model::Timestamp;

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
