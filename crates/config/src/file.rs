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
        "debug_from",
        "priority_from",
        "location_from",
        "geoip_db",
        "route",
    ];
}

/// One `[[listener.route]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FileRoute {
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`).
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Target cluster.
    pub cluster: Option<String>,
    /// Priority class of matching requests (a class of the cluster's admission).
    pub priority: Option<String>,
}

impl FileRoute {
    /// Keys of `[[listener.route]]`.
    pub const KEYS: &'static [&'static str] = &["host", "path_prefix", "cluster", "priority"];
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
    /// `geo`: requests in flight per backend above which a zone spills over.
    pub geo_max_in_flight: Option<u32>,
    /// Concurrency limit, priority queue and load shedding.
    pub admission: Option<FileAdmission>,
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
        "health",
        "outlier",
        "retries",
        "retry_budget",
        "retry_budget_min",
        "try_timeout",
        "panic_threshold",
        "geo_max_in_flight",
        "admission",
    ];
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
}

impl FileBackend {
    /// Keys of a backend.
    pub const KEYS: &'static [&'static str] =
        &["address", "weight", "state", "zone", "region", "lat", "lon"];
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
    /// `http` or `tcp`.
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
