//! The TOML file shapes (`File*`), exactly as an operator writes them.
//!
//! Nothing here is validated beyond TOML types: addresses, durations and
//! algorithm names stay strings so that [`crate::validate`] can report every
//! problem at once, each with its key path. Unknown keys are not rejected by
//! serde (that would stop at the first); they are collected with
//! `serde_ignored` and reported together with the other problems.
//!
//! Every struct lists its keys in a `KEYS` constant used for "did you mean"
//! suggestions; a test keeps the lists in step with the fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileConfig {
    /// The admin listener.
    pub admin: Option<FileAdmin>,
    /// Process-wide runtime settings.
    pub runtime: Option<FileRuntime>,
    /// Listeners, in order.
    #[serde(default)]
    pub listener: Vec<FileListener>,
    /// Clusters by name.
    #[serde(default)]
    pub cluster: BTreeMap<String, FileCluster>,
}

impl FileConfig {
    /// Top-level keys.
    pub const KEYS: &'static [&'static str] = &["admin", "runtime", "listener", "cluster"];
}

/// `[admin]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileAdmin {
    /// `host:port` of the admin API.
    pub bind: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<String>,
}

impl FileAdmin {
    /// Keys of `[admin]`.
    pub const KEYS: &'static [&'static str] = &["bind", "token_file"];
}

/// `[runtime]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileRuntime {
    /// Tokio worker threads (default: one per core).
    pub worker_threads: Option<usize>,
}

impl FileRuntime {
    /// Keys of `[runtime]`.
    pub const KEYS: &'static [&'static str] = &["worker_threads"];
}

/// One `[[listener]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileListener {
    /// Unique name, used in logs and metrics.
    pub name: Option<String>,
    /// `host:port` to bind.
    pub bind: Option<String>,
    /// `http` (default), `tcp` or `udp`.
    pub protocol: Option<String>,
    /// Cluster for requests no route matches.
    pub cluster: Option<String>,
    /// Time allowed to receive a request's headers.
    pub header_timeout: Option<String>,
    /// How long an idle keep-alive client connection is kept.
    pub idle_timeout: Option<String>,
    /// Largest request head (request line plus headers) in bytes.
    pub max_header_bytes: Option<usize>,
    /// Most headers in one request.
    pub max_headers: Option<usize>,
    /// Most concurrent client connections.
    pub max_connections: Option<usize>,
    /// Longest request target in bytes (414 beyond it).
    pub max_uri_bytes: Option<usize>,
    /// Largest request body in bytes (413 beyond it).
    pub max_body_bytes: Option<u64>,
    /// Requests on one HTTP/1 connection before it is closed.
    pub max_requests_per_connection: Option<u64>,
    /// Window over which a request body's rate is measured; also the
    /// grace period before the first measurement.
    pub body_timeout: Option<String>,
    /// Slowest request body accepted, in bytes per second over `body_timeout`.
    pub min_body_rate: Option<u64>,
    /// Most concurrent HTTP/2 streams one client connection may open.
    pub max_concurrent_streams: Option<u32>,
    /// Most concurrent connections from one client address.
    pub max_connections_per_ip: Option<usize>,
    /// Clients whose `x-fulcrum-debug: 1` header is honoured (CIDRs or addresses).
    pub debug_from: Option<Vec<String>>,
    /// Clients whose `x-fulcrum-priority` header is honoured (CIDRs or addresses).
    pub priority_from: Option<Vec<String>>,
    /// Clients whose `x-client-location` header is honoured (CIDRs or addresses).
    pub location_from: Option<Vec<String>>,
    /// MaxMind-format database (`.mmdb`) locating clients by IP address.
    pub geoip_db: Option<String>,
    /// Routes, first match wins.
    #[serde(default)]
    pub route: Vec<FileRoute>,
    /// TLS termination (http and tcp listeners).
    pub tls: Option<FileTls>,
    /// Expect a PROXY protocol (v1 or v2) header from every client (tcp listeners).
    pub accept_proxy_protocol: Option<bool>,
    /// Upstream load balancers trusted to send PROXY headers (CIDRs or addresses).
    pub proxy_protocol_from: Option<Vec<String>>,
    /// Most concurrent UDP flows (udp listeners).
    pub max_flows: Option<usize>,
    /// Clients allowed (CIDRs or addresses); others get 403. Absent allows all.
    pub allow: Option<Vec<String>>,
    /// Clients refused with 403 (CIDRs or addresses).
    pub deny: Option<Vec<String>>,
    /// Peers whose `X-Forwarded-For` is trusted (CIDRs or addresses).
    pub trusted_proxies: Option<Vec<String>>,
    /// Accept a connection only once its first bytes arrived (`TCP_DEFER_ACCEPT`).
    pub defer_accept: Option<bool>,
    /// File the listener's requests are logged to, one line each (`"-"`:
    /// standard output).
    pub access_log: Option<String>,
    /// `json` (default) or `combined`.
    pub access_log_format: Option<String>,
    /// Give every request an `X-Request-Id` (kept from trusted proxies).
    pub request_id: Option<bool>,
}

impl FileListener {
    /// Keys of `[[listener]]`.
    pub const KEYS: &'static [&'static str] = &[
        "name",
        "bind",
        "protocol",
        "cluster",
        "header_timeout",
        "idle_timeout",
        "max_header_bytes",
        "max_headers",
        "max_connections",
        "max_uri_bytes",
        "max_body_bytes",
        "max_requests_per_connection",
        "body_timeout",
        "min_body_rate",
        "max_concurrent_streams",
        "max_connections_per_ip",
        "debug_from",
        "priority_from",
        "location_from",
        "geoip_db",
        "route",
        "tls",
        "accept_proxy_protocol",
        "proxy_protocol_from",
        "max_flows",
        "allow",
        "deny",
        "trusted_proxies",
        "defer_accept",
        "access_log",
        "access_log_format",
        "request_id",
    ];
}

/// `tls = { cert, key }` or `[listener.tls]` of a listener.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileTls {
    /// PEM certificate chain of the default certificate.
    pub cert: Option<String>,
    /// PEM private key of the default certificate.
    pub key: Option<String>,
    /// More certificates, chosen by SNI from their subject names.
    pub certificates: Option<Vec<FileCertificate>>,
    /// Stateless session tickets for resumption (default true).
    pub session_tickets: Option<bool>,
    /// PEM file of the CAs whose client certificates are accepted; with it,
    /// every client must present one (unless `client_auth = "optional"`).
    pub client_ca: Option<String>,
    /// `required` (default) or `optional`: whether a client without a
    /// certificate is let in.
    pub client_auth: Option<String>,
    /// PEM file of certificate revocation lists (CRLs) of the client CAs.
    pub client_crl: Option<String>,
}

impl FileTls {
    /// Keys of `[listener.tls]`.
    pub const KEYS: &'static [&'static str] = &[
        "cert",
        "key",
        "certificates",
        "session_tickets",
        "client_ca",
        "client_auth",
        "client_crl",
    ];
}

/// One `[[listener.tls.certificates]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileCertificate {
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

impl FileCertificate {
    /// Keys of `[[listener.tls.certificates]]`.
    pub const KEYS: &'static [&'static str] = &["cert", "key"];
}

/// One `[[listener.route]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileRoute {
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`).
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Exact path.
    pub path: Option<String>,
    /// Regular expression the whole path must match.
    pub path_regex: Option<String>,
    /// Methods the route accepts (any when absent).
    pub methods: Option<Vec<String>>,
    /// Request headers by name: `{ present = true }`, `{ exact = "v" }`, `{ regex = "..." }`.
    pub headers: Option<BTreeMap<String, FileValueMatch>>,
    /// Query parameters by name, same shape as `headers`.
    pub query: Option<BTreeMap<String, FileValueMatch>>,
    /// Target cluster.
    pub cluster: Option<String>,
    /// TLS server name (tcp listeners): exact or `*.example.com`.
    pub sni: Option<String>,
    /// Weighted split across clusters (instead of `cluster`).
    pub clusters: Option<Vec<FileWeightedCluster>>,
    /// Edits to the request headers sent upstream.
    pub request_headers: Option<FileHeaderRewrite>,
    /// Edits to the response headers sent to the client.
    pub response_headers: Option<FileHeaderRewrite>,
    /// Replacement for the matched `path_prefix`.
    pub rewrite_prefix: Option<String>,
    /// Answer with a redirect instead of proxying.
    pub redirect: Option<FileRedirect>,
    /// Token-bucket rate limit of this route.
    pub rate_limit: Option<FileRateLimit>,
    /// Priority class of matching requests (a class of the cluster's admission).
    pub priority: Option<String>,
    /// Largest request body in bytes on this route (overrides the listener's).
    pub max_body_bytes: Option<u64>,
    /// Clients allowed on this route (CIDRs or addresses); others get 403.
    pub allow: Option<Vec<String>>,
    /// Clients refused with 403 on this route (CIDRs or addresses).
    pub deny: Option<Vec<String>>,
}

impl FileRoute {
    /// Keys of `[[listener.route]]`.
    pub const KEYS: &'static [&'static str] = &[
        "sni",
        "priority",
        "host",
        "path_prefix",
        "path",
        "path_regex",
        "methods",
        "headers",
        "query",
        "cluster",
        "clusters",
        "request_headers",
        "response_headers",
        "rewrite_prefix",
        "redirect",
        "rate_limit",
        "max_body_bytes",
        "allow",
        "deny",
    ];
}

/// How a header or query parameter must look: exactly one key set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileValueMatch {
    /// `true`: must be present (any value); `false`: must be absent.
    pub present: Option<bool>,
    /// Must equal this value.
    pub exact: Option<String>,
    /// Must match this regular expression (anywhere; anchor with `^...$`).
    pub regex: Option<String>,
}

impl FileValueMatch {
    /// Keys of a header or query matcher.
    pub const KEYS: &'static [&'static str] = &["present", "exact", "regex"];
}

/// One entry of a route's `clusters = [...]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileWeightedCluster {
    /// Cluster name.
    pub cluster: Option<String>,
    /// Relative share of the route's requests.
    pub weight: Option<u32>,
}

impl FileWeightedCluster {
    /// Keys of a weighted cluster.
    pub const KEYS: &'static [&'static str] = &["cluster", "weight"];
}

/// `request_headers` / `response_headers` of a route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileHeaderRewrite {
    /// Headers replaced (or added when absent).
    pub set: Option<BTreeMap<String, String>>,
    /// Headers appended (kept beside existing values).
    pub add: Option<BTreeMap<String, String>>,
    /// Headers removed.
    pub remove: Option<Vec<String>>,
}

impl FileHeaderRewrite {
    /// Keys of a header rewrite.
    pub const KEYS: &'static [&'static str] = &["set", "add", "remove"];
}

/// `redirect = { ... }` of a route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileRedirect {
    /// `http` or `https` (default: the request's).
    pub scheme: Option<String>,
    /// Host, optionally with port (default: the request's).
    pub host: Option<String>,
    /// Path (default: the request's, after `rewrite_prefix`).
    pub path: Option<String>,
    /// 301, 302 (default), 307 or 308.
    pub status: Option<u16>,
}

impl FileRedirect {
    /// Keys of a redirect.
    pub const KEYS: &'static [&'static str] = &["scheme", "host", "path", "status"];
}

/// `rate_limit = { ... }` of a route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileRateLimit {
    /// Requests allowed per `per`.
    pub rate: Option<u32>,
    /// The period of `rate` (default `"1s"`).
    pub per: Option<String>,
    /// Requests allowed at once above the steady rate (default: `rate`).
    pub burst: Option<u32>,
    /// What a bucket is kept for: `client-ip` (default) or `header:NAME`.
    pub key: Option<String>,
    /// `redis://host:port` shared by many instances (fixed windows of `per`).
    pub redis: Option<String>,
}

impl FileRateLimit {
    /// Keys of a rate limit.
    pub const KEYS: &'static [&'static str] = &["rate", "per", "burst", "key", "redis"];
}

/// `sticky = { ... }` of a cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileSticky {
    /// Cookie name (default `fulcrum_sticky`).
    pub cookie: Option<String>,
    /// Cookie lifetime (default `"1h"`).
    pub ttl: Option<String>,
    /// Secret mixed into the cookie value, so backends cannot be guessed.
    pub secret: Option<String>,
}

impl FileSticky {
    /// Keys of a sticky-session setting.
    pub const KEYS: &'static [&'static str] = &["cookie", "ttl", "secret"];
}

/// One `[cluster.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileCluster {
    /// Selector name.
    pub algorithm: Option<String>,
    /// The backends.
    pub backends: Option<Vec<FileBackend>>,
    /// Time allowed to open an upstream connection.
    pub connect_timeout: Option<String>,
    /// Time allowed for the upstream response headers.
    pub response_timeout: Option<String>,
    /// Idle upstream connections are closed after this long.
    pub pool_idle_timeout: Option<String>,
    /// Most idle upstream connections kept per backend.
    pub pool_max_idle: Option<usize>,
    /// τ of the peak-EWMA latency average.
    pub ewma_decay: Option<String>,
    /// Slow-start window for new and recovered backends.
    pub slow_start: Option<String>,
    /// Request key of `ring-hash` and `maglev`: `client-ip`, `path`,
    /// `header:NAME` or `cookie:NAME`.
    pub hash_key: Option<String>,
    /// Bounded-load factor c of `ring-hash` and `maglev`.
    pub balance_factor: Option<f64>,
    /// Read backends' `endpoint-load-metrics` (ORCA) load reports.
    pub load_reports: Option<bool>,
    /// Speak HTTP/2 to the backends (h2c, or h2 by ALPN with `tls`).
    pub http2: Option<bool>,
    /// Active health checking.
    pub health: Option<FileHealth>,
    /// Passive health checking (outlier detection).
    pub outlier: Option<FileOutlier>,
    /// Retries after the first attempt.
    pub retries: Option<u32>,
    /// Share of requests that may be retried (0.0 ..= 1.0).
    pub retry_budget: Option<f64>,
    /// Retries per second always allowed, whatever the budget.
    pub retry_budget_min: Option<u32>,
    /// Time allowed for one attempt's response headers.
    pub try_timeout: Option<String>,
    /// Percent of healthy backends below which health is ignored (panic mode).
    pub panic_threshold: Option<u32>,
    /// Send a PROXY protocol header to backends: `v1` or `v2` (L4 only).
    pub proxy_protocol: Option<String>,
    /// Sticky sessions by cookie.
    pub sticky: Option<FileSticky>,
    /// `geo`: requests in flight per backend above which a zone spills over.
    pub geo_max_in_flight: Option<u32>,
    /// Concurrency limit, priority queue and load shedding.
    pub admission: Option<FileAdmission>,
    /// TLS to the backends.
    pub tls: Option<FileUpstreamTls>,
}

impl FileCluster {
    /// Keys of `[cluster.NAME]`.
    pub const KEYS: &'static [&'static str] = &[
        "algorithm",
        "backends",
        "connect_timeout",
        "response_timeout",
        "pool_idle_timeout",
        "pool_max_idle",
        "ewma_decay",
        "slow_start",
        "hash_key",
        "balance_factor",
        "load_reports",
        "http2",
        "health",
        "outlier",
        "retries",
        "retry_budget",
        "retry_budget_min",
        "try_timeout",
        "panic_threshold",
        "proxy_protocol",
        "sticky",
        "geo_max_in_flight",
        "admission",
        "tls",
    ];
}

/// `tls = { ca, sni, cert, key, verify }` of a cluster: TLS to its backends.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileUpstreamTls {
    /// PEM file of the CAs that sign the backends' certificates (default:
    /// the Mozilla root set).
    pub ca: Option<String>,
    /// Server name sent and verified (default: the backend address's host).
    pub sni: Option<String>,
    /// PEM client certificate chain (mTLS).
    pub cert: Option<String>,
    /// PEM client private key (mTLS).
    pub key: Option<String>,
    /// Verify the backends' certificates (default true).
    pub verify: Option<bool>,
}

impl FileUpstreamTls {
    /// Keys of a cluster's `tls`.
    pub const KEYS: &'static [&'static str] = &["ca", "sni", "cert", "key", "verify"];
}

/// One backend in `backends = [...]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileBackend {
    /// `host:port`.
    pub address: Option<String>,
    /// Relative share (default 1).
    pub weight: Option<u32>,
    /// `enabled` (default), `draining` or `disabled`.
    pub state: Option<String>,
    /// Zone name, for the `geo` selector.
    pub zone: Option<String>,
    /// Region name.
    pub region: Option<String>,
    /// Latitude in degrees.
    pub lat: Option<f64>,
    /// Longitude in degrees.
    pub lon: Option<f64>,
    /// Server name for TLS to this backend (overrides the cluster's `tls.sni`).
    pub tls_sni: Option<String>,
}

impl FileBackend {
    /// Keys of a backend.
    pub const KEYS: &'static [&'static str] = &[
        "address", "weight", "state", "zone", "region", "lat", "lon", "tls_sni",
    ];
}

/// `[cluster.NAME.admission]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileAdmission {
    /// Static concurrency limit, or the starting limit when adaptive.
    pub limit: Option<u32>,
    /// Adapt the limit to measured latency (gradient algorithm).
    pub adaptive: Option<bool>,
    /// Lowest adaptive limit.
    pub min_limit: Option<u32>,
    /// Highest adaptive limit.
    pub max_limit: Option<u32>,
    /// Longest a request waits for a slot before it is shed.
    pub queue_timeout: Option<String>,
    /// Most requests waiting.
    pub max_queue: Option<usize>,
    /// Class names, most important first.
    pub classes: Option<Vec<String>>,
    /// Class of requests no route or header classifies.
    pub default_class: Option<String>,
}

impl FileAdmission {
    /// Keys of `[cluster.NAME.admission]`.
    pub const KEYS: &'static [&'static str] = &[
        "limit",
        "adaptive",
        "min_limit",
        "max_limit",
        "queue_timeout",
        "max_queue",
        "classes",
        "default_class",
    ];
}

/// `[cluster.NAME.health]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileHealth {
    /// `http`, `tcp` or `grpc`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Path probed by HTTP checks.
    pub path: Option<String>,
    /// Time between probes.
    pub interval: Option<String>,
    /// Time allowed for one probe.
    pub timeout: Option<String>,
    /// Consecutive successes to mark a backend up.
    pub rise: Option<u32>,
    /// Consecutive failures to mark a backend down.
    pub fall: Option<u32>,
    /// HTTP method of HTTP checks.
    pub method: Option<String>,
    /// Host header of HTTP checks.
    pub host: Option<String>,
    /// Accepted statuses of HTTP checks: `"200-399"`, `"200,204"`.
    pub expect_status: Option<String>,
    /// Text the HTTP check's response body must contain.
    pub body_contains: Option<String>,
    /// Random spread added to each interval.
    pub jitter: Option<String>,
    /// Time between probes while a backend is down.
    pub unhealthy_interval: Option<String>,
    /// Bytes a TCP check sends after connecting.
    pub send: Option<String>,
    /// Bytes the reply to a TCP check must start with.
    pub expect: Option<String>,
    /// Service a gRPC check asks about (`""`: the whole server).
    pub service: Option<String>,
}

impl FileHealth {
    /// Keys of `[cluster.NAME.health]`.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "path",
        "interval",
        "timeout",
        "rise",
        "fall",
        "method",
        "host",
        "expect_status",
        "body_contains",
        "jitter",
        "unhealthy_interval",
        "send",
        "expect",
        "service",
    ];
}

/// `[cluster.NAME.outlier]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileOutlier {
    /// Failed requests in a row that eject a backend (0: off).
    pub consecutive_failures: Option<u32>,
    /// First ejection length.
    pub base_ejection: Option<String>,
    /// Longest ejection.
    pub max_ejection: Option<String>,
    /// Most of the cluster ejected at once, in percent.
    pub max_ejection_percent: Option<u32>,
}

impl FileOutlier {
    /// Keys of `[cluster.NAME.outlier]`.
    pub const KEYS: &'static [&'static str] = &[
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejection_percent",
    ];
}
