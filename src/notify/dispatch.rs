//! Alerts in, notifications out: `put` merges and routes alerts into
//! aggregation groups, `due` flushes the groups whose timers passed
//! (inhibition, silences and time intervals applied) into `Job`s, and
//! `complete` records how a job ended.

use super::*;

pub(super) struct Group {
    /// Alertmanager's group key.
    pub(super) key: String,
    pub(super) route: Route,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) alerts: BTreeSet<u64>,
    pub(super) next_flush_ms: Timestamp,
    pub(super) has_flushed: bool,
    /// Jobs of the current flush not yet completed.
    pub(super) in_flight: usize,
    /// Resolved alerts of the current flush (with their update time), removed
    /// from the group if every job succeeds.
    pub(super) flushed_resolved: Vec<(u64, Timestamp)>,
    pub(super) flush_failed: bool,
}

/// A notification due: one integration of one receiver, for one group.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    /// Alertmanager's group key (`{}/{severity="critical"}:{alertname="X"}`).
    pub group_key: String,
    pub(super) group_id: String,
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
    pub(super) firing: BTreeSet<u64>,
    pub(super) resolved: BTreeSet<u64>,
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

/// Alertmanager's group key: the route's key and the group labels.
pub(super) fn group_key(route: &Route, labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}:{{{}}}", route.key, l.join(", "))
}

impl Notifier {
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

    pub(super) fn route(&mut self, fp: u64, now: Timestamp) {
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
    pub(super) fn sweep(&mut self, now: Timestamp) {
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

    pub(super) fn inhibited_by(
        &self,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Vec<String> {
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
    pub(super) fn muted_by_time(&self, route: &Route, now: Timestamp) -> bool {
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

    pub(super) fn alert_data(&self, fp: u64, a: &Alert, now: Timestamp) -> AlertData {
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
    pub(super) fn finish_flush(&mut self, id: &str) {
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
}
