//! The dashboard: server-rendered pages (maud) with SVG charts
//! ([`super::chart`]) that replace Grafana and the original stack's Flask
//! pages. `overview` is `/`; `alerts` holds alerts, silences (with their
//! forms), history and receivers; `browse` the runs, rules, targets,
//! status and graph pages and the original stack's JSON endpoints. The CSS
//! and the few lines of JavaScript in `static/` are compiled in. Every
//! value shown goes through maud's escaping; forms that change state carry
//! a CSRF token (a cookie and a hidden field that must match) and need
//! authentication when it is configured.

mod alerts;
mod browse;
mod data;
mod overview;

pub use overview::render_overview;

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Local, TimeZone};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::chart::{self, Chart, Threshold, Unit};
use super::AppState;
use crate::model::{now_ms, Labels, Timestamp};

const CSS: &str = include_str!("../../../static/style.css");
const JS: &str = include_str!("../../../static/app.js");

/// The pages and their forms.
pub(super) fn routes(t: &mut super::Table) {
    use super::Access::{Read, Write};
    use axum::http::Method as M;
    t.add(Read, M::GET, "/", overview::page)
        .add(Read, M::GET, "/runs", browse::runs)
        .add(Read, M::GET, "/runs/compare", data::compare)
        .add(Read, M::GET, "/runs/latest", data::latest)
        .add(Read, M::GET, "/runs/{id}", browse::run)
        .add(Write, M::POST, "/runs/{id}/baseline", data::pin_baseline)
        .add(Read, M::GET, "/alerts", alerts::page)
        .add(
            Read,
            M::GET,
            "/alerts/receivers/{name}/preview",
            alerts::preview,
        )
        .add(Read, M::GET, "/rules", browse::rules)
        .add(Read, M::GET, "/targets", browse::targets)
        .add(Read, M::GET, "/status", browse::status)
        .add(Read, M::GET, "/graph", browse::graph)
        .add(Read, M::GET, "/api/dashboard", overview::json)
        .add(Read, M::GET, "/api/status", browse::status_json)
        .add(Read, M::GET, "/static/style.css", || async {
            asset(CSS, "text/css")
        })
        .add(Read, M::GET, "/static/app.js", || async {
            asset(JS, "text/javascript")
        })
        .add(Write, M::POST, "/alerts/silences", alerts::create_silence)
        .add(
            Write,
            M::POST,
            "/alerts/silences/{id}/expire",
            alerts::expire_silence,
        )
        .add(
            Write,
            M::POST,
            "/alerts/receivers/{name}/test",
            alerts::test_receiver,
        );
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "max-age=300".to_string()),
        ],
        body,
    )
        .into_response()
}

const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/runs", "Runs"),
    ("/alerts", "Alerts"),
    ("/rules", "Rules"),
    ("/targets", "Targets"),
    ("/graph", "Graph"),
    ("/status", "Status"),
];

/// A whole page: `title` names it in the tab, `active` marks the nav entry.
fn layout(state: &AppState, title: &str, active: &str, refresh: bool, content: Markup) -> Markup {
    let every = if refresh {
        state.settings.get().refresh_secs
    } else {
        0
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mlmon" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body data-refresh=(every) {
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "mlmon" }
                        @for (href, name) in NAV {
                            @if href == active {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                }
                main { (content) }
                footer {
                    "mlmon " (env!("CARGO_PKG_VERSION")) " · page rendered " (local_time(now_ms()))
                    @if every > 0 { " · refreshes every " (every) " s" }
                }
            }
        }
    }
}

/// An HTML response.
fn page(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A page for a request that went wrong (bad parameter, missing run).
/// A form whose CSRF token does not match the browser's (403).
fn form_expired(state: &AppState) -> Response {
    problem(
        state,
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form's security token does not match your browser's; reload the page and submit it again.",
    )
}

fn problem(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    let body = layout(
        state,
        title,
        "",
        false,
        html! { h1 { (title) } p.error role="alert" { (message) } },
    );
    (status, page(body)).into_response()
}

fn local_time(ms: Timestamp) -> String {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// "12 minutes ago", "in 3 hours".
fn ago(ms: Timestamp, now: Timestamp) -> String {
    let d = (now - ms) / 1000;
    let (n, future) = if d < 0 { (-d, true) } else { (d, false) };
    let text = if n < 45 {
        return if future {
            "in a few seconds".into()
        } else {
            "just now".into()
        };
    } else if n < 90 {
        "1 minute".to_string()
    } else if n < 3600 {
        format!("{} minutes", (n + 30) / 60)
    } else if n < 5400 {
        "1 hour".to_string()
    } else if n < 86_400 {
        format!("{} hours", (n + 1800) / 3600)
    } else if n < 2 * 86_400 {
        "1 day".to_string()
    } else {
        format!("{} days", n / 86_400)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A time with its distance from now, the exact time on hover.
fn when(ms: Timestamp, now: Timestamp) -> Markup {
    html! { time datetime=(crate::model::rfc3339(ms)) title=(local_time(ms)) { (ago(ms, now)) } }
}

fn duration_text(secs: f64) -> String {
    if !secs.is_finite() {
        return "—".into();
    }
    let s = secs.round() as i64;
    if s < 60 {
        format!("{secs:.1} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a != 0.0 && !(0.001..1e6).contains(&a) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Labels as `name="value"` chips.
fn labels_markup<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Markup {
    html! {
        span.labels {
            @for (n, v) in labels {
                code { (n) "=\"" (v) "\"" }
            }
        }
    }
}

fn map_labels(m: &BTreeMap<String, String>) -> Markup {
    labels_markup(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The time range of a page: `?range=1h|6h|24h|7d`, or `?start=&end=`
/// (datetime-local or RFC 3339 or Unix seconds).
#[derive(Debug, Clone)]
struct Range {
    start: Timestamp,
    end: Timestamp,
    step: i64,
    /// The preset, if one was picked.
    preset: Option<&'static str>,
}

const PRESETS: [(&str, i64); 4] = [
    ("1h", 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
];

/// A time as the query API takes it (Unix seconds, RFC 3339) or as a
/// `datetime-local` field sends it, in local time.
fn parse_instant(name: &str, s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = super::api::parse_time(name, s) {
        return Ok(t);
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, f) {
            if let Some(d) = Local.from_local_datetime(&n).earliest() {
                return Ok(d.timestamp_millis());
            }
        }
    }
    Err(format!(
        "{name}: {s:?} is not a time (use 2026-11-27T14:00)"
    ))
}

impl Range {
    fn from_params(
        p: &BTreeMap<String, String>,
        default: &'static str,
        now: Timestamp,
    ) -> Result<Range, String> {
        let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let (start, end, preset) = match (get("start"), get("end")) {
            (Some(s), e) => {
                let start = parse_instant("start", s)?;
                let end = match e {
                    Some(e) => parse_instant("end", e)?,
                    None => now,
                };
                if end <= start {
                    return Err("end must be after start".into());
                }
                (start, end, None)
            }
            _ => {
                let name = get("range").unwrap_or(default);
                let (preset, span) = PRESETS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .copied()
                    .or_else(|| {
                        crate::model::parse_duration(name)
                            .ok()
                            .filter(|d| d.millis() > 0)
                            .map(|d| ("", d.millis()))
                    })
                    .ok_or_else(|| {
                        format!("range: {name:?} is not a duration (1h, 6h, 24h, 7d)")
                    })?;
                let preset = PRESETS.iter().map(|(n, _)| *n).find(|n| *n == preset);
                (now - span, now, preset)
            }
        };
        if end - start > 400 * 86_400_000 {
            return Err("the range may span at most 400 days".into());
        }
        // About 300 points across, on a whole number of seconds.
        let step = (((end - start) / 300).max(1000) / 1000) * 1000;
        Ok(Range {
            start,
            end,
            step,
            preset,
        })
    }

    /// A rate window that covers at least two steps.
    fn window(&self) -> String {
        format!("{}s", (self.step * 2 / 1000).max(300))
    }
}

/// The range picker: presets and a custom start/end form.
fn range_picker(path: &str, r: &Range, extra: &[(&str, &str)]) -> Markup {
    let keep: String = extra
        .iter()
        .map(|(k, v)| format!("&{k}={}", crate::model::percent_encode(v)))
        .collect();
    let fmt = |ms: Timestamp| {
        Local
            .timestamp_millis_opt(ms)
            .single()
            .map(|d| d.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    html! {
        div.ranges role="group" aria-label="Time range" {
            @for (name, _) in PRESETS {
                @if r.preset == Some(name) {
                    a href={ (path) "?range=" (name) (keep) } aria-current="true" { (name) }
                } @else {
                    a href={ (path) "?range=" (name) (keep) } { (name) }
                }
            }
            details {
                summary { "Custom" }
                form method="get" action=(path) {
                    @for (k, v) in extra { input type="hidden" name=(k) value=(v); }
                    div.row {
                        label { "From" input type="datetime-local" name="start" value=(fmt(r.start)); }
                        label { "To" input type="datetime-local" name="end" value=(fmt(r.end)); }
                        button type="submit" { "Show" }
                    }
                }
            }
        }
    }
}

/// Runs a range query; each series named by `name(labels)`. An error
/// becomes an empty result (the chart says "no data").
fn range_series(
    state: &AppState,
    expr: &str,
    r: &Range,
    name: &dyn Fn(&Labels) -> String,
) -> Result<chart::SeriesSet, String> {
    let series = crate::promql::range(
        &*state.storage,
        expr,
        r.start,
        r.end,
        r.step,
        &state.settings.get().query,
    )
    .map_err(|e| e.to_string())?;
    Ok(series
        .into_iter()
        .map(|s| {
            (
                name(&s.labels),
                s.samples.iter().map(|p| (p.t, p.v)).collect(),
            )
        })
        .collect())
}

/// The latest value of each series of an instant query.
fn instant(state: &AppState, expr: &str) -> Vec<(Labels, f64)> {
    crate::promql::instant_vector(&*state.storage, expr, now_ms(), &state.settings.get().query)
        .unwrap_or_default()
}

/// Chart sizes in SVG units: wide for a full-width chart, else for a grid
/// panel (the SVG scales to its box, so text keeps a readable size).
const WIDE: (u32, u32) = (960, 260);
const PANEL: (u32, u32) = (460, 250);

/// A chart with its caption and HTML legend.
fn figure(title: &str, c: &Chart, (width, height): (u32, u32)) -> Markup {
    let has_data = c
        .series
        .iter()
        .any(|(_, p)| p.iter().any(|x| x.1.is_finite()));
    html! {
        figure {
            figcaption { (title) }
            @if has_data {
                (PreEscaped(chart::render(c, width, height)))
                ul.legend {
                    @for (i, (name, _)) in c.series.iter().enumerate() {
                        li { span.swatch style={ "background:" (chart::color_hex(i)) } {} (name) }
                    }
                    @for t in &c.thresholds {
                        li.(t.level) { "- - " (t.level) " at " (c.unit.format(t.value)) }
                    }
                }
            } @else {
                p.muted { "No data in this range." }
            }
        }
    }
}

fn chart_of(series: chart::SeriesSet, r: &Range, unit: Unit) -> Chart {
    Chart {
        unit,
        series,
        start_ms: r.start,
        end_ms: r.end,
        step_ms: r.step,
        thresholds: Vec::new(),
        y_range: None,
        points: false,
    }
}

fn threshold(value: f64, level: &'static str) -> Threshold {
    Threshold { value, level }
}

/// Query parameters as a map (the last of repeated names wins).
type QueryMap = Query<BTreeMap<String, String>>;

/// The CSRF token of a browser: the `mlmon_csrf` cookie, or a new one the
/// response sets. Forms carry it in a hidden field; a POST is accepted only
/// when both match.
#[derive(Debug, Clone)]
struct Csrf {
    token: String,
    is_new: bool,
}

const CSRF_COOKIE: &str = "mlmon_csrf";

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for Csrf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(
            match cookie(&parts.headers, CSRF_COOKIE).filter(|t| t.len() == 32) {
                Some(token) => Csrf {
                    token,
                    is_new: false,
                },
                None => Csrf {
                    token: crate::token::hex_token(),
                    is_new: true,
                },
            },
        )
    }
}

impl Csrf {
    fn field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.token); }
    }

    /// Sets the cookie on `resp` if it is new.
    fn apply(&self, mut resp: Response) -> Response {
        if self.is_new {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{CSRF_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                self.token
            )) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// Whether a submitted form carries this browser's token.
    fn accepts(&self, form: &[(String, String)]) -> bool {
        !self.is_new
            && form.iter().any(|(k, v)| {
                k == "csrf"
                    && crate::web::auth::constant_time_eq(v.as_bytes(), self.token.as_bytes())
            })
    }
}

/// A redirect after a form (303, so the browser GETs the page).
fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}
