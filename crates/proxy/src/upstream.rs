//! Upstream connections: one keep-alive pool per cluster.
//!
//! Proxied requests go through [`Upstream::send`]: a small pool of HTTP/1.1
//! connections per backend authority, built directly on hyper's
//! `client::conn::http1`. A connection is checked out for one exchange and
//! comes back to the pool when the response body has been read to its end
//! ([`PooledConnection::release`]); a body that ends early (client gone,
//! upstream error) closes the connection instead. Idle connections are
//! reused newest first, at most `pool_max_idle` per backend, and are
//! dropped after `pool_idle_timeout`. New connections use `TCP_NODELAY`,
//! TCP keep-alive and the cluster's connect timeout; a cluster with `tls`
//! speaks TLS to its backends ([`crate::backend_tls`]).
//!
//! Why not hyper-util's pooled client: per request it takes a pool lock,
//! races a checkout against a lazy connect future and, whenever the
//! connection is not ready the instant the response head arrives (every
//! response with a body), spawns a task that waits to put the connection
//! back. Returning the connection from the body's end needs none of that.
//! The hyper-util client is still kept for upgrades (WebSocket), which
//! need a connection that is never pooled again.
//!
//! The pool survives reloads as long as the cluster's connection settings
//! do not change, so a reload does not cost a reconnect storm.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_config::{ClusterConfig, UpstreamTlsConfig};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::backend_tls::{BackendTls, TlsSetup, UpstreamConnector};
use crate::body::RequestBody;

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
}

impl Settings {
    fn of(cluster: &ClusterConfig) -> Self {
        Self {
            connect_timeout: cluster.connect_timeout,
            pool_idle_timeout: cluster.pool_idle_timeout,
            pool_max_idle: cluster.pool_max_idle,
            tls: cluster.tls.clone(),
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
    Exchange(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the request never left the proxy because no connection
    /// could be made (safe to send elsewhere whatever the method).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. }
        )
    }
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

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

type IdleMap = HashMap<BackendAddr, Vec<Idle>, BuildHasherDefault<PrehashedHasher>>;

#[derive(Debug)]
struct Pool {
    settings: Settings,
    idle: Mutex<IdleMap>,
}

impl Pool {
    /// The newest idle connection to `addr` that is still open.
    fn checkout(&self, addr: &BackendAddr) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.settings.pool_idle_timeout
            {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Puts a connection whose exchange is complete back, pruning closed
    /// and expired ones of the same backend.
    fn checkin(&self, addr: BackendAddr, sender: SendRequest<RequestBody>) {
        if self.settings.pool_max_idle == 0 || sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|e| {
            !e.sender.is_closed()
                && now.saturating_duration_since(e.since) < self.settings.pool_idle_timeout
        });
        if list.len() >= self.settings.pool_max_idle {
            // Keep the newest: the oldest is the likeliest to be closed
            // by the backend soon.
            list.remove(0);
        }
        list.push(Idle { sender, since: now });
    }
}

/// A connection lent to one exchange. Dropping it without
/// [`release`](Self::release) closes the connection (its response was not
/// read to the end, so it cannot carry another request).
#[derive(Debug)]
pub struct PooledConnection {
    sender: Option<SendRequest<RequestBody>>,
    addr: BackendAddr,
    pool: Arc<Pool>,
}

impl PooledConnection {
    /// The response body was read to its end: the connection goes back to
    /// the pool for the next request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(self.addr.clone(), sender);
        }
    }
}

/// A cluster's upstream connections; cheap to clone (shares the pool).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<UpstreamConnector, RequestBody>,
    connector: UpstreamConnector,
    pool: Arc<Pool>,
}

impl Upstream {
    /// A new pool for `cluster`.
    pub fn new(cluster: &ClusterConfig) -> Self {
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
            idle: Mutex::new(IdleMap::default()),
        });
        Self {
            client,
            connector,
            pool,
        }
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

    /// Sends `req` (origin-form URI, `Host` already set) to the backend at
    /// `addr` on a pooled keep-alive connection, opening one if none is idle.
    ///
    /// A pooled connection that turns out closed before the request was
    /// written is replaced by a new one, once; nothing is sent twice.
    pub async fn send(
        &self,
        addr: &BackendAddr,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConnection), UpstreamError> {
        while let Some(mut sender) = self.pool.checkout(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, self.lend(addr, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        // Boxed: opening a connection (TCP, maybe TLS, the HTTP handshake)
        // is a large future that a pooled exchange never needs, and
        // callers move this future around (it sits inside a timeout and
        // the request's future).
        Box::pin(self.send_on_new(addr, req)).await
    }

    /// Sends `req` on a new connection to `addr`.
    async fn send_on_new(
        &self,
        addr: &BackendAddr,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConnection), UpstreamError> {
        let mut sender = self.connect(addr.authority()).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok((response, self.lend(addr, sender)))
    }

    fn lend(&self, addr: &BackendAddr, sender: SendRequest<RequestBody>) -> PooledConnection {
        PooledConnection {
            sender: Some(sender),
            addr: addr.clone(),
            pool: Arc::clone(&self.pool),
        }
    }

    /// Opens a connection and starts its task.
    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
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
        match self.connector.tls() {
            None => self.handshake(stream).await,
            Some(setup) => match setup.as_ref() {
                Ok(tls) => {
                    let stream =
                        tls.connect(authority.as_str(), stream)
                            .await
                            .map_err(|source| UpstreamError::Connect {
                                authority: authority.clone(),
                                source,
                            })?;
                    self.handshake(stream).await
                }
                // The TLS files did not load: never fall back to plain text.
                Err(why) => Err(UpstreamError::Connect {
                    authority: authority.clone(),
                    source: std::io::Error::other(why.clone()),
                }),
            },
        }
    }

    /// HTTP/1.1 over an established (plain or TLS) stream.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<RequestBody>, UpstreamError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
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
