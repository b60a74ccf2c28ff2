//! Rule evaluation with Prometheus' semantics: groups evaluated in order at
//! a given time (the caller's clock, so tests control it); recording rules
//! written back; alerting rules through inactive → pending (for `for`) →
//! firing, resolved alerts kept 15 minutes, `keep_firing_for`; `ALERTS`
//! and `ALERTS_FOR_STATE` written; series a rule stops producing get stale
//! markers. Pending and firing alerts restore their active-since time from
//! `ALERTS_FOR_STATE` after a restart, shifted by the downtime, so a `for:
//! 5m` alert that had been pending 4 minutes fires 1 minute after restart.

use std::collections::BTreeMap;
use std::time::Instant;

use super::template::{expand, TemplateData};
use super::{Rule, RuleGroup};
use crate::model::{
    percent_encode, stale_nan, FastSet, Labels, LabelsBuilder, MatchOp, Matcher, PostableAlert,
    Timestamp, METRIC_NAME,
};
use crate::promql::{self, QueryOptions};
use crate::tsdb::RuleStore;

/// Resolved alerts are kept (and sent as resolved) this long.
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// How far back `ALERTS_FOR_STATE` is looked for at start-up.
const RESTORE_WINDOW_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at_ms: Timestamp,
    pub fired_at_ms: Option<Timestamp>,
    pub resolved_at_ms: Option<Timestamp>,
    keep_firing_since_ms: Option<Timestamp>,
    last_sent_ms: Option<Timestamp>,
}

/// One rule and what its evaluations left.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub rule: Rule,
    /// "ok", "err" or "unknown" (not evaluated yet).
    pub health: &'static str,
    pub last_error: String,
    pub last_eval_ms: Timestamp,
    pub eval_seconds: f64,
    /// Alerts by their label set (alerting rules).
    pub alerts: BTreeMap<Labels, Alert>,
    /// Series written by the last evaluation, for stale markers.
    previous: FastSet<Labels>,
    /// Active-since times from before a restart: alert labels → (active
    /// since, last time the previous process wrote it).
    restore: Option<BTreeMap<Labels, (Timestamp, Timestamp)>>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub file: String,
    pub interval_ms: i64,
    pub limit: usize,
    pub rules: Vec<RuleState>,
    pub last_eval_ms: Timestamp,
    pub eval_seconds: f64,
}

impl Group {
    pub fn new(file: &str, g: &RuleGroup, default_interval_ms: i64) -> Group {
        Group {
            name: g.name.clone(),
            file: file.to_string(),
            interval_ms: g
                .interval
                .map(|d| d.millis())
                .filter(|ms| *ms > 0)
                .unwrap_or(default_interval_ms),
            limit: g.limit.max(0) as usize,
            rules: g
                .rules
                .iter()
                .map(|r| RuleState {
                    rule: r.clone(),
                    health: "unknown",
                    last_error: String::new(),
                    last_eval_ms: 0,
                    eval_seconds: 0.0,
                    alerts: BTreeMap::new(),
                    previous: FastSet::default(),
                    restore: None,
                })
                .collect(),
            last_eval_ms: 0,
            eval_seconds: 0.0,
        }
    }

    /// Takes over what `old`, the same group before a reload changed it,
    /// knew (Prometheus' `CopyState`): each rule matched by name and labels
    /// keeps its alerts (so a pending alert keeps its active-since time),
    /// its health and the series it wrote. Returns the series of `old`'s
    /// rules that have no counterpart, for stale markers.
    pub fn adopt(&mut self, old: Group) -> Vec<Labels> {
        type Key = (Option<String>, Option<String>, BTreeMap<String, String>);
        let key = |r: &Rule| -> Key { (r.alert.clone(), r.record.clone(), r.labels.clone()) };
        let mut by_key: BTreeMap<Key, std::collections::VecDeque<RuleState>> = BTreeMap::new();
        for r in old.rules {
            by_key.entry(key(&r.rule)).or_default().push_back(r);
        }
        for r in &mut self.rules {
            let Some(prev) = by_key.get_mut(&key(&r.rule)).and_then(|q| q.pop_front()) else {
                continue;
            };
            r.health = prev.health;
            r.last_error = prev.last_error;
            r.last_eval_ms = prev.last_eval_ms;
            r.eval_seconds = prev.eval_seconds;
            r.alerts = prev.alerts;
            r.previous = prev.previous;
            r.restore = prev.restore;
        }
        self.last_eval_ms = old.last_eval_ms;
        self.eval_seconds = old.eval_seconds;
        by_key
            .into_values()
            .flatten()
            .flat_map(|r| r.previous)
            .collect()
    }

    /// Every series the group's last evaluation wrote (stale markers for a
    /// group removed by a reload).
    pub fn written(&self) -> Vec<Labels> {
        self.rules
            .iter()
            .flat_map(|r| r.previous.iter().cloned())
            .collect()
    }

    /// Evaluates every rule at `t` and writes what they produce.
    pub fn eval(
        &mut self,
        storage: &dyn RuleStore,
        t: Timestamp,
        opts: &QueryOptions,
        external_labels: &BTreeMap<String, String>,
    ) {
        let started = Instant::now();
        for r in &mut self.rules {
            let rule_started = Instant::now();
            if r.rule.alert.is_some() && r.restore.is_none() {
                r.restore = Some(restore_points(storage, &r.rule, t));
            }
            // What to write, and a template error (which does not stop the
            // rule, but shows in its health).
            let produced =
                promql::instant_vector(storage, &r.rule.expr, t, opts).and_then(|samples| match r
                    .rule
                    .record
                    .clone()
                {
                    Some(name) => record(&r.rule, &name, samples, self.limit).map(|o| (o, None)),
                    None => alert(r, samples, t, self.limit, external_labels),
                });
            let produced = produced.map(|(out, template_error)| {
                let e = value_at_resolution(r, storage, t, opts, external_labels);
                (out, template_error.or(e))
            });
            let mut app = Vec::new();
            match produced {
                Ok((out, template_error)) => {
                    let now: FastSet<Labels> = out.iter().map(|(l, _)| l.clone()).collect();
                    for gone in r.previous.iter().filter(|l| !now.contains(*l)) {
                        app.push((gone.clone(), t, stale_nan()));
                    }
                    for (labels, v) in out {
                        app.push((labels, t, v));
                    }
                    r.previous = now;
                    (r.health, r.last_error) = match template_error {
                        Some(e) => ("err", e),
                        None => ("ok", String::new()),
                    };
                }
                Err(e) => {
                    r.health = "err";
                    r.last_error = e;
                }
            }
            if let Err(e) = storage.write_samples(app) {
                r.health = "err";
                r.last_error = format!("cannot store the rule's results: {e}");
            }
            r.last_eval_ms = t;
            r.eval_seconds = rule_started.elapsed().as_secs_f64();
        }
        self.last_eval_ms = t;
        self.eval_seconds = started.elapsed().as_secs_f64();
    }

    /// The alerts due to go to Alertmanagers at `t`, marked as sent: firing
    /// ones every `resend_ms`, resolved ones once (as Prometheus sends),
    /// with `external_labels` added and a generator URL under
    /// `external_url`.
    pub fn alerts_to_send(
        &mut self,
        t: Timestamp,
        resend_ms: i64,
        external_labels: &BTreeMap<String, String>,
        external_url: &str,
    ) -> Vec<PostableAlert> {
        let valid_for = 4 * resend_ms.max(self.interval_ms);
        let mut out = Vec::new();
        for r in &mut self.rules {
            for a in r.alerts.values_mut() {
                let due = match (a.state, a.resolved_at_ms) {
                    (AlertState::Pending, _) => false,
                    (_, Some(resolved)) => a.last_sent_ms.is_none_or(|s| s < resolved),
                    _ => a.last_sent_ms.is_none_or(|s| s + resend_ms <= t),
                };
                if !due {
                    continue;
                }
                a.last_sent_ms = Some(t);
                let mut labels = external_labels.clone();
                for (n, v) in a.labels.iter() {
                    labels.insert(n.to_string(), v.to_string());
                }
                out.push(PostableAlert {
                    labels,
                    annotations: a.annotations.clone(),
                    starts_at_ms: Some(a.active_at_ms),
                    ends_at_ms: Some(a.resolved_at_ms.unwrap_or(t + valid_for)),
                    generator_url: format!(
                        "{external_url}/graph?g0.expr={}&g0.tab=1",
                        percent_encode(&r.rule.expr)
                    ),
                });
            }
        }
        out
    }

    /// Active alerts of every rule (for the API and the notifier).
    pub fn active_alerts(&self) -> impl Iterator<Item = (&RuleState, &Alert)> {
        self.rules.iter().flat_map(|r| {
            r.alerts
                .values()
                .filter(|a| a.state != AlertState::Inactive)
                .map(move |a| (r, a))
        })
    }
}

/// For alerts that resolved at `t`: the value of the compared side of the
/// rule's expression now (`ml_model_r2_score` of `ml_model_r2_score < 0.7`)
/// and the annotations expanded with it, so the resolved notification
/// says what the value came back to rather than repeating the firing one.
/// Rules that are not a filter against a number keep their last values.
fn value_at_resolution(
    r: &mut RuleState,
    storage: &dyn RuleStore,
    t: Timestamp,
    opts: &QueryOptions,
    external_labels: &BTreeMap<String, String>,
) -> Option<String> {
    if !r.alerts.values().any(|a| a.resolved_at_ms == Some(t)) {
        return None;
    }
    let operand = compared_operand(&r.rule.expr)?;
    let samples = promql::instant_vector(storage, &operand, t, opts).ok()?;
    let name = r.rule.alert.clone().unwrap_or_default();
    let mut error = None;
    for (labels, value) in samples {
        let (map, alert_labels, _) = identify(&r.rule, &name, &labels, value, external_labels);
        let Some(alert_labels) = alert_labels else {
            continue;
        };
        if let Some(a) = r.alerts.get_mut(&alert_labels) {
            if a.resolved_at_ms == Some(t) {
                let (annotations, e) =
                    expand_all(&name, &r.rule.annotations, &map, value, external_labels);
                a.value = value;
                a.annotations = annotations;
                error = error.or(e);
            }
        }
    }
    error
}

/// The vector side of a top-level comparison with a number, without `bool`.
fn compared_operand(expr: &str) -> Option<String> {
    use promql_parser::parser::Expr;
    fn unwrap(e: &Expr) -> &Expr {
        match e {
            Expr::Paren(p) => unwrap(&p.expr),
            e => e,
        }
    }
    let parsed = crate::promql::parse(expr).ok()?;
    let Expr::Binary(b) = unwrap(&parsed) else {
        return None;
    };
    if !b.op.is_comparison_operator() || b.modifier.as_ref().is_some_and(|m| m.return_bool) {
        return None;
    }
    match (unwrap(&b.lhs), unwrap(&b.rhs)) {
        (Expr::NumberLiteral(_), other) | (other, Expr::NumberLiteral(_))
            if !matches!(other, Expr::NumberLiteral(_)) =>
        {
            Some(other.to_string())
        }
        _ => None,
    }
}

/// An alert's identity from one sample of its rule: the sample's labels as
/// templates see them, the alert's label set (rule labels expanded,
/// `alertname` set; `None` if invalid) and a template error, if any.
fn identify(
    rule: &Rule,
    name: &str,
    labels: &Labels,
    value: f64,
    external_labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Option<Labels>, Option<String>) {
    let plain = labels.without(METRIC_NAME);
    let map: BTreeMap<String, String> = plain
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (mut extra, error) = expand_all(name, &rule.labels, &map, value, external_labels);
    extra.insert("alertname".into(), name.to_string());
    let alert_labels = with_labels(&plain, &extra).ok();
    (map, alert_labels, error)
}

/// Expands each template of `m` for one alert; the first error, if any.
fn expand_all(
    name: &str,
    m: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    value: f64,
    external_labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Option<String>) {
    let data = TemplateData {
        labels,
        value,
        external_labels,
    };
    let mut error = None;
    let out = m
        .iter()
        .map(|(k, text)| {
            let out = expand(&format!("__alert_{name}"), text, &data).unwrap_or_else(|e| {
                error.get_or_insert(e.clone());
                format!("<error expanding template: {e}>")
            });
            (k.clone(), out)
        })
        .collect();
    (out, error)
}

/// `labels` with `extra` set over them.
fn with_labels(labels: &Labels, extra: &BTreeMap<String, String>) -> Result<Labels, String> {
    let mut b = LabelsBuilder::new();
    for (n, v) in labels.iter().filter(|(n, _)| !extra.contains_key(*n)) {
        b.push(n, v);
    }
    for (n, v) in extra {
        b.push(n.as_str(), v.as_str());
    }
    b.build().map_err(|e| e.to_string())
}

fn record(
    rule: &Rule,
    name: &str,
    samples: Vec<(Labels, f64)>,
    limit: usize,
) -> Result<Vec<(Labels, f64)>, String> {
    if limit > 0 && samples.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            samples.len()
        ));
    }
    let mut extra = rule.labels.clone();
    extra.insert(METRIC_NAME.into(), name.into());
    let mut seen = FastSet::default();
    let mut out = Vec::with_capacity(samples.len());
    for (labels, v) in samples {
        let l = with_labels(&labels, &extra)?;
        if !seen.insert(l.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((l, v));
    }
    Ok(out)
}

/// What an evaluation writes, and a template error if one happened.
type Produced = (Vec<(Labels, f64)>, Option<String>);

/// Moves the rule's alerts to time `t` and returns the ALERTS and
/// ALERTS_FOR_STATE samples.
fn alert(
    r: &mut RuleState,
    samples: Vec<(Labels, f64)>,
    t: Timestamp,
    limit: usize,
    external_labels: &BTreeMap<String, String>,
) -> Result<Produced, String> {
    let rule = r.rule.clone();
    let name = rule.alert.clone().unwrap_or_default();
    let hold = rule.for_.map_or(0, |d| d.millis());
    let keep_firing = rule.keep_firing_for.map_or(0, |d| d.millis());
    let mut template_error = None;
    let mut seen = FastSet::default();
    for (labels, value) in samples {
        let (map, alert_labels, e1) = identify(&rule, &name, &labels, value, external_labels);
        let (annotations, e2) = expand_all(&name, &rule.annotations, &map, value, external_labels);
        if template_error.is_none() {
            template_error = e1.or(e2);
        }
        let Some(alert_labels) = alert_labels else {
            continue;
        };
        seen.insert(alert_labels.clone());
        match r.alerts.get_mut(&alert_labels) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = value;
                a.annotations = annotations;
                a.keep_firing_since_ms = None;
            }
            _ => {
                // New (or back after being resolved): pending from now, or
                // from before a restart.
                let restored = r
                    .restore
                    .as_mut()
                    .and_then(|m| m.remove(&alert_labels))
                    .map(|(since, down_at)| since + (t - down_at).max(0));
                r.alerts.insert(
                    alert_labels.clone(),
                    Alert {
                        labels: alert_labels,
                        annotations,
                        state: AlertState::Pending,
                        value,
                        active_at_ms: restored.unwrap_or(t),
                        fired_at_ms: None,
                        resolved_at_ms: None,
                        keep_firing_since_ms: None,
                        last_sent_ms: None,
                    },
                );
            }
        }
    }
    // Restoring happens at the first evaluation only.
    if let Some(m) = r.restore.as_mut() {
        m.clear();
    }
    r.alerts.retain(|labels, a| {
        if seen.contains(labels) {
            return true;
        }
        if a.state == AlertState::Pending {
            return false;
        }
        if a.state == AlertState::Inactive {
            return a
                .resolved_at_ms
                .is_some_and(|at| t - at < RESOLVED_RETENTION_MS);
        }
        if keep_firing > 0 {
            let since = *a.keep_firing_since_ms.get_or_insert(t);
            if t - since < keep_firing {
                return true;
            }
        }
        a.state = AlertState::Inactive;
        a.resolved_at_ms = Some(t);
        true
    });
    let mut out = Vec::new();
    let active = r
        .alerts
        .values()
        .filter(|a| a.state != AlertState::Inactive)
        .count();
    if limit > 0 && active > limit {
        r.alerts.clear();
        return Err(format!("exceeded limit of {limit} with {active} alerts"));
    }
    for a in r.alerts.values_mut() {
        if a.state == AlertState::Pending && t - a.active_at_ms >= hold {
            a.state = AlertState::Firing;
            a.fired_at_ms = Some(t);
        }
        if a.state == AlertState::Inactive {
            continue;
        }
        let state = a.labels.with("alertstate", a.state.as_str());
        out.push((state.with(METRIC_NAME, "ALERTS"), 1.0));
        out.push((
            a.labels.with(METRIC_NAME, "ALERTS_FOR_STATE"),
            (a.active_at_ms / 1000) as f64,
        ));
    }
    Ok((out, template_error))
}

/// The `ALERTS_FOR_STATE` series of an alerting rule from the last hour:
/// alert labels → (active since, time of the series' last sample).
fn restore_points(
    storage: &dyn RuleStore,
    rule: &Rule,
    t: Timestamp,
) -> BTreeMap<Labels, (Timestamp, Timestamp)> {
    let mut out = BTreeMap::new();
    if rule.for_.is_none_or(|d| d.millis() <= 0) {
        return out;
    }
    let name = rule.alert.clone().unwrap_or_default();
    let matchers = [
        Matcher::new(MatchOp::Equal, METRIC_NAME, "ALERTS_FOR_STATE"),
        Matcher::new(MatchOp::Equal, "alertname", &name),
    ];
    let Ok(matchers) = matchers.into_iter().collect::<Result<Vec<_>, _>>() else {
        return out;
    };
    let Ok(series) = storage.select(&matchers, t - RESTORE_WINDOW_MS, t) else {
        return out;
    };
    for s in series {
        let Some(last) = s
            .samples
            .iter()
            .rev()
            .find(|p| !crate::model::is_stale(p.v))
        else {
            continue;
        };
        // A stale marker after it: the alert had ended.
        if s.samples
            .last()
            .is_some_and(|p| crate::model::is_stale(p.v))
        {
            continue;
        }
        out.insert(
            s.labels.without(METRIC_NAME),
            ((last.v * 1000.0) as Timestamp, last.t),
        );
    }
    out
}
