//! End-to-end: health checks, outlier detection, retries, panic mode and
//! slow start with real backends (in-process and `fulcrum testbed backend`
//! processes) behind the real binary.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fulcrum_testbed::{run_load, LoadOptions, LoadReport, Mode};
use http_body_util::Full;

/// A `fulcrum testbed backend` child process, killed on drop.
struct BackendProcess {
    child: Child,
    addr: SocketAddr,
}

impl BackendProcess {
    fn spawn(name: &str, listen: &str) -> BackendProcess {
        let mut child = Command::new(fulcrum_bin())
            .args(["testbed", "backend", "--listen", listen, "--name", name])
            .env("FULCRUM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn testbed backend");
        let lines = pipe_lines(child.stdout.take().unwrap());
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("testbed backend announces its address");
        let addr = line.rsplit("://").next().unwrap().trim().parse().unwrap();
        BackendProcess { child, addr }
    }

    /// SIGKILL: the process dies without closing anything gracefully.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster over `addrs`, weight 100 each.
fn cluster_with(algorithm: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let list: Vec<(SocketAddr, u32)> = addrs.iter().map(|a| (*a, 100)).collect();
    format!("{}{extra}", cluster_block("app", algorithm, &list))
}

/// `concurrency` closed-loop GET clients for `duration`.
fn load_options(addr: SocketAddr, concurrency: usize, duration: Duration) -> LoadOptions {
    let mut opts = LoadOptions::new(addr);
    opts.concurrency = concurrency;
    opts.duration = Some(duration);
    opts.timeout = Duration::from_secs(10);
    opts
}

/// Waits up to `limit` for a proxy log line containing all of `needles`;
/// returns how long it took.
fn wait_for_log(proxy: &Proxy, needles: &[&str], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        for line in proxy.drain_output() {
            if needles.iter().all(|n| line.contains(n)) {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn assert_no_errors(report: &LoadReport) {
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.status_count(200), report.total, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_avoided_then_returns_under_slow_start() {
    let bs = backends(&["1ms", "1ms"]).await;
    let mut victim = BackendProcess::spawn("b2", "127.0.0.1:0");
    let victim_addr = victim.addr;
    let interval = Duration::from_millis(200);
    let fall = 2;
    let config = simple_config(&cluster_with(
        "random",
        &[bs[0].addr, bs[1].addr, victim_addr],
        "slow_start = \"5s\"\n\
         [cluster.app.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         rise = 2\nfall = 2\njitter = \"20ms\"\nunhealthy_interval = \"100ms\"\n\
         [cluster.app.outlier]\nbase_ejection = \"1s\"\n",
    ));
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");

    let load = tokio::spawn(run_load(load_options(addr, 20, Duration::from_secs(3))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    victim.kill();
    let victim_text = victim_addr.to_string();
    // Probes (or outlier detection, whichever is first) take it out.
    let noticed = tokio::task::block_in_place(|| {
        let down = wait_for_log(&proxy, &["backend", &victim_text], Duration::from_secs(5));
        down.expect("the killed backend is marked down or ejected")
    });
    let bound = interval * (fall + 1) + Duration::from_millis(300);
    assert!(
        noticed <= bound,
        "noticed after {noticed:?}, bound {bound:?}"
    );
    let report = load.await.unwrap();
    assert_no_errors(&report);
    assert!(
        report.backend_count("b2") > 0,
        "it served before the kill: {report}"
    );

    // Restart on the same port: back after `rise` probes, ramping up.
    let _restarted = BackendProcess::spawn("b2", &victim_text);
    let client = client();
    let start = Instant::now();
    loop {
        let a = get(&client, addr, "/").await;
        assert_eq!(a.status, 200);
        if a.backend() == Some("b2") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "b2 never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = run_load(load_options(addr, 20, Duration::from_millis(1500))).await;
    assert_no_errors(&report);
    let b2 = report.backend_count("b2") as f64;
    let others = (report.backend_count("b0") + report.backend_count("b1")) as f64 / 2.0;
    assert!(b2 > 0.0, "{report}");
    assert!(
        b2 < others * 0.7,
        "slow start gives a returning backend less: b2 {b2}, others {others} each: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_backend_is_bounded_retried_and_ejected() {
    let bs = backends(&["1ms", "1ms", "1ms"]).await;
    bs[1].set_mode(Mode::BlackHole);
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let config = simple_config(&cluster_with(
        "round-robin",
        &addrs,
        "response_timeout = \"2s\"\ntry_timeout = \"300ms\"\n\
         [cluster.app.outlier]\nconsecutive_failures = 3\nbase_ejection = \"30s\"\n",
    ));
    let proxy = Proxy::run(&config);
    let mut opts = load_options(proxy.addr("web"), 5, Duration::from_secs(10));
    opts.requests = Some(200);
    let report = run_load(opts).await;
    assert_no_errors(&report);
    assert_eq!(report.total, 200);
    let worst = report.percentile(1.0);
    assert!(
        worst < Duration::from_secs(2),
        "no request waits beyond response_timeout: {worst:?}"
    );
    assert_eq!(report.backend_count("b1"), 0, "{report}");
    // Ejected: it sees no more requests.
    let seen = bs[1].requests();
    assert!(
        (3..=10).contains(&seen),
        "{seen} requests reached the black hole"
    );
    let mut opts = load_options(proxy.addr("web"), 5, Duration::from_secs(10));
    opts.requests = Some(100);
    let report = run_load(opts).await;
    assert_no_errors(&report);
    assert_eq!(bs[1].requests(), seen, "an ejected backend gets nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_backend_causes_no_errors_and_does_not_oscillate() {
    let bs = backends(&["1ms", "1ms", "1ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    // rise × interval (1.5 s) is longer than an up phase (1 s): once down,
    // the flapping backend stays down instead of following every flap.
    let config = simple_config(&cluster_with(
        "round-robin",
        &addrs,
        "[cluster.app.health]\ninterval = \"250ms\"\nunhealthy_interval = \"250ms\"\n\
         timeout = \"200ms\"\nrise = 6\nfall = 3\njitter = \"10ms\"\n",
    ));
    let proxy = Proxy::run(&config);
    let load = tokio::spawn(run_load(load_options(
        proxy.addr("web"),
        10,
        Duration::from_secs(6),
    )));
    for i in 0..6 {
        bs[2].set_healthy(i % 2 == 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = load.await.unwrap();
    assert_no_errors(&report);
    let b2 = bs[2].addr.to_string();
    let downs = proxy
        .drain_output()
        .iter()
        .filter(|l| l.contains("backend down") && l.contains(&b2))
        .count();
    assert_eq!(downs, 1, "marked down once and kept down while flapping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_is_ejected_by_outlier_detection() {
    let bs = backends(&["1ms", "1ms", "1ms"]).await;
    bs[0].set_mode(Mode::Fail { status: 500 });
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let config = simple_config(&cluster_with(
        "round-robin",
        &addrs,
        "[cluster.app.outlier]\nconsecutive_failures = 5\nbase_ejection = \"30s\"\n",
    ));
    let proxy = Proxy::run(&config);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(get(&client, proxy.addr("web"), "/").await.status);
    }
    // 500 is the backend's own answer (not a gateway error): passed on,
    // counted, and after five in a row the backend is ejected.
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 5);
    assert_eq!(bs[0].requests(), 5);
    assert!(statuses[30..].iter().all(|&s| s == 200), "{statuses:?}");
    let line = tokio::task::block_in_place(|| {
        wait_for_log(
            &proxy,
            &["backend ejected", &bs[0].addr.to_string()],
            Duration::from_secs(2),
        )
    });
    assert!(line.is_some(), "the ejection is logged");
}

#[tokio::test]
async fn an_answer_before_the_request_body_ends_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bs = backends(&["1ms"]).await;
    // The backend answers 503 without reading the body.
    bs[0].set_mode(Mode::Fail { status: 503 });
    let config = simple_config(&cluster_with(
        "round-robin",
        &[bs[0].addr],
        "[cluster.app.outlier]\nconsecutive_failures = 0\n",
    ));
    let proxy = Proxy::run(&config);
    let mut s = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap();
    // A head announcing a body that has not been sent yet.
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            other => panic!("no answer head: {other:?}, got {head:?}"),
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    // The client must not send another request on this connection.
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_not_retried_after_their_body_was_sent_but_gets_are() {
    let bs = backends(&["1ms", "1ms", "1ms"]).await;
    bs[0].set_mode(Mode::Fail { status: 503 });
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    // Outlier detection off, so the failing backend stays in rotation.
    let config = simple_config(&cluster_with(
        "round-robin",
        &addrs,
        "[cluster.app.outlier]\nconsecutive_failures = 0\n",
    ));
    let proxy = Proxy::run(&config);
    let client = client();
    let mut posts = Vec::new();
    for i in 0..30 {
        let req = http::Request::post(format!("http://{}/", proxy.addr("web")))
            .body(Full::new(Bytes::from(format!("order {i}"))))
            .unwrap();
        posts.push(send(&client, req).await);
    }
    let failed = posts.iter().filter(|a| a.status == 503).count() as u64;
    assert!(
        failed > 0,
        "round-robin sends some POSTs to the failing backend"
    );
    assert_eq!(
        failed,
        bs[0].requests(),
        "every POST the failing backend saw was answered with its 503, none retried"
    );
    let before = bs[0].requests();
    let mut gets = Vec::new();
    for _ in 0..30 {
        gets.push(get(&client, proxy.addr("web"), "/").await);
    }
    assert!(gets.iter().all(|a| a.status == 200), "{:?}", tally(&gets));
    assert!(
        bs[0].requests() > before,
        "GETs hit the failing backend and were retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_gives_503_quickly_and_service_resumes() {
    let bs = backends(&["1ms", "1ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let config = simple_config(&cluster_with(
        "peak-ewma",
        &addrs,
        "[cluster.app.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
    ));
    let proxy = Proxy::run(&config);
    let client = client();
    assert_eq!(get(&client, proxy.addr("web"), "/").await.status, 200);
    for b in bs {
        b.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        let start = Instant::now();
        let a = get(&client, proxy.addr("web"), "/").await;
        assert_eq!(a.status, 503, "{:?}", a.body);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    let mut opts = fulcrum_testbed::BackendOptions::new("b1");
    opts.listen = addrs[1];
    let _back = spawn_backend(opts).await.unwrap();
    let start = Instant::now();
    loop {
        let a = get(&client, proxy.addr("web"), "/").await;
        if a.status == 200 {
            assert_eq!(a.backend(), Some("b1"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "service did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An address on loopback where nothing listens (connections are refused).
fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_cost_retries_not_errors_beyond_the_retry_budget() {
    // Two of three backends refuse connections. Outlier detection may eject
    // only one of three (max_ejection_percent), so round-robin keeps sending
    // every other first attempt to the other dead one: far more retries than
    // the 20% retry budget allows. A refused connect put no load on any
    // backend, so its retry is free and no client sees an error.
    let bs = backends(&["1ms"]).await;
    let config = simple_config(&cluster_with(
        "round-robin",
        &[refusing_addr(), bs[0].addr, refusing_addr()],
        "",
    ));
    let proxy = Proxy::run(&config);
    // 600 requests: about 300 need a retry, while the budget holds about
    // 10 + 0.2 × 600 + 10 per second.
    let mut opts = LoadOptions::new(proxy.addr("web"));
    opts.concurrency = 4;
    opts.requests = Some(600);
    let report = run_load(opts).await;
    assert_eq!(report.total, 600, "{report}");
    assert_no_errors(&report);
    // The retries really happened: about every other request needed one.
    let metrics = get(&client(), proxy.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let retries: f64 = text
        .lines()
        .find(|l| l.starts_with("fulcrum_upstream_retries_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retries counter in {text}"));
    assert!(
        retries > report.total as f64 * 0.3,
        "retries {retries}, requests {}",
        report.total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_costs_a_retry_when_the_only_live_one_is_ejected() {
    // The soak's error bursts: b2 was ejected by outlier detection and has
    // come back (its probes pass, its ejection runs on), b1 is drained
    // through the admin API, then b0 dies. Until probes mark b0 down, b0 is
    // the one healthy enabled backend of two: exactly the 50% panic
    // threshold, so no panic mode. Every request tried b0, was refused, and
    // its retry found no healthy backend left: a 503 although b2 was alive.
    // A request that runs out of healthy backends must fall back to the
    // enabled ones (health ignored, as in panic mode) instead.
    let mut bs = backends(&["1ms", "1ms", "1ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let config = simple_config(&cluster_with(
        "round-robin",
        &addrs,
        "[cluster.app.health]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"200ms\"\n\
         jitter = \"0s\"\nrise = 2\nfall = 2\n\
         [cluster.app.outlier]\nconsecutive_failures = 1\nbase_ejection = \"30s\"\n",
    ));
    const TOKEN: &str = "panic-test-token";
    let proxy = Proxy::run_with_env(&config, &[("FULCRUM_ADMIN_TOKEN", TOKEN)]);
    let addr = proxy.addr("web");
    let client = client();

    // b2 fails a request and is ejected for 30 s, then recovers.
    bs[2].set_mode(Mode::Fail { status: 500 });
    for _ in 0..3 {
        get(&client, addr, "/").await;
    }
    let b2 = addrs[2].to_string();
    let ejected = tokio::task::block_in_place(|| {
        wait_for_log(&proxy, &["backend ejected", &b2], Duration::from_secs(2))
    });
    assert!(ejected.is_some(), "b2 ejected");
    bs[2].set_mode(Mode::Normal);

    // b1 drained through the admin API.
    let patch = http::Request::builder()
        .method("PATCH")
        .uri(format!(
            "http://{}/api/v1/clusters/app/backends/{}",
            proxy.admin, addrs[1]
        ))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from_static(br#"{"state": "draining"}"#)))
        .unwrap();
    let answer = send(&client, patch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // Only b0 is left taking requests.
    for _ in 0..5 {
        assert_eq!(get(&client, addr, "/").await.backend(), Some("b0"));
    }

    // b0 dies. Probes need two failures 1 s apart to notice, so the next
    // half second is all before b0 is marked down.
    bs.remove(0).shutdown().await;
    let report = run_load(load_options(addr, 4, Duration::from_millis(500))).await;
    assert!(report.total > 20, "too little traffic: {report}");
    assert_no_errors(&report);
    assert_eq!(report.backend_count("b2"), report.total, "{report}");

    // Once probes notice, panic mode spreads over b0 and b2: still no error.
    let panic = tokio::task::block_in_place(|| {
        wait_for_log(&proxy, &["panic mode:"], Duration::from_secs(5))
    });
    assert!(panic.is_some(), "panic mode once b0 is down");
    let report = run_load(load_options(addr, 4, Duration::from_millis(500))).await;
    assert_no_errors(&report);
    assert_eq!(report.backend_count("b2"), report.total, "{report}");
}
