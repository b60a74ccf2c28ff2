//! The store through its public API: append, select, restart and replay,
//! checkpoints, retention and limits, each on a fresh temporary directory.

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
        s.checkpoint(None).unwrap();
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
    s.checkpoint(Some(i64::MAX)).unwrap();
    let (chunks, series) = s.apply_retention(1_100_000).unwrap();
    assert_eq!((chunks, series), (2, 1));
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
fn merging_chunks_into_blocks_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).unwrap();
    // 50-sample chunks: 1,000 samples make 20 chunks per series.
    for job in ["a", "b"] {
        write(&s, "m", job, (0..1000).map(|i| i * 1000));
    }
    s.checkpoint(Some(i64::MAX)).unwrap();
    let before = all(&s, "m");
    let chunks_before = s.stats().chunks;
    let (merged, blocks) = s.merge_blocks(usize::MAX).unwrap();
    assert!(
        blocks >= 2 && merged > blocks,
        "merged {merged} into {blocks}"
    );
    assert!(s.stats().chunks < chunks_before);
    assert_eq!(all(&s, "m"), before);
    // Windows that start inside a block still find their samples.
    let part = s.select(&eq("m"), 500_500, 510_000).unwrap();
    assert_eq!(part[0].samples.first().map(|x| x.t), Some(501_000));
    assert_eq!(part[0].samples.len(), 10);
    // Appends after a merge, a second merge, and a restart.
    write(&s, "m", "a", (1000..1100).map(|i| i * 1000));
    s.checkpoint(Some(i64::MAX)).unwrap();
    s.merge_blocks(usize::MAX).unwrap();
    s.close().unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).unwrap();
    let after = all(&s, "m");
    assert_eq!(after[0].1.len(), 1100);
    assert_eq!(&after[0].1[..1000], &before[0].1[..]);
    s.close().unwrap();
}
