//! Abuse resistance through real sockets: HTTP/1 framing and header
//! hygiene, the HTTP/2 → HTTP/1 downgrade, and client-side limits.
//!
//! The backend here is a recording server: it logs exactly the bytes it
//! receives, so a test can assert that no request hidden in a body (request
//! smuggling) ever reached it.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The slowloris test measures latency: it runs alone (write lock) while the
/// other tests of this file share the read lock.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A backend that records every byte it receives and answers each request
/// head with `200 ok` once the request's body (by Content-Length or chunked)
/// has arrived.
struct RecordingBackend {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Connections the proxy closed (or that timed out).
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl RecordingBackend {
    async fn spawn() -> RecordingBackend {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let log = Arc::clone(&bytes);
        let ended = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let (log, ended) = (Arc::clone(&log), Arc::clone(&ended));
                tokio::spawn(async move {
                    serve_recording(stream, log).await;
                    ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        RecordingBackend {
            addr,
            bytes,
            closed,
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn serve_recording(mut stream: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Some(used) = complete_request(&pending) {
            pending.drain(..used);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

/// Length of the first complete request in `buf` (the proxy sends only
/// well-formed requests, so a naive reading is enough).
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if let Some(line) = head.lines().find(|l| l.starts_with("content-length:")) {
        let n: usize = line[15..].trim().parse().ok()?;
        return (buf.len() >= head_end + n).then_some(head_end + n);
    }
    if head.contains("transfer-encoding: chunked") {
        let end = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head_end + end + 5);
    }
    Some(head_end)
}

/// Sends raw bytes, then reads until the server closes (bounded by 5 s).
/// Returns the text and whether the server closed the connection.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

async fn exchange(addr: SocketAddr, request: Vec<u8>) -> (String, bool) {
    tokio::task::spawn_blocking(move || raw_exchange(addr, &request))
        .await
        .unwrap()
}

/// One `GET path` with `Connection: close` over a raw socket.
async fn get_close(addr: SocketAddr, path: &str) -> (String, bool) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(addr, request.into_bytes()).await
}

fn proxy_to(backend: SocketAddr, listener_extra: &str) -> Proxy {
    Proxy::run(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n{listener_extra}\n\n{}",
        cluster_block("app", "round-robin", &[(backend, 1)])
    ))
}

/// Each case carries a request hidden in its body (`/smuggled-N`), and is
/// itself marked `/case-N`; neither may reach the backend.
fn framing_cases() -> Vec<(&'static str, Vec<u8>)> {
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("cl+te", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}")),
        ("te+cl", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{hidden}")),
        ("duplicate cl", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n{hidden}")),
        ("list cl", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 36\r\n\r\n{hidden}")),
        ("signed cl", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n{hidden}")),
        ("negative cl", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{hidden}")),
        ("te not chunked", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{hidden}")),
        ("te gzip", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{hidden}")),
        ("te twice", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}")),
        ("obs-fold", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 36\r\n\r\n{hidden}")),
        ("obs-fold te", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{hidden}")),
        ("space before colon", format!("POST /case HTTP/1.1\r\nHost: x\r\nContent-Length : 36\r\n\r\n{hidden}")),
        ("tab before colon", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n{hidden}")),
        ("bare cr", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 36\r\n\r\n{hidden}")),
        ("nul in value", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n{hidden}")),
        ("nul in name", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-\0A: b\r\n\r\n{hidden}")),
        ("control in value", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n{hidden}")),
        ("control in name", format!("POST /case HTTP/1.1\r\nHost: x\r\nX-\x7fA: b\r\n\r\n{hidden}")),
        ("invalid chunk size", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{hidden}")),
        ("chunk size overflow", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000024\r\n{hidden}\r\n0\r\n\r\n")),
        ("negative chunk size", format!("POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-24\r\n{hidden}\r\n0\r\n\r\n")),
        ("multiple host", format!("POST /case HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 36\r\n\r\n{hidden}")),
        ("absolute-form host mismatch", format!("POST http://evil.example/case HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\n{hidden}")),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (name, text))| {
            let text = text
                .replace("/case", &format!("/case-{i}"))
                .replace("/smuggled", &format!("/smuggled-{i}"));
            (name, text.into_bytes())
        })
        .collect()
}

#[tokio::test]
async fn ambiguous_or_malformed_requests_get_400_close_and_never_reach_the_backend() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    let addr = proxy.addr("web");
    let mut failures = Vec::new();
    for (i, (name, request)) in framing_cases().into_iter().enumerate() {
        let (text, closed) = exchange(addr, request).await;
        if !text.starts_with("HTTP/1.1 400") || !closed || text.matches("HTTP/1.1").count() != 1 {
            failures.push(format!("{i} {name}: closed={closed} answer={text:?}"));
        }
        let seen = backend.received();
        if seen.contains(&format!("/smuggled-{i} ")) || seen.contains(&format!("/case-{i} ")) {
            failures.push(format!("{i} {name}: reached the backend: {seen:?}"));
        }
    }
    // The backend is alive and recording: a clean request does get through.
    let (text, _) = exchange(
        addr,
        b"POST /clean HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            .to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(backend.received().contains("POST /clean HTTP/1.1"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn smuggled_request_after_a_valid_one_is_cut_off() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    let stream = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let (text, closed) = exchange(proxy.addr("web"), stream.to_vec()).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(closed);
    let seen = backend.received();
    assert!(seen.contains("GET /first"), "{seen}");
    assert!(
        !seen.contains("/second") && !seen.contains("/smuggled"),
        "{seen}"
    );
}

// ---------------------------------------------------------------------------
// HTTP/2 → HTTP/1 downgrade, with hand-built frames (a real h2 client would
// refuse to send these).

/// A header block as (name, value) pairs, in order.
type HeaderList = Vec<(&'static [u8], &'static [u8])>;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// Sends one HEADERS frame (END_STREAM | END_HEADERS) on stream 1 and
/// returns the `:status` of the answer, or `None` if the stream or the
/// connection was reset instead.
async fn h2_request(addr: SocketAddr, headers: &[(&[u8], &[u8])]) -> Option<u16> {
    let mut block = Vec::new();
    for (n, v) in headers {
        hpack_literal(&mut block, n, v);
    }
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &block));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&out).await.unwrap();
    // Stream 1's answer, its reset, or the connection's end.
    let ends = |f: &H2Frame| (matches!(f.kind, 0x1 | 0x3) && f.stream == 1) || f.kind == 0x7;
    let frames = h2_read_frames(&mut s, Duration::from_secs(5), |fs| fs.iter().any(ends)).await;
    let last = frames.iter().find(|f| ends(f))?;
    if last.kind != 0x1 {
        return None;
    }
    // :status from the static table (index 8..=14) or a literal.
    Some(match last.payload.first().copied().unwrap_or(0) {
        0x88 => 200,
        0x89 => 204,
        0x8a => 206,
        0x8b => 304,
        0x8c => 400,
        0x8d => 404,
        0x8e => 500,
        _ => 0,
    })
}

#[tokio::test]
async fn h2_downgrade_refuses_unsafe_headers_and_pseudo_header_misuse() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    let addr = proxy.addr("web");
    let base: [(&[u8], &[u8]); 4] = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", b"/ok"),
    ];
    // The well-formed request is forwarded.
    assert_eq!(h2_request(addr, &base).await, Some(200));
    assert!(backend.received().contains("GET /ok HTTP/1.1"));
    let with = |name: &'static [u8], value: &'static [u8], path: &'static [u8]| {
        let mut h: Vec<(&[u8], &[u8])> = base.to_vec();
        h[3].1 = path;
        h.push((name, value));
        h
    };
    let cases: Vec<(&str, HeaderList)> = vec![
        (
            "crlf in value",
            with(b"x-a", b"a\r\nx-smuggled: 1", b"/bad-0"),
        ),
        ("lf in value", with(b"x-a", b"a\nx-smuggled: 1", b"/bad-1")),
        ("nul in value", with(b"x-a", b"a\0b", b"/bad-2")),
        ("connection", with(b"connection", b"close", b"/bad-3")),
        (
            "transfer-encoding",
            with(b"transfer-encoding", b"chunked", b"/bad-4"),
        ),
        ("keep-alive", with(b"keep-alive", b"timeout=5", b"/bad-5")),
        ("upgrade", with(b"upgrade", b"websocket", b"/bad-6")),
        (
            "proxy-connection",
            with(b"proxy-connection", b"keep-alive", b"/bad-7"),
        ),
        ("te gzip", with(b"te", b"gzip", b"/bad-8")),
        ("uppercase name", with(b"X-Upper", b"1", b"/bad-9")),
        ("unknown pseudo-header", with(b":evil", b"1", b"/bad-10")),
        (
            "host disagrees with :authority",
            with(b"host", b"evil.example", b"/bad-11"),
        ),
        ("pseudo-header after regular", {
            let mut h: Vec<(&[u8], &[u8])> =
                vec![(b":method", b"GET"), (b":scheme", b"http"), (b"x-a", b"1")];
            h.push((b":authority", b"x"));
            h.push((b":path", b"/bad-12"));
            h
        }),
        ("duplicate :path", {
            let mut h: Vec<(&[u8], &[u8])> = base.to_vec();
            h[3].1 = b"/bad-13";
            h.push((b":path", b"/bad-13b"));
            h
        }),
        (
            "missing :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b"x-bad", b"/bad-14"),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, headers)) in cases.iter().enumerate() {
        let status = h2_request(addr, headers).await;
        if matches!(status, Some(200..=299)) {
            failures.push(format!("{name}: answered {status:?}"));
        }
        let seen = backend.received();
        if seen.contains(&format!("/bad-{i}")) || seen.contains("smuggled") {
            failures.push(format!("{name}: reached the backend"));
        }
    }
    // TE: trailers is the one TE value allowed in HTTP/2.
    let mut ok = base.to_vec();
    ok[3].1 = b"/trailers";
    ok.push((b"te", b"trailers"));
    assert_eq!(h2_request(addr, &ok).await, Some(200));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Limits.

#[tokio::test]
async fn limits_answer_414_413_431_and_close() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(
        backend.addr,
        "max_uri_bytes = 300\nmax_body_bytes = 10\nmax_header_bytes = 1024",
    );
    let addr = proxy.addr("web");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(400));
    let (text, closed) = exchange(addr, long.into_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 414"), "{text}");
    assert!(closed);
    let (text, closed) = exchange(
        addr,
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world".to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(closed);
    let huge = format!(
        "GET /h HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let (text, closed) = exchange(addr, huge.into_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(closed);
    let (text, _) = exchange(
        addr,
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"
            .to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = backend.received();
    assert!(
        !seen.contains("/big") && !seen.contains("/uuu") && !seen.contains("GET /h "),
        "{seen}"
    );
}

#[tokio::test]
async fn max_requests_per_connection_closes_after_the_last_answer() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "max_requests_per_connection = 2");
    let three = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    let (text, closed) = exchange(proxy.addr("web"), three.to_vec()).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed);
    assert!(!backend.received().contains("GET /3"));
}

#[tokio::test]
async fn max_connections_per_ip_refuses_the_extra_connection() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "max_connections_per_ip = 2");
    let addr = proxy.addr("web");
    // Each holds a half-sent head: a connection counts once it has spoken
    // (http listeners defer accepting silent ones to the kernel).
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
    b.write_all(b"GET /b HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (text, closed) = exchange(addr, b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert!(closed && text.is_empty(), "{text}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (text, _) = get_close(addr, "/again").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// `fulcrum_listener_connections_total{listener="web"}`: connections the
/// proxy has accepted.
async fn accepted(proxy: &Proxy) -> u64 {
    let metrics = get(&client(), proxy.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("fulcrum_listener_connections_total{listener=\"web\"}"))
        .unwrap_or_else(|| panic!("no accepted count in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The accepted count once it has moved past `before`, or after `within`.
async fn accepted_after(proxy: &Proxy, before: u64, within: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let now = accepted(proxy).await;
        if now != before || started.elapsed() >= within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn defer_accept_leaves_silent_connections_to_the_kernel_until_they_speak() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    for deferred in [true, false] {
        let extra = if deferred { "" } else { "defer_accept = false" };
        let proxy = proxy_to(backend.addr, extra);
        let mut silent = TcpStream::connect(proxy.addr("web")).await.unwrap();
        if deferred {
            // The kernel holds it for about a second before handing it over.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                accepted(&proxy).await,
                0,
                "a silent connection was accepted"
            );
        } else {
            assert_eq!(
                accepted_after(&proxy, 0, Duration::from_secs(5)).await,
                1,
                "defer_accept = false waits for data"
            );
        }
        silent
            .write_all(b"GET /spoke HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_until_closed(&mut silent).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{extra}: {text}");
        assert_eq!(accepted(&proxy).await, 1);
    }
}

#[tokio::test]
async fn defer_accept_turned_off_by_a_reload_applies_to_the_running_listener() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    let text = std::fs::read_to_string(&proxy.config_path).unwrap();
    let off = text.replacen(
        "cluster = \"app\"\n",
        "cluster = \"app\"\ndefer_accept = false\n",
        1,
    );
    assert_ne!(off, text);
    std::fs::write(&proxy.config_path, off).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status();
    let reloaded = "fulcrum_config_reloads_total{result=\"success\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = get(&client(), proxy.admin, "/metrics").await;
        if String::from_utf8_lossy(&metrics.body).contains(reloaded) {
            break;
        }
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The listener's accept loop restarts with the new settings.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = accepted(&proxy).await;
    let _silent = TcpStream::connect(proxy.addr("web")).await.unwrap();
    // Still deferred, the kernel would hold it for a second.
    assert_eq!(
        accepted_after(&proxy, before, Duration::from_millis(700)).await,
        before + 1,
        "still deferred after the reload"
    );
}

// ---------------------------------------------------------------------------
// Slowloris.

/// Attacking connections; scaled down when the open-file limit is low (the
/// proxy inherits this process's limit and needs one fd per connection too).
const SLOWLORIS_CONNECTIONS: usize = 1_000;

/// The soft `Max open files` of this process, from /proc/self/limits.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Sequential GETs on one keep-alive connection for `span`; their latencies.
async fn timed_gets(client: &HttpClient, addr: SocketAddr, span: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let end = Instant::now() + span;
    while Instant::now() < end {
        let started = Instant::now();
        let answer = get(client, addr, "/").await;
        out.push(started.elapsed());
        assert_eq!(answer.status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

/// The p99 of GETs sent for `span` after `warm` of warm-up, from a thread
/// and runtime of their own, so the test's other tasks cannot delay them.
fn p99_on_own_runtime(addr: SocketAddr, warm: Duration, span: Duration) -> Duration {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = common::client();
            timed_gets(&client, addr, warm).await;
            p99(timed_gets(&client, addr, span).await)
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_at_the_header_timeout_and_others_are_served() {
    let _alone = TIMING.write().await;
    let limit = open_file_limit().unwrap_or(1024);
    let n = SLOWLORIS_CONNECTIONS
        .min(limit.saturating_sub(200) / 2)
        .max(10);
    if n < SLOWLORIS_CONNECTIONS {
        eprintln!("open-file limit {limit}: slowloris scaled down to {n} connections");
    }
    let bs = backends(&["0ms"]).await;
    let proxy = proxy_to(
        bs[0].addr,
        "header_timeout = \"2s\"\nmax_connections_per_ip = 100000",
    );
    let addr = proxy.addr("web");
    // Warm up, then the unloaded baseline, measured the same way as under load.
    let unloaded = p99_on_own_runtime(addr, Duration::from_millis(300), Duration::from_secs(2));

    // The attack: n connections each trickling a request head one byte per
    // second; a connection the proxy closes is replaced at once.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lifetimes = Arc::new(Mutex::new(Vec::new()));
    let mut attackers = Vec::new();
    for _ in 0..n {
        let stop = Arc::clone(&stop);
        let lifetimes = Arc::clone(&lifetimes);
        // Attackers start spread over the header timeout, as independent
        // clients would, rather than in one synchronised burst.
        let delay = Duration::from_millis(fastrand::u64(..2_000));
        attackers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let opened = Instant::now();
                for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    // Waiting for the next byte, watch for the proxy closing.
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                        Err(_) => continue,
                        Ok(_) => break,
                    }
                }
                lifetimes.lock().unwrap().push(opened.elapsed());
            }
        }));
    }
    // Let the attack build up, then measure normal clients through it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The normal client runs on its own thread and runtime, so the attack
    // tasks of this test do not delay it in the test's own scheduler.
    let loaded = p99_on_own_runtime(addr, Duration::from_millis(200), Duration::from_secs(6));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(3), a).await;
    }
    let lifetimes = lifetimes.lock().unwrap().clone();
    eprintln!(
        "slowloris: {n} connections, {} cut, unloaded p99 {unloaded:?}, loaded p99 {loaded:?}",
        lifetimes.len()
    );
    // Every connection was cut, at the header timeout (2 s, the 1 s write
    // cadence and a loaded 2-core machine give the margin).
    assert!(
        lifetimes.len() >= n,
        "only {} of {n} slow connections were cut",
        lifetimes.len()
    );
    let early = lifetimes
        .iter()
        .filter(|d| **d < Duration::from_millis(1500))
        .count();
    let late = lifetimes
        .iter()
        .filter(|d| **d > Duration::from_secs(5))
        .count();
    assert_eq!(early, 0, "slow connections cut before the header timeout");
    assert_eq!(late, 0, "slow connections kept past the header timeout");
    // Normal clients: p99 under twice the unloaded p99. On a shared 2-core
    // machine the attack's own client tasks compete for the same cores, so
    // by default (STYLE: timings are benchmarks, tests keep generous bounds)
    // 50 ms of slack is allowed; FULCRUM_STRICT_TIMING=1 asserts the bare 2x
    // on a quiet machine. Starvation (accept blocked, workers busy) shows as
    // seconds and fails either way.
    let slack = if std::env::var_os("FULCRUM_STRICT_TIMING").is_some() {
        Duration::ZERO
    } else {
        Duration::from_millis(50)
    };
    assert!(
        loaded <= unloaded * 2 + slack,
        "p99 {loaded:?} under slowloris vs {unloaded:?} unloaded"
    );
}

// ---------------------------------------------------------------------------
// Keep-alive idle time and the header timeout.

/// Listener timers for the keep-alive tests: [`PAUSE`] is longer than the
/// header timeout and shorter than the idle timeout.
const KEEP_ALIVE_TIMERS: &str = "header_timeout = \"300ms\"\nidle_timeout = \"2s\"";

/// A client's silence between two requests on a kept-alive connection.
const PAUSE: Duration = Duration::from_secs(1);

/// Reads one whole answer (head and Content-Length body) off `s`; returns
/// what was read when the answer is complete, the connection closes or 5 s
/// pass.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while complete_request(&out).is_none() {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one request on `s` and expects it answered 200, leaving the
/// connection kept alive.
async fn first_request(s: &mut TcpStream) {
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_answer(s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Waits up to `within` for the proxy to close `s` (end of stream or an
/// error) without sending anything; returns how long that took, or `None`
/// if it was still open.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let since = Instant::now();
    let mut buf = [0u8; 512];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(since.elapsed()),
        _ => None,
    }
}

/// Sends `head`, then one more byte of a header every 50 ms, never
/// finishing the head, until the proxy closes the connection or `within`
/// passes. Returns what the proxy sent and how long after `head` it closed.
async fn trickle_head(
    s: &mut TcpStream,
    head: &[u8],
    within: Duration,
) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut filler = b"X-Slow: ".iter().cycle();
    let mut next: &[u8] = head;
    let closed = loop {
        if s.write_all(next).await.is_err() {
            break Some(started.elapsed());
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if started.elapsed() > within {
            break None;
        }
        next = std::slice::from_ref(filler.next().unwrap());
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn keep_alive_connection_idle_past_the_header_timeout_is_still_served() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, KEEP_ALIVE_TIMERS);
    let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
    first_request(&mut s).await;
    tokio::time::sleep(PAUSE).await;
    // A write to a connection the proxy closed may still succeed; the
    // answer tells.
    let _ = s
        .write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let text = read_answer(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "second request after {PAUSE:?} idle ({KEEP_ALIVE_TIMERS:?}): {text:?}"
    );
}

#[tokio::test]
async fn keep_alive_connection_idle_for_the_idle_timeout_is_closed() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, KEEP_ALIVE_TIMERS);
    let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
    first_request(&mut s).await;
    // Closed between one and two idle periods after the last byte (the idle
    // check runs once a period); 10 s catches a connection kept for ever.
    let closed_after = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("idle connection not closed within 10 s");
    // Not at the header timeout (300 ms); some slack below idle_timeout
    // (2 s) for a loaded machine.
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?} idle ({KEEP_ALIVE_TIMERS:?})"
    );
}

#[tokio::test]
async fn partial_request_head_is_cut_at_the_header_timeout_from_its_first_byte() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    // The idle timeout is far off: only the header timeout can close these.
    let proxy = proxy_to(
        backend.addr,
        "header_timeout = \"300ms\"\nidle_timeout = \"10s\"",
    );
    let addr = proxy.addr("web");
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\n";
    // On a new connection, and on a kept-alive one after a pause longer
    // than the header timeout (the clock starts with the head, not with
    // the wait for it).
    for kept_alive in [false, true] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if kept_alive {
            first_request(&mut s).await;
            tokio::time::sleep(PAUSE).await;
        }
        let (text, closed) = trickle_head(&mut s, head, Duration::from_secs(5)).await;
        let closed = closed.unwrap_or_else(|| {
            panic!("kept alive {kept_alive}: a head trickled for 5 s was not cut")
        });
        eprintln!("kept alive {kept_alive}: cut {closed:?} after the head's first byte");
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "kept alive {kept_alive}: {text}"
        );
        assert!(
            closed >= Duration::from_millis(250),
            "kept alive {kept_alive}: cut {closed:?} after the head's first byte"
        );
    }
    assert!(!backend.received().contains("/slow"));
}

#[tokio::test]
async fn new_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    // The idle timeout is far off: only the header timeout can close it.
    let proxy = proxy_to(
        backend.addr,
        "header_timeout = \"300ms\"\nidle_timeout = \"10s\"",
    );
    let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
    let closed_after = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("silent connection not closed within 5 s");
    assert!(
        closed_after >= Duration::from_millis(250),
        "closed after {closed_after:?}, before the header timeout"
    );
}

// ---------------------------------------------------------------------------
// Access control.

#[tokio::test]
async fn deny_and_allow_lists_answer_403() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let denied = proxy_to(backend.addr, "deny = [\"127.0.0.0/8\"]");
    let (text, _) = get_close(denied.addr("web"), "/denied").await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    let not_allowed = proxy_to(backend.addr, "allow = [\"192.0.2.0/24\", \"::1\"]");
    let (text, _) = get_close(not_allowed.addr("web"), "/not-allowed").await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    let allowed = proxy_to(backend.addr, "allow = [\"127.0.0.1/32\"]");
    let (text, _) = get_close(allowed.addr("web"), "/allowed").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = backend.received();
    assert!(
        seen.contains("/allowed") && !seen.contains("/denied") && !seen.contains("/not-allowed")
    );
}

/// The X-Forwarded-For value the backend received for request `path`.
fn forwarded_for(seen: &str, path: &str) -> String {
    let request = seen
        .split(&format!("GET {path} "))
        .nth(1)
        .unwrap_or_default();
    let head = request.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-forwarded-for:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn x_forwarded_for_is_replaced_unless_the_peer_is_a_trusted_proxy() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let untrusted = proxy_to(backend.addr, "trusted_proxies = [\"10.0.0.0/8\"]");
    let _ = exchange(
        untrusted.addr("web"),
        b"GET /spoof HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 203.0.113.8\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    let trusted = proxy_to(backend.addr, "trusted_proxies = [\"127.0.0.1\"]");
    let _ = exchange(
        trusted.addr("web"),
        b"GET /relayed HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    let seen = backend.received();
    assert_eq!(forwarded_for(&seen, "/spoof"), "127.0.0.1", "{seen}");
    assert!(!seen.contains("203.0.113.8"), "{seen}");
    assert_eq!(
        forwarded_for(&seen, "/relayed"),
        "203.0.113.7, 127.0.0.1",
        "{seen}"
    );
}

// ---------------------------------------------------------------------------
// Graceful lifecycle.

fn signal(proxy: &Proxy, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the proxy process to exit; its exit code.
fn wait_exit(proxy: &mut Proxy, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("fulcrum did not exit within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let _shared = TIMING.read().await;
    let bs = backends(&["1500ms"]).await;
    let mut proxy = proxy_to(bs[0].addr, "");
    let addr = proxy.addr("web");
    let in_flight = tokio::spawn(get_close(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&proxy, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No longer accepting.
    let late = TcpStream::connect(addr).await;
    if let Ok(mut s) = late {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        assert_eq!(n, 0, "a connection after SIGTERM was served");
    }
    let (text, closed) = in_flight.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed);
    let code = tokio::task::block_in_place(|| wait_exit(&mut proxy, Duration::from_secs(10)));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_kept_alive_connections_at_once_and_exits_0() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let mut proxy = proxy_to(backend.addr, "");
    let addr = proxy.addr("web");
    // Several idle connections, each after a few requests: the shutdown
    // must reach every one of them, however often it was polled before.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            first_request(&mut s).await;
        }
        idle.push(s);
    }
    signal(&proxy, "TERM");
    for s in &mut idle {
        // Well inside the 10 s grace period a connection left open would
        // hold the process for.
        let closed = closed_within(s, Duration::from_secs(3)).await;
        assert!(
            closed.is_some(),
            "an idle connection stayed open after SIGTERM"
        );
    }
    let code = tokio::task::block_in_place(|| wait_exit(&mut proxy, Duration::from_secs(5)));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let _shared = TIMING.read().await;
    let bs = backends(&["20s"]).await;
    let mut proxy = proxy_to(bs[0].addr, "");
    let addr = proxy.addr("web");
    let _stuck = tokio::spawn(exchange(
        addr,
        b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&proxy, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "waits for the request in flight"
    );
    let started = Instant::now();
    signal(&proxy, "INT");
    let code = tokio::task::block_in_place(|| wait_exit(&mut proxy, Duration::from_secs(5)));
    assert_eq!(code, Some(130));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn run_refuses_a_port_in_use_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("port-in-use");
    let path = dir.write(
        "fulcrum.toml",
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\ncluster = \"app\"\n\n[cluster.app]\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n"
        ),
    );
    let out = std::process::Command::new(fulcrum_bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("web"),
        "{err}"
    );
}

#[tokio::test]
async fn chunked_body_over_max_body_bytes_is_cut_off() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "max_body_bytes = 10");
    let addr = proxy.addr("web");
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The head and a first chunk within the limit, then a chunk beyond it.
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = s.write_all(b"10\r\nSECRETSECRETSECR\r\n0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(!text.starts_with("HTTP/1.1 2"), "{text}");
    let seen = backend.received();
    assert!(!seen.contains("SECRET"), "{seen}");
    // Within the limit, chunked bodies pass.
    let (text, _) = exchange(
        addr,
        b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn h2_rapid_reset_flood_is_cut_off_and_others_are_served() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    let addr = proxy.addr("web");
    let mut block = Vec::new();
    for (n, v) in [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", b"/reset"),
    ] {
        hpack_literal(&mut block, n, v);
    }
    let mut flood = H2_PREFACE.to_vec();
    flood.extend(h2_frame(0x4, 0, 0, &[]));
    // CVE-2023-44487: open a stream and cancel it at once, thousands of times.
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        flood.extend(h2_frame(0x1, 0x5, stream, &block));
        flood.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(&flood).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut received)).await;
    // A GOAWAY frame (type 7) ends the flood's connection.
    let mut at = 0;
    let mut goaway = None;
    while received.len() >= at + 9 {
        let len = (received[at] as usize) << 16
            | (received[at + 1] as usize) << 8
            | received[at + 2] as usize;
        if received[at + 3] == 0x7 && received.len() >= at + 17 {
            goaway = Some(u32::from_be_bytes(
                received[at + 13..at + 17].try_into().unwrap(),
            ));
        }
        at += 9 + len;
    }
    let forwarded = backend.received().matches("GET /reset").count();
    eprintln!("rapid reset: GOAWAY error code {goaway:?}, {forwarded} of 5000 streams reached the backend");
    assert!(goaway.is_some(), "the flooding connection gets GOAWAY");
    assert!(forwarded < 5_000);
    // Everyone else is still served.
    let mut ok = vec![
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":authority", b"x"),
    ];
    ok.push((b":path", b"/after"));
    assert_eq!(h2_request(addr, &ok).await, Some(200));
}

// ---------------------------------------------------------------------------
// Per-route limits and access lists, slow request bodies, HTTP/2 streams.

/// A listener (with `listener_extra`) whose routes are given in `routes`
/// (`[[listener.route]]` tables), all sending to one backend.
fn proxy_with_routes(backend: SocketAddr, listener_extra: &str, routes: &str) -> Proxy {
    proxy_to(backend, &format!("{listener_extra}\n\n{routes}"))
}

/// Sends a request head and a first chunk, then the rest after a pause (so
/// the proxy is streaming the body when the rest arrives); the answer and
/// whether the connection was closed, bounded by 5 s.
async fn chunked_in_two(addr: SocketAddr, head: &str, first: &[u8], rest: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = s.write_all(rest).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn route_max_body_bytes_overrides_the_listener_limit() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_with_routes(
        backend.addr,
        "max_body_bytes = 100",
        "[[listener.route]]\npath_prefix = \"/small\"\ncluster = \"app\"\nmax_body_bytes = 10\n\n\
         [[listener.route]]\npath_prefix = \"/large\"\ncluster = \"app\"\nmax_body_bytes = 1000\n",
    );
    let addr = proxy.addr("web");
    let post = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}",
            "b".repeat(len)
        )
        .into_bytes()
    };
    // Declared lengths: the route's limit, lower or higher than the listener's.
    let (text, closed) = exchange(addr, post("/small-declared", 11)).await;
    assert!(text.starts_with("HTTP/1.1 413") && closed, "{text}");
    let (text, _) = exchange(addr, post("/small-ok", 10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (text, _) = exchange(addr, post("/large-declared", 500)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (text, closed) = exchange(addr, post("/other-declared", 101)).await;
    assert!(text.starts_with("HTTP/1.1 413") && closed, "{text}");
    // A chunked body is cut at the route's limit: the backend gets no byte
    // beyond it, the client 413 (no response had started) and a close.
    let (text, closed) = chunked_in_two(
        addr,
        "POST /small-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
        b"10\r\nSECRETSECRETSECR\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(closed, "the connection is closed after the 413");
    // Above the listener's limit but within the route's, chunked passes.
    let big = format!("1f4\r\n{}\r\n0\r\n\r\n", "c".repeat(500));
    let (text, _) = chunked_in_two(
        addr,
        "POST /large-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"",
        big.as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // HTTP/2 bodies carry no framing for the byte-level guard: the route's
    // limit cuts them as they stream.
    let mut block = Vec::new();
    for (n, v) in [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", b"/small-h2"),
    ] {
        hpack_literal(&mut block, n, v);
    }
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x4, 1, &block));
    out.extend(h2_frame(0x0, 0, 1, b"hello"));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&h2_frame(0x0, 0x1, 1, b"H2SECRETH2SECRET"))
        .await
        .unwrap();
    let frames = h2_read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter()
            .any(|f| f.stream == 1 && (f.kind == 0x3 || f.kind == 0x1))
    })
    .await;
    let answer = frames
        .iter()
        .find(|f| f.stream == 1 && (f.kind == 0x3 || f.kind == 0x1));
    assert!(
        answer.is_some_and(|f| f.payload.first() != Some(&0x88)),
        "stream over the route's limit was not refused: {frames:?}"
    );
    let seen = backend.received();
    assert!(!seen.contains("SECRET"), "{seen}");
    assert!(
        !seen.contains("/small-declared") && !seen.contains("/other-declared"),
        "{seen}"
    );
    assert!(seen.contains("/large-declared") && seen.contains("/large-chunked"));
}

#[tokio::test]
async fn route_allow_and_deny_lists_answer_403_after_route_match() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_with_routes(
        backend.addr,
        "",
        "[[listener.route]]\npath_prefix = \"/private\"\ncluster = \"app\"\ndeny = [\"127.0.0.0/8\"]\n\n\
         [[listener.route]]\npath_prefix = \"/partners\"\ncluster = \"app\"\nallow = [\"192.0.2.0/24\", \"::1\"]\n\n\
         [[listener.route]]\npath_prefix = \"/office\"\ncluster = \"app\"\nallow = [\"127.0.0.1/32\"]\ndeny = [\"10.0.0.0/8\"]\n",
    );
    let addr = proxy.addr("web");
    for (path, status) in [
        ("/private/a", "403"),
        ("/partners/a", "403"),
        ("/office/a", "200"),
        ("/elsewhere", "200"),
    ] {
        let (text, _) = get_close(addr, path).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {text}"
        );
    }
    let seen = backend.received();
    assert!(
        !seen.contains("/private") && !seen.contains("/partners"),
        "{seen}"
    );
    assert!(
        seen.contains("/office/a") && seen.contains("/elsewhere"),
        "{seen}"
    );
}

#[tokio::test]
async fn slow_request_body_is_cut_with_408_and_the_backend_request_aborted() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "body_timeout = \"1s\"\nmin_body_rate = 100");
    let addr = proxy.addr("web");
    // A body sent at once is not affected.
    let fast = format!(
        "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\nConnection: close\r\n\r\n{}",
        "f".repeat(300)
    );
    let (text, _) = exchange(addr, fast.into_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let closed_before = backend.closed();
    // A slow POST: one byte every 100 ms (10 B/s) where 100 B/s is asked.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut sent = 0;
    let closed = loop {
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
        if s.write_all(b"s").await.is_err() {
            break true;
        }
        sent += 1;
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    };
    let cut_after = started.elapsed();
    // Whatever is still in flight after the close.
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed, "the slow client's connection is closed");
    // Not before the grace window; generous upper bound for a loaded machine.
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(6),
        "cut after {cut_after:?}"
    );
    // The backend's request was aborted: its connection closed with the
    // body incomplete (it never answered it).
    let deadline = Instant::now() + Duration::from_secs(3);
    while backend.closed() == closed_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        backend.closed() > closed_before,
        "backend request not aborted"
    );
    let seen = backend.received();
    let body = seen.split("POST /slow").nth(1).unwrap_or_default();
    let body = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.len() < 1000 && body.len() <= sent, "{seen}");
}

/// One HTTP/2 frame as read off the wire.
#[derive(Debug)]
struct H2Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Reads frames until the server closes the connection, `within` passes or
/// `enough` holds for the frames so far, acknowledging SETTINGS and PINGs
/// as a real client does.
async fn h2_read_frames(
    s: &mut TcpStream,
    within: Duration,
    enough: impl Fn(&[H2Frame]) -> bool,
) -> Vec<H2Frame> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let frame = H2Frame {
                kind: buf[3],
                flags: buf[4],
                stream: u32::from_be_bytes(buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            let reply = match (frame.kind, frame.flags & 1) {
                (0x4, 0) => Some(h2_frame(0x4, 1, 0, &[])),
                (0x6, 0) => Some(h2_frame(0x6, 1, 0, &frame.payload)),
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = s.write_all(&reply).await;
            }
            frames.push(frame);
            if enough(&frames) {
                return frames;
            }
        }
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return frames,
        }
    }
}

/// A HEADERS block for `method path` on authority `x`.
fn h2_head(method: &'static [u8], path: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    hpack_literal(&mut block, b":method", method);
    hpack_literal(&mut block, b":scheme", b"http");
    hpack_literal(&mut block, b":authority", b"x");
    hpack_literal(&mut block, b":path", path);
    block
}

#[tokio::test]
async fn h2_streams_beyond_max_concurrent_streams_are_refused() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "max_concurrent_streams = 2");
    let addr = proxy.addr("web");
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    for i in 0..5u32 {
        // END_HEADERS without END_STREAM: the body stays open, and so does
        // the stream.
        let block = h2_head(b"POST", format!("/held-{i}").as_bytes());
        out.extend(h2_frame(0x1, 0x4, 2 * i + 1, &block));
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&out).await.unwrap();
    let is_refused = |f: &H2Frame| f.kind == 0x3 && f.payload == 7u32.to_be_bytes();
    let frames = h2_read_frames(&mut s, Duration::from_secs(5), |f| {
        f.iter().filter(|f| is_refused(f)).count() >= 3
    })
    .await;
    let refused: Vec<u32> = frames
        .iter()
        .filter(|f| is_refused(f))
        .map(|f| f.stream)
        .collect();
    assert_eq!(refused, [5, 7, 9], "{frames:?}");
    // The limit is advertised in SETTINGS (SETTINGS_MAX_CONCURRENT_STREAMS = 0x3).
    let settings = frames
        .iter()
        .find(|f| f.kind == 0x4 && f.flags & 1 == 0)
        .expect("server SETTINGS");
    let advertised = settings
        .payload
        .chunks(6)
        .find(|e| e[..2] == [0, 3])
        .map(|e| u32::from_be_bytes(e[2..6].try_into().unwrap()));
    assert_eq!(advertised, Some(2));
    // No GOAWAY: refusing streams leaves the connection up.
    assert!(!frames.iter().any(|f| f.kind == 0x7), "{frames:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = backend.received();
    for i in 2..5 {
        assert!(!seen.contains(&format!("/held-{i} ")), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_h2_goaway_finishes_the_stream_in_flight_then_exits_0() {
    let _shared = TIMING.read().await;
    let bs = backends(&["1500ms"]).await;
    let mut proxy = proxy_to(bs[0].addr, "");
    let addr = proxy.addr("web");
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &h2_head(b"GET", b"/slow")));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&proxy, "TERM");
    // Read until the proxy closes the connection.
    let frames = h2_read_frames(&mut s, Duration::from_secs(10), |_| false).await;
    let goaway = frames
        .iter()
        .position(|f| f.kind == 0x7)
        .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    let response = frames
        .iter()
        .position(|f| f.kind == 0x1 && f.stream == 1)
        .unwrap_or_else(|| panic!("stream 1 not answered: {frames:?}"));
    assert!(
        goaway < response,
        "GOAWAY arrives while the stream is in flight"
    );
    assert_eq!(frames[response].payload.first(), Some(&0x88), ":status 200");
    // Every GOAWAY lets stream 1 finish (last-stream-id >= 1, NO_ERROR).
    for f in frames.iter().filter(|f| f.kind == 0x7) {
        let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
        let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
        assert!(last >= 1 && code == 0, "{f:?}");
    }
    let body: Vec<u8> = frames
        .iter()
        .filter(|f| f.kind == 0x0 && f.stream == 1)
        .flat_map(|f| f.payload.clone())
        .collect();
    let ended = frames
        .iter()
        .any(|f| f.stream == 1 && f.flags & 0x1 != 0 && (f.kind == 0x0 || f.kind == 0x1));
    assert!(ended, "stream 1 did not end: {frames:?}");
    assert!(String::from_utf8_lossy(&body).contains("b0"), "{body:?}");
    let code = tokio::task::block_in_place(|| wait_exit(&mut proxy, Duration::from_secs(10)));
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn slow_but_acceptable_upload_outlasting_response_timeout_is_answered_not_504() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let hung = backends(&["20s"]).await;
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\nbody_timeout = \"1s\"\nmin_body_rate = 10\n\n\
         [[listener.route]]\npath_prefix = \"/hung\"\ncluster = \"hung\"\n\n\
         {}response_timeout = \"1s\"\n\n{}response_timeout = \"1s\"\n",
        cluster_block("app", "round-robin", &[(backend.addr, 1)]),
        cluster_block("hung", "round-robin", &[(hung[0].addr, 1)]),
    );
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("web");
    // 60 bytes at 20 B/s: 3 s of upload, three times the response timeout,
    // and twice the rate asked for. The timeout counts from the last byte.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..12 {
        s.write_all(b"uuuuu").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // A backend that never answers still times out once the body is in.
    let started = Instant::now();
    let (text, _) = exchange(
        addr,
        b"POST /hung HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A backend that drains request bodies slowly (64 KiB every 20 ms, about
/// 3 MB/s) and answers `200` with the body length once it has read it all.
async fn spawn_slow_reader() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let (end, len) = loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => n,
                        _ => return,
                    };
                    head.extend_from_slice(&buf[..n]);
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        break (end + 4, len);
                    }
                };
                let mut read = head.len() - end;
                // Bounded: at most 30 s of reads.
                for _ in 0..1_500 {
                    if read >= len {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => read += n,
                        _ => return,
                    }
                }
                let body = read.to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_draining_an_upload_is_not_blamed_on_the_client() {
    let _shared = TIMING.read().await;
    let backend = spawn_slow_reader().await;
    // A rate no upload through this backend could reach (20 MB/s), over 1 s
    // windows: only time spent waiting on the client counts against it.
    let proxy = proxy_to(backend, "body_timeout = \"1s\"\nmin_body_rate = 20000000");
    let addr = proxy.addr("web");
    const SIZE: usize = 8 * 1024 * 1024;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    let upload = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(&vec![b'd'; SIZE]).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("upload hung")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(&SIZE.to_string()), "{text}");
}

/// Reads `s` until the proxy closes it (bounded by 10 s).
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .expect("answered and closed")
        .unwrap();
    text
}

/// Bytes `stream` has sent that its peer has not acknowledged yet: the
/// `tx_queue` column of the socket's line in /proc/net/tcp.
fn unacknowledged(stream: &TcpStream) -> usize {
    let (local, peer) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    // 127.0.0.1 as the kernel prints it (in host byte order), then the port.
    let hex = |a: SocketAddr| format!("0100007F:{:04X}", a.port());
    let (local, peer) = (hex(local), hex(peer));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let line = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1] == local && f[2] == peer)
        .expect("the socket is listed");
    let (tx, _rx) = line[4].split_once(':').unwrap();
    usize::from_str_radix(tx, 16).unwrap()
}

/// Runs `attempt`, which returns how long its first bytes waited for their
/// ACK, until one wait is under 20 ms, five times at most, and fails if
/// none was. A held ACK never comes sooner than about 36 ms; a busy
/// machine can make any single check late, so one prompt ACK in five is
/// enough.
async fn acknowledged_promptly<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = attempt().await;
        waits.push(wait);
        if wait < Duration::from_millis(20) {
            return;
        }
    }
    panic!("{what}: acknowledged after {waits:?}");
}

/// How long the bytes just written to `stream` wait for their ACK
/// (bounded by 2 s).
async fn acknowledged_within(stream: &TcpStream) -> Duration {
    let start = Instant::now();
    while unacknowledged(stream) > 0 && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_request_on_a_new_connection_is_acknowledged_by_its_answer() {
    let _shared = TIMING.read().await;
    // A slow backend: the answer comes long after any ACK would have.
    let bs = backends(&["300ms"]).await;
    let proxy = proxy_to(bs[0].addr, "");
    // The kernel acknowledges a held request after 40 ms at the latest; a
    // check that ran later than that (a busy machine) proves nothing, so
    // one connection in five is enough.
    let mut held = 0;
    for _ in 0..5 {
        let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        if unacknowledged(&s) > 0 {
            held += 1;
        }
        let text = read_until_closed(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        if held > 0 {
            break;
        }
    }
    assert!(held > 0, "every request was acknowledged before its answer");
}

#[tokio::test]
async fn a_request_sent_in_pieces_is_acknowledged_at_once() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    // A client with Nagle's algorithm on sends its next piece only once the
    // last is acknowledged: a held ACK would cost it 40 ms per piece.
    let pieces: [(&[u8], &[u8]); 2] = [
        (
            b"GET /head HTTP/1.1\r\nHost: x\r\n",
            b"Connection: close\r\n\r\n",
        ),
        (
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab",
            b"cd",
        ),
    ];
    for (first, rest) in pieces {
        let what = String::from_utf8_lossy(first);
        acknowledged_promptly(&what, || async {
            let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
            s.write_all(first).await.unwrap();
            let wait = acknowledged_within(&s).await;
            s.write_all(rest).await.unwrap();
            let text = read_until_closed(&mut s).await;
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            wait
        })
        .await;
    }
}

/// Segments `stream` has received (`tcpi_segs_in` of `TCP_INFO`).
///
/// rustix does not read `TCP_INFO`, so this is the test suite's one
/// `getsockopt` of its own: the field sits at byte 140 of `struct
/// tcp_info` since Linux 4.2, after 8 one-byte fields, 24 `u32`s, 4 `u64`s
/// and `tcpi_segs_out`.
#[allow(unsafe_code)]
fn segments_received(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    const SEGS_IN: usize = 140;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the descriptor belongs to a live socket for the whole call;
    // `info` and `len` are locals, and `len` is the buffer's size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert!(len as usize >= SEGS_IN + 4, "TCP_INFO too short: {len}");
    u32::from_ne_bytes(info[SEGS_IN..SEGS_IN + 4].try_into().unwrap())
}

#[tokio::test]
async fn a_closing_request_gets_its_answer_and_the_close_in_one_segment() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let proxy = proxy_to(backend.addr, "");
    // What the client receives: the handshake's SYN-ACK, then the answer
    // carrying both the ACK of the request and the FIN. A bare ACK first
    // (quick ACK) or a FIN of its own would make 3 or 4. The held ACK goes
    // out alone if the answer takes over 40 ms (a busy machine), so one
    // connection in five is enough.
    let mut counts = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
        s.write_all(b"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_until_closed(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "the whole answer: {text}");
        counts.push(segments_received(&s));
        if counts.last() == Some(&2) {
            break;
        }
    }
    assert!(counts.contains(&2), "segments received: {counts:?}");

    // A kept-alive exchange is not held back: its answer arrives at once,
    // and so does the next one on the same connection.
    let mut s = TcpStream::connect(proxy.addr("web")).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut s))
            .await
            .expect("answered while kept alive");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
}

/// A proxy with a TLS http listener ("web") in front of `backend`; the CA
/// its certificate (for `localhost`) is signed by, DER; the files' folder.
fn tls_proxy_to(backend: SocketAddr) -> (Proxy, Vec<u8>, TempDir) {
    let dir = TempDir::new("tls-ack");
    let ca = TestCa::new();
    let (cert, key) = ca.write_leaf(&dir, "site", "site", &["localhost"]);
    let proxy = proxy_to(
        backend,
        &format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}"),
    );
    (proxy, ca.der(), dir)
}

/// A rustls client trusting `ca` that speaks only `versions`.
fn tls_connector(
    ca: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(tls_client_config(ca, versions))
}

fn tls_client_config(
    ca: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

fn localhost() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("localhost").unwrap()
}

/// Sends `GET path` with `Connection: close` over `s` and reads the
/// answer to the close; checks it is a 200.
async fn tls_get_close<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let text = read_until_closed(s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[tokio::test]
async fn a_closing_tls_request_gets_its_answer_close_notify_and_fin_in_one_segment() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let (proxy, ca, _dir) = tls_proxy_to(backend.addr);
    let connector = tls_connector(&ca, &[&rustls::version::TLS13]);
    // What the client receives: the SYN-ACK, the server's handshake flight
    // (carrying the ACK of the ClientHello), the session tickets (carrying
    // the ACK of the client's Finished), then one segment with the answer,
    // TLS's close_notify and the FIN. A bare ACK of the ClientHello, or a
    // close_notify or FIN of its own, would make 5 to 7. A held ACK goes
    // out alone if the answer takes over 40 ms, so one try in five is enough.
    let mut counts = Vec::new();
    for _ in 0..5 {
        let tcp = TcpStream::connect(proxy.addr("web")).await.unwrap();
        let mut s = connector.connect(localhost(), tcp).await.unwrap();
        // Time for the tickets to go: a request that arrives with the
        // client's Finished makes two small segments read at once, which
        // the kernel acknowledges at once whatever the setting.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let text = tls_get_close(&mut s, "/close").await;
        assert!(text.ends_with("ok"), "the whole answer: {text}");
        counts.push(segments_received(s.get_ref().0));
        if counts.last() == Some(&4) {
            break;
        }
    }
    assert!(counts.contains(&4), "segments received: {counts:?}");
}

#[tokio::test]
async fn a_tls_record_sent_in_pieces_is_acknowledged_at_once() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let (proxy, ca, _dir) = tls_proxy_to(backend.addr);
    let connector = tls_connector(&ca, &[&rustls::version::TLS13]);
    // The request is one TLS record, sent in two pieces. Until the second
    // arrives the server has no plaintext to see, yet a client with
    // Nagle's algorithm on waits for the first piece's ACK before sending
    // the second: it must come at once, not after the 40 ms of a held ACK.
    acknowledged_promptly("a TLS record in pieces", || async {
        let tcp = TcpStream::connect(proxy.addr("web")).await.unwrap();
        let s = connector.connect(localhost(), tcp).await.unwrap();
        let (mut tcp, mut tls) = s.into_inner();
        tls.writer()
            .write_all(b"GET /record HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut record = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut record).unwrap();
        }
        // The tickets the server sent after the handshake carried every
        // earlier ACK: what waits now is only the first piece.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tcp.write_all(&record[..record.len() / 2]).await.unwrap();
        let wait = acknowledged_within(&tcp).await;
        tcp.write_all(&record[record.len() / 2..]).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
            .await
            .expect("answered and closed")
            .unwrap();
        let mut rd = &raw[..];
        while !rd.is_empty() {
            tls.read_tls(&mut rd).unwrap();
            tls.process_new_packets().unwrap();
        }
        let mut text = String::new();
        tls.reader().read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        wait
    })
    .await;
}

#[tokio::test]
async fn a_resumed_tls12_handshake_is_acknowledged_at_once() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let (proxy, ca, _dir) = tls_proxy_to(backend.addr);
    // One client config: it keeps the session of the first connection.
    let connector = tls_connector(&ca, &[&rustls::version::TLS12]);
    let tcp = TcpStream::connect(proxy.addr("web")).await.unwrap();
    let mut first = connector.connect(localhost(), tcp).await.unwrap();
    tls_get_close(&mut first, "/first").await;
    // A resumed TLS 1.2 handshake ends with the client's Finished, and the
    // server has nothing to send after it that could carry the ACK: a
    // client with Nagle's algorithm on would hold its request for the 40 ms
    // of a delayed ACK.
    acknowledged_promptly("a resumed TLS 1.2 handshake", || async {
        let tcp = TcpStream::connect(proxy.addr("web")).await.unwrap();
        let mut s = connector.connect(localhost(), tcp).await.unwrap();
        assert_eq!(
            s.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        let wait = acknowledged_within(s.get_ref().0).await;
        tls_get_close(&mut s, "/resumed").await;
        wait
    })
    .await;
}

#[tokio::test]
async fn a_client_hello_sent_in_pieces_is_acknowledged_at_once() {
    let _shared = TIMING.read().await;
    let backend = RecordingBackend::spawn().await;
    let (proxy, ca, _dir) = tls_proxy_to(backend.addr);
    let config = tls_client_config(&ca, &[&rustls::version::TLS13]);
    // A ClientHello with a large key share (post-quantum ones are over a
    // kilobyte) can span two segments; a client with Nagle's algorithm on
    // sends the second once the first is acknowledged.
    acknowledged_promptly("a ClientHello in pieces", || async {
        let mut tls = rustls::ClientConnection::new(Arc::clone(&config), localhost()).unwrap();
        let mut hello = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut hello).unwrap();
        }
        let mut tcp = TcpStream::connect(proxy.addr("web")).await.unwrap();
        tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
        let wait = acknowledged_within(&tcp).await;
        tcp.write_all(&hello[hello.len() / 2..]).await.unwrap();
        // The server goes on with the handshake.
        let mut reply = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply))
            .await
            .expect("the server's handshake reply")
            .unwrap();
        assert!(n > 0);
        wait
    })
    .await;
}
