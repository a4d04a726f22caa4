//! What the HTTP server asks of a client's TCP socket besides reads and
//! writes: when to acknowledge, and that the last answer leave with the
//! connection's close.
//!
//! **Delayed acknowledgements on plain HTTP listeners.** Linux starts
//! every connection in "quick ACK" mode: the first bytes a client sends
//! are acknowledged at once, in a segment of their own, and the answer
//! follows right after it in another. An HTTP client sends its request and
//! then waits for the answer, so Fulcrum turns quick ACK off on plain
//! `http` listeners (accepted sockets inherit it from the listening one)
//! and the kernel holds the ACK back for the answer to carry. HAProxy does
//! the same on its HTTP listeners.
//!
//! A held ACK can stall a client that sends a request in pieces with
//! Nagle's algorithm on: it waits for its first piece to be acknowledged
//! before sending the next, for up to 40 ms (the kernel's shortest delayed
//! ACK). So quick ACK is turned back on for a connection
//! ([`ClientSocket::quick_ack`]; it also sends the held ACK at once)
//! whenever the HTTP/1 server finds a request head or body incomplete and
//! waits for its rest, when a connection turns out to speak HTTP/2, and
//! when one is upgraded (WebSocket). TLS listeners keep the kernel's
//! default: the handshake is read by rustls, out of the server's sight.
//!
//! **The last answer and the close in one segment.** When the client has
//! asked to close (`Connection: close`, or HTTP/1.0 without keep-alive)
//! and sent nothing after its request, and is not asking for an upgrade
//! (which hands the connection over instead), the answer's last bytes are
//! sent with `MSG_MORE`
//! ([`ClientSocket::poll_write_last`]): the kernel holds them, and the
//! close that follows at once sends them with the FIN. The client then
//! acknowledges both and closes its side in one segment too.
//!
//! Measured with a new connection per request (`bench/compare.py`, "close"):
//! 12 → 11 TCP segments per request for the held ACK, 11 → 9 with the
//! close riding on the answer (docs/benchmarks.md, "Ninth session").

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use fulcrum_config::{ListenerConfig, Protocol};
use tokio::io::AsyncWrite;

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
}

impl ClientSocket for tokio::net::TcpStream {
    fn quick_ack(&self) {
        set(self, true);
    }

    #[cfg(target_os = "linux")]
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use rustix::net::SendFlags;
        let this = self.get_mut();
        loop {
            std::task::ready!(this.poll_write_ready(cx))?;
            let sent = this.try_io(tokio::io::Interest::WRITABLE, || {
                rustix::net::send(&*this, buf, SendFlags::MORE | SendFlags::NOSIGNAL)
                    .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

/// TLS sends its own close (`close_notify`) first: a plain write.
impl<S: ClientSocket + tokio::io::AsyncRead> ClientSocket for tokio_rustls::server::TlsStream<S> {
    fn quick_ack(&self) {
        self.get_ref().0.quick_ack();
    }
}

/// Whether `listener`'s connections start with quick ACK off: plain HTTP
/// listeners, whose requests the HTTP server reads itself.
fn held_on(listener: &ListenerConfig) -> bool {
    listener.protocol == Protocol::Http && listener.tls.is_none()
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

        // A reload to another protocol (or to TLS) restores the default.
        let tcp = listener("protocol = \"tcp\"");
        assert!(!held_on(&tcp));
        apply(&socket, &tcp);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = socket.accept().await.unwrap();
        assert!(tcp_quickack(&accepted).unwrap());
    }
}
