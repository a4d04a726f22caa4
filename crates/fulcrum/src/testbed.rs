//! `fulcrum testbed ...`: programmable servers for demos, tests and benchmarks.

use std::net::SocketAddr;

use clap::Subcommand;
use fulcrum_testbed::{spawn_backend, BackendOptions, LatencyDist, Mode};

/// Testbed subcommands.
#[derive(Subcommand, Debug)]
pub enum TestbedCommand {
    /// An HTTP backend answering with its name (`x-backend` header and body).
    Backend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Name sent in `x-backend` and the body.
        #[arg(long)]
        name: String,
        /// Added latency: `5ms`, `5ms..20ms`, `exp:5ms`, `lognormal:5ms:0.5`.
        #[arg(long, default_value = "0ms")]
        latency: LatencyDist,
        /// Behaviour: `normal`, `fail`, `fail:500`, `blackhole`, `reset`, `flaky:0.1`.
        #[arg(long, default_value = "normal")]
        mode: Mode,
        /// Status of normal answers.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Requests served at once; more wait in line.
        #[arg(long)]
        capacity: Option<usize>,
        /// Report load in `endpoint-load-metrics` (ORCA) and `x-fulcrum-in-flight`.
        #[arg(long)]
        load_report: bool,
    },
}

/// Runs a testbed command until Ctrl-C.
pub fn run(command: TestbedCommand) -> anyhow::Result<()> {
    let TestbedCommand::Backend {
        listen,
        name,
        latency,
        mode,
        status,
        capacity,
        load_report,
    } = command;
    let mut opts = BackendOptions::new(name);
    opts.listen = listen;
    opts.latency = latency;
    opts.mode = mode;
    opts.status = status;
    opts.capacity = capacity;
    opts.load_report = load_report;
    let rt = crate::tokio_runtime(Some(1))?;
    rt.block_on(async move {
        let backend = spawn_backend(opts).await?;
        println!(
            "testbed backend `{}` on http://{}",
            backend.name, backend.addr
        );
        tokio::signal::ctrl_c().await?;
        backend.shutdown().await;
        Ok(())
    })
}
