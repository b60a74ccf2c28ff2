//! Online backup and restore: `mlmon backup` while remote write keeps
//! arriving, then the copy used as a data directory and put back with
//! `mlmon restore`. Every sample acknowledged before the backup began is
//! there, with the alert state, silences, runs and alert history.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, Mlmon};
use mlmon::model::{Labels, Sample};
use serde_json::json;

const SERIES: usize = 5;

fn series(i: usize) -> Labels {
    Labels::new([("__name__", "backed_up"), ("i", &i.to_string())]).unwrap()
}

#[test]
fn a_backup_under_load_holds_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Always\n        expr: vector(1)\n        labels: {severity: warning}\n",
    )
    .unwrap();
    let config = format!("rule_files: ['{}']\n", rules.display());
    let m = Mlmon::start_in(dir, Some(config.clone()));
    let c = client();

    // State besides samples: a silence, a run, a firing alert.
    let silence: serde_json::Value = c
        .post(m.url("/api/v2/silences"))
        .json(
            &json!({"matchers": [{"name": "team", "value": "ml", "isRegex": false}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "ops", "comment": "kept by the backup"}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let silence_id = silence["silenceID"].as_str().unwrap().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = c
        .post(m.url("/api/v1/runs"))
        .json(&json!({"pipeline": "nightly", "started": now - 60.0, "finished": now, "exit_code": 0, "command": "train"}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.json("/api/v2/alerts").to_string().contains("Always") {
        assert!(
            Instant::now() < deadline,
            "the alert never fired\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Remote write keeps arriving; every acknowledged sample is noted.
    let acked: Arc<Mutex<Vec<(usize, i64, f64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), m.url("/api/v1/write"));
        std::thread::spawn(move || {
            let c = client();
            let t0 = 1_800_000_000_000i64;
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<(Labels, Vec<Sample>)> = (0..SERIES)
                    .map(|i| {
                        let s = (0..20)
                            .map(|j| Sample {
                                t: t0 + (k * 20 + j) * 1000,
                                v: (k * 20 + j) as f64 + i as f64 / 10.0,
                            })
                            .collect();
                        (series(i), s)
                    })
                    .collect();
                common::remote_write(&c, &url, &batch);
                let mut a = acked.lock().unwrap();
                for (i, (_, samples)) in batch.iter().enumerate() {
                    a.extend(samples.iter().map(|s| (i, s.t, s.v)));
                }
                k += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let before: Vec<(usize, i64, f64)> = acked.lock().unwrap().clone();
    let backup_dir = tempfile::tempdir().unwrap();
    let dest = backup_dir.path().join("data");
    let said = common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .args(["backup", "--url", &m.url("")])
            .arg(&dest),
    );
    assert!(said.contains("backed up to"), "{said}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(before.len() > 1000, "too little load: {}", before.len());
    // The snapshot left nothing behind in the data directory.
    let snapshots = m.data_dir().join("snapshots");
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0);
    drop(m);

    // `mlmon restore` into an empty directory opens and checks the copy.
    let restored = tempfile::tempdir().unwrap();
    let restore = || {
        Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .args(["restore"])
            .arg(&dest)
            .arg("--data-dir")
            .arg(restored.path().join("data"))
            .output()
            .unwrap()
    };
    let out = restore();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("series"), "{said}");
    // Into a directory that holds data it refuses.
    let out = restore();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // The restored directory serves everything.
    let m = Mlmon::start_in(restored, Some(config));
    for i in 0..SERIES {
        let q = format!("backed_up{{i=\"{i}\"}}[10y]");
        let v: serde_json::Value = c
            .get(m.url("/api/v1/query"))
            .query(&[("query", q.as_str()), ("time", "1900000000")])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let got: std::collections::BTreeMap<i64, f64> = v["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        for (_, t, want) in before.iter().filter(|(s, ..)| *s == i) {
            assert_eq!(
                got.get(t),
                Some(want),
                "series {i}: the sample at {t} is missing"
            );
        }
    }
    let silences = m.json("/api/v2/silences").to_string();
    assert!(silences.contains(&silence_id), "{silences}");
    let runs = m.json("/api/v1/runs").to_string();
    assert!(runs.contains("nightly"), "{runs}");
    let history = m.json("/api/v1/alerts/history").to_string();
    assert!(history.contains("Always"), "{history}");
    let alerts = m.json("/api/v2/alerts").to_string();
    assert!(alerts.contains("Always"), "{alerts}");
}
