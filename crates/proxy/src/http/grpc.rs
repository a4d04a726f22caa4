//! The proxy's own answers to gRPC calls.
//!
//! A gRPC client reads a call's outcome from `grpc-status`, not from the
//! HTTP status: an HTTP `503` reaches the application as "unavailable,
//! received HTTP status 503" and nothing more. So an answer the proxy
//! makes itself (no backend, a timeout, a shed or rate-limited request, no
//! route) to a gRPC request (`content-type: application/grpc…`, over
//! HTTP/2) goes out as a gRPC "trailers-only" answer, as Envoy's do:
//! HTTP `200`, `content-type: application/grpc`, no body, `grpc-status`
//! mapped from the HTTP status by gRPC's own table (`doc/http-grpc-status-mapping.md`
//! in the gRPC repository; `413` becomes `RESOURCE_EXHAUSTED`, as for a
//! message over a server's limit), and the proxy's text in `grpc-message`.
//! A `Retry-After` (shedding, rate limits) also becomes
//! `grpc-retry-pushback-ms`, which gRPC's retry policy obeys.
//!
//! Answers from backends are passed on as they are: a gRPC server speaks
//! for itself.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body as _;

use crate::body::ProxyBody;

/// Whether a request is a gRPC call (`application/grpc`, with or without
/// a `+proto`-style suffix; gRPC-Web, which works over HTTP/1.1 and puts
/// its trailers in the body, is not).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .and_then(|v| v.strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// The gRPC status code for an HTTP status the proxy answered with.
fn code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        413 => 8,              // RESOURCE_EXHAUSTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `text` as a `grpc-message`: percent-encoded outside printable ASCII,
/// and `%` itself (gRPC's PROTOCOL-HTTP2 spec).
fn message(text: &[u8]) -> HeaderValue {
    let mut out = Vec::with_capacity(text.len());
    for &b in text.trim_ascii() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The text of a local answer's body (ready at once: it is in memory).
fn text_of(body: ProxyBody) -> Bytes {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The proxy's own error answer `response`, as a gRPC trailers-only answer.
pub(super) fn local_answer(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let grpc_status = code(parts.status);
    let text = text_of(body);
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONNECTION);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(grpc_status)));
    headers.insert("grpc-message", message(&text));
    let pushback = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(seconds) = pushback {
        headers.insert(
            "grpc-retry-pushback-ms",
            HeaderValue::from(seconds.saturating_mul(1000)),
        );
    }
    parts.status = StatusCode::OK;
    Response::from_parts(parts, ProxyBody::local(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised_and_grpc_web_is_not() {
        let of = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(of("application/grpc"));
        assert!(of("application/grpc+proto"));
        assert!(of("application/grpc;charset=utf-8"));
        assert!(!of("application/grpc-web"));
        assert!(!of("application/grpc-web+proto"));
        assert!(!of("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_local_answer_becomes_trailers_only_with_the_mapped_status() {
        let mut response = Response::new(ProxyBody::local("503 service unavailable: 100%\n"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let answer = local_answer(response);
        assert_eq!(answer.status(), StatusCode::OK);
        let h = answer.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "503 service unavailable: 100%25");
        assert_eq!(h["grpc-retry-pushback-ms"], "2000");
        assert!(answer.body().is_end_stream());
        for (status, grpc) in [
            (404, 12),
            (403, 7),
            (413, 8),
            (504, 14),
            (429, 14),
            (400, 13),
            (408, 2),
        ] {
            assert_eq!(
                code(StatusCode::from_u16(status).unwrap()),
                grpc,
                "{status}"
            );
        }
        assert_eq!(message("é\n".as_bytes()), "%C3%A9");
    }
}
