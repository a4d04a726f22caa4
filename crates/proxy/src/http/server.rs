//! HTTP/1.1 to clients: the server side of a client connection.
//!
//! hyper's server kept two 8 KiB buffers per connection for its whole life
//! (most of an idle keep-alive connection's memory) and spent about 7 000
//! instructions per request in its dispatcher, head parser and encoder.
//! [`Connection`] is a future that serves one client connection:
//!
//! * a request head is parsed with httparse from the read buffer; its
//!   values become slices of that one buffer, copied nowhere. Between
//!   requests the connection holds no read buffer at all: the next head is
//!   read into the stack and only what arrived is kept;
//! * the request is handed to the service (the proxy) together with its
//!   body ([`ClientBody`]). The body is read from the socket by the
//!   connection, one piece each time the body is asked for, so a slow
//!   backend slows the client down rather than filling memory;
//!   `Expect: 100-continue` is answered when the body is first asked for;
//! * the answer's head and small body frames are gathered in one buffer and
//!   written with one system call; large frames go out as they are
//!   (vectored, never copied);
//! * pipelined requests are served in order, one at a time.
//!
//! Framing follows RFC 9112 §6, strictly, as a proxy must (two hops that
//! read a request two ways are request smuggling): a request body is
//! `Content-Length` or chunked; both, a second `Content-Length` or
//! `Transfer-Encoding` field, a list or sign in a length, a
//! `Transfer-Encoding` not ending in (or repeating) `chunked`, more than one
//! `Host`, no `Host` in HTTP/1.1, and an absolute-form target disagreeing
//! with `Host` are refused with 400, as is a chunked body whose bytes in
//! hand are malformed (before anything is forwarded). An answer keeps
//! its `Content-Length`; without one it gets one when its size is known,
//! and otherwise is chunked (HTTP/1.1 clients) or ends with the connection
//! (HTTP/1.0). No body follows `HEAD`, 1xx, 204 or 304. An HTTP/1.0 client
//! is answered in HTTP/1.0 and kept alive only if it asked to be.
//!
//! A request the parser refuses gets 400 (431 for a head too large or with
//! too many fields, 505 for an HTTP version other than 1.x) and the
//! connection closes. A connection also closes after an answer when either
//! side asked for it, when the request body was not read to its end, or on
//! [`Connection::graceful_shutdown`] once the request in flight is answered.
//!
//! An upgrade request (`Upgrade` with `Connection: upgrade`) carries an
//! [`OnUpgrade`] in its extensions; when the answer is `101`, the
//! connection is handed over through it once the head is written.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http::{Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::body::ProxyBody;
use crate::client_socket::ClientSocket;
use crate::headers::{only_close_or_keep_alive, tokens, write_field};
use crate::upstream::h1::{ChunkedDecoder, FieldKind, Piece, RawFields};
use crate::upstream::BodyError;

/// What one read asks the kernel for: a typical request head, or a
/// stretch of a request body.
const READ_SIZE: usize = 8 * 1024;

/// Header slots parsed on the stack; a listener allowing more fields
/// parses into slots on the heap.
const STACK_HEADER_SLOTS: usize = 128;

/// Body data up to this size is copied next to the head or chunk framing,
/// so a small answer leaves in one piece; larger frames are written from
/// where they are.
const COPY_LIMIT: usize = 4 * 1024;

/// How long a connection closing with request bytes unread keeps reading
/// and dropping them (NGINX's lingering close). Closing a socket with
/// unread bytes makes the kernel send a reset, which can destroy the
/// answer (a 413 to a large upload) before the client reads it; this way
/// the client gets the answer and a clean end of stream first.
const LINGER: Duration = Duration::from_secs(2);

/// What the answer buffer starts with.
const OUT_START: usize = 1024;

/// Bytes gathered before they are written while the body keeps coming.
const GATHER_LIMIT: usize = 64 * 1024;

/// The limits of a listener's HTTP/1 connections.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Largest request head (request line and fields) in bytes.
    pub max_head: usize,
    /// Most header fields in one request head.
    pub max_headers: usize,
    /// Time allowed for a request head that does not arrive in one read,
    /// from the moment the connection first waits for the rest of it.
    pub header_timeout: Duration,
    /// Connections are TLS: closing one sends `close_notify` (a shutdown
    /// of the stream). A plain TCP connection is just closed: the FIN
    /// goes with the close, and a shutdown first would only cost a system
    /// call.
    pub tls: bool,
}

/// A request body as the proxy reads it: HTTP/2's from hyper, HTTP/1's
/// from [`Connection`].
#[derive(Debug)]
pub enum ClientBody {
    /// A stream of an HTTP/2 connection.
    H2(hyper::body::Incoming),
    /// The body of an HTTP/1 request.
    H1(H1Body),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            ClientBody::H1(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H2(body) => body.is_end_stream(),
            ClientBody::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H2(body) => body.size_hint(),
            ClientBody::H1(body) => body.hint,
        }
    }
}

/// Why an HTTP/1 request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum H1BodyError {
    /// The client closed the connection before the body's end.
    #[error("client closed the connection before the request body ended")]
    Incomplete,
    /// The chunked framing was malformed.
    #[error("malformed chunked request body: {0}")]
    Framing(String),
    /// Reading from the client failed.
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
}

/// The body of an HTTP/1 request: each piece is read by the connection
/// when the body is asked for it.
#[derive(Debug)]
pub struct H1Body {
    /// `None` for a request without a body.
    pipe: Option<Arc<Pipe>>,
    hint: SizeHint,
}

impl H1Body {
    fn empty() -> Self {
        H1Body {
            pipe: None,
            hint: SizeHint::with_exact(0),
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(pipe) = self.pipe.as_ref() else {
            return Poll::Ready(None);
        };
        let mut p = pipe.lock();
        if let Some(piece) = p.ready.take() {
            return Poll::Ready(Some(piece.map_err(BodyError::from)));
        }
        if p.ended {
            return Poll::Ready(None);
        }
        p.want = true;
        match &p.body_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => p.body_waker = Some(cx.waker().clone()),
        }
        // A body polled in the connection's own task is fed right after
        // the service is polled; only another task must wake it.
        if let Some(conn) = p.conn_waker.take() {
            if !conn.will_wake(cx.waker()) {
                conn.wake();
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.pipe.as_ref().is_none_or(|pipe| {
            let p = pipe.lock();
            p.ended && p.ready.is_none()
        })
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            let mut p = pipe.lock();
            p.dropped = true;
            if let Some(conn) = p.conn_waker.take() {
                conn.wake();
            }
        }
    }
}

/// Between a request body and its connection.
#[derive(Debug, Default)]
struct Pipe(Mutex<PipeState>);

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct PipeState {
    /// A piece read for the body and not taken yet.
    ready: Option<Result<Frame<Bytes>, H1BodyError>>,
    /// No piece follows `ready`.
    ended: bool,
    /// The body asked for a piece.
    want: bool,
    body_waker: Option<Waker>,
    conn_waker: Option<Waker>,
    /// The body was dropped: nothing more is read for it.
    dropped: bool,
}

/// How the rest of a request body is delimited.
#[derive(Debug)]
enum BodyDecoder {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// The request body being read: the pipe to its body and its decoder.
#[derive(Debug)]
struct Reading {
    pipe: Arc<Pipe>,
    decoder: BodyDecoder,
    /// `Expect: 100-continue` is still to be answered.
    expect_continue: bool,
    /// The body ran short of what arrived once already, and quick ACK was
    /// turned back on ([`crate::client_socket`]).
    waited: bool,
}

/// A client connection handed over after `101 Switching Protocols`.
/// (Shared, as request extensions must be `Clone`; the first to await it
/// gets the connection.)
#[derive(Clone, Debug)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl Future for OnUpgrade {
    type Output = io::Result<Upgraded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let not_upgraded =
            || io::Error::new(io::ErrorKind::NotConnected, "connection not upgraded");
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err(not_upgraded()));
        };
        let result = ready!(Pin::new(rx).poll(cx));
        *slot = None;
        Poll::Ready(result.map_err(|_| not_upgraded()))
    }
}

/// Any client stream a [`Connection`] can hand over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// The client's side of an upgraded connection: the bytes the client sent
/// after its request head, then the stream.
pub struct Upgraded {
    read_first: Bytes,
    io: Box<dyn Stream>,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_first", &self.read_first.len())
            .finish()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_first.is_empty() {
            let n = self.read_first.len().min(buf.remaining());
            buf.put_slice(&self.read_first.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the connection remembers of the request being answered.
#[derive(Debug)]
struct Exchange {
    version: Version,
    head_request: bool,
    /// The client accepts trailers (`TE: trailers`).
    trailers: bool,
    /// Where the connection goes if the answer is 101.
    upgrade: Option<oneshot::Sender<Upgraded>>,
    /// The client asked to close after this answer (`Connection: close`,
    /// or HTTP/1.0 without keep-alive): it sends nothing more.
    client_closes: bool,
}

/// How the answer's body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// No body.
    Empty,
    /// This many bytes still to come.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, no length).
    Close,
}

/// Where the connection stands.
enum State {
    /// Reading and parsing the next request head.
    Head,
    /// The service works on the request.
    Serve,
    /// Writing the answer.
    Write {
        body: ProxyBody,
        encoding: Encoding,
        /// The body has ended; what is left is to write and flush.
        ended: bool,
        /// A large chunk went out without its closing CRLF.
        crlf_due: bool,
        /// The other ready connections have run since the answer came
        /// (see `poll_connection`); its first write waits for that.
        yielded: bool,
    },
    /// Writing what is left (an error answer), then closing.
    Close,
    /// The answer is out and the write side shut; what the client still
    /// sends is read and dropped until it closes or [`LINGER`] ends.
    Linger,
    /// Finished.
    Done,
}

/// Why a connection ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The client's stream failed (this includes the head timeout).
    #[error("client connection: {0}")]
    Io(#[from] io::Error),
    /// The answer's body failed; the client got a cut answer.
    #[error("answer body failed: {0}")]
    Body(BodyError),
}

/// Serves HTTP/1.1 on one client connection; resolves when it is closed
/// or handed over.
pub struct Connection<S, F, Fut> {
    /// `None` once handed over (upgrade).
    io: Option<S>,
    service: F,
    /// The service's future for the request in flight. Allocated for the
    /// first request and reused: one allocation per connection.
    in_flight: Option<Pin<Box<Option<Fut>>>>,
    settings: Settings,
    /// Bytes read and not consumed yet: the next request's head, or the
    /// current request's body. Empty (and unallocated) between requests.
    buf: BytesMut,
    /// Answer bytes gathered for the next write, `written` of them gone.
    out: Vec<u8>,
    written: usize,
    /// A large body frame to write after `out`.
    big: Bytes,
    state: State,
    exchange: Option<Exchange>,
    reading: Option<Reading>,
    keep_alive: bool,
    /// Close once the request in flight is answered.
    closing: bool,
    /// The deadline of the partial head in `buf` (`header_timeout`), or of
    /// the lingering close. Allocated the first time one is needed and
    /// reused: most connections never need one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    head_timed: bool,
    /// Close with a lingering read ([`State::Linger`]): request bytes may
    /// be left unread.
    linger: bool,
}

impl<S, F, Fut> Connection<S, F, Fut>
where
    S: Stream + ClientSocket,
    F: FnMut(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    /// Serves `io` with `service` under `settings`; `first` holds bytes
    /// already read from `io`.
    pub fn new(io: S, first: BytesMut, settings: Settings, service: F) -> Self {
        Connection {
            io: Some(io),
            service,
            in_flight: None,
            settings,
            buf: first,
            out: Vec::new(),
            written: 0,
            big: Bytes::new(),
            state: State::Head,
            exchange: None,
            reading: None,
            keep_alive: true,
            closing: false,
            timer: None,
            head_timed: false,
            linger: false,
        }
    }

    /// Arms the connection's timer for `deadline` (allocated once).
    fn arm_timer(&mut self, deadline: tokio::time::Instant) {
        match self.timer.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether the partial head in `buf` is past its `header_timeout`,
    /// timed from the first time the connection waits for its rest (a
    /// head that arrives whole is never timed). Registers the wake-up.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.head_timed {
            self.head_timed = true;
            self.arm_timer(tokio::time::Instant::now() + self.settings.header_timeout);
        }
        self.timer
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// Answers the request in flight, if any, then closes; an idle
    /// connection closes at once.
    pub fn graceful_shutdown(&mut self) {
        self.closing = true;
    }

    fn io(&mut self) -> &mut S {
        self.io
            .as_mut()
            .expect("the stream is only taken at the end")
    }

    /// Reads more bytes into `buf`; the count, 0 at end of stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.is_empty() {
            // Between requests nothing stays allocated: the read goes to
            // the stack, and only what arrived is kept.
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(self.io()).poll_read(cx, &mut read))?;
            let filled = read.filled();
            self.buf.extend_from_slice(filled);
            return Poll::Ready(Ok(filled.len()));
        }
        self.buf.reserve(READ_SIZE);
        let io = self
            .io
            .as_mut()
            .expect("the stream is only taken at the end");
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// Writes `out` and `big`; `Ready(Ok)` once all of it is written.
    ///
    /// `last`: the connection closes right after these bytes, which may
    /// then wait to leave with the close ([`ClientSocket::poll_write_last`]).
    fn poll_write_out(&mut self, cx: &mut Context<'_>, last: bool) -> Poll<io::Result<()>> {
        while self.written < self.out.len() || !self.big.is_empty() {
            let io = self
                .io
                .as_mut()
                .expect("the stream is only taken at the end");
            let n = if self.big.is_empty() {
                let rest = &self.out[self.written..];
                if last {
                    ready!(Pin::new(io).poll_write_last(cx, rest))?
                } else {
                    ready!(Pin::new(io).poll_write(cx, rest))?
                }
            } else {
                let slices = [
                    io::IoSlice::new(&self.out[self.written..]),
                    io::IoSlice::new(&self.big),
                ];
                ready!(Pin::new(io).poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let in_out = n.min(self.out.len() - self.written);
            self.written += in_out;
            let _ = self.big.split_to(n - in_out);
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads the next piece of the request body when the body asked for
    /// one. `true` when a piece was handed over (the service should be
    /// polled again).
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ServeError>> {
        let Some(reading) = self.reading.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        {
            let mut p = reading.pipe.lock();
            if p.dropped {
                drop(p);
                // Nobody reads the rest: the connection cannot carry
                // another request, and closes lingering.
                self.reading = None;
                self.keep_alive = false;
                self.linger = true;
                return Poll::Ready(Ok(false));
            }
            if !p.want || p.ready.is_some() {
                match &p.conn_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => p.conn_waker = Some(cx.waker().clone()),
                }
                return Poll::Ready(Ok(false));
            }
        }
        if reading.expect_continue {
            reading.expect_continue = false;
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if matches!(self.state, State::Serve) && !self.out.is_empty() {
            ready!(self.poll_write_out(cx, false))?;
            ready!(Pin::new(self.io()).poll_flush(cx))?;
        }
        loop {
            let reading = self.reading.as_mut().expect("checked above");
            let piece = match &mut reading.decoder {
                BodyDecoder::Length(left) => {
                    if self.buf.is_empty() {
                        None
                    } else {
                        let n = self
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= n as u64;
                        let data = self.buf.split_to(n).freeze();
                        Some((Ok(Frame::data(data)), *left == 0))
                    }
                }
                BodyDecoder::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                    Ok(None) => None,
                    Ok(Some(Piece::Data(data))) => Some((Ok(Frame::data(data)), false)),
                    Ok(Some(Piece::Trailers(t))) => Some((Ok(Frame::trailers(t)), true)),
                    // An empty data frame carries the end.
                    Ok(Some(Piece::End)) => Some((Ok(Frame::data(Bytes::new())), true)),
                    Err(e) => Some((Err(H1BodyError::Framing(e.to_string())), true)),
                },
            };
            let Some((piece, ended)) = piece else {
                if !reading.waited {
                    // The body comes in pieces: acknowledge them at once,
                    // so that a client waiting for an ACK sends the rest.
                    reading.waited = true;
                    self.io().quick_ack();
                }
                match ready!(self.poll_read_more(cx)) {
                    Ok(0) => self.fail_body(H1BodyError::Incomplete, cx),
                    Ok(_) => continue,
                    Err(e) => self.fail_body(H1BodyError::Io(e), cx),
                }
                return Poll::Ready(Ok(true));
            };
            let failed = piece.is_err();
            let reading = self.reading.as_mut().expect("checked above");
            deliver(&reading.pipe, piece, ended, cx);
            if ended {
                self.reading = None;
            }
            if failed {
                self.keep_alive = false;
            }
            return Poll::Ready(Ok(true));
        }
    }

    fn fail_body(&mut self, error: H1BodyError, cx: &Context<'_>) {
        if let Some(reading) = self.reading.take() {
            deliver(&reading.pipe, Err(error), true, cx);
        }
        self.keep_alive = false;
        self.linger = true;
    }

    /// Parses the next request head from `buf` and starts the service on
    /// it. `Ok(false)` when more bytes are needed.
    fn start_request(&mut self) -> Result<bool, StatusCode> {
        let Some(head) = parse_request(&mut self.buf, &self.settings)? else {
            return Ok(false);
        };
        self.head_timed = false;
        if head.body == BodyKind::Chunked && !chunked_prefix_is_valid(&self.buf) {
            // What already arrived of the body is malformed: the request
            // is refused before any of it is forwarded.
            return Err(StatusCode::BAD_REQUEST);
        }
        let mut request = head.request;
        let upgrade = head.upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            request
                .extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let body = match head.body {
            BodyKind::Empty => H1Body::empty(),
            kind => {
                let pipe = Arc::new(Pipe::default());
                let (decoder, hint) = match kind {
                    BodyKind::Length(n) => (BodyDecoder::Length(n), SizeHint::with_exact(n)),
                    _ => (
                        BodyDecoder::Chunked(ChunkedDecoder::default()),
                        SizeHint::default(),
                    ),
                };
                self.reading = Some(Reading {
                    pipe: Arc::clone(&pipe),
                    decoder,
                    expect_continue: head.expect_continue,
                    waited: false,
                });
                H1Body {
                    pipe: Some(pipe),
                    hint,
                }
            }
        };
        self.keep_alive = head.keep_alive;
        self.exchange = Some(Exchange {
            version: request.version(),
            head_request: request.method() == Method::HEAD,
            trailers: head.trailers,
            // An upgrade hands the connection over instead of closing it.
            client_closes: !head.keep_alive && upgrade.is_none(),
            upgrade,
        });
        let fut = (self.service)(request.map(|()| ClientBody::H1(body)));
        match self.in_flight.as_mut() {
            Some(slot) => slot.set(Some(fut)),
            None => self.in_flight = Some(Box::pin(Some(fut))),
        }
        Ok(true)
    }

    /// Puts an error answer for a refused request in `out`; the
    /// connection closes after it.
    fn refuse(&mut self, status: StatusCode) {
        self.out.clear();
        self.written = 0;
        let _ = write!(
            self.out,
            "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        );
        write_date(&mut self.out);
        self.out.extend_from_slice(b"\r\n");
        self.keep_alive = false;
        // The refused head may be followed by more bytes (its body).
        self.linger = true;
        self.state = State::Close;
    }

    /// The answer is written: on to the next request, a hand-over or the
    /// close.
    fn finish_exchange(&mut self) -> Option<Result<(), ServeError>> {
        let exchange = self.exchange.take();
        if self.reading.take().is_some() {
            // The body was not read to its end.
            self.keep_alive = false;
            self.linger = true;
        }
        if let Some(tx) = exchange.and_then(|e| e.upgrade) {
            let io = self.io.take().expect("the stream is only taken at the end");
            // A tunnel's bytes are not answered by the proxy: the kernel's
            // default acknowledgements again.
            io.quick_ack();
            let upgraded = Upgraded {
                read_first: self.buf.split().freeze(),
                io: Box::new(io),
            };
            let _ = tx.send(upgraded);
            self.state = State::Done;
            return Some(Ok(()));
        }
        if !self.keep_alive || self.closing {
            self.state = State::Close;
        } else {
            self.state = State::Head;
            if self.buf.is_empty() {
                // Release the read and answer buffers while the connection
                // waits: an idle connection then holds neither (1 KiB of
                // its 9 to 10, `bench/scale.py`), for one allocation of
                // the answer buffer per request.
                self.buf = BytesMut::new();
                if self.out.is_empty() {
                    self.out = Vec::new();
                }
            }
        }
        None
    }

    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        loop {
            match &mut self.state {
                State::Head => {
                    match self.start_request() {
                        Ok(true) => {
                            self.state = State::Serve;
                            continue;
                        }
                        Ok(false) => {}
                        Err(status) => {
                            tracing::debug!(
                                status = status.as_u16(),
                                "refused a malformed request"
                            );
                            self.refuse(status);
                            continue;
                        }
                    }
                    if self.closing && self.buf.is_empty() {
                        self.state = State::Close;
                        continue;
                    }
                    let read = self.poll_read_more(cx);
                    if read.is_pending() && !self.buf.is_empty() {
                        if !self.head_timed {
                            // The head comes in pieces: acknowledge them at
                            // once, so that a client waiting for an ACK sends
                            // the rest (once per head, as its timing starts).
                            self.io().quick_ack();
                        }
                        if self.head_overdue(cx) {
                            tracing::debug!("request head not complete within header_timeout");
                            self.state = State::Done;
                            return Poll::Ready(Err(ServeError::Io(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "request head not complete within header_timeout",
                            ))));
                        }
                    }
                    match ready!(read) {
                        Ok(0) => {
                            // The client closed, between requests or within
                            // a head: nothing to answer.
                            self.state = State::Done;
                            return Poll::Ready(Ok(()));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.state = State::Done;
                            return Poll::Ready(Err(e.into()));
                        }
                    }
                }
                State::Serve => {
                    let fut = self
                        .in_flight
                        .as_mut()
                        .expect("a request is in flight")
                        .as_mut()
                        .as_pin_mut()
                        .expect("a request is in flight");
                    if let Poll::Ready(Ok(response)) = fut.poll(cx) {
                        if let Some(slot) = self.in_flight.as_mut() {
                            slot.set(None);
                        }
                        self.start_answer(response);
                        continue;
                    }
                    if !ready!(self.poll_feed(cx))? {
                        return Poll::Pending;
                    }
                }
                State::Write {
                    ref mut yielded, ..
                } => {
                    // Before an answer's first write, let the other ready
                    // connections run (the task goes to the back of the run
                    // queue, no syscall). Their answers then leave in one
                    // burst, and the clients find several at once after a
                    // wakeup instead of waking for each. Same-run A/B:
                    // small keep-alive requests/s +4 to +10 %, CPU within
                    // noise (docs/benchmarks.md, "Eighth session").
                    if !*yielded {
                        *yielded = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if let Poll::Ready(Err(e)) = self.poll_feed(cx) {
                        return Poll::Ready(Err(e));
                    }
                    ready!(self.poll_answer(cx))?;
                    ready!(Pin::new(self.io()).poll_flush(cx))?;
                    if let Some(r) = self.finish_exchange() {
                        return Poll::Ready(r);
                    }
                }
                State::Close => {
                    ready!(self.poll_write_out(cx, false))?;
                    ready!(Pin::new(self.io()).poll_flush(cx))?;
                    if self.settings.tls || self.linger {
                        // Best effort: the client may have gone already.
                        let _ = ready!(Pin::new(self.io()).poll_shutdown(cx));
                    }
                    if self.linger {
                        self.arm_timer(tokio::time::Instant::now() + LINGER);
                        self.state = State::Linger;
                        continue;
                    }
                    self.state = State::Done;
                    return Poll::Ready(Ok(()));
                }
                State::Linger => {
                    let timer = self.timer.as_mut().expect("armed on entry");
                    if timer.as_mut().poll(cx).is_ready() {
                        self.state = State::Done;
                        return Poll::Ready(Ok(()));
                    }
                    let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
                    let mut dropped = ReadBuf::uninit(&mut stack);
                    match ready!(Pin::new(self.io()).poll_read(cx, &mut dropped)) {
                        Ok(()) if !dropped.filled().is_empty() => {}
                        // The client's end of stream, or an error: done.
                        _ => {
                            self.state = State::Done;
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Encodes the answer's head and moves to writing it.
    fn start_answer(&mut self, response: Response<ProxyBody>) {
        let (parts, body) = response.into_parts();
        if let Some(reading) = self.reading.as_mut() {
            // The answer is on its way: too late to invite the body.
            reading.expect_continue = false;
        }
        let exchange = self.exchange.as_ref().expect("a request is in flight");
        let upgrading =
            parts.status == StatusCode::SWITCHING_PROTOCOLS && exchange.upgrade.is_some();
        if !upgrading {
            if let Some(e) = self.exchange.as_mut() {
                e.upgrade = None;
            }
        }
        if !upgrading && self.reading.is_some() {
            // Answered before its body was read to the end (a backend that
            // refuses early): the connection closes after this answer, and
            // the answer must say so, or the client sends its next request
            // into the close. The rest of the body is still passed on while
            // the answer is written (a backend may read it as it answers).
            self.keep_alive = false;
            self.linger = true;
        }
        let exchange = self.exchange.as_ref().expect("a request is in flight");
        if self.out.capacity() == 0 {
            // Room for a typical answer head and a small body: grown step
            // by step, it would be reallocated five times.
            self.out.reserve(OUT_START);
        }
        let hint = body.size_hint();
        let encoding = encode_head(
            &parts,
            body.raw_fields(),
            exchange,
            hint.exact(),
            &mut self.keep_alive,
            self.closing,
            &mut self.out,
        );
        crate::headers::recycle(parts.headers);
        self.state = State::Write {
            body,
            encoding,
            ended: encoding == Encoding::Empty,
            crlf_due: false,
            yielded: false,
        };
    }

    /// Writes the answer's body; `Ready(Ok)` once all of it is written.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        loop {
            let State::Write {
                body,
                encoding,
                ended,
                crlf_due,
                ..
            } = &mut self.state
            else {
                unreachable!("only called while writing");
            };
            let gathered = self.out.len() - self.written + self.big.len();
            if !*ended && self.big.is_empty() && gathered < GATHER_LIMIT {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let trailers = self.exchange.as_ref().is_some_and(|e| e.trailers);
                        match frame.into_data() {
                            Ok(data) => {
                                if let Err(e) = encode_data(
                                    data,
                                    encoding,
                                    crlf_due,
                                    &mut self.out,
                                    &mut self.big,
                                ) {
                                    self.keep_alive = false;
                                    return Poll::Ready(Err(ServeError::Body(e)));
                                }
                            }
                            Err(frame) => {
                                if let (Ok(t), Encoding::Chunked, true) =
                                    (frame.into_trailers(), *encoding, trailers)
                                {
                                    end_chunked(crlf_due, &mut self.out, Some(&t));
                                    *encoding = Encoding::Empty;
                                }
                            }
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // A cut answer must not look whole: the connection
                        // closes without ending the body.
                        self.keep_alive = false;
                        return Poll::Ready(Err(ServeError::Body(e)));
                    }
                    Poll::Ready(None) => {
                        match *encoding {
                            Encoding::Chunked => end_chunked(crlf_due, &mut self.out, None),
                            Encoding::Length(left) if left > 0 => {
                                self.keep_alive = false;
                                return Poll::Ready(Err(ServeError::Body(
                                    "answer body shorter than its content-length".into(),
                                )));
                            }
                            Encoding::Close => self.keep_alive = false,
                            _ => {}
                        }
                        *ended = true;
                        continue;
                    }
                    Poll::Pending => {
                        if gathered == 0 {
                            // Nothing to write: what was written must
                            // leave before waiting (TLS buffers it).
                            ready!(Pin::new(self.io()).poll_flush(cx))?;
                            return Poll::Pending;
                        }
                    }
                }
            }
            let State::Write { ended, .. } = &self.state else {
                unreachable!("only called while writing");
            };
            // The whole answer is gathered and the client closes after it:
            // the close that follows can carry its last bytes. (Not if the
            // client sent more all the same: unread bytes would turn the
            // close into a reset, which drops what is held.)
            let last = *ended
                && self.buf.is_empty()
                && self.exchange.as_ref().is_some_and(|e| e.client_closes);
            ready!(self.poll_write_out(cx, last))?;
            let State::Write { ended, .. } = &self.state else {
                unreachable!("only called while writing");
            };
            if *ended {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S, F, Fut> Future for Connection<S, F, Fut>
where
    S: Stream + ClientSocket,
    F: FnMut(Request<ClientBody>) -> Fut + Unpin,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = Result<(), ServeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_connection(cx)
    }
}

/// Hands a piece to the body and wakes it if it waits in another task.
fn deliver(pipe: &Pipe, piece: Result<Frame<Bytes>, H1BodyError>, ended: bool, cx: &Context<'_>) {
    let mut p = pipe.lock();
    // The empty frame that only carries the end is not handed over.
    let empty_end = ended
        && piece
            .as_ref()
            .is_ok_and(|f| f.data_ref().is_some_and(Bytes::is_empty));
    if !empty_end {
        p.ready = Some(piece);
    }
    p.ended |= ended;
    p.want = false;
    if let Some(w) = p.body_waker.take() {
        if !w.will_wake(cx.waker()) {
            w.wake();
        }
    }
}

/// Adds one data frame to what is written next. A large frame is not
/// copied: it is written from where it is, after `out`, and the CRLF that
/// ends its chunk is owed to the next write (`crlf_due`).
fn encode_data(
    data: Bytes,
    encoding: &mut Encoding,
    crlf_due: &mut bool,
    out: &mut Vec<u8>,
    big: &mut Bytes,
) -> Result<(), BodyError> {
    if data.is_empty() {
        return Ok(());
    }
    match encoding {
        Encoding::Empty => return Ok(()),
        Encoding::Length(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err("answer body longer than its content-length".into());
            }
            *left -= n;
        }
        Encoding::Chunked => {
            pay_crlf(crlf_due, out);
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        Encoding::Close => {}
    }
    let chunked = *encoding == Encoding::Chunked;
    if data.len() <= COPY_LIMIT {
        out.extend_from_slice(&data);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    } else {
        *big = data;
        *crlf_due = chunked;
    }
    Ok(())
}

fn pay_crlf(crlf_due: &mut bool, out: &mut Vec<u8>) {
    if std::mem::take(crlf_due) {
        out.extend_from_slice(b"\r\n");
    }
}

/// The last chunk, with the trailers the client accepts.
fn end_chunked(crlf_due: &mut bool, out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    pay_crlf(crlf_due, out);
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the answer's status line and fields into `out` and decides its
/// framing. Clears `keep_alive` when the answer ends the connection.
fn encode_head(
    parts: &http::response::Parts,
    raw: Option<&RawFields>,
    exchange: &Exchange,
    exact: Option<u64>,
    keep_alive: &mut bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> Encoding {
    let status = parts.status;
    out.extend_from_slice(if exchange.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    let mut date = false;
    let mut close = false;
    let mut keep_alive_sent = false;
    // The backend's fields as it sent them, first (never hop-by-hop), then
    // the map's: the proxy's additions, or all fields of an answer whose
    // fields were read into it.
    if let Some(raw) = raw {
        raw.write_to(out, |kind, value| match kind {
            FieldKind::ContentLength => length = crate::upstream::h1::content_length(value),
            FieldKind::Date => date = true,
            _ => {}
        });
    }
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            // The framing is this hop's to choose.
            continue;
        }
        if name == header::CONTENT_LENGTH {
            length = crate::upstream::h1::content_length(value.as_bytes());
        } else if name == header::DATE {
            date = true;
        } else if name == header::CONNECTION {
            for token in tokens(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_sent |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        write_field(out, name, value);
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let encoding = if bodiless || exchange.head_request {
        Encoding::Empty
    } else if let Some(n) = length {
        Encoding::Length(n)
    } else if let Some(n) = exact {
        let _ = write!(out, "content-length: {n}\r\n");
        Encoding::Length(n)
    } else if exchange.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Encoding::Chunked
    } else {
        *keep_alive = false;
        Encoding::Close
    };
    if close || closing {
        *keep_alive = false;
    }
    let upgrading = status == StatusCode::SWITCHING_PROTOCOLS;
    if !upgrading {
        if !*keep_alive && !close && exchange.version == Version::HTTP_11 {
            out.extend_from_slice(b"connection: close\r\n");
        } else if *keep_alive && exchange.version == Version::HTTP_10 && !keep_alive_sent {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !date {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    if encoding == Encoding::Length(0) {
        Encoding::Empty
    } else {
        encoding
    }
}

/// Writes a `date` field with the current second, formatted once per
/// second per thread.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&cached.1);
        out.extend_from_slice(b"\r\n");
    });
}

/// Whether the chunked body at the front of `buf` is well formed as far
/// as it has arrived (it may be incomplete).
fn chunked_prefix_is_valid(buf: &BytesMut) -> bool {
    if buf.is_empty() {
        return true;
    }
    let mut probe = BytesMut::from(&buf[..]);
    let mut decoder = ChunkedDecoder::default();
    loop {
        match decoder.decode(&mut probe) {
            Ok(Some(Piece::Data(_))) => {}
            Ok(Some(Piece::Trailers(_) | Piece::End) | None) => return true,
            Err(_) => return false,
        }
    }
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head and what the connection needs to know of it.
#[derive(Debug)]
struct RequestHead {
    request: Request<()>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    trailers: bool,
    upgrade: bool,
}

/// Parses one request head from the front of `buf`, consuming it when it
/// is complete; `Ok(None)` when more bytes are needed. The error is the
/// status to refuse the request with.
fn parse_request(
    buf: &mut BytesMut,
    settings: &Settings,
) -> Result<Option<RequestHead>, StatusCode> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] =
        if settings.max_headers <= STACK_HEADER_SLOTS {
            &mut stack[..settings.max_headers]
        } else {
            heap.resize_with(settings.max_headers, MaybeUninit::uninit);
            &mut heap
        };
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= settings.max_head => len,
        Ok(httparse::Status::Complete(_)) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) if buf.len() < settings.max_head => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(httparse::Error::Version) => return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // The target and fields point into `buf`; their positions survive the
    // freeze below, so the values become slices of one shared buffer.
    let base = buf.as_ptr() as usize;
    let path = parsed.path.unwrap_or_default();
    let path = (path.as_ptr() as usize - base, path.len());
    let mut fields: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        fields.push((name, h.name.len(), value, h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)).map_err(|_| {
        if path.1 >= usize::from(u16::MAX) {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::BAD_REQUEST
        }
    })?;
    // Room for the fields the proxy adds on the way (X-Forwarded-For,
    // -Proto, -Host, Via): a map that grows rehashes every field.
    let mut headers = crate::headers::map_with_capacity(fields.len() + 4);
    let mut chunked = None;
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut upgrade_token = false;
    let mut upgrade_field = false;
    let mut expect_continue = false;
    let mut trailers = false;
    let mut host: Option<HeaderValue> = None;
    let mut lengths = 0;
    let mut codings = 0;
    for (name, name_len, value, value_len) in fields {
        let name = crate::headers::field_name(&head[name..name + name_len])
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        // One framing only (RFC 9112 §6.3): a second Content-Length, even
        // an equal one, or a second Transfer-Encoding field is refused, as
        // is a list in either; two hops could read them two ways.
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            let n = crate::upstream::h1::content_length(value.as_bytes().trim_ascii())
                .ok_or(StatusCode::BAD_REQUEST)?;
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            codings += 1;
            let mut codings_named = tokens(&value);
            let last = codings_named.next_back().unwrap_or_default();
            let chunked_before = codings_named.any(|t| t.eq_ignore_ascii_case(b"chunked"));
            chunked = Some(last.eq_ignore_ascii_case(b"chunked") && !chunked_before);
        } else if name == header::CONNECTION {
            for token in tokens(&value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
            // A `Connection` of only `close` and `keep-alive` is this
            // connection's business, read above, and names no field to
            // remove: it stays out of the map (the proxy would otherwise
            // look it up, parse it again and remove it).
            if only_close_or_keep_alive(value.as_bytes()) {
                continue;
            }
        } else if name == header::HOST {
            // RFC 9112 §3.2: more than one Host is a 400; two hops could
            // route the request by different ones.
            if host.is_some() {
                return Err(StatusCode::BAD_REQUEST);
            }
            host = Some(value.clone());
        } else if name == header::UPGRADE {
            upgrade_field = true;
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            trailers |= tokens(&value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
        headers.append(name, value);
    }
    if lengths > 1 || codings > 1 {
        return Err(StatusCode::BAD_REQUEST);
    }
    match (&host, uri.authority()) {
        // RFC 9112 §3.2: a server must refuse an HTTP/1.1 request
        // without Host.
        (None, _) if version == Version::HTTP_11 => return Err(StatusCode::BAD_REQUEST),
        // RFC 9112 §3.2.2: an absolute-form target wins over Host; a next
        // hop that reads Host instead would route the request elsewhere.
        (Some(host), Some(authority)) if method != Method::CONNECT => {
            let target = authority.as_str();
            let target = target.rsplit('@').next().unwrap_or(target);
            if !target
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes().trim_ascii())
            {
                return Err(StatusCode::BAD_REQUEST);
            }
        }
        _ => {}
    }
    let body = match (chunked, content_length) {
        // Chunked must be the final coding of a request (RFC 9112 §6.3),
        // and HTTP/1.0 has no transfer codings.
        (Some(true), None) if version == Version::HTTP_11 => BodyKind::Chunked,
        (Some(_), _) => return Err(StatusCode::BAD_REQUEST),
        (None, None | Some(0)) => BodyKind::Empty,
        (None, Some(n)) => BodyKind::Length(n),
    };
    let keep_alive = if version == Version::HTTP_11 {
        !close
    } else {
        keep_alive && !close
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead {
        request,
        body,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11 && body != BodyKind::Empty,
        trailers,
        upgrade: upgrade_field && upgrade_token && version == Version::HTTP_11,
    }))
}

/// `parse_request` in plain data, for the fuzz harness
/// (`fuzz/harness.rs`), which drives it as a connection does and compares
/// readings of the same bytes: the request, whose body says how long the
/// real one is (`Some(0)` for none, `None` for chunked). Not for use by the
/// proxy.
#[doc(hidden)]
pub fn parse_request_for_fuzzing(
    buf: &mut BytesMut,
    settings: &Settings,
) -> Result<Option<Request<Option<u64>>>, StatusCode> {
    Ok(parse_request(buf, settings)?.map(|head| {
        let length = match head.body {
            BodyKind::Empty => Some(0),
            BodyKind::Length(n) => Some(n),
            BodyKind::Chunked => None,
        };
        head.request.map(|()| length)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        max_head: 1024,
        max_headers: 10,
        header_timeout: Duration::from_secs(10),
        tls: false,
    };

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, StatusCode> {
        parse_request(&mut BytesMut::from(bytes), &SETTINGS)
    }

    #[test]
    fn parse_request_reads_target_fields_and_framing() {
        let head = parse(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri(), "/a?b=1");
        assert_eq!(head.request.version(), Version::HTTP_11);
        assert_eq!(head.request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(head.body, BodyKind::Length(5));
        assert!(head.keep_alive);
    }

    #[test]
    fn parse_request_consumes_only_the_head_and_waits_for_a_partial_one() {
        let mut buf =
            BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHo"[..]);
        assert!(parse_request(&mut buf, &SETTINGS).unwrap().is_some());
        assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\nHo");
        assert!(parse_request(&mut buf, &SETTINGS).unwrap().is_none());
        assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\nHo");
    }

    #[test]
    fn parse_request_keeps_connection_out_of_the_map_unless_it_names_fields() {
        let head = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        assert!(!head.request.headers().contains_key(header::CONNECTION));
        let head = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive, \r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        assert!(!head.request.headers().contains_key(header::CONNECTION));
        for named in ["close, x-secret", "Upgrade"] {
            let bytes = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: {named}\r\n\r\n");
            let head = parse(bytes.as_bytes()).unwrap().unwrap();
            assert_eq!(head.request.headers()[header::CONNECTION], named);
        }
    }

    #[test]
    fn parse_request_framing_and_connection_rules() {
        let cases: &[(&[u8], BodyKind, bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", BodyKind::Empty, true),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                BodyKind::Empty,
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", BodyKind::Empty, false),
            (
                b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                BodyKind::Empty,
                true,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                BodyKind::Chunked,
                true,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                BodyKind::Empty,
                true,
            ),
        ];
        for (bytes, body, keep_alive) in cases {
            let head = parse(bytes).unwrap().unwrap();
            assert_eq!(head.body, *body, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(
                head.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn parse_request_refuses_malformed_heads() {
        let too_many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(11));
        let too_long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1100));
        let cases: &[(&[u8], StatusCode)] = &[
            (b"GET / HTTP/1.1\r\nX : 1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GE@T / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (
                b"GET / HTTP/2.0\r\n\r\n",
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                too_many.as_bytes(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (
                too_long.as_bytes(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
        ];
        for (bytes, status) in cases {
            assert_eq!(
                parse(bytes).unwrap_err(),
                *status,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn absolute_form_target_matching_host_is_accepted() {
        let head = parse(b"GET http://user@x:8080/p HTTP/1.1\r\nHost: x:8080\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.request.uri().path(), "/p");
    }

    #[test]
    fn chunked_prefix_check_refuses_only_malformed_bytes() {
        for ok in [
            &b""[..],
            b"5\r\nhel",
            b"5;x=1\r\nhello\r\n0\r\n\r\nGARBAGE",
            b"0\r\n",
        ] {
            assert!(chunked_prefix_is_valid(&BytesMut::from(ok)), "{ok:?}");
        }
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"-1\r\n"] {
            assert!(!chunked_prefix_is_valid(&BytesMut::from(bad)), "{bad:?}");
        }
    }

    #[test]
    fn parse_request_notes_upgrade_expect_and_trailers() {
        let head = parse(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nTE: trailers\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.upgrade && head.trailers && !head.expect_continue);
        let head = parse(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.expect_continue && !head.upgrade);
    }

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        version: Version,
        head_request: bool,
        exact: Option<u64>,
    ) -> (String, Encoding, bool) {
        let mut response = Response::builder().status(status);
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        let (parts, ()) = response.body(()).unwrap().into_parts();
        encode_parts(&parts, None, version, head_request, exact)
    }

    /// [`encode_head`] of `parts` and `raw` fields for a keep-alive client.
    fn encode_parts(
        parts: &http::response::Parts,
        raw: Option<&RawFields>,
        version: Version,
        head_request: bool,
        exact: Option<u64>,
    ) -> (String, Encoding, bool) {
        let exchange = Exchange {
            version,
            head_request,
            trailers: false,
            upgrade: None,
            client_closes: false,
        };
        let mut keep_alive = true;
        let mut out = Vec::new();
        let encoding = encode_head(
            parts,
            raw,
            &exchange,
            exact,
            &mut keep_alive,
            false,
            &mut out,
        );
        (String::from_utf8(out).unwrap(), encoding, keep_alive)
    }

    #[test]
    fn encode_head_writes_raw_fields_as_the_backend_sent_them() {
        use crate::upstream::h1::{parse_head, Parsed};
        let backend = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\nDate: Thu, 26 Nov 2026 14:00:00 GMT\r\nX-A: 1\r\n\r\n";
        let Ok(Parsed::Final(head)) =
            parse_head(&mut bytes::BytesMut::from(&backend[..]), false, true)
        else {
            panic!("no final answer");
        };
        let mut parts = head.parts;
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static("1.1 fulcrum"));
        let (text, encoding, keep_alive) =
            encode_parts(&parts, head.raw.as_deref(), Version::HTTP_11, false, None);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\nDate: Thu, 26 Nov 2026 14:00:00 GMT\r\nX-A: 1\r\nvia: 1.1 fulcrum\r\n\r\n"
        );
        assert_eq!((encoding, keep_alive), (Encoding::Length(5), true));
    }

    #[test]
    fn encode_head_chooses_the_framing() {
        let (text, enc, keep) = encode(
            200,
            &[("content-length", "5")],
            Version::HTTP_11,
            false,
            None,
        );
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!((enc, keep), (Encoding::Length(5), true));
        let (text, enc, _) = encode(200, &[], Version::HTTP_11, false, Some(3));
        assert!(text.contains("content-length: 3\r\n"), "{text}");
        assert_eq!(enc, Encoding::Length(3));
        let (text, enc, _) = encode(200, &[], Version::HTTP_11, false, None);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(enc, Encoding::Chunked);
        let (text, enc, keep) = encode(200, &[], Version::HTTP_10, false, None);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert_eq!((enc, keep), (Encoding::Close, false));
        let (_, enc, _) = encode(
            200,
            &[("content-length", "5")],
            Version::HTTP_11,
            true,
            None,
        );
        assert_eq!(enc, Encoding::Empty);
        let (text, enc, _) = encode(304, &[], Version::HTTP_11, false, None);
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(enc, Encoding::Empty);
        let (text, _, keep) = encode(
            200,
            &[("connection", "close")],
            Version::HTTP_11,
            false,
            Some(0),
        );
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        assert!(!keep);
    }

    #[test]
    fn encode_data_frames_chunks_and_checks_lengths() {
        let mut out = Vec::new();
        let mut big = Bytes::new();
        let mut due = false;
        let mut enc = Encoding::Chunked;
        encode_data(
            Bytes::from_static(b"hello"),
            &mut enc,
            &mut due,
            &mut out,
            &mut big,
        )
        .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n");
        let mut enc = Encoding::Length(3);
        assert!(encode_data(
            Bytes::from_static(b"four"),
            &mut enc,
            &mut due,
            &mut out,
            &mut big
        )
        .is_err());
        let large = Bytes::from(vec![b'x'; COPY_LIMIT + 1]);
        let mut out = Vec::new();
        let mut enc = Encoding::Chunked;
        encode_data(large, &mut enc, &mut due, &mut out, &mut big).unwrap();
        assert_eq!(out, format!("{:x}\r\n", COPY_LIMIT + 1).as_bytes());
        assert_eq!(big.len(), COPY_LIMIT + 1);
        assert!(due);
        out.clear();
        end_chunked(&mut due, &mut out, None);
        assert_eq!(out, b"\r\n0\r\n\r\n");
    }
}
