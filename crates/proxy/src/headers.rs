//! Header rewriting between client and backend.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not
//! be forwarded: `Connection` and every header it names, `Keep-Alive`, `TE`,
//! `Transfer-Encoding`, `Upgrade` and the `Proxy-*` family. `Trailer` is
//! not among them (RFC 9110 §6.6.2, unlike RFC 2616): it declares the
//! trailer fields that follow, which are end-to-end. The
//! proxy then adds the forwarding headers operators expect from HAProxy's
//! `option forwardfor` and NGINX's `proxy_set_header`: `X-Forwarded-For`
//! (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, and `Via`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Hop-by-hop headers, `Connection` first (its bit is checked apart).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The elements of a comma-separated field value (`Connection`, `TE`,
/// `Transfer-Encoding`, a listed `Content-Length`), trimmed of
/// whitespace.
pub(crate) fn tokens(value: &HeaderValue) -> impl DoubleEndedIterator<Item = &[u8]> {
    tokens_of(value.as_bytes())
}

/// [`tokens`] of a value's bytes.
pub(crate) fn tokens_of(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a `Connection` value names only `close` and `keep-alive`: no
/// other field to remove, nothing for anyone but this connection.
pub(crate) fn only_close_or_keep_alive(value: &[u8]) -> bool {
    tokens_of(value).all(|t| {
        t.is_empty() || t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Writes one `name: value` line of an HTTP/1 head.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    write_field_bytes(out, name.as_str().as_bytes(), value.as_bytes());
}

/// [`write_field`] of a name and value as bytes (a backend's own fields).
pub(crate) fn write_field_bytes(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The [`HeaderName`] of a field name read from an HTTP/1 head.
///
/// The names most heads carry, spelled as clients and servers send them
/// (`Content-Type`) or in lowercase, map straight to their constants: a
/// length switch and one or two byte comparisons, against about 160
/// instructions for [`HeaderName::from_bytes`], which lowercases the
/// name into a buffer and then looks it up. Any other spelling or name
/// goes through `from_bytes`, so the result is the same either way.
pub(crate) fn field_name(raw: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    use header::*;
    let known = match raw.len() {
        2 => match raw {
            b"TE" | b"te" => Some(TE),
            _ => None,
        },
        3 => match raw {
            b"Via" | b"via" => Some(VIA),
            b"Age" | b"age" => Some(AGE),
            _ => None,
        },
        4 => match raw {
            b"Host" | b"host" => Some(HOST),
            b"Date" | b"date" => Some(DATE),
            b"ETag" | b"Etag" | b"etag" => Some(ETAG),
            b"Vary" | b"vary" => Some(VARY),
            _ => None,
        },
        6 => match raw {
            b"Accept" | b"accept" => Some(ACCEPT),
            b"Server" | b"server" => Some(SERVER),
            b"Cookie" | b"cookie" => Some(COOKIE),
            b"Origin" | b"origin" => Some(ORIGIN),
            b"Expect" | b"expect" => Some(EXPECT),
            _ => None,
        },
        7 => match raw {
            b"Referer" | b"referer" => Some(REFERER),
            b"Upgrade" | b"upgrade" => Some(UPGRADE),
            b"Expires" | b"expires" => Some(EXPIRES),
            _ => None,
        },
        8 => match raw {
            b"Location" | b"location" => Some(LOCATION),
            _ => None,
        },
        10 => match raw {
            b"Connection" | b"connection" => Some(CONNECTION),
            b"User-Agent" | b"user-agent" => Some(USER_AGENT),
            b"Set-Cookie" | b"set-cookie" => Some(SET_COOKIE),
            _ => None,
        },
        12 => match raw {
            b"Content-Type" | b"content-type" => Some(CONTENT_TYPE),
            _ => None,
        },
        13 => match raw {
            b"Cache-Control" | b"cache-control" => Some(CACHE_CONTROL),
            b"Last-Modified" | b"last-modified" => Some(LAST_MODIFIED),
            b"Accept-Ranges" | b"accept-ranges" => Some(ACCEPT_RANGES),
            b"Authorization" | b"authorization" => Some(AUTHORIZATION),
            b"If-None-Match" | b"if-none-match" => Some(IF_NONE_MATCH),
            _ => None,
        },
        14 => match raw {
            b"Content-Length" | b"content-length" => Some(CONTENT_LENGTH),
            _ => None,
        },
        15 => match raw {
            b"Accept-Encoding" | b"accept-encoding" => Some(ACCEPT_ENCODING),
            b"Accept-Language" | b"accept-language" => Some(ACCEPT_LANGUAGE),
            b"X-Forwarded-For" | b"x-forwarded-for" => Some(X_FORWARDED_FOR.clone()),
            _ => None,
        },
        16 => match raw {
            b"Content-Encoding" | b"content-encoding" => Some(CONTENT_ENCODING),
            _ => None,
        },
        17 => match raw {
            b"Transfer-Encoding" | b"transfer-encoding" => Some(TRANSFER_ENCODING),
            b"If-Modified-Since" | b"if-modified-since" => Some(IF_MODIFIED_SINCE),
            _ => None,
        },
        _ => None,
    };
    match known {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(raw),
    }
}

/// Header maps kept per thread for reuse ([`map_with_capacity`]).
const SPARE_MAPS: usize = 32;

/// Largest map kept for reuse (fields it has room for); a map grown by an
/// unusual message is freed instead of being held.
const SPARE_MAP_CAPACITY: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A header map with room for `fields`: one given back on this thread
/// ([`recycle`]) when there is one. Each request builds two maps (its own
/// and its answer's) and drops them; reusing them saves two allocations
/// and two frees each.
pub fn map_with_capacity(fields: usize) -> HeaderMap {
    match SPARE.with(|spare| spare.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives a map back for reuse by [`map_with_capacity`] on this thread.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > SPARE_MAP_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes hop-by-hop headers, including those named by `Connection`.
///
/// One pass over the names finds which are present (usually none, or only
/// `Connection: keep-alive`); only those are removed. That is cheaper than
/// eight hashed removals per message, and naming the `Connection` options
/// by `&str` needs no allocation.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    remove_present_hop_by_hop(headers, present);
}

/// Removes the hop-by-hop headers whose bits (positions in
/// [`HOP_BY_HOP`]) are set in `present`.
fn remove_present_hop_by_hop(headers: &mut HeaderMap, present: u16) {
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        remove_connection_options(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The position of `name` in [`HOP_BY_HOP`], if it is hop-by-hop.
///
/// A `match` on the (lowercase) name compares lengths first, so most
/// names are ruled out by one comparison instead of eight `HeaderName`
/// comparisons.
pub(crate) fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let i = match name.as_str() {
        "connection" => 0,
        "te" => 1,
        "transfer-encoding" => 2,
        "upgrade" => 3,
        "proxy-authenticate" => 4,
        "proxy-authorization" => 5,
        "keep-alive" => 6,
        "proxy-connection" => 7,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[i], *name);
    Some(i)
}

/// Removes the headers that `Connection` names.
fn remove_connection_options(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONNECTION).iter();
    let first = values.next().cloned();
    let more = values.next().is_some();
    match (first, more) {
        (Some(only), false) => remove_named(headers, &only),
        (Some(_), true) => {
            let all: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for v in &all {
                remove_named(headers, v);
            }
        }
        (None, _) => {}
    }
}

/// Removes each header named in a `Connection` value (`keep-alive` is in
/// the fixed list already). `close` names no field (RFC 9110 §7.6.1; the
/// field name `Close` is reserved), so it costs no lookup.
fn remove_named(headers: &mut HeaderMap, value: &HeaderValue) {
    let Ok(value) = value.to_str() else {
        return;
    };
    for token in value.split(',') {
        let token = token.trim();
        if !token.is_empty()
            && !token.eq_ignore_ascii_case("keep-alive")
            && !token.eq_ignore_ascii_case("close")
        {
            headers.remove(token);
        }
    }
}

/// The `Via` token for a protocol version.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 fulcrum",
        Version::HTTP_2 => "2 fulcrum",
        Version::HTTP_3 => "3 fulcrum",
        _ => "1.1 fulcrum",
    })
}

/// Appends our `Via` entry.
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    headers.append(header::VIA, via(version));
}

/// Rewrites a client request's headers for the backend: hop-by-hop
/// fields out, forwarding fields in ([`Forwarding`]).
///
/// `host` is the request's authority (Host header or HTTP/2 `:authority`).
pub fn prepare_request(
    headers: &mut HeaderMap,
    version: Version,
    client: IpAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    Forwarding::take(headers, version, &forwarded_for(client), host, tls).insert_into(headers);
}

/// The client's `X-Forwarded-For` entry (its address as text).
///
/// The client address belongs to the connection, so the listener builds
/// this once per connection and every request on it reuses the value (a
/// reference count, not a formatting and an allocation per request).
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let ip = format_ip(client, &mut buf);
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(ip))
        .expect("an IP address is a valid header value")
}

/// The fields the proxy adds to a request it forwards: `X-Forwarded-For`
/// (the client appended to a list a trusted proxy sent), `-Proto`,
/// `-Host`, `Via`, and `Host` when the client named the authority only in
/// HTTP/2's `:authority`.
///
/// [`Forwarding::take`] takes the request's own copies of them (and its
/// hop-by-hop fields) out of its map. Then either the HTTP/1 encoder
/// writes them after the request's fields ([`Forwarding::write`]), or
/// [`Forwarding::insert_into`] puts them in the map, for a request whose
/// fields are edited or read after this (route edits, hashing by a
/// field). Writing them costs no hashed insert, and the request's map
/// does not grow to take four more fields.
#[derive(Clone, Debug)]
pub struct Forwarding {
    forwarded_for: HeaderValue,
    tls: bool,
    host: Option<HeaderValue>,
    /// Whether `Host` must be added (the request has none).
    add_host: bool,
    version: Version,
}

/// What [`Forwarding::take`] looks for besides hop-by-hop fields, as bits
/// after [`HOP_BY_HOP`]'s.
const FORWARDED_FOR_BIT: u16 = 1 << 8;
const FORWARDED_PROTO_BIT: u16 = 1 << 9;
const FORWARDED_HOST_BIT: u16 = 1 << 10;
const HOST_BIT: u16 = 1 << 11;

impl Forwarding {
    /// Removes from `headers` the hop-by-hop fields and the fields this
    /// proxy sets, and returns what it will set. One pass over the names
    /// finds which are present; only those are looked up. A request's
    /// `X-Forwarded-For` (left only if its sender is trusted) is extended
    /// with `forwarded_for`, the client's entry.
    pub fn take(
        headers: &mut HeaderMap,
        version: Version,
        forwarded_for: &HeaderValue,
        host: Option<&HeaderValue>,
        tls: bool,
    ) -> Forwarding {
        let mut present = 0u16;
        for name in headers.keys() {
            present |= match hop_by_hop_index(name) {
                Some(i) => 1 << i,
                None => match name.as_str() {
                    "x-forwarded-for" => FORWARDED_FOR_BIT,
                    "x-forwarded-proto" => FORWARDED_PROTO_BIT,
                    "x-forwarded-host" => FORWARDED_HOST_BIT,
                    "host" => HOST_BIT,
                    _ => 0,
                },
            };
        }
        remove_present_hop_by_hop(headers, present & 0xff);
        let mut entry = forwarded_for.clone();
        if present & FORWARDED_FOR_BIT != 0 {
            if let Some(prior) = headers.remove(&X_FORWARDED_FOR) {
                let ip = forwarded_for.as_bytes();
                let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
                v.extend_from_slice(prior.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                entry = HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).unwrap_or(prior);
            }
        }
        if present & FORWARDED_PROTO_BIT != 0 {
            headers.remove(&X_FORWARDED_PROTO);
        }
        // Without an authority the request's own `X-Forwarded-Host` stays.
        if host.is_some() && present & FORWARDED_HOST_BIT != 0 {
            headers.remove(&X_FORWARDED_HOST);
        }
        Forwarding {
            forwarded_for: entry,
            tls,
            host: host.cloned(),
            add_host: present & HOST_BIT == 0,
            version,
        }
    }

    fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Writes the fields as lines of an HTTP/1 head.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_field(out, &X_FORWARDED_FOR, &self.forwarded_for);
        write_field_bytes(out, b"x-forwarded-proto", self.proto().as_bytes());
        if let Some(host) = &self.host {
            write_field(out, &X_FORWARDED_HOST, host);
            if self.add_host {
                write_field(out, &header::HOST, host);
            }
        }
        write_field(out, &header::VIA, &via(self.version));
    }

    /// Puts the fields in `headers` (taken by [`Forwarding::take`]).
    pub fn insert_into(self, headers: &mut HeaderMap) {
        let proto = HeaderValue::from_static(self.proto());
        headers.insert(X_FORWARDED_FOR.clone(), self.forwarded_for);
        headers.insert(X_FORWARDED_PROTO.clone(), proto);
        if let Some(host) = self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            if self.add_host {
                headers.insert(header::HOST, host);
            }
        }
        append_via(headers, self.version);
    }
}

/// Writes `ip` into `buf` without allocating and returns the used part.
///
/// IPv4 addresses (most clients) are written digit by digit: this runs for
/// every new connection, and `fmt` costs about ten times as much.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + octet % 10;
            n += 1;
        }
        return &buf[..n];
    }
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_the_general_parser_in_any_spelling() {
        let names = "TE Via Age Host Date ETag Etag Vary Accept Server Cookie Origin Expect \
            Referer Upgrade Expires Location Connection User-Agent Set-Cookie Content-Type \
            Cache-Control Last-Modified Accept-Ranges Authorization If-None-Match \
            Content-Length Accept-Encoding Accept-Language X-Forwarded-For Content-Encoding \
            Transfer-Encoding If-Modified-Since Keep-Alive X-Custom Hots Content-Lengtx";
        for name in names.split_whitespace().chain([""]) {
            for spelling in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                let raw = spelling.as_bytes();
                assert_eq!(
                    field_name(raw).ok(),
                    HeaderName::from_bytes(raw).ok(),
                    "{spelling:?}"
                );
            }
        }
        assert!(field_name(b"Bad Name").is_err());
    }

    #[test]
    fn recycled_maps_come_back_empty_and_large_ones_are_not_kept() {
        let spare = || SPARE.with(|s| s.borrow().len());
        let mut map = map_with_capacity(4);
        map.insert(header::HOST, HeaderValue::from_static("x"));
        recycle(map);
        assert_eq!(spare(), 1);
        let again = map_with_capacity(8);
        assert_eq!(spare(), 0);
        assert!(again.is_empty());
        assert!(again.capacity() >= 8);
        let mut big = HeaderMap::with_capacity(SPARE_MAP_CAPACITY * 2);
        big.insert(header::HOST, HeaderValue::from_static("x"));
        recycle(big);
        assert_eq!(spare(), 0, "a large map is freed, not kept");
        recycle(again);
        assert_eq!(spare(), 1);
    }

    #[test]
    fn prepare_request_strips_hop_by_hop_and_adds_forwarding() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        let host = HeaderValue::from_static("example.com");
        prepare_request(
            &mut h,
            Version::HTTP_11,
            "127.0.0.9".parse().unwrap(),
            Some(&host),
            false,
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "proxy-connection",
        ] {
            assert!(!h.contains_key(gone), "{gone} must be removed");
        }
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["via"], "1.1 fulcrum");
    }

    #[test]
    fn remove_hop_by_hop_follows_every_connection_value() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-One"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-two"),
        );
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn forwarding_written_or_inserted_gives_the_same_fields() {
        // The fields of a head, by name, each name's values in order
        // (the order of different names carries no meaning).
        fn fields(head: &[u8]) -> Vec<(String, String)> {
            let mut lines: Vec<(String, String)> = std::str::from_utf8(head)
                .unwrap()
                .split_terminator("\r\n")
                .map(|line| {
                    let (name, value) = line.split_once(": ").unwrap();
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            lines
        }
        fn write_map(map: &HeaderMap, out: &mut Vec<u8>) {
            for (name, value) in map {
                write_field(out, name, value);
            }
        }
        let requests: [&[(&str, &str)]; 4] = [
            &[("host", "a.example")],
            &[],
            &[
                ("host", "a.example"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("via", "1.0 other"),
                ("connection", "close, x-secret"),
                ("x-secret", "1"),
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-host", "spoofed"),
                ("accept", "*/*"),
            ],
            &[
                ("x-forwarded-host", "kept without an authority"),
                ("te", "trailers"),
            ],
        ];
        let client = forwarded_for("192.0.2.7".parse().unwrap());
        let authority = HeaderValue::from_static("a.example");
        for request in requests {
            for host in [Some(&authority), None] {
                for tls in [false, true] {
                    let mut map = HeaderMap::new();
                    for (name, value) in request {
                        map.append(*name, HeaderValue::from_static(value));
                    }
                    let mut inserted = map.clone();
                    Forwarding::take(&mut inserted, Version::HTTP_11, &client, host, tls)
                        .insert_into(&mut inserted);
                    let mut expected = Vec::new();
                    write_map(&inserted, &mut expected);
                    let forwarding =
                        Forwarding::take(&mut map, Version::HTTP_11, &client, host, tls);
                    let mut written = Vec::new();
                    write_map(&map, &mut written);
                    forwarding.write(&mut written);
                    assert_eq!(
                        fields(&written),
                        fields(&expected),
                        "{request:?} {host:?} {tls}"
                    );
                }
            }
        }
        // The values themselves, for the third request.
        let mut map = HeaderMap::new();
        for (name, value) in requests[2] {
            map.append(*name, HeaderValue::from_static(value));
        }
        let forwarding =
            Forwarding::take(&mut map, Version::HTTP_11, &client, Some(&authority), false);
        let mut written = Vec::new();
        write_map(&map, &mut written);
        forwarding.write(&mut written);
        assert_eq!(
            fields(&written),
            [
                ("accept", "*/*"),
                ("host", "a.example"),
                ("via", "1.0 other"),
                ("via", "1.1 fulcrum"),
                ("x-forwarded-for", "10.0.0.1, 192.0.2.7"),
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-proto", "http"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn connection_close_removes_the_connection_field_only() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn remove_hop_by_hop_leaves_end_to_end_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-request-id", HeaderValue::from_static("7"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn hop_by_hop_index_names_every_listed_header_and_nothing_else() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "x-forwarded-for",
            "trailers",
            "tee",
        ] {
            let name = HeaderName::from_static(name);
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }

    #[test]
    fn format_ip_writes_every_ipv4_address_as_display_does() {
        let mut buf = [0u8; 64];
        for octet in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(octet, 0, 10, 255),
                std::net::Ipv4Addr::new(1, octet, 100, octet),
            ] {
                let written = format_ip(IpAddr::V4(ip), &mut buf);
                assert_eq!(written, ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn forwarded_for_is_the_client_address() {
        assert_eq!(forwarded_for("192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(forwarded_for("2001:db8::1".parse().unwrap()), "2001:db8::1");
    }
}
