//! End-to-end: HTTP/2 to backends (cluster `http2 = true`): one shared
//! connection per backend, health probes in HTTP/2, gRPC-style trailers
//! both ways, h2 by ALPN over TLS, requests a backend refused
//! unprocessed sent elsewhere whatever their method, and gRPC health
//! checks (`type = "grpc"`).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What an [`H2Backend`] saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    path: String,
    version: http::Version,
    headers: HeaderMap,
}

/// An HTTP/2-only backend (no HTTP/1.1 at all), plain or TLS with ALPN.
///
/// `/grpc` answers like a gRPC server: `content-type: application/grpc`,
/// the request body echoed, then trailers `grpc-status: 0` and
/// `grpc-message: echoed`. `/grpc.health.v1.Health/Check` answers the
/// gRPC health protocol for service `app.Cart` with the backend's
/// `serving` status (`SERVICE_UNKNOWN` for any other service), or with
/// `grpc-status: 12` (unimplemented) in the head when `serving` is 255.
/// `/healthz` answers `ok`. Anything else answers the backend's name, with
/// the request's authority and version in `x-authority` and `x-version`.
struct H2Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// ALPN protocols negotiated by TLS clients, in order.
    alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    /// The gRPC health status answered (1: SERVING, 2: NOT_SERVING).
    serving: Arc<AtomicU8>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A gRPC answer: `message` in its frame, then `grpc-status: 0`.
fn grpc_answer(message: &[u8], grpc_message: &'static str) -> Response<Body> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static(grpc_message));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from(frame))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

async fn answer(name: &'static str, serving: u8, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/grpc" {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        // The message, out of its frame and back in.
        return grpc_answer(&body[5..], "echoed");
    }
    if path == "/grpc.health.v1.Health/Check" {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if serving == 255 {
            return Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .header("grpc-message", "no health service")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
        }
        let status = if &body[..] == b"\0\0\0\0\x0a\x0a\x08app.Cart" {
            serving
        } else {
            3
        };
        return grpc_answer(&[0x08, status], "");
    }
    if path == "/healthz" {
        return Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
    }
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let authority = req
        .uri()
        .authority()
        .map_or("-".to_owned(), |a| a.to_string());
    Response::builder()
        .header("x-backend", name)
        .header("x-authority", authority)
        .header("x-version", format!("{:?}", req.version()))
        .body(Full::new(Bytes::from(name)).boxed())
        .unwrap()
}

impl H2Backend {
    async fn start(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> H2Backend {
        H2Backend::start_limited(name, tls, None).await
    }

    /// A backend allowing at most `max_streams` streams per connection.
    async fn start_limited(
        name: &'static str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        max_streams: Option<u32>,
    ) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let serving = Arc::new(AtomicU8::new(1));
        let (log, alpns, status) = (Arc::clone(&seen), Arc::clone(&alpn), Arc::clone(&serving));
        let conns = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let conn = conns.fetch_add(1, Ordering::Relaxed);
                let (log, alpns, tls) = (Arc::clone(&log), Arc::clone(&alpns), tls.clone());
                let status = Arc::clone(&status);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        log.lock().unwrap().push(Seen {
                            conn,
                            path: req.uri().path().to_owned(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        let serving = status.load(Ordering::Relaxed);
                        async move { Ok::<_, Infallible>(answer(name, serving, req).await) }
                    });
                    let mut server = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    server.max_concurrent_streams(max_streams);
                    match tls {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                            alpns.lock().unwrap().push(negotiated);
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        H2Backend {
            addr,
            seen,
            alpn,
            serving,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn h2_cluster(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    simple_config(&format!(
        "[cluster.app]\nalgorithm = \"round-robin\"\nhttp2 = true\nbackends = [{}]\n{extra}",
        list.join(", ")
    ))
}

const HEALTH: &str = "[cluster.app.health]\npath = \"/healthz\"\ninterval = \"100ms\"\n\
                      timeout = \"500ms\"\nrise = 1\nfall = 1\njitter = \"0s\"\n";

/// Waits up to 5 s for `f` to hold.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_cluster_shares_one_connection_per_backend_and_probes_in_http2() {
    let backend = H2Backend::start("h2", None).await;
    let proxy = Proxy::run(&h2_cluster(&[backend.addr], HEALTH));
    let web = proxy.addr("web");
    let client = client();

    let first = get(&client, web, "/first").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, "h2");
    assert_eq!(first.headers["x-version"], "HTTP/2.0");
    // The client's Host became the request's :authority.
    assert_eq!(first.headers["x-authority"], web.to_string().as_str());

    // Fifty requests at once from fifty client connections ride the one
    // connection the first request opened.
    let many = futures_util::future::join_all((0..50).map(|i| {
        let client = client.clone();
        async move { get(&client, web, &format!("/many/{i}")).await }
    }))
    .await;
    assert!(many.iter().all(|a| a.status == 200), "{many:?}");
    let seen = backend.seen();
    let first_conn = seen.iter().find(|s| s.path == "/first").unwrap().conn;
    let mut conns: Vec<usize> = seen
        .iter()
        .filter(|s| s.path.starts_with("/many/"))
        .map(|s| s.conn)
        .collect();
    assert_eq!(conns.len(), 50);
    conns.dedup();
    assert_eq!(
        conns,
        vec![first_conn],
        "every request on the shared connection"
    );
    let text = metrics_text(&proxy).await;
    assert_eq!(
        sample(
            &text,
            "fulcrum_upstream_connections_opened_total{cluster=\"app\",protocol=\"http2\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "fulcrum_upstream_http2_connections{cluster=\"app\"}"),
        Some(1.0),
        "{text}"
    );
    let forwarded = &seen.iter().find(|s| s.path == "/first").unwrap().headers;
    assert_eq!(forwarded["x-forwarded-for"], "127.0.0.1");
    assert_eq!(forwarded["x-forwarded-proto"], "http");
    assert!(
        forwarded.get("host").is_none(),
        "Host travels as :authority"
    );

    // Health probes speak HTTP/2 too (the backend has no HTTP/1.1), and
    // they keep the backend up.
    assert!(
        eventually(|| backend
            .seen()
            .iter()
            .filter(|s| s.path == "/healthz")
            .count()
            >= 3)
        .await,
        "no health probes arrived"
    );
    let probes: Vec<Seen> = backend
        .seen()
        .into_iter()
        .filter(|s| s.path == "/healthz")
        .collect();
    assert!(probes.iter().all(|s| s.version == http::Version::HTTP_2));
    let metrics = get(&client, proxy.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let up = text
        .lines()
        .find(|l| {
            l.starts_with("fulcrum_backend_healthy{") && l.contains(&backend.addr.to_string())
        })
        .unwrap_or_else(|| panic!("no health gauge in {text}"));
    assert!(up.ends_with(" 1"), "{up}");
}

/// A gRPC unary call: HTTP/2 from the client, `te: trailers`, a
/// length-prefixed message, and the status in the answer's trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_keep_their_trailers_through_the_proxy() {
    let backend = H2Backend::start("grpc", None).await;
    let proxy = Proxy::run(&h2_cluster(&[backend.addr], ""));
    let tcp = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let request = Request::post(format!("http://{}/grpc", proxy.addr("web")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message.clone()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("the answer's trailers");
    assert_eq!(collected.to_bytes(), message);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed");
    let seen = backend.seen();
    let call = seen.iter().find(|s| s.path == "/grpc").unwrap();
    assert_eq!(call.headers["te"], "trailers", "gRPC servers look for it");

    // An HTTP/1.1 client that takes trailers gets them in the last chunk.
    let mut h1 = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap();
    let head = format!(
        "POST /grpc HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\nContent-Length: 10\r\n\
         Connection: close\r\n\r\n\x00\x00\x00\x00\x05hello",
        proxy.addr("web")
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    h1.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), h1.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(raw.starts_with("http/1.1 200"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(
        raw.contains("\r\n0\r\ngrpc-status: 0\r\ngrpc-message: echoed\r\n\r\n"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_cluster_with_tls_offers_h2_by_alpn() {
    let dir = TempDir::new("h2-tls");
    let ca = TestCa::new();
    let ca_pem = dir.write("ca.pem", &ca.pem()).display().to_string();
    let mut config = ca.server_config("backend", &["127.0.0.1"]);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let backend = H2Backend::start("tls", Some(acceptor)).await;
    let proxy = Proxy::run(&h2_cluster(
        &[backend.addr],
        &format!("tls = {{ ca = \"{ca_pem}\" }}\n{HEALTH}"),
    ));
    let client = client();
    for _ in 0..3 {
        let a = get(&client, proxy.addr("web"), "/").await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.headers["x-version"], "HTTP/2.0");
    }
    assert!(
        eventually(|| backend.seen().iter().any(|s| s.path == "/healthz")).await,
        "no health probe over TLS"
    );
    let alpn = backend.alpn.lock().unwrap().clone();
    assert!(alpn.len() >= 2, "{alpn:?}");
    assert!(alpn.iter().all(|p| p.as_deref() == Some(b"h2")), "{alpn:?}");
    let seen = backend.seen();
    let request = seen.iter().find(|s| s.path == "/").unwrap();
    assert_eq!(request.headers["x-forwarded-proto"], "http");
}

/// An HTTP/2 backend that resets every stream with `REFUSED_STREAM`, or
/// (with `goaway`) starts closing each connection with `GOAWAY` as its
/// first request arrives, answering that request after 400 ms and any
/// other at once.
async fn refusing_backend(goaway: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&streams);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut first = true;
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    if !goaway {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = Response::builder()
                        .header("x-backend", "closing")
                        .body(())
                        .unwrap();
                    if std::mem::take(&mut first) {
                        conn.graceful_shutdown();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            let _ = respond.send_response(response, true);
                        });
                    } else {
                        let _ = respond.send_response(response, true);
                    }
                }
            });
        }
    });
    (addr, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_backend_refused_unprocessed_go_elsewhere_whatever_their_method() {
    let (refuser, refused) = refusing_backend(false).await;
    let good = H2Backend::start("good", None).await;
    let proxy = Proxy::run(&h2_cluster(&[refuser, good.addr], ""));
    let client = client();
    // POST is not idempotent: only a refusal proves it safe to resend.
    for i in 0..6 {
        let a = send(
            &client,
            Request::post(format!("http://{}/post/{i}", proxy.addr("web")))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.backend(), Some("good"));
    }
    assert!(
        refused.load(Ordering::Relaxed) >= 3,
        "round-robin tried the refuser"
    );
}

/// A request sent on a connection the backend is closing (its `GOAWAY`
/// came first) goes on a new connection, even with `retries = 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_its_connection_with_goaway_costs_no_request() {
    let (backend, streams) = refusing_backend(true).await;
    let proxy = Proxy::run(&h2_cluster(&[backend], "retries = 0\n"));
    let web = proxy.addr("web");
    let post = |path: &str| {
        Request::post(format!("http://{web}{path}"))
            .body(Full::default())
            .unwrap()
    };
    let slow_request = post("/slow");
    let slow = tokio::spawn(async move { send(&client(), slow_request).await });
    // The backend's GOAWAY is in; its connection stays open for /slow.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..3 {
        let a = send(&client(), post(&format!("/fast/{i}"))).await;
        assert_eq!(a.status, 200, "request {i}: {a:?}");
        assert_eq!(a.backend(), Some("closing"));
    }
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(streams.load(Ordering::Relaxed), 4);
}

fn healthy_gauge(text: &str, backend: SocketAddr) -> Option<bool> {
    text.lines()
        .find(|l| l.starts_with("fulcrum_backend_healthy{") && l.contains(&backend.to_string()))
        .map(|l| l.ends_with(" 1"))
}

/// `type = "grpc"` calls `grpc.health.v1.Health/Check` for `service`:
/// SERVING keeps a backend up; NOT_SERVING, SERVICE_UNKNOWN and an
/// unimplemented health service take it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_serving_status() {
    let a = H2Backend::start("a", None).await;
    let b = H2Backend::start("b", None).await;
    let proxy = Proxy::run(&h2_cluster(
        &[a.addr, b.addr],
        "panic_threshold = 0\n[cluster.app.health]\ntype = \"grpc\"\nservice = \"app.Cart\"\n\
         interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\njitter = \"0s\"\n",
    ));
    let client = client();
    let gauges = |client: HttpClient, admin: SocketAddr| async move {
        let text = get(&client, admin, "/metrics").await.body;
        let text = String::from_utf8_lossy(&text).into_owned();
        (healthy_gauge(&text, a.addr), healthy_gauge(&text, b.addr))
    };
    let until = Instant::now() + Duration::from_secs(5);
    while gauges(client.clone(), proxy.admin).await != (Some(true), Some(true)) {
        assert!(Instant::now() < until, "both backends should be up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let is_probe = |s: &Seen| s.path == "/grpc.health.v1.Health/Check";
    assert!(
        eventually(|| a.seen().iter().any(is_probe)).await,
        "no gRPC probe"
    );
    let probe = a.seen().into_iter().find(is_probe).unwrap();
    assert_eq!(probe.version, http::Version::HTTP_2);
    assert_eq!(probe.headers["content-type"], "application/grpc");
    assert_eq!(probe.headers["te"], "trailers");

    for (status, why) in [
        (2, "NOT_SERVING"),
        (255, "unimplemented"),
        (1, "SERVING again"),
    ] {
        b.serving.store(status, Ordering::Relaxed);
        let up = status == 1;
        let until = Instant::now() + Duration::from_secs(5);
        while gauges(client.clone(), proxy.admin).await != (Some(true), Some(up)) {
            assert!(Instant::now() < until, "{why}: b should be up = {up}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !up {
            for _ in 0..6 {
                let answer = get(&client, proxy.addr("web"), "/").await;
                assert_eq!(answer.backend(), Some("a"), "{why}: traffic avoids b");
            }
        }
    }
}

/// One HTTP/2 request (prior knowledge) to `addr`: the answer's head and
/// its body read whole.
async fn h2_call(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let call = async {
        let response = sender.send_request(request).await.unwrap();
        let (head, body) = response.into_parts();
        (head, body.collect().await.unwrap().to_bytes())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call hung")
}

/// What the proxy answers itself to a gRPC call is a gRPC status, not an
/// HTTP error page; other HTTP/2 requests still get the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answers_to_grpc_calls_carry_a_grpc_status() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\
         [[listener.route]]\npath_prefix = \"/shop.Cart/\"\ncluster = \"cart\"\n\n\
         [cluster.cart]\nhttp2 = true\nretries = 0\nbackends = [{{ address = \"{dead}\" }}]\n"
    );
    let proxy = Proxy::run(&config);
    let web = proxy.addr("web");
    let call = |path: &str, content_type: &str| {
        Request::post(format!("http://{web}{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    };

    let (head, body) = h2_call(web, call("/shop.Cart/Add", "application/grpc")).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(head.headers["grpc-status"], "14", "UNAVAILABLE: {head:?}");
    let message = head.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("cluster `cart`"), "{message}");
    assert!(body.is_empty(), "trailers-only: {body:?}");

    let (head, _) = h2_call(web, call("/shop.Orders/List", "application/grpc+proto")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["grpc-status"], "12", "UNIMPLEMENTED: {head:?}");

    // A call shed by admission control: UNAVAILABLE, with the pushback
    // gRPC's retry policy obeys.
    let mut slow = BackendOptions::new("slow");
    slow.latency = fulcrum_testbed::LatencyDist::Fixed(Duration::from_millis(800));
    let slow = spawn_backend(slow).await.unwrap();
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"cart\"\n\n\
         [cluster.cart]\nhttp2 = true\nbackends = [{{ address = \"{}\" }}]\n\
         [cluster.cart.admission]\nlimit = 1\nmax_queue = 1\nqueue_timeout = \"2s\"\n",
        slow.addr
    );
    let shedding = Proxy::run(&config);
    let busy = shedding.addr("web");
    let first = tokio::spawn(h2_call(busy, call("/shop.Cart/Add", "application/grpc")));
    let second = tokio::spawn(h2_call(busy, call("/shop.Cart/Add", "application/grpc")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The slot and the queue are taken: a third call of the same class
    // cannot displace anyone.
    let (head, _) = h2_call(busy, call("/shop.Cart/Add", "application/grpc")).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.headers["grpc-status"], "14", "{head:?}");
    assert_eq!(head.headers["grpc-retry-pushback-ms"], "2000", "{head:?}");
    assert_eq!(head.headers["x-fulcrum-shed"], "queue-full");
    for call in [first, second] {
        let (head, _) = call.await.unwrap();
        assert_eq!(head.status, 200, "{head:?}");
        assert!(
            head.headers.get("grpc-status").is_none(),
            "the backend answered"
        );
    }

    // Not gRPC: the usual page.
    let (head, body) = h2_call(web, call("/shop.Cart/Add", "application/json")).await;
    assert_eq!(head.status, 503);
    assert!(head.headers.get("grpc-status").is_none());
    assert!(String::from_utf8_lossy(&body).contains("503 service unavailable"));
}

/// A backend that allows 2 streams per connection gets more connections
/// when more requests are in flight, instead of the requests waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_connections_stream_limit_open_another_connection() {
    let backend = H2Backend::start_limited("narrow", None, Some(2)).await;
    let proxy = Proxy::run(&h2_cluster(&[backend.addr], ""));
    let web = proxy.addr("web");
    let client = client();
    // The first connection learns the limit from the backend's SETTINGS.
    assert_eq!(get(&client, web, "/warm").await.status, 200);
    let slow = futures_util::future::join_all((0..6).map(|i| {
        let client = client.clone();
        async move { get(&client, web, &format!("/slow/{i}")).await }
    }))
    .await;
    assert!(slow.iter().all(|a| a.status == 200), "{slow:?}");
    let seen = backend.seen();
    let mut per_conn = std::collections::HashMap::new();
    for s in seen.iter().filter(|s| s.path.starts_with("/slow/")) {
        *per_conn.entry(s.conn).or_insert(0) += 1;
    }
    assert!(
        per_conn.len() >= 3,
        "6 requests, 2 streams each: {per_conn:?}"
    );
    // Once they are done, the connections are reused: no new one.
    let before: std::collections::HashSet<usize> = seen.iter().map(|s| s.conn).collect();
    for i in 0..4 {
        assert_eq!(get(&client, web, &format!("/after/{i}")).await.status, 200);
    }
    let after: Vec<usize> = backend
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/after/"))
        .map(|s| s.conn)
        .collect();
    assert!(
        after.iter().all(|c| before.contains(c)),
        "{after:?} not in {before:?}"
    );
}
