//! End-to-end: routes (every matcher, splits, rewrites, redirects, 404),
//! WebSocket pass-through, rate limits (local and shared through a real
//! `redis-server`) and sticky sessions, through the real binary.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use fulcrum_testbed::{run_load, LoadOptions};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

/// Starts one testbed backend per name (its `x-backend` is the name).
async fn named(names: &[&str]) -> Vec<RunningBackend> {
    let mut out = Vec::new();
    for n in names {
        out.push(spawn_backend(BackendOptions::new(*n)).await.unwrap());
    }
    out
}

/// One `[cluster.NAME]` per backend, named after it.
fn clusters_of(bs: &[RunningBackend]) -> String {
    bs.iter()
        .map(|b| cluster_block(&b.name, "round-robin", &[(b.addr, 1)]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut r = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::default()).unwrap()
}

/// Method, path, headers, the backend expected.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn routes_send_each_matcher_to_its_cluster() {
    let bs = named(&[
        "app", "exact", "regex", "method", "header", "hexact", "query", "host", "prefix",
    ])
    .await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"

[[listener.route]]
path = "/exact"
cluster = "exact"

[[listener.route]]
path_regex = "^/items/[0-9]+$"
cluster = "regex"

[[listener.route]]
path_prefix = "/m/"
methods = ["DELETE", "PUT"]
cluster = "method"

[[listener.route]]
headers = {{ x-canary = {{ present = true }} }}
cluster = "header"

[[listener.route]]
headers = {{ x-user = {{ exact = "alice" }}, user-agent = {{ regex = "^probe/" }} }}
cluster = "hexact"

[[listener.route]]
query = {{ debug = {{ exact = "1" }}, beta = {{ present = true }} }}
cluster = "query"

[[listener.route]]
host = "*.example.test"
cluster = "host"

[[listener.route]]
path_prefix = "/static/"
cluster = "prefix"

{}"#,
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");
    let c = client();
    let cases: &[Case] = &[
        ("GET", "/exact", &[], "exact"),
        ("GET", "/exact/more", &[], "app"),
        ("GET", "/items/42", &[], "regex"),
        ("GET", "/items/4x", &[], "app"),
        ("DELETE", "/m/1", &[], "method"),
        ("PUT", "/m/1", &[], "method"),
        ("GET", "/m/1", &[], "app"),
        ("GET", "/x", &[("x-canary", "yes")], "header"),
        (
            "GET",
            "/x",
            &[("x-user", "alice"), ("user-agent", "probe/1.0")],
            "hexact",
        ),
        (
            "GET",
            "/x",
            &[("x-user", "alice"), ("user-agent", "curl/8")],
            "app",
        ),
        (
            "GET",
            "/x",
            &[("x-user", "bob"), ("user-agent", "probe/1.0")],
            "app",
        ),
        ("GET", "/x?beta&debug=1", &[], "query"),
        ("GET", "/x?beta&debug=2", &[], "app"),
        ("GET", "/x?debug=1", &[], "app"),
        ("GET", "/", &[("host", "www.example.test")], "host"),
        ("GET", "/", &[("host", "example.test")], "app"),
        ("GET", "/static/a.css", &[], "prefix"),
        // First match wins: the exact path beats the header route.
        ("GET", "/exact", &[("x-canary", "yes")], "exact"),
    ];
    for (method, path, headers, want) in cases {
        let a = send(&c, request(method, addr, path, headers)).await;
        assert_eq!(a.status, 200, "{method} {path} {headers:?}");
        assert_eq!(a.backend(), Some(*want), "{method} {path} {headers:?}");
    }
}

#[tokio::test]
async fn routes_split_traffic_by_weight_within_5_percent() {
    let bs = named(&["v1", "v2"]).await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/"
clusters = [{{ cluster = "v1", weight = 70 }}, {{ cluster = "v2", weight = 30 }}]

{}"#,
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let c = client();
    let mut answers = Vec::new();
    for _ in 0..2000 {
        answers.push(get(&c, proxy.addr("web"), "/").await);
    }
    assert!(answers.iter().all(|a| a.status == 200));
    let counts = tally(&answers);
    let v2 = counts.get("v2").copied().unwrap_or(0) as f64 / 2000.0;
    let v1 = counts.get("v1").copied().unwrap_or(0) as f64 / 2000.0;
    eprintln!("split 70/30 over 2000: v1 {v1:.3} v2 {v2:.3}");
    assert!((v1 - 0.70).abs() <= 0.05, "{counts:?}");
    assert!((v2 - 0.30).abs() <= 0.05, "{counts:?}");
}

#[tokio::test]
async fn routes_rewrite_headers_and_path_prefix() {
    let bs = named(&["app"]).await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/api/"
rewrite_prefix = "/"
cluster = "app"
request_headers = {{ set = {{ x-env = "prod" }}, add = {{ x-tag = "a" }}, remove = ["x-secret"] }}
response_headers = {{ set = {{ cache-control = "no-store" }}, add = {{ x-served-by = "fulcrum" }}, remove = ["x-drop-me"] }}

{}"#,
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let c = client();
    let headers = [("x-secret", "hush"), ("x-env", "dev"), ("x-tag", "z")];
    let a = send(
        &c,
        request("GET", proxy.addr("web"), "/api/echo-headers", &headers),
    )
    .await;
    assert_eq!(a.status, 200);
    let body = String::from_utf8_lossy(&a.body).to_lowercase();
    assert!(body.contains("x-env: prod"), "{body}");
    assert!(!body.contains("x-env: dev"), "{body}");
    assert!(
        body.contains("x-tag: z") && body.contains("x-tag: a"),
        "{body}"
    );
    assert!(!body.contains("x-secret"), "{body}");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.headers["x-served-by"], "fulcrum");
    // Outside the prefix nothing matches and the listener has no default.
    let a = get(&c, proxy.addr("web"), "/echo-headers").await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn routes_redirect_with_scheme_host_path_and_status() {
    let bs = named(&["app"]).await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"

[[listener.route]]
path_prefix = "/old/"
rewrite_prefix = "/new/"
redirect = {{ status = 301 }}

[[listener.route]]
path = "/login"
redirect = {{ scheme = "https", host = "secure.example.test", status = 308 }}

[[listener.route]]
path = "/moved"
redirect = {{ path = "/here" }}

[[listener.route]]
path = "/temp"
redirect = {{ host = "other.example.test:8080", path = "/t", status = 307 }}

{}"#,
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");
    let c = client();
    let cases = [
        ("/old/page?q=1", 301, format!("http://{addr}/new/page?q=1")),
        (
            "/login?next=/",
            308,
            "https://secure.example.test/login?next=/".to_owned(),
        ),
        ("/moved", 302, format!("http://{addr}/here")),
        ("/temp", 307, "http://other.example.test:8080/t".to_owned()),
    ];
    for (path, status, location) in cases {
        let a = get(&c, addr, path).await;
        assert_eq!(a.status, status, "{path}");
        assert_eq!(a.headers["location"], location.as_str(), "{path}");
        assert_eq!(a.backend(), None, "{path} must not reach a backend");
    }
    assert_eq!(bs[0].requests(), 0);
    assert_eq!(get(&c, addr, "/other").await.backend(), Some("app"));
}

#[tokio::test]
async fn routes_unmatched_without_default_cluster_get_404() {
    let bs = named(&["api"]).await;
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\n[[listener.route]]\npath_prefix = \"/api\"\ncluster = \"api\"\n\n{}",
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let c = client();
    assert_eq!(
        get(&c, proxy.addr("web"), "/api/x").await.backend(),
        Some("api")
    );
    let a = get(&c, proxy.addr("web"), "/other").await;
    assert_eq!(a.status, 404);
    assert!(String::from_utf8_lossy(&a.body).contains("no route"));
}

/// A WebSocket echo server on 127.0.0.1:0; serves `n` connections.
async fn echo_server(n: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..n {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_echo_passes_through_the_proxy() {
    let server = echo_server(4).await;
    let config = simple_config(&cluster_block("app", "least-conn", &[(server, 1)]));
    let proxy = Proxy::run(&config);
    let url = format!("ws://{}/ws", proxy.addr("web"));
    let fut = async {
        let (mut ws, response) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        for i in 0..20 {
            let text = format!("hello {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let back = ws.next().await.unwrap().unwrap();
            assert_eq!(back, Message::text(text));
        }
        let blob: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        ws.send(Message::binary(blob.clone())).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), &blob[..]);
        ws.close(None).await.unwrap();
        // A second tunnel at the same time as a third.
        let (mut x, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let (mut y, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        x.send(Message::text("x")).await.unwrap();
        y.send(Message::text("y")).await.unwrap();
        assert_eq!(y.next().await.unwrap().unwrap(), Message::text("y"));
        assert_eq!(x.next().await.unwrap().unwrap(), Message::text("x"));
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("websocket echo hung");
}

/// Waits until the Unix clock is just past a whole second, so fixed
/// one-second windows line up with a run.
async fn align_to_second() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1020 - ms.min(1000)))).await;
}

fn load(target: SocketAddr, rate: f64) -> LoadOptions {
    let mut o = LoadOptions::new(target);
    o.rate = Some(rate);
    o.concurrency = 64;
    o.duration = Some(Duration::from_secs(10));
    o.timeout = Duration::from_secs(5);
    o
}

#[tokio::test]
async fn rate_limit_holds_100_per_second_within_10_percent() {
    let bs = named(&["app"]).await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"

[[listener.route]]
path_prefix = "/tiny"
rate_limit = {{ rate = 1, per = "1m", burst = 1 }}
cluster = "app"

[[listener.route]]
path_prefix = "/"
rate_limit = {{ rate = 100, per = "1s", burst = 20, key = "client-ip" }}
cluster = "app"

{}"#,
        clusters_of(&bs)
    );
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");
    let c = client();
    let first = get(&c, addr, "/tiny").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["ratelimit-limit"], "1");
    assert_eq!(first.headers["ratelimit-remaining"], "0");
    let refused = get(&c, addr, "/tiny").await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert!(refused.headers.contains_key("ratelimit-reset"));

    let report = run_load(load(addr, 200.0)).await;
    let ok = report.status_count(200);
    let limited = report.status_count(429);
    eprintln!(
        "local limit 100/s + burst 20, 200/s offered for 10 s: {ok} passed, {limited} limited, {} errors",
        report.errors
    );
    assert!(
        report.total > 1800,
        "the load generator sent {}",
        report.total
    );
    assert!((900..=1100).contains(&ok), "{ok} passed");
    assert!(limited > 700, "{limited} limited");
}

/// A private `redis-server` on a free loopback port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn rate_limit_shared_through_redis_holds_across_two_instances() {
    let Some(redis) = Redis::start() else {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let bs = named(&["app"]).await;
    let config = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/"
rate_limit = {{ rate = 100, per = "1s", redis = "redis://127.0.0.1:{}" }}
cluster = "app"

{}"#,
        redis.port,
        clusters_of(&bs)
    );
    let a = Proxy::run(&config);
    let b = Proxy::run(&config);
    // Both connected (a request answered with a shared count).
    let c = client();
    for p in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = get(&c, p.addr("web"), "/").await;
            if r.headers
                .get("ratelimit-remaining")
                .is_some_and(|v| v != "100")
            {
                break;
            }
            assert!(Instant::now() < deadline, "instance never reached redis");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    align_to_second().await;
    let (ra, rb) = tokio::join!(
        run_load(load(a.addr("web"), 150.0)),
        run_load(load(b.addr("web"), 150.0))
    );
    let ok = ra.status_count(200) + rb.status_count(200);
    let limited = ra.status_count(429) + rb.status_count(429);
    eprintln!(
        "shared limit 100/s over two instances, 300/s offered for 10 s: {ok} passed ({} + {}), {limited} limited",
        ra.status_count(200),
        rb.status_count(200)
    );
    assert!((900..=1100).contains(&ok), "{ok} passed");
    assert!(ra.status_count(200) > 100 && rb.status_count(200) > 100);

    // Redis gone: the limit fails open (requests pass) with a warning.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..150 {
        let r = get(&c, a.addr("web"), "/").await;
        assert_eq!(r.status, 200, "fail open");
    }
}

fn sticky_cookie(a: &Answer) -> Option<String> {
    let v = a.headers.get("set-cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.to_owned())
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_and_falls_back_when_its_backend_goes() {
    let mut bs = backends(&["0ms", "0ms", "0ms"]).await;
    let config = simple_config(&format!(
        "{}sticky = {{ cookie = \"fulcrum_sticky\", ttl = \"1h\" }}\n",
        cluster_block(
            "app",
            "round-robin",
            &bs.iter().map(|b| (b.addr, 1)).collect::<Vec<_>>(),
        )
    ));
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");
    let c = client();
    let first = get(&c, addr, "/").await;
    let cookie = sticky_cookie(&first).expect("a sticky cookie is issued");
    assert!(cookie.starts_with("fulcrum_sticky="));
    let set = first.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("Max-Age=3600") && set.contains("HttpOnly"),
        "{set}"
    );
    let home = first.backend().unwrap().to_owned();
    let port = bs.iter().find(|b| b.name == home).unwrap().addr.port();
    assert!(!cookie.contains(&port.to_string()), "opaque: {cookie}");
    for _ in 0..30 {
        let a = send(&c, request("GET", addr, "/", &[("cookie", &cookie)])).await;
        assert_eq!(a.backend(), Some(home.as_str()));
        assert!(a.headers.get("set-cookie").is_none(), "not re-issued");
    }
    // Without the cookie, round-robin spreads.
    let spread: Vec<Answer> = {
        let mut v = Vec::new();
        for _ in 0..9 {
            v.push(get(&c, addr, "/").await);
        }
        v
    };
    assert_eq!(tally(&spread).len(), 3);

    // The pinned backend goes away: the request is served elsewhere and the
    // cookie is re-issued for the new backend, which then sticks.
    let i = bs.iter().position(|b| b.name == home).unwrap();
    bs.remove(i).shutdown().await;
    let fresh = client();
    let moved = send(&fresh, request("GET", addr, "/", &[("cookie", &cookie)])).await;
    assert_eq!(moved.status, 200);
    let new_home = moved.backend().unwrap().to_owned();
    assert_ne!(new_home, home);
    let new_cookie = sticky_cookie(&moved).expect("cookie re-issued");
    assert_ne!(new_cookie, cookie);
    for _ in 0..10 {
        let a = send(
            &fresh,
            request("GET", addr, "/", &[("cookie", &new_cookie)]),
        )
        .await;
        assert_eq!(a.backend(), Some(new_home.as_str()));
    }
}
