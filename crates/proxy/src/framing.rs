//! HTTP/1 framing guard: refuses ambiguous message framing before the HTTP
//! parser sees it.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` by preferring
//! chunked and closing the connection afterwards. That is safe for hyper
//! itself, but a proxy must refuse such requests outright (RFC 9112 §6.3,
//! and what HAProxy does): the next hop, or a cache, may read the body the
//! other way, which is request smuggling. hyper also hides the evidence (it
//! drops the `Content-Length` header), so the check has to happen on the
//! raw bytes.
//!
//! [`FramingGuard`] follows the client's byte stream message by message —
//! request head, then the body by its one unambiguous framing (length or
//! chunked) — and stops at the first head that is ambiguous. The connection
//! wrapper then hands the HTTP parser only the bytes before that head,
//! answers `400 Bad Request` itself once the parser is done with earlier
//! requests, and closes.
//!
//! It steps aside (passes everything through) for HTTP/2 prior knowledge,
//! after an `Upgrade` or `CONNECT` request, and for heads the HTTP parser
//! will refuse anyway (too large, malformed).

/// The response sent for a refused request.
pub const REJECT_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 43\r\nconnection: close\r\n\r\n400 bad request: ambiguous message framing\n";

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most hex digits in a chunk size: 16 digits fill a u64.
const MAX_CHUNK_SIZE_DIGITS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting (more of) a request head.
    Head,
    /// A body of known length: this many bytes left.
    Body(u64),
    /// Reading a chunk-size line: value so far, digits so far.
    ChunkSize(u64, u32),
    /// Skipping a chunk extension up to the end of the line.
    ChunkExt(u64),
    /// Saw CR at the end of a chunk-size line.
    ChunkSizeLf(u64),
    /// Inside chunk data: bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data.
    ChunkDataCr,
    ChunkDataLf,
    /// Trailer section; `true` while the current line is empty so far.
    Trailers(bool),
    /// Not HTTP/1 framing we follow any more (h2, upgrade, oversized head).
    Pass,
}

/// Why a stream was refused.
pub type Rejection = &'static str;

/// Follows HTTP/1 request framing over a client byte stream.
#[derive(Debug)]
pub struct FramingGuard {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    max_headers: usize,
    first: bool,
    /// Where the search for the end of the head resumes.
    scan_from: usize,
    /// After the current message's body, stop following (upgrade/CONNECT).
    pass_after_body: bool,
    /// Largest chunked body followed; a longer one is cut off.
    max_body: u64,
    /// Chunk data declared so far in the current message.
    body_so_far: u64,
    /// Request heads completed so far (see [`FramingGuard::head_in_progress`]).
    heads: u64,
}

impl FramingGuard {
    /// A guard for a new connection.
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            max_head,
            max_headers,
            first: true,
            scan_from: 0,
            pass_after_body: false,
            max_body: u64::MAX,
            body_so_far: 0,
            heads: 0,
        }
    }

    /// Cuts chunked bodies longer than `max` bytes (`max_body_bytes`;
    /// bodies with a Content-Length are refused from the head, with 413).
    pub fn with_max_body(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// The request head the bytes fed so far end inside of, by its number
    /// (the count of complete heads before it); `None` between messages
    /// (blank lines included), inside a body, and once the guard steps
    /// aside. The connection times a head from the read that brings its
    /// first byte (`header_timeout`): a head that arrives whole in one read,
    /// the common case, is never timed.
    pub fn head_in_progress(&self) -> Option<u64> {
        (self.state == State::Head && !self.head.is_empty()).then_some(self.heads)
    }

    /// Whether the bytes fed so far end inside a message body; after an
    /// `Err`, whether the refused bytes were in a body (rather than a head).
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head | State::Pass)
    }

    /// Request heads completed so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Feeds bytes just read. On `Err`, the first value is how many of
    /// these bytes precede the refused head (they may be passed on).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), (usize, Rejection)> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Pass => return Ok(()),
                State::Head => {
                    if self.head.is_empty() {
                        // RFC 9112 §2.2: ignore empty lines before a request line.
                        while i < data.len() && (data[i] == b'\r' || data[i] == b'\n') {
                            i += 1;
                        }
                        if i == data.len() {
                            break;
                        }
                    }
                    // Fast path: a whole head inside this read is checked in
                    // place, without copying it.
                    if self.head.is_empty() && !(self.first && data[i..].starts_with(b"PRI ")) {
                        let window = &data[i..data.len().min(i + self.max_head)];
                        if let Some(len) = find_head_end(window, 0) {
                            let verdict = classify(&data[i..i + len], self.max_headers);
                            self.first = false;
                            let start = i;
                            i += len;
                            self.apply(verdict).map_err(|reason| (start, reason))?;
                            continue;
                        }
                    }
                    let head_start_here = if self.head.is_empty() { i } else { 0 };
                    let before = self.head.len();
                    let room = (self.max_head + 4).saturating_sub(before);
                    let take = (data.len() - i).min(room);
                    self.head.extend_from_slice(&data[i..i + take]);
                    if self.first {
                        let n = self.head.len().min(H2_PREFACE.len());
                        if self.head[..n] == H2_PREFACE[..n] {
                            if n == H2_PREFACE.len() {
                                self.state = State::Pass;
                                return Ok(());
                            }
                            // Possibly the HTTP/2 preface: wait for more bytes.
                            i += take;
                            continue;
                        }
                    }
                    match find_head_end(&self.head, self.scan_from) {
                        Some(end) => {
                            let consumed = end - before;
                            let outcome = self.inspect_head(end);
                            self.first = false;
                            self.head.clear();
                            if self.head.capacity() > 16 * 1024 {
                                self.head = Vec::new();
                            }
                            self.scan_from = 0;
                            i += consumed;
                            if let Err(reason) = outcome {
                                return Err((head_start_here, reason));
                            }
                        }
                        None => {
                            i += take;
                            // Rescan only the last bytes next time: a line end may straddle reads.
                            self.scan_from = self.head.len().saturating_sub(3);
                            if self.head.len() > self.max_head {
                                // The HTTP parser answers 431; nothing to follow.
                                self.state = State::Pass;
                                return Ok(());
                            }
                        }
                    }
                }
                State::Body(left) => {
                    let n = (left.min((data.len() - i) as u64)) as usize;
                    i += n;
                    self.state = if left == n as u64 {
                        self.after_body()
                    } else {
                        State::Body(left - n as u64)
                    };
                }
                State::ChunkSize(value, digits) => {
                    let b = data[i];
                    i += 1;
                    self.state = match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if digits >= MAX_CHUNK_SIZE_DIGITS {
                                return Err((0, "chunk size overflow"));
                            }
                            let d = (b as char).to_digit(16).expect("hex digit") as u64;
                            State::ChunkSize(value << 4 | d, digits + 1)
                        }
                        _ if digits == 0 => return Err((0, "invalid chunk size")),
                        b';' | b' ' | b'\t' => State::ChunkExt(value),
                        b'\r' => State::ChunkSizeLf(value),
                        b'\n' => self.after_size_line(value)?,
                        _ => return Err((0, "invalid chunk size")),
                    };
                }
                State::ChunkExt(value) => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\r' => self.state = State::ChunkSizeLf(value),
                        b'\n' => self.state = self.after_size_line(value)?,
                        _ => {}
                    }
                }
                State::ChunkSizeLf(value) => {
                    if data[i] != b'\n' {
                        return Err((0, "invalid chunk size line"));
                    }
                    i += 1;
                    self.state = self.after_size_line(value)?;
                }
                State::ChunkData(left) => {
                    let n = (left.min((data.len() - i) as u64)) as usize;
                    i += n;
                    self.state = if left == n as u64 {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left - n as u64)
                    };
                }
                State::ChunkDataCr => {
                    match data[i] {
                        b'\r' => self.state = State::ChunkDataLf,
                        b'\n' => self.state = State::ChunkSize(0, 0),
                        _ => return Err((0, "chunk data not followed by CRLF")),
                    }
                    i += 1;
                }
                State::ChunkDataLf => {
                    if data[i] != b'\n' {
                        return Err((0, "chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.state = State::ChunkSize(0, 0);
                }
                State::Trailers(line_empty) => {
                    let b = data[i];
                    i += 1;
                    self.state = match b {
                        b'\n' if line_empty => self.after_body(),
                        b'\n' => State::Trailers(true),
                        b'\r' => State::Trailers(line_empty),
                        _ => State::Trailers(false),
                    };
                }
            }
        }
        Ok(())
    }

    fn after_size_line(&mut self, size: u64) -> Result<State, (usize, Rejection)> {
        self.body_so_far = self.body_so_far.saturating_add(size);
        if self.body_so_far > self.max_body {
            return Err((0, "chunked body larger than max_body_bytes"));
        }
        Ok(if size == 0 {
            State::Trailers(true)
        } else {
            State::ChunkData(size)
        })
    }

    fn after_body(&mut self) -> State {
        if self.pass_after_body {
            State::Pass
        } else {
            State::Head
        }
    }

    /// Checks the complete head in `self.head[..end]` and sets the body state.
    fn inspect_head(&mut self, end: usize) -> Result<(), Rejection> {
        let verdict = classify(&self.head[..end], self.max_headers);
        self.apply(verdict)
    }

    /// Sets the state for the message whose head was classified.
    fn apply(&mut self, verdict: Result<HeadKind, Rejection>) -> Result<(), Rejection> {
        self.heads += 1;
        match verdict? {
            // Malformed or too many headers: the HTTP parser refuses it itself.
            HeadKind::Unparsed => self.state = State::Pass,
            HeadKind::Message { body, upgrade } => {
                self.pass_after_body = upgrade;
                self.body_so_far = 0;
                self.state = match body {
                    BodyKind::Chunked => State::ChunkSize(0, 0),
                    BodyKind::Length(n) if n > 0 => State::Body(n),
                    BodyKind::Length(_) | BodyKind::None => self.after_body(),
                };
            }
        }
        Ok(())
    }
}

/// How a request head frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// What a complete request head says about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadKind {
    /// The head does not parse; the HTTP parser will refuse it.
    Unparsed,
    /// A request with one unambiguous body framing.
    Message { body: BodyKind, upgrade: bool },
}

/// Headers parsed on the stack; larger limits fall back to the heap.
const STACK_HEADERS: usize = 128;

/// Classifies a complete request head, refusing ambiguous framing.
///
/// The header slots are left uninitialised (httparse writes each one
/// before it is read): initialising 128 empty headers is a 4 KiB memset
/// per request, more than parsing a typical head costs.
fn classify(head: &[u8], max_headers: usize) -> Result<HeadKind, Rejection> {
    use std::mem::MaybeUninit;
    if max_headers <= STACK_HEADERS {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
        classify_with(head, &mut headers[..max_headers])
    } else {
        classify_with(head, &mut vec![MaybeUninit::uninit(); max_headers])
    }
}

fn classify_with<'h>(
    head: &'h [u8],
    headers: &mut [std::mem::MaybeUninit<httparse::Header<'h>>],
) -> Result<HeadKind, Rejection> {
    let mut req = httparse::Request::new(&mut []);
    if !matches!(
        req.parse_with_uninit_headers(head, headers),
        Ok(httparse::Status::Complete(_))
    ) {
        return Ok(HeadKind::Unparsed);
    }
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut te_count = 0;
    let mut upgrade = req.method == Some("CONNECT");
    let mut host: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            // RFC 9112 §3.2: more than one Host is a 400; two hops could
            // route the request by different ones.
            if host.is_some() {
                return Err("more than one Host");
            }
            host = Some(trim(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl_count += 1;
            let v = trim(h.value);
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length");
            }
            content_length = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            transfer_encoding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if let (Some(target), Some(host)) = (req.path.and_then(absolute_form_authority), host) {
        // RFC 9112 §3.2.2: the absolute-form target wins over Host; a next
        // hop that reads Host instead would route the request elsewhere.
        if !target.eq_ignore_ascii_case(host) {
            return Err("absolute-form target disagrees with Host");
        }
    }
    if cl_count > 0 && te_count > 0 {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if cl_count > 1 {
        return Err("more than one Content-Length");
    }
    if te_count > 1 {
        return Err("more than one Transfer-Encoding");
    }
    let body = match (content_length, transfer_encoding) {
        (_, Some(te)) => {
            let last = te
                .rsplit(|&b| b == b',')
                .next()
                .map(trim)
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding does not end in chunked");
            }
            BodyKind::Chunked
        }
        (Some(n), None) => BodyKind::Length(n),
        (None, None) => BodyKind::None,
    };
    Ok(HeadKind::Message { body, upgrade })
}

/// The authority of an absolute-form request target (`http://host:port/path`).
fn absolute_form_authority(target: &str) -> Option<&[u8]> {
    let lower = target.get(..8).map(str::to_ascii_lowercase)?;
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // Userinfo is not part of the host a request is routed by.
    let authority = &rest[..end];
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    Some(authority.as_bytes())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// End of the head (index after the blank line), accepting bare-LF line
/// ends as httparse does; scanning starts at `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FramingGuard {
        FramingGuard::new(64 * 1024, 100)
    }

    /// Feeds `data` in pieces of `step` bytes; returns the rejection and its offset in `data`.
    fn feed_split(data: &[u8], step: usize) -> Result<(), (usize, Rejection)> {
        let mut g = guard();
        let mut at = 0;
        for chunk in data.chunks(step) {
            g.feed(chunk).map_err(|(n, r)| (at + n, r))?;
            at += chunk.len();
        }
        Ok(())
    }

    #[test]
    fn framing_guard_follows_keep_alive_requests() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /last HTTP/1.1\r\n\r\n";
        for step in [1, 3, 7, 1000] {
            assert_eq!(feed_split(stream, step), Ok(()), "step {step}");
        }
    }

    #[test]
    fn framing_guard_refuses_cl_with_te_at_the_head_start() {
        let first = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let bad =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let stream = [&first[..], &bad[..]].concat();
        for step in [1, 5, 1000] {
            let (at, why) = feed_split(&stream, step).unwrap_err();
            assert_eq!(why, "both Content-Length and Transfer-Encoding");
            if step == 1000 {
                assert_eq!(at, first.len());
            }
        }
    }

    #[test]
    fn framing_guard_refuses_smuggling_shapes() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "Transfer-Encoding does not end in chunked",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "more than one Host",
            ),
            (
                b"GET http://evil.example/x HTTP/1.1\r\nHost: good.example\r\n\r\n",
                "absolute-form target disagrees with Host",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "invalid chunk size",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                "chunk size overflow",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
                "chunk data not followed by CRLF",
            ),
        ];
        for (data, why) in cases {
            assert_eq!(
                feed_split(data, 1000).map_err(|e| e.1),
                Err(*why),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn framing_guard_reports_a_head_in_progress_from_its_first_byte_to_its_end() {
        let mut g = guard();
        assert_eq!(g.head_in_progress(), None, "a new connection");
        g.feed(b"\r\n").unwrap();
        assert_eq!(g.head_in_progress(), None, "blank lines are not a head");
        g.feed(b"G").unwrap();
        assert_eq!(g.head_in_progress(), Some(0));
        g.feed(b"ET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert_eq!(g.head_in_progress(), Some(0), "the same head");
        g.feed(b"\r\n").unwrap();
        assert_eq!(g.head_in_progress(), None, "idle between requests");
        // A whole head in one read is never in progress; a read that ends
        // inside the next one starts a new head.
        g.feed(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\n")
            .unwrap();
        assert_eq!(g.head_in_progress(), Some(2));
        g.feed(b"Host: a\r\nContent-Length: 3\r\n\r\nab").unwrap();
        assert_eq!(g.head_in_progress(), None, "inside a body");
        g.feed(b"cGET /d HTTP/1.1\r\n").unwrap();
        assert_eq!(g.head_in_progress(), Some(3));
    }

    #[test]
    fn framing_guard_reports_no_head_in_progress_once_it_steps_aside() {
        let mut g = guard();
        g.feed(b"PRI * HTTP/2.0\r\n").unwrap();
        assert_eq!(g.head_in_progress(), Some(0), "maybe the HTTP/2 preface");
        g.feed(&H2_PREFACE[16..]).unwrap();
        assert_eq!(g.head_in_progress(), None, "HTTP/2");
        let mut g = guard();
        g.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n")
            .unwrap();
        assert_eq!(g.head_in_progress(), None, "after an upgrade");
    }

    #[test]
    fn framing_guard_cuts_chunked_bodies_over_the_limit() {
        let body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n";
        let mut g = guard().with_max_body(10);
        assert_eq!(
            g.feed(body).map_err(|e| e.1),
            Err("chunked body larger than max_body_bytes")
        );
        assert_eq!(guard().with_max_body(11).feed(body), Ok(()));
        // The count starts again with every message.
        let two = [&body[..], &body[..]].concat();
        assert_eq!(guard().with_max_body(11).feed(&two), Ok(()));
    }

    #[test]
    fn framing_guard_accepts_absolute_form_matching_host() {
        let ok = b"GET HTTP://Good.Example:8080/x HTTP/1.1\r\nHost: good.example:8080\r\n\r\n";
        assert_eq!(feed_split(ok, 1000), Ok(()));
        let short = b"GET http:/ HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(feed_split(short, 1000), Ok(()));
    }

    #[test]
    fn framing_guard_steps_aside_for_h2_and_upgrades() {
        let mut g = guard();
        let mut h2 = H2_PREFACE.to_vec();
        h2.extend_from_slice(
            b"\x00\x00\x00garbage Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(g.feed(&h2), Ok(()));
        let up = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(guard().feed(up), Ok(()));
    }

    #[test]
    fn framing_guard_never_panics_on_arbitrary_bytes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(0..300);
            let alphabet =
                b"GETPOST /HTTP1.\r\n:ContentLengthTransferEncodingchunked0123456789abcdef; ";
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let mut g = guard();
            for chunk in data.chunks(rng.usize(1..20)) {
                if g.feed(chunk).is_err() {
                    break;
                }
            }
        }
    }
}
