//! HTTP/1.1 to a backend, driven in the request's own task.
//!
//! hyper's client runs every connection in a task of its own and talks to
//! it through a channel and a oneshot: per request that is two more task
//! wake-ups, a channel send and receive, and hyper's dispatcher on both
//! sides. Measured with callgrind, that connection task alone cost 15 800
//! of the 42 400 instructions a keep-alive request took in all. Here
//! [`Conn::exchange`] writes the head and reads the answer's head in the
//! caller's task, and the connection moves into the [`ResponseBody`], which
//! reads the body straight from the socket and puts the connection back
//! into the pool the moment the body ends.
//!
//! A request body is streamed one frame at a time while the answer is
//! watched for: a backend may answer before it has read the whole upload
//! (413, a redirect); the rest of the body is then not sent and the
//! connection is not reused. A body of known size goes with its
//! `Content-Length`, any other chunked (the client's own framing is a
//! hop-by-hop matter, undone by the server side). Request trailers are not
//! forwarded, as hyper's client did not forward them either.
//!
//! The client keeps idle connections of its own for an [`super::Upstream`]'s pool
//! ([`super`]); nothing drives them while idle, so the pool's reaper checks
//! them ([`Conn::is_open`]) for a backend's close.
//!
//! The answer's framing follows RFC 9112 §6.3: no body after a `HEAD`, for
//! 1xx, 204 and 304; `Transfer-Encoding` ending in `chunked` is de-chunked;
//! any other transfer coding, or neither header, runs to the close of the
//! connection; otherwise `Content-Length`, whose copies must agree.
//! Informational answers (100, 103) before the final one are skipped, as
//! hyper's client does. A connection goes back to the pool only when the
//! answer allows it (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
//! `keep-alive`) and its body ended exactly where its framing said.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{header, request, response, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http::{Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::Lease;
use crate::body::{RequestBody, RequestBodyError};
use crate::headers::{only_close_or_keep_alive, tokens_of, write_field, Forwarding};

/// Most header fields an answer may carry: hyper's default, so a backend
/// that worked through hyper still works.
const MAX_HEADERS: usize = 100;

/// Largest answer head (status line and fields) accepted. NGINX stops at
/// 4–8 KiB (`proxy_buffer_size`), HAProxy at 16 KiB (`tune.bufsize`); a
/// backend's cookies and tokens get eight times NGINX's default here.
const MAX_HEAD: usize = 64 * 1024;

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Most chunk-extension bytes accepted over a whole body (hyper's limit):
/// extensions are ignored, so a body made of them is only a cost.
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// What one read asks the kernel for at least. Heads and small bodies fit
/// in one read; hyper starts at the same size.
const READ_SIZE: usize = 8 * 1024;

/// What one read of a long body asks for at most.
const MAX_READ_SIZE: usize = 64 * 1024;

/// A backend connection, plain or TLS: the same stream the hyper-util
/// connector opens for upgrades.
pub use crate::backend_tls::UpstreamStream as Stream;

/// Why an exchange on a connection of this module failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing the connection failed.
    #[error("connection error")]
    Io(#[from] io::Error),
    /// The backend closed the connection before any byte of an answer.
    #[error("connection closed before an answer began")]
    ClosedBeforeAnswer,
    /// The backend closed the connection inside the answer's head.
    #[error("connection closed inside the answer's head")]
    ClosedInHead,
    /// The answer's head is not valid HTTP/1.
    #[error("invalid answer head: {0}")]
    InvalidHead(&'static str),
    /// The answer's head is longer than `MAX_HEAD` (64 KiB).
    #[error("answer head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// The backend closed the connection before the body's end.
    #[error("connection closed {0} bytes before the body's declared end")]
    BodyCut(u64),
    /// The chunked body is malformed.
    #[error("invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    /// The client's request body failed or was cut off.
    #[error("request body")]
    RequestBody(#[source] RequestBodyError),
}

impl ExchangeError {
    /// Whether the backend provably did nothing with the request: the
    /// connection was found closed before the first byte of an answer,
    /// the stale keep-alive race every HTTP/1 client meets.
    pub fn closed_before_answer(&self) -> bool {
        match self {
            ExchangeError::ClosedBeforeAnswer => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// How the answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// An answer's head, parsed.
#[derive(Debug)]
pub struct Head {
    /// Status, version and fields.
    pub parts: response::Parts,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// The hop-by-hop fields were left out of `parts` as the head was
    /// read (`false` when `Connection` names other fields: then they are
    /// all kept, for [`crate::headers::remove_hop_by_hop`]).
    pub hop_by_hop_removed: bool,
    /// The fields as the backend sent them, when they were not read into
    /// `parts` ([`parse_head`] with `raw`).
    pub raw: Option<Box<RawFields>>,
}

/// One HTTP/1.1 connection to a backend.
#[derive(Debug)]
pub struct Conn {
    io: Stream,
    /// Bytes read and not yet consumed; empty between exchanges.
    buf: BytesMut,
    /// The request head being written; kept for its capacity.
    out: Vec<u8>,
    /// Bytes read for the answer in progress (head and body).
    answer_bytes: usize,
    /// What the first read of the next answer asks for: the size of the
    /// last answer and a byte more, so an answer like it arrives in one
    /// read, short (which clears tokio's readiness, see
    /// [`ResponseBody::poll_fill`]). hyper adapts its reads the same way.
    first_read: usize,
}

impl Conn {
    /// A connection over an established stream.
    pub fn new(io: Stream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            answer_bytes: 0,
            first_read: READ_SIZE,
        }
    }

    /// Whether an idle connection can still carry a request: nothing came
    /// in while it was idle (no close, no stray bytes). Costs no system
    /// call on a plain connection whose socket has not become readable.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf),
            Poll::Pending
        )
    }

    /// Sends a request and reads its answer's head (after any
    /// informational answers).
    ///
    /// A body is sent as it arrives from the client while the answer is
    /// watched for: a backend may answer before it has read the whole
    /// upload (413, a redirect), and then the rest of the body is not sent
    /// and the connection is not reused.
    ///
    /// `raw`: the answer's fields may stay as the backend's bytes
    /// ([`parse_head`]).
    pub async fn exchange(
        &mut self,
        req: &request::Parts,
        forwarding: Option<&Forwarding>,
        body: RequestBody,
        raw: bool,
    ) -> Result<Head, ExchangeError> {
        let framing = if body.is_empty() {
            BodyFraming::None
        } else if let Some(n) = body.size_hint().exact() {
            BodyFraming::Length(n)
        } else {
            BodyFraming::Chunked
        };
        encode_head(req, forwarding, framing, &mut self.out);
        self.answer_bytes = 0;
        let mut upload = None;
        if framing == BodyFraming::None {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
        } else {
            upload = Some(Upload::new(
                std::mem::take(&mut self.out),
                body,
                framing == BodyFraming::Chunked,
            ));
        }
        let head_request = req.method == Method::HEAD;
        // Whether the request was sent whole: the connection's reuse
        // depends on it. Kept across polls: an upload that failed in one
        // poll has left `upload` empty in the next.
        let mut sent = upload.is_none();
        std::future::poll_fn(|cx| self.poll_answer(cx, &mut upload, &mut sent, head_request, raw))
            .await
    }

    /// Sends what the body has ready, then reads the answer.
    fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Option<Upload>,
        sent: &mut bool,
        head_request: bool,
        raw: bool,
    ) -> Poll<Result<Head, ExchangeError>> {
        loop {
            if let Some(up) = upload.as_mut() {
                match up.poll_send(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => {
                        *upload = None;
                        *sent = true;
                    }
                    Poll::Ready(Err(UploadError::Body(e))) => {
                        return Poll::Ready(Err(ExchangeError::RequestBody(e)))
                    }
                    // The backend stopped reading (it may have answered
                    // already, then closed): read what it said.
                    Poll::Ready(Err(UploadError::Io(e))) => {
                        tracing::trace!(error = %e, "backend stopped reading the request body");
                        *upload = None;
                    }
                    Poll::Pending => {}
                }
            }
            if self.buf.capacity() - self.buf.len() < self.first_read {
                self.buf.reserve(self.first_read);
            }
            let had = self.buf.len();
            match ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)) {
                Ok(0) => {
                    return Poll::Ready(Err(if had == 0 {
                        ExchangeError::ClosedBeforeAnswer
                    } else {
                        ExchangeError::ClosedInHead
                    }))
                }
                Ok(n) => self.answer_bytes += n,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            loop {
                match parse_head(&mut self.buf, head_request, raw)? {
                    Parsed::Final(mut head) => {
                        head.keep_alive &= *sent;
                        return Poll::Ready(Ok(head));
                    }
                    // Consumed; the final answer may be in the buffer already.
                    Parsed::Informational => continue,
                    Parsed::Partial => break,
                }
            }
            if self.buf.len() > MAX_HEAD {
                return Poll::Ready(Err(ExchangeError::HeadTooLarge));
            }
        }
    }
}

/// How a request's body is delimited on the way to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length`: the client's body has a known size.
    Length(u64),
    /// Chunked: the client's body is chunked (its own chunking, a hop-by-hop
    /// matter, was undone by the server side).
    Chunked,
}

/// Why sending a request body stopped.
enum UploadError {
    /// The client's body failed or was cut off by the proxy's limits.
    Body(RequestBodyError),
    /// Writing to the backend failed.
    Io(io::Error),
}

/// A request body on its way to the backend, one frame at a time: the next
/// frame is asked of the client only when the last one has been written,
/// so a slow backend slows the client down rather than filling memory.
struct Upload {
    body: RequestBody,
    chunked: bool,
    /// Bytes to write before `data`: the request head at first, then each
    /// chunk's size line (after the previous chunk's CRLF).
    prefix: Vec<u8>,
    /// How much of `prefix` is written.
    written: usize,
    /// The data frame being written.
    data: Bytes,
    /// Whether a chunk was framed (the next size line starts with CRLF).
    any_chunk: bool,
    /// The body has ended; what is left is to write and flush.
    ended: bool,
}

impl Upload {
    fn new(head: Vec<u8>, body: RequestBody, chunked: bool) -> Self {
        Upload {
            body,
            chunked,
            prefix: head,
            written: 0,
            data: Bytes::new(),
            any_chunk: false,
            ended: false,
        }
    }

    /// Writes the head and as much of the body as is ready; `Ready(Ok)`
    /// once all of it is written and flushed.
    fn poll_send(
        &mut self,
        io: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            let pending = self.written < self.prefix.len() || !self.data.is_empty();
            if !pending && !self.ended {
                // Before waiting for the client, what was written must
                // leave (TLS buffers it).
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Io)?;
                match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        // Trailers are not forwarded (hyper's client did
                        // not either).
                        if let Ok(data) = frame.into_data() {
                            self.frame(data);
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Err(UploadError::Body(e))),
                    None => self.end(),
                }
                continue;
            }
            if pending {
                let n = {
                    let slices = [
                        io::IoSlice::new(&self.prefix[self.written..]),
                        io::IoSlice::new(&self.data),
                    ];
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))
                        .map_err(UploadError::Io)?
                };
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into())));
                }
                let in_prefix = n.min(self.prefix.len() - self.written);
                self.written += in_prefix;
                let _ = self.data.split_to(n - in_prefix);
                if self.written == self.prefix.len() {
                    self.prefix.clear();
                    self.written = 0;
                }
                continue;
            }
            ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Io)?;
            return Poll::Ready(Ok(()));
        }
    }

    /// Queues one data frame, with its chunk framing.
    fn frame(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            if self.any_chunk {
                self.prefix.extend_from_slice(b"\r\n");
            }
            // Writing into a Vec cannot fail.
            let _ = write!(self.prefix, "{:x}\r\n", data.len());
            self.any_chunk = true;
        }
        self.data = data;
    }

    /// The body ended: the last chunk, if chunked.
    fn end(&mut self) {
        self.ended = true;
        if self.chunked {
            if self.any_chunk {
                self.prefix.extend_from_slice(b"\r\n");
            }
            self.prefix.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

/// Writes `req`'s head (origin-form target, fields as they are, then the
/// `forwarding` fields) into `out`.
fn encode_head(
    req: &request::Parts,
    forwarding: Option<&Forwarding>,
    framing: BodyFraming,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        write_field(out, name, value);
    }
    if let Some(forwarding) = forwarding {
        forwarding.write(out);
    }
    let has_length = req.headers.contains_key(header::CONTENT_LENGTH);
    match framing {
        // A method whose request has a defined body meaning (POST, PUT,
        // PATCH, ...) gets an explicit empty one, as hyper writes it: some
        // servers answer 411 Length Required otherwise.
        BodyFraming::None => {
            let bodiless_method = matches!(
                req.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
            ) || req.method == Method::CONNECT;
            if !bodiless_method && !has_length {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        BodyFraming::Length(n) => {
            if !has_length {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "content-length: {n}\r\n");
            }
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// What [`parse_head`] found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet; nothing was consumed.
    Partial,
    /// An informational answer (1xx but 101), consumed and skipped.
    Informational,
    /// The final answer's head, consumed.
    Final(Head),
}

/// Parses one answer head from the front of `buf`, consuming it when it is
/// complete.
///
/// With `raw`, the fields are kept as the backend's bytes
/// ([`RawFields`]) and the head's map is left empty: the caller has
/// checked that nothing on the way to the client reads or edits them.
/// Building the map (a name, a value and a hashed insert per field) and
/// writing it out again was about 4 500 instructions for a typical
/// answer. An answer whose `Connection` names other fields is read into
/// the map either way, so they can be removed.
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    raw: bool,
) -> Result<Parsed, ExchangeError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::InvalidHead("more than 100 header fields"))
        }
        Err(e) => return Err(ExchangeError::InvalidHead(invalid_head(e))),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| ExchangeError::InvalidHead("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ExchangeError::UnexpectedUpgrade);
    }
    if status.is_informational() {
        let _ = buf.split_to(len);
        return Ok(Parsed::Informational);
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let reason = parsed
        .reason
        .filter(|r| Some(*r) != status.canonical_reason());
    // The fields point into `buf`; their positions survive the freeze below,
    // so the values become slices of one shared buffer, copied nowhere.
    // The framing and reuse rules are read from the bytes as they go.
    let base = buf.as_ptr() as usize;
    let mut fields: Vec<RawField> = Vec::with_capacity(parsed.headers.len());
    let mut delimiters = Delimiters::default();
    // Hop-by-hop fields describe this connection and are never forwarded:
    // they are left out here, rather than inserted and then removed by
    // name (about 1 000 instructions for a `Connection: keep-alive`). A
    // `Connection` naming other fields is the exception: all is kept and
    // removed later.
    let mut hop_by_hop_removed = true;
    for h in parsed.headers.iter() {
        let kind = FieldKind::of(h.name.as_bytes());
        delimiters.see(kind, h.value)?;
        if kind == FieldKind::Connection && !only_close_or_keep_alive(h.value) {
            hop_by_hop_removed = false;
        }
        fields.push(RawField {
            name: (h.name.as_ptr() as usize - base, h.name.len()),
            value: (h.value.as_ptr() as usize - base, h.value.len()),
            kind,
        });
    }
    let reason = reason.map(|r| Bytes::copy_from_slice(r.as_bytes()));
    let head = buf.split_to(len).freeze();
    let framing = delimiters.framing(status, head_request);
    let keep_alive = delimiters.keep_alive(version) && framing != Framing::Close;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    let (mut parts, ()) = response.into_parts();
    let raw = if raw && hop_by_hop_removed {
        fields.retain(|f| !f.kind.hop_by_hop());
        // Boxed: the answer is moved several times on its way to the
        // client, and is otherwise 48 bytes larger for every answer.
        Some(Box::new(RawFields { head, fields }))
    } else {
        // Room for the fields the proxy adds (Via, a sticky cookie): a map
        // that grows rehashes every field.
        let mut headers = crate::headers::map_with_capacity(fields.len() + 2);
        for f in &fields {
            if hop_by_hop_removed && f.kind.hop_by_hop() {
                continue;
            }
            let (name, value) = f.field(&head)?;
            headers.append(name, value);
        }
        parts.headers = headers;
        None
    };
    Ok(Parsed::Final(Head {
        parts,
        framing,
        keep_alive,
        hop_by_hop_removed,
        raw,
    }))
}

/// What the proxy must know of an answer field, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// Another hop-by-hop field ([`crate::headers::remove_hop_by_hop`]'s list).
    HopByHop,
    /// `Date`.
    Date,
    /// `Retry-After`.
    RetryAfter,
    /// `Endpoint-Load-Metrics`, an ORCA load report.
    LoadReport,
    /// Any other field.
    Other,
}

impl FieldKind {
    /// The kind of a field name, in any letter case.
    pub(crate) fn of(name: &[u8]) -> FieldKind {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => FieldKind::HopByHop,
            4 if is(b"date") => FieldKind::Date,
            7 if is(b"upgrade") => FieldKind::HopByHop,
            10 if is(b"connection") => FieldKind::Connection,
            10 if is(b"keep-alive") => FieldKind::HopByHop,
            11 if is(b"retry-after") => FieldKind::RetryAfter,
            14 if is(b"content-length") => FieldKind::ContentLength,
            16 if is(b"proxy-connection") => FieldKind::HopByHop,
            17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
            18 if is(b"proxy-authenticate") => FieldKind::HopByHop,
            19 if is(b"proxy-authorization") => FieldKind::HopByHop,
            21 if is(b"endpoint-load-metrics") => FieldKind::LoadReport,
            _ => FieldKind::Other,
        }
    }

    fn hop_by_hop(self) -> bool {
        matches!(
            self,
            FieldKind::Connection | FieldKind::TransferEncoding | FieldKind::HopByHop
        )
    }
}

/// One field of an answer head: where its name and value are in the head
/// (start, length).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawField {
    name: (usize, usize),
    value: (usize, usize),
    kind: FieldKind,
}

/// The bytes a `(start, length)` position covers.
fn span((start, len): (usize, usize)) -> std::ops::Range<usize> {
    start..start + len
}

impl RawField {
    fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[span(self.name)]
    }

    fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[span(self.value)]
    }

    /// The field as a map entry; the value shares `head`.
    fn field(&self, head: &Bytes) -> Result<(HeaderName, HeaderValue), ExchangeError> {
        let name = crate::headers::field_name(self.name(head))
            .map_err(|_| ExchangeError::InvalidHead("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span(self.value)))
            .map_err(|_| ExchangeError::InvalidHead("invalid header value"))?;
        Ok((name, value))
    }
}

/// An answer's end-to-end fields as the backend sent them (hop-by-hop
/// fields left out), for a client connection that writes them as they
/// are ([`parse_head`] with `raw`).
#[derive(Debug)]
pub struct RawFields {
    head: Bytes,
    fields: Vec<RawField>,
}

impl RawFields {
    /// Writes the fields as `name: value` lines of an HTTP/1 head, calling
    /// `see` with each field's kind and value.
    ///
    /// A line the backend spelled exactly so (`name: value` and CRLF) is
    /// copied as it came, and a run of such lines with nothing left out
    /// between them is copied at once: a typical answer's fields are one
    /// or two copies instead of four per field.
    pub fn write_to(&self, out: &mut Vec<u8>, mut see: impl FnMut(FieldKind, &[u8])) {
        let head = &self.head[..];
        // The pending run of verbatim lines, as a range of `head`.
        let mut run = 0..0;
        for f in &self.fields {
            let (name, value) = (span(f.name), span(f.value));
            see(f.kind, &head[value.clone()]);
            let line_end = value.end + 2;
            let verbatim = head.get(name.end..value.start) == Some(b": ")
                && head.get(value.end..line_end) == Some(b"\r\n");
            if verbatim && run.end == name.start && !run.is_empty() {
                run.end = line_end;
                continue;
            }
            out.extend_from_slice(&head[run]);
            if verbatim {
                run = name.start..line_end;
            } else {
                run = 0..0;
                crate::headers::write_field_bytes(out, &head[name], &head[value]);
            }
        }
        out.extend_from_slice(&head[run]);
    }

    /// Whether the answer has a `Retry-After` field.
    pub fn has_retry_after(&self) -> bool {
        self.fields.iter().any(|f| f.kind == FieldKind::RetryAfter)
    }

    /// The value of the first `Endpoint-Load-Metrics` field (ORCA).
    pub fn load_report(&self) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.kind == FieldKind::LoadReport)
            .map(|f| f.value(&self.head))
    }

    /// The fields as a header map, as [`parse_head`] without `raw` reads
    /// them.
    pub fn to_header_map(&self) -> Result<HeaderMap, ExchangeError> {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for f in &self.fields {
            let (name, value) = f.field(&self.head)?;
            map.append(name, value);
        }
        Ok(map)
    }
}

fn invalid_head(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        _ => "invalid head",
    }
}

/// What the framing and reuse rules need from an answer's fields, noted as
/// the fields are read (looking them up in the map afterwards would hash
/// each name again).
#[derive(Debug, Default)]
struct Delimiters {
    /// Whether the last transfer coding named is `chunked`; `None` without
    /// `Transfer-Encoding`.
    chunked: Option<bool>,
    content_length: Option<u64>,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
}

impl Delimiters {
    /// Notes one field. Copies of `Content-Length` must agree.
    fn see(&mut self, kind: FieldKind, value: &[u8]) -> Result<(), ExchangeError> {
        match kind {
            FieldKind::ContentLength => {
                for part in tokens_of(value) {
                    let n = content_length(part)
                        .ok_or(ExchangeError::InvalidHead("invalid content-length"))?;
                    if self.content_length.is_some_and(|l| l != n) {
                        return Err(ExchangeError::InvalidHead("conflicting content-length"));
                    }
                    self.content_length = Some(n);
                }
            }
            FieldKind::TransferEncoding => {
                let last = tokens_of(value).next_back().unwrap_or_default();
                self.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            FieldKind::Connection => {
                for token in tokens_of(value) {
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How the body of an answer with `status` is delimited (RFC 9112 §6.3).
    fn framing(&self, status: StatusCode, head_request: bool) -> Framing {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Empty;
        }
        match (self.chunked, self.content_length) {
            // Chunked must be the last coding; anything else runs to the
            // close, and either way `Content-Length` is ignored.
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    }

    /// Whether an answer of `version` lets the connection carry another
    /// request.
    fn keep_alive(&self, version: Version) -> bool {
        // Both lengths in one answer: the chunked framing is read, but the
        // sender is confused or an attack in progress, so the connection
        // is not trusted with another request (RFC 9112 §6.3).
        if self.chunked.is_some() && self.content_length.is_some() {
            return false;
        }
        if version == Version::HTTP_11 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }
}

/// A `Content-Length` value: digits only, no sign, no overflow.
pub(crate) fn content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Where a chunked body's decoding stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// What the decoder took from the buffer.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Body data.
    Data(Bytes),
    /// The trailer fields after the last chunk (the body has ended).
    Trailers(HeaderMap),
    /// The body has ended, without trailers.
    End,
}

/// Decodes a chunked body incrementally (RFC 9112 §7.1).
///
/// Stricter than httparse's size-line parser, as hyper is: a size line
/// must start with a hex digit (httparse reads an empty one as the last
/// chunk), end in CRLF with no other line feed, and the extensions of a
/// whole body are bounded. Every limit holds however the bytes arrive.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: Chunked,
    /// Chunk-extension bytes seen in this body.
    extensions: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: Chunked::Size,
            extensions: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Checks a complete chunk-size line, CRLF included.
    fn size_line(&mut self, line: &[u8]) -> Result<(), ExchangeError> {
        if line.len() > MAX_CHUNK_LINE {
            return Err(ExchangeError::InvalidChunk("chunk-size line too long"));
        }
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(ExchangeError::InvalidChunk("chunk size without digits"));
        }
        let Some(rest) = line[digits..].strip_suffix(b"\r\n") else {
            return Err(ExchangeError::InvalidChunk(
                "chunk-size line not ended by CRLF",
            ));
        };
        if rest.contains(&b'\n') || rest.contains(&b'\r') {
            return Err(ExchangeError::InvalidChunk(
                "line break inside a chunk extension",
            ));
        }
        self.extensions += rest.len();
        if self.extensions > MAX_CHUNK_EXTENSIONS {
            return Err(ExchangeError::InvalidChunk("chunk extensions too large"));
        }
        Ok(())
    }

    /// Takes the next piece from the front of `buf`; `Ok(None)` when more
    /// bytes are needed. Chunk extensions are ignored.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, ExchangeError> {
        loop {
            match self.state {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.size_line(&buf[..used])?;
                        let _ = buf.split_to(used);
                        self.state = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => {
                        return Ok(None)
                    }
                    Ok(httparse::Status::Partial) => {
                        return Err(ExchangeError::InvalidChunk("chunk-size line too long"))
                    }
                    Err(_) => return Err(ExchangeError::InvalidChunk("invalid chunk size")),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Some(Piece::Data(data)));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ExchangeError::InvalidChunk("missing CRLF after chunk data"));
                    }
                    let _ = buf.split_to(2);
                    self.state = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] == b"\r\n" {
                        let _ = buf.split_to(2);
                        return Ok(Some(Piece::End));
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(ExchangeError::InvalidChunk("trailers too large"));
                        }
                        return Ok(None);
                    };
                    if end + 4 > MAX_TRAILERS {
                        return Err(ExchangeError::InvalidChunk("trailers too large"));
                    }
                    let block = buf.split_to(end + 4);
                    let mut slots = [httparse::EMPTY_HEADER; 64];
                    let fields = match httparse::parse_headers(&block, &mut slots) {
                        Ok(httparse::Status::Complete((_, fields))) => fields,
                        _ => return Err(ExchangeError::InvalidChunk("invalid trailer fields")),
                    };
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| ExchangeError::InvalidChunk("invalid trailer name"))?;
                        let value = HeaderValue::from_bytes(f.value)
                            .map_err(|_| ExchangeError::InvalidChunk("invalid trailer value"))?;
                        trailers.append(name, value);
                    }
                    return Ok(Some(Piece::Trailers(trailers)));
                }
            }
        }
    }
}

/// How much of the body is left to read.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// An answer's body read from the connection it arrives on.
#[derive(Debug)]
pub struct ResponseBody {
    /// `None` once the body has ended (the connection was given back or
    /// closed).
    conn: Option<Box<Conn>>,
    remaining: Remaining,
    /// Where the connection goes at the end; `None` when it cannot be
    /// reused.
    lease: Option<Lease>,
    /// See [`Head::hop_by_hop_removed`].
    hop_by_hop_removed: bool,
    /// See [`Head::raw`].
    raw: Option<Box<RawFields>>,
}

impl ResponseBody {
    /// See [`Head::hop_by_hop_removed`].
    pub fn hop_by_hop_removed(&self) -> bool {
        self.hop_by_hop_removed
    }

    /// See [`Head::raw`].
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.raw.as_deref()
    }

    /// The body framed by `head` on `conn`; it takes the head's raw fields
    /// ([`Head::raw`]). An empty body ends at once and gives the
    /// connection back.
    pub fn new(conn: Box<Conn>, head: &mut Head, lease: Lease) -> Self {
        let remaining = match head.framing {
            Framing::Empty => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunked(ChunkedDecoder::default()),
            Framing::Close => Remaining::Close,
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            remaining,
            lease: head.keep_alive.then_some(lease),
            hop_by_hop_removed: head.hop_by_hop_removed,
            raw: head.raw.take(),
        };
        if matches!(body.remaining, Remaining::Done) {
            body.finish();
        }
        body
    }

    /// The body has ended: the connection goes back if the answer allows
    /// reuse and no byte beyond the body arrived.
    fn finish(&mut self) {
        self.remaining = Remaining::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(lease) = self.lease.take() {
            if conn.buf.is_empty() {
                conn.first_read = (conn.answer_bytes + 1).clamp(READ_SIZE, MAX_READ_SIZE);
                lease.give_back(conn);
            }
        }
    }

    /// The body broke: the connection is closed, not reused.
    fn fail(&mut self) {
        self.remaining = Remaining::Done;
        self.lease = None;
        self.conn = None;
    }

    /// Reads more of the body into the connection's buffer; `rest` is how
    /// much of it is still expected (0 when unknown).
    ///
    /// There is room for the rest and a byte more, so the read that brings
    /// the body's last bytes comes back short, and tokio then forgets that
    /// the socket was readable. After a read that fills the buffer exactly
    /// it would not, and [`Conn::is_open`] would pay a system call before
    /// the next request to find nothing to read.
    fn poll_fill(conn: &mut Conn, rest: u64, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = usize::try_from(rest.saturating_add(1))
            .unwrap_or(usize::MAX)
            .clamp(READ_SIZE, MAX_READ_SIZE);
        if conn.buf.capacity() - conn.buf.len() < want {
            conn.buf.reserve(want);
        }
        let read = poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf);
        if let Poll::Ready(Ok(n)) = read {
            conn.answer_bytes += n;
        }
        read
    }
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.remaining {
                Remaining::Done => return Poll::Ready(None),
                Remaining::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = conn
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = conn.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let left = *left;
                    match ready!(Self::poll_fill(conn, left, cx)) {
                        Ok(0) => {
                            this.fail();
                            return Poll::Ready(Some(Err(ExchangeError::BodyCut(left).into())));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            this.fail();
                            return Poll::Ready(Some(Err(ExchangeError::Io(e).into())));
                        }
                    }
                }
                Remaining::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Some(Piece::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Piece::Trailers(trailers))) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(Piece::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => match ready!(Self::poll_fill(conn, 0, cx)) {
                        Ok(0) => {
                            this.fail();
                            return Poll::Ready(Some(Err(ExchangeError::InvalidChunk(
                                "connection closed inside the body",
                            )
                            .into())));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            this.fail();
                            return Poll::Ready(Some(Err(ExchangeError::Io(e).into())));
                        }
                    },
                    Err(e) => {
                        this.fail();
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                Remaining::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(Self::poll_fill(conn, MAX_READ_SIZE as u64, cx)) {
                        Ok(0) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            this.fail();
                            return Poll::Ready(Some(Err(ExchangeError::Io(e).into())));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.remaining, Remaining::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Length(n) => SizeHint::with_exact(n),
            Remaining::Done => SizeHint::with_exact(0),
            Remaining::Chunked(_) | Remaining::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], head_request: bool) -> Result<Head, ExchangeError> {
        match parse_head(&mut BytesMut::from(bytes), head_request, false)? {
            Parsed::Final(head) => Ok(head),
            other => panic!("not a final head: {other:?}"),
        }
    }

    fn final_head(bytes: &[u8]) -> Head {
        head(bytes, false).unwrap()
    }

    #[test]
    fn parse_head_reads_status_fields_and_framing() {
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\n\r\nhello",
        );
        assert_eq!(h.parts.status, StatusCode::OK);
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let cookies: Vec<_> = h.parts.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.parts.headers["x-empty"], "");
        assert!(h
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
    }

    #[test]
    fn raw_fields_are_the_backends_bytes_less_the_hop_by_hop_ones() {
        let bytes = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nKeep-Alive: timeout=5\r\nX-Custom: 1\r\nset-cookie: b=2\r\nDate: Thu, 26 Nov 2026 14:00:00 GMT\r\n\r\nhello";
        let Ok(Parsed::Final(raw)) = parse_head(&mut BytesMut::from(&bytes[..]), false, true)
        else {
            panic!("no final answer");
        };
        let Ok(Parsed::Final(map)) = parse_head(&mut BytesMut::from(&bytes[..]), false, false)
        else {
            panic!("no final answer");
        };
        assert_eq!((raw.framing, raw.keep_alive), (map.framing, map.keep_alive));
        assert_eq!(raw.framing, Framing::Length(5));
        assert!(raw.parts.headers.is_empty(), "the map is left empty");
        let fields = raw.raw.expect("raw fields");
        let mut seen = Vec::new();
        let mut written = Vec::new();
        fields.write_to(&mut written, |kind, value| {
            seen.push((kind, std::str::from_utf8(value).unwrap().to_owned()));
        });
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            "Server: nginx\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nX-Custom: 1\r\n\
             set-cookie: b=2\r\nDate: Thu, 26 Nov 2026 14:00:00 GMT\r\n"
        );
        let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                FieldKind::Other,
                FieldKind::ContentLength,
                FieldKind::Other,
                FieldKind::Other,
                FieldKind::Other,
                FieldKind::Date,
            ]
        );
        assert_eq!(seen[1].1, "5");
        assert_eq!(fields.to_header_map().unwrap(), map.parts.headers);
        assert!(!fields.has_retry_after());
        assert_eq!(fields.load_report(), None);
        assert!(map.raw.is_none());
    }

    #[test]
    fn raw_fields_are_written_in_their_own_spelling_or_normalised() {
        // Lines spelled `name: value` CRLF are copied as they came, in runs
        // broken by a left-out field; others are written normalised.
        let bytes = b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC:   3\r\nD: 4\r\nKeep-Alive: x\r\nE: 5\r\nF: 6\r\n\r\n";
        let Ok(Parsed::Final(head)) = parse_head(&mut BytesMut::from(&bytes[..]), false, true)
        else {
            panic!("no final answer");
        };
        let mut written = Vec::new();
        head.raw
            .expect("raw fields")
            .write_to(&mut written, |_, _| {});
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n"
        );
    }

    #[test]
    fn raw_fields_give_way_to_the_map_when_connection_names_fields() {
        let bytes = b"HTTP/1.1 503 Busy\r\nConnection: x-hop\r\nX-Hop: 1\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n";
        let Ok(Parsed::Final(h)) = parse_head(&mut BytesMut::from(&bytes[..]), false, true) else {
            panic!("no final answer");
        };
        assert!(h.raw.is_none());
        assert!(!h.hop_by_hop_removed);
        assert_eq!(h.parts.headers["x-hop"], "1");
        let bytes = b"HTTP/1.1 503 Busy\r\nretry-after: 3\r\nEndpoint-Load-Metrics: TEXT cpu_utilization=0.5\r\nContent-Length: 0\r\n\r\n";
        let Ok(Parsed::Final(h)) = parse_head(&mut BytesMut::from(&bytes[..]), false, true) else {
            panic!("no final answer");
        };
        let raw = h.raw.expect("raw fields");
        assert!(raw.has_retry_after());
        assert_eq!(raw.load_report(), Some(&b"TEXT cpu_utilization=0.5"[..]));
    }

    #[test]
    fn field_kinds_ignore_letter_case() {
        for (name, kind) in [
            ("Content-Length", FieldKind::ContentLength),
            ("TRANSFER-ENCODING", FieldKind::TransferEncoding),
            ("connection", FieldKind::Connection),
            ("Keep-Alive", FieldKind::HopByHop),
            ("TE", FieldKind::HopByHop),
            ("Upgrade", FieldKind::HopByHop),
            ("Proxy-Connection", FieldKind::HopByHop),
            ("Proxy-Authenticate", FieldKind::HopByHop),
            ("proxy-authorization", FieldKind::HopByHop),
            ("DATE", FieldKind::Date),
            ("Retry-After", FieldKind::RetryAfter),
            ("endpoint-load-metrics", FieldKind::LoadReport),
            ("Content-Type", FieldKind::Other),
            ("Trailer", FieldKind::Other),
        ] {
            assert_eq!(FieldKind::of(name.as_bytes()), kind, "{name}");
            let hop =
                crate::headers::hop_by_hop_index(&HeaderName::from_bytes(name.as_bytes()).unwrap());
            assert_eq!(kind.hop_by_hop(), hop.is_some(), "{name}");
        }
    }

    #[test]
    fn parse_head_consumes_only_the_head() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]);
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Ok(Parsed::Final(_))
        ));
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn parse_head_waits_for_a_partial_head() {
        let partial = b"HTTP/1.1 200 OK\r\nContent-Len";
        let mut buf = BytesMut::from(&partial[..]);
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Ok(Parsed::Partial)
        ));
        assert_eq!(buf.len(), partial.len());
    }

    #[test]
    fn parse_head_skips_informational_answers_but_refuses_101() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Ok(Parsed::Informational)
        ));
        let Ok(Parsed::Final(h)) = parse_head(&mut buf, false, false) else {
            panic!("no final answer");
        };
        assert_eq!(h.parts.status, StatusCode::NO_CONTENT);
        assert!(matches!(
            head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(ExchangeError::UnexpectedUpgrade)
        ));
    }

    #[test]
    fn parse_head_leaves_out_hop_by_hop_fields_unless_connection_names_others() {
        let head = final_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(head.hop_by_hop_removed);
        let names: Vec<_> = head.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "content-length"]);
        let head = final_head(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!head.hop_by_hop_removed);
        assert!(head.parts.headers.contains_key("connection"));
        assert!(head.parts.headers.contains_key("x-secret"));
    }

    #[test]
    fn parse_head_keeps_a_non_canonical_reason() {
        let h = final_head(b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n");
        let reason = h
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"Fine Thanks");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |bytes: &[u8], head_request| head(bytes, head_request).map(|h| h.framing);
        let cases: [(&[u8], bool, Framing); 7] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                Framing::Empty,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Framing::Close),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::Close,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                false,
                Framing::Length(7),
            ),
        ];
        for (bytes, head_request, framing) in cases {
            assert_eq!(
                f(bytes, head_request).unwrap(),
                framing,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +7\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(f(bad, false).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn keep_alive_depends_on_version_and_connection() {
        let k = |bytes: &[u8]| final_head(bytes).keep_alive;
        assert!(k(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!k(
            b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!k(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(k(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        // A body that runs to the close ends the connection.
        assert!(!k(b"HTTP/1.1 200 OK\r\n\r\n"));
        // Transfer-Encoding and Content-Length together: read as chunked, never reused.
        let both = final_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.keep_alive);
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 abc\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 99 Low\r\n\r\n",
        ] {
            assert!(
                head(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn decode_all(
        input: &[u8],
        split: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), ExchangeError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Some(Piece::Data(d)) => body.extend_from_slice(&d),
                Some(Piece::Trailers(t)) => return Ok((body, Some(t))),
                Some(Piece::End) => return Ok((body, None)),
                None => {
                    if fed == input.len() {
                        return Err(ExchangeError::BodyCut(0));
                    }
                    let n = split.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_decoder_handles_any_split() {
        let input = b"5;foo=bar\r\nhello\r\nA\r\n, chunked!\r\n0\r\n\r\n";
        for split in 1..=input.len() {
            let (body, trailers) = decode_all(input, split).unwrap();
            assert_eq!(body, b"hello, chunked!", "split {split}");
            assert!(trailers.is_none());
        }
    }

    #[test]
    fn chunked_decoder_returns_trailers() {
        let input = b"3\r\nabc\r\n0\r\nGrpc-Status: 0\r\nX-Sum: 12\r\n\r\n";
        for split in 1..=input.len() {
            let (body, trailers) = decode_all(input, split).unwrap();
            assert_eq!(body, b"abc");
            let trailers = trailers.unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-sum"], "12");
        }
    }

    #[test]
    fn chunked_decoder_rejects_malformed_bodies() {
        assert!(decode_all(b"zz\r\nabc\r\n0\r\n\r\n", 64).is_err());
        assert!(decode_all(b"3\r\nabcXY0\r\n\r\n", 64).is_err());
        assert!(decode_all(b"fffffffffffffffff\r\n", 64).is_err());
        // A size line without digits is not the last chunk.
        for empty in [&b"\r\n\r\n"[..], b" \r\n\r\n", b";ext\r\n\r\n"] {
            assert!(
                decode_all(empty, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(empty)
            );
        }
        assert!(decode_all(b"3;a\nb\r\nabc\r\n0\r\n\r\n", 64).is_err());
    }

    #[test]
    fn chunked_decoder_limits_do_not_depend_on_how_bytes_arrive() {
        let mut long_line = b"3;".to_vec();
        long_line.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE));
        long_line.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        let mut big_trailer = b"3\r\nabc\r\n0\r\nX-Big: ".to_vec();
        big_trailer.extend(std::iter::repeat_n(b'y', MAX_TRAILERS));
        big_trailer.extend_from_slice(b"\r\n\r\n");
        let mut many_extensions = Vec::new();
        for _ in 0..(MAX_CHUNK_EXTENSIONS / 1000 + 1) {
            many_extensions.extend_from_slice(b"1;");
            many_extensions.extend(std::iter::repeat_n(b'e', 1000));
            many_extensions.extend_from_slice(b"\r\nz\r\n");
        }
        many_extensions.extend_from_slice(b"0\r\n\r\n");
        for input in [&long_line, &big_trailer, &many_extensions] {
            for split in [7, 100, 1024, 8192, input.len()] {
                assert!(decode_all(input, split).is_err(), "split {split}");
            }
        }
    }

    #[test]
    fn encode_head_writes_origin_form_and_an_empty_body_for_post() {
        let (mut get, ()) = http::Request::get("/a?b=c")
            .header("host", "example")
            .header("x-two", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_head(&get, None, BodyFraming::None, &mut out);
        assert_eq!(
            out,
            b"GET /a?b=c HTTP/1.1\r\nhost: example\r\nx-two: 1\r\n\r\n"
        );
        get.method = Method::POST;
        encode_head(&get, None, BodyFraming::None, &mut out);
        assert_eq!(
            out,
            b"POST /a?b=c HTTP/1.1\r\nhost: example\r\nx-two: 1\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
