//! What the HTTP server asks of a client's TCP socket besides reads and
//! writes: when to acknowledge, and that the last answer leave with the
//! connection's close.
//!
//! **Delayed acknowledgements on HTTP listeners.** Linux starts
//! every connection in "quick ACK" mode: the first bytes a client sends
//! are acknowledged at once, in a segment of their own, and the answer
//! follows right after it in another. An HTTP client sends its request and
//! then waits for the answer, so Fulcrum turns quick ACK off on `http`
//! listeners (accepted sockets inherit it from the listening one) and the
//! kernel holds the ACK back for the answer to carry. HAProxy does the
//! same on its HTTP listeners.
//!
//! A held ACK can stall a client that sends a request in pieces with
//! Nagle's algorithm on: it waits for its first piece to be acknowledged
//! before sending the next, for up to 40 ms (the kernel's shortest delayed
//! ACK). So quick ACK is turned back on for a connection
//! ([`ClientSocket::quick_ack`]; it also sends the held ACK at once)
//! whenever the HTTP/1 server finds a request head or body incomplete and
//! waits for its rest, when a connection turns out to speak HTTP/2, and
//! when one is upgraded (WebSocket). Under TLS the server sees plaintext
//! only, so the TLS connection's socket ([`TlsTcp`]) also sends the ACK
//! when bytes arrived that make no complete record yet. In the handshake
//! the server's flights carry the ACKs, except for a ClientHello that
//! arrives in pieces and for a resumed TLS 1.2 handshake, which ends with
//! the client's `Finished`: [`TlsTcp`] sends those at once too.
//!
//! **The last answer and the close in one segment.** When the client has
//! asked to close (`Connection: close`, or HTTP/1.0 without keep-alive)
//! and sent nothing after its request, and is not asking for an upgrade
//! (which hands the connection over instead), the answer's last bytes are
//! sent with `MSG_MORE`
//! ([`ClientSocket::poll_write_last`]): the kernel holds them, and the
//! close that follows at once sends them with the FIN (under TLS, with the
//! `close_notify` between them). The client then acknowledges both and
//! closes its side in one segment too.
//!
//! Measured with a new connection per request (`bench/compare.py`, "close"):
//! 12 → 11 TCP segments per request for the held ACK, 11 → 9 with the
//! close riding on the answer (docs/benchmarks.md, "Ninth session"); over
//! TLS ("tlsclose"), 15 → 12 segments on the client's side of a
//! connection (docs/benchmarks.md, "Tenth session").

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use fulcrum_config::{ListenerConfig, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client stream whose TCP socket takes the hints above.
pub trait ClientSocket: AsyncWrite + Unpin {
    /// Turns quick ACK on for this connection and sends any held ACK now.
    /// Best effort: a refusal only means a slower acknowledgement.
    fn quick_ack(&self);

    /// Writes bytes that the connection's close follows at once, as
    /// [`AsyncWrite::poll_write`] does. On a TCP socket they wait for the
    /// close (or for more bytes) to leave with it: call it only when the
    /// stream is closed or shut down right after the last byte is written.
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write(cx, buf)
    }

    /// Told after each read the HTTP server makes, `pending` when it found
    /// nothing to take. A TLS stream whose bytes arrived but made no
    /// plaintext yet acknowledges them now (see [`TlsTcp`]).
    fn read_done(&mut self, _pending: bool) {}
}

impl ClientSocket for TcpStream {
    fn quick_ack(&self) {
        set(self, true);
    }

    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        send_more(self.get_mut(), cx, buf)
    }
}

/// Writes `buf` for the close (or more bytes) to send (`MSG_MORE`).
#[cfg(target_os = "linux")]
fn send_more(tcp: &mut TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    use rustix::net::SendFlags;
    loop {
        std::task::ready!(tcp.poll_write_ready(cx))?;
        let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::send(&*tcp, buf, SendFlags::MORE | SendFlags::NOSIGNAL)
                .map_err(io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return Poll::Ready(sent),
        }
    }
}

/// Other systems: a plain write.
#[cfg(not(target_os = "linux"))]
fn send_more(tcp: &mut TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    Pin::new(tcp).poll_write(cx, buf)
}

/// The TCP socket under a client's TLS connection on an http listener.
///
/// It keeps track of bytes received that no write of Fulcrum's has
/// acknowledged yet (every segment sent carries the ACK of all received
/// so far). Such bytes that leave a reader with nothing to take are a
/// message arriving in pieces, and get the ACK at once:
/// * before the server's first reply, a ClientHello in pieces (one with a
///   large key share can span two segments): rustls reads on;
/// * once the handshake is done, a record in pieces: the HTTP server's
///   read finds no plaintext ([`ClientSocket::read_done`]). Bytes that did
///   become plaintext need no early ACK: the HTTP server sees them, and
///   asks for one itself if they leave it waiting. (Within one read, the
///   TLS stream reads the socket again after plaintext, so the socket alone
///   cannot tell.) The server's first read comes right after the
///   handshake, so this also covers a handshake that ends with the
///   client's bytes: a resumed TLS 1.2 handshake ends with the client's
///   `Finished`, and nothing is sent back.
///
/// In between, the end of a handshake reads on before it sends the
/// session tickets that carry the ACK.
///
/// Once the answer's last bytes are written
/// ([`ClientSocket::poll_write_last`] on the TLS stream), every write
/// waits for the close: the last record, then TLS's own `close_notify`,
/// which the shutdown that follows sends with the FIN, in one segment.
#[derive(Debug)]
pub struct TlsTcp {
    tcp: TcpStream,
    /// Bytes came in since the last write that moved bytes.
    unread: bool,
    /// A write has moved bytes (the server's first handshake flight).
    replied: bool,
    /// Writes are held for the close (`MSG_MORE`).
    closing: bool,
}

impl TlsTcp {
    /// Wraps an accepted connection, before its handshake.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            unread: false,
            replied: false,
            closing: false,
        }
    }

    /// Notes that a write moved bytes (and with them the ACK).
    fn wrote(&mut self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.unread = false;
            self.replied = true;
        }
        r
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.unread = true;
        } else if r.is_pending() && this.unread && !this.replied {
            this.unread = false;
            this.tcp.quick_ack();
        }
        r
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = if this.closing {
            send_more(&mut this.tcp, cx, buf)
        } else {
            Pin::new(&mut this.tcp).poll_write(cx, buf)
        };
        this.wrote(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closing {
            // A vectored write may write less than all: the first slice,
            // held as `poll_write` holds it.
            let buf = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, buf);
        }
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl ClientSocket for TlsStream<TlsTcp> {
    fn quick_ack(&self) {
        self.get_ref().0.tcp.quick_ack();
    }

    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.get_mut().0.closing = true;
        Pin::new(this).poll_write(cx, buf)
    }

    fn read_done(&mut self, pending: bool) {
        let tcp = &mut self.get_mut().0;
        if std::mem::take(&mut tcp.unread) && pending {
            tcp.tcp.quick_ack();
        }
    }
}

/// Whether `listener`'s connections start with quick ACK off: HTTP
/// listeners, whose requests the HTTP server reads itself (through
/// [`TlsTcp`] with TLS).
fn held_on(listener: &ListenerConfig) -> bool {
    listener.protocol == Protocol::Http
}

/// Sets the listening socket as `listener` configures it (inherited by
/// the connections it accepts from then on). Called with `defer_accept`,
/// right after binding and when a reload restarts the accept loop.
pub(crate) fn apply(socket: &impl AsFd, listener: &ListenerConfig) {
    set(socket, !held_on(listener));
}

#[cfg(target_os = "linux")]
fn set(socket: &impl AsFd, quick: bool) {
    if let Err(e) = rustix::net::sockopt::set_tcp_quickack(socket, quick) {
        tracing::debug!(error = %e, quick, "cannot set TCP_QUICKACK");
    }
}

/// Other systems: the kernel's default acknowledgements.
#[cfg(not(target_os = "linux"))]
fn set(_socket: &impl AsFd, _quick: bool) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::net::sockopt::tcp_quickack;

    fn listener(config: &str) -> ListenerConfig {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\ncluster = \"c\"\n{config}\n\
             [cluster.c]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n"
        );
        fulcrum_config::parse(&text, None)
            .unwrap()
            .listeners
            .remove(0)
    }

    #[tokio::test]
    async fn accepted_connections_inherit_the_listeners_setting_until_turned_back_on() {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        apply(&socket, &listener(""));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = socket.accept().await.unwrap();
        assert!(
            !tcp_quickack(&accepted).unwrap(),
            "held on a plain http listener"
        );
        accepted.quick_ack();
        assert!(tcp_quickack(&accepted).unwrap(), "turned back on");

        // A reload to another protocol restores the default.
        let tcp = listener("protocol = \"tcp\"");
        assert!(!held_on(&tcp));
        apply(&socket, &tcp);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = socket.accept().await.unwrap();
        assert!(tcp_quickack(&accepted).unwrap());
    }
}
