//! `fulcrum simulate`: run a scenario file through the simulator.
//!
//! ```text
//! fulcrum simulate scenarios/NAME.toml [--algorithms a,b] [--seeds N]
//!                  [--format table|json|csv] [--plot out.svg]
//! ```
//!
//! Each algorithm runs on seeds `0..N` and every metric is the median over
//! the seeds. Results go to stdout; progress goes to stderr (a live line on a
//! terminal, one line per algorithm otherwise), so `--format json > out.json`
//! stays clean. The scenario format and the metrics are described in
//! `docs/simulator.md`.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use fulcrum_balance::Algorithm;
use fulcrum_sim::{report, Scenario};

/// Output format of `fulcrum simulate`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// A fixed-width table for terminals.
    #[default]
    Table,
    /// `{"scenario": NAME, "results": [{"algorithm": A, "p50_ms": …}, …]}`.
    Json,
    /// One header line, one row per algorithm.
    Csv,
}

/// Arguments of `fulcrum simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario file (TOML), e.g. `scenarios/s1-homogeneous-90.toml`.
    pub scenario: PathBuf,
    /// Algorithms to compare, comma-separated (default: the scenario's
    /// `algorithms`, else every algorithm this build knows).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    pub algorithms: Vec<String>,
    /// Seeds per algorithm; each metric is the median over seeds
    /// (default: the scenario's `seeds`, else 5).
    #[arg(long, value_name = "N")]
    pub seeds: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also draw the latency CDF of each algorithm to this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
}

/// Runs `fulcrum simulate`.
pub fn run(args: SimulateArgs) -> Result<()> {
    let scenario = Scenario::from_file(&args.scenario)?;
    let algorithms = choose_algorithms(&args.algorithms, &scenario)?;
    let seeds = args.seeds.unwrap_or(scenario.seeds);
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }

    let total = algorithms.len() as u64 * seeds;
    let started = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut done = 0u64;
    let comparison = fulcrum_sim::compare(&scenario, &algorithms, seeds, |algorithm, seed| {
        done += 1;
        if live {
            eprint!(
                "\r\x1b[2K[{done}/{total}] {} seed {seed} ({:.1}s elapsed)",
                algorithm.name(),
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        } else if seed == 0 {
            eprintln!(
                "simulating {} with {} ({seeds} seeds)",
                scenario.name,
                algorithm.name()
            );
        }
    });
    if live {
        eprint!("\r\x1b[2K");
    }
    eprintln!(
        "simulated {} runs of {} in {:.1}s",
        total,
        scenario.name,
        started.elapsed().as_secs_f64()
    );

    let text = match args.format {
        Format::Table => report::table(&comparison),
        Format::Json => report::json(&comparison) + "\n",
        Format::Csv => report::csv(&comparison),
    };
    print!("{text}");
    if let Some(path) = &args.plot {
        fulcrum_sim::plot::latency_cdf_svg(&comparison, path)?;
        eprintln!("wrote latency CDFs to {}", path.display());
    }
    Ok(())
}

/// The algorithms to run: the command line's (unknown names are an error
/// listing the valid ones), else the scenario's (names this build does not
/// have yet are skipped with a note), else all.
fn choose_algorithms(asked: &[String], scenario: &Scenario) -> Result<Vec<Algorithm>> {
    let asked: Vec<&str> = asked
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if !asked.is_empty() {
        return asked
            .iter()
            .map(|name| Algorithm::from_str(name).map_err(|e| anyhow!("--algorithms: {e}")))
            .collect();
    }
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for name in &scenario.algorithms {
        match Algorithm::from_str(name) {
            Ok(a) => chosen.push(a),
            Err(_) => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "note: scenario {} lists algorithms this build does not have, skipped: {}",
            scenario.name,
            missing.join(", ")
        );
    }
    if chosen.is_empty() {
        if !scenario.algorithms.is_empty() {
            eprintln!("note: running every algorithm this build has instead");
        }
        chosen = Algorithm::ALL.to_vec();
    }
    Ok(chosen)
}
