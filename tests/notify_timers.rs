//! The notifier's timers and decisions with a controlled clock, on the
//! original stack's alertmanager.yml (group_by alertname+component,
//! group_wait 10s, group_interval 10s, repeat_interval 1h, severity routes,
//! the critical-inhibits-warning rule): what Alertmanager documents for
//! group_wait, group_interval, repeat_interval, grouping, send_resolved,
//! inhibition, silences and restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mlmon::notify::send::Delivery;
use mlmon::notify::{
    AmConfig, Incoming, Job, Library, MemoryStore, Notifier, Silence, SilenceMatcher, Store,
};

/// The original stack's file (`tests/fixtures/alertmanager/original.yml`)
/// with a real Slack URL where it has a placeholder.
fn original() -> String {
    include_str!("fixtures/alertmanager/original.yml").replace(
        "YOUR_SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/XXXX",
    )
}

const T0: i64 = 1_800_000_000_000;
const S: i64 = 1000;

fn notifier(store: Arc<dyn Store>, now: i64) -> Notifier {
    let config = AmConfig::parse(&original(), "alertmanager.yml", 0, Path::new("")).unwrap();
    Notifier::new(
        Arc::new(config),
        Library::default(),
        "http://mlmon:8001",
        store,
        86_400_000,
        now,
    )
    .unwrap()
}

fn alert(name: &str, severity: &str, component: &str, instance: &str) -> Incoming {
    let labels: BTreeMap<String, String> = [
        ("alertname", name),
        ("severity", severity),
        ("component", component),
        ("instance", instance),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Incoming {
        labels,
        annotations: [("summary".to_string(), format!("{name} on {instance}"))].into(),
        ..Default::default()
    }
}

fn resolved(mut a: Incoming, at: i64) -> Incoming {
    a.ends_at_ms = Some(at);
    a
}

/// `(receiver, integration, alert count, status)` of each job, sorted.
fn summary(jobs: &[Job]) -> Vec<(String, String, usize, &'static str)> {
    let mut v: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.receiver.clone(),
                j.integration_name(),
                j.data.alerts.len(),
                j.data.status,
            )
        })
        .collect();
    v.sort();
    v
}

fn complete_all(n: &mut Notifier, jobs: &[Job], now: i64) {
    for j in jobs {
        n.complete(j, &Delivery::with_outcome(Ok(())), now);
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn group_wait_then_group_interval_then_repeat_interval() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    n.put(
        vec![alert("ModelAccuracyCritical", "critical", "model", "a")],
        T0,
    );
    // group_wait: nothing before 10 s.
    assert!(n.due(T0 + 9_999).is_empty());
    let jobs = n.due(T0 + 10 * S);
    assert_eq!(
        summary(&jobs),
        [
            (s("critical-alerts"), s("email[0]"), 1, "firing"),
            (s("critical-alerts"), s("slack[0]"), 1, "firing")
        ]
    );
    complete_all(&mut n, &jobs, T0 + 10 * S);
    // A second alert of the same group waits for group_interval after the
    // last flush, not group_wait.
    n.put(
        vec![alert("ModelAccuracyCritical", "critical", "model", "b")],
        T0 + 12 * S,
    );
    assert!(n.due(T0 + 19_999).is_empty());
    let jobs = n.due(T0 + 20 * S);
    assert_eq!(summary(&jobs).len(), 2);
    assert!(jobs.iter().all(|j| j.data.alerts.len() == 2));
    complete_all(&mut n, &jobs, T0 + 20 * S);
    // Nothing new (the alerts are re-sent every minute, as Prometheus
    // does, so they stay firing): no notification until repeat_interval
    // (1h) has passed since the last one, though the group is flushed
    // every 10 s.
    let mut t = T0 + 30 * S;
    while t < T0 + 20 * S + 3_600 * S {
        if (t - T0) % (60 * S) == 0 {
            n.put(
                vec![
                    alert("ModelAccuracyCritical", "critical", "model", "a"),
                    alert("ModelAccuracyCritical", "critical", "model", "b"),
                ],
                t,
            );
        }
        assert!(
            n.due(t).is_empty(),
            "unexpected notification at +{}s",
            (t - T0) / S
        );
        t += 10 * S;
    }
    let jobs = n.due(T0 + 20 * S + 3_600 * S);
    assert_eq!(summary(&jobs).len(), 2, "repeat after 1h");
}

#[test]
fn alerts_are_batched_by_alertname_and_component() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    n.put(
        vec![
            alert("HighCPUUsage", "warning", "infrastructure", "a"),
            alert("HighCPUUsage", "warning", "infrastructure", "b"),
            alert("HighMemoryUsage", "warning", "infrastructure", "a"),
            alert("DataIngestionFailure", "info", "ingestion", "a"),
        ],
        T0,
    );
    let jobs = n.due(T0 + 10 * S);
    let mut groups: Vec<(String, String, usize)> = jobs
        .iter()
        .map(|j| (j.group_key.clone(), j.receiver.clone(), j.data.alerts.len()))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            (
                s(
                    r#"{}/{severity="warning"}:{alertname="HighCPUUsage", component="infrastructure"}"#
                ),
                s("warning-alerts"),
                2
            ),
            (
                s(
                    r#"{}/{severity="warning"}:{alertname="HighMemoryUsage", component="infrastructure"}"#
                ),
                s("warning-alerts"),
                1
            ),
            (
                s(r#"{}:{alertname="DataIngestionFailure", component="ingestion"}"#),
                s("web.hook"),
                1
            ),
        ]
    );
    let cpu = jobs.iter().find(|j| j.data.alerts.len() == 2).unwrap();
    assert_eq!(cpu.data.group_labels.len(), 2);
    assert_eq!(cpu.data.common_labels.get("instance"), None);
}

#[test]
fn resolved_notifications_follow_send_resolved() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    let ingest = alert("DataIngestionFailure", "info", "ingestion", "a");
    let crit = alert("ModelAccuracyCritical", "critical", "model", "a");
    n.put(vec![ingest.clone(), crit.clone()], T0);
    let jobs = n.due(T0 + 10 * S);
    assert_eq!(jobs.len(), 3);
    complete_all(&mut n, &jobs, T0 + 10 * S);
    n.put(
        vec![resolved(ingest, T0 + 15 * S), resolved(crit, T0 + 15 * S)],
        T0 + 15 * S,
    );
    let jobs = n.due(T0 + 20 * S);
    // The webhook (send_resolved: true) hears of it; email and Slack (false
    // by default) do not, but their log records it.
    assert_eq!(
        summary(&jobs),
        [(s("web.hook"), s("webhook[0]"), 1, "resolved")]
    );
    assert_eq!(jobs[0].data.alerts[0].status, "resolved");
    complete_all(&mut n, &jobs, T0 + 20 * S);
    // Delivered resolutions leave the groups: nothing more, ever.
    assert!(n.due(T0 + 30 * S).is_empty());
    assert!(n.due(T0 + 2 * 3_600 * S).is_empty());
    assert!(n.groups().is_empty());
    let events: Vec<String> = n
        .history(|_| true, 100)
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(events.iter().filter(|k| *k == "resolved").count(), 2);
    assert_eq!(events.iter().filter(|k| *k == "notification").count(), 4);
}

#[test]
fn critical_inhibits_warning_of_the_same_alertname_and_component() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    let crit = alert("ModelAccuracy", "critical", "model", "a");
    let warn = alert("ModelAccuracy", "warning", "model", "a");
    let other = alert("ModelAccuracy", "warning", "api", "a");
    n.put(vec![crit.clone(), warn.clone(), other], T0);
    let st = n.status(&warn.labels, T0);
    assert_eq!(st.state, "suppressed");
    assert_eq!(st.inhibited_by.len(), 1);
    let jobs = n.due(T0 + 10 * S);
    let receivers: Vec<(String, String)> = jobs
        .iter()
        .map(|j| {
            (
                j.receiver.clone(),
                j.data.common_labels["component"].clone(),
            )
        })
        .collect();
    assert!(receivers.contains(&(s("critical-alerts"), s("model"))));
    assert!(
        receivers.contains(&(s("warning-alerts"), s("api"))),
        "other component is not inhibited"
    );
    assert!(
        !receivers.contains(&(s("warning-alerts"), s("model"))),
        "{receivers:?}"
    );
    complete_all(&mut n, &jobs, T0 + 10 * S);
    // The critical alert resolves: the warning is no longer inhibited and
    // is notified at the next flush of its group.
    n.put(vec![resolved(crit, T0 + 12 * S)], T0 + 12 * S);
    let jobs = n.due(T0 + 20 * S);
    assert!(jobs
        .iter()
        .any(|j| j.receiver == "warning-alerts" && j.data.common_labels["component"] == "model"));
}

#[test]
fn silences_mute_and_expiring_them_unmutes() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    let id = n
        .set_silence(
            Silence {
                id: String::new(),
                matchers: vec![SilenceMatcher {
                    name: s("alertname"),
                    value: s("HighCPU.*"),
                    is_regex: true,
                    is_equal: true,
                }],
                starts_at_ms: T0,
                ends_at_ms: T0 + 3_600 * S,
                updated_at_ms: 0,
                created_by: s("ops"),
                comment: s("load test"),
            },
            T0,
        )
        .unwrap();
    let cpu = alert("HighCPUUsage", "warning", "infrastructure", "a");
    n.put(vec![cpu.clone()], T0);
    assert_eq!(n.status(&cpu.labels, T0).silenced_by, vec![id.clone()]);
    assert!(n.due(T0 + 10 * S).is_empty());
    n.expire_silence(&id, T0 + 15 * S).unwrap();
    assert!(
        n.expire_silence(&id, T0 + 16 * S).is_err(),
        "already expired"
    );
    let jobs = n.due(T0 + 20 * S);
    assert_eq!(
        summary(&jobs),
        [(s("warning-alerts"), s("email[0]"), 1, "firing")]
    );
    // Bad silences are refused with Alertmanager's reasons.
    let mut bad = n.silence(&id).unwrap().clone();
    bad.id = String::new();
    bad.ends_at_ms = T0 + 100 * S;
    bad.matchers[0].value = s(".*");
    let e = n.set_silence(bad, T0 + 20 * S).unwrap_err();
    assert!(
        e.to_string().contains("must not match the empty string"),
        "{e}"
    );
}

#[test]
fn a_restart_neither_resends_nor_forgets() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let mut n = notifier(store.clone(), T0);
    n.put(
        vec![alert("PipelineFailure", "critical", "pipeline", "a")],
        T0,
    );
    drop(n);
    // Restarted before group_wait expired: the alert is still there and is
    // notified once.
    let mut n = notifier(store.clone(), T0 + 4 * S);
    assert!(n.due(T0 + 5 * S).is_empty());
    let jobs = n.due(T0 + 14 * S);
    assert_eq!(jobs.len(), 2);
    complete_all(&mut n, &jobs, T0 + 14 * S);
    drop(n);
    // Restarted after the notification: the log says it was sent, so the
    // immediate flush of the re-formed group sends nothing.
    let mut n = notifier(store.clone(), T0 + 60 * S);
    assert!(n.due(T0 + 60 * S).is_empty());
    n.put(
        vec![alert("PipelineFailure", "critical", "pipeline", "a")],
        T0 + 70 * S,
    );
    assert!(n.due(T0 + 80 * S).is_empty());
    // ... until repeat_interval, if it still fires.
    n.put(
        vec![alert("PipelineFailure", "critical", "pipeline", "a")],
        T0 + 3_600 * S,
    );
    assert_eq!(n.due(T0 + 14 * S + 3_600 * S).len(), 2);
}

#[test]
fn a_failed_delivery_is_retried_at_the_next_flush_and_sent_once() {
    let mut n = notifier(Arc::new(MemoryStore::default()), T0);
    n.put(vec![alert("X", "info", "c", "a")], T0);
    let jobs = n.due(T0 + 10 * S);
    assert_eq!(jobs.len(), 1);
    n.complete(
        &jobs[0],
        &Delivery::with_outcome(Err(s("connection refused"))),
        T0 + 11 * S,
    );
    let jobs = n.due(T0 + 20 * S);
    assert_eq!(jobs.len(), 1, "retried");
    complete_all(&mut n, &jobs, T0 + 20 * S);
    assert!(n.due(T0 + 30 * S).is_empty(), "sent once");
    let outcomes: Vec<String> = n
        .history(|e| e.kind == "notification", 10)
        .iter()
        .map(|e| e.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["sent", "failed"]);
}

#[test]
fn time_intervals_mute_routes_and_active_intervals_open_them() {
    // T0 is 2027-01-15 08:00 UTC, a Friday.
    let config = r#"
route:
  receiver: night-shift
  group_by: [alertname]
  group_wait: 10s
  group_interval: 1m
  routes:
    - matchers: ['team="office"']
      receiver: office
      mute_time_intervals: [before-nine]
    - matchers: ['team="weekend"']
      receiver: office
      active_time_intervals: [weekends]
receivers:
  - name: night-shift
  - name: office
time_intervals:
  - name: before-nine
    time_intervals:
      - times: [{start_time: '00:00', end_time: '09:00'}]
        location: UTC
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
"#;
    let am = AmConfig::parse(config, "am.yml", 0, Path::new("")).unwrap();
    let mut n = Notifier::new(
        Arc::new(am),
        Library::default(),
        "http://mlmon:8001",
        Arc::new(MemoryStore::default()),
        86_400_000,
        T0,
    )
    .unwrap();
    let mut office = alert("DiskFull", "warning", "infra", "a");
    office.labels.insert("team".into(), "office".into());
    let mut weekend = alert("Backup", "warning", "infra", "a");
    weekend.labels.insert("team".into(), "weekend".into());
    n.put(vec![office.clone(), weekend.clone()], T0);
    // 08:00: before nine, and a weekday: both routes are muted.
    assert!(n.due(T0 + 10 * S).is_empty());
    let mut t = T0 + 70 * S;
    while t < T0 + 3_600 * S {
        n.put(vec![office.clone(), weekend.clone()], t);
        assert!(n.due(t).is_empty(), "muted at +{}s", (t - T0) / S);
        t += 60 * S;
    }
    // From 09:00 the office route notifies; the weekend one stays shut.
    n.put(vec![office.clone(), weekend.clone()], T0 + 3_600 * S);
    let jobs = n.due(T0 + 3_610 * S);
    assert_eq!(jobs.len(), 1, "{:?}", summary(&jobs));
    assert_eq!(jobs[0].data.group_labels["alertname"], "DiskFull");
    // A bad interval is refused as Alertmanager refuses it.
    let bad = config.replace("['saturday', 'sunday']", "['funday']");
    let e = AmConfig::parse(&bad, "am.yml", 0, Path::new("")).unwrap_err();
    assert!(
        e.0[0].message.contains("funday is not a valid weekday"),
        "{e:?}"
    );
}
