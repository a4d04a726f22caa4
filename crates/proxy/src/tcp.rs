//! L4 TCP: one client connection, one backend connection, bytes both ways.
//!
//! ```text
//! accept (max_connections) -> [PROXY header from a trusted peer]
//!   -> [TLS termination | ClientHello SNI peek for passthrough routing]
//!   -> cluster (SNI route or the listener's) -> Selector pick (key: client IP)
//!   -> connect (connect_timeout; a failed connect tries another backend,
//!      nothing has been sent yet) -> [PROXY header to the backend]
//!   -> bytes already read -> forward both ways until both sides end
//! ```
//!
//! Forwarding keeps half-close: a client that shuts its write side sends a
//! FIN to the backend and still reads the reply. A connection with no bytes
//! moving for the listener's `idle_timeout` is closed. On Linux plain TCP is
//! forwarded with `splice(2)` ([`crate::splice`]), elsewhere and for TLS
//! with tokio's user-space copy.
//!
//! The backend's in-flight count (its Load) is held by an RAII guard for
//! the whole connection, so least-conn and P2C see L4 connections exactly
//! as they see HTTP requests; the connect time feeds the latency average.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fulcrum_balance::{BackendId, InFlightGuard, Outcome, PickContext};
use fulcrum_config::ListenerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::clock;
use crate::proxy_protocol;
use crate::sni::{self, Sni};
use crate::state::{ClusterSnapshot, Runtime, Snapshot};
use crate::tls::TlsTerminator;

/// Most backends one connection tries, as for HTTP requests: two dead
/// backends are ridden out without one client hammering a whole cluster.
const MAX_ATTEMPTS: usize = 3;

/// Why an L4 connection was not forwarded.
#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    /// The listener or its cluster is gone (a reload removed it).
    #[error("listener `{listener}`: no cluster for this connection")]
    NoCluster {
        /// Listener name.
        listener: String,
    },
    /// Every backend was tried or none is usable.
    #[error("cluster `{cluster}`: no backend could be reached{last}")]
    NoBackend {
        /// Cluster name.
        cluster: String,
        /// The last connect error, if any (`: backend ...: reason`).
        last: String,
    },
    /// A PROXY header from a peer not in `proxy_protocol_from`, or malformed.
    #[error("client {client}: {reason}")]
    ProxyHeader {
        /// The socket peer.
        client: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The client's first bytes were not a ClientHello (SNI routing).
    #[error("client {client}: {reason}")]
    ClientHello {
        /// The socket peer.
        client: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The client or backend socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The accept loop of one tcp listener.
pub(crate) async fn accept_loop(
    socket: TcpListener,
    config: ListenerConfig,
    runtime: Arc<Runtime>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    tls: Option<Arc<TlsTerminator>>,
) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let runtime = Arc::clone(&runtime);
        let name = Arc::clone(&name);
        let alive = alive.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, peer, &name, &runtime, tls.as_deref()).await {
                tracing::debug!(listener = %name, client = %peer, error = %e, "tcp connection ended");
            }
            drop(permit);
            drop(alive);
        });
    }
    tracing::debug!(listener = %name, "stopped accepting");
}

/// Serves one client connection to its end.
async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    listener: &str,
    runtime: &Runtime,
    tls: Option<&TlsTerminator>,
) -> Result<(), L4Error> {
    // An owned Arc, not a guard: the connection may wait on its client for a while.
    let snapshot = arc_swap::Guard::into_inner(runtime.snapshot());
    let config = &snapshot
        .listeners
        .get(listener)
        .ok_or_else(|| L4Error::NoCluster {
            listener: listener.to_owned(),
        })?
        .config;
    let limits = config.limits.clone();
    let local = client.local_addr()?;
    // The addresses announced to backends: the socket's, or a trusted PROXY header's.
    let (mut source, mut destination) = (peer, local);
    if config.accept_proxy_protocol {
        if !config
            .proxy_protocol_from
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            return Err(L4Error::ProxyHeader {
                client: peer,
                reason: "PROXY header expected but the peer is not in proxy_protocol_from".into(),
            });
        }
        let header = tokio::time::timeout(
            limits.header_timeout,
            proxy_protocol::read_header(&mut client),
        )
        .await
        .map_err(|_| L4Error::ProxyHeader {
            client: peer,
            reason: "no PROXY header within header_timeout".into(),
        })?
        .map_err(|e| L4Error::ProxyHeader {
            client: peer,
            reason: e.to_string(),
        })?;
        if let proxy_protocol::Header::Proxied {
            source: s,
            destination: d,
        } = header
        {
            (source, destination) = (s, d);
        }
    }
    if let Some(tls) = tls {
        tls.refresh(runtime);
        let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(client));
        let client = handshake
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))??;
        let sni = client.get_ref().1.server_name();
        let cluster = route(&snapshot, config, sni).ok_or_else(|| L4Error::NoCluster {
            listener: listener.to_owned(),
        })?;
        drop(snapshot);
        let (mut backend, _guard) = connect(&cluster, source).await?;
        if let Some(version) = cluster.config.proxy_protocol {
            let header = proxy_protocol::encode(version, source, destination);
            backend.write_all(&header).await?;
        }
        forward_io(client, backend, limits.idle_timeout).await?;
        return Ok(());
    }
    // Bytes read from the client before the backend was chosen.
    let mut prefix = Vec::new();
    let cluster = if config.sni_routes.is_empty() {
        route(&snapshot, config, None)
    } else {
        let name = tokio::time::timeout(limits.header_timeout, read_sni(&mut client, &mut prefix))
            .await
            .map_err(|_| L4Error::ClientHello {
                client: peer,
                reason: "no ClientHello within header_timeout".into(),
            })?
            .map_err(|reason| L4Error::ClientHello {
                client: peer,
                reason,
            })?;
        route(&snapshot, config, name.as_deref())
    }
    .ok_or_else(|| L4Error::NoCluster {
        listener: listener.to_owned(),
    })?;
    drop(snapshot);

    let (mut backend, _guard) = connect(&cluster, source).await?;
    if let Some(version) = cluster.config.proxy_protocol {
        let header = proxy_protocol::encode(version, source, destination);
        backend.write_all(&header).await?;
    }
    if !prefix.is_empty() {
        backend.write_all(&prefix).await?;
    }
    forward(client, backend, limits.idle_timeout).await?;
    Ok(())
}

/// The cluster for a connection: the first SNI route matching `sni`, else
/// the listener's cluster.
fn route(
    snapshot: &Snapshot,
    config: &ListenerConfig,
    sni: Option<&str>,
) -> Option<Arc<ClusterSnapshot>> {
    let name = sni
        .and_then(|n| {
            let n = n.to_ascii_lowercase();
            config.sni_routes.iter().find(|r| r.sni.matches(&n))
        })
        .map(|r| &r.cluster)
        .or(config.cluster.as_ref())?;
    snapshot.clusters.get(name).cloned()
}

/// Reads until the ClientHello's server name is known; what was read stays in `prefix`.
async fn read_sni(client: &mut TcpStream, prefix: &mut Vec<u8>) -> Result<Option<String>, String> {
    use tokio::io::AsyncReadExt;
    loop {
        match sni::parse(prefix) {
            Ok(Sni::Name(n)) => return Ok(Some(n)),
            Ok(Sni::Absent) => return Ok(None),
            Ok(Sni::Need(n)) => {
                if prefix.len() + n > sni::MAX_CLIENT_HELLO + 4096 {
                    return Err("ClientHello too large".into());
                }
                prefix.reserve(n.max(2048));
                if client.read_buf(prefix).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed before the ClientHello was complete".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Picks a backend and connects, trying others on connect failure.
async fn connect(
    cluster: &ClusterSnapshot,
    client: SocketAddr,
) -> Result<(TcpStream, InFlightGuard), L4Error> {
    let key = Some(client_key(client));
    let mut rng = fastrand::Rng::new();
    let mut tried = [BackendId(0); MAX_ATTEMPTS];
    let mut attempts = 0;
    let mut last = String::new();
    let decay = cluster.selector_config.decay;
    while attempts < MAX_ATTEMPTS {
        let mut ctx = PickContext {
            client: None,
            now: clock::now(),
            key,
            rng: &mut rng,
            exclude: &tried[..attempts],
            ignore_health: false,
        };
        // Out of healthy backends, fall back to the enabled ones (health
        // ignored): a dead backend not yet marked down costs a retry.
        let Some(id) = fulcrum_balance::selector::pick_or_fall_back(
            cluster.selector.as_ref(),
            &cluster.set,
            &mut ctx,
            None,
        ) else {
            break;
        };
        tried[attempts] = id;
        attempts += 1;
        let backend = cluster.set.get(id);
        let guard = backend.state.load.start();
        let started = Instant::now();
        let result = tokio::time::timeout(
            cluster.config.connect_timeout,
            TcpStream::connect(backend.address.as_str()),
        )
        .await;
        let finished = clock::now();
        let latency = finished.saturating_sub(clock::at(started));
        match result {
            Ok(Ok(stream)) => {
                backend
                    .state
                    .load
                    .observe(finished, latency, Outcome::Success, decay);
                let _ = stream.set_nodelay(true);
                return Ok((stream, guard));
            }
            Ok(Err(e)) => last = format!(": backend {}: {e}", backend.address),
            Err(_) => last = format!(": backend {}: connect timed out", backend.address),
        }
        backend
            .state
            .load
            .observe(finished, latency, Outcome::Failure, decay);
        tracing::debug!(cluster = %cluster.name(), backend = %backend.address, "connect failed{last}");
    }
    Err(L4Error::NoBackend {
        cluster: cluster.name().to_owned(),
        last,
    })
}

/// The hash key of a connection: its client's IP, hashed as the HTTP path
/// hashes `client-ip`, so one client lands on the same backend over L4 and L7.
pub(crate) fn client_key(client: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client.ip().hash(&mut h);
    h.finish()
}

/// Forwards between a client and a backend TCP socket until both sides end
/// or nothing moves for `idle`.
pub async fn forward(client: TcpStream, backend: TcpStream, idle: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if crate::splice::available() {
        let activity = AtomicU64::new(0);
        let copy = crate::splice::copy_bidirectional(&client, &backend, &activity);
        return until_idle(copy, &activity, idle).await;
    }
    forward_io(client, backend, idle).await
}

/// Forwards between any two streams (TLS, or where splice is unavailable).
pub async fn forward_io<A, B>(a: A, b: B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: a,
        activity: Arc::clone(&activity),
    };
    let mut b = Counted {
        inner: b,
        activity: Arc::clone(&activity),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    until_idle(copy, &activity, idle).await
}

/// Runs `copy` until it finishes, or until `activity` stops changing for
/// a whole `idle` period.
async fn until_idle<T>(
    copy: impl std::future::Future<Output = io::Result<T>>,
    activity: &AtomicU64,
    idle: Duration,
) -> io::Result<()> {
    tokio::pin!(copy);
    let mut ticker = crate::clock::idle_ticker(idle);
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            r = copy.as_mut() => return r.map(|_| ()),
            _ = ticker.tick() => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
                seen = now;
            }
        }
    }
}

/// A stream that counts transfers for the idle check.
struct Counted<S> {
    inner: S,
    activity: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
