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
fn tcp_backend_that_speaks_first_greets_a_silent_client_at_once() {
    // SMTP, MySQL and the like: the server speaks first. A plain tcp
    // listener (no tls, SNI routes or PROXY header) must not wait for the
    // client's bytes before accepting: its defer_accept is off by default.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let _greeter = thread::spawn(move || {
        for mut conn in l.incoming().take(1).flatten() {
            let _ = conn.write_all(b"220 ready\r\n");
            thread::sleep(Duration::from_secs(5));
        }
    });
    let proxy = Proxy::run(&tcp_config(
        "",
        &cluster_block("app", "round-robin", &[(backend, 1)]),
    ));
    let mut s = TcpStream::connect(proxy.addr("l4")).unwrap();
    // A deferred accept would hold this connection for at least the
    // kernel's one-second SYN-ACK retransmission.
    s.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf)
        .expect("greeting arrives without the client sending first");
    assert_eq!(&buf, b"220 ready\r\n");
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

/// A backend that reads a PROXY v2 header (IPv4) and answers with the
/// source address it announces, then closes.
fn proxy_v2_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut head = [0u8; 16];
            if conn.read_exact(&mut head).is_err() {
                continue;
            }
            let reply =
                if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" || head[12] != 0x21 || head[13] != 0x11 {
                    "bad header".to_owned()
                } else {
                    let mut body = vec![0u8; u16::from_be_bytes([head[14], head[15]]) as usize];
                    conn.read_exact(&mut body).unwrap();
                    let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                    let port = u16::from_be_bytes([body[8], body[9]]);
                    let mut rest = [0u8; 5];
                    conn.read_exact(&mut rest).unwrap();
                    format!("{ip}:{port} {}", String::from_utf8_lossy(&rest))
                };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    addr
}

fn proxied_cluster(backend: SocketAddr) -> String {
    format!(
        "{}proxy_protocol = \"v2\"\n",
        cluster_block("app", "round-robin", &[(backend, 1)])
    )
}

#[test]
fn proxy_protocol_v2_header_reaches_the_backend_with_the_client_address() {
    let proxy = Proxy::run(&tcp_config("", &proxied_cluster(proxy_v2_backend())));
    let mut s = TcpStream::connect(proxy.addr("l4")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("{} hello", s.local_addr().unwrap()));
}

#[test]
fn proxy_protocol_from_a_trusted_peer_is_passed_on_and_malformed_is_refused() {
    let proxy = Proxy::run(&tcp_config(
        "accept_proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.0/8\"]",
        &proxied_cluster(proxy_v2_backend()),
    ));
    let mut s = TcpStream::connect(proxy.addr("l4")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 4444 80\r\nhello")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "203.0.113.9:4444 hello");

    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PROXY TCP4 203.0.113.9 10.0.0.1 4444\r\nhello",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02hello-there",
    ] {
        let mut s = TcpStream::connect(proxy.addr("l4")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bad);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(
            reply.is_empty(),
            "malformed header {:?} was forwarded: {:?}",
            String::from_utf8_lossy(bad),
            String::from_utf8_lossy(&reply)
        );
    }
}

/// A TLS backend holding its own certificate; it says its name and closes.
async fn tls_backend(ca: &TestCa, name: &'static str, host: &str) -> SocketAddr {
    let config = ca.server_config(name, &[host]);
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(name.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_passthrough_routes_two_names_to_their_own_backends() {
    use tokio::io::AsyncReadExt;
    let ca = TestCa::new();
    let a = tls_backend(&ca, "backend-a", "a.example.com").await;
    let b = tls_backend(&ca, "backend-b", "x.b.example.com").await;
    let config = format!(
        "[[listener]]\nname = \"l4\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\n\
         [[listener.route]]\nsni = \"a.example.com\"\ncluster = \"a\"\n\n\
         [[listener.route]]\nsni = \"*.b.example.com\"\ncluster = \"b\"\n\n{}\n{}",
        cluster_block("a", "round-robin", &[(a, 1)]),
        cluster_block("b", "round-robin", &[(b, 1)]),
    );
    let proxy = Proxy::run(&config);
    let connector = tls_client(ca.der());
    for (host, want) in [
        ("a.example.com", "backend-a"),
        ("x.b.example.com", "backend-b"),
        ("a.example.com", "backend-a"),
    ] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr("l4"))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
        // The handshake verifies the certificate against `host`: it succeeds
        // only if the backend for `host`, not the proxy, answered.
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("handshake hung")
            .expect("handshake failed");
        let mut got = String::new();
        let _ = tls.read_to_string(&mut got).await;
        assert_eq!(got, want);
    }
    // An SNI no route matches, on a listener without a default cluster: closed.
    let tcp = tokio::net::TcpStream::connect(proxy.addr("l4"))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("c.example.org").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
}

/// UDP echo backends answering `NAME|payload`.
fn udp_echo_backends(n: usize) -> Vec<(SocketAddr, u32)> {
    (0..n)
        .map(|i| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = s.local_addr().unwrap();
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = format!("u{i}|").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = s.send_to(&reply, from);
                }
            });
            (addr, 1)
        })
        .collect()
}

fn udp_config(extra: &str, backends: &[(SocketAddr, u32)]) -> String {
    format!(
        "[[listener]]\nname = \"dgram\"\nbind = \"127.0.0.1:0\"\nprotocol = \"udp\"\ncluster = \"app\"\n{extra}\n\n{}",
        cluster_block("app", "round-robin", backends)
    )
}

/// Sends `payload` from `s` until its echo arrives (UDP may drop); returns the backend name.
fn udp_round_trip(s: &std::net::UdpSocket, proxy: SocketAddr, payload: &str) -> Option<String> {
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        s.send_to(payload.as_bytes(), proxy).unwrap();
        // A receive timeout ends the inner loop: send again.
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            assert_eq!(from, proxy, "reply from another address");
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            let (backend, echoed) = text.split_once('|').unwrap();
            assert!(
                echoed.split('-').next() == payload.split('-').next(),
                "reply for another client: {echoed} on the socket of {payload}"
            );
            if echoed == payload {
                return Some(backend.to_owned());
            }
        }
    }
    None
}

#[test]
fn udp_ten_thousand_datagrams_return_to_their_sockets_and_flows_stick() {
    let backends = udp_echo_backends(3);
    let proxy = Proxy::run(&udp_config("", &backends));
    let addr = proxy.addr("dgram");
    let workers: Vec<_> = (0..50)
        .map(|c| {
            thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut seen = std::collections::BTreeSet::new();
                for i in 0..200 {
                    let b = udp_round_trip(&s, addr, &format!("c{c}-{i}"))
                        .unwrap_or_else(|| panic!("client {c} datagram {i} never came back"));
                    seen.insert(b);
                }
                seen
            })
        })
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for w in workers {
        let seen = w.join().unwrap();
        assert_eq!(seen.len(), 1, "a flow moved between backends: {seen:?}");
        used.extend(seen);
    }
    assert_eq!(used.len(), 3, "flows were not spread: {used:?}");
}

#[test]
fn udp_flow_table_is_bounded_by_max_flows() {
    let backends = udp_echo_backends(1);
    let proxy = Proxy::run(&udp_config("max_flows = 2", &backends));
    let addr = proxy.addr("dgram");
    let sockets: Vec<_> = (0..3)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    assert!(udp_round_trip(&sockets[0], addr, "c0-0").is_some());
    assert!(udp_round_trip(&sockets[1], addr, "c1-0").is_some());
    assert!(
        udp_round_trip(&sockets[2], addr, "c2-0").is_none(),
        "a third flow was opened beyond max_flows = 2"
    );
}
