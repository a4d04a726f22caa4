//! End-to-end: the admin API, reloads and metrics of a running `fulcrum run`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fulcrum_testbed::{run_load, LoadOptions, LoadReport};
use http_body_util::Full;

const TOKEN: &str = "test-token-7f3a9c";

/// An admin call with an optional bearer token.
async fn call(
    client: &HttpClient,
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let answer = send(
        client,
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await;
    let json = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    (answer.status, json)
}

/// 20 concurrent clients sending GETs for `secs` seconds.
fn load_for(addr: SocketAddr, secs: u64) -> tokio::task::JoinHandle<LoadReport> {
    let mut opts = LoadOptions::new(addr);
    opts.concurrency = 20;
    opts.duration = Some(Duration::from_secs(secs));
    tokio::spawn(run_load(opts))
}

/// No request failed: every answer was a 200 and no request errored.
fn assert_lossless(report: &LoadReport) {
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.total > 100, "too little traffic: {report}");
    assert!(
        report.statuses.keys().all(|s| *s == 200),
        "non-200 answers: {report}"
    );
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns the time taken.
async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_add_drain_remove_under_load_lose_no_request() {
    let bs = backends(&["2ms", "2ms", "2ms"]).await;
    let config = simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1), (bs[1].addr, 1)],
    ));
    let proxy = Proxy::run_with_env(&config, &[("FULCRUM_ADMIN_TOKEN", TOKEN)]);
    let client = client();
    let load = load_for(proxy.addr("web"), 10);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Add b2: it takes traffic within a second.
    let body = format!(r#"{{"address": "{}", "weight": 1}}"#, bs[2].addr);
    let (status, json) = call(
        &client,
        proxy.admin,
        "POST",
        "/api/v1/clusters/app/backends",
        Some(TOKEN),
        &body,
    )
    .await;
    assert_eq!(status, 201, "{json}");
    let took = within(Duration::from_secs(1), || bs[2].requests() > 0).await;
    assert!(took.is_some(), "added backend got no traffic within 1 s");
    eprintln!("added backend served its first request after {took:?}");

    // Drain b0: once its requests in flight finish it gets no new ones.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let path = format!("/api/v1/clusters/app/backends/{}", bs[0].addr);
    let (status, json) = call(
        &client,
        proxy.admin,
        "PATCH",
        &path,
        Some(TOKEN),
        r#"{"state": "draining"}"#,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["backend"]["state"], "draining", "{json}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let drained_at = bs[0].requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bs[0].requests(),
        drained_at,
        "a draining backend got new requests"
    );

    // Remove b1 (drain, wait, remove) while traffic flows.
    let path = format!("/api/v1/clusters/app/backends/{}?timeout=5s", bs[1].addr);
    let (status, json) = call(&client, proxy.admin, "DELETE", &path, Some(TOKEN), "").await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["drained"], true, "{json}");
    let (_, view) = call(&client, proxy.admin, "GET", "/api/v1/clusters", None, "").await;
    let listed: Vec<String> = view["clusters"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        vec![bs[0].addr.to_string(), bs[2].addr.to_string()],
        "{view}"
    );

    let report = load.await.unwrap();
    eprintln!("{report}");
    assert_lossless(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_in_a_row_lose_no_request() {
    let bs = backends(&["2ms", "2ms"]).await;
    let config = simple_config(&cluster_block(
        "app",
        "least-conn",
        &[(bs[0].addr, 1), (bs[1].addr, 2)],
    ));
    let proxy = Proxy::run(&config);
    let load = load_for(proxy.addr("web"), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        // Alternate the weights so every reload really changes the model.
        let w = 1 + i % 3;
        let text = format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
            simple_config(&cluster_block(
                "app",
                "least-conn",
                &[(bs[0].addr, w), (bs[1].addr, 2)]
            ))
        );
        std::fs::write(&proxy.config_path, text).unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &proxy.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = load.await.unwrap();
    eprintln!("{report}");
    assert_lossless(&report);
    let client = client();
    let metrics = get(&client, proxy.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("fulcrum_config_reloads_total{result=\"success\"} 20"),
        "{text}"
    );
}

#[tokio::test]
async fn sighup_at_once_after_startup_reloads_rather_than_kills() {
    // The signal handlers are installed before anything is bound: a reload
    // sent the moment a listener is announced (as a deploy script might)
    // must not meet SIGHUP's default action, which ends the process. They
    // used to be installed after the admin listener started, so a SIGHUP
    // sent on the first announcement killed the process.
    let bs = backends(&["0ms"]).await;
    let dir = TempDir::new("sighup");
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(&cluster_block("app", "round-robin", &[(bs[0].addr, 1)]))
    );
    let path = dir.write("fulcrum.toml", &config);
    let client = client();
    for round in 0..3 {
        let mut child = std::process::Command::new(fulcrum_bin())
            .args(["run", "-c"])
            .arg(&path)
            .env("FULCRUM_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn fulcrum");
        let lines = pipe_lines(child.stderr.take().unwrap());
        let web: SocketAddr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("no listener announced");
            if let Some(rest) = line.strip_prefix("fulcrum: listener `web` on http://") {
                break rest.trim().parse().unwrap();
            }
        };
        // At once (a `kill` process would take milliseconds to start).
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let alive = child.try_wait().unwrap().is_none();
        let served = alive && get(&client, web, "/").await.status == 200;
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            alive,
            "round {round}: SIGHUP right after startup ended the process"
        );
        assert!(served, "round {round}: not serving after the reload");
    }
}

#[tokio::test]
async fn broken_reload_keeps_serving_and_returns_the_error() {
    let bs = backends(&["0ms"]).await;
    let config = simple_config(&cluster_block("app", "round-robin", &[(bs[0].addr, 1)]));
    let proxy = Proxy::run_with_env(&config, &[("FULCRUM_ADMIN_TOKEN", TOKEN)]);
    let client = client();
    std::fs::write(
        &proxy.config_path,
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"nope\"\n",
    )
    .unwrap();
    let (status, json) = call(
        &client,
        proxy.admin,
        "POST",
        "/api/v1/reload",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 422, "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("fulcrum.toml"), "names the file: {error}");
    assert!(error.contains("nope"), "names the problem: {error}");
    // SIGHUP with the same file: refused too, still serving.
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert_eq!(get(&client, proxy.addr("web"), "/").await.status, 200);
    }
    let metrics = get(&client, proxy.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("fulcrum_config_reloads_total{result=\"failure\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn reload_replaces_api_changes_and_reports_them_as_overridden() {
    let bs = backends(&["0ms", "0ms", "0ms"]).await;
    let config = simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1), (bs[1].addr, 1)],
    ));
    let proxy = Proxy::run_with_env(&config, &[("FULCRUM_ADMIN_TOKEN", TOKEN)]);
    let client = client();
    // API: add b2, set b0's weight to 5.
    let body = format!(r#"{{"address": "{}"}}"#, bs[2].addr);
    let (status, _) = call(
        &client,
        proxy.admin,
        "POST",
        "/api/v1/clusters/app/backends",
        Some(TOKEN),
        &body,
    )
    .await;
    assert_eq!(status, 201);
    let path = format!("/api/v1/clusters/app/backends/{}", bs[0].addr);
    let (status, _) = call(
        &client,
        proxy.admin,
        "PATCH",
        &path,
        Some(TOKEN),
        r#"{"weight": 5}"#,
    )
    .await;
    assert_eq!(status, 200);
    // The file (unchanged) wins on reload, and the answer says what it undid.
    let (status, json) = call(
        &client,
        proxy.admin,
        "POST",
        "/api/v1/reload",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let overridden = json["overridden"].as_array().unwrap();
    assert_eq!(overridden.len(), 2, "{json}");
    let find = |addr: SocketAddr| {
        overridden
            .iter()
            .find(|c| c["address"] == addr.to_string())
            .unwrap_or_else(|| panic!("{addr} not reported: {json}"))
    };
    assert_eq!(find(bs[2].addr)["change"], "removed");
    assert_eq!(find(bs[0].addr)["change"], "changed");
    assert_eq!(find(bs[0].addr)["weight"], serde_json::json!([5, 1]));
    // The effective config is the file again.
    let (_, effective) = call(&client, proxy.admin, "GET", "/api/v1/config", None, "").await;
    let listed = effective["cluster"]["app"]["backends"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{effective}");
    assert_eq!(listed[0]["weight"], 1, "{effective}");
}

#[tokio::test]
async fn mutating_calls_need_the_token_which_is_never_logged() {
    let bs = backends(&["0ms", "0ms"]).await;
    let config = simple_config(&cluster_block("app", "round-robin", &[(bs[0].addr, 1)]));
    let proxy = Proxy::run_with_env(
        &config,
        &[("FULCRUM_ADMIN_TOKEN", TOKEN), ("FULCRUM_LOG", "trace")],
    );
    let client = client();
    let body = format!(r#"{{"address": "{}"}}"#, bs[1].addr);
    let add = "/api/v1/clusters/app/backends";
    let patch = format!("/api/v1/clusters/app/backends/{}", bs[0].addr);
    for token in [None, Some("wrong"), Some("test-token-7f3a9")] {
        let (s, json) = call(&client, proxy.admin, "POST", add, token, &body).await;
        assert_eq!(s, 401, "{token:?}: {json}");
        let (s, _) = call(
            &client,
            proxy.admin,
            "PATCH",
            &patch,
            token,
            r#"{"weight": 2}"#,
        )
        .await;
        assert_eq!(s, 401, "{token:?}");
        let (s, _) = call(&client, proxy.admin, "DELETE", &patch, token, "").await;
        assert_eq!(s, 401, "{token:?}");
        let (s, _) = call(&client, proxy.admin, "POST", "/api/v1/reload", token, "").await;
        assert_eq!(s, 401, "{token:?}");
    }
    // Reads are open on loopback.
    let (s, _) = call(&client, proxy.admin, "GET", "/api/v1/clusters", None, "").await;
    assert_eq!(s, 200);
    // Validation errors name the field.
    let (s, json) = call(
        &client,
        proxy.admin,
        "PATCH",
        &patch,
        Some(TOKEN),
        r#"{"weight": -1}"#,
    )
    .await;
    assert_eq!((s, json["field"].as_str()), (400, Some("weight")), "{json}");
    let (s, json) = call(
        &client,
        proxy.admin,
        "PATCH",
        &patch,
        Some(TOKEN),
        r#"{"state": "asleep"}"#,
    )
    .await;
    assert_eq!((s, json["field"].as_str()), (400, Some("state")), "{json}");
    let (s, json) = call(
        &client,
        proxy.admin,
        "POST",
        add,
        Some(TOKEN),
        r#"{"address": "no-port"}"#,
    )
    .await;
    assert_eq!(
        (s, json["field"].as_str()),
        (400, Some("address")),
        "{json}"
    );
    let (s, json) = call(
        &client,
        proxy.admin,
        "POST",
        add,
        Some(TOKEN),
        r#"{"address": "127.0.0.1:1", "wieght": 1}"#,
    )
    .await;
    assert_eq!((s, json["field"].as_str()), (400, Some("wieght")), "{json}");
    let (s, json) = call(
        &client,
        proxy.admin,
        "PATCH",
        "/api/v1/clusters/app/backends/127.0.0.1:1",
        Some(TOKEN),
        r#"{"weight": 1}"#,
    )
    .await;
    assert_eq!(s, 404, "{json}");
    // The right token works.
    let (s, json) = call(&client, proxy.admin, "POST", add, Some(TOKEN), &body).await;
    assert_eq!(s, 201, "{json}");
    let (s, json) = call(&client, proxy.admin, "POST", add, Some(TOKEN), &body).await;
    assert_eq!(s, 409, "duplicate: {json}");
    for _ in 0..10 {
        assert_eq!(get(&client, proxy.addr("web"), "/").await.status, 200);
    }
    // The token appears nowhere in the (trace-level) logs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut proxy = proxy;
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    std::thread::sleep(Duration::from_millis(200));
    let lines = proxy.drain_output();
    assert!(lines.len() > 5, "expected trace logs: {lines:?}");
    for line in &lines {
        assert!(
            !line.contains("7f3a9"),
            "token (or part of it) logged: {line}"
        );
    }
}

#[test]
fn non_loopback_admin_without_token_is_refused() {
    let dir = TempDir::new("admin-public");
    let path = dir.write(
        "fulcrum.toml",
        "[admin]\nbind = \"0.0.0.0:0\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n[cluster.app]\nbackends = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let out = std::process::Command::new(fulcrum_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env_remove("FULCRUM_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners_without_dropping_connections() {
    let bs = backends(&["300ms"]).await;
    let cluster = cluster_block("app", "round-robin", &[(bs[0].addr, 1)]);
    let listener = |name: &str| {
        format!("[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n")
    };
    let admin = "[admin]\nbind = \"127.0.0.1:0\"\n\n";
    let config = format!("{admin}{}{}{cluster}", listener("web"), listener("old"));
    let proxy = Proxy::run_with_env(&config, &[("FULCRUM_ADMIN_TOKEN", TOKEN)]);
    let client = client();
    let old = proxy.addr("old");
    // A slow request in flight on `old` while it is removed and `new` added.
    let slow = {
        let c = common::client();
        tokio::spawn(async move { get(&c, old, "/").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(
        &proxy.config_path,
        format!("{admin}{}{}{cluster}", listener("web"), listener("new")),
    )
    .unwrap();
    let (s, json) = call(
        &client,
        proxy.admin,
        "POST",
        "/api/v1/reload",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(s, 200, "{json}");
    assert_eq!(json["listeners_added"], serde_json::json!(["new"]));
    assert_eq!(json["listeners_removed"], serde_json::json!(["old"]));
    // The request in flight on the removed listener completes.
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, 200);
    // `new` is bound and serves; `old` refuses new connections.
    let mut new = None;
    for _ in 0..50 {
        let (_, l) = call(&client, proxy.admin, "GET", "/api/v1/listeners", None, "").await;
        new = l["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "new")
            .map(|x| {
                x["address"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            });
        if new.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = new.expect("listener `new` is running");
    assert_eq!(get(&client, new, "/").await.status, 200);
    assert_eq!(get(&client, proxy.addr("web"), "/").await.status, 200);
    assert!(
        tokio::net::TcpStream::connect(old).await.is_err(),
        "removed listener still accepts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_under_load_pass_promtool() {
    let bs = backends(&["1ms", "3ms"]).await;
    // With admission control (a limit the load never reaches), so its
    // families are checked too.
    let config = simple_config(&format!(
        "{}\n[cluster.app.admission]\nlimit = 100\n",
        cluster_block("app", "peak-ewma", &[(bs[0].addr, 1), (bs[1].addr, 1)])
    ));
    let proxy = Proxy::run(&config);
    let load = load_for(proxy.addr("web"), 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let client = client();
    let scrape = get(&client, proxy.admin, "/metrics").await;
    let report = load.await.unwrap();
    assert_lossless(&report);
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    for name in [
        "fulcrum_build_info",
        "fulcrum_backend_requests_total",
        "fulcrum_upstream_latency_seconds_bucket",
        "fulcrum_backend_in_flight_requests",
        "fulcrum_backend_healthy",
        "fulcrum_selector_decisions_total",
        "fulcrum_upstream_retries_total",
        "fulcrum_backend_ejections_total",
        "fulcrum_listener_connections_total",
        "fulcrum_config_reloads_total",
        "fulcrum_tls_handshakes_total",
        "fulcrum_admission_admitted_total",
        "fulcrum_admission_shed_total",
        "fulcrum_admission_in_flight_requests",
        "fulcrum_admission_queue_wait_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/admin-metrics.txt");
    let _ = std::fs::write(&target, &text);
    let promtool = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("SKIPPED promtool check: promtool not found ({e}); install the Debian package `prometheus`");
            return;
        }
    };
    let mut promtool = promtool;
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
