//! The store through its public API: append, select, restart and replay,
//! checkpoints, retention and limits, each on a fresh temporary directory.

mod common;

use mlmon::model::{stale_nan, Labels, MatchOp, Matcher, Sample};
use mlmon::tsdb::{AppendError, Limits, Querier, Storage, StorageOptions};

fn labels(name: &str, job: &str) -> Labels {
    Labels::new([("__name__", name), ("job", job)]).unwrap()
}

fn eq(name: &str) -> Vec<Matcher> {
    vec![Matcher::equal("__name__", name)]
}

fn opts(dir: &std::path::Path) -> StorageOptions {
    let mut o = StorageOptions::new(dir);
    o.chunk_max_samples = 50;
    o
}

fn write(s: &Storage, name: &str, job: &str, ts: impl IntoIterator<Item = i64>) {
    let mut app = s.appender();
    for t in ts {
        app.append(labels(name, job), t, t as f64 / 10.0);
    }
    app.commit().unwrap();
}

fn all(s: &Storage, name: &str) -> Vec<(String, Vec<Sample>)> {
    s.select(&eq(name), i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|x| (x.labels.to_string(), x.samples))
        .collect()
}

#[test]
fn append_then_select_across_closed_chunks_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    write(&s, "m", "a", (0..175).map(|i| i * 1000));
    write(&s, "m", "b", [5, 6]);
    let got = all(&s, "m");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 175);
    assert!(got[0]
        .1
        .iter()
        .enumerate()
        .all(|(i, x)| x.t == i as i64 * 1000 && x.v == x.t as f64 / 10.0));
    // A window inside the data.
    let part = s.select(&eq("m"), 10_000, 60_500).unwrap();
    assert_eq!(part[0].samples.len(), 51);
    assert_eq!(part[0].samples[0].t, 10_000);
    s.close().unwrap();
}

#[test]
fn unclean_stop_replays_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Storage::open(opts(dir.path())).unwrap();
        write(&s, "m", "a", (0..120).map(|i| i * 1000));
        s.checkpoint().unwrap();
        write(&s, "m", "a", (120..130).map(|i| i * 1000));
        write(&s, "m", "c", [1]);
        // No checkpoint: the head is lost, as in a crash.
        s.close_without_checkpoint();
    }
    let s = Storage::open(opts(dir.path())).unwrap();
    let got = all(&s, "m");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 130);
    assert_eq!(got[1].1, [Sample { t: 1, v: 0.1 }]);
    // Appends continue where the data left off; old timestamps are refused.
    write(&s, "m", "a", [130_000]);
    let mut app = s.appender();
    app.append(labels("m", "a"), 5, 1.0);
    assert!(matches!(app.commit(), Err(AppendError::OutOfOrder { .. })));
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    assert_eq!(all(&s, "m")[0].1.len(), 131);
    s.close().unwrap();
}

#[test]
fn log_values_refer_to_earlier_records_and_replay_bit_exact() {
    // The log XORs a value with the series' previous one in its segment:
    // replay across segments, restarts and lazily synced records must give
    // back every bit.
    let dir = tempfile::tempdir().unwrap();
    let value = |i: i64, t: i64| match i % 4 {
        0 => 42.0,
        1 => (t / 1000) as f64,
        2 => f64::from_bits((t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        _ => f64::NAN,
    };
    let want = |n: i64| -> Vec<(String, Vec<u64>)> {
        (0..8)
            .map(|i| {
                let bits = (0..n).map(|k| value(i, k * 1000).to_bits()).collect();
                (labels(&format!("x{i}"), "j").to_string(), bits)
            })
            .collect()
    };
    let append = |s: &Storage, ks: std::ops::Range<i64>, lazy: bool| {
        for k in ks {
            let mut app = s.appender();
            for i in 0..8 {
                app.append(labels(&format!("x{i}"), "j"), k * 1000, value(i, k * 1000));
            }
            let app = if lazy { app.lazy_sync() } else { app };
            app.commit().unwrap();
        }
    };
    let got = |s: &Storage| -> Vec<(String, Vec<u64>)> {
        let mut out: Vec<(String, Vec<u64>)> = (0..8)
            .flat_map(|i| all(s, &format!("x{i}")))
            .map(|(l, samples)| (l, samples.iter().map(|x| x.v.to_bits()).collect()))
            .collect();
        out.sort();
        out
    };
    let sorted = |mut v: Vec<(String, Vec<u64>)>| {
        v.sort();
        v
    };
    {
        let s = Storage::open(opts(dir.path())).unwrap();
        append(&s, 0..50, false);
        s.checkpoint().unwrap();
        append(&s, 50..80, true);
        append(&s, 80..100, false);
        s.close_without_checkpoint();
    }
    {
        let s = Storage::open(opts(dir.path())).unwrap();
        assert_eq!(got(&s), sorted(want(100)));
        // After a restart the first value of each series is written whole.
        append(&s, 100..130, false);
        s.close_without_checkpoint();
    }
    let s = Storage::open(opts(dir.path())).unwrap();
    assert_eq!(got(&s), sorted(want(130)));
    s.close().unwrap();
}

#[test]
fn a_refused_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.limits = Limits {
        max_series: 3,
        ..Limits::default()
    };
    let s = Storage::open(o).unwrap();
    write(&s, "m", "a", [10]);
    let mut app = s.appender();
    app.append(labels("m", "a"), 20, 1.0);
    app.append(labels("m", "b"), 20, 1.0);
    app.append(labels("m", "a"), 15, 1.0); // out of order inside the batch
    assert!(matches!(app.commit(), Err(AppendError::OutOfOrder { .. })));
    let mut app = s.appender();
    for j in ["b", "c", "d"] {
        app.append(labels("m", j), 20, 1.0);
    }
    let err = app.commit().unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::TooManySeries {
                new: 3,
                existing: 1,
                limit: 3
            }
        ),
        "{err}"
    );
    let got = all(&s, "m");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, [Sample { t: 10, v: 1.0 }]);
    // Same timestamp, same value: accepted as a no-op; different value: refused.
    write(&s, "m", "a", [10]);
    let mut app = s.appender();
    app.append(labels("m", "a"), 10, 2.0);
    assert!(matches!(
        app.commit(),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    s.close().unwrap();
}

#[test]
fn stale_markers_are_stored_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    let mut app = s.appender();
    app.append(labels("m", "a"), 1, 1.0);
    app.append(labels("m", "a"), 2, stale_nan());
    app.commit().unwrap();
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    let got = all(&s, "m");
    assert!(mlmon::model::is_stale(got[0].1[1].v));
    s.close().unwrap();
}

#[test]
fn retention_drops_old_chunks_and_empty_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.retention_ms = 100_000;
    let s = Storage::open(o).unwrap();
    write(&s, "old", "a", (0..60).map(|i| i * 1000));
    write(&s, "new", "a", (0..60).map(|i| 1_000_000 + i * 1000));
    // Close idle heads so everything is in chunks.
    s.checkpoint().unwrap();
    // One part holds both; it is rewritten without "old".
    let (sections, series) = s.apply_retention(1_100_000).unwrap();
    assert_eq!((sections, series), (1, 1));
    assert!(all(&s, "old").is_empty());
    assert_eq!(all(&s, "new")[0].1.len(), 60);
    assert_eq!(s.label_values("__name__", &[]), ["new"]);
    s.close().unwrap();
}

#[test]
fn label_apis_and_regex_selection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    write(&s, "up", "api", [1]);
    write(&s, "up", "web", [1]);
    write(&s, "down", "web", [1]);
    let re = vec![Matcher::new(MatchOp::Re, "job", "w.*").unwrap()];
    assert_eq!(s.select(&re, 0, 10).unwrap().len(), 2);
    assert_eq!(s.label_values("job", &[eq("up")]), ["api", "web"]);
    assert_eq!(s.label_names(&[]), ["__name__", "job"]);
    assert_eq!(s.series(&[re], 0, 10).unwrap().len(), 2);
    assert!(s.series(&[eq("up")], 5, 10).unwrap().is_empty());
    s.close().unwrap();
}

#[test]
fn kv_round_trip_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    s.kv_put("push", b"b", b"2").unwrap();
    s.kv_put("push", b"a", b"1").unwrap();
    s.kv_put("other", b"a", b"x").unwrap();
    s.kv_delete("push", b"b").unwrap();
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    assert_eq!(s.kv_scan("push").unwrap(), [(b"a".to_vec(), b"1".to_vec())]);
    s.close().unwrap();
}

#[test]
fn repeated_series_in_one_batch_are_merged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    write(&s, "m", "old", [1]);
    let mut app = s.appender();
    app.append_series(labels("m", "new"), vec![Sample { t: 1, v: 1.0 }]);
    app.append_series(labels("m", "old"), vec![Sample { t: 2, v: 2.0 }]);
    app.append_series(labels("m", "new"), vec![Sample { t: 2, v: 2.0 }]);
    app.append_series(
        labels("m", "old"),
        vec![Sample { t: 2, v: 2.0 }, Sample { t: 3, v: 3.0 }],
    );
    assert_eq!(
        app.commit().unwrap(),
        4,
        "the repeated t=2 of \"old\" is a no-op"
    );
    let got = all(&s, "m");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.iter().map(|x| x.t).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(got[1].1.iter().map(|x| x.t).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(s.stats().series, 2);
    s.close().unwrap();
}

#[test]
fn merging_parts_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    // 50-sample chunks: 1,000 samples make 20 chunks per series; each
    // checkpoint writes a part.
    for k in 0..4i64 {
        for job in ["a", "b"] {
            write(&s, "m", job, (k * 250..(k + 1) * 250).map(|i| i * 1000));
        }
        s.checkpoint().unwrap();
    }
    assert_eq!(s.stats().parts, 4);
    let before = all(&s, "m");
    assert_eq!(before[0].1.len(), 1000);
    let m = s.maintain(1_000_000).unwrap();
    assert_eq!(m.merged_parts, 4);
    assert_eq!(s.stats().parts, 1);
    // One 1,000-sample block per series.
    assert_eq!(s.stats().chunks, 2);
    assert_eq!(all(&s, "m"), before);
    // Windows that start inside a block still find their samples.
    let part = s.select(&eq("m"), 500_500, 510_000).unwrap();
    assert_eq!(part[0].samples.first().map(|x| x.t), Some(501_000));
    assert_eq!(part[0].samples.len(), 10);
    // Appends after a merge, another merge, and a restart.
    write(&s, "m", "a", (1000..1100).map(|i| i * 1000));
    s.checkpoint().unwrap();
    s.maintain(1_100_000).unwrap();
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    let after = all(&s, "m");
    assert_eq!(after[0].1.len(), 1100);
    assert_eq!(&after[0].1[..1000], &before[0].1[..]);
    assert_eq!(after[1].1, before[1].1);
    s.close().unwrap();
}

#[test]
fn a_part_left_by_a_crash_is_removed_and_a_missing_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Storage::open(opts(dir.path())).unwrap();
        write(&s, "m", "a", (0..100).map(|i| i * 1000));
        s.checkpoint().unwrap();
        s.close().unwrap();
    }
    let parts = dir.path().join("parts");
    let listed: Vec<_> = std::fs::read_dir(&parts).unwrap().flatten().collect();
    assert_eq!(listed.len(), 1);
    // A part written but never committed, and a half-written one.
    std::fs::copy(listed[0].path(), parts.join("00000000000000000999.part")).unwrap();
    std::fs::write(parts.join("00000000000000001000.part.tmp"), b"half").unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    assert_eq!(all(&s, "m")[0].1.len(), 100);
    assert_eq!(std::fs::read_dir(&parts).unwrap().count(), 1);
    s.close().unwrap();
    drop(s);
    std::fs::remove_file(listed[0].path()).unwrap();
    let err = Storage::open(opts(dir.path()))
        .err()
        .expect("a missing part");
    assert!(err.to_string().contains("cannot open part"), "{err}");
}

/// Every file under `dir` with its length and modification time.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_format_1_file_is_migrated_with_its_unflushed_log() {
    // Written by the version before the log moved out of the data file:
    // fixture_a has 600 checkpointed samples and 10 more only in the log
    // table, fixture_b 5 NaN samples only in the log table, and one push
    // group row (see docs/format.md, "Version changes").
    migrates("format-v1");
}

#[test]
fn a_format_2_directory_is_migrated_with_its_heads_and_log() {
    // Written by the version that kept open heads in the data file: the
    // same data as format-v1, fixture_a's 600 checkpointed samples in two
    // parts and a head row, the rest in a log segment.
    migrates("format-v2");
}

/// Copies `tests/fixtures/<name>` into a temporary directory, opens it
/// twice (appending in between) and checks every sample and the KV row.
fn migrates(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    for (path, _, _) in files(&from) {
        let to = dir.path().join(path.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&path, to).unwrap();
    }
    for round in 0..2 {
        let s = Storage::open(StorageOptions::new(dir.path())).unwrap();
        let a = all(&s, "fixture_a");
        assert_eq!(a.len(), 1, "round {round}");
        // Round 1 also has the sample round 0 appended.
        let want: Vec<Sample> = (0..610 + round)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i * 15_000,
                v: i as f64 * 0.5,
            })
            .collect();
        assert!(a[0].1 == want, "round {round}: {} samples", a[0].1.len());
        let b = all(&s, "fixture_b");
        assert_eq!(b[0].1.len(), 5);
        assert!(b[0].1.iter().all(|x| x.v.is_nan()));
        assert_eq!(s.kv_scan("push").unwrap(), [(b"k".to_vec(), b"v".to_vec())]);
        // Appends go on after the migrated data.
        if round == 0 {
            let mut app = s.appender();
            app.append(
                Labels::new([("__name__", "fixture_a"), ("job", "j")]).unwrap(),
                1_700_000_000_000 + 610 * 15_000,
                305.0,
            );
            app.commit().unwrap();
            s.close_without_checkpoint();
        } else {
            s.close().unwrap();
        }
    }
    // Only the one table is left.
    let db = redb::Database::open(dir.path().join("mlmon.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert_eq!(tables, ["kv"]);
}

#[test]
fn the_log_is_reclaimed_while_ingest_continues_and_idle_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(StorageOptions::new(dir.path())).unwrap();
    let now = mlmon::model::now_ms();
    let start = now - 3_600_000;
    let mut peak_log = 0;
    // 200 series at a 15 s interval for an hour, one scrape per batch, a
    // maintenance pass every 10 scrapes as the server runs it.
    for k in 0..240i64 {
        let mut app = s.appender();
        for i in 0..200 {
            app.append(
                labels(&format!("m{i}"), "j"),
                start + k * 15_000,
                (k * i) as f64,
            );
        }
        app.commit().unwrap();
        peak_log = peak_log.max(common::dir_bytes(&dir.path().join("wal")));
        if k % 10 == 9 {
            s.maintain(now).unwrap();
        }
    }
    // The log never held much more than one checkpoint's worth: 64 KiB or
    // the heads' size, plus what ten scrapes add.
    assert!(peak_log < 300 << 10, "the log reached {peak_log} bytes");
    // Quiet: passes until nothing is left to do, then nothing changes.
    let mut n = 0;
    loop {
        let m = s.maintain(now).unwrap();
        if !m.checkpointed && m.merged_parts == 0 && m.reclaimed_bytes == 0 {
            break;
        }
        n += 1;
        assert!(n < 10, "maintenance never settles: {m:?}");
    }
    let before = files(dir.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    for _ in 0..5 {
        let m = s.maintain(now).unwrap();
        assert!(!m.checkpointed && m.merged_parts == 0, "{m:?}");
    }
    assert_eq!(files(dir.path()), before, "an idle store wrote");
    // Every sample is there.
    let got = s
        .select(&[Matcher::equal("job", "j")], 0, i64::MAX)
        .unwrap();
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|x| x.samples.len() == 240));
    s.close().unwrap();
}

#[test]
fn series_files_are_rewritten_and_deletions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.retention_ms = 1_000_000;
    let series_files = || {
        std::fs::read_dir(dir.path().join("series"))
            .unwrap()
            .count()
    };
    {
        let s = Storage::open(o.clone()).unwrap();
        // Each checkpoint that creates series writes a series file.
        for k in 0..12i64 {
            write(&s, &format!("m{k}"), "a", [k * 1000]);
            s.checkpoint().unwrap();
        }
        assert_eq!(series_files(), 12);
        s.maintain(20_000).unwrap();
        assert_eq!(series_files(), 1, "rewritten into one");
        // Retention deletes m0..m11's old data; "new" stays.
        write(&s, "new", "a", [5_000_000]);
        s.checkpoint().unwrap();
        let (_, deleted) = s.apply_retention(5_000_000).unwrap();
        assert_eq!(deleted, 12);
        s.close().unwrap();
    }
    let s = Storage::open(o).unwrap();
    assert_eq!(s.label_values("__name__", &[]), ["new"]);
    assert_eq!(all(&s, "new")[0].1.len(), 1);
    s.close().unwrap();
}

/// Everything in a log read by a reader, as (name, t, v).
fn read_all_log(s: &Storage, after: u64) -> (Vec<(String, i64, f64)>, u64) {
    let mut cursor = mlmon::tsdb::Cursor::default();
    let (mut out, mut last) = (Vec::new(), after);
    loop {
        let b = s.read_log("r", &mut cursor, last, 1000).unwrap();
        if b.last_seq == 0 {
            return (out, last);
        }
        let ids: Vec<u64> = b.series.iter().map(|s| s.id).collect();
        let indexed = s.series_labels(&ids);
        for (series, indexed) in b.series.into_iter().zip(indexed) {
            let l = series
                .labels
                .or(indexed)
                .expect("labels in the log or the index");
            for x in series.samples {
                out.push((l.metric_name().unwrap_or("").to_string(), x.t, x.v));
            }
        }
        last = b.last_seq;
    }
}

#[test]
fn a_log_reader_keeps_its_segments_through_checkpoints_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    let start = s.hold_log("r", u64::MAX).unwrap();
    write(&s, "a", "j", 0..10);
    s.checkpoint().unwrap();
    write(&s, "b", "j", 0..10);
    s.checkpoint().unwrap();
    // Nothing acknowledged: both records are still there to read.
    let (got, last) = read_all_log(&s, start);
    assert_eq!(got.len(), 20, "{got:?}");
    assert_eq!(got[0], ("a".to_string(), 0, 0.0));
    // A restart keeps the position and the segments.
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    assert_eq!(s.hold_log("r", u64::MAX).unwrap(), start);
    assert_eq!(read_all_log(&s, start).0.len(), 20);
    // Acknowledged: the next checkpoint lets the old segments go, and the
    // reader goes on with what comes next.
    s.log_acked("r", last).unwrap();
    write(&s, "c", "j", 0..5);
    s.checkpoint().unwrap();
    let (got, _) = read_all_log(&s, last);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["c"; 5]
    );
    // A reader no longer configured holds nothing.
    s.release_log_holds_except(&[]).unwrap();
    s.checkpoint().unwrap();
    assert_eq!(s.log_backlog_bytes("r"), 0);
}

#[test]
fn a_backlog_past_its_budget_drops_the_oldest_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    let start = s.hold_log("r", 2_000).unwrap();
    for i in 0..20 {
        write(&s, &format!("m{i}"), "j", 0..50);
        s.checkpoint().unwrap();
    }
    assert!(
        s.log_backlog_bytes("r") <= 2_000 + 4_096,
        "{}",
        s.log_backlog_bytes("r")
    );
    let dropped = s.log_dropped("r");
    assert!(dropped > 0);
    let (got, _) = read_all_log(&s, start);
    // What was dropped plus what is left is everything, the newest kept.
    assert_eq!(got.len() as u64 + dropped, 20 * 50);
    assert_eq!(got.last().unwrap().0, "m19");
}
