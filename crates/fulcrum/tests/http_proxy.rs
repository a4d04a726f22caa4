//! End-to-end: the real binary proxying HTTP to real testbed backends.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{Full, StreamBody};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let bs = backends(&["0ms", "0ms", "0ms"]).await;
    let config = simple_config(&cluster_block(
        "app",
        "round-robin",
        &bs.iter().map(|b| (b.addr, 1)).collect::<Vec<_>>(),
    ));
    let proxy = Proxy::run(&config);
    let client = client();
    let mut answers = Vec::new();
    for _ in 0..300 {
        answers.push(get(&client, proxy.addr("web"), "/").await);
    }
    assert!(answers.iter().all(|a| a.status == 200));
    let counts = tally(&answers);
    for b in &bs {
        let n = counts.get(&b.name).copied().unwrap_or(0);
        assert!(
            (95..=105).contains(&n),
            "{} served {n} of 300: {counts:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn large_bodies_stream_through_intact() {
    let bs = backends(&["0ms"]).await;
    let proxy = Proxy::run(&simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1)],
    )));
    let client = client();
    const SIZE: usize = 10 * 1024 * 1024;

    // 10 MiB upload, streamed in 64 KiB chunks; the backend hashes what it receives.
    let data = fulcrum_testbed::pattern(SIZE);
    let expected = hex(&Sha256::digest(&data));
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let upload_client: hyper_util::client::legacy::Client<_, _> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::post(format!("http://{}/upload", proxy.addr("web")))
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), upload_client.request(req))
        .await
        .expect("upload hung")
        .expect("upload failed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-body-sha256"], expected.as_str());
    assert_eq!(resp.headers()["x-body-length"], SIZE.to_string().as_str());

    // 10 MiB download, streamed by the backend.
    let a = get(&client, proxy.addr("web"), &format!("/bytes/{SIZE}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), SIZE);
    assert_eq!(
        hex(&Sha256::digest(&a.body)),
        fulcrum_testbed::pattern_sha256(SIZE as u64)
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let bs = backends(&["0ms", "0ms"]).await;
    let proxy = Proxy::run(&simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1), (bs[1].addr, 1)],
    )));
    let client = h2c_client();
    let mut answers = Vec::new();
    for _ in 0..20 {
        let a = get(&client, proxy.addr("web"), "/").await;
        answers.push(a);
    }
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(tally(&answers).len(), 2, "both backends serve h2 clients");
    let a = get(&client, proxy.addr("web"), "/echo-headers").await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert!(text.contains("via: 2 fulcrum"), "{text}");
    assert!(
        text.to_lowercase().contains("host: 127.0.0.1:"),
        "host is derived from :authority: {text}"
    );
}

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_removed() {
    let bs = backends(&["0ms"]).await;
    // The test client is a trusted proxy, so its X-Forwarded-For is kept.
    let proxy = Proxy::run(
        &simple_config(&cluster_block("app", "round-robin", &[(bs[0].addr, 1)])).replace(
            "cluster = \"app\"\n",
            "cluster = \"app\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        ),
    );
    let req = http::Request::get(format!("http://{}/echo-headers", proxy.addr("web")))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "192.0.2.1")
        .body(Full::default())
        .unwrap();
    let a = send(&client(), req).await;
    let text = String::from_utf8_lossy(&a.body).to_lowercase();
    assert!(!text.contains("x-private"), "{text}");
    assert!(!text.contains("keep-alive: timeout"), "{text}");
    assert!(
        text.contains("x-forwarded-for: 192.0.2.1, 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("x-forwarded-host: 127.0.0.1:"), "{text}");
    assert!(text.contains("via: 1.1 fulcrum"), "{text}");
    assert_eq!(a.headers["via"], "1.1 fulcrum");
}

#[tokio::test]
async fn stopped_backends_yield_errors_not_hangs() {
    let mut bs = backends(&["0ms", "0ms"]).await;
    let proxy = Proxy::run(&simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1), (bs[1].addr, 1)],
    )));
    let client = client();
    // One backend down: connect failures are retried on the other; no errors.
    bs.remove(0).shutdown().await;
    for _ in 0..20 {
        let a = get(&client, proxy.addr("web"), "/").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.backend(), Some("b1"));
    }
    // All down: a quick 502/503 naming the cluster.
    bs.remove(0).shutdown().await;
    let started = std::time::Instant::now();
    let a = get(&client, proxy.addr("web"), "/").await;
    assert!(a.status == 502 || a.status == 503, "status {}", a.status);
    assert!(String::from_utf8_lossy(&a.body).contains("`app`"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Sends raw bytes and returns everything read until the server closes (bounded).
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn ambiguous_framing_gets_400_and_close() {
    let bs = backends(&["0ms"]).await;
    let proxy = Proxy::run(&simple_config(&cluster_block(
        "app",
        "round-robin",
        &[(bs[0].addr, 1)],
    )));
    let addr = proxy.addr("web");
    let cases: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ];
    for case in cases {
        let (text, closed) = tokio::task::spawn_blocking(move || raw_exchange(addr, case))
            .await
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(closed, "connection must be closed after a 400");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "nothing after the 400: {text}"
        );
    }
    assert_eq!(bs[0].requests(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn unmatched_requests_get_404_without_default_cluster() {
    let bs = backends(&["0ms", "0ms"]).await;
    let config = format!(
        r#"[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[listener.route]]
host = "api.example.com"
cluster = "api"

[[listener.route]]
path_prefix = "/static/"
cluster = "static"

{}
{}"#,
        cluster_block("api", "round-robin", &[(bs[0].addr, 1)]),
        cluster_block("static", "round-robin", &[(bs[1].addr, 1)]),
    );
    let proxy = Proxy::run(&config);
    let client = client();
    let addr = proxy.addr("web");
    let req = |host: &str, path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        send(&client, req("API.example.com", "/x")).await.backend(),
        Some("b0")
    );
    assert_eq!(
        send(&client, req("www.example.com", "/static/a"))
            .await
            .backend(),
        Some("b1")
    );
    let a = send(&client, req("www.example.com", "/other")).await;
    assert_eq!(a.status, 404);
}
