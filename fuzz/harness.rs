// The fuzz harnesses, one function per parser at the edge. Shared by the
// cargo-fuzz targets in `fuzz_targets/` and by
// `crates/proxy/tests/fuzz_corpus.rs`, which runs every seed corpus file
// through them so CI exercises the targets without cargo-fuzz or nightly.
//
// Each function must never panic, whatever the bytes; a function returning
// is a pass.

/// The configuration parser: any text, as a file would hold it.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fulcrum_config::parse(text, Some("fuzz.toml"));
    }
}

/// The route matcher: routes from a fixed configuration, request from the
/// input (`host\nmethod\ntarget\nheader: value...`).
pub fn route_match(data: &[u8]) {
    use std::sync::OnceLock;
    static TABLE: OnceLock<fulcrum_proxy::routes::RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let config = fulcrum_config::parse(ROUTES, None).expect("fuzz route config is valid");
        let l = &config.listeners[0];
        fulcrum_proxy::routes::RouteTable::new(&l.routes, l.cluster.as_deref())
    });
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let host = lines.next().filter(|h| !h.is_empty());
    let method = lines
        .next()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(http::Method::GET);
    let Some(uri) = lines.next().and_then(|t| t.parse::<http::Uri>().ok()) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::header::HeaderName::from_bytes(n.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(n, v);
            }
        }
    }
    let _ = table.select(host, &method, &uri, &headers);
}

const ROUTES: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"

[[listener.route]]
host = "*.example.com"
path_prefix = "/api"
cluster = "app"

[[listener.route]]
host = "exact.test"
path_regex = "^/v[0-9]+/items/[a-z]+$"
methods = ["GET", "POST"]
cluster = "app"

[[listener.route]]
path_prefix = "/h"
headers = { "x-env" = { exact = "canary" } }
query = { "debug" = { present = true } }
cluster = "app"

[cluster.app]
backends = [{ address = "127.0.0.1:9" }]
"#;

/// The PROXY protocol (v1 text, v2 binary) header parser.
pub fn proxy_protocol(data: &[u8]) {
    let _ = fulcrum_proxy::proxy_protocol::parse(data);
}

/// The TLS ClientHello peeker used for SNI routing.
pub fn sni(data: &[u8]) {
    let _ = fulcrum_proxy::sni::parse(data);
}

/// The ORCA `endpoint-load-metrics` header parser.
pub fn orca(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(report) = fulcrum_balance::orca::parse(text) {
            let _ = report.utilisation();
        }
    }
}

/// The HTTP/1 client's reading of a backend's answer
/// (`fulcrum_proxy::upstream::h1`): heads with `parse_head` (informational
/// answers skipped), then, for a chunked body, the `ChunkedDecoder`, the
/// bytes arriving in reads as the client gets them. The first byte picks
/// the options: its low bit whether the request was a `HEAD`, the other
/// seven the read size (1 to 128 bytes).
///
/// The same answer is read again in one read, and both readings must agree:
/// how TCP happens to cut an answer must not change what it says. The one
/// exception is the decoder's size limits (chunk-size line, trailers),
/// which are checked only while a line or block is incomplete, so they can
/// stop a cut reading that a whole one gets past; readings that end on a
/// limit are not compared. The client's limit on the head's size
/// (`MAX_HEAD`, 64 KiB) is not mirrored: fuzz inputs are far smaller.
pub fn upstream_h1(data: &[u8]) {
    let Some((&options, answer)) = data.split_first() else {
        return;
    };
    let head_request = options & 1 == 1;
    let read_size = usize::from(options >> 1) + 1;
    let cut = read_h1_answer(answer, head_request, read_size, false);
    let whole = read_h1_answer(answer, head_request, answer.len().max(1), false);
    if !cut.hit_size_limit() && !whole.hit_size_limit() {
        assert_eq!(
            cut, whole,
            "reads of {read_size} bytes and one read disagree"
        );
    }
    // Fields kept as the backend's bytes say what the map says.
    let raw = read_h1_answer(answer, head_request, answer.len().max(1), true);
    assert_eq!(raw, whole, "raw fields and the map disagree");
}

/// What the HTTP/1 client made of an answer.
#[derive(Debug, PartialEq)]
struct H1Reading {
    /// Informational answers skipped before the final one.
    informational: usize,
    /// The final head, or why there was none (the error, or the input
    /// ending inside a head).
    head: Result<H1Head, String>,
    /// For a chunked body, its data and how its decoding stopped.
    chunked: Option<(Vec<u8>, ChunkedEnding)>,
}

/// A final head as `parse_head` returned it.
#[derive(Debug, PartialEq)]
struct H1Head {
    status: http::StatusCode,
    version: http::Version,
    reason: Option<Vec<u8>>,
    headers: http::HeaderMap,
    framing: fulcrum_proxy::upstream::h1::Framing,
    keep_alive: bool,
}

/// How a chunked body's decoding stopped.
#[derive(Debug, PartialEq)]
enum ChunkedEnding {
    End,
    Trailers(http::HeaderMap),
    Invalid(String),
    /// The input ran out before the body's end.
    Cut,
}

impl H1Reading {
    /// Whether the decoder stopped on one of its size limits.
    fn hit_size_limit(&self) -> bool {
        matches!(
            &self.chunked,
            Some((_, ChunkedEnding::Invalid(reason)))
                if reason.contains("too long") || reason.contains("too large")
        )
    }
}

/// Reads `answer` as the client does, `read_size` bytes per read: after
/// each read, heads are parsed until one is partial or final. With `raw`,
/// the fields are kept as bytes and then read into a map.
fn read_h1_answer(answer: &[u8], head_request: bool, read_size: usize, raw: bool) -> H1Reading {
    use fulcrum_proxy::upstream::h1::{parse_head, Framing, Parsed};

    let mut reads = answer.chunks(read_size);
    let mut buf = bytes::BytesMut::new();
    let mut informational = 0;
    let head = 'head: loop {
        let Some(read) = reads.next() else {
            return H1Reading {
                informational,
                head: Err("closed inside the head".into()),
                chunked: None,
            };
        };
        buf.extend_from_slice(read);
        loop {
            let before = buf.clone();
            match parse_head(&mut buf, head_request, raw) {
                Ok(Parsed::Partial) => {
                    assert_eq!(buf, before, "a partial head consumed bytes");
                    break;
                }
                Ok(Parsed::Informational) => {
                    assert!(
                        buf.len() < before.len() && before.ends_with(&buf),
                        "an informational answer was not consumed from the front"
                    );
                    informational += 1;
                }
                Ok(Parsed::Final(head)) => {
                    assert!(
                        buf.len() < before.len() && before.ends_with(&buf),
                        "a final head was not consumed from the front"
                    );
                    break 'head head;
                }
                Err(e) => {
                    return H1Reading {
                        informational,
                        head: Err(e.to_string()),
                        chunked: None,
                    }
                }
            }
        }
    };
    if let Some(raw) = head.raw.as_ref() {
        if let Ok(map) = raw.to_header_map() {
            // The fields as the client is sent them read back as they came.
            let mut written = b"HTTP/1.1 200 OK\r\n".to_vec();
            raw.write_to(&mut written, |_, _| {});
            written.extend_from_slice(b"\r\n");
            match parse_head(&mut bytes::BytesMut::from(&written[..]), false, false) {
                Ok(Parsed::Final(again)) => {
                    assert_eq!(again.parts.headers, map, "written raw fields read back differently")
                }
                Ok(_) => panic!("written raw fields are not a whole head"),
                Err(e) => panic!("written raw fields do not parse: {e}"),
            }
        }
    }
    let status = head.parts.status;
    assert!(
        status.as_u16() >= 200,
        "{status} returned as a final answer"
    );
    assert!(
        head.parts.version == http::Version::HTTP_11
            || head.parts.version == http::Version::HTTP_10
    );
    if head_request
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        assert_eq!(head.framing, Framing::Empty, "{status} has a body");
    }
    assert_ne!(
        head.framing,
        Framing::Length(0),
        "an empty length is not Empty"
    );
    if head.framing == Framing::Close {
        assert!(!head.keep_alive, "a body to the close keeps the connection");
    }
    let chunked = (head.framing == Framing::Chunked).then(|| decode_h1_chunked(buf, &mut reads));
    H1Reading {
        informational,
        head: Ok(H1Head {
            status,
            version: head.parts.version,
            reason: head
                .parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| r.as_bytes().to_vec()),
            headers: match head.raw.as_ref().map(|r| r.to_header_map()) {
                None => head.parts.headers,
                Some(Ok(map)) => map,
                Some(Err(e)) => {
                    return H1Reading {
                        informational,
                        head: Err(e.to_string()),
                        chunked: None,
                    }
                }
            },
            framing: head.framing,
            keep_alive: head.keep_alive,
        }),
        chunked,
    }
}

/// Decodes a chunked body from what follows the head in `buf`, then from
/// the remaining `reads`, until the body ends, fails or the input runs out.
fn decode_h1_chunked<'a>(
    mut buf: bytes::BytesMut,
    reads: &mut impl Iterator<Item = &'a [u8]>,
) -> (Vec<u8>, ChunkedEnding) {
    use fulcrum_proxy::upstream::h1::{ChunkedDecoder, Piece};

    let mut decoder = ChunkedDecoder::default();
    let mut fed = buf.len();
    let mut data = Vec::new();
    loop {
        let piece = decoder.decode(&mut buf);
        assert!(buf.len() <= fed, "the decoder grew its buffer");
        let consumed = fed - buf.len();
        match piece {
            Ok(Some(Piece::Data(d))) => {
                assert!(!d.is_empty(), "an empty data piece");
                data.extend_from_slice(&d);
                assert!(
                    data.len() <= consumed,
                    "{} data bytes out of {consumed} consumed",
                    data.len()
                );
            }
            Ok(Some(Piece::Trailers(trailers))) => {
                return (data, ChunkedEnding::Trailers(trailers))
            }
            Ok(Some(Piece::End)) => return (data, ChunkedEnding::End),
            Ok(None) => {
                let Some(read) = reads.next() else {
                    return (data, ChunkedEnding::Cut);
                };
                buf.extend_from_slice(read);
                fed += read.len();
            }
            Err(e) => return (data, ChunkedEnding::Invalid(e.to_string())),
        }
    }
}

/// The HTTP/1 server's reading of a client connection
/// (`fulcrum_proxy::http::server`), as its connection reads one: request
/// heads with `parse_request` (through `parse_request_for_fuzzing`), each
/// body by its length or with the `ChunkedDecoder`, the bytes arriving in
/// reads appended to one buffer, until a head is refused, a body is
/// malformed or the input runs out. The connection would stop after a
/// request that closes or upgrades it; the harness reads on, so the
/// parser also meets whatever follows. The first byte picks the options:
/// its low seven bits the read size (1 to 128 bytes), its high bit the
/// listener's limits (`FUZZ_SMALL_LIMITS`, which fuzz inputs reach, or
/// `FUZZ_LARGE_LIMITS`, whose header slots are on the heap).
///
/// Invariants: a head is taken from the front of the buffer, never longer
/// than `max_head`, with at most `max_headers` fields, HTTP/1.0 or 1.1,
/// with `Host` if 1.1; a request is chunked exactly when it has
/// `Transfer-Encoding`, and then has no `Content-Length` and is HTTP/1.1;
/// a head that needs more bytes leaves the buffer as it was; the decoder
/// never returns an empty data piece nor more data than it consumed.
///
/// The same bytes are read again in one read, and both readings must agree
/// on every request (method, target, version, field count, body,
/// trailers) and on how the connection ended. The exceptions are the size
/// limits checked while a head or a chunk line is incomplete: a cut
/// reading can be stopped by them (431, or the decoder's "too long")
/// where the whole one goes on to another error; both still refuse.
pub fn server_h1(data: &[u8]) {
    let Some((&options, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(options & 0x7f) + 1;
    let settings = if options & 0x80 == 0 {
        FUZZ_SMALL_LIMITS
    } else {
        FUZZ_LARGE_LIMITS
    };
    let cut = read_h1_requests(stream, &settings, read_size);
    let whole = read_h1_requests(stream, &settings, stream.len().max(1));
    assert_eq!(
        cut.requests, whole.requests,
        "reads of {read_size} bytes and one read disagree"
    );
    if !H1End::limit_explains(&cut.end, &whole.end) {
        assert_eq!(
            cut.end, whole.end,
            "reads of {read_size} bytes and one read end differently"
        );
    }
}

/// Limits small enough for fuzz inputs to exceed.
const FUZZ_SMALL_LIMITS: fulcrum_proxy::http::server::Settings =
    fulcrum_proxy::http::server::Settings {
        max_head: 512,
        max_headers: 8,
        // Neither is read by `parse_request`.
        header_timeout: std::time::Duration::from_secs(10),
        tls: false,
    };

/// The listener's default head size, and more header slots than the
/// parser keeps on the stack.
const FUZZ_LARGE_LIMITS: fulcrum_proxy::http::server::Settings =
    fulcrum_proxy::http::server::Settings {
        max_head: 64 * 1024,
        max_headers: 200,
        // Neither is read by `parse_request`.
        header_timeout: std::time::Duration::from_secs(10),
        tls: false,
    };

/// What the HTTP/1 server made of a client's bytes.
#[derive(Debug, PartialEq)]
struct H1Connection {
    requests: Vec<H1Request>,
    end: H1End,
}

/// One request as the server read it.
#[derive(Debug, PartialEq)]
struct H1Request {
    method: http::Method,
    target: String,
    version: http::Version,
    fields: usize,
    /// The body bytes read, all of them if the body ended.
    body: Vec<u8>,
    /// The trailer fields of a chunked body that had some.
    trailers: Option<http::HeaderMap>,
}

/// How the reading stopped.
#[derive(Debug, PartialEq)]
enum H1End {
    /// The input ran out, inside a body or not, with these bytes buffered
    /// (a partial head or chunk line).
    NeedMore { in_body: bool, buffered: Vec<u8> },
    /// A head was refused with this status.
    Refused(http::StatusCode),
    /// A chunked body was malformed.
    InvalidBody(String),
}

impl H1End {
    /// Whether a size limit checked on incomplete input explains why a cut
    /// reading and a whole one end differently.
    fn limit_explains(a: &H1End, b: &H1End) -> bool {
        let limit = |end: &H1End| match end {
            H1End::Refused(status) => *status == http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            H1End::InvalidBody(reason) => {
                reason.contains("too long") || reason.contains("too large")
            }
            H1End::NeedMore { .. } => false,
        };
        let same_kind = matches!(
            (a, b),
            (H1End::Refused(_), H1End::Refused(_)) | (H1End::InvalidBody(_), H1End::InvalidBody(_))
        );
        same_kind && (limit(a) || limit(b))
    }
}

/// How the rest of a request body is delimited.
enum H1BodyLeft {
    Length(u64),
    Chunked(fulcrum_proxy::upstream::h1::ChunkedDecoder),
}

/// Reads `stream` as the server's connection does, `read_size` bytes per
/// read: after each read, whatever the buffer holds is parsed (heads) or
/// decoded (bodies) until more bytes are needed.
fn read_h1_requests(
    stream: &[u8],
    settings: &fulcrum_proxy::http::server::Settings,
    read_size: usize,
) -> H1Connection {
    use fulcrum_proxy::http::server::parse_request_for_fuzzing;
    use fulcrum_proxy::upstream::h1::{ChunkedDecoder, Piece};
    use http::header;

    let mut reads = stream.chunks(read_size);
    let mut buf = bytes::BytesMut::new();
    let mut requests: Vec<H1Request> = Vec::new();
    let mut body: Option<H1BodyLeft> = None;
    let end = loop {
        // Whether the buffer gave something; if not, read more.
        let took = match body.as_mut() {
            None => {
                let before = buf.clone();
                match parse_request_for_fuzzing(&mut buf, settings) {
                    Ok(None) => {
                        assert_eq!(buf, before, "a partial head consumed bytes");
                        false
                    }
                    Ok(Some(request)) => {
                        let length = *request.body();
                        assert!(
                            buf.len() < before.len() && before.ends_with(&buf),
                            "a head was not consumed from the front"
                        );
                        let head_len = before.len() - buf.len();
                        assert!(
                            head_len <= settings.max_head,
                            "a head of {head_len} bytes accepted (max_head {})",
                            settings.max_head
                        );
                        let headers = request.headers();
                        assert!(headers.len() <= settings.max_headers);
                        let version = request.version();
                        assert!(
                            version == http::Version::HTTP_11 || version == http::Version::HTTP_10
                        );
                        if version == http::Version::HTTP_11 {
                            assert!(headers.contains_key(header::HOST), "HTTP/1.1 without Host");
                        }
                        assert_eq!(
                            length.is_none(),
                            headers.contains_key(header::TRANSFER_ENCODING),
                            "chunked exactly when Transfer-Encoding is sent"
                        );
                        if length.is_none() {
                            assert!(!headers.contains_key(header::CONTENT_LENGTH));
                            assert_eq!(version, http::Version::HTTP_11);
                        }
                        body = match length {
                            Some(0) => None,
                            Some(n) => Some(H1BodyLeft::Length(n)),
                            None => Some(H1BodyLeft::Chunked(ChunkedDecoder::default())),
                        };
                        requests.push(H1Request {
                            method: request.method().clone(),
                            target: request.uri().to_string(),
                            version,
                            fields: headers.len(),
                            body: Vec::new(),
                            trailers: None,
                        });
                        true
                    }
                    Err(status) => break H1End::Refused(status),
                }
            }
            Some(H1BodyLeft::Length(left)) => {
                if buf.is_empty() {
                    false
                } else {
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    let data = buf.split_to(n);
                    requests
                        .last_mut()
                        .expect("a body follows a head")
                        .body
                        .extend_from_slice(&data);
                    if *left == 0 {
                        body = None;
                    }
                    true
                }
            }
            Some(H1BodyLeft::Chunked(decoder)) => {
                let fed = buf.len();
                let piece = decoder.decode(&mut buf);
                assert!(buf.len() <= fed, "the decoder grew its buffer");
                let request = requests.last_mut().expect("a body follows a head");
                match piece {
                    Ok(None) => false,
                    Ok(Some(Piece::Data(d))) => {
                        assert!(!d.is_empty(), "an empty data piece");
                        assert!(d.len() <= fed - buf.len(), "more data than was consumed");
                        request.body.extend_from_slice(&d);
                        true
                    }
                    Ok(Some(Piece::Trailers(t))) => {
                        request.trailers = Some(t);
                        body = None;
                        true
                    }
                    Ok(Some(Piece::End)) => {
                        body = None;
                        true
                    }
                    Err(e) => break H1End::InvalidBody(e.to_string()),
                }
            }
        };
        if !took {
            let Some(read) = reads.next() else {
                break H1End::NeedMore {
                    in_body: body.is_some(),
                    buffered: buf.to_vec(),
                };
            };
            buf.extend_from_slice(read);
        }
    };
    H1Connection { requests, end }
}
