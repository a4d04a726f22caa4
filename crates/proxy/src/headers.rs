//! Header rewriting between client and backend.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not
//! be forwarded: `Connection` and every header it names, `Keep-Alive`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade` and the `Proxy-*` family. The
//! proxy then adds the forwarding headers operators expect from HAProxy's
//! `option forwardfor` and NGINX's `proxy_set_header`: `X-Forwarded-For`
//! (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, and `Via`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(&PROXY_CONNECTION);
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

/// Rewrites a client request's headers for the backend.
///
/// `host` is the request's authority (Host header or HTTP/2 `:authority`).
pub fn prepare_request(
    headers: &mut HeaderMap,
    version: Version,
    client: IpAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    remove_hop_by_hop(headers);
    let mut buf = [0u8; 64];
    let ip = format_ip(client, &mut buf);
    match headers.get(&X_FORWARDED_FOR) {
        Some(existing) => {
            let mut v = Vec::with_capacity(existing.len() + 2 + ip.len());
            v.extend_from_slice(existing.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        None => {
            if let Ok(v) = HeaderValue::from_bytes(ip) {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
    }
    append_via(headers, version);
}

/// Writes `ip` into `buf` without allocating and returns the used part.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
