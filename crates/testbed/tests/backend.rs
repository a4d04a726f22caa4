//! Testbed backends on real sockets (127.0.0.1:0).

use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum_testbed::backend::hex;
use fulcrum_testbed::{
    pattern_sha256, spawn_backend, BackendOptions, LatencyDist, Mode, RunningBackend,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Upper bound that only catches hangs.
const HANG: Duration = Duration::from_secs(10);

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }
}

async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(HANG, client.request(req))
        .await
        .expect("no hang")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(HANG, body.collect())
        .await
        .expect("no hang")
        .expect("body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(backend: &RunningBackend, path: &str) -> Answer {
    let req = Request::get(format!("{}{path}", backend.base_url()))
        .body(Full::default())
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn backend_answers_with_its_name_and_header() {
    let backend = spawn_backend(BackendOptions::new("alpha")).await.unwrap();
    let answer = get(&backend, "/anything").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-backend"), "alpha");
    assert_eq!(&answer.body[..], b"alpha\n");
    assert_eq!(backend.requests(), 1);
    backend.shutdown().await;
}

#[tokio::test]
async fn backend_answers_configured_status() {
    let mut opts = BackendOptions::new("teapot");
    opts.status = 418;
    let backend = spawn_backend(opts).await.unwrap();
    assert_eq!(get(&backend, "/").await.status.as_u16(), 418);
    assert_eq!(get(&backend, "/status/204").await.status.as_u16(), 204);
    backend.shutdown().await;
}

#[tokio::test]
async fn backend_speaks_h2c_with_prior_knowledge() {
    let backend = spawn_backend(BackendOptions::new("h2")).await.unwrap();
    let client: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(format!("{}/", backend.base_url()))
        .body(Full::default())
        .unwrap();
    let answer = send(&client, req).await;
    assert_eq!(answer.header("x-backend"), "h2");
    assert_eq!(&answer.body[..], b"h2\n");
    backend.shutdown().await;
}

#[tokio::test]
async fn healthz_toggles_and_is_not_counted() {
    let backend = spawn_backend(BackendOptions::new("h")).await.unwrap();
    let answer = get(&backend, "/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"ok");
    backend.set_healthy(false);
    assert_eq!(
        get(&backend, "/healthz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Health only affects /healthz.
    assert_eq!(get(&backend, "/").await.status, StatusCode::OK);
    backend.set_healthy(true);
    assert_eq!(get(&backend, "/healthz").await.status, StatusCode::OK);
    assert_eq!(backend.requests(), 1);
    backend.shutdown().await;
}

#[tokio::test]
async fn latency_is_applied_but_not_to_healthz() {
    let mut opts = BackendOptions::new("slow");
    opts.latency = LatencyDist::Fixed(Duration::from_millis(200));
    let backend = spawn_backend(opts).await.unwrap();
    let started = Instant::now();
    get(&backend, "/").await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < HANG);

    backend.set_latency(LatencyDist::Fixed(Duration::from_secs(30)));
    // /healthz must answer although a request would take 30 s.
    get(&backend, "/healthz").await;
    backend.shutdown().await;
}

#[tokio::test]
async fn post_body_sha256_is_computed_for_one_mib() {
    let backend = spawn_backend(BackendOptions::new("sink")).await.unwrap();
    let payload = fulcrum_testbed::pattern(1024 * 1024);
    let req = Request::post(format!("{}/upload", backend.base_url()))
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-body-length"), "1048576");
    assert_eq!(answer.header("x-body-sha256"), pattern_sha256(1024 * 1024));
    assert_eq!(&answer.body[..], b"sink\n");
    backend.shutdown().await;
}

#[tokio::test]
async fn post_chunked_body_is_hashed_incrementally() {
    let backend = spawn_backend(BackendOptions::new("sink")).await.unwrap();
    let body = ChunkedBody(
        fulcrum_testbed::pattern_chunks(300_000)
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("{}/", backend.base_url()))
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(HANG, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.headers()["x-body-sha256"].to_str().unwrap(),
        pattern_sha256(300_000)
    );
    assert_eq!(response.headers()["x-body-length"], "300000");
    backend.shutdown().await;
}

/// A body of unknown length (sent chunked), one frame per chunk.
struct ChunkedBody(std::vec::IntoIter<Bytes>);

impl hyper::body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|chunk| Ok(Frame::data(chunk))))
    }
}

#[tokio::test]
async fn bytes_streams_exactly_n_pattern_bytes() {
    let backend = spawn_backend(BackendOptions::new("bulk")).await.unwrap();
    let n = 10 * 1024 * 1024 + 123;
    let answer = get(&backend, &format!("/bytes/{n}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), n);
    assert_eq!(answer.header("x-body-length"), n.to_string());
    assert_eq!(
        hex(&sha2_digest(&answer.body)),
        pattern_sha256(n as u64),
        "pattern mismatch"
    );
    let small = get(&backend, "/bytes/1000").await;
    assert_eq!(small.header("x-body-sha256"), pattern_sha256(1000));
    backend.shutdown().await;
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test]
async fn echo_headers_returns_request_headers() {
    let backend = spawn_backend(BackendOptions::new("echo")).await.unwrap();
    let req = Request::get(format!("{}/echo-headers", backend.base_url()))
        .header("x-forwarded-for", "10.0.0.1")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), req).await;
    let text = std::str::from_utf8(&answer.body).unwrap();
    assert!(
        text.lines().any(|l| l == "x-forwarded-for: 10.0.0.1"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("host: ")), "{text}");
    backend.shutdown().await;
}

#[tokio::test]
async fn fail_mode_answers_status_without_latency() {
    let mut opts = BackendOptions::new("broken");
    opts.latency = LatencyDist::Fixed(Duration::from_secs(30));
    opts.mode = Mode::Fail { status: 502 };
    let backend = spawn_backend(opts).await.unwrap();
    let answer = get(&backend, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.header("x-backend"), "broken");
    backend.shutdown().await;
}

#[tokio::test]
async fn set_mode_changes_behaviour_at_run_time() {
    let backend = spawn_backend(BackendOptions::new("m")).await.unwrap();
    assert_eq!(get(&backend, "/").await.status, StatusCode::OK);
    backend.set_mode(Mode::Flaky { fail_ratio: 1.0 });
    assert_eq!(
        get(&backend, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    backend.set_mode(Mode::Normal);
    assert_eq!(get(&backend, "/").await.status, StatusCode::OK);
    backend.shutdown().await;
}

#[tokio::test]
async fn reset_mode_closes_without_answer() {
    let mut opts = BackendOptions::new("r");
    opts.mode = Mode::Reset;
    let backend = spawn_backend(opts).await.unwrap();
    let req = Request::get(format!("{}/", backend.base_url()))
        .body(Full::default())
        .unwrap();
    let result = tokio::time::timeout(HANG, client().request(req))
        .await
        .expect("no hang");
    assert!(result.is_err(), "expected a transport error");
    assert_eq!(backend.requests(), 1);
    backend.shutdown().await;
}

#[tokio::test]
async fn black_hole_never_answers_until_shutdown() {
    let mut opts = BackendOptions::new("void");
    opts.mode = Mode::BlackHole;
    let backend = spawn_backend(opts).await.unwrap();
    let req = Request::get(format!("{}/", backend.base_url()))
        .body(Full::default())
        .unwrap();
    let pending = tokio::spawn(client().request(req));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "black hole answered");
    assert_eq!(backend.requests(), 1);
    assert_eq!(backend.in_flight(), 1);
    backend.shutdown().await;
    let result = tokio::time::timeout(HANG, pending)
        .await
        .expect("shutdown releases the request")
        .unwrap();
    assert!(result.is_err(), "black hole must not answer");
}

#[tokio::test]
async fn shutdown_refuses_new_connections() {
    let backend = spawn_backend(BackendOptions::new("gone")).await.unwrap();
    let addr = backend.addr;
    // A live keep-alive connection, too.
    let client = client();
    let req = Request::get(format!("http://{addr}/"))
        .body(Full::default())
        .unwrap();
    send(&client, req).await;
    backend.shutdown().await;
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The pooled connection was closed as well.
    let req = Request::get(format!("http://{addr}/"))
        .body(Full::default())
        .unwrap();
    let result = tokio::time::timeout(HANG, client.request(req))
        .await
        .expect("no hang");
    assert!(result.is_err());
}

#[tokio::test]
async fn capacity_queues_excess_requests() {
    let mut opts = BackendOptions::new("single");
    opts.capacity = Some(1);
    opts.load_report = true;
    opts.latency = LatencyDist::Fixed(Duration::from_millis(150));
    let backend = spawn_backend(opts).await.unwrap();
    let started = Instant::now();
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let req = Request::get(format!("{}/", backend.base_url()))
            .body(Full::default())
            .unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move { send(&client, req).await }));
    }
    let mut max_in_flight = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        let in_flight: usize = answer.header("x-fulcrum-in-flight").parse().unwrap();
        max_in_flight = max_in_flight.max(in_flight);
        assert!(answer
            .header("endpoint-load-metrics")
            .starts_with("TEXT cpu_utilization="));
    }
    let elapsed = started.elapsed();
    // One worker serves three 150 ms requests one after another.
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(max_in_flight >= 2, "queued requests count as in flight");
    backend.shutdown().await;
}

#[tokio::test]
async fn invalid_options_are_rejected() {
    let mut opts = BackendOptions::new("zero");
    opts.capacity = Some(0);
    let err = spawn_backend(opts).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let mut opts = BackendOptions::new("bad status");
    opts.status = 1000;
    assert!(spawn_backend(opts).await.is_err());
}
