//! The HTTP API in process: the router over a real store in a temporary
//! directory, driven with `oneshot` requests (no sockets, no sleeps).
//! Covers remote write, push, the query endpoints, bad input and auth.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use mlmon::config::{AuthConfig, Config, PushConfig};
use mlmon::ingest::artifacts::Artifacts;
use mlmon::ingest::push::PushGroups;
use mlmon::ingest::remote_write;
use mlmon::model::{Labels, PromDuration, Sample};
use mlmon::tsdb::{Limits, Storage, StorageOptions};
use mlmon::web::{router, AppState, Components, WebSettings};
use prost::Message;
use serde_json::Value;
use tower::ServiceExt;

struct App {
    state: AppState,
    _dir: tempfile::TempDir,
}

struct Setup {
    max_series: usize,
    max_body: usize,
    listen: &'static str,
    auth: AuthConfig,
    push: Option<PushConfig>,
    query: Option<mlmon::promql::QueryOptions>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            max_series: 1_000_000,
            max_body: 1 << 20,
            listen: "127.0.0.1:8001",
            auth: AuthConfig::default(),
            push: None,
            query: None,
        }
    }
}

impl App {
    fn new() -> App {
        App::with(Setup::default())
    }

    fn with(s: Setup) -> App {
        let dir = tempfile::tempdir().unwrap();
        App::open(dir, s)
    }

    fn open(dir: tempfile::TempDir, s: Setup) -> App {
        let mut opts = StorageOptions::new(dir.path());
        opts.limits = Limits {
            max_series: s.max_series,
            ..Limits::default()
        };
        let storage = Storage::open(opts).unwrap();
        let config = Config::defaults();
        let push =
            Arc::new(PushGroups::load(s.push.unwrap_or(config.push.clone()), &storage).unwrap());
        let mut settings = WebSettings::new(&config);
        settings.listen = s.listen.parse().unwrap();
        settings.max_request_bytes = s.max_body;
        if let Some(q) = s.query {
            settings.query = q;
        }
        App {
            state: {
                let artifacts =
                    Arc::new(Artifacts::load(config.artifacts.clone(), &storage).unwrap());
                let c = Components::store_only(storage.clone(), push, artifacts, &settings);
                AppState::new(c, settings, &s.auth)
            },
            _dir: dir,
        }
    }

    /// Closes the store and opens everything again on the same directory.
    fn reopen(self) -> App {
        self.state.storage.close().unwrap();
        let App { state, _dir } = self;
        drop(state);
        App::open(_dir, Setup::default())
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn json(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn push(&self, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn write(&self, body: Vec<u8>) -> (StatusCode, String) {
        let req = Request::post("/api/v1/write")
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    fn series_count(&self) -> usize {
        self.state.storage.stats().series
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).unwrap()
}

/// The raw samples mlmon returns for a range-vector selector.
async fn raw(app: &App, selector: &str, at_ms: i64) -> Vec<(Value, Vec<(f64, String)>)> {
    let v = app
        .json(&format!(
            "/api/v1/query?query={}&time={}",
            enc(selector),
            at_ms as f64 / 1000.0
        ))
        .await;
    assert_eq!(v["data"]["resultType"], "matrix");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pts = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect();
            (r["metric"].clone(), pts)
        })
        .collect()
}

#[tokio::test]
async fn remote_write_lands_samples_that_query_range_returns_exactly() {
    let app = App::new();
    let t0 = 1_700_000_000_000i64;
    let mut series = Vec::new();
    for j in 0..3 {
        let l = labels(&[("__name__", "rw_test"), ("job", &format!("j{j}"))]);
        let samples: Vec<Sample> = (0..500)
            .map(|i| Sample {
                t: t0 + i * 15_000,
                v: if j == 0 {
                    i as f64 * 0.1 + 0.2
                } else {
                    (i * j) as f64 / 3.0
                },
            })
            .collect();
        series.push((l, samples));
    }
    let (status, body) = app.write(remote_write::encode(&series)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let end = t0 + 499 * 15_000;
    let v = app
        .json(&format!(
            "/api/v1/query_range?query=rw_test&start={}&end={}&step=15",
            t0 / 1000,
            end / 1000
        ))
        .await;
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 3);
    for (r, (l, samples)) in result.iter().zip(&series) {
        assert_eq!(r["metric"]["job"], l.get("job").unwrap());
        let values = r["values"].as_array().unwrap();
        assert_eq!(values.len(), samples.len());
        for (p, s) in values.iter().zip(samples) {
            assert_eq!(p[0].as_f64().unwrap(), s.t as f64 / 1000.0);
            assert_eq!(
                p[1].as_str().unwrap().parse::<f64>().unwrap().to_bits(),
                s.v.to_bits()
            );
        }
    }
    // The same data after a restart.
    let app = app.reopen();
    let after = raw(&app, "rw_test{job=\"j1\"}[2h]", end).await;
    assert_eq!(
        after[0].1.len(),
        481,
        "two hours at 15 s, both ends included"
    );
}

#[tokio::test]
async fn malformed_push_is_refused_with_its_line_and_stores_nothing() {
    let app = App::new();
    let (status, body) = app
        .push("PUT", "/metrics/job/j", "good 1\nbad{x=\"1\" 2\n")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("line 2"), "{body}");
    assert_eq!(app.series_count(), 0);
    let (status, body) = app
        .push("PUT", "/metrics/job/j", "good 1 1700000000000\n")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("timestamps"), "{body}");
    let (status, _) = app.push("PUT", "/metrics/job/j", "good 1\n").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_remote_write_bodies_are_refused_whole() {
    let app = App::with(Setup {
        max_body: 64 << 10,
        ..Setup::default()
    });
    let good = remote_write::encode(&[(
        labels(&[("__name__", "ok")]),
        vec![Sample { t: 1000, v: 1.0 }],
    )]);

    // Not snappy at all, and a truncated snappy body.
    let (status, body) = app.write(b"definitely not snappy".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("snappy"), "{body}");
    let (status, _) = app.write(good[..good.len() - 3].to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A timestamp sent as a double NaN (wire type 1) where int64 belongs.
    let mut sample = Vec::new();
    sample.extend_from_slice(&[0x09]); // field 1, fixed64: value
    sample.extend_from_slice(&1.0f64.to_le_bytes());
    sample.extend_from_slice(&[0x11]); // field 2, fixed64: timestamp as NaN
    sample.extend_from_slice(&f64::NAN.to_le_bytes());
    let label = remote_write::Label {
        name: "__name__".into(),
        value: "nan_ts".into(),
    }
    .encode_to_vec();
    let mut ts = vec![0x0a, label.len() as u8];
    ts.extend(label);
    ts.extend([0x12, sample.len() as u8]);
    ts.extend(sample);
    let mut req = vec![0x0a, ts.len() as u8];
    req.extend(ts);
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    let (status, text) = app.write(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("protobuf"), "{text}");

    // Invalid label names.
    let bad = remote_write::WriteRequest {
        timeseries: vec![
            remote_write::TimeSeries {
                labels: vec![remote_write::Label {
                    name: "__name__".into(),
                    value: "fine".into(),
                }],
                samples: vec![remote_write::ProtoSample {
                    value: 1.0,
                    timestamp: 5,
                }],
                histograms: vec![],
            },
            remote_write::TimeSeries {
                labels: vec![
                    remote_write::Label {
                        name: "__name__".into(),
                        value: "x".into(),
                    },
                    remote_write::Label {
                        name: "0bad".into(),
                        value: "y".into(),
                    },
                ],
                samples: vec![remote_write::ProtoSample {
                    value: 1.0,
                    timestamp: 5,
                }],
                histograms: vec![],
            },
        ],
        metadata: vec![],
    };
    let (status, text) = app
        .write(
            snap::raw::Encoder::new()
                .compress_vec(&bad.encode_to_vec())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("0bad"), "{text}");

    // A body over the limit, compressed and decompressed.
    let (status, _) = app.write(vec![0u8; 100 << 10]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let big: Vec<Sample> = (0..20_000).map(|i| Sample { t: i, v: 0.0 }).collect();
    let (status, text) = app
        .write(remote_write::encode(&[(
            labels(&[("__name__", "big")]),
            big,
        )]))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let (status, _) = app
        .push("PUT", "/metrics/job/j", &"x 1\n".repeat(20_000))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing of the above was stored, and the server still serves.
    assert_eq!(app.series_count(), 0);
    let (status, _) = app.write(good).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.series_count(), 1);
}

#[tokio::test]
async fn the_series_limit_refuses_a_batch_whole() {
    let app = App::with(Setup {
        max_series: 5_000,
        max_body: 32 << 20,
        ..Setup::default()
    });
    let batch: Vec<(Labels, Vec<Sample>)> = (0..10_000)
        .map(|i| {
            (
                labels(&[("__name__", "many"), ("i", &i.to_string())]),
                vec![Sample { t: 1000, v: 1.0 }],
            )
        })
        .collect();
    let (status, body) = app.write(remote_write::encode(&batch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("series limit"), "{body}");
    assert_eq!(app.series_count(), 0);
    let (status, _) = app.write(remote_write::encode(&batch[..4_000])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.series_count(), 4_000);
}

#[tokio::test]
async fn out_of_order_samples_are_refused() {
    let app = App::new();
    let l = labels(&[("__name__", "ooo")]);
    let (s, _) = app
        .write(remote_write::encode(&[(
            l.clone(),
            vec![Sample { t: 2000, v: 1.0 }],
        )]))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = app
        .write(remote_write::encode(&[(
            l,
            vec![Sample { t: 1000, v: 1.0 }],
        )]))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("out of order"), "{body}");
    assert!(body.contains("ooo"), "{body}");
}

/// A raw field of a `TimeSeries`: `Ok` a label (name, value), `Err` a
/// sample (t, v).
type Field<'a> = Result<(&'a [u8], &'a [u8]), (i64, f64)>;

/// A `TimeSeries` message from raw fields in the order given.
fn time_series(fields: &[Field]) -> Vec<u8> {
    let mut ts = Vec::new();
    for f in fields {
        let (key, msg) = match f {
            Ok((n, v)) => {
                let mut m = vec![0x0a, n.len() as u8];
                m.extend_from_slice(n);
                m.extend([0x12, v.len() as u8]);
                m.extend_from_slice(v);
                (0x0a, m)
            }
            Err((t, v)) => (
                0x12,
                remote_write::ProtoSample {
                    value: *v,
                    timestamp: *t,
                }
                .encode_to_vec(),
            ),
        };
        ts.extend([key, msg.len() as u8]);
        ts.extend(msg);
    }
    ts
}

fn write_request(series: &[Vec<u8>]) -> Vec<u8> {
    let mut req = Vec::new();
    for ts in series {
        req.push(0x0a);
        req.push(ts.len() as u8);
        req.extend_from_slice(ts);
    }
    snap::raw::Encoder::new().compress_vec(&req).unwrap()
}

#[tokio::test]
async fn range_functions_over_or_matchers_count_each_series_once() {
    // Computed ahead series by series, per matcher set: a series two sets
    // select is one series, as with the equivalent regex.
    let app = App::new();
    let batch: Vec<(Labels, Vec<Sample>)> = ["a", "b", "c"]
        .iter()
        .map(|job| {
            let samples = (0..120)
                .map(|i| Sample {
                    t: i * 15_000,
                    v: (i % 50) as f64,
                })
                .collect();
            (labels(&[("__name__", "orc"), ("job", job)]), samples)
        })
        .collect();
    assert_eq!(
        app.write(remote_write::encode(&batch)).await.0,
        StatusCode::NO_CONTENT
    );
    let range = |q: &str| {
        format!(
            "/api/v1/query_range?query={}&start=300&end=1800&step=60",
            enc(q)
        )
    };
    let or = app
        .json(&range(
            r#"sum(rate({__name__="orc", job="a" or __name__="orc", job=~"a|b"}[5m]))"#,
        ))
        .await;
    let regex = app.json(&range(r#"sum(rate(orc{job=~"a|b"}[5m]))"#)).await;
    assert_eq!(or["status"], "success", "{or}");
    assert_eq!(or["data"], regex["data"]);
    let values = or["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 26);
}

#[tokio::test]
async fn a_series_sent_in_different_encodings_is_one_series() {
    // Stored series are found by the bytes of their label fields once
    // seen; labels in another order, interleaved with samples or with an
    // empty label name the same series.
    let app = App::new();
    let (name, job): (&[u8], &[u8]) = (b"__name__", b"job");
    let bodies = [
        vec![time_series(&[
            Ok((name, b"enc")),
            Ok((job, b"a")),
            Err((1000, 1.0)),
        ])],
        vec![time_series(&[
            Ok((name, b"enc")),
            Ok((job, b"a")),
            Err((2000, 2.0)),
        ])],
        vec![time_series(&[
            Ok((job, b"a")),
            Ok((name, b"enc")),
            Err((3000, 3.0)),
        ])],
        vec![time_series(&[
            Ok((name, b"enc")),
            Err((4000, 4.0)),
            Ok((job, b"a")),
        ])],
        vec![
            time_series(&[
                Ok((name, b"enc")),
                Ok((job, b"a")),
                Ok((b"e", b"")),
                Err((5000, 5.0)),
            ]),
            time_series(&[Ok((name, b"enc")), Ok((job, b"b")), Err((5000, 50.0))]),
            time_series(&[Ok((name, b"enc")), Ok((job, b"a")), Err((6000, 6.0))]),
        ],
    ];
    for b in &bodies {
        let (status, text) = app.write(write_request(b)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    }
    let got = raw(&app, "enc[1h]", 7000).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let a = got.iter().find(|(m, _)| m["job"] == "a").unwrap();
    let values: Vec<f64> = a.1.iter().map(|(_, v)| v.parse().unwrap()).collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    // An encoding never seen is decoded: invalid UTF-8 refuses the whole
    // request, also when the series exists under another encoding.
    let bad = [
        time_series(&[Ok((name, b"enc")), Ok((job, b"c")), Err((8000, 8.0))]),
        time_series(&[Ok((name, b"enc")), Ok((job, b"\xff")), Err((8000, 8.0))]),
    ];
    let (status, text) = app.write(write_request(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("UTF-8"), "{text}");
    assert_eq!(app.series_count(), 2);
}

#[tokio::test]
async fn push_put_post_delete_follow_the_pushgateway() {
    let app = App::new();
    let key = "/metrics/job/train/instance/vm-1";
    assert_eq!(
        app.push("PUT", key, "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.push("POST", key, "# TYPE b gauge\nb 3\n").await.0,
        StatusCode::OK
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("a{instance=\"vm-1\",job=\"train\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("b{instance=\"vm-1\",job=\"train\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("push_time_seconds{instance=\"vm-1\",job=\"train\"}"),
        "{metrics}"
    );
    // PUT replaces the whole group.
    assert_eq!(
        app.push("PUT", key, "# TYPE b gauge\nb 4\n").await.0,
        StatusCode::OK
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(!metrics.contains("\na{"), "{metrics}");
    let v = app.json("/api/v1/query?query=a").await;
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "a is stale after the PUT"
    );
    // The grouping key wins over labels in the body.
    assert_eq!(
        app.push("PUT", "/metrics/job/other", "c{job=\"body\",x=\"1\"} 5\n")
            .await
            .0,
        StatusCode::OK
    );
    let v = app.json("/api/v1/query?query=c").await;
    assert_eq!(v["data"]["result"][0]["metric"]["job"], "other");
    // A type conflict with another group is refused and recorded.
    let (status, body) = app
        .push("PUT", key, "# TYPE c counter\nc 1\n# TYPE b gauge\nb 4\n")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, metrics) = app.get("/metrics").await;
    let failure = metrics
        .lines()
        .find(|l| l.starts_with("push_failure_time_seconds{instance=\"vm-1\""))
        .unwrap();
    assert!(!failure.ends_with(" 0"), "{failure}");
    // DELETE removes the group and marks its series stale.
    assert_eq!(app.push("DELETE", key, "").await.0, StatusCode::ACCEPTED);
    let v = app.json("/api/v1/query?query=b").await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 0);
    assert_eq!(
        app.push("DELETE", "/metrics/job/never", "").await.0,
        StatusCode::ACCEPTED
    );
    // Bad grouping keys.
    assert_eq!(
        app.push("PUT", "/metrics/job/x/bad-label/1", "a 1\n")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.push("PUT", "/metrics/job/x/odd", "a 1\n").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn pushed_groups_survive_a_restart() {
    let app = App::new();
    assert_eq!(
        app.push(
            "PUT",
            "/metrics/job/keep/path@base64/L3Zhci90bXA",
            "kept 42\n"
        )
        .await
        .0,
        StatusCode::OK
    );
    let app = app.reopen();
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("kept{instance=\"\",job=\"keep\",path=\"/var/tmp\"} 42"),
        "{metrics}"
    );
}

#[tokio::test]
async fn push_ttl_expires_groups_with_stale_markers() {
    let push = PushConfig {
        interval: PromDuration::from_secs(15),
        default_ttl: None,
        ttl_rules: vec![mlmon::config::TtlRule {
            matchers: vec![("job".into(), regex::Regex::new("^(?:nightly-.*)$").unwrap())],
            ttl: PromDuration(60_000),
        }],
    };
    let app = App::with(Setup {
        push: Some(push),
        ..Setup::default()
    });
    assert_eq!(
        app.push("PUT", "/metrics/job/nightly-train", "ok 1\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.push("PUT", "/metrics/job/adhoc?ttl=30s", "ok2 1\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.push("PUT", "/metrics/job/forever", "ok3 1\n").await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.push("PUT", "/metrics/job/bad?ttl=soon", "ok4 1\n")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let now = mlmon::model::now_ms();
    let n = app
        .state
        .push
        .expire(&app.state.storage, now + 61_000)
        .unwrap();
    assert_eq!(n, 2);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        !metrics.contains("\nok ") && !metrics.contains("\nok2 ") && metrics.contains("\nok3{"),
        "{metrics}"
    );
    let v = app
        .json(&format!(
            "/api/v1/query?query=ok&time={}",
            (now + 62_000) as f64 / 1000.0
        ))
        .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn query_errors_use_prometheus_error_json() {
    let app = App::new();
    let (status, body) = app.get("/api/v1/query?query=up%7B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    assert!(!v["error"].as_str().unwrap().is_empty());
    let (status, body) = app
        .get("/api/v1/query_range?query=up&start=10&end=5&step=1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .get("/api/v1/query_range?query=up&start=0&end=100000&step=1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("11,000"), "{body}");
    let (status, _) = app
        .get("/api/v1/query_range?query=up&start=x&end=5&step=1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/query").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/series").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/label/0bad/values").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = app.get("/api/v1/query?query=%ZZ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
    let (status, _) = app.get("/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn series_and_label_endpoints() {
    let app = App::new();
    let t = 1_700_000_000_000i64;
    let batch = vec![
        (
            labels(&[("__name__", "up"), ("job", "a")]),
            vec![Sample { t, v: 1.0 }],
        ),
        (
            labels(&[("__name__", "up"), ("job", "b")]),
            vec![Sample { t, v: 0.0 }],
        ),
        (
            labels(&[("__name__", "load"), ("host", "h")]),
            vec![Sample { t, v: 0.5 }],
        ),
    ];
    assert_eq!(
        app.write(remote_write::encode(&batch)).await.0,
        StatusCode::NO_CONTENT
    );
    let v = app
        .json(&format!(
            "/api/v1/series?match[]={}",
            enc("up{job=~\"a|b\"}")
        ))
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let v = app
        .json(&format!(
            "/api/v1/series?match[]=up&start={}&end={}",
            t / 1000 + 10,
            t / 1000 + 20
        ))
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let v = app.json("/api/v1/labels").await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "host", "job"]));
    let v = app.json("/api/v1/label/job/values").await;
    assert_eq!(v["data"], serde_json::json!(["a", "b"]));
    let v = app
        .json(&format!(
            "/api/v1/label/__name__/values?match[]={}",
            enc("{host=\"h\"}")
        ))
        .await;
    assert_eq!(v["data"], serde_json::json!(["load"]));
    let v = app
        .json(&format!("/api/v1/query?query=up&time={}", t / 1000))
        .await;
    assert_eq!(v["data"]["result"][0]["value"][1], "1");
    let v = app.json("/api/v1/status/buildinfo").await;
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn metrics_negotiates_openmetrics() {
    let app = App::new();
    let req = Request::get("/metrics")
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .body(Body::empty())
        .unwrap();
    let (status, body) = app.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE mlmon_storage_samples_appended counter\n"),
        "{body}"
    );
    mlmon::expfmt::parse(&body, mlmon::expfmt::Format::OpenMetrics).unwrap();
    let (_, text) = app.get("/metrics").await;
    mlmon::expfmt::parse(&text, mlmon::expfmt::Format::Text).unwrap();
}

#[tokio::test]
async fn mutating_endpoints_need_auth_off_loopback() {
    let app = App::with(Setup {
        listen: "0.0.0.0:8001",
        ..Setup::default()
    });
    let (status, body) = app.push("PUT", "/metrics/job/j", "a 1\n").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("authentication"), "{body}");
    assert_eq!(app.get("/metrics").await.0, StatusCode::OK);

    let token = "a-token-that-is-long-enough";
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let auth = AuthConfig {
        basic_auth_users: vec![("ops".into(), hash)],
        bearer_tokens: vec![token.into()],
    };
    let app = App::with(Setup {
        listen: "0.0.0.0:8001",
        auth,
        ..Setup::default()
    });
    let put = |auth: Option<String>| {
        let mut b = Request::put("/metrics/job/j");
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        b.body(Body::from("a 1\n")).unwrap()
    };
    assert_eq!(app.send(put(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.send(put(Some("Bearer wrong-token-of-some-length".into())))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(put(Some(format!("Bearer {token}")))).await.0,
        StatusCode::OK
    );
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    assert_eq!(
        app.send(put(Some(basic("ops", "s3cret")))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.send(put(Some(basic("ops", "nope")))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Walks the router's own table: with authentication configured, every
/// route but the health checks answers 401 with a challenge without
/// credentials, and something else with them; a new route cannot be
/// forgotten.
#[tokio::test]
async fn every_route_needs_credentials_once_auth_is_configured() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let app = App::with(Setup {
        listen: "0.0.0.0:8001",
        auth: AuthConfig {
            basic_auth_users: vec![("ops".into(), hash)],
            bearer_tokens: vec![],
        },
        ..Setup::default()
    });
    use base64::Engine;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:s3cret")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:wrong")
    );
    let (_, table) = mlmon::web::routes(app.state.clone());
    assert!(table.len() > 40, "{table:?}");
    let mut open = Vec::new();
    for route in &table {
        // Path parameters get a value; `{*grouping}` a grouping key.
        let path = route
            .path
            .replace("{*grouping}", "job/j")
            .replace("{name}", "x")
            .replace("{id}", "x");
        let req = |auth: Option<&str>| {
            let mut b = Request::builder().method(route.method.clone()).uri(&path);
            if let Some(a) = auth {
                b = b.header("Authorization", a);
            }
            b.body(Body::from("a 1\n")).unwrap()
        };
        let resp = mlmon::web::router(app.state.clone())
            .oneshot(req(None))
            .await
            .unwrap();
        if route.access == mlmon::web::Access::Open {
            open.push(route.path);
            assert_ne!(resp.status(), StatusCode::UNAUTHORIZED, "{route:?}");
            continue;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{route:?}");
        assert!(
            resp.headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap().starts_with("Basic")),
            "{route:?}"
        );
        assert_eq!(
            app.send(req(Some(&bad))).await.0,
            StatusCode::UNAUTHORIZED,
            "{route:?}"
        );
        let (status, body) = app.send(req(Some(&good))).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{route:?}: {status} {body}"
        );
    }
    assert_eq!(open, ["/-/healthy", "/-/ready"]);
}

#[tokio::test]
async fn queries_over_the_sample_limit_or_deadline_are_stopped() {
    let limited = mlmon::promql::QueryOptions {
        max_samples: 100,
        ..Default::default()
    };
    let app = App::with(Setup {
        query: Some(limited),
        ..Setup::default()
    });
    let t0 = 1_700_000_000_000i64;
    let batch: Vec<(Labels, Vec<Sample>)> = (0..10)
        .map(|i| {
            (
                labels(&[("__name__", "many"), ("i", &i.to_string())]),
                (0..50)
                    .map(|k| Sample {
                        t: t0 + k * 15_000,
                        v: k as f64,
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        app.write(remote_write::encode(&batch)).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = app
        .get(&format!(
            "/api/v1/query?query={}&time={}",
            enc("sum(rate(many[1h]))"),
            t0 / 1000 + 750
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("too many samples") && body.contains("\"errorType\":\"execution\""),
        "{body}"
    );
    // A subquery that would hold too many points is stopped too.
    let (status, body) = app
        .get(&format!(
            "/api/v1/query?query={}&time={}",
            enc("max_over_time(many{i=\"1\"}[1h:1s])"),
            t0 / 1000 + 750
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A small query still runs.
    let v = app
        .json(&format!(
            "/api/v1/query?query={}&time={}",
            enc("many{i=\"1\"}"),
            t0 / 1000 + 750
        ))
        .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);

    let hurried = mlmon::promql::QueryOptions {
        timeout: std::time::Duration::from_nanos(1),
        ..Default::default()
    };
    let app2 = App::with(Setup {
        query: Some(hurried),
        ..Setup::default()
    });
    assert_eq!(
        app2.write(remote_write::encode(&batch)).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = app2
        .get(&format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=15",
            enc("sum(many)"),
            t0 / 1000,
            t0 / 1000 + 750
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("timed out") && body.contains("\"errorType\":\"timeout\""),
        "{body}"
    );
    // The server keeps answering.
    assert_eq!(app2.get("/api/v1/labels").await.0, StatusCode::OK);
}

/// Prometheus 2.42's own messages for these queries; positions must agree.
#[tokio::test]
async fn malformed_queries_are_bad_data_with_a_position() {
    let app = App::new();
    for (q, want) in [
        (
            "sum(rate(x[5m])",
            "1:16: parse error: unclosed left parenthesis",
        ),
        ("x{a=}", "1:5: parse error: unexpected \"}\""),
        (
            "rate(x[5m]) +",
            "1:14: parse error: unexpected end of input",
        ),
        ("foo bar", "1:5: parse error: unexpected identifier \"bar\""),
        (
            "unknown_fn(x)",
            "1:1: parse error: unknown function with name",
        ),
        ("x{a=\"b}", "1:5: parse error: unterminated quoted string"),
        ("1 +* 2", "1:4: parse error: unexpected"),
        (
            "a + b +\n  c +",
            "2:6: parse error: unexpected end of input",
        ),
        (
            "x and 1",
            "1:1: parse error: set operator 'and' not allowed",
        ),
        ("{}", "1:1: parse error: vector selector must contain"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/query?query={}", enc(q))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorType"], "bad_data", "{q}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("invalid parameter \"query\": {want}")),
            "{q}: {error}"
        );
    }
}

#[tokio::test]
async fn metadata_and_format_query() {
    let app = App::new();
    assert_eq!(app.push("PUT", "/metrics/job/j", "# HELP ml_model_r2_score R2 on the test split.\n# TYPE ml_model_r2_score gauge\nml_model_r2_score 0.9\n").await.0, StatusCode::OK);
    let v = app.json("/api/v1/metadata?metric=ml_model_r2_score").await;
    assert_eq!(v["data"]["ml_model_r2_score"][0]["type"], "gauge");
    assert_eq!(
        v["data"]["ml_model_r2_score"][0]["help"],
        "R2 on the test split."
    );
    let v = app.json("/api/v1/metadata?limit=2").await;
    assert_eq!(v["data"].as_object().unwrap().len(), 2);
    let v = app
        .json(&format!(
            "/api/v1/format_query?query={}",
            enc("sum by(job)(rate(x[5m]))")
        ))
        .await;
    assert_eq!(v["data"], "sum by (job) (rate(x[5m]))");
    let (status, _) = app
        .get(&format!("/api/v1/format_query?query={}", enc("sum(")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_original_stacks_ml_metrics_and_health_endpoints() {
    let app = App::new();
    let (status, _) = app
        .push(
            "PUT",
            "/metrics/job/ml",
            "ml_model_r2_score{pipeline=\"mathscore\"} 0.88\nother_metric 1\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/ml-metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("ml_model_r2_score{job=\"ml\",pipeline=\"mathscore\"} 0.88"),
        "{body}"
    );
    assert!(!body.contains("other_metric"), "{body}");
    assert_eq!(app.json("/api/health").await["status"], "healthy");
}
