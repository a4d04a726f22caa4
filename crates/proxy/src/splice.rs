//! Zero-copy TCP forwarding on Linux with `splice(2)` through a pipe.
//!
//! Bytes go socket → pipe → socket inside the kernel: they are never copied
//! into user space, which roughly halves the memory bandwidth and the CPU a
//! proxied gigabyte costs (HAProxy does the same with `option splice-auto`).
//!
//! A pipe is lent to one direction of one connection at a time and is
//! always drained before it is filled again, so:
//!
//! * filling (`socket → pipe`) can only return `EAGAIN` because the socket
//!   has no data — exactly the readiness tokio tracks for it;
//! * draining (`pipe → socket`) can only return `EAGAIN` because the
//!   destination's send buffer is full — again the socket's readiness.
//!
//! Both pipe ends are non-blocking and every call also passes
//! `SPLICE_F_NONBLOCK`, so no call ever blocks a runtime thread. `rustix`
//! wraps the system calls, so this module needs no `unsafe`.
//!
//! A direction holds a pipe only while bytes are in flight: it takes one
//! from a small shared pool when its source turns readable and gives it back
//! once the pipe is drained (HAProxy pools its pipes the same way). An idle
//! connection then holds two sockets and no pipe, which keeps file
//! descriptors at two per connection instead of six, and keeps the pipe
//! memory the kernel charges to the user (`fs.pipe-user-pages-soft`, 64 MiB
//! by default, past which an unprivileged process gets 8 KiB pipes) bounded
//! by the connections moving bytes, not by all connections open.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::net::Shutdown;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for: 1 MiB moves a gigabyte in ~1000 splice pairs per
/// direction; the kernel may grant less (`/proc/sys/fs/pipe-max-size`), and
/// the default 64 KiB still works.
const PIPE_SIZE: usize = 1 << 20;

/// Most drained pipes kept for reuse. Pipes beyond it are closed: the pool
/// only has to cover the directions in flight at one time on a few worker
/// threads, and 16 full-size pipes are 16 MiB of the user's pipe allowance.
const POOL_MAX: usize = 16;

/// Drained pipes ready for reuse.
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// A pipe that is empty whenever it is not lent out.
struct Pipe {
    /// The end bytes are spliced out of.
    read: OwnedFd,
    /// The end bytes are spliced into.
    write: OwnedFd,
    /// What the kernel granted: the most one fill asks for.
    capacity: usize,
}

impl Pipe {
    /// A pooled pipe, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let capacity = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Returns a pipe known to be empty to the pool (a pipe that may still
    /// hold bytes is dropped instead, which closes it).
    fn give_back(self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }
}

/// Forwards both directions between `a` and `b` until both have ended.
///
/// End of stream on one side becomes a write shutdown (FIN) on the other,
/// while the opposite direction keeps flowing (half-close). Every transfer
/// bumps `activity`, which the caller's idle check reads. Returns the bytes
/// moved `a → b` and `b → a`, or the first error of either direction.
pub async fn copy_bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    activity: &AtomicU64,
) -> io::Result<(u64, u64)> {
    tokio::try_join!(pump(a, b, activity), pump(b, a, activity))
}

/// Whether splice works here (a pipe can be had); callers fall back to a
/// user-space copy otherwise. Asked per connection, so running out of file
/// descriptors for pipes falls back too; with a pooled pipe it costs no
/// system call, and a pipe made for the check stays in the pool.
pub fn available() -> bool {
    Pipe::take().map(Pipe::give_back).is_ok()
}

async fn pump(from: &TcpStream, to: &TcpStream, activity: &AtomicU64) -> io::Result<u64> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let pipe = Pipe::take()?;
        let filled = match from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe.write, None, pipe.capacity, flags).map_err(io::Error::from)
        }) {
            Ok(n) => n,
            // A failed splice moved nothing: the pipe is still empty.
            Err(e) => {
                pipe.give_back();
                if e.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(e);
            }
        };
        if filled == 0 {
            pipe.give_back();
            // The source sent FIN: pass it on, keep the other direction open.
            match rustix::net::shutdown(to, Shutdown::Write) {
                Ok(()) | Err(rustix::io::Errno::NOTCONN) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(total);
        }
        // On an error from here on the pipe may hold bytes: it is dropped.
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        pipe.give_back();
        total += filled as u64;
        activity.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn copy_bidirectional_counts_bytes_keeps_half_close_and_returns_pipes() {
        assert!(available());
        // client <-> (a, b) proxy ends <-> backend
        let (mut client, a) = pair().await;
        let (b, mut backend) = pair().await;
        let activity = AtomicU64::new(0);
        let sent: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let far = async {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            assert!(got == sent, "bytes changed on the way");
            // The other direction still flows after the client's FIN.
            backend.write_all(b"reply").await.unwrap();
            backend.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, b"reply");
        };
        let (moved, ()) = tokio::join!(copy_bidirectional(&a, &b, &activity), far);
        assert_eq!(moved.unwrap(), (3 << 20, 5));
        assert!(activity.load(Ordering::Relaxed) > 0);
        let pooled = POOL.lock().unwrap().len();
        assert!((1..=POOL_MAX).contains(&pooled), "{pooled} pipes pooled");
    }
}
