//! The validated configuration model.
//!
//! Every value here has been checked and has its default filled in; the
//! runtime never re-validates. The model is also what the admin API edits
//! (through [`crate::Command`]s) and what `GET /api/v1/config` shows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_balance::selector::Location;
use fulcrum_balance::{AdminState, Algorithm};

/// A whole, valid configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The admin listener.
    pub admin: AdminConfig,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// Listeners in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Where the admin API listens.
    pub bind: SocketAddr,
    /// File holding the bearer token, if any.
    pub token_file: Option<String>,
}

/// Default admin address: loopback only, so the API is never exposed by accident.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_ADMIN_BIND.parse().expect("valid default"),
            token_file: None,
        }
    }
}

/// `[runtime]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeConfig {
    /// Worker threads; `None` means one per core.
    pub worker_threads: Option<usize>,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge) — L7.
    Http,
    /// Raw TCP — L4.
    Tcp,
    /// UDP datagrams — L4.
    Udp,
}

impl Protocol {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Limits and timeouts on the client side of an HTTP listener.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpLimits {
    /// Time to receive one HTTP/1 request head, counted from its first
    /// byte (and the TLS handshake, counted from accept); closes slowloris
    /// connections. A kept-alive connection waiting for its next request is
    /// not timed by it.
    pub header_timeout: Duration,
    /// Connections with no bytes moving either way for this long are
    /// closed; this alone bounds an idle keep-alive connection.
    pub idle_timeout: Duration,
    /// Largest request head in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Most headers in one request (431 beyond it).
    pub max_headers: usize,
    /// Most concurrent client connections; new ones wait in the accept queue.
    pub max_connections: usize,
    /// Longest request target (path and query) in bytes (414 beyond it).
    pub max_uri_bytes: usize,
    /// Largest request body in bytes (413 when Content-Length exceeds it).
    pub max_body_bytes: u64,
    /// Requests served on one HTTP/1 connection before it is closed.
    pub max_requests_per_connection: u64,
    /// Most concurrent connections from one client address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Window over which a request body's arrival rate is measured; the
    /// first window is the grace period. A body that brings less than
    /// `min_body_rate × body_timeout` bytes (and at least one byte) in a
    /// window is cut: 408 if no response has started, then close.
    pub body_timeout: Duration,
    /// Slowest request body accepted, in bytes per second averaged over
    /// `body_timeout`; 0 keeps only the "one byte per window" rule.
    pub min_body_rate: u64,
    /// Most concurrent HTTP/2 streams per client connection; more are
    /// refused with `REFUSED_STREAM`.
    pub max_concurrent_streams: u32,
}

/// 10 s to send a request head: generous for humans on bad links, short
/// enough that slowloris connections do not pile up (NGINX uses 60 s,
/// HAProxy's recommended `timeout http-request` is 10 s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// 60 s idle keep-alive, in line with NGINX (75 s) and Envoy (1 h is too long for a front proxy).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// 64 KiB of request head: above any legitimate cookie load, far below memory trouble.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// 100 headers, as Envoy and hyper's default.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// 10 000 concurrent client connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// 8 KiB request targets: what most servers and caches accept (RFC 9110
/// §4.1 recommends at least 8 000 octets); longer ones are mostly attacks.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// 1 GiB request bodies: uploads pass, a client cannot stream forever into
/// a backend by declaring an absurd length. Lower it per listener.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;
/// 1 000 requests per keep-alive connection, as NGINX's `keepalive_requests`:
/// long-lived connections are recycled, so memory held per connection and
/// load pinned to one worker are bounded.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 1_000;
/// 1 024 connections from one address: one client (or one NAT) cannot take
/// the whole `max_connections` of a listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_024;
/// 60 s windows for request bodies, as NGINX's `client_body_timeout`: long
/// enough for a stalled mobile link to recover, short enough that a slow
/// POST (R.U.D.Y.) cannot hold a connection and a backend request for long.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// 1 KiB/s: far below any working link (a 2G EDGE upload manages ~20 KiB/s),
/// and it makes a slow-POST attacker pay 60 KiB per connection per minute
/// (Apache's `mod_reqtimeout` asks for 500 B/s). Long-lived streaming
/// uploads that legitimately idle must lower it or lengthen `body_timeout`.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1_024;
/// 256 concurrent HTTP/2 streams per connection: above what browsers open
/// (Chrome and Firefox stay around 100), low enough that one connection
/// cannot fan out into thousands of backend requests.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// One listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name.
    pub name: String,
    /// Bound address.
    pub bind: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Cluster for unmatched requests; `None` answers 404.
    pub cluster: Option<String>,
    /// Routes, first match wins.
    pub routes: Vec<RouteConfig>,
    /// Client-side limits.
    pub limits: HttpLimits,
    /// Networks allowed to ask for decision headers with `x-fulcrum-debug: 1`.
    pub debug_from: Vec<IpNet>,
    /// TLS termination, if configured.
    pub tls: Option<TlsConfig>,
    /// SNI routes of a tcp listener (TLS passthrough), first match wins.
    pub sni_routes: Vec<SniRoute>,
    /// Whether clients must start with a PROXY protocol header (tcp listeners).
    pub accept_proxy_protocol: bool,
    /// Peers trusted to send PROXY headers; others are refused.
    pub proxy_protocol_from: Vec<IpNet>,
    /// Most concurrent UDP flows (udp listeners); new flows beyond it are dropped.
    pub max_flows: usize,
    /// Networks whose `x-fulcrum-priority` header sets the priority class.
    pub priority_from: Vec<IpNet>,
    /// Networks whose `x-client-location` header (`lat,lon` or a zone name)
    /// places the client for the `geo` selector.
    pub location_from: Vec<IpNet>,
    /// MaxMind-format database placing clients by address, if any.
    pub geoip_db: Option<String>,
    /// Clients allowed to use the listener (403 for others); empty allows all.
    pub allow: Vec<IpNet>,
    /// Clients refused with 403; checked before `allow`.
    pub deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is kept and appended to; from any
    /// other peer the header is replaced by the peer's address.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether the kernel hands over a connection only once the client has
    /// sent its first bytes (`TCP_DEFER_ACCEPT`); by default where clients
    /// speak first (http listeners; tcp with TLS, SNI routes or PROXY headers).
    pub defer_accept: bool,
    /// Where and how the listener's requests are logged, if they are.
    pub access_log: Option<AccessLogConfig>,
    /// Whether every request gets an `X-Request-Id` (a new one unless a
    /// trusted proxy sent one), sent to the backend and the client.
    pub request_id: bool,
}

/// A listener's access log: one line per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The file appended to; `-` is standard output.
    pub path: String,
    /// The lines' format.
    pub format: AccessLogFormat,
}

/// How an access log's lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// NGINX's `combined` format, then the request time and the backend.
    Combined,
}

impl AccessLogFormat {
    /// The format's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Json => "json",
            AccessLogFormat::Combined => "combined",
        }
    }
}

/// 65 536 UDP flows: one per client address, each one socket and a task; far
/// beyond a DNS or game server's concurrent clients, far below fd limits' trouble.
pub const DEFAULT_MAX_FLOWS: usize = 65_536;

/// TLS termination: a default certificate and more chosen by SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Served when the client sends no SNI or a name no certificate covers.
    pub default: CertificateConfig,
    /// Certificates chosen by the names they cover, in file order.
    pub certificates: Vec<CertificateConfig>,
    /// Resumed sessions are carried by stateless tickets the client keeps
    /// (encrypted with keys that rotate); otherwise only the server's own
    /// session cache resumes them.
    pub session_tickets: bool,
    /// PEM file of the CAs that sign client certificates: when set, every
    /// client must present a certificate one of them signed (unless
    /// `client_cert_optional`).
    pub client_ca: Option<String>,
    /// With `client_ca`: clients without a certificate are let in too (a
    /// certificate, when given, must still be one the CAs signed).
    pub client_cert_optional: bool,
    /// PEM file of the client CAs' revocation lists: a revoked client
    /// certificate is refused.
    pub client_crl: Option<String>,
}

/// One certificate chain and its private key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Path of the PEM certificate chain.
    pub cert: String,
    /// Path of the PEM private key.
    pub key: String,
}

/// A tcp listener's route by TLS server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniRoute {
    /// Exact name or `*.suffix`.
    pub sni: HostMatch,
    /// Target cluster.
    pub cluster: String,
}

/// PROXY protocol version sent to backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// An IP network in CIDR notation (`127.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a host network).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse().ok()?, None),
        };
        let max = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            (IpAddr::V6(_), IpAddr::V4(a)) => self.contains(IpAddr::V6(a.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How a route matches a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any host ending in this suffix (`.example.com`, from `*.example.com`).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (lowercase, port stripped) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// One route: matchers (all must hold), a target, and actions.
///
/// The target is exactly one of `cluster`, `split` (weighted clusters) or
/// `redirect`; `cluster` is empty for the other two.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteConfig {
    /// Host match, if any.
    pub host: Option<HostMatch>,
    /// Path prefix, if any.
    pub path_prefix: Option<String>,
    /// Target cluster (empty when the route splits or redirects).
    pub cluster: String,
    /// Exact path, if any.
    pub path: Option<String>,
    /// Regular expression the whole path must match (validated), if any.
    pub path_regex: Option<String>,
    /// Accepted methods (uppercase); empty accepts any.
    pub methods: Vec<String>,
    /// Header matchers by lowercase name, all must hold.
    pub headers: Vec<(String, ValueMatch)>,
    /// Query parameter matchers by name, all must hold.
    pub query: Vec<(String, ValueMatch)>,
    /// Weighted split across clusters (canary); empty unless configured.
    pub split: Vec<WeightedCluster>,
    /// Edits to the request headers sent upstream.
    pub request_headers: HeaderRewrite,
    /// Edits to the response headers sent to the client.
    pub response_headers: HeaderRewrite,
    /// Replacement for the matched `path_prefix` in the upstream path.
    pub rewrite_prefix: Option<String>,
    /// Answer with a redirect instead of proxying.
    pub redirect: Option<Redirect>,
    /// Per-route rate limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// Priority class of matching requests; `None` leaves the request to
    /// the header or the cluster's default class.
    pub priority: Option<String>,
    /// Largest request body on this route; `None` keeps the listener's
    /// `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Clients allowed on this route (403 for others); empty allows all
    /// the listener lets in.
    pub allow: Vec<IpNet>,
    /// Clients refused with 403 on this route; checked before `allow`.
    pub deny: Vec<IpNet>,
}

/// How a header or query parameter must look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// Present with any value.
    Present,
    /// Absent.
    Absent,
    /// Some value equals this.
    Exact(String),
    /// Some value matches this regular expression (validated).
    Regex(String),
}

/// One cluster of a weighted split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedCluster {
    /// Cluster name.
    pub cluster: String,
    /// Relative share (0 sends nothing).
    pub weight: u32,
}

/// Header edits, applied in the order remove, set, add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRewrite {
    /// Replace (or insert) these headers; names lowercase.
    pub set: Vec<(String, String)>,
    /// Append these headers; names lowercase.
    pub add: Vec<(String, String)>,
    /// Remove these headers; names lowercase.
    pub remove: Vec<String>,
}

impl HeaderRewrite {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A redirect answered by the proxy. Unset parts keep the request's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Host (and port).
    pub host: Option<String>,
    /// Path; when unset the request's path (after `rewrite_prefix`).
    pub path: Option<String>,
    /// 301, 302, 307 or 308.
    pub status: u16,
}

/// 302 by default: a temporary redirect is not cached for ever by browsers,
/// so a mistaken rule can be taken back (Envoy defaults to 301, NGINX's
/// `return` to 302).
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// What a rate limit keeps one bucket for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RateLimitKey {
    /// The client's IP address.
    #[default]
    ClientIp,
    /// A request header's value (lowercase name); requests without it share
    /// one bucket.
    Header(String),
}

impl std::fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimitKey::ClientIp => f.write_str("client-ip"),
            RateLimitKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// A route's token-bucket rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Tokens added per `per`.
    pub rate: u32,
    /// The period of `rate`.
    pub per: Duration,
    /// Bucket size: requests allowed at once after a quiet spell.
    pub burst: u32,
    /// What a bucket is kept for.
    pub key: RateLimitKey,
    /// Redis URL for limits shared across instances (fixed windows of `per`
    /// holding `rate` requests each).
    pub redis: Option<String>,
}

/// Sticky sessions of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyConfig {
    /// Cookie name.
    pub cookie: String,
    /// Cookie lifetime (`Max-Age`).
    pub ttl: Duration,
    /// Secret mixed into the opaque cookie value.
    pub secret: String,
}

/// `fulcrum_sticky`: names the proxy, not the application.
pub const DEFAULT_STICKY_COOKIE: &str = "fulcrum_sticky";
/// One hour: a typical web session; long enough for a user's visit, short
/// enough that a re-balanced cluster evens out within the hour.
pub const DEFAULT_STICKY_TTL: Duration = Duration::from_secs(3600);

/// One cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Name (the key under `[cluster]`).
    pub name: String,
    /// Selector.
    pub algorithm: Algorithm,
    /// Backends in file order.
    pub backends: Vec<BackendConfig>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for the upstream response headers.
    pub response_timeout: Duration,
    /// Idle upstream connections close after this long.
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per backend.
    pub pool_max_idle: usize,
    /// τ of the peak-EWMA average.
    pub ewma_decay: Duration,
    /// Slow-start window (zero: off).
    pub slow_start: Duration,
    /// Request key for hashing selectors.
    pub hash_key: HashKey,
    /// Bounded-load factor c of `ring-hash` and `maglev`.
    pub balance_factor: f64,
    /// Whether backends' ORCA load reports feed Load.
    pub load_reports: bool,
    /// Whether requests go to the backends over HTTP/2 (h2c without
    /// `tls`, h2 by ALPN with it) instead of HTTP/1.1.
    pub http2: bool,
    /// Active health checks, if configured.
    pub health: Option<HealthConfig>,
    /// Passive health checks (outlier detection).
    pub outlier: OutlierConfig,
    /// Retries after the first attempt (so `retries + 1` attempts at most).
    pub retries: u32,
    /// Share of requests that may be retried (the retry budget's ratio).
    pub retry_budget: f64,
    /// Retries per second allowed whatever the ratio (the budget's floor).
    pub retry_budget_min: u32,
    /// Time allowed for one attempt's response headers; `None` uses
    /// `response_timeout`, which always bounds the request as a whole.
    pub try_timeout: Option<Duration>,
    /// Percent of healthy enabled backends below which the cluster ignores
    /// health (panic mode); 0 never panics.
    pub panic_threshold: u32,
    /// PROXY protocol header sent to backends by L4 listeners.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Sticky sessions by cookie, if configured.
    pub sticky: Option<StickyConfig>,
    /// `geo`: requests in flight per backend above which its zone is full.
    pub geo_max_in_flight: u32,
    /// Concurrency limit and priority queue; `None` admits everything.
    pub admission: Option<AdmissionConfig>,
    /// TLS to the backends, if configured.
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS from Fulcrum to a cluster's backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// PEM file of trusted CAs; `None` trusts the Mozilla root set.
    pub ca: Option<String>,
    /// Server name for every backend; `None` uses each address's host.
    pub sni: Option<String>,
    /// Server names of single backends (`tls_sni`), by address.
    pub backend_sni: std::collections::BTreeMap<String, String>,
    /// Client certificate and key presented to backends (mTLS).
    pub client_cert: Option<CertificateConfig>,
    /// Whether backends' certificates are verified (default true).
    pub verify: bool,
}

/// A cluster's admission control: concurrency limit, priority queue,
/// shedding.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionConfig {
    /// The static limit, or the adaptive limit's starting point.
    pub limit: u32,
    /// Whether the limit adapts to latency (gradient algorithm).
    pub adaptive: bool,
    /// Lowest adaptive limit.
    pub min_limit: u32,
    /// Highest adaptive limit.
    pub max_limit: u32,
    /// Longest wait in the queue; then the request is shed (503).
    pub queue_timeout: Duration,
    /// Most waiting requests; a full queue sheds its least important.
    pub max_queue: usize,
    /// Class names, most important first (rank = position).
    pub classes: Vec<String>,
    /// Rank of requests nobody classified.
    pub default_rank: u8,
}

/// The classes when none are configured, most important first.
pub const DEFAULT_CLASSES: &[&str] = &["critical", "normal", "bulk"];
/// Most priority classes: ranks are a byte, and more than a handful of
/// classes is a sign the classification belongs elsewhere.
pub const MAX_CLASSES: usize = 16;
/// A second in the queue: far longer than a healthy wait for a slot (one
/// service time), short enough that a client still wants the answer.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// 1 000 waiting requests: a few KiB each, and a second's worth at 1 000 req/s.
pub const DEFAULT_MAX_QUEUE: usize = 1000;
/// Starting limit of an adaptive cluster when `limit` is not given.
pub const DEFAULT_ADAPTIVE_LIMIT: u32 = 20;

impl AdmissionConfig {
    /// The rank of class `name` (0 = most important).
    pub fn rank(&self, name: &str) -> Option<u8> {
        self.classes.iter().position(|c| c == name).map(|r| r as u8)
    }

    /// The name of rank `rank`.
    pub fn class_name(&self, rank: u8) -> &str {
        self.classes.get(rank as usize).map_or("", String::as_str)
    }
}

/// Two retries (three attempts) by default: rides out two dead backends
/// without letting one request hammer a whole cluster.
pub const DEFAULT_RETRIES: u32 = 2;
/// Most retries a cluster may configure.
pub const MAX_RETRIES: u32 = 5;

/// Passive health checking: eject backends that fail requests in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failed requests in a row (5xx, connect failure, reset, timeout) that
    /// eject a backend; 0 turns outlier detection off.
    pub consecutive_failures: u32,
    /// First ejection length; the n-th recent ejection lasts n times this.
    pub base_ejection: Duration,
    /// Longest single ejection.
    pub max_ejection: Duration,
    /// Most of the cluster ejected at once (percent; at least one backend).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        use fulcrum_balance::health as h;
        Self {
            consecutive_failures: h::DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: Duration::from_nanos(h::DEFAULT_BASE_EJECTION),
            max_ejection: Duration::from_nanos(h::DEFAULT_MAX_EJECTION),
            max_ejection_percent: h::DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// What a hashing selector hashes to keep a client or object on one backend.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client's IP address (the default).
    #[default]
    ClientIp,
    /// The request path (without query).
    Path,
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

impl HashKey {
    /// Parses `client-ip`, `path`, `header:NAME`, `cookie:NAME`.
    pub fn parse(s: &str) -> Option<HashKey> {
        match s.split_once(':') {
            None if s == "client-ip" => Some(HashKey::ClientIp),
            None if s == "path" => Some(HashKey::Path),
            Some(("header", name)) if !name.is_empty() => {
                Some(HashKey::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if !name.is_empty() => Some(HashKey::Cookie(name.to_owned())),
            _ => None,
        }
    }
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client-ip"),
            HashKey::Path => f.write_str("path"),
            HashKey::Header(h) => write!(f, "header:{h}"),
            HashKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

/// 1 s to connect: on a LAN a connect takes well under a millisecond, so a
/// second means the backend is gone; failing fast lets a retry go elsewhere.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// 30 s for response headers, NGINX's `proxy_read_timeout` is 60 s; 30 s
/// bounds what a client waits on a stuck backend without cutting slow reports.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// 90 s idle upstream connections, hyper's default.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// 256 idle upstream connections per backend.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// 10 s peak-EWMA τ (Finagle's default).
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

impl ClusterConfig {
    /// A cluster with default settings.
    pub fn new(
        name: impl Into<String>,
        algorithm: Algorithm,
        backends: Vec<BackendConfig>,
    ) -> Self {
        Self {
            name: name.into(),
            algorithm,
            backends,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            ewma_decay: DEFAULT_EWMA_DECAY,
            slow_start: Duration::ZERO,
            hash_key: HashKey::ClientIp,
            balance_factor: fulcrum_balance::selector::DEFAULT_BALANCE_FACTOR,
            load_reports: true,
            http2: false,
            health: None,
            outlier: OutlierConfig::default(),
            retries: DEFAULT_RETRIES,
            retry_budget: fulcrum_balance::retry_budget::DEFAULT_RATIO,
            retry_budget_min: fulcrum_balance::retry_budget::DEFAULT_MIN_PER_SECOND,
            try_timeout: None,
            panic_threshold: fulcrum_balance::health::DEFAULT_PANIC_THRESHOLD,
            proxy_protocol: None,
            sticky: None,
            geo_max_in_flight: fulcrum_balance::selector::DEFAULT_GEO_MAX_IN_FLIGHT,
            admission: None,
            tls: None,
        }
    }
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// `host:port`; identity within the cluster.
    pub address: String,
    /// Relative share.
    pub weight: u32,
    /// Operator state.
    pub state: AdminState,
    /// Zone, region and coordinates (for `geo`), if configured.
    pub location: Option<Location>,
}

impl BackendConfig {
    /// An enabled backend with no location.
    pub fn new(address: impl Into<String>, weight: u32) -> Self {
        Self {
            address: address.into(),
            weight,
            state: AdminState::Enabled,
            location: None,
        }
    }
}

/// Largest weight accepted: keeps smooth weighted round-robin schedules short.
pub const MAX_WEIGHT: u32 = 10_000;

/// What an active probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthKind {
    /// `GET path` expecting a 2xx or 3xx.
    Http {
        /// Path to request.
        path: String,
    },
    /// A TCP connect.
    Tcp,
    /// The gRPC health protocol (`grpc.health.v1.Health/Check`) over
    /// HTTP/2, expecting `SERVING`.
    Grpc {
        /// Service asked about; empty asks about the whole server.
        service: String,
    },
}

/// Active health checking of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Probe kind.
    pub kind: HealthKind,
    /// Time between probes.
    pub interval: Duration,
    /// Time allowed for one probe.
    pub timeout: Duration,
    /// Consecutive successes to mark a backend up.
    pub rise: u32,
    /// Consecutive failures to mark a backend down.
    pub fall: u32,
    /// HTTP checks: the method (default `GET`).
    pub method: String,
    /// HTTP checks: the Host header (default: the backend's address).
    pub host: Option<String>,
    /// HTTP checks: accepted status ranges, inclusive (default 200-399).
    pub expect_status: Vec<(u16, u16)>,
    /// HTTP checks: text the body must contain, if any.
    pub body_contains: Option<String>,
    /// Up to this much random time is added to each interval, so probes of
    /// many proxies and backends do not synchronise.
    pub jitter: Duration,
    /// Time between probes while a backend is down: shorter, so a recovered
    /// backend is back sooner.
    pub unhealthy_interval: Duration,
    /// TCP checks: bytes sent once connected, if any.
    pub send: Option<String>,
    /// TCP checks: the reply must start with these bytes, if set.
    pub expect: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: HealthKind::Http {
                path: "/healthz".into(),
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            method: "GET".into(),
            host: None,
            expect_status: vec![(200, 399)],
            body_contains: None,
            jitter: Duration::from_millis(100),
            unhealthy_interval: Duration::from_millis(500),
            send: None,
            expect: None,
        }
    }
}

impl HealthConfig {
    /// Whether an HTTP check's answer `status` counts as a pass.
    pub fn accepts_status(&self, status: u16) -> bool {
        self.expect_status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}
