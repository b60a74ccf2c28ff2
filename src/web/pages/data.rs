//! The data side of runs: a run's drift against its reference (most
//! severe first) and its data profile with each numeric column's
//! distribution drawn over the reference's, the form that pins a run as
//! its pipeline's baseline, and `/runs/compare?a=&b=`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};

use super::*;
use crate::ingest::profile::{self, Column, ColumnDrift, Kind, Profile};
use crate::ingest::runs::{self, Run};
use crate::model::percent_encode;

fn psi_class(psi: Option<f64>) -> &'static str {
    match psi {
        Some(p) if p > 0.25 => "crit",
        Some(p) if p > 0.1 => "warn",
        Some(_) => "good",
        None => "muted",
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:.3}"))
}

/// A column's distribution as a small SVG: the 20 ranges between its
/// quantiles (equal shares of the values) drawn on one axis, the current
/// run filled and the reference outlined.
fn spark(current: &Column, reference: Option<&Column>) -> Markup {
    let q = &current.quantiles;
    if q.len() < 2 {
        return html! {};
    }
    let r = reference.map(|c| c.quantiles.as_slice()).unwrap_or(&[]);
    let lo = q.iter().chain(r).copied().fold(f64::INFINITY, f64::min);
    let hi = q.iter().chain(r).copied().fold(f64::NEG_INFINITY, f64::max);
    let (w, h) = (160.0, 28.0);
    let x = |v: f64| {
        if hi > lo {
            (v - lo) / (hi - lo) * w
        } else {
            w / 2.0
        }
    };
    // Density of each quantile range: an equal share over its width.
    let bars = |qs: &[f64]| -> Vec<(f64, f64, f64)> {
        let widths: Vec<f64> = qs
            .windows(2)
            .map(|p| (x(p[1]) - x(p[0])).max(0.5))
            .collect();
        let max_d = widths.iter().map(|wd| 1.0 / wd).fold(0.0, f64::max);
        qs.windows(2)
            .zip(&widths)
            .map(|(p, wd)| (x(p[0]), *wd, (1.0 / wd) / max_d * (h - 2.0)))
            .collect()
    };
    let mut svg = format!(
        r#"<svg class="spark" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="distribution">"#
    );
    for (x0, wd, bh) in bars(q) {
        svg.push_str(&format!(
            r#"<rect x="{x0:.1}" y="{:.1}" width="{wd:.1}" height="{bh:.1}" fill="currentColor" opacity="0.45"/>"#,
            h - bh
        ));
    }
    if r.len() >= 2 {
        for (x0, wd, bh) in bars(r) {
            svg.push_str(&format!(
                r#"<rect x="{x0:.1}" y="{:.1}" width="{wd:.1}" height="{bh:.1}" fill="none" stroke="currentColor" stroke-width="0.8"/>"#,
                h - bh
            ));
        }
    }
    svg.push_str("</svg>");
    // Numbers only, formatted here: nothing from the data is in the text.
    PreEscaped(svg)
}

/// The drift table of one dataset.
fn drift_table(cols: &[ColumnDrift]) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr { th { "Column" } th { "PSI" } th { "KS" } th { "Missing" } th { "Δ missing" } th { "Categories" } th { "Schema" } } }
            tbody { @for c in cols {
                tr {
                    td { (c.column) }
                    td.(psi_class(c.psi)) { (opt(c.psi)) }
                    td { (opt(c.ks)) }
                    td { (format!("{:.1} %", c.missing_ratio * 100.0)) }
                    td { (format!("{:+.1} %", c.missing_ratio_change * 100.0)) }
                    td {
                        @if !c.new_categories.is_empty() { "new: " (c.new_categories.join(", ")) " " }
                        @if !c.missing_categories.is_empty() { "gone: " (c.missing_categories.join(", ")) }
                    }
                    @match &c.schema_change { Some(s) => td.crit { (s) }, None => td.muted { "—" } }
                }
            } }
        } }
    }
}

/// The profile table of one dataset, with the reference's columns to
/// draw against.
fn profile_table(p: &Profile, reference: Option<&Profile>) -> Markup {
    let find = |name: &str| reference.and_then(|r| r.columns.iter().find(|c| c.name == name));
    html! {
        p.muted {
            (p.file) ": " (p.rows) " rows" @if !p.exact { " (statistics from a sample)" }
            @if p.columns_left_out > 0 { " · " (p.columns_left_out) " columns past the first " (profile::MAX_COLUMNS) " not profiled" }
        }
        div.table-wrap { table {
            thead { tr { th { "Column" } th { "Type" } th { "Missing" } th { "Min" } th { "Mean" } th { "Max" } th { "Std" } th { "Median" } th { "Distribution / top values" } } }
            tbody { @for c in &p.columns {
                tr {
                    td { (c.name) }
                    td { @match c.kind { Kind::Numeric => "numeric", Kind::Categorical => "categorical" } }
                    td { (format!("{:.1} %", c.missing_ratio * 100.0)) }
                    td { (opt(c.min)) } td { (opt(c.mean)) } td { (opt(c.max)) } td { (opt(c.std)) }
                    td { (opt(c.quantiles.get(10).copied())) }
                    td {
                        @if c.kind == Kind::Numeric { (spark(c, find(&c.name))) }
                        @else {
                            (c.top.iter().map(|(v, n)| format!("{v} ({n})")).collect::<Vec<_>>().join(", "))
                            @if c.other > 0 { ", other (" (c.other) ")" }
                        }
                    }
                }
            } }
        } }
    }
}

/// The run page's data sections: drift first (what changed), then the
/// profile, and the baseline form.
pub(super) fn sections(r: &Run, reference: Option<&Run>, is_baseline: bool, csrf: &Csrf) -> Markup {
    html! {
        h2 { "Data drift" }
        @match &r.reference {
            None => p.muted { "No reference run to compare with (the first profiled run of the pipeline, or its data files were not found)." },
            Some(id) => p {
                "Against run " a href=(format!("/runs/{}", percent_encode(id))) { (id) }
                @if let Some(d) = r.r2_delta { " · R² " span.(if d < -0.05 { "crit" } else { "good" }) { (format!("{d:+.3}")) } " against it" }
                " · " a href=(format!("/runs/compare?a={}&b={}", percent_encode(id), percent_encode(&r.id))) { "compare the two runs" }
            },
        }
        @for (dataset, cols) in &r.drift {
            h3 { (dataset) }
            (drift_table(cols))
        }
        h2 { "Data profile" }
        @if r.profile.is_empty() { p.muted { "No data files were profiled for this run (artifacts.profile)." } }
        @for (dataset, p) in &r.profile {
            h3 { (dataset) }
            (profile_table(p, reference.and_then(|x| x.profile.get(dataset))))
        }
        @if !r.profile.is_empty() {
            @if is_baseline { p { span.badge.good { "baseline" } " later runs of " (r.pipeline) " are compared with this one" } }
            @else {
                form method="post" action=(format!("/runs/{}/baseline", percent_encode(&r.id))) {
                    (csrf.field())
                    button type="submit" { "Pin as the baseline of " (r.pipeline) }
                }
            }
        }
    }
}

/// `POST /runs/<id>/baseline` (the run page's form).
pub async fn pin_baseline(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    csrf: Csrf,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf.accepts(&form) {
        return form_expired(&state);
    }
    let (storage, target) = (state.storage.clone(), id.clone());
    let done = tokio::task::spawn_blocking(move || runs::pin_baseline(&storage, &target)).await;
    match done {
        Ok(Ok(_)) => Redirect::to(&format!("/runs/{}", percent_encode(&id))).into_response(),
        Ok(Err(runs::PinError::NotFound)) => problem(
            &state,
            StatusCode::NOT_FOUND,
            "Run not found",
            "No run has this id.",
        ),
        Ok(Err(e @ runs::PinError::NotKept(_))) => problem(
            &state,
            StatusCode::BAD_REQUEST,
            "Not pinned",
            &e.to_string(),
        ),
        Ok(Err(runs::PinError::Storage(e))) => {
            tracing::error!(message = "Pinning a baseline failed", error = %e);
            internal(&state)
        }
        Err(e) => {
            tracing::error!(message = "Pinning a baseline failed", error = %e);
            internal(&state)
        }
    }
}

fn internal(state: &AppState) -> Response {
    problem(
        state,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Not pinned",
        "internal error; the details are in mlmon's log",
    )
}

/// `GET /runs/compare?a=ID&b=ID`: two runs side by side: metrics, stage
/// results, data profiles, and the drift of `b` against `a` (computed now
/// from their kept distributions).
pub async fn compare(State(state): State<AppState>, Query(p): QueryMap) -> Response {
    let (Some(a), Some(b)) = (p.get("a").cloned(), p.get("b").cloned()) else {
        return problem(
            &state,
            StatusCode::BAD_REQUEST,
            "Two runs needed",
            "Give them as ?a=RUN&b=RUN (run ids from /runs).",
        );
    };
    let storage = state.storage.clone();
    let (ra, rb) = (a.clone(), b.clone());
    let found = tokio::task::spawn_blocking(move || {
        let all = runs::list(&storage).ok()?;
        let x = all.iter().find(|r| r.id == ra)?.clone();
        let y = all.iter().find(|r| r.id == rb)?.clone();
        let drift = match (
            runs::load_data(&storage, &ra),
            runs::load_data(&storage, &rb),
        ) {
            (Ok(Some(da)), Ok(Some(db))) => db
                .iter()
                .filter_map(|(ds, d)| Some((ds.clone(), profile::drift(da.get(ds)?, d))))
                .collect(),
            _ => y.drift.clone(),
        };
        Some((x, y, drift))
    })
    .await
    .ok()
    .flatten();
    let Some((x, y, drift)) = found else {
        return problem(
            &state,
            StatusCode::NOT_FOUND,
            "Run not found",
            "One of the two runs does not exist.",
        );
    };
    let metrics: std::collections::BTreeSet<&String> =
        x.metrics.keys().chain(y.metrics.keys()).collect();
    let datasets: std::collections::BTreeSet<&String> =
        x.profile.keys().chain(y.profile.keys()).collect();
    let body = html! {
        h1 { "Compare runs" }
        div.table-wrap { table {
            thead { tr { th {} th { a href=(format!("/runs/{}", percent_encode(&x.id))) { (x.id) } } th { a href=(format!("/runs/{}", percent_encode(&y.id))) { (y.id) } } } }
            tbody {
                tr { th { "Result" } td { @if x.success { "succeeded" } @else { "failed" } } td { @if y.success { "succeeded" } @else { "failed" } } }
                tr { th { "Finished" } td { (local_time(x.finished_ms)) } td { (local_time(y.finished_ms)) } }
                tr { th { "Duration" } td { (duration_text(x.duration_seconds())) } td { (duration_text(y.duration_seconds())) } }
                @for k in &metrics {
                    tr { th { (k) } td { (opt(x.metrics.get(*k).copied())) } td { (opt(y.metrics.get(*k).copied())) } }
                }
                @for (key, name) in super::overview::STAGES {
                    tr { th { (name) }
                        td { (x.stages.get(key).map_or("—".to_string(), |s| format!("{:?}", s.status).to_lowercase())) }
                        td { (y.stages.get(key).map_or("—".to_string(), |s| format!("{:?}", s.status).to_lowercase())) } }
                }
                @for ds in &datasets {
                    tr { th { (ds) " rows" } td { (x.profile.get(*ds).map_or("—".into(), |p| p.rows.to_string())) } td { (y.profile.get(*ds).map_or("—".into(), |p| p.rows.to_string())) } }
                }
            }
        } }
        h2 { "Drift of the second against the first" }
        @if drift.is_empty() { p.muted { "No data profiles to compare (their distributions are kept for the newest runs and baselines only)." } }
        @for (dataset, cols) in &drift {
            h3 { (dataset) }
            (drift_table(cols))
        }
        @for ds in &datasets {
            @if let Some(py) = y.profile.get(*ds) {
                h2 { "Profile of " (ds) " (second run, first run outlined)" }
                (profile_table(py, x.profile.get(*ds)))
            }
        }
    };
    super::page(layout(&state, "Compare runs", "/runs", false, body))
}

/// `GET /runs/latest?pipeline=NAME`: the pipeline's newest run page (the
/// link in the drift rules' annotations).
pub async fn latest(State(state): State<AppState>, Query(p): QueryMap) -> Response {
    let pipeline = p.get("pipeline").cloned();
    let storage = state.storage.clone();
    let newest = tokio::task::spawn_blocking(move || {
        runs::list(&storage)
            .ok()?
            .into_iter()
            .find(|r| pipeline.as_ref().is_none_or(|p| &r.pipeline == p))
    })
    .await
    .ok()
    .flatten();
    match newest {
        Some(r) => Redirect::to(&format!("/runs/{}", percent_encode(&r.id))).into_response(),
        None => problem(
            &state,
            StatusCode::NOT_FOUND,
            "No run",
            "This pipeline has no run yet.",
        ),
    }
}
