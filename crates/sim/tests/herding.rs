//! S5 in small: many proxies sharing backend load reports must not herd.
//!
//! The S2(b) cluster (8 fast and 2 three-times-slower FCFS backends, 80%
//! load, 20 ms timeout) behind 32 proxies, as `scenarios/s5-*.toml`, cut to
//! 6 s and four seeds so it runs in seconds.

use std::path::Path;

use fulcrum_balance::Algorithm;
use fulcrum_sim::{run, Scenario};

const S5_SMALL: &str = r#"
    duration = "6s"
    warmup = "1s"
    timeout = "20ms"
    proxies = 32
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

/// Mean timeout rate of peak-ewma over seeds 0..4 with this `[reports]` table.
fn timeouts(reports: &str) -> f64 {
    let text = S5_SMALL.replace("REPORTS", reports);
    let s = Scenario::from_toml(&text, Path::new("s5-small.toml")).expect("valid scenario");
    (0..4)
        .map(|seed| run(&s, Algorithm::PeakEwma, seed).timeout_rate)
        .sum::<f64>()
        / 4.0
}

#[test]
fn peak_ewma_uses_fresh_reports_without_herding() {
    let none = timeouts("");
    let fresh = timeouts("[reports]\ninterval = \"10ms\"\nlag = \"10ms\"");
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
    let stale = timeouts("[reports]\ninterval = \"10ms\"\nlag = \"100ms\"");
    assert!(
        stale < 0.2 && stale < none * 2.0,
        "timeouts with 100 ms-old reports {:.3}% vs none {:.3}%",
        stale * 100.0,
        none * 100.0
    );
}
