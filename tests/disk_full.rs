//! A full disk: writes are refused with 507 and a clear reason before they
//! change anything, reads go on, nothing is corrupt, and writes resume by
//! themselves once space returns. The data directory is a small tmpfs
//! (mounting needs root, as `.ci/run` has; elsewhere the test says it was
//! skipped).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{client, Mlmon};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path, size: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    if !mount_tmpfs(&data, "12m") {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let _mount = Mount(data.clone());
    let m = Mlmon::start_in(dir, None);
    let c = client();
    let label = "x".repeat(200);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..20_000 {
        let body: String = (0..5)
            .map(|j| format!("fill_{j}{{a=\"{label}\"}} {i}\n"))
            .collect();
        let r = c
            .put(m.url(&format!("/metrics/job/fill/n/{i}")))
            .body(body)
            .send()
            .unwrap();
        if r.status().is_success() {
            acked.push(i);
            continue;
        }
        refusal = Some((r.status().as_u16(), r.text().unwrap()));
        break;
    }
    let (status, message) = refusal.expect("the disk never filled");
    assert_eq!(status, 507, "{message}");
    assert!(
        message.contains("disk") && message.contains("full"),
        "{message}"
    );
    assert!(acked.len() > 10, "only {} pushes fitted", acked.len());
    // Remote write is refused the same way (a checkpoint may have freed
    // the log's space meanwhile: then it fills again first); reads go on.
    let mut refused = false;
    for k in 0..2_000 {
        let now = mlmon::model::now_ms();
        let batch: Vec<_> = (0..50)
            .map(|j| {
                (
                    mlmon::model::Labels::new([
                        ("__name__", format!("after_full_{k}_{j}")),
                        ("a", label.clone()),
                    ])
                    .unwrap(),
                    vec![mlmon::model::Sample { t: now, v: 1.0 }],
                )
            })
            .collect();
        let r = c
            .post(m.url("/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .body(mlmon::ingest::remote_write::encode(&batch))
            .send()
            .unwrap();
        if r.status().is_success() {
            continue;
        }
        assert_eq!(r.status(), 507);
        refused = true;
        break;
    }
    assert!(refused, "remote write never met the full disk");
    let pushed = m.value("count(fill_0)").unwrap();
    assert_eq!(pushed as usize, acked.len());
    assert_eq!(c.get(m.url("/-/healthy")).send().unwrap().status(), 200);
    // Space returns: writes resume without a restart.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&data)
        .status()
        .unwrap()
        .success());
    let batch = vec![(
        mlmon::model::Labels::new([("__name__", "after_full")]).unwrap(),
        vec![mlmon::model::Sample {
            t: mlmon::model::now_ms(),
            v: 1.0,
        }],
    )];
    common::remote_write(&c, &m.url("/api/v1/write"), &batch);
    assert_eq!(m.value("after_full"), Some(1.0));
    // Nothing corrupt: killed, the file checks out and everything is back.
    let mut m = m;
    m.kill();
    {
        let mut db = redb::Database::open(m.data_dir().join("mlmon.redb")).unwrap();
        assert!(db.check_integrity().unwrap(), "redb reports corruption");
    }
    let m = m.restart();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(m.value("after_full"), Some(1.0));
    let pushed = m.value("count(fill_0)").unwrap();
    assert_eq!(pushed as usize, acked.len());
}
