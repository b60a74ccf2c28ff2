//! The bodies of mlmon's fuzz targets, one function per target. Each takes
//! the fuzzer's bytes and panics only on a bug: a crash, a broken round
//! trip, or a server error for input that is merely bad. `fuzz_targets/`
//! wraps them for cargo-fuzz; `tests/fuzz_regressions.rs` compiles this
//! file too and replays `fuzz/regressions/<target>/*` on stable.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use mlmon::expfmt::{self, Format};
use mlmon::model::{Labels, Sample};
use mlmon::tsdb::{chunk, Storage, StorageOptions};

/// Prometheus text 0.0.4 and OpenMetrics: what parses must write back
/// into text that parses again.
pub fn text(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Text, Format::OpenMetrics] {
        if let Ok(families) = expfmt::parse(s, format) {
            let mut out = String::new();
            expfmt::write_families(&mut out, &families, format);
            if format == Format::OpenMetrics {
                out.push_str("# EOF\n"); // the exposition endpoint's ending
            }
            if let Err(e) = expfmt::parse(&out, format) {
                panic!("{format:?}: written text does not parse again: {e:?}\n{out}");
            }
        }
    }
}

/// Remote write: snappy, then the protobuf `WriteRequest`.
pub fn remote_write(data: &[u8]) {
    use mlmon::ingest::remote_write::{decompress, label_pairs, parse, SeriesLabels};
    let labels = |buf: &[u8]| {
        for (l, _) in parse(buf).map(|r| r.series).unwrap_or_default() {
            if let SeriesLabels::Encoded(b) = l {
                let _ = label_pairs(b);
            }
        }
    };
    labels(data);
    if let Ok(raw) = decompress(data, 1 << 20) {
        labels(&raw);
    }
}

/// PromQL parsing; what parses is printed and parsed again.
pub fn promql_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = mlmon::promql::parse(s) {
        let _ = e.prettify();
        let _ = mlmon::promql::parse(&e.to_string());
    }
}

/// Start of the fixed store's data, in Unix milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// A small store shared by the targets that need one: a few series of
/// counters and gauges (with a stale marker and a NaN) over one hour.
pub fn store() -> &'static Arc<Storage> {
    static STORE: OnceLock<(tempfile::TempDir, Arc<Storage>)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let s = Storage::open(StorageOptions::new(dir.path())).expect("a new store opens");
            let mut app = s.appender();
            for (i, job) in ["api", "db", "ml"].iter().enumerate() {
                for inst in 0..3 {
                    let instance = format!("host-{inst}:9100");
                    let series = |name: &str| {
                        Labels::new([("__name__", name), ("job", job), ("instance", &instance)])
                            .expect("valid labels")
                    };
                    let (counter, gauge) = (series("requests_total"), series("temperature"));
                    let mut c = 0.0;
                    let (mut cs, mut gs) = (Vec::new(), Vec::new());
                    for k in 0..240i64 {
                        let t = T0 + k * 15_000;
                        c += (k % 7 + i as i64) as f64;
                        cs.push(Sample { t, v: c });
                        let v = match k {
                            100 => mlmon::model::stale_nan(),
                            150 => f64::NAN,
                            _ => 20.0 + ((k * (inst + 1)) % 13) as f64 / 2.0,
                        };
                        gs.push(Sample { t, v });
                    }
                    app.append_series(counter, cs);
                    app.append_series(gauge, gs);
                }
            }
            app.commit().expect("the fixture commits");
            (dir, s)
        })
        .1
}

/// Options that keep one evaluation small: a fuzz input must not be able
/// to take more than a second.
fn query_options() -> mlmon::promql::QueryOptions {
    mlmon::promql::QueryOptions {
        max_samples: 1_000_000,
        timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    }
}

/// PromQL parsed and evaluated, as an instant or a range query over the
/// fixed store: the first byte picks the kind, time and step.
pub fn promql_eval(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(q) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = query_options();
    let t = T0 + (pick as i64 % 16) * 300_000;
    if pick & 0x80 == 0 {
        let _ = mlmon::promql::instant(store().as_ref(), q, t, &opts);
    } else {
        let step = [1_000, 15_000, 60_000, 3_600_000][(pick as usize >> 4) & 3];
        let _ = mlmon::promql::range(store().as_ref(), q, T0, t, step, &opts);
    }
}

/// The chunk codec: any bytes decode or fail cleanly; samples made from
/// the bytes encode and decode back bit for bit (NaN payloads, stale
/// markers, -0.0 and all).
pub fn chunk(data: &[u8]) {
    let _ = chunk::meta(data);
    let _ = chunk::decode(data);
    let mut samples = Vec::new();
    let mut t: i64 = i64::from_le_bytes(
        data.get(..8)
            .unwrap_or(&[0; 8])
            .try_into()
            .unwrap_or([0; 8]),
    ) >> 8;
    for rec in data.get(8..).unwrap_or(&[]).chunks_exact(10) {
        let delta = u16::from_le_bytes([rec[0], rec[1]]) as i64;
        // Small deltas and decimal-looking values most of the time, as
        // real data has, so every encoding is reached.
        let bits = u64::from_le_bytes(rec[2..10].try_into().unwrap_or([0; 8]));
        let v = match rec[0] & 3 {
            0 => (bits % 100_000) as f64 / 100.0,
            1 => (bits as i64 % 1_000_000) as f64,
            _ => f64::from_bits(bits),
        };
        t = match t.checked_add(delta + 1) {
            Some(t) => t,
            None => break,
        };
        samples.push(Sample { t, v });
    }
    if samples.is_empty() {
        return;
    }
    let encoded = chunk::encode(&samples);
    let decoded = chunk::decode(&encoded).expect("an encoded chunk decodes");
    assert_eq!(decoded.len(), samples.len());
    for (a, b) in samples.iter().zip(&decoded) {
        assert_eq!(a.t, b.t);
        assert_eq!(a.v.to_bits(), b.v.to_bits(), "value at {}", a.t);
    }
}

/// `mlmon.yml` (with the prometheus.yml sections it takes).
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mlmon::config::Config::from_yaml(s, "fuzz.yml", None);
    }
}

/// A Prometheus rule file, parsed and validated as `mlmon check` does.
pub fn rules(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mlmon::rules::parse_file(s, "fuzz.yml");
    }
}

/// `alertmanager.yml`.
pub fn alertmanager(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ =
            mlmon::notify::AmConfig::parse(s, "fuzz.yml", 0, std::path::Path::new("/nonexistent"));
    }
}

/// Go templates, as rule annotations and as notification templates.
pub fn template(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let labels: BTreeMap<String, String> = [
        ("alertname".to_string(), "HighCPU".to_string()),
        ("instance".to_string(), "host-1:9100".to_string()),
    ]
    .into();
    let ext = BTreeMap::new();
    let _ = mlmon::rules::template::expand(
        "fuzz",
        s,
        &mlmon::rules::template::TemplateData {
            labels: &labels,
            value: 0.5,
            external_labels: &ext,
        },
    );
    let alert = mlmon::notify::AlertData {
        status: "firing",
        labels: labels.clone(),
        annotations: [("summary".to_string(), "CPU is high".to_string())].into(),
        starts_at_ms: T0,
        ends_at_ms: None,
        generator_url: "http://localhost:8001/graph".into(),
        fingerprint: "0123456789abcdef".into(),
    };
    let data = mlmon::notify::Data::new("team", labels, vec![alert], "http://localhost:8001");
    let _ = mlmon::notify::Library::default().render("fuzz", s, &data);
}

/// Requests the fuzzer can make: method, path (the input's first line is
/// appended where the path ends in `=` or `/`), content type.
const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/api/v2/alerts", "application/json"),
    ("POST", "/api/v2/silences", "application/json"),
    ("POST", "/api/v1/runs", "application/json"),
    ("POST", "/api/v1/templates/preview", "application/json"),
    ("POST", "/api/v1/write", "application/x-protobuf"),
    ("PUT", "/metrics/job/", "text/plain"),
    ("POST", "/metrics/job/", "application/openmetrics-text"),
    ("DELETE", "/metrics/job/", ""),
    ("POST", "/api/v1/query", "application/x-www-form-urlencoded"),
    (
        "POST",
        "/api/v1/query_range",
        "application/x-www-form-urlencoded",
    ),
    (
        "POST",
        "/api/v1/series",
        "application/x-www-form-urlencoded",
    ),
    (
        "POST",
        "/api/v1/format_query",
        "application/x-www-form-urlencoded",
    ),
    ("GET", "/graph?expr=", ""),
    ("GET", "/federate?match[]=", ""),
    ("GET", "/api/v1/label/", ""),
    ("GET", "/api/v1/alerts/history?", ""),
    ("GET", "/runs/", ""),
    ("GET", "/api/v2/silence/", ""),
    ("DELETE", "/api/v2/silence/", ""),
];

/// The whole HTTP surface in process: any request gets an answer below
/// 500 (or 503 for a query stopped by its deadline), never a panic.
pub fn api(data: &[u8]) {
    use tower::ServiceExt;
    static SERVER: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    let (rt, router) = SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let storage = store().clone();
        let mut config = mlmon::config::Config::defaults();
        config.query.timeout = mlmon::model::PromDuration(500);
        config.artifacts.dir = "/nonexistent".into();
        let push = Arc::new(
            mlmon::ingest::push::PushGroups::load(config.push.clone(), &storage)
                .expect("push groups load"),
        );
        let artifacts = Arc::new(
            mlmon::ingest::artifacts::Artifacts::load(config.artifacts.clone(), &storage)
                .expect("runs load"),
        );
        let settings = mlmon::web::WebSettings::new(&config);
        let c = mlmon::web::Components::store_only(storage, push, artifacts, &settings);
        let state = mlmon::web::AppState::new(c, settings, &config.web.auth);
        (rt, mlmon::web::router(state))
    });
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (method, path, content_type) = ROUTES[pick as usize % ROUTES.len()];
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut uri = path.to_string();
    if path.ends_with(['=', '/', '?']) {
        uri.push_str(&String::from_utf8_lossy(line));
    }
    let body = if content_type == "application/x-protobuf" {
        snap::raw::Encoder::new()
            .compress_vec(body)
            .unwrap_or_default()
    } else {
        body.to_vec()
    };
    let Ok(req) = axum::http::Request::builder()
        .method(method)
        .uri(&uri)
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
    else {
        return;
    };
    let resp = rt
        .block_on(router.clone().oneshot(req))
        .expect("the router answers");
    let status = resp.status().as_u16();
    assert!(
        status < 500 || status == 503,
        "{method} {uri}: status {status}"
    );
}
