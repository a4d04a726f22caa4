//! Upstream connections: one keep-alive pool per cluster.
//!
//! Proxied requests go through [`Upstream::send`]: a small pool of HTTP/1.1
//! connections per backend authority, each driven by [`h1`] in the task of
//! the request it carries. A connection is checked out for one exchange and
//! comes back to the pool when the response body has been read to its end;
//! a body that ends early (client gone, upstream error) closes the
//! connection instead. Idle connections are reused newest first, at most
//! `pool_max_idle` per backend, and are dropped after `pool_idle_timeout`.
//! New connections use `TCP_NODELAY`, TCP keep-alive and the cluster's
//! connect timeout; a cluster with `tls` speaks TLS to its backends
//! ([`crate::backend_tls`]).
//!
//! Why not hyper's clients: hyper-util's pooled client takes a pool lock
//! per request, races a checkout against a lazy connect future and spawns
//! a task to put a connection back; under it, and under hyper's
//! `client::conn::http1`, every connection runs in a task of its own that
//! the request talks to through channels ([`h1`] says what that cost).
//! The hyper-util client is still kept for upgrades (WebSocket), which
//! need a connection that is never pooled again.
//!
//! A cluster with `http2 = true` sends its requests as streams of
//! HTTP/2 connections shared per backend instead ([`h2`]).
//!
//! The pool survives reloads as long as the cluster's connection settings
//! do not change, so a reload does not cost a reconnect storm.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fulcrum_config::{ClusterConfig, UpstreamTlsConfig};
use http::uri::Authority;
use http::{request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use crate::backend_tls::{BackendTls, TlsSetup, UpstreamConnector};
use crate::body::RequestBody;
use crate::headers::Forwarding;

pub mod h1;
pub mod h2;

use h1::{Conn, ExchangeError, Stream};

/// Idle time after which the kernel starts probing an upstream connection.
/// One minute, as hyper-util's connector was configured before: long
/// enough to cost nothing, short enough to find backends that vanished
/// without a FIN long before the pool's idle timeout would.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connection settings an [`Upstream`] was built with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    tls: Option<UpstreamTlsConfig>,
    http2: bool,
}

impl Settings {
    fn of(cluster: &ClusterConfig) -> Self {
        Self {
            connect_timeout: cluster.connect_timeout,
            pool_idle_timeout: cluster.pool_idle_timeout,
            pool_max_idle: cluster.pool_max_idle,
            tls: cluster.tls.clone(),
            http2: cluster.http2,
        }
    }
}

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (nothing was sent).
    #[error("cannot connect to {authority}")]
    Connect {
        /// The backend's address.
        authority: Authority,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Opening a connection took longer than the cluster's connect timeout.
    #[error("connecting to {authority} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The backend's address.
        authority: Authority,
        /// The cluster's `connect_timeout`.
        timeout: Duration,
    },
    /// The connection broke or the answer was not valid HTTP.
    #[error("exchange with the backend failed")]
    Exchange(#[source] ExchangeError),
    /// An HTTP/2 exchange failed.
    #[error("HTTP/2 exchange with the backend failed")]
    Http2(#[source] hyper::Error),
    /// The backend refused an HTTP/2 request without processing it
    /// (`REFUSED_STREAM`, or a `GOAWAY` before its stream).
    #[error("the backend refused the request unprocessed")]
    Refused(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the request never reached the backend's application: no
    /// connection could be made, or the backend refused it unprocessed
    /// (safe to send elsewhere whatever the method).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Refused(_)
        )
    }

    fn of_h2(error: hyper::Error) -> Self {
        if h2::refused(&error) {
            UpstreamError::Refused(error)
        } else {
            UpstreamError::Http2(error)
        }
    }
}

/// An idle connection and since when. Boxed: a connection moves with its
/// answer's body, which moves several times on its way to the client.
#[derive(Debug)]
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// A backend's idle connections, newest last.
type Idles = Vec<Idle>;

/// A backend's address as the pool knows it: the authority, and a hash of
/// it computed once when the snapshot is built.
///
/// Looking up `Authority` itself hashes it byte by byte (it is
/// case-insensitive) and compares it the same way: about 1 000
/// instructions per request for a checkout and a checkin. This key hashes
/// as one word and compares its bytes exactly: the addresses come from the
/// configuration, so equal backends are spelt alike.
#[derive(Clone, Debug)]
pub struct BackendAddr {
    authority: Authority,
    hash: u64,
}

impl BackendAddr {
    /// The key for `authority`.
    pub fn new(authority: Authority) -> Self {
        // FNV-1a: the keys are addresses from the configuration, not
        // client input, so a keyed hash buys nothing here.
        let hash = authority
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        BackendAddr { authority, hash }
    }

    /// The backend's `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl PartialEq for BackendAddr {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for BackendAddr {}

impl Hash for BackendAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`BackendAddr`]'s precomputed hash through.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `BackendAddr`; anything else still
        // hashes correctly, if slowly.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdleMap = HashMap<BackendAddr, Idles, BuildHasherDefault<PrehashedHasher>>;

#[derive(Debug)]
struct Pool {
    settings: Settings,
    /// Where connections opened are counted.
    metrics: Arc<crate::metrics::ClusterMetrics>,
    idle: Mutex<IdleMap>,
    /// The shared connections of a cluster with `http2`.
    shared: h2::Shared,
}

impl Pool {
    /// The newest idle connection to `addr` that has not expired by `now`. Whether
    /// it is still open is the caller's check ([`Conn::is_open`]), made
    /// outside the lock.
    fn checkout(&self, addr: &BackendAddr, now: Instant) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some(entry) = list.pop() {
            if now.saturating_duration_since(entry.since) < self.settings.pool_idle_timeout {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange is complete back, dropping the
    /// oldest of the same backend beyond `pool_max_idle`. Expired ones are
    /// not looked for here: a checkout never hands one out, and [`reap`]
    /// closes them within a second (checking each one here cost about 100
    /// instructions per request).
    fn checkin(&self, addr: BackendAddr, conn: Box<Conn>) {
        if self.settings.pool_max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        keep_newest(list, self.settings.pool_max_idle);
        list.push(Idle { conn, since: now });
    }
}

/// How often idle connections are checked. Nothing drives an idle
/// connection, so a backend's close would otherwise leave its socket
/// half-closed in the pool until the next request to that backend, and an
/// expired one open until then: this bounds both to about a second.
const REAP_PERIOD: Duration = Duration::from_secs(1);

/// Closes the pool's expired connections and those the backend closed,
/// every [`REAP_PERIOD`], until the pool is dropped (a reload that changed
/// the cluster's connection settings, or the cluster's removal).
async fn reap(pool: std::sync::Weak<Pool>) {
    let mut ticker = crate::clock::idle_ticker(REAP_PERIOD);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let timeout = pool.settings.pool_idle_timeout;
        pool.shared.reap(now, timeout);
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain_mut(|e| {
                now.saturating_duration_since(e.since) < timeout && e.conn.is_open()
            });
            !list.is_empty()
        });
    }
}

/// Makes room for one more in `list` (at most `max`), dropping the oldest:
/// the likeliest to be closed by the backend soon.
fn keep_newest(list: &mut Vec<Idle>, max: usize) {
    if list.len() >= max {
        let excess = list.len() + 1 - max;
        list.drain(..excess);
    }
}

/// Where a connection goes back to when its answer's body ends.
#[derive(Debug)]
pub struct Lease {
    addr: BackendAddr,
    pool: Arc<Pool>,
}

impl Lease {
    /// `conn` has read its answer to the end and may carry the next request.
    fn give_back(self, conn: Box<Conn>) {
        self.pool.checkin(self.addr, conn);
    }
}

/// A backend's answer body, from either kind of connection.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Read by hyper's client (upgrades).
    Hyper(Incoming),
    /// A stream of a shared HTTP/2 connection ([`h2`]); the slot is given
    /// back when the body is dropped.
    Http2(Incoming, h2::StreamSlot),
    /// Read by [`h1`] in the request's task.
    Own(h1::ResponseBody),
}

/// An error reading an answer's body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    /// Whether the answer's hop-by-hop fields were left out as its head was
    /// read (then [`crate::headers::remove_hop_by_hop`] has nothing to do).
    pub fn hop_by_hop_removed(&self) -> bool {
        match self {
            UpstreamBody::Hyper(_) | UpstreamBody::Http2(..) => false,
            UpstreamBody::Own(b) => b.hop_by_hop_removed(),
        }
    }

    /// The answer's fields as the backend sent them, when they were not
    /// read into its header map ([`Upstream::send`] with `raw`).
    pub fn raw_fields(&self) -> Option<&h1::RawFields> {
        match self {
            UpstreamBody::Hyper(_) | UpstreamBody::Http2(..) => None,
            UpstreamBody::Own(b) => b.raw_fields(),
        }
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Hyper(body)
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) | UpstreamBody::Http2(b, _) => {
                Pin::new(b).poll_frame(cx).map_err(Into::into)
            }
            UpstreamBody::Own(b) => Pin::new(b).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) | UpstreamBody::Http2(b, _) => b.is_end_stream(),
            UpstreamBody::Own(b) => b.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Hyper(b) | UpstreamBody::Http2(b, _) => b.size_hint(),
            UpstreamBody::Own(b) => b.size_hint(),
        }
    }
}

/// Methods safe to send twice (RFC 9110 §9.2.2): a retry after the
/// backend may have seen the request cannot do harm.
pub(crate) fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A cluster's upstream connections; cheap to clone (shares the pool).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<UpstreamConnector, RequestBody>,
    connector: UpstreamConnector,
    pool: Arc<Pool>,
}

impl Upstream {
    /// A new pool for `cluster`, counting the connections it opens in
    /// `metrics`.
    pub fn new(cluster: &ClusterConfig, metrics: Arc<crate::metrics::ClusterMetrics>) -> Self {
        let settings = Settings::of(cluster);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        let tls = cluster.tls.as_ref().map(|t| {
            BackendTls::new(t, settings.connect_timeout).map_err(|e| {
                tracing::error!(cluster = %cluster.name, error = %e, "cannot set up TLS to backends; connects will fail");
                format!("cluster `{}`: tls: {e}", cluster.name)
            })
        });
        let connector = UpstreamConnector::new(connector, tls);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .retry_canceled_requests(false)
            .set_host(false)
            .build(connector.clone());
        let pool = Arc::new(Pool {
            settings,
            metrics,
            idle: Mutex::new(IdleMap::default()),
            shared: h2::Shared::default(),
        });
        // Outside a runtime (unit tests that only build snapshots) there is
        // nothing to reap: no connection can have been opened.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&pool)));
        }
        Self {
            client,
            connector,
            pool,
        }
    }

    /// Idle HTTP/1.1 connections kept for reuse.
    pub fn idle_connections(&self) -> usize {
        let idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// Shared HTTP/2 connections kept.
    pub fn shared_connections(&self) -> usize {
        self.pool.shared.count()
    }

    /// Whether this pool was built with `cluster`'s current settings.
    pub fn matches(&self, cluster: &ClusterConfig) -> bool {
        self.pool.settings == Settings::of(cluster)
    }

    /// The TLS setup to backends: `None` without `tls`, `Err` if it failed to load.
    pub fn tls(&self) -> Option<&TlsSetup> {
        self.connector.tls()
    }

    /// The hyper-util client (absolute-form URIs), for exchanges that never
    /// return their connection to a pool, such as upgrades.
    #[inline]
    pub fn client(&self) -> &Client<UpstreamConnector, RequestBody> {
        &self.client
    }

    /// Sends a request (origin-form URI, `Host` already set) to the
    /// backend at `addr` on a pooled keep-alive connection, opening one if
    /// none is idle.
    ///
    /// A pooled connection found closed is replaced by a new one; so is one
    /// closed before any byte of an answer to an idempotent request without
    /// a body (the keep-alive race: the backend closed it as the request
    /// left). Nothing else is sent twice. `now` is the time of the attempt
    /// (the caller has read the clock already). `forwarding`: the proxy's
    /// forwarding fields, written after `head`'s when they are not in its
    /// map ([`Forwarding`]). `raw`: the answer's fields
    /// may stay as the backend's bytes, out of its header map
    /// ([`h1::parse_head`]); only a caller that passes the answer to an
    /// HTTP/1 client untouched may ask for that.
    pub async fn send(
        &self,
        addr: &BackendAddr,
        head: &request::Parts,
        forwarding: Option<&Forwarding>,
        body: RequestBody,
        now: Instant,
        raw: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if self.pool.settings.http2 {
            return Box::pin(self.send_h2(addr, head, forwarding, body, now)).await;
        }
        let retry_on_race = body.is_empty() && is_idempotent(&head.method);
        let mut body = Some(body);
        while let Some(mut conn) = self.pool.checkout(addr, now) {
            if !conn.is_open() {
                continue;
            }
            let Some(this) = body.take() else { break };
            let spare = retry_on_race.then(|| this.reclaim()).flatten();
            match conn.exchange(head, forwarding, this, raw).await {
                Ok(answer) => return Ok(self.answer(addr, conn, answer)),
                Err(e) if e.closed_before_answer() && spare.is_some() => {
                    tracing::trace!(backend = %addr.authority(), error = %e, "pooled connection closed by the backend; retrying on another");
                    body = spare;
                }
                Err(e) => return Err(UpstreamError::Exchange(e)),
            }
        }
        let Some(body) = body else {
            unreachable!("a body is taken only by an attempt that then returns or gives it back")
        };
        // Boxed: opening a connection is a large future that a pooled
        // exchange never needs, and callers move this future around.
        let stream = Box::pin(self.open(addr.authority(), false)).await?;
        let mut conn = Box::new(Conn::new(stream));
        let answer = conn
            .exchange(head, forwarding, body, raw)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(self.answer(addr, conn, answer))
    }

    /// [`Upstream::send`] for a cluster with `http2`: on one of the
    /// backend's shared connections with a stream to spare, opening one if
    /// there is none. A request a shared connection did not send (it had
    /// closed), or sent after the backend's `GOAWAY` and whose body is
    /// still whole, goes on a new one: HTTP/2's form of the keep-alive
    /// race.
    async fn send_h2(
        &self,
        addr: &BackendAddr,
        head: &request::Parts,
        forwarding: Option<&Forwarding>,
        body: RequestBody,
        now: Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let scheme = if self.pool.settings.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let spare = body.reclaim();
        let mut request = h2::request(head, forwarding, body, scheme.clone(), addr);
        if let Some((mut sender, slot)) = self.pool.shared.checkout(addr, now) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(|b| UpstreamBody::Http2(b, slot))),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = e.into_error();
                    let again = match unsent {
                        Some(unsent) => Some(unsent),
                        None if h2::going_away(&error) => spare
                            .as_ref()
                            .and_then(RequestBody::reclaim)
                            .map(|b| h2::request(head, forwarding, b, scheme, addr)),
                        None => None,
                    };
                    let Some(again) = again else {
                        return Err(UpstreamError::of_h2(error));
                    };
                    tracing::trace!(backend = %addr.authority(), %error, "shared HTTP/2 connection closing; opening another");
                    request = again;
                }
            }
        }
        let (mut sender, limit) = self.open_h2(addr).await?;
        let slot = self.pool.shared.offer(addr, &sender, limit, now);
        sender
            .send_request(request)
            .await
            .map(|response| response.map(|b| UpstreamBody::Http2(b, slot)))
            .map_err(UpstreamError::of_h2)
    }

    /// Opens an HTTP/2 connection to `addr` and starts its task: the
    /// handle that sends on it, and its stream limit as the task keeps it
    /// up to date ([`h2::serve`]).
    async fn open_h2(
        &self,
        addr: &BackendAddr,
    ) -> Result<
        (
            hyper::client::conn::http2::SendRequest<RequestBody>,
            Arc<std::sync::atomic::AtomicUsize>,
        ),
        UpstreamError,
    > {
        let stream = self.open(addr.authority(), true).await?;
        let initial_limit = self.pool.shared.known_limit(addr);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_max_send_streams(initial_limit)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect {
                authority: addr.authority().clone(),
                source: std::io::Error::other(e),
            })?;
        let authority = addr.authority().clone();
        let limit = Arc::new(std::sync::atomic::AtomicUsize::new(initial_limit));
        let published = Arc::clone(&limit);
        tokio::spawn(async move {
            if let Err(e) = h2::serve(conn, published).await {
                tracing::debug!(backend = %authority, error = %e, "HTTP/2 connection to a backend ended");
            }
        });
        Ok((sender, limit))
    }

    /// The response to an exchange: its body owns the connection.
    fn answer(
        &self,
        addr: &BackendAddr,
        conn: Box<Conn>,
        mut head: h1::Head,
    ) -> Response<UpstreamBody> {
        let lease = Lease {
            addr: addr.clone(),
            pool: Arc::clone(&self.pool),
        };
        let body = h1::ResponseBody::new(conn, &mut head, lease);
        Response::from_parts(head.parts, UpstreamBody::Own(body))
    }

    /// Opens a connection (TCP, then TLS if the cluster has `tls`,
    /// offering `h2` by ALPN when `h2`).
    async fn open(&self, authority: &Authority, h2: bool) -> Result<Stream, UpstreamError> {
        let timeout = self.pool.settings.connect_timeout;
        let stream =
            match tokio::time::timeout(timeout, TcpStream::connect(authority.as_str())).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(UpstreamError::Connect {
                        authority: authority.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(UpstreamError::ConnectTimeout {
                        authority: authority.clone(),
                        timeout,
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        let stream = self.handshake(authority, stream, h2).await?;
        self.pool.metrics.connections_opened[usize::from(h2)].fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// TLS over `stream` if the cluster has `tls`.
    async fn handshake(
        &self,
        authority: &Authority,
        stream: TcpStream,
        h2: bool,
    ) -> Result<Stream, UpstreamError> {
        match self.connector.tls() {
            None => Ok(Stream::Plain(stream)),
            Some(setup) => match setup.as_ref() {
                Ok(tls) => {
                    let handshake = if h2 {
                        tls.connect_h2(authority.as_str(), stream).await
                    } else {
                        tls.connect(authority.as_str(), stream).await
                    };
                    let stream = handshake.map_err(|source| UpstreamError::Connect {
                        authority: authority.clone(),
                        source,
                    })?;
                    Ok(Stream::Tls(Box::new(stream)))
                }
                // The TLS files did not load: never fall back to plain text.
                Err(why) => Err(UpstreamError::Connect {
                    authority: authority.clone(),
                    source: std::io::Error::other(why.clone()),
                }),
            },
        }
    }
}

#[cfg(target_os = "linux")]
fn set_keepalive(stream: &TcpStream) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(stream, true);
    let _ = sockopt::set_tcp_keepidle(stream, TCP_KEEPALIVE);
}

#[cfg(not(target_os = "linux"))]
fn set_keepalive(_stream: &TcpStream) {}
