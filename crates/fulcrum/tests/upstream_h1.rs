//! End-to-end: how the proxy relays the ways a backend can frame its
//! HTTP/1 responses (RFC 9112 §6): `Content-Length`, chunked (with
//! extensions and trailers), delimited by the connection's close, bodiless
//! (HEAD, 204, 304), preceded by 1xx answers, malformed or cut short; and
//! when it may reuse the backend connection afterwards.
//!
//! These tests pin down what the upstream HTTP/1.1 client
//! (`fulcrum_proxy::upstream::h1`) must do. Every backend here is a
//! [`RawBackend`] (in `common::raw_backend`): a TCP server that answers
//! with bytes the test chooses, in the TCP writes the test chooses, and
//! closes when the test says. It records each request it reads, per
//! connection, so a test can tell a pooled connection from a new one.
//!
//! Each proxy has one backend and `retries = 0`: every request is exactly
//! one attempt on that backend, so what the client sees is what the
//! upstream client made of the backend's bytes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::raw_backend::{
    proxy_for, read_exact, read_through, After, RawBackend, Reply, OK, PATIENCE,
};
use common::{cluster_block, metrics_text, sample, simple_config, Answer, Proxy};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// The proxy and its client
// ---------------------------------------------------------------------------

/// One HTTP/1.1 client connection to the proxy: the test decides which
/// requests share a connection.
struct ClientConnection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl ClientConnection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("connecting to the proxy hung")
            .unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        ClientConnection { addr, sender }
    }

    /// A request for `path` with the proxy's address as its Host.
    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
    }

    /// Sends `req` and reads the whole answer; `Err` if the exchange
    /// failed (for instance the proxy cut the connection mid-body).
    /// Panics after [`PATIENCE`].
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(req).await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .expect("exchange with the proxy hung")
    }

    /// `GET path`, which must succeed.
    async fn get(&mut self, path: &str) -> Answer {
        let req = self.request("GET", path).body(Full::default()).unwrap();
        self.send(req).await.expect("GET through the proxy failed")
    }
}

/// `GET path` on a client connection of its own.
async fn get_alone(addr: SocketAddr, path: &str) -> Answer {
    ClientConnection::open(addr).await.get(path).await
}

/// The request lines of GETs for `paths`, as the backend logs them.
fn gets(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| format!("GET {p} HTTP/1.1")).collect()
}

// ---------------------------------------------------------------------------
// Content-Length
// ---------------------------------------------------------------------------

#[tokio::test]
async fn content_length_bodies_arrive_intact_with_their_length() {
    const LARGE: usize = 200 * 1024;
    let large = fulcrum_testbed::pattern(LARGE);
    let backend = RawBackend::start({
        let large = large.clone();
        move |req, _| match req.line.as_str() {
            "GET /small HTTP/1.1" => {
                Reply::keep_open(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
            }
            _ => {
                // The head alone, then the body in eight writes.
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n");
                let mut pieces = vec![head.as_bytes()];
                pieces.extend(large.chunks(LARGE / 8));
                Reply::pieces(&pieces, After::KeepOpen)
            }
        }
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let small = client.get("/small").await;
    assert_eq!(small.status, 200);
    assert_eq!(small.headers["content-length"], "11");
    assert_eq!(small.body, "hello world");

    let big = client.get("/large").await;
    assert_eq!(big.status, 200);
    assert_eq!(big.headers["content-length"], LARGE.to_string().as_str());
    assert_eq!(big.body.len(), LARGE);
    assert!(big.body == large, "the large body arrived altered");

    assert_eq!(
        backend.connections(),
        vec![gets(&["/small", "/large"])],
        "both on one pooled backend connection"
    );
}

// ---------------------------------------------------------------------------
// Chunked
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chunked_bodies_split_at_awkward_places_are_dechunked_whole() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /chunked HTTP/1.1" => Reply::pieces(
            &[
                // A chunk extension; the next size line split between
                // its (uppercase hex) digits.
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;foo=bar\r\nHello\r\n1",
                // 0x1A = 26 bytes, split mid-data ...
                b"A\r\nabcdefghijklm",
                // ... and between the CR and LF that end it.
                b"nopqrstuvwxyz\r",
                // Two extensions, one quoted; lowercase hex.
                b"\nc;a=1;b=\"x y\"\r\n, chunked wo\r\n",
                // The last chunk in three pieces.
                b"0",
                b"\r\n",
                b"\r\n",
            ],
            After::KeepOpen,
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/chunked").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "Helloabcdefghijklmnopqrstuvwxyz, chunked wo");
    // The connection is in step after the last chunk: the next answer on
    // it is read correctly.
    assert_eq!(client.get("/next").await.body, "ok");
    assert_eq!(backend.connections(), vec![gets(&["/chunked", "/next"])]);
}

#[tokio::test]
async fn chunked_bodies_with_trailers_arrive_intact() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /trailers HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Count\r\n\r\n",
                b"4\r\nbody\r\n6\r\n parts\r\n0\r\nX-Check",
                b"sum: 1234\r\nX-Count: 2\r",
                b"\n\r\n",
            ],
            After::KeepOpen,
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/trailers").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "body parts");
    assert_eq!(client.get("/next").await.body, "ok");
}

#[tokio::test]
async fn chunked_bodies_with_trailers_leave_the_backend_connection_reusable() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /trailers HTTP/1.1" => Reply::keep_open(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-Checksum: 1234\r\n\r\n",
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    assert_eq!(client.get("/trailers").await.body, "body");
    assert_eq!(client.get("/next").await.body, "ok");
    assert_eq!(backend.connections(), vec![gets(&["/trailers", "/next"])]);
}

// ---------------------------------------------------------------------------
// Delimited by the close of the connection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn close_delimited_bodies_arrive_whole_and_the_connection_is_not_reused() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /http11 HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ",
                b"the close",
            ],
            After::Close,
        ),
        "GET /http10 HTTP/1.1" => Reply::then_close(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nan HTTP/1.0 body",
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    // A client connection per request: the proxy passes an HTTP/1.0
    // answer on as HTTP/1.0, which ends the client's keep-alive (see
    // `http10_backend_answers_reach_keep_alive_clients_as_http11`).
    let addr = proxy.addr("web");

    let a = get_alone(addr, "/http11").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "until the close");
    let b = get_alone(addr, "/http10").await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body, "an HTTP/1.0 body");
    assert_eq!(get_alone(addr, "/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/http11"]), gets(&["/http10"]), gets(&["/next"])],
        "a connection whose body ended with its close is never reused"
    );
}

#[tokio::test]
async fn http10_answers_without_keep_alive_are_not_reused() {
    // HTTP/1.0 without `Connection: keep-alive` means the server closes
    // after this answer (RFC 9112 §9.3); this one has not closed yet, and
    // a request written to it would be lost.
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /http10 HTTP/1.1" => {
            Reply::keep_open(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        }
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    // A client connection each, as above.
    let addr = proxy.addr("web");

    assert_eq!(get_alone(addr, "/http10").await.body, "hello");
    assert_eq!(get_alone(addr, "/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/http10"]), gets(&["/next"])]
    );
}

#[tokio::test]
async fn http10_backend_answers_reach_keep_alive_clients_as_http11() {
    // RFC 9110 §6.2: a proxy sends its own HTTP version in what it
    // forwards; the backend's version concerns the backend's connection.
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /length HTTP/1.1" => {
            Reply::keep_open(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        }
        "GET /close HTTP/1.1" => Reply::then_close(b"HTTP/1.0 200 OK\r\n\r\nuntil the close"),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    assert_eq!(client.get("/length").await.body, "hello");
    assert_eq!(client.get("/close").await.body, "until the close");
    assert_eq!(client.get("/next").await.body, "ok");
}

// ---------------------------------------------------------------------------
// Answers without a body
// ---------------------------------------------------------------------------

#[tokio::test]
async fn head_answers_have_no_body_whatever_their_length_and_keep_the_connection() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "HEAD /file HTTP/1.1" => {
            Reply::keep_open(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        }
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let head = client
        .request("HEAD", "/file")
        .body(Full::default())
        .unwrap();
    let a = client.send(head).await.expect("HEAD through the proxy");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], "1234");
    assert!(a.body.is_empty());
    // Had the proxy waited for 1234 body bytes, this would time out.
    assert_eq!(client.get("/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![vec![
            "HEAD /file HTTP/1.1".to_owned(),
            "GET /next HTTP/1.1".to_owned()
        ]]
    );
}

#[tokio::test]
async fn no_content_and_not_modified_answers_have_no_body_and_keep_the_connection() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /204 HTTP/1.1" => Reply::keep_open(b"HTTP/1.1 204 No Content\r\nX-Seen: yes\r\n\r\n"),
        // A 304 may carry the length the 200 would have had (RFC 9110
        // §8.6); it still has no body.
        "GET /304 HTTP/1.1" => Reply::keep_open(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n",
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/204").await;
    assert_eq!(a.status, 204);
    assert_eq!(a.headers["x-seen"], "yes");
    assert!(a.body.is_empty());
    let b = client.get("/304").await;
    assert_eq!(b.status, 304);
    assert_eq!(b.headers["etag"], "\"v1\"");
    assert!(b.body.is_empty());
    assert_eq!(client.get("/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/204", "/304", "/next"])]
    );
}

// ---------------------------------------------------------------------------
// Connection reuse
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sequential_requests_share_one_pooled_backend_connection() {
    let backend = RawBackend::start(|_, _| Reply::keep_open(OK)).await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    for path in ["/1", "/2", "/3", "/4"] {
        let a = client.get(path).await;
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(backend.connections(), vec![gets(&["/1", "/2", "/3", "/4"])]);
    // The metrics count the one connection, idle in the pool now.
    let text = metrics_text(&proxy).await;
    let opened = |protocol: &str| {
        sample(
            &text,
            &format!("fulcrum_upstream_connections_opened_total{{cluster=\"app\",protocol=\"{protocol}\"}}"),
        )
    };
    assert_eq!(opened("http1"), Some(1.0), "{text}");
    assert_eq!(opened("http2"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "fulcrum_upstream_idle_connections{cluster=\"app\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn connection_close_from_the_backend_sends_the_next_request_on_a_new_connection() {
    // The backend says `Connection: close` but leaves the socket open, so
    // only the header can tell the proxy not to reuse it.
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /closing HTTP/1.1" => Reply::keep_open(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\nclosing",
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    assert_eq!(client.get("/first").await.body, "ok");
    let a = client.get("/closing").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "closing");
    assert!(
        !a.headers.contains_key("connection"),
        "the backend's Connection header is hop-by-hop: {:?}",
        a.headers
    );
    // The client's connection to the proxy is not the backend's: it stays
    // open and carries the next request.
    assert_eq!(client.get("/after").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/first", "/closing"]), gets(&["/after"])]
    );
}

#[tokio::test]
async fn pooled_connections_the_backend_closed_while_idle_are_not_used() {
    // The first answer keeps the connection alive, then the backend's
    // keep-alive timeout closes it while it sits idle in the pool.
    let backend = RawBackend::start(|_, n| match n {
        0 => Reply::pieces(&[OK], After::IdleThenClose(Duration::from_millis(50))),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    assert_eq!(client.get("/first").await.body, "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = client.get("/second").await;
    assert_eq!(
        a.status, 200,
        "a stale pooled connection must not cost a 502"
    );
    assert_eq!(a.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/first"]), gets(&["/second"])]
    );
}

// ---------------------------------------------------------------------------
// Informational answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn informational_answers_before_the_final_one_are_passed_over() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /continue HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            ],
            After::KeepOpen,
        ),
        "GET /hints HTTP/1.1" => Reply::keep_open(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload; as=script\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/continue").await;
    assert_eq!((a.status, &a.body[..]), (200, &b"final"[..]));
    let b = client.get("/hints").await;
    assert_eq!((b.status, &b.body[..]), (200, &b"hints"[..]));
    assert_eq!(client.get("/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/continue", "/hints", "/next"])]
    );
}

// ---------------------------------------------------------------------------
// Malformed and truncated answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_response_heads_get_502_and_the_next_request_succeeds() {
    let bad: [&[u8]; 5] = [
        // Not a status code.
        b"HTTP/1.1 abc\r\n\r\n",
        // A header line without a colon.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\nok",
        // Not HTTP at all.
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        // A length that is not a number.
        b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok",
        // Two lengths that disagree (RFC 9112 §6.3: unrecoverable).
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    ];
    let backend = RawBackend::start(move |req, _| match req.line.as_str() {
        "GET /ok HTTP/1.1" => Reply::keep_open(OK),
        line => {
            let i: usize = line["GET /bad/".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            Reply::then_close(bad[i])
        }
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    for (i, answer) in bad.iter().enumerate() {
        let a = client.get(&format!("/bad/{i}")).await;
        assert_eq!(
            a.status,
            502,
            "{:?} answered {} {:?}",
            String::from_utf8_lossy(answer),
            a.status,
            a.body
        );
        assert!(
            String::from_utf8_lossy(&a.body).contains("`app`"),
            "the error names the cluster: {:?}",
            a.body
        );
        let ok = client.get("/ok").await;
        assert_eq!((ok.status, &ok.body[..]), (200, &b"ok"[..]));
    }
}

#[tokio::test]
async fn invalid_chunk_sizes_cut_the_client_connection_after_the_head() {
    // The head is valid and forwarded before the body goes wrong, so the
    // proxy can no longer answer 502: it must end the client's response
    // so that it cannot be taken for complete.
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        "GET /bad-size HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"zz\r\nmore\r\n0\r\n\r\n",
            ],
            After::KeepOpen,
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let req = client
        .request("GET", "/bad-size")
        .body(Full::default())
        .unwrap();
    let outcome = client.send(req).await;
    assert!(
        outcome.is_err(),
        "a body the backend broke off must not look complete: {outcome:?}"
    );
    let mut fresh = ClientConnection::open(proxy.addr("web")).await;
    assert_eq!(fresh.get("/next").await.body, "ok");
    assert_eq!(
        backend.connections(),
        vec![gets(&["/bad-size"]), gets(&["/next"])],
        "a connection whose framing broke is never reused"
    );
}

#[tokio::test]
async fn bodies_shorter_than_their_framing_never_look_complete() {
    let backend = RawBackend::start(|req, _| match req.line.as_str() {
        // 100 bytes announced, 40 sent, then the connection closes.
        "GET /short-length HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                &[b'x'; 40],
            ],
            After::Close,
        ),
        // Chunks without the last (zero-size) chunk, then the close.
        "GET /short-chunked HTTP/1.1" => Reply::pieces(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\nhello\r\n",
            ],
            After::Close,
        ),
        _ => Reply::keep_open(OK),
    })
    .await;
    let proxy = proxy_for(&backend);

    for path in ["/short-length", "/short-chunked"] {
        let mut client = ClientConnection::open(proxy.addr("web")).await;
        let req = client.request("GET", path).body(Full::default()).unwrap();
        let outcome = client.send(req).await;
        match &outcome {
            Err(_) => {}
            // A 502 before any of the body would do as well.
            Ok(a) => assert_eq!(
                a.status, 502,
                "{path}: a truncated body passed as complete: {a:?}"
            ),
        }
        let mut fresh = ClientConnection::open(proxy.addr("web")).await;
        assert_eq!(fresh.get("/next").await.body, "ok", "{path}");
    }
    // The first /next opens a connection that goes back to the pool and
    // carries /short-chunked; nothing follows a cut-off answer on its
    // connection.
    assert_eq!(
        backend.connections(),
        vec![
            gets(&["/short-length"]),
            gets(&["/next", "/short-chunked"]),
            gets(&["/next"])
        ]
    );
}

// ---------------------------------------------------------------------------
// Response headers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn response_headers_keep_repeats_and_empty_values_and_lose_hop_by_hop_ones() {
    let backend = RawBackend::start(|_, _| {
        Reply::keep_open(
            b"HTTP/1.1 200 OK\r\n\
              Content-Length: 2\r\n\
              Set-Cookie: a=1; Path=/\r\n\
              X-Mixed-Case: Value With  Spaces\r\n\
              Set-Cookie: b=2; Path=/; HttpOnly\r\n\
              X-Empty:\r\n\
              Connection: foo\r\n\
              Foo: x\r\n\
              Keep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\n\
              \r\nok",
        )
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/").await;
    assert_eq!(a.status, 200);
    let cookies: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/; HttpOnly"]);
    assert_eq!(a.headers["x-mixed-case"], "Value With  Spaces");
    assert_eq!(a.headers["x-empty"], "");
    for hop in ["connection", "foo", "keep-alive", "proxy-connection"] {
        assert!(
            !a.headers.contains_key(hop),
            "{hop} was forwarded: {:?}",
            a.headers
        );
    }
    assert_eq!(a.headers["via"], "1.1 fulcrum");
    assert_eq!(a.body, "ok");
}

#[tokio::test]
async fn large_response_heads_pass_through() {
    // 60 fields of about 136 bytes: an 8 KiB head.
    let fields: Vec<(String, String)> = (0..60)
        .map(|i| {
            (
                format!("X-Field-{i:02}"),
                format!("{i:02}-{}", "v".repeat(120)),
            )
        })
        .collect();
    let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for (name, value) in &fields {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\nok");
    assert!(head.len() > 8 * 1024, "head is {} bytes", head.len());
    let backend = RawBackend::start(move |_, _| Reply::keep_open(head.as_bytes())).await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let a = client.get("/").await;
    assert_eq!(a.status, 200);
    for (name, value) in &fields {
        assert_eq!(
            a.headers.get(name.as_str()).map(|v| v.as_bytes()),
            Some(value.as_bytes()),
            "{name}"
        );
    }
    assert_eq!(a.body, "ok");
}

// ---------------------------------------------------------------------------
// The request side
// ---------------------------------------------------------------------------

#[tokio::test]
async fn get_requests_reach_the_backend_with_target_and_host_and_no_body() {
    let backend = RawBackend::start(|_, _| Reply::keep_open(OK)).await;
    let proxy = proxy_for(&backend);
    let mut client = ClientConnection::open(proxy.addr("web")).await;

    let req = client
        .request("GET", "/some/path;p=1?q=a%20b&empty=&q=2")
        .header("x-custom", "kept")
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send(req).await.unwrap().status, 200);
    let got = &backend.requests()[0];
    assert_eq!(got.line, "GET /some/path;p=1?q=a%20b&empty=&q=2 HTTP/1.1");
    assert_eq!(
        got.header("host"),
        Some(proxy.addr("web").to_string().as_str())
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert!(got.header_all("transfer-encoding").is_empty(), "{got:?}");
    assert!(
        matches!(got.header_all("content-length").as_slice(), [] | ["0"]),
        "{got:?}"
    );
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn request_bodies_reach_the_backend_byte_exact_in_either_framing() {
    let backend = RawBackend::start(|_, _| Reply::keep_open(OK)).await;
    let proxy = proxy_for(&backend);
    let addr = proxy.addr("web");

    // A body with a length.
    let mut client = ClientConnection::open(addr).await;
    let body = Bytes::from_static(b"name=fulcrum&bytes=\x00\x01\xff\r\n");
    let req = client
        .request("POST", "/form")
        .header("content-length", body.len())
        .body(Full::new(body.clone()))
        .unwrap();
    assert_eq!(client.send(req).await.unwrap().status, 200);

    // A chunked body, written raw so its chunks are what the test says.
    let mut raw = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    raw.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let answer = read_through(&mut raw, &mut answer, b"\r\n\r\n")
        .await
        .expect("an answer to the chunked upload");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A GET after the chunked POST on the same backend connection: the
    // proxy ended the chunked body where the backend expected.
    assert_eq!(client.get("/after").await.body, "ok");

    let got = backend.requests();
    assert_eq!(got[0].line, "POST /form HTTP/1.1");
    assert_eq!(
        got[0].header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(got[0].body, body);
    assert_eq!(got[1].line, "POST /upload HTTP/1.1");
    assert!(
        got[1].header("transfer-encoding").is_some() || got[1].header("content-length").is_some(),
        "the body is framed: {:?}",
        got[1]
    );
    assert_eq!(got[1].body, b"hello 0123456789");
    assert_eq!(got[2].line, "GET /after HTTP/1.1");
    assert_eq!(
        backend.connections(),
        vec![vec![
            "POST /form HTTP/1.1".to_owned(),
            "POST /upload HTTP/1.1".to_owned(),
            "GET /after HTTP/1.1".to_owned()
        ]]
    );
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_reaches_the_client() {
    // A backend that answers 413 on reading the head, reads none of the
    // body, and holds the connection a while before closing it (as a
    // server refusing an upload does).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_through(&mut stream, &mut buf, b"\r\n\r\n")
            .await
            .expect("a request head");
        stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let cluster = cluster_block("app", "round-robin", &[(backend_addr, 1)]);
    let proxy = Proxy::run(&simple_config(&format!(
        "{cluster}retries = 0\nresponse_timeout = \"3s\"\n"
    )));
    // The client announces 1 MiB and sends 64 KiB of it, then waits for
    // an answer: the proxy must pass the backend's on, not wait for the
    // rest of a body the backend does not want.
    let mut client = tokio::time::timeout(PATIENCE, TcpStream::connect(proxy.addr("web")))
        .await
        .unwrap()
        .unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&vec![b'u'; 64 * 1024]).await.unwrap();
    let mut buf = Vec::new();
    let head = read_through(&mut client, &mut buf, b"\r\n\r\n")
        .await
        .expect("an answer while the upload is unfinished");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let body = read_exact(&mut client, &mut buf, 4)
        .await
        .expect("the answer's body");
    assert_eq!(body, b"big!");
    backend.await.unwrap();
}

#[tokio::test]
async fn idle_connections_the_backend_closed_are_closed_by_the_proxy() {
    // The backend answers once, keeps the connection, then closes its side
    // (a keep-alive timeout). With no further request to that backend the
    // proxy must still close its side, not hold a half-closed socket.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_through(&mut stream, &mut buf, b"\r\n\r\n")
            .await
            .expect("a request head");
        stream.write_all(OK).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.shutdown().await.unwrap();
        let mut rest = [0u8; 64];
        tokio::time::timeout(PATIENCE, stream.read(&mut rest)).await
    });
    let cluster = cluster_block("app", "round-robin", &[(backend_addr, 1)]);
    let proxy = Proxy::run(&simple_config(&format!(
        "{cluster}retries = 0\nresponse_timeout = \"3s\"\n"
    )));
    assert_eq!(get_alone(proxy.addr("web"), "/once").await.body, "ok");
    let closed = backend.await.unwrap();
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the proxy kept the connection the backend closed: {closed:?}"
    );
}

#[tokio::test]
async fn answer_trailers_reach_a_client_that_accepts_them() {
    // RFC 9110 §6.5: trailer fields are end-to-end; `Trailer` (which
    // declares them) is not hop-by-hop.
    let backend = RawBackend::start(|_, _| {
        Reply::keep_open(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
              4\r\nbody\r\n0\r\nX-Checksum: 1234\r\n\r\n",
        )
    })
    .await;
    let proxy = proxy_for(&backend);
    let mut client = tokio::time::timeout(PATIENCE, TcpStream::connect(proxy.addr("web")))
        .await
        .unwrap()
        .unwrap();
    client
        .write_all(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_through(&mut client, &mut buf, b"\r\n\r\n")
        .await
        .expect("an answer head");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let rest = read_through(&mut client, &mut buf, b"0\r\n")
        .await
        .expect("the last chunk");
    assert!(String::from_utf8_lossy(&rest).contains("body"));
    let trailers = read_through(&mut client, &mut buf, b"\r\n\r\n")
        .await
        .expect("the trailer section");
    let trailers = String::from_utf8_lossy(&trailers).to_ascii_lowercase();
    assert!(trailers.contains("x-checksum: 1234"), "{trailers:?}");
}
