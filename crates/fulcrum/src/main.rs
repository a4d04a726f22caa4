//! `fulcrum`: the command-line entry point.
//!
//! Parses the command line, sets up logging and the tokio runtime, and wires
//! the crates together: configuration (`fulcrum-config`), the runtime
//! (`fulcrum-proxy`), the simulator (`fulcrum-sim`) and the testbed
//! (`fulcrum-testbed`). Signals: SIGINT/SIGTERM stop gracefully (a second
//! one exits at once), SIGHUP reloads the configuration file.

mod demo;
mod run;
mod simulate;
mod testbed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: its per-thread free lists make the allocations of a new
/// connection (task, buffers, registration) cheaper than glibc's malloc,
/// which spent about 3 800 instructions per connection in `_int_malloc`,
/// `_int_free` and `malloc_consolidate`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fulcrum: a load-balancing reverse proxy that schedules on live signals.
#[derive(Parser, Debug)]
#[command(name = "fulcrum", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded demo: three testbed backends (one slow) behind the proxy.
    Demo(demo::DemoArgs),
    /// Run a configuration file.
    Run {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 when valid, 1 with every error otherwise.
    Check {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running instance to reload its configuration file.
    Reload {
        /// The instance's admin address.
        #[arg(long, default_value = fulcrum_config::DEFAULT_ADMIN_BIND)]
        admin: SocketAddr,
    },
    /// Run a simulation scenario against the selectors.
    Simulate(simulate::SimulateArgs),
    /// Programmable test servers.
    Testbed {
        #[command(subcommand)]
        command: testbed::TestbedCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config } => run::run(&config),
        Command::Demo(args) => demo::demo(args),
        Command::Reload { admin } => run::reload(admin),
        Command::Simulate(args) => simulate::run(args),
        Command::Testbed { command } => testbed::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match fulcrum_config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} listener(s), {} cluster(s), {} backend(s))",
                path.display(),
                config.listeners.len(),
                config.clusters.len(),
                config
                    .clusters
                    .values()
                    .map(|c| c.backends.len())
                    .sum::<usize>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FULCRUM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Builds the tokio runtime: one worker per core unless configured.
pub(crate) fn tokio_runtime(
    worker_threads: Option<usize>,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("fulcrum-worker");
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    Ok(builder.build()?)
}
