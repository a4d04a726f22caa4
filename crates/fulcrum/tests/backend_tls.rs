//! End-to-end: TLS from Fulcrum to backends (cluster `tls`), TCP health
//! checks with `send`/`expect`, and listener certificates reloaded when
//! their files change.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A TLS backend answering every request with `x-backend: NAME` and
/// `x-client-cert: yes|no`; with `client_ca` it requires a client certificate.
async fn tls_backend(name: &str, cert: &str, key: &str, client_ca: Option<Vec<u8>>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(der) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(der)).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let service = service_fn(move |_req| {
                    let name = name.clone();
                    async move {
                        hyper::Response::builder()
                            .header("x-backend", name.as_str())
                            .header("x-client-cert", if client_cert { "yes" } else { "no" })
                            .body(Full::new(Bytes::from(name)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn https_cluster(backend: SocketAddr, tls: &str) -> String {
    simple_config(&format!(
        "[cluster.app]\nbackends = [{{ address = \"{backend}\" }}]\nretries = 0\n\
         tls = {{ {tls} }}\n\
         [cluster.app.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\n\
         rise = 1\nfall = 1\njitter = \"0s\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_a_tls_backend_and_a_wrong_ca_is_refused() {
    let dir = TempDir::new("backend-tls");
    let ca = TestCa::new();
    let ca_pem = dir.write("ca.pem", &ca.pem()).display().to_string();
    let other = TestCa::new();
    let other_pem = dir.write("other.pem", &other.pem()).display().to_string();
    // Verified by the address's IP (default) and by a configured name.
    let (c, k) = ca.write_leaf(&dir, "backend", "backend", &["127.0.0.1", "backend.test"]);
    let backend = tls_backend("secure", &c, &k, None).await;

    for tls in [
        format!("ca = \"{ca_pem}\""),
        format!("ca = \"{ca_pem}\", sni = \"backend.test\""),
    ] {
        let proxy = Proxy::run(&https_cluster(backend, &tls));
        let client = client();
        // Let the TLS health probe run: the backend must stay up.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for _ in 0..3 {
            let a = get(&client, proxy.addr("web"), "/").await;
            assert_eq!(a.status, 200, "{tls}: {a:?}");
            assert_eq!(a.backend(), Some("secure"));
            assert_eq!(a.headers["x-client-cert"], "no");
        }
    }

    let proxy = Proxy::run(&https_cluster(backend, &format!("ca = \"{other_pem}\"")));
    let a = get(&client(), proxy.addr("web"), "/").await;
    assert!(a.status == 502 || a.status == 503, "wrong CA: {a:?}");
    // The TLS health probe fails too: the backend is marked down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = get(&client(), proxy.addr("web"), "/").await;
    assert!(a.status == 502 || a.status == 503, "wrong CA: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_requiring_a_client_certificate_gets_fulcrums() {
    let dir = TempDir::new("backend-mtls");
    let ca = TestCa::new();
    let ca_pem = dir.write("ca.pem", &ca.pem()).display().to_string();
    let (c, k) = ca.write_leaf(&dir, "backend", "backend", &["backend.test"]);
    let (cc, ck) = ca.write_leaf(&dir, "client", "fulcrum", &["fulcrum.test"]);
    let backend = tls_backend("mtls", &c, &k, Some(ca.der())).await;

    let tls = format!("ca = \"{ca_pem}\", sni = \"backend.test\", cert = \"{cc}\", key = \"{ck}\"");
    let proxy = Proxy::run(&https_cluster(backend, &tls));
    let a = get(&client(), proxy.addr("web"), "/").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-client-cert"], "yes");

    // Without the client certificate the backend refuses the handshake.
    let tls = format!("ca = \"{ca_pem}\", sni = \"backend.test\"");
    let proxy = Proxy::run(&https_cluster(backend, &tls));
    let a = get(&client(), proxy.addr("web"), "/").await;
    assert!(a.status == 502 || a.status == 503, "no client cert: {a:?}");
}

/// A redis-like backend: `PING` gets `reply`, any other line gets `NAME\n`.
async fn line_backend(name: &'static str, reply: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, mut w) = tcp.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = if line.trim() == "PING" {
                        format!("{reply}\r\n")
                    } else {
                        format!("{name}\n")
                    };
                    if w.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_with_send_and_expect_marks_a_wrong_answer_down() {
    let good = line_backend("good", "+PONG").await;
    let bad = line_backend("bad", "-ERR unknown command").await;
    let config = format!(
        "[[listener]]\nname = \"kv\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"kv\"\n\n\
         [cluster.kv]\nalgorithm = \"round-robin\"\npanic_threshold = 0\n\
         backends = [{{ address = \"{good}\" }}, {{ address = \"{bad}\" }}]\n\
         [cluster.kv.health]\ntype = \"tcp\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\n\
         interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\njitter = \"0s\"\n"
    );
    let proxy = Proxy::run(&config);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..10 {
        let mut s = TcpStream::connect(proxy.addr("kv")).await.unwrap();
        s.write_all(b"WHO\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"good\n", "traffic must avoid the bad backend");
    }
}

/// The certificate a new TLS client is served by `addr`.
async fn served_cert(addr: SocketAddr, ca_der: Vec<u8>) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
    let tls = tls_client(ca_der).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem_path: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(pem_path).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_file_is_served_to_new_clients() {
    let bs = backends(&["0ms"]).await;
    let dir = TempDir::new("cert-reload");
    let ca = TestCa::new();
    let (c, k) = ca.write_leaf(&dir, "site", "first", &["site.test"]);
    let first = der_of(&c);
    let config = format!(
        "[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
         tls = {{ cert = \"{c}\", key = \"{k}\" }}\n\n{}",
        cluster_block("app", "round-robin", &[(bs[0].addr, 1)])
    );
    let proxy = Proxy::run(&config);
    let addr = proxy.addr("https");
    assert_eq!(served_cert(addr, ca.der()).await, first);
    // An established connection survives the swap.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
    let mut kept = tls_client(ca.der()).connect(name, tcp).await.unwrap();

    // Replace both files (as a renewal tool does), with no config change.
    let (pem, key) = ca.leaf("second", &["site.test"]);
    std::fs::write(format!("{c}.new"), &pem).unwrap();
    std::fs::write(format!("{k}.new"), &key).unwrap();
    std::fs::rename(format!("{k}.new"), &k).unwrap();
    std::fs::rename(format!("{c}.new"), &c).unwrap();
    let second = der_of(&c);
    assert_ne!(first, second);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = served_cert(addr, ca.der()).await;
        if served == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kept.write_all(b"GET / HTTP/1.1\r\nhost: site.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
