//! A small HTTP load generator for tests, the demo and benchmarks.
//!
//! Two shapes of traffic:
//!
//! - **closed loop** (default): `concurrency` workers each send a request,
//!   wait for the full answer, and send the next. Throughput adapts to the
//!   server, so a slow server sees fewer requests — good for "does every
//!   request succeed" tests.
//! - **open loop** (`rate: Some(r)`): requests start at `r` per second with
//!   fixed spacing or Poisson arrivals, whatever the server does, with at most
//!   `concurrency` outstanding (arrivals beyond that are counted as
//!   `dropped`, never delayed). This avoids coordinated omission and is what
//!   tail-latency benchmarks need.
//!
//! Every run is bounded in count *and* time (see [`LoadOptions::duration`]),
//! every request by [`LoadOptions::timeout`], so a black-holed backend can
//! never hang a test. Connections are kept alive through `hyper_util`'s
//! pooled client.
//!
//! The [`LoadReport`] counts answers per status and per `x-backend` header
//! (see [`crate::backend`]), transport errors per kind, and keeps every
//! latency so percentiles are exact.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::BACKEND_HEADER;

/// Run length when neither a request count nor a duration is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Run length bound when only a request count is given: long enough for any
/// loopback test, short enough that a stuck run still ends on its own.
pub const COUNT_RUN_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Default per-request timeout (connect plus full answer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What traffic to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Address to send to (the `Host` header defaults to it).
    pub target: SocketAddr,
    /// Closed loop: number of workers. Open loop: most requests outstanding.
    /// Zero is treated as one.
    pub concurrency: usize,
    /// Stop after this many requests have been started.
    pub requests: Option<u64>,
    /// Stop after this long; requests still in flight then are cut and
    /// counted as `unfinished`. When `None`: [`COUNT_RUN_TIME_LIMIT`] if
    /// `requests` is set, else [`DEFAULT_DURATION`].
    pub duration: Option<Duration>,
    /// Path and query, e.g. `/` or `/bytes/1024`.
    pub path: String,
    /// Request method.
    pub method: Method,
    /// Extra request headers (e.g. `host`, `cookie`).
    pub headers: Vec<(String, String)>,
    /// Body sent with every request (empty by default).
    pub body: Bytes,
    /// Open loop at this many requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    /// Spacing of open-loop arrivals.
    pub arrival: Arrival,
    /// Per-request bound: connect, send and read the whole answer.
    pub timeout: Duration,
    /// Speak HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Seed of the Poisson arrival process, for repeatable runs.
    pub seed: u64,
}

impl LoadOptions {
    /// Closed-loop `GET /` to `target` with 1 worker, no request limit,
    /// [`DEFAULT_DURATION`], [`DEFAULT_REQUEST_TIMEOUT`], HTTP/1.1.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            concurrency: 1,
            requests: None,
            duration: None,
            path: "/".to_owned(),
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            rate: None,
            arrival: Arrival::Fixed,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            http2: false,
            seed: 0x5EED,
        }
    }

    /// The run's time bound (see [`duration`](Self::duration)).
    pub fn time_limit(&self) -> Duration {
        match (self.duration, self.requests) {
            (Some(duration), _) => duration,
            (None, Some(_)) => COUNT_RUN_TIME_LIMIT,
            (None, None) => DEFAULT_DURATION,
        }
    }
}

/// How open-loop arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Arrival {
    /// Exactly `1 / rate` apart.
    #[default]
    Fixed,
    /// Exponential gaps with mean `1 / rate` (a Poisson process), the
    /// arrival pattern of many independent clients.
    Poisson,
}

/// Why a load run could not start.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// The path does not form a valid URI with the target.
    #[error("load: invalid path `{path}` for target {target}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// The target address.
        target: SocketAddr,
    },
    /// A header name or value is not valid HTTP.
    #[error("load: invalid header `{name}: {value}`")]
    InvalidHeader {
        /// Header name as given.
        name: String,
        /// Header value as given.
        value: String,
    },
    /// The open-loop rate is not a positive finite number.
    #[error("load: rate {rate} must be a positive number of requests per second")]
    InvalidRate {
        /// The rate as given.
        rate: f64,
    },
}

/// What a load run observed.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests that ended with an answer or a transport error.
    pub total: u64,
    /// Answers per status code.
    pub statuses: HashMap<u16, u64>,
    /// Answers per `x-backend` header value (answers without it are not
    /// counted here).
    pub backends: HashMap<String, u64>,
    /// Requests that ended with a transport error (no complete answer).
    pub errors: u64,
    /// Transport errors per kind: `connect`, `timeout`, `closed`, `other`.
    pub error_kinds: HashMap<String, u64>,
    /// Requests cut when the run's time bound passed.
    pub unfinished: u64,
    /// Open loop only: arrivals not sent because `concurrency` requests
    /// were already outstanding.
    pub dropped: u64,
    /// Latency of every answered request (until its body was read), sorted
    /// ascending.
    pub latencies: Vec<Duration>,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// The `q` quantile of answered-request latency, nearest rank; `q` is in
    /// `0.0..=1.0` (values above 1 are read as percentages, so `99.0` means
    /// `0.99`). Zero when nothing was answered.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let q = if q > 1.0 { q / 100.0 } else { q }.clamp(0.0, 1.0);
        let n = self.latencies.len();
        let rank = (q * n as f64).ceil() as usize;
        self.latencies[rank.clamp(1, n) - 1]
    }

    /// Mean latency of answered requests (zero when none).
    pub fn mean_latency(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    /// Requests that got an answer (any status).
    pub fn answered(&self) -> u64 {
        self.total - self.errors
    }

    /// Answers with this status.
    pub fn status_count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Answers from the backend with this name.
    pub fn backend_count(&self, name: &str) -> u64 {
        self.backends.get(name).copied().unwrap_or(0)
    }

    /// Fraction of requests answered with a 2xx status (1.0 when none ended).
    pub fn success_ratio(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        let ok: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum();
        ok as f64 / self.total as f64
    }

    /// Requests ended per second of run time.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: LoadReport) {
        self.total += other.total;
        self.errors += other.errors;
        self.unfinished += other.unfinished;
        self.dropped += other.dropped;
        self.bytes_received += other.bytes_received;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (backend, n) in other.backends {
            *self.backends.entry(backend).or_default() += n;
        }
        for (kind, n) in other.error_kinds {
            *self.error_kinds.entry(kind).or_default() += n;
        }
        self.latencies.extend(other.latencies);
    }

    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered {
                status,
                backend,
                bytes,
                latency,
            } => {
                self.total += 1;
                *self.statuses.entry(status).or_default() += 1;
                if let Some(backend) = backend {
                    *self.backends.entry(backend).or_default() += 1;
                }
                self.bytes_received += bytes;
                self.latencies.push(latency);
            }
            Outcome::Failed(kind) => {
                self.total += 1;
                self.errors += 1;
                *self.error_kinds.entry(kind.to_owned()).or_default() += 1;
            }
            Outcome::Unfinished => self.unfinished += 1,
        }
    }
}

fn sorted<K: Ord + fmt::Display, V: Copy>(map: &HashMap<K, V>) -> Vec<(&K, V)> {
    let mut entries: Vec<_> = map.iter().map(|(k, v)| (k, *v)).collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "requests {} in {:.2?} ({:.1}/s), errors {}, unfinished {}, dropped {}",
            self.total,
            self.elapsed,
            self.throughput(),
            self.errors,
            self.unfinished,
            self.dropped
        )?;
        writeln!(
            f,
            "latency p50 {:.2?} p90 {:.2?} p99 {:.2?} max {:.2?}",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0)
        )?;
        for (status, n) in sorted(&self.statuses) {
            writeln!(f, "status {status}: {n}")?;
        }
        for (backend, n) in sorted(&self.backends) {
            writeln!(f, "backend {backend}: {n}")?;
        }
        for (kind, n) in sorted(&self.error_kinds) {
            writeln!(f, "error {kind}: {n}")?;
        }
        Ok(())
    }
}

/// How one request ended.
enum Outcome {
    Answered {
        status: u16,
        backend: Option<String>,
        bytes: u64,
        latency: Duration,
    },
    Failed(&'static str),
    Unfinished,
}

type LoadClient = Client<HttpConnector, Full<Bytes>>;

/// Everything a request needs, shared by all workers.
struct Plan {
    client: LoadClient,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    deadline: Instant,
}

impl Plan {
    async fn send(&self) -> Outcome {
        let started = Instant::now();
        let request_deadline = (started + self.timeout).min(self.deadline);
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    "connect"
                } else {
                    classify(&e)
                }
            })?;
            let status = response.status().as_u16();
            let backend = response
                .headers()
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| classify(&e))?;
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            debug_assert!(body.is_end_stream());
            Ok::<_, &'static str>((status, backend, bytes))
        };
        match tokio::time::timeout_at(request_deadline, exchange).await {
            Ok(Ok((status, backend, bytes))) => Outcome::Answered {
                status,
                backend,
                bytes,
                latency: started.elapsed(),
            },
            Ok(Err(kind)) => Outcome::Failed(kind),
            Err(_) if request_deadline >= self.deadline => Outcome::Unfinished,
            Err(_) => Outcome::Failed("timeout"),
        }
    }
}

/// Sorts a transport error into `closed` (the peer closed or reset the
/// connection) or `other`.
fn classify(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() || hyper_error.is_canceled() {
                return "closed";
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return "closed";
            }
        }
        source = e.source();
    }
    "other"
}

/// Runs a load test and reports what it saw.
///
/// # Panics
///
/// If the options are invalid (see [`try_run_load`]): in a test or
/// benchmark that is a bug in the caller.
pub async fn run_load(opts: LoadOptions) -> LoadReport {
    match try_run_load(opts).await {
        Ok(report) => report,
        Err(error) => panic!("{error}"),
    }
}

/// Runs a load test, or says why its options are invalid (bad path, header
/// or rate).
pub async fn try_run_load(opts: LoadOptions) -> Result<LoadReport, LoadError> {
    let uri: Uri = format!("http://{}{}", opts.target, opts.path)
        .parse()
        .map_err(|_| LoadError::InvalidPath {
            path: opts.path.clone(),
            target: opts.target,
        })?;
    let mut headers = HeaderMap::new();
    for (name, value) in &opts.headers {
        let invalid = || LoadError::InvalidHeader {
            name: name.clone(),
            value: value.clone(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    if let Some(rate) = opts.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadError::InvalidRate { rate });
        }
    }

    let concurrency = opts.concurrency.max(1);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(opts.timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .http2_only(opts.http2)
        .build(connector);
    let started = Instant::now();
    let plan = Arc::new(Plan {
        client,
        uri,
        method: opts.method.clone(),
        headers,
        body: opts.body.clone(),
        timeout: opts.timeout,
        deadline: started + opts.time_limit(),
    });
    let limit = opts.requests.unwrap_or(u64::MAX);

    let mut report = match opts.rate {
        None => closed_loop(plan, concurrency, limit).await,
        Some(rate) => open_loop(plan, concurrency, limit, rate, opts.arrival, opts.seed).await,
    };
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    Ok(report)
}

async fn closed_loop(plan: Arc<Plan>, concurrency: usize, limit: u64) -> LoadReport {
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let plan = plan.clone();
        let started = started.clone();
        workers.spawn(async move {
            let mut report = LoadReport::default();
            while Instant::now() < plan.deadline && started.fetch_add(1, Ordering::Relaxed) < limit
            {
                report.record(plan.send().await);
            }
            report
        });
    }
    let mut report = LoadReport::default();
    while let Some(worker) = workers.join_next().await {
        if let Ok(part) = worker {
            report.merge(part);
        }
    }
    report
}

async fn open_loop(
    plan: Arc<Plan>,
    concurrency: usize,
    limit: u64,
    rate: f64,
    arrival: Arrival,
    seed: u64,
) -> LoadReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mean_gap = 1.0 / rate;
    let outstanding = Arc::new(Semaphore::new(concurrency));
    let mut requests = JoinSet::new();
    let mut report = LoadReport::default();
    let mut next = Instant::now();
    let mut sent = 0u64;
    while sent < limit && next < plan.deadline {
        tokio::time::sleep_until(next).await;
        sent += 1;
        match outstanding.clone().try_acquire_owned() {
            Ok(permit) => {
                let plan = plan.clone();
                requests.spawn(async move {
                    let outcome = plan.send().await;
                    drop(permit);
                    outcome
                });
            }
            Err(_) => report.dropped += 1,
        }
        while let Some(done) = requests.try_join_next() {
            if let Ok(outcome) = done {
                report.record(outcome);
            }
        }
        let gap = match arrival {
            Arrival::Fixed => mean_gap,
            Arrival::Poisson => -mean_gap * (1.0 - rng.f64()).ln(),
        };
        next += Duration::try_from_secs_f64(gap).unwrap_or(Duration::MAX / 4);
    }
    // Every request is bounded by its timeout and the run's deadline.
    while let Some(done) = requests.join_next().await {
        if let Ok(outcome) = done {
            report.record(outcome);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(latencies_ms: &[u64]) -> LoadReport {
        let mut latencies: Vec<Duration> = latencies_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        latencies.sort();
        LoadReport {
            total: latencies.len() as u64,
            latencies,
            ..LoadReport::default()
        }
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let report = report_with(&(1..=100).collect::<Vec<_>>());
        let ms = Duration::from_millis;
        assert_eq!(report.percentile(0.5), ms(50));
        assert_eq!(report.percentile(0.99), ms(99));
        assert_eq!(report.percentile(99.0), ms(99));
        assert_eq!(report.percentile(1.0), ms(100));
        assert_eq!(report.percentile(0.0), ms(1));
        assert_eq!(report_with(&[7]).percentile(0.5), ms(7));
    }

    #[test]
    fn percentile_of_empty_report_is_zero() {
        assert_eq!(LoadReport::default().percentile(0.99), Duration::ZERO);
        assert_eq!(LoadReport::default().mean_latency(), Duration::ZERO);
    }

    #[test]
    fn time_limit_is_always_bounded() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut opts = LoadOptions::new(addr);
        assert_eq!(opts.time_limit(), DEFAULT_DURATION);
        opts.requests = Some(10);
        assert_eq!(opts.time_limit(), COUNT_RUN_TIME_LIMIT);
        opts.duration = Some(Duration::from_secs(1));
        assert_eq!(opts.time_limit(), Duration::from_secs(1));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = report_with(&[1, 2]);
        a.statuses.insert(200, 2);
        a.backends.insert("a".into(), 2);
        let mut b = report_with(&[3]);
        b.statuses.insert(200, 1);
        b.backends.insert("b".into(), 1);
        a.merge(b);
        assert_eq!(a.total, 3);
        assert_eq!(a.status_count(200), 3);
        assert_eq!(a.backend_count("a"), 2);
        assert_eq!(a.backend_count("b"), 1);
        assert_eq!(a.success_ratio(), 1.0);
    }
}
