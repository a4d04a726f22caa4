//! End-to-end: selectors steering real traffic between real backends.

mod common;

use std::time::Duration;

use common::*;
use fulcrum_testbed::{run_load, LoadOptions};

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let bs = backends(&["0ms", "0ms", "0ms"]).await;
    let weights = [1u32, 2, 3];
    let cluster = cluster_block(
        "app",
        "weighted-round-robin",
        &bs.iter()
            .zip(weights)
            .map(|(b, w)| (b.addr, w))
            .collect::<Vec<_>>(),
    );
    let proxy = Proxy::run(&simple_config(&cluster));
    let client = client();
    let mut answers = Vec::new();
    for _ in 0..600 {
        answers.push(get(&client, proxy.addr("web"), "/").await);
    }
    let counts = tally(&answers);
    for (b, w) in bs.iter().zip(weights) {
        let expected = 600.0 * w as f64 / 6.0;
        let n = counts.get(&b.name).copied().unwrap_or(0) as f64;
        assert!(
            (n - expected).abs() <= expected * 0.05,
            "{}: {n} vs {expected}: {counts:?}",
            b.name
        );
    }
}

/// Runs 20 concurrent clients for `requests` requests through the proxy.
async fn load(addr: std::net::SocketAddr, requests: u64) -> fulcrum_testbed::LoadReport {
    let mut opts = LoadOptions::new(addr);
    opts.concurrency = 20;
    opts.requests = Some(requests);
    opts.duration = Some(Duration::from_secs(60));
    run_load(opts).await
}

#[tokio::test]
async fn least_conn_sends_less_to_a_slow_backend() {
    // b2 is 40x slower: under concurrency its connections pile up. (At 20x
    // the margin shrank below 4x on a machine so loaded that the "5 ms"
    // backends answered in 20-30 ms.)
    let bs = backends(&["5ms", "5ms", "200ms"]).await;
    let cluster = cluster_block(
        "app",
        "least-conn",
        &bs.iter().map(|b| (b.addr, 1)).collect::<Vec<_>>(),
    );
    let proxy = Proxy::run(&simple_config(&cluster));
    let report = load(proxy.addr("web"), 1500).await;
    assert_eq!(report.status_count(200), 1500, "{report}");
    let slow = report.backend_count("b2") as f64;
    let fast = (report.backend_count("b0") + report.backend_count("b1")) as f64 / 2.0;
    assert!(
        slow * 4.0 < fast,
        "slow backend got {slow}, fast ones {fast} each: {report}"
    );
}

#[tokio::test]
async fn peak_ewma_beats_round_robin_with_a_slow_backend() {
    // One backend 10-20x slower. Round-robin gives it a quarter of the traffic and
    // its latency shows in the tail; peak-EWMA learns and avoids it.
    let bs = backends(&["4ms..6ms", "4ms..6ms", "4ms..6ms", "40ms..100ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| (b.addr, 1)).collect();
    let mut results = Vec::new();
    for algorithm in ["round-robin", "peak-ewma"] {
        let proxy = Proxy::run(&simple_config(&cluster_block("app", algorithm, &addrs)));
        let before = bs[3].requests();
        let report = load(proxy.addr("web"), 2000).await;
        assert_eq!(report.status_count(200), 2000, "{algorithm}: {report}");
        let slow_share = (bs[3].requests() - before) as f64 / 2000.0;
        let p99 = report.percentile(0.99);
        eprintln!(
            "{algorithm}: slow backend share {slow_share:.3}, p50 {:?}, p99 {p99:?}",
            report.percentile(0.5)
        );
        results.push((slow_share, p99));
    }
    let (rr_share, rr_p99) = results[0];
    let (ewma_share, ewma_p99) = results[1];
    assert!(
        ewma_share * 3.0 < rr_share,
        "peak-ewma share {ewma_share} vs round-robin {rr_share}"
    );
    assert!(
        ewma_p99 < rr_p99,
        "peak-ewma p99 {ewma_p99:?} vs round-robin {rr_p99:?}"
    );
}

#[tokio::test]
async fn hashing_keeps_a_key_on_one_backend() {
    let bs = backends(&["0ms", "0ms", "0ms", "0ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| (b.addr, 1)).collect();
    for algorithm in ["ring-hash", "maglev"] {
        let cluster = cluster_block("app", algorithm, &addrs)
            .replace("backends = [", "hash_key = \"header:x-user\"\nbackends = [");
        let proxy = Proxy::run(&simple_config(&cluster));
        let client = client();
        let mut owners = std::collections::HashMap::new();
        for round in 0..3 {
            for user in 0..40 {
                let req = http::Request::get(format!("http://{}/", proxy.addr("web")))
                    .header("x-user", format!("user-{user}"))
                    .body(Default::default())
                    .unwrap();
                let a = send(&client, req).await;
                let b = a.backend().unwrap().to_owned();
                let first = owners.entry(user).or_insert_with(|| b.clone());
                assert_eq!(*first, b, "{algorithm}: user {user} moved in round {round}");
            }
        }
        let distinct: std::collections::HashSet<_> = owners.values().collect();
        assert!(
            distinct.len() >= 3,
            "{algorithm}: 40 keys spread over {distinct:?}"
        );
    }
}

#[tokio::test]
async fn debug_header_explains_the_decision_to_trusted_clients() {
    let bs = backends(&["0ms", "0ms"]).await;
    let addrs: Vec<_> = bs.iter().map(|b| (b.addr, 1)).collect();
    let cluster = cluster_block("app", "peak-ewma", &addrs);
    let ask = |addr| {
        http::Request::get(format!("http://{addr}/"))
            .header("x-fulcrum-debug", "1")
            .body(Default::default())
            .unwrap()
    };
    // Trusted: loopback is in debug_from.
    let trusted = simple_config(&cluster).replace(
        "cluster = \"app\"\n\n",
        "cluster = \"app\"\ndebug_from = [\"127.0.0.0/8\"]\n\n",
    );
    let proxy = Proxy::run(&trusted);
    let a = send(&client(), ask(proxy.addr("web"))).await;
    let d = a.headers["x-fulcrum-decision"].to_str().unwrap().to_owned();
    assert!(d.starts_with("peak-ewma; picked="), "{d}");
    for b in &bs {
        assert!(
            d.contains(&b.addr.to_string()),
            "both candidates are listed: {d}"
        );
    }
    drop(proxy);
    // Untrusted by default.
    let proxy = Proxy::run(&simple_config(&cluster));
    let a = send(&client(), ask(proxy.addr("web"))).await;
    assert!(!a.headers.contains_key("x-fulcrum-decision"));
}
