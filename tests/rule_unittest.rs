//! Rule unit tests as data, in `promtool test rules` format:
//! `tests/rules/pass/*.yml` must pass and `tests/rules/fail/*.yml`
//! (deliberately wrong expectations) must fail with the report in the
//! `.out` file beside each, recorded from `promtool test rules`. They run
//! through `mlmon test rules` on every `cargo test`; where promtool is
//! installed it must decide the same and print the same reports
//! (`MLMON_RULES_REFRESH=1` re-records them from it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/rules")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs `tool test rules NAME` in the file's directory (so reports name
/// the file as the recorded ones do): whether it passed, and its output.
fn run(tool: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(["test", "rules"])
        .arg(file.file_name().unwrap())
        .current_dir(file.parent().unwrap())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn recorded(file: &Path) -> PathBuf {
    file.with_extension("out")
}

#[test]
fn mlmon_test_rules_passes_and_fails_as_recorded() {
    let mlmon = Path::new(env!("CARGO_BIN_EXE_mlmon"));
    let (pass, fail) = (cases("pass"), cases("fail"));
    assert!(!pass.is_empty() && !fail.is_empty());
    let mut problems = Vec::new();
    for f in &pass {
        let (ok, out) = run(mlmon, f);
        if !ok {
            problems.push(format!("{}: should pass:\n{out}", f.display()));
        }
    }
    for f in &fail {
        let (ok, out) = run(mlmon, f);
        let want = std::fs::read_to_string(recorded(f)).unwrap_or_default();
        if ok {
            problems.push(format!("{}: should fail", f.display()));
        } else if out.trim() != want.trim() {
            problems.push(format!(
                "{}: report differs from promtool's:\n{out}\n--- promtool:\n{want}",
                f.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n======\n"));
}

#[test]
fn promtool_decides_the_same() {
    if !common::have(&["promtool"]) {
        return;
    }
    let promtool = common::require("promtool");
    let refresh = std::env::var_os("MLMON_RULES_REFRESH").is_some();
    let mut problems = Vec::new();
    for (f, want) in cases("pass")
        .into_iter()
        .map(|f| (f, true))
        .chain(cases("fail").into_iter().map(|f| (f, false)))
    {
        let (ok, out) = run(&promtool, &f);
        if ok != want {
            problems.push(format!("{}: promtool passed={ok}:\n{out}", f.display()));
        }
        if !want {
            if refresh {
                std::fs::write(recorded(&f), &out).unwrap();
            } else if std::fs::read_to_string(recorded(&f)).unwrap_or_default() != out {
                problems.push(format!(
                    "{}: promtool's report is not the recorded one (MLMON_RULES_REFRESH=1 records it):\n{out}",
                    f.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n======\n"));
}
