//! `mlmon run -- CMD ARGS…`: runs the user's pipeline command with its
//! output streamed as is, tells a running mlmon when it starts (so the
//! artifacts it writes are the named pipeline's), then reports the run
//! (start, end, exit code), which mlmon records, writing
//! `ml_pipeline_success`, `ml_pipeline_duration_seconds` and
//! `ml_pipeline_last_run_timestamp` with the pipeline's name.
//! The exit code is the command's own; an unreachable mlmon only costs a
//! warning on stderr.

use std::process::Command;
use std::time::{Duration, SystemTime};

/// Where to report and as what.
pub struct Target {
    /// `http://host:port` (a path prefix is kept).
    pub url: String,
    pub pipeline: Option<String>,
    /// Credentials and TLS settings (`--http.config.file`, or a bearer
    /// token from `MLMON_TOKEN`).
    pub http: crate::http::config::ClientConfig,
}

/// Runs `argv`, reports it to `target`, and returns the exit code to exit
/// with: the command's, 128 + the signal that ended it, or 127 when it
/// could not be started (as a shell does).
pub fn run(argv: &[String], target: &Target) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("mlmon run: no command given (usage: mlmon run [--pipeline NAME] -- CMD ARGS…)");
        return 2;
    };
    let started = SystemTime::now();
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let mut body = serde_json::json!({
        "started": secs(started),
        "command": argv.join(" "),
    });
    if let Some(p) = &target.pipeline {
        body["pipeline"] = serde_json::json!(p);
    }
    // So that artifacts the command writes are this pipeline's from the
    // start; the report at the end says what went wrong, if anything.
    let _ = post(target, &body.to_string(), Duration::from_secs(2));
    let code = match Command::new(program).args(args).spawn() {
        Ok(mut child) => {
            // The command gets Ctrl-C; this process stays to report the run.
            // SAFETY: installing SIG_IGN has no preconditions; the child was
            // spawned before, so it keeps the default disposition.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
            }
            match child.wait() {
                Ok(status) => exit_code(status),
                Err(e) => {
                    eprintln!("mlmon run: cannot wait for {program}: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("mlmon run: cannot start {program}: {e}");
            127
        }
    };
    body["finished"] = serde_json::json!(secs(SystemTime::now()));
    body["exit_code"] = serde_json::json!(code);
    if let Err(e) = post(target, &body.to_string(), Duration::from_secs(10)) {
        eprintln!(
            "mlmon run: warning: the run was not recorded at {}: {e}",
            target.url
        );
    }
    code
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// POSTs the run to `/api/v1/runs` with the client scrapes use (http or
/// https).
fn post(target: &Target, json: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("{}/api/v1/runs", target.url.trim_end_matches('/'));
    crate::http::post_blocking(&target.http, &url, json, timeout).map(|_| ())
}
