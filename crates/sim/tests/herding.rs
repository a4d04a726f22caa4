//! S5 in small: many proxies sharing backend load reports must not herd.
//!
//! The S2(b) cluster (8 fast and 2 three-times-slower FCFS backends, 80%
//! load, 20 ms timeout) behind 32 proxies, as `scenarios/s5-*.toml`, cut to
//! 6–15 s and four seeds so it runs in seconds. Peak-ewma and prequal read
//! the reports.

use std::path::Path;

use fulcrum_balance::Algorithm;
use fulcrum_sim::{run, Scenario};

const S5_SMALL: &str = r#"
    duration = "DURATION"
    warmup = "WARMUP"
    timeout = "20ms"
    proxies = PROXIES
    [arrivals]
    process = "poisson"
    load = 0.8
    [service]
    distribution = "exponential"
    mean = "1ms"
    REPORTS
    [[backends]]
    name = "fast"
    count = 8
    [[backends]]
    name = "slow"
    count = 2
    speed = 0.3333333333333333
"#;

const FRESH_REPORTS: &str = "[reports]\ninterval = \"10ms\"\nlag = \"10ms\"";
const STALE_REPORTS: &str = "[reports]\ninterval = \"10ms\"\nlag = \"100ms\"";

/// Mean timeout rate and p99 (ms) of peak-ewma over seeds 0..4 with
/// `proxies` proxies, this `[reports]` table and `duration` seconds (a
/// fifth of them warm-up, at least one).
fn measure(proxies: u32, reports: &str, duration: u32) -> (f64, f64) {
    measure_with(Algorithm::PeakEwma, proxies, reports, duration)
}

/// As [`measure`], for `algorithm`.
fn measure_with(algorithm: Algorithm, proxies: u32, reports: &str, duration: u32) -> (f64, f64) {
    let text = S5_SMALL
        .replace("REPORTS", reports)
        .replace("PROXIES", &proxies.to_string())
        .replace("DURATION", &format!("{duration}s"))
        .replace("WARMUP", &format!("{}s", (duration / 5).max(1)));
    let s = Scenario::from_toml(&text, Path::new("s5-small.toml")).expect("valid scenario");
    let runs: Vec<_> = (0..4).map(|seed| run(&s, algorithm, seed)).collect();
    let mean = |f: &dyn Fn(&fulcrum_sim::Metrics) -> f64| runs.iter().map(f).sum::<f64>() / 4.0;
    (mean(&|m| m.timeout_rate), mean(&|m| m.p99_ms))
}

/// Mean timeout rate of peak-ewma with 32 proxies over 6 s.
fn timeouts(reports: &str) -> f64 {
    measure(32, reports, 6).0
}

#[test]
fn peak_ewma_uses_fresh_reports_without_herding() {
    let none = timeouts("");
    let fresh = timeouts(FRESH_REPORTS);
    assert!(
        fresh < 0.01 && fresh < none / 3.0,
        "timeouts with 10 ms-old reports {:.3}% vs none {:.3}%",
        fresh * 100.0,
        none * 100.0
    );
}

#[test]
fn peak_ewma_is_not_misled_by_stale_reports() {
    // 100 ms-old reports say little about queues that turn over every few
    // ms; read naively they herd every proxy onto the backend that looked
    // idle (69% timeouts in an earlier attempt). They must not make things
    // clearly worse than no reports at all.
    let none = timeouts("");
    let stale = timeouts(STALE_REPORTS);
    assert!(
        stale < 0.2 && stale < none * 2.0,
        "timeouts with 100 ms-old reports {:.3}% vs none {:.3}%",
        stale * 100.0,
        none * 100.0
    );
}

#[test]
fn peak_ewma_with_fresh_reports_keeps_the_tail_short() {
    // Over 15 s the tail shows whether timeouts feed on themselves. When
    // every failure, timeouts included, counted against a backend's cost
    // and share for the ten seconds its error rate takes to decay, the
    // proxies avoided backends whose queues had long drained and
    // overloaded the rest: p99 about 18.2 ms, 0.58% timeouts. Counting only
    // fast failures while reports are in force: about 15.8 ms, 0.24%.
    let (timeouts, p99) = measure(32, FRESH_REPORTS, 15);
    assert!(
        p99 < 17.3 && timeouts < 0.004,
        "32 proxies, 10 ms-old reports: p99 {p99:.2} ms, timeouts {:.3}%",
        timeouts * 100.0
    );
}

#[test]
fn peak_ewma_with_reports_does_not_collapse_behind_one_proxy() {
    // One proxy reading ORCA-style reports, as a single real proxy would.
    // Penalising timeouts as errors tipped half the seeds into a lasting
    // state with 55% timeouts (every backend's error rate near 1, the
    // traffic herded onto the few that had none); with only fast failures
    // penalised every seed stays near 0.03%.
    let (timeouts, p99) = measure(1, FRESH_REPORTS, 6);
    assert!(
        timeouts < 0.005 && p99 < 12.0,
        "one proxy, 10 ms-old reports: p99 {p99:.2} ms, timeouts {:.3}%",
        timeouts * 100.0
    );
}

#[test]
fn prequal_is_not_made_worse_by_reports() {
    // Prequal used to scale each probe's requests in flight by the
    // reported utilisation, and every proxy's coldest probe was the
    // backend that had looked idle: 14% timeouts with 10 ms-old reports,
    // 89% with 100 ms-old ones, against 0.11% without reports. It now draws
    // its probes from the report shares, as peak-ewma draws its candidates.
    let timeouts = |reports| measure_with(Algorithm::Prequal, 32, reports, 6).0;
    let fresh = timeouts(FRESH_REPORTS);
    let stale = timeouts(STALE_REPORTS);
    assert!(
        fresh < 0.005 && stale < 0.005,
        "prequal timeouts with 10 ms-old reports {:.3}%, 100 ms-old {:.3}%",
        fresh * 100.0,
        stale * 100.0
    );
}
