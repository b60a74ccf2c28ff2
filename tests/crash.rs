//! Crash safety: a child mlmon receiving remote writes and pushes is killed
//! with SIGKILL mid-stream. After a restart every acknowledged sample and
//! push is there, and the redb file opens and passes redb's integrity check.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mlmon::ingest::remote_write;
use mlmon::model::{Labels, Sample};

#[test]
fn sigkill_loses_no_acknowledged_sample() {
    let mut m = Mlmon::start(None);
    let base = mlmon::model::now_ms() - 3_600_000;
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let pushed: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut threads = Vec::new();
    for w in 0..2 {
        let (url, acked) = (m.url("/api/v1/write"), acked.clone());
        threads.push(std::thread::spawn(move || {
            let c = client();
            for req in 0.. {
                if Instant::now() > stop_at + Duration::from_secs(2) {
                    break;
                }
                let batch: Vec<(Labels, Vec<Sample>)> = (0..50)
                    .map(|s| {
                        let l = Labels::new([
                            ("__name__", format!("crash_w{w}")),
                            ("s", s.to_string()),
                        ])
                        .unwrap();
                        let samples = (0..10)
                            .map(|k| Sample {
                                t: base + req * 10 + k,
                                v: (req * 10 + k) as f64,
                            })
                            .collect();
                        (l, samples)
                    })
                    .collect();
                let ok = c
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .body(remote_write::encode(&batch))
                    .send()
                    .map(|r| r.status().as_u16() == 204)
                    .unwrap_or(false);
                if !ok {
                    break;
                }
                let mut a = acked.lock().unwrap();
                for (l, samples) in &batch {
                    for s in samples {
                        a.push((l.to_string(), s.t));
                    }
                }
            }
        }));
    }
    {
        let (url, pushed) = (m.url("/metrics/job/crash/n/"), pushed.clone());
        threads.push(std::thread::spawn(move || {
            let c = client();
            for i in 0u32.. {
                let ok = c
                    .put(format!("{url}{i}"))
                    .body(format!("crash_push {i}\n"))
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if !ok {
                    break;
                }
                pushed.lock().unwrap().push(i);
            }
        }));
    }
    while Instant::now() < stop_at {
        std::thread::sleep(Duration::from_millis(50));
    }
    m.kill();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let pushed = pushed.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} samples were acknowledged before the kill",
        acked.len()
    );
    assert!(!pushed.is_empty());

    // The file opens (redb repairs what a crash leaves) and checks out.
    {
        let mut db = redb::Database::open(m.data_dir().join("mlmon.redb"))
            .expect("redb opens the file after SIGKILL");
        assert!(
            db.check_integrity().expect("integrity check runs"),
            "redb reports corruption"
        );
    }

    let m = m.restart();
    let c = client();
    let at = (base + 1_000_000) as f64 / 1000.0;
    let mut present = std::collections::HashSet::new();
    for w in 0..2 {
        let q = format!("crash_w{w}[2h]");
        let v: serde_json::Value = c
            .get(m.url("/api/v1/query"))
            .query(&[("query", q.as_str()), ("time", &at.to_string())])
            .send()
            .unwrap()
            .json()
            .unwrap();
        for r in v["data"]["result"].as_array().unwrap() {
            let labels = format!("crash_w{w}{{s=\"{}\"}}", r["metric"]["s"].as_str().unwrap());
            for p in r["values"].as_array().unwrap() {
                present.insert((
                    labels.clone(),
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                ));
            }
        }
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|a| !present.contains(a))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged samples lost, e.g. {missing:?}",
        acked.iter().filter(|a| !present.contains(a)).count()
    );
    let metrics = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
    for i in pushed {
        assert!(
            metrics.contains(&format!(
                "crash_push{{instance=\"\",job=\"crash\",n=\"{i}\"}} {i}\n"
            )),
            "push {i} lost"
        );
    }
}

/// A static exposition page on a free port, as a scrape target.
fn static_target(page: &'static str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{page}",
                        page.len()
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// kill -9 at random moments, 20 times, while remote write, pushes,
/// scrapes, rule evaluation, silences, runs and notifications run. After
/// each crash the file passes redb's integrity check and, once restarted,
/// every acknowledged sample, push, silence and run is there; the firing
/// alert's notification arrived, and at most once more per crash than
/// without crashes (Alertmanager's at-least-once rule).
#[test]
fn random_kills_lose_nothing_acknowledged() {
    let rounds = 20;
    let sink = HttpSink::start(&[], false);
    let target = static_target("crash_scraped{k=\"a\"} 1\ncrash_scraped{k=\"b\"} 2\n");
    let files = tempfile::tempdir().unwrap();
    let rules = write_file(
        files.path(),
        "rules.yml",
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: crash:scraped\n    expr: sum(crash_scraped)\n  - alert: AlwaysFiring\n    expr: vector(1)\n",
    );
    let am = write_file(
        files.path(),
        "alertmanager.yml",
        &format!(
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 24h\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: '{}'\n",
            sink.url("/hook")
        ),
    );
    let config = format!(
        "rule_files: ['{}']\nalertmanager: {}\nscrape_configs:\n- job_name: t\n  scrape_interval: 1s\n  static_configs:\n  - targets: ['127.0.0.1:{target}']\n",
        rules.display(),
        am.display()
    );
    let mut m = Mlmon::start(Some(&config));
    let base = mlmon::model::now_ms() - 3_600_000;
    let mut rng = Rng(7);
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut pushes: std::collections::BTreeMap<u32, u32> = Default::default();
    let mut silences: Vec<String> = Vec::new();
    let mut runs: Vec<String> = Vec::new();
    let mut next_t = 0i64;
    for round in 0..rounds {
        let stop = Instant::now() + Duration::from_millis(300 + rng.next() % 2200);
        let c = client();
        let mut k = 0u32;
        while Instant::now() < stop {
            // Remote write.
            let batch: Vec<(Labels, Vec<Sample>)> = (0..20)
                .map(|s| {
                    let l =
                        Labels::new([("__name__", "crash_loop".to_string()), ("s", s.to_string())])
                            .unwrap();
                    (
                        l,
                        vec![Sample {
                            t: base + next_t,
                            v: next_t as f64,
                        }],
                    )
                })
                .collect();
            next_t += 1;
            let ok = c
                .post(m.url("/api/v1/write"))
                .header("Content-Encoding", "snappy")
                .body(remote_write::encode(&batch))
                .send()
                .is_ok_and(|r| r.status().as_u16() == 204);
            if ok {
                acked.extend(batch.iter().map(|(l, s)| (l.to_string(), s[0].t)));
            }
            // A push to one of ten groups.
            let group = k % 10;
            let value = round * 1000 + k;
            if c.put(m.url(&format!("/metrics/job/crash_loop/g/{group}")))
                .body(format!("crash_loop_push {value}\n"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                pushes.insert(group, value);
            }
            // Now and then a silence and a run.
            if k.is_multiple_of(25) {
                let body = serde_json::json!({
                    "matchers": [{"name": "alertname", "value": format!("Other{round}_{k}"), "isRegex": false}],
                    "startsAt": mlmon::model::rfc3339(mlmon::model::now_ms()),
                    "endsAt": mlmon::model::rfc3339(mlmon::model::now_ms() + 86_400_000),
                    "createdBy": "crash", "comment": "loop",
                });
                if let Ok(r) = c.post(m.url("/api/v2/silences")).json(&body).send() {
                    if r.status().is_success() {
                        let v: serde_json::Value = r.json().unwrap();
                        silences.push(v["silenceID"].as_str().unwrap().to_string());
                    }
                }
                let started = 1_600_000_000.0 + (round * 10_000 + k) as f64;
                let run = serde_json::json!({"pipeline": "crash", "started": started, "finished": started + 1.0, "exit_code": 0});
                if c.post(m.url("/api/v1/runs"))
                    .json(&run)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                {
                    runs.push(format!("crash-{}", (started * 1000.0) as i64));
                }
            }
            k += 1;
        }
        m.kill();
        {
            let mut db = redb::Database::open(m.data_dir().join("mlmon.redb"))
                .unwrap_or_else(|e| panic!("round {round}: redb cannot open the file: {e}"));
            assert!(
                db.check_integrity().expect("integrity check runs"),
                "round {round}: redb reports corruption"
            );
        }
        m = m.restart();
        // Every acknowledged sample so far.
        let at = format!("{}", (base + next_t) as f64 / 1000.0);
        let v: serde_json::Value = c
            .get(m.url("/api/v1/query"))
            .query(&[("query", "crash_loop[2h]"), ("time", &at)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut present = std::collections::HashSet::new();
        for r in v["data"]["result"].as_array().unwrap() {
            let l = format!("crash_loop{{s=\"{}\"}}", r["metric"]["s"].as_str().unwrap());
            for p in r["values"].as_array().unwrap() {
                present.insert((l.clone(), (p[0].as_f64().unwrap() * 1000.0).round() as i64));
            }
        }
        let lost = acked.iter().filter(|a| !present.contains(a)).count();
        assert_eq!(
            lost,
            0,
            "round {round}: {lost} of {} acknowledged samples lost",
            acked.len()
        );
        let metrics = c.get(m.url("/metrics")).send().unwrap().text().unwrap();
        for (g, v) in &pushes {
            let line =
                format!("crash_loop_push{{g=\"{g}\",instance=\"\",job=\"crash_loop\"}} {v}\n");
            assert!(metrics.contains(&line), "round {round}: push {line:?} lost");
        }
        let listed = m.json("/api/v2/silences");
        for id in &silences {
            assert!(
                listed
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["id"] == id.as_str()),
                "round {round}: silence {id} lost"
            );
        }
        let listed = m.json("/api/v1/runs?limit=1000");
        let ids: Vec<&str> = listed["data"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        for id in &runs {
            assert!(ids.contains(&id.as_str()), "round {round}: run {id} lost");
        }
    }
    // The scrape and the rules ran across the crashes.
    assert_eq!(m.value("crash_scraped{k=\"b\"}"), Some(2.0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.value("crash:scraped").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.value("crash:scraped"), Some(3.0));
    let firing = sink
        .wait_accepted(1, Duration::from_secs(10))
        .iter()
        .filter(|n| n["status"] == "firing")
        .count();
    assert!(firing >= 1, "the firing alert was never notified");
    assert!(
        firing <= rounds as usize + 1,
        "{firing} firing notifications for one alert over {rounds} crashes"
    );
    eprintln!(
        "{rounds} crashes: {} samples, {} push groups, {} silences, {} runs intact; {firing} firing notifications",
        acked.len(),
        pushes.len(),
        silences.len(),
        runs.len()
    );
}
