//! HTTP/2 to a backend: clusters with `http2 = true`.
//!
//! Every request to a backend rides a shared connection, a stream each
//! (RFC 9113), instead of a connection each. hyper's
//! `client::conn::http2` runs a connection in a task of its own. Answer
//! trailers (gRPC's `grpc-status`) come through as the body's last frame,
//! and `te: trailers` goes to the backend when the client sent it (see
//! [`crate::http`]), so gRPC works end to end.
//!
//! A backend's connections are looked up per request ([`Shared::checkout`]):
//! the first that is open and has a stream to spare under the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` takes it. The pool counts each
//! connection's open streams itself (a [`StreamSlot`] per request, given
//! back when its answer's body is dropped), so that when every connection
//! is full a request opens another one rather than wait in hyper's queue
//! for a stream to end, as Envoy's pool does. Closed connections are
//! forgotten. Requests that find no room at the same moment each open a
//! connection; one is kept if the pool has no room left when it is ready,
//! the others carry their own request and close after it (an HTTP/1.1
//! pool opens a connection per concurrent request anyway). A connection
//! with no stream open for `pool_idle_timeout` is let go by the pool's
//! reaper.
//!
//! A request the backend provably did not process (a `REFUSED_STREAM`
//! reset, or a stream above the last one a `GOAWAY` accepted) may go to
//! another backend whatever its method ([`refused`]); one a shared
//! connection never sent (it had closed), or sent after the backend's
//! `GOAWAY` ([`going_away`]), goes on a new connection to the same backend.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, request, Request, Uri, Version};
use hyper::client::conn::http2::SendRequest;

use super::{BackendAddr, PrehashedHasher};
use crate::body::RequestBody;
use crate::headers::Forwarding;

/// Most connections kept per backend. Each carries up to the backend's
/// stream limit (100 before its SETTINGS say otherwise), so this is room
/// for thousands of requests in flight to one backend; beyond it, requests
/// open connections that close after them.
const MAX_SHARED: usize = 16;

/// One stream of a shared connection, held by the request and then by its
/// answer's body; the connection's count of open streams goes down when
/// it is dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        StreamSlot(Arc::clone(streams))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend's shared connection: its open streams, the most it may
/// have ([`serve`] keeps that up to date), and when a request last took
/// one.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<RequestBody>,
    streams: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
    used: Instant,
}

impl Conn {
    fn has_room(&self) -> bool {
        self.streams.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed)
    }
}

/// Streams a first connection to a backend may open before the backend's
/// SETTINGS say how many: hyper's default. Later ones start with what the
/// backend said before ([`Shared::known_limit`]).
pub(super) const INITIAL_STREAM_LIMIT: usize = 100;

/// Drives an HTTP/2 connection to its end, publishing after every step the
/// backend's current `SETTINGS_MAX_CONCURRENT_STREAMS` into `limit` (the
/// connection is owned here; only it knows).
pub(super) async fn serve<T>(
    conn: hyper::client::conn::http2::Connection<T, RequestBody, hyper_util::rt::TokioExecutor>,
    limit: Arc<AtomicUsize>,
) -> hyper::Result<()>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut conn = std::pin::pin!(conn);
    std::future::poll_fn(|cx| {
        let step = conn.as_mut().poll(cx);
        limit.store(conn.current_max_send_streams(), Ordering::Relaxed);
        step
    })
    .await
}

/// The shared HTTP/2 connections of one pool, by backend.
#[derive(Debug, Default)]
pub(super) struct Shared {
    conns: Mutex<HashMap<BackendAddr, Vec<Conn>, BuildHasherDefault<PrehashedHasher>>>,
}

impl Shared {
    /// A stream on one of `addr`'s open connections with room for one;
    /// `None` if there is none (the closed ones are forgotten).
    pub(super) fn checkout(
        &self,
        addr: &BackendAddr,
        now: Instant,
    ) -> Option<(SendRequest<RequestBody>, StreamSlot)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let list = conns.get_mut(addr)?;
        list.retain(|c| !c.sender.is_closed());
        let conn = list.iter_mut().find(|c| c.has_room())?;
        conn.used = now;
        Some((conn.sender.clone(), StreamSlot::take(&conn.streams)))
    }

    /// A new connection to `addr`, with a stream for the request that
    /// opened it. The pool keeps it unless one of its connections has
    /// room again, or it holds [`MAX_SHARED`] already.
    pub(super) fn offer(
        &self,
        addr: &BackendAddr,
        sender: &SendRequest<RequestBody>,
        limit: Arc<AtomicUsize>,
        now: Instant,
    ) -> StreamSlot {
        let streams = Arc::new(AtomicUsize::new(0));
        let slot = StreamSlot::take(&streams);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let list = conns.entry(addr.clone()).or_default();
        list.retain(|c| !c.sender.is_closed());
        if list.len() < MAX_SHARED && !list.iter().any(Conn::has_room) {
            list.push(Conn {
                sender: sender.clone(),
                streams,
                limit,
                used: now,
            });
        }
        slot
    }

    /// The stream limit `addr`'s connections have, for a new connection to
    /// start with before the backend's SETTINGS arrive (else requests
    /// sent meanwhile would wait for streams beyond the backend's limit).
    pub(super) fn known_limit(&self, addr: &BackendAddr) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .get(addr)
            .and_then(|list| list.iter().map(|c| c.limit.load(Ordering::Relaxed)).min())
            .unwrap_or(INITIAL_STREAM_LIMIT)
    }

    /// How many connections the pool keeps, to all backends.
    pub(super) fn count(&self) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.values().map(Vec::len).sum()
    }

    /// Lets go of connections that closed, or that had no stream open for
    /// `timeout`.
    pub(super) fn reap(&self, now: Instant, timeout: Duration) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|_, list| {
            list.retain(|c| {
                let busy = c.streams.load(Ordering::Relaxed) > 0;
                !c.sender.is_closed() && (busy || now.saturating_duration_since(c.used) < timeout)
            });
            !list.is_empty()
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
