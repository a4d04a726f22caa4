//! Validation gates: the engine against queueing theory.
//!
//! These must hold before any algorithm comparison is believed:
//!
//! 1. M/M/1 mean response time within 2% of `1/(μ−λ)`;
//! 2. random / two / three random choices of the least loaded (the
//!    supermarket model, n = 500, λ = 0.9) within 3% of 10, 2.61 and 2.03;
//! 3. round-robin over 2 slow (3×) and 8 fast servers turns unstable at
//!    `N·μ_slow/Σμ` ≈ 38.5% load, with the slow servers' backlog growing at
//!    the rate theory predicts.
//!
//! Sizes are cut to run in a few seconds with `--release`.

use std::path::Path;
use std::str::FromStr;

use fulcrum_balance::{Algorithm, BackendId, BackendSet, PickContext, Selector};
use fulcrum_sim::{run, run_with, Scenario};

fn scenario(text: &str) -> Scenario {
    Scenario::from_toml(text, Path::new("test.toml")).expect("valid test scenario")
}

#[test]
fn mm1_mean_response_matches_theory() {
    // μ = 1/ms, λ = 0.5/ms: mean response 1/(μ−λ) = 2 ms.
    let s = scenario(
        r#"
        duration = "1800s"
        warmup = "10s"
        [arrivals]
        process = "poisson"
        load = 0.5
        [service]
        distribution = "exponential"
        mean = "1ms"
        [[backends]]
        name = "only"
        "#,
    );
    let m = run(&s, Algorithm::RoundRobin, 1);
    let rel = (m.mean_ms - 2.0).abs() / 2.0;
    assert!(
        rel < 0.02,
        "M/M/1 mean {} ms vs 2 ms ({:.2}% off)",
        m.mean_ms,
        rel * 100.0
    );
    assert!(m.requests > 800_000);
}

/// Textbook d-choice policy, test-only: sample `d` backends uniformly (with
/// replacement, as in the supermarket model) and take the one with the
/// fewest requests in flight; `d = 1` is random assignment.
#[derive(Debug)]
struct DChoice(usize);

impl Selector for DChoice {
    fn name(&self) -> &'static str {
        "test-d-choice"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let n = set.len();
        (0..self.0)
            .map(|_| BackendId(ctx.rng.usize(0..n) as u32))
            .min_by_key(|&id| set.get(id).state.load.in_flight())
    }
}

/// Mean time in system of the supermarket model (n → ∞, FCFS, exp(1)):
/// `Σ_{i≥1} λ^((d^i − d)/(d − 1))` for d ≥ 2, `1/(1−λ)` for d = 1.
fn supermarket_mean(lambda: f64, d: u32) -> f64 {
    if d == 1 {
        return 1.0 / (1.0 - lambda);
    }
    let d = d as f64;
    (1..40)
        .map(|i| lambda.powf((d.powi(i) - d) / (d - 1.0)))
        .sum()
}

fn supermarket_scenario() -> Scenario {
    scenario(
        r#"
        duration = "4s"
        warmup = "1s"
        [arrivals]
        process = "poisson"
        load = 0.9
        [service]
        distribution = "exponential"
        mean = "1ms"
        [[backends]]
        name = "s"
        count = 500
        "#,
    )
}

#[test]
fn supermarket_model_matches_d_choice_theory() {
    assert!((supermarket_mean(0.9, 2) - 2.61).abs() < 0.01);
    assert!((supermarket_mean(0.9, 3) - 2.03).abs() < 0.01);
    let s = supermarket_scenario();
    for d in [1usize, 2, 3] {
        let m = run_with(&s, &|_, _| Box::new(DChoice(d)), 7);
        let want = supermarket_mean(0.9, d as u32);
        let rel = (m.mean_ms - want).abs() / want;
        assert!(
            rel < 0.03,
            "d = {d}: mean {} vs {want} ({:.2}% off)",
            m.mean_ms,
            rel * 100.0
        );
    }
}

#[test]
fn real_random_and_p2c_selectors_match_the_supermarket_model() {
    let s = supermarket_scenario();
    for (name, d) in [("random", 1), ("p2c", 2)] {
        let algorithm = Algorithm::from_str(name).expect("a known algorithm");
        let m = run(&s, algorithm, 7);
        let want = supermarket_mean(0.9, d);
        let rel = (m.mean_ms - want).abs() / want;
        assert!(
            rel < 0.03,
            "{name}: mean {} vs {want} ({:.2}% off)",
            m.mean_ms,
            rel * 100.0
        );
    }
}

fn rr_heterogeneous(load: f64) -> Scenario {
    scenario(&format!(
        r#"
        duration = "60s"
        [arrivals]
        process = "poisson"
        load = {load}
        [service]
        distribution = "exponential"
        mean = "1ms"
        [[backends]]
        name = "fast"
        count = 8
        [[backends]]
        name = "slow"
        count = 2
        speed = 0.3333333333333333
        "#
    ))
}

#[test]
fn round_robin_turns_unstable_at_the_theoretical_threshold() {
    // Σμ = 8 + 2/3 per ms; round-robin gives each server λ/10, so the slow
    // ones saturate at λ = 10/3 per ms: load 10/3 / (26/3) = 5/13 ≈ 0.385.
    let threshold = 5.0 / 13.0;
    let capacity = 26.0 / 3.0 * 1000.0; // requests per second
    let mu_slow = 1000.0 / 3.0;
    let seconds = 60.0;

    let below = run(&rr_heterogeneous(0.9 * threshold), Algorithm::RoundRobin, 3);
    let slow_backlog = below.final_backlog[8].max(below.final_backlog[9]);
    assert!(
        slow_backlog < 150,
        "stable below threshold, backlog {slow_backlog}"
    );

    let load = 1.1 * threshold;
    let above = run(&rr_heterogeneous(load), Algorithm::RoundRobin, 3);
    let growth = (load * capacity / 10.0 - mu_slow) * seconds;
    for slow in [8, 9] {
        let backlog = above.final_backlog[slow] as f64;
        assert!(
            (backlog - growth).abs() < 0.2 * growth,
            "slow backend {slow}: backlog {backlog} vs theory {growth}"
        );
    }
    assert!(
        above.final_backlog[..8].iter().all(|&b| b < 50),
        "{:?}",
        above.final_backlog
    );
}
