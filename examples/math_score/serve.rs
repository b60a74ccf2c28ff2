//! The prediction API: `POST /api/predict`, `GET /api/health`,
//! `GET /api/model-info`, a form at `/`, and `/metrics` for mlmon to
//! scrape (requests by route and status, latency, predictions, and a drift
//! score per numeric input: the population stability index of the last
//! requests against the training distribution stored with the model).
//! Input is validated strictly (422 with the field and the reason) and
//! each client is rate limited. A model the pipeline rewrites is picked up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::data::{Student, EDUCATION, GENDERS, GROUPS, LUNCH, PREP};
use crate::model::{Model, NUMERIC};

pub struct Options {
    pub artifacts: PathBuf,
    pub listen: SocketAddr,
    /// Requests per second per client (burst: twice that).
    pub rate_limit: f64,
    /// Predictions the drift score looks at.
    pub drift_window: usize,
    /// Age after which the model counts as stale, in seconds.
    pub max_model_age: f64,
}

const LATENCY_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5];
const SCORE_BUCKETS: [f64; 10] = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0];

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, c) in bounds.iter().zip(self.buckets.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in bounds.iter().zip(&self.buckets) {
            out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}\n"));
        }
        out.push_str(&format!(
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n",
            self.count
        ));
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!(
            "{name}_sum{braces} {}\n{name}_count{braces} {}\n",
            self.sum, self.count
        ));
    }
}

struct Loaded {
    model: Model,
    path: PathBuf,
    modified: SystemTime,
    checked: Instant,
}

#[derive(Default)]
struct Stats {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    predictions: Histogram,
    recent: VecDeque<(f64, f64)>,
    rejected_rate_limit: u64,
    buckets: HashMap<std::net::IpAddr, (f64, Instant)>,
}

struct App {
    o: Options,
    model: Mutex<Option<Loaded>>,
    stats: Mutex<Stats>,
}

type Shared = Arc<App>;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl App {
    /// The current model, reloaded when the pipeline has written a new one
    /// (checked at most every two seconds).
    fn model(&self) -> Option<Model> {
        let mut m = self.model.lock().unwrap();
        let path = self.o.artifacts.join("model_trainer").join("model.json");
        let stale = m
            .as_ref()
            .is_none_or(|l| l.checked.elapsed() > Duration::from_secs(2));
        if stale {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let changed = match (&*m, modified) {
                (Some(l), Some(t)) => t != l.modified || l.path != path,
                (None, Some(_)) => true,
                _ => false,
            };
            if changed {
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str::<Model>(&t).map_err(|e| e.to_string()))
                {
                    Ok(model) => {
                        eprintln!(
                            "loaded model {} (trained {:.0})",
                            path.display(),
                            model.trained_at
                        );
                        *m = Some(Loaded {
                            model,
                            path: path.clone(),
                            modified: modified.unwrap_or(SystemTime::UNIX_EPOCH),
                            checked: Instant::now(),
                        });
                    }
                    Err(e) => eprintln!("cannot load {}: {e}", path.display()),
                }
            } else if let Some(l) = m.as_mut() {
                l.checked = Instant::now();
            }
        }
        m.as_ref().map(|l| l.model.clone())
    }
}

/// A field-level problem with a request.
fn problem(field: &str, reason: impl Into<String>) -> Value {
    json!({"field": field, "reason": reason.into()})
}

/// Checks a prediction request; every problem, or the student.
fn parse_input(body: &Value) -> Result<Student, Vec<Value>> {
    let Some(o) = body.as_object() else {
        return Err(vec![problem("body", "must be a JSON object")]);
    };
    let mut problems = Vec::new();
    let known = [
        "gender",
        "race_ethnicity",
        "parental_level_of_education",
        "lunch",
        "test_preparation_course",
        "reading_score",
        "writing_score",
    ];
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            problems.push(problem(k, "unknown field"));
        }
    }
    let mut cat = |k: &str, allowed: &[&str]| -> String {
        match o.get(k) {
            None => {
                problems.push(problem(k, "missing"));
                String::new()
            }
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => s.clone(),
            Some(Value::String(s)) => {
                problems.push(problem(
                    k,
                    format!("unknown category {s:?}; one of {}", allowed.join(", ")),
                ));
                String::new()
            }
            Some(other) => {
                problems.push(problem(k, format!("must be a string, not {other}")));
                String::new()
            }
        }
    };
    let gender = cat("gender", &GENDERS);
    let group = cat("race_ethnicity", &GROUPS);
    let education = cat("parental_level_of_education", &EDUCATION);
    let lunch = cat("lunch", &LUNCH);
    let prep = cat("test_preparation_course", &PREP);
    let mut score = |k: &str| -> f64 {
        match o.get(k) {
            None => {
                problems.push(problem(k, "missing"));
                f64::NAN
            }
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if (0.0..=100.0).contains(&v) => v,
                Some(v) => {
                    problems.push(problem(k, format!("{v} is outside 0–100")));
                    f64::NAN
                }
                None => {
                    problems.push(problem(k, "not a number"));
                    f64::NAN
                }
            },
            Some(other) => {
                problems.push(problem(k, format!("must be a number, not {other}")));
                f64::NAN
            }
        }
    };
    let reading = score("reading_score");
    let writing = score("writing_score");
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Student {
        gender,
        race_ethnicity: group,
        parental_level_of_education: education,
        lunch,
        test_preparation_course: prep,
        reading_score: reading,
        writing_score: writing,
        math_score: f64::NAN,
    })
}

fn unprocessable(problems: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"error": "invalid input", "details": problems})),
    )
        .into_response()
}

/// The prediction, or `None` while there is no model.
fn predict_one(app: &App, s: &Student) -> Option<f64> {
    let model = app.model()?;
    let score = model.predict(s).clamp(0.0, 100.0);
    let mut st = app.stats.lock().unwrap();
    st.predictions.observe(&SCORE_BUCKETS, score);
    st.recent.push_back((s.reading_score, s.writing_score));
    while st.recent.len() > app.o.drift_window {
        st.recent.pop_front();
    }
    Some(score)
}

async fn predict(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let value: Value = if form {
        let pairs: Vec<(String, String)> = match serde_urlencoded_pairs(&body) {
            Ok(p) => p,
            Err(e) => return unprocessable(vec![problem("body", e)]),
        };
        let mut m = Map::new();
        for (k, v) in pairs {
            let v = if k.ends_with("_score") {
                v.parse::<f64>()
                    .map(|f| json!(f))
                    .unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            m.insert(k, v);
        }
        Value::Object(m)
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return unprocessable(vec![problem("body", format!("not JSON: {e}"))]),
        }
    };
    let student = match parse_input(&value) {
        Ok(s) => s,
        Err(p) => return unprocessable(p),
    };
    match predict_one(&app, &student) {
        Some(score) if form => Html(page(Some(score), &value)).into_response(),
        Some(score) => Json(json!({"math_score": (score * 100.0).round() / 100.0})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "no model yet: run the pipeline first"})),
        )
            .into_response(),
    }
}

/// `a=b&c=d` (the form at `/`).
fn serde_urlencoded_pairs(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let decode = |s: &str| -> Result<String, String> {
        let s = s.replace('+', " ");
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = s.get(i + 1..i + 3).ok_or("bad escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad escape")?);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

async fn health(State(app): State<Shared>) -> Response {
    match app.model() {
        Some(m) => Json(json!({
            "status": "healthy",
            "model_loaded": true,
            "model_trained_at": m.trained_at,
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "model_loaded": false})),
        )
            .into_response(),
    }
}

async fn model_info(State(app): State<Shared>) -> Response {
    let Some(m) = app.model() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "no model yet"})),
        )
            .into_response();
    };
    let report: Value = std::fs::read_to_string(
        app.o
            .artifacts
            .join("model_evaluation/evaluation_report.json"),
    )
    .ok()
    .and_then(|t| serde_json::from_str(&t).ok())
    .unwrap_or(Value::Null);
    Json(json!({
        "model_type": m.kind,
        "alpha": m.alpha,
        "l1_ratio": m.l1_ratio,
        "target": m.target,
        "features": m.features,
        "trained_at": m.trained_at,
        "training_rows": m.training_rows,
        "evaluation": report,
    }))
    .into_response()
}

fn page(result: Option<f64>, input: &Value) -> String {
    let get = |k: &str| {
        input
            .get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    let select = |name: &str, options: &[&str]| {
        maud::html! {
            label { (name) select name=(name) { @for o in options { option selected[get(name) == *o] { (o) } } } }
        }
    };
    maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1"; title { "Math score prediction" } }
            body style="font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem" {
                h1 { "Math score prediction" }
                form method="post" action="/api/predict" style="display:grid;gap:.5rem" {
                    (select("gender", &GENDERS))
                    (select("race_ethnicity", &GROUPS))
                    (select("parental_level_of_education", &EDUCATION))
                    (select("lunch", &LUNCH))
                    (select("test_preparation_course", &PREP))
                    label { "reading_score" input type="number" name="reading_score" min="0" max="100" required value=(get("reading_score")); }
                    label { "writing_score" input type="number" name="writing_score" min="0" max="100" required value=(get("writing_score")); }
                    button type="submit" { "Predict" }
                }
                @if let Some(r) = result { p { "Predicted math score: " strong { (format!("{r:.1}")) } } }
            }
        }
    }
    .into_string()
}

async fn index() -> Html<String> {
    Html(page(None, &Value::Null))
}

async fn metrics(State(app): State<Shared>) -> Response {
    let model = app.model();
    let st = app.stats.lock().unwrap();
    let mut out = String::new();
    out.push_str("# HELP http_requests_total Requests answered, by route and status.\n# TYPE http_requests_total counter\n");
    for ((route, status), n) in &st.requests {
        out.push_str(&format!(
            "http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP http_request_duration_seconds Time to answer, by route.\n# TYPE http_request_duration_seconds histogram\n");
    for (route, h) in &st.latency {
        h.write(
            &mut out,
            "http_request_duration_seconds",
            &format!("route=\"{route}\""),
            &LATENCY_BUCKETS,
        );
    }
    out.push_str("# HELP http_requests_rate_limited_total Requests refused by the per-client rate limit.\n# TYPE http_requests_rate_limited_total counter\n");
    out.push_str(&format!(
        "http_requests_rate_limited_total {}\n",
        st.rejected_rate_limit
    ));
    out.push_str("# HELP ml_prediction_math_score Predicted math scores.\n# TYPE ml_prediction_math_score histogram\n");
    let h = Histogram {
        buckets: if st.predictions.buckets.is_empty() {
            vec![0; SCORE_BUCKETS.len()]
        } else {
            st.predictions.buckets.clone()
        },
        sum: st.predictions.sum,
        count: st.predictions.count,
    };
    h.write(&mut out, "ml_prediction_math_score", "", &SCORE_BUCKETS);
    if let Some(m) = &model {
        out.push_str("# HELP ml_model_trained_timestamp_seconds When the served model was trained.\n# TYPE ml_model_trained_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "ml_model_trained_timestamp_seconds {}\n",
            m.trained_at
        ));
        out.push_str("# HELP ml_model_max_age_seconds Age after which the model counts as stale.\n# TYPE ml_model_max_age_seconds gauge\n");
        out.push_str(&format!(
            "ml_model_max_age_seconds {}\n",
            app.o.max_model_age
        ));
        if st.recent.len() >= 20 {
            out.push_str("# HELP ml_feature_drift_psi Population stability index of the last requests' input against the training distribution.\n# TYPE ml_feature_drift_psi gauge\n");
            for (i, f) in NUMERIC.iter().enumerate() {
                if let Some(bins) = m.training_distribution.get(*f) {
                    let values: Vec<f64> = st
                        .recent
                        .iter()
                        .map(|r| if i == 0 { r.0 } else { r.1 })
                        .collect();
                    out.push_str(&format!(
                        "ml_feature_drift_psi{{feature=\"{f}\"}} {}\n",
                        bins.psi(&values)
                    ));
                }
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Counts and times every request; refuses clients over their rate.
async fn observe(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let route = match req.uri().path() {
        p @ ("/" | "/api/predict" | "/api/health" | "/api/model-info" | "/metrics") => {
            p.to_string()
        }
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let allowed = route == "/metrics" || {
        let mut st = app.stats.lock().unwrap();
        let rate = app.o.rate_limit;
        let (tokens, last) = st
            .buckets
            .entry(peer.ip())
            .or_insert((rate * 2.0, Instant::now()));
        *tokens = (*tokens + last.elapsed().as_secs_f64() * rate).min(rate * 2.0);
        *last = Instant::now();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            st.rejected_rate_limit += 1;
            false
        }
    };
    let resp = if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            Json(json!({"error": "rate limit exceeded"})),
        )
            .into_response()
    };
    let mut st = app.stats.lock().unwrap();
    *st.requests
        .entry((route.clone(), resp.status().as_u16()))
        .or_default() += 1;
    st.latency
        .entry(route)
        .or_default()
        .observe(&LATENCY_BUCKETS, started.elapsed().as_secs_f64());
    resp
}

pub async fn run(o: Options) -> Result<(), String> {
    let listen = o.listen;
    let app = Arc::new(App {
        o,
        model: Mutex::new(None),
        stats: Mutex::new(Stats::default()),
    });
    if app.model().is_none() {
        eprintln!(
            "no model yet in {}; /api/health answers 503 until the pipeline writes one",
            app.o.artifacts.display()
        );
    }
    let router = Router::new()
        .route("/", get(index))
        .route("/api/predict", post(predict))
        .route("/api/health", get(health))
        .route("/api/model-info", get(model_info))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("serving on http://{listen} (started {:.0})", now_secs());
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}
