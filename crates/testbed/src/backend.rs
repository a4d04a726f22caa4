//! Programmable HTTP backends.
//!
//! A testbed backend is a small HTTP server (HTTP/1.1 with keep-alive, and
//! HTTP/2 over cleartext with prior knowledge, via `hyper_util`'s `auto`
//! builder) whose behaviour is chosen by the test or demo that starts it. It
//! exists so that Fulcrum's scheduling can be exercised against backends that
//! are slow, uneven, saturated, failing or silent, on real sockets, without
//! any external server.
//!
//! Every request other than `GET /healthz`:
//!
//! 1. is counted ([`RunningBackend::requests`]) and tracked as in flight;
//! 2. is answered at once when the [`Mode`] says so (`Fail`, `Flaky`), never
//!    answered (`BlackHole`) or answered by closing the connection (`Reset`);
//! 3. waits for one of `capacity` workers (a FIFO [`tokio::sync::Semaphore`]),
//!    modelling a server with a fixed pool of workers whose queue grows under
//!    load;
//! 4. streams its request body in, hashing it incrementally (never buffered);
//! 5. sleeps one sample of the [`LatencyDist`];
//! 6. is answered with `status`, header `x-backend: NAME` and body `NAME\n`.
//!
//! Special paths: `/healthz` (200 `ok` or 503, no latency, not counted),
//! `/bytes/N` (N bytes of [`pattern`] streamed in 64 KiB chunks),
//! `/echo-headers` (the request headers as `name: value` lines) and
//! `/status/N` (answers status N).
//!
//! With `load_report` the backend adds the ORCA-style header
//! `endpoint-load-metrics: TEXT cpu_utilization=<u>, rps_fractional=<r>` and
//! `x-fulcrum-in-flight: <n>` to its answers, the signals Fulcrum's
//! load-aware selectors can consume.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// Size of the chunks in which `/bytes/N` is streamed: 64 KiB, large enough
/// to keep per-frame overhead negligible, small enough to exercise streaming.
pub const PATTERN_CHUNK_SIZE: usize = 64 * 1024;

/// Denominator of `cpu_utilization` when a backend has no `capacity`: a
/// backend without a worker limit still needs a nominal size for its load
/// report, and 100 is a common worker-pool size.
pub const NOMINAL_CAPACITY: usize = 100;

/// Longest latency sample ever produced; keeps heavy-tailed distributions
/// from sleeping for absurd times (and from overflowing a `Duration`).
pub const MAX_LATENCY_SAMPLE: Duration = Duration::from_secs(3600);

/// Status answered by [`Mode::Flaky`] for the requests it fails.
pub const FLAKY_STATUS: u16 = 503;

/// Header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";
/// Header carrying the hex SHA-256 of a request body (or of `/bytes/N`).
pub const BODY_SHA256_HEADER: &str = "x-body-sha256";
/// Header carrying the length of a request body (or of `/bytes/N`).
pub const BODY_LENGTH_HEADER: &str = "x-body-length";
/// ORCA-style load report header (see `load_report`).
pub const LOAD_METRICS_HEADER: &str = "endpoint-load-metrics";
/// Header carrying the number of requests in flight when the answer started.
pub const IN_FLIGHT_HEADER: &str = "x-fulcrum-in-flight";

/// `/bytes/N` answers also carry [`BODY_SHA256_HEADER`] up to this size,
/// where computing the digest up front costs well under a millisecond.
pub const BYTES_DIGEST_LIMIT: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// How a backend behaves; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Name sent in `x-backend` and in the body.
    pub name: String,
    /// Address to bind; use `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    /// Latency added before answering every request except `/healthz`.
    pub latency: LatencyDist,
    /// Initial behaviour; change it later with [`RunningBackend::set_mode`].
    pub mode: Mode,
    /// Status of normal answers (default 200).
    pub status: u16,
    /// Add `endpoint-load-metrics` and `x-fulcrum-in-flight` to answers.
    pub load_report: bool,
    /// Maximum requests served at once; excess requests wait in FIFO order
    /// (and count as in flight while they wait). A worker is held from the
    /// end of the wait until the answer's headers are ready, i.e. while the
    /// body is read and the latency slept. `None` means unlimited.
    pub capacity: Option<usize>,
}

impl BackendOptions {
    /// Options for a backend called `name`: listens on `127.0.0.1:0`, no
    /// latency, [`Mode::Normal`], status 200, no load report, no capacity
    /// limit.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: LatencyDist::ZERO,
            mode: Mode::Normal,
            status: 200,
            load_report: false,
            capacity: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Latency distributions
// ---------------------------------------------------------------------------

/// A distribution of added latency, sampled once per request.
///
/// Parsed from text ([`FromStr`]) as `5ms` (fixed), `5ms..20ms` (uniform),
/// `exp:5ms` (exponential with that mean) or `lognormal:5ms:0.5` (log-normal
/// with that median and sigma); [`Display`](fmt::Display) writes the same
/// forms back.
#[derive(Clone, Debug, PartialEq)]
pub enum LatencyDist {
    /// Always this latency.
    Fixed(Duration),
    /// Uniform between the two bounds (low, high).
    Uniform(Duration, Duration),
    /// Exponential with this mean: memoryless, a simple model of service
    /// times of an M/M/c server.
    Exponential {
        /// Mean latency.
        mean: Duration,
    },
    /// Log-normal with this median and shape: a realistic heavy-ish tail.
    LogNormal {
        /// Median latency (`exp(mu)`).
        median: Duration,
        /// Standard deviation of the underlying normal; 0.5 is moderate,
        /// 1.0 is a heavy tail.
        sigma: f64,
    },
}

impl LatencyDist {
    /// No added latency.
    pub const ZERO: LatencyDist = LatencyDist::Fixed(Duration::ZERO);

    /// Draws one latency from the distribution, capped at
    /// [`MAX_LATENCY_SAMPLE`].
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        let secs = match *self {
            LatencyDist::Fixed(d) => return d.min(MAX_LATENCY_SAMPLE),
            LatencyDist::Uniform(low, high) => {
                if high <= low {
                    return low.min(MAX_LATENCY_SAMPLE);
                }
                low.as_secs_f64() + (high - low).as_secs_f64() * rng.f64()
            }
            LatencyDist::Exponential { mean } => {
                // 1 - u lies in (0, 1], so the logarithm is finite.
                -mean.as_secs_f64() * (1.0 - rng.f64()).ln()
            }
            LatencyDist::LogNormal { median, sigma } => {
                // Box-Muller transform for one standard normal sample.
                let u1 = 1.0 - rng.f64();
                let u2 = rng.f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median.as_secs_f64() * (sigma * z).exp()
            }
        };
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_LATENCY_SAMPLE)
            .min(MAX_LATENCY_SAMPLE)
    }

    /// The mean of the distribution (before capping).
    pub fn mean(&self) -> Duration {
        match *self {
            LatencyDist::Fixed(d) => d,
            LatencyDist::Uniform(low, high) => (low + high.max(low)) / 2,
            LatencyDist::Exponential { mean } => mean,
            LatencyDist::LogNormal { median, sigma } => {
                Duration::try_from_secs_f64(median.as_secs_f64() * (sigma * sigma / 2.0).exp())
                    .unwrap_or(MAX_LATENCY_SAMPLE)
            }
        }
    }
}

impl Default for LatencyDist {
    fn default() -> Self {
        LatencyDist::ZERO
    }
}

impl fmt::Display for LatencyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = humantime::format_duration;
        match *self {
            LatencyDist::Fixed(x) => write!(f, "{}", d(x)),
            LatencyDist::Uniform(a, b) => write!(f, "{}..{}", d(a), d(b)),
            LatencyDist::Exponential { mean } => write!(f, "exp:{}", d(mean)),
            LatencyDist::LogNormal { median, sigma } => {
                write!(f, "lognormal:{}:{sigma}", d(median))
            }
        }
    }
}

/// Why a latency distribution or a mode could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: {reason} (expected {expected})")]
pub struct ParseError {
    what: &'static str,
    input: String,
    reason: String,
    expected: &'static str,
}

const LATENCY_FORMS: &str = "`5ms`, `5ms..20ms`, `exp:5ms` or `lognormal:5ms:0.5`";
const MODE_FORMS: &str =
    "`normal`, `fail`, `fail:STATUS`, `blackhole`, `reset` or `flaky:RATIO` with RATIO in 0..=1";

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

impl FromStr for LatencyDist {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ParseError {
            what: "latency",
            input: input.to_owned(),
            reason,
            expected: LATENCY_FORMS,
        };
        let text = input.trim();
        if let Some(mean) = text.strip_prefix("exp:") {
            let mean = parse_duration(mean).map_err(error)?;
            return Ok(LatencyDist::Exponential { mean });
        }
        if let Some(rest) = text.strip_prefix("lognormal:") {
            let (median, sigma) = rest
                .split_once(':')
                .ok_or_else(|| error("lognormal needs a median and a sigma".into()))?;
            let median = parse_duration(median).map_err(error)?;
            let sigma: f64 = sigma
                .trim()
                .parse()
                .map_err(|_| error(format!("sigma `{sigma}` is not a number")))?;
            if !sigma.is_finite() || sigma < 0.0 {
                return Err(error(format!("sigma {sigma} must be finite and >= 0")));
            }
            return Ok(LatencyDist::LogNormal { median, sigma });
        }
        if let Some((low, high)) = text.split_once("..") {
            let low = parse_duration(low).map_err(error)?;
            let high = parse_duration(high).map_err(error)?;
            if high < low {
                return Err(error("the upper bound is below the lower bound".into()));
            }
            return Ok(LatencyDist::Uniform(low, high));
        }
        parse_duration(text).map(LatencyDist::Fixed).map_err(error)
    }
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

/// What a backend does with requests (other than `/healthz`).
///
/// Parsed from text as `normal`, `fail` (503), `fail:500`, `blackhole`,
/// `reset` or `flaky:0.1`.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Queue for capacity, sleep the latency, answer `status`.
    Normal,
    /// Answer this status at once (no latency, no capacity wait).
    Fail {
        /// Status to answer, e.g. 503.
        status: u16,
    },
    /// Accept connections and read requests but never answer until the
    /// backend shuts down: models a hung server.
    BlackHole,
    /// Close the connection without answering: models a crashing server.
    Reset,
    /// Fail this fraction of requests at once with [`FLAKY_STATUS`];
    /// serve the rest normally.
    Flaky {
        /// Fraction of requests failed, in `0.0..=1.0`.
        fail_ratio: f64,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Normal => f.write_str("normal"),
            Mode::Fail { status } => write!(f, "fail:{status}"),
            Mode::BlackHole => f.write_str("blackhole"),
            Mode::Reset => f.write_str("reset"),
            Mode::Flaky { fail_ratio } => write!(f, "flaky:{fail_ratio}"),
        }
    }
}

impl FromStr for Mode {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ParseError {
            what: "mode",
            input: input.to_owned(),
            reason,
            expected: MODE_FORMS,
        };
        let text = input.trim().to_ascii_lowercase();
        let (kind, arg) = match text.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg.trim())),
            None => (text.as_str(), None),
        };
        match (kind, arg) {
            ("normal", None) => Ok(Mode::Normal),
            ("fail", None) => Ok(Mode::Fail { status: 503 }),
            ("fail", Some(status)) => match status.parse::<u16>() {
                Ok(status) if StatusCode::from_u16(status).is_ok() => Ok(Mode::Fail { status }),
                _ => Err(error(format!("`{status}` is not an HTTP status"))),
            },
            ("blackhole" | "black-hole", None) => Ok(Mode::BlackHole),
            ("reset", None) => Ok(Mode::Reset),
            ("flaky", Some(ratio)) => match ratio.parse::<f64>() {
                Ok(fail_ratio) if (0.0..=1.0).contains(&fail_ratio) => {
                    Ok(Mode::Flaky { fail_ratio })
                }
                _ => Err(error(format!("`{ratio}` is not a ratio in 0..=1"))),
            },
            _ => Err(error("unknown mode or misplaced argument".into())),
        }
    }
}

// ---------------------------------------------------------------------------
// The deterministic byte pattern
// ---------------------------------------------------------------------------

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` bytes of the pseudo-random pattern starting at byte `offset`.
///
/// Byte `i` of the pattern depends only on `i`, so any slice can be produced
/// on its own: `pattern_chunk(a, n)` followed by `pattern_chunk(a + n, m)`
/// equals `pattern_chunk(a, n + m)`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let word = splitmix64(at / 8).to_le_bytes();
        let start = (at % 8) as usize;
        let take = (8 - start).min(len - out.len());
        out.extend_from_slice(&word[start..start + take]);
        at += take as u64;
    }
    Bytes::from(out)
}

/// The first `n` bytes of the pattern served by `GET /bytes/N`.
pub fn pattern(n: usize) -> Vec<u8> {
    pattern_chunk(0, n).to_vec()
}

/// The first `n` bytes of the pattern as the [`PATTERN_CHUNK_SIZE`] chunks
/// that `GET /bytes/N` sends.
pub fn pattern_chunks(n: u64) -> impl Iterator<Item = Bytes> {
    let chunk = PATTERN_CHUNK_SIZE as u64;
    (0..n.div_ceil(chunk)).map(move |i| {
        let offset = i * chunk;
        pattern_chunk(offset, (n - offset).min(chunk) as usize)
    })
}

/// Hex SHA-256 of the first `n` bytes of the pattern, computed
/// incrementally.
pub fn pattern_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    for chunk in pattern_chunks(n) {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Response body of `/bytes/N`: the pattern, generated chunk by chunk.
struct PatternBody {
    offset: u64,
    len: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let take = (self.len - self.offset).min(PATTERN_CHUNK_SIZE as u64);
        let chunk = pattern_chunk(self.offset, take as usize);
        self.offset += take;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

// ---------------------------------------------------------------------------
// Running backends
// ---------------------------------------------------------------------------

/// A backend serving in a tokio task.
///
/// Dropping it signals shutdown without waiting; call
/// [`shutdown`](Self::shutdown) to wait until the port is closed.
pub struct RunningBackend {
    /// The bound address (with the real port when `listen` had port 0).
    pub addr: SocketAddr,
    /// The backend's name.
    pub name: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningBackend")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("mode", &self.mode())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl RunningBackend {
    /// Changes the behaviour for requests that arrive from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.live().mode = mode;
    }

    /// The current behaviour.
    pub fn mode(&self) -> Mode {
        self.shared.live().mode.clone()
    }

    /// Changes the latency distribution for requests that arrive from now on.
    pub fn set_latency(&self, latency: LatencyDist) {
        self.shared.live().latency = latency;
    }

    /// Makes `/healthz` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Requests received, excluding `/healthz`, counted on arrival (so
    /// failed, reset and black-holed requests count too).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests currently in flight (queued for capacity or being served).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// `http://ADDR`, handy for building request URIs.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes every live connection (requests in progress
    /// are dropped unanswered) and waits until the listener is closed, so
    /// new connections to [`addr`](Self::addr) are refused afterwards.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `opts.listen` and serves in a background tokio task.
///
/// Fails if the address cannot be bound, or with
/// [`std::io::ErrorKind::InvalidInput`] if the name is not a valid header
/// value, the status is not an HTTP status or the capacity is zero.
pub async fn spawn_backend(opts: BackendOptions) -> std::io::Result<RunningBackend> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let name_header = HeaderValue::from_str(&opts.name).map_err(|_| {
        invalid(format!(
            "backend name `{}` is not a valid header value",
            opts.name
        ))
    })?;
    let status = StatusCode::from_u16(opts.status).map_err(|_| {
        invalid(format!(
            "backend `{}`: status {} is not an HTTP status",
            opts.name, opts.status
        ))
    })?;
    if opts.capacity == Some(0) {
        return Err(invalid(format!(
            "backend `{}`: capacity must be at least 1",
            opts.name
        )));
    }
    let listener = TcpListener::bind(opts.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("backend `{}`: cannot bind {}: {e}", opts.name, opts.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        body: Bytes::from(format!("{}\n", opts.name)),
        name_header,
        status,
        load_report: opts.load_report,
        capacity: opts.capacity,
        limiter: opts.capacity.map(|c| Arc::new(Semaphore::new(c))),
        live: Mutex::new(Live {
            mode: opts.mode,
            latency: opts.latency,
        }),
        healthy: AtomicBool::new(true),
        requests: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        rate: Mutex::new(RateMeter::new(Instant::now())),
        stopped: stopped.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
    tracing::debug!(backend = %opts.name, %addr, "testbed backend listening");
    Ok(RunningBackend {
        addr,
        name: opts.name,
        shared,
        stop,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = wait_for_stop(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "testbed backend accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Returns once shutdown is signalled (or its sender is gone).
async fn wait_for_stop(stopped: &mut watch::Receiver<bool>) {
    // The `Ref` is dropped here: it is not `Send`.
    let _ = stopped.wait_for(|stop| *stop).await.is_ok();
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| shared.clone().handle(req));
    let result = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = result {
        tracing::trace!(%error, "testbed backend connection ended");
    }
}

/// The error a handler returns to make hyper close the connection without
/// an answer.
#[derive(Debug, thiserror::Error)]
#[error("testbed backend closed the connection without answering: {0}")]
struct CloseWithoutAnswer(&'static str);

type ResponseBody = BoxBody<Bytes, Infallible>;

struct Live {
    mode: Mode,
    latency: LatencyDist,
}

struct Shared {
    body: Bytes,
    name_header: HeaderValue,
    status: StatusCode,
    load_report: bool,
    capacity: Option<usize>,
    limiter: Option<Arc<Semaphore>>,
    live: Mutex<Live>,
    healthy: AtomicBool,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    rate: Mutex<RateMeter>,
    stopped: watch::Receiver<bool>,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests per second over the last completed window of about a second.
struct RateMeter {
    window_start: Instant,
    count: u64,
    last_rate: Option<f64>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(1);

    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            count: 0,
            last_rate: None,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Self::WINDOW {
            self.last_rate = Some(self.count as f64 / elapsed.as_secs_f64());
            self.window_start = now;
            self.count = 0;
        }
    }

    fn record(&mut self, now: Instant) {
        self.roll(now);
        self.count += 1;
    }

    fn rate(&mut self, now: Instant) -> f64 {
        self.roll(now);
        // Before the first window completes, the count so far is the best
        // estimate of the rate of this first second.
        self.last_rate.unwrap_or(self.count as f64)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        lock(&self.live)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, CloseWithoutAnswer> {
        if req.uri().path() == "/healthz" {
            return Ok(self.healthz());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        lock(&self.rate).record(Instant::now());
        let _in_flight = InFlight::enter(&self.in_flight);
        let (mode, latency) = {
            let live = self.live();
            (live.mode.clone(), live.latency.clone())
        };
        match mode {
            Mode::Normal => {}
            Mode::Fail { status } => return Ok(self.fail(status)),
            Mode::Flaky { fail_ratio } => {
                if fastrand::f64() < fail_ratio {
                    return Ok(self.fail(FLAKY_STATUS));
                }
            }
            Mode::BlackHole => {
                // Read the request, then hold it until shutdown.
                let _ = digest_body(req.into_body()).await;
                wait_for_stop(&mut self.stopped.clone()).await;
                return Err(CloseWithoutAnswer("black hole"));
            }
            Mode::Reset => return Err(CloseWithoutAnswer("reset mode")),
        }

        let _permit = match &self.limiter {
            Some(limiter) => Some(
                limiter
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CloseWithoutAnswer("capacity limiter closed"))?,
            ),
            None => None,
        };
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream()
            || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        let digest = if has_body {
            Some(
                digest_body(body)
                    .await
                    .map_err(|_| CloseWithoutAnswer("request body failed"))?,
            )
        } else {
            None
        };
        let delay = latency.sample(&mut fastrand::Rng::new());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }

        let path = parts.uri.path();
        let mut response = if path == "/echo-headers" {
            let mut text = String::new();
            for (name, value) in &parts.headers {
                text.push_str(name.as_str());
                text.push_str(": ");
                text.push_str(&String::from_utf8_lossy(value.as_bytes()));
                text.push('\n');
            }
            self.response(self.status, Full::new(Bytes::from(text)).boxed())
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            match n.parse::<u64>() {
                Ok(len) => {
                    let mut response =
                        self.response(self.status, PatternBody { offset: 0, len }.boxed());
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                    headers.insert(BODY_LENGTH_HEADER, HeaderValue::from(len));
                    if len <= BYTES_DIGEST_LIMIT {
                        insert_str(headers, BODY_SHA256_HEADER, &pattern_sha256(len));
                    }
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }
                Err(_) => self.response(
                    StatusCode::BAD_REQUEST,
                    Full::new(Bytes::from_static(b"bad byte count\n")).boxed(),
                ),
            }
        } else if let Some(code) = path.strip_prefix("/status/") {
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => self.response(status, Full::new(self.body.clone()).boxed()),
                None => self.response(
                    StatusCode::BAD_REQUEST,
                    Full::new(Bytes::from_static(b"bad status\n")).boxed(),
                ),
            }
        } else {
            self.response(self.status, Full::new(self.body.clone()).boxed())
        };
        if let Some((sha, len)) = digest {
            let headers = response.headers_mut();
            insert_str(headers, BODY_SHA256_HEADER, &sha);
            headers.insert(BODY_LENGTH_HEADER, HeaderValue::from(len));
        }
        Ok(response)
    }

    fn healthz(&self) -> Response<ResponseBody> {
        let (status, body): (_, &'static [u8]) = if self.healthy.load(Ordering::Relaxed) {
            (StatusCode::OK, b"ok")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, b"unhealthy")
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body)).boxed());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(BACKEND_HEADER, self.name_header.clone());
        response
    }

    fn fail(&self, status: u16) -> Response<ResponseBody> {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        self.response(status, Full::new(self.body.clone()).boxed())
    }

    /// A response with the headers every answer carries.
    fn response(&self, status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(BACKEND_HEADER, self.name_header.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if self.load_report {
            let in_flight = self.in_flight.load(Ordering::Relaxed);
            let capacity = self.capacity.unwrap_or(NOMINAL_CAPACITY);
            let rps = lock(&self.rate).rate(Instant::now());
            let report = format!(
                "TEXT cpu_utilization={:.4}, rps_fractional={:.3}",
                in_flight as f64 / capacity as f64,
                rps
            );
            insert_str(headers, LOAD_METRICS_HEADER, &report);
            headers.insert(IN_FLIGHT_HEADER, HeaderValue::from(in_flight));
        }
        response
    }
}

fn insert_str(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Reads a body to its end, hashing as it goes; returns (hex sha256, length).
async fn digest_body(mut body: Incoming) -> Result<(String, u64), hyper::Error> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
        }
    }
    Ok((hex(&hasher.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parse_accepts_every_form() {
        let ms = Duration::from_millis;
        assert_eq!("5ms".parse(), Ok(LatencyDist::Fixed(ms(5))));
        assert_eq!("0".parse(), Ok(LatencyDist::ZERO));
        assert_eq!("5ms..20ms".parse(), Ok(LatencyDist::Uniform(ms(5), ms(20))));
        assert_eq!(
            "exp:5ms".parse(),
            Ok(LatencyDist::Exponential { mean: ms(5) })
        );
        assert_eq!(
            "lognormal:5ms:0.5".parse(),
            Ok(LatencyDist::LogNormal {
                median: ms(5),
                sigma: 0.5
            })
        );
    }

    #[test]
    fn latency_parse_rejects_garbage_with_a_clear_message() {
        for bad in [
            "",
            "fast",
            "20ms..5ms",
            "exp:",
            "lognormal:5ms",
            "lognormal:5ms:x",
        ] {
            let err = bad.parse::<LatencyDist>().unwrap_err().to_string();
            assert!(err.starts_with("invalid latency"), "{bad}: {err}");
            assert!(err.contains("expected"), "{bad}: {err}");
        }
    }

    #[test]
    fn latency_display_round_trips() {
        for text in ["5ms", "5ms..20ms", "exp:5ms", "lognormal:5ms:0.5"] {
            let dist: LatencyDist = text.parse().unwrap();
            assert_eq!(dist.to_string(), text);
        }
    }

    #[test]
    fn latency_samples_stay_in_range_and_near_the_mean() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ms = Duration::from_millis;
        let uniform = LatencyDist::Uniform(ms(5), ms(20));
        for _ in 0..1000 {
            let s = uniform.sample(&mut rng);
            assert!(s >= ms(5) && s <= ms(20));
        }
        for dist in [
            LatencyDist::Exponential { mean: ms(10) },
            LatencyDist::LogNormal {
                median: ms(10),
                sigma: 0.5,
            },
        ] {
            let n = 20_000;
            let total: Duration = (0..n).map(|_| dist.sample(&mut rng)).sum();
            let mean = (total / n).as_secs_f64();
            let want = dist.mean().as_secs_f64();
            assert!((mean - want).abs() < want * 0.1, "{dist}: {mean} vs {want}");
        }
    }

    #[test]
    fn mode_parse_accepts_every_form() {
        assert_eq!("normal".parse(), Ok(Mode::Normal));
        assert_eq!("fail".parse(), Ok(Mode::Fail { status: 503 }));
        assert_eq!("fail:500".parse(), Ok(Mode::Fail { status: 500 }));
        assert_eq!("blackhole".parse(), Ok(Mode::BlackHole));
        assert_eq!("reset".parse(), Ok(Mode::Reset));
        assert_eq!("flaky:0.25".parse(), Ok(Mode::Flaky { fail_ratio: 0.25 }));
        for bad in ["", "fail:42", "flaky", "flaky:2", "slow"] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_chunks_are_independent_of_split_points() {
        let whole = pattern(1000);
        let mut joined = pattern_chunk(0, 3).to_vec();
        joined.extend_from_slice(&pattern_chunk(3, 500));
        joined.extend_from_slice(&pattern_chunk(503, 497));
        assert_eq!(whole, joined);
        let n = 3 * PATTERN_CHUNK_SIZE as u64 + 17;
        let chunked: Vec<u8> = pattern_chunks(n).flat_map(|c| c.to_vec()).collect();
        assert_eq!(chunked, pattern(n as usize));
        assert_eq!(pattern_sha256(n), hex(&Sha256::digest(&chunked)));
    }

    #[test]
    fn rate_meter_reports_requests_per_second() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        for i in 0..50 {
            meter.record(start + Duration::from_millis(i * 20));
        }
        let rate = meter.rate(start + Duration::from_millis(1000));
        assert!((rate - 50.0).abs() < 1.0, "{rate}");
    }
}
