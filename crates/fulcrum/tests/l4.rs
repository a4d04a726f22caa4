//! End-to-end: the real binary forwarding TCP (and UDP) at L4.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;

/// A position-sensitive checksum (Fletcher-style over 64-bit words): cheap
/// enough for a gigabyte in a debug build, and any reordered, lost or
/// changed word changes it.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Checksum {
    a: u64,
    b: u64,
    bytes: u64,
}

impl Checksum {
    /// `chunk.len()` must be a multiple of 8.
    fn update(&mut self, chunk: &[u8]) {
        for w in chunk.chunks_exact(8) {
            let w = u64::from_le_bytes(w.try_into().unwrap());
            self.a = self.a.wrapping_add(w);
            self.b = self.b.wrapping_add(self.a);
        }
        self.bytes += chunk.len() as u64;
    }

    fn text(&self) -> String {
        format!("{:016x}{:016x} {}", self.a, self.b, self.bytes)
    }
}

/// A backend that reads until the client's FIN, then answers with the
/// checksum of everything it received, then closes.
fn checksum_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { break };
            thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut sum = Checksum::default();
                let mut carry = 0;
                loop {
                    let n = match conn.read(&mut buf[carry..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let have = carry + n;
                    let whole = have - have % 8;
                    sum.update(&buf[..whole]);
                    buf.copy_within(whole..have, 0);
                    carry = have - whole;
                }
                let _ = conn.write_all(sum.text().as_bytes());
            });
        }
    });
    addr
}

fn tcp_config(extra: &str, clusters: &str) -> String {
    format!("[[listener]]\nname = \"l4\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"app\"\n{extra}\n\n{clusters}")
}

/// Sends `total` bytes through `addr`, half-closes, returns (sent checksum, reply).
fn send_and_checksum(addr: SocketAddr, total: usize) -> (Checksum, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut rng = fastrand::Rng::with_seed(7);
    rng.fill(&mut block);
    let mut sum = Checksum::default();
    let mut sent = 0;
    let mut i = 0u64;
    while sent < total {
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = block.len().min(total - sent);
        s.write_all(&block[..n]).unwrap();
        sum.update(&block[..n]);
        sent += n;
        i += 1;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    (sum, reply)
}

#[test]
fn tcp_one_gibibyte_arrives_intact_and_half_close_carries_the_reply() {
    let backend = checksum_backend();
    let proxy = Proxy::run(&tcp_config(
        "",
        &cluster_block("app", "round-robin", &[(backend, 1)]),
    ));
    let (sent, reply) = send_and_checksum(proxy.addr("l4"), 1 << 30);
    assert_eq!(reply, sent.text(), "backend saw different bytes");
}

#[test]
fn tcp_connect_failure_retries_another_backend() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live = checksum_backend();
    let proxy = Proxy::run(&tcp_config(
        "",
        &cluster_block("app", "round-robin", &[(dead, 1), (live, 1)]),
    ));
    for _ in 0..6 {
        let (sent, reply) = send_and_checksum(proxy.addr("l4"), 4096);
        assert_eq!(reply, sent.text());
    }
}

#[test]
fn tcp_idle_connection_is_closed_after_idle_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    // A backend that accepts and then says nothing, holding the socket.
    let _holder = thread::spawn(move || {
        let held: Vec<_> = l.incoming().take(1).collect();
        thread::sleep(Duration::from_secs(10));
        drop(held);
    });
    let proxy = Proxy::run(&tcp_config(
        "idle_timeout = \"300ms\"",
        &cluster_block("app", "round-robin", &[(backend, 1)]),
    ));
    let mut s = TcpStream::connect(proxy.addr("l4")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s
        .read(&mut buf)
        .expect("closed by the proxy, not timed out");
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn tcp_max_connections_holds_extra_clients_until_one_leaves() {
    let backend = checksum_backend();
    let proxy = Proxy::run(&tcp_config(
        "max_connections = 1",
        &cluster_block("app", "round-robin", &[(backend, 1)]),
    ));
    let first = TcpStream::connect(proxy.addr("l4")).unwrap();
    thread::sleep(Duration::from_millis(200));
    let mut second = TcpStream::connect(proxy.addr("l4")).unwrap();
    second.write_all(&[1u8; 8]).unwrap();
    second.shutdown(Shutdown::Write).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut reply = String::new();
    assert!(
        second.read_to_string(&mut reply).is_err(),
        "second client served while the first held the only slot: {reply:?}"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    second.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with(" 8"), "{reply}");
}
