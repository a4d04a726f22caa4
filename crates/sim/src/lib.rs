//! # fulcrum-sim — a deterministic discrete-event simulator for selectors
//!
//! The simulator answers "how would this algorithm behave on that cluster?"
//! without sockets or clocks, and it answers with the **same** selectors the
//! proxy runs: every algorithm is built through
//! [`Algorithm::build`](fulcrum_balance::Algorithm::build) and driven through
//! the [`Selector`](fulcrum_balance::Selector) trait, with in-flight counts
//! kept by the balance crate's [`InFlightGuard`](fulcrum_balance::InFlightGuard)s
//! and latencies fed to [`Load::observe`](fulcrum_balance::Load::observe).
//! An algorithm added to `fulcrum-balance` is simulated with no change here.
//!
//! A [`Scenario`] (a TOML file under `scenarios/`) describes the world:
//!
//! * **arrivals** — Poisson, on/off bursts, a linear ramp, load steps, or a
//!   replayed CSV trace;
//! * **service times** — constant, exponential, lognormal, bimodal or
//!   bounded Pareto;
//! * **servers** — `workers` serving FCFS, processor sharing, or a pure
//!   delay (I/O-bound); a speed that changes in steps or under a
//!   Markov-modulated antagonist; stall windows (latency × K), fail-fast and
//!   black-hole failure windows, optional health detection; LRU key caches
//!   where a miss costs more; backends joining and leaving;
//! * **proxies** — N independent proxies, each with its own view: its own
//!   in-flight counts and latency observations, plus (optionally) every
//!   backend's true utilisation reported with a lag;
//! * **a timeout** after which the proxy gives up (the server keeps working).
//!
//! [`run`] executes one algorithm on one seed; [`compare`] runs a list of
//! algorithms over several seeds and keeps the per-field median. The
//! [`report`] module renders results as a table, JSON or CSV and [`plot`]
//! draws latency CDFs to SVG.
//!
//! The engine is validated against queueing theory (tests in `tests/`):
//! M/M/1 mean response time, the supermarket model for d random choices,
//! and the round-robin instability threshold `N·μ_slow/Σμ`.

pub mod dist;
pub mod duration;
pub mod engine;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod server;

use fulcrum_balance::Algorithm;

pub use engine::{run, run_with, BuildSelector};
pub use metrics::{Metrics, Shares};
pub use scenario::{Scenario, ScenarioError};

/// The median metrics of one algorithm over several seeds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AlgorithmResult {
    /// Configuration name of the algorithm.
    pub algorithm: String,
    /// Seeds run (0..seeds).
    pub seeds: u64,
    /// Per-field median over the seeds.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The results of a scenario for several algorithms.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// One entry per algorithm, in the order asked.
    pub results: Vec<AlgorithmResult>,
}

/// Runs every algorithm on seeds `0..seeds` and keeps the median of each
/// metric. `progress(algorithm, seed)` is called before each run.
pub fn compare(
    scenario: &Scenario,
    algorithms: &[Algorithm],
    seeds: u64,
    mut progress: impl FnMut(Algorithm, u64),
) -> Comparison {
    let results = algorithms
        .iter()
        .map(|&algorithm| {
            let runs: Vec<Metrics> = (0..seeds)
                .map(|seed| {
                    progress(algorithm, seed);
                    run(scenario, algorithm, seed)
                })
                .collect();
            AlgorithmResult {
                algorithm: algorithm.name().to_owned(),
                seeds,
                metrics: Metrics::median_of(&runs),
            }
        })
        .collect();
    Comparison {
        scenario: scenario.name.clone(),
        results,
    }
}
