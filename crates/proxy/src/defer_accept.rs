//! `TCP_DEFER_ACCEPT`: a listener wakes only for connections that have
//! sent data.
//!
//! HTTP and TLS clients speak first. With the option set, the kernel
//! finishes the handshake but keeps the connection off the accept queue
//! until its first bytes arrive, so one wakeup brings a connection whose
//! request is already readable. Without it, a new connection costs an
//! extra `epoll_wait` round and a read that finds nothing (`EAGAIN`):
//! tokio's accepted sockets start out assumed readable. A client that
//! connects and stays silent is held by the kernel (it costs the proxy no
//! task, buffer or connection slot) and is handed over after about a
//! second, when `header_timeout` starts counting.
//!
//! NGINX calls this `listen ... deferred` and HAProxy `bind ... defer-accept`;
//! both pass 1 second, as this does. Neither `rustix` nor `socket2` wraps
//! the option (and std's wrapper is unstable), so this module is the one
//! place in the crate that calls `setsockopt` itself: one call on an owned,
//! open descriptor, with a `c_int` that outlives it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsFd;

/// Seconds the kernel holds a silent connection, as NGINX and HAProxy pass.
#[cfg(target_os = "linux")]
const HOLD_SECONDS: libc::c_int = 1;

/// Sets (`true`) or clears (`false`) `TCP_DEFER_ACCEPT` on a listening socket.
#[cfg(target_os = "linux")]
pub(crate) fn set(listener: &impl AsFd, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = if on { HOLD_SECONDS } else { 0 };
    // SAFETY: the descriptor is borrowed from a live socket for the whole
    // call, and the option value is a local `c_int` whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Other systems have no such option: connections are accepted at once.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set(_listener: &impl AsFd, _on: bool) -> io::Result<()> {
    Ok(())
}

/// Sets the option as `listener` configures it, warning (not failing) if
/// the system refuses: connections are then accepted before they speak.
///
/// Called right after binding, before the listener is announced, so that
/// no connection is accepted under the wrong setting, and again when a
/// reload restarts the accept loop with changed settings.
pub(crate) fn apply(socket: &impl AsFd, listener: &fulcrum_config::ListenerConfig) {
    if let Err(e) = set(socket, listener.defer_accept) {
        tracing::warn!(listener = %listener.name, error = %e, "cannot set defer_accept; connections are accepted before they send");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The option as the kernel reports it (in SYN-ACK retransmissions
    /// rounded back to seconds).
    fn get(listener: &impl AsFd) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set`; `value` and `len` are locals sized as passed.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_fd().as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_mut(&mut value).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn set_turns_the_option_on_and_off() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(get(&l), 0);
        set(&l, true).unwrap();
        assert!(get(&l) >= 1, "{}", get(&l));
        set(&l, false).unwrap();
        assert_eq!(get(&l), 0);
    }
}
