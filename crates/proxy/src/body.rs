//! Body types of the proxy's hot path.
//!
//! * [`RequestBody`] streams the client's request body upstream and can be
//!   *reclaimed* when an attempt failed before reading any of it (connect
//!   failure), so that request can be retried on another backend without
//!   ever buffering the body. It enforces the body limits ([`BodyLimits`]):
//!   size (`max_body_bytes`, the route's or the listener's) and the
//!   slowest acceptable arrival rate (`min_body_rate` over `body_timeout`).
//! * [`ProxyBody`] is what the proxy answers with: either the upstream's
//!   streamed body, holding the backend's in-flight guard until the last
//!   byte is sent or the client goes away, or a small local response.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_balance::InFlightGuard;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::{Instant, Sleep};

use crate::http::server::ClientBody;
use crate::upstream::{BodyError, UpstreamBody};

/// The limits a request body is read under: its size, and how slowly it
/// may arrive (the slow-POST defence).
///
/// The rate is measured in consecutive windows of `window`
/// (`body_timeout`), from the first time the proxy asks for the body: each
/// window must bring at least `min_per_window` bytes (`min_body_rate ×
/// body_timeout`, and at least one byte). The first window is the grace
/// period. Time the proxy spends waiting for the *backend* to take the
/// previous frame is not counted against the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body in bytes; a longer one is cut before the frame that
    /// crosses the limit is forwarded.
    pub max_bytes: u64,
    /// The measurement window (and grace period).
    pub window: Duration,
    /// Bytes each window must bring.
    pub min_per_window: u64,
}

impl BodyLimits {
    /// Limits from a listener's `max_body_bytes`, `body_timeout` and
    /// `min_body_rate`.
    pub fn new(max_bytes: u64, body_timeout: Duration, min_body_rate: u64) -> Self {
        let window = body_timeout.min(MAX_BODY_WINDOW);
        let per_window = (min_body_rate as f64 * window.as_secs_f64()).ceil();
        Self {
            max_bytes,
            window,
            min_per_window: (per_window as u64).max(1),
        }
    }

    /// A listener's limits, with a route's `max_body_bytes` if it has one.
    pub fn of(limits: &fulcrum_config::HttpLimits, route_max: Option<u64>) -> Self {
        Self::new(
            route_max.unwrap_or(limits.max_body_bytes),
            limits.body_timeout,
            limits.min_body_rate,
        )
    }
}

/// Longest rate window: a year is "never" for a request body, and keeps
/// `now + window` far from the clock's overflow whatever `body_timeout` says.
const MAX_BODY_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the proxy stopped reading a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyCut {
    /// The body grew past `max_body_bytes` (the route's or the listener's).
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// A `body_timeout` window brought fewer bytes than `min_body_rate` asks.
    #[error("request body arrived slower than min_body_rate")]
    TooSlow,
}

/// An error reading the client's request body.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client connection failed or the client broke off.
    #[error("client body: {0}")]
    Client(BodyError),
    /// The proxy cut the body off.
    #[error("client body cut off: {0}")]
    Cut(BodyCut),
}

/// The reading state of a body, shared by every attempt's handle.
#[derive(Debug)]
struct Reading {
    body: Option<ClientBody>,
    /// Data bytes read so far.
    received: u64,
    /// End of the current rate window; set on the first read.
    window_end: Option<Instant>,
    /// Bytes read in the current window.
    window_bytes: u64,
    /// When the last frame was handed to the backend connection: the time
    /// until it asks again is the backend's, not the client's.
    handed_at: Option<Instant>,
    /// Wakes the reader at the end of a window; made the first time the
    /// body has to wait for the client, then reset (never reallocated).
    timer: Option<Pin<Box<Sleep>>>,
    /// Set once the body has been cut off.
    cut: Option<BodyCut>,
    /// Set once the body has been read to its end.
    finished_at: Option<Instant>,
    /// Set when the client's body broke off (closed early, malformed).
    client_failed: bool,
    /// When the body was first asked for, then when its last data arrived.
    progress_at: Option<Instant>,
}

impl Reading {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        limits: &BodyLimits,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if let Some(cut) = self.cut {
            return Poll::Ready(Some(Err(RequestBodyError::Cut(cut))));
        }
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let now = Instant::now();
        if self.progress_at.is_none() {
            self.progress_at = Some(now);
        }
        let mut window_end = self.window_end.unwrap_or(now + limits.window);
        if let Some(handed) = self.handed_at.take() {
            window_end += now.saturating_duration_since(handed);
        }
        self.window_end = Some(window_end);
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.received += n;
                    if self.received > limits.max_bytes {
                        return self.cut_off(BodyCut::TooLarge {
                            limit: limits.max_bytes,
                        });
                    }
                    self.window_bytes += n;
                    self.progress_at = Some(now);
                }
                // A body of known length ends with its last byte: the
                // backend connection may never ask for the end.
                if self.body.as_ref().is_some_and(Body::is_end_stream) {
                    self.finished_at = Some(now);
                }
                if now >= window_end {
                    if let Err(cut) = self.next_window(now, limits) {
                        return self.cut_off(cut);
                    }
                }
                self.handed_at = Some(now);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.finished_at = Some(now);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.client_failed = true;
                Poll::Ready(Some(Err(RequestBodyError::Client(e))))
            }
            Poll::Pending => {
                if now >= window_end {
                    if let Err(cut) = self.next_window(now, limits) {
                        return self.cut_off(cut);
                    }
                }
                let deadline = self.window_end.unwrap_or(window_end);
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // The window ended while we were here: look again soon.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    /// Closes the current window at `now`: too few bytes cut the body,
    /// otherwise a new window starts.
    fn next_window(&mut self, now: Instant, limits: &BodyLimits) -> Result<(), BodyCut> {
        if self.window_bytes < limits.min_per_window {
            return Err(BodyCut::TooSlow);
        }
        self.window_bytes = 0;
        self.window_end = Some(now + limits.window);
        Ok(())
    }

    fn cut_off(&mut self, cut: BodyCut) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        self.cut = Some(cut);
        // Nothing more is read; the client connection closes after the answer.
        self.body = None;
        self.timer = None;
        Poll::Ready(Some(Err(RequestBodyError::Cut(cut))))
    }
}

#[derive(Debug)]
struct Slot {
    reading: Mutex<Reading>,
    started: AtomicBool,
}

/// Where a request body's upload stands, for the response timeout (which
/// counts from the end of the upload, or from its last progress, rather
/// than from its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// No body, or none of it asked for yet.
    Idle,
    /// Read to its end at this time.
    Done(Instant),
    /// Being read; the last data arrived (or reading began) at this time.
    Streaming(Instant),
    /// The proxy cut it off.
    Cut(BodyCut),
    /// The client's body broke off: closed before its end, or malformed.
    Failed,
}

/// The client's request body, shared with the proxy so an unread body can be
/// handed to the next attempt.
///
/// A request without a body (most GETs) shares nothing: it needs no slot,
/// so it costs no allocation and no lock.
#[derive(Debug)]
pub struct RequestBody {
    /// `None` when the request has no body.
    slot: Option<Arc<Slot>>,
    size_hint: SizeHint,
    end_stream: bool,
    limits: BodyLimits,
}

impl RequestBody {
    /// Wraps the client's body, read under `limits`.
    pub fn new(body: ClientBody, limits: BodyLimits) -> Self {
        let size_hint = body.size_hint();
        let end_stream = body.is_end_stream();
        let slot = (!end_stream).then(|| {
            Arc::new(Slot {
                reading: Mutex::new(Reading {
                    body: Some(body),
                    received: 0,
                    window_end: None,
                    window_bytes: 0,
                    handed_at: None,
                    timer: None,
                    cut: None,
                    finished_at: None,
                    client_failed: false,
                    progress_at: None,
                }),
                started: AtomicBool::new(false),
            })
        });
        Self {
            slot,
            size_hint,
            end_stream,
            limits,
        }
    }

    /// A handle for the same body, to retry with after a failed attempt.
    /// `None` once any of the body was read (it cannot be replayed).
    pub fn reclaim(&self) -> Option<RequestBody> {
        if self.was_read() && !self.end_stream {
            return None;
        }
        Some(Self {
            slot: self.slot.clone(),
            size_hint: self.size_hint,
            end_stream: self.end_stream,
            limits: self.limits,
        })
    }

    /// Whether any attempt has started reading the body (so it may have
    /// reached a backend).
    pub fn was_read(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| s.started.load(Ordering::Acquire))
    }

    /// Whether the body carries no data at all.
    pub fn is_empty(&self) -> bool {
        self.end_stream
    }

    /// Where the upload stands.
    pub fn upload(&self) -> Upload {
        let Some(slot) = self.slot.as_ref() else {
            return Upload::Idle;
        };
        let reading = slot.reading.lock().unwrap_or_else(|e| e.into_inner());
        if reading.client_failed {
            return Upload::Failed;
        }
        match (reading.cut, reading.finished_at, reading.progress_at) {
            (Some(cut), _, _) => Upload::Cut(cut),
            (None, Some(at), _) => Upload::Done(at),
            (None, None, Some(at)) => Upload::Streaming(at),
            (None, None, None) => Upload::Idle,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let Some(slot) = self.slot.as_ref() else {
            return Poll::Ready(None);
        };
        slot.started.store(true, Ordering::Release);
        let mut reading = slot.reading.lock().unwrap_or_else(|e| e.into_inner());
        reading.poll(cx, &self.limits)
    }

    fn is_end_stream(&self) -> bool {
        self.end_stream
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

pin_project_lite::pin_project! {
    /// A response body: streamed from upstream, or produced locally.
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub enum ProxyBody {
        /// The backend's body; the guard counts the backend in flight until done.
        Upstream {
            #[pin]
            body: UpstreamBody,
            guard: Option<InFlightGuard>,
            // The cluster's admission slot, freed with the guard.
            permit: Option<crate::admission::Permit>,
        },
        /// A response generated by the proxy.
        Local {
            #[pin]
            body: Full<Bytes>,
        },
        /// Another body, counted for the listener's access log; the entry
        /// is written when this body is dropped.
        Logged {
            body: Pin<Box<ProxyBody>>,
            entry: Box<crate::access_log::Pending>,
        },
    }
}

impl ProxyBody {
    /// The backend's streamed body, keeping `guard` alive until it ends.
    pub fn upstream(body: impl Into<UpstreamBody>, guard: InFlightGuard) -> Self {
        ProxyBody::Upstream {
            body: body.into(),
            guard: Some(guard),
            permit: None,
        }
    }

    /// The backend's answer fields as it sent them, when they were not read
    /// into the answer's header map (see [`crate::upstream::Upstream::send`]).
    pub fn raw_fields(&self) -> Option<&crate::upstream::h1::RawFields> {
        match self {
            ProxyBody::Upstream { body, .. } => body.raw_fields(),
            ProxyBody::Local { .. } => None,
            ProxyBody::Logged { body, .. } => body.raw_fields(),
        }
    }

    /// `body`, counted for the access log `entry`.
    pub fn logged(body: ProxyBody, mut entry: Box<crate::access_log::Pending>) -> Self {
        // An empty body may never be polled.
        if body.is_end_stream() {
            entry.finished();
        }
        ProxyBody::Logged {
            body: Box::pin(body),
            entry,
        }
    }

    /// Keeps the cluster's admission `permit` until the body ends (a local
    /// body has already ended: the permit is released at once).
    pub fn with_permit(mut self, permit: Option<crate::admission::Permit>) -> Self {
        if let ProxyBody::Upstream { permit: slot, .. } = &mut self {
            *slot = permit;
        }
        self
    }

    /// Whether the proxy made this body itself.
    pub fn is_local(&self) -> bool {
        matches!(self, ProxyBody::Local { .. })
    }

    /// A small local body.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local {
            body: Full::new(bytes.into()),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ProxyBodyProj::Upstream {
                mut body,
                guard,
                permit,
            } => {
                let poll = body.as_mut().poll_frame(cx);
                // The body's end frees its backend's in-flight count and
                // the admission slot; its connection goes back to the pool
                // by itself ([`crate::upstream::h1::ResponseBody`]).
                if matches!(poll, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    guard.take();
                    permit.take();
                }
                poll
            }
            ProxyBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ProxyBodyProj::Logged { body, entry } => {
                let poll = body.as_mut().poll_frame(cx);
                match &poll {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            entry.sent(data.len());
                        }
                        // A server may stop polling once the body says it
                        // has ended (HTTP/2 sends END_STREAM then).
                        if body.is_end_stream() {
                            entry.finished();
                        }
                    }
                    Poll::Ready(None) => entry.finished(),
                    _ => {}
                }
                poll
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
            ProxyBody::Logged { body, .. } => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
            ProxyBody::Logged { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_ask_rate_times_window_and_at_least_one_byte() {
        let l = BodyLimits::new(10, Duration::from_secs(60), 1024);
        assert_eq!(l.min_per_window, 61_440);
        assert_eq!(l.window, Duration::from_secs(60));
        assert_eq!(
            BodyLimits::new(10, Duration::from_secs(5), 0).min_per_window,
            1
        );
        assert_eq!(
            BodyLimits::new(10, Duration::from_millis(500), 3).min_per_window,
            2
        );
        // An absurd body_timeout is clamped, so deadlines never overflow.
        let far = BodyLimits::new(10, Duration::MAX, 1);
        assert_eq!(far.window, MAX_BODY_WINDOW);
        let _ = Instant::now() + far.window;
    }
}
