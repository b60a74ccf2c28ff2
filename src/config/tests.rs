use super::*;

const PROMETHEUS_YML: &str = r#"
global:
  scrape_interval: 15s
  evaluation_interval: 15s

rule_files:
  - "alert_rules.yml"

alerting:
  alertmanagers:
    - static_configs:
        - targets:
          - alertmanager:9093

scrape_configs:
  - job_name: 'prometheus'
    static_configs:
      - targets: ['localhost:9090']
  - job_name: 'ml-metrics'
    static_configs:
      - targets: ['host.docker.internal:8001']
    scrape_interval: 60s
    metrics_path: '/ml-metrics'
"#;

#[test]
fn defaults_without_a_file() {
    let c = Config::defaults();
    assert_eq!(c.web.listen.to_string(), "127.0.0.1:8001");
    assert_eq!(c.storage.path, PathBuf::from("data"));
    assert_eq!(c.rule_files, ["rules/*.yml"]);
    assert_eq!(c.storage.retention.millis(), 15 * 86_400_000);
    assert!(c.ignored.is_empty());
}

#[test]
fn a_prometheus_yml_pastes_in_whole() {
    let c = Config::from_yaml(PROMETHEUS_YML, "mlmon.yml", None).unwrap();
    assert_eq!(c.rule_files, ["alert_rules.yml"]);
    assert_eq!(c.global.scrape_interval.millis(), 15_000);
    let ignored = c.ignored.join("\n");
    assert!(ignored.is_empty(), "{ignored}");
    assert_eq!(c.alertmanagers.len(), 1);
    assert_eq!(
        c.alertmanagers[0].url,
        "http://alertmanager:9093/api/v2/alerts"
    );
    // The original stack's jobs, with the global interval and timeout.
    assert_eq!(c.scrape.len(), 2);
    let ml = &c.scrape[1];
    assert_eq!(ml.job_name, "ml-metrics");
    assert_eq!(ml.metrics_path, "/ml-metrics");
    assert_eq!(ml.interval.millis(), 60_000);
    assert_eq!(ml.timeout.millis(), 10_000);
    assert_eq!(ml.targets[0].address, "host.docker.internal:8001");
}

#[test]
fn scrape_config_errors_name_the_job_and_its_line() {
    let yaml = "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['x:1']}]\n  - job_name: b\n    scrape_interval: 5s\n    scrape_timeout: 10s\n    metric_relabel_configs:\n      - action: hashmod\n  - job_name: a\n  - job_name: c\n    kubernetes_sd_configs: []\n";
    let err = Config::from_yaml(yaml, "m.yml", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `kubernetes_sd_configs`"),
        "{err}"
    );
    let yaml = "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['x:1']}]\n  - job_name: b\n    scrape_interval: 5s\n    scrape_timeout: 10s\n    metric_relabel_configs:\n      - action: hashmod\n  - job_name: a\n  - job_name: d\n    scheme: ftp\n    static_configs: [{targets: ['http://x:1/metrics']}]\n";
    let err = Config::from_yaml(yaml, "m.yml", None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("m.yml:4: scrape_configs: job \"b\": scrape_timeout 10s is greater than scrape_interval 5s"), "{text}");
    assert!(
        text.contains(
            "m.yml:4: scrape_configs: job \"b\": metric_relabel_configs rule 1: action \"hashmod\""
        ),
        "{text}"
    );
    assert!(
        text.contains("job \"a\": found multiple scrape configs"),
        "{text}"
    );
    assert!(
        text.contains("m.yml:10: scrape_configs: job \"d\": unknown scheme \"ftp\""),
        "{text}"
    );
    assert!(
        text.contains("target \"http://x:1/metrics\" is not a valid host:port"),
        "{text}"
    );
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    let err =
        Config::from_yaml("web:\n  listen: 127.0.0.1:1\n  lisen: x\n", "m.yml", None).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("m.yml:3: "), "{text}");
    assert!(text.contains("unknown field `lisen`"), "{text}");
}

#[test]
fn bad_durations_and_values_are_all_reported() {
    let yaml = "global:\n  scrape_interval: 15x\n";
    let err = Config::from_yaml(yaml, "m.yml", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m.yml:2:") && err.contains("15x"), "{err}");

    let yaml = "web:\n  listen: nowhere\nstorage:\n  max_series: 0\npush:\n  ttl:\n    - match: {job: '('}\n      ttl: 1h\n";
    let err = Config::from_yaml(yaml, "m.yml", None).unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
    let text = err.to_string();
    assert!(text.contains("m.yml:2: web.listen"), "{text}");
    assert!(text.contains("m.yml:4: storage.max_series"), "{text}");
    assert!(text.contains("m.yml:6: push.ttl: rule 1"), "{text}");
}

#[test]
fn web_config_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!("basic_auth_users:\n  alice: {hash}\n"),
    )
    .unwrap();
    let main = dir.path().join("mlmon.yml");
    std::fs::write(&main, "web:\n  config_file: web.yml\n").unwrap();
    let c = Config::load(&main).unwrap();
    assert_eq!(c.web.auth.basic_auth_users[0].0, "alice");

    std::fs::write(
        dir.path().join("web.yml"),
        "basic_auth_users:\n  bob: plain\n",
    )
    .unwrap();
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(err.contains("bcrypt"), "{err}");
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: x\n",
    )
    .unwrap();
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(
        err.contains("web.yml:1: tls_server_config.key_file: missing one of key or key_file"),
        "{err}"
    );
}

#[test]
fn with_no_configuration_the_intervals_are_prometheus_defaults() {
    let c = Config::defaults();
    assert_eq!(c.global.scrape_interval.millis(), 60_000);
    assert_eq!(c.global.evaluation_interval.millis(), 60_000);
    assert_eq!(c.global.scrape_timeout.millis(), 10_000);
    assert_eq!(c.push.interval.millis(), 15_000);
}

#[test]
fn remote_write_loads_prometheus_keys_and_refuses_what_it_cannot_do() {
    let yaml = "remote_write:\n  - url: https://mimir.example/api/v1/push\n    name: mimir\n    remote_timeout: 10s\n    headers: {X-Scope-OrgID: ml}\n    write_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'go_.*'\n        action: drop\n    basic_auth: {username: u, password: p}\n    queue_config: {capacity: 10000, max_shards: 10, max_samples_per_send: 2000, retry_on_http_429: true, max_disk_bytes: 1048576}\n    metadata_config: {send: false}\n  - url: http://vm:8428/api/v1/write\n";
    let c = Config::from_yaml(yaml, "m.yml", None).unwrap();
    assert_eq!(c.remote_write.len(), 2);
    let r = &c.remote_write[0];
    assert_eq!(r.name, "mimir");
    assert_eq!(r.timeout.millis(), 10_000);
    assert_eq!(r.headers, [("X-Scope-OrgID".to_string(), "ml".to_string())]);
    assert_eq!(r.relabel.len(), 1);
    assert_eq!(r.queue.max_samples_per_send, 2000);
    assert!(r.queue.retry_on_http_429);
    assert_eq!(r.queue.max_disk_bytes, 1 << 20);
    assert_eq!(c.remote_write[1].queue.max_samples_per_send, 2000);
    assert_eq!(c.remote_write[1].name.len(), 6);
    assert!(c.ignored.iter().all(|i| !i.contains("remote_write")));

    for (yaml, words) in [
        ("remote_write:\n  - url: ftp://x\n", "not an http(s) URL"),
        (
            "remote_write:\n  - url: http://x/w\n    metadata_config: {send: true}\n",
            "metadata",
        ),
        (
            "remote_write:\n  - url: http://x/w\n    headers: {Authorization: x}\n",
            "reserved header",
        ),
        (
            "remote_write:\n  - url: http://x/w\n    name: a\n  - url: http://y/w\n    name: a\n",
            "multiple remote write configs",
        ),
        (
            "remote_write:\n  - url: http://x/w\n    sigv4: {region: x}\n",
            "sigv4",
        ),
        (
            "remote_write:\n  - url: http://x/w\n    headers: {\"a b\": x}\n",
            "not a valid HTTP header",
        ),
    ] {
        let e = Config::from_yaml(yaml, "m.yml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(words) && e.starts_with("m.yml:"), "{yaml}: {e}");
    }
}
