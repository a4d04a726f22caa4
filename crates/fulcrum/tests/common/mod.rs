//! Helpers for end-to-end tests: spawn the real `fulcrum` binary with a
//! configuration, real testbed backends on 127.0.0.1:0, and a small client.
#![allow(dead_code)]

pub mod raw_backend;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use fulcrum_testbed::{spawn_backend, BackendOptions, RunningBackend};

/// The binary under test.
pub fn fulcrum_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fulcrum")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fulcrum-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `fulcrum` process, killed on drop.
pub struct Proxy {
    pub child: Child,
    /// Listener name -> bound address, as announced on stderr.
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin listener's address, as announced on stderr.
    pub admin: SocketAddr,
    pub dir: TempDir,
    pub config_path: PathBuf,
    /// Stderr lines printed up to the last listener announcement.
    pub startup: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    /// Writes `config` to a file and runs `fulcrum run -c FILE`, waiting
    /// until every listener is announced.
    ///
    /// Without an `[admin]` table the admin listener goes on 127.0.0.1:0
    /// (the default port would clash between tests running in parallel).
    pub fn run(config: &str) -> Proxy {
        Proxy::run_with_env(config, &[])
    }

    /// Like [`Proxy::run`], with extra environment variables (e.g. the admin token).
    pub fn run_with_env(config: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = TempDir::new("proxy");
        let text = if config.contains("[admin]") {
            config.to_owned()
        } else {
            format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{config}")
        };
        let path = dir.write("fulcrum.toml", &text);
        let expected = config.matches("[[listener]]").count();
        let mut child = Command::new(fulcrum_bin())
            .args(["run", "-c"])
            .arg(&path)
            .envs(env.iter().copied())
            .env(
                "FULCRUM_LOG",
                env.iter()
                    .find(|(k, _)| *k == "FULCRUM_LOG")
                    .map_or("warn", |(_, v)| *v),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fulcrum");
        let lines = pipe_lines(child.stderr.take().unwrap());
        let mut listeners = HashMap::new();
        let mut admin = None;
        let mut startup = Vec::new();
        while listeners.len() < expected || admin.is_none() {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("fulcrum did not announce its listeners; got {listeners:?}")
                });
            if let Some(rest) = line.strip_prefix("fulcrum: listener `") {
                let (name, rest) = rest.split_once('`').unwrap();
                let addr = rest.rsplit("://").next().unwrap().trim().parse().unwrap();
                listeners.insert(name.to_owned(), addr);
            }
            if let Some(rest) = line.strip_prefix("fulcrum: admin on http://") {
                admin = Some(rest.trim().parse().unwrap());
            }
            startup.push(line);
        }
        Proxy {
            child,
            listeners,
            admin: admin.unwrap(),
            dir,
            config_path: path,
            startup,
            lines,
        }
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// Stderr lines printed so far.
    pub fn drain_output(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards a child's output lines to a channel (and keeps the pipe drained).
pub fn pipe_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `n` plain backends named b0.. with the given latencies.
pub async fn backends(latencies: &[&str]) -> Vec<RunningBackend> {
    let mut out = Vec::new();
    for (i, l) in latencies.iter().enumerate() {
        let mut opts = BackendOptions::new(format!("b{i}"));
        opts.latency = l.parse().unwrap();
        out.push(spawn_backend(opts).await.unwrap());
    }
    out
}

/// A `[cluster.app]` block listing the backends with weights.
pub fn cluster_block(name: &str, algorithm: &str, backends: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("  {{ address = \"{a}\", weight = {w} }},"))
        .collect();
    format!(
        "[cluster.{name}]\nalgorithm = \"{algorithm}\"\nbackends = [\n{}\n]\n",
        list.join("\n")
    )
}

/// One listener on port 0 sending everything to `app`, plus `clusters`.
pub fn simple_config(clusters: &str) -> String {
    format!("[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n{clusters}")
}

/// An HTTP/1.1 keep-alive client.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }
}

/// GET `path` through the proxy, bounded by 15 s.
pub async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Answer {
    send(
        client,
        http::Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Sends a request, reading the whole answer, bounded by 15 s.
pub async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>) -> Answer {
    let fut = async {
        let resp = client.request(req).await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .expect("request hung for 15 s")
}

/// Counts answers per backend name.
pub fn tally<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in answers {
        *m.entry(a.backend().unwrap_or("-").to_owned()).or_insert(0) += 1;
    }
    m
}

/// A throwaway certificate authority for TLS tests.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fulcrum test ca");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// The CA certificate (PEM), for `curl --cacert` and client root stores.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// A leaf certificate for `names` with common name `cn`: (cert PEM, key PEM).
    pub fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        self.leaf_numbered(cn, names, None)
    }

    /// [`TestCa::leaf`] with serial number `serial` (else a random one).
    pub fn leaf_numbered(&self, cn: &str, names: &[&str], serial: Option<u64>) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, no client
    /// certificates) serving a leaf of this CA for `names`.
    pub fn server_config(&self, cn: &str, names: &[&str]) -> rustls::ServerConfig {
        use rustls_pki_types::pem::PemObject;
        let (cert, key) = self.leaf(cn, names);
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
    }

    /// A revocation list (PEM) of this CA naming the `revoked` serials.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2035, 1, 1),
            crl_number: rcgen::SerialNumber::from(fastrand::u64(1..u64::MAX / 2)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial),
                    revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .unwrap()
            .pem()
            .unwrap()
    }

    /// Writes a leaf's files into `dir` as NAME.crt / NAME.key (0600); returns their paths.
    pub fn write_leaf(
        &self,
        dir: &TempDir,
        file: &str,
        cn: &str,
        names: &[&str],
    ) -> (String, String) {
        self.write_leaf_numbered(dir, file, cn, names, None)
    }

    /// [`TestCa::write_leaf`] with serial number `serial` (else a random one).
    pub fn write_leaf_numbered(
        &self,
        dir: &TempDir,
        file: &str,
        cn: &str,
        names: &[&str],
        serial: Option<u64>,
    ) -> (String, String) {
        let (cert, key) = self.leaf_numbered(cn, names, serial);
        let c = dir.write(&format!("{file}.crt"), &cert);
        let k = dir.write(&format!("{file}.key"), &key);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

/// A rustls client trusting only `ca_der` (ring provider, TLS 1.2 and 1.3).
pub fn tls_client(ca_der: Vec<u8>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The proxy's Prometheus text (`GET /metrics` on its admin listener).
pub async fn metrics_text(proxy: &Proxy) -> String {
    let answer = get(&client(), proxy.admin, "/metrics").await;
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// The value of the sample written exactly `series` (name and labels as
/// Prometheus prints them) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
