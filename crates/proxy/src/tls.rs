//! TLS termination with rustls (ring provider).
//!
//! * TLS 1.3 and 1.2 only, with rustls's cipher suites: all AEAD with
//!   forward secrecy (AES-GCM, ChaCha20-Poly1305; ECDHE for TLS 1.2), in
//!   the server's order (AES-128-GCM first, see [`preference`]). Nothing
//!   older can be negotiated: a TLS 1.1 client is refused.
//! * Several certificates per listener: the one whose subject names cover
//!   the client's SNI (exact or wildcard, as webpki checks a server name),
//!   else the default — also for clients that send no SNI.
//! * ALPN `h2` and `http/1.1` on http listeners; none on tcp listeners.
//! * Reload without dropping connections: the certificate set sits behind
//!   an `ArcSwap` inside the resolver. When the runtime's generation changes
//!   (a file reload or any applied command) the next accept re-reads the
//!   listener's certificate files; handshakes in flight keep the set they
//!   started with, established connections are untouched, and a set that
//!   fails to load is logged and the old one kept.
//! * Reload on file change: a task per listener polls the modification
//!   time and size of the loaded certificate and key files every
//!   [`CERT_POLL`] and, when one changed, loads the set again and swaps it
//!   in as above. A half-written pair (the key does not match the
//!   certificate, or a file does not parse) is skipped until the files
//!   change again. The task ends with the listener.
//! * A private key file readable by group or others draws a warning.
//! * Session resumption: stateless tickets (`session_tickets`, on by
//!   default; ring's ticketer, whose keys rotate every 6 hours) and a
//!   session cache of [`SESSION_CACHE`] entries, as HAProxy's default
//!   `tune.ssl.cachesize`, for clients without tickets or when tickets are
//!   off. Both live as long as the listener, so a reload keeps them; a
//!   reload that turns tickets on or off swaps the listener's rustls
//!   configuration for the next handshakes. A change of the client CAs
//!   (below) starts new ones: no session resumes across it.
//! * Client certificates (`client_ca`): every client must present a
//!   certificate that chains to one of the CAs in the file (webpki's
//!   checks: signature chain, validity period, and a client-auth key usage
//!   when the certificate states its usages); a client without one, or
//!   with another, fails the handshake; with `client_auth = "optional"` a
//!   client without one is let in too. The CA file is read with the
//!   certificates at start and at every reload. The certificate a client
//!   presented is told to backends ([`crate::client_cert`]).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use fulcrum_config::{CertificateConfig, ListenerConfig, Protocol, TlsConfig};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::state::Runtime;

/// How often the certificate and key files are checked for changes.
pub const CERT_POLL: Duration = Duration::from_secs(2);

/// Sessions a listener keeps for resumption by session ID.
pub const SESSION_CACHE: usize = 20_000;

/// Why a listener's certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is unreadable or not what it should be.
    #[error("{path}: {reason}")]
    File {
        /// The file from the configuration.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the setup.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// One listener's TLS acceptor with reloadable certificates.
pub struct TlsTerminator {
    listener: String,
    /// What the next handshakes run with.
    config: ArcSwap<ServerConfig>,
    resolver: Arc<Resolver>,
    /// The listener's ticket keys and session cache, shared by every
    /// configuration it gets while its client CAs stay the same.
    resumption: Mutex<Resumption>,
    /// The runtime generation the certificates were last loaded at.
    generation: AtomicU64,
}

/// What a session was established under, and where it is kept.
///
/// rustls resumes a session without asking for a client certificate again
/// (the session carries the one given at its full handshake, or none), so
/// sessions made under other client CAs — or before `client_ca` was set,
/// while a certificate was optional, or before a revocation — must not
/// resume: a change of the client CA file's content, of `client_auth` or of
/// the revocation lists starts new ticket keys and an empty cache.
struct Resumption {
    tickets: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    /// The client CAs the sessions were made under.
    client_ca: ClientCas,
}

impl Resumption {
    fn new(client_ca: ClientCas) -> Result<Self, TlsError> {
        Ok(Self {
            tickets: rustls::crypto::ring::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
            client_ca,
        })
    }
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsTerminator {
    /// Loads `listener`'s certificates; `None` if it has no `tls`.
    pub fn new(listener: &ListenerConfig, generation: u64) -> Result<Option<Self>, TlsError> {
        let Some(tls) = &listener.tls else {
            return Ok(None);
        };
        let resolver = Arc::new(Resolver {
            store: ArcSwap::from_pointee(CertStore::load(tls)?),
        });
        let (client_ca, verifier) = client_auth(tls)?;
        let resumption = Resumption::new(client_ca)?;
        let config = server_config(listener.protocol, &resolver, tls, &resumption, verifier)?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_files(
                listener.name.clone(),
                Arc::downgrade(&resolver),
            ));
        }
        Ok(Some(Self {
            listener: listener.name.clone(),
            config: ArcSwap::from_pointee(config),
            resolver,
            resumption: Mutex::new(resumption),
            generation: AtomicU64::new(generation),
        }))
    }

    /// Re-reads the certificate files and the client CA file, and takes a
    /// change of `session_tickets` or `client_ca`, if the runtime changed
    /// since the last load.
    pub fn refresh(&self, runtime: &Runtime) {
        let snapshot = runtime.snapshot();
        let generation = snapshot.generation;
        if self.generation.swap(generation, Ordering::AcqRel) == generation {
            return;
        }
        let Some((protocol, tls)) = snapshot
            .listeners
            .get(&self.listener)
            .and_then(|l| Some((l.config.protocol, l.config.tls.as_ref()?)))
        else {
            return;
        };
        if let Err(e) = self.reconfigure(protocol, tls) {
            tracing::error!(listener = %self.listener, error = %e, "cannot apply the new TLS settings (session_tickets, client_ca); keeping the previous ones");
        }
        match CertStore::load(tls) {
            Ok(store) => {
                self.resolver.store.store(Arc::new(store));
                tracing::info!(listener = %self.listener, generation, "certificates reloaded");
            }
            Err(e) => {
                tracing::error!(listener = %self.listener, error = %e, "certificate reload failed; keeping the loaded certificates");
            }
        }
    }

    /// Rebuilds the rustls configuration from `tls`: the client CA file
    /// may have changed. Sessions keep resuming unless it did.
    fn reconfigure(&self, protocol: Protocol, tls: &TlsConfig) -> Result<(), TlsError> {
        let (client_ca, verifier) = client_auth(tls)?;
        let mut resumption = self.resumption.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = (resumption.client_ca != client_ca)
            .then(|| Resumption::new(client_ca))
            .transpose()?;
        let tickets_changed = tls.session_tickets != self.config.load().ticketer.enabled();
        let config = server_config(
            protocol,
            &self.resolver,
            tls,
            fresh.as_ref().unwrap_or(&resumption),
            verifier,
        )?;
        self.config.store(Arc::new(config));
        if let Some(fresh) = fresh {
            *resumption = fresh;
            tracing::info!(listener = %self.listener, "client certificate authorities changed; earlier TLS sessions will not resume");
        }
        if tickets_changed {
            tracing::info!(listener = %self.listener, session_tickets = tls.session_tickets, "session tickets changed");
        }
        Ok(())
    }

    /// Runs the server handshake on an accepted connection.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<TlsStream<S>> {
        TlsAcceptor::from(self.config.load_full())
            .accept(stream)
            .await
    }
}

/// Where a cipher suite comes in the server's order: TLS 1.3 first, and
/// within a version AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305,
/// as BoringSSL (so Envoy) and Go's TLS order them. AES-128 matches the
/// 128-bit strength of the X25519 and P-256 key exchanges; its TLS 1.3
/// suite's key schedule runs on SHA-256, which has CPU instructions where
/// SHA-384 does not, and its rounds are fewer: a full handshake cost 11 %
/// less CPU than with AES-256-GCM (docs/benchmarks.md, "Tenth session").
fn preference(suite: &rustls::SupportedCipherSuite) -> (bool, u8) {
    use rustls::CipherSuite as C;
    let bulk = match suite.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    (suite.tls13().is_none(), bulk)
}

/// The rustls setup of a listener: its certificates, TLS 1.3 and 1.2, ALPN
/// on http listeners, resumption by the stateless tickets of `resumption`
/// when `tls.session_tickets`, else by its session cache alone, and client
/// certificates checked by `clients` when given.
fn server_config(
    protocol: Protocol,
    resolver: &Arc<Resolver>,
    tls: &TlsConfig,
    resumption: &Resumption,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(preference);
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(resolver) as Arc<dyn ResolvesServerCert>);
    // The server's cipher order ([`preference`]) decides, not the client's.
    config.ignore_client_order = true;
    if protocol == Protocol::Http {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    config.session_storage = Arc::clone(&resumption.sessions);
    if tls.session_tickets {
        config.ticketer = Arc::clone(&resumption.tickets);
    }
    Ok(config)
}

/// What client certificates are checked against: the client CA file's
/// content, the revocation lists' and whether a certificate is optional.
type ClientCas = Option<(Vec<u8>, Vec<u8>, bool)>;

/// The client CAs, and the check of client certificates against them.
type ClientAuth = (ClientCas, Option<Arc<dyn ClientCertVerifier>>);

/// Reads `tls.client_ca` and builds its check; `None`s without one.
fn client_auth(tls: &TlsConfig) -> Result<ClientAuth, TlsError> {
    let Some(path) = &tls.client_ca else {
        return Ok((None, None));
    };
    let fail = |reason: String| TlsError::File {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    let builder = if tls.client_cert_optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let (builder, crl_pem) = match &tls.client_crl {
        None => (builder, Vec::new()),
        Some(path) => {
            let fail = |reason: String| TlsError::File {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if crls.is_empty() {
                return Err(fail("holds no PEM revocation list".into()));
            }
            (builder.with_crls(crls), pem)
        }
    };
    let verifier = builder.build().map_err(|e| fail(e.to_string()))?;
    Ok((
        Some((pem, crl_pem, tls.client_cert_optional)),
        Some(verifier),
    ))
}

/// Reloads a listener's certificates when their files change, until the
/// listener (its resolver) is gone.
async fn watch_files(listener: String, resolver: Weak<Resolver>) {
    // The stamps of files that failed to load: not retried until they change.
    let mut failed: Option<Vec<Stamp>> = None;
    loop {
        tokio::time::sleep(CERT_POLL).await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let current = resolver.store.load_full();
        let now = stamps(&current.source);
        if now == current.stamps || failed.as_ref() == Some(&now) {
            continue;
        }
        match CertStore::load(&current.source) {
            Ok(store) => {
                resolver.store.store(Arc::new(store));
                failed = None;
                tracing::info!(listener = %listener, "certificate files changed; certificates reloaded");
            }
            Err(e) => {
                tracing::warn!(listener = %listener, error = %e, "certificate files changed but do not load; keeping the loaded certificates");
                failed = Some(now);
            }
        }
    }
}

/// A file's modification time and size, to notice a replaced file.
type Stamp = Option<(SystemTime, u64)>;

/// The stamps of every certificate and key file of `tls`, in a fixed order.
fn stamps(tls: &TlsConfig) -> Vec<Stamp> {
    std::iter::once(&tls.default)
        .chain(&tls.certificates)
        .flat_map(|c| [&c.cert, &c.key])
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// The certificates of one listener.
struct CertStore {
    default: Arc<CertifiedKey>,
    named: Vec<Arc<CertifiedKey>>,
    /// What was loaded, for the file watcher.
    source: TlsConfig,
    /// The files' stamps taken just before they were read.
    stamps: Vec<Stamp>,
}

impl CertStore {
    fn load(tls: &TlsConfig) -> Result<Self, TlsError> {
        let stamps = stamps(tls);
        Ok(Self {
            source: tls.clone(),
            stamps,
            default: certified_key(&tls.default)?,
            named: tls
                .certificates
                .iter()
                .map(certified_key)
                .collect::<Result<_, _>>()?,
        })
    }

    fn for_name(&self, name: &str) -> Arc<CertifiedKey> {
        let Ok(server_name) = ServerName::try_from(name) else {
            return Arc::clone(&self.default);
        };
        self.named
            .iter()
            .find(|ck| covers(ck, &server_name))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Whether a certificate's subject names cover `name` (wildcards included).
fn covers(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
    let Some(leaf) = ck.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

#[derive(Debug)]
struct Resolver {
    store: ArcSwap<CertStore>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertStore({} named)", self.named.len())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        Some(match hello.server_name() {
            Some(name) => store.for_name(name),
            None => Arc::clone(&store.default),
        })
    }
}

fn certified_key(c: &CertificateConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_error = |path: &str, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| file_error(&c.cert, format!("cannot read the certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(&c.cert, "no PEM certificate in the file".into()));
    }
    warn_if_readable_by_others(&c.key);
    let key = PrivateKeyDer::from_pem_file(&c.key)
        .map_err(|e| file_error(&c.key, format!("cannot read the private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| file_error(&c.key, format!("unsupported private key: {e}")))?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(file_error(
                &c.key,
                format!("does not belong to the certificate in {}: {e}", c.cert),
            ))
        }
    }
    Ok(Arc::new(key))
}

/// Private keys should be `0600` (or `0400`): anyone who reads the key can
/// impersonate the site.
fn warn_if_readable_by_others(path: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = path,
                    mode = format!("{mode:04o}"),
                    "private key file is accessible to group or others; chmod 600 it"
                );
            }
        }
    }
}
