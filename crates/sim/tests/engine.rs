//! Behaviour of the engine a user can see in the metrics.

use std::path::Path;
use std::sync::Mutex;

use fulcrum_balance::{Algorithm, BackendId, BackendSet, PickContext, Selector, MILLISECOND};
use fulcrum_sim::{run, run_with, Scenario};

fn scenario(text: &str) -> Scenario {
    Scenario::from_toml(text, Path::new("test.toml")).expect("valid test scenario")
}

const TWO_BACKENDS: &str = r#"
    duration = "10s"
    warmup = "1s"
    timeout = "50ms"
    [arrivals]
    process = "poisson"
    load = 0.5
    [service]
    distribution = "exponential"
    mean = "1ms"
    [[backends]]
    name = "a"
    [[backends]]
    name = "b"
"#;

#[test]
fn runs_are_deterministic_under_a_seed() {
    let s = scenario(TWO_BACKENDS);
    let a = run(&s, Algorithm::RoundRobin, 42);
    let b = run(&s, Algorithm::RoundRobin, 42);
    let c = run(&s, Algorithm::RoundRobin, 43);
    assert_eq!(a.cdf, b.cdf);
    assert_eq!(a.requests, b.requests);
    assert_ne!(a.cdf, c.cdf);
}

#[test]
fn round_robin_splits_evenly_and_reports_shares_by_name() {
    let m = run(&scenario(TWO_BACKENDS), Algorithm::RoundRobin, 1);
    let a = m.backend_share.get("a").unwrap();
    assert!((a - 0.5).abs() < 0.001, "{a}");
    assert_eq!(m.timeout_rate, 0.0);
    assert_eq!(m.error_rate, 0.0);
}

#[test]
fn stalled_backend_times_out_while_the_server_keeps_working() {
    // b is 100x slower for the whole run: every request it gets takes ~100 ms
    // of work against a 50 ms timeout, and round-robin keeps sending it half.
    let text = TWO_BACKENDS.replace(
        "name = \"b\"",
        "name = \"b\"\nstalls = [{ from = \"0s\", factor = 100.0 }]",
    );
    let m = run(&scenario(&text), Algorithm::RoundRobin, 1);
    assert!(m.timeout_rate > 0.45, "timeouts {}", m.timeout_rate);
    // Timed-out requests count at the timeout value.
    assert!((m.p99_ms - 50.0).abs() < 1e-6, "p99 {}", m.p99_ms);
    // The server still holds its (ever-growing) queue at the end.
    assert!(m.final_backlog[1] > 1000, "{:?}", m.final_backlog);
}

#[test]
fn fail_fast_answers_count_as_errors_not_latency() {
    let text = TWO_BACKENDS.replace(
        "name = \"b\"",
        "name = \"b\"\nfailures = [{ mode = \"fail-fast\", from = \"0s\", latency = \"0.1ms\" }]",
    );
    let m = run(&scenario(&text), Algorithm::RoundRobin, 1);
    assert!((m.error_rate - 0.5).abs() < 0.01, "errors {}", m.error_rate);
    // The errors' 0.1 ms latencies do not drag the median down.
    assert!(m.p50_ms > 0.4, "p50 {}", m.p50_ms);
}

#[test]
fn health_detection_takes_a_black_hole_out_of_rotation() {
    let text = TWO_BACKENDS.replace(
        "name = \"b\"",
        "name = \"b\"\nfailures = [{ mode = \"black-hole\", from = \"2s\", until = \"4s\", detect = \"500ms\" }]",
    );
    let m = run(&scenario(&text), Algorithm::RoundRobin, 1);
    // Half the traffic for 0.5 s of a 9 s measured window times out.
    let expected = 0.5 * 0.5 / 9.0;
    assert!(
        (m.timeout_rate - expected).abs() < 0.2 * expected,
        "{}",
        m.timeout_rate
    );
}

/// Records, per pick, what the selector saw as backend 0's reported load.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<(u64, Option<f64>)>>,
}

#[derive(Debug)]
struct Recording<'a>(&'a Recorder);

impl Selector for Recording<'static> {
    fn name(&self) -> &'static str {
        "test-recorder"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let reported = set.get(BackendId(0)).state.load.reported(ctx.now, u64::MAX);
        self.0.seen.lock().unwrap().push((ctx.now, reported));
        Some(BackendId(0))
    }
}

#[test]
fn load_reports_arrive_after_their_lag() {
    let text = TWO_BACKENDS.replace(
        "[[backends]]\n    name = \"a\"",
        "[reports]\n    interval = \"10ms\"\n    lag = \"100ms\"\n    [[backends]]\n    name = \"a\"",
    );
    let s = scenario(&text);
    let recorder: &'static Recorder = Box::leak(Box::default());
    run_with(&s, &|_, _| Box::new(Recording(recorder)), 5);
    let seen = recorder.seen.lock().unwrap();
    let first = seen
        .iter()
        .find(|(_, r)| r.is_some())
        .expect("some report arrived")
        .0;
    assert!(
        first >= 100 * MILLISECOND,
        "report seen at {first} ns, before the lag"
    );
    assert!(first < 110 * MILLISECOND, "report seen only at {first} ns");
    assert!(seen
        .iter()
        .filter(|(t, _)| *t < 100 * MILLISECOND)
        .all(|(_, r)| r.is_none()));
}

#[test]
fn each_proxy_learns_only_from_its_own_requests() {
    // Two proxies; a selector that counts how many latency observations its
    // own view of backend 0 has. Together they must add up to all requests.
    #[derive(Debug)]
    struct Count;
    impl Selector for Count {
        fn name(&self) -> &'static str {
            "test-count"
        }
        fn pick(&self, _: &BackendSet, _: &mut PickContext<'_>) -> Option<BackendId> {
            Some(BackendId(0))
        }
    }
    let text = TWO_BACKENDS.replace("duration = \"10s\"", "duration = \"10s\"\nproxies = 2");
    let s = scenario(&text);
    let views: Mutex<Vec<BackendSet>> = Mutex::new(Vec::new());
    run_with(
        &s,
        &|set, _| {
            views.lock().unwrap().push(set.clone());
            Box::new(Count)
        },
        9,
    );
    let views = views.into_inner().unwrap();
    // Builds happen per proxy; keep the last two (one per proxy).
    let last: Vec<&BackendSet> = views.iter().rev().take(2).collect();
    let a = last[0].get(BackendId(0)).state.load.requests();
    let b = last[1].get(BackendId(0)).state.load.requests();
    assert!(a > 1000 && b > 1000, "{a} {b}");
    assert!(!std::sync::Arc::ptr_eq(
        &last[0].get(BackendId(0)).state,
        &last[1].get(BackendId(0)).state
    ));
    let ratio = a as f64 / b as f64;
    assert!(
        (0.9..1.1).contains(&ratio),
        "proxies split traffic evenly: {a} vs {b}"
    );
}

/// S8 reduced: two zones of two backends, a client source near each, the
/// first zone failing for a while.
const TWO_ZONES: &str = r#"
    duration = "12s"
    warmup = "1s"
    timeout = "1s"
    geo_max_in_flight = 3
    [arrivals]
    process = "poisson"
    load = 0.4
    [service]
    distribution = "exponential"
    mean = "2ms"
    [[clients]]
    name = "cork"
    lat = 51.9
    lon = -8.47
    [[clients]]
    name = "new-york"
    lat = 40.7
    lon = -74.0
    [[backends]]
    name = "dublin"
    count = 2
    workers = 2
    zone = "eu-west"
    lat = 53.35
    lon = -6.26
    failures = [{ mode = "fail-fast", from = "6s", until = "9s", detect = "0s" }]
    [[backends]]
    name = "virginia"
    count = 2
    workers = 2
    zone = "us-east"
    lat = 38.9
    lon = -77.4
"#;

#[test]
fn geo_keeps_clients_in_their_zone_and_fails_over_without_errors() {
    let sc = scenario(TWO_ZONES);
    for seed in 1..=3 {
        let m = run(&sc, Algorithm::Geo, seed);
        let in_zone = m.in_zone_share.expect("clients give an in-zone share");
        let farther = m.farther_while_headroom.expect("and a farther share");
        assert!(in_zone >= 0.95, "seed {seed}: in-zone {in_zone}");
        assert!(farther <= 0.02, "seed {seed}: farther {farther}");
        assert_eq!(m.error_rate, 0.0, "seed {seed}");
        assert_eq!(m.timeout_rate, 0.0, "seed {seed}");
        // Virginia served Cork while Dublin was down (3 s of 11 s measured).
        assert!(m.group_share.get("virginia").unwrap() > 0.55, "{m:?}");
    }
    // A selector blind to the client's position serves about half in-zone.
    let rr = run(&sc, Algorithm::RoundRobin, 1);
    let in_zone = rr.in_zone_share.unwrap();
    assert!(
        (0.4..0.6).contains(&in_zone),
        "round-robin in-zone {in_zone}"
    );
}

#[test]
fn scenarios_without_clients_have_no_geo_metrics() {
    let m = run(&scenario(TWO_BACKENDS), Algorithm::RoundRobin, 1);
    assert_eq!(m.in_zone_share, None);
    assert_eq!(m.farther_while_headroom, None);
}

#[test]
fn in_flight_floor_is_the_pigeonhole_bound_below_every_selector() {
    // Ten backends at half load hold well under one request each on
    // average, so the best any assignment can do (one request on the
    // busiest backend) already reads as max/avg > 1. Every selector's
    // measured ratio is at or above that floor, and a selector that ignores
    // load sits clearly above it.
    let text = TWO_BACKENDS.replace(
        "[[backends]]\n    name = \"a\"\n    [[backends]]\n    name = \"b\"",
        "[[backends]]\n    name = \"a\"\n    count = 10",
    );
    let s = scenario(&text);
    for algorithm in [Algorithm::Random, Algorithm::LeastConn] {
        let m = run(&s, algorithm, 7);
        assert!(
            m.max_avg_inflight_floor > 1.5,
            "{algorithm:?} floor {}",
            m.max_avg_inflight_floor
        );
        assert!(
            m.max_avg_inflight >= m.max_avg_inflight_floor - 1e-9,
            "{algorithm:?}: {} below the floor {}",
            m.max_avg_inflight,
            m.max_avg_inflight_floor
        );
    }
    let random = run(&s, Algorithm::Random, 7);
    let least = run(&s, Algorithm::LeastConn, 7);
    assert!(
        random.max_avg_inflight > least.max_avg_inflight,
        "random {} least-conn {}",
        random.max_avg_inflight,
        least.max_avg_inflight
    );
}
