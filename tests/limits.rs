//! Resource limits that keep the monitoring alive: a saturating query load
//! leaves rule evaluation on time and ingest accepting; slow clients are
//! cut off; oversized headers and bodies are refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, remote_write, Mlmon};
use mlmon::model::{Labels, Sample};

fn labels(name: &str, i: usize) -> Labels {
    Labels::new([
        ("__name__", name.to_string()),
        ("instance", format!("host-{i}")),
    ])
    .unwrap()
}

/// The unix seconds of a group's last evaluation, from `/api/v1/rules`.
fn last_evaluation(m: &Mlmon) -> Option<f64> {
    let v = m.json("/api/v1/rules");
    let t = v["data"]["groups"][0]["lastEvaluation"]
        .as_str()?
        .to_string();
    let ts = chrono::DateTime::parse_from_rfc3339(&t).ok()?;
    Some(ts.timestamp_millis() as f64 / 1000.0)
}

#[test]
fn saturating_queries_leave_rules_on_time_and_ingest_accepting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: fast\n  interval: 1s\n  rules:\n  - record: load:count\n    expr: count(load)\n",
    )
    .unwrap();
    let m = Mlmon::start(Some(&format!(
        "query:\n  max_concurrency: 2\n  timeout: 3s\nrule_files: [{}]\n",
        dir.path().join("rules.yml").display()
    )));
    // Two hours of 1,000 series at 15 s: a range query over them with a
    // one-second step is heavy work.
    let now = mlmon::model::now_ms();
    let c = client();
    let write = m.url("/api/v1/write");
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<(Labels, Vec<Sample>)> = chunk
            .iter()
            .map(|&i| {
                let samples = (0..480)
                    .map(|k| Sample {
                        t: now - 7_200_000 + k * 15_000,
                        v: (k * (i as i64 + 1)) as f64,
                    })
                    .collect();
                (labels("load", i), samples)
            })
            .collect();
        remote_write(&c, &write, &batch);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..12 {
        let (url, stop) = (m.url("/api/v1/query_range"), stop.clone());
        let (answered, refused) = (answered.clone(), refused.clone());
        let (start, end) = (
            format!("{}", (now - 7_200_000) / 1000),
            format!("{}", now / 1000),
        );
        load.push(std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .form(&[
                        ("query", "sum by (instance) (rate(load[5m])) * 2"),
                        ("start", start.as_str()),
                        ("end", end.as_str()),
                        ("step", "1"),
                    ])
                    .send()
                    .unwrap();
                match r.status().as_u16() {
                    200 => answered.fetch_add(1, Ordering::Relaxed),
                    503 => refused.fetch_add(1, Ordering::Relaxed),
                    s => panic!("query: {s}: {}", r.text().unwrap_or_default()),
                };
            }
        }));
    }
    // While the load runs: the rule group keeps its one-second schedule
    // and remote write keeps being accepted at once.
    let started = Instant::now();
    let mut evaluations = Vec::new();
    let mut write_latency = Duration::ZERO;
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let t0 = Instant::now();
        remote_write(
            &c,
            &write,
            &[(
                labels("heartbeat", 0),
                vec![Sample {
                    t: mlmon::model::now_ms(),
                    v: k as f64,
                }],
            )],
        );
        write_latency = write_latency.max(t0.elapsed());
        k += 1;
        if let Some(t) = last_evaluation(&m) {
            if evaluations.last() != Some(&t) {
                evaluations.push(t);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (answered, refused) = (
        answered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "queries answered {answered}, refused {refused}; evaluations {}; slowest write {write_latency:?}",
        evaluations.len()
    );
    assert!(refused > 0, "the load never exceeded the concurrency limit");
    assert!(
        evaluations.len() >= 12,
        "the group ran {} times in 15 s: {evaluations:?}",
        evaluations.len()
    );
    let worst_gap = evaluations
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max);
    assert!(
        worst_gap <= 2.0,
        "rule evaluation fell behind: {worst_gap} s between runs of a 1 s group"
    );
    assert!(
        write_latency < Duration::from_secs(2),
        "a remote write took {write_latency:?} under query load"
    );
    assert_eq!(m.value("count(heartbeat)"), Some(1.0));
}

/// Connections that send their headers slowly are cut off after the read
/// timeout, so they cannot hold every connection slot.
#[test]
fn slow_clients_are_cut_off() {
    let m = Mlmon::start(Some("web:\n  max_connections: 5\n  read_timeout: 2s\n"));
    let addr = format!("127.0.0.1:{}", m.port);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.push(s);
    }
    // Nor does a connection that sends nothing (an idle keep-alive).
    let mut idle = TcpStream::connect(&addr).unwrap();
    // A slow body holds no slot past the timeout either.
    let mut body = TcpStream::connect(&addr).unwrap();
    body.write_all(
        b"PUT /metrics/job/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx 1\n",
    )
    .unwrap();
    let started = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(m.url("/-/healthy"))
        .send()
        .expect("served once the slow connections are cut off");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(15));
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        // Closed (maybe with a 408), never answered as a request.
        assert!(!String::from_utf8_lossy(&buf).contains("Healthy"));
    }
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    assert!(
        idle.read_to_end(&mut buf).is_ok(),
        "an idle connection is closed by the header timeout"
    );
    body.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = body.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(m.json("/api/v1/series?match[]={job=\"slow\"}")["data"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Oversized headers get 431, oversized bodies 413; the server goes on.
#[test]
fn oversized_requests_are_refused() {
    let m = Mlmon::start(Some("web:\n  max_request_bytes: 4096\n"));
    let c = client();
    let big_header = "x".repeat(100 << 10);
    let r = c
        .get(m.url("/-/healthy"))
        .header("X-Big", &big_header)
        .send()
        .unwrap();
    assert_eq!(r.status(), 431);
    let mut many = c.get(m.url("/-/healthy"));
    for i in 0..150 {
        many = many.header(format!("X-H{i}"), "v");
    }
    assert_eq!(many.send().unwrap().status(), 431);
    let body = "x 1\n".repeat(2000);
    for (method, path, content_type) in [
        (reqwest::Method::PUT, "/metrics/job/big", "text/plain"),
        (
            reqwest::Method::POST,
            "/api/v1/query",
            "application/x-www-form-urlencoded",
        ),
        (
            reqwest::Method::POST,
            "/api/v2/silences",
            "application/json",
        ),
        (reqwest::Method::POST, "/api/v1/runs", "application/json"),
        (
            reqwest::Method::POST,
            "/api/v1/write",
            "application/x-protobuf",
        ),
    ] {
        let r = c
            .request(method, m.url(path))
            .header("Content-Type", content_type)
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
    }
    assert_eq!(m.value("vector(1)"), Some(1.0));
}
