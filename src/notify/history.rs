//! The alert history (firing, resolved, every notification attempt) and
//! the recent notifications the dashboard shows.

use super::*;

/// Most history events kept in memory (older ones stay on disk until
/// retention drops them).
pub(super) const HISTORY_IN_MEMORY: usize = 20_000;

pub(super) const RECENT: usize = 100;

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

impl Notifier {
    pub(super) fn record(&mut self, event: HistoryEvent) {
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

    pub(super) fn alert_event(&self, kind: &str, fp: u64, at_ms: Timestamp) -> HistoryEvent {
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
}
