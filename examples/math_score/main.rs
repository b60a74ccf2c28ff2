//! The math-score pipeline and prediction API that the original stack
//! watched, as a real, small program: mlmon's end-to-end demo.
//!
//! ```sh
//! cargo run --release --example math_score -- pipeline [--artifacts DIR] [--rows N] [--seed S] [--drift X] [--fail-stage NAME] [--input CSV]
//! cargo run --release --example math_score -- serve [--artifacts DIR] [--listen ADDR]
//! ```

mod data;
mod model;
mod pipeline;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "math_score",
    about = "Mathematics score prediction: pipeline and API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the five stages and write the artifacts.
    Pipeline {
        /// Where the artifacts go (default: the demo's, which
        /// examples/math_score/mlmon.yml watches).
        #[arg(long, default_value = "target/demo/artifacts")]
        artifacts: PathBuf,
        /// Generated student records.
        #[arg(long, default_value_t = 1000)]
        rows: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of corrupted rows and size of the shift of the inputs
        /// (0.5 takes test R² below 0.7).
        #[arg(long, default_value_t = 0.0)]
        drift: f64,
        /// Make this stage fail: ingestion, validation, transformation,
        /// training or evaluation.
        #[arg(long)]
        fail_stage: Option<String>,
        /// Read this CSV (the dataset's columns) instead of generating.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Serve predictions from the model in the artifacts.
    Serve {
        #[arg(long, default_value = "target/demo/artifacts")]
        artifacts: PathBuf,
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
        /// Requests per second per client.
        #[arg(long, default_value_t = 50.0)]
        rate_limit: f64,
        /// Predictions the drift score looks at.
        #[arg(long, default_value_t = 200)]
        drift_window: usize,
        /// Model age after which the model counts as stale, in seconds.
        #[arg(long, default_value_t = 7.0 * 86_400.0)]
        max_model_age: f64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Pipeline {
            artifacts,
            rows,
            seed,
            drift,
            fail_stage,
            input,
        } => {
            let fail_stage = match fail_stage.as_deref().map(pipeline::stage_name) {
                Some(None) => {
                    eprintln!("--fail-stage: one of ingestion, validation, transformation, training, evaluation");
                    return ExitCode::from(2);
                }
                Some(Some(s)) => Some(s.to_string()),
                None => None,
            };
            if !(0.0..=1.0).contains(&drift) || rows < 10 {
                eprintln!("--drift must be within 0–1 and --rows at least 10");
                return ExitCode::from(2);
            }
            let o = pipeline::Options {
                artifacts,
                rows,
                seed,
                drift,
                fail_stage,
                input,
            };
            match pipeline::run(&o) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pipeline failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            artifacts,
            listen,
            rate_limit,
            drift_window,
            max_model_age,
        } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let o = serve::Options {
                artifacts,
                listen,
                rate_limit: rate_limit.max(0.1),
                drift_window: drift_window.max(20),
                max_model_age,
            };
            match rt.block_on(serve::run(o)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
