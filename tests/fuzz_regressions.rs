//! Replays every input the fuzzers ever failed on (`fuzz/regressions/
//! <target>/*`), and every seed (`fuzz/seeds/<target>/*`), through the
//! same target functions cargo-fuzz runs (`fuzz/src/lib.rs`), on stable.
//! See docs/fuzzing.md.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails again", p.display());
            n += 1;
        }
    }
    assert!(
        n > 0,
        "{target}: no inputs under fuzz/regressions or fuzz/seeds"
    );
}

macro_rules! replays {
    ($($t:ident),*) => {$(
        #[test]
        fn $t() {
            replay(stringify!($t), targets::$t);
        }
    )*};
}

replays!(
    text,
    remote_write,
    promql_parse,
    promql_eval,
    chunk,
    config,
    rules,
    alertmanager,
    template,
    api
);
