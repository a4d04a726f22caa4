//! TLS from Fulcrum to backends (a cluster's `tls = { ... }`).
//!
//! * Trust: the cluster's `ca` file, else the Mozilla root set
//!   (`webpki-roots`, compiled in: no dependence on the host's store).
//!   `verify = false` accepts any certificate but still checks the
//!   handshake signatures — for test rigs only.
//! * Server name: a backend's `tls_sni`, else the cluster's `sni`, else the
//!   host of the backend's address (an IP address is verified against the
//!   certificate's IP subject names).
//! * mTLS: `cert` and `key` are presented when a backend asks for a client
//!   certificate.
//! * The handshake is bounded by the cluster's `connect_timeout`, on top of
//!   the TCP connect, and a failure counts as a connect failure (the
//!   request may be retried on another backend).
//!
//! [`UpstreamConnector`] plugs this into hyper-util's pooled client; the
//! L4 path ([`crate::tcp`]) and the health probers call
//! [`BackendTls::connect`] directly.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fulcrum_config::UpstreamTlsConfig;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::TlsError;

/// A cluster's client-side TLS setup; built once per upstream pool.
pub struct BackendTls {
    connector: TlsConnector,
    /// The same setup offering only `h2` by ALPN (cluster `http2`).
    h2: TlsConnector,
    sni: Option<ServerName<'static>>,
    backend_sni: HashMap<String, ServerName<'static>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// Reads the CA and client certificate files of `tls`.
    pub fn new(tls: &UpstreamTlsConfig, handshake_timeout: Duration) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = if tls.verify {
            builder.with_root_certificates(roots(tls.ca.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(
                    provider.signature_verification_algorithms,
                )))
        };
        let config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain = read_chain(&c.cert)?;
                let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| TlsError::File {
                    path: c.key.clone(),
                    reason: format!("cannot read the private key: {e}"),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        let name = |n: &str| {
            ServerName::try_from(n.to_owned()).map_err(|e| TlsError::File {
                path: n.to_owned(),
                reason: format!("not a TLS server name: {e}"),
            })
        };
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            h2: TlsConnector::from(Arc::new(h2)),
            sni: tls.sni.as_deref().map(name).transpose()?,
            backend_sni: tls
                .backend_sni
                .iter()
                .map(|(address, sni)| Ok((address.clone(), name(sni)?)))
                .collect::<Result<_, TlsError>>()?,
            handshake_timeout,
        })
    }

    /// The server name sent to and verified for the backend at `address`
    /// (`host:port`).
    pub fn server_name(&self, address: &str) -> io::Result<ServerName<'static>> {
        if let Some(n) = self.backend_sni.get(address).or(self.sni.as_ref()) {
            return Ok(n.clone());
        }
        let host = address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("backend {address}: no TLS server name ({e}); set tls.sni"),
            )
        })
    }

    /// Runs the client handshake with the backend at `address` over `tcp`,
    /// offering no application protocol (HTTP/1.1 is implied).
    pub async fn connect(&self, address: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.handshake(&self.connector, address, tcp).await
    }

    /// Like [`BackendTls::connect`], offering HTTP/2 (`h2`) by ALPN. A
    /// backend that picks no protocol is still spoken to in HTTP/2.
    pub async fn connect_h2(
        &self,
        address: &str,
        tcp: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        self.handshake(&self.h2, address, tcp).await
    }

    async fn handshake(
        &self,
        connector: &TlsConnector,
        address: &str,
        tcp: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self.server_name(address)?;
        tokio::time::timeout(self.handshake_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?
            .map_err(|e| io::Error::new(e.kind(), format!("tls handshake: {e}")))
    }
}

fn roots(ca: Option<&str>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for cert in read_chain(path)? {
                store.add(cert).map_err(|e| TlsError::File {
                    path: path.to_owned(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
    }
    Ok(store)
}

fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            reason: format!("cannot read the certificates: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(chain)
}

/// `verify = false`: any certificate is accepted; signatures are still
/// checked so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A cluster's loaded TLS setup, or why it failed to load.
pub type TlsSetup = Arc<Result<BackendTls, String>>;

/// The connector of an upstream pool: TCP (hyper-util's [`HttpConnector`]),
/// then TLS when the cluster has `tls`.
#[derive(Clone)]
pub struct UpstreamConnector {
    http: HttpConnector,
    /// `Err` holds why the cluster's TLS files could not be loaded: every
    /// connect then fails with it rather than going out in plain text.
    tls: Option<TlsSetup>,
}

impl fmt::Debug for UpstreamConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConnector")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl UpstreamConnector {
    /// Wraps `http`; `tls` turns TLS on.
    pub fn new(mut http: HttpConnector, tls: Option<Result<BackendTls, String>>) -> Self {
        if tls.is_some() {
            http.enforce_http(false);
        }
        Self {
            http,
            tls: tls.map(Arc::new),
        }
    }

    /// The TLS setup, if the cluster has `tls` and it loaded.
    pub fn tls(&self) -> Option<&TlsSetup> {
        self.tls.as_ref()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = tower_service::Service::<Uri>::call(&mut self.http, uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some(tls) = tls else {
                return Ok(TokioIo::new(UpstreamStream::Plain(tcp)));
            };
            let tls = (*tls)
                .as_ref()
                .map_err(|e| -> BoxError { e.clone().into() })?;
            let address = uri.authority().map_or("", |a| a.as_str());
            let stream = tls.connect(address, tcp).await?;
            Ok(TokioIo::new(UpstreamStream::Tls(Box::new(stream))))
        })
    }
}

/// A connection to a backend: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(s) => s.connected(),
            UpstreamStream::Tls(s) => s.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
