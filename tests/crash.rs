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
            metrics.contains(&format!("crash_push{{job=\"crash\",n=\"{i}\"}} {i}\n")),
            "push {i} lost"
        );
    }
}
