//! HTTP/2 to a backend: clusters with `http2 = true`.
//!
//! Every request to a backend rides one shared connection, a stream each
//! (RFC 9113), instead of a connection each. hyper's
//! `client::conn::http2` runs the connection in a task of its own and
//! keeps to the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`: requests
//! beyond it wait for a stream to end. Answer trailers (gRPC's
//! `grpc-status`) come through as the body's last frame, and `te:
//! trailers` goes to the backend when the client sent it (see
//! [`crate::http`]), so gRPC works end to end.
//!
//! The shared connection is looked up per request ([`Shared::checkout`]);
//! one found closed is forgotten and a new one opened. Requests that find
//! no connection at the same moment each open one: the first to be ready
//! is shared, the others carry their own request and close after it (an
//! HTTP/1.1 pool opens a connection per concurrent request anyway). A
//! connection unused for `pool_idle_timeout` is let go by the pool's
//! reaper; streams still open on it finish first.
//!
//! A request the backend provably did not process (a `REFUSED_STREAM`
//! reset, a stream above the last one a `GOAWAY` accepted, or a connection
//! that closed before the request left) may go anywhere again whatever its
//! method ([`refused`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, request, Request, Uri, Version};
use hyper::client::conn::http2::SendRequest;

use super::{BackendAddr, PrehashedHasher};
use crate::body::RequestBody;
use crate::headers::Forwarding;

/// A backend's shared connection and when a request last took it.
#[derive(Debug)]
struct Entry {
    sender: SendRequest<RequestBody>,
    used: Instant,
}

/// The shared HTTP/2 connections of one pool, one per backend.
#[derive(Debug, Default)]
pub(super) struct Shared {
    conns: Mutex<HashMap<BackendAddr, Entry, BuildHasherDefault<PrehashedHasher>>>,
}

impl Shared {
    /// A handle on `addr`'s connection, unless there is none or it closed
    /// (then it is forgotten).
    pub(super) fn checkout(
        &self,
        addr: &BackendAddr,
        now: Instant,
    ) -> Option<SendRequest<RequestBody>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = conns.get_mut(addr)?;
        if entry.sender.is_closed() {
            conns.remove(addr);
            return None;
        }
        entry.used = now;
        Some(entry.sender.clone())
    }

    /// Shares a new connection to `addr`, unless an open one is shared
    /// already.
    pub(super) fn offer(
        &self,
        addr: &BackendAddr,
        sender: &SendRequest<RequestBody>,
        now: Instant,
    ) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.get(addr).is_some_and(|e| !e.sender.is_closed()) {
            return;
        }
        conns.insert(
            addr.clone(),
            Entry {
                sender: sender.clone(),
                used: now,
            },
        );
    }

    /// Lets go of connections that closed or were unused for `timeout`.
    pub(super) fn reap(&self, now: Instant, timeout: Duration) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|_, e| {
            !e.sender.is_closed() && now.saturating_duration_since(e.used) < timeout
        });
    }
}

/// The HTTP/2 request for `head`: the target in absolute form, its
/// authority from `Host` (which HTTP/2 carries as `:authority`, RFC 9113
/// §8.3.1), else the backend's address; the forwarding fields in the map,
/// as HTTP/2's encoder needs them there.
pub(super) fn request(
    head: &request::Parts,
    forwarding: Option<&Forwarding>,
    body: RequestBody,
    scheme: Scheme,
    addr: &BackendAddr,
) -> Request<RequestBody> {
    let mut headers = head.headers.clone();
    if let Some(f) = forwarding {
        f.clone().insert_into(&mut headers);
    }
    let authority = headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| addr.authority().clone());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        head.uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let uri = Uri::from_parts(uri).expect("scheme, authority and path are all set");
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    request
}

/// Whether the backend provably did not process the request that failed
/// with `error`: it refused the stream (`REFUSED_STREAM`), or its `GOAWAY`
/// came before the stream was accepted (RFC 9113 §6.8, §8.7).
pub(super) fn refused(error: &hyper::Error) -> bool {
    h2_error(error).is_some_and(|e| {
        e.is_remote() && (e.is_go_away() || e.reason() == Some(::h2::Reason::REFUSED_STREAM))
    })
}

/// Whether `error` is the backend's `GOAWAY` arriving before the
/// request's stream: the connection is closing, the request was not
/// processed, and a new connection to the same backend may take it.
pub(super) fn going_away(error: &hyper::Error) -> bool {
    h2_error(error).is_some_and(|e| e.is_remote() && e.is_go_away())
}

/// The HTTP/2 error under `error`, if any.
fn h2_error(error: &hyper::Error) -> Option<&::h2::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<::h2::Error>() {
            return Some(h2);
        }
        source = e.source();
    }
    None
}
