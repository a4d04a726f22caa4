//! Metrics: cheap counters on the request path, Prometheus text at scrape time.
//!
//! The request path never allocates a label or hashes a name. Every
//! per-backend and per-cluster handle ([`BackendMetrics`], [`ClusterMetrics`])
//! is looked up once, when a snapshot is built (the control path), and stored
//! in the [`ClusterSnapshot`](crate::ClusterSnapshot) next to the backend, so
//! recording an answer is a handful of relaxed atomic adds.
//!
//! Handles are keyed like the learned [`BackendState`](fulcrum_balance::BackendState)
//! — by `(cluster, address)` — so a reload or a weight change keeps the
//! counters running, and a removed backend's series disappear with it.
//!
//! At scrape time [`encode`] walks the current snapshot and writes every
//! family through `prometheus-client`'s encoder. Gauges that the balancer
//! already tracks (in flight, peak-EWMA latency, error rate, health) are read
//! from [`Load`](fulcrum_balance::Load) directly instead of being mirrored.
//!
//! Names follow `fulcrum_<area>_<thing>_<unit>`; the full list is in
//! `docs/operations.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::Runtime;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
///
/// From 0.5 ms (a loopback backend) to 10 s (beyond it only timeouts
/// matter), roughly ×2–2.5 per step: fine enough to read p50 and p99 within
/// one step, coarse enough that an observation is a short linear scan.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds in nanoseconds, for the observation scan.
const BUCKET_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of histogram slots: one per bound plus `+Inf`.
pub const SLOTS: usize = LATENCY_BUCKETS.len() + 1;

/// A lock-free latency histogram (non-cumulative slots, cumulated when read).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    slots: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Observations per slot (not cumulative); the last slot is `+Inf`.
    pub slots: [u64; SLOTS],
    /// Sum of all observations in nanoseconds.
    pub sum_nanos: u64,
}

impl LatencyHistogram {
    /// Records one latency.
    #[inline]
    pub fn observe(&self, nanos: u64) {
        let slot = BUCKET_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(SLOTS - 1);
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Reads every slot.
    pub fn counts(&self) -> HistogramCounts {
        let mut c = HistogramCounts {
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
            ..HistogramCounts::default()
        };
        for (dst, src) in c.slots.iter_mut().zip(&self.slots) {
            *dst = src.load(Ordering::Relaxed);
        }
        c
    }
}

impl HistogramCounts {
    /// Total observations.
    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// Observations since `earlier` (slot-wise, saturating).
    pub fn since(&self, earlier: &HistogramCounts) -> HistogramCounts {
        let mut d = HistogramCounts {
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
            ..HistogramCounts::default()
        };
        for i in 0..SLOTS {
            d.slots[i] = self.slots[i].saturating_sub(earlier.slots[i]);
        }
        d
    }

    /// The `q`-quantile in seconds, interpolated linearly inside its bucket
    /// (as Prometheus' `histogram_quantile`); `None` without observations.
    /// Values in the `+Inf` slot are reported as the last finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.slots.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let Some(&hi) = LATENCY_BUCKETS.get(i) else {
                    return Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]);
                };
                let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let into = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * into);
            }
            seen += n;
        }
        Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1])
    }

    /// `(upper bound, cumulative count)` pairs as Prometheus wants them.
    /// Writes the histogram as one sample of a family (seconds).
    fn encode(
        &self,
        mut family: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_nanos as f64 / 1e9,
            self.count(),
            &self.cumulative(),
            None,
        )
    }

    fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out = Vec::with_capacity(SLOTS);
        for (i, n) in self.slots.iter().enumerate() {
            acc += n;
            out.push((
                LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                acc,
            ));
        }
        out
    }
}

/// Response classes counted per backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx from the backend.
    ServerError,
    /// No answer: connect failure, reset, or timeout.
    Failed,
}

impl ResponseClass {
    const ALL: [ResponseClass; 6] = [
        ResponseClass::Informational,
        ResponseClass::Success,
        ResponseClass::Redirection,
        ResponseClass::ClientError,
        ResponseClass::ServerError,
        ResponseClass::Failed,
    ];

    /// The `class` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::Informational => "1xx",
            ResponseClass::Success => "2xx",
            ResponseClass::Redirection => "3xx",
            ResponseClass::ClientError => "4xx",
            ResponseClass::ServerError => "5xx",
            ResponseClass::Failed => "failed",
        }
    }

    /// The class of an HTTP status code.
    #[inline]
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() / 100 {
            1 => ResponseClass::Informational,
            2 => ResponseClass::Success,
            3 => ResponseClass::Redirection,
            4 => ResponseClass::ClientError,
            _ => ResponseClass::ServerError,
        }
    }
}

/// Counters of one backend, shared by every snapshot that contains it.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    responses: [AtomicU64; 6],
    /// Time to response headers (or to the failure) of every attempt.
    pub latency: LatencyHistogram,
    picks: AtomicU64,
}

impl BackendMetrics {
    /// Counts one selector decision for this backend.
    #[inline]
    pub fn picked(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one upstream attempt's result and latency.
    #[inline]
    pub fn record(&self, class: ResponseClass, latency_nanos: u64) {
        self.responses[class as usize].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(latency_nanos);
    }

    /// Answers counted in `class`.
    pub fn responses(&self, class: ResponseClass) -> u64 {
        self.responses[class as usize].load(Ordering::Relaxed)
    }

    /// Selector decisions for this backend.
    pub fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }
}

/// Counters of one cluster.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Attempts beyond the first for one request.
    pub retries: AtomicU64,
    /// Requests for which the selector found no usable backend.
    pub no_backend: AtomicU64,
    /// Upstream connections opened by the cluster's pool, HTTP/1.1 and
    /// HTTP/2 (TCP connect and TLS handshake done).
    pub connections_opened: [AtomicU64; 2],
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections open now.
    pub open: AtomicI64,
}

/// Keeps a [`ListenerMetrics::open`] count for as long as it lives.
#[derive(Debug)]
pub struct OpenConnection(Arc<ListenerMetrics>);

impl ListenerMetrics {
    /// Counts an accepted connection, open until the guard drops.
    pub fn accept(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Process-wide metrics of one [`Runtime`] and the registry of handles.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    backends: Mutex<HashMap<(String, String), Arc<BackendMetrics>>>,
    clusters: Mutex<HashMap<String, Arc<ClusterMetrics>>>,
    listeners: Mutex<HashMap<String, Arc<ListenerMetrics>>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    tls_ok: AtomicU64,
    tls_failed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProxyMetrics {
    /// The handle of backend `address` in `cluster` (created on first use).
    pub fn backend(&self, cluster: &str, address: &str) -> Arc<BackendMetrics> {
        let mut map = lock(&self.backends);
        Arc::clone(
            map.entry((cluster.to_owned(), address.to_owned()))
                .or_default(),
        )
    }

    /// The handle of `cluster` (created on first use).
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterMetrics> {
        Arc::clone(lock(&self.clusters).entry(cluster.to_owned()).or_default())
    }

    /// The handle of listener `name` (created on first use, kept while the
    /// process runs so counters stay monotonic across listener restarts).
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        Arc::clone(lock(&self.listeners).entry(name.to_owned()).or_default())
    }

    /// Drops the handles of backends and clusters no longer configured.
    ///
    /// Live addresses are collected into a set first: looking each handle
    /// up in its cluster's backend list would be quadratic in the cluster
    /// size, and it runs on every configuration change.
    pub(crate) fn retain(&self, live: &Snapshot) {
        let configured: std::collections::HashSet<(&str, &str)> = live
            .clusters
            .iter()
            .flat_map(|(name, cl)| {
                cl.set
                    .backends()
                    .iter()
                    .map(move |b| (name.as_str(), b.address.as_str()))
            })
            .collect();
        lock(&self.backends).retain(|(c, a), _| configured.contains(&(c.as_str(), a.as_str())));
        lock(&self.clusters).retain(|c, _| live.clusters.contains_key(c));
    }

    /// Counts a configuration reload (file or API) by result.
    pub fn reloaded(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TLS handshake by result (for TLS listeners).
    pub fn tls_handshake(&self, ok: bool) {
        let c = if ok { &self.tls_ok } else { &self.tls_failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far: `(succeeded, failed)`.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }
}

use crate::state::Snapshot;

/// Renders every metric of `runtime` in the Prometheus/OpenMetrics text format.
pub fn encode(runtime: &Arc<Runtime>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(Arc::clone(runtime))));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Content type of [`encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`to_classic_text`]'s output.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as the classic Prometheus text format (0.0.4),
/// for clients that do not ask for OpenMetrics (curl, `promtool check
/// metrics`, older scrapers): a counter family is named with its `_total`
/// suffix, and the `# EOF` marker is dropped. Samples are unchanged.
pub fn to_classic_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    let mut counter_family: Option<&str> = None;
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            let is_counter = lines
                .get(i + 1)
                .is_some_and(|next| *next == format!("# TYPE {name} counter"));
            counter_family = is_counter.then_some(name);
        }
        match counter_family {
            Some(name) if line.starts_with("# ") => {
                let prefix_len = "# HELP ".len();
                out.push_str(&line[..prefix_len]);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&line[prefix_len + name.len()..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The collector that reads one runtime at scrape time.
#[derive(Debug)]
struct Scrape(Arc<Runtime>);

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// Writes one family: a descriptor, then one sample per item.
fn family<'l, I, M, const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: I,
) -> Result<(), std::fmt::Error>
where
    I: IntoIterator<Item = (Labels<'l, N>, M)>,
    M: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = &self.0;
        let snapshot = runtime.snapshot_owned();
        let metrics = runtime.metrics();
        let mut clusters: Vec<_> = snapshot.clusters.values().cloned().collect();
        clusters.sort_by(|a, b| a.name().cmp(b.name()));
        // (cluster, backend, &snapshot backend, &metrics handle)
        let backends: Vec<_> = clusters
            .iter()
            .flat_map(|c| {
                c.set
                    .backends()
                    .iter()
                    .zip(&c.backend_metrics)
                    .map(move |(b, m)| (c.name(), b.address.as_str(), b, m))
            })
            .collect();

        let version = env!("CARGO_PKG_VERSION");
        family(
            &mut e,
            "fulcrum_build_info",
            "Build information; the value is always 1.",
            MetricType::Gauge,
            [([("version", version)], ConstGauge::new(1i64))],
        )?;
        family(
            &mut e,
            "fulcrum_config_generation",
            "Generation of the running configuration (bumped by every applied change).",
            MetricType::Gauge,
            [(
                [("kind", "snapshot")],
                ConstGauge::new(snapshot.generation as i64),
            )],
        )?;
        let (ok, failed) = metrics.reloads();
        family(
            &mut e,
            "fulcrum_config_reloads",
            "Configuration reloads (SIGHUP, fulcrum reload, POST /api/v1/reload) by result.",
            MetricType::Counter,
            [
                ([("result", "success")], ConstCounter::new(ok)),
                ([("result", "failure")], ConstCounter::new(failed)),
            ],
        )?;
        family(
            &mut e,
            "fulcrum_tls_handshakes",
            "TLS handshakes on client connections by result.",
            MetricType::Counter,
            [
                (
                    [("result", "success")],
                    ConstCounter::new(metrics.tls_ok.load(Ordering::Relaxed)),
                ),
                (
                    [("result", "failure")],
                    ConstCounter::new(metrics.tls_failed.load(Ordering::Relaxed)),
                ),
            ],
        )?;

        let mut listeners: Vec<(String, Arc<ListenerMetrics>)> = lock(&metrics.listeners)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        listeners.sort_by(|a, b| a.0.cmp(&b.0));
        family(
            &mut e,
            "fulcrum_listener_connections",
            "Client connections accepted per listener.",
            MetricType::Counter,
            listeners.iter().map(|(n, m)| {
                (
                    [("listener", n.as_str())],
                    ConstCounter::new(m.accepted.load(Ordering::Relaxed)),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_listener_open_connections",
            "Client connections open now per listener.",
            MetricType::Gauge,
            listeners.iter().map(|(n, m)| {
                (
                    [("listener", n.as_str())],
                    ConstGauge::new(m.open.load(Ordering::Relaxed)),
                )
            }),
        )?;

        let dropped = runtime.access_logs().dropped();
        family(
            &mut e,
            "fulcrum_access_log_dropped_lines",
            "Access log lines dropped because the writer could not keep up, per listener.",
            MetricType::Counter,
            dropped
                .iter()
                .map(|(n, d)| ([("listener", n.as_str())], ConstCounter::new(*d))),
        )?;
        family(
            &mut e,
            "fulcrum_upstream_retries",
            "Upstream attempts beyond the first one of a request, per cluster.",
            MetricType::Counter,
            clusters.iter().map(|c| {
                (
                    [("cluster", c.name())],
                    ConstCounter::new(c.metrics.retries.load(Ordering::Relaxed)),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_selector_no_backend",
            "Requests for which the selector found no usable backend, per cluster.",
            MetricType::Counter,
            clusters.iter().map(|c| {
                (
                    [("cluster", c.name())],
                    ConstCounter::new(c.metrics.no_backend.load(Ordering::Relaxed)),
                )
            }),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "fulcrum_upstream_connections_opened",
                "Upstream connections opened by the cluster's pool, by protocol.",
                None,
                MetricType::Counter,
            )?;
            for c in &clusters {
                for (protocol, opened) in
                    ["http1", "http2"].iter().zip(&c.metrics.connections_opened)
                {
                    ConstCounter::new(opened.load(Ordering::Relaxed)).encode(
                        metric.encode_family(&[("cluster", c.name()), ("protocol", *protocol)])?,
                    )?;
                }
            }
        }
        family(
            &mut e,
            "fulcrum_upstream_idle_connections",
            "Idle HTTP/1.1 upstream connections kept for reuse, per cluster.",
            MetricType::Gauge,
            clusters.iter().map(|c| {
                (
                    [("cluster", c.name())],
                    ConstGauge::new(c.upstream.idle_connections() as i64),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_upstream_http2_connections",
            "Shared HTTP/2 upstream connections kept, per cluster (clusters with http2).",
            MetricType::Gauge,
            clusters.iter().map(|c| {
                (
                    [("cluster", c.name())],
                    ConstGauge::new(c.upstream.shared_connections() as i64),
                )
            }),
        )?;
        encode_admission(&mut e, &clusters)?;
        family(
            &mut e,
            "fulcrum_selector_decisions",
            "Backends picked by the cluster's selector (one per upstream attempt).",
            MetricType::Counter,
            backends.iter().map(|(c, a, _, m)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstCounter::new(m.picks()),
                )
            }),
        )?;

        {
            let mut metric = e.encode_descriptor(
                "fulcrum_backend_requests",
                "Upstream attempts per backend by response class (failed: no answer).",
                None,
                MetricType::Counter,
            )?;
            for (c, a, _, m) in &backends {
                for class in ResponseClass::ALL {
                    let labels = [("cluster", *c), ("backend", *a), ("class", class.as_str())];
                    ConstCounter::new(m.responses(class)).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "fulcrum_upstream_latency_seconds",
                "Time from sending a request upstream to its response headers (or failure).",
                None,
                MetricType::Histogram,
            )?;
            for (c, a, _, m) in &backends {
                let labels = [("cluster", *c), ("backend", *a)];
                m.latency.counts().encode(metric.encode_family(&labels)?)?;
            }
        }
        family(
            &mut e,
            "fulcrum_backend_in_flight_requests",
            "Requests in flight to the backend now.",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(b.state.load.in_flight() as i64),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_backend_healthy",
            "1 when health checking considers the backend usable, else 0.",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(b.state.is_healthy() as i64),
                )
            }),
        )?;
        let health_rows: Vec<_> = backends
            .iter()
            .map(|(c, a, b, _)| ([("cluster", *c), ("backend", *a)], &b.state.health))
            .collect();
        let counter = |pick: fn(&fulcrum_balance::health::Health) -> &AtomicU64| {
            health_rows.iter().map(move |(labels, h)| {
                (*labels, ConstCounter::new(pick(h).load(Ordering::Relaxed)))
            })
        };
        family(
            &mut e,
            "fulcrum_backend_ejections",
            "Outlier-detection ejections of the backend.",
            MetricType::Counter,
            counter(|h| &h.ejections),
        )?;
        family(
            &mut e,
            "fulcrum_backend_health_transitions",
            "Health verdict changes (up to down and down to up).",
            MetricType::Counter,
            counter(|h| &h.transitions),
        )?;
        family(
            &mut e,
            "fulcrum_health_probes",
            "Active health probes run.",
            MetricType::Counter,
            counter(|h| &h.probes),
        )?;
        family(
            &mut e,
            "fulcrum_health_probe_failures",
            "Active health probes that failed.",
            MetricType::Counter,
            counter(|h| &h.probe_failures),
        )?;
        family(
            &mut e,
            "fulcrum_health_probe_latency_seconds",
            "Latency of the last active health probe.",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                let ns = b.state.health.last_probe_latency.load(Ordering::Relaxed);
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(ns as f64 / 1e9),
                )
            }),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "fulcrum_backend_admin_state",
                "Operator state of the backend: 1 for the current state, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for (c, a, b, _) in &backends {
                for s in ["enabled", "draining", "disabled"] {
                    let labels = [("cluster", *c), ("backend", *a), ("state", s)];
                    ConstGauge::new((b.admin.as_str() == s) as i64)
                        .encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        family(
            &mut e,
            "fulcrum_backend_weight",
            "Configured weight of the backend.",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(b.weight as i64),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_backend_latency_ewma_seconds",
            "Peak-EWMA latency estimate the selectors use (0 before the first answer).",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(b.state.load.latency_estimate().unwrap_or(0.0) / 1e9),
                )
            }),
        )?;
        family(
            &mut e,
            "fulcrum_backend_error_ratio",
            "EWMA of the backend's failure indicator, 0 to 1.",
            MetricType::Gauge,
            backends.iter().map(|(c, a, b, _)| {
                (
                    [("cluster", *c), ("backend", *a)],
                    ConstGauge::new(b.state.load.error_rate()),
                )
            }),
        )?;
        Ok(())
    }
}

/// The `fulcrum_admission_*` families, for the clusters with admission
/// control.
fn encode_admission(
    e: &mut DescriptorEncoder<'_>,
    clusters: &[Arc<crate::state::ClusterSnapshot>],
) -> Result<(), std::fmt::Error> {
    use crate::admission::Shed;
    let admitting: Vec<(&str, &crate::admission::Admission)> = clusters
        .iter()
        .filter_map(|c| Some((c.name(), c.admission.as_deref()?)))
        .collect();
    let status: Vec<_> = admitting.iter().map(|(c, a)| (*c, a.status())).collect();
    family(
        e,
        "fulcrum_admission_in_flight_requests",
        "Requests holding one of the cluster's admission slots now.",
        MetricType::Gauge,
        status
            .iter()
            .map(|(c, (in_flight, _, _))| ([("cluster", *c)], ConstGauge::new(*in_flight as i64))),
    )?;
    family(
        e,
        "fulcrum_admission_queued_requests",
        "Requests waiting in the cluster's admission queue now.",
        MetricType::Gauge,
        status
            .iter()
            .map(|(c, (_, queued, _))| ([("cluster", *c)], ConstGauge::new(*queued as i64))),
    )?;
    family(
        e,
        "fulcrum_admission_limit",
        "The cluster's concurrency limit now (adaptive limits move).",
        MetricType::Gauge,
        status
            .iter()
            .map(|(c, (_, _, limit))| ([("cluster", *c)], ConstGauge::new(*limit as i64))),
    )?;
    // (cluster, class, counts) for every configured class.
    let classes: Vec<_> = admitting
        .iter()
        .flat_map(|(c, a)| a.classes().map(move |(class, n)| (*c, class, n)))
        .collect();
    family(
        e,
        "fulcrum_admission_admitted",
        "Requests given an admission slot (at once or after queueing), per class.",
        MetricType::Counter,
        classes.iter().map(|(c, class, n)| {
            (
                [("cluster", *c), ("class", *class)],
                ConstCounter::new(n.admitted),
            )
        }),
    )?;
    {
        let mut metric = e.encode_descriptor(
            "fulcrum_admission_shed",
            "Requests answered 503 by admission control, per class and reason.",
            None,
            MetricType::Counter,
        )?;
        for (c, class, n) in &classes {
            for why in Shed::ALL {
                let labels = [("cluster", *c), ("class", *class), ("reason", why.as_str())];
                ConstCounter::new(n.shed[why.index()]).encode(metric.encode_family(&labels)?)?;
            }
        }
    }
    let mut metric = e.encode_descriptor(
        "fulcrum_admission_queue_wait_seconds",
        "Time requests spent in the admission queue, until a slot, a shed answer or the client leaving (requests admitted at once are not counted).",
        None,
        MetricType::Histogram,
    )?;
    for (c, a) in &admitting {
        a.queue_wait()
            .counts()
            .encode(metric.encode_family(&[("cluster", *c)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_keeps_the_handles_of_configured_backends_only() {
        let config =
            |backends: &str| crate::test_support::app_config(&format!("backends = [{backends}]"));
        let runtime = Runtime::new(config(
            "{ address = \"10.0.0.1:80\" }, { address = \"10.0.0.2:80\" }",
        ));
        let kept = runtime.metrics().backend("app", "10.0.0.2:80");
        runtime
            .apply([fulcrum_config::Command::Replace(Box::new(config(
                "{ address = \"10.0.0.2:80\" }, { address = \"10.0.0.3:80\" }",
            )))])
            .unwrap();
        let mut left: Vec<(String, String)> =
            lock(&runtime.metrics().backends).keys().cloned().collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("app".to_owned(), "10.0.0.2:80".to_owned()),
                ("app".to_owned(), "10.0.0.3:80".to_owned()),
            ]
        );
        // The surviving backend keeps its handle (its counters stay monotonic).
        assert!(Arc::ptr_eq(
            &kept,
            &runtime.metrics().backend("app", "10.0.0.2:80")
        ));
    }

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let h = LatencyHistogram::default();
        for _ in 0..100 {
            h.observe(3_000_000); // 3 ms: bucket (2.5 ms, 5 ms]
        }
        let c = h.counts();
        assert_eq!(c.count(), 100);
        let p50 = c.quantile(0.5).unwrap();
        assert!((0.0025..=0.005).contains(&p50), "{p50}");
        assert_eq!(HistogramCounts::default().quantile(0.5), None);
    }

    #[test]
    fn histogram_since_subtracts_slotwise() {
        let h = LatencyHistogram::default();
        h.observe(1);
        let before = h.counts();
        h.observe(20_000_000_000);
        let d = h.counts().since(&before);
        assert_eq!(d.count(), 1);
        assert_eq!(d.slots[SLOTS - 1], 1);
        assert_eq!(d.quantile(0.99), Some(10.0));
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let classic = to_classic_text(om);
        assert_eq!(
            classic,
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
