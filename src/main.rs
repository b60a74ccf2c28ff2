//! The `mlmon` command: parse flags, load the config, hand over to `app`.
//! The only place that exits the process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mlmon::config::{Config, ConfigErrors};

// Ingest allocates many small, short-lived buffers; mimalloc spends about
// a fifth less CPU per remote-written sample than glibc's allocator here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mlmon",
    version,
    about = "Monitors an ML pipeline and the machine it runs on, in one process"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Validate the config file with the rule files and Alertmanager
    /// configuration it names; or the files given, each recognised as an
    /// mlmon.yml, a rule file or an alertmanager.yml. Exits non-zero on
    /// any error.
    Check {
        /// Config file (default: ./mlmon.yml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// What the files are: mlmon, rules or alertmanager (default: told
        /// by their top-level keys).
        #[arg(long = "as", value_name = "KIND", value_parser = ["mlmon", "rules", "alertmanager"])]
        kind: Option<String>,
        /// Files to check instead (mlmon.yml, rule files, alertmanager.yml).
        files: Vec<PathBuf>,
    },
    /// Run a pipeline command and record the run with a running mlmon.
    Run {
        /// Pipeline name (default: the server's artifacts.pipeline).
        #[arg(long)]
        pipeline: Option<String>,
        /// The mlmon to report to (else MLMON_URL, else http://127.0.0.1:8001).
        #[arg(long)]
        url: Option<String>,
        /// Credentials and TLS settings for it, in Prometheus' http_config
        /// format (basic_auth, authorization, tls_config: ca_file, cert_file,
        /// key_file…), as promtool's flag (else MLMON_HTTP_CONFIG; a bearer
        /// token in MLMON_TOKEN also works).
        #[arg(long = "http.config.file", value_name = "FILE")]
        http_config: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Write a consistent copy of a running mlmon's data (through its
    /// admin API, while it ingests) to DEST, a new path on the machine it
    /// runs on; DEST works as a --data-dir as it is.
    Backup {
        /// The mlmon to back up (else MLMON_URL, else http://127.0.0.1:8001).
        #[arg(long)]
        url: Option<String>,
        /// Credentials and TLS settings for it (as for `mlmon run`).
        #[arg(long = "http.config.file", value_name = "FILE")]
        http_config: Option<PathBuf>,
        dest: PathBuf,
    },
    /// Put a backup into a new or empty data directory (mlmon stopped),
    /// and check that it opens.
    Restore {
        src: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Run tests: `mlmon test rules FILE…` runs rule unit tests written
    /// for `promtool test rules`.
    Test {
        #[command(subcommand)]
        what: TestCommand,
    },
    /// Write a starter mlmon.yml, rule file and alertmanager.yml into DIR
    /// (default: the current directory); never overwrites.
    Init { dir: Option<PathBuf> },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum TestCommand {
    /// Rule unit test files in `promtool test rules` format.
    Rules {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Config file (default: ./mlmon.yml if it exists, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, overriding web.listen.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory, overriding storage.path.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Pipeline artifacts directory, overriding artifacts.dir.
    #[arg(long)]
    artifacts_dir: Option<PathBuf>,
    /// Log level filter (error, warn, info, debug, trace), or RUST_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Serve `POST /-/reload` on a non-loopback listener too (on loopback
    /// it is always served).
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    /// Serve the admin API (`POST /api/v1/admin/tsdb/snapshot`) on a
    /// non-loopback listener too.
    #[arg(long = "web.enable-admin-api")]
    enable_admin_api: bool,
    /// Reload when a file the configuration reads changed, checked this
    /// often (a Prometheus duration such as 30s).
    #[arg(long = "config.auto-reload-interval", value_name = "DURATION")]
    auto_reload_interval: Option<String>,
}

fn load_config(path: Option<PathBuf>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::load(&p),
        None if std::path::Path::new("mlmon.yml").exists() => {
            Config::load(std::path::Path::new("mlmon.yml"))
        }
        None => Ok(Config::defaults()),
    }
}

/// `mi_option_arena_eager_commit` in mimalloc v2's `mimalloc.h` (the
/// constant is not exported by libmimalloc-sys).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commits arena memory as it is used rather than up front (mimalloc then
/// also skips huge pages for it): idle RSS drops from ~18 MiB to ~8 MiB and
/// ingest gets no slower. It must run before the first allocation, which
/// happens before `main`, so it is an ELF constructor.
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    extern "C" fn set_options() {
        // SAFETY: sets a process-wide allocator option; touches no memory.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
    set_options
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("mlmon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(Command::Init { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            match mlmon::init::write(&dir) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                    println!(
                        "next: fill in the values marked FILL IN in alertmanager.yml, then run `mlmon check --config {}`",
                        dir.join("mlmon.yml").display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mlmon init: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Check { config, files, .. }) if files.is_empty() => check(config),
        Some(Command::Check { files, kind, .. }) => check_files(&files, kind.as_deref()),
        Some(Command::Test {
            what: TestCommand::Rules { files },
        }) => test_rules(&files),
        Some(Command::Run {
            pipeline,
            url,
            http_config,
            command,
        }) => {
            let http = match client_config(http_config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mlmon run: {e}");
                    return ExitCode::from(2);
                }
            };
            let target = mlmon::run::Target {
                url: server_url(url),
                pipeline,
                http,
            };
            let code = mlmon::run::run(&command, &target);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Some(Command::Backup {
            url,
            http_config,
            dest,
        }) => {
            let result = client_config(http_config)
                .and_then(|http| mlmon::backup::backup(&server_url(url), &http, &dest));
            match result {
                Ok(done) => {
                    println!("backed up to {done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mlmon backup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Restore { src, data_dir }) => match mlmon::backup::restore(&src, &data_dir) {
            Ok(done) => {
                println!("restored into {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mlmon restore: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

/// The mlmon a command talks to: `--url`, else MLMON_URL, else the
/// default listener.
fn server_url(url: Option<String>) -> String {
    url.or_else(|| std::env::var("MLMON_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8001".into())
}

/// The HTTP client settings of mlmon's own commands: `--http.config.file`
/// (else MLMON_HTTP_CONFIG), with a bearer token from MLMON_TOKEN when the
/// file gives no credentials.
fn client_config(file: Option<PathBuf>) -> Result<mlmon::http::ClientConfig, String> {
    use mlmon::http::config::{load_file, Auth, Secret};
    let file = file.or_else(|| std::env::var_os("MLMON_HTTP_CONFIG").map(PathBuf::from));
    let mut http = match file {
        Some(f) => load_file(&f)?,
        None => Default::default(),
    };
    if let (None, Ok(token)) = (&http.auth, std::env::var("MLMON_TOKEN")) {
        http.auth = Some(Auth::Authorization {
            kind: "Bearer".into(),
            credentials: Secret::Inline(token),
        });
    }
    Ok(http)
}

/// Runs rule unit tests and reports like `promtool test rules`.
fn test_rules(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        println!("Unit Testing:  {}", f.display());
        match mlmon::rules::unittest::run_file(f) {
            Ok(()) => println!("  SUCCESS\n"),
            Err(lines) => {
                failed = true;
                println!("\n");
                eprintln!("  FAILED:");
                for l in lines {
                    eprintln!("{l}");
                }
                eprintln!();
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            // Scrape and probe errors are reported by mlmon itself (once per
            // change); the TLS stack would log every failed handshake.
            tracing_subscriber::EnvFilter::try_new(format!(
                "{},rustls=off,rustls_platform_verifier=off",
                args.log_level
            ))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match load_config(args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let mut options = mlmon::app::ServeOptions {
        enable_lifecycle: args.enable_lifecycle,
        enable_admin_api: args.enable_admin_api,
        ..Default::default()
    };
    if let Some(listen) = args.listen {
        match listen.parse() {
            Ok(a) => options.overrides.listen = Some(a),
            Err(_) => {
                eprintln!("--listen: {listen:?} is not an address like 127.0.0.1:8001");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(every) = args.auto_reload_interval {
        match mlmon::model::parse_duration(&every) {
            Ok(d) if d.millis() > 0 => options.auto_reload = Some(d.std()),
            _ => {
                eprintln!(
                    "--config.auto-reload-interval: {every:?} is not a positive duration like 30s"
                );
                return ExitCode::from(2);
            }
        }
    }
    options.overrides.data_dir = args.data_dir;
    options.overrides.artifacts_dir = args.artifacts_dir;
    options.overrides.apply(&mut config);
    // Templates and rule files are parsed on these threads, 100 levels deep
    // at most; 8 MiB (instead of 2) keeps that far from the stack's end in
    // every build. Only the pages touched are committed.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mlmon::app::serve(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "mlmon stopped", error = format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if check_config(config) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Checks mlmon.yml with everything it names; prints what it found.
fn check_config(config: Config) -> bool {
    let name = config
        .source
        .as_ref()
        .map_or("<defaults>".to_string(), |p| p.display().to_string());
    for note in &config.ignored {
        println!("note: {name}: {note}");
    }
    let report = mlmon::rules::check_files(&config.rule_file_patterns());
    for line in &report.notes {
        println!("{line}");
    }
    let mut errors = report.errors;
    let notifier = match mlmon::app::notifier_config(&config) {
        Ok(am) => {
            for n in &am.notes {
                println!("{n}");
            }
            describe_notifier(&am)
        }
        Err(e) => {
            errors.extend(e.0.iter().map(ToString::to_string));
            String::new()
        }
    };
    if errors.is_empty() {
        let targets: usize = config.scrape.iter().map(|j| j.targets.len()).sum();
        let remote = match config.remote_write.len() {
            0 => String::new(),
            n => format!("; remote write to {n} endpoints"),
        };
        println!(
            "SUCCESS: {name} is valid; {} rule files, {} rules; {} scrape jobs, {targets} targets; {notifier}{remote}",
            report.files,
            report.rules,
            config.scrape.len()
        );
        true
    } else {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("FAILED: {} problems", errors.len());
        false
    }
}

fn describe_notifier(am: &mlmon::notify::AmConfig) -> String {
    let count = |kind: &str| {
        am.receivers
            .iter()
            .flat_map(|r| &r.integrations)
            .filter(|i| i.kind() == kind)
            .count()
    };
    // Email, Slack and webhook always (what the original stack uses), the
    // other kinds when present.
    let mut kinds = vec![
        format!("{} email", count("email")),
        format!("{} slack", count("slack")),
        format!("{} webhook", count("webhook")),
    ];
    if count("telegram") > 0 {
        kinds.push(format!("{} telegram", count("telegram")));
    }
    format!(
        "notifier: {} receivers ({}), {} inhibit rules",
        am.receivers.len(),
        kinds.join(", "),
        am.inhibit_rules.len()
    )
}

/// `mlmon check FILE…`: each file is checked as what its keys say it is.
fn check_files(files: &[PathBuf], kind: Option<&str>) -> ExitCode {
    let mut ok = true;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", path.display());
                ok = false;
                continue;
            }
        };
        let keys: Vec<String> = match mlmon::model::parse_yaml::<serde_yaml::Value>(&text) {
            Ok(serde_yaml::Value::Mapping(m)) => m
                .keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let has = |k: &str| keys.iter().any(|x| x == k);
        let kind = kind.unwrap_or(if has("groups") {
            "rules"
        } else if has("route") || has("receivers") || has("inhibit_rules") {
            "alertmanager"
        } else {
            "mlmon"
        });
        let name = path.display();
        if kind == "rules" {
            let report = mlmon::rules::check_files(&[path.display().to_string()]);
            if report.errors.is_empty() {
                println!("SUCCESS: {name}: {} rules", report.rules);
            } else {
                for e in &report.errors {
                    eprintln!("{e}");
                }
                eprintln!("FAILED: {name}: {} problems", report.errors.len());
                ok = false;
            }
        } else if kind == "alertmanager" {
            match mlmon::notify::AmConfig::load(path) {
                Ok(am) => {
                    for n in &am.notes {
                        println!("{n}");
                    }
                    println!(
                        "SUCCESS: {name} is a valid Alertmanager configuration; {}",
                        describe_notifier(&am)
                    );
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{e}");
                    }
                    eprintln!("FAILED: {name}: {} problems", errors.0.len());
                    ok = false;
                }
            }
        } else {
            match Config::load(path) {
                Ok(c) => ok &= check_config(c),
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
