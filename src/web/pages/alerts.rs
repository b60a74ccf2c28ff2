//! `/alerts`: firing, pending, silenced and inhibited alerts with their
//! annotations, recently resolved ones, silences (create one from an
//! alert's labels, expire one), the alert history with filters, and each
//! receiver with a test button and a template preview.

use axum::extract::{Form, Path, State};
use axum::response::Response;
use maud::{html, Markup};

use super::overview::rule_alerts;
use super::*;
use crate::notify::{Silence, SilenceMatcher};

const DURATIONS: [(&str, i64); 5] = [
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("4h", 4 * 3_600_000),
    ("1d", 86_400_000),
    ("1w", 7 * 86_400_000),
];

/// A form that silences alerts with exactly `labels`.
fn silence_form(csrf: &Csrf, labels: &BTreeMap<String, String>, id: &str) -> Markup {
    html! {
        details {
            summary { "Silence…" }
            form method="post" action="/alerts/silences" {
                (csrf.field())
                fieldset {
                    legend { "Matchers (alerts with these labels)" }
                    @for (i, (k, v)) in labels.iter().enumerate() {
                        @let field = format!("{id}-m{i}");
                        div {
                            input type="checkbox" id=(field) name="matcher" value={ (k) "=" (v) } checked;
                            label for=(field) style="display:inline" { code { (k) "=\"" (v) "\"" } }
                        }
                    }
                }
                div.row {
                    label { "For" select name="duration" { @for (d, _) in DURATIONS { option value=(d) { (d) } } } }
                    label { "Created by" input name="created_by" required autocomplete="name"; }
                    label { "Comment" input name="comment" required; }
                    button type="submit" { "Create silence" }
                }
            }
        }
    }
}

struct Filters {
    alertname: String,
    severity: String,
    kind: String,
    since: Range,
}

fn history(n: &crate::notify::Notifier, f: &Filters) -> Markup {
    let now = now_ms();
    let events = n.history(
        |e| {
            e.at_ms >= f.since.start
                && (f.alertname.is_empty() || e.alertname == f.alertname)
                && (f.severity.is_empty() || e.labels.get("severity") == Some(&f.severity))
                && (f.kind.is_empty() || e.kind == f.kind)
        },
        200,
    );
    html! {
        form method="get" action="/alerts#history" {
            div.row {
                label { "Alert name" input name="alertname" value=(f.alertname); }
                label { "Severity" select name="severity" {
                    @for s in ["", "critical", "warning", "info"] {
                        option value=(s) selected[f.severity == s] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                } }
                label { "Event" select name="kind" {
                    @for s in ["", "firing", "resolved", "notification"] {
                        option value=(s) selected[f.kind == s] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                } }
                label { "Since" select name="range" {
                    @for (name, _) in PRESETS {
                        option value=(name) selected[f.since.preset == Some(name)] { "last " (name) }
                    }
                } }
                button type="submit" { "Filter" }
            }
        }
        @if events.is_empty() { p.muted { "No events match." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "When" } th { "Event" } th { "Alert" } th { "Details" } } }
                tbody {
                    @for e in &events {
                        tr {
                            td { (when(e.at_ms, now)) }
                            td { (e.kind) }
                            td { (e.alertname) " " (map_labels(&e.labels)) }
                            td {
                                @if e.kind == "notification" {
                                    (e.receiver) " / " (e.integration) ": "
                                    @match e.outcome.as_str() {
                                        "failed" => span.crit { "failed" },
                                        "retried" => span.warn { "retried" },
                                        o => span.good { (o) },
                                    }
                                    @if !e.error.is_empty() { br; span.muted { (e.error) } }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn render(state: &AppState, csrf: &Csrf, f: &Filters, notice: Option<&str>) -> Markup {
    let now = now_ms();
    let pending: Vec<_> = rule_alerts(state)
        .into_iter()
        .filter(|a| a.state == "pending")
        .collect();
    let n = state.notify.lock();
    let mut held: Vec<_> = n
        .alerts(now)
        .into_iter()
        .filter(|(_, a, _, _)| !a.resolved(now))
        .collect();
    held.sort_by(|a, b| (a.3.state, &a.1.labels).cmp(&(b.3.state, &b.1.labels)));
    let resolved = n.history(|e| e.kind == "resolved" && e.at_ms >= now - 86_400_000, 20);
    let mut silences: Vec<Silence> = n.silences().cloned().collect();
    silences.sort_by_key(|s| (s.state(now) == "expired", -s.ends_at_ms));
    let receivers: Vec<(String, Vec<String>)> = n
        .config()
        .receivers
        .iter()
        .map(|r| {
            let mut list: Vec<String> = r
                .indexed()
                .iter()
                .map(|(i, k)| format!("{}[{k}]", i.kind()))
                .collect();
            if list.is_empty() {
                list.push("log".into());
            }
            (r.name.clone(), list)
        })
        .collect();
    html! {
        h1 { "Alerts" }
        @if let Some(m) = notice { p.notice role="status" { (m) } }
        section aria-labelledby="active-h" {
            h2 #active-h { "Firing" }
            @if held.is_empty() { p.good { "No alerts are firing." } }
            @for (i, (fp, a, receivers, st)) in held.iter().enumerate() {
                article.panel style="margin-bottom:.6rem" {
                    strong.(if a.labels.get("severity").map(String::as_str) == Some("critical") { "crit" } else { "warn" }) {
                        (a.labels.get("alertname").cloned().unwrap_or_default())
                    }
                    " "
                    @match (st.silenced_by.is_empty(), st.inhibited_by.is_empty()) {
                        (true, true) => span.badge.crit { "firing" },
                        (false, _) => span.badge.muted { "silenced" },
                        (true, false) => span.badge.muted { "inhibited" },
                    }
                    " " span.muted { "since " (when(a.starts_at_ms, now)) " · to " (receivers.join(", ")) }
                    div { (map_labels(&a.labels)) }
                    @for (k, v) in &a.annotations { div { span.muted { (k) ": " } (v) } }
                    @if st.silenced_by.is_empty() {
                        (silence_form(csrf, &a.labels, &format!("a{i}-{}", crate::notify::fingerprint_hex(*fp))))
                    }
                }
            }
        }
        section aria-labelledby="pending-h" {
            h2 #pending-h { "Pending" }
            @if pending.is_empty() { p.muted { "None." } }
            ul { @for a in &pending {
                li { strong { (a.name) } " " span.muted { "pending since " (when(a.since_ms, now)) } " " (labels_markup(a.labels.iter())) @if !a.summary.is_empty() { br; (a.summary) } }
            } }
        }
        section aria-labelledby="resolved-h" {
            h2 #resolved-h { "Recently resolved" }
            @if resolved.is_empty() { p.muted { "Nothing resolved in the last 24 hours." } }
            ul { @for e in &resolved { li { strong { (e.alertname) } " resolved " (when(e.at_ms, now)) " " (map_labels(&e.labels)) } } }
        }
        section #silences aria-labelledby="silences-h" {
            h2 #silences-h { "Silences" }
            @if silences.is_empty() { p.muted { "No silences." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th { "State" } th { "Matchers" } th { "Ends" } th { "By" } th { "Comment" } th {} } }
                    tbody { @for s in &silences {
                        tr {
                            td { (s.state(now)) }
                            td { span.labels { @for m in &s.matchers {
                                code { (m.name) (m.op().as_str()) "\"" (m.value) "\"" }
                            } } }
                            td { (when(s.ends_at_ms, now)) }
                            td { (s.created_by) }
                            td { (s.comment) }
                            td {
                                @if s.state(now) != "expired" {
                                    form.inline method="post" action={ "/alerts/silences/" (s.id) "/expire" } {
                                        (csrf.field())
                                        button type="submit" aria-label={ "Expire silence " (s.id) } { "Expire" }
                                    }
                                }
                            }
                        }
                    } }
                } }
            }
        }
        section #history aria-labelledby="history-h" {
            h2 #history-h { "History" }
            (history(&n, f))
        }
        section #receivers aria-labelledby="receivers-h" {
            h2 #receivers-h { "Receivers" }
            div.table-wrap { table {
                thead { tr { th { "Receiver" } th { "Integrations" } th {} } }
                tbody { @for (name, list) in &receivers {
                    tr {
                        td { (name) }
                        td { (list.join(", ")) }
                        td {
                            form.inline method="post" action={ "/alerts/receivers/" (crate::model::percent_encode(name)) "/test" } {
                                (csrf.field())
                                button type="submit" { "Send test notification" }
                            }
                            " "
                            a href={ "/alerts/receivers/" (crate::model::percent_encode(name)) "/preview" } { "Preview templates" }
                        }
                    }
                } }
            } }
        }
    }
}

/// `GET /alerts`
pub async fn page(State(state): State<AppState>, csrf: Csrf, Query(p): QueryMap) -> Response {
    let since = match Range::from_params(&p, "24h", now_ms()) {
        Ok(r) => r,
        Err(e) => return problem(&state, StatusCode::BAD_REQUEST, "Alerts", &e),
    };
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let f = Filters {
        alertname: get("alertname"),
        severity: get("severity"),
        kind: get("kind"),
        since,
    };
    let notice = match p.get("done").map(String::as_str) {
        Some("created") => Some("Silence created."),
        Some("expired") => Some("Silence expired."),
        _ => None,
    };
    let body = render(&state, &csrf, &f, notice);
    csrf.apply(super::page(layout(&state, "Alerts", "/alerts", true, body)))
}

/// `POST /alerts/silences` (the form on each alert).
pub async fn create_silence(
    State(state): State<AppState>,
    csrf: Csrf,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf.accepts(&form) {
        return form_expired(&state);
    }
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let matchers: Vec<SilenceMatcher> = form
        .iter()
        .filter(|(k, _)| k == "matcher")
        .filter_map(|(_, v)| v.split_once('='))
        .map(|(n, v)| SilenceMatcher {
            name: n.to_string(),
            value: v.to_string(),
            is_regex: false,
            is_equal: true,
        })
        .collect();
    let Some(span) = DURATIONS
        .iter()
        .find(|(d, _)| *d == get("duration"))
        .map(|x| x.1)
    else {
        return problem(
            &state,
            StatusCode::BAD_REQUEST,
            "Silence not created",
            "duration: choose one of the listed durations",
        );
    };
    let now = now_ms();
    let silence = Silence {
        id: String::new(),
        matchers,
        starts_at_ms: now,
        ends_at_ms: now + span,
        updated_at_ms: now,
        created_by: get("created_by"),
        comment: get("comment"),
    };
    let notify = state.notify.clone();
    let r = tokio::task::spawn_blocking(move || notify.lock().set_silence(silence, now)).await;
    match r {
        Ok(Ok(_)) => see_other("/alerts?done=created#silences"),
        Ok(Err(e)) => problem(&state, status_of(&e), "Silence not created", &e.to_string()),
        Err(_) => problem(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Silence not created",
            "internal error",
        ),
    }
}

fn status_of(e: &crate::notify::SilenceError) -> StatusCode {
    match e {
        crate::notify::SilenceError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `POST /alerts/silences/{id}/expire`
pub async fn expire_silence(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf.accepts(&form) {
        return form_expired(&state);
    }
    let notify = state.notify.clone();
    let r = tokio::task::spawn_blocking(move || notify.lock().expire_silence(&id, now_ms())).await;
    match r {
        Ok(Ok(())) => see_other("/alerts?done=expired#silences"),
        Ok(Err(e)) => problem(&state, status_of(&e), "Silence not expired", &e.to_string()),
        Err(_) => problem(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Silence not expired",
            "internal error",
        ),
    }
}

/// `POST /alerts/receivers/{name}/test`: sends, then shows how it went.
pub async fn test_receiver(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf.accepts(&form) {
        return form_expired(&state);
    }
    let Some(results) = state
        .notify
        .test_receiver(&name, Vec::new(), now_ms())
        .await
    else {
        return problem(
            &state,
            StatusCode::NOT_FOUND,
            "Test notification",
            &format!("no receiver named {name:?}"),
        );
    };
    let body = html! {
        h1 { "Test notification: " (name) }
        ul { @for (i, d) in &results {
            li { (i) ": " @match &d.outcome {
                Ok(()) => span.good { "sent" },
                Err(e) => { span.crit { "failed" } " — " (e) },
            } }
        } }
        p { a href="/alerts#receivers" { "Back to receivers" } }
    };
    super::page(layout(&state, "Test notification", "/alerts", false, body))
}

/// `GET /alerts/receivers/{name}/preview`: what the receiver would send
/// for the alerts firing now (or a sample alert).
pub async fn preview(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let now = now_ms();
    let alerts = state.notify.lock().firing_for(&name, now);
    let sample = alerts.is_empty();
    let previews = match state.notify.preview(&name, alerts, now) {
        Ok(p) => p,
        Err(e) => return problem(&state, StatusCode::NOT_FOUND, "Template preview", &e),
    };
    let body = html! {
        h1 { "Template preview: " (name) }
        p.muted { @if sample { "No alert is firing for this receiver; this uses a sample alert." } @else { "Rendered for the alerts firing now." } }
        @for p in &previews {
            section.panel style="margin-bottom:1rem" {
                h2 { (p["integration"].as_str().unwrap_or("")) }
                @if let Some(e) = p["error"].as_str() { p.error role="alert" { (e) } }
                @if let Some(h) = p["headers"].as_object() {
                    table { tbody { @for (k, v) in h { tr { th { (k) } td { (v.as_str().unwrap_or("")) } } } } }
                }
                @if let Some(t) = p["text"].as_str() { h3 { "Text" } pre { (t) } }
                @if let Some(t) = p["subject"].as_str() { h3 { "Subject" } pre { (t) } }
                @if let Some(h) = p["html"].as_str() { h3 { "HTML (source)" } pre { (h) } }
                @if p["body"].is_object() { h3 { "JSON body" } pre { (serde_json::to_string_pretty(&p["body"]).unwrap_or_default()) } }
            }
        }
        p { a href="/alerts#receivers" { "Back to receivers" } }
    };
    super::page(layout(&state, "Template preview", "/alerts", false, body))
}
