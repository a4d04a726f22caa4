//! `fulcrum simulate`: run a scenario file through the simulator.

use std::path::PathBuf;

/// Arguments of `fulcrum simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario file (see `scenarios/`).
    pub scenario: PathBuf,
}

/// Runs the simulation.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "the simulator is not part of this build yet (scenario {})",
        args.scenario.display()
    )
}
