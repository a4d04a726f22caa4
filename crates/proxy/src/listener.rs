//! Listeners: bound sockets, accept loops, client connections, shutdown.
//!
//! Each HTTP listener accepts connections up to its `max_connections`
//! (further clients wait in the kernel's accept queue), serves HTTP/1.1 and
//! HTTP/2 with prior knowledge on the same port, and enforces the header
//! timeout, header size and count limits. A connection with no bytes
//! moving in either direction for `idle_timeout` is closed gracefully
//! (requests in flight still finish).
//!
//! The two timers count different things, as HAProxy's `timeout
//! http-request` and `timeout http-keep-alive` do. `header_timeout` bounds
//! the wait for a new connection's first bytes (from accept) and one
//! HTTP/1 request head from the moment the server first waits for the rest
//! of it to the read that completes it (a slowloris trickling a head is
//! closed), and `idle_timeout` alone bounds a kept-alive connection
//! waiting for its next request: the HTTP/1 server (`http::server`) times
//! only a head of which some bytes have arrived. HTTP/2 has no request heads of this kind (its
//! frames are bounded by h2's own limits).
//!
//! Shutdown stops accepting, asks every connection to finish its current
//! requests and close, and waits up to a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use fulcrum_config::{HttpLimits, ListenerConfig, Protocol};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::client_socket::{ClientSocket, TlsTcp};
use crate::http::server::{self, ClientBody};
use crate::http::{handle, ConnInfo};
use crate::listener_set::ListenerSet;
use crate::state::Runtime;
use crate::tls::TlsTerminator;

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
    /// A listener's certificates could not be loaded.
    #[error("listener `{listener}`: tls: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What failed.
        source: crate::tls::TlsError,
    },
}

/// A running proxy: its listeners and the shared [`Runtime`].
#[derive(Debug)]
pub struct Server {
    runtime: Arc<Runtime>,
    bound: Vec<(String, SocketAddr)>,
    /// The listeners running now (changes with reloads).
    live: Arc<ListenerSet>,
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
        for l in config
            .listeners
            .iter()
            .filter(|l| l.protocol != Protocol::Udp)
        {
            let socket = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServeError::Bind {
                    listener: l.name.clone(),
                    address: l.bind,
                    source,
                })?;
            set_options(&socket, l);
            let tls = TlsTerminator::new(l, runtime.snapshot().generation)
                .map_err(|source| ServeError::Tls {
                    listener: l.name.clone(),
                    source,
                })?
                .map(Arc::new);
            sockets.push((l.clone(), socket, tls));
        }
        let mut datagram_sockets = Vec::new();
        for l in config
            .listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Udp)
        {
            let socket = tokio::net::UdpSocket::bind(l.bind)
                .await
                .map_err(|source| ServeError::Bind {
                    listener: l.name.clone(),
                    address: l.bind,
                    source,
                })?;
            datagram_sockets.push((l.clone(), socket));
        }
        let (shutdown, _) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        tokio::spawn(crate::health::supervise(
            Arc::clone(&runtime),
            shutdown.subscribe(),
        ));
        let mut bound = Vec::new();
        let live = Arc::new(ListenerSet::default());
        for (config, socket, tls) in sockets {
            let name = config.name.clone();
            if config.protocol == Protocol::Tcp {
                // L4 listeners are bound at start; reloads apply to their
                // clusters but do not add, move or remove them.
                let addr = socket.local_addr().expect("bound socket has an address");
                tracing::info!(listener = %name, address = %addr, protocol = "tcp", "listening");
                bound.push((name, addr));
                tokio::spawn(crate::tcp::accept_loop(
                    socket,
                    config,
                    Arc::clone(&runtime),
                    shutdown.subscribe(),
                    alive.clone(),
                    tls,
                ));
                continue;
            }
            let addr = live.start(socket, config, tls, &runtime, &shutdown, &alive);
            bound.push((name, addr));
        }
        for (config, socket) in datagram_sockets {
            let addr = socket.local_addr().expect("bound socket has an address");
            tracing::info!(listener = %config.name, address = %addr, protocol = "udp", "listening");
            bound.push((config.name.clone(), addr));
            tokio::spawn(crate::udp::serve(
                socket,
                config,
                Arc::clone(&runtime),
                shutdown.subscribe(),
                alive.clone(),
            ));
        }
        tokio::spawn(Arc::clone(&live).supervise(
            Arc::clone(&runtime),
            shutdown.clone(),
            alive.clone(),
        ));
        Ok(Server {
            runtime,
            bound,
            live,
            shutdown,
            alive,
            done,
        })
    }

    /// The address a listener is bound to now (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.live
            .addresses()
            .into_iter()
            .chain(self.bound.iter().cloned())
            .find(|(n, _)| n == listener)
            .map(|(_, a)| a)
    }

    /// The listeners bound at start, by name (see [`Server::live_listeners`]
    /// for the set after reloads).
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.bound
    }

    /// The listeners running now; follows reloads.
    pub fn live_listeners(&self) -> &Arc<ListenerSet> {
        &self.live
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

/// Accepts connections until shutdown or until `settings` says `None`
/// (listener removed); a new `Some(config)` changes the limits of new
/// connections. Its connections are asked to close when it returns.
pub(crate) async fn accept_loop(
    socket: TcpListener,
    mut settings: watch::Receiver<Option<ListenerConfig>>,
    runtime: Arc<Runtime>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    tls: Option<Arc<TlsTerminator>>,
) {
    // Connections watch this; it flips (or is dropped) when accepting stops.
    let (closing, closing_rx) = watch::channel(false);
    loop {
        let Some(config) = settings.borrow_and_update().clone() else {
            break;
        };
        let stopped = tokio::select! {
            _ = accept_with(&socket, &config, &runtime, closing_rx.clone(), &alive, tls.as_ref()) => true,
            _ = shutdown.changed() => true,
            r = settings.changed() => r.is_err(),
        };
        if stopped {
            break;
        }
    }
    let _ = closing.send(true);
    tracing::debug!("stopped accepting");
}

/// Sets the listening socket's options from `config`: `defer_accept`, and
/// whether its connections start with delayed acknowledgements
/// ([`crate::client_socket`]). Called right after binding, before the listener
/// is announced, and again when a reload restarts the accept loop.
pub(crate) fn set_options(socket: &TcpListener, config: &ListenerConfig) {
    crate::defer_accept::apply(socket, config);
    crate::client_socket::apply(socket, config);
}

/// The accept loop for one set of listener settings; returns only on an
/// unrecoverable condition (never, today: errors back off and continue).
async fn accept_with(
    socket: &TcpListener,
    config: &ListenerConfig,
    runtime: &Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
    tls: Option<&Arc<TlsTerminator>>,
) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    let connections = runtime.metrics().listener(&config.name);
    let access_log = runtime.access_log(&config.name);
    let limits = config.limits.clone();
    let mut builder = Protocols {
        http1: server::Settings {
            max_head: limits.max_header_bytes,
            max_headers: limits.max_headers,
            header_timeout: limits.header_timeout,
            tls: tls.is_some(),
        },
        http2: http2::Builder::new(TokioExecutor::new()),
    };
    builder
        .http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Rapid reset (CVE-2023-44487): streams the client opens and resets
        // before they are accepted are capped, and a client that makes the
        // server reset too many streams gets GOAWAY. h2 itself bounds
        // CONTINUATION by max_header_list_size and queued SETTINGS/PING
        // acknowledgements; these two values are h2's defaults, set here so
        // they are visible and survive dependency updates.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut nodelay = NoDelay::new(socket);
    // A reload may have changed them (binding set them first).
    set_options(socket, config);
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (stream, peer) = match socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!(listener = %name, client = %peer, "refused: too many connections from this address");
            drop(stream);
            continue;
        };
        nodelay.apply(&stream);
        let mut conn = Connection {
            info: ConnInfo {
                listener: Arc::clone(&name),
                peer,
                tls: tls.is_some(),
                forwarded_for: crate::headers::forwarded_for(peer.ip()),
                client_cert: None,
                access_log: Arc::clone(&access_log),
            },
            runtime: Arc::clone(runtime),
            builder: Arc::clone(&builder),
            shutdown: shutdown.clone(),
            limits: limits.clone(),
        };
        let alive = alive.clone();
        let open = connections.accept();
        let tls = tls.cloned();
        // Boxed: tokio copies a task's future whole several times as it
        // spawns it, stores it and finishes it (about 2 400 instructions
        // for this one); a box is copied once.
        tokio::spawn(Box::pin(async move {
            match tls {
                None => serve_connection(stream, conn).await,
                // Boxed: a TLS connection's state is large, and every plain
                // connection's task would otherwise be as large (its future
                // is allocated at the size of its largest state).
                Some(tls) => {
                    Box::pin(async move {
                        tls.refresh(&conn.runtime);
                        let handshake = tls.accept(TlsTcp::new(stream));
                        match tokio::time::timeout(conn.limits.header_timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                conn.runtime.metrics().tls_handshake(true);
                                conn.info.client_cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(|leaf| crate::client_cert::describe(leaf))
                                    .map(Box::new);
                                serve_connection(stream, conn).await
                            }
                            Ok(Err(e)) => {
                                conn.runtime.metrics().tls_handshake(false);
                                tracing::debug!(client = %peer, error = %e, "tls handshake failed")
                            }
                            Err(_) => {
                                conn.runtime.metrics().tls_handshake(false);
                                tracing::debug!(client = %peer, "tls handshake timed out")
                            }
                        }
                    })
                    .await
                }
            }
            drop(open);
            drop(ip_slot);
            drop(permit);
            drop(alive);
        }));
    }
}

/// `TCP_NODELAY` for accepted connections, at the lowest cost.
///
/// Client connections get `TCP_NODELAY` (a response written in pieces is
/// not held back waiting for the client's delayed ACK). Linux copies it
/// from the listening socket to every accepted socket, so it is set once
/// on the listener, and the first accepted socket shows whether it was
/// inherited; only if not does every connection pay a `setsockopt`.
struct NoDelay {
    inherited: Option<bool>,
}

impl NoDelay {
    #[cfg(target_os = "linux")]
    fn new(listener: &TcpListener) -> Self {
        let set = rustix::net::sockopt::set_tcp_nodelay(listener, true).is_ok();
        NoDelay {
            inherited: (!set).then_some(false),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_listener: &TcpListener) -> Self {
        NoDelay {
            inherited: Some(false),
        }
    }

    fn apply(&mut self, stream: &tokio::net::TcpStream) {
        let inherited = *self
            .inherited
            .get_or_insert_with(|| stream.nodelay().unwrap_or(false));
        if !inherited {
            let _ = stream.set_nodelay(true);
        }
    }
}

/// The HTTP/1 and HTTP/2 settings of a listener's connections.
struct Protocols {
    http1: server::Settings,
    http2: http2::Builder<TokioExecutor>,
}

/// What serving one accepted connection needs besides its stream.
struct Connection {
    info: ConnInfo,
    runtime: Arc<Runtime>,
    builder: Arc<Protocols>,
    shutdown: watch::Receiver<bool>,
    limits: HttpLimits,
}

async fn serve_connection<S>(stream: S, conn: Connection)
where
    S: AsyncRead + AsyncWrite + ClientSocket + Unpin + Send + 'static,
{
    let Connection {
        info,
        runtime,
        builder,
        mut shutdown,
        limits,
    } = conn;
    let idle = limits.idle_timeout;
    let activity = Arc::new(AtomicU64::new(0));
    let mut io = ClientIo {
        inner: stream,
        activity: Arc::clone(&activity),
        read_ahead: BytesMut::new(),
    };
    let mut ticker = crate::clock::idle_ticker(idle);
    let mut seen = 0;
    // HTTP/2 with prior knowledge or HTTP/1, from the first bytes. A new
    // connection must bring them within `header_timeout` from accept (as
    // HAProxy's `timeout http-request` counts from accept); the heads after
    // them are timed by the HTTP/1 server (`server::Settings::header_timeout`).
    let h2 = {
        let sniff = io.sniff();
        tokio::pin!(sniff);
        // Registered with the timer only if the first read has to wait:
        // `biased` polls the read first, and a request usually arrives
        // with the connection.
        let first_bytes = tokio::time::sleep(limits.header_timeout);
        tokio::pin!(first_bytes);
        loop {
            tokio::select! {
                biased;
                result = sniff.as_mut() => match result {
                    Ok(h2) => break h2,
                    Err(e) => {
                        tracing::trace!(error = %e, "client connection ended before a request");
                        return;
                    }
                },
                _ = shutdown.changed() => return,
                _ = first_bytes.as_mut() => {
                    tracing::debug!(client = %info.peer, "no request within header_timeout of accept");
                    return;
                }
                _ = ticker.tick() => {
                    let now = activity.load(Ordering::Relaxed);
                    if now == seen {
                        return;
                    }
                    seen = now;
                }
            }
        }
    };
    let max_requests = limits.max_requests_per_connection;
    let served = AtomicU64::new(0);
    let info = Arc::new(info);
    let serve = move |req: hyper::Request<ClientBody>| {
        let runtime = Arc::clone(&runtime);
        let info = Arc::clone(&info);
        // HTTP/1 connections are recycled after `max_requests_per_connection`
        // (HTTP/2 multiplexes; its streams are bounded by max_concurrent_streams).
        let last = req.version() <= http::Version::HTTP_11
            && served.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests;
        // Split here, outside the future: the future then holds the head
        // once, and `handle` borrows it.
        let (mut parts, body) = req.into_parts();
        async move {
            let mut response = handle(&runtime, &info, &mut parts, body).await;
            if last {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    };
    let watch = CloseWatch {
        ticker,
        seen,
        activity: &activity,
        shutdown: &mut shutdown,
    };
    if h2 {
        // hyper reads HTTP/2 frames out of the server's sight, so the
        // connection gets the kernel's default acknowledgements back.
        io.inner.quick_ack();
        // Boxed: HTTP/2's connection state is large and rare on a plain
        // listener; inline it would enlarge every connection's task.
        // Each stream's request future is boxed too: hyper spawns a task
        // per stream, and a task's future is copied whole when it is
        // spawned, stored and finished (four copies of the request future
        // per request, 2.5 KiB each, against one copy into the box).
        // Built straight into its box: wrapping it in another future first
        // cost about 10 000 instructions of copying per request.
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            Box::pin(serve(req.map(ClientBody::H2)))
        });
        let mut conn = Box::pin(builder.http2.serve_connection(TokioIo::new(io), service));
        watch.drive(conn.as_mut(), |c| c.graceful_shutdown()).await;
    } else {
        // The bytes read to choose the protocol become the server's first
        // read, not copied again.
        let first = io.read_ahead.split();
        let mut conn = server::Connection::new(io, first, builder.http1, serve);
        watch
            .drive(Pin::new(&mut conn), |c| c.get_mut().graceful_shutdown())
            .await;
    }
}

/// What closes a served connection early: shutdown, or no bytes moving
/// in either direction for a whole idle period.
struct CloseWatch<'a> {
    ticker: tokio::time::Interval,
    /// The activity count at the last tick.
    seen: u64,
    activity: &'a AtomicU64,
    shutdown: &'a mut watch::Receiver<bool>,
}

impl<'a> CloseWatch<'a> {
    /// Runs `conn` to its end; on shutdown or idleness asks it to finish
    /// the requests in flight and close (`graceful`).
    fn drive<F, E>(
        self,
        conn: Pin<&'a mut F>,
        graceful: fn(Pin<&mut F>),
    ) -> Driven<'a, F, impl Future<Output = Result<(), watch::error::RecvError>> + 'a>
    where
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        Driven {
            shutdown: self.shutdown.changed(),
            conn,
            graceful,
            ticker: self.ticker,
            seen: self.seen,
            activity: self.activity,
            alarm: Arc::new(Alarm {
                fired: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
            registered: None,
            closing: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection driven to its end under its close watch.
    ///
    /// The shutdown signal and the idle ticker are polled with a waker of
    /// their own ([`Alarm`]) and only after it fired, not on every poll of
    /// the connection: a `select!` over the three polled both each time the
    /// connection made progress, about 1 000 instructions per kept-alive
    /// request (the signal's poll takes a lock). A named future rather than
    /// an `async fn`: it holds each part once (every connection's task
    /// carries it).
    struct Driven<'a, F, S> {
        #[pin]
        shutdown: S,
        conn: Pin<&'a mut F>,
        graceful: fn(Pin<&mut F>),
        ticker: tokio::time::Interval,
        seen: u64,
        activity: &'a AtomicU64,
        alarm: Arc<Alarm>,
        // The task waker last handed to the alarm.
        registered: Option<std::task::Waker>,
        closing: bool,
    }
}

impl<F, E, S> Future for Driven<'_, F, S>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    S: Future,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "client connection ended with an error");
                }
                return Poll::Ready(());
            }
            if *this.closing {
                return Poll::Pending;
            }
            if !this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                *this.alarm.task.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(cx.waker().clone());
                *this.registered = Some(cx.waker().clone());
                // A wake-up may have gone to the task's previous waker.
                this.alarm.fired.store(true, Ordering::Relaxed);
            }
            if !this.alarm.fired.swap(false, Ordering::Acquire) {
                return Poll::Pending;
            }
            let alarm = std::task::Waker::from(Arc::clone(this.alarm));
            let mut watch = Context::from_waker(&alarm);
            let mut close = this.shutdown.as_mut().poll(&mut watch).is_ready();
            // The first poll after a tick registers the next one.
            while this.ticker.poll_tick(&mut watch).is_ready() {
                let now = this.activity.load(Ordering::Relaxed);
                close |= now == *this.seen;
                *this.seen = now;
            }
            if !close {
                return Poll::Pending;
            }
            (this.graceful)(this.conn.as_mut());
            *this.closing = true;
        }
    }
}

/// The waker of a connection's close watch: records that the shutdown
/// signal or the idle ticker fired, then wakes the connection's task.
/// Both fire rarely, so the task's waker sits behind a lock, set again only
/// when the task's waker changes.
struct Alarm {
    fired: AtomicBool,
    task: Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
            task.wake_by_ref();
        }
    }
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Size of the connection's first read, which decides between HTTP/1 and
/// HTTP/2 (prior knowledge).
///
/// 4 KiB holds a typical browser request head, so the first request
/// usually arrives in one `recvfrom` and the HTTP/1 server's first read
/// gets the whole head. (hyper-util's automatic detection read the 24
/// bytes of the HTTP/2 preface first: one more `recvfrom` per connection.)
const FIRST_READ: usize = 4096;

/// The client socket as the HTTP server sees it.
///
/// * counts read and write calls that moved bytes, so the idle check needs
///   no clock reads on the data path;
/// * reads the first bytes itself ([`ClientIo::sniff`]) to choose the
///   protocol, and hands them out on the first reads.
struct ClientIo<S> {
    inner: S,
    activity: Arc<AtomicU64>,
    /// Bytes read by [`ClientIo::sniff`] the server has not taken yet.
    read_ahead: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + ClientSocket + Unpin> ClientIo<S> {
    /// Reads until the first bytes tell whether the client speaks HTTP/2
    /// with prior knowledge (`true`: they are the HTTP/2 preface) or
    /// HTTP/1 (`false`; also at end of stream). The bytes read stay for
    /// the HTTP server.
    async fn sniff(&mut self) -> io::Result<bool> {
        loop {
            let have = &self.read_ahead[..];
            let n = have.len().min(H2_PREFACE.len());
            if have[..n] != H2_PREFACE[..n] {
                return Ok(false);
            }
            if n == H2_PREFACE.len() {
                return Ok(true);
            }
            let got = std::future::poll_fn(|cx| self.poll_read_ahead(cx)).await?;
            if got == 0 {
                return Ok(false);
            }
        }
    }

    /// Reads up to [`FIRST_READ`] bytes into a stack buffer and keeps them
    /// in `read_ahead`. Returns how many bytes were read (0 at end of
    /// stream).
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Uninitialised: zeroing 4 KiB per connection was a measurable
        // share of a new connection's cost, and `ReadBuf` tracks what the
        // read filled.
        let mut first = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut first);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut buf);
        self.inner.read_done(r.is_pending());
        std::task::ready!(r)?;
        let filled = buf.filled();
        if !filled.is_empty() {
            self.activity.fetch_add(1, Ordering::Relaxed);
            self.read_ahead.extend_from_slice(filled);
        }
        Poll::Ready(Ok(filled.len()))
    }
}

impl<S> ClientIo<S> {
    /// A write that moved bytes counts as activity (`idle_timeout`).
    fn counted(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: ClientSocket> ClientSocket for ClientIo<S> {
    fn quick_ack(&self) {
        self.inner.quick_ack();
    }

    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_last(cx, buf);
        self.counted(r)
    }
}

impl<S: AsyncRead + AsyncWrite + ClientSocket + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead.split_to(n));
            if this.read_ahead.is_empty() {
                this.read_ahead = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.inner.read_done(r.is_pending());
        if buf.filled().len() != before {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.counted(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.counted(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections open per client address, for `max_connections_per_ip`.
#[derive(Debug, Default)]
struct PerIp {
    /// Hashed with foldhash, seeded at random per table: the addresses are
    /// the clients' (an unseeded hash would let them aim for collisions),
    /// and SipHash cost about 700 instructions per connection (two lookups).
    open: std::sync::Mutex<
        std::collections::HashMap<std::net::IpAddr, usize, foldhash::fast::RandomState>,
    >,
}

impl PerIp {
    /// A slot for one more connection from `ip`, unless it has `limit` already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<PerIpSlot> {
        let mut open = self.open.lock().expect("per-ip table lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            table: Arc::clone(self),
            ip,
        })
    }
}

/// One connection counted against its address; released on drop.
struct PerIpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-ip table lock");
        // One lookup.
        if let std::collections::hash_map::Entry::Occupied(mut n) = open.entry(self.ip) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}
