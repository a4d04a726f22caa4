//! Listeners: bound sockets, accept loops, client connections, shutdown.
//!
//! Each HTTP listener accepts connections up to its `max_connections`
//! (further clients wait in the kernel's accept queue), serves HTTP/1.1 and
//! HTTP/2 with prior knowledge on the same port, and enforces the header
//! read timeout, header size and count limits. A connection with no bytes
//! moving in either direction for `idle_timeout` is closed gracefully
//! (requests in flight still finish).
//!
//! Shutdown stops accepting, asks every connection to finish its current
//! requests and close, and waits up to a grace period.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fulcrum_config::{ListenerConfig, Protocol};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::http::{handle, ConnInfo};
use crate::state::Runtime;

/// Why the proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener's address could not be bound.
    #[error("listener `{listener}`: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// Address from the configuration.
        address: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// A running proxy: its listeners and the shared [`Runtime`].
#[derive(Debug)]
pub struct Server {
    runtime: Arc<Runtime>,
    bound: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    /// Every connection task and accept loop holds a sender; when all are
    /// dropped, everything has finished.
    alive: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl Server {
    /// Binds every listener of the runtime's configuration and starts serving.
    ///
    /// Binding is all-or-nothing: if one address cannot be bound, nothing is
    /// served and the error names the listener and the address.
    pub async fn start(runtime: Arc<Runtime>) -> Result<Server, ServeError> {
        let config = runtime.config();
        let mut sockets = Vec::new();
        for l in config.listeners.iter().filter(|l| l.protocol == Protocol::Http) {
            let socket = TcpListener::bind(l.bind).await.map_err(|source| ServeError::Bind {
                listener: l.name.clone(),
                address: l.bind,
                source,
            })?;
            sockets.push((l.clone(), socket));
        }
        let (shutdown, _) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        let mut bound = Vec::new();
        for (config, socket) in sockets {
            let addr = socket.local_addr().expect("bound socket has an address");
            tracing::info!(listener = %config.name, address = %addr, "listening (http)");
            bound.push((config.name.clone(), addr));
            tokio::spawn(accept_loop(
                socket,
                config,
                Arc::clone(&runtime),
                shutdown.subscribe(),
                alive.clone(),
            ));
        }
        Ok(Server {
            runtime,
            bound,
            shutdown,
            alive,
            done,
        })
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|(n, _)| n == listener).map(|(_, a)| *a)
    }

    /// All bound listeners, by name.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.bound
    }

    /// The running configuration.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`,
    /// then returns. Returns `true` if everything finished within the grace period.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let Server {
            shutdown,
            alive,
            mut done,
            ..
        } = self;
        let _ = shutdown.send(true);
        drop(alive);
        tokio::time::timeout(grace, done.recv()).await.is_ok()
    }
}

async fn accept_loop(
    socket: TcpListener,
    config: ListenerConfig,
    runtime: Arc<Runtime>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    let limits = config.limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            listener: Arc::clone(&name),
            peer,
            tls: false,
        };
        let runtime = Arc::clone(&runtime);
        let builder = Arc::clone(&builder);
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            serve_connection(stream, info, runtime, &builder, shutdown, idle).await;
            drop(permit);
            drop(alive);
        });
    }
    tracing::debug!(listener = %name, "stopped accepting");
}

async fn serve_connection(
    stream: TcpStream,
    info: ConnInfo,
    runtime: Arc<Runtime>,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |req| {
        let runtime = Arc::clone(&runtime);
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(runtime, info, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut ticker = tokio::time::interval(idle);
    ticker.tick().await;
    let mut seen = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "client connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = ticker.tick(), if !closing => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                seen = now;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A socket that counts read and write calls that moved bytes, so the
    /// idle check needs no clock reads on the data path.
    struct ActivityIo {
        #[pin]
        inner: TcpStream,
        activity: Arc<AtomicU64>,
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
