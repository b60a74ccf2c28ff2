//! The notification log: what each integration last sent for a group,
//! and Alertmanager's rule for whether it needs a new notification.

use super::*;

/// How long notification log entries are kept (Alertmanager: 120h).
pub(super) const NFLOG_RETENTION_MS: i64 = 5 * 86_400_000;

/// What the notification log remembers of the last notification of one
/// integration for one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LogEntry {
    pub(super) firing: BTreeSet<u64>,
    pub(super) resolved: BTreeSet<u64>,
    pub(super) at_ms: Timestamp,
}

/// Alertmanager's dedup decision (`DedupStage.needsUpdate`).
pub(super) fn needs_update(
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
