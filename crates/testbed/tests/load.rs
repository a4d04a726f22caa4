//! The load generator against testbed backends on real sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum_testbed::{
    run_load, spawn_backend, try_run_load, Arrival, BackendOptions, LatencyDist, LoadError,
    LoadOptions, Mode,
};
use http::Method;

/// Upper bound that only catches hangs.
const HANG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn load_counts_requests_per_backend_and_status() {
    let a = spawn_backend(BackendOptions::new("a")).await.unwrap();
    let mut b_opts = BackendOptions::new("b");
    b_opts.mode = Mode::Fail { status: 503 };
    let b = spawn_backend(b_opts).await.unwrap();

    let mut opts = LoadOptions::new(a.addr);
    opts.concurrency = 4;
    opts.requests = Some(200);
    let report = run_load(opts.clone()).await;
    assert_eq!(report.total, 200);
    assert_eq!(report.errors, 0);
    assert_eq!(report.status_count(200), 200);
    assert_eq!(report.backend_count("a"), 200);
    assert_eq!(report.latencies.len(), 200);
    assert_eq!(report.bytes_received, 200 * 2);
    assert_eq!(a.requests(), 200);

    opts.target = b.addr;
    opts.requests = Some(50);
    let report = run_load(opts).await;
    assert_eq!(report.status_count(503), 50);
    assert_eq!(report.backend_count("b"), 50);
    assert_eq!(report.backends.len(), 1);
    assert_eq!(report.success_ratio(), 0.0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn load_stops_after_duration() {
    let mut backend_opts = BackendOptions::new("d");
    backend_opts.latency = LatencyDist::Fixed(Duration::from_millis(5));
    let backend = spawn_backend(backend_opts).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.concurrency = 2;
    opts.duration = Some(Duration::from_millis(300));
    let started = Instant::now();
    let report = run_load(opts).await;
    assert!(started.elapsed() < HANG);
    assert!(report.total > 0);
    assert_eq!(report.errors, 0);
    assert!(report.percentile(0.5) >= Duration::from_millis(5));
    assert!(report.percentile(0.99) >= report.percentile(0.5));
    backend.shutdown().await;
}

#[tokio::test]
async fn load_open_loop_never_exceeds_rate() {
    let backend = spawn_backend(BackendOptions::new("o")).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.rate = Some(200.0);
    opts.concurrency = 16;
    opts.duration = Some(Duration::from_millis(500));
    let report = run_load(opts.clone()).await;
    // Fixed spacing: arrivals at 0, 5 ms, ... strictly before 500 ms.
    assert!(report.total <= 100, "{report}");
    assert!(report.total >= 20, "{report}");
    assert_eq!(report.errors, 0);

    opts.arrival = Arrival::Poisson;
    opts.requests = Some(30);
    opts.duration = None;
    let report = run_load(opts).await;
    assert_eq!(report.total, 30);
    backend.shutdown().await;
}

#[tokio::test]
async fn load_open_loop_drops_arrivals_beyond_concurrency() {
    let mut backend_opts = BackendOptions::new("slow");
    backend_opts.latency = LatencyDist::Fixed(Duration::from_secs(1));
    let backend = spawn_backend(backend_opts).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.rate = Some(100.0);
    opts.concurrency = 2;
    opts.requests = Some(20);
    let report = run_load(opts).await;
    assert_eq!(report.dropped, 18, "{report}");
    assert_eq!(report.total, 2);
    backend.shutdown().await;
}

#[tokio::test]
async fn load_bounds_black_holed_requests_by_timeout() {
    let mut backend_opts = BackendOptions::new("void");
    backend_opts.mode = Mode::BlackHole;
    let backend = spawn_backend(backend_opts).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.requests = Some(3);
    opts.timeout = Duration::from_millis(100);
    let started = Instant::now();
    let report = run_load(opts).await;
    assert!(started.elapsed() < HANG);
    assert_eq!(report.errors, 3);
    assert_eq!(report.error_kinds.get("timeout"), Some(&3));
    backend.shutdown().await;
}

#[tokio::test]
async fn load_cuts_requests_at_the_time_bound() {
    let mut backend_opts = BackendOptions::new("void");
    backend_opts.mode = Mode::BlackHole;
    let backend = spawn_backend(backend_opts).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.concurrency = 2;
    opts.duration = Some(Duration::from_millis(200));
    let report = run_load(opts).await;
    assert_eq!(report.unfinished, 2);
    assert_eq!(report.total, 0);
    backend.shutdown().await;
}

#[tokio::test]
async fn load_counts_transport_errors() {
    let mut backend_opts = BackendOptions::new("r");
    backend_opts.mode = Mode::Reset;
    let backend = spawn_backend(backend_opts).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.requests = Some(5);
    let report = run_load(opts.clone()).await;
    assert_eq!(report.errors, 5, "{report}");
    assert_eq!(report.answered(), 0);
    assert_eq!(report.error_kinds.get("closed"), Some(&5), "{report}");

    backend.shutdown().await;
    let report = run_load(opts).await;
    assert_eq!(report.errors, 5);
    assert_eq!(report.error_kinds.get("connect"), Some(&5), "{report}");
}

#[tokio::test]
async fn load_posts_bodies_over_h2c() {
    let backend = spawn_backend(BackendOptions::new("sink")).await.unwrap();
    let mut opts = LoadOptions::new(backend.addr);
    opts.method = Method::POST;
    opts.body = Bytes::from_static(b"hello");
    opts.http2 = true;
    opts.concurrency = 3;
    opts.requests = Some(30);
    opts.headers = vec![("x-test".into(), "1".into())];
    let report = run_load(opts).await;
    assert_eq!(report.status_count(200), 30, "{report}");
    backend.shutdown().await;
}

#[tokio::test]
async fn load_rejects_invalid_options() {
    let mut opts = LoadOptions::new("127.0.0.1:1".parse().unwrap());
    opts.headers = vec![("bad header".into(), "x".into())];
    assert!(matches!(
        try_run_load(opts.clone()).await,
        Err(LoadError::InvalidHeader { .. })
    ));
    opts.headers.clear();
    opts.rate = Some(0.0);
    assert!(matches!(
        try_run_load(opts).await,
        Err(LoadError::InvalidRate { .. })
    ));
}
