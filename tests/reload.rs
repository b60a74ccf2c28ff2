//! Reloading the whole configuration while mlmon runs: rule files (an
//! edited threshold keeps a pending alert's timer, a removed rule's series
//! end at once), scrape targets added and removed, a bad file refused as a
//! whole, and the command line's settings kept.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, Mlmon};

fn wait_for<T>(what: &str, m: &Mlmon, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, within, f, || m.log())
}

fn alert(m: &Mlmon) -> Option<(String, String)> {
    let v = m.json("/api/v1/alerts");
    let a = &v["data"]["alerts"][0];
    Some((
        a["state"].as_str()?.to_string(),
        a["activeAt"].as_str()?.to_string(),
    ))
}

fn rules(threshold: u32) -> String {
    format!(
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: ml_pipeline_duration_seconds > {threshold}\n        for: 8s\n      - record: doubled\n        expr: ml_pipeline_duration_seconds * 2\n"
    )
}

#[test]
fn an_edited_threshold_keeps_the_pending_timer_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rule_file = dir.path().join("rules.yml");
    std::fs::write(&rule_file, rules(300)).unwrap();
    let config = format!(
        "push:\n  interval: 1s\nrule_files: ['{}']\n",
        rule_file.display()
    );
    let m = Mlmon::start_in(dir, Some(config));
    m.push("ml", "ml_pipeline_duration_seconds 425\n");
    let (_, active_at) = wait_for("never pending", &m, Duration::from_secs(10), || {
        alert(&m).filter(|(s, _)| s == "pending")
    });
    let pending_since = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    // The threshold changes and the recording rule goes: SIGHUP.
    let edited = "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: ml_pipeline_duration_seconds > 200\n        for: 8s\n";
    std::fs::write(&rule_file, edited).unwrap();
    assert!(m.value("doubled").is_some());
    m.hup();
    wait_for(
        "the rule was not replaced",
        &m,
        Duration::from_secs(5),
        || {
            let v = m.json("/api/v1/rules");
            let q = v["data"]["groups"][0]["rules"][0]["query"]
                .as_str()?
                .to_string();
            q.contains("200").then_some(())
        },
    );
    // The removed rule's series ended with a stale marker, not 5 minutes
    // of lookback.
    wait_for(
        "the removed rule's series lingers",
        &m,
        Duration::from_secs(3),
        || m.value("doubled").is_none().then_some(()),
    );
    let (state, again) = alert(&m).unwrap();
    assert_eq!(state, "pending");
    assert_eq!(
        again, active_at,
        "the reload reset the alert's active-since time"
    );
    wait_for("never fired", &m, Duration::from_secs(10), || {
        alert(&m).filter(|(s, _)| s == "firing")
    });
    let fired_after = pending_since.elapsed();
    assert!(
        fired_after < Duration::from_secs(11),
        "fired {fired_after:?} after going pending: the timer restarted"
    );

    // A bad file: 500 naming file and line, the metric says so, the
    // rules that ran keep running.
    std::fs::write(
        &rule_file,
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: sum(\n",
    )
    .unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().unwrap();
    assert!(body.contains("rules.yml:4"), "{body}");
    assert_eq!(m.value("mlmon_config_last_reload_successful"), None);
    let metrics = m.text("/metrics");
    assert!(
        metrics.contains("\nmlmon_config_last_reload_successful 0\n"),
        "{metrics}"
    );
    let status = m.text("/status");
    assert!(status.contains("rules.yml:4"), "{status}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert(&m).unwrap().0, "firing");
    let v = m.json("/api/v1/rules");
    assert!(v["data"]["groups"][0]["rules"][0]["query"]
        .as_str()
        .unwrap()
        .contains("200"));

    // Fixed again: reloaded, the metric back to 1.
    std::fs::write(&rule_file, edited).unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let metrics = m.text("/metrics");
    assert!(metrics.contains("\nmlmon_config_last_reload_successful 1\n"));
}

#[test]
fn scrape_targets_added_and_removed_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("mlmon.yml");
    let m = Mlmon::start_in(dir, Some(String::new()));
    // mlmon scrapes itself once the job is added; the --listen and
    // --data-dir of its command line stay.
    let job = format!(
        "scrape_configs:\n  - job_name: self\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        m.port
    );
    std::fs::write(&config_path, &job).unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    wait_for(
        "the added target was not scraped",
        &m,
        Duration::from_secs(10),
        || (m.value("up{job=\"self\"}") == Some(1.0)).then_some(()),
    );
    assert!(m.value("mlmon_build_info{job=\"self\"}").is_some());

    // Unchanged on a reload that changes something else: still scraped.
    std::fs::write(&config_path, format!("{job}push:\n  interval: 2s\n")).unwrap();
    m.hup();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.value("up{job=\"self\"}"), Some(1.0));

    // Removed: its series end with stale markers.
    std::fs::write(&config_path, "").unwrap();
    let r = client().post(m.url("/-/reload")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    wait_for(
        "the removed target's series linger",
        &m,
        Duration::from_secs(3),
        || {
            (m.value("up{job=\"self\"}").is_none()
                && m.value("mlmon_build_info{job=\"self\"}").is_none())
            .then_some(())
        },
    );
    let targets = m.json("/api/v1/targets");
    assert_eq!(targets["data"]["activeTargets"], serde_json::json!([]));
    assert!(m.log().contains("applies at the next start"), "{}", m.log());
}

/// Off loopback, `POST /-/reload` needs `--web.enable-lifecycle` (and
/// credentials); `--config.auto-reload-interval` reloads a changed file
/// without being asked.
#[test]
fn reload_off_loopback_needs_the_lifecycle_flag_and_auto_reload_picks_up_changes() {
    let dir = tempfile::tempdir().unwrap();
    let token = "a-long-enough-reload-token";
    let config = dir.path().join("mlmon.yml");
    std::fs::write(&config, format!("web:\n  bearer_tokens: ['{token}']\n")).unwrap();
    let start = |extra: &[&str], data: &str| {
        let port = common::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlmon"))
            .arg("serve")
            .args(extra)
            .args(["--listen", &format!("0.0.0.0:{port}"), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        common::wait_ready(
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
            &mut child,
        );
        (child, url)
    };
    let reload = |url: &str| {
        let r = client()
            .post(format!("{url}/-/reload"))
            .bearer_auth(token)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (mut child, url) = start(&[], "d1");
    let (status, body) = reload(&url);
    assert_eq!(status, 403);
    assert!(body.contains("--web.enable-lifecycle"), "{body}");
    let _ = child.kill();
    let _ = child.wait();

    let (mut child, url) = start(
        &[
            "--web.enable-lifecycle",
            "--config.auto-reload-interval",
            "1s",
        ],
        "d2",
    );
    assert_eq!(reload(&url), (200, String::new()));
    // A rule file added to the config is picked up by the auto-reload.
    std::fs::write(
        dir.path().join("auto.yml"),
        "groups:\n  - name: a\n    interval: 1s\n    rules:\n      - record: auto_reloaded\n        expr: vector(7)\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!("web:\n  bearer_tokens: ['{token}']\nrule_files: ['auto.yml']\n"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = client()
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", "auto_reloaded")])
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["data"]["result"][0]["value"][1] == "7" {
            break;
        }
        assert!(Instant::now() < deadline, "not auto-reloaded: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `file_sd_configs`: a target written into a discovery file is scraped
/// without a reload, with the file's labels and `__meta_filepath`; one
/// taken out of the file ends with stale markers.
#[test]
fn targets_in_discovery_files_come_and_go_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let config = "scrape_configs:\n  - job_name: sd\n    scrape_interval: 1s\n    file_sd_configs:\n      - files: ['targets/*.json']\n        refresh_interval: 1m\n    relabel_configs:\n      - source_labels: [__meta_filepath]\n        regex: '.*/(.*)\\.json'\n        target_label: file\n";
    let m = Mlmon::start_in(dir, Some(config.to_string()));
    assert!(m.value("up{job=\"sd\"}").is_none());
    std::fs::write(
        targets.join("pipeline.json"),
        format!(
            "[{{\"targets\": [\"127.0.0.1:{}\"], \"labels\": {{\"team\": \"ml\"}}}}]",
            m.port
        ),
    )
    .unwrap();
    wait_for(
        "the discovered target was not scraped",
        &m,
        Duration::from_secs(10),
        || (m.value("up{job=\"sd\",team=\"ml\",file=\"pipeline\"}") == Some(1.0)).then_some(()),
    );
    let targets_api = m.json("/api/v1/targets");
    let t = &targets_api["data"]["activeTargets"][0];
    assert!(
        t["discoveredLabels"]["__meta_filepath"]
            .as_str()
            .unwrap()
            .ends_with("pipeline.json"),
        "{t}"
    );
    // A broken file keeps its targets.
    std::fs::write(targets.join("pipeline.json"), "[{").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.value("up{job=\"sd\"}"), Some(1.0));
    assert!(m.log().contains("Discovery file not used"), "{}", m.log());
    // Emptied: the target's series end.
    std::fs::write(targets.join("pipeline.json"), "[]").unwrap();
    wait_for(
        "the removed target's series linger",
        &m,
        Duration::from_secs(5),
        || m.value("up{job=\"sd\"}").is_none().then_some(()),
    );
}
